//! What the operator knows of each Redis it provisions tenants on: one
//! entry per physical server (`host:port` — two CacheServers may name the
//! same one), holding the admin connection and the server's look of this
//! resync period ([`cache::observe`]: every user's rules, how the server
//! renders each profile, its `run_id`). A quiet resync of N tenants with
//! caches therefore costs three round trips per server, not per tenant.
//!
//! Every change tenantdb makes to a server goes through [`CacheBook::with`],
//! which holds that server's lock: the look is updated in place after each
//! `ACL SETUSER`, so the next tenant plans against what the server now
//! holds, and two tenants can never both pass the key-prefix overlap check
//! for one server.
//!
//! I/O: Redis only (connect, observe); the caller's closure applies.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use redis::aio::MultiplexedConnection;

use crate::admin_access::AdminCredentials;
use crate::cache::key_prefix::PrefixIndex;
use crate::cache::{self, Address, CacheError, Snapshot};

/// One server's admin connection and look.
pub struct Look {
    pub conn: MultiplexedConnection,
    pub snapshot: Snapshot,
    /// The prefixes the operator's tenants record as held on this server,
    /// indexed by the first tenant of the look that needs them.
    pub recorded: Option<PrefixIndex>,
    taken: Instant,
}

/// One server's look (none until taken, or after a failure) and its last
/// failure to log in or look, behind the server's lock.
type Slot = Arc<tokio::sync::Mutex<Entry>>;

#[derive(Default)]
struct Entry {
    look: Option<Look>,
    failed: Option<(Instant, CacheError)>,
}

/// How long after a failed login or look the next call fails at once
/// instead of trying again: the reconciles of a down server's tenants,
/// taking its lock in turn, must not each wait out a connect deadline
/// (and hold their controller's workers meanwhile).
const FAIL_FAST: Duration = Duration::from_secs(10);

/// Each physical server's [`Look`], by `(host, port)`.
pub struct CacheBook {
    period: Duration,
    servers: Mutex<HashMap<(String, u16), Slot>>,
}

impl CacheBook {
    /// Looks taken are used for `period` (the resync period).
    pub fn new(period: Duration) -> Self {
        Self {
            period,
            servers: Mutex::new(HashMap::new()),
        }
    }

    /// Runs `work` on `address`'s look (taken now when there is none from
    /// this period, logging in as `admin`), holding the server's lock. A
    /// failure of `work` drops the look and its connection: the next call
    /// logs in and looks again.
    pub async fn with<T>(
        &self,
        address: &Address,
        admin: &AdminCredentials,
        work: impl AsyncFnOnce(&mut Look) -> Result<T, CacheError>,
    ) -> Result<T, CacheError> {
        let entry = self
            .servers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry((address.host.clone(), address.port))
            .or_default()
            .clone();
        let mut slot = entry.lock().await;
        if slot
            .look
            .as_ref()
            .is_none_or(|look| look.taken.elapsed() >= self.period)
        {
            slot.look = None;
            if let Some((at, error)) = &slot.failed
                && at.elapsed() < FAIL_FAST
            {
                return Err(error.clone());
            }
            let looked = async {
                let mut conn =
                    cache::connect::connect(address, &admin.username, admin.password.expose()).await?;
                let snapshot = cache::observe::observe(&address.server, &mut conn).await?;
                Ok::<_, CacheError>(Look {
                    conn,
                    snapshot,
                    recorded: None,
                    taken: Instant::now(),
                })
            };
            match looked.await {
                Ok(look) => {
                    slot.look = Some(look);
                    slot.failed = None;
                }
                Err(error) => {
                    slot.failed = Some((Instant::now(), error.clone()));
                    return Err(error);
                }
            }
        }
        let look = slot.look.as_mut().expect("just taken");
        let result = work(look).await;
        if result.is_err() {
            slot.look = None;
        }
        result
    }

    /// Drops `address`'s look when it was taken before a restart (its
    /// `run_id` is not `run_id`, which the CacheServer controller just
    /// saw): the next tenant looks again, finds its user missing and sets
    /// it. Says whether it did.
    pub async fn restarted(&self, address: &Address, run_id: &str) -> bool {
        let entry = self
            .servers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&(address.host.clone(), address.port))
            .cloned();
        let Some(entry) = entry else {
            return false;
        };
        let mut slot = entry.lock().await;
        if slot
            .look
            .as_ref()
            .is_some_and(|look| look.snapshot.run_id != run_id)
        {
            slot.look = None;
            return true;
        }
        false
    }
}
