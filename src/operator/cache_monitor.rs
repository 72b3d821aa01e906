//! The cache health monitor: for each CacheServer, every
//! `spec.healthCheck.interval` (default 30 s), one `PING` as the admin user
//! over a connection kept between samples, and real logins as its tenants
//! (a fresh connection as the tenant's user with its Secret's password,
//! `AUTH` and `PING`, timed) within the server's login budget (default 1 a
//! second), each tenant at most every `loginInterval` (default 5 minutes),
//! tenants never checked or failing first. Exact numbers go to metrics; a
//! tenant whose cache health changed in a way worth writing (reachable or
//! not, the message, the latency's bucket) is re-queued, and its reconcile
//! writes `status.cache`.
//!
//! I/O: Redis only (the admin's `PING`, the tenants' logins); no writes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;
use redis::aio::MultiplexedConnection;

use super::Stores;
use super::context::Context;
use super::metrics::ServerLabel;
use super::monitor::{LoginBudget, key, labels};
use crate::api::CacheServer;
use crate::api::tenant_database::CacheStatus;
use crate::cache;
use crate::cache::Address;
use crate::connection_secret;
use crate::health::{self, HealthPolicy};

/// Logins run at once per server.
const LOGIN_CONCURRENCY: usize = 4;

/// What status shows of a tenant's cache health.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CacheHealth {
    pub reachable: bool,
    pub latency_ms: Option<i64>,
    pub message: Option<String>,
    pub checked_at: Option<Time>,
}

impl CacheHealth {
    /// Whether `self` is news over `published`: reachability or the
    /// message changed, or the latency moved to another bucket (half again
    /// past its boundary, as for the database's login).
    fn worth_publishing(&self, published: Option<&CacheHealth>) -> bool {
        match published {
            None => true,
            Some(old) => {
                old.reachable != self.reachable
                    || old.message != self.message
                    || health::latency_moved(old.latency_ms, self.latency_ms)
            }
        }
    }

    /// Puts `self` into a tenant's `status.cache`.
    pub fn apply(&self, status: &mut CacheStatus) {
        status.reachable = Some(self.reachable);
        status.latency_ms = self.latency_ms;
        status.message = self.message.clone();
        status.checked_at = self.checked_at.clone();
    }
}

struct Record {
    server: String,
    next_login: Instant,
    /// The latest login's latency, smoothed.
    latency_ms: Option<i64>,
    /// What status was told last.
    published: Option<CacheHealth>,
}

/// Every tenant's cache health, by tenant key.
#[derive(Default)]
pub struct CacheHealthBook(Mutex<HashMap<String, Record>>);

impl CacheHealthBook {
    /// What the tenant's status should show, once something was found.
    pub fn published(&self, key: &str) -> Option<CacheHealth> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(key)
            .and_then(|r| r.published.clone())
    }
}

/// A CacheServer's health policy from its `spec.healthCheck` (the fields
/// the database's policy shares: interval, login interval and budget).
pub fn policy(server: &CacheServer) -> HealthPolicy {
    match &server.spec.health_check {
        None => HealthPolicy::default(),
        Some(spec) => HealthPolicy::logins(&spec.interval, &spec.login_interval, spec.logins_per_second),
    }
}

/// Watches every CacheServer in the cache until `stop` turns true.
pub async fn run(ctx: Arc<Context>, stores: Stores, mut stop: tokio::sync::watch::Receiver<bool>) {
    let mut servers: HashMap<String, ServerWatch> = HashMap::new();
    while !*stop.borrow() {
        let now = Instant::now();
        let present = stores.cache_servers.state();
        servers.retain(|name, _| present.iter().any(|s| s.name_any() == *name));
        for server in present {
            let watch = servers.entry(server.name_any()).or_insert_with(|| ServerWatch {
                next: now,
                admin: None,
                budget: LoginBudget::new(now),
            });
            if watch.next <= now {
                let policy = policy(&server);
                watch.next = now + policy.interval;
                sample(&ctx, &stores, &server, &policy, watch).await;
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
            _ = stop.changed() => {}
        }
    }
}

struct ServerWatch {
    next: Instant,
    admin: Option<MultiplexedConnection>,
    budget: LoginBudget,
}

/// One sample of `server`: the admin's `PING`, then the tenant logins due
/// within the budget.
async fn sample(
    ctx: &Context,
    stores: &Stores,
    server: &CacheServer,
    policy: &HealthPolicy,
    watch: &mut ServerWatch,
) {
    let name = server.name_any();
    // A CA that cannot be read is the CacheServer controller's to report.
    let Ok(Ok(address)) = ctx.cache_address(server).await else {
        return;
    };
    let now = Instant::now();
    let checked_at = Time(k8s_openapi::jiff::Timestamp::now());
    // The tenants provisioned here (their user set), not being deleted.
    let tenants: Vec<_> = stores
        .all_tenants()
        .into_iter()
        .filter(|t| {
            t.metadata.deletion_timestamp.is_none()
                && t.status
                    .as_ref()
                    .and_then(|s| s.cache.as_ref())
                    .is_some_and(|c| c.server == name && c.key_prefix.is_some())
        })
        .collect();

    let answered = ping(ctx, server, &address, &mut watch.admin).await;
    ctx.metrics
        .cache_server_up
        .get_or_create(&ServerLabel { server: name.clone() })
        .set(i64::from(answered.is_ok()));

    // Who is due, most urgent first, within the budget.
    let mut logins = Vec::new();
    {
        let mut book = ctx.cache_health.0.lock().unwrap_or_else(|p| p.into_inner());
        let mut due = Vec::new();
        for (position, tenant) in tenants.iter().enumerate() {
            let record = book.entry(key(tenant)).or_insert_with(|| Record {
                server: name.clone(),
                next_login: now,
                latency_ms: None,
                published: None,
            });
            record.server = name.clone();
            if record.next_login <= now {
                let urgent = record.published.as_ref().is_none_or(|p| !p.reachable);
                due.push((!urgent, record.next_login, position));
            }
        }
        if answered.is_ok() {
            due.sort_by_key(|(not_urgent, next, _)| (*not_urgent, *next));
            let granted = watch.budget.take(policy, now, due.len());
            for (_, _, position) in due.into_iter().take(granted) {
                let tenant = &tenants[position];
                if let Some(record) = book.get_mut(&key(tenant)) {
                    record.next_login = now + policy.login_interval;
                }
                logins.push(tenant.clone());
            }
        }
    }
    let attempts: Vec<_> = logins
        .iter()
        .map(|tenant| {
            let status = tenant.status.as_ref().and_then(|s| s.cache.as_ref());
            let user = status.and_then(|c| c.user.clone()).unwrap_or_default();
            let namespace = tenant.namespace().unwrap_or_default();
            let password = tenant
                .status
                .as_ref()
                .and_then(|s| s.secret_name.as_deref())
                .and_then(|secret| stores.secret(&namespace, secret))
                .and_then(|secret| connection_secret::redis_password_of(&secret));
            (key(tenant), user, password)
        })
        .collect();
    let address = &address;
    let results: HashMap<String, Result<i64, String>> = futures::stream::iter(attempts)
        .map(|(key, user, password)| async move {
            let Some(password) = password else {
                return (
                    key,
                    Err("the connection Secret holds no REDIS_PASSWORD".to_owned()),
                );
            };
            let started = Instant::now();
            let result = cache::login_check(address, &user, password.expose())
                .await
                .map(|()| i64::try_from(started.elapsed().as_millis()).unwrap_or(i64::MAX))
                .map_err(|e| e.to_string());
            (key, result)
        })
        .buffer_unordered(LOGIN_CONCURRENCY)
        .collect()
        .await;

    // Each tenant's health, its metrics, and whether status should change.
    let mut changed = Vec::new();
    {
        let mut book = ctx.cache_health.0.lock().unwrap_or_else(|p| p.into_inner());
        let present: std::collections::HashSet<String> = tenants.iter().map(|t| key(t)).collect();
        book.retain(|key, record| {
            let keep = record.server != name || present.contains(key);
            if !keep {
                forget_tenant(ctx, key);
            }
            keep
        });
        for tenant in &tenants {
            let key = key(tenant);
            let Some(record) = book.get_mut(&key) else {
                continue;
            };
            let health = match (&answered, results.get(&key)) {
                (Err(error), _) => CacheHealth {
                    reachable: false,
                    latency_ms: record.latency_ms,
                    message: Some(format!("cache server {name} does not answer: {error}")),
                    checked_at: Some(checked_at.clone()),
                },
                (Ok(()), Some(Ok(latency))) => {
                    record.latency_ms = Some(health::smoothed_latency(record.latency_ms, *latency));
                    set_tenant_metrics(ctx, &key, true, Some(*latency));
                    CacheHealth {
                        reachable: true,
                        latency_ms: record.latency_ms,
                        message: None,
                        checked_at: Some(checked_at.clone()),
                    }
                }
                (Ok(()), Some(Err(message))) => {
                    set_tenant_metrics(ctx, &key, false, None);
                    CacheHealth {
                        reachable: false,
                        latency_ms: record.latency_ms,
                        message: Some(format!("login as the tenant's user failed: {message}")),
                        checked_at: Some(checked_at.clone()),
                    }
                }
                // Not logged in to this time (not due, or over budget).
                (Ok(()), None) => continue,
            };
            if health.worth_publishing(record.published.as_ref()) {
                if health.reachable != record.published.as_ref().is_none_or(|p| p.reachable) {
                    match &health.message {
                        Some(message) => tracing::warn!(tenant = %key, %message, "cache unreachable"),
                        None => tracing::info!(tenant = %key, "cache reachable"),
                    }
                }
                record.published = Some(health);
                changed.push(key);
            }
        }
    }
    for key in changed {
        let _ = ctx.health.tenant_changed.send(key);
    }
}

/// `PING` as the admin user over the kept connection (logging in again
/// when there is none or it failed).
async fn ping(
    ctx: &Context,
    server: &CacheServer,
    address: &Address,
    admin: &mut Option<MultiplexedConnection>,
) -> Result<(), String> {
    if admin.is_none() {
        let credentials = match ctx.admin_credentials(&server.spec.admin_secret_ref).await {
            Ok(Some(Ok(credentials))) => credentials,
            Ok(Some(Err(error))) => return Err(error.to_string()),
            Ok(None) => return Err("its admin Secret is missing".to_owned()),
            Err(error) => return Err(error.to_string()),
        };
        let conn = cache::connect::connect(address, &credentials.username, credentials.password.expose())
            .await
            .map_err(|e| e.to_string())?;
        *admin = Some(conn);
    }
    let conn = admin.as_mut().expect("just connected");
    let pinged: Result<String, _> = redis::cmd("PING").query_async(conn).await;
    if let Err(error) = pinged {
        *admin = None;
        return Err(cache::CacheError::redis(&address.server, "PING", error).to_string());
    }
    Ok(())
}

fn set_tenant_metrics(ctx: &Context, key: &str, up: bool, latency_ms: Option<i64>) {
    let labels = labels(key);
    ctx.metrics
        .tenant_cache_up
        .get_or_create(&labels)
        .set(i64::from(up));
    if let Some(ms) = latency_ms {
        ctx.metrics
            .tenant_cache_latency
            .get_or_create(&labels)
            .set(ms as f64 / 1000.0);
    }
}

fn forget_tenant(ctx: &Context, key: &str) {
    let labels = labels(key);
    ctx.metrics.tenant_cache_up.remove(&labels);
    ctx.metrics.tenant_cache_latency.remove(&labels);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn health(reachable: bool, latency_ms: i64, message: Option<&str>) -> CacheHealth {
        CacheHealth {
            reachable,
            latency_ms: Some(latency_ms),
            message: message.map(str::to_owned),
            checked_at: None,
        }
    }

    #[test]
    fn cache_health_is_news_only_when_a_person_would_act_on_it() {
        let up = health(true, 2, None);
        assert!(up.worth_publishing(None), "the first finding");
        // Jitter inside the bucket is not news.
        assert!(!health(true, 180, None).worth_publishing(Some(&up)));
        // Another bucket, a failure, or another reason is.
        assert!(health(true, 400, None).worth_publishing(Some(&up)));
        let down = health(false, 2, Some("WRONGPASS"));
        assert!(down.worth_publishing(Some(&up)));
        assert!(!health(false, 3, Some("WRONGPASS")).worth_publishing(Some(&down)));
        assert!(health(false, 2, Some("refused")).worth_publishing(Some(&down)));
        assert!(up.worth_publishing(Some(&down)));
    }
}
