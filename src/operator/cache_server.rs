//! The `CacheServer` controller: log in to Redis as the admin user, look at
//! the server once (`cache::observe`: its version, memory, where ACL users
//! live, and that it renders tenantdb's command profiles), and keep the
//! server's status — written only when something changed that a person
//! would act on, with latency and memory in buckets (the live numbers are
//! metrics).
//!
//! I/O: reads the admin Secret (through the context's cache), three round
//! trips to the Redis server, and at most one status patch. The tenants
//! placed on the server are counted from the tenant controller's cache.

use std::sync::Arc;
use std::time::Instant;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use serde_json::json;

use super::context::{Context, FIELD_MANAGER};
use super::metrics::{ControllerLabel, ReconcileLabels, ServerLabel};
use super::{OperatorError, Stores};
use crate::api::CacheServer;
use crate::api::cache_server::{AclPersistence, CacheServerStatus};
use crate::cache::{self, Address, CacheError};
use crate::status::set_condition;

pub async fn reconcile(
    server: Arc<CacheServer>,
    ctx: Arc<(Arc<Context>, Stores)>,
) -> Result<Action, OperatorError> {
    let (ctx, stores) = (&ctx.0, &ctx.1);
    let name = server.name_any();
    let now = Time(k8s_openapi::jiff::Timestamp::now());
    let generation = server.metadata.generation;
    let mut status = server.status.clone().unwrap_or_default();
    status.observed_generation = generation;
    // The tenants placed here, from the tenant controller's cache.
    let tenants = stores
        .all_tenants()
        .iter()
        .filter(|t| {
            t.status
                .as_ref()
                .and_then(|s| s.cache.as_ref())
                .is_some_and(|c| c.server == name)
        })
        .count();
    status.tenants = Some(i32::try_from(tenants).unwrap_or(i32::MAX));

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
        Some(Ok(_)) if let Err(reason) = ctx.cache_address(&server).await? => {
            Err(("CaSecretMissing", reason))
        }
        Some(Ok(credentials)) => {
            let address = ctx
                .cache_address(&server)
                .await?
                .unwrap_or_else(|_| Address::of(&server));
            let started = Instant::now();
            let observed = async {
                let mut conn =
                    cache::connect::connect(&address, &credentials.username, credentials.password.expose())
                        .await?;
                cache::observe::observe(&name, &mut conn).await
            };
            match observed.await {
                Ok(snapshot) => {
                    let latency = started.elapsed();
                    if ctx.cache_book.restarted(&address, &snapshot.run_id).await {
                        // Without an ACL file the tenants' users are gone:
                        // each tenant's next look finds its user missing.
                        tracing::info!(server = %name, "cache server restarted; tenants' users are looked at again");
                    }
                    status.latency_ms = Some(i64::try_from(latency.as_millis()).unwrap_or(i64::MAX));
                    status.version = Some(snapshot.version.clone());
                    status.acl_persistence = Some(if snapshot.acl_file {
                        AclPersistence::AclFile
                    } else {
                        AclPersistence::Memory
                    });
                    status.used_memory_bytes = Some(snapshot.used_memory);
                    status.max_memory_bytes = Some(snapshot.max_memory);
                    status.memory = Some(memory(snapshot.used_memory, snapshot.max_memory));
                    let label = ServerLabel { server: name.clone() };
                    ctx.metrics
                        .cache_server_memory
                        .get_or_create(&label)
                        .set(snapshot.used_memory);
                    ctx.metrics
                        .cache_server_latency
                        .get_or_create(&label)
                        .set(latency.as_secs_f64());
                    Ok(())
                }
                Err(error @ CacheError::Unsupported { .. }) => Err(("Unsupported", error.to_string())),
                Err(error) if error.is_rejected() => Err(("AdminLoginFailed", error.to_string())),
                Err(error) => Err(("Unreachable", error.to_string())),
            }
        }
    };
    ctx.metrics
        .cache_server_up
        .get_or_create(&ServerLabel { server: name.clone() })
        .set(i64::from(outcome.is_ok()));
    match &outcome {
        Ok(()) => set_condition(
            &mut status.conditions,
            "Ready",
            true,
            "Reachable",
            "the admin user can manage tenants' ACL users",
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
        let api: Api<CacheServer> = Api::all(ctx.client.clone());
        let patch = json!({"apiVersion": "tenantdb.io/v1alpha1", "kind": "CacheServer", "status": status});
        api.patch_status(
            &name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(patch),
        )
        .await?;
        ctx.metrics
            .status_writes
            .get_or_create(&ControllerLabel {
                controller: "cacheserver",
            })
            .inc();
    }
    ctx.metrics
        .reconciliations
        .get_or_create(&ReconcileLabels {
            controller: "cacheserver",
            result: if outcome.is_ok() { "ok" } else { "unavailable" },
        })
        .inc();
    Ok(Action::requeue(ctx.resync_jittered()))
}

pub fn error_policy(
    server: Arc<CacheServer>,
    error: &OperatorError,
    ctx: Arc<(Arc<Context>, Stores)>,
) -> Action {
    tracing::warn!(server = %server.name_any(), %error, "cache server status failed; retrying");
    Action::requeue(ctx.0.backoff(&format!("cacheserver/{}", server.name_any())))
}

/// `used/max` in binary units (`max` 0: no limit).
fn memory(used: i64, max: i64) -> String {
    let max = if max > 0 {
        binary(max)
    } else {
        "unlimited".to_owned()
    };
    format!("{}/{max}", binary(used))
}

/// Bytes in the largest binary unit that keeps a whole number part, one
/// decimal.
fn binary(bytes: i64) -> String {
    const UNITS: [&str; 5] = ["", "Ki", "Mi", "Gi", "Ti"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes}")
    } else {
        format!("{value:.1}{}", UNITS[unit])
    }
}

/// Whether `new` is news over `old`: anything but the live numbers changed,
/// the latency moved to another bucket (the tenants' buckets, half again
/// past a boundary), or memory in use moved by more than a tenth.
fn worth_writing(old: &CacheServerStatus, new: &CacheServerStatus) -> bool {
    if significant(old) != significant(new) || crate::health::latency_moved(old.latency_ms, new.latency_ms) {
        return true;
    }
    match (old.used_memory_bytes, new.used_memory_bytes) {
        (Some(old), Some(new)) => (new - old).abs() * 10 > old.max(1),
        (old, new) => old.is_some() != new.is_some(),
    }
}

/// The status without the numbers that move on every look.
fn significant(status: &CacheServerStatus) -> CacheServerStatus {
    CacheServerStatus {
        latency_ms: None,
        used_memory_bytes: None,
        memory: None,
        ..status.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(latency_ms: i64, used: i64) -> CacheServerStatus {
        CacheServerStatus {
            version: Some("7.0.15".to_owned()),
            latency_ms: Some(latency_ms),
            used_memory_bytes: Some(used),
            max_memory_bytes: Some(0),
            memory: Some(memory(used, 0)),
            ..CacheServerStatus::default()
        }
    }

    #[test]
    fn a_quiet_cache_server_status_is_not_rewritten_for_jitter() {
        let old = status(2, 1_000_000);
        assert!(!worth_writing(&old, &status(150, 1_090_000)));
        assert!(worth_writing(&old, &status(2, 1_110_000)));
        assert!(worth_writing(&old, &status(2, 890_000)));
        assert!(worth_writing(&old, &status(400, 1_000_000)));
        let mut restarted = status(2, 1_000_000);
        restarted.version = Some("7.2.4".to_owned());
        assert!(worth_writing(&old, &restarted));
        assert!(worth_writing(&CacheServerStatus::default(), &old));
    }

    #[test]
    fn memory_reads_in_binary_units() {
        assert_eq!(memory(1_153_024, 0), "1.1Mi/unlimited");
        assert_eq!(memory(512, 104_857_600), "512/100.0Mi");
        assert_eq!(binary(3 * 1024 * 1024 * 1024), "3.0Gi");
    }
}
