//! Rendering each provisioning step as SQL. Names arrive as [`Ident`]s,
//! numbers as integers, passwords as SCRAM verifiers; the only free text
//! (the ownership marker) is rendered as a literal from validated names.

use std::fmt::Write as _;

use super::{Ident, ScramVerifier, Statement, literal};

/// Role attributes to change with ALTER ROLE; only `Some` fields are
/// rendered, because a non-superuser may not even mention SUPERUSER,
/// REPLICATION or BYPASSRLS.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RoleChanges {
    pub login: Option<bool>,
    pub superuser: Option<bool>,
    pub create_db: Option<bool>,
    pub create_role: Option<bool>,
    pub inherit: Option<bool>,
    pub replication: Option<bool>,
    pub bypass_rls: Option<bool>,
    pub connection_limit: Option<i32>,
}

impl RoleChanges {
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    fn render(&self) -> String {
        let mut out = String::new();
        let mut flag = |value: Option<bool>, on: &str, off: &str| {
            if let Some(v) = value {
                out.push(' ');
                out.push_str(if v { on } else { off });
            }
        };
        flag(self.login, "LOGIN", "NOLOGIN");
        flag(self.superuser, "SUPERUSER", "NOSUPERUSER");
        flag(self.create_db, "CREATEDB", "NOCREATEDB");
        flag(self.create_role, "CREATEROLE", "NOCREATEROLE");
        flag(self.inherit, "INHERIT", "NOINHERIT");
        flag(self.replication, "REPLICATION", "NOREPLICATION");
        flag(self.bypass_rls, "BYPASSRLS", "NOBYPASSRLS");
        if let Some(limit) = self.connection_limit {
            let _ = write!(out, " CONNECTION LIMIT {limit}");
        }
        out
    }
}

/// A database-level privilege grantee.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Grantee {
    Public,
    Role(Ident),
}

impl std::fmt::Display for Grantee {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Grantee::Public => f.write_str("PUBLIC"),
            Grantee::Role(role) => role.fmt(f),
        }
    }
}

/// The per-role, per-database settings tenantdb manages (the guard rails).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Setting {
    StatementTimeout,
    IdleInTransactionSessionTimeout,
    LockTimeout,
}

impl Setting {
    pub const ALL: [Setting; 3] = [
        Setting::StatementTimeout,
        Setting::IdleInTransactionSessionTimeout,
        Setting::LockTimeout,
    ];

    /// The GUC name, as PostgreSQL stores it in `pg_db_role_setting`.
    pub fn name(self) -> &'static str {
        match self {
            Setting::StatementTimeout => "statement_timeout",
            Setting::IdleInTransactionSessionTimeout => "idle_in_transaction_session_timeout",
            Setting::LockTimeout => "lock_timeout",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.name() == name)
    }
}

/// The password clause's literal; `None` renders a redacted placeholder
/// for showing a statement to people.
fn password_literal(password: Option<&ScramVerifier>) -> String {
    match password {
        Some(verifier) => literal(verifier.as_str()),
        None => "'<redacted>'".to_owned(),
    }
}

/// `CREATE ROLE` for a tenant: may log in, nothing more.
pub fn create_tenant_role(
    role: &Ident,
    connection_limit: i32,
    password: Option<&ScramVerifier>,
) -> Statement {
    sqlx::AssertSqlSafe(format!(
        "CREATE ROLE {role} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE INHERIT NOREPLICATION NOBYPASSRLS \
         CONNECTION LIMIT {connection_limit} PASSWORD {}",
        password_literal(password)
    ))
}

pub fn alter_role(role: &Ident, changes: &RoleChanges) -> Statement {
    sqlx::AssertSqlSafe(format!("ALTER ROLE {role}{}", changes.render()))
}

pub fn set_password(role: &Ident, password: Option<&ScramVerifier>) -> Statement {
    sqlx::AssertSqlSafe(format!(
        "ALTER ROLE {role} PASSWORD {}",
        password_literal(password)
    ))
}

/// Makes the administrative role (the session user) a member of `role`:
/// PostgreSQL requires it to create a database owned by the role, and it
/// lets the admin reach the tenant database after CONNECT is revoked from
/// PUBLIC.
pub fn grant_role_to_admin(role: &Ident) -> Statement {
    sqlx::AssertSqlSafe(format!("GRANT {role} TO CURRENT_USER"))
}

pub fn comment_on_role(role: &Ident, marker: &str) -> Statement {
    sqlx::AssertSqlSafe(format!("COMMENT ON ROLE {role} IS {}", literal(marker)))
}

/// `CREATE DATABASE` — cannot run inside a transaction block.
pub fn create_database(database: &Ident, owner: &Ident, connection_limit: i32) -> Statement {
    sqlx::AssertSqlSafe(format!(
        "CREATE DATABASE {database} OWNER {owner} TEMPLATE template0 ENCODING 'UTF8' \
         CONNECTION LIMIT {connection_limit}"
    ))
}

pub fn comment_on_database(database: &Ident, marker: &str) -> Statement {
    sqlx::AssertSqlSafe(format!("COMMENT ON DATABASE {database} IS {}", literal(marker)))
}

pub fn alter_database_owner(database: &Ident, owner: &Ident) -> Statement {
    sqlx::AssertSqlSafe(format!("ALTER DATABASE {database} OWNER TO {owner}"))
}

pub fn alter_database_connection_limit(database: &Ident, limit: i32) -> Statement {
    sqlx::AssertSqlSafe(format!("ALTER DATABASE {database} CONNECTION LIMIT {limit}"))
}

pub fn revoke_connect(database: &Ident, grantee: &Grantee) -> Statement {
    sqlx::AssertSqlSafe(format!("REVOKE CONNECT ON DATABASE {database} FROM {grantee}"))
}

pub fn grant_connect(database: &Ident, role: &Ident) -> Statement {
    sqlx::AssertSqlSafe(format!("GRANT CONNECT ON DATABASE {database} TO {role}"))
}

/// `ALTER ROLE … IN DATABASE … SET`, with the value in milliseconds (an
/// integer, so nothing to quote).
pub fn set_role_setting(role: &Ident, database: &Ident, setting: Setting, millis: i64) -> Statement {
    sqlx::AssertSqlSafe(format!(
        "ALTER ROLE {role} IN DATABASE {database} SET {} = {millis}",
        setting.name()
    ))
}

pub fn reset_role_setting(role: &Ident, database: &Ident, setting: Setting) -> Statement {
    sqlx::AssertSqlSafe(format!(
        "ALTER ROLE {role} IN DATABASE {database} RESET {}",
        setting.name()
    ))
}

/// The schema tenantdb installs extensions into: created by the admin role,
/// so the tenant can use it but never create objects in it — an extension's
/// install script (run with high privileges) resolves its names there.
pub const EXTENSION_SCHEMA: &str = "extensions";

/// The tenant role's search path in its database when it has extensions,
/// as PostgreSQL stores it in `pg_db_role_setting`.
pub const TENANT_SEARCH_PATH: &str = "\"$user\", public, extensions";

/// `CREATE SCHEMA extensions`. Deliberately without IF NOT EXISTS: a schema
/// of that name created by anyone else in the meantime makes it fail.
pub fn create_extension_schema() -> Statement {
    sqlx::AssertSqlSafe(format!("CREATE SCHEMA \"{EXTENSION_SCHEMA}\""))
}

pub fn grant_extension_schema_usage(role: &Ident) -> Statement {
    sqlx::AssertSqlSafe(format!("GRANT USAGE ON SCHEMA \"{EXTENSION_SCHEMA}\" TO {role}"))
}

/// `CREATE EXTENSION … SCHEMA extensions`, run while connected to the
/// tenant database.
pub fn create_extension(extension: &Ident) -> Statement {
    sqlx::AssertSqlSafe(format!(
        "CREATE EXTENSION IF NOT EXISTS {extension} SCHEMA \"{EXTENSION_SCHEMA}\""
    ))
}

/// The tenant role's search path in its database, so its sessions find the
/// extensions' objects without qualifying them.
pub fn set_role_search_path(role: &Ident, database: &Ident) -> Statement {
    sqlx::AssertSqlSafe(format!(
        "ALTER ROLE {role} IN DATABASE {database} SET search_path = {TENANT_SEARCH_PATH}"
    ))
}

/// `ALTER DATABASE … IS_TEMPLATE false ALLOW_CONNECTIONS true`: undoes what
/// a database owner may set to block its deletion or tenantdb's sessions.
pub fn alter_database_flags(
    database: &Ident,
    is_template: Option<bool>,
    allow_connections: Option<bool>,
) -> Statement {
    let mut out = format!("ALTER DATABASE {database}");
    if let Some(value) = is_template {
        let _ = write!(out, " IS_TEMPLATE {value}");
    }
    if let Some(value) = allow_connections {
        let _ = write!(out, " ALLOW_CONNECTIONS {value}");
    }
    sqlx::AssertSqlSafe(out)
}

/// `DROP DATABASE … WITH (FORCE)` — cannot run inside a transaction block;
/// ends the sessions still connected (PostgreSQL 13+).
pub fn drop_database(database: &Ident) -> Statement {
    sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS {database} WITH (FORCE)"))
}

pub fn drop_role(role: &Ident) -> Statement {
    sqlx::AssertSqlSafe(format!("DROP ROLE IF EXISTS {role}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ident(name: &str) -> Ident {
        Ident::parse(name).unwrap()
    }

    #[test]
    fn role_changes_render_only_what_changes() {
        let changes = RoleChanges {
            login: Some(true),
            create_db: Some(false),
            connection_limit: Some(42),
            ..RoleChanges::default()
        };
        assert_eq!(
            alter_role(&ident("acme"), &changes).0,
            "ALTER ROLE \"acme\" LOGIN NOCREATEDB CONNECTION LIMIT 42"
        );
        assert!(RoleChanges::default().is_empty());
    }

    #[test]
    fn settings_are_integers_and_names_are_quoted() {
        assert_eq!(
            set_role_setting(
                &ident("acme"),
                &ident("acme_db"),
                Setting::StatementTimeout,
                15_000
            )
            .0,
            "ALTER ROLE \"acme\" IN DATABASE \"acme_db\" SET statement_timeout = 15000"
        );
        assert_eq!(
            revoke_connect(&ident("acme_db"), &Grantee::Public).0,
            "REVOKE CONNECT ON DATABASE \"acme_db\" FROM PUBLIC"
        );
    }

    #[test]
    fn markers_are_literals() {
        assert_eq!(
            comment_on_database(&ident("d"), "tenantdb.io/owner=ns/it's").0,
            "COMMENT ON DATABASE \"d\" IS 'tenantdb.io/owner=ns/it''s'"
        );
    }
}
