//! The cache part of running with no cluster (`tenantdb plan`, `apply`,
//! `status` and `delete` on tenants with `spec.cache`): per CacheServer of
//! the manifests, its admin login (the Secret among the manifests, or
//! `--cache-admin-url` for every one) and one look at its users, shared by
//! all its tenants; per tenant, the operator's pipeline — the pure plan
//! ([`crate::cache::plan`]), the key-prefix check against the tenants
//! already on the server, `ACL SETUSER`/`ACL SAVE`, the removal — and the
//! tenant's own login check.
//!
//! A server's tenants take turns on its one admin connection, so the
//! look, the check and the change of one tenant are never interleaved
//! with another's (as under the operator's per-server lock).
//!
//! I/O: Redis only.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use redis::IntoConnectionInfo;
use redis::aio::MultiplexedConnection;

use crate::admin_access::{AdminCredentials, Password};
use crate::cache::key_prefix::{Holder, held_before, overlap_error};
use crate::cache::{self, Address, CacheError, CacheStep, DesiredCache, Removal, Snapshot, acl, apply, plan};
use crate::connection_secret::CacheKeys;
use crate::manifest::{ManifestError, ManifestSet, Origin};
use crate::reconcile::{CacheIntent, StoredPassword};

/// How tenantdb reaches one CacheServer.
pub struct CacheHandle {
    pub address: Address,
    admin: AdminCredentials,
    /// Where its CacheServer document is.
    pub origin: Origin,
    /// Its `capacity.maxTenants`.
    max_tenants: Option<usize>,
    /// Why the admin login failed, when [`reach`] found it so.
    pub unreachable: Option<String>,
    /// The admin connection and what it last saw, once looked at.
    look: tokio::sync::Mutex<Option<Look>>,
}

struct Look {
    conn: MultiplexedConnection,
    snapshot: Snapshot,
}

/// Why `--cache-admin-url` cannot be used. The URL itself is never
/// repeated: it holds a password.
#[derive(Debug, thiserror::Error)]
#[error("--cache-admin-url is not a valid redis://user:password@host:port URL")]
pub struct CacheAdminUrlError;

/// The CacheServers of `set`, each with its admin login: `admin_url`'s for
/// every one (its host and port too), or its Secret among the manifests.
/// A server whose Secret is unusable is a problem, and has no handle.
pub fn handles(
    set: &ManifestSet,
    admin_url: Option<&str>,
) -> Result<(BTreeMap<String, CacheHandle>, Vec<ManifestError>), CacheAdminUrlError> {
    let overridden = admin_url
        .map(|url| {
            let info = url.into_connection_info().map_err(|_| CacheAdminUrlError)?;
            let (host, port) = match info.addr().clone() {
                redis::ConnectionAddr::Tcp(host, port) | redis::ConnectionAddr::TcpTls { host, port, .. } => {
                    (host, port)
                }
                _ => return Err(CacheAdminUrlError),
            };
            let settings = info.redis_settings();
            let credentials = AdminCredentials {
                username: settings.username().unwrap_or("default").to_owned(),
                password: Password::new(settings.password().unwrap_or_default().to_owned()),
            };
            Ok((host, port, credentials))
        })
        .transpose()?;
    let mut handles = BTreeMap::new();
    let mut problems = Vec::new();
    for located in &set.caches {
        let server = &located.object;
        let mut address = Address::of(server);
        // The CA of a TLS server, from its Secret among the manifests (a
        // missing one is a reference problem, reported).
        if let Some(tls) = address.tls.as_mut()
            && let Some(reference) = server.spec.tls.as_ref().and_then(|t| t.ca_secret_ref.as_ref())
        {
            let Ok(pem) = set.secret_key(reference) else {
                continue;
            };
            tls.ca_pem = Some(pem);
        }
        let admin = match &overridden {
            Some((host, port, credentials)) => {
                address.host.clone_from(host);
                address.port = *port;
                credentials.clone()
            }
            None => {
                let Some(secret) = set.secret(&server.spec.admin_secret_ref) else {
                    continue; // reported by reference_errors
                };
                match AdminCredentials::from_secret(secret) {
                    Ok(credentials) => credentials,
                    Err(error) => {
                        problems.push(ManifestError {
                            origin: located.origin.clone(),
                            field: "spec.adminSecretRef".into(),
                            reason: error.to_string(),
                        });
                        continue;
                    }
                }
            }
        };
        handles.insert(
            address.server.clone(),
            CacheHandle {
                address,
                admin,
                origin: located.origin.clone(),
                max_tenants: server
                    .spec
                    .capacity
                    .as_ref()
                    .and_then(|c| c.max_tenants)
                    .and_then(|m| usize::try_from(m).ok()),
                unreachable: None,
                look: tokio::sync::Mutex::new(None),
            },
        );
    }
    Ok((handles, problems))
}

/// Logs in to every CacheServer once, before anything runs, and looks at
/// it (`ACL LIST` and how it renders the command profiles): a server that
/// cannot be reached is one problem, naming the field at fault.
pub async fn reach(handles: &mut BTreeMap<String, CacheHandle>) -> Vec<ManifestError> {
    let tries = handles.iter().map(|(name, handle)| async move {
        let looked = async {
            let mut conn = cache::connect::connect(
                &handle.address,
                &handle.admin.username,
                handle.admin.password.expose(),
            )
            .await?;
            let snapshot = cache::observe::observe(&handle.address.server, &mut conn).await?;
            Ok::<_, CacheError>(Look { conn, snapshot })
        };
        (name.clone(), looked.await)
    });
    let mut problems = Vec::new();
    for (name, looked) in futures::future::join_all(tries).await {
        let handle = handles.get_mut(&name).expect("tried above");
        match looked {
            Ok(look) => *handle.look.get_mut() = Some(look),
            Err(error) => {
                problems.push(ManifestError {
                    origin: handle.origin.clone(),
                    field: if error.is_rejected() {
                        "spec.adminSecretRef"
                    } else {
                        "spec.host"
                    }
                    .into(),
                    reason: format!("CacheServer {name}: cannot log in as the admin user: {error}"),
                });
                handle.unreachable = Some(error.to_string());
            }
        }
    }
    problems
}

/// A tenant's cache: where, and what it comes to.
pub struct CacheOutcome {
    pub server: String,
    pub user: String,
    pub prefix: String,
    /// The one change the tenant's user needs, if any; in
    /// [`Mode::Apply`](crate::reconcile::Mode) it was made.
    pub step: Option<CacheStep>,
    /// The password the user has (or gets): `None` when untracked.
    pub password: Option<Password>,
    /// A new password is set (none was saved, or the user is new).
    pub password_is_new: bool,
    /// Whether the server keeps its users in an ACL file.
    pub acl_file: bool,
    address: Address,
}

impl CacheOutcome {
    /// The Secret's cache keys, when the password is known.
    pub fn keys(&self) -> Option<CacheKeys> {
        let password = self.password.clone()?;
        Some(CacheKeys {
            url: cache::redis_url(&self.address, &self.user, password.expose()),
            key_prefix: self.prefix.clone(),
            password,
        })
    }
}

/// The Secret's cache keys for `intent` on `handle`'s server with
/// `password` (a saved one, kept when the user could not be set).
pub fn keys(handle: &CacheHandle, intent: &CacheIntent, password: Password) -> CacheKeys {
    CacheKeys {
        url: cache::redis_url(&handle.address, &intent.user, password.expose()),
        key_prefix: intent.prefix.as_str().to_owned(),
        password,
    }
}

/// Why a tenant's cache cannot be provisioned: a refusal names its field.
#[derive(Debug, thiserror::Error)]
pub enum CacheRefusal {
    #[error("{field}: {reason}")]
    Invalid { field: String, reason: String },
    #[error("CacheServer {server} holds {tenants} tenants, its capacity.maxTenants")]
    Full { server: String, tenants: usize },
    #[error("{0}")]
    Unavailable(#[from] CacheError),
}

/// Plans (and with `apply`, makes) `intent` true for `owner`
/// (`namespace/name`) on `handle`'s server; `stored` is the password the
/// Secret file holds (`REDIS_PASSWORD`). Refused, with nothing sent, when
/// the prefix overlaps a tenant's already on the server or the server is
/// full. Untracked (no secrets directory), an existing user keeps its
/// password.
pub async fn provision(
    handle: &CacheHandle,
    owner: &str,
    intent: &CacheIntent,
    stored: StoredPassword<'_>,
    apply: bool,
) -> Result<CacheOutcome, CacheRefusal> {
    let mut guard = handle.look.lock().await;
    let Some(look) = guard.as_mut() else {
        return Err(CacheError::Unsupported {
            server: handle.address.server.clone(),
            reason: handle.unreachable.clone().unwrap_or_else(|| "not reached".into()),
        }
        .into());
    };
    let users = &look.snapshot.users;
    let existing = users.get(&intent.user);
    let (password, password_hash, password_is_new) = match (stored, existing) {
        (StoredPassword::Found(password) | StoredPassword::Rejected(password), _) => (
            Some(password.clone()),
            acl::password_hash(password.expose()),
            false,
        ),
        (StoredPassword::Untracked, Some(rules)) if let Some(hash) = acl::password_hash_in(rules) => {
            (None, hash.to_owned(), false)
        }
        _ => {
            let password = Password::new(crate::password::generate());
            let hash = acl::password_hash(password.expose());
            (Some(password), hash, true)
        }
    };
    let desired = DesiredCache {
        user: intent.user.clone(),
        prefix: intent.prefix.clone(),
        commands: intent.commands,
        password_hash,
    };
    let mine = Holder {
        owner,
        prefix: &desired.prefix,
        provisioned: existing.is_some(),
    };
    if let Some(holder) = held_before(&mine, look.snapshot.prefixes.overlapping(&desired.prefix)) {
        let error = overlap_error(&desired.prefix, &holder);
        return Err(CacheRefusal::Invalid {
            field: error.field,
            reason: error.reason,
        });
    }
    let on_server = look.snapshot.prefixes.len();
    if existing.is_none() && handle.max_tenants.is_some_and(|max| on_server >= max) {
        return Err(CacheRefusal::Full {
            server: handle.address.server.clone(),
            tenants: on_server,
        });
    }
    let template = &look.snapshot.templates[&desired.commands];
    let step = plan::plan(&desired, users, template);
    if apply && let Some(step) = &step {
        apply::apply(
            &handle.address.server,
            &mut look.conn,
            step,
            look.snapshot.acl_file,
        )
        .await?;
        // What the server shows now, for the tenants after this one.
        let expected = template.expected(&desired.prefix, &desired.password_hash);
        look.snapshot.set_user(&desired.user, expected);
    }
    Ok(CacheOutcome {
        server: handle.address.server.clone(),
        user: desired.user,
        prefix: desired.prefix.as_str().to_owned(),
        step,
        password,
        password_is_new,
        acl_file: look.snapshot.acl_file,
        address: handle.address.clone(),
    })
}

/// What deleting a tenant's cache did (or, dry, would do).
pub struct Removed {
    pub removal: Removal,
    /// Keys unlinked (`Delete`, applied).
    pub keys_removed: u64,
}

/// Carries out (with `apply`) or plans the removal of `intent`'s user:
/// turned off with its connections closed (`Retain`), or removed with
/// every key under its prefix (`Delete`: `SCAN MATCH` + `UNLINK` in
/// batches, on a connection of its own, until a whole pass finds none).
pub async fn remove(
    handle: &CacheHandle,
    intent: &CacheIntent,
    delete: bool,
    apply: bool,
) -> Result<Removed, CacheError> {
    let mut guard = handle.look.lock().await;
    let Some(look) = guard.as_mut() else {
        return Err(CacheError::Unsupported {
            server: handle.address.server.clone(),
            reason: handle.unreachable.clone().unwrap_or_else(|| "not reached".into()),
        });
    };
    let removal = plan::plan_removal(&intent.user, &intent.prefix, delete, &look.snapshot.users);
    if !apply {
        return Ok(Removed {
            removal,
            keys_removed: 0,
        });
    }
    let server = &handle.address.server;
    apply::remove_user(server, &mut look.conn, &removal, look.snapshot.acl_file).await?;
    if let Removal::Delete { .. } = &removal {
        look.snapshot.remove_user(&intent.user);
    }
    drop(guard);
    let Removal::Delete { pattern, .. } = &removal else {
        return Ok(Removed {
            removal,
            keys_removed: 0,
        });
    };
    let mut conn = cache::connect::connect(
        &handle.address,
        &handle.admin.username,
        handle.admin.password.expose(),
    )
    .await?;
    let mut sweep = apply::Sweep::default();
    while !sweep.done {
        sweep = apply::sweep(server, &mut conn, pattern, sweep, Duration::from_secs(10)).await?;
    }
    Ok(Removed {
        keys_removed: sweep.keys_removed,
        removal,
    })
}

/// The tenant's own login (`AUTH` and `PING` as its user with the Secret
/// file's password): its latency, or why it failed.
pub async fn login(handle: &CacheHandle, user: &str, password: &Password) -> Result<Duration, CacheError> {
    let started = Instant::now();
    cache::login_check(&handle.address, user, password.expose()).await?;
    Ok(started.elapsed())
}
