//! `tenantdb run`: the operator. Two kube-runtime controllers — one for
//! `TenantDatabase` (driving the shared reconcile core, the connection
//! Secret and status), one for `DatabaseServer` status — run only while
//! this replica holds the leader Lease. `/healthz`, `/readyz` and
//! `/metrics` are served throughout.

mod bulkhead;
mod cache_book;
mod cache_monitor;
mod cache_server;
mod catalog;
mod context;
mod error;
mod fence;
mod http;
mod metrics;
mod monitor;
mod placement;
mod pools;
mod server;
mod tenant;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::{FutureExt, StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::api::Api;
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::{self, ObjectRef, Store, reflector};
use kube::runtime::{Controller, WatchStreamExt, controller, predicates, watcher};
use kube::{Client, ResourceExt};

pub use context::{FIELD_MANAGER, FINALIZER};
pub use error::{Category, OperatorError};

use crate::api::{CacheServer, DatabaseServer, TenantDatabase};
use crate::reconcile::index_jobs::IndexJobs;

/// The caches the controllers share, so a quiet resync reads nothing from
/// the API server.
#[derive(Clone)]
pub struct Stores {
    pub servers: Store<DatabaseServer>,
    /// One cache per watched namespace (one for all namespaces by default).
    pub tenants: Vec<Store<TenantDatabase>>,
    /// The connection Secrets tenantdb manages, likewise.
    pub secrets: Vec<Store<Secret>>,
    /// Every Namespace, by metadata: a server's `allowedNamespaces` is
    /// matched against these labels.
    pub namespaces: Store<PartialObjectMeta<Namespace>>,
    /// Every CacheServer. Not part of [`Stores::ready`]: an install whose
    /// CRDs predate CacheServer must not hold up its tenants.
    pub cache_servers: Store<CacheServer>,
}

impl Stores {
    /// Every cached tenant.
    pub fn all_tenants(&self) -> Vec<Arc<TenantDatabase>> {
        self.tenants.iter().flat_map(Store::state).collect()
    }

    /// The cached connection Secret `namespace/name`, if any.
    pub fn secret(&self, namespace: &str, name: &str) -> Option<Arc<Secret>> {
        let key = ObjectRef::new(name).within(namespace);
        self.secrets.iter().find_map(|store| store.get(&key))
    }

    /// The cached labels of Namespace `name` (none if it is not cached).
    pub fn namespace_labels(&self, name: &str) -> std::collections::BTreeMap<String, String> {
        self.namespaces
            .get(&ObjectRef::new(name))
            .map(|ns| ns.labels().clone())
            .unwrap_or_default()
    }

    /// Whether every cache a reconcile reads has its first full list.
    fn ready(&self) -> bool {
        // Polled, not awaited: the controllers wait on the same readiness
        // signal, which wakes only one waiter.
        let ready = |store_ready: Option<Result<(), _>>| matches!(store_ready, Some(Ok(())));
        ready(self.servers.wait_until_ready().now_or_never())
            && ready(self.namespaces.wait_until_ready().now_or_never())
            && self
                .tenants
                .iter()
                .all(|store| ready(store.wait_until_ready().now_or_never()))
    }
}

/// Leader election settings.
#[derive(Clone, Debug)]
pub struct LeaderElection {
    pub namespace: String,
    pub lease_name: String,
    pub identity: String,
    /// How long a lease is valid without renewal; a new leader takes over
    /// within about this long after the old one dies.
    pub lease_duration: Duration,
}

/// How `tenantdb run` runs.
#[derive(Clone, Debug)]
pub struct Config {
    /// Watch `TenantDatabase`s in these namespaces only (empty: all namespaces).
    pub namespaces: Vec<String>,
    /// Tenants reconciled at once.
    pub concurrency: u16,
    /// How often a converged object is looked at again.
    pub resync: Duration,
    /// First retry delay of a failed index build (doubled per failure).
    pub index_retry: Duration,
    /// Where `/healthz`, `/readyz` and `/metrics` are served.
    pub http_addr: SocketAddr,
    /// `None` runs the controllers unconditionally (a single replica).
    pub leader_election: Option<LeaderElection>,
}

/// Runs the operator until `shutdown` completes.
pub async fn run(
    client: Client,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), String> {
    let identity = config
        .leader_election
        .as_ref()
        .map_or_else(|| "tenantdb".to_owned(), |l| l.identity.clone());
    let ctx = Arc::new(context::Context::new(
        client.clone(),
        identity.clone(),
        metrics::Metrics::default(),
        config.resync,
        IndexJobs::new(config.index_retry),
        bulkhead::ServerSlots::new(config.concurrency),
    ));
    let ready = Arc::new(AtomicBool::new(false));
    let http = http::serve(config.http_addr, ctx.clone(), ready.clone()).await?;
    let mut shutdown = Box::pin(shutdown);

    match &config.leader_election {
        None => {
            ready.store(true, Ordering::Relaxed);
            ctx.metrics.leader.set(1);
            controllers(ctx.clone(), &config, shutdown).await;
        }
        Some(election) => {
            let manager = kube_lease_manager::LeaseManagerBuilder::new(client.clone(), &election.lease_name)
                .with_namespace(&election.namespace)
                .with_identity(&election.identity)
                .with_duration(election.lease_duration.as_secs().max(2))
                // Renewed halfway through: the fence ([`fence`]) stops a
                // leader a quarter before expiry unless it saw a renewal.
                .with_grace(election.lease_duration.as_secs().div_ceil(2).max(1))
                // A field manager per replica, so the API server's apply
                // conflicts stop two replicas from taking the lease at once.
                .with_field_manager(format!("{FIELD_MANAGER}-lease-{}", election.identity))
                .build()
                .await
                .map_err(|e| format!("leader election: {e}"))?;
            let (mut leading, lease_task) = manager.watch().await;
            ready.store(true, Ordering::Relaxed);
            'outer: loop {
                while !*leading.borrow_and_update() {
                    tokio::select! {
                        changed = leading.changed() => if changed.is_err() { break 'outer },
                        _ = &mut shutdown => break 'outer,
                    }
                }
                // The lease library only logs a failed renewal: the lease is
                // read back here, and reconciling starts only once it shows
                // this replica as holder with a renewal still valid.
                let Some(mut valid_until) = fence::confirm(&client, election).await else {
                    tokio::select! {
                        _ = tokio::time::sleep(fence::check_every(election)) => continue 'outer,
                        _ = &mut shutdown => break 'outer,
                    }
                };
                tracing::info!(identity = %election.identity, "became the leader");
                ctx.metrics.leader.set(1);
                let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
                let lost = async {
                    loop {
                        tokio::select! {
                            changed = leading.changed() => {
                                if changed.is_err() || !*leading.borrow() {
                                    return;
                                }
                            }
                            _ = tokio::time::sleep(fence::check_every(election)) => {
                                if let Some(until) = fence::confirm(&client, election).await {
                                    valid_until = until;
                                }
                                // Fenced: stop before the lease can expire and
                                // another replica take over.
                                if tokio::time::Instant::now() >= valid_until {
                                    tracing::warn!(
                                        identity = %election.identity,
                                        "could not confirm the leader lease before its renew deadline; fencing"
                                    );
                                    return;
                                }
                            }
                        }
                    }
                };
                let running = controllers(ctx.clone(), &config, async {
                    let _ = stopped.await;
                });
                tokio::pin!(running);
                // Leadership lost or fenced: the controllers are dropped, not
                // drained — a reconcile in flight must not write after the
                // lease may have passed to another replica. Every step is
                // safe to cut short: placement is recorded before any SQL,
                // and a tenant's SQL runs under its advisory lock, released
                // with the connection.
                let shutting_down = tokio::select! {
                    _ = &mut running => false,
                    _ = lost => false,
                    _ = &mut shutdown => { let _ = stop.send(()); running.await; true }
                };
                ctx.metrics.leader.set(0);
                if shutting_down {
                    break;
                }
                tracing::warn!(identity = %election.identity, "lost the leader lease; stopped reconciling");
            }
            drop(leading);
            if let Ok(Ok(manager)) = lease_task.await {
                let _ = manager.release().await;
            }
        }
    }
    ctx.pools.close_all().await;
    http.abort();
    Ok(())
}

/// The controllers — one for DatabaseServers, one for TenantDatabases per
/// watched namespace — until `stop` completes.
async fn controllers(
    ctx: Arc<context::Context>,
    config: &Config,
    stop: impl Future<Output = ()> + Send + 'static,
) {
    let client = ctx.client.clone();
    let servers_api: Api<DatabaseServer> = Api::all(client.clone());
    let scopes: Vec<Option<String>> = if config.namespaces.is_empty() {
        vec![None]
    } else {
        config.namespaces.iter().cloned().map(Some).collect()
    };
    let scoped = |namespace: &Option<String>| match namespace {
        Some(ns) => (
            Api::namespaced(client.clone(), ns),
            Api::namespaced(client.clone(), ns),
        ),
        None => (Api::all(client.clone()), Api::all(client.clone())),
    };

    let (server_store, server_writer) = reflector::store::<DatabaseServer>();
    let server_changes = reflector(server_writer, watched(servers_api.clone())).applied_objects();
    let mut server_controller = Controller::for_stream(server_changes, server_store)
        .trigger_backoff(EachWatchBacksOffAlone)
        .with_config(controller::Config::default().debounce(Duration::from_secs(1)));
    let mut tenant_controllers = Vec::new();
    // Namespaces are cached by metadata; one whose labels change re-queues
    // its tenants (a server's allowedNamespaces may admit them now).
    let (namespace_store, namespace_writer) = reflector::store::<PartialObjectMeta<Namespace>>();
    let namespace_changes = reflector(
        namespace_writer,
        watched(Api::<PartialObjectMeta<Namespace>>::all(client.clone()))
            .modify(|ns| ns.metadata.managed_fields = None),
    )
    .applied_objects()
    .predicate_filter(predicates::labels, Default::default());
    let (relabelled, _) = tokio::sync::broadcast::channel::<String>(1024);
    let (cache_server_store, cache_server_writer) = reflector::store::<CacheServer>();
    let mut stores = Stores {
        servers: server_controller.store(),
        tenants: Vec::new(),
        secrets: Vec::new(),
        namespaces: namespace_store,
        cache_servers: cache_server_store.clone(),
    };
    for scope in &scopes {
        let (tenants_api, secrets_api): (Api<TenantDatabase>, Api<Secret>) = scoped(scope);
        // A tenant is reconciled when its spec, finalizers or deletion
        // change — not on its own status writes, which would double the
        // work (the resync, owned Secrets, index jobs and the health
        // monitor re-queue it when needed).
        let (tenant_store, tenant_writer) = reflector::store::<TenantDatabase>();
        // The cache drops what the operator never reads and a real API
        // server sends with every object: managedFields, and kubectl's
        // copy of the whole object in last-applied-configuration.
        let tenant_changes = reflector(
            tenant_writer,
            watched(tenants_api.clone()).modify(|tenant| {
                tenant.metadata.managed_fields = None;
                if let Some(annotations) = tenant.metadata.annotations.as_mut() {
                    annotations.remove("kubectl.kubernetes.io/last-applied-configuration");
                }
            }),
        )
        .applied_objects()
        .predicate_filter(reconcile_worthy, Default::default());
        let controller = Controller::for_stream(tenant_changes, tenant_store)
            .trigger_backoff(EachWatchBacksOffAlone)
            .with_config(controller::Config::default().concurrency(config.concurrency));
        // Connection Secrets are cached without their managedFields too
        // (about a kilobyte each from a real API server, never read).
        let (secret_store, secret_writer) = reflector::store::<Secret>();
        let managed_secrets = reflector(
            secret_writer,
            watcher(
                secrets_api,
                watcher::Config::default().labels("app.kubernetes.io/managed-by=tenantdb"),
            )
            .default_backoff()
            .modify(|secret| secret.metadata.managed_fields = None),
        )
        .touched_objects();
        stores.tenants.push(controller.store());
        stores.secrets.push(secret_store);
        // A tenant's status naming its server re-queues that server (counts).
        server_controller =
            server_controller.watches_stream(watched(tenants_api).touched_objects(), |tenant| {
                tenant
                    .status
                    .and_then(|s| s.server)
                    .map(|server| ObjectRef::<DatabaseServer>::new(&server))
            });
        tenant_controllers.push((controller, managed_secrets));
    }

    let (stop_all, stopped) = tokio::sync::watch::channel(false);
    let mut runs = Vec::new();
    for (scope, (controller, managed_secrets)) in scopes.iter().zip(tenant_controllers) {
        // A server's spec or its admin Secret changing re-queues its tenants
        // (those in this controller's cache).
        let tenants_of_server = {
            let tenants = controller.store();
            move |server: &str| -> Vec<ObjectRef<TenantDatabase>> {
                tenants
                    .state()
                    .iter()
                    .filter(|t| {
                        t.status
                            .as_ref()
                            .and_then(|s| s.server.as_deref())
                            .or(t.spec.server.as_deref())
                            == Some(server)
                    })
                    .map(|t| ObjectRef::from_obj(t.as_ref()))
                    .collect()
            }
        };
        // A server's spec or labels changing re-queues its tenants; its
        // status (written as tenants come and go) does not — at fleet scale
        // that re-queued every tenant of a server each time one was placed.
        // Any change re-queues the tenants not placed yet, since room or a
        // new matching server may have appeared.
        let by_server = {
            let tenants_of_server = tenants_of_server.clone();
            let tenants = controller.store();
            let seen = std::sync::Mutex::new(std::collections::HashMap::<String, u64>::new());
            move |server: DatabaseServer| -> Vec<ObjectRef<TenantDatabase>> {
                let name = server.name_any();
                let shape = server_shape(&server);
                let changed = seen
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .insert(name.clone(), shape)
                    != Some(shape);
                let mut refs: Vec<ObjectRef<TenantDatabase>> = tenants
                    .state()
                    .iter()
                    .filter(|t| t.status.as_ref().and_then(|s| s.server.as_deref()).is_none())
                    .map(|t| ObjectRef::from_obj(t.as_ref()))
                    .collect();
                if changed {
                    refs.extend(tenants_of_server(&name));
                }
                refs
            }
        };
        let in_namespace = {
            let tenants = controller.store();
            move |namespace: String| {
                let refs: Vec<ObjectRef<TenantDatabase>> = tenants
                    .state()
                    .iter()
                    .filter(|t| t.namespace().as_deref() == Some(namespace.as_str()))
                    .map(|t| ObjectRef::from_obj(t.as_ref()))
                    .collect();
                futures::stream::iter(refs)
            }
        };
        let by_secret = {
            let servers = stores.servers.clone();
            let ctx = ctx.clone();
            move |secret: PartialObjectMeta<Secret>| -> Vec<ObjectRef<TenantDatabase>> {
                let (ns, name) = (secret.namespace().unwrap_or_default(), secret.name_any());
                ctx.forget_secret(&ns, &name);
                servers
                    .state()
                    .iter()
                    .filter(|s| {
                        s.spec.admin_secret_ref.namespace == ns && s.spec.admin_secret_ref.name == name
                    })
                    .flat_map(|s| tenants_of_server(&s.name_any()))
                    .collect()
            }
        };
        // Admin Secrets are watched by metadata only: their contents are read
        // when needed, and the operator keeps no copy of every Secret.
        let admin_secrets: Api<PartialObjectMeta<Secret>> = Api::all(client.clone());
        // An index job ending re-queues its tenant, so Building turns into
        // Ready (or the failure) without waiting for a resync; so does a
        // health change worth writing.
        let requeued = futures::stream::select(
            receive(ctx.index_jobs.finished()),
            receive(ctx.health.tenant_changes()),
        )
        .filter_map({
            let scope = scope.clone();
            move |owner: String| {
                let target = owner.split_once('/').and_then(|(ns, name)| {
                    scope
                        .as_ref()
                        .is_none_or(|s| s == ns)
                        .then(|| ObjectRef::<TenantDatabase>::new(name).within(ns))
                });
                futures::future::ready(target)
            }
        });
        let run = controller
            .owns_stream(managed_secrets)
            .reconcile_on(requeued)
            .reconcile_on(receive(relabelled.subscribe()).flat_map(in_namespace))
            .watches_stream(watched(servers_api.clone()).touched_objects(), by_server)
            .watches_stream(watched(admin_secrets).touched_objects(), by_secret)
            .graceful_shutdown_on(wait_for(stopped.clone()))
            .run(
                tenant::reconcile,
                tenant::error_policy,
                Arc::new((ctx.clone(), stores.clone())),
            )
            .for_each(|result| async move {
                if let Err(error) = result {
                    tracing::debug!(%error, "tenant controller");
                }
            });
        runs.push(run);
    }

    let namespace_run = namespace_changes
        .take_until(wait_for(stopped.clone()))
        .for_each(move |namespace| {
            match namespace {
                // No receiver (yet) is not an error: the first list re-queues nothing.
                Ok(namespace) => drop(relabelled.send(namespace.name_any())),
                Err(error) => tracing::debug!(%error, "namespace watch"),
            }
            futures::future::ready(())
        });
    // Aborted when the controllers end or are dropped (fenced).
    let _monitor = AbortOnDrop(tokio::spawn(monitor::run(
        ctx.clone(),
        stores.clone(),
        stopped.clone(),
    )));
    let _cache_monitor = AbortOnDrop(tokio::spawn(cache_monitor::run(
        ctx.clone(),
        stores.clone(),
        stopped.clone(),
    )));
    let _syncing = AbortOnDrop(tokio::spawn({
        let (ctx, stores) = (ctx.clone(), stores.clone());
        async move {
            while !stores.ready() {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            ctx.synced.store(true, Ordering::Relaxed);
        }
    }));
    let _unsynced = Unsynced(ctx.clone());
    let cache_server_run = {
        let (store, writer) = (cache_server_store, cache_server_writer);
        let forget = {
            let ctx = ctx.clone();
            move |event: &watcher::Event<CacheServer>| {
                if let watcher::Event::Delete(server) = event {
                    ctx.metrics.forget_cache_server(&server.name_any());
                }
            }
        };
        let changes = reflector(
            writer,
            watched(Api::<CacheServer>::all(client.clone())).inspect_ok(forget),
        )
        .applied_objects();
        Controller::for_stream(changes, store)
            .trigger_backoff(EachWatchBacksOffAlone)
            .with_config(controller::Config::default().debounce(Duration::from_secs(1)))
            .graceful_shutdown_on(wait_for(stopped.clone()))
            .run(
                cache_server::reconcile,
                cache_server::error_policy,
                Arc::new((ctx.clone(), stores.clone())),
            )
            .for_each(|result| async move {
                if let Err(error) = result {
                    tracing::debug!(%error, "cache server controller");
                }
            })
    };
    let server_run = server_controller
        .reconcile_on(
            receive(ctx.health.server_changes()).map(|name| ObjectRef::<DatabaseServer>::new(&name)),
        )
        .graceful_shutdown_on(wait_for(stopped))
        .run(
            server::reconcile,
            server::error_policy,
            Arc::new((ctx.clone(), stores)),
        )
        .for_each(|result| async move {
            if let Err(error) = result {
                tracing::debug!(%error, "server controller");
            }
        });

    tokio::spawn(async move {
        stop.await;
        let _ = stop_all.send(true);
    });
    futures::join!(
        futures::future::join_all(runs),
        server_run,
        cache_server_run,
        namespace_run
    );
}

/// Marks the caches unsynced when the controllers end or are dropped.
struct Unsynced(Arc<context::Context>);

impl Drop for Unsynced {
    fn drop(&mut self) {
        self.0.synced.store(false, Ordering::Relaxed);
    }
}

/// A spawned task that ends with its owner.
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A watch of everything `api` lists, which backs off on its own when it
/// fails (kube-runtime's default: 0.8 s doubling to 30 s, with jitter).
fn watched<K>(api: Api<K>) -> impl futures::Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + 'static,
{
    watcher(api, watcher::Config::default()).default_backoff()
}

/// What of a server its placed tenants depend on: its spec (generation),
/// labels and deletion.
fn server_shape(server: &DatabaseServer) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    server.metadata.generation.hash(&mut hasher);
    server.metadata.labels.hash(&mut hasher);
    server.metadata.deletion_timestamp.is_some().hash(&mut hasher);
    hasher.finish()
}

/// The controllers' own backoff over all their watches: none. Each watch
/// backs off on its own ([`watched`]). kube-runtime's default here is one
/// backoff shared by every watch of a controller, so when the API server
/// restarts, each watch's reconnect error (and each `410 Gone` that only
/// asks for a relist) doubles one shared delay — seen at 18 s and growing,
/// during which no watch was polled: the caches went stale, finalizer
/// patches failed their precondition, and new tenants went unseen.
struct EachWatchBacksOffAlone;

impl Iterator for EachWatchBacksOffAlone {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        Some(Duration::ZERO)
    }
}

impl kube::runtime::utils::Backoff for EachWatchBacksOffAlone {
    fn reset(&mut self) {}
}

/// What a tenant's reconcile depends on in the object itself: the spec (its
/// generation), finalizers, deletion and the annotation that lets a
/// blocked deletion go.
fn reconcile_worthy(tenant: &TenantDatabase) -> Option<u64> {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    tenant.metadata.generation.hash(&mut hasher);
    tenant.metadata.finalizers.hash(&mut hasher);
    tenant.metadata.deletion_timestamp.is_some().hash(&mut hasher);
    tenant.annotations().get(tenant::LEAVE_DATA).hash(&mut hasher);
    Some(hasher.finish())
}

/// The messages of a broadcast channel as a stream (a lagging receiver
/// skips what it missed; the resync covers it).
fn receive<T: Clone + Send + 'static>(
    receiver: tokio::sync::broadcast::Receiver<T>,
) -> impl futures::Stream<Item = T> + Send + 'static {
    futures::stream::unfold(receiver, |mut receiver| async move {
        loop {
            match receiver.recv().await {
                Ok(item) => return Some((item, receiver)),
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
            }
        }
    })
}

/// Completes once `flag` turns true (or its sender is gone).
async fn wait_for(mut flag: tokio::sync::watch::Receiver<bool>) {
    while !*flag.borrow_and_update() {
        if flag.changed().await.is_err() {
            return;
        }
    }
}
