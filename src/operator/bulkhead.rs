//! How many tenant reconciles may work on one server at once, so a server
//! that hangs (a frozen VM, a network that drops packets silently) holds
//! only its share of the operator's workers and the tenants of every other
//! server go on being reconciled. When every slot of a server is taken, a
//! reconcile waits for one only while the server is making progress (a slot
//! was given back within the last [`WAIT`]); otherwise it is re-queued at
//! once instead of holding a worker. I/O: none (a semaphore per server).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use crate::admin_access::MAX_ADMIN_CONNECTIONS;

/// How long a reconcile waits for a slot on a server that is making progress.
const WAIT: Duration = Duration::from_secs(1);

/// How soon a reconcile that found its server's slots taken runs again.
pub const BUSY_RETRY: Duration = Duration::from_secs(2);

pub struct ServerSlots {
    per_server: usize,
    servers: Mutex<HashMap<String, Server>>,
}

#[derive(Clone)]
struct Server {
    semaphore: Arc<Semaphore>,
    /// When a slot was last given back.
    last_release: Arc<Mutex<Instant>>,
}

/// A slot on one server, given back when dropped.
pub struct Slot {
    _permit: OwnedSemaphorePermit,
    last_release: Arc<Mutex<Instant>>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        *self.last_release.lock().unwrap() = Instant::now();
    }
}

impl ServerSlots {
    /// Half the operator's workers per server (at least one), and never
    /// more than the server's admin connections.
    pub fn new(concurrency: u16) -> Self {
        Self {
            per_server: (usize::from(concurrency) / 2).clamp(1, MAX_ADMIN_CONNECTIONS as usize),
            servers: Mutex::new(HashMap::new()),
        }
    }

    /// A slot on `server`; `None` when every slot is taken and none was
    /// given back within [`WAIT`] (before or while waiting).
    pub async fn enter(&self, server: &str) -> Option<Slot> {
        let server = self
            .servers
            .lock()
            .unwrap()
            .entry(server.to_owned())
            .or_insert_with(|| Server {
                semaphore: Arc::new(Semaphore::new(self.per_server)),
                last_release: Arc::new(Mutex::new(Instant::now())),
            })
            .clone();
        let slot = |permit| Slot {
            _permit: permit,
            last_release: server.last_release.clone(),
        };
        if let Ok(permit) = server.semaphore.clone().try_acquire_owned() {
            return Some(slot(permit));
        }
        if server.last_release.lock().unwrap().elapsed() >= WAIT {
            return None; // stuck: every slot held for a while
        }
        let permit = tokio::time::timeout(WAIT, server.semaphore.clone().acquire_owned())
            .await
            .ok()?
            .ok()?;
        Some(slot(permit))
    }

    #[cfg(test)]
    fn per_server(&self) -> usize {
        self.per_server
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_server_whose_slots_stay_taken_sends_reconciles_away_at_once_and_others_go_on() {
        let slots = ServerSlots::new(4);
        assert_eq!(slots.per_server(), 2);
        let held = [
            slots.enter("hung").await.unwrap(),
            slots.enter("hung").await.unwrap(),
        ];
        // Just taken: the server may be making progress, so a third waits.
        let started = Instant::now();
        assert!(slots.enter("hung").await.is_none());
        assert_eq!(started.elapsed(), WAIT, "waited one WAIT for a slot");
        // Held for longer than WAIT with none given back: no more waiting.
        let started = Instant::now();
        assert!(slots.enter("hung").await.is_none());
        assert_eq!(
            started.elapsed(),
            Duration::ZERO,
            "a stuck server holds no worker"
        );
        assert!(
            slots.enter("other").await.is_some(),
            "another server is not held up"
        );
        drop(held);
        assert!(slots.enter("hung").await.is_some());
        assert_eq!(ServerSlots::new(1).per_server(), 1);
        assert_eq!(ServerSlots::new(64).per_server(), MAX_ADMIN_CONNECTIONS as usize);
    }

    #[tokio::test(start_paused = true)]
    async fn on_a_server_making_progress_a_reconcile_waits_for_the_next_free_slot() {
        let slots = Arc::new(ServerSlots::new(2));
        let held = slots.enter("busy").await.unwrap();
        let giving_back = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            drop(held);
        });
        let started = Instant::now();
        assert!(slots.enter("busy").await.is_some());
        assert_eq!(started.elapsed(), Duration::from_millis(300));
        giving_back.await.unwrap();
    }
}
