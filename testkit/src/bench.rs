//! `tenantdb-bench` (`make bench`): where tenantdb stands,
//! measured in one run on one throwaway PostgreSQL —
//!
//! 1. provisioning N tenants through `tenantdb apply` and through the
//!    operator (API emulator + `tenantdb run`), against the raw-SQL floor:
//!    the same statements sent by a plain client, one connection per worker;
//! 2. the steady state of N Ready tenants: Kubernetes writes, SQL statements
//!    per health interval, operator CPU;
//! 3. the operator's resident memory with 1,000 and 10,000 TenantDatabases
//!    in its caches;
//! 4. reconcile latency: a spec change to the new CONNECTION LIMIT in
//!    PostgreSQL.
//!
//! The operator and `apply` run as child processes — the `tenantdb` binary
//! built beside this one, or `TENANTDB_BIN` — so their CPU and memory are
//! theirs alone.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::emulator::{Emulator, EmulatorOptions};
use anyhow::{Context, bail};
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use serde::Serialize;
use serde_json::json;
use sqlx::{Connection, PgConnection};
use tenantdb::api::{DatabaseServer, TenantDatabase};
use tenantdb::reconcile::{self, Snapshot, Step, StoredPassword};
use tenantdb::sql::{Ident, ScramVerifier};
use tenantdb::throwaway::ThrowawayPostgres;

const ADMIN_ROLE: &str = "tenantdb_bench_admin";

/// Each tenant's login is checked this often during the benchmark.
const LOGIN_INTERVAL: Duration = Duration::from_secs(10);

#[derive(clap::Parser)]
#[command(
    name = "tenantdb-bench",
    about = "Measure provisioning against the raw-SQL floor, the steady state, memory and reconcile latency"
)]
pub struct Args {
    /// Tenants provisioned by each of the three provisioning runs.
    #[arg(long, default_value_t = 200)]
    tenants: usize,

    /// Workers: connections of the raw-SQL floor, `tenantdb apply --concurrency`.
    #[arg(long, default_value_t = 4)]
    workers: usize,

    /// Health intervals watched in the steady state.
    #[arg(long, default_value_t = 5)]
    intervals: u32,

    /// The health check interval during the steady state, in seconds.
    #[arg(long, default_value_t = 2)]
    interval_seconds: u64,

    /// Numbers of TenantDatabase objects at which the operator's memory is read.
    #[arg(long, value_delimiter = ',', default_value = "1000,10000")]
    memory_objects: Vec<usize>,

    /// Spec changes timed for the reconcile latency.
    #[arg(long, default_value_t = 100)]
    changes: usize,

    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub machine: Machine,
    pub tenants: usize,
    pub workers: usize,
    pub provisioning: Provisioning,
    pub steady_state: SteadyState,
    pub memory: Vec<MemoryPoint>,
    pub reconcile_latency: Latency,
}

#[derive(Debug, Serialize)]
pub struct Machine {
    pub cpus: usize,
    pub postgres: String,
}

#[derive(Debug, Serialize)]
pub struct Provisioning {
    /// Milliseconds per tenant, wall clock, the mean of each arm's two runs
    /// (run in the order floor, apply, operator, operator, apply, floor).
    pub floor_ms_per_tenant: f64,
    pub apply_ms_per_tenant: f64,
    pub operator_ms_per_tenant: f64,
    pub apply_ratio: f64,
    pub operator_ratio: f64,
    /// PostgreSQL's CPU milliseconds per tenant (its postmaster and every
    /// backend, exited ones included), the mean of each arm's two runs.
    pub floor_postgres_cpu_ms_per_tenant: f64,
    pub apply_postgres_cpu_ms_per_tenant: f64,
    pub operator_postgres_cpu_ms_per_tenant: f64,
    pub apply_postgres_cpu_ratio: f64,
    pub operator_postgres_cpu_ratio: f64,
    /// Every run: wall clock and CPU seconds per process.
    pub floor_runs: Vec<Cpu>,
    pub apply_runs: Vec<Cpu>,
    pub operator_runs: Vec<Cpu>,
}

/// CPU seconds spent during one run, by whom.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct Cpu {
    pub wall_seconds: f64,
    pub postgres: f64,
    /// The tenantdb process doing the work (`apply`, or `tenantdb run`).
    pub tenantdb: f64,
    /// This benchmark process: the plain client of the floor, the API emulator.
    pub bench: f64,
}

/// CPU seconds of the benchmark's PostgreSQL (its postmaster `postmaster`
/// and the postmaster's children, and no other server on the machine), of
/// this process, and of its reaped children.
fn cpu_now(postmaster: u32, operator: Option<u32>) -> (f64, f64, f64, f64) {
    let mut postgres = 0.0;
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for entry in entries.flatten() {
            let path = entry.path().join("stat");
            let pid = entry.file_name().to_str().and_then(|p| p.parse::<u32>().ok());
            if let Ok(stat) = std::fs::read_to_string(&path)
                && (pid == Some(postmaster) || stat_field(&stat, 1) == Some(postmaster))
            {
                // Live backends' own time, plus (on the postmaster) the time
                // of the backends it has reaped: a backend's CPU moves from
                // the one to the other when its connection closes.
                postgres +=
                    stat_cpu(&stat, 11) + stat_cpu(&stat, 12) + stat_cpu(&stat, 13) + stat_cpu(&stat, 14);
            }
        }
    }
    let own = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let operator = operator
        .and_then(|pid| std::fs::read_to_string(format!("/proc/{pid}/stat")).ok())
        .map_or(0.0, |stat| stat_cpu(&stat, 11) + stat_cpu(&stat, 12));
    (
        postgres,
        stat_cpu(&own, 11) + stat_cpu(&own, 12),
        stat_cpu(&own, 13) + stat_cpu(&own, 14),
        operator,
    )
}

/// Field `index` (counted after the command name) of a /proc stat line.
fn stat_field(stat: &str, index: usize) -> Option<u32> {
    stat.rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().nth(index))
        .and_then(|f| f.parse().ok())
}

/// The pid of the server's postmaster (the first line of `postmaster.pid`).
fn postmaster_pid(postgres: &ThrowawayPostgres) -> anyhow::Result<u32> {
    let file = std::fs::read_to_string(postgres.data_dir().join("postmaster.pid"))
        .context("reading postmaster.pid")?;
    file.lines()
        .next()
        .and_then(|l| l.trim().parse().ok())
        .context("postmaster.pid holds no pid")
}

/// Field `index` (counted after the command name) of a /proc stat line, in seconds.
fn stat_cpu(stat: &str, index: usize) -> f64 {
    stat.rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().nth(index))
        .and_then(|f| f.parse::<f64>().ok())
        .map_or(0.0, |ticks| ticks / clock_ticks())
}

/// Runs `work` and reports its wall clock and who used the CPU.
async fn measured<T>(
    postmaster: u32,
    operator: Option<u32>,
    work: impl Future<Output = anyhow::Result<T>>,
) -> anyhow::Result<(T, Cpu)> {
    let (pg0, own0, children0, op0) = cpu_now(postmaster, operator);
    let started = Instant::now();
    let value = work.await?;
    let wall_seconds = started.elapsed().as_secs_f64();
    // Let PostgreSQL reap the backends of closed connections, whose time
    // then shows on the postmaster.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (pg1, own1, children1, op1) = cpu_now(postmaster, operator);
    Ok((
        value,
        Cpu {
            wall_seconds: round(wall_seconds),
            postgres: round(pg1 - pg0),
            tenantdb: round(children1 - children0 + op1 - op0),
            bench: round(own1 - own0),
        },
    ))
}

#[derive(Debug, Serialize)]
pub struct SteadyState {
    pub intervals: u32,
    pub interval_seconds: u64,
    /// Kubernetes write requests by the operator over the intervals.
    pub kubernetes_writes: u64,
    /// Statements the admin role ran, per interval (pg_stat_statements).
    pub statements_per_interval: f64,
    /// Distinct statements the admin role ran.
    pub distinct_statements: usize,
    /// Each of them, its text's first line and its calls, so a surprise
    /// says what ran.
    pub statements: Vec<(String, i64)>,
    pub operator_cpu_seconds: f64,
    /// Windows measured again because a tenant's health was news in them
    /// (its status written).
    pub noisy_windows: u32,
}

#[derive(Debug, Serialize)]
pub struct MemoryPoint {
    pub objects: usize,
    pub rss_mib: f64,
}

#[derive(Debug, Serialize)]
pub struct Latency {
    pub changes: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    if args.tenants == 0 || args.workers == 0 || args.intervals == 0 {
        bail!("--tenants, --workers and --intervals must be at least 1");
    }
    let exe = tenantdb_binary()?;
    let work = tempdir("tenantdb-bench")?;
    eprintln!("starting a throwaway PostgreSQL…");
    let postgres = tokio::task::spawn_blocking(|| {
        // Autovacuum off: its work grows with the number of databases and
        // would tax whichever run comes later.
        ThrowawayPostgres::start_with(&[
            "shared_preload_libraries=pg_stat_statements",
            "max_connections=500",
            "autovacuum=off",
        ])
    })
    .await??;
    let admin_password = tenantdb::password::generate();
    let mut superuser = PgConnection::connect(&postgres.superuser_url()).await?;
    sqlx::query(tenantdb::sql::create_admin_role(
        &Ident::parse(ADMIN_ROLE)?,
        &ScramVerifier::generate(&admin_password),
    ))
    .execute(&mut superuser)
    .await?;
    sqlx::query("CREATE EXTENSION pg_stat_statements")
        .execute(&mut superuser)
        .await?;
    let postgres_version: String = sqlx::query_scalar("SELECT current_setting('server_version')")
        .fetch_one(&mut superuser)
        .await?;
    let admin_url = postgres.url(ADMIN_ROLE, &admin_password, "postgres");

    // The three arms in the order floor, apply, operator, operator, apply,
    // floor, each compared by its mean: this machine's speed drifts by tens
    // of percent over minutes, and a drift that is roughly linear over the
    // run cancels out of A B B A means (a best-of-k does not: it picks
    // whichever run the drift favoured). PostgreSQL's CPU seconds per
    // tenant are reported beside wall clock; they move far less with noise.
    let postmaster = postmaster_pid(&postgres)?;
    let emulator = Emulator::start(EmulatorOptions {
        crds: tenantdb::api::crds(),
        ..EmulatorOptions::default()
    })
    .await
    .map_err(|e| anyhow::anyhow!("starting the API emulator: {}", e.message))?;
    let client = emulator.client()?;
    let kubeconfig = work.join("kubeconfig");
    std::fs::write(&kubeconfig, emulator.kubeconfig_for("operator"))?;
    let mut operator = start_operator(&exe, &kubeconfig, &work.join("operator.log"))?;
    let server = add_server(&client, &postgres, &admin_password, args.interval_seconds).await?;
    let mut floor_runs = Vec::new();
    let mut apply_runs = Vec::new();
    let mut operator_runs = Vec::new();
    for (round, arm) in ["floor", "apply", "operator", "operator", "apply", "floor"]
        .into_iter()
        .enumerate()
    {
        let namespace = format!("{arm}{round}");
        eprintln!("provisioning {} tenants: {arm} ({}/6)…", args.tenants, round + 1);
        let run = match arm {
            "floor" => {
                measured(
                    postmaster,
                    None,
                    floor(&admin_url, &namespace, args.tenants, args.workers),
                )
                .await?
                .1
            }
            "apply" => {
                measured(
                    postmaster,
                    None,
                    apply(&exe, &work, &admin_url, &namespace, args.tenants, args.workers),
                )
                .await?
                .1
            }
            _ => {
                add_namespace(&client, &namespace).await?;
                measured(postmaster, operator.id(), async {
                    create_tenants(&client, &namespace, args.tenants, &server).await?;
                    wait_for_all(&client, &namespace, args.tenants, "Ready", |t| {
                        condition(t, "Ready")
                    })
                    .await
                })
                .await?
                .1
            }
        };
        match arm {
            "floor" => floor_runs.push(run),
            "apply" => apply_runs.push(run),
            _ => operator_runs.push(run),
        }
        // Every run starts on a server with the same databases: a server's
        // later databases cost more than its first (measured: the same
        // floor at 4.5 s and 12.3 s for 200 tenants with 0 and 1,000
        // databases already there), and A B B A means cancel only a linear
        // growth.
        if arm == "operator" {
            forget_tenants(&client, &namespace).await?;
        }
        drop_databases_and_roles(&mut superuser, &namespace).await?;
    }
    // The steady state and the latency watch tenants of their own,
    // provisioned (untimed) after the measured runs.
    eprintln!("provisioning {} tenants for the steady state…", args.tenants);
    let operator_namespaces: Vec<String> = vec!["steady".to_owned()];
    add_namespace(&client, "steady").await?;
    create_tenants(&client, "steady", args.tenants, &server).await?;
    wait_for_all(&client, "steady", args.tenants, "Ready", |t| {
        condition(t, "Ready")
    })
    .await?;

    // 2. The steady state.
    eprintln!("watching {} quiet health intervals…", args.intervals);
    // Quiet means after every tenant's first login (spread over the login
    // interval), whose result is worth a status write.
    for namespace in &operator_namespaces {
        wait_for_all(&client, namespace, args.tenants, "Healthy", |t| {
            condition(t, "Healthy")
                && t.status
                    .as_ref()
                    .and_then(|s| s.health.as_ref())
                    .is_some_and(|h| h.latency_ms.is_some())
        })
        .await?;
    }
    // Later rounds of logins, warm where the first met a cold database,
    // settle the smoothed latency.
    tokio::time::sleep(LOGIN_INTERVAL * 3).await;
    let interval = Duration::from_secs(args.interval_seconds);
    tokio::time::sleep(interval * 2).await;
    let admin_oid: sqlx::postgres::types::Oid =
        sqlx::query_scalar("SELECT oid FROM pg_roles WHERE rolname = $1")
            .bind(ADMIN_ROLE)
            .fetch_one(&mut superuser)
            .await?;
    // A window in which a tenant's health was news (a login latency that
    // really moved, say, on a loaded machine) is not a quiet one: such a
    // window is measured again, up to five times, and counted. Writes in a
    // grace second after the window count too, so a status write whose
    // reconcile ran inside the window is not missed.
    let mut noisy_windows = 0;
    let steady_state = loop {
        sqlx::query("SELECT pg_stat_statements_reset()")
            .execute(&mut superuser)
            .await?;
        let writes_before = writes(&emulator.request_counts_of("operator"));
        let cpu_before = cpu_seconds(operator.id())?;
        tokio::time::sleep(interval * args.intervals).await;
        let cpu_after = cpu_seconds(operator.id())?;
        let writes_after = writes(&emulator.request_counts_of("operator"));
        let statements: Vec<(String, i64)> =
            sqlx::query_as("SELECT query, calls FROM pg_stat_statements WHERE userid = $1")
                .bind(admin_oid)
                .fetch_all(&mut superuser)
                .await?;
        tokio::time::sleep(Duration::from_secs(1)).await;
        let writes_late = writes(&emulator.request_counts_of("operator"));
        let steady_state = SteadyState {
            intervals: args.intervals,
            interval_seconds: args.interval_seconds,
            kubernetes_writes: writes_after - writes_before,
            statements_per_interval: statements.iter().map(|(_, c)| *c as f64).sum::<f64>()
                / f64::from(args.intervals),
            distinct_statements: statements.len(),
            statements: statements
                .iter()
                .map(|(query, calls)| (first_words(query), *calls))
                .collect(),
            operator_cpu_seconds: cpu_after - cpu_before,
            noisy_windows,
        };
        if writes_late == writes_before || noisy_windows == 4 {
            break steady_state;
        }
        noisy_windows += 1;
    };

    // 4. Reconcile latency.
    eprintln!("timing {} spec changes…", args.changes);
    let reconcile_latency = latency(&client, &operator_namespaces[0], &mut superuser, args.changes).await?;

    // 3. Memory, with a fresh operator and tenants on a server that does not exist.
    let _ = operator.kill().await;
    let mut memory = Vec::new();
    if !args.memory_objects.is_empty() {
        let namespace: Namespace = serde_json::from_value(json!({"metadata": {"name": "memory"}}))?;
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &namespace)
            .await?;
        let mut operator = start_operator(&exe, &kubeconfig, &work.join("operator-memory.log"))?;
        let mut created = 0;
        let mut targets = args.memory_objects.clone();
        targets.sort_unstable();
        for objects in targets {
            eprintln!("reading the operator's memory with {objects} TenantDatabases…");
            // The operator's own tenants count towards the total.
            let own = args.tenants * operator_namespaces.len();
            let wanted = objects.saturating_sub(own);
            create_tenants_from(
                &client,
                "memory",
                created,
                wanted.saturating_sub(created),
                "ghost",
            )
            .await?;
            created = created.max(wanted);
            // Every object reconciled (stalled on the missing server), then settle.
            wait_for_all(&client, "memory", created, "reconciled", |t| {
                t.status.as_ref().is_some_and(|s| !s.conditions.is_empty())
            })
            .await?;
            tokio::time::sleep(Duration::from_secs(3)).await;
            memory.push(MemoryPoint {
                objects: created + own,
                rss_mib: rss_mib(operator.id())?,
            });
        }
        let _ = operator.kill().await;
    }

    let per_tenant = |runs: &[Cpu], of: fn(&Cpu) -> f64| {
        runs.iter().map(of).sum::<f64>() / runs.len() as f64 / args.tenants as f64
    };
    let wall_ms = |runs: &[Cpu]| per_tenant(runs, |c| c.wall_seconds) * 1000.0;
    let postgres_ms = |runs: &[Cpu]| per_tenant(runs, |c| c.postgres) * 1000.0;
    let (floor_ms, apply_ms, operator_ms) = (
        wall_ms(&floor_runs),
        wall_ms(&apply_runs),
        wall_ms(&operator_runs),
    );
    let (floor_pg, apply_pg, operator_pg) = (
        postgres_ms(&floor_runs),
        postgres_ms(&apply_runs),
        postgres_ms(&operator_runs),
    );
    let report = Report {
        machine: Machine {
            cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
            postgres: postgres_version,
        },
        tenants: args.tenants,
        workers: args.workers,
        provisioning: Provisioning {
            floor_ms_per_tenant: round(floor_ms),
            apply_ms_per_tenant: round(apply_ms),
            operator_ms_per_tenant: round(operator_ms),
            apply_ratio: round(apply_ms / floor_ms),
            operator_ratio: round(operator_ms / floor_ms),
            floor_postgres_cpu_ms_per_tenant: round(floor_pg),
            apply_postgres_cpu_ms_per_tenant: round(apply_pg),
            operator_postgres_cpu_ms_per_tenant: round(operator_pg),
            apply_postgres_cpu_ratio: round(apply_pg / floor_pg),
            operator_postgres_cpu_ratio: round(operator_pg / floor_pg),
            floor_runs,
            apply_runs,
            operator_runs,
        },
        steady_state,
        memory,
        reconcile_latency,
    };
    drop(emulator);
    let _ = superuser.close().await;
    tokio::task::spawn_blocking(move || drop(postgres)).await?;
    if std::env::var_os("TENANTDB_BENCH_KEEP").is_none() {
        let _ = std::fs::remove_dir_all(&work);
    } else {
        eprintln!("kept {}", work.display());
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_table(&report);
    }
    Ok(ExitCode::SUCCESS)
}

fn round(value: f64) -> f64 {
    (value * 100.0).round() / 100.0
}

/// The `tenantdb` binary the benchmark runs: `TENANTDB_BIN`, else the one
/// cargo built beside this binary.
fn tenantdb_binary() -> anyhow::Result<PathBuf> {
    if let Some(path) = std::env::var_os("TENANTDB_BIN") {
        return Ok(PathBuf::from(path));
    }
    let here = std::env::current_exe().context("finding this binary")?;
    let beside = here.with_file_name("tenantdb");
    if !beside.is_file() {
        bail!(
            "{} not found: build it with the same profile first (cargo build --release --bin tenantdb), or set TENANTDB_BIN",
            beside.display()
        );
    }
    Ok(beside)
}

fn tempdir(prefix: &str) -> anyhow::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!(
        "{prefix}-{}",
        tenantdb::password::generate()[..8].to_lowercase()
    ));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// A tenant spec as every run provisions it: a pool contract and guard rails.
fn tenant(namespace: &str, name: &str, server: &str) -> TenantDatabase {
    serde_json::from_value(json!({
        "apiVersion": "tenantdb.io/v1alpha1", "kind": "TenantDatabase",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"server": server, "pool": {"maxConnections": 5, "replicas": 2},
                 "limits": {"statementTimeout": "15s", "idleInTransactionSessionTimeout": "60s"}}
    }))
    .expect("a valid tenant")
}

/// The raw-SQL floor: for each tenant, exactly the statements tenantdb's
/// plan for a new tenant holds (verifiers computed beforehand), sent by a
/// plain client in as few round trips as PostgreSQL allows — role steps in
/// one transaction, CREATE DATABASE alone, database steps in one — over one
/// connection per worker.
async fn floor(admin_url: &str, namespace: &str, tenants: usize, workers: usize) -> anyhow::Result<Duration> {
    let server: DatabaseServer = serde_json::from_value(json!({
        "apiVersion": "tenantdb.io/v1alpha1", "kind": "DatabaseServer", "metadata": {"name": "floor"},
        "spec": {"host": "unused", "adminSecretRef": {"namespace": "x", "name": "y"}}
    }))?;
    let mut scripts = Vec::new();
    for i in 0..tenants {
        let desired = reconcile::resolve(&tenant(namespace, &format!("t{i:05}"), "floor"), &server)?;
        let plan = reconcile::plan::plan_provision(
            &desired,
            &Snapshot::default(),
            StoredPassword::Missing,
            tenantdb::password::generate_password(),
        )?;
        let (mut before, mut create, mut after) = (Vec::new(), None, Vec::new());
        for step in &plan.steps {
            let Some(statement) = step.statement() else {
                continue;
            };
            match step {
                Step::CreateDatabase { .. } => create = Some(statement.0),
                _ if create.is_none() => before.push(statement.0),
                _ => after.push(statement.0),
            }
        }
        scripts.push((
            format!("BEGIN; {}; COMMIT", before.join("; ")),
            create.context("the plan creates the database")?,
            format!("BEGIN; {}; COMMIT", after.join("; ")),
        ));
    }
    let queue = Arc::new(std::sync::Mutex::new(scripts));
    let mut connections = Vec::new();
    for _ in 0..workers {
        connections.push(PgConnection::connect(admin_url).await?);
    }
    let started = Instant::now();
    let results = futures::future::join_all(connections.into_iter().map(|mut conn| {
        let queue = queue.clone();
        async move {
            loop {
                let next = queue.lock().unwrap_or_else(|p| p.into_inner()).pop();
                let Some((before, create, after)) = next else {
                    break;
                };
                sqlx::raw_sql(sqlx::AssertSqlSafe(before))
                    .execute(&mut conn)
                    .await?;
                sqlx::raw_sql(sqlx::AssertSqlSafe(create))
                    .execute(&mut conn)
                    .await?;
                sqlx::raw_sql(sqlx::AssertSqlSafe(after))
                    .execute(&mut conn)
                    .await?;
            }
            conn.close().await
        }
    }))
    .await;
    let elapsed = started.elapsed();
    for result in results {
        result?;
    }
    Ok(elapsed)
}

/// `tenantdb apply` as a person runs it: manifests in a file, Secrets written.
async fn apply(
    exe: &Path,
    work: &Path,
    admin_url: &str,
    namespace: &str,
    tenants: usize,
    workers: usize,
) -> anyhow::Result<Duration> {
    let manifests = work.join(namespace);
    std::fs::create_dir_all(&manifests)?;
    let mut yaml = String::from(
        "apiVersion: tenantdb.io/v1alpha1\nkind: DatabaseServer\nmetadata: {name: bench-pg}\n\
         spec: {host: unused, adminSecretRef: {namespace: ops, name: pg-admin}}\n",
    );
    for i in 0..tenants {
        yaml.push_str("---\n");
        yaml.push_str(&serde_norway::to_string(&tenant(
            namespace,
            &format!("t{i:05}"),
            "bench-pg",
        ))?);
    }
    std::fs::write(manifests.join("tenants.yaml"), yaml)?;
    let started = Instant::now();
    let output = tokio::process::Command::new(exe)
        .args(["apply", "-f"])
        .arg(&manifests)
        .args(["--concurrency", &workers.to_string(), "--secrets-dir"])
        .arg(work.join("secrets"))
        .env("TENANTDB_ADMIN_URL", admin_url)
        .output()
        .await?;
    let elapsed = started.elapsed();
    if !output.status.success() {
        bail!(
            "tenantdb apply failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(elapsed)
}

/// A statement's text, shortened to its first 120 characters on one line.
fn first_words(query: &str) -> String {
    let line = query.split_whitespace().collect::<Vec<_>>().join(" ");
    line.chars().take(120).collect()
}

fn start_operator(exe: &Path, kubeconfig: &Path, log: &Path) -> anyhow::Result<tokio::process::Child> {
    Ok(tokio::process::Command::new(exe)
        .args(["run", "--kubeconfig"])
        .arg(kubeconfig)
        .args([
            "--no-leader-election",
            "--http-addr",
            "127.0.0.1:0",
            "--resync",
            "5m",
        ])
        .env(
            "RUST_LOG",
            std::env::var("TENANTDB_BENCH_OPERATOR_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log)?)
        .kill_on_drop(true)
        .spawn()?)
}

/// Deletes the TenantDatabases of `namespace` (Retain: their databases
/// stay) and waits until they are gone.
async fn forget_tenants(client: &kube::Client, namespace: &str) -> anyhow::Result<()> {
    let api: Api<TenantDatabase> = Api::namespaced(client.clone(), namespace);
    for tenant in api.list(&ListParams::default()).await?.items {
        let name = tenant.metadata.name.unwrap_or_default();
        api.delete(&name, &Default::default()).await?;
    }
    let started = Instant::now();
    while !api.list(&ListParams::default()).await?.items.is_empty() {
        if started.elapsed() > Duration::from_secs(300) {
            bail!("the TenantDatabases of {namespace} were not deleted within 5 minutes");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(())
}

/// Drops the databases and roles of `namespace`'s tenants (named
/// `<namespace>_…`), as the superuser, untimed.
async fn drop_databases_and_roles(superuser: &mut PgConnection, namespace: &str) -> anyhow::Result<()> {
    let prefix = format!("{namespace}\\_%");
    let databases: Vec<String> =
        sqlx::query_scalar("SELECT datname::text FROM pg_database WHERE datname LIKE $1")
            .bind(&prefix)
            .fetch_all(&mut *superuser)
            .await?;
    for database in databases {
        let database = Ident::parse(&database)?;
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE {database} WITH (FORCE)"
        )))
        .execute(&mut *superuser)
        .await?;
    }
    let roles: Vec<String> = sqlx::query_scalar("SELECT rolname::text FROM pg_roles WHERE rolname LIKE $1")
        .bind(&prefix)
        .fetch_all(&mut *superuser)
        .await?;
    for role in roles {
        let role = Ident::parse(&role)?;
        sqlx::query(sqlx::AssertSqlSafe(format!("DROP ROLE {role}")))
            .execute(&mut *superuser)
            .await?;
    }
    Ok(())
}

async fn add_namespace(client: &kube::Client, name: &str) -> anyhow::Result<()> {
    let namespace: Namespace = serde_json::from_value(json!({"metadata": {"name": name}}))?;
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &namespace)
        .await?;
    Ok(())
}

async fn add_server(
    client: &kube::Client,
    postgres: &ThrowawayPostgres,
    admin_password: &str,
    interval_seconds: u64,
) -> anyhow::Result<String> {
    add_namespace(client, "ops").await?;
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": "pg-admin"},
        "stringData": {"username": ADMIN_ROLE, "password": admin_password}
    }))?;
    Api::<Secret>::namespaced(client.clone(), "ops")
        .create(&PostParams::default(), &secret)
        .await?;
    let server: DatabaseServer = serde_json::from_value(json!({
        "apiVersion": "tenantdb.io/v1alpha1", "kind": "DatabaseServer",
        "metadata": {"name": "bench-pg"},
        "spec": {"host": postgres.host(), "port": postgres.port(), "sslMode": "disable",
                 "adminSecretRef": {"namespace": "ops", "name": "pg-admin"},
                 "healthCheck": {"interval": format!("{interval_seconds}s"), "loginInterval": format!("{}s", LOGIN_INTERVAL.as_secs())}}
    }))?;
    let servers: Api<DatabaseServer> = Api::all(client.clone());
    servers.create(&PostParams::default(), &server).await?;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let server = servers.get("bench-pg").await?;
        let ready = server.status.as_ref().is_some_and(|s| {
            s.conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True")
        });
        if ready {
            return Ok("bench-pg".into());
        }
        if Instant::now() > deadline {
            bail!("the DatabaseServer never became Ready: {:?}", server.status);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn create_tenants(
    client: &kube::Client,
    namespace: &str,
    count: usize,
    server: &str,
) -> anyhow::Result<()> {
    create_tenants_from(client, namespace, 0, count, server).await
}

/// Creates tenants `first..first + count`, a few requests at a time.
async fn create_tenants_from(
    client: &kube::Client,
    namespace: &str,
    first: usize,
    count: usize,
    server: &str,
) -> anyhow::Result<()> {
    let api: Api<TenantDatabase> = Api::namespaced(client.clone(), namespace);
    let results: Vec<Result<TenantDatabase, kube::Error>> = futures::stream::iter(first..first + count)
        .map(|i| {
            let api = api.clone();
            async move {
                api.create(
                    &PostParams::default(),
                    &tenant(namespace, &format!("t{i:05}"), server),
                )
                .await
            }
        })
        .buffer_unordered(8)
        .collect()
        .await;
    for result in results {
        result?;
    }
    Ok(())
}

fn condition(tenant: &TenantDatabase, kind: &str) -> bool {
    tenant
        .status
        .as_ref()
        .is_some_and(|s| s.conditions.iter().any(|c| c.type_ == kind && c.status == "True"))
}

/// Waits until `count` tenants of `namespace` pass `check` (10 minutes at most).
async fn wait_for_all(
    client: &kube::Client,
    namespace: &str,
    count: usize,
    what: &str,
    check: impl Fn(&TenantDatabase) -> bool,
) -> anyhow::Result<()> {
    let api: Api<TenantDatabase> = Api::namespaced(client.clone(), namespace);
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let passing = api
            .list(&ListParams::default())
            .await?
            .items
            .iter()
            .filter(|t| check(t))
            .count();
        if passing >= count {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("only {passing} of {count} tenants in {namespace} became {what}");
        }
        // Listing costs the emulator and this process CPU the operator and
        // PostgreSQL would otherwise have: look a few times a second only.
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn writes(counts: &BTreeMap<String, u64>) -> u64 {
    counts
        .iter()
        .filter(|(k, _)| {
            ["create ", "update ", "patch ", "delete "]
                .iter()
                .any(|w| k.starts_with(w))
        })
        .map(|(_, v)| *v)
        .sum()
}

/// User + system CPU seconds of process `pid`, from /proc.
fn cpu_seconds(pid: Option<u32>) -> anyhow::Result<f64> {
    let pid = pid.context("the operator exited")?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which may hold spaces) start at ')'.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after ')'.
    Ok((ticks(11) + ticks(12)) / clock_ticks())
}

fn clock_ticks() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

/// Resident memory of process `pid` in MiB, from /proc.
fn rss_mib(pid: Option<u32>) -> anyhow::Result<f64> {
    let pid = pid.context("the operator exited")?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no VmRSS")?;
    Ok(round(kib / 1024.0))
}

/// `changes` times: set a tenant's `pool.connectionLimit` and time until
/// its role's CONNECTION LIMIT in PostgreSQL is the new one.
async fn latency(
    client: &kube::Client,
    namespace: &str,
    superuser: &mut PgConnection,
    changes: usize,
) -> anyhow::Result<Latency> {
    let api: Api<TenantDatabase> = Api::namespaced(client.clone(), namespace);
    let role = api
        .get("t00000")
        .await?
        .status
        .and_then(|s| s.role_name)
        .context("tenant t00000 has no role yet")?;
    let mut samples = Vec::new();
    for i in 0..changes {
        let limit = 100 + i32::try_from(i % 500)?;
        let started = Instant::now();
        api.patch(
            "t00000",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"pool": {"connectionLimit": limit}}})),
        )
        .await?;
        loop {
            let current: i32 = sqlx::query_scalar("SELECT rolconnlimit FROM pg_roles WHERE rolname = $1")
                .bind(&role)
                .fetch_one(&mut *superuser)
                .await?;
            if current == limit {
                break;
            }
            if started.elapsed() > Duration::from_secs(60) {
                bail!("the connection limit never became {limit}");
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        samples.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    samples.sort_by(f64::total_cmp);
    let at = |q: f64| samples[((samples.len() as f64 - 1.0) * q).round() as usize];
    Ok(Latency {
        changes,
        p50_ms: round(at(0.5)),
        p99_ms: round(at(0.99)),
        max_ms: round(*samples.last().unwrap_or(&0.0)),
    })
}

fn print_table(report: &Report) {
    let p = &report.provisioning;
    let s = &report.steady_state;
    let l = &report.reconcile_latency;
    println!(
        "tenantdb-bench: {} tenants, {} workers, {} CPUs, PostgreSQL {}",
        report.tenants, report.workers, report.machine.cpus, report.machine.postgres
    );
    println!();
    println!(
        "{:<40} {:>12} {:>16}",
        "provisioning, per tenant (A B B A means)", "wall clock", "PostgreSQL CPU"
    );
    for (name, wall, postgres) in [
        (
            "(c) raw-SQL floor",
            p.floor_ms_per_tenant,
            p.floor_postgres_cpu_ms_per_tenant,
        ),
        (
            "(a) tenantdb apply",
            p.apply_ms_per_tenant,
            p.apply_postgres_cpu_ms_per_tenant,
        ),
        (
            "(b) operator, applied to Ready",
            p.operator_ms_per_tenant,
            p.operator_postgres_cpu_ms_per_tenant,
        ),
    ] {
        println!("{name:<40} {wall:>9.2} ms {postgres:>13.2} ms");
    }
    println!(
        "{:<40} {:>12.2} {:>16.2}",
        "(a)/(c)", p.apply_ratio, p.apply_postgres_cpu_ratio
    );
    println!(
        "{:<40} {:>12.2} {:>16.2}",
        "(b)/(c)", p.operator_ratio, p.operator_postgres_cpu_ratio
    );
    println!();
    println!(
        "{:<22} {:>9} {:>11} {:>11} {:>11}",
        "CPU seconds, each run", "wall", "postgres", "tenantdb", "bench"
    );
    let runs = p
        .floor_runs
        .iter()
        .map(|c| ("(c) floor", c))
        .chain(p.apply_runs.iter().map(|c| ("(a) apply", c)))
        .chain(p.operator_runs.iter().map(|c| ("(b) operator", c)));
    for (name, cpu) in runs {
        println!(
            "{:<22} {:>9.2} {:>11.2} {:>11.2} {:>11.2}",
            name, cpu.wall_seconds, cpu.postgres, cpu.tenantdb, cpu.bench
        );
    }
    println!();
    println!(
        "steady state, {} tenants Ready, {} intervals of {} s",
        report.tenants, s.intervals, s.interval_seconds
    );
    println!("{:<52} {:>12}", "Kubernetes writes", s.kubernetes_writes);
    println!(
        "{:<52} {:>12.2}",
        "admin SQL statements per interval", s.statements_per_interval
    );
    println!(
        "{:<52} {:>12}",
        "distinct admin statements", s.distinct_statements
    );
    println!("{:<52} {:>10.2} s", "operator CPU", s.operator_cpu_seconds);
    println!(
        "{:<52} {:>12}",
        "windows measured again (health news written)", s.noisy_windows
    );
    println!();
    for point in &report.memory {
        println!(
            "{:<52} {:>8.1} MiB",
            format!("operator RSS, {} TenantDatabases cached", point.objects),
            point.rss_mib
        );
    }
    println!();
    println!(
        "reconcile latency, spec change to CONNECTION LIMIT, {} changes",
        l.changes
    );
    println!("{:<52} {:>9.1} ms", "p50", l.p50_ms);
    println!("{:<52} {:>9.1} ms", "p99", l.p99_ms);
    println!("{:<52} {:>9.1} ms", "max", l.max_ms);
}
