//! Between gather and provision: a tenant that was converged at its
//! current generation is checked against its server's shared catalog
//! snapshot of this resync period ([`crate::operator::catalog`]) instead
//! of being looked at on its own under its lock. Only when the plan over
//! that snapshot is empty, the connection Secret is as it should be and
//! the indexes are not due for a look does the reconcile skip
//! provisioning; anything else goes the locked way, which looks again.
//!
//! I/O: the server's snapshot statement when this period has none yet,
//! and a look inside the database for a tenant that declares extensions.
//! No writes.

use std::sync::Arc;
use std::time::{Duration, Instant};

use kube::ResourceExt;

use super::gather::{Access, SecretState};
use super::{key, provision, publish};
use crate::api::{DatabaseServer, TenantDatabase};
use crate::operator::Stores;
use crate::operator::context::Context;
use crate::reconcile::{self, Desired, StoredPassword};

/// How often the indexes of a tenant whose indexes were all Ready at its
/// current generation are looked at again: the slow rotation that finds an
/// index dropped or broken behind tenantdb's back.
pub const INDEX_ROTATION: Duration = Duration::from_secs(3600);

/// Whether the tenant needs nothing: the caller then publishes it as
/// provisioned, without taking its lock.
pub async fn nothing_to_do(
    tenant: &TenantDatabase,
    ctx: &Context,
    stores: &Stores,
    access: &Access,
    secret: &SecretState,
) -> bool {
    let desired = &access.desired;
    let StoredPassword::Found(password) = secret.stored() else {
        return false;
    };
    if !converged(tenant)
        || ctx.health.server_down(&desired.server).is_some()
        || provision::indexes_need_a_look(tenant, desired, ctx)
        || !publish::secret_is_current(tenant, access, secret, password)
    {
        return false;
    }
    let (pool, admin) = ctx
        .pools
        .get(&access.server, &access.credentials, access.ca.as_deref());
    let server = Arc::clone(&access.server);
    let shared = ctx
        .catalog
        .of(desired, &pool, || tenants_on(&server, stores))
        .await;
    let shared = match shared {
        Ok(Some(shared)) => shared,
        // Not in this period's snapshot, or it could not be taken: the
        // locked way finds out (and reports a failure).
        Ok(None) | Err(_) => return false,
    };
    if shared.taken_now {
        ctx.metrics
            .catalog_snapshots
            .get_or_create(&crate::operator::metrics::ServerLabel {
                server: desired.server.clone(),
            })
            .inc();
    }
    let stored = StoredPassword::Found(password);
    match reconcile::plan_observed(&admin, shared.version, desired, shared.snapshot, stored).await {
        Ok(plan) => plan.steps.is_empty() && !plan.password_is_new,
        Err(_) => false,
    }
}

/// The tenant was Ready at its current generation.
fn converged(tenant: &TenantDatabase) -> bool {
    let Some(status) = tenant.status.as_ref() else {
        return false;
    };
    status.observed_generation == tenant.metadata.generation
        && status
            .conditions
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True")
}

/// The live tenants placed on `server`, resolved (those that do not
/// resolve are left out: their own reconcile reports them).
fn tenants_on(server: &DatabaseServer, stores: &Stores) -> Vec<Desired> {
    let name = server.name_any();
    stores
        .all_tenants()
        .iter()
        .filter(|t| {
            t.metadata.deletion_timestamp.is_none()
                && t.status.as_ref().and_then(|s| s.server.as_deref()) == Some(name.as_str())
        })
        .filter_map(|t| reconcile::resolve(t, server).ok())
        .collect()
}

/// When each tenant's indexes were last seen all Ready, and at which
/// generation: the memory behind [`INDEX_ROTATION`].
#[derive(Default)]
pub struct IndexLooks(std::sync::Mutex<std::collections::HashMap<String, (Option<i64>, Instant)>>);

impl IndexLooks {
    /// Notes that `tenant`'s indexes were all Ready just now (or forgets it
    /// when they were not).
    pub fn record(&self, tenant: &TenantDatabase, all_ready: bool) {
        let mut looks = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if all_ready {
            looks.insert(key(tenant), (tenant.metadata.generation, Instant::now()));
        } else {
            looks.remove(&key(tenant));
        }
    }

    /// Whether `tenant`'s indexes were seen all Ready at its current
    /// generation within the rotation.
    pub fn recent(&self, tenant: &TenantDatabase) -> bool {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&key(tenant))
            .is_some_and(|(generation, at)| {
                *generation == tenant.metadata.generation && at.elapsed() < INDEX_ROTATION
            })
    }

    /// Forgets the tenant `namespace/name` (gone).
    pub fn forget(&self, key: &str) {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(key);
    }
}
