//! One catalog snapshot per server per resync period, shared by all its
//! tenants' periodic looks.
//!
//! Time is cut into periods of the resync interval, counted from the
//! operator's start. The first converged tenant of a server to come due in
//! a period has the server's snapshot taken — the databases, roles,
//! settings and markers of every tenant placed there, in one statement
//! ([`crate::reconcile::observe_many`]) — and every other tenant of that
//! server due in the same period plans over it. So a quiet resync of N
//! tenants costs each server one statement per period, not three per
//! tenant. A snapshot is only ever used to find that nothing needs doing;
//! a tenant with something to do is looked at again under its own lock.
//! Drift made after a period's snapshot was taken is found in the next
//! period: within two resync intervals.
//!
//! I/O: the snapshot's one statement per server and period, on the admin
//! pool. Single-flight per server: reconciles due meanwhile wait for it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sqlx::PgPool;

use crate::reconcile::{self, Desired, Snapshot};

/// The snapshots, by server.
pub struct CatalogSnapshots {
    period: Duration,
    started: Instant,
    servers: Mutex<HashMap<String, Arc<tokio::sync::Mutex<Taken>>>>,
}

/// The last snapshot of one server.
#[derive(Default)]
struct Taken {
    period: Option<u64>,
    version: u32,
    by_database: HashMap<String, Entry>,
}

struct Entry {
    role: String,
    marker: String,
    snapshot: Snapshot,
}

/// One tenant's part of its server's snapshot.
pub struct Shared {
    pub snapshot: Snapshot,
    /// The server's `server_version_num`.
    pub version: u32,
    /// A new snapshot was taken for this look (else one of this period's
    /// was reused).
    pub taken_now: bool,
}

impl CatalogSnapshots {
    pub fn new(period: Duration) -> Self {
        Self {
            period: period.max(Duration::from_secs(1)),
            started: Instant::now(),
            servers: Mutex::default(),
        }
    }

    /// `desired`'s part of this period's snapshot of its server, taking
    /// that snapshot first when the period has none. `tenants` lists the
    /// server's tenants for a new snapshot (`desired` is added when
    /// missing). `None` when this period's snapshot was taken without the
    /// tenant (placed since): the caller looks for itself.
    pub async fn of(
        &self,
        desired: &Desired,
        pool: &PgPool,
        tenants: impl FnOnce() -> Vec<Desired>,
    ) -> Result<Option<Shared>, sqlx::Error> {
        let period = (self.started.elapsed().as_nanos() / self.period.as_nanos().max(1)) as u64;
        let server = Arc::clone(
            self.servers
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .entry(desired.server.clone())
                .or_default(),
        );
        let mut taken = server.lock().await;
        let taken_now = taken.period != Some(period);
        if taken_now {
            let mut listed = tenants();
            if !listed.iter().any(|t| t.database == desired.database) {
                listed.push(desired.clone());
            }
            let refs: Vec<&Desired> = listed.iter().collect();
            let observed = reconcile::observe_many(pool, &refs).await?;
            *taken = Taken {
                period: Some(period),
                version: observed.version,
                by_database: listed
                    .iter()
                    .zip(observed.snapshots)
                    .map(|(tenant, snapshot)| {
                        let entry = Entry {
                            role: tenant.role.as_str().to_owned(),
                            marker: tenant.marker(),
                            snapshot,
                        };
                        (tenant.database.as_str().to_owned(), entry)
                    })
                    .collect(),
            };
        }
        let Some(entry) = taken.by_database.get(desired.database.as_str()) else {
            return Ok(None);
        };
        // Read for this tenant's names and marker, or not usable.
        if entry.role != desired.role.as_str() || entry.marker != desired.marker() {
            return Ok(None);
        }
        Ok(Some(Shared {
            snapshot: entry.snapshot.clone(),
            version: taken.version,
            taken_now,
        }))
    }

    /// Forgets `server` (deleted).
    pub fn forget(&self, server: &str) {
        self.servers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(server);
    }
}
