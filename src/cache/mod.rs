//! A tenant's cache access in Redis, as a pipeline like the database's:
//! `observe` (one `ACL LIST` per server, with how the server renders each
//! command profile) → `plan` (pure: the exact rule set against what the
//! server shows) → `apply` (`ACL SETUSER`, `ACL SAVE`, removal). Rule text
//! is built only in `acl`, from validated [`KeyPrefix`]es; `connect` opens
//! connections, each with deadlines.
//!
//! A tenant's Redis user may touch only keys and channels under its prefix,
//! with the commands of its profile (`acl::Commands`); its password is
//! stored in Redis as a SHA-256 hash only. See docs/cache.md.

pub mod acl;
pub mod apply;
pub mod connect;
pub mod error;
pub mod key_prefix;
pub mod observe;
pub mod plan;

use redis::aio::MultiplexedConnection;

pub use acl::Commands;
pub use connect::{Address, Tls};
pub use error::CacheError;
pub use key_prefix::KeyPrefix;
pub use observe::Snapshot;
pub use plan::{CacheStep, DesiredCache, Removal};

/// Observes `address`'s server and makes `desired` true on it; returns the
/// step taken, if any. Drift of any kind (a user removed, altered, or lost
/// in a restart) is one `ACL SETUSER` with the same password hash.
pub async fn provision(
    address: &Address,
    admin: &mut MultiplexedConnection,
    desired: &DesiredCache,
) -> Result<Option<CacheStep>, CacheError> {
    let snapshot = observe::observe(&address.server, admin).await?;
    let template = &snapshot.templates[&desired.commands];
    let step = plan::plan(desired, &snapshot.users, template);
    if let Some(step) = &step {
        apply::apply(&address.server, admin, step, snapshot.acl_file).await?;
    }
    Ok(step)
}

/// The tenant's own check that its credentials work: log in as `user` and
/// `PING`.
pub async fn login_check(address: &Address, user: &str, password: &str) -> Result<(), CacheError> {
    let mut conn = connect::connect(address, user, password).await?;
    let _: String = redis::cmd("PING")
        .query_async(&mut conn)
        .await
        .map_err(|e| CacheError::redis(&address.server, &format!("PING as {user}"), e))?;
    Ok(())
}

/// The `REDIS_URL` of a tenant: `redis://<user>:<password>@<host>:<port>`
/// (`rediss://` with TLS). User names and generated passwords hold only
/// URL-safe characters.
pub fn redis_url(address: &Address, user: &str, password: &str) -> String {
    format!(
        "{}://{user}:{password}@{}:{}",
        address.scheme(),
        address.host,
        address.port
    )
}
