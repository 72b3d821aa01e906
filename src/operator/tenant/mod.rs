//! The `TenantDatabase` controller, as a pipeline with one module per step,
//! each saying what I/O it may do:
//!
//! 1. [`placement`] — the tenant's server: the one recorded in
//!    `status.server`, else chosen and recorded (confirmed by the API
//!    server) before any SQL runs.
//! 2. [`gather`] — everything else the reconcile reads: admission,
//!    admin credentials, the spec resolved against the server, the
//!    connection Secret. Caches first; no SQL, no writes.
//! 3. [`cache`] — for a tenant with `spec.cache`: its CacheServer (placed
//!    and recorded like the database server) and its Redis user, over the
//!    server's look of this resync period; the keys it adds to the Secret.
//! 4. [`recheck`] — a tenant converged at its generation is checked over
//!    its server's catalog snapshot of this resync period, shared with the
//!    server's other tenants; when that shows nothing to do, step 4 is
//!    skipped.
//! 4. [`provision`] — under the tenant's advisory lock: database, role,
//!    settings, indexes, and the connection Secret before the lock goes.
//! 6. [`publish`] — status (only when it changed) and Events, from the one
//!    result; failures of every step are reported there too.
//!
//! Deletion ([`cleanup`]) has the same shape, for the `tenantdb.io/cleanup`
//! finalizer. This module is the entry point — caches synced, the
//! finalizer added in the same pass as the work, metrics — and the order
//! of the steps. I/O: one Kubernetes write of its own (the finalizer).

mod cache;
mod cleanup;
mod gather;
mod provision;
mod publish;
pub(crate) mod recheck;

use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::finalizer::{Event as Finalize, finalizer};
use serde_json::json;

use super::context::{Context, FINALIZER};
use super::metrics::{ControllerLabel, ReconcileLabels};
use super::{OperatorError, Stores, bulkhead, placement};
use crate::api::TenantDatabase;
use crate::status::Failure;

/// The annotation by which a person lets a tenant under `deletionPolicy:
/// Delete` go without dropping its database and role — the way out when
/// the deletion cannot proceed (its server is gone for good).
pub const LEAVE_DATA: &str = "tenantdb.io/leave-data-on-delete";

/// How soon a tenant seen before the caches synced is looked at again.
const CACHES_SYNCING: Duration = Duration::from_millis(250);

/// How long adding the finalizer may take.
const FINALIZER_WRITE: Duration = Duration::from_secs(15);

pub async fn reconcile(
    tenant: Arc<TenantDatabase>,
    ctx: Arc<(Arc<Context>, Stores)>,
) -> Result<Action, OperatorError> {
    let (ctx, stores) = (&ctx.0, &ctx.1);
    // Until every cache has its first list, a server or Namespace missing
    // from it may only be not listed yet: look again shortly.
    if !ctx.synced.load(std::sync::atomic::Ordering::Relaxed) {
        return Ok(Action::requeue(CACHES_SYNCING));
    }
    crate::kill_point!("tenant.reconcile");
    let started = Instant::now();
    let api: Api<TenantDatabase> =
        Api::namespaced(ctx.client.clone(), &tenant.namespace().unwrap_or_default());
    let result = match with_finalizer(tenant, &api).await {
        Ok(tenant) => finalizer(&api, FINALIZER, tenant, |event| async {
            match event {
                Finalize::Apply(tenant) => apply(&tenant, ctx, stores).await,
                Finalize::Cleanup(tenant) => cleanup::cleanup(&tenant, ctx, stores).await,
            }
        })
        .await
        .map_err(OperatorError::from_finalizer),
        Err(error) => Err(error),
    };
    let label = ControllerLabel {
        controller: "tenantdatabase",
    };
    ctx.metrics
        .duration
        .get_or_create(&label)
        .observe(started.elapsed().as_secs_f64());
    let result_label = match &result {
        Ok(_) => "ok",
        Err(error) => error.category().as_str(),
    };
    ctx.metrics
        .reconciliations
        .get_or_create(&ReconcileLabels {
            controller: "tenantdatabase",
            result: result_label,
        })
        .inc();
    result
}

pub fn error_policy(
    tenant: Arc<TenantDatabase>,
    error: &OperatorError,
    ctx: Arc<(Arc<Context>, Stores)>,
) -> Action {
    let key = key(&tenant);
    tracing::warn!(tenant = %key, %error, "reconcile failed; retrying");
    Action::requeue(ctx.0.backoff(&key))
}

/// A live tenant without the finalizer gets it here, and the same pass goes
/// on to the work with the object as the API server returned it.
/// (kube-runtime's `finalizer` helper adds it and ends the pass; the work
/// then waited for the watch to bring the change back.) The write is
/// conditional on the object being as read.
async fn with_finalizer(
    tenant: Arc<TenantDatabase>,
    api: &Api<TenantDatabase>,
) -> Result<Arc<TenantDatabase>, OperatorError> {
    if tenant.metadata.deletion_timestamp.is_some() || tenant.finalizers().iter().any(|f| f == FINALIZER) {
        return Ok(tenant);
    }
    let mut finalizers = tenant.finalizers().to_vec();
    finalizers.push(FINALIZER.to_owned());
    let patch = json!({
        "metadata": {"resourceVersion": tenant.resource_version(), "finalizers": finalizers},
    });
    let (name, params, patch) = (tenant.name_any(), PatchParams::default(), Patch::Merge(&patch));
    let patched = tokio::time::timeout(FINALIZER_WRITE, api.patch(&name, &params, &patch))
        .await
        .map_err(|_| OperatorError::Timeout {
            action: "adding the finalizer".to_owned(),
            after: FINALIZER_WRITE,
        })??;
    Ok(Arc::new(patched))
}

/// The pipeline for a live tenant: placement → gather → cache → recheck
/// → provision → publish.
async fn apply(tenant: &TenantDatabase, ctx: &Context, stores: &Stores) -> Result<Action, OperatorError> {
    let server = match placement::locate(tenant, &ctx.client, stores, &ctx.placements).await? {
        Ok(server) => server,
        Err(failure) => return publish::failure(tenant, ctx, None, failure).await,
    };
    let access = match gather::access(tenant, ctx, stores, server, false).await? {
        Ok(access) => access,
        Err(failure) => return publish::failure(tenant, ctx, None, failure).await,
    };
    let secret = match gather::secret(tenant, ctx, stores, &access.desired).await? {
        Ok(secret) => secret,
        Err(failure) => return publish::failure(tenant, ctx, Some(&access.desired), failure).await,
    };
    let mut access = access;
    match (
        &access.desired.cache,
        tenant.status.as_ref().and_then(|s| s.cache.as_ref()),
    ) {
        (Some(intent), _) => {
            match cache::provision(tenant, ctx, stores, intent, secret.existing.as_ref()).await? {
                Ok(cache) => access.cache = Some(cache),
                Err(failure) => return publish::failure(tenant, ctx, Some(&access.desired), failure).await,
            }
        }
        (None, Some(recorded)) if recorded.key_prefix.is_some() => {
            let failure = Failure {
                reason: "CacheInUse",
                message: format!(
                    "spec.cache was taken out, but the tenant's cache on CacheServer {} holds its keys: put spec.cache back (taking a cache away on its own is not supported yet; deleting the tenant removes it as deletionPolicy says)",
                    recorded.server
                ),
                permanent: true,
            };
            return publish::failure(tenant, ctx, Some(&access.desired), failure).await;
        }
        (None, _) => {}
    }
    // Everything that talks to the server, the shared snapshot included,
    // runs in one of its slots: a hung server holds its own slots only.
    let Some(slot) = ctx.slots.enter(&access.desired.server).await else {
        return Ok(Action::requeue(bulkhead::BUSY_RETRY));
    };
    if recheck::nothing_to_do(tenant, ctx, stores, &access, &secret).await {
        drop(slot);
        look("snapshot", ctx);
        let quiet = provision::Provisioned {
            indexes: None,
            password_restored: false,
        };
        let cache = access.cache.as_ref().map(|c| &c.status);
        return publish::provisioned(tenant, ctx, &access.desired, cache, quiet).await;
    }
    look("locked", ctx);
    match provision::provision(tenant, ctx, &access, &secret).await? {
        Ok(provisioned) => {
            let cache = access.cache.as_ref().map(|c| &c.status);
            publish::provisioned(tenant, ctx, &access.desired, cache, provisioned).await
        }
        Err(failure) => publish::failure(tenant, ctx, Some(&access.desired), failure).await,
    }
}

/// Counts how a live tenant was looked at: over its server's shared
/// snapshot, or on its own under its lock.
fn look(how: &'static str, ctx: &Context) {
    ctx.metrics
        .tenant_looks
        .get_or_create(&super::metrics::LookLabel { how })
        .inc();
}

fn key(tenant: &TenantDatabase) -> String {
    format!("{}/{}", tenant.namespace().unwrap_or_default(), tenant.name_any())
}

fn now() -> Time {
    Time(k8s_openapi::jiff::Timestamp::now())
}
