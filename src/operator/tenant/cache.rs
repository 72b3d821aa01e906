//! Between gather and recheck, for a tenant with `spec.cache`: its
//! CacheServer (the one recorded in `status.cache.server`, else chosen and
//! recorded before anything is set on a server), its Redis user made to
//! match over the server's look of this resync period
//! ([`crate::operator::cache_book`]), and the keys it adds to the
//! connection Secret. Also the cache's removal, for a tenant deleted or
//! whose `spec.cache` was taken out.
//!
//! A tenant's key prefix is checked, under the server's lock, against
//! every tenant user the server holds (their key patterns, as `ACL LIST`
//! shows them) and every tenant the operator's cache records as holding a
//! prefix on the same `host:port` — tenants still being removed, or whose
//! user was lost, included — so two tenants are never given overlapping
//! key spaces. Both are indexed by prefix once per look: a tenant's check
//! costs a lookup per byte of its prefix, not a pass over the fleet.
//!
//! I/O: Redis (the look when due; `ACL SETUSER`/`ACL SAVE` only when the
//! plan says; removal), and one status patch recording a placement.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::reflector::ObjectRef;
use serde_json::json;

use super::{Failure, key};
use crate::admin_access::{AdminCredentials, Password};
use crate::api::cache_server::AclPersistence;
use crate::api::tenant_database::{CacheRemoval, CacheStatus};
use crate::api::{CacheServer, TenantDatabase};
use crate::cache::key_prefix::{Holder, PrefixIndex, held_before, overlap_error};
use crate::cache::{self, Address, CacheError, DesiredCache, KeyPrefix, Removal, acl, apply, plan};
use crate::connection_secret::{self, CacheKeys};
use crate::operator::context::Context;
use crate::operator::placement::selector_admits;
use crate::operator::{OperatorError, Stores};
use crate::reconcile::CacheIntent;

/// How long recording a placement may take.
const WRITE_TIMEOUT: Duration = Duration::from_secs(15);

/// How long one reconcile may spend removing a tenant's keys before it
/// records its progress and comes back.
const SWEEP_TIME: Duration = Duration::from_secs(10);

/// The tenant's cache, ready: the Secret's keys and the status to record.
pub struct CacheAccess {
    pub keys: CacheKeys,
    pub status: CacheStatus,
}

/// Places the tenant's cache if it is not placed, and makes its Redis user
/// match `intent`. The inner error is a failure to report.
pub async fn provision(
    tenant: &TenantDatabase,
    ctx: &Context,
    stores: &Stores,
    intent: &CacheIntent,
    secret: Option<&k8s_openapi::api::core::v1::Secret>,
) -> Result<Result<CacheAccess, Failure>, OperatorError> {
    let server = match locate(tenant, ctx, stores, intent).await? {
        Ok(server) => server,
        Err(failure) => return Ok(Err(failure)),
    };
    let server_name = server.name_any();
    let credentials = match admin(ctx, &server).await? {
        Ok(credentials) => credentials,
        Err(failure) => return Ok(Err(failure)),
    };
    let recorded = tenant.status.as_ref().and_then(|s| s.cache.as_ref());
    if let Some(recorded) = recorded.and_then(|c| c.key_prefix.as_deref())
        && recorded != intent.prefix.as_str()
    {
        return Ok(Err(invalid(format!(
            "{}: the tenant's keys are under {recorded:?}; changing the prefix of a provisioned cache is not supported",
            cache::key_prefix::FIELD
        ))));
    }
    let recorded_prefix = recorded.and_then(|c| c.key_prefix.clone());
    let password = match secret.and_then(connection_secret::redis_password_of) {
        Some(password) => password,
        // A cache provisioned before whose cached Secret shows no password
        // may be a copy older than the Secret's last write: read it fresh
        // rather than set a new password the application does not have.
        None if recorded_prefix.is_some() => {
            let namespace = tenant.namespace().unwrap_or_default();
            let name = tenant
                .status
                .as_ref()
                .and_then(|s| s.secret_name.clone())
                .unwrap_or_else(|| format!("{}-db", tenant.name_any()));
            let secrets: Api<k8s_openapi::api::core::v1::Secret> =
                Api::namespaced(ctx.client.clone(), &namespace);
            let fresh = tokio::time::timeout(WRITE_TIMEOUT, secrets.get_opt(&name))
                .await
                .map_err(|_| OperatorError::Timeout {
                    action: "reading the connection Secret".to_owned(),
                    after: WRITE_TIMEOUT,
                })??;
            fresh
                .as_ref()
                .and_then(connection_secret::redis_password_of)
                .unwrap_or_else(|| Password::new(crate::password::generate()))
        }
        None => Password::new(crate::password::generate()),
    };

    let desired = DesiredCache {
        user: intent.user.clone(),
        prefix: intent.prefix.clone(),
        commands: intent.commands,
        password_hash: acl::password_hash(password.expose()),
    };
    let owner = key(tenant);
    let address = match located(ctx, &server).await? {
        Ok(address) => address,
        Err(failure) => return Ok(Err(failure)),
    };
    let max_tenants = server
        .spec
        .capacity
        .as_ref()
        .and_then(|c| c.max_tenants)
        .and_then(|m| usize::try_from(m).ok());
    let looked = ctx
        .cache_book
        .with(&address, &credentials, async |look| {
            let recorded_here = look.recorded.get_or_insert_with(|| recorded_on(stores, &address));
            let users = &look.snapshot.users;
            // Recorded before its user was first set: a user lost in a
            // restart, or removed by hand, does not make its tenant lose
            // its prefix to another.
            let mine = Holder {
                owner: &owner,
                prefix: &desired.prefix,
                provisioned: users.contains_key(&desired.user) || recorded_prefix.is_some(),
            };
            let holders = look
                .snapshot
                .prefixes
                .overlapping(&desired.prefix)
                .chain(recorded_here.overlapping(&desired.prefix));
            if let Some(holder) = held_before(&mine, holders) {
                return Ok(Err(invalid(overlap_error(&desired.prefix, &holder).to_string())));
            }
            let on_server = look.snapshot.prefixes.len();
            if !mine.provisioned && max_tenants.is_some_and(|max| on_server >= max) {
                return Ok(Err(Failure {
                    reason: "CacheServerFull",
                    message: format!(
                        "CacheServer {server_name} holds {on_server} tenants, its capacity.maxTenants"
                    ),
                    permanent: true,
                }));
            }
            let template = &look.snapshot.templates[&desired.commands];
            let step = plan::plan(&desired, users, template);
            // The user and prefix are recorded before the user is first
            // set (and after the checks above), so a deletion, a spec
            // change or another tenant's overlap check never misses a user
            // that exists.
            if step.is_some()
                && recorded_prefix.is_none()
                && let Err(error) = record_claim(tenant, ctx, &server_name, intent).await
            {
                return Ok(Err(Failure {
                    reason: "CacheUnavailable",
                    message: format!("recording the cache's key prefix: {error}"),
                    permanent: false,
                }));
            }
            if let Some(step) = step {
                apply::apply(&address.server, &mut look.conn, &step, look.snapshot.acl_file).await?;
                let cache::CacheStep::SetUser { why, .. } = &step;
                tracing::info!(tenant = %owner, server = %address.server, "cache user {}", why.as_str());
                let expected = template.expected(&desired.prefix, &desired.password_hash);
                look.snapshot.set_user(&desired.user, expected);
            }
            Ok(Ok(look.snapshot.acl_file))
        })
        .await;
    let acl_file = match looked {
        Ok(Ok(acl_file)) => acl_file,
        Ok(Err(failure)) => return Ok(Err(failure)),
        Err(error) => return Ok(Err(unavailable(&error))),
    };
    Ok(Ok(CacheAccess {
        keys: CacheKeys {
            url: cache::redis_url(&address, &desired.user, password.expose()),
            key_prefix: desired.prefix.as_str().to_owned(),
            password,
        },
        status: CacheStatus {
            server: server_name,
            user: Some(desired.user),
            key_prefix: Some(desired.prefix.as_str().to_owned()),
            acl_persistence: Some(if acl_file {
                AclPersistence::AclFile
            } else {
                AclPersistence::Memory
            }),
            ..CacheStatus::default()
        },
    }))
}

/// What removing a tenant's cache came to: the progress to record —
/// `complete` when nothing is left to do (`Retain`: the user is off;
/// `Delete`: the user and every key under the prefix are gone).
pub type Removed = CacheRemoval;

/// Removes the tenant's cache as `delete` (`deletionPolicy: Delete`) says:
/// the user turned off and its connections closed (`Retain`), or removed
/// with every key under its prefix (`Delete`: `SCAN MATCH` and `UNLINK` in
/// batches for at most [`SWEEP_TIME`] a call, going on from the progress
/// recorded in `status.cache.removal`, so an operator restart resumes; only
/// a whole pass that finds no key ends it). The inner error is why it
/// cannot proceed.
pub async fn remove(
    tenant: &TenantDatabase,
    ctx: &Context,
    stores: &Stores,
    recorded: &CacheStatus,
    delete: bool,
) -> Result<Result<Removed, Failure>, OperatorError> {
    let namespace = tenant.namespace().unwrap_or_default();
    let Some(prefix) = recorded
        .key_prefix
        .as_deref()
        .and_then(|p| KeyPrefix::parse(&namespace, p).ok())
    else {
        // Placed, never provisioned: there is no user and there are no keys.
        return Ok(Ok(Removed {
            complete: true,
            ..Removed::default()
        }));
    };
    let server = match found(stores, &recorded.server) {
        Ok(server) => server,
        Err(failure) => return Ok(Err(failure)),
    };
    let credentials = match admin(ctx, &server).await? {
        Ok(credentials) => credentials,
        Err(failure) => return Ok(Err(failure)),
    };
    let user = acl::user_name(&namespace, &tenant.name_any());
    let address = match located(ctx, &server).await? {
        Ok(address) => address,
        Err(failure) => return Ok(Err(failure)),
    };
    // The user's part under the server's lock (it changes what the
    // server's look shows); the keys after, on a connection of their own,
    // so a tenant with millions of keys never holds the lock.
    let removal = ctx
        .cache_book
        .with(&address, &credentials, async |look| {
            let run_id = look.snapshot.run_id.clone();
            let removal = plan::plan_removal(&user, &prefix, delete, &look.snapshot.users);
            apply::remove_user(&address.server, &mut look.conn, &removal, look.snapshot.acl_file).await?;
            match &removal {
                Removal::Disable { .. } => {
                    if let Some(rest) = look.snapshot.users.get(&user).and_then(|r| r.strip_prefix("on ")) {
                        let off = format!("off {rest}");
                        look.snapshot.set_user(&user, off);
                    }
                }
                Removal::Delete { .. } => {
                    look.snapshot.remove_user(&user);
                }
                Removal::Nothing => {}
            }
            Ok((removal, run_id))
        })
        .await;
    let (removal, run_id) = match removal {
        Ok(removed) => removed,
        Err(error) => return Ok(Err(unavailable(&error))),
    };
    let from = resumed(recorded.removal.as_ref(), &run_id);
    let Removal::Delete { pattern, .. } = &removal else {
        return Ok(Ok(CacheRemoval {
            complete: true,
            ..CacheRemoval::default()
        }));
    };
    let swept = async {
        let mut conn =
            cache::connect::connect(&address, &credentials.username, credentials.password.expose()).await?;
        apply::sweep(&address.server, &mut conn, pattern, from, SWEEP_TIME).await
    };
    match swept.await {
        Ok(sweep) => Ok(Ok(CacheRemoval {
            cursor: sweep.cursor.to_string(),
            pass_found_keys: sweep.pass_found_keys,
            keys_removed: i64::try_from(sweep.keys_removed).unwrap_or(i64::MAX),
            run_id: Some(run_id),
            complete: sweep.done,
        })),
        Err(error) => Ok(Err(unavailable(&error))),
    }
}

/// Where a removal goes on from: the recorded cursor and pass, when they
/// belong to the server's `run_id` now; after a restart (or with no
/// record) a new pass from cursor 0 — a cursor of the old process means
/// nothing to the new one, and only a whole pass of the server as it is
/// may prove the prefix empty. The count of keys removed carries on.
fn resumed(recorded: Option<&CacheRemoval>, run_id: &str) -> apply::Sweep {
    let Some(recorded) = recorded else {
        return apply::Sweep::default();
    };
    let keys_removed = u64::try_from(recorded.keys_removed).unwrap_or(0);
    if recorded.run_id.as_deref() != Some(run_id) {
        return apply::Sweep {
            keys_removed,
            ..apply::Sweep::default()
        };
    }
    apply::Sweep {
        cursor: recorded.cursor.parse().unwrap_or(0),
        pass_found_keys: recorded.pass_found_keys,
        keys_removed,
        done: false,
    }
}

/// Records `removed` in `status.cache.removal` (a merge patch of that
/// field alone), so the next pass — after an operator restart too — goes
/// on from there.
pub async fn record_removal(
    tenant: &TenantDatabase,
    ctx: &Context,
    removed: &Removed,
) -> Result<(), OperatorError> {
    let api: Api<TenantDatabase> =
        Api::namespaced(ctx.client.clone(), &tenant.namespace().unwrap_or_default());
    let patch = json!({"status": {"cache": {"removal": removed}}});
    tokio::time::timeout(
        WRITE_TIMEOUT,
        api.patch_status(&tenant.name_any(), &PatchParams::default(), &Patch::Merge(&patch)),
    )
    .await
    .map_err(|_| OperatorError::Timeout {
        action: "recording the cache's removal".to_owned(),
        after: WRITE_TIMEOUT,
    })??;
    Ok(())
}

/// Records the tenant's user and key prefix in `status.cache` (with its
/// server) before the user is first set.
async fn record_claim(
    tenant: &TenantDatabase,
    ctx: &Context,
    server: &str,
    intent: &CacheIntent,
) -> Result<(), OperatorError> {
    let api: Api<TenantDatabase> =
        Api::namespaced(ctx.client.clone(), &tenant.namespace().unwrap_or_default());
    let patch = json!({"status": {"cache": {
        "server": server, "user": intent.user, "keyPrefix": intent.prefix.as_str(),
    }}});
    tokio::time::timeout(
        WRITE_TIMEOUT,
        api.patch_status(&tenant.name_any(), &PatchParams::default(), &Patch::Merge(&patch)),
    )
    .await
    .map_err(|_| OperatorError::Timeout {
        action: "recording the cache's key prefix".to_owned(),
        after: WRITE_TIMEOUT,
    })??;
    Ok(())
}

/// The CacheServer the tenant's cache is on: the one recorded, else the
/// one placement chooses (`spec.cache.server`, else the Ready server with
/// the fewest tenants and room that admits the namespace), recorded in
/// `status.cache.server` before anything is set on it.
async fn locate(
    tenant: &TenantDatabase,
    ctx: &Context,
    stores: &Stores,
    intent: &CacheIntent,
) -> Result<Result<Arc<CacheServer>, Failure>, OperatorError> {
    let recorded = tenant
        .status
        .as_ref()
        .and_then(|s| s.cache.as_ref())
        .map(|c| c.server.clone());
    let key = key(tenant);
    // The placement lock first: a placement this process made that the
    // cache does not show yet counts as recorded.
    let mut pending = ctx.cache_placements.lock().await;
    if let Some(placed) = recorded.or_else(|| pending.get(&key).cloned()) {
        if let Some(wanted) = &intent.server
            && *wanted != placed
        {
            return Ok(Err(Failure {
                reason: "CacheServerChanged",
                message: format!(
                    "the tenant's cache is on CacheServer {placed}; moving it to {wanted} is not supported"
                ),
                permanent: true,
            }));
        }
        return Ok(found(stores, &placed));
    }
    let namespace = tenant.namespace().unwrap_or_default();
    let labels = stores.namespace_labels(&namespace);
    let candidates: Vec<Arc<CacheServer>> = match &intent.server {
        Some(name) => match found(stores, name) {
            Ok(server) => vec![server],
            Err(failure) => return Ok(Err(failure)),
        },
        None => stores
            .cache_servers
            .state()
            .into_iter()
            .filter(|s| {
                s.status.as_ref().is_some_and(|s| {
                    s.conditions
                        .iter()
                        .any(|c| c.type_ == "Ready" && c.status == "True")
                })
            })
            .collect(),
    };
    let admitted: Vec<Arc<CacheServer>> = candidates
        .into_iter()
        .filter(|s| selector_admits(s.spec.allowed_namespaces.as_ref(), &labels))
        .collect();
    let mut used: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    for other in stores.all_tenants() {
        let other_key = key_of(&other);
        let on = other
            .status
            .as_ref()
            .and_then(|s| s.cache.as_ref())
            .map(|c| c.server.clone());
        match on {
            Some(server) => {
                pending.remove(&other_key);
                *used.entry(server).or_default() += 1;
            }
            None => {
                if let Some(server) = pending.get(&other_key) {
                    *used.entry(server.clone()).or_default() += 1;
                }
            }
        }
    }
    let room = |s: &CacheServer| {
        let max = s
            .spec
            .capacity
            .as_ref()
            .and_then(|c| c.max_tenants)
            .map(i64::from);
        let used = used.get(&s.name_any()).copied().unwrap_or(0) as i64;
        max.map_or(i64::MAX - used, |m| m - used)
    };
    let Some(server) = admitted.into_iter().filter(|s| room(s) > 0).max_by(|a, b| {
        room(a)
            .cmp(&room(b))
            .then_with(|| b.name_any().cmp(&a.name_any()))
    }) else {
        let message = match &intent.server {
            Some(name) => format!(
                "CacheServer {name} does not admit namespace {namespace} (spec.allowedNamespaces) or has no room (capacity.maxTenants)"
            ),
            None => format!("no Ready CacheServer admits namespace {namespace} with room for another tenant"),
        };
        return Ok(Err(Failure {
            reason: "NoCacheServerAvailable",
            message,
            permanent: true,
        }));
    };
    let name = server.name_any();
    let patch = json!({"status": {"cache": {"server": name}}});
    let api: Api<TenantDatabase> = Api::namespaced(ctx.client.clone(), &namespace);
    tokio::time::timeout(
        WRITE_TIMEOUT,
        api.patch_status(&tenant.name_any(), &PatchParams::default(), &Patch::Merge(&patch)),
    )
    .await
    .map_err(|_| OperatorError::Timeout {
        action: format!("recording the cache's placement on {name}"),
        after: WRITE_TIMEOUT,
    })??;
    pending.insert(key, name);
    Ok(Ok(server))
}

/// The cached CacheServer `name`, or the (transient) failure to find it.
fn found(stores: &Stores, name: &str) -> Result<Arc<CacheServer>, Failure> {
    stores
        .cache_servers
        .get(&ObjectRef::new(name))
        .ok_or_else(|| Failure {
            reason: "CacheServerNotFound",
            message: format!("CacheServer {name} not found"),
            permanent: false,
        })
}

/// The admin credentials of `server`, or the failure to report.
async fn admin(
    ctx: &Context,
    server: &CacheServer,
) -> Result<Result<AdminCredentials, Failure>, OperatorError> {
    let reference = &server.spec.admin_secret_ref;
    Ok(match ctx.admin_credentials(reference).await? {
        Some(Ok(credentials)) => Ok(credentials),
        Some(Err(error)) => Err(Failure {
            reason: "CacheAdminSecretInvalid",
            message: error.to_string(),
            permanent: false,
        }),
        None => Err(Failure {
            reason: "CacheAdminSecretMissing",
            message: format!(
                "admin Secret {}/{} of CacheServer {} not found",
                reference.namespace,
                reference.name,
                server.name_any()
            ),
            permanent: false,
        }),
    })
}

/// Where `server` listens, its TLS CA included; the failure when the CA's
/// Secret cannot be read.
async fn located(ctx: &Context, server: &CacheServer) -> Result<Result<Address, Failure>, OperatorError> {
    Ok(ctx.cache_address(server).await?.map_err(|message| Failure {
        reason: "CacheCaSecretMissing",
        message,
        permanent: false,
    }))
}

/// The key prefixes the operator's cache records as held on the Redis at
/// `address` (through any CacheServer naming it): tenants provisioned
/// there, those whose user was lost (a restart, a hand `ACL DELUSER`) and
/// those being removed included. Built once per server per look (one pass
/// over the tenants, each server's address worked out once); a prefix
/// recorded later is on the server too, set under the same lock.
fn recorded_on(stores: &Stores, address: &Address) -> PrefixIndex {
    let mut addresses: HashMap<String, bool> = HashMap::new();
    let mut index = PrefixIndex::default();
    for tenant in stores.all_tenants() {
        let Some(cache) = tenant.status.as_ref().and_then(|s| s.cache.as_ref()) else {
            continue;
        };
        let Some(recorded) = cache.key_prefix.as_deref() else {
            continue;
        };
        let here = *addresses.entry(cache.server.clone()).or_insert_with(|| {
            stores
                .cache_servers
                .get(&ObjectRef::new(&cache.server))
                .is_some_and(|server| {
                    let theirs = Address::of(&server);
                    (theirs.host.as_str(), theirs.port) == (address.host.as_str(), address.port)
                })
        });
        let namespace = tenant.namespace().unwrap_or_default();
        if let (true, Ok(prefix)) = (here, KeyPrefix::parse(&namespace, recorded)) {
            index.insert(prefix, key_of(&tenant));
        }
    }
    index
}

fn key_of(tenant: &TenantDatabase) -> String {
    format!("{}/{}", tenant.namespace().unwrap_or_default(), tenant.name_any())
}

fn invalid(message: String) -> Failure {
    Failure {
        reason: "InvalidSpec",
        message,
        permanent: true,
    }
}

fn unavailable(error: &CacheError) -> Failure {
    Failure {
        reason: if error.is_rejected() {
            "CacheAdminLoginFailed"
        } else {
            "CacheUnavailable"
        },
        message: error.to_string(),
        permanent: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recorded(cursor: &str, run_id: Option<&str>) -> CacheRemoval {
        CacheRemoval {
            keys_removed: 1_500,
            cursor: cursor.to_owned(),
            pass_found_keys: false,
            run_id: run_id.map(str::to_owned),
            complete: false,
        }
    }

    #[test]
    fn a_removal_goes_on_from_its_cursor_only_on_the_same_server_process() {
        let same = resumed(Some(&recorded("4096", Some("abc"))), "abc");
        assert_eq!((same.cursor, same.keys_removed), (4096, 1_500));
        // Restarted (or recorded before run_id was): a new whole pass,
        // whose finding no key is what ends the removal.
        for stale in [Some("old"), None] {
            let fresh = resumed(Some(&recorded("4096", stale)), "abc");
            assert_eq!(
                (
                    fresh.cursor,
                    fresh.pass_found_keys,
                    fresh.keys_removed,
                    fresh.done
                ),
                (0, false, 1_500, false)
            );
        }
        assert_eq!(resumed(None, "abc"), apply::Sweep::default());
    }
}
