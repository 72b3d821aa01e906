//! Tenant health, for the operator's monitor and `tenantdb status`: one
//! batched query per server reads every tenant database's connections (and,
//! on a slower rotation, sizes); a real login as each tenant role, on its
//! own rotation, proves the role, its password and CONNECT work. What a
//! person would act on — reachability, a failing login, connection use past
//! the threshold, a latency or utilization bucket crossed — goes to status;
//! the exact numbers go to metrics.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use sqlx::postgres::PgConnectOptions;
use sqlx::{Connection, PgConnection, PgPool, Row};

use crate::api::DatabaseServer;
use crate::api::duration::parse_millis;
use crate::api::tenant_database::{HealthStatus, TenantDatabaseStatus, TenantPhase};
use crate::status::set_condition;

/// How one server's tenants are checked, from its `spec.healthCheck`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HealthPolicy {
    pub interval: Duration,
    pub login_interval: Duration,
    /// The login budget, in thousandths of a login per second.
    pub login_budget_milli: u64,
    pub size_interval: Duration,
    /// Percent of the connection limit at which a tenant is Degraded.
    pub utilization_threshold: i32,
    pub status_heartbeat: Duration,
}

impl Default for HealthPolicy {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(30),
            login_interval: Duration::from_secs(300),
            login_budget_milli: 1_000,
            size_interval: Duration::from_secs(3600),
            utilization_threshold: 90,
            status_heartbeat: Duration::from_secs(300),
        }
    }
}

impl HealthPolicy {
    /// Tenant logins per second, at most.
    pub fn logins_per_second(&self) -> f64 {
        self.login_budget_milli as f64 / 1000.0
    }

    /// How many of `tenants` databases' sizes one sample reads: each size
    /// every `size_interval`, spread over the samples, with a quarter to
    /// spare so a backlog (a restart's, every size due at once) drains. At
    /// the defaults 53 of 5,000 a sample, where reading them all at once
    /// (seconds of `pg_database_size` on a loaded server) made the health
    /// query miss its deadline and the whole server look down.
    pub fn sizes_per_sample(&self, tenants: usize) -> usize {
        let share = tenants as f64 * self.interval.as_secs_f64() * 1.25 / self.size_interval.as_secs_f64();
        (share.ceil() as usize).max(1)
    }

    /// How long logging in once as each of `tenants` takes: the login
    /// interval, or longer when the budget cannot cover them all in it.
    pub fn login_rotation(&self, tenants: usize) -> Duration {
        let at_budget = Duration::from_secs_f64(tenants as f64 / self.logins_per_second());
        at_budget.max(self.login_interval)
    }

    /// The server's policy; a field that is missing or unparsable keeps its
    /// default (the CRD schema refuses unparsable ones), and no period is
    /// shorter than 100 ms.
    pub fn of(server: &DatabaseServer) -> Self {
        let defaults = Self::default();
        let Some(spec) = &server.spec.health_check else {
            return defaults;
        };
        let logins = Self::logins(&spec.interval, &spec.login_interval, spec.logins_per_second);
        Self {
            size_interval: period(&spec.size_interval, defaults.size_interval),
            utilization_threshold: spec
                .utilization_threshold
                .filter(|t| (1..=100).contains(t))
                .unwrap_or(defaults.utilization_threshold),
            status_heartbeat: period(&spec.status_heartbeat, defaults.status_heartbeat),
            ..logins
        }
    }

    /// The defaults with the interval, login interval and login budget a
    /// spec gives (a DatabaseServer's or a CacheServer's `healthCheck`),
    /// by the same rules as [`HealthPolicy::of`].
    pub fn logins(
        interval: &Option<String>,
        login_interval: &Option<String>,
        per_second: Option<f64>,
    ) -> Self {
        let defaults = Self::default();
        Self {
            interval: period(interval, defaults.interval),
            login_interval: period(login_interval, defaults.login_interval),
            login_budget_milli: per_second
                .filter(|rate| rate.is_finite() && *rate >= 0.01)
                .map_or(defaults.login_budget_milli, |rate| {
                    (rate.min(1000.0) * 1000.0).round() as u64
                }),
            ..defaults
        }
    }
}

/// A duration field of a `healthCheck`: missing or unparsable keeps
/// `default` (the CRD schema refuses unparsable ones); never under 100 ms.
fn period(text: &Option<String>, default: Duration) -> Duration {
    text.as_deref()
        .and_then(|t| parse_millis(t).ok())
        .and_then(|ms| u64::try_from(ms).ok())
        .map_or(default, |ms| Duration::from_millis(ms.max(100)))
}

/// Connections of one database, by state, as the server query read them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DatabaseSample {
    /// `datconnlimit` (-1: none).
    pub connection_limit: i32,
    /// Client connections to the database, in any state.
    pub total: i32,
    pub active: i32,
    pub idle: i32,
    pub idle_in_transaction: i32,
    /// `pg_database_size`, when it was asked for.
    pub size_bytes: Option<i64>,
    /// Rows inserted, updated and deleted in the database (its catalogs
    /// included) since its statistics were reset: a database whose count
    /// did not move has not changed size enough to read it again.
    pub writes: i64,
}

/// One server's picture, from one query.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServerSample {
    pub max_connections: i32,
    /// Client connections to the whole server.
    pub connections: i32,
    /// How long the query took.
    pub latency: Duration,
    /// By database name; a database that does not exist is absent.
    pub databases: HashMap<String, DatabaseSample>,
}

/// Every asked-for database's connections by state and (for `sizes`) its
/// size, and the server's own numbers — one statement, whatever the number
/// of tenants.
const SERVER_QUERY: &str = "
WITH activity AS (
    SELECT datname,
           count(*)::int4 AS total,
           (count(*) FILTER (WHERE state = 'active'))::int4 AS active,
           (count(*) FILTER (WHERE state = 'idle'))::int4 AS idle,
           (count(*) FILTER (WHERE state LIKE 'idle in transaction%'))::int4 AS idle_in_transaction
      FROM pg_stat_activity
     WHERE backend_type = 'client backend'
     GROUP BY datname
), server AS (
    SELECT current_setting('max_connections')::int4 AS max_connections,
           (SELECT count(*)::int4 FROM pg_stat_activity WHERE backend_type = 'client backend') AS connections
), tenants AS (
    SELECT d.datname::text AS datname, d.datconnlimit,
           coalesce(a.total, 0) AS total, coalesce(a.active, 0) AS active,
           coalesce(a.idle, 0) AS idle, coalesce(a.idle_in_transaction, 0) AS idle_in_transaction,
           -- A database tenantdb may not connect to yet (just created, CONNECT
           -- not granted to itself yet) has no size this time: an error here
           -- would fail the sample of the whole server.
           CASE WHEN d.datname = ANY($2) AND has_database_privilege(d.oid, 'CONNECT')
                THEN pg_database_size(d.oid) END AS size_bytes,
           coalesce(pg_stat_get_db_tuples_inserted(d.oid) + pg_stat_get_db_tuples_updated(d.oid)
                    + pg_stat_get_db_tuples_deleted(d.oid), 0)::int8 AS writes
      FROM pg_database d LEFT JOIN activity a ON a.datname = d.datname
     WHERE d.datname = ANY($1)
)
SELECT s.max_connections, s.connections, t.*
  FROM server s LEFT JOIN tenants t ON true";

/// Reads `databases` (sizes too for `sizes`) in one query over `pool`.
pub async fn sample_server(
    pool: &PgPool,
    databases: &[String],
    sizes: &[String],
) -> Result<ServerSample, sqlx::Error> {
    let started = Instant::now();
    let rows = sqlx::query(SERVER_QUERY)
        .bind(databases)
        .bind(sizes)
        .fetch_all(pool)
        .await?;
    let latency = started.elapsed();
    let mut sample = ServerSample {
        latency,
        ..ServerSample::default()
    };
    for row in rows {
        sample.max_connections = row.try_get("max_connections")?;
        sample.connections = row.try_get("connections")?;
        let Some(name) = row.try_get::<Option<String>, _>("datname")? else {
            continue;
        };
        sample.databases.insert(
            name,
            DatabaseSample {
                connection_limit: row.try_get("datconnlimit")?,
                total: row.try_get("total")?,
                active: row.try_get("active")?,
                idle: row.try_get("idle")?,
                idle_in_transaction: row.try_get("idle_in_transaction")?,
                size_bytes: row.try_get("size_bytes")?,
                writes: row.try_get("writes")?,
            },
        );
    }
    Ok(sample)
}

/// The result of logging in as a tenant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoginResult {
    pub ok: bool,
    /// Connect + `SELECT 1`, in milliseconds.
    pub latency_ms: i64,
    /// PostgreSQL's reason when it failed.
    pub message: Option<String>,
    /// The server refused the password (SQLSTATE 28P01): the role's
    /// password is not the one the Secret holds.
    pub password_rejected: bool,
}

/// How long a login may take before it counts as failed.
pub const LOGIN_TIMEOUT: Duration = Duration::from_secs(5);

/// Logs in with `options` (the tenant's role, password and database) and
/// runs `SELECT 1`.
pub async fn login(options: &PgConnectOptions) -> LoginResult {
    let started = Instant::now();
    let attempt = async {
        let mut conn = PgConnection::connect_with(options).await?;
        sqlx::query("SELECT 1").execute(&mut conn).await?;
        let _ = conn.close().await;
        Ok::<_, sqlx::Error>(())
    };
    let outcome = tokio::time::timeout(LOGIN_TIMEOUT, attempt).await;
    let latency_ms = i64::try_from(started.elapsed().as_millis()).unwrap_or(i64::MAX);
    match outcome {
        Ok(Ok(())) => LoginResult {
            ok: true,
            latency_ms,
            message: None,
            password_rejected: false,
        },
        Ok(Err(error)) => {
            let database = error.as_database_error();
            LoginResult {
                ok: false,
                latency_ms,
                password_rejected: database.and_then(|e| e.code()).as_deref() == Some("28P01"),
                message: Some(match database {
                    Some(db) => db.message().to_owned(),
                    None => error.to_string(),
                }),
            }
        }
        Err(_) => LoginResult {
            ok: false,
            latency_ms,
            message: Some(format!("no answer within {} s", LOGIN_TIMEOUT.as_secs())),
            password_rejected: false,
        },
    }
}

/// Everything known of one tenant's health.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TenantHealth {
    /// When the server query last ran for it.
    pub checked_at: Option<Time>,
    /// Why the server could not be asked, if it could not.
    pub server_error: Option<String>,
    /// Its database's connections; `None` when the database was not found.
    pub database: Option<DatabaseSample>,
    /// The last size read.
    pub size_bytes: Option<i64>,
    /// The last login.
    pub login: Option<LoginResult>,
}

/// Why a tenant is not healthy, if it is not.
fn problem(health: &TenantHealth, limit: i32, threshold: i32) -> Option<(&'static str, String)> {
    if let Some(error) = &health.server_error {
        return Some((
            "ServerUnreachable",
            format!("the server cannot be reached: {error}"),
        ));
    }
    let Some(database) = &health.database else {
        return Some(("DatabaseMissing", "the database does not exist".to_owned()));
    };
    if let Some(login) = health.login.as_ref().filter(|l| !l.ok) {
        return Some((
            "LoginFailed",
            format!(
                "login as the tenant role failed: {}",
                login.message.as_deref().unwrap_or("unknown error")
            ),
        ));
    }
    let utilization = utilization(database.total, limit);
    if utilization >= threshold {
        return Some((
            "ConnectionsNearLimit",
            format!(
                "connection use at {}% or more of the limit of {limit} (threshold {threshold}%)",
                utilization / 10 * 10
            ),
        ));
    }
    None
}

/// Percent of `limit` that `used` is, rounded down, at most 100.
pub fn utilization(used: i32, limit: i32) -> i32 {
    if limit <= 0 {
        return 0;
    }
    i32::try_from((i64::from(used) * 100 / i64::from(limit)).min(100)).unwrap_or(100)
}

/// Writes `health` into `status`: the live pool numbers, `health`, the
/// `Healthy` condition, and phase `Degraded` while a Ready tenant is
/// unhealthy (back to `Ready` when it recovers). `Ready` itself is left to
/// provisioning: a tenant near its connection limit is still provisioned.
pub fn apply(
    status: &mut TenantDatabaseStatus,
    health: &TenantHealth,
    policy: &HealthPolicy,
    generation: Option<i64>,
    now: &Time,
) {
    let Some(checked_at) = &health.checked_at else {
        return;
    };
    let limit = status.pool.as_ref().map_or(0, |p| p.connection_limit);
    if let (Some(pool), Some(database)) = (status.pool.as_mut(), &health.database) {
        pool.active_connections = database.total;
        pool.idle_connections = database.idle;
        pool.utilization = utilization(database.total, limit);
        status.connections = Some(format!("{}/{limit}", database.total));
    }
    let problem = problem(health, limit, policy.utilization_threshold);
    let reachable = health.server_error.is_none()
        && health.database.is_some()
        && health.login.as_ref().is_none_or(|l| l.ok);
    // Until this process has logged in itself (after a restart, say), the
    // latency last reported stands.
    let previous_latency = status.health.as_ref().and_then(|h| h.latency_ms);
    let latency_ms = match &health.login {
        Some(login) if login.ok => Some(login.latency_ms),
        Some(_) => None,
        None => previous_latency,
    };
    status.health = Some(HealthStatus {
        reachable,
        latency_ms,
        checked_at: Some(checked_at.clone()),
        size_bytes: health.size_bytes,
        message: problem.as_ref().map(|(_, message)| message.clone()),
    });
    match &problem {
        // No login proves the credentials yet (a tenant just provisioned,
        // or `tenantdb status` without the Secrets): say so, not that it works.
        None if latency_ms.is_none() => set_condition(
            &mut status.conditions,
            "Healthy",
            true,
            "LoginNotChecked",
            "reachable and connection use is below the threshold; no login as the tenant has been tried yet",
            generation,
            now,
        ),
        None => set_condition(
            &mut status.conditions,
            "Healthy",
            true,
            "Healthy",
            "reachable, the tenant login works and connection use is below the threshold",
            generation,
            now,
        ),
        Some((reason, message)) => set_condition(
            &mut status.conditions,
            "Healthy",
            false,
            reason,
            message,
            generation,
            now,
        ),
    }
    let provisioned = status
        .conditions
        .iter()
        .any(|c| c.type_ == "Ready" && c.status == "True");
    status.phase = match (status.phase, problem.is_some()) {
        (Some(TenantPhase::Ready), true) => Some(TenantPhase::Degraded),
        (Some(TenantPhase::Degraded), false) if provisioned => Some(TenantPhase::Ready),
        (phase, _) => phase,
    };
}

/// The status without what moves on every look — exact connection counts,
/// exact latency, `checkedAt`, size — with utilization and latency reduced
/// to their buckets: what a person would act on.
fn significant(status: &TenantDatabaseStatus) -> TenantDatabaseStatus {
    let mut view = status.clone();
    view.connections = None;
    if let Some(pool) = view.pool.as_mut() {
        pool.active_connections = 0;
        pool.idle_connections = 0;
        pool.utilization /= 10;
    }
    if let Some(health) = view.health.as_mut() {
        // Compared apart, with hysteresis (see `latency_moved`).
        health.latency_ms = health.latency_ms.map(|_| 0);
        health.checked_at = None;
        health.size_bytes = None;
    }
    view
}

/// `status` without what changes at every check of a quiet tenant: the
/// time of the check, the login latency inside its bucket and the size
/// (compared apart, see `size_moved`).
fn numbers(status: &TenantDatabaseStatus) -> TenantDatabaseStatus {
    let mut view = status.clone();
    if let Some(health) = view.health.as_mut() {
        health.latency_ms = health.latency_ms.map(|_| 0);
        health.checked_at = None;
        health.size_bytes = None;
    }
    view
}

/// Whether the database size moved by more than a twentieth. An idle
/// database's files change size by a few percent (the fleet benchmark saw
/// a third of 2,000 idle tenants' sizes differ from one hourly read to the
/// next): not worth a status write for each; the metric has every value.
fn size_moved(old: Option<i64>, new: Option<i64>) -> bool {
    match (old, new) {
        (Some(old), Some(new)) => (new - old).abs() * 20 > old.max(1),
        (None, None) => false,
        _ => true,
    }
}

/// Latency buckets for status, in milliseconds: status is rewritten when
/// the (smoothed) latency moves to another bucket, not on every jitter.
/// Logins to a database whose catalog is not cached took 70–230 ms on a
/// loaded server of 1,000 databases: a boundary at 100 ms made such a
/// fleet rewrite statuses all the time.
const LATENCY_BUCKETS_MS: [f64; 3] = [250.0, 1000.0, 2500.0];

/// How far past a boundary the latency must move to be news: half again.
const LATENCY_HYSTERESIS: f64 = 1.5;

fn latency_bucket(ms: f64) -> usize {
    LATENCY_BUCKETS_MS
        .iter()
        .position(|bound| ms < *bound)
        .unwrap_or(LATENCY_BUCKETS_MS.len())
}

/// Whether the login latency moved to another bucket, by half again past
/// the boundary (so a latency hovering at a boundary does not flap): up
/// only when even a third less would be in a higher bucket than `old`'s,
/// down only when even half more would be in a lower one.
pub fn latency_moved(old: Option<i64>, new: Option<i64>) -> bool {
    match (old, new) {
        (Some(old), Some(new)) => {
            let (old, new) = (old as f64, new as f64);
            let was = latency_bucket(old);
            latency_bucket(new / LATENCY_HYSTERESIS) > was || latency_bucket(new * LATENCY_HYSTERESIS) < was
        }
        (None, None) => false,
        _ => true,
    }
}

/// Smooths login latency over checks, so one slow login on a busy machine
/// is not news: a slower login counts for a third (exponentially weighted),
/// a faster one at once — a server that answers quickly again shows it at
/// the next login, instead of creeping back over many (a fleet whose first
/// logins ran under load, provisioning say, would otherwise rewrite its
/// statuses one by one for hours as each crossed back into its bucket).
pub fn smoothed_latency(previous: Option<i64>, latest: i64) -> i64 {
    match previous {
        Some(previous) if latest > previous => (previous * 2 + latest + 1) / 3,
        _ => latest,
    }
}

/// Whether `new` is worth writing over `old`: something significant
/// changed, or the heartbeat is due (`old`'s `checkedAt` older than
/// `heartbeat`) and a number moved — connections, pool use, size. The
/// time of the check alone, or a login latency moving inside its bucket,
/// is never worth a write: a quiet fleet of 10,000 tenants would otherwise
/// rewrite every status once per heartbeat (the live values are metrics).
pub fn worth_writing(
    old: Option<&TenantDatabaseStatus>,
    new: &TenantDatabaseStatus,
    heartbeat: Duration,
    now: &Time,
) -> bool {
    let Some(old) = old else {
        return true;
    };
    if old == new {
        return false;
    }
    let latency = |s: &TenantDatabaseStatus| s.health.as_ref().and_then(|h| h.latency_ms);
    if significant(old) != significant(new) || latency_moved(latency(old), latency(new)) {
        return true;
    }
    let size = |s: &TenantDatabaseStatus| s.health.as_ref().and_then(|h| h.size_bytes);
    if numbers(old) == numbers(new) && !size_moved(size(old), size(new)) {
        return false;
    }
    let checked = old.health.as_ref().and_then(|h| h.checked_at.as_ref());
    checked.is_none_or(|at| {
        let age = now.0.duration_since(at.0);
        age.as_secs() >= i64::try_from(heartbeat.as_secs()).unwrap_or(i64::MAX)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::tenant_database::PoolStatus;

    #[test]
    fn a_slow_login_counts_a_third_and_a_fast_one_at_once() {
        assert_eq!(smoothed_latency(None, 300), 300);
        assert_eq!(smoothed_latency(Some(150), 450), 250);
        // Back to normal after a spike: one login, one bucket move.
        assert_eq!(smoothed_latency(Some(309), 150), 150);
        assert!(latency_moved(Some(309), Some(smoothed_latency(Some(309), 150))));
        // Jitter around a quiet 150 ms never reaches the next bucket.
        let mut latency = 150;
        for latest in [400, 150, 400, 150, 400, 150] {
            latency = smoothed_latency(Some(latency), latest);
            assert!(!latency_moved(Some(150), Some(latency)), "{latency}");
        }
    }

    fn time(seconds: i64) -> Time {
        Time(k8s_openapi::jiff::Timestamp::from_second(seconds).unwrap())
    }

    fn ready(limit: i32) -> TenantDatabaseStatus {
        let mut status = TenantDatabaseStatus {
            phase: Some(TenantPhase::Ready),
            pool: Some(PoolStatus {
                max_connections: 10,
                connection_limit: limit,
                ..PoolStatus::default()
            }),
            ..TenantDatabaseStatus::default()
        };
        set_condition(
            &mut status.conditions,
            "Ready",
            true,
            "Provisioned",
            "",
            Some(1),
            &time(0),
        );
        status
    }

    fn sample(total: i32, login_ms: i64, at: i64) -> TenantHealth {
        TenantHealth {
            checked_at: Some(time(at)),
            server_error: None,
            database: Some(DatabaseSample {
                connection_limit: 20,
                total,
                idle: total,
                ..DatabaseSample::default()
            }),
            size_bytes: Some(8_000_000 + at),
            login: Some(LoginResult {
                ok: true,
                latency_ms: login_ms,
                message: None,
                password_rejected: false,
            }),
        }
    }

    fn applied(status: &TenantDatabaseStatus, health: &TenantHealth) -> TenantDatabaseStatus {
        let mut new = status.clone();
        apply(&mut new, health, &HealthPolicy::default(), Some(1), &time(1000));
        new
    }

    #[test]
    fn small_moves_are_not_written_until_the_heartbeat() {
        let policy = HealthPolicy::default();
        let first = applied(&ready(20), &sample(3, 4, 100));
        assert_eq!(first.connections.as_deref(), Some("3/20"));
        assert_eq!(first.pool.as_ref().unwrap().utilization, 15);
        // One more connection, a millisecond slower, a new size: same buckets.
        let next = applied(&first, &sample(2, 3, 160));
        assert!(!worth_writing(
            Some(&first),
            &next,
            policy.status_heartbeat,
            &time(160)
        ));
        // Jitter (4 ms, then 90 ms) is not news, nor is hovering at a
        // boundary (245 ms, then 260 ms).
        let fast = applied(&first, &sample(3, 4, 160));
        let jitter = applied(&fast, &sample(3, 90, 190));
        assert!(!worth_writing(
            Some(&fast),
            &jitter,
            policy.status_heartbeat,
            &time(190)
        ));
        let at_nine = applied(&first, &sample(3, 245, 160));
        let at_eleven = applied(&at_nine, &sample(3, 260, 190));
        assert!(!worth_writing(
            Some(&at_nine),
            &at_eleven,
            policy.status_heartbeat,
            &time(190)
        ));
        // …until the heartbeat is due.
        assert!(worth_writing(
            Some(&first),
            &next,
            policy.status_heartbeat,
            &time(400)
        ));
        // A quiet tenant — the same numbers, only a later check, a login a
        // few milliseconds off and a size a few percent off — is not
        // written, heartbeat or not; a size a tenth larger is.
        let mut quiet_sample = sample(3, 5, 400);
        quiet_sample.size_bytes = Some(8_300_000);
        let quiet = applied(&first, &quiet_sample);
        assert_ne!(quiet, first);
        assert!(!worth_writing(
            Some(&first),
            &quiet,
            policy.status_heartbeat,
            &time(10_000)
        ));
        quiet_sample.size_bytes = Some(8_900_000);
        let grown = applied(&first, &quiet_sample);
        assert!(worth_writing(
            Some(&first),
            &grown,
            policy.status_heartbeat,
            &time(10_000)
        ));
        // A utilization bucket crossed, a latency bucket crossed: written.
        let busier = applied(&first, &sample(5, 4, 160));
        assert!(worth_writing(
            Some(&first),
            &busier,
            policy.status_heartbeat,
            &time(160)
        ));
        let slower = applied(&first, &sample(3, 400, 160));
        assert!(worth_writing(
            Some(&first),
            &slower,
            policy.status_heartbeat,
            &time(160)
        ));
    }

    #[test]
    fn a_latency_just_past_a_boundary_does_not_flap() {
        // Just past 250 ms: later logins a little slower or faster are the
        // same bucket, however close `old` sits to its boundary.
        assert!(!latency_moved(Some(252), Some(253)));
        assert!(!latency_moved(Some(274), Some(277)));
        assert!(!latency_moved(Some(253), Some(245)));
        assert!(!latency_moved(Some(260), Some(220)));
        assert!(!latency_moved(Some(98), Some(119)));
        // A cold database's logins, 70–230 ms, are one bucket.
        assert!(!latency_moved(Some(67), Some(232)));
        assert!(!latency_moved(Some(232), Some(67)));
        assert!(!latency_moved(Some(240), Some(310)));
        // Half again past a boundary, either way, is news.
        assert!(latency_moved(Some(240), Some(380)));
        assert!(latency_moved(Some(260), Some(160)));
        assert!(latency_moved(Some(900), Some(1600)));
        assert!(latency_moved(Some(4), Some(3000)));
        assert!(latency_moved(Some(3000), Some(4)));
        assert!(!latency_moved(Some(40), Some(40)));
        assert!(latency_moved(None, Some(40)));
        assert!(!latency_moved(None, None));
    }

    #[test]
    fn near_the_limit_or_failing_login_is_degraded_and_recovers() {
        let full = applied(&ready(20), &sample(18, 4, 100));
        assert_eq!(full.phase, Some(TenantPhase::Degraded));
        let healthy = full.conditions.iter().find(|c| c.type_ == "Healthy").unwrap();
        assert_eq!(
            (healthy.status.as_str(), healthy.reason.as_str()),
            ("False", "ConnectionsNearLimit")
        );
        assert!(
            healthy.message.contains("90% or more of the limit of 20"),
            "{}",
            healthy.message
        );
        let calm = applied(&full, &sample(2, 4, 130));
        assert_eq!(calm.phase, Some(TenantPhase::Ready));

        let mut refused = sample(1, 4, 160);
        refused.login = Some(LoginResult {
            ok: false,
            latency_ms: 3,
            message: Some("password authentication failed for user \"t\"".into()),
            password_rejected: true,
        });
        let failing = applied(&calm, &refused);
        assert_eq!(failing.phase, Some(TenantPhase::Degraded));
        assert!(!failing.health.as_ref().unwrap().reachable);
        assert!(
            failing
                .health
                .as_ref()
                .unwrap()
                .message
                .as_deref()
                .unwrap()
                .contains("password authentication failed")
        );

        // A tenant whose provisioning is failing stays Degraded even when
        // its health looks fine.
        let mut not_provisioned = failing.clone();
        set_condition(
            &mut not_provisioned.conditions,
            "Ready",
            false,
            "ServerUnavailable",
            "",
            Some(1),
            &time(0),
        );
        assert_eq!(
            applied(&not_provisioned, &sample(1, 4, 190)).phase,
            Some(TenantPhase::Degraded)
        );
    }
}
