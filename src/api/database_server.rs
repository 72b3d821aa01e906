//! `DatabaseServer`: one PostgreSQL server that tenants may be placed on,
//! how to reach it as an administrator, its budget, and what the operator
//! observed about it.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{
    Condition, DURATION_PATTERN, K8S_NAME_PATTERN, PG_NAME_PATTERN, SecretKeyReference, SecretReference,
    conditions_list_schema, list_set,
};
use super::tenant_database::{LimitsSpec, PoolSpec};

/// Desired state of a PostgreSQL server in the fleet.
// Each printcolumn(...) repeats type_/json_path keys, which clippy misreads
// as duplicated attributes.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "tenantdb.io",
    version = "v1alpha1",
    kind = "DatabaseServer",
    plural = "databaseservers",
    singular = "databaseserver",
    shortname = "dbs",
    category = "tenantdb",
    status = "DatabaseServerStatus",
    doc = "A PostgreSQL server that tenant databases may be placed on.",
    printcolumn(
        name = "Host",
        type_ = "string",
        json_path = ".spec.host",
        description = "Server host"
    ),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status",
        description = "Whether the server is reachable with the admin credentials"
    ),
    printcolumn(
        name = "Databases",
        type_ = "integer",
        json_path = ".status.databases",
        description = "Tenant databases managed on this server"
    ),
    printcolumn(
        name = "Connections",
        type_ = "string",
        json_path = ".status.connections",
        description = "Connection limits allocated to tenants / the server's max_connections"
    ),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
pub struct DatabaseServerSpec {
    /// Host name or IP address of the server.
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = "^[A-Za-z0-9]([-A-Za-z0-9.:]*[A-Za-z0-9])?$")
    )]
    pub host: String,

    /// TCP port. Default: 5432.
    #[serde(default = "default_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: i32,

    /// TLS mode for every connection to this server. Default: prefer.
    #[serde(default)]
    pub ssl_mode: SslMode,

    /// Secret key holding the CA certificate used with sslMode verify-full.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_secret_ref: Option<SecretKeyReference>,

    /// Secret with keys `username` and `password` of a role with CREATEDB and CREATEROLE.
    pub admin_secret_ref: SecretReference,

    /// Database the operator connects to for administration. Default: postgres.
    #[serde(default = "default_maintenance_database")]
    #[schemars(length(min = 1, max = 63), regex(pattern = PG_NAME_PATTERN))]
    pub maintenance_database: String,

    /// Budget that placement and admission check against.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capacity: Option<Capacity>,

    /// Namespaces whose tenants may use this server. Default: all namespaces.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_namespaces: Option<LabelSelector>,

    /// Extensions tenants on this server may request in spec.extensions.
    /// Default: PostgreSQL's trusted contrib extensions (see the docs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 128), inner(length(min = 1, max = 63), regex(pattern = "^[a-z_][a-z0-9_-]*$")), transform = list_set)]
    pub allowed_extensions: Option<Vec<String>>,

    /// Existing databases and roles that a TenantDatabase with `spec.adopt`
    /// may take over, each for one namespace only. Nothing else that exists
    /// unmarked on the server is ever adopted; roles with elevated
    /// attributes or memberships, templates and the server's own databases
    /// are refused even when listed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256))]
    pub adoption: Vec<AdoptionGrant>,

    /// Defaults for tenants placed on this server; a tenant's own spec wins.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub defaults: Option<TenantDefaults>,

    /// How the operator watches the health of this server's tenants.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check: Option<HealthCheckSpec>,
}

/// How tenant health is checked on one server. Every field has a default.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HealthCheckSpec {
    /// How often one batched query reads every tenant's connections. Default: 30s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32), regex(pattern = DURATION_PATTERN))]
    pub interval: Option<String>,

    /// How often each tenant's login (its role and Secret password, connect
    /// and `SELECT 1`) is tried, spread over the period. Default: 5m.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32), regex(pattern = DURATION_PATTERN))]
    pub login_interval: Option<String>,

    /// Tenant logins per second the server is asked for at most, across
    /// all its tenants: the login budget. Each tenant is still logged in
    /// at most once per `loginInterval`; with many tenants a full rotation
    /// takes longer (`status.loginRotationSeconds`). Tenants whose Secret or
    /// role changed, never logged in to, or whose last login failed go
    /// first. Default: 1 (about 1 % of a core on the server: a login costs
    /// it 6–10 ms of CPU).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.01, max = 1000.0))]
    pub logins_per_second: Option<f64>,

    /// How often each database's size is read (`pg_database_size` is
    /// costly on servers with many databases), spread over the period: a
    /// share of the tenants per health check. A database nobody wrote to
    /// since its last read (its rows inserted, updated and deleted did not
    /// move) is read again only once a day. Default: 1h.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32), regex(pattern = DURATION_PATTERN))]
    pub size_interval: Option<String>,

    /// Connection use, in percent of the tenant's connection limit, at
    /// which a tenant is Degraded. Default: 90.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100))]
    pub utilization_threshold: Option<i32>,

    /// Longest a tenant's status waits to show numbers that moved
    /// (connections, size), with a new `status.health.checkedAt`; a quiet
    /// tenant's status is not rewritten. Default: 5m.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32), regex(pattern = DURATION_PATTERN))]
    pub status_heartbeat: Option<String>,
}

fn default_port() -> i32 {
    5432
}

fn default_maintenance_database() -> String {
    "postgres".to_owned()
}

/// TLS mode, with libpq's meaning.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum SslMode {
    /// Plain TCP.
    Disable,
    /// TLS when the server offers it.
    #[default]
    Prefer,
    /// TLS always, without verifying the certificate.
    Require,
    /// TLS always, with the certificate and host name verified.
    VerifyFull,
}

/// One existing database (and optionally its login role) that tenants of
/// one namespace may adopt.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AdoptionGrant {
    /// The only namespace whose TenantDatabases may adopt these.
    #[schemars(length(min = 1, max = 63), regex(pattern = K8S_NAME_PATTERN))]
    pub namespace: String,

    /// The existing database's name.
    #[schemars(length(min = 1, max = 63), regex(pattern = PG_NAME_PATTERN))]
    pub database: String,

    /// The existing login role that may be adopted with it: tenantdb sets
    /// its password and strips its attributes. Left out, an existing role
    /// of the tenant's roleName is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63), regex(pattern = PG_NAME_PATTERN))]
    pub role: Option<String>,
}

/// Budget of a server.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Capacity {
    /// Most tenant databases this server may hold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 100000))]
    pub max_databases: Option<i32>,

    /// Most connections (the sum of tenants' connection limits) this server may hand out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 1000000))]
    pub max_connections: Option<i32>,

    /// Most CREATE INDEX CONCURRENTLY builds tenantdb runs at once on this
    /// server, across all its tenants. Default: 2.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 64))]
    pub max_index_builds: Option<i32>,
}

/// Defaults for tenants placed on a server.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TenantDefaults {
    /// Default pool contract.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool: Option<PoolSpec>,
    /// Default guard rails.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<LimitsSpec>,
}

/// Observed state of a server, written by the operator.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DatabaseServerStatus {
    /// The metadata.generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// Ready: the server answers with the admin credentials.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(transform = conditions_list_schema)]
    pub conditions: Vec<Condition>,

    /// server_version reported by PostgreSQL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_version: Option<String>,

    /// Tenant databases managed on this server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub databases: Option<i32>,

    /// Sum of the connection limits of the tenants on this server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connections_allocated: Option<i32>,

    /// Connections open on the server now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connections_in_use: Option<i32>,

    /// The server's own max_connections setting.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<i32>,

    /// `allocated/max_connections`, for `kubectl get`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connections: Option<String>,

    /// How long, in seconds, logging in once as every tenant of the server
    /// takes: `loginInterval`, or longer when the login budget
    /// (`spec.healthCheck.loginsPerSecond`) cannot cover every tenant
    /// within it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub login_rotation_seconds: Option<i64>,

    /// Latency of the latest admin round trip, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<i64>,
}
