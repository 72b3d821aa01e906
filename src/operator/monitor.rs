//! The health monitor: one task per `DatabaseServer`, each interval (the
//! server's `spec.healthCheck.interval`, jittered) running one batched
//! query for all the server's tenants, plus tenant logins and database sizes
//! on their slower, staggered rotations. Exact numbers go to metrics at
//! once; a tenant whose status would change in a way worth writing (see
//! [`crate::health::worth_writing`]) is re-queued, and its reconcile — the
//! only writer of tenant status — writes it. A server whose reachability
//! changed re-queues the server's own controller.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;
use kube::runtime::reflector::ObjectRef;
use rand::RngExt;
use tokio::sync::broadcast;

use super::Stores;
use super::context::Context;
use super::metrics::{PHASES, PhaseLabel, ServerLabel, TenantLabels, TenantStateLabels};
use crate::admin_access::{self, AdminCredentials};
use crate::api::TenantDatabase;
use crate::connection_secret;
use crate::health::{self, HealthPolicy, TenantHealth};

/// Logins run at once per server.
const LOGIN_CONCURRENCY: usize = 4;

/// Sizes of new tenants (none in their status yet) read per sample on top
/// of the share: a burst of new tenants shows its sizes within minutes.
const NEW_SIZES_PER_SAMPLE: usize = 100;

/// How often the size of a database nobody wrote to is read again all the
/// same (catching what the write counters cannot see, such as a statistics
/// reset hiding writes).
const QUIET_SIZE_REFRESH: Duration = Duration::from_secs(24 * 3600);

struct TenantRecord {
    health: TenantHealth,
    server: String,
    next_login: Instant,
    /// When the last login was started, if there was one.
    last_login: Option<Instant>,
    /// The role and Secret version the last login used ([`identity`]).
    identity: Option<String>,
    next_size: Instant,
    /// When this process last asked for the size, and the database's write
    /// count ([`health::DatabaseSample::writes`]) read with it.
    size_read: Option<(Instant, Option<i64>)>,
}

/// A tenant's login schedule as it was before a login was granted, put
/// back when the login could not be tried (the server did not answer).
struct LoginSchedule {
    next_login: Instant,
    last_login: Option<Instant>,
    identity: Option<String>,
}

impl LoginSchedule {
    fn of(record: &TenantRecord) -> Self {
        Self {
            next_login: record.next_login,
            last_login: record.last_login,
            identity: record.identity.clone(),
        }
    }

    fn restore(&self, record: &mut TenantRecord) {
        record.next_login = self.next_login;
        record.last_login = self.last_login;
        record.identity = self.identity.clone();
    }
}

/// Whether a database whose size is due by the size interval is worth
/// reading: never read by this process, written to since (its write count
/// moved), or read longer ago than [`QUIET_SIZE_REFRESH`]. Reading a size
/// walks the database's files (about 6 ms of the server's CPU each on the
/// fleet benchmark's file system); an idle tenant's size does not move.
fn size_wanted(size_read: Option<(Instant, Option<i64>)>, writes: Option<i64>, now: Instant) -> bool {
    match size_read {
        None => true,
        Some((at, read_with)) => {
            read_with.is_none() || read_with != writes || now.duration_since(at) >= QUIET_SIZE_REFRESH
        }
    }
}

/// One server's login budget: a token bucket refilled at the server's
/// `loginsPerSecond` and holding at most one health interval's worth (at
/// least one login), so the logins over any span T never exceed
/// `rate × T` plus that one interval's worth.
pub struct LoginBudget {
    tokens: f64,
    refilled: Instant,
}

impl LoginBudget {
    pub fn new(now: Instant) -> Self {
        Self {
            tokens: 0.0,
            refilled: now,
        }
    }

    /// Up to `wanted` logins allowed at `now`, taken from the budget.
    pub fn take(&mut self, policy: &HealthPolicy, now: Instant, wanted: usize) -> usize {
        let rate = policy.logins_per_second();
        let cap = (rate * policy.interval.as_secs_f64()).max(1.0);
        let elapsed = now.saturating_duration_since(self.refilled).as_secs_f64();
        self.tokens = (self.tokens + rate * elapsed).min(cap);
        self.refilled = now;
        let granted = (self.tokens.floor() as usize).min(wanted);
        self.tokens -= granted as f64;
        granted
    }
}

/// The first `count` of `due` (whether it was done before, when it fell
/// due, what) — the never done first, then the longest overdue.
fn most_due<T>(mut due: Vec<(bool, Instant, T)>, count: usize) -> impl Iterator<Item = T> {
    due.sort_by_key(|(done_before, since, _)| (*done_before, *since));
    due.into_iter().take(count).map(|(_, _, item)| item)
}

/// What a tenant logs in with: its role and the version of its connection
/// Secret (no password is kept or hashed). A change makes the tenant due
/// for a login at once.
fn identity(stores: &Stores, tenant: &TenantDatabase) -> Option<String> {
    let status = tenant.status.as_ref()?;
    let namespace = tenant.namespace().unwrap_or_default();
    let secret = stores.secret(&namespace, status.secret_name.as_deref()?)?;
    Some(format!(
        "{}\0{}\0{}",
        status.role_name.as_deref()?,
        secret.metadata.uid.as_deref().unwrap_or_default(),
        secret.metadata.resource_version.as_deref().unwrap_or_default()
    ))
}

/// A tenant's next login under a new login interval: one interval after
/// its last login, so a longer interval makes nobody log in early; when
/// that moment has already passed (a shorter interval) or it never logged
/// in, a random point within the new interval, so the change does not make
/// every tenant of the server log in at once.
fn rescheduled(last_login: Option<Instant>, interval: Duration, now: Instant) -> Instant {
    match last_login.map(|last| last + interval) {
        Some(next) if next > now => next,
        _ => staggered(interval),
    }
}

/// What the monitor knows, shared with the reconciles.
pub struct HealthBook {
    tenants: Mutex<HashMap<String, TenantRecord>>,
    /// Per server: its policy, and why its last health query failed.
    servers: Mutex<HashMap<String, (HealthPolicy, Option<String>)>>,
    pub(super) tenant_changed: broadcast::Sender<String>,
    server_changed: broadcast::Sender<String>,
}

impl Default for HealthBook {
    fn default() -> Self {
        Self {
            tenants: Mutex::new(HashMap::new()),
            servers: Mutex::new(HashMap::new()),
            tenant_changed: broadcast::channel(4096).0,
            server_changed: broadcast::channel(256).0,
        }
    }
}

impl HealthBook {
    /// Tenants (`namespace/name`) whose status should be written again.
    pub fn tenant_changes(&self) -> broadcast::Receiver<String> {
        self.tenant_changed.subscribe()
    }

    /// Servers whose reachability changed.
    pub fn server_changes(&self) -> broadcast::Receiver<String> {
        self.server_changed.subscribe()
    }

    /// The tenant's health, once the monitor has looked at it.
    pub fn tenant(&self, key: &str) -> Option<TenantHealth> {
        self.lock_tenants().get(key).map(|r| r.health.clone())
    }

    /// The health policy the monitor uses for `server` (the default
    /// before it has seen the server).
    pub fn policy(&self, server: &str) -> HealthPolicy {
        self.servers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(server)
            .map(|(policy, _)| policy.clone())
            .unwrap_or_default()
    }

    /// Why the server's last health query failed, if it did.
    pub fn server_down(&self, server: &str) -> Option<String> {
        self.servers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(server)
            .and_then(|(_, error)| error.clone())
    }

    /// Whether the last login as the tenant was refused for its password.
    pub fn password_rejected(&self, key: &str) -> bool {
        self.lock_tenants()
            .get(key)
            .and_then(|r| r.health.login.as_ref())
            .is_some_and(|l| l.password_rejected)
    }

    /// Has the tenant's login checked again at the next interval (after
    /// its password was set again).
    pub fn login_again(&self, key: &str) {
        if let Some(record) = self.lock_tenants().get_mut(key) {
            record.next_login = Instant::now();
        }
    }

    fn lock_tenants(&self) -> std::sync::MutexGuard<'_, HashMap<String, TenantRecord>> {
        self.tenants.lock().unwrap_or_else(|p| p.into_inner())
    }
}

pub(super) fn key(tenant: &TenantDatabase) -> String {
    format!("{}/{}", tenant.namespace().unwrap_or_default(), tenant.name_any())
}

pub(super) fn labels(key: &str) -> TenantLabels {
    let (namespace, tenant) = key.split_once('/').unwrap_or(("", key));
    TenantLabels {
        namespace: namespace.to_owned(),
        tenant: tenant.to_owned(),
    }
}

/// A random point within `period` from now: spreads first checks out.
fn staggered(period: Duration) -> Instant {
    let fraction: f64 = rand::rng().random_range(0.0..1.0);
    Instant::now() + period.mul_f64(fraction)
}

/// Runs one monitor per server in the cache, following servers as they come,
/// change their health policy and go, until `stop` turns true.
pub async fn run(ctx: Arc<Context>, stores: Stores, mut stop: tokio::sync::watch::Receiver<bool>) {
    let mut tasks: HashMap<String, (HealthPolicy, tokio::task::JoinHandle<()>)> = HashMap::new();
    while !*stop.borrow() {
        count_phases(&ctx, &stores);
        let servers = stores.servers.state();
        let names: HashSet<String> = servers.iter().map(|s| s.name_any()).collect();
        for server in &servers {
            let name = server.name_any();
            let policy = HealthPolicy::of(server);
            if tasks.get(&name).is_some_and(|(running, _)| *running == policy) {
                continue;
            }
            if let Some((_, task)) = tasks.remove(&name) {
                task.abort();
                // A new login interval applies at once.
                let now = Instant::now();
                for record in ctx.health.lock_tenants().values_mut() {
                    if record.server == name {
                        record.next_login = rescheduled(record.last_login, policy.login_interval, now);
                    }
                }
            }
            ctx.health
                .servers
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .entry(name.clone())
                .and_modify(|entry| entry.0 = policy.clone())
                .or_insert((policy.clone(), None));
            let task = tokio::spawn(watch_server(
                ctx.clone(),
                stores.clone(),
                name.clone(),
                policy.clone(),
            ));
            tasks.insert(name, (policy, task));
        }
        tasks.retain(|name, (_, task)| {
            let keep = names.contains(name);
            if !keep {
                task.abort();
                ctx.metrics.forget_server(name);
                ctx.catalog.forget(name);
            }
            keep
        });
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = stop.changed() => {}
        }
    }
    for (_, (_, task)) in tasks {
        task.abort();
    }
}

async fn watch_server(ctx: Arc<Context>, stores: Stores, server: String, policy: HealthPolicy) {
    let mut budget = LoginBudget::new(Instant::now());
    // The first look comes soon; then every interval, ±10%.
    tokio::time::sleep(policy.interval.min(Duration::from_secs(1))).await;
    loop {
        check_server(&ctx, &stores, &server, &policy, &mut budget).await;
        let factor: f64 = rand::rng().random_range(0.9..1.1);
        tokio::time::sleep(policy.interval.mul_f64(factor)).await;
    }
}

/// `tenantdb_tenants{phase}`, from the cache.
fn count_phases(ctx: &Context, stores: &Stores) {
    let mut counts = [0i64; PHASES.len()];
    for tenant in stores.all_tenants() {
        let phase = tenant
            .status
            .as_ref()
            .and_then(|s| s.phase)
            .map_or("Unknown".to_owned(), |p| format!("{p:?}"));
        if let Some(i) = PHASES.iter().position(|known| *known == phase) {
            counts[i] += 1;
        }
    }
    for (phase, count) in PHASES.iter().zip(counts) {
        ctx.metrics
            .tenants
            .get_or_create(&PhaseLabel { phase })
            .set(count);
    }
}

/// One interval for one server.
async fn check_server(
    ctx: &Context,
    stores: &Stores,
    name: &str,
    policy: &HealthPolicy,
    budget: &mut LoginBudget,
) {
    let Some(server) = stores.servers.get(&ObjectRef::new(name)) else {
        return;
    };
    // The server controller reports a missing or broken admin Secret.
    let Ok(Some(Ok(credentials))) = ctx.admin_credentials(&server.spec.admin_secret_ref).await else {
        return;
    };
    // A CA that cannot be read is the server controller's to report.
    let Ok(Ok(ca)) = ctx.server_ca(&server).await else {
        return;
    };
    let tenants: Vec<Arc<TenantDatabase>> = stores
        .all_tenants()
        .into_iter()
        .filter(|t| {
            t.metadata.deletion_timestamp.is_none()
                && t.status
                    .as_ref()
                    .is_some_and(|s| s.server.as_deref() == Some(name) && s.database_name.is_some())
        })
        .collect();
    let now = Instant::now();
    let checked_at = Time(k8s_openapi::jiff::Timestamp::now());

    // Who is due for a size and a login, first times staggered over the
    // period; the logins then within the server's budget, most urgent
    // first; the sizes a share per sample, never read first, then the
    // longest overdue.
    let (mut sizes, mut logins) = (Vec::new(), Vec::new());
    // What the granted sizes and logins were scheduled as before, put back
    // when the server does not answer: nothing was read or tried, so
    // nothing waits another interval (a changed Secret's login least).
    let mut sizes_before = Vec::new();
    {
        let mut book = ctx.health.lock_tenants();
        let mut due = Vec::new();
        let mut sizes_due = Vec::new();
        for (position, tenant) in tenants.iter().enumerate() {
            let status = tenant.status.as_ref().expect("filtered on status");
            // A tenant no login has vouched for yet (just provisioned, or
            // its last login failed) is logged in to at once; the others'
            // first logins are spread over the whole login interval: a
            // restart with 10,000 tenants must not log in to all at once.
            let vouched = status.health.as_ref().is_some_and(|h| h.latency_ms.is_some());
            let record = book.entry(key(tenant)).or_insert_with(|| TenantRecord {
                health: TenantHealth::default(),
                server: name.to_owned(),
                next_login: if vouched {
                    staggered(policy.login_interval)
                } else {
                    now
                },
                last_login: None,
                identity: None,
                next_size: now,
                size_read: None,
            });
            record.server = name.to_owned();
            let writes = record.health.database.as_ref().map(|d| d.writes);
            if record.next_size <= now && size_wanted(record.size_read, writes, now) {
                // Never read: no size in status either (a restart reads
                // again only its share).
                let sized = record.health.size_bytes.is_some()
                    || status.health.as_ref().is_some_and(|h| h.size_bytes.is_some());
                sizes_due.push((sized, record.next_size, position));
            }
            let identity = identity(stores, tenant);
            let changed = record.identity.is_some() && identity.is_some() && record.identity != identity;
            if record.next_login <= now || changed {
                // First: a changed Secret or role, a failed last login, or
                // no login yet; then the longest overdue.
                let urgent = changed || record.health.login.as_ref().map_or(!vouched, |l| !l.ok);
                due.push((!urgent, record.next_login, position, identity));
            }
        }
        let new = sizes_due.iter().filter(|(sized, ..)| !sized).count();
        let share = policy.sizes_per_sample(tenants.len()) + new.min(NEW_SIZES_PER_SAMPLE);
        for position in most_due(sizes_due, share) {
            let tenant = &tenants[position];
            if let Some(record) = book.get_mut(&key(tenant)) {
                sizes_before.push((key(tenant), record.next_size, record.size_read));
                record.next_size = now + policy.size_interval;
                record.size_read = Some((now, None));
            }
            let status = tenant.status.as_ref().expect("filtered on status");
            sizes.push(status.database_name.clone().unwrap_or_default());
        }
        due.sort_by_key(|(not_urgent, next_login, ..)| (*not_urgent, *next_login));
        let granted = budget.take(policy, now, due.len());
        for (_, _, position, identity) in due.into_iter().take(granted) {
            let tenant = &tenants[position];
            if let Some(record) = book.get_mut(&key(tenant)) {
                let before = LoginSchedule::of(record);
                record.next_login = now + policy.login_interval;
                record.last_login = Some(now);
                record.identity = identity;
                logins.push((tenant.clone(), before));
            }
        }
    }
    let databases: Vec<String> = tenants
        .iter()
        .filter_map(|t| t.status.as_ref().and_then(|s| s.database_name.clone()))
        .collect();
    // The monitor's own connection: provisioning holding every admin
    // connection cannot delay this query.
    let pool = ctx.pools.health(&server, &credentials, ca.as_deref());
    // A server that does not answer within 0.8 intervals (at most 10 s) is
    // down: the next sample starts at most 1.1 intervals after an outage
    // began, so the outage shows within two intervals of its start.
    let deadline = policy
        .interval
        .mul_f64(0.8)
        .clamp(Duration::from_millis(500), Duration::from_secs(10));
    let sample = match tokio::time::timeout(deadline, health::sample_server(&pool, &databases, &sizes)).await
    {
        Ok(result) => result,
        Err(_) => Err(sqlx::Error::PoolTimedOut),
    };

    if sample.is_err() {
        let mut book = ctx.health.lock_tenants();
        for (key, next_size, size_read) in sizes_before {
            if let Some(record) = book.get_mut(&key) {
                (record.next_size, record.size_read) = (next_size, size_read);
            }
        }
        for (tenant, before) in &logins {
            if let Some(record) = book.get_mut(&key(tenant)) {
                before.restore(record);
            }
        }
    }

    // Logins, only when the server answers.
    let login_results: HashMap<String, health::LoginResult> = if sample.is_ok() {
        let attempts: Vec<(String, sqlx::postgres::PgConnectOptions)> = logins
            .iter()
            .filter_map(|(tenant, _)| {
                let status = tenant.status.as_ref()?;
                let namespace = tenant.namespace().unwrap_or_default();
                let secret = stores.secret(&namespace, status.secret_name.as_deref()?)?;
                let password = connection_secret::password_of(&secret)?;
                let role = AdminCredentials {
                    username: status.role_name.clone()?,
                    password,
                };
                let options = admin_access::connect_options(&server.spec, &role, ca.clone())
                    .database(status.database_name.as_deref()?)
                    .application_name("tenantdb-health");
                Some((key(tenant), options))
            })
            .collect();
        futures::stream::iter(attempts)
            .map(|(key, options)| async move { (key, health::login(&options).await) })
            .buffer_unordered(LOGIN_CONCURRENCY)
            .collect()
            .await
    } else {
        HashMap::new()
    };

    // Metrics and the server's reachability.
    let server_label = ServerLabel {
        server: name.to_owned(),
    };
    let up = sample.is_ok();
    let sizes_read = if up { sizes.len() } else { 0 };
    for (counter, count) in [
        (&ctx.metrics.tenant_logins, login_results.len()),
        (&ctx.metrics.size_reads, sizes_read),
    ] {
        if count > 0 {
            counter.get_or_create(&server_label).inc_by(count as u64);
        }
    }
    ctx.metrics
        .server_up
        .get_or_create(&server_label)
        .set(i64::from(up));
    if let Ok(sample) = &sample {
        ctx.metrics
            .server_connections
            .get_or_create(&server_label)
            .set(i64::from(sample.connections));
        ctx.metrics
            .server_max_connections
            .get_or_create(&server_label)
            .set(i64::from(sample.max_connections));
    }
    let error = sample.as_ref().err().map(crate::reconcile::indexes::reason);
    let was_up = ctx
        .health
        .servers
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get_mut(name)
        .map(|entry| std::mem::replace(&mut entry.1, error).is_none());
    if was_up.is_some_and(|was| was != up) {
        match &sample {
            Ok(_) => tracing::info!(server = name, "server answers again"),
            Err(error) => tracing::warn!(server = name, %error, "server does not answer"),
        }
        let _ = ctx.health.server_changed.send(name.to_owned());
    }

    // Each tenant's record, its metrics, and whether its status needs writing.
    let mut changed = Vec::new();
    {
        let mut book = ctx.health.lock_tenants();
        let present: HashSet<String> = tenants.iter().map(|t| key(t)).collect();
        book.retain(|key, record| {
            let keep = record.server != name || present.contains(key);
            if !keep {
                ctx.metrics.forget_tenant(&labels(key));
                ctx.index_looks.forget(key);
            }
            keep
        });
        for tenant in &tenants {
            let key = key(tenant);
            let status = tenant.status.as_ref().expect("filtered on status");
            let Some(record) = book.get_mut(&key) else {
                continue;
            };
            let health = &mut record.health;
            health.checked_at = Some(checked_at.clone());
            match &sample {
                Ok(sample) => {
                    health.server_error = None;
                    health.database = status
                        .database_name
                        .as_ref()
                        .and_then(|d| sample.databases.get(d))
                        .cloned();
                    if let Some(database) = health.database.as_ref().filter(|d| d.size_bytes.is_some()) {
                        health.size_bytes = database.size_bytes;
                        if let Some((_, read_with)) = &mut record.size_read {
                            *read_with = Some(database.writes);
                        }
                    }
                }
                Err(error) => {
                    health.server_error = Some(crate::reconcile::indexes::reason(error));
                    health.database = None;
                }
            }
            if let Some(login) = login_results.get(&key) {
                // One log line per transition.
                if login.ok != health.login.as_ref().is_none_or(|l| l.ok) {
                    match &login.message {
                        Some(message) if !login.ok => {
                            tracing::warn!(tenant = %key, %message, "tenant login failed")
                        }
                        _ => tracing::info!(tenant = %key, "tenant login works again"),
                    }
                }
                let mut login = login.clone();
                if login.ok {
                    // Status shows the smoothed latency; metrics the last one.
                    export_latency(ctx, &key, login.latency_ms);
                    let previous = health.login.as_ref().filter(|l| l.ok).map(|l| l.latency_ms);
                    login.latency_ms = health::smoothed_latency(previous, login.latency_ms);
                }
                health.login = Some(login);
            }
            export(ctx, &key, health);
            let mut new = status.clone();
            health::apply(&mut new, health, policy, tenant.metadata.generation, &checked_at);
            if health::worth_writing(Some(status), &new, policy.status_heartbeat, &checked_at) {
                tracing::debug!(tenant = %key, old = ?status.health, new = ?new.health, "status worth writing");
                changed.push(key);
            }
        }
    }
    for key in changed {
        let _ = ctx.health.tenant_changed.send(key);
    }
}

/// The tenant's last login latency, as a metric.
fn export_latency(ctx: &Context, key: &str, latency_ms: i64) {
    ctx.metrics
        .tenant_latency
        .get_or_create(&labels(key))
        .set(latency_ms as f64 / 1000.0);
}

/// The tenant's exact numbers, as metrics.
fn export(ctx: &Context, key: &str, health: &TenantHealth) {
    let labels = labels(key);
    let metrics = &ctx.metrics;
    let up = health.server_error.is_none()
        && health.database.is_some()
        && health.login.as_ref().is_none_or(|l| l.ok);
    metrics.tenant_up.get_or_create(&labels).set(i64::from(up));
    if let Some(database) = &health.database {
        let other = database.total - database.active - database.idle - database.idle_in_transaction;
        for (state, value) in [
            ("active", database.active),
            ("idle", database.idle),
            ("idle_in_transaction", database.idle_in_transaction),
            ("other", other.max(0)),
        ] {
            metrics
                .tenant_connections
                .get_or_create(&TenantStateLabels {
                    namespace: labels.namespace.clone(),
                    tenant: labels.tenant.clone(),
                    state,
                })
                .set(i64::from(value));
        }
        metrics
            .tenant_connection_limit
            .get_or_create(&labels)
            .set(i64::from(database.connection_limit));
    }
    if let Some(size) = health.size_bytes {
        metrics.tenant_size.get_or_create(&labels).set(size);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(interval_ms: u64, logins_per_second: f64) -> HealthPolicy {
        HealthPolicy {
            interval: Duration::from_millis(interval_ms),
            login_budget_milli: (logins_per_second * 1000.0) as u64,
            ..HealthPolicy::default()
        }
    }

    /// Logins granted over `seconds` of checks every `interval_ms`, with
    /// `wanted` tenants due at every check.
    fn granted(policy: &HealthPolicy, seconds: u64, wanted: usize) -> usize {
        let start = Instant::now();
        let mut budget = LoginBudget::new(start);
        let checks = seconds * 1000 / policy.interval.as_millis() as u64;
        (1..=checks)
            .map(|i| budget.take(policy, start + policy.interval * i as u32, wanted))
            .sum()
    }

    #[test]
    fn the_login_budget_bounds_logins_whatever_is_due() {
        // 10,000 tenants due at every 30 s check, 2 logins/s: 2 per second.
        assert_eq!(granted(&policy(30_000, 2.0), 3600, 10_000), 7200);
        // A budget below one login per interval still grants some.
        assert_eq!(granted(&policy(1_000, 0.25), 100, 50), 25);
        // Never more than is due.
        assert_eq!(granted(&policy(1_000, 100.0), 10, 3), 30);
        // A long pause grants one interval's worth, not the pause's.
        let p = policy(1_000, 5.0);
        let start = Instant::now();
        let mut budget = LoginBudget::new(start);
        assert_eq!(budget.take(&p, start + Duration::from_secs(600), 10_000), 5);
    }

    #[test]
    fn a_full_rotation_takes_the_login_interval_or_what_the_budget_allows() {
        let p = policy(30_000, 2.0);
        assert_eq!(p.login_rotation(100), p.login_interval);
        assert_eq!(p.login_rotation(10_000), Duration::from_secs(5000));
    }

    #[test]
    fn sizes_are_read_a_share_per_sample_never_read_first() {
        let p = HealthPolicy::default();
        assert_eq!(p.sizes_per_sample(5_000), 53);
        assert_eq!(p.sizes_per_sample(3), 1);
        // A restart: all 5,000 due at once are read within one size
        // interval, none twice.
        let start = Instant::now();
        let mut next = vec![start; 5_000];
        let mut read = vec![0; 5_000];
        let samples = (p.size_interval.as_secs() / p.interval.as_secs()) as u32;
        for i in 0..samples {
            let now = start + p.interval * i;
            let due = (0..next.len())
                .filter(|&t| next[t] <= now)
                .map(|t| (read[t] > 0, next[t], t))
                .collect();
            for t in most_due(due, p.sizes_per_sample(5_000)) {
                read[t] += 1;
                next[t] = now + p.size_interval;
            }
        }
        assert!(
            read.iter().all(|&n| n == 1),
            "{:?}",
            read.iter().filter(|&&n| n != 1).count()
        );
        // Never read first, then the longest overdue.
        let later = start + Duration::from_secs(5);
        let due = vec![
            (true, later, "late"),
            (true, start, "oldest"),
            (false, later, "new"),
        ];
        assert_eq!(most_due(due, 2).collect::<Vec<_>>(), ["new", "oldest"]);
    }

    #[test]
    fn an_idle_database_size_is_read_again_only_once_a_day() {
        let now = Instant::now();
        let hour_ago = now - Duration::from_secs(3600);
        // Never read, or asked for with no answer (no CONNECT yet): read.
        assert!(size_wanted(None, Some(7), now));
        assert!(size_wanted(Some((hour_ago, None)), Some(7), now));
        // Written to since the last read: read on the size interval.
        assert!(size_wanted(Some((hour_ago, Some(7))), Some(8), now));
        // Not written to: not read again within a day, then read.
        assert!(!size_wanted(Some((hour_ago, Some(7))), Some(7), now));
        assert!(!size_wanted(
            Some((now, Some(7))),
            Some(7),
            now + QUIET_SIZE_REFRESH - Duration::from_secs(1)
        ));
        assert!(size_wanted(
            Some((now, Some(7))),
            Some(7),
            now + QUIET_SIZE_REFRESH
        ));
    }

    #[test]
    fn a_longer_login_interval_counts_from_the_last_login() {
        let now = Instant::now();
        let last = now - Duration::from_secs(1);
        let hour = Duration::from_secs(3600);
        assert_eq!(rescheduled(Some(last), hour, now), last + hour);
    }

    #[test]
    fn an_overdue_or_first_login_is_spread_over_the_new_interval() {
        let now = Instant::now();
        let interval = Duration::from_secs(2);
        for last in [Some(now - Duration::from_secs(10)), None] {
            let next = rescheduled(last, interval, now);
            assert!(next >= now && next <= Instant::now() + interval, "{last:?}");
        }
    }
}
