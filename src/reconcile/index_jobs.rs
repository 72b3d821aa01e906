//! Background index work. A build can take hours, so reconciles start it
//! here and move on; the job runs on its own connection to the tenant
//! database (no statement timeout, a lock timeout; a build runs as long as
//! the server keeps answering a liveness check on the side, so one on a
//! server gone silent ends instead of holding its slot) and records how it
//! ended, so the next reconcile reports `Building`, `Ready` or the failure
//! and retries a failure with backoff.
//!
//! Jobs wait their turn twice: one job at a time per tenant database (two
//! CREATE INDEX CONCURRENTLY on one table deadlock, each waiting for the
//! other's snapshot), then one of the server's build slots (at most
//! `maxIndexBuilds` builds at once per server, across all its tenants).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection};
use tokio::sync::{Mutex as AsyncMutex, OwnedMutexGuard, OwnedSemaphorePermit, Semaphore, broadcast};

use super::deadline::{ANSWER, while_answering, within};
use super::indexes::{JobStep, reason};

/// The lock timeout of index DDL. CREATE INDEX CONCURRENTLY takes a lock
/// that does not block the tenant's reads and writes, but it waits for
/// older transactions; past this long it fails and is retried later.
const SET_BUILD_LOCK_TIMEOUT: &str = "SET lock_timeout = '60s'";

/// Identifies one index of one tenant database on one server.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct JobKey {
    server: String,
    database: String,
    index: String,
}

impl JobKey {
    pub fn new(server: &str, database: &str, index: &str) -> Self {
        Self {
            server: server.to_owned(),
            database: database.to_owned(),
            index: index.to_owned(),
        }
    }
}

/// Where a started job is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JobPhase {
    /// Waiting for the database's other index job to end, or for one of
    /// the server's build slots.
    Queued,
    /// Its statements are running.
    Running,
}

/// What is known of an index's jobs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct JobRecord {
    /// `Some` while a job is queued or running.
    pub phase: Option<JobPhase>,
    /// What the running job does, for status.
    pub purpose: String,
    /// Failures in a row.
    pub failures: u32,
    /// PostgreSQL's message for the last failure.
    pub last_error: Option<String>,
    /// Not before this may a failed job be tried again.
    pub retry_at: Option<Instant>,
}

/// The turn of one tenant database: one index job at a time.
type DatabaseTurn = Arc<AsyncMutex<()>>;

/// One piece of background index work.
pub struct Job {
    pub key: JobKey,
    /// The server's build slots (`maxIndexBuilds`).
    pub limit: usize,
    pub tenant_db: PgConnectOptions,
    /// `namespace/name` of the tenant, announced when the job ends.
    pub owner: String,
    /// What the job does, for status while it runs.
    pub purpose: String,
    pub steps: Vec<JobStep>,
    /// Whether it takes a build slot.
    pub throttled: bool,
}

/// The background jobs of one process.
pub struct IndexJobs {
    records: Mutex<HashMap<JobKey, JobRecord>>,
    /// Build slots per server: the limit they were made for, and the slots.
    slots: Mutex<HashMap<String, (usize, Arc<Semaphore>)>>,
    /// One job at a time per `(server, database)`.
    databases: Mutex<HashMap<(String, String), DatabaseTurn>>,
    /// First retry delay after a failure; doubled per failure in a row.
    retry_base: Duration,
    /// Owners (`namespace/name`) whose job just ended.
    finished: broadcast::Sender<String>,
}

/// Longest wait between retries of a failing job.
const RETRY_MAX: Duration = Duration::from_secs(600);

impl IndexJobs {
    pub fn new(retry_base: Duration) -> Arc<Self> {
        Arc::new(Self {
            records: Mutex::new(HashMap::new()),
            slots: Mutex::new(HashMap::new()),
            databases: Mutex::new(HashMap::new()),
            retry_base,
            finished: broadcast::channel(1024).0,
        })
    }

    /// Owners (`namespace/name`) of jobs as they end.
    pub fn finished(&self) -> broadcast::Receiver<String> {
        self.finished.subscribe()
    }

    pub fn record(&self, key: &JobKey) -> Option<JobRecord> {
        self.lock().get(key).cloned()
    }

    /// Builds running or queued on `server`.
    pub fn active(&self, server: &str) -> (usize, usize) {
        let records = self.lock();
        let of_server = records.iter().filter(|(k, _)| k.server == server);
        let (mut running, mut queued) = (0, 0);
        for (_, record) in of_server {
            match record.phase {
                Some(JobPhase::Running) => running += 1,
                Some(JobPhase::Queued) => queued += 1,
                None => {}
            }
        }
        (running, queued)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<JobKey, JobRecord>> {
        self.records.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn slots(&self, server: &str, limit: usize) -> Arc<Semaphore> {
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        match slots.get(server) {
            Some((made_for, semaphore)) if *made_for == limit => semaphore.clone(),
            _ => {
                let semaphore = Arc::new(Semaphore::new(limit.max(1)));
                slots.insert(server.to_owned(), (limit, semaphore.clone()));
                semaphore
            }
        }
    }

    /// Starts `job` in the background, first taking one of the server's
    /// build slots when it builds. The job is `Queued` or `Running` in its
    /// record before this returns.
    pub fn start(self: &Arc<Self>, job: Job) -> tokio::task::JoinHandle<()> {
        let Job {
            key,
            limit,
            tenant_db,
            owner,
            purpose,
            steps,
            throttled,
        } = job;
        let slots = throttled.then(|| self.slots(&key.server, limit));
        let database = self
            .databases
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry((key.server.clone(), key.database.clone()))
            .or_default()
            .clone();
        // Take both turns now when free, so the record says Running at once.
        let mut turn: Option<(OwnedMutexGuard<()>, Option<OwnedSemaphorePermit>)> = None;
        if let Ok(guard) = database.clone().try_lock_owned() {
            match &slots {
                None => turn = Some((guard, None)),
                Some(slots) => {
                    if let Ok(permit) = slots.clone().try_acquire_owned() {
                        turn = Some((guard, Some(permit)));
                    }
                }
            }
        }
        let phase = if turn.is_some() {
            JobPhase::Running
        } else {
            JobPhase::Queued
        };
        {
            let mut records = self.lock();
            let record = records.entry(key.clone()).or_default();
            record.phase = Some(phase);
            record.purpose = purpose;
        }
        let jobs = self.clone();
        tokio::spawn(async move {
            let _turn = match turn {
                Some(turn) => turn,
                None => {
                    // The database first: a job waiting for it holds no slot.
                    let guard = database.lock_owned().await;
                    let permit = match slots {
                        Some(slots) => slots.acquire_owned().await.ok(),
                        None => None,
                    };
                    if let Some(record) = jobs.lock().get_mut(&key) {
                        record.phase = Some(JobPhase::Running);
                    }
                    (guard, permit)
                }
            };
            let result = run(&tenant_db, steps).await;
            {
                let mut records = jobs.lock();
                let record = records.entry(key.clone()).or_default();
                record.phase = None;
                match result {
                    Ok(()) => *record = JobRecord::default(),
                    Err(error) => {
                        record.failures += 1;
                        let exponent = record.failures.saturating_sub(1).min(16);
                        let delay = jobs.retry_base.saturating_mul(2u32.saturating_pow(exponent));
                        record.retry_at = Some(Instant::now() + delay.min(RETRY_MAX));
                        tracing::warn!(index = %key.index, database = %key.database, server = %key.server, %error, "index job failed");
                        record.last_error = Some(error);
                    }
                }
            }
            let _ = jobs.finished.send(owner);
        })
    }
}

/// Runs the steps on one fresh connection to the tenant database.
async fn run(tenant_db: &PgConnectOptions, steps: Vec<JobStep>) -> Result<(), String> {
    // Builds are slow by nature: not worth a slow-statement warning each.
    let options = tenant_db
        .clone()
        .application_name("tenantdb-index")
        .disable_statement_logging();
    let mut conn = crate::admin_access::connect(&options)
        .await
        .map_err(|e| reason(&e))?;
    // Quick calls have a deadline; a build, which may rightly take hours,
    // runs as long as the server keeps answering a check on the side.
    let result = async {
        within(ANSWER, sqlx::query(SET_BUILD_LOCK_TIMEOUT).execute(&mut conn)).await?;
        within(
            ANSWER,
            sqlx::query("SET statement_timeout = 0").execute(&mut conn),
        )
        .await?;
        // DROP … IF EXISTS would log a NOTICE for every fresh build.
        within(
            ANSWER,
            sqlx::query("SET client_min_messages = warning").execute(&mut conn),
        )
        .await?;
        for step in steps {
            match step {
                JobStep::Alone(statement) => {
                    while_answering(tenant_db, sqlx::query(statement).execute(&mut conn)).await?;
                }
                JobStep::Together(statements) => {
                    let mut tx = within(ANSWER, conn.begin()).await?;
                    for statement in statements {
                        while_answering(tenant_db, sqlx::query(statement).execute(&mut *tx)).await?;
                    }
                    within(ANSWER, tx.commit()).await?;
                }
            }
        }
        Ok::<_, sqlx::Error>(())
    }
    .await;
    if result.is_ok() {
        let _ = within(ANSWER, conn.close()).await;
    }
    result.map_err(|e| reason(&e))
}
