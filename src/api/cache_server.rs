//! `CacheServer`: one Redis server that tenants' caches may be placed on,
//! how to reach it as a user allowed to manage ACLs, and what the operator
//! observed about it.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{
    Condition, DURATION_PATTERN, SecretKeyReference, SecretReference, conditions_list_schema,
};

/// Desired state of a Redis server in the fleet.
// Each printcolumn(...) repeats type_/json_path keys, which clippy misreads
// as duplicated attributes.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "tenantdb.io",
    version = "v1alpha1",
    kind = "CacheServer",
    plural = "cacheservers",
    singular = "cacheserver",
    shortname = "cs",
    category = "tenantdb",
    status = "CacheServerStatus",
    doc = "A Redis server (7.0 or newer) that tenants' caches may be placed on.",
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
        description = "Whether the server answers the admin user and can hold tenants' ACL users"
    ),
    printcolumn(
        name = "Version",
        type_ = "string",
        json_path = ".status.version",
        description = "redis_version"
    ),
    printcolumn(
        name = "Tenants",
        type_ = "integer",
        json_path = ".status.tenants",
        description = "Tenants whose cache is placed here"
    ),
    printcolumn(
        name = "Memory",
        type_ = "string",
        json_path = ".status.memory",
        description = "Memory in use / maxmemory"
    ),
    printcolumn(
        name = "ACLs",
        type_ = "string",
        json_path = ".status.aclPersistence",
        description = "Whether ACL users survive a restart (aclFile) or are re-applied after one (memory)"
    ),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {
        "rule": "self.host == oldSelf.host && self.port == oldSelf.port",
        "message": "host and port are immutable: tenants' users and keys live on this server; create another CacheServer for another one",
        "reason": "FieldValueForbidden"
    }
]))]
pub struct CacheServerSpec {
    /// Host name or IP address of the server.
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = "^[A-Za-z0-9]([-A-Za-z0-9.:]*[A-Za-z0-9])?$")
    )]
    pub host: String,

    /// TCP port. Default: 6379.
    #[serde(default = "default_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: i32,

    /// TLS to the server (`tls-port`): tenantdb connects with TLS, verifying
    /// the server's certificate and host name, and tenants' `REDIS_URL` is
    /// `rediss://`. `{}` verifies against the system's CA certificates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<CacheTls>,

    /// Secret with keys `username` and `password` of a Redis user allowed
    /// to manage ACLs (`ACL SETUSER`, `ACL LIST`, `ACL DELUSER`, `ACL
    /// SAVE`), read `INFO` and `CONFIG GET aclfile`, and (for
    /// `deletionPolicy: Delete`) `SCAN` and `UNLINK` every key.
    pub admin_secret_ref: SecretReference,

    /// Namespaces whose tenants may use this server. Default: all namespaces.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_namespaces: Option<LabelSelector>,

    /// Budget that placement checks against.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capacity: Option<CacheCapacity>,

    /// How the operator watches the tenants' caches on this server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check: Option<CacheHealthCheckSpec>,
}

/// How tenants' caches are checked on one server. Every field has a default.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CacheHealthCheckSpec {
    /// How often the server is pinged as the admin user. Default: 30s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32), regex(pattern = DURATION_PATTERN))]
    pub interval: Option<String>,

    /// How often each tenant's login (its user and the Secret's password,
    /// `AUTH` and `PING`) is tried, at most. Default: 5m.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32), regex(pattern = DURATION_PATTERN))]
    pub login_interval: Option<String>,

    /// Tenant logins per second the server is asked for at most, across
    /// all its tenants. Default: 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.01, max = 1000.0))]
    pub logins_per_second: Option<f64>,
}

/// TLS to a cache server.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CacheTls {
    /// Secret key holding the CA certificate (PEM) the server's certificate
    /// is verified against. Default: the system's CA certificates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_secret_ref: Option<SecretKeyReference>,
}

fn default_port() -> i32 {
    6379
}

/// Budget of a cache server.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CacheCapacity {
    /// Most tenants this server may hold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 100000))]
    pub max_tenants: Option<i32>,
}

/// Where a server's ACL users live.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum AclPersistence {
    /// The server has an `aclfile`: tenantdb runs `ACL SAVE` after each
    /// change, and users survive a restart.
    AclFile,
    /// No `aclfile`: users live until the server restarts, and tenantdb
    /// applies them again when it sees the restart (a new `run_id`).
    Memory,
}

/// Observed state of a cache server, written by the operator.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CacheServerStatus {
    /// The metadata.generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// Ready: the server answers the admin user, is Redis 7.0 or newer, and
    /// renders tenantdb's command profiles as ACL rules.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(transform = conditions_list_schema)]
    pub conditions: Vec<Condition>,

    /// `redis_version` reported by the server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,

    /// Tenants whose cache is placed on this server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenants: Option<i32>,

    /// Where the server keeps ACL users.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acl_persistence: Option<AclPersistence>,

    /// `used_memory`, in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub used_memory_bytes: Option<i64>,

    /// `maxmemory`, in bytes (0: no limit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_memory_bytes: Option<i64>,

    /// `used/max` in binary units, for `kubectl get`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<String>,

    /// Latency of the admin user's look at the server, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<i64>,
}
