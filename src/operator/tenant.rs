//! The `TenantDatabase` controller: locate the server (placing a new tenant
//! and recording it first, [`super::placement`]), run the shared reconcile
//! core, keep the connection Secret, and write status only when it changed.
//! Cleanup (the `tenantdb.io/cleanup` finalizer) honours `deletionPolicy`,
//! or says why it cannot and keeps the finalizer until a person sets
//! [`LEAVE_DATA`]. I/O: the Kubernetes API, PostgreSQL (through the core).

use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::finalizer::{Event as Finalize, finalizer};
use kube::{Resource, ResourceExt};
use serde_json::json;

use super::context::{Context, FIELD_MANAGER, FINALIZER};
use super::metrics::{ControllerLabel, ErrorLabels, ReconcileLabels};
use super::{OperatorError, Stores, bulkhead, placement};
use crate::admin_access::AdminCredentials;
use crate::api::tenant_database::{DeletionPolicy, IndexPhase, TenantDatabaseStatus};
use crate::api::{DatabaseServer, TenantDatabase};
use crate::connection_secret::{self, Endpoint};
use crate::health;
use crate::reconcile::{self, Desired, Mode, StoredPassword, indexes};
use crate::status::{self, Failure, IndexReport};

/// Everything a tenant's reconcile needs to reach its server.
struct Located {
    server: Arc<DatabaseServer>,
    credentials: AdminCredentials,
    desired: Desired,
}

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
    let started = Instant::now();
    let api: Api<TenantDatabase> =
        Api::namespaced(ctx.client.clone(), &tenant.namespace().unwrap_or_default());
    let result = finalizer(&api, FINALIZER, tenant, |event| async {
        match event {
            Finalize::Apply(tenant) => apply(tenant, ctx, stores).await,
            Finalize::Cleanup(tenant) => cleanup(tenant, ctx, stores).await,
        }
    })
    .await
    .map_err(OperatorError::from_finalizer);
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

/// How soon a tenant seen before the caches synced is looked at again.
const CACHES_SYNCING: Duration = Duration::from_millis(250);

pub fn error_policy(
    tenant: Arc<TenantDatabase>,
    error: &OperatorError,
    ctx: Arc<(Arc<Context>, Stores)>,
) -> Action {
    let key = key(&tenant);
    tracing::warn!(tenant = %key, %error, "reconcile failed; retrying");
    Action::requeue(ctx.0.backoff(&key))
}

fn key(tenant: &TenantDatabase) -> String {
    format!("{}/{}", tenant.namespace().unwrap_or_default(), tenant.name_any())
}

fn now() -> Time {
    Time(k8s_openapi::jiff::Timestamp::now())
}

async fn apply(tenant: Arc<TenantDatabase>, ctx: &Context, stores: &Stores) -> Result<Action, OperatorError> {
    let located = match locate(&tenant, ctx, stores, false).await? {
        Ok(located) => located,
        Err(failure) => return report(&tenant, ctx, None, failure).await,
    };
    let Some(_slot) = ctx.slots.enter(&located.desired.server).await else {
        return Ok(Action::requeue(bulkhead::BUSY_RETRY));
    };
    let (pool, admin) = ctx.pools.get(&located.server, &located.credentials);
    if let Some(error) = still_down(ctx, &admin, &located.desired.server).await {
        let failure = Failure {
            reason: "ServerUnavailable",
            message: format!("server {}: does not answer: {error}", located.desired.server),
            permanent: false,
        };
        return report(&tenant, ctx, Some(&located.desired), failure).await;
    }
    let namespace = tenant.namespace().unwrap_or_default();
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &namespace);
    // The cache serves the steady state; a miss is confirmed with the API
    // server, since a Secret just written may not be cached yet and a wrong
    // "missing" would rotate the password.
    // A refused login is about to set the Secret's password on the role:
    // a decision that overwrites credentials reads the Secret fresh, so a
    // stale cache (another replica just rotated it) never sets an old one.
    let overwriting = ctx.health.password_rejected(&key(&tenant));
    let cached = stores
        .secret(&namespace, &located.desired.secret_name)
        .filter(|_| !overwriting);
    let existing = match cached {
        Some(secret) => Some(secret.as_ref().clone()),
        None => secrets.get_opt(&located.desired.secret_name).await?,
    };
    if let Some(secret) = &existing
        && !owned_by(secret, &tenant)
    {
        let failure = Failure {
            reason: "SecretConflict",
            message: format!(
                "Secret {namespace}/{} exists and is not owned by this TenantDatabase; set spec.secretName to another name",
                located.desired.secret_name
            ),
            permanent: true,
        };
        return report(&tenant, ctx, Some(&located.desired), failure).await;
    }
    let password = existing.as_ref().and_then(connection_secret::password_of);
    // The last login with the Secret's password was refused: someone changed
    // the role's password behind tenantdb's back. Set it back.
    let rejected = password.is_some() && overwriting;
    let stored = match &password {
        Some(password) if rejected => StoredPassword::Rejected(password),
        Some(password) => StoredPassword::Found(password),
        None => StoredPassword::Missing,
    };
    // The connection Secret is written under the tenant lock, with the
    // password just set on the role (reconcile::provision_and_publish).
    let publish = async |outcome: &reconcile::Outcome| -> Result<(), OperatorError> {
        crate::kill_point!("tenant.before_secret");
        let Some(password) = &outcome.plan.password else {
            return Ok(());
        };
        let endpoint = Endpoint {
            host: located.server.spec.host.clone(),
            port: u16::try_from(located.server.spec.port).unwrap_or(5432),
            ssl_mode: located.server.spec.ssl_mode,
        };
        let wanted = owned_secret(
            &tenant,
            connection_secret::secret(&namespace, &located.desired, &endpoint, password),
        );
        if existing
            .as_ref()
            .is_none_or(|s| s.data != wanted.data || !owned_by(s, &tenant))
        {
            let (params, patch) = (PatchParams::apply(FIELD_MANAGER).force(), Patch::Apply(&wanted));
            let write = secrets.patch(&located.desired.secret_name, &params, &patch);
            tokio::time::timeout(SECRET_WRITE, write)
                .await
                .map_err(|_| OperatorError::Timeout {
                    action: "writing the connection Secret".to_owned(),
                    after: SECRET_WRITE,
                })??;
        }
        Ok(())
    };
    let provisioned =
        reconcile::provision_and_publish(&pool, &admin, &located.desired, stored, Mode::Apply, publish).await;
    let outcome = match provisioned {
        Ok((outcome, published)) => {
            published?;
            outcome
        }
        Err(error) => return report(&tenant, ctx, Some(&located.desired), Failure::from(&error)).await,
    };
    if outcome.executed > 0 {
        tracing::info!(tenant = %key(&tenant), steps = outcome.executed, "applied changes");
    }
    if rejected {
        ctx.health.login_again(&key(&tenant));
        ctx.event(
            tenant.as_ref(),
            true,
            "PasswordRestored",
            "a login with the connection Secret's password was refused (the role's password was changed outside tenantdb); the Secret's password was set on the role again".to_owned(),
        )
        .await;
    }
    let now = now();
    let mut new = status::provisioned(
        tenant.status.as_ref(),
        tenant.metadata.generation,
        Some(&located.desired),
        Ok(()),
        &now,
    );
    let mut requeue = ctx.resync_jittered();
    if indexes_need_a_look(&tenant, &located.desired) {
        match indexes::reconcile(&pool, &admin, &located.desired, &ctx.index_jobs, Mode::Apply).await {
            Ok(outcome) => {
                let plan = &outcome.plan;
                status::indexes(
                    &mut new,
                    IndexReport::Planned(plan),
                    tenant.metadata.generation,
                    &now,
                );
                // A job's end re-queues the tenant at once; this is the safety net.
                if plan.statuses.iter().any(|s| s.phase == IndexPhase::Building) || plan.dropping > 0 {
                    requeue = requeue.min(INDEX_CHECK_BACK);
                }
                if let Some(at) = plan.retry_at {
                    requeue = requeue
                        .min(at.saturating_duration_since(Instant::now()) + Duration::from_millis(100));
                }
            }
            Err(error) => {
                let message = error.to_string();
                status::indexes(
                    &mut new,
                    IndexReport::Unknown(&message),
                    tenant.metadata.generation,
                    &now,
                );
                requeue = requeue.min(INDEX_CHECK_BACK);
            }
        }
    } else {
        status::indexes(
            &mut new,
            IndexReport::NoneDeclared,
            tenant.metadata.generation,
            &now,
        );
    }
    with_health(&mut new, &tenant, ctx, &located.desired.server, &now);
    crate::kill_point!("tenant.before_status");
    write_status(&tenant, ctx, new).await?;
    crate::kill_point!("tenant.after_status");
    ctx.succeeded(&key(&tenant));
    Ok(Action::requeue(requeue))
}

/// Why `server` is still down, when the health monitor found it silent:
/// one admin login is tried for [`DOWN_CHECK`] (the pool would keep
/// retrying for its 30 s acquire timeout), so a tenant reports an outage at
/// once and proceeds as soon as the server is back, without waiting for the
/// monitor's next sample.
async fn still_down(ctx: &Context, admin: &sqlx::postgres::PgConnectOptions, server: &str) -> Option<String> {
    use sqlx::Connection;
    let known = ctx.health.server_down(server)?;
    match tokio::time::timeout(DOWN_CHECK, crate::admin_access::connect(admin)).await {
        Ok(Ok(conn)) => {
            let _ = conn.close().await;
            None
        }
        Ok(Err(error)) => Some(crate::reconcile::indexes::reason(&error)),
        Err(_) => Some(known),
    }
}

/// How long writing the connection Secret may take; the tenant lock (an
/// admin connection) is held meanwhile.
const SECRET_WRITE: Duration = Duration::from_secs(15);

/// How long a reconcile tries its server when the monitor found it down.
const DOWN_CHECK: Duration = Duration::from_secs(2);

/// How soon a tenant with index work in flight is looked at again, at the
/// latest (a job's end re-queues it at once).
const INDEX_CHECK_BACK: Duration = Duration::from_secs(60);

/// Whether the tenant database must be looked at for indexes: some are
/// declared, or were (and may still need dropping), or the last look did
/// not end well.
fn indexes_need_a_look(tenant: &TenantDatabase, desired: &Desired) -> bool {
    let status = tenant.status.as_ref();
    !desired.indexes.is_empty()
        || status.is_some_and(|s| !s.indexes.is_empty())
        || status
            .and_then(|s| s.conditions.iter().find(|c| c.type_ == "IndexesReady"))
            .is_some_and(|c| c.status != "True")
}

/// Writes the failure to status and Events, then: a permanent failure waits
/// for a change (with a slow resync as a safety net); a transient one is
/// returned as an error, for the controller's backoff.
async fn report(
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
    now: &Time,
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

async fn cleanup(
    tenant: Arc<TenantDatabase>,
    ctx: &Context,
    stores: &Stores,
) -> Result<Action, OperatorError> {
    if tenant.spec.deletion_policy == DeletionPolicy::Retain {
        let names = tenant
            .status
            .as_ref()
            .and_then(|s| s.database_name.clone())
            .unwrap_or_default();
        ctx.event(
            tenant.as_ref(),
            false,
            "Retained",
            format!("deletionPolicy Retain: database {names} and its role were kept"),
        )
        .await;
        return Ok(Action::await_change());
    }
    if tenant.annotations().get(LEAVE_DATA).is_some_and(|v| v == "true") {
        let status = tenant.status.as_ref();
        let what = match (
            status.and_then(|s| s.database_name.as_deref()),
            status.and_then(|s| s.server.as_deref()),
        ) {
            (Some(database), Some(server)) => format!("database {database} and its role on {server} were"),
            _ => "whatever was provisioned was".to_owned(),
        };
        ctx.event(
            tenant.as_ref(),
            true,
            "DataLeft",
            format!("{LEAVE_DATA}=true: {what} not dropped although deletionPolicy is Delete; drop them by hand if they should go"),
        )
        .await;
        return Ok(Action::await_change());
    }
    let located = match locate(&tenant, ctx, stores, true).await? {
        Ok(located) => located,
        // Placement is recorded before any SQL runs, so a tenant never
        // placed, or whose spec never resolved to a database, has nothing
        // to drop.
        Err(failure)
            if failure.reason == "NotPlaced"
                || (failure.reason == "InvalidSpec"
                    && tenant.status.as_ref().is_none_or(|s| s.database_name.is_none())) =>
        {
            ctx.event(
                tenant.as_ref(),
                false,
                "NothingToDelete",
                format!("nothing was provisioned, nothing to drop: {}", failure.message),
            )
            .await;
            return Ok(Action::await_change());
        }
        // The data may still exist: say why it cannot be dropped, and retry.
        Err(failure) => return block_deletion(&tenant, ctx, &failure.message).await,
    };
    let Some(_slot) = ctx.slots.enter(&located.desired.server).await else {
        return Ok(Action::requeue(bulkhead::BUSY_RETRY));
    };
    let (pool, admin) = ctx.pools.get(&located.server, &located.credentials);
    if let Some(error) = still_down(ctx, &admin, &located.desired.server).await {
        let reason = format!("server {} does not answer: {error}", located.desired.server);
        return block_deletion(&tenant, ctx, &reason).await;
    }
    crate::kill_point!("cleanup.before_drop");
    match reconcile::delete(&pool, &admin, &located.desired, Mode::Apply).await {
        Ok(steps) => {
            crate::kill_point!("cleanup.after_drop");
            if !steps.is_empty() {
                let note = format!(
                    "dropped database {} and role {} on {}",
                    located.desired.database.as_str(),
                    located.desired.role.as_str(),
                    located.desired.server
                );
                ctx.event(tenant.as_ref(), false, "Deleted", note).await;
            }
            ctx.succeeded(&key(&tenant));
            Ok(Action::await_change())
        }
        Err(error) if error.category() == reconcile::ErrorCategory::Conflict => {
            // Not ours: nothing to drop, and nothing that should hold the deletion.
            ctx.event(
                tenant.as_ref(),
                true,
                "Conflict",
                format!("nothing dropped: {error}"),
            )
            .await;
            Ok(Action::await_change())
        }
        Err(error) => block_deletion(&tenant, ctx, &error.to_string()).await,
    }
}

/// The annotation by which a person lets a tenant under `deletionPolicy:
/// Delete` go without dropping its database and role — the way out when
/// the deletion cannot proceed (its server is gone for good).
pub const LEAVE_DATA: &str = "tenantdb.io/leave-data-on-delete";

/// Reports in status (and, on the transition, an Event) why a deletion
/// cannot finish yet, and fails so the controller retries with backoff.
async fn block_deletion(
    tenant: &TenantDatabase,
    ctx: &Context,
    reason: &str,
) -> Result<Action, OperatorError> {
    let message = format!(
        "cannot drop the database yet: {reason} (to let the tenant go without dropping it, annotate it {LEAVE_DATA}=true)"
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

/// Finds the tenant's server — the one recorded in `status.server`, else
/// (a tenant not placed yet) the one placement chooses and records first
/// ([`placement`]); when deleting, a tenant never placed falls back to
/// `spec.server` — checks the server admits the namespace (not when
/// deleting: the tenant's database was admitted when it was made), reads
/// the admin credentials and resolves the spec. The inner error is a
/// failure to report.
async fn locate(
    tenant: &TenantDatabase,
    ctx: &Context,
    stores: &Stores,
    deleting: bool,
) -> Result<Result<Located, Failure>, OperatorError> {
    let permanent = |reason: &'static str, message: String| {
        Ok(Err(Failure {
            reason,
            message,
            permanent: true,
        }))
    };
    let lookup = |name: &str| {
        stores
            .servers
            .get(&kube::runtime::reflector::ObjectRef::new(name))
    };
    let placed = tenant.status.as_ref().and_then(|s| s.server.clone());
    let server = match (placed, deleting) {
        (Some(placed), _) => {
            if let Some(wanted) = &tenant.spec.server
                && *wanted != placed
                && !deleting
            {
                return permanent(
                    "ServerChanged",
                    format!(
                        "the tenant is on DatabaseServer {placed}; moving it to {wanted} is not supported"
                    ),
                );
            }
            match lookup(&placed) {
                Some(server) => server,
                None => return permanent("ServerNotFound", format!("DatabaseServer {placed} not found")),
            }
        }
        (None, true) => match &tenant.spec.server {
            Some(name) => match lookup(name) {
                Some(server) => server,
                None => return permanent("ServerNotFound", format!("DatabaseServer {name} not found")),
            },
            None => return permanent("NotPlaced", "the tenant was never placed on a server".into()),
        },
        (None, false) => match placement::place(tenant, &ctx.client, stores, &ctx.placements).await? {
            Ok(server) => server,
            Err(failure) => return Ok(Err(failure)),
        },
    };
    let namespace = tenant.namespace().unwrap_or_default();
    if !deleting && !placement::admits(&server, &stores.namespace_labels(&namespace)) {
        return permanent(
            "NamespaceNotAllowed",
            format!(
                "DatabaseServer {} does not admit tenants from namespace {namespace} (spec.allowedNamespaces)",
                server.name_any()
            ),
        );
    }
    let reference = &server.spec.admin_secret_ref;
    let credentials = match ctx.admin_credentials(reference).await? {
        Some(Ok(credentials)) => credentials,
        Some(Err(error)) => return permanent("AdminSecretInvalid", error.to_string()),
        None => {
            return permanent(
                "AdminSecretMissing",
                format!(
                    "admin Secret {}/{} of DatabaseServer {} not found",
                    reference.namespace,
                    reference.name,
                    server.name_any()
                ),
            );
        }
    };
    match reconcile::resolve(tenant, &server) {
        Ok(desired) => Ok(Ok(Located {
            server,
            credentials,
            desired,
        })),
        Err(error) => permanent("InvalidSpec", error.to_string()),
    }
}

fn owned_by(secret: &Secret, tenant: &TenantDatabase) -> bool {
    let uid = tenant.metadata.uid.as_deref();
    secret
        .owner_references()
        .iter()
        .any(|r| Some(r.uid.as_str()) == uid && r.controller == Some(true))
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
