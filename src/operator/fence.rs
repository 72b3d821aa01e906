//! Fencing for the leader: the lease library renews the Lease but only logs
//! a failed renewal, so a leader cut off from the API server would go on
//! reconciling while another replica takes the lease over. The leader reads
//! its Lease back (every eighth of the lease duration) and stops
//! reconciling at its *renew deadline* — a quarter of the lease duration
//! before the last renewal it saw expires — unless a newer renewal was
//! confirmed. The library renews halfway through the lease, so a healthy
//! leader always confirms in time. Another replica can only take over once
//! the lease has expired, so the two never reconcile at once (given clocks
//! that drift by less than that quarter).
//!
//! I/O: one GET of the Lease per check, bounded by a timeout.

use std::time::{Duration, SystemTime};

use k8s_openapi::api::coordination::v1::Lease;
use kube::api::Api;

use super::LeaderElection;

/// How often the leader reads its Lease back.
pub fn check_every(election: &LeaderElection) -> Duration {
    (election.lease_duration / 8).clamp(Duration::from_millis(250), Duration::from_secs(5))
}

/// How long before the lease's expiry the leader stops reconciling.
fn margin(election: &LeaderElection) -> Duration {
    election.lease_duration / 4
}

/// Reads the Lease; when this replica holds it, the instant until which it
/// may reconcile: the renewal's expiry less the margin. `None` when the
/// Lease cannot be read in time, is held by another, or is already past
/// its renew deadline.
pub async fn confirm(client: &kube::Client, election: &LeaderElection) -> Option<tokio::time::Instant> {
    let leases: Api<Lease> = Api::namespaced(client.clone(), &election.namespace);
    let lease = tokio::time::timeout(check_every(election), leases.get_opt(&election.lease_name))
        .await
        .ok()?
        .ok()??;
    let spec = lease.spec?;
    if spec.holder_identity.as_deref() != Some(election.identity.as_str()) {
        return None;
    }
    let renewed = SystemTime::from(spec.renew_time?.0);
    let duration = spec
        .lease_duration_seconds
        .and_then(|s| u64::try_from(s).ok())
        .map_or(election.lease_duration, Duration::from_secs);
    let expires = renewed + duration;
    let left = expires
        .duration_since(SystemTime::now())
        .ok()?
        .checked_sub(margin(election))?;
    Some(tokio::time::Instant::now() + left)
}
