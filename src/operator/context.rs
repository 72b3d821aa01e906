//! What every reconcile shares: the client, admin pools, Events,
//! metrics, settings, and per-object failure counts for backoff.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::Api;
use kube::api::PostParams;
use kube::{Resource, ResourceExt};
use rand::RngExt;

use super::metrics::Metrics;
use super::monitor::HealthBook;
use super::pools::AdminPools;
use crate::admin_access::{AdminCredentials, CredentialsError};
use crate::api::common::{SecretKeyReference, SecretReference};
use crate::api::{CacheServer, DatabaseServer};
use crate::cache::Address;
use crate::reconcile::index_jobs::IndexJobs;

/// The one field manager every tenantdb write uses.
pub const FIELD_MANAGER: &str = "tenantdb";

/// The finalizer on every TenantDatabase.
pub const FINALIZER: &str = "tenantdb.io/cleanup";

pub struct Context {
    pub client: kube::Client,
    pub pools: AdminPools,
    /// This replica's name, as the reporting instance of its Events.
    pub identity: String,
    pub metrics: Metrics,
    /// How often a converged object is looked at again.
    pub resync: Duration,
    /// Background index builds and drops, throttled per server.
    pub index_jobs: Arc<IndexJobs>,
    /// What the health monitor knows of tenants and servers.
    pub health: HealthBook,
    /// Whether the running controllers' caches have synced.
    pub synced: std::sync::atomic::AtomicBool,
    /// Placements written and not yet cached, under the placement lock.
    pub placements: super::placement::Placements,
    /// Tenant reconciles working on each server, bounded.
    pub slots: super::bulkhead::ServerSlots,
    /// Each server's catalog snapshot of the current resync period.
    pub catalog: super::catalog::CatalogSnapshots,
    /// When each tenant's indexes were last seen all Ready.
    pub index_looks: super::tenant::recheck::IndexLooks,
    /// Each Redis server's admin connection and look of this resync period.
    pub cache_book: super::cache_book::CacheBook,
    /// Cache placements written and not yet cached (tenant key → server),
    /// under the cache placement lock.
    pub cache_placements: tokio::sync::Mutex<HashMap<String, String>>,
    /// What the cache health monitor found of each tenant's cache.
    pub cache_health: super::cache_monitor::CacheHealthBook,
    failures: Mutex<HashMap<String, u32>>,
    /// Admin credentials by Secret `(namespace, name)`, dropped whenever the
    /// Secret changes (the controllers watch Secret metadata).
    admin_credentials: Mutex<HashMap<(String, String), AdminCredentials>>,
    /// CA certificates by Secret `(namespace, name, key)`, dropped likewise.
    certificates: Mutex<HashMap<(String, String, String), Vec<u8>>>,
}

impl Context {
    pub fn new(
        client: kube::Client,
        identity: String,
        metrics: Metrics,
        resync: Duration,
        index_jobs: Arc<IndexJobs>,
        slots: super::bulkhead::ServerSlots,
    ) -> Self {
        Self {
            client,
            pools: AdminPools::default(),
            identity,
            metrics,
            resync,
            index_jobs,
            health: HealthBook::default(),
            synced: std::sync::atomic::AtomicBool::new(false),
            placements: Default::default(),
            slots,
            catalog: super::catalog::CatalogSnapshots::new(resync),
            index_looks: Default::default(),
            cache_book: super::cache_book::CacheBook::new(resync),
            cache_placements: Default::default(),
            cache_health: Default::default(),
            failures: Mutex::new(HashMap::new()),
            admin_credentials: Mutex::new(HashMap::new()),
            certificates: Mutex::new(HashMap::new()),
        }
    }

    /// Where CacheServer `server` listens, with the CA certificate of its
    /// `spec.tls.caSecretRef` (from the cache, else read from the API
    /// server). The inner error says why the CA cannot be had.
    pub async fn cache_address(&self, server: &CacheServer) -> Result<Result<Address, String>, kube::Error> {
        let mut address = Address::of(server);
        let (Some(tls), Some(reference)) = (
            address.tls.as_mut(),
            server.spec.tls.as_ref().and_then(|t| t.ca_secret_ref.as_ref()),
        ) else {
            return Ok(Ok(address));
        };
        match self.certificate(reference, "spec.tls.caSecretRef").await? {
            Ok(pem) => tls.ca_pem = Some(pem),
            Err(why) => return Ok(Err(why)),
        }
        Ok(Ok(address))
    }

    /// The CA certificate of DatabaseServer `server` (`spec.caSecretRef`,
    /// for `sslMode: verify-full`), when it names one; the inner error
    /// says why it cannot be had.
    pub async fn server_ca(
        &self,
        server: &DatabaseServer,
    ) -> Result<Result<Option<Vec<u8>>, String>, kube::Error> {
        let Some(reference) = &server.spec.ca_secret_ref else {
            return Ok(Ok(None));
        };
        Ok(self.certificate(reference, "spec.caSecretRef").await?.map(Some))
    }

    /// The certificate in Secret key `reference` (from the cache, else read
    /// from the API server); the inner error names `field`.
    async fn certificate(
        &self,
        reference: &SecretKeyReference,
        field: &str,
    ) -> Result<Result<Vec<u8>, String>, kube::Error> {
        let key = (
            reference.namespace.clone(),
            reference.name.clone(),
            reference.key.clone(),
        );
        let cached = self
            .certificates
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
            .cloned();
        if let Some(pem) = cached {
            return Ok(Ok(pem));
        }
        let secret = Api::<Secret>::namespaced(self.client.clone(), &reference.namespace)
            .get_opt(&reference.name)
            .await?;
        let Some(pem) = secret.and_then(|s| crate::connection_secret::key_of(&s, &reference.key)) else {
            return Ok(Err(format!(
                "{field}: Secret {}/{} with key {:?} not found",
                reference.namespace, reference.name, reference.key
            )));
        };
        self.certificates
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key, pem.clone());
        Ok(Ok(pem))
    }

    /// The credentials in admin Secret `reference`: from the cache, else read
    /// from the API server. `Ok(None)` when the Secret does not exist.
    pub async fn admin_credentials(
        &self,
        reference: &SecretReference,
    ) -> Result<Option<Result<AdminCredentials, CredentialsError>>, kube::Error> {
        let key = (reference.namespace.clone(), reference.name.clone());
        if let Some(cached) = self
            .admin_credentials
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
        {
            return Ok(Some(Ok(cached.clone())));
        }
        let Some(secret) = Api::<Secret>::namespaced(self.client.clone(), &reference.namespace)
            .get_opt(&reference.name)
            .await?
        else {
            return Ok(None);
        };
        let credentials = AdminCredentials::from_secret(&secret);
        if let Ok(credentials) = &credentials {
            self.admin_credentials
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(key, credentials.clone());
        }
        Ok(Some(credentials))
    }

    /// Drops the cached credentials and certificates of Secret `namespace/name`.
    pub fn forget_secret(&self, namespace: &str, name: &str) {
        self.admin_credentials
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&(namespace.to_owned(), name.to_owned()));
        self.certificates
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|(ns, n, _), _| (ns.as_str(), n.as_str()) != (namespace, name));
    }

    /// The resync interval with ±10% jitter, so a fleet of tenants does not
    /// come due at the same instant.
    pub fn resync_jittered(&self) -> Duration {
        jitter(self.resync)
    }

    /// Exponential backoff for the next retry of `key`: 1s, 2s, 4s … capped
    /// at 5 minutes, with jitter.
    pub fn backoff(&self, key: &str) -> Duration {
        let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        let count = failures.entry(key.to_owned()).or_insert(0);
        *count = (*count + 1).min(16);
        let seconds = 2u64.saturating_pow(*count - 1).min(300);
        jitter(Duration::from_secs(seconds))
    }

    pub fn succeeded(&self, key: &str) {
        self.failures
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(key);
    }

    /// Publishes an `events.k8s.io/v1` Event about `object`; a failure to
    /// publish is logged, never allowed to fail the reconcile.
    ///
    /// Written here rather than through kube-runtime's `Recorder`: tenantdb
    /// publishes only on transitions, so the Recorder's deduplication into
    /// series is never needed, while its cache keeps every Event for six
    /// minutes — measured at about 29 MiB after 10,000 tenants each got
    /// one (docs/benchmarks.md).
    pub async fn event<K: Resource<DynamicType = ()>>(
        &self,
        object: &K,
        warning: bool,
        reason: &str,
        note: String,
    ) {
        let regarding = object.object_ref(&());
        let now = k8s_openapi::jiff::Timestamp::now();
        let event = Event {
            metadata: ObjectMeta {
                name: Some(format!(
                    "{}.{:x}",
                    regarding.name.as_deref().unwrap_or("tenantdb"),
                    now.as_nanosecond()
                )),
                namespace: regarding.namespace.clone(),
                ..ObjectMeta::default()
            },
            event_time: Some(MicroTime(now)),
            action: Some("Reconcile".to_owned()),
            reason: Some(reason.to_owned()),
            note: Some(note.chars().take(1000).collect()),
            type_: Some(if warning { "Warning" } else { "Normal" }.to_owned()),
            reporting_controller: Some("tenantdb.io/operator".to_owned()),
            reporting_instance: Some(self.identity.clone()),
            regarding: Some(regarding.clone()),
            ..Event::default()
        };
        let namespace = regarding.namespace.as_deref().unwrap_or("default");
        if let Err(error) = Api::<Event>::namespaced(self.client.clone(), namespace)
            .create(&PostParams::default(), &event)
            .await
        {
            tracing::warn!(object = %object.name_any(), reason, %error, "could not publish an Event");
        }
    }
}

fn jitter(base: Duration) -> Duration {
    let factor: f64 = rand::rng().random_range(0.9..1.1);
    base.mul_f64(factor)
}
