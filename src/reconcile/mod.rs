//! The reconcile core, shared by the operator and the command line:
//! `desired` (resolve the spec, pure) → `observe` (one catalog snapshot) →
//! `plan` (the difference, pure) → `apply` (DDL). [`provision`] and
//! [`delete`] run the pipeline for one tenant under a per-tenant advisory
//! lock, so two reconcilers (operator replicas, a person's `tenantdb
//! apply`) never interleave on the same tenant.

pub mod apply;
pub mod deadline;
pub mod desired;
pub mod error;
pub mod index_jobs;
pub mod indexes;
pub mod observe;
pub mod plan;

use sqlx::PgPool;

use crate::admin_access::version_of;
use crate::admin_session;
use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgConnectOptions, Postgres};

pub use desired::{CacheIntent, Desired, resolve, resolve_all};
pub use error::{ErrorCategory, ReconcileError, SpecError};
pub use observe::Snapshot;
pub use plan::{Plan, Step, StoredPassword};

/// Whether to change the server or only say what would change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    DryRun,
    Apply,
}

/// What a provisioning run found and did.
#[derive(Clone, Debug)]
pub struct Outcome {
    pub plan: Plan,
    /// Steps executed (0 in a dry run).
    pub executed: usize,
}

/// Observes, plans and (in [`Mode::Apply`]) applies `desired` on the server
/// behind `pool`. `admin` are the pool's connect options, from which the
/// connection to the tenant database is derived.
pub async fn provision(
    pool: &PgPool,
    admin: &PgConnectOptions,
    desired: &Desired,
    stored: StoredPassword<'_>,
    mode: Mode,
) -> Result<Outcome, ReconcileError> {
    provision_and_publish(pool, admin, desired, stored, mode, async |_, _| ())
        .await
        .map(|(outcome, ())| outcome)
}

/// [`provision`], then `then` with the outcome and the admin options for
/// the tenant database while the tenant lock is still held — so the
/// credentials set on the role and the ones published (the connection
/// Secret) change together, and the tenant's indexes are looked at by the
/// same holder: another reconciler of the same tenant (a replica about to
/// be fenced, a person's `tenantdb apply`) waits for all of it and sees the
/// published password. `then` is not run when provisioning failed; its own
/// result is handed back as it is.
pub async fn provision_and_publish<R>(
    pool: &PgPool,
    admin: &PgConnectOptions,
    desired: &Desired,
    stored: StoredPassword<'_>,
    mode: Mode,
    then: impl AsyncFnOnce(&Outcome, &PgConnectOptions) -> R,
) -> Result<(Outcome, R), ReconcileError> {
    with_tenant_lock(pool, desired, async |conn| {
        let tenant_db = admin_session::in_tenant_database(admin, desired.database.as_str(), version_of(conn));
        let snapshot = deadline::within(deadline::ANSWER, observe::observe(conn, desired, &tenant_db))
            .await
            .map_err(db_error(desired, "observe catalog"))?;
        let plan = plan::plan_provision(desired, &snapshot, stored, crate::password::generate_password())?;
        let executed = match mode {
            Mode::DryRun => 0,
            Mode::Apply => apply::apply(conn, &tenant_db, desired, &plan.steps).await?,
        };
        let outcome = Outcome { plan, executed };
        let published = then(&outcome, &tenant_db).await;
        Ok((outcome, published))
    })
    .await
}

/// The catalog snapshots of `tenants`, all on the server behind `pool`, in
/// one statement and without any tenant's lock: a reader's view for
/// planning many tenants at once ([`plan_observed`]). A change found there
/// is made through [`provision`], which looks again under the tenant's lock.
pub async fn observe_many(pool: &PgPool, tenants: &[&Desired]) -> Result<Observed, sqlx::Error> {
    let mut conn = pool.acquire().await?;
    let version = version_of(&conn);
    match deadline::within(deadline::ANSWER, observe::observe_catalog(&mut conn, tenants)).await {
        Ok(snapshots) => Ok(Observed { snapshots, version }),
        Err(error) => {
            // Cut off by the deadline, it may be mid-reply: not reused.
            conn.close_on_drop();
            Err(error)
        }
    }
}

/// What [`observe_many`] read.
pub struct Observed {
    /// One per tenant, in the order asked.
    pub snapshots: Vec<Snapshot>,
    /// The server's `server_version_num`.
    pub version: u32,
}

/// Plans `desired` over its snapshot from [`observe_many`], first reading
/// the extensions inside its database when it declares some. Pure apart
/// from that one look.
pub async fn plan_observed(
    admin: &PgConnectOptions,
    version: u32,
    desired: &Desired,
    mut snapshot: Snapshot,
    stored: StoredPassword<'_>,
) -> Result<Plan, ReconcileError> {
    if observe::needs_extensions_look(desired, &snapshot) {
        let tenant_db = admin_session::in_tenant_database(admin, desired.database.as_str(), version);
        deadline::within(
            deadline::ANSWER,
            observe::observe_extensions(&mut snapshot, desired, &tenant_db),
        )
        .await
        .map_err(db_error(desired, "observe extensions"))?;
    }
    plan::plan_provision(desired, &snapshot, stored, crate::password::generate_password())
}

/// Plans and (in [`Mode::Apply`]) carries out `deletionPolicy: Delete` for
/// `desired`; returns the steps. Refuses, dropping nothing, when the database
/// or role is not this resource's.
pub async fn delete(
    pool: &PgPool,
    admin: &PgConnectOptions,
    desired: &Desired,
    mode: Mode,
) -> Result<Vec<Step>, ReconcileError> {
    with_tenant_lock(pool, desired, async |conn| {
        let tenant_db = admin_session::in_tenant_database(admin, desired.database.as_str(), version_of(conn));
        let snapshot = deadline::within(deadline::ANSWER, observe::observe(conn, desired, &tenant_db))
            .await
            .map_err(db_error(desired, "observe catalog"))?;
        let steps = plan::plan_delete(desired, &snapshot)?;
        if mode == Mode::Apply {
            apply::apply(conn, &tenant_db, desired, &steps).await?;
        }
        Ok(steps)
    })
    .await
}

/// Runs `work` on one pooled admin connection holding a session-level
/// advisory lock for the tenant's database name. On any failure the
/// connection is closed rather than returned, which releases the lock: a
/// call cut off by its [`deadline`] may have left the connection mid-reply,
/// and nothing more is sent on it.
async fn with_tenant_lock<T>(
    pool: &PgPool,
    desired: &Desired,
    work: impl AsyncFnOnce(&mut sqlx::PgConnection) -> Result<T, ReconcileError>,
) -> Result<T, ReconcileError> {
    let mut conn: PoolConnection<Postgres> = pool
        .acquire()
        .await
        .map_err(db_error(desired, "connect as admin"))?;
    let key = format!("tenantdb:{}", desired.database.as_str());
    let locked = deadline::within(
        deadline::ANSWER,
        sqlx::query("SELECT pg_advisory_lock(hashtextextended($1, 0))")
            .bind(&key)
            .execute(&mut *conn),
    )
    .await;
    if let Err(error) = locked {
        conn.close_on_drop();
        return Err(db_error(desired, "take the tenant lock")(error));
    }
    let result = work(&mut conn).await;
    let unlocked = result.is_ok()
        && deadline::within(
            deadline::ANSWER,
            sqlx::query("SELECT pg_advisory_unlock(hashtextextended($1, 0))")
                .bind(&key)
                .execute(&mut *conn),
        )
        .await
        .is_ok();
    if !unlocked {
        conn.close_on_drop();
    }
    result
}

/// Wraps a database error with the tenant's context and the failed operation.
pub(crate) fn db_error<'a>(
    desired: &'a Desired,
    operation: &'static str,
) -> impl FnOnce(sqlx::Error) -> ReconcileError + 'a {
    move |source| {
        ReconcileError::Database(Box::new(error::DatabaseFailure {
            server: desired.server.clone(),
            database: desired.database.clone(),
            role: desired.role.clone(),
            operation,
            cause: source,
        }))
    }
}
