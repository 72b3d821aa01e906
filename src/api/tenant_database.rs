//! `TenantDatabase`: one tenant's database, login role, pool contract,
//! guard rails and indexes, and the health the operator observed.
//!
//! Validation that the API server can do lives in the schema (patterns,
//! ranges, CEL rules), so a bad manifest is refused at `kubectl apply`.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{
    Condition, DURATION_PATTERN, K8S_NAME_PATTERN, PG_NAME_PATTERN, SQL_IDENTIFIER_PATTERN,
    conditions_list_schema, list_map_keyed_by_name, list_set,
};

/// Desired state of one tenant's database.
// Each printcolumn(...) repeats type_/json_path keys, which clippy misreads
// as duplicated attributes.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "tenantdb.io",
    version = "v1alpha1",
    kind = "TenantDatabase",
    plural = "tenantdatabases",
    singular = "tenantdatabase",
    shortname = "tdb",
    category = "tenantdb",
    namespaced,
    status = "TenantDatabaseStatus",
    doc = "A tenant's own PostgreSQL database and login role, with its connection pool contract, guard rails, indexes and live health.",
    printcolumn(
        name = "Tenant",
        type_ = "string",
        json_path = ".spec.tenant",
        description = "Tenant id"
    ),
    printcolumn(
        name = "Server",
        type_ = "string",
        json_path = ".status.server",
        description = "DatabaseServer the tenant is placed on"
    ),
    printcolumn(
        name = "Database",
        type_ = "string",
        json_path = ".status.databaseName",
        description = "Physical database name"
    ),
    printcolumn(
        name = "Phase",
        type_ = "string",
        json_path = ".status.phase",
        description = "Lifecycle phase"
    ),
    printcolumn(
        name = "Connections",
        type_ = "string",
        json_path = ".status.connections",
        description = "Active connections / connection limit"
    ),
    printcolumn(
        name = "Latency",
        type_ = "integer",
        json_path = ".status.health.latencyMs",
        description = "Login + SELECT 1 latency in milliseconds"
    ),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[schemars(extend("x-kubernetes-validations" = [
    {
        "rule": "!has(oldSelf.databaseName) || (has(self.databaseName) && self.databaseName == oldSelf.databaseName)",
        "message": "databaseName is immutable once set",
        "fieldPath": ".databaseName",
        "reason": "FieldValueForbidden"
    },
    {
        "rule": "!has(oldSelf.roleName) || (has(self.roleName) && self.roleName == oldSelf.roleName)",
        "message": "roleName is immutable once set",
        "fieldPath": ".roleName",
        "reason": "FieldValueForbidden"
    },
    {
        "rule": "!has(oldSelf.server) || (has(self.server) && self.server == oldSelf.server)",
        "message": "server is immutable once set: moving a tenant to another server is not done by editing this field",
        "fieldPath": ".server",
        "reason": "FieldValueForbidden"
    }
]))]
#[serde(rename_all = "camelCase")]
pub struct TenantDatabaseSpec {
    /// Tenant id, used in labels, metrics and the ownership marker. Default: metadata.name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = "^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")
    )]
    pub tenant: Option<String>,

    /// Name of the DatabaseServer to place this tenant on. When absent, placement
    /// picks one by capacity and serverSelector; the choice is recorded in
    /// status.server and never changes silently. Immutable once set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253), regex(pattern = K8S_NAME_PATTERN))]
    pub server: Option<String>,

    /// Restricts placement to DatabaseServers whose labels match, when server is not set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_selector: Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector>,

    /// Physical database name. Default: derived from namespace and name,
    /// sanitized, at most 63 bytes. Lower-case letters, digits and `_`; must
    /// not start with `pg_`, nor be one of a server's own databases
    /// (`postgres`, `template0`, `template1`). Immutable once set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63), regex(pattern = PG_NAME_PATTERN))]
    #[schemars(extend("x-kubernetes-validations" = [
        {"rule": "!self.startsWith('pg_')", "message": "must not start with pg_ (reserved by PostgreSQL)"},
        {"rule": "!(self in ['postgres', 'template0', 'template1'])", "message": "is one of a server's own databases, never a tenant's"}
    ]))]
    pub database_name: Option<String>,

    /// Login role name. Default: same as the database name. Lower-case letters,
    /// digits and `_`; must not start with `pg_`. Immutable once set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63), regex(pattern = PG_NAME_PATTERN))]
    #[schemars(extend("x-kubernetes-validations" = [{"rule": "!self.startsWith('pg_')", "message": "must not start with pg_ (reserved by PostgreSQL)"}]))]
    pub role_name: Option<String>,

    /// The application's connection pool contract, published in the connection
    /// Secret and enforced on the server as CONNECTION LIMIT.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool: Option<PoolSpec>,

    /// Guard rails set on the tenant role in its database (ALTER ROLE … IN DATABASE … SET).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<LimitsSpec>,

    /// Extensions to create in the tenant database; each must be on the server's allow-list.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32), inner(length(min = 1, max = 63), regex(pattern = "^[a-z_][a-z0-9_-]*$")), transform = list_set)]
    pub extensions: Vec<String>,

    /// Indexes the tenant's queries need, built with CREATE INDEX CONCURRENTLY.
    /// An index on a table that does not exist yet waits (phase Pending) until
    /// the application's migrations create it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), transform = list_map_keyed_by_name)]
    pub indexes: Vec<IndexSpec>,

    /// What happens to the database and role when this resource is deleted.
    /// Retain (default) leaves both untouched; Delete drops them.
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,

    /// Take over a database and role that already exist but carry no
    /// tenantdb ownership marker (e.g. created before tenantdb). Without it,
    /// such a database is refused. A database marked as another resource's is
    /// never taken over.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub adopt: bool,

    /// Name of the connection Secret in this namespace. Default: `<metadata.name>-db`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253), regex(pattern = K8S_NAME_PATTERN))]
    pub secret_name: Option<String>,

    /// The tenant's cache: a Redis user on a CacheServer that reaches only
    /// the keys and channels under its key prefix, published in the
    /// connection Secret (`REDIS_URL`, `REDIS_KEY_PREFIX`). Removed with
    /// the tenant as `deletionPolicy` says. See docs/cache.md.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache: Option<CacheSpec>,
}

/// A tenant's cache access in Redis.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {
        "rule": "!has(oldSelf.server) || (has(self.server) && self.server == oldSelf.server)",
        "message": "server is immutable once set: a tenant's keys stay on its cache server",
        "fieldPath": ".server",
        "reason": "FieldValueForbidden"
    },
    {
        "rule": "!has(oldSelf.keyPrefix) || (has(self.keyPrefix) && self.keyPrefix == oldSelf.keyPrefix)",
        "message": "keyPrefix is immutable once set: the tenant's keys are under it",
        "fieldPath": ".keyPrefix",
        "reason": "FieldValueForbidden"
    }
]))]
pub struct CacheSpec {
    /// Name of the CacheServer to place the cache on. When absent, placement
    /// picks a Ready one admitting the namespace with room (fewest tenants
    /// first); the choice is recorded in status.cache.server and never
    /// changes silently. Immutable once set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253), regex(pattern = K8S_NAME_PATTERN))]
    pub server: Option<String>,

    /// The prefix of every key and channel the tenant may use. Default:
    /// `<namespace>:<metadata.name>:`. Letters, digits and `.` `_` `:` `-`
    /// only (no glob characters), at most 128 bytes; it must start with
    /// `<namespace>:` and may not overlap another tenant's prefix on the
    /// same Redis (checked by tenantdb). Immutable once set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 128), regex(pattern = "^[A-Za-z0-9._:-]+$"))]
    pub key_prefix: Option<String>,

    /// The command profile: `default` (what a cache or session store needs,
    /// without admin, dangerous, blocking, scripting and whole-keyspace
    /// commands) or `readOnly`. Default: default.
    #[serde(default)]
    pub commands: CacheCommands,
}

/// A tenant's Redis command profile.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum CacheCommands {
    /// Every data type's commands on its own keys, expiry, transactions,
    /// pub/sub on its own channels.
    #[default]
    Default,
    /// Reading its own keys and subscribing to its own channels only.
    ReadOnly,
}

/// The application's connection pool contract. Each field left out takes the
/// server's `spec.defaults.pool` value, then the built-in default.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "!has(self.minConnections) || !has(self.maxConnections) || self.minConnections <= self.maxConnections",
    "message": "minConnections must not exceed maxConnections",
    "fieldPath": ".minConnections"
}]))]
pub struct PoolSpec {
    /// Maximum connections per application instance. Default: 20.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 10000))]
    pub max_connections: Option<i32>,

    /// Connections each application instance keeps open when idle. Default: 2
    /// (or maxConnections when that is smaller).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 10000))]
    pub min_connections: Option<i32>,

    /// How long a pooled connection may sit idle before the pool closes it, e.g. `30s`. Default: 30s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32), regex(pattern = DURATION_PATTERN))]
    pub idle_timeout: Option<String>,

    /// How long the application waits for a new connection, e.g. `2s`. Default: 2s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32), regex(pattern = DURATION_PATTERN))]
    pub connection_timeout: Option<String>,

    /// Number of application instances sharing the budget. Default: 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1000))]
    pub replicas: Option<i32>,

    /// Server-side CONNECTION LIMIT for the role and database. Default:
    /// maxConnections × replicas plus a small reserve for administration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100000))]
    pub connection_limit: Option<i32>,
}

/// Guard rails set on the tenant role in its own database. Each takes a
/// duration such as `30s`, `500ms` or `0` (disabled). Fields left out take the
/// server's `spec.defaults.limits` value, else PostgreSQL's setting is left alone.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LimitsSpec {
    /// statement_timeout: the longest a single statement may run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32), regex(pattern = DURATION_PATTERN))]
    pub statement_timeout: Option<String>,

    /// idle_in_transaction_session_timeout: the longest a session may idle inside an open transaction.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32), regex(pattern = DURATION_PATTERN))]
    pub idle_in_transaction_session_timeout: Option<String>,

    /// lock_timeout: the longest a statement waits for a lock.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32), regex(pattern = DURATION_PATTERN))]
    pub lock_timeout: Option<String>,
}

/// One index in the tenant database.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "(has(self.columns) && size(self.columns) > 0) != (has(self.expressions) && size(self.expressions) > 0)",
    "message": "exactly one of columns or expressions must be given"
}]))]
pub struct IndexSpec {
    /// Index name, unique within the tenant's spec; not starting with
    /// `tenantdb_` (reserved for tenantdb's rebuilds).
    #[schemars(length(min = 1, max = 63), regex(pattern = SQL_IDENTIFIER_PATTERN))]
    #[schemars(extend("x-kubernetes-validations" = [{"rule": "!self.startsWith('tenantdb_')", "message": "names starting with tenantdb_ are reserved for tenantdb's rebuilds"}]))]
    pub name: String,

    /// Table the index is on.
    #[schemars(length(min = 1, max = 63), regex(pattern = SQL_IDENTIFIER_PATTERN))]
    pub table: String,

    /// Schema of the table. Default: public.
    #[serde(default = "default_schema")]
    #[schemars(length(min = 1, max = 63), regex(pattern = SQL_IDENTIFIER_PATTERN))]
    pub schema: String,

    /// Key columns, each optionally followed by ASC/DESC and NULLS FIRST/LAST,
    /// e.g. `created_at` or `total DESC NULLS LAST`. Exclusive with expressions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = 32),
        inner(
            length(min = 1, max = 100),
            regex(
                pattern = "^[A-Za-z_][A-Za-z0-9_$]{0,62}( +(ASC|DESC|asc|desc))?( +(NULLS|nulls) +(FIRST|LAST|first|last))?$"
            )
        )
    )]
    pub columns: Vec<String>,

    /// Key expressions such as `lower(email)`, parsed and checked before use,
    /// never spliced as text. Exclusive with columns.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32), inner(length(min = 1, max = 1024)))]
    pub expressions: Vec<String>,

    /// Whether the index enforces uniqueness. Default: false.
    #[serde(default)]
    pub unique: bool,

    /// Index access method. Default: btree.
    #[serde(default)]
    pub method: IndexMethod,

    /// Non-key columns stored in the index (INCLUDE).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32), inner(length(min = 1, max = 63), regex(pattern = SQL_IDENTIFIER_PATTERN)))]
    pub include: Vec<String>,

    /// Predicate of a partial index, e.g. `deleted_at IS NULL`, parsed and checked before use.
    #[serde(default, rename = "where", skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 1024))]
    pub predicate: Option<String>,
}

fn default_schema() -> String {
    "public".to_owned()
}

/// Index access method.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum IndexMethod {
    #[default]
    Btree,
    Hash,
    Gin,
    Gist,
    Brin,
}

/// What happens to the database and role when the resource is deleted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum DeletionPolicy {
    /// Leave the database and role untouched.
    #[default]
    Retain,
    /// Block logins, end sessions, drop the database, then the role.
    Delete,
}

/// Observed state of a tenant's database, written by the operator.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TenantDatabaseStatus {
    /// The metadata.generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// Lifecycle phase, for people and printer columns; automation should read conditions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<TenantPhase>,

    /// Ready, Reconciling, Stalled (kstatus), plus DatabaseReady, PoolConfigured, IndexesReady and Healthy.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(transform = conditions_list_schema)]
    pub conditions: Vec<Condition>,

    /// DatabaseServer the tenant is placed on; never changes silently.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<String>,

    /// Physical database name in use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database_name: Option<String>,

    /// Physical login role name in use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role_name: Option<String>,

    /// Name of the connection Secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_name: Option<String>,

    /// `active/limit`, for `kubectl get`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connections: Option<String>,

    /// The pool contract in force and its live use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool: Option<PoolStatus>,

    /// Result of the latest health check.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<HealthStatus>,

    /// Per-index state.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(transform = list_map_keyed_by_name)]
    pub indexes: Vec<IndexStatus>,

    /// The tenant's cache, once placed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache: Option<CacheStatus>,
}

/// Where a tenant's cache lives, as recorded by the operator.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CacheStatus {
    /// CacheServer the cache is placed on; never changes silently.
    pub server: String,
    /// The tenant's Redis user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// The key prefix in force, recorded once the user was set on the server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_prefix: Option<String>,
    /// `aclFile` when the server saves ACL users to a file; `memory` when
    /// they live until a restart and tenantdb applies them again after one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acl_persistence: Option<super::cache_server::AclPersistence>,
    /// Whether the last login as the tenant's user (`AUTH` and `PING`, with
    /// the Secret's password) worked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reachable: Option<bool>,
    /// That login's time in milliseconds, smoothed; written when it moves
    /// to another bucket (250, 1000, 2500 ms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<i64>,
    /// When `reachable` and `latencyMs` were taken.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checked_at: Option<Time>,
    /// Why the login failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// A deletion under way (`deletionPolicy: Delete`): how far removing
    /// the tenant's keys got, to go on from after a restart.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub removal: Option<CacheRemoval>,
}

/// How far removing a tenant's keys got.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CacheRemoval {
    /// Keys unlinked so far.
    pub keys_removed: i64,
    /// The `SCAN` cursor to go on from (`0`: a new pass).
    pub cursor: String,
    /// Whether the current pass found keys: only a whole pass that finds
    /// none ends the removal.
    pub pass_found_keys: bool,
    /// The server's `run_id` the cursor belongs to: a cursor of a server
    /// since restarted (its keys maybe reloaded in another order) is not
    /// gone on from; a new pass starts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,
    /// The cache is removed as `deletionPolicy` says (what remains of the
    /// deletion is the database's).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub complete: bool,
}

/// Lifecycle phase of a tenant database.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum TenantPhase {
    Pending,
    Provisioning,
    Ready,
    Degraded,
    Failed,
    Deleting,
}

/// The pool contract in force and its live use.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PoolStatus {
    /// Maximum connections per application instance, as published in the Secret.
    pub max_connections: i32,
    /// CONNECTION LIMIT on the role and database.
    pub connection_limit: i32,
    /// Connections open to the tenant database (in any state): what the
    /// connection limit counts.
    #[serde(default)]
    pub active_connections: i32,
    /// Of those, the ones idle (held by a pool, not running a query).
    #[serde(default)]
    pub idle_connections: i32,
    /// Percentage of the connection limit in use (0–100), rounded down.
    #[serde(default)]
    pub utilization: i32,
}

/// Result of the latest health check.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HealthStatus {
    /// Whether a login as the tenant role succeeded.
    pub reachable: bool,
    /// Connect + `SELECT 1` latency in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<i64>,
    /// When the check ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checked_at: Option<Time>,
    /// Database size in bytes, refreshed on a slower schedule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_bytes: Option<i64>,
    /// Why the tenant is unhealthy, when it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// State of one declared index.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IndexStatus {
    /// Index name.
    pub name: String,
    /// Pending (table missing), Building, Ready or Invalid.
    pub phase: IndexPhase,
    /// Why the index is not Ready, when it is not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// State of one declared index.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum IndexPhase {
    /// Waiting for the table to exist.
    #[default]
    Pending,
    /// CREATE INDEX CONCURRENTLY is running.
    Building,
    /// Built and valid.
    Ready,
    /// A concurrent build failed and left an invalid index; it will be rebuilt.
    Invalid,
}
