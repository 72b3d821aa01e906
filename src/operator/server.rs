//! The `DatabaseServer` controller: log in as the admin role, and keep the
//! server's status — reachability, version, managed databases, connection
//! budget — written only when one of those changes, or when the admin
//! login's latency moves to another bucket or the connections in use move
//! by a tenth of `max_connections` (the live numbers are metrics).

use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use serde_json::json;

use super::context::{Context, FIELD_MANAGER};
use super::metrics::{ControllerLabel, ReconcileLabels};
use super::{OperatorError, Stores};
use crate::admin_access;
use crate::api::database_server::DatabaseServerStatus;
use crate::api::{DatabaseServer, TenantDatabase};
use crate::status::set_condition;

pub async fn reconcile(
    server: Arc<DatabaseServer>,
    ctx: Arc<(Arc<Context>, Stores)>,
) -> Result<Action, OperatorError> {
    let (ctx, stores) = (&ctx.0, &ctx.1);
    let name = server.name_any();
    let now = Time(k8s_openapi::jiff::Timestamp::now());
    let generation = server.metadata.generation;
    let mut status = server.status.clone().unwrap_or_default();
    status.observed_generation = generation;

    // The tenants placed here, from the tenant controller's cache.
    let tenants: Vec<Arc<TenantDatabase>> = stores
        .all_tenants()
        .into_iter()
        .filter(|t| t.status.as_ref().and_then(|s| s.server.as_deref()) == Some(name.as_str()))
        .collect();
    status.databases = Some(i32::try_from(tenants.len()).unwrap_or(i32::MAX));
    let allocated: i64 = tenants
        .iter()
        .filter_map(|t| {
            t.status
                .as_ref()
                .and_then(|s| s.pool.as_ref())
                .map(|p| i64::from(p.connection_limit))
        })
        .sum();
    status.connections_allocated = Some(i32::try_from(allocated).unwrap_or(i32::MAX));
    let rotation = crate::health::HealthPolicy::of(&server).login_rotation(tenants.len());
    status.login_rotation_seconds = Some(i64::try_from(rotation.as_secs()).unwrap_or(i64::MAX));

    let reference = &server.spec.admin_secret_ref;
    let outcome: Result<(), (&str, String)> = match ctx.admin_credentials(reference).await? {
        None => Err((
            "AdminSecretMissing",
            format!(
                "admin Secret {}/{} not found",
                reference.namespace, reference.name
            ),
        )),
        Some(Err(error)) => Err(("AdminSecretInvalid", error.to_string())),
        // The health monitor found the server silent: no need to wait for
        // the pool's timeout to say so.
        Some(Ok(_)) if let Some(error) = ctx.health.server_down(&name) => {
            Err(("Unreachable", format!("the server does not answer: {error}")))
        }
        Some(Ok(_)) if let Err(reason) = ctx.server_ca(&server).await? => Err(("CaSecretMissing", reason)),
        Some(Ok(credentials)) => {
            let ca = ctx.server_ca(&server).await?.ok().flatten();
            let (pool, _) = ctx.pools.get(&server, &credentials, ca.as_deref());
            let probed = async {
                let mut conn = pool.acquire().await?;
                // The round trips alone: opening a connection (a restart,
                // an idle pool's first use) is not the server being slow.
                let started = Instant::now();
                let probe = admin_access::probe_on(&mut conn).await?;
                let in_use: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_stat_activity")
                    .fetch_one(&mut *conn)
                    .await?;
                Ok::<_, sqlx::Error>((probe, in_use, started.elapsed()))
            };
            let probed = match tokio::time::timeout(Duration::from_secs(10), probed).await {
                Ok(result) => result,
                Err(_) => Err(sqlx::Error::PoolTimedOut),
            };
            match probed {
                Ok((probe, in_use, latency)) => {
                    status.latency_ms = Some(i64::try_from(latency.as_millis()).unwrap_or(i64::MAX));
                    status.server_version = Some(probe.server_version.clone());
                    status.max_connections = Some(probe.max_connections);
                    status.connections_in_use = Some(i32::try_from(in_use).unwrap_or(i32::MAX));
                    let missing = probe.missing_privileges();
                    if !probe.is_supported_version() {
                        Err((
                            "UnsupportedVersion",
                            "PostgreSQL 15 or newer is required".to_owned(),
                        ))
                    } else if !missing.is_empty() {
                        Err((
                            "InsufficientPrivileges",
                            format!("the admin role lacks {}", missing.join(" and ")),
                        ))
                    } else {
                        Ok(())
                    }
                }
                Err(error) => {
                    let address = format!("{}:{}", server.spec.host, server.spec.port);
                    let reason = crate::db_error::describe(&error, &address);
                    Err((
                        "Unreachable",
                        format!("cannot log in as the admin role: {reason}"),
                    ))
                }
            }
        }
    };
    status.connections = Some(format!(
        "{}/{}",
        status.connections_allocated.unwrap_or(0),
        status.max_connections.map_or("?".to_owned(), |m| m.to_string())
    ));
    match &outcome {
        Ok(()) => set_condition(
            &mut status.conditions,
            "Ready",
            true,
            "Reachable",
            "the admin role can manage tenants",
            generation,
            &now,
        ),
        Err((reason, message)) => set_condition(
            &mut status.conditions,
            "Ready",
            false,
            reason,
            message,
            generation,
            &now,
        ),
    }

    let previous = server.status.clone().unwrap_or_default();
    if worth_writing(&previous, &status) {
        let api: Api<DatabaseServer> = Api::all(ctx.client.clone());
        let patch = json!({"apiVersion": "tenantdb.io/v1alpha1", "kind": "DatabaseServer", "status": status});
        api.patch_status(
            &name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(patch),
        )
        .await?;
        ctx.metrics
            .status_writes
            .get_or_create(&ControllerLabel {
                controller: "databaseserver",
            })
            .inc();
    }
    ctx.metrics
        .reconciliations
        .get_or_create(&ReconcileLabels {
            controller: "databaseserver",
            result: if outcome.is_ok() { "ok" } else { "unavailable" },
        })
        .inc();
    Ok(Action::requeue(ctx.resync_jittered()))
}

/// Whether `new` is news over `old`: something significant changed, the
/// admin login's latency moved to another bucket (the tenants' buckets,
/// half again past a boundary), or the connections in use moved by more
/// than a tenth of `max_connections`. A quiet server's status is never
/// rewritten just because its numbers jitter: they are metrics
/// (`tenantdb_server_connections`).
fn worth_writing(old: &DatabaseServerStatus, new: &DatabaseServerStatus) -> bool {
    if significant(old) != significant(new) || crate::health::latency_moved(old.latency_ms, new.latency_ms) {
        return true;
    }
    match (old.connections_in_use, new.connections_in_use) {
        (Some(old_in_use), Some(new_in_use)) => {
            let tenth = new.max_connections.unwrap_or(100).max(10) / 10;
            (new_in_use - old_in_use).abs() > tenth
        }
        (old_in_use, new_in_use) => old_in_use.is_some() != new_in_use.is_some(),
    }
}

/// The status without the numbers that move on every look.
fn significant(status: &DatabaseServerStatus) -> DatabaseServerStatus {
    DatabaseServerStatus {
        latency_ms: None,
        connections_in_use: None,
        ..status.clone()
    }
}

pub fn error_policy(
    server: Arc<DatabaseServer>,
    error: &OperatorError,
    ctx: Arc<(Arc<Context>, Stores)>,
) -> Action {
    tracing::warn!(server = %server.name_any(), %error, "server status failed; retrying");
    Action::requeue(ctx.0.backoff(&format!("server/{}", server.name_any())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(latency_ms: i64, in_use: i32) -> DatabaseServerStatus {
        DatabaseServerStatus {
            latency_ms: Some(latency_ms),
            connections_in_use: Some(in_use),
            max_connections: Some(100),
            databases: Some(5_000),
            ..DatabaseServerStatus::default()
        }
    }

    #[test]
    fn a_quiet_server_status_is_not_rewritten_for_jitter() {
        let old = status(3, 40);
        // Latency inside its bucket, a few connections more or less.
        assert!(!worth_writing(&old, &status(180, 50)));
        assert!(!worth_writing(&old, &status(1, 30)));
        // A tenth of max_connections and more, another latency bucket, or
        // anything significant is news.
        assert!(worth_writing(&old, &status(3, 51)));
        assert!(worth_writing(&old, &status(3, 29)));
        assert!(worth_writing(&old, &status(400, 40)));
        let mut more = status(3, 40);
        more.databases = Some(5_001);
        assert!(worth_writing(&old, &more));
        // The first numbers are news.
        assert!(worth_writing(&DatabaseServerStatus::default(), &old));
    }
}
