//! Step two of the pipeline: one catalog snapshot of what exists on the
//! server for one tenant, read with bound parameters. Extensions are read
//! from the tenant database itself, and only when the spec asks for some.

use std::collections::{BTreeMap, BTreeSet};

use sqlx::postgres::PgConnectOptions;
use sqlx::{Connection, PgConnection, Row};

use super::desired::Desired;

/// The tenant role as it exists.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoleState {
    pub can_login: bool,
    pub superuser: bool,
    pub create_db: bool,
    pub create_role: bool,
    pub inherit: bool,
    pub replication: bool,
    pub bypass_rls: bool,
    pub connection_limit: i32,
    pub comment: Option<String>,
    /// Whether the administrative role is a member of it.
    pub admin_is_member: bool,
}

/// The tenant database as it exists.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DatabaseState {
    pub owner: String,
    pub connection_limit: i32,
    pub comment: Option<String>,
    /// Roles holding CONNECT (directly, owner included); `""` is PUBLIC.
    pub connect_grantees: BTreeSet<String>,
}

/// What exists on the server for one tenant.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub role: Option<RoleState>,
    pub database: Option<DatabaseState>,
    /// `ALTER ROLE … IN DATABASE … SET` values, name → value as stored.
    pub settings: BTreeMap<String, String>,
    /// Installed extensions; read only when the spec lists some.
    pub extensions: BTreeSet<String>,
}

const SNAPSHOT_QUERY: &str = "
WITH r AS (
    SELECT oid, rolcanlogin, rolsuper, rolcreatedb, rolcreaterole, rolinherit, rolreplication,
           rolbypassrls, rolconnlimit, shobj_description(oid, 'pg_authid') AS comment,
           pg_has_role(current_user, oid, 'MEMBER') AS admin_is_member
      FROM pg_roles WHERE rolname = $2
), d AS (
    SELECT oid, pg_get_userbyid(datdba)::text AS owner, datconnlimit,
           shobj_description(oid, 'pg_database') AS comment,
           ARRAY(SELECT CASE WHEN a.grantee = 0 THEN '' ELSE pg_get_userbyid(a.grantee)::text END
                   FROM aclexplode(COALESCE(datacl, acldefault('d', datdba))) a
                  WHERE a.privilege_type = 'CONNECT') AS connect_grantees
      FROM pg_database WHERE datname = $1
)
SELECT r.oid IS NOT NULL AS role_exists, r.rolcanlogin, r.rolsuper, r.rolcreatedb, r.rolcreaterole,
       r.rolinherit, r.rolreplication, r.rolbypassrls, r.rolconnlimit, r.comment AS role_comment,
       r.admin_is_member,
       d.oid IS NOT NULL AS database_exists, d.owner, d.datconnlimit, d.comment AS database_comment,
       d.connect_grantees,
       COALESCE((SELECT s.setconfig FROM pg_db_role_setting s
                  WHERE s.setdatabase = d.oid AND s.setrole = r.oid), '{}') AS settings
  FROM (SELECT 1) AS one LEFT JOIN r ON true LEFT JOIN d ON true";

/// Reads the snapshot for `desired` over an admin connection; `tenant_db`
/// are the options for connecting to the tenant database (for extensions).
pub async fn observe(
    admin: &mut PgConnection,
    desired: &Desired,
    tenant_db: &PgConnectOptions,
) -> Result<Snapshot, sqlx::Error> {
    let row = sqlx::query(SNAPSHOT_QUERY)
        .bind(desired.database.as_str())
        .bind(desired.role.as_str())
        .fetch_one(&mut *admin)
        .await?;
    let role = if row.try_get::<bool, _>("role_exists")? {
        Some(RoleState {
            can_login: row.try_get("rolcanlogin")?,
            superuser: row.try_get("rolsuper")?,
            create_db: row.try_get("rolcreatedb")?,
            create_role: row.try_get("rolcreaterole")?,
            inherit: row.try_get("rolinherit")?,
            replication: row.try_get("rolreplication")?,
            bypass_rls: row.try_get("rolbypassrls")?,
            connection_limit: row.try_get("rolconnlimit")?,
            comment: row.try_get("role_comment")?,
            admin_is_member: row.try_get("admin_is_member")?,
        })
    } else {
        None
    };
    let database = if row.try_get::<bool, _>("database_exists")? {
        Some(DatabaseState {
            owner: row.try_get("owner")?,
            connection_limit: row.try_get("datconnlimit")?,
            comment: row.try_get("database_comment")?,
            connect_grantees: row
                .try_get::<Vec<String>, _>("connect_grantees")?
                .into_iter()
                .collect(),
        })
    } else {
        None
    };
    let settings = row
        .try_get::<Vec<String>, _>("settings")?
        .into_iter()
        .filter_map(|entry| entry.split_once('=').map(|(k, v)| (k.to_owned(), v.to_owned())))
        .collect();
    let reachable = role.as_ref().is_some_and(|r| r.admin_is_member);
    let extensions = if database.is_some() && reachable && !desired.extensions.is_empty() {
        installed_extensions(tenant_db).await?
    } else {
        BTreeSet::new()
    };
    Ok(Snapshot {
        role,
        database,
        settings,
        extensions,
    })
}

async fn installed_extensions(tenant_db: &PgConnectOptions) -> Result<BTreeSet<String>, sqlx::Error> {
    let mut conn = PgConnection::connect_with(tenant_db).await?;
    let names: Vec<String> = sqlx::query_scalar("SELECT extname::text FROM pg_extension")
        .fetch_all(&mut conn)
        .await?;
    conn.close().await?;
    Ok(names.into_iter().collect())
}
