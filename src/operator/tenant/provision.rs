//! Step three of the tenant pipeline: the tenant's database, role,
//! settings and indexes made to match the spec — all under the tenant's
//! advisory lock, with the connection Secret written ([`super::publish`])
//! before the lock is released, so the password set on the role and the
//! published one change together.
//!
//! I/O: PostgreSQL (through the reconcile core, every call bounded by a
//! client-side deadline), and the one Kubernetes write the lock must cover:
//! the connection Secret.

use std::time::Duration;

use super::gather::{Access, SecretState};
use super::{Failure, publish};
use crate::api::TenantDatabase;
use crate::api::tenant_database::IndexPhase;
use crate::operator::OperatorError;
use crate::operator::context::Context;
use crate::reconcile::indexes::IndexOutcome;
use crate::reconcile::{self, Desired, Mode, ReconcileError, indexes};

/// What provisioning did.
pub struct Provisioned {
    /// The index look, when the tenant needed one.
    pub indexes: Option<Result<IndexOutcome, ReconcileError>>,
    /// The role's password was set back to the Secret's.
    pub password_restored: bool,
}

/// How long a reconcile tries its server when the monitor found it down.
const DOWN_CHECK: Duration = Duration::from_secs(2);

/// Provisions the tenant. The inner error is a failure to report.
pub async fn provision(
    tenant: &TenantDatabase,
    ctx: &Context,
    access: &Access,
    secret: &SecretState,
) -> Result<Result<Provisioned, Failure>, OperatorError> {
    let desired = &access.desired;
    let (pool, admin) = ctx
        .pools
        .get(&access.server, &access.credentials, access.ca.as_deref());
    if let Some(error) = still_down(ctx, &admin, &desired.server).await {
        return Ok(Err(Failure {
            reason: "ServerUnavailable",
            message: format!("server {}: does not answer: {error}", desired.server),
            permanent: false,
        }));
    }
    let look_at_indexes = indexes_need_a_look(tenant, desired, ctx);
    let locked = async |outcome: &reconcile::Outcome, tenant_db: &sqlx::postgres::PgConnectOptions| {
        let published = publish::secret(tenant, ctx, access, secret, outcome).await;
        // Not when the Secret could not be written: the reconcile fails
        // and is retried, and the indexes are looked at then.
        let indexes = match (&published, look_at_indexes) {
            (Ok(()), true) => {
                Some(indexes::reconcile_in(tenant_db, desired, &ctx.index_jobs, Mode::Apply).await)
            }
            _ => None,
        };
        (published, indexes)
    };
    let provisioned =
        reconcile::provision_and_publish(&pool, &admin, desired, secret.stored(), Mode::Apply, locked).await;
    match provisioned {
        Ok((outcome, (published, indexes))) => {
            published?;
            if let Some(looked) = &indexes {
                let all_ready = looked.as_ref().is_ok_and(|o| {
                    let plan = &o.plan;
                    plan.actions.is_empty()
                        && plan.dropping == 0
                        && plan.statuses.iter().all(|s| s.phase == IndexPhase::Ready)
                });
                ctx.index_looks.record(tenant, all_ready);
            }
            if outcome.executed > 0 {
                tracing::info!(tenant = %super::key(tenant), steps = outcome.executed, "applied changes");
            }
            Ok(Ok(Provisioned {
                indexes,
                password_restored: secret.rejected,
            }))
        }
        Err(error) => Ok(Err(Failure::from(&error))),
    }
}

/// Why `server` is still down, when the health monitor found it silent:
/// one admin login is tried for [`DOWN_CHECK`] (the pool would keep
/// retrying for its 30 s acquire timeout), so a tenant reports an outage at
/// once and proceeds as soon as the server is back, without waiting for the
/// monitor's next sample.
pub async fn still_down(
    ctx: &Context,
    admin: &sqlx::postgres::PgConnectOptions,
    server: &str,
) -> Option<String> {
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

/// Whether the tenant database must be looked at for indexes: some are
/// declared and were not all seen Ready at this generation within the
/// rotation ([`super::recheck::INDEX_ROTATION`]), or some were declared
/// before (and may still need dropping), or the last look did not end well.
pub fn indexes_need_a_look(tenant: &TenantDatabase, desired: &Desired, ctx: &Context) -> bool {
    let status = tenant.status.as_ref();
    (!desired.indexes.is_empty() && !ctx.index_looks.recent(tenant))
        || (desired.indexes.is_empty() && status.is_some_and(|s| !s.indexes.is_empty()))
        || status
            .and_then(|s| s.conditions.iter().find(|c| c.type_ == "IndexesReady"))
            .is_some_and(|c| c.status != "True")
}
