//! Step one of the pipeline (pure): resolve a `TenantDatabase` and the
//! `DatabaseServer` it is placed on into the exact state wanted on the
//! server — physical names, pool contract, settings, extensions — checking
//! everything the CRD schema checks again, since the operator must not rely
//! on the cluster having the current CRD installed.

use std::collections::{BTreeMap, BTreeSet};

use kube::ResourceExt;
use sha2::{Digest, Sha256};

use crate::api::common::is_k8s_name;
use crate::api::duration::parse_millis;
use crate::api::tenant_database::{CacheCommands, IndexMethod, IndexSpec, LimitsSpec, PoolSpec};
use crate::api::{DatabaseServer, TenantDatabase};
use crate::sql::Ident;
use crate::sql::expression::IndexExpression;
use crate::sql::index::{IndexDefinition, IndexKey, Method};
use crate::sql::statements::Setting;

use super::error::SpecError;

/// Built-in pool defaults, used when neither tenant nor server says otherwise.
pub const DEFAULT_MAX_CONNECTIONS: i32 = 20;
pub const DEFAULT_MIN_CONNECTIONS: i32 = 2;
pub const DEFAULT_IDLE_TIMEOUT: &str = "30s";
pub const DEFAULT_CONNECTION_TIMEOUT: &str = "2s";
pub const DEFAULT_REPLICAS: i32 = 1;

/// Connections added to `maxConnections × replicas` for the default
/// CONNECTION LIMIT: one for tenantdb's health login, one for a person's
/// `psql` or a migration job, so neither is refused when the pools are full.
pub const CONNECTION_RESERVE: i32 = 2;

/// Concurrent index builds per server when its `capacity.maxIndexBuilds`
/// does not say.
pub const DEFAULT_MAX_INDEX_BUILDS: usize = 2;

/// Extensions tenants may request when the server sets no
/// `allowedExtensions`: PostgreSQL's trusted contrib extensions, which a
/// database owner may create without superuser rights.
pub const DEFAULT_ALLOWED_EXTENSIONS: &[&str] = &[
    "btree_gin",
    "btree_gist",
    "citext",
    "cube",
    "dict_int",
    "fuzzystrmatch",
    "hstore",
    "intarray",
    "isn",
    "lo",
    "ltree",
    "pg_trgm",
    "pgcrypto",
    "seg",
    "tablefunc",
    "tcn",
    "tsm_system_rows",
    "tsm_system_time",
    "unaccent",
    "uuid-ossp",
];

/// The marker tenantdb writes as the comment of every database and role it
/// creates, naming the owning resource.
pub const OWNER_MARKER_PREFIX: &str = "tenantdb.io/owner=";

/// Separates the owner from the definition fingerprint in an index's marker.
pub const INDEX_DEFINITION_SEPARATOR: &str = "; definition=";

/// The application's pool contract, fully resolved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PoolContract {
    pub max_connections: i32,
    pub min_connections: i32,
    pub idle_timeout_ms: i64,
    pub connection_timeout_ms: i64,
    pub replicas: i32,
    /// CONNECTION LIMIT on the role and the database.
    pub connection_limit: i32,
}

/// Everything wanted on the server for one tenant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Desired {
    /// `namespace/name` of the owning resource.
    pub owner: String,
    pub tenant: String,
    pub server: String,
    pub database: Ident,
    pub role: Ident,
    pub pool: PoolContract,
    /// Each managed setting: `Some(ms)` to set, `None` to leave at PostgreSQL's default.
    pub settings: BTreeMap<Setting, Option<i64>>,
    pub extensions: BTreeSet<String>,
    pub adopt: bool,
    /// What the server's `spec.adoption` lets this tenant take over.
    pub adoption: AdoptionGrant,
    pub secret_name: String,
    /// The declared indexes, in spec order.
    pub indexes: Vec<DesiredIndex>,
    /// Most index builds at once on the tenant's server.
    pub max_index_builds: usize,
    /// The tenant's cache (`spec.cache`), when it asks for one.
    pub cache: Option<CacheIntent>,
}

/// A tenant's cache, resolved from `spec.cache`: everything but the server
/// (placed by the operator) and the password (kept in the Secret).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CacheIntent {
    /// The CacheServer the spec names, if it names one.
    pub server: Option<String>,
    pub prefix: crate::cache::KeyPrefix,
    pub commands: crate::cache::Commands,
    /// The tenant's Redis user ([`crate::cache::acl::user_name`]).
    pub user: String,
}

/// Which existing, unmarked objects the server lets this tenant adopt:
/// granted only by a `DatabaseServer.spec.adoption` entry naming the
/// tenant's namespace and the physical name.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AdoptionGrant {
    pub database: bool,
    pub role: bool,
}

/// Databases every server has for itself, never a tenant's.
pub const SERVER_DATABASES: &[&str] = &["postgres", "template0", "template1"];

/// One declared index, fully validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DesiredIndex {
    pub name: Ident,
    pub definition: IndexDefinition,
    /// Short hash of the definition's canonical text, kept in the managed
    /// marker so an unchanged index is recognised without asking PostgreSQL.
    pub fingerprint: String,
}

impl Desired {
    /// The ownership marker for this tenant's database and role.
    pub fn marker(&self) -> String {
        format!("{OWNER_MARKER_PREFIX}{}", self.owner)
    }

    /// The marker on an index tenantdb built for this tenant: the owner,
    /// and the fingerprint of the definition it was built from.
    pub fn index_marker(&self, index: &DesiredIndex) -> String {
        format!(
            "{}{INDEX_DEFINITION_SEPARATOR}{}",
            self.marker(),
            index.fingerprint
        )
    }
}

/// Resolves `tenant` as placed on `server`; the error is the first of
/// [`resolve_all`]'s problems.
pub fn resolve(tenant: &TenantDatabase, server: &DatabaseServer) -> Result<Desired, SpecError> {
    resolve_all(tenant, server).map_err(|mut problems| problems.swap_remove(0))
}

/// Resolves `tenant` as placed on `server`, or says every problem of its
/// spec at once (never an empty list), each naming its field — the one
/// rule book `tenantdb check`, `plan`, `apply` and the operator share.
pub fn resolve_all(tenant: &TenantDatabase, server: &DatabaseServer) -> Result<Desired, Vec<SpecError>> {
    let mut problems = Vec::new();
    let spec = &tenant.spec;
    let namespace = tenant.namespace().unwrap_or_else(|| "default".into());
    let name = tenant.name_any();
    let database_name = spec
        .database_name
        .clone()
        .unwrap_or_else(|| derive_name(&namespace, &name));
    let database = take(&mut problems, tenant_ident("spec.databaseName", &database_name));
    if database.is_some()
        && (SERVER_DATABASES.contains(&database_name.as_str())
            || database_name == server.spec.maintenance_database)
    {
        problems.push(SpecError::new(
            "spec.databaseName",
            format!(
                "{database_name:?} is one of DatabaseServer {}'s own databases, never a tenant's",
                server.name_any()
            ),
        ));
    }
    let role = match &spec.role_name {
        Some(role) => take(&mut problems, tenant_ident("spec.roleName", role)),
        None => database.clone(),
    };
    let defaults = server.spec.defaults.as_ref();
    let pool = take_all(
        &mut problems,
        resolve_pool(spec.pool.as_ref(), defaults.and_then(|d| d.pool.as_ref())),
    );
    let settings = take_all(
        &mut problems,
        resolve_limits(spec.limits.as_ref(), defaults.and_then(|d| d.limits.as_ref())),
    );
    let allowed: BTreeSet<&str> = match &server.spec.allowed_extensions {
        Some(list) => list.iter().map(String::as_str).collect(),
        None => DEFAULT_ALLOWED_EXTENSIONS.iter().copied().collect(),
    };
    let mut extensions = BTreeSet::new();
    for (i, extension) in spec.extensions.iter().enumerate() {
        if allowed.contains(extension.as_str()) {
            extensions.insert(extension.clone());
        } else {
            problems.push(SpecError::new(
                format!("spec.extensions[{i}]"),
                format!(
                    "{extension:?} is not on the allow-list of DatabaseServer {}",
                    server.name_any()
                ),
            ));
        }
    }
    let indexes = take_all(&mut problems, resolve_indexes(&spec.indexes));
    let secret_name = spec.secret_name.clone().unwrap_or_else(|| format!("{name}-db"));
    if !is_k8s_name(&secret_name) {
        problems.push(SpecError::new(
            "spec.secretName",
            format!("{secret_name:?} is not a valid Kubernetes object name"),
        ));
    }
    let cache = match &spec.cache {
        None => Some(None),
        Some(cache) => take(
            &mut problems,
            crate::cache::KeyPrefix::resolve(&namespace, &name, cache.key_prefix.as_deref()),
        )
        .map(|prefix| {
            Some(CacheIntent {
                server: cache.server.clone(),
                prefix,
                commands: match cache.commands {
                    CacheCommands::Default => crate::cache::Commands::Default,
                    CacheCommands::ReadOnly => crate::cache::Commands::ReadOnly,
                },
                user: crate::cache::acl::user_name(&namespace, &name),
            })
        }),
    };
    let (Some(database), Some(role), Some(pool), Some(settings), Some(indexes), Some(cache), true) = (
        database,
        role,
        pool,
        settings,
        indexes,
        cache,
        problems.is_empty(),
    ) else {
        return Err(problems);
    };
    let adoption = adoption_grant(&server.spec.adoption, &namespace, &database, &role);
    Ok(Desired {
        owner: format!("{namespace}/{name}"),
        tenant: spec.tenant.clone().unwrap_or_else(|| name.clone()),
        server: server.name_any(),
        database,
        role,
        pool,
        settings,
        extensions,
        adopt: spec.adopt,
        adoption,
        secret_name,
        indexes,
        max_index_builds: server
            .spec
            .capacity
            .as_ref()
            .and_then(|c| c.max_index_builds)
            .and_then(|n| usize::try_from(n).ok())
            .filter(|n| *n > 0)
            .unwrap_or(DEFAULT_MAX_INDEX_BUILDS),
        cache,
    })
}

/// `result`'s value, or `None` with its problem noted.
fn take<T>(problems: &mut Vec<SpecError>, result: Result<T, SpecError>) -> Option<T> {
    result.map_err(|e| problems.push(e)).ok()
}

/// `result`'s value, or `None` with its problems noted.
fn take_all<T>(problems: &mut Vec<SpecError>, result: Result<T, Vec<SpecError>>) -> Option<T> {
    result.map_err(|mut e| problems.append(&mut e)).ok()
}

/// `namespace_name`, lower-cased, with every character PostgreSQL would need
/// quoting for replaced by `_`; a `t_` prefix where it would start with a
/// digit or `pg_`; and when longer than 63 bytes, cut with a short hash of the
/// full name appended, so distinct long names stay distinct.
pub fn derive_name(namespace: &str, name: &str) -> String {
    let mut derived: String = format!("{namespace}_{name}")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect();
    if derived.starts_with(|c: char| c.is_ascii_digit()) || derived.starts_with("pg_") {
        derived.insert_str(0, "t_");
    }
    if derived.len() > 63 {
        let hash = Sha256::digest(format!("{namespace}/{name}").as_bytes());
        let suffix: String = hash.iter().take(4).map(|b| format!("{b:02x}")).collect();
        derived.truncate(63 - 1 - suffix.len());
        derived.push('_');
        derived.push_str(&suffix);
    }
    derived
}

/// What `grants` let a tenant of `namespace` adopt among `database` and `role`.
fn adoption_grant(
    grants: &[crate::api::database_server::AdoptionGrant],
    namespace: &str,
    database: &Ident,
    role: &Ident,
) -> AdoptionGrant {
    let mine = grants
        .iter()
        .filter(|g| g.namespace == namespace && g.database == database.as_str());
    let mut grant = AdoptionGrant::default();
    for entry in mine {
        grant.database = true;
        grant.role |= entry.role.as_deref() == Some(role.as_str());
    }
    grant
}

/// A database or role name: a valid identifier, lower case, not `pg_`.
fn tenant_ident(field: &str, name: &str) -> Result<Ident, SpecError> {
    let ident = Ident::parse(name).map_err(|e| SpecError::new(field, format!("{name:?} {e}")))?;
    if name.chars().any(|c| c.is_ascii_uppercase() || c == '$') {
        return Err(SpecError::new(
            field,
            format!("{name:?}: only lower-case letters, digits and '_' are allowed"),
        ));
    }
    if name.starts_with("pg_") {
        return Err(SpecError::new(
            field,
            format!("{name:?} must not start with pg_ (reserved by PostgreSQL)"),
        ));
    }
    Ok(ident)
}

fn resolve_pool(
    tenant: Option<&PoolSpec>,
    server: Option<&PoolSpec>,
) -> Result<PoolContract, Vec<SpecError>> {
    let mut problems = Vec::new();
    let pick = |get: fn(&PoolSpec) -> Option<i32>| tenant.and_then(get).or_else(|| server.and_then(get));
    let pick_str = |get: fn(&PoolSpec) -> Option<&String>| {
        tenant.and_then(get).or_else(|| server.and_then(get)).cloned()
    };
    let max_connections = pick(|p| p.max_connections).unwrap_or(DEFAULT_MAX_CONNECTIONS);
    let min_connections = pick(|p| p.min_connections).unwrap_or(DEFAULT_MIN_CONNECTIONS.min(max_connections));
    let replicas = pick(|p| p.replicas).unwrap_or(DEFAULT_REPLICAS);
    take(
        &mut problems,
        range("spec.pool.maxConnections", max_connections, 1, 10_000),
    );
    take(
        &mut problems,
        range("spec.pool.minConnections", min_connections, 0, 10_000),
    );
    take(&mut problems, range("spec.pool.replicas", replicas, 1, 1_000));
    if min_connections > max_connections {
        problems.push(SpecError::new(
            "spec.pool.minConnections",
            format!("{min_connections} exceeds maxConnections {max_connections}"),
        ));
    }
    let duration =
        |field: &str, value: String| parse_millis(&value).map_err(|e| SpecError::new(field, e.to_string()));
    let idle_timeout_ms = take(
        &mut problems,
        duration(
            "spec.pool.idleTimeout",
            pick_str(|p| p.idle_timeout.as_ref()).unwrap_or_else(|| DEFAULT_IDLE_TIMEOUT.into()),
        ),
    );
    let connection_timeout_ms = take(
        &mut problems,
        duration(
            "spec.pool.connectionTimeout",
            pick_str(|p| p.connection_timeout.as_ref()).unwrap_or_else(|| DEFAULT_CONNECTION_TIMEOUT.into()),
        ),
    );
    let connection_limit = match pick(|p| p.connection_limit) {
        Some(limit) => {
            take(
                &mut problems,
                range("spec.pool.connectionLimit", limit, 1, 100_000),
            );
            limit
        }
        None => max_connections * replicas + CONNECTION_RESERVE,
    };
    match (idle_timeout_ms, connection_timeout_ms) {
        (Some(idle_timeout_ms), Some(connection_timeout_ms)) if problems.is_empty() => Ok(PoolContract {
            max_connections,
            min_connections,
            idle_timeout_ms,
            connection_timeout_ms,
            replicas,
            connection_limit,
        }),
        _ => Err(problems),
    }
}

fn resolve_limits(
    tenant: Option<&LimitsSpec>,
    server: Option<&LimitsSpec>,
) -> Result<BTreeMap<Setting, Option<i64>>, Vec<SpecError>> {
    let mut problems = Vec::new();
    let mut settings = BTreeMap::new();
    for setting in Setting::ALL {
        let get = |limits: &LimitsSpec| match setting {
            Setting::StatementTimeout => limits.statement_timeout.clone(),
            Setting::IdleInTransactionSessionTimeout => limits.idle_in_transaction_session_timeout.clone(),
            Setting::LockTimeout => limits.lock_timeout.clone(),
        };
        let field = match setting {
            Setting::StatementTimeout => "spec.limits.statementTimeout",
            Setting::IdleInTransactionSessionTimeout => "spec.limits.idleInTransactionSessionTimeout",
            Setting::LockTimeout => "spec.limits.lockTimeout",
        };
        match tenant
            .and_then(get)
            .or_else(|| server.and_then(get))
            .map(|v| parse_millis(&v))
        {
            None => {
                settings.insert(setting, None);
            }
            Some(Ok(millis)) => {
                settings.insert(setting, Some(millis));
            }
            Some(Err(error)) => problems.push(SpecError::new(field, error.to_string())),
        }
    }
    if problems.is_empty() {
        Ok(settings)
    } else {
        Err(problems)
    }
}

/// Checks every declared index before anything runs — names, columns, and
/// expressions and predicates through the SQL parser — and resolves it;
/// or says every problem found, in every index.
fn resolve_indexes(indexes: &[IndexSpec]) -> Result<Vec<DesiredIndex>, Vec<SpecError>> {
    let mut problems = Vec::new();
    let mut seen = BTreeSet::new();
    let mut resolved = Vec::new();
    for (i, index) in indexes.iter().enumerate() {
        let at = |field: String| format!("spec.indexes[{i}].{field}");
        let ident = |field: &str, name: &str| {
            Ident::parse(name).map_err(|e| SpecError::new(at(field.into()), format!("{name:?} {e}")))
        };
        let (name, table, schema) = (
            take(&mut problems, ident("name", &index.name)),
            take(&mut problems, ident("table", &index.table)),
            take(&mut problems, ident("schema", &index.schema)),
        );
        if index.name.starts_with(TEMPORARY_INDEX_PREFIX) {
            problems.push(SpecError::new(
                at("name".into()),
                format!(
                    "names starting with {TEMPORARY_INDEX_PREFIX:?} are reserved for tenantdb's rebuilds"
                ),
            ));
        }
        if !seen.insert(index.name.as_str()) {
            problems.push(SpecError::new(
                at("name".into()),
                format!("{:?} is declared twice", index.name),
            ));
        }
        if index.columns.is_empty() == index.expressions.is_empty() {
            problems.push(SpecError::new(
                format!("spec.indexes[{i}]"),
                "exactly one of columns or expressions must be given",
            ));
        }
        let mut keys = Vec::new();
        for (j, column) in index.columns.iter().enumerate() {
            let key =
                key_column(column).map_err(|reason| SpecError::new(at(format!("columns[{j}]")), reason));
            keys.extend(take(&mut problems, key));
        }
        let mut include = Vec::new();
        for (j, column) in index.include.iter().enumerate() {
            include.extend(take(&mut problems, ident(&format!("include[{j}]"), column)));
        }
        for (j, expression) in index.expressions.iter().enumerate() {
            let key = IndexExpression::parse(expression)
                .map(IndexKey::Expression)
                .map_err(|e| SpecError::new(at(format!("expressions[{j}]")), e.to_string()));
            keys.extend(take(&mut problems, key));
        }
        let predicate = index.predicate.as_deref().map(|predicate| {
            take(
                &mut problems,
                IndexExpression::parse(predicate)
                    .map_err(|e| SpecError::new(at("where".into()), e.to_string())),
            )
        });
        let (Some(name), Some(table), Some(schema), true) = (name, table, schema, problems.is_empty()) else {
            continue;
        };
        let definition = IndexDefinition {
            schema,
            table,
            unique: index.unique,
            method: match index.method {
                IndexMethod::Btree => Method::Btree,
                IndexMethod::Hash => Method::Hash,
                IndexMethod::Gin => Method::Gin,
                IndexMethod::Gist => Method::Gist,
                IndexMethod::Brin => Method::Brin,
            },
            keys,
            include,
            predicate: predicate.flatten(),
        };
        let digest = Sha256::digest(definition.canonical().as_bytes());
        let fingerprint = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
        resolved.push(DesiredIndex {
            name,
            definition,
            fingerprint,
        });
    }
    if problems.is_empty() {
        Ok(resolved)
    } else {
        Err(problems)
    }
}

/// Names tenantdb gives indexes while it rebuilds one (the new copy, then
/// the old one until it is dropped); a spec may not use them.
pub const TEMPORARY_INDEX_PREFIX: &str = "tenantdb_";

/// `column [ASC|DESC] [NULLS FIRST|LAST]`.
fn key_column(text: &str) -> Result<IndexKey, String> {
    let mut words = text.split_whitespace();
    let column = words.next().ok_or("must not be empty")?;
    let column = Ident::parse(column).map_err(|e| format!("{column:?} {e}"))?;
    let rest: Vec<String> = words.map(str::to_uppercase).collect();
    let rest: Vec<&str> = rest.iter().map(String::as_str).collect();
    let order_ok = |w: &str| w == "ASC" || w == "DESC";
    let nulls_ok = |w: &str| w == "FIRST" || w == "LAST";
    let (order, nulls) = match rest.as_slice() {
        [] => (None, None),
        [order] => (Some(*order), None),
        ["NULLS", which] => (None, Some(*which)),
        [order, "NULLS", which] => (Some(*order), Some(*which)),
        _ => (Some(""), None),
    };
    if order.is_none_or(order_ok) && nulls.is_none_or(nulls_ok) {
        Ok(IndexKey::Column {
            column,
            descending: order.map(|o| o == "DESC"),
            nulls_first: nulls.map(|n| n == "FIRST"),
        })
    } else {
        Err(format!(
            "{text:?}: expected a column name, then optionally ASC or DESC and NULLS FIRST or NULLS LAST"
        ))
    }
}

fn range(field: &str, value: i32, min: i32, max: i32) -> Result<(), SpecError> {
    if (min..=max).contains(&value) {
        Ok(())
    } else {
        Err(SpecError::new(field, format!("{value} is outside {min}–{max}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::database_server::{DatabaseServerSpec, TenantDefaults};
    use crate::api::tenant_database::TenantDatabaseSpec;

    fn server(defaults: Option<TenantDefaults>) -> DatabaseServer {
        DatabaseServer::new(
            "pg-main",
            DatabaseServerSpec {
                host: "db".into(),
                defaults,
                ..DatabaseServerSpec::default()
            },
        )
    }

    fn tenant(spec: TenantDatabaseSpec) -> TenantDatabase {
        let mut tenant = TenantDatabase::new("acme", spec);
        tenant.metadata.namespace = Some("tenants".into());
        tenant
    }

    #[test]
    fn every_problem_of_a_spec_is_named_at_once() {
        let spec: TenantDatabaseSpec = serde_json::from_value(serde_json::json!({
            "databaseName": "template1",
            "extensions": ["hstore", "plpython3u"],
            "pool": {"maxConnections": 2, "minConnections": 5, "idleTimeout": "soon"},
            "limits": {"lockTimeout": "later"},
            "indexes": [
                {"name": "tenantdb_x", "table": "t", "columns": ["a"], "where": "a IN (SELECT 1)"},
                {"name": "i", "table": "t", "expressions": ["pg_sleep(1)"]}
            ]
        }))
        .unwrap();
        let problems = resolve_all(&tenant(spec), &server(None)).unwrap_err();
        let fields: Vec<&str> = problems.iter().map(|p| p.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "spec.databaseName",
                "spec.pool.minConnections",
                "spec.pool.idleTimeout",
                "spec.limits.lockTimeout",
                "spec.extensions[1]",
                "spec.indexes[0].name",
                "spec.indexes[0].where",
                "spec.indexes[1].expressions[0]",
            ],
            "{problems:?}"
        );
        // resolve (the operator's and plan's first answer) is the first of them.
        let first = resolve(
            &tenant(
                serde_json::from_value(
                    serde_json::json!({"databaseName": "template1", "extensions": ["plpython3u"]}),
                )
                .unwrap(),
            ),
            &server(None),
        )
        .unwrap_err();
        assert_eq!(first.field, "spec.databaseName");
    }

    #[test]
    fn defaults_give_the_documented_contract() {
        let desired = resolve(&tenant(TenantDatabaseSpec::default()), &server(None)).unwrap();
        assert_eq!(desired.database.as_str(), "tenants_acme");
        assert_eq!(desired.role, desired.database);
        assert_eq!(desired.owner, "tenants/acme");
        assert_eq!(desired.secret_name, "acme-db");
        assert_eq!(
            desired.pool,
            PoolContract {
                max_connections: 20,
                min_connections: 2,
                idle_timeout_ms: 30_000,
                connection_timeout_ms: 2_000,
                replicas: 1,
                connection_limit: 22,
            }
        );
        assert!(desired.settings.values().all(Option::is_none));
    }

    #[test]
    fn tenant_values_win_over_server_defaults_which_win_over_built_ins() {
        let defaults = TenantDefaults {
            pool: Some(PoolSpec {
                max_connections: Some(10),
                replicas: Some(2),
                ..PoolSpec::default()
            }),
            limits: Some(LimitsSpec {
                statement_timeout: Some("30s".into()),
                lock_timeout: Some("5s".into()),
                ..LimitsSpec::default()
            }),
        };
        let spec = TenantDatabaseSpec {
            pool: Some(PoolSpec {
                replicas: Some(3),
                ..PoolSpec::default()
            }),
            limits: Some(LimitsSpec {
                statement_timeout: Some("1m".into()),
                ..LimitsSpec::default()
            }),
            ..TenantDatabaseSpec::default()
        };
        let desired = resolve(&tenant(spec), &server(Some(defaults))).unwrap();
        assert_eq!(desired.pool.max_connections, 10);
        assert_eq!(desired.pool.replicas, 3);
        assert_eq!(desired.pool.connection_limit, 10 * 3 + CONNECTION_RESERVE);
        assert_eq!(desired.settings[&Setting::StatementTimeout], Some(60_000));
        assert_eq!(desired.settings[&Setting::LockTimeout], Some(5_000));
        assert_eq!(desired.settings[&Setting::IdleInTransactionSessionTimeout], None);
    }

    #[test]
    fn min_connections_follows_a_small_max_and_is_checked_after_layering() {
        let small = TenantDatabaseSpec {
            pool: Some(PoolSpec {
                max_connections: Some(1),
                ..PoolSpec::default()
            }),
            ..TenantDatabaseSpec::default()
        };
        assert_eq!(
            resolve(&tenant(small), &server(None))
                .unwrap()
                .pool
                .min_connections,
            1
        );

        let defaults = TenantDefaults {
            pool: Some(PoolSpec {
                min_connections: Some(8),
                ..PoolSpec::default()
            }),
            limits: None,
        };
        let spec = TenantDatabaseSpec {
            pool: Some(PoolSpec {
                max_connections: Some(4),
                ..PoolSpec::default()
            }),
            ..TenantDatabaseSpec::default()
        };
        let error = resolve(&tenant(spec), &server(Some(defaults))).unwrap_err();
        assert_eq!(error.field, "spec.pool.minConnections");
    }

    #[test]
    fn derived_names_are_legal_and_distinct_when_cut() {
        assert_eq!(derive_name("tenants", "acme-corp.eu"), "tenants_acme_corp_eu");
        assert_eq!(derive_name("9lives", "x"), "t_9lives_x");
        assert_eq!(derive_name("pg", "x"), "t_pg_x");
        let long_a = derive_name("tenants", &format!("{}-a", "x".repeat(70)));
        let long_b = derive_name("tenants", &format!("{}-b", "x".repeat(70)));
        assert_eq!(long_a.len(), 63);
        assert_ne!(long_a, long_b);
        assert!(Ident::parse(&long_a).is_ok());
    }

    #[test]
    fn extensions_must_be_on_the_allow_list() {
        let spec = |extensions: &[&str]| TenantDatabaseSpec {
            extensions: extensions.iter().map(|e| e.to_string()).collect(),
            ..TenantDatabaseSpec::default()
        };
        assert!(resolve(&tenant(spec(&["pg_trgm", "citext"])), &server(None)).is_ok());
        let error = resolve(&tenant(spec(&["plpython3u"])), &server(None)).unwrap_err();
        assert_eq!(error.field, "spec.extensions[0]");
    }

    #[test]
    fn indexes_are_checked_before_anything_runs() {
        let with_index = |index: serde_json::Value| {
            let spec: TenantDatabaseSpec =
                serde_json::from_value(serde_json::json!({"indexes": [index]})).unwrap();
            resolve(&tenant(spec), &server(None))
        };
        assert!(with_index(serde_json::json!({"name": "i", "table": "t", "columns": ["a", "b desc nulls last"], "where": "deleted_at IS NULL"})).is_ok());
        assert!(
            with_index(serde_json::json!({"name": "i", "table": "t", "expressions": ["lower(email)"]}))
                .is_ok()
        );
        for (index, field) in [
            (
                serde_json::json!({"name": "i", "table": "t", "columns": ["a"], "where": "true; DROP TABLE t"}),
                "spec.indexes[0].where",
            ),
            (
                serde_json::json!({"name": "i", "table": "t", "expressions": ["(SELECT 1)"]}),
                "spec.indexes[0].expressions[0]",
            ),
            (
                serde_json::json!({"name": "i", "table": "t", "columns": ["a sideways"]}),
                "spec.indexes[0].columns[0]",
            ),
            (
                serde_json::json!({"name": "i", "table": "t;x", "columns": ["a"]}),
                "spec.indexes[0].table",
            ),
            (serde_json::json!({"name": "i", "table": "t"}), "spec.indexes[0]"),
            (
                serde_json::json!({"name": "i", "table": "t", "columns": ["a"], "include": ["b c"]}),
                "spec.indexes[0].include[0]",
            ),
        ] {
            assert_eq!(with_index(index.clone()).unwrap_err().field, field, "{index}");
        }
    }

    #[test]
    fn names_are_checked_again_even_if_the_schema_was_bypassed() {
        for (field, spec) in [
            (
                "spec.databaseName",
                TenantDatabaseSpec {
                    database_name: Some("acme\"; drop".into()),
                    ..TenantDatabaseSpec::default()
                },
            ),
            (
                "spec.roleName",
                TenantDatabaseSpec {
                    role_name: Some("pg_read_all_data".into()),
                    ..TenantDatabaseSpec::default()
                },
            ),
            (
                "spec.databaseName",
                TenantDatabaseSpec {
                    database_name: Some("Acme".into()),
                    ..TenantDatabaseSpec::default()
                },
            ),
        ] {
            assert_eq!(resolve(&tenant(spec), &server(None)).unwrap_err().field, field);
        }
    }
}
