//! The `tenantdb.io/cleanup` finalizer's work, in the pipeline's shape:
//! honour `deletionPolicy` — first for the cache (`Retain` turns the Redis
//! user off, `Delete` removes it and its keys, in passes that record their
//! progress), then `Retain` keeps the database, `Delete` drops the
//! database and role under the tenant lock — or say why it cannot (status
//! and an Event) and keep the finalizer until a person sets
//! [`LEAVE_DATA`](super::LEAVE_DATA). Every way out that lets the finalizer
//! go either did what the policy says, found nothing of the tenant's to
//! drop, or was told to by that annotation; each says so in an Event.
//!
//! I/O: the caches and the API server as [`super::gather`] reads them,
//! PostgreSQL (the drop, through the reconcile core), Redis (the cache's
//! removal), Events and status.

use kube::ResourceExt;
use kube::runtime::controller::Action;

use std::time::Duration;

use super::{LEAVE_DATA, cache, gather, key, provision, publish};
use crate::api::TenantDatabase;
use crate::api::tenant_database::{CacheRemoval, DeletionPolicy};
use crate::operator::context::Context;
use crate::operator::{OperatorError, Stores, bulkhead};
use crate::reconcile::{self, Mode};

/// Carries out the tenant's `deletionPolicy`; `Action::await_change()`
/// lets the finalizer go, an error keeps it (retried with backoff).
pub async fn cleanup(
    tenant: &TenantDatabase,
    ctx: &Context,
    stores: &Stores,
) -> Result<Action, OperatorError> {
    // The cache first, under either policy: a deleted tenant's Redis user
    // never stays enabled.
    if let Some(recorded) = tenant.status.as_ref().and_then(|s| s.cache.as_ref())
        && !recorded.removal.as_ref().is_some_and(|r| r.complete)
    {
        let leave_data = tenant.annotations().get(LEAVE_DATA).is_some_and(|v| v == "true");
        let delete = tenant.spec.deletion_policy == DeletionPolicy::Delete && !leave_data;
        let removed = match cache::remove(tenant, ctx, stores, recorded, delete).await? {
            Ok(removed) => removed,
            // The way out when the cache server is gone for good: the
            // annotation lets the tenant go, and says what may be left.
            Err(failure) if leave_data && failure.reason == "CacheServerNotFound" => {
                let note = format!(
                    "{LEAVE_DATA}=true: {}; Redis user {} (and keys under {:?}) may remain wherever that server is",
                    failure.message,
                    recorded.user.as_deref().unwrap_or_default(),
                    recorded.key_prefix.as_deref().unwrap_or_default()
                );
                ctx.event(tenant, true, "DataLeft", note).await;
                CacheRemoval {
                    complete: true,
                    ..CacheRemoval::default()
                }
            }
            Err(failure) => {
                let reason = format!("its cache: {}", failure.message);
                return publish::deletion_blocked(tenant, ctx, &reason).await;
            }
        };
        cache::record_removal(tenant, ctx, &removed).await?;
        if !removed.complete {
            // More keys to go: come back at once, from the progress recorded.
            return Ok(Action::requeue(Duration::from_millis(100)));
        }
        let note = match (delete, recorded.key_prefix.as_deref()) {
            (true, Some(prefix)) => format!(
                "removed Redis user {} and {} keys under {prefix:?} on {}",
                recorded.user.as_deref().unwrap_or_default(),
                removed.keys_removed,
                recorded.server
            ),
            (false, Some(prefix)) => format!(
                "turned Redis user {} off on {}; its keys under {prefix:?} were kept",
                recorded.user.as_deref().unwrap_or_default(),
                recorded.server
            ),
            (_, None) => "the cache was never provisioned: nothing to remove".to_owned(),
        };
        ctx.event(tenant, false, "CacheRemoved", note).await;
    }
    if tenant.spec.deletion_policy == DeletionPolicy::Retain {
        let names = tenant
            .status
            .as_ref()
            .and_then(|s| s.database_name.clone())
            .unwrap_or_default();
        let note = format!("deletionPolicy Retain: database {names} and its role were kept");
        ctx.event(tenant, false, "Retained", note).await;
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
            tenant,
            true,
            "DataLeft",
            format!("{LEAVE_DATA}=true: {what} not dropped although deletionPolicy is Delete; drop them by hand if they should go"),
        )
        .await;
        return Ok(Action::await_change());
    }
    // Placement is recorded before any SQL runs, so a tenant never placed,
    // or whose spec never resolved to a database, has nothing to drop.
    let never_resolved = tenant.status.as_ref().is_none_or(|s| s.database_name.is_none());
    let nothing_to_drop = async |message: &str| {
        let note = format!("nothing was provisioned, nothing to drop: {message}");
        ctx.event(tenant, false, "NothingToDelete", note).await;
        Ok(Action::await_change())
    };
    let server = match gather::server_to_clean(tenant, stores) {
        Ok(server) => server,
        Err(failure) if failure.reason == "NotPlaced" => return nothing_to_drop(&failure.message).await,
        // The data may still exist: say why it cannot be dropped, and retry.
        Err(failure) => return publish::deletion_blocked(tenant, ctx, &failure.message).await,
    };
    let access = match gather::access(tenant, ctx, stores, server, true).await? {
        Ok(access) => access,
        Err(failure) if failure.reason == "InvalidSpec" && never_resolved => {
            return nothing_to_drop(&failure.message).await;
        }
        Err(failure) => return publish::deletion_blocked(tenant, ctx, &failure.message).await,
    };
    let desired = &access.desired;
    let Some(_slot) = ctx.slots.enter(&desired.server).await else {
        return Ok(Action::requeue(bulkhead::BUSY_RETRY));
    };
    let (pool, admin) = ctx
        .pools
        .get(&access.server, &access.credentials, access.ca.as_deref());
    if let Some(error) = provision::still_down(ctx, &admin, &desired.server).await {
        let reason = format!("server {} does not answer: {error}", desired.server);
        return publish::deletion_blocked(tenant, ctx, &reason).await;
    }
    crate::kill_point!("cleanup.before_drop");
    match reconcile::delete(&pool, &admin, desired, Mode::Apply).await {
        Ok(steps) => {
            crate::kill_point!("cleanup.after_drop");
            if !steps.is_empty() {
                let note = format!(
                    "dropped database {} and role {} on {}",
                    desired.database.as_str(),
                    desired.role.as_str(),
                    desired.server
                );
                ctx.event(tenant, false, "Deleted", note).await;
            }
            ctx.succeeded(&key(tenant));
            Ok(Action::await_change())
        }
        Err(error) if error.category() == reconcile::ErrorCategory::Conflict => {
            // Not ours: nothing to drop, and nothing that should hold the deletion.
            ctx.event(tenant, true, "Conflict", format!("nothing dropped: {error}"))
                .await;
            Ok(Action::await_change())
        }
        Err(error) => publish::deletion_blocked(tenant, ctx, &error.to_string()).await,
    }
}
