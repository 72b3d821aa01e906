//! Building a `TenantDatabase`'s status from a reconcile's result (pure).
//! Conditions follow kstatus: `Ready`, `Reconciling` and `Stalled`, plus
//! the detail conditions; a condition's `lastTransitionTime` moves only when
//! its status does.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::api::common::Condition;
use crate::api::tenant_database::{IndexPhase, PoolStatus, TenantDatabaseStatus, TenantPhase};
use crate::reconcile::indexes::IndexPlan;
use crate::reconcile::{Desired, ReconcileError};

/// Sets condition `type_` in `conditions`, keeping its transition time when
/// the status is unchanged.
pub fn set_condition(
    conditions: &mut Vec<Condition>,
    type_: &str,
    status: bool,
    reason: &str,
    message: &str,
    generation: Option<i64>,
    now: &Time,
) {
    let status = if status { "True" } else { "False" };
    let last_transition_time = conditions
        .iter()
        .find(|c| c.type_ == type_ && c.status == status)
        .map_or_else(|| now.clone(), |c| c.last_transition_time.clone());
    let condition = Condition {
        type_: type_.to_owned(),
        status: status.to_owned(),
        reason: reason.to_owned(),
        message: message.to_owned(),
        observed_generation: generation,
        last_transition_time,
    };
    match conditions.iter_mut().find(|c| c.type_ == type_) {
        Some(existing) => *existing = condition,
        None => conditions.push(condition),
    }
}

/// Why a reconcile did not reach Ready, as status reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    /// PascalCase reason for the conditions, e.g. `Conflict`.
    pub reason: &'static str,
    pub message: String,
    /// Permanent failures stall (`Stalled=True`) until something changes;
    /// the others are being retried (`Reconciling=True`).
    pub permanent: bool,
}

impl From<&ReconcileError> for Failure {
    fn from(error: &ReconcileError) -> Self {
        let permanent = error.category().is_permanent();
        let reason = match error {
            ReconcileError::InvalidSpec(_) => "InvalidSpec",
            ReconcileError::Conflict(_) => "Conflict",
            ReconcileError::Database(_) if permanent => "PermissionDenied",
            ReconcileError::Database(_) => "ServerUnavailable",
        };
        Self {
            reason,
            message: error.to_string(),
            permanent,
        }
    }
}

/// Status after a provisioning attempt for `desired` (absent when the spec
/// could not even be resolved) with `result`.
pub fn provisioned(
    previous: Option<&TenantDatabaseStatus>,
    generation: Option<i64>,
    desired: Option<&Desired>,
    result: Result<(), &Failure>,
    now: &Time,
) -> TenantDatabaseStatus {
    let mut status = previous.cloned().unwrap_or_default();
    let was_ready = matches!(status.phase, Some(TenantPhase::Ready | TenantPhase::Degraded));
    status.observed_generation = generation;
    if let Some(desired) = desired {
        status.server = Some(desired.server.clone());
        status.database_name = Some(desired.database.as_str().to_owned());
        status.role_name = Some(desired.role.as_str().to_owned());
        status.secret_name = Some(desired.secret_name.clone());
    }
    match result {
        Ok(()) => {
            if let Some(pool) = desired.map(|d| &d.pool) {
                let live = status.pool.take().unwrap_or_default();
                status.connections = Some(format!("{}/{}", live.active_connections, pool.connection_limit));
                status.pool = Some(PoolStatus {
                    max_connections: pool.max_connections,
                    connection_limit: pool.connection_limit,
                    ..live
                });
            }
            let conditions = &mut status.conditions;
            set_condition(
                conditions,
                "DatabaseReady",
                true,
                "Provisioned",
                "database and role match the spec",
                generation,
                now,
            );
            set_condition(
                conditions,
                "PoolConfigured",
                true,
                "Configured",
                "connection limits and settings match the pool contract",
                generation,
                now,
            );
            set_condition(conditions, "Reconciling", false, "Converged", "", generation, now);
            set_condition(conditions, "Stalled", false, "Converged", "", generation, now);
            set_condition(
                conditions,
                "Ready",
                true,
                "Provisioned",
                "the tenant database is ready",
                generation,
                now,
            );
            status.phase = Some(TenantPhase::Ready);
        }
        Err(failure) => {
            let Failure {
                reason,
                message,
                permanent,
            } = failure;
            let conditions = &mut status.conditions;
            set_condition(
                conditions,
                "DatabaseReady",
                false,
                reason,
                message,
                generation,
                now,
            );
            set_condition(
                conditions,
                "Reconciling",
                !permanent,
                reason,
                if *permanent { "" } else { message },
                generation,
                now,
            );
            set_condition(
                conditions,
                "Stalled",
                *permanent,
                reason,
                if *permanent { message } else { "" },
                generation,
                now,
            );
            set_condition(conditions, "Ready", false, reason, message, generation, now);
            status.phase = Some(if *permanent {
                TenantPhase::Failed
            } else if was_ready {
                TenantPhase::Degraded
            } else {
                TenantPhase::Provisioning
            });
        }
    }
    status
}

/// What is known of a tenant's indexes after a reconcile.
pub enum IndexReport<'a> {
    /// None declared and none left to drop: the tenant database was not looked at.
    NoneDeclared,
    /// The plan made for them.
    Planned(&'a IndexPlan),
    /// They could not be looked at (the last known states are kept).
    Unknown(&'a str),
}

/// Sets `status.indexes` and the `IndexesReady` condition. The tenant's
/// `Ready` does not depend on its indexes: an index waits (Pending) for the
/// application's migrations to create its table, and the database is
/// usable meanwhile.
pub fn indexes(
    status: &mut TenantDatabaseStatus,
    report: IndexReport<'_>,
    generation: Option<i64>,
    now: &Time,
) {
    let (ready, reason, message) = match report {
        IndexReport::NoneDeclared => {
            status.indexes.clear();
            (true, "NoIndexes", "no indexes are declared".to_owned())
        }
        IndexReport::Unknown(error) => (
            false,
            "Unknown",
            format!("the indexes could not be checked: {error}"),
        ),
        IndexReport::Planned(plan) => {
            status.indexes = plan.statuses.clone();
            let names = |phase: IndexPhase| -> Vec<&str> {
                plan.statuses
                    .iter()
                    .filter(|s| s.phase == phase)
                    .map(|s| s.name.as_str())
                    .collect()
            };
            let total = plan.statuses.len();
            let ready = names(IndexPhase::Ready).len();
            let mut parts = vec![format!("{ready} of {total} indexes ready")];
            let mut reason = None;
            for (phase, label, why) in [
                (IndexPhase::Invalid, "invalid", "Invalid"),
                (IndexPhase::Building, "building", "Building"),
                (IndexPhase::Pending, "pending", "Pending"),
            ] {
                let names = names(phase);
                if !names.is_empty() {
                    parts.push(format!("{label}: {}", names.join(", ")));
                    reason.get_or_insert(why);
                }
            }
            if plan.dropping > 0 {
                parts.push(format!("dropping {} no longer declared", plan.dropping));
                reason.get_or_insert("Dropping");
            }
            (reason.is_none(), reason.unwrap_or("AllReady"), parts.join("; "))
        }
    };
    set_condition(
        &mut status.conditions,
        "IndexesReady",
        ready,
        reason,
        &message,
        generation,
        now,
    );
}

/// Status while a deletion is waiting on something (`message` says what).
pub fn deleting(
    previous: Option<&TenantDatabaseStatus>,
    generation: Option<i64>,
    message: &str,
    now: &Time,
) -> TenantDatabaseStatus {
    let mut status = previous.cloned().unwrap_or_default();
    status.observed_generation = generation;
    let conditions = &mut status.conditions;
    set_condition(conditions, "Ready", false, "Deleting", message, generation, now);
    set_condition(
        conditions,
        "Reconciling",
        true,
        "Deleting",
        message,
        generation,
        now,
    );
    status.phase = Some(TenantPhase::Deleting);
    status
}

#[cfg(test)]
mod tests {
    use super::*;

    fn time(seconds: i64) -> Time {
        Time(k8s_openapi::jiff::Timestamp::from_second(seconds).unwrap())
    }

    #[test]
    fn transition_time_moves_only_on_a_transition() {
        let mut conditions = Vec::new();
        set_condition(
            &mut conditions,
            "Ready",
            false,
            "Provisioning",
            "",
            Some(1),
            &time(100),
        );
        set_condition(
            &mut conditions,
            "Ready",
            false,
            "Provisioning",
            "still",
            Some(2),
            &time(200),
        );
        assert_eq!(conditions[0].last_transition_time, time(100));
        assert_eq!(conditions[0].message, "still");
        set_condition(
            &mut conditions,
            "Ready",
            true,
            "Provisioned",
            "",
            Some(2),
            &time(300),
        );
        assert_eq!(conditions[0].last_transition_time, time(300));
        assert_eq!(conditions.len(), 1);
    }
}
