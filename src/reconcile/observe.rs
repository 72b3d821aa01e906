//! Step two of the pipeline: a catalog snapshot of what exists on the
//! server for one tenant — or for many tenants of one server in the same
//! single statement ([`observe_catalog`]) — read with bound parameters.
//! Extensions are read from the tenant database itself, and only when the
//! spec asks for some.
//! Every session here is an admin session pinned by
//! [`crate::admin_session`], so each name below resolves to the catalog.

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
    /// It is the administrative role itself.
    pub is_admin: bool,
    /// Roles it is a member of (directly or not) whose privileges a tenant
    /// must never get: roles with elevated attributes, PostgreSQL's
    /// predefined roles, the administrative role. Read only while the role
    /// is not marked as this tenant's.
    pub privileged_memberships: Vec<String>,
}

/// The tenant database as it exists.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DatabaseState {
    pub owner: String,
    pub connection_limit: i32,
    pub comment: Option<String>,
    /// Roles holding CONNECT (directly, owner included); `""` is PUBLIC.
    pub connect_grantees: BTreeSet<String>,
    /// `datistemplate`: the owner can set it, and a template cannot be dropped.
    pub is_template: bool,
    /// `datallowconn`: the owner can clear it (from another database).
    pub allow_connections: bool,
    /// The owner is the administrative role or has elevated attributes.
    pub owner_is_privileged: bool,
}

/// The schema extensions are installed into, in the tenant database.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExtensionSchema {
    /// The tenant role can create objects in it: never install there.
    pub tenant_can_create: bool,
    pub tenant_has_usage: bool,
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
    /// The extension schema, when it exists; read with the extensions.
    pub extension_schema: Option<ExtensionSchema>,
}

/// The catalog snapshot of many tenants of one server in one statement:
/// `$1`, `$2` and `$3` are the tenants' database names, role names and
/// ownership markers, in the same order; one row per tenant comes back, in
/// that order. Every lookup is by the catalogs' unique name indexes, so the
/// statement costs a few index probes per tenant and one round trip in all.
pub const SNAPSHOT_QUERY: &str = "
SELECT t.n,
       r.oid IS NOT NULL AS role_exists, r.rolcanlogin, r.rolsuper, r.rolcreatedb, r.rolcreaterole,
       r.rolinherit, r.rolreplication, r.rolbypassrls, r.rolconnlimit, r.comment AS role_comment,
       r.admin_is_member, r.is_admin, r.privileged_memberships,
       d.oid IS NOT NULL AS database_exists, d.owner, d.datconnlimit, d.comment AS database_comment,
       d.connect_grantees, d.datistemplate, d.datallowconn, d.owner_is_privileged,
       COALESCE((SELECT s.setconfig FROM pg_db_role_setting s
                  WHERE s.setdatabase = d.oid AND s.setrole = r.oid), '{}') AS settings
  FROM unnest($1::text[], $2::text[], $3::text[]) WITH ORDINALITY AS t(datname, rolname, marker, n)
  LEFT JOIN LATERAL (
    SELECT oid, rolcanlogin, rolsuper, rolcreatedb, rolcreaterole, rolinherit, rolreplication,
           rolbypassrls, rolconnlimit, shobj_description(oid, 'pg_authid') AS comment,
           pg_has_role(current_user, oid, 'MEMBER') AS admin_is_member,
           rolname = current_user AS is_admin,
           CASE WHEN shobj_description(oid, 'pg_authid') IS DISTINCT FROM t.marker THEN
             ARRAY(SELECT g.rolname::text FROM pg_roles g
                    WHERE g.oid <> me.oid AND pg_has_role(me.oid, g.oid, 'MEMBER')
                      AND (g.rolsuper OR g.rolcreaterole OR g.rolcreatedb OR g.rolreplication
                           OR g.rolbypassrls OR g.rolname = current_user OR g.oid < 16384)
                    ORDER BY 1)
           ELSE '{}' END AS privileged_memberships
      FROM pg_roles me WHERE rolname = t.rolname::name
  ) r ON true
  LEFT JOIN LATERAL (
    SELECT oid, pg_get_userbyid(datdba)::text AS owner, datconnlimit, datistemplate, datallowconn,
           EXISTS (SELECT 1 FROM pg_roles o
                    WHERE o.oid = datdba
                      AND (o.rolsuper OR o.rolcreaterole OR o.rolcreatedb OR o.rolreplication
                           OR o.rolbypassrls OR o.rolname = current_user)) AS owner_is_privileged,
           shobj_description(oid, 'pg_database') AS comment,
           ARRAY(SELECT CASE WHEN a.grantee = 0 THEN '' ELSE pg_get_userbyid(a.grantee)::text END
                   FROM aclexplode(COALESCE(datacl, acldefault('d', datdba))) a
                  WHERE a.privilege_type = 'CONNECT') AS connect_grantees
      FROM pg_database WHERE datname = t.datname::name
  ) d ON true
 ORDER BY t.n";

/// Reads the snapshot for `desired` over an admin connection; `tenant_db`
/// are the options for connecting to the tenant database (for extensions).
pub async fn observe(
    admin: &mut PgConnection,
    desired: &Desired,
    tenant_db: &PgConnectOptions,
) -> Result<Snapshot, sqlx::Error> {
    let mut snapshot = observe_catalog(admin, &[desired])
        .await?
        .pop()
        .ok_or_else(|| sqlx::Error::RowNotFound)?;
    observe_extensions(&mut snapshot, desired, tenant_db).await?;
    Ok(snapshot)
}

/// The catalog part of the snapshots of `tenants` (all on the server behind
/// `admin`), in one statement, in the order given. What lives inside each
/// tenant database (extensions) is left empty: see
/// [`needs_extensions_look`] and [`observe_extensions`].
pub async fn observe_catalog(
    admin: &mut PgConnection,
    tenants: &[&Desired],
) -> Result<Vec<Snapshot>, sqlx::Error> {
    let databases: Vec<&str> = tenants.iter().map(|d| d.database.as_str()).collect();
    let roles: Vec<&str> = tenants.iter().map(|d| d.role.as_str()).collect();
    let markers: Vec<String> = tenants.iter().map(|d| d.marker()).collect();
    let rows = sqlx::query(SNAPSHOT_QUERY)
        .bind(&databases)
        .bind(&roles)
        .bind(&markers)
        .fetch_all(&mut *admin)
        .await?;
    if rows.len() != tenants.len() {
        return Err(sqlx::Error::Protocol(format!(
            "catalog snapshot: {} rows for {} tenants",
            rows.len(),
            tenants.len()
        )));
    }
    rows.iter().map(snapshot_of).collect()
}

/// Whether planning `desired` needs a look inside its database for the
/// extensions: some are declared, and tenantdb can connect there.
pub fn needs_extensions_look(desired: &Desired, snapshot: &Snapshot) -> bool {
    let reachable = snapshot.role.as_ref().is_some_and(|r| r.admin_is_member);
    let connectable = snapshot.database.as_ref().is_some_and(|d| d.allow_connections);
    connectable && reachable && !desired.extensions.is_empty()
}

/// Completes a catalog snapshot with the extensions, when it needs them.
pub async fn observe_extensions(
    snapshot: &mut Snapshot,
    desired: &Desired,
    tenant_db: &PgConnectOptions,
) -> Result<(), sqlx::Error> {
    if needs_extensions_look(desired, snapshot) {
        (snapshot.extensions, snapshot.extension_schema) = extensions(tenant_db, desired).await?;
    }
    Ok(())
}

fn snapshot_of(row: &sqlx::postgres::PgRow) -> Result<Snapshot, sqlx::Error> {
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
            is_admin: row.try_get("is_admin")?,
            privileged_memberships: row.try_get("privileged_memberships")?,
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
            is_template: row.try_get("datistemplate")?,
            allow_connections: row.try_get("datallowconn")?,
            owner_is_privileged: row.try_get("owner_is_privileged")?,
        })
    } else {
        None
    };
    let settings = row
        .try_get::<Vec<String>, _>("settings")?
        .into_iter()
        .filter_map(|entry| entry.split_once('=').map(|(k, v)| (k.to_owned(), v.to_owned())))
        .collect();
    Ok(Snapshot {
        role,
        database,
        settings,
        extensions: BTreeSet::new(),
        extension_schema: None,
    })
}

/// The installed extensions, and whether the extension schema exists and
/// what the tenant role may do in it.
pub const EXTENSIONS_QUERY: &str = "
SELECT ARRAY(SELECT extname::text FROM pg_extension ORDER BY 1) AS installed,
       n.oid IS NOT NULL AS schema_exists,
       COALESCE(has_schema_privilege($1::text::name, n.oid, 'CREATE'), false) AS tenant_can_create,
       COALESCE(has_schema_privilege($1::text::name, n.oid, 'USAGE'), false) AS tenant_has_usage
  FROM (SELECT 1) AS one LEFT JOIN pg_namespace n ON n.nspname = $2";

async fn extensions(
    tenant_db: &PgConnectOptions,
    desired: &Desired,
) -> Result<(BTreeSet<String>, Option<ExtensionSchema>), sqlx::Error> {
    let mut conn = crate::admin_access::connect(tenant_db).await?;
    let row = sqlx::query(EXTENSIONS_QUERY)
        .bind(desired.role.as_str())
        .bind(crate::sql::statements::EXTENSION_SCHEMA)
        .fetch_one(&mut conn)
        .await?;
    conn.close().await?;
    let installed: Vec<String> = row.try_get("installed")?;
    let schema = if row.try_get::<bool, _>("schema_exists")? {
        Some(ExtensionSchema {
            tenant_can_create: row.try_get("tenant_can_create")?,
            tenant_has_usage: row.try_get("tenant_has_usage")?,
        })
    } else {
        None
    };
    Ok((installed.into_iter().collect(), schema))
}
