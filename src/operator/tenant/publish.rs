//! Step four of the tenant pipeline: what the world is told, from the one
//! result of the steps before — the connection Secret (written while the
//! tenant lock is held, called from [`super::provision`]), the status
//! (written with server-side apply, only when it changed in a way worth a
//! write), and Events on transitions. Failures of any step are reported
//! here too, and what is retried when.
//!
//! I/O: Kubernetes writes only (the Secret, the status subresource,
//! Events); no SQL.

use crate::admin_access::Password;
use std::time::{Duration, Instant};

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::{Resource, ResourceExt};
use serde_json::json;

use super::gather::{Access, SecretState, owned_by};
use super::provision::Provisioned;
use super::{Failure, key, now};
use crate::api::TenantDatabase;
use crate::api::tenant_database::{CacheStatus, IndexPhase, TenantDatabaseStatus};
use crate::connection_secret::{self, Endpoint};
use crate::health;
use crate::operator::OperatorError;
use crate::operator::context::{Context, FIELD_MANAGER};
use crate::operator::metrics::{ControllerLabel, ErrorLabels};
use crate::reconcile::{self, Desired};
use crate::status::{self, IndexReport};

/// How long writing the connection Secret may take; the tenant lock (an
/// admin connection) is held meanwhile.
const SECRET_WRITE: Duration = Duration::from_secs(15);

/// How soon a tenant with index work in flight is looked at again, at the
/// latest (a job's end re-queues it at once).
const INDEX_CHECK_BACK: Duration = Duration::from_secs(60);

/// Writes the connection Secret with the password provisioning set or kept,
/// when it differs from the one found (or is not owned by the tenant).
pub async fn secret(
    tenant: &TenantDatabase,
    ctx: &Context,
    access: &Access,
    found: &SecretState,
    outcome: &reconcile::Outcome,
) -> Result<(), OperatorError> {
    crate::kill_point!("tenant.before_secret");
    let Some(password) = &outcome.plan.password else {
        return Ok(());
    };
    if secret_is_current(tenant, access, found, password) {
        return Ok(());
    }
    let namespace = tenant.namespace().unwrap_or_default();
    let wanted = wanted_secret(tenant, access, password);
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &namespace);
    let (params, patch) = (PatchParams::apply(FIELD_MANAGER).force(), Patch::Apply(&wanted));
    let write = secrets.patch(&access.desired.secret_name, &params, &patch);
    tokio::time::timeout(SECRET_WRITE, write)
        .await
        .map_err(|_| OperatorError::Timeout {
            action: "writing the connection Secret".to_owned(),
            after: SECRET_WRITE,
        })??;
    Ok(())
}

/// Whether the connection Secret found is the one the operator would write
/// with `password`.
pub fn secret_is_current(
    tenant: &TenantDatabase,
    access: &Access,
    found: &SecretState,
    password: &Password,
) -> bool {
    let wanted = wanted_secret(tenant, access, password);
    found
        .existing
        .as_ref()
        .is_some_and(|s| s.data == wanted.data && owned_by(s, tenant))
}

fn wanted_secret(tenant: &TenantDatabase, access: &Access, password: &Password) -> Secret {
    let namespace = tenant.namespace().unwrap_or_default();
    let server = &access.server.spec;
    let endpoint = Endpoint {
        host: server.host.clone(),
        port: u16::try_from(server.port).unwrap_or(5432),
        ssl_mode: server.ssl_mode,
    };
    let mut secret = connection_secret::secret(&namespace, &access.desired, &endpoint, password);
    if let (Some(cache), Some(data)) = (&access.cache, secret.string_data.as_mut()) {
        connection_secret::add_cache(data, &cache.keys);
    }
    owned_secret(tenant, secret)
}

/// The connection Secret as the operator writes it: `data` (what the API
/// server stores), owned by the tenant so it is garbage-collected with it.
fn owned_secret(tenant: &TenantDatabase, mut secret: Secret) -> Secret {
    let data = secret.string_data.take().unwrap_or_default();
    secret.data = Some(
        data.into_iter()
            .map(|(k, v)| (k, ByteString(v.into_bytes())))
            .collect(),
    );
    secret.metadata.owner_references = tenant.controller_owner_ref(&()).map(|r| vec![r]);
    secret
}

/// Publishes a provisioned tenant — status with its indexes and health,
/// the Event when its password was set back — and says when to look again.
pub async fn provisioned(
    tenant: &TenantDatabase,
    ctx: &Context,
    desired: &Desired,
    cache: Option<&CacheStatus>,
    provisioned: Provisioned,
) -> Result<Action, OperatorError> {
    if provisioned.password_restored {
        ctx.health.login_again(&key(tenant));
        ctx.event(
            tenant,
            true,
            "PasswordRestored",
            "a login with the connection Secret's password was refused (the role's password was changed outside tenantdb); the Secret's password was set on the role again".to_owned(),
        )
        .await;
    }
    let now = now();
    let generation = tenant.metadata.generation;
    let mut new = status::provisioned(tenant.status.as_ref(), generation, Some(desired), Ok(()), &now);
    new.cache = cache.cloned();
    if let (Some(cache), Some(health)) = (new.cache.as_mut(), ctx.cache_health.published(&key(tenant))) {
        health.apply(cache);
    }
    let mut requeue = ctx.resync_jittered();
    match &provisioned.indexes {
        // Not looked at: none declared, or all seen Ready at this
        // generation within the rotation (their states are kept).
        None if desired.indexes.is_empty() => {
            status::indexes(&mut new, IndexReport::NoneDeclared, generation, &now)
        }
        None => {}
        Some(Ok(outcome)) => {
            let plan = &outcome.plan;
            status::indexes(&mut new, IndexReport::Planned(plan), generation, &now);
            // A job's end re-queues the tenant at once; this is the safety net.
            if plan.statuses.iter().any(|s| s.phase == IndexPhase::Building) || plan.dropping > 0 {
                requeue = requeue.min(INDEX_CHECK_BACK);
            }
            if let Some(at) = plan.retry_at {
                requeue =
                    requeue.min(at.saturating_duration_since(Instant::now()) + Duration::from_millis(100));
            }
        }
        Some(Err(error)) => {
            let message = error.to_string();
            status::indexes(&mut new, IndexReport::Unknown(&message), generation, &now);
            requeue = requeue.min(INDEX_CHECK_BACK);
        }
    }
    with_health(&mut new, tenant, ctx, &desired.server, &now);
    crate::kill_point!("tenant.before_status");
    write_status(tenant, ctx, new).await?;
    crate::kill_point!("tenant.after_status");
    ctx.succeeded(&key(tenant));
    Ok(Action::requeue(requeue))
}

/// Writes the failure to status and Events, then: a permanent failure waits
/// for a change (with a slow resync as a safety net); a transient one is
/// returned as an error, for the controller's backoff.
pub async fn failure(
    tenant: &TenantDatabase,
    ctx: &Context,
    desired: Option<&Desired>,
    failure: Failure,
) -> Result<Action, OperatorError> {
    let now = now();
    let mut new = status::provisioned(
        tenant.status.as_ref(),
        tenant.metadata.generation,
        desired,
        Err(&failure),
        &now,
    );
    if let Some(server) = new.server.clone() {
        with_health(&mut new, tenant, ctx, &server, &now);
    }
    if let (Some(cache), Some(health)) = (new.cache.as_mut(), ctx.cache_health.published(&key(tenant))) {
        health.apply(cache);
    }
    ctx.metrics
        .errors
        .get_or_create(&ErrorLabels {
            controller: "tenantdatabase",
            category: failure_category(&failure),
        })
        .inc();
    write_status(tenant, ctx, new).await?;
    if failure.permanent {
        ctx.succeeded(&key(tenant));
        Ok(Action::requeue(ctx.resync_jittered()))
    } else {
        Err(OperatorError::Reported {
            reason: failure.reason,
            message: failure.message,
        })
    }
}

/// Reports in status (and, on the transition, an Event) why a deletion
/// cannot finish yet, and fails so the controller retries with backoff.
pub async fn deletion_blocked(
    tenant: &TenantDatabase,
    ctx: &Context,
    reason: &str,
) -> Result<Action, OperatorError> {
    let message = format!(
        "cannot drop the database yet: {reason} (to let the tenant go without dropping it, annotate it {}=true)",
        super::LEAVE_DATA
    );
    let new = status::deleting(
        tenant.status.as_ref(),
        tenant.metadata.generation,
        &message,
        &now(),
    );
    write_status(tenant, ctx, new).await?;
    Err(OperatorError::DeletionBlocked(message))
}

/// The bounded error category of a failure, for metrics.
fn failure_category(failure: &Failure) -> &'static str {
    match failure.reason {
        _ if !failure.permanent => "transient",
        "InvalidSpec" => "invalid_spec",
        "Conflict" | "SecretConflict" => "conflict",
        "PermissionDenied" => "permission",
        _ => "configuration",
    }
}

/// Adds what the health monitor knows of the tenant to `status`.
fn with_health(
    status: &mut TenantDatabaseStatus,
    tenant: &TenantDatabase,
    ctx: &Context,
    server: &str,
    now: &k8s_openapi::apimachinery::pkg::apis::meta::v1::Time,
) {
    if let Some(health) = ctx.health.tenant(&key(tenant)) {
        health::apply(
            status,
            &health,
            &ctx.health.policy(server),
            tenant.metadata.generation,
            now,
        );
    }
}

/// Writes `new` with server-side apply under the one field manager — only
/// when it differs from what the object says in a way worth a write (live
/// numbers alone wait for the heartbeat) — and publishes an Event when
/// readiness or health changes.
async fn write_status(
    tenant: &TenantDatabase,
    ctx: &Context,
    new: TenantDatabaseStatus,
) -> Result<(), OperatorError> {
    let heartbeat = new
        .server
        .as_deref()
        .map(|server| ctx.health.policy(server).status_heartbeat)
        .unwrap_or_default();
    if !health::worth_writing(tenant.status.as_ref(), &new, heartbeat, &now()) {
        return Ok(());
    }
    tracing::debug!(tenant = %tenant.name_any(), old = ?tenant.status, ?new, "status worth writing");
    let api: Api<TenantDatabase> =
        Api::namespaced(ctx.client.clone(), &tenant.namespace().unwrap_or_default());
    let patch = json!({"apiVersion": "tenantdb.io/v1alpha1", "kind": "TenantDatabase", "status": new});
    api.patch_status(
        &tenant.name_any(),
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(patch),
    )
    .await?;
    ctx.metrics
        .status_writes
        .get_or_create(&ControllerLabel {
            controller: "tenantdatabase",
        })
        .inc();

    let ready = |s: Option<&TenantDatabaseStatus>| {
        s.and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready"))
            .map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
    };
    let (before, after) = (ready(tenant.status.as_ref()), ready(Some(&new)));
    if before.as_ref().map(|b| (&b.0, &b.1)) != after.as_ref().map(|a| (&a.0, &a.1))
        && let Some((status, reason, message)) = after
    {
        let event_reason = match (status.as_str(), reason.as_str(), new.phase) {
            ("True", _, _) => "Provisioned",
            (_, "Conflict" | "SecretConflict", _) => "Conflict",
            (_, _, Some(crate::api::tenant_database::TenantPhase::Degraded)) => "Degraded",
            (_, "Deleting", _) => "DeletionBlocked",
            (_, reason, _) => reason,
        };
        ctx.event(tenant, status != "True", event_reason, message).await;
    }
    let healthy = |s: Option<&TenantDatabaseStatus>| {
        s.and_then(|s| s.conditions.iter().find(|c| c.type_ == "Healthy"))
            .map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
    };
    let (before, after) = (healthy(tenant.status.as_ref()), healthy(Some(&new)));
    if before.as_ref().map(|b| &b.0) != after.as_ref().map(|a| &a.0)
        && let Some((status, reason, message)) = after
    {
        if status == "True" {
            tracing::info!(tenant = %key(tenant), "healthy again");
            ctx.event(tenant, false, "Healthy", message).await;
        } else {
            tracing::warn!(tenant = %key(tenant), %reason, %message, "unhealthy");
            ctx.event(tenant, true, &reason, message).await;
        }
    }
    Ok(())
}
