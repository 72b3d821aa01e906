//! Applying cache plans as the server's admin user: `ACL SETUSER`,
//! `ACL SAVE`, and a tenant's removal (`ACL DELUSER`, or `off` and
//! `CLIENT KILL USER`, then its keys by `SCAN MATCH` and `UNLINK` in
//! batches). The only place tenantdb changes a Redis server.

use std::time::Duration;

use redis::aio::MultiplexedConnection;

use super::acl;
use super::error::CacheError;
use super::plan::{CacheStep, Removal};

/// Keys asked for per `SCAN` and unlinked per `UNLINK`: each call stays
/// well under a millisecond of the server's single thread (`UNLINK` frees
/// values in the background).
pub const BATCH: usize = 500;

/// Runs `step` on `server`; then, when the server has an ACL file, saves
/// the users to it so they outlive a restart.
pub async fn apply(
    server: &str,
    conn: &mut MultiplexedConnection,
    step: &CacheStep,
    acl_file: bool,
) -> Result<(), CacheError> {
    match step {
        CacheStep::SetUser { user, rules, .. } => {
            let () = redis::cmd("ACL")
                .arg("SETUSER")
                .arg(user)
                .arg(rules)
                .query_async(conn)
                .await
                .map_err(|e| CacheError::redis(server, &format!("ACL SETUSER {user}"), e))?;
        }
    }
    save(server, conn, acl_file).await
}

async fn save(server: &str, conn: &mut MultiplexedConnection, acl_file: bool) -> Result<(), CacheError> {
    if acl_file {
        let () = redis::cmd("ACL")
            .arg("SAVE")
            .query_async(conn)
            .await
            .map_err(|e| CacheError::redis(server, "ACL SAVE", e))?;
    }
    Ok(())
}

/// How far a removal got: what to store (in the tenant's status) so that
/// the next call, even after an operator restart, resumes where this one
/// stopped.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Sweep {
    /// The `SCAN` cursor to go on from (0: a new pass).
    pub cursor: u64,
    /// Whether the current pass has found keys: only a whole pass that
    /// found none proves the prefix empty.
    pub pass_found_keys: bool,
    /// Keys unlinked so far.
    pub keys_removed: u64,
    /// Whether the removal is complete.
    pub done: bool,
}

/// Carries out `removal` on `server`, spending about `budget` on keys and
/// going on from `sweep`; returns how far it got (`done: false` when the
/// budget ran out: call again with the result).
pub async fn remove(
    server: &str,
    conn: &mut MultiplexedConnection,
    removal: &Removal,
    acl_file: bool,
    sweep: Sweep,
    budget: Duration,
) -> Result<Sweep, CacheError> {
    remove_user(server, conn, removal, acl_file).await?;
    match removal {
        Removal::Delete { pattern, .. } => unlink_matching(server, conn, pattern, sweep, budget).await,
        Removal::Nothing | Removal::Disable { .. } => Ok(Sweep { done: true, ..sweep }),
    }
}

/// The user's part of `removal`: `off`, its connections closed and the ACL
/// file saved (`Disable`); `ACL DELUSER` and the ACL file saved (`Delete`).
/// Every step is sent each time, so a retry after a partial failure (the
/// user already off or gone, the save or the kill not done) completes it.
pub async fn remove_user(
    server: &str,
    conn: &mut MultiplexedConnection,
    removal: &Removal,
    acl_file: bool,
) -> Result<(), CacheError> {
    match removal {
        Removal::Nothing => Ok(()),
        Removal::Disable { user } => {
            let () = redis::cmd("ACL")
                .arg("SETUSER")
                .arg(user)
                .arg(acl::disable_rules())
                .query_async(conn)
                .await
                .map_err(|e| CacheError::redis(server, &format!("ACL SETUSER {user} off"), e))?;
            // `off` stops new logins; connections already made stay
            // until closed.
            let _: i64 = redis::cmd("CLIENT")
                .arg("KILL")
                .arg("USER")
                .arg(user)
                .query_async(conn)
                .await
                .map_err(|e| CacheError::redis(server, &format!("CLIENT KILL USER {user}"), e))?;
            save(server, conn, acl_file).await
        }
        Removal::Delete { user, .. } => {
            if let Some(user) = user {
                // Also closes the user's connections.
                let _: i64 = redis::cmd("ACL")
                    .arg("DELUSER")
                    .arg(user)
                    .query_async(conn)
                    .await
                    .map_err(|e| CacheError::redis(server, &format!("ACL DELUSER {user}"), e))?;
            }
            // Saved even when the user was already gone: an earlier
            // attempt may have removed it and failed to save.
            save(server, conn, acl_file).await
        }
    }
}

/// Goes on removing the keys matching `pattern` from `sweep`, for about
/// `budget` (see [`remove`]).
pub async fn sweep(
    server: &str,
    conn: &mut MultiplexedConnection,
    pattern: &str,
    sweep: Sweep,
    budget: Duration,
) -> Result<Sweep, CacheError> {
    unlink_matching(server, conn, pattern, sweep, budget).await
}

/// Unlinks the keys matching `pattern`, a `SCAN` batch at a time from
/// `sweep`, until a whole pass has found none or `budget` is spent.
async fn unlink_matching(
    server: &str,
    conn: &mut MultiplexedConnection,
    pattern: &str,
    mut sweep: Sweep,
    budget: Duration,
) -> Result<Sweep, CacheError> {
    let started = tokio::time::Instant::now();
    loop {
        let (next, keys): (u64, Vec<Vec<u8>>) = redis::cmd("SCAN")
            .arg(sweep.cursor)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(BATCH)
            .query_async(conn)
            .await
            .map_err(|e| CacheError::redis(server, "SCAN", e))?;
        if !keys.is_empty() {
            sweep.pass_found_keys = true;
            let removed: u64 = redis::cmd("UNLINK")
                .arg(&keys)
                .query_async(conn)
                .await
                .map_err(|e| CacheError::redis(server, "UNLINK", e))?;
            sweep.keys_removed += removed;
        }
        sweep.cursor = next;
        if sweep.cursor == 0 {
            if !sweep.pass_found_keys {
                sweep.done = true;
                return Ok(sweep);
            }
            // Keys written while the pass ran may have been missed: one
            // more pass proves the key space empty.
            sweep.pass_found_keys = false;
        }
        if started.elapsed() >= budget {
            return Ok(sweep);
        }
    }
}
