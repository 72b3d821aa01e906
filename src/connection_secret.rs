//! The connection Secret a tenant's application mounts with `envFrom`:
//! where to connect, as whom, and the pool contract, under the keys the
//! design fixes. Built here (pure); written by the operator or by
//! `tenantdb apply --secrets-dir`.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::admin_access::Password;
use crate::api::database_server::SslMode;
use crate::reconcile::Desired;

/// Where applications reach the tenant's database.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    pub host: String,
    pub port: u16,
    pub ssl_mode: SslMode,
}

/// libpq's name for a TLS mode.
pub fn sslmode_name(mode: SslMode) -> &'static str {
    match mode {
        SslMode::Disable => "disable",
        SslMode::Prefer => "prefer",
        SslMode::Require => "require",
        SslMode::VerifyFull => "verify-full",
    }
}

/// The Secret's keys and values.
pub fn secret_data(desired: &Desired, endpoint: &Endpoint, password: &Password) -> BTreeMap<String, String> {
    let sslmode = sslmode_name(endpoint.ssl_mode);
    // An IPv6 address needs brackets in a URL.
    let url_host = if endpoint.host.contains(':') {
        format!("[{}]", endpoint.host)
    } else {
        endpoint.host.clone()
    };
    let pool = &desired.pool;
    BTreeMap::from([
        (
            "DATABASE_URL".to_owned(),
            format!(
                "postgres://{}:{}@{url_host}:{}/{}?sslmode={sslmode}",
                desired.role.as_str(),
                password.expose(),
                endpoint.port,
                desired.database.as_str()
            ),
        ),
        ("PGHOST".to_owned(), endpoint.host.clone()),
        ("PGPORT".to_owned(), endpoint.port.to_string()),
        ("PGDATABASE".to_owned(), desired.database.as_str().to_owned()),
        ("PGUSER".to_owned(), desired.role.as_str().to_owned()),
        ("PGPASSWORD".to_owned(), password.expose().to_owned()),
        ("PGSSLMODE".to_owned(), sslmode.to_owned()),
        ("DB_POOL_MAX".to_owned(), pool.max_connections.to_string()),
        ("DB_POOL_MIN".to_owned(), pool.min_connections.to_string()),
        (
            "DB_POOL_IDLE_TIMEOUT_MS".to_owned(),
            pool.idle_timeout_ms.to_string(),
        ),
        (
            "DB_POOL_CONNECTION_TIMEOUT_MS".to_owned(),
            pool.connection_timeout_ms.to_string(),
        ),
    ])
}

/// The Secret object (type Opaque, `stringData`) for `desired` in `namespace`.
pub fn secret(namespace: &str, desired: &Desired, endpoint: &Endpoint, password: &Password) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some(desired.secret_name.clone()),
            namespace: Some(namespace.to_owned()),
            labels: Some(BTreeMap::from([
                ("app.kubernetes.io/managed-by".to_owned(), "tenantdb".to_owned()),
                ("tenantdb.io/tenant".to_owned(), desired.tenant.clone()),
            ])),
            ..ObjectMeta::default()
        },
        type_: Some("Opaque".to_owned()),
        string_data: Some(secret_data(desired, endpoint, password)),
        ..Secret::default()
    }
}

/// The cache part of a connection Secret (`spec.cache`).
#[derive(Clone)]
pub struct CacheKeys {
    /// `redis://<user>:<password>@<host>:<port>`.
    pub url: String,
    pub key_prefix: String,
    pub password: Password,
}

/// Adds the cache's keys to a Secret's `data`: `REDIS_URL`,
/// `REDIS_KEY_PREFIX`, and `REDIS_PASSWORD` (the URL's password, kept
/// across restarts as `PGPASSWORD` is).
pub fn add_cache(data: &mut BTreeMap<String, String>, cache: &CacheKeys) {
    data.insert("REDIS_URL".to_owned(), cache.url.clone());
    data.insert("REDIS_KEY_PREFIX".to_owned(), cache.key_prefix.clone());
    data.insert(REDIS_PASSWORD.to_owned(), cache.password.expose().to_owned());
}

const REDIS_PASSWORD: &str = "REDIS_PASSWORD";

/// The tenant's Redis password in an existing connection Secret, if there
/// is a usable one.
pub fn redis_password_of(secret: &Secret) -> Option<Password> {
    value_of(secret, REDIS_PASSWORD).map(Password::new)
}

/// A non-empty value of `key`, from `stringData` or `data`.
/// The value of `key` in any Secret (`stringData` or `data`), as bytes,
/// if it is there and not empty: a CA certificate, say.
pub fn key_of(secret: &Secret, key: &str) -> Option<Vec<u8>> {
    let from_string = secret
        .string_data
        .as_ref()
        .and_then(|d| d.get(key))
        .map(|v| v.as_bytes().to_vec());
    let from_data = || secret.data.as_ref().and_then(|d| d.get(key)).map(|b| b.0.clone());
    from_string.or_else(from_data).filter(|v| !v.is_empty())
}

fn value_of(secret: &Secret, key: &str) -> Option<String> {
    let from_string = secret.string_data.as_ref().and_then(|d| d.get(key)).cloned();
    let from_data = || {
        secret
            .data
            .as_ref()
            .and_then(|d| d.get(key))
            .and_then(|b| String::from_utf8(b.0.clone()).ok())
    };
    from_string.or_else(from_data).filter(|v| !v.is_empty())
}

/// The password held in an existing connection Secret (`PGPASSWORD`, from
/// `stringData` or `data`), if there is a usable one.
pub fn password_of(secret: &Secret) -> Option<Password> {
    value_of(secret, "PGPASSWORD").map(Password::new)
}
