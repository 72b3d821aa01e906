//! How tenantdb reaches a `DatabaseServer` as its administrator: the
//! credentials in the admin Secret, the TLS settings, and a probe that says
//! whether the role can do what tenantdb needs (CREATEDB and CREATEROLE).
//!
//! Passwords are held in [`Password`], whose `Debug` never shows them, and no
//! error built here contains one.

use std::fmt;

use k8s_openapi::api::core::v1::Secret;
use sqlx::postgres::{PgConnectOptions, PgSslMode};
use sqlx::{Connection, PgConnection, Row};

use crate::api::database_server::{DatabaseServerSpec, SslMode};

/// A password that cannot leak through `Debug` or `Display`.
#[derive(Clone, PartialEq, Eq)]
pub struct Password(String);

impl Password {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The clear text, for the one place that needs it: the wire.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(<redacted>)")
    }
}

/// Username and password of the administrative role.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AdminCredentials {
    pub username: String,
    pub password: Password,
}

/// Why the admin Secret cannot be used.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CredentialsError {
    #[error("Secret {secret} has no key {key:?}")]
    MissingKey { secret: String, key: &'static str },
    #[error("Secret {secret}: key {key:?} is not UTF-8")]
    NotUtf8 { secret: String, key: &'static str },
}

impl AdminCredentials {
    /// Reads keys `username` and `password` from `data` or `stringData`
    /// (`stringData` wins, as it does when the API server merges them).
    pub fn from_secret(secret: &Secret) -> Result<Self, CredentialsError> {
        let name = format!(
            "{}/{}",
            secret.metadata.namespace.as_deref().unwrap_or("default"),
            secret.metadata.name.as_deref().unwrap_or_default()
        );
        let value = |key: &'static str| -> Result<String, CredentialsError> {
            if let Some(text) = secret.string_data.as_ref().and_then(|d| d.get(key)) {
                return Ok(text.clone());
            }
            let bytes = secret.data.as_ref().and_then(|d| d.get(key)).ok_or_else(|| {
                CredentialsError::MissingKey {
                    secret: name.clone(),
                    key,
                }
            })?;
            String::from_utf8(bytes.0.clone()).map_err(|_| CredentialsError::NotUtf8 {
                secret: name.clone(),
                key,
            })
        };
        Ok(Self {
            username: value("username")?,
            password: Password::new(value("password")?),
        })
    }
}

/// Connect options for the server's maintenance database as the admin role,
/// pinned by [`crate::admin_session`]. `ca_pem` is the CA certificate for
/// `verify-full`, when one is configured.
pub fn connect_options(
    spec: &DatabaseServerSpec,
    credentials: &AdminCredentials,
    ca_pem: Option<Vec<u8>>,
) -> PgConnectOptions {
    let mut options = PgConnectOptions::new_without_pgpass()
        .host(&spec.host)
        .port(u16::try_from(spec.port).unwrap_or(5432))
        .username(&credentials.username)
        .password(credentials.password.expose())
        .database(&spec.maintenance_database)
        .ssl_mode(match spec.ssl_mode {
            SslMode::Disable => PgSslMode::Disable,
            SslMode::Prefer => PgSslMode::Prefer,
            SslMode::Require => PgSslMode::Require,
            SslMode::VerifyFull => PgSslMode::VerifyFull,
        });
    if let Some(pem) = ca_pem {
        options = options.ssl_root_cert_from_pem(pem);
    }
    crate::admin_session::pinned(options)
}

/// Most admin connections tenantdb opens to one server, whoever asks.
pub const MAX_ADMIN_CONNECTIONS: u32 = 4;

/// The bounded pool of admin connections to one server, shared by all its
/// tenants. Connections are opened lazily; `options` come pinned from
/// [`connect_options`] (a `lock_timeout`, so DDL queued behind a tenant's
/// long transaction fails and is retried instead of piling up, and a
/// `statement_timeout` as a last resort, among the rest).
pub fn admin_pool(options: PgConnectOptions, max_connections: u32) -> sqlx::PgPool {
    sqlx::postgres::PgPoolOptions::new()
        .max_connections(max_connections.clamp(1, MAX_ADMIN_CONNECTIONS))
        .min_connections(0)
        .acquire_timeout(std::time::Duration::from_secs(30))
        .idle_timeout(std::time::Duration::from_secs(300))
        .connect_lazy_with(options)
}

/// The health monitor's own connection to one server, apart from the admin
/// pool: provisioning that holds every admin connection (waiting for a
/// tenant's lock, say) must never make a healthy server look down. One
/// connection, kept open between samples; the monitor bounds each sample
/// with its own deadline.
pub fn health_pool(options: PgConnectOptions) -> sqlx::PgPool {
    sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .min_connections(0)
        .acquire_timeout(CONNECT_TIMEOUT)
        .idle_timeout(None)
        .connect_lazy_with(options.application_name("tenantdb-health"))
}

/// The server's `server_version_num`, as it announced at login (no query).
pub async fn server_version(pool: &sqlx::PgPool) -> Result<u32, sqlx::Error> {
    let conn = pool.acquire().await?;
    Ok(version_of(&conn))
}

/// The version a connection's server announced; PostgreSQL 15.0 (the
/// oldest supported) when it announced none.
pub fn version_of(conn: &PgConnection) -> u32 {
    conn.server_version_num().unwrap_or(150_000)
}

/// What a successful admin login tells about the server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerProbe {
    /// `server_version`, e.g. `15.18 (Debian 15.18-0+deb12u1)`.
    pub server_version: String,
    /// `server_version_num`, e.g. 150018.
    pub server_version_num: i32,
    pub role: String,
    pub superuser: bool,
    pub create_db: bool,
    pub create_role: bool,
    /// The server's `max_connections` setting.
    pub max_connections: i32,
}

impl ServerProbe {
    /// PostgreSQL 15 made the `public` schema belong to the database owner
    /// (`pg_database_owner`); before that, a non-superuser admin cannot give
    /// the tenant its schema, so older servers are not supported.
    pub fn is_supported_version(&self) -> bool {
        self.server_version_num >= 150_000
    }

    /// What the admin role lacks for tenantdb to manage tenants, if anything.
    pub fn missing_privileges(&self) -> Vec<&'static str> {
        let mut missing = Vec::new();
        if !(self.superuser || self.create_db) {
            missing.push("CREATEDB");
        }
        if !(self.superuser || self.create_role) {
            missing.push("CREATEROLE");
        }
        missing
    }
}

/// How long opening one admin connection (TCP, TLS, authentication) may
/// take: a server that accepts connections and then hangs must fail the
/// call, not hold it.
pub const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Opens one admin connection outside the pool (into a tenant database, or
/// for a probe), within [`CONNECT_TIMEOUT`]. Statements on it are bounded by
/// the pinned `statement_timeout` and `lock_timeout` ([`crate::admin_session`]).
pub async fn connect(options: &PgConnectOptions) -> Result<PgConnection, sqlx::Error> {
    match tokio::time::timeout(CONNECT_TIMEOUT, PgConnection::connect_with(options)).await {
        Ok(result) => result,
        Err(_) => Err(sqlx::Error::Io(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("connecting took longer than {CONNECT_TIMEOUT:?}"),
        ))),
    }
}

/// Logs in as the admin role and reads the server's version and the role's privileges.
pub async fn probe(options: &PgConnectOptions) -> Result<ServerProbe, sqlx::Error> {
    let mut conn = connect(options).await?;
    let probe = probe_on(&mut conn).await?;
    conn.close().await?;
    Ok(probe)
}

/// [`probe`] on an admin connection already open (e.g. from the pool).
pub async fn probe_on(conn: &mut PgConnection) -> Result<ServerProbe, sqlx::Error> {
    let row = sqlx::query(
        "SELECT current_setting('server_version') AS server_version,
                current_setting('server_version_num')::int AS server_version_num,
                current_setting('max_connections')::int AS max_connections,
                r.rolname::text AS role, r.rolsuper, r.rolcreatedb, r.rolcreaterole
           FROM pg_roles r
          WHERE r.rolname = current_user",
    )
    .fetch_one(&mut *conn)
    .await?;
    Ok(ServerProbe {
        server_version: row.try_get("server_version")?,
        server_version_num: row.try_get("server_version_num")?,
        role: row.try_get("role")?,
        superuser: row.try_get("rolsuper")?,
        create_db: row.try_get("rolcreatedb")?,
        create_role: row.try_get("rolcreaterole")?,
        max_connections: row.try_get("max_connections")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::ByteString;
    use std::collections::BTreeMap;

    fn secret(data: &[(&str, &str)], string_data: &[(&str, &str)]) -> Secret {
        Secret {
            data: Some(
                data.iter()
                    .map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec())))
                    .collect::<BTreeMap<_, _>>(),
            ),
            string_data: Some(
                string_data
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
            ..Secret::default()
        }
    }

    #[test]
    fn credentials_come_from_data_or_string_data() {
        let from_data =
            AdminCredentials::from_secret(&secret(&[("username", "a"), ("password", "p")], &[])).unwrap();
        assert_eq!(from_data.username, "a");
        assert_eq!(from_data.password.expose(), "p");
        let overridden = AdminCredentials::from_secret(&secret(
            &[("username", "a"), ("password", "p")],
            &[("password", "q")],
        ))
        .unwrap();
        assert_eq!(overridden.password.expose(), "q");
        let missing = AdminCredentials::from_secret(&secret(&[("username", "a")], &[])).unwrap_err();
        assert!(matches!(
            missing,
            CredentialsError::MissingKey { key: "password", .. }
        ));
    }

    #[test]
    fn passwords_never_show_in_debug_output() {
        let credentials = AdminCredentials {
            username: "admin".into(),
            password: Password::new("hunter2-very-secret"),
        };
        assert!(!format!("{credentials:?}").contains("hunter2"));
    }
}
