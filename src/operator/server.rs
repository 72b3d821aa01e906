//! The `DatabaseServer` controller: log in as the admin role, and keep the
//! server's status — reachability, version, managed databases, connection
//! budget — written only when one of those changes (latency and connections
//! in use ride along, refreshed at most every heartbeat).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
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

/// How often a server's status is rewritten when only volatile numbers changed.
pub const HEARTBEAT: Duration = Duration::from_secs(600);

/// When each server's status was last written, for the heartbeat.
#[derive(Default)]
pub struct LastWrites(Mutex<HashMap<String, Instant>>);

pub async fn reconcile(
    server: Arc<DatabaseServer>,
    ctx: Arc<(Arc<Context>, Stores, Arc<LastWrites>)>,
) -> Result<Action, OperatorError> {
    let (ctx, stores, last_writes) = (&ctx.0, &ctx.1, &ctx.2);
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
        Some(Ok(credentials)) => {
            let (pool, _) = ctx.pools.get(&server, &credentials);
            let started = Instant::now();
            let probed = async {
                let mut conn = pool.acquire().await?;
                let probe = admin_access::probe_on(&mut conn).await?;
                let in_use: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_stat_activity")
                    .fetch_one(&mut *conn)
                    .await?;
                Ok::<_, sqlx::Error>((probe, in_use))
            };
            let probed = match tokio::time::timeout(Duration::from_secs(10), probed).await {
                Ok(result) => result,
                Err(_) => Err(sqlx::Error::PoolTimedOut),
            };
            match probed {
                Ok((probe, in_use)) => {
                    status.latency_ms =
                        Some(i64::try_from(started.elapsed().as_millis()).unwrap_or(i64::MAX));
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
    // The heartbeat clock starts when this process first sees the server, so
    // a restart alone writes nothing.
    let heartbeat_due = last_writes
        .0
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .entry(name.clone())
        .or_insert_with(Instant::now)
        .elapsed()
        >= HEARTBEAT;
    if significant(&previous) != significant(&status) || (heartbeat_due && previous != status) {
        let api: Api<DatabaseServer> = Api::all(ctx.client.clone());
        let patch = json!({"apiVersion": "tenantdb.io/v1alpha1", "kind": "DatabaseServer", "status": status});
        api.patch_status(
            &name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(patch),
        )
        .await?;
        last_writes
            .0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name.clone(), Instant::now());
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
    ctx: Arc<(Arc<Context>, Stores, Arc<LastWrites>)>,
) -> Action {
    tracing::warn!(server = %server.name_any(), %error, "server status failed; retrying");
    Action::requeue(ctx.0.backoff(&format!("server/{}", server.name_any())))
}
