//! The operator's Prometheus metrics, served at `/metrics`. Labels are
//! bounded: controller names, results and error categories, connection
//! states, and the tenants and servers the operator manages (a series per
//! tenant, removed when the tenant goes).

use std::sync::atomic::{AtomicI64, AtomicU64};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReconcileLabels {
    pub controller: &'static str,
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    pub controller: &'static str,
    pub category: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ControllerLabel {
    pub controller: &'static str,
}

/// One tenant: its namespace and name.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TenantLabels {
    pub namespace: String,
    pub tenant: String,
}

/// One tenant's connections in one state (`active`, `idle`,
/// `idle_in_transaction`, `other`), as PostgreSQL names them.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TenantStateLabels {
    pub namespace: String,
    pub tenant: String,
    pub state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PhaseLabel {
    pub phase: &'static str,
}

/// Phases of `tenantdb_tenants` (`Unknown`: no status yet).
pub const PHASES: [&str; 7] = [
    "Pending",
    "Provisioning",
    "Ready",
    "Degraded",
    "Failed",
    "Deleting",
    "Unknown",
];

/// How a live tenant was looked at: `snapshot` or `locked`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LookLabel {
    pub how: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ServerLabel {
    pub server: String,
}

/// Connection states of `tenantdb_tenant_connections`.
pub const CONNECTION_STATES: [&str; 4] = ["active", "idle", "idle_in_transaction", "other"];

pub struct Metrics {
    pub registry: Registry,
    pub reconciliations: Family<ReconcileLabels, Counter>,
    pub errors: Family<ErrorLabels, Counter>,
    pub duration: Family<ControllerLabel, Histogram>,
    pub status_writes: Family<ControllerLabel, Counter>,
    pub leader: Gauge<i64, AtomicI64>,
    pub tenants: Family<PhaseLabel, Gauge>,
    pub tenant_connections: Family<TenantStateLabels, Gauge>,
    pub tenant_connection_limit: Family<TenantLabels, Gauge>,
    pub tenant_up: Family<TenantLabels, Gauge>,
    pub tenant_latency: Family<TenantLabels, Gauge<f64, AtomicU64>>,
    pub tenant_size: Family<TenantLabels, Gauge>,
    pub server_up: Family<ServerLabel, Gauge>,
    pub server_connections: Family<ServerLabel, Gauge>,
    pub server_max_connections: Family<ServerLabel, Gauge>,
    pub tenant_looks: Family<LookLabel, Counter>,
    pub tenant_logins: Family<ServerLabel, Counter>,
    pub size_reads: Family<ServerLabel, Counter>,
    pub catalog_snapshots: Family<ServerLabel, Counter>,
    pub cache_server_up: Family<ServerLabel, Gauge>,
    pub cache_server_memory: Family<ServerLabel, Gauge>,
    pub cache_server_latency: Family<ServerLabel, Gauge<f64, AtomicU64>>,
    pub tenant_cache_up: Family<TenantLabels, Gauge>,
    pub tenant_cache_latency: Family<TenantLabels, Gauge<f64, AtomicU64>>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("tenantdb");
        let reconciliations: Family<ReconcileLabels, Counter> = register(
            &mut registry,
            "reconcile",
            "Reconciliations by controller and result (ok or an error category)",
        );
        let errors: Family<ErrorLabels, Counter> = register(
            &mut registry,
            "reconcile_errors",
            "Failures reported in status, by controller and category (invalid_spec, conflict, permission, configuration, transient)",
        );
        let duration = Family::<ControllerLabel, Histogram>::new_with_constructor(|| {
            Histogram::new([0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0])
        });
        registry.register(
            "reconcile_duration_seconds",
            "Time spent in one reconciliation",
            duration.clone(),
        );
        let status_writes: Family<ControllerLabel, Counter> = register(
            &mut registry,
            "status_writes",
            "Status writes to the API server (made only when the status changed)",
        );
        let leader = Gauge::<i64, AtomicI64>::default();
        registry.register(
            "leader",
            "1 while this replica holds the leader lease",
            leader.clone(),
        );
        let tenants: Family<PhaseLabel, Gauge> = register(
            &mut registry,
            "tenants",
            "Managed TenantDatabases by status.phase",
        );
        let tenant_connections: Family<TenantStateLabels, Gauge> = register(
            &mut registry,
            "tenant_connections",
            "Client connections to the tenant's database, by PostgreSQL state",
        );
        let tenant_connection_limit: Family<TenantLabels, Gauge> = register(
            &mut registry,
            "tenant_connection_limit",
            "CONNECTION LIMIT of the tenant's database",
        );
        let tenant_up: Family<TenantLabels, Gauge> = register(
            &mut registry,
            "tenant_up",
            "1 when the tenant's server answers, its database exists and its last login worked",
        );
        let tenant_latency: Family<TenantLabels, Gauge<f64, AtomicU64>> = register(
            &mut registry,
            "tenant_latency_seconds",
            "Connect and SELECT 1 as the tenant role, at the last login check",
        );
        let tenant_size: Family<TenantLabels, Gauge> = register(
            &mut registry,
            "tenant_database_size_bytes",
            "Size of the tenant's database at the last size check",
        );
        let server_up: Family<ServerLabel, Gauge> = register(
            &mut registry,
            "server_up",
            "1 when the server answered the last health query",
        );
        let server_connections: Family<ServerLabel, Gauge> = register(
            &mut registry,
            "server_connections",
            "Client connections to the server",
        );
        let server_max_connections: Family<ServerLabel, Gauge> = register(
            &mut registry,
            "server_max_connections",
            "The server's max_connections",
        );
        let tenant_looks: Family<LookLabel, Counter> = register(
            &mut registry,
            "tenant_looks",
            "Live tenants' reconciles by how the tenant was looked at: snapshot (its server's shared catalog snapshot showed nothing to do) or locked (its own look under its lock)",
        );
        let catalog_snapshots: Family<ServerLabel, Counter> = register(
            &mut registry,
            "catalog_snapshots",
            "Server-wide catalog snapshots taken for converged tenants' periodic looks (at most one per server and resync period)",
        );
        let tenant_logins: Family<ServerLabel, Counter> = register(
            &mut registry,
            "tenant_logins",
            "Logins as tenant roles started by the health monitor, per server (bounded by spec.healthCheck.loginsPerSecond)",
        );
        let size_reads: Family<ServerLabel, Counter> = register(
            &mut registry,
            "database_size_reads",
            "Tenant database sizes read by the health monitor, per server (a share per sample, each every spec.healthCheck.sizeInterval)",
        );
        let cache_server_up: Family<ServerLabel, Gauge> = register(
            &mut registry,
            "cache_server_up",
            "1 when the cache server answered the admin user's last look and can hold tenants",
        );
        let cache_server_memory: Family<ServerLabel, Gauge> = register(
            &mut registry,
            "cache_server_used_memory_bytes",
            "The cache server's used_memory at the last look",
        );
        let cache_server_latency: Family<ServerLabel, Gauge<f64, AtomicU64>> = register(
            &mut registry,
            "cache_server_latency_seconds",
            "How long the admin user's last look at the cache server took",
        );
        let tenant_cache_up: Family<TenantLabels, Gauge> = register(
            &mut registry,
            "tenant_cache_up",
            "1 when the last login as the tenant's Redis user (AUTH and PING) worked",
        );
        let tenant_cache_latency: Family<TenantLabels, Gauge<f64, AtomicU64>> = register(
            &mut registry,
            "tenant_cache_latency_seconds",
            "Connect, AUTH and PING as the tenant's Redis user, at the last login check",
        );
        Self {
            registry,
            reconciliations,
            errors,
            duration,
            status_writes,
            leader,
            tenants,
            tenant_connections,
            tenant_connection_limit,
            tenant_up,
            tenant_latency,
            tenant_size,
            server_up,
            server_connections,
            server_max_connections,
            tenant_looks,
            tenant_logins,
            size_reads,
            catalog_snapshots,
            cache_server_up,
            cache_server_memory,
            cache_server_latency,
            tenant_cache_up,
            tenant_cache_latency,
        }
    }
}

/// Registers a new metric family under `name`, and returns it.
fn register<L, M>(registry: &mut Registry, name: &str, help: &str) -> Family<L, M>
where
    Family<L, M>: prometheus_client::registry::Metric + Clone + Default,
{
    let family = Family::<L, M>::default();
    registry.register(name, help, family.clone());
    family
}

impl Metrics {
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    /// Drops every series of the tenant `labels`.
    pub fn forget_tenant(&self, labels: &TenantLabels) {
        for state in CONNECTION_STATES {
            self.tenant_connections.remove(&TenantStateLabels {
                namespace: labels.namespace.clone(),
                tenant: labels.tenant.clone(),
                state,
            });
        }
        self.tenant_connection_limit.remove(labels);
        self.tenant_up.remove(labels);
        self.tenant_latency.remove(labels);
        self.tenant_size.remove(labels);
    }

    /// Drops every series of the server `name`.
    pub fn forget_server(&self, name: &str) {
        let label = ServerLabel {
            server: name.to_owned(),
        };
        self.server_up.remove(&label);
        self.server_connections.remove(&label);
        self.server_max_connections.remove(&label);
    }

    /// Drops every series of the cache server `name`.
    pub fn forget_cache_server(&self, name: &str) {
        let label = ServerLabel {
            server: name.to_owned(),
        };
        self.cache_server_up.remove(&label);
        self.cache_server_memory.remove(&label);
        self.cache_server_latency.remove(&label);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every metric the Grafana dashboard queries is one the operator exports.
    #[test]
    fn the_dashboard_queries_only_exported_metrics() {
        let metrics = Metrics::default();
        // A family shows in the output once it has a series.
        let _ = metrics.reconciliations.get_or_create(&ReconcileLabels {
            controller: "tenantdatabase",
            result: "ok",
        });
        let _ = metrics.errors.get_or_create(&ErrorLabels {
            controller: "tenantdatabase",
            category: "transient",
        });
        let controller = ControllerLabel {
            controller: "tenantdatabase",
        };
        let _ = metrics.duration.get_or_create(&controller);
        let _ = metrics.status_writes.get_or_create(&controller);
        let _ = metrics.tenants.get_or_create(&PhaseLabel { phase: "Ready" });
        let tenant = TenantLabels {
            namespace: "n".into(),
            tenant: "t".into(),
        };
        let _ = metrics.tenant_connections.get_or_create(&TenantStateLabels {
            namespace: "n".into(),
            tenant: "t".into(),
            state: "idle",
        });
        let _ = metrics.tenant_connection_limit.get_or_create(&tenant);
        let _ = metrics.tenant_up.get_or_create(&tenant);
        let _ = metrics.tenant_latency.get_or_create(&tenant);
        let _ = metrics.tenant_size.get_or_create(&tenant);
        let server = ServerLabel { server: "s".into() };
        let _ = metrics.server_up.get_or_create(&server);
        let _ = metrics.server_connections.get_or_create(&server);
        let _ = metrics.server_max_connections.get_or_create(&server);
        let exported = metrics.encode();
        let dashboard: serde_json::Value = serde_json::from_str(include_str!(
            "../../charts/tenantdb/dashboards/tenantdb-fleet.json"
        ))
        .unwrap();
        let mut queried = Vec::new();
        for panel in dashboard["panels"].as_array().unwrap() {
            for target in panel["targets"].as_array().unwrap() {
                let expr = target["expr"].as_str().unwrap();
                let mut rest = expr;
                while let Some(at) = rest.find("tenantdb_") {
                    let name: String = rest[at..]
                        .chars()
                        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                        .collect();
                    rest = &rest[at + name.len()..];
                    queried.push(name);
                }
            }
        }
        assert!(queried.len() >= 10, "{queried:?}");
        for name in queried {
            let family = name
                .strip_suffix("_bucket")
                .or_else(|| name.strip_suffix("_total"))
                .unwrap_or(&name);
            assert!(
                exported.contains(&format!("# TYPE {family} ")),
                "the dashboard queries {name}, which is not exported"
            );
        }
    }
}
