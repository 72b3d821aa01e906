//! Step three of the pipeline (pure, no I/O): compare what is wanted with
//! what exists and list the steps that make the server match — in an order
//! that PostgreSQL accepts, and nothing when it already matches.
//!
//! Ownership is decided here too: a plan is never made for a database or
//! role that belongs to someone else.

use std::collections::BTreeSet;
use std::fmt;

use crate::admin_access::Password;
use crate::sql::statements::{Grantee, RoleChanges, Setting};
use crate::sql::{Ident, statements};

use super::desired::{Desired, OWNER_MARKER_PREFIX};
use super::error::ReconcileError;
use super::observe::{DatabaseState, RoleState, Snapshot};

/// One change to make on the server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    CreateRole {
        role: Ident,
        connection_limit: i32,
        password: Password,
    },
    AlterRole {
        role: Ident,
        changes: RoleChanges,
    },
    SetPassword {
        role: Ident,
        password: Password,
    },
    CommentOnRole {
        role: Ident,
        marker: String,
    },
    GrantRoleToAdmin {
        role: Ident,
    },
    CreateDatabase {
        database: Ident,
        owner: Ident,
        connection_limit: i32,
    },
    CommentOnDatabase {
        database: Ident,
        marker: String,
    },
    AlterDatabaseOwner {
        database: Ident,
        owner: Ident,
    },
    AlterDatabaseConnectionLimit {
        database: Ident,
        limit: i32,
    },
    AlterDatabaseFlags {
        database: Ident,
        is_template: Option<bool>,
        allow_connections: Option<bool>,
    },
    RevokeConnect {
        database: Ident,
        grantee: Grantee,
    },
    GrantConnect {
        database: Ident,
        role: Ident,
    },
    SetRoleSetting {
        role: Ident,
        database: Ident,
        setting: Setting,
        millis: i64,
    },
    ResetRoleSetting {
        role: Ident,
        database: Ident,
        setting: Setting,
    },
    SetRoleSearchPath {
        role: Ident,
        database: Ident,
    },
    CreateExtensionSchema {
        database: Ident,
    },
    GrantExtensionSchemaUsage {
        database: Ident,
        role: Ident,
    },
    CreateExtension {
        database: Ident,
        extension: Ident,
    },
    TerminateSessions {
        database: Ident,
        role: Ident,
    },
    DropDatabase {
        database: Ident,
    },
    DropRole {
        role: Ident,
    },
}

/// Where a step must run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Context {
    /// On the admin connection, inside the transaction of its neighbours.
    AdminTransaction,
    /// On the admin connection, alone: PostgreSQL forbids CREATE/DROP
    /// DATABASE inside a transaction block.
    AdminNoTransaction,
    /// On a connection to the tenant database.
    TenantDatabase,
}

impl Step {
    pub fn context(&self) -> Context {
        match self {
            Step::CreateDatabase { .. } | Step::DropDatabase { .. } | Step::TerminateSessions { .. } => {
                Context::AdminNoTransaction
            }
            Step::CreateExtensionSchema { .. }
            | Step::GrantExtensionSchemaUsage { .. }
            | Step::CreateExtension { .. } => Context::TenantDatabase,
            _ => Context::AdminTransaction,
        }
    }

    /// The statement to execute. Password steps carry a fresh SCRAM
    /// verifier, never the password. `TerminateSessions` is a static query
    /// with bound values and has no rendered form (see `apply`).
    pub fn statement(&self) -> Option<crate::sql::Statement> {
        self.render(|password| Some(crate::sql::ScramVerifier::generate(password.expose())))
    }

    /// The SQL as shown to people: passwords (even as verifiers) redacted.
    pub fn display_sql(&self) -> String {
        match self {
            Step::TerminateSessions { database, role } => format!(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{}' OR usename = '{}'",
                database.as_str(),
                role.as_str()
            ),
            _ => self.render(|_| None).map(|s| s.0).unwrap_or_default(),
        }
    }

    fn render(
        &self,
        verifier: impl Fn(&Password) -> Option<crate::sql::ScramVerifier>,
    ) -> Option<crate::sql::Statement> {
        use statements::*;
        Some(match self {
            Step::CreateRole {
                role,
                connection_limit,
                password,
            } => create_tenant_role(role, *connection_limit, verifier(password).as_ref()),
            Step::AlterRole { role, changes } => alter_role(role, changes),
            Step::SetPassword { role, password } => set_password(role, verifier(password).as_ref()),
            Step::CommentOnRole { role, marker } => comment_on_role(role, marker),
            Step::GrantRoleToAdmin { role } => grant_role_to_admin(role),
            Step::CreateDatabase {
                database,
                owner,
                connection_limit,
            } => create_database(database, owner, *connection_limit),
            Step::CommentOnDatabase { database, marker } => comment_on_database(database, marker),
            Step::AlterDatabaseOwner { database, owner } => alter_database_owner(database, owner),
            Step::AlterDatabaseConnectionLimit { database, limit } => {
                alter_database_connection_limit(database, *limit)
            }
            Step::AlterDatabaseFlags {
                database,
                is_template,
                allow_connections,
            } => alter_database_flags(database, *is_template, *allow_connections),
            Step::SetRoleSearchPath { role, database } => set_role_search_path(role, database),
            Step::CreateExtensionSchema { .. } => create_extension_schema(),
            Step::GrantExtensionSchemaUsage { role, .. } => grant_extension_schema_usage(role),
            Step::RevokeConnect { database, grantee } => revoke_connect(database, grantee),
            Step::GrantConnect { database, role } => grant_connect(database, role),
            Step::SetRoleSetting {
                role,
                database,
                setting,
                millis,
            } => set_role_setting(role, database, *setting, *millis),
            Step::ResetRoleSetting {
                role,
                database,
                setting,
            } => reset_role_setting(role, database, *setting),
            Step::CreateExtension { extension, .. } => create_extension(extension),
            Step::DropDatabase { database } => drop_database(database),
            Step::DropRole { role } => drop_role(role),
            Step::TerminateSessions { .. } => return None,
        })
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.display_sql())
    }
}

/// The plan for one tenant, and the password its connection Secret must hold.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    pub steps: Vec<Step>,
    /// The tenant role's password, when known: the stored one, or the new
    /// one this plan sets. Unknown only when passwords are not tracked and
    /// the role already exists.
    pub password: Option<Password>,
    /// Whether the plan sets a new password, so the Secret must be written.
    pub password_is_new: bool,
}

/// Where the tenant's password is kept, and what is there.
#[derive(Clone, Copy, Debug)]
pub enum StoredPassword<'a> {
    /// The connection Secret exists and holds this password.
    Found(&'a Password),
    /// The Secret holds this password, but the server refused it at the
    /// last login check (someone changed the role's password): set it again.
    Rejected(&'a Password),
    /// The connection Secret does not exist (or holds none): a new password
    /// is set, so the one the new Secret holds is the one that works.
    Missing,
    /// Nothing keeps passwords (local mode without a secrets directory): an
    /// existing role's password is left alone.
    Untracked,
}

/// Plans the provisioning of `desired` over `snapshot`. `fresh_password` is
/// used when a new password is needed.
pub fn plan_provision(
    desired: &Desired,
    snapshot: &Snapshot,
    stored: StoredPassword<'_>,
    fresh_password: Password,
) -> Result<Plan, ReconcileError> {
    let marker = desired.marker();
    check_ownership(desired, snapshot, &marker)?;
    let (password, password_is_new) = match (stored, &snapshot.role) {
        (StoredPassword::Found(password), _) => (Some(password.clone()), false),
        (StoredPassword::Rejected(password), _) => (Some(password.clone()), true),
        (StoredPassword::Untracked, Some(_)) => (None, false),
        (StoredPassword::Missing, _) | (StoredPassword::Untracked, None) => (Some(fresh_password), true),
    };
    let mut steps = Vec::new();
    let role = &desired.role;
    let database = &desired.database;
    let limit = desired.pool.connection_limit;

    match &snapshot.role {
        None => {
            steps.push(Step::CreateRole {
                role: role.clone(),
                connection_limit: limit,
                password: password
                    .clone()
                    .unwrap_or_else(crate::password::generate_password),
            });
            steps.push(Step::CommentOnRole {
                role: role.clone(),
                marker: marker.clone(),
            });
            steps.push(Step::GrantRoleToAdmin { role: role.clone() });
        }
        Some(existing) => {
            let changes = role_changes(existing, limit);
            if !changes.is_empty() {
                steps.push(Step::AlterRole {
                    role: role.clone(),
                    changes,
                });
            }
            if let (true, Some(password)) = (password_is_new, &password) {
                steps.push(Step::SetPassword {
                    role: role.clone(),
                    password: password.clone(),
                });
            }
            if existing.comment.as_deref() != Some(marker.as_str()) {
                steps.push(Step::CommentOnRole {
                    role: role.clone(),
                    marker: marker.clone(),
                });
            }
            if !existing.admin_is_member {
                steps.push(Step::GrantRoleToAdmin { role: role.clone() });
            }
        }
    }

    // Plan the database against its state right after CREATE DATABASE when
    // it does not exist yet, so one code path covers both cases.
    let existing_database = match &snapshot.database {
        Some(state) => state.clone(),
        None => {
            steps.push(Step::CreateDatabase {
                database: database.clone(),
                owner: role.clone(),
                connection_limit: limit,
            });
            DatabaseState {
                owner: role.as_str().to_owned(),
                connection_limit: limit,
                comment: None,
                connect_grantees: BTreeSet::from([String::new(), role.as_str().to_owned()]),
                is_template: false,
                allow_connections: true,
                owner_is_privileged: false,
            }
        }
    };
    if existing_database.comment.as_deref() != Some(marker.as_str()) {
        steps.push(Step::CommentOnDatabase {
            database: database.clone(),
            marker: marker.clone(),
        });
    }
    if existing_database.owner != role.as_str() {
        steps.push(Step::AlterDatabaseOwner {
            database: database.clone(),
            owner: role.clone(),
        });
    }
    // The owner (the tenant) may set both; a template cannot be dropped and
    // a database that allows no connections locks tenantdb out.
    let is_template = existing_database.is_template.then_some(false);
    let allow_connections = (!existing_database.allow_connections).then_some(true);
    if is_template.is_some() || allow_connections.is_some() {
        steps.push(Step::AlterDatabaseFlags {
            database: database.clone(),
            is_template,
            allow_connections,
        });
    }
    if existing_database.connection_limit != limit {
        steps.push(Step::AlterDatabaseConnectionLimit {
            database: database.clone(),
            limit,
        });
    }
    for grantee in &existing_database.connect_grantees {
        if grantee == role.as_str() {
            continue;
        }
        let grantee = if grantee.is_empty() {
            Grantee::Public
        } else {
            Grantee::Role(Ident::parse(grantee).map_err(|e| {
                ReconcileError::Conflict(format!(
                    "database {database}: CONNECT is granted to role {grantee:?}, whose name tenantdb cannot revoke from ({e})"
                ))
            })?)
        };
        steps.push(Step::RevokeConnect {
            database: database.clone(),
            grantee,
        });
    }
    if !existing_database.connect_grantees.contains(role.as_str()) {
        steps.push(Step::GrantConnect {
            database: database.clone(),
            role: role.clone(),
        });
    }

    for (setting, wanted) in &desired.settings {
        let current = snapshot.settings.get(setting.name()).map(|v| pg_millis(v));
        match (wanted, current) {
            (Some(millis), Some(Some(now))) if *millis == now => {}
            (Some(millis), _) => steps.push(Step::SetRoleSetting {
                role: role.clone(),
                database: database.clone(),
                setting: *setting,
                millis: *millis,
            }),
            (None, Some(_)) => steps.push(Step::ResetRoleSetting {
                role: role.clone(),
                database: database.clone(),
                setting: *setting,
            }),
            (None, None) => {}
        }
    }

    if !desired.extensions.is_empty() {
        if snapshot.settings.get("search_path").map(String::as_str) != Some(statements::TENANT_SEARCH_PATH) {
            steps.push(Step::SetRoleSearchPath {
                role: role.clone(),
                database: database.clone(),
            });
        }
        let missing: Vec<&String> = desired.extensions.difference(&snapshot.extensions).collect();
        match snapshot.extension_schema {
            Some(schema) if schema.tenant_can_create && !missing.is_empty() => {
                return Err(ReconcileError::Conflict(format!(
                    "schema {} in database {database} is writable by role {role}: tenantdb installs extensions only into a schema the tenant cannot write, so that their install scripts never run the tenant's objects; rename that schema",
                    statements::EXTENSION_SCHEMA
                )));
            }
            Some(schema) if !schema.tenant_has_usage => steps.push(Step::GrantExtensionSchemaUsage {
                database: database.clone(),
                role: role.clone(),
            }),
            Some(_) => {}
            None => {
                steps.push(Step::CreateExtensionSchema {
                    database: database.clone(),
                });
                steps.push(Step::GrantExtensionSchemaUsage {
                    database: database.clone(),
                    role: role.clone(),
                });
            }
        }
        for extension in missing {
            let extension = Ident::parse_extension(extension)
                .map_err(|e| ReconcileError::Conflict(format!("extension {extension:?}: {e}")))?;
            steps.push(Step::CreateExtension {
                database: database.clone(),
                extension,
            });
        }
    }

    Ok(Plan {
        steps,
        password,
        password_is_new,
    })
}

/// Plans the removal of `desired` under `deletionPolicy: Delete`: block
/// logins, end sessions, drop the database, then the role — each only if it
/// exists and is this resource's. Nothing is dropped that is not.
pub fn plan_delete(desired: &Desired, snapshot: &Snapshot) -> Result<Vec<Step>, ReconcileError> {
    let marker = desired.marker();
    check_ownership(
        &Desired {
            adopt: false,
            ..desired.clone()
        },
        snapshot,
        &marker,
    )?;
    let mut steps = Vec::new();
    let role = &desired.role;
    if let Some(existing) = &snapshot.role
        && existing.can_login
    {
        steps.push(Step::AlterRole {
            role: role.clone(),
            changes: RoleChanges {
                login: Some(false),
                ..RoleChanges::default()
            },
        });
    }
    if snapshot.role.is_some() {
        steps.push(Step::TerminateSessions {
            database: desired.database.clone(),
            role: role.clone(),
        });
    }
    if snapshot.database.as_ref().is_some_and(|d| d.is_template) {
        // PostgreSQL refuses to drop a template, and the owner may make it one.
        steps.push(Step::AlterDatabaseFlags {
            database: desired.database.clone(),
            is_template: Some(false),
            allow_connections: None,
        });
    }
    if snapshot.database.is_some() {
        steps.push(Step::DropDatabase {
            database: desired.database.clone(),
        });
    }
    if snapshot.role.is_some() {
        steps.push(Step::DropRole { role: role.clone() });
    }
    Ok(steps)
}

/// Refuses a database or role that exists and is not this resource's.
///
/// The role's marker is the authority: a tenant cannot comment on its own
/// role, but it owns its database and can rewrite that comment. So a
/// database owned by this tenant's marked role is this tenant's whatever
/// its comment says (the comment is then restored). Anything unmarked is
/// adopted only with `spec.adopt` *and* a grant on the server naming the
/// tenant's namespace and the object, and never when it would hand the
/// tenant privileges beyond its own database.
fn check_ownership(desired: &Desired, snapshot: &Snapshot, marker: &str) -> Result<(), ReconcileError> {
    let claimed_by_other = |comment: &Option<String>| {
        comment
            .as_deref()
            .and_then(|c| c.strip_prefix(OWNER_MARKER_PREFIX))
            .filter(|owner| *owner != desired.owner)
            .map(str::to_owned)
    };
    let server = &desired.server;
    let namespace = desired.owner.split_once('/').map_or("", |(ns, _)| ns);
    let role_is_ours = snapshot
        .role
        .as_ref()
        .is_some_and(|r| r.comment.as_deref() == Some(marker));
    if let Some(role) = snapshot.role.as_ref().filter(|_| !role_is_ours) {
        let name = &desired.role;
        if let Some(other) = claimed_by_other(&role.comment) {
            return Err(ReconcileError::Conflict(format!(
                "role {name} belongs to {other}; choose another spec.roleName"
            )));
        }
        if !desired.adopt {
            return Err(ReconcileError::Conflict(format!(
                "role {name} already exists and is not managed by tenantdb; set spec.adopt: true to take it over (the server must grant it too)"
            )));
        }
        if role.is_admin {
            return Err(ReconcileError::Conflict(format!(
                "role {name} is tenantdb's own admin role on DatabaseServer {server}; it is never adopted"
            )));
        }
        let elevated: Vec<&str> = [
            (role.superuser, "SUPERUSER"),
            (role.create_role, "CREATEROLE"),
            (role.create_db, "CREATEDB"),
            (role.replication, "REPLICATION"),
            (role.bypass_rls, "BYPASSRLS"),
        ]
        .into_iter()
        .filter_map(|(has, attribute)| has.then_some(attribute))
        .collect();
        if !elevated.is_empty() {
            return Err(ReconcileError::Conflict(format!(
                "role {name} has {}; tenantdb never adopts a role with elevated attributes",
                elevated.join(", ")
            )));
        }
        if !role.privileged_memberships.is_empty() {
            return Err(ReconcileError::Conflict(format!(
                "role {name} is a member of {}; tenantdb never adopts a role that holds the privileges of elevated, predefined or admin roles",
                role.privileged_memberships.join(", ")
            )));
        }
        if !desired.adoption.role {
            return Err(ReconcileError::Conflict(format!(
                "role {name} already exists and is not managed by tenantdb; adopting it needs DatabaseServer {server} to list it in spec.adoption (namespace {namespace}, database {}, role {name})",
                desired.database
            )));
        }
    }
    if let Some(database) = &snapshot.database {
        let name = &desired.database;
        let ours = database.comment.as_deref() == Some(marker)
            // Created by us (the marker not written yet, or rewritten by the
            // tenant as the database's owner): its owner is our marked role.
            || (role_is_ours && database.owner == desired.role.as_str());
        if !ours {
            if let Some(other) = claimed_by_other(&database.comment) {
                return Err(ReconcileError::Conflict(format!(
                    "database {name} belongs to {other}; choose another spec.databaseName"
                )));
            }
            if !desired.adopt {
                return Err(ReconcileError::Conflict(format!(
                    "database {name} already exists and is not managed by tenantdb; set spec.adopt: true to take it over (the server must grant it too)"
                )));
            }
            if database.is_template {
                return Err(ReconcileError::Conflict(format!(
                    "database {name} is a template database; it is never adopted"
                )));
            }
            if database.owner_is_privileged {
                return Err(ReconcileError::Conflict(format!(
                    "database {name} is owned by {}, tenantdb's admin role or a role with elevated attributes; it is never adopted",
                    database.owner
                )));
            }
            if !desired.adoption.database {
                return Err(ReconcileError::Conflict(format!(
                    "database {name} already exists and is not managed by tenantdb; adopting it needs DatabaseServer {server} to list it in spec.adoption (namespace {namespace}, database {name})"
                )));
            }
        }
    }
    Ok(())
}

/// The ALTER ROLE needed to bring `existing` back to a plain login role.
fn role_changes(existing: &RoleState, connection_limit: i32) -> RoleChanges {
    let differs = |now: bool, wanted: bool| (now != wanted).then_some(wanted);
    RoleChanges {
        login: differs(existing.can_login, true),
        superuser: differs(existing.superuser, false),
        create_db: differs(existing.create_db, false),
        create_role: differs(existing.create_role, false),
        inherit: differs(existing.inherit, true),
        replication: differs(existing.replication, false),
        bypass_rls: differs(existing.bypass_rls, false),
        connection_limit: (existing.connection_limit != connection_limit).then_some(connection_limit),
    }
}

/// A time setting as PostgreSQL stores it (`15000`, `15s`, `2min`) in milliseconds.
pub fn pg_millis(value: &str) -> Option<i64> {
    let split = value.find(|c: char| !c.is_ascii_digit()).unwrap_or(value.len());
    let number: i64 = value[..split].parse().ok()?;
    let factor = match value[split..].trim() {
        "" | "ms" => 1,
        "s" => 1_000,
        "min" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return None,
    };
    number.checked_mul(factor)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::reconcile::desired::{AdoptionGrant, PoolContract};
    use crate::reconcile::observe::ExtensionSchema;

    fn desired() -> Desired {
        Desired {
            owner: "tenants/acme".into(),
            tenant: "acme".into(),
            server: "pg".into(),
            database: Ident::parse("tenants_acme").unwrap(),
            role: Ident::parse("tenants_acme").unwrap(),
            pool: PoolContract {
                max_connections: 20,
                min_connections: 2,
                idle_timeout_ms: 30_000,
                connection_timeout_ms: 2_000,
                replicas: 1,
                connection_limit: 22,
            },
            settings: BTreeMap::from([
                (Setting::StatementTimeout, Some(15_000)),
                (Setting::IdleInTransactionSessionTimeout, None),
                (Setting::LockTimeout, None),
            ]),
            extensions: BTreeSet::from(["pg_trgm".to_owned()]),
            adopt: false,
            adoption: AdoptionGrant::default(),
            secret_name: "acme-db".into(),
            indexes: Vec::new(),
            max_index_builds: 2,
            cache: None,
        }
    }

    /// The snapshot of a tenant that is exactly as `desired()` wants it.
    fn converged() -> Snapshot {
        Snapshot {
            role: Some(RoleState {
                can_login: true,
                superuser: false,
                create_db: false,
                create_role: false,
                inherit: true,
                replication: false,
                bypass_rls: false,
                connection_limit: 22,
                comment: Some("tenantdb.io/owner=tenants/acme".into()),
                admin_is_member: true,
                is_admin: false,
                privileged_memberships: Vec::new(),
            }),
            database: Some(DatabaseState {
                owner: "tenants_acme".into(),
                connection_limit: 22,
                comment: Some("tenantdb.io/owner=tenants/acme".into()),
                connect_grantees: BTreeSet::from(["tenants_acme".to_owned()]),
                is_template: false,
                allow_connections: true,
                owner_is_privileged: false,
            }),
            settings: BTreeMap::from([
                ("statement_timeout".to_owned(), "15s".to_owned()),
                (
                    "search_path".to_owned(),
                    statements::TENANT_SEARCH_PATH.to_owned(),
                ),
            ]),
            extensions: BTreeSet::from(["plpgsql".to_owned(), "pg_trgm".to_owned()]),
            extension_schema: Some(ExtensionSchema {
                tenant_can_create: false,
                tenant_has_usage: true,
            }),
        }
    }

    fn password() -> Password {
        Password::new("stored")
    }

    fn kinds(steps: &[Step]) -> Vec<&'static str> {
        steps
            .iter()
            .map(|s| match s {
                Step::CreateRole { .. } => "CreateRole",
                Step::AlterRole { .. } => "AlterRole",
                Step::SetPassword { .. } => "SetPassword",
                Step::CommentOnRole { .. } => "CommentOnRole",
                Step::GrantRoleToAdmin { .. } => "GrantRoleToAdmin",
                Step::CreateDatabase { .. } => "CreateDatabase",
                Step::CommentOnDatabase { .. } => "CommentOnDatabase",
                Step::AlterDatabaseOwner { .. } => "AlterDatabaseOwner",
                Step::AlterDatabaseConnectionLimit { .. } => "AlterDatabaseConnectionLimit",
                Step::AlterDatabaseFlags { .. } => "AlterDatabaseFlags",
                Step::SetRoleSearchPath { .. } => "SetRoleSearchPath",
                Step::CreateExtensionSchema { .. } => "CreateExtensionSchema",
                Step::GrantExtensionSchemaUsage { .. } => "GrantExtensionSchemaUsage",
                Step::RevokeConnect { .. } => "RevokeConnect",
                Step::GrantConnect { .. } => "GrantConnect",
                Step::SetRoleSetting { .. } => "SetRoleSetting",
                Step::ResetRoleSetting { .. } => "ResetRoleSetting",
                Step::CreateExtension { .. } => "CreateExtension",
                Step::TerminateSessions { .. } => "TerminateSessions",
                Step::DropDatabase { .. } => "DropDatabase",
                Step::DropRole { .. } => "DropRole",
            })
            .collect()
    }

    #[test]
    fn nothing_exists_so_everything_is_created_in_an_order_postgresql_accepts() {
        let plan = plan_provision(
            &desired(),
            &Snapshot::default(),
            StoredPassword::Missing,
            password(),
        )
        .unwrap();
        assert_eq!(
            kinds(&plan.steps),
            [
                "CreateRole",
                "CommentOnRole",
                "GrantRoleToAdmin",
                "CreateDatabase",
                "CommentOnDatabase",
                "RevokeConnect",
                "SetRoleSetting",
                "SetRoleSearchPath",
                "CreateExtensionSchema",
                "GrantExtensionSchemaUsage",
                "CreateExtension"
            ]
        );
        assert!(plan.password_is_new);
        assert_eq!(plan.steps[3].context(), Context::AdminNoTransaction);
        assert_eq!(plan.steps[8].context(), Context::TenantDatabase);
        assert_eq!(
            plan.steps[10].statement().unwrap().0,
            "CREATE EXTENSION IF NOT EXISTS \"pg_trgm\" SCHEMA \"extensions\""
        );
    }

    #[test]
    fn a_converged_tenant_plans_nothing() {
        let plan = plan_provision(
            &desired(),
            &converged(),
            StoredPassword::Found(&password()),
            password(),
        )
        .unwrap();
        assert_eq!(plan.steps, []);
        assert!(!plan.password_is_new);
    }

    #[test]
    fn settings_compare_by_value_not_spelling() {
        assert_eq!(pg_millis("15000"), Some(15_000));
        assert_eq!(pg_millis("15s"), Some(15_000));
        assert_eq!(pg_millis("2min"), Some(120_000));
        assert_eq!(pg_millis("1h"), Some(3_600_000));
        assert_eq!(pg_millis("soon"), None);
    }

    #[test]
    fn a_missing_secret_sets_a_new_password_on_an_existing_role() {
        let plan = plan_provision(&desired(), &converged(), StoredPassword::Missing, password()).unwrap();
        assert_eq!(kinds(&plan.steps), ["SetPassword"]);
        let untracked =
            plan_provision(&desired(), &converged(), StoredPassword::Untracked, password()).unwrap();
        assert_eq!(untracked.steps, []);
        assert_eq!(untracked.password, None);
    }

    #[test]
    fn someone_elses_database_or_role_is_refused() {
        let mut snapshot = converged();
        snapshot.database.as_mut().unwrap().comment = Some("tenantdb.io/owner=other/tenant".into());
        snapshot.database.as_mut().unwrap().owner = "other_tenant".into();
        let error = plan_provision(&desired(), &snapshot, StoredPassword::Missing, password()).unwrap_err();
        assert!(error.to_string().contains("belongs to other/tenant"), "{error}");
        assert!(plan_delete(&desired(), &snapshot).is_err());
        let mut role = converged();
        role.role.as_mut().unwrap().comment = Some("tenantdb.io/owner=other/tenant".into());
        let error = plan_provision(&desired(), &role, StoredPassword::Missing, password()).unwrap_err();
        assert!(
            error
                .to_string()
                .contains("role \"tenants_acme\" belongs to other/tenant"),
            "{error}"
        );
    }

    #[test]
    fn a_database_comment_rewritten_by_its_owner_is_restored_not_believed() {
        // The tenant owns its database and can rewrite its comment; the
        // role's marker (which it cannot touch) decides.
        let mut snapshot = converged();
        snapshot.database.as_mut().unwrap().comment = Some("tenantdb.io/owner=victims/bank".into());
        let plan = plan_provision(
            &desired(),
            &snapshot,
            StoredPassword::Found(&password()),
            password(),
        )
        .unwrap();
        assert_eq!(kinds(&plan.steps), ["CommentOnDatabase"]);
        assert_eq!(
            kinds(&plan_delete(&desired(), &snapshot).unwrap()),
            ["AlterRole", "TerminateSessions", "DropDatabase", "DropRole"]
        );
    }

    #[test]
    fn owner_flags_are_undone_and_a_template_is_untemplated_before_its_drop() {
        let mut snapshot = converged();
        let database = snapshot.database.as_mut().unwrap();
        database.is_template = true;
        database.allow_connections = false;
        let plan = plan_provision(
            &desired(),
            &snapshot,
            StoredPassword::Found(&password()),
            password(),
        )
        .unwrap();
        assert_eq!(
            plan.steps[0].statement().unwrap().0,
            "ALTER DATABASE \"tenants_acme\" IS_TEMPLATE false ALLOW_CONNECTIONS true"
        );
        assert_eq!(plan.steps.len(), 1);
        assert_eq!(
            kinds(&plan_delete(&desired(), &snapshot).unwrap()),
            [
                "AlterRole",
                "TerminateSessions",
                "AlterDatabaseFlags",
                "DropDatabase",
                "DropRole"
            ]
        );
    }

    #[test]
    fn extensions_never_go_into_a_schema_the_tenant_can_write() {
        let mut snapshot = converged();
        snapshot.extensions.remove("pg_trgm");
        snapshot.extension_schema = Some(ExtensionSchema {
            tenant_can_create: true,
            tenant_has_usage: true,
        });
        let error = plan_provision(
            &desired(),
            &snapshot,
            StoredPassword::Found(&password()),
            password(),
        )
        .unwrap_err();
        assert!(
            error.to_string().contains("is writable by role \"tenants_acme\""),
            "{error}"
        );
        // Once installed there is nothing to run, so nothing to refuse.
        snapshot.extensions.insert("pg_trgm".into());
        assert!(
            plan_provision(
                &desired(),
                &snapshot,
                StoredPassword::Found(&password()),
                password()
            )
            .unwrap()
            .steps
            .is_empty()
        );
    }

    #[test]
    fn adoption_needs_the_flag_and_the_servers_grant_and_never_takes_privileges() {
        let mut unmarked = converged();
        unmarked.role.as_mut().unwrap().comment = None;
        unmarked.database.as_mut().unwrap().comment = Some("the finance team's".into());
        let error = plan_provision(&desired(), &unmarked, StoredPassword::Missing, password()).unwrap_err();
        assert!(error.to_string().contains("set spec.adopt: true"), "{error}");
        let asking = Desired {
            adopt: true,
            ..desired()
        };
        let error = plan_provision(&asking, &unmarked, StoredPassword::Missing, password()).unwrap_err();
        assert!(
            error.to_string().contains("role \"tenants_acme\" already exists")
                && error.to_string().contains(
                    "spec.adoption (namespace tenants, database \"tenants_acme\", role \"tenants_acme\")"
                ),
            "{error}"
        );
        let database_only = Desired {
            adoption: AdoptionGrant {
                database: true,
                role: false,
            },
            ..asking.clone()
        };
        assert!(plan_provision(&database_only, &unmarked, StoredPassword::Missing, password()).is_err());
        let granted = Desired {
            adoption: AdoptionGrant {
                database: true,
                role: true,
            },
            ..asking.clone()
        };
        let adopted = plan_provision(
            &granted,
            &unmarked,
            StoredPassword::Found(&password()),
            password(),
        )
        .unwrap();
        assert_eq!(kinds(&adopted.steps), ["CommentOnRole", "CommentOnDatabase"]);

        let refused = |change: &dyn Fn(&mut Snapshot), reason: &str| {
            let mut snapshot = unmarked.clone();
            change(&mut snapshot);
            let error = plan_provision(&granted, &snapshot, StoredPassword::Missing, password()).unwrap_err();
            assert!(error.to_string().contains(reason), "{reason}: {error}");
        };
        refused(&|s| s.role.as_mut().unwrap().create_role = true, "has CREATEROLE");
        refused(&|s| s.role.as_mut().unwrap().superuser = true, "has SUPERUSER");
        refused(&|s| s.role.as_mut().unwrap().bypass_rls = true, "has BYPASSRLS");
        refused(
            &|s| s.role.as_mut().unwrap().privileged_memberships = vec!["pg_write_server_files".into()],
            "is a member of pg_write_server_files",
        );
        refused(
            &|s| s.role.as_mut().unwrap().is_admin = true,
            "tenantdb's own admin role",
        );
        refused(
            &|s| s.database.as_mut().unwrap().is_template = true,
            "is a template",
        );
        refused(
            &|s| s.database.as_mut().unwrap().owner_is_privileged = true,
            "is never adopted",
        );
        // Adoption never extends to deletion.
        assert!(
            plan_delete(
                &Desired {
                    adopt: true,
                    ..desired()
                },
                &unmarked
            )
            .is_err()
        );
    }

    #[test]
    fn an_interrupted_create_is_finished_not_refused() {
        let mut snapshot = converged();
        snapshot.database.as_mut().unwrap().comment = None;
        let plan = plan_provision(
            &desired(),
            &snapshot,
            StoredPassword::Found(&password()),
            password(),
        )
        .unwrap();
        assert_eq!(kinds(&plan.steps), ["CommentOnDatabase"]);
    }

    #[test]
    fn delete_blocks_logins_ends_sessions_then_drops() {
        assert_eq!(
            kinds(&plan_delete(&desired(), &converged()).unwrap()),
            ["AlterRole", "TerminateSessions", "DropDatabase", "DropRole"]
        );
        assert_eq!(plan_delete(&desired(), &Snapshot::default()).unwrap(), []);
    }

    #[test]
    fn shown_sql_never_holds_a_password_or_verifier() {
        let plan = plan_provision(
            &desired(),
            &Snapshot::default(),
            StoredPassword::Missing,
            password(),
        )
        .unwrap();
        let shown = plan.steps[0].to_string();
        assert!(shown.ends_with("PASSWORD '<redacted>'"), "{shown}");
        let real = plan.steps[0].statement().unwrap().0;
        assert!(real.contains("SCRAM-SHA-256$") && !real.contains("stored"));
    }
}
