//! `tenantdb-bench` (`make bench`): where tenantdb stands,
//! measured in one run on one throwaway PostgreSQL and one real Kubernetes
//! control plane ([`crate::control_plane`], the chart's RBAC applied, the
//! operator authenticated as the chart's ServiceAccount) —
//!
//! 1. provisioning N tenants through `tenantdb apply` and through the
//!    operator, against the raw-SQL floor: the same statements sent by a
//!    plain client, one connection per worker;
//! 2. the steady state of N Ready tenants over a window holding a resync and
//!    full login rotations: the operator's API requests (the API server's
//!    audit log), statements, connections and PostgreSQL CPU by cause, per
//!    tenant per hour;
//! 3. the operator's resident memory with 1,000 and 10,000 TenantDatabases;
//! 4. reconcile latency: a spec change to the new CONNECTION LIMIT in
//!    PostgreSQL.
//!
//! The operator and `apply` run as child processes — the `tenantdb` binary
//! built beside this one, or `TENANTDB_BIN` — so their CPU and memory are
//! theirs alone. I/O: PostgreSQL, the control plane, child processes, a
//! temporary directory, /proc.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::control_plane::{ControlPlane, install_chart};
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

/// The operator's defaults (`tenantdb run --resync`, a DatabaseServer's
/// `healthCheck`), for the steady state's cost at default settings.
pub(crate) const DEFAULT_RESYNC: Duration = Duration::from_secs(300);
const DEFAULT_INTERVAL: Duration = Duration::from_secs(30);
const DEFAULT_LOGIN_INTERVAL: Duration = Duration::from_secs(300);

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

    /// The steady state's window, in seconds: at least one resync and one
    /// login interval.
    #[arg(long, default_value_t = 60)]
    window_seconds: u64,

    /// The steady state's health check interval (the batched query), in
    /// seconds [default: 2]. With `--memory-only`, the DatabaseServer's
    /// interval when given (else its default, 30 s).
    #[arg(long)]
    interval_seconds: Option<u64>,

    /// The steady state's login interval per tenant, in seconds [default:
    /// 10]. With `--memory-only`, the DatabaseServer's login interval when
    /// given (else its default, 5 minutes, which a memory point waits for:
    /// every provisioned tenant's first login).
    #[arg(long)]
    login_seconds: Option<u64>,

    /// The operator's resync period during the steady state, in seconds.
    #[arg(long, default_value_t = 30)]
    resync_seconds: u64,

    /// Numbers of TenantDatabase objects at which the operator's memory is read.
    #[arg(long, value_delimiter = ',', default_value = "500,1000,10000")]
    memory_objects: Vec<usize>,

    /// Of the memory measurement's tenants, how many are provisioned on
    /// PostgreSQL; the rest point at a server that does not exist. Each
    /// provisioned tenant is a database of 7.2 MB (a copy of `template1`):
    /// 10,000 of them need 72 GB of disk under `TMPDIR`, or a compressing
    /// file system (`make bench-fleet`).
    #[arg(long, default_value_t = 1000)]
    memory_provisioned: usize,

    /// Measure the memory only: no provisioning runs, steady state or
    /// reconcile latency, and the DatabaseServer keeps its default health
    /// settings throughout.
    #[arg(long)]
    memory_only: bool,

    /// Spec changes timed for the reconcile latency.
    #[arg(long, default_value_t = 100)]
    changes: usize,

    /// Print the report as JSON.
    #[arg(long)]
    json: bool,

    /// Measure `tenantdb plan` over this many up-to-date tenants on two
    /// servers instead (half on each, provisioned by the raw-SQL floor in
    /// batches of 1,000 per server): wall clock and the statements each
    /// server ran. Nothing else is measured.
    #[arg(long)]
    plan_fleet: Option<usize>,

    /// Measure the operator with this many tenants on two servers instead:
    /// provisioning them from nothing (batches of 1,000 per server, both
    /// servers at once), then the quiet fleet at the default settings over
    /// a resync period plus a full login rotation. Nothing else is
    /// measured.
    #[arg(long)]
    steady_fleet: Option<usize>,

    /// With `--steady-fleet`, the quiet window in seconds instead of a
    /// resync period plus the servers' login rotation (for a short trial).
    #[arg(long)]
    fleet_window_seconds: Option<u64>,
}

impl Args {
    fn interval_seconds(&self) -> u64 {
        self.interval_seconds.unwrap_or(2)
    }

    fn login_seconds(&self) -> u64 {
        self.login_seconds.unwrap_or(10)
    }

    /// The DatabaseServer's `healthCheck` settings the options set: in the
    /// steady state both, and a login budget that lets every tenant log in
    /// every login interval; with `--memory-only` those given.
    fn health_check(&self) -> serde_json::Value {
        let mut settings = serde_json::Map::new();
        let (interval, login) = if self.memory_only {
            (self.interval_seconds, self.login_seconds)
        } else {
            (Some(self.interval_seconds()), Some(self.login_seconds()))
        };
        if let Some(seconds) = interval {
            settings.insert("interval".into(), format!("{seconds}s").into());
        }
        if let Some(seconds) = login {
            settings.insert("loginInterval".into(), format!("{seconds}s").into());
        }
        if !self.memory_only {
            // Every tenant every `--login-seconds`: the server's login
            // budget (1 a second by default) must not be what limits them.
            settings.insert("loginsPerSecond".into(), 1000.into());
        }
        settings.into()
    }
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub machine: Machine,
    pub tenants: usize,
    pub workers: usize,
    /// The parts `--memory-only` leaves out are absent.
    pub provisioning: Option<Provisioning>,
    pub steady_state: Option<SteadyState>,
    pub memory: Vec<MemoryPoint>,
    /// The resident memory with every one of the most objects measured
    /// provisioned, extrapolated from the two largest all-provisioned points
    /// (MiB per provisioned tenant beyond one on a missing server), when
    /// there are such points.
    pub memory_all_provisioned_estimate: Option<MemoryPoint>,
    pub reconcile_latency: Option<Latency>,
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
    /// What PostgreSQL saw of each run, in order.
    pub runs: Vec<RunStatements>,
}

/// The statements (pg_stat_statements) and sessions of one provisioning run.
#[derive(Debug, Serialize)]
pub struct RunStatements {
    pub arm: String,
    /// Sessions opened, in every database.
    pub sessions: i64,
    /// Statements by the admin role: text, calls, milliseconds of execution,
    /// the costliest first.
    pub admin: Vec<(String, i64, f64)>,
    /// Statements by any other role: the tenants' (health logins).
    pub others: i64,
    /// The operator's API requests during the run (the audit log),
    /// `"<verb> <resource>"` → count.
    pub requests: BTreeMap<String, u64>,
}

/// CPU seconds spent during one run, by whom.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct Cpu {
    pub wall_seconds: f64,
    pub postgres: f64,
    /// The tenantdb process doing the work (`apply`, or `tenantdb run`).
    pub tenantdb: f64,
    /// The control plane: etcd, kube-apiserver, kube-controller-manager.
    pub kubernetes: f64,
    /// This benchmark process: the plain client of the floor.
    pub bench: f64,
}

/// CPU seconds at one moment, by whom.
#[derive(Clone, Copy)]
pub(crate) struct CpuNow {
    pub(crate) postgres: f64,
    own: f64,
    children: f64,
    pub(crate) operator: f64,
    pub(crate) kubernetes: f64,
}

/// CPU seconds of the benchmark's PostgreSQL (its postmaster `postmaster`
/// and the postmaster's children, and no other server on the machine), of
/// this process, of its reaped children, of the operator and of the
/// control plane's processes.
pub(crate) fn cpu_now(postmaster: u32, operator: Option<u32>, kubernetes: &[u32]) -> CpuNow {
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
    let process = |pid: u32| {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map_or(0.0, |stat| stat_cpu(&stat, 11) + stat_cpu(&stat, 12))
    };
    CpuNow {
        postgres,
        own: stat_cpu(&own, 11) + stat_cpu(&own, 12),
        children: stat_cpu(&own, 13) + stat_cpu(&own, 14),
        operator: operator.map_or(0.0, process),
        kubernetes: kubernetes.iter().copied().map(process).sum(),
    }
}

/// A throwaway PostgreSQL started with `settings` (which load
/// pg_stat_statements), the extension created, and an admin role
/// `admin_role` made as tenantdb's documentation says: the server, a
/// superuser connection and the admin role's password.
pub(crate) async fn counting_postgres(
    admin_role: &str,
    settings: &'static [&'static str],
) -> anyhow::Result<(ThrowawayPostgres, PgConnection, String)> {
    let postgres = tokio::task::spawn_blocking(move || ThrowawayPostgres::start_with(settings)).await??;
    let admin_password = tenantdb::password::generate();
    let mut superuser = PgConnection::connect(&postgres.superuser_url()).await?;
    sqlx::query(tenantdb::sql::create_admin_role(
        &Ident::parse(admin_role)?,
        &ScramVerifier::generate(&admin_password),
    ))
    .execute(&mut superuser)
    .await?;
    sqlx::query("CREATE EXTENSION pg_stat_statements")
        .execute(&mut superuser)
        .await?;
    Ok((postgres, superuser, admin_password))
}

/// Field `index` (counted after the command name) of a /proc stat line.
fn stat_field(stat: &str, index: usize) -> Option<u32> {
    stat.rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().nth(index))
        .and_then(|f| f.parse().ok())
}

/// The pid of the server's postmaster (the first line of `postmaster.pid`).
pub(crate) fn postmaster_pid(postgres: &ThrowawayPostgres) -> anyhow::Result<u32> {
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
    kubernetes: &[u32],
    work: impl Future<Output = anyhow::Result<T>>,
) -> anyhow::Result<(T, Cpu)> {
    let before = cpu_now(postmaster, operator, kubernetes);
    let started = Instant::now();
    let value = work.await?;
    let wall_seconds = started.elapsed().as_secs_f64();
    // Let PostgreSQL reap the backends of closed connections, whose time
    // then shows on the postmaster.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = cpu_now(postmaster, operator, kubernetes);
    Ok((
        value,
        Cpu {
            wall_seconds: round(wall_seconds),
            postgres: round(after.postgres - before.postgres),
            tenantdb: round(after.children - before.children + after.operator - before.operator),
            kubernetes: round(after.kubernetes - before.kubernetes),
            bench: round(after.own - before.own),
        },
    ))
}

#[derive(Debug, Serialize)]
pub struct SteadyState {
    pub tenants: usize,
    pub window_seconds: u64,
    pub interval_seconds: u64,
    pub login_interval_seconds: u64,
    pub resync_seconds: u64,
    /// The operator's API requests in the window (the API server's audit
    /// log), `"<verb> <resource>"` → count.
    pub requests: BTreeMap<String, u64>,
    pub kubernetes_writes: u64,
    /// get and list requests (watches are long-lived and counted apart).
    pub kubernetes_reads: u64,
    /// Statements the admin role ran (pg_stat_statements): text, calls,
    /// milliseconds of execution.
    pub admin_statements: Vec<(String, i64, f64)>,
    /// Runs of the batched health query.
    pub health_queries: i64,
    /// Every other admin statement: the tenants' resync (advisory lock,
    /// catalog read, unlock) and the server controller's.
    pub resync_statements: i64,
    /// Statements run by tenant roles (the health logins' `SELECT 1`).
    pub tenant_statements: i64,
    /// Sessions opened in the tenants' databases: the health logins.
    pub logins: i64,
    /// Sessions opened in the other databases: the admin role's.
    pub admin_connections: i64,
    /// PostgreSQL's CPU over the window, and over a window of the same
    /// length with nobody connected (its background processes).
    pub postgres_cpu_seconds: f64,
    pub postgres_idle_cpu_seconds: f64,
    pub operator_cpu_seconds: f64,
    pub kubernetes_cpu_seconds: f64,
    /// Windows measured again because a tenant's health was news in them
    /// (its status written).
    pub noisy_windows: u32,
    /// Per tenant per hour at the window's settings, as measured.
    pub per_tenant_hour: Hourly,
    /// Per tenant per hour at the default settings (30 s health interval,
    /// 5 min logins and resync): each cause's count per
    /// hour times its measured cost per event.
    pub per_tenant_hour_at_defaults: Hourly,
}

/// A quiet fleet's cost, per tenant per hour.
#[derive(Debug, Default, Serialize)]
pub struct Hourly {
    pub logins: f64,
    pub admin_statements: f64,
    pub health_query_share: f64,
    pub connections: f64,
    pub kubernetes_writes: f64,
    /// PostgreSQL CPU milliseconds beyond its idle background work:
    /// logins, the health query's share, the resync.
    pub postgres_cpu_ms: f64,
    pub login_cpu_ms: f64,
    pub health_cpu_ms: f64,
    pub resync_cpu_ms: f64,
}

#[derive(Debug, Serialize)]
pub struct MemoryPoint {
    pub objects: usize,
    /// Of those, tenants provisioned on PostgreSQL: Ready, with their
    /// connection Secret and health state. The rest point at a server that
    /// does not exist (`--memory-provisioned`).
    pub provisioned: usize,
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
    if let Some(tenants) = args.plan_fleet {
        return crate::plan_fleet::run(tenants, args.workers, args.json).await;
    }
    if let Some(tenants) = args.steady_fleet {
        return crate::steady_fleet::run(tenants, args.workers, args.fleet_window_seconds, args.json).await;
    }
    if args.tenants == 0 || args.workers == 0 {
        bail!("--tenants and --workers must be at least 1");
    }
    if args.interval_seconds() == 0 || args.login_seconds() == 0 || args.resync_seconds == 0 {
        bail!("--interval-seconds, --login-seconds and --resync-seconds must be at least 1");
    }
    if args.window_seconds < args.resync_seconds.max(args.login_seconds()) {
        bail!(
            "--window-seconds must hold a resync and a login interval (at least {} s)",
            args.resync_seconds.max(args.login_seconds())
        );
    }
    let exe = tenantdb_binary()?;
    let work = tempdir("tenantdb-bench")?;
    eprintln!("starting a throwaway PostgreSQL…");
    // Autovacuum off: its work grows with the number of databases and
    // would tax whichever run comes later.
    let (postgres, mut superuser, admin_password) = counting_postgres(
        ADMIN_ROLE,
        &[
            "shared_preload_libraries=pg_stat_statements",
            "max_connections=500",
            "autovacuum=off",
        ],
    )
    .await?;
    let postgres_version: String = sqlx::query_scalar("SELECT current_setting('server_version')")
        .fetch_one(&mut superuser)
        .await?;
    let admin_url = postgres.url(ADMIN_ROLE, &admin_password, "postgres");
    let postmaster = postmaster_pid(&postgres)?;

    eprintln!("starting a Kubernetes control plane (the chart's CRDs and RBAC applied)…");
    // Meanwhile, PostgreSQL's own background work over a window as long as
    // the steady state's, with nobody but this process (idle) connected:
    // what the server costs without tenantdb.
    // (`--memory-only` has no steady state to compare it with.)
    let window = if args.memory_only {
        Duration::ZERO
    } else {
        Duration::from_secs(args.window_seconds)
    };
    let (plane, idle) = tokio::join!(
        tokio::task::spawn_blocking(|| {
            let plane = ControlPlane::start();
            install_chart(&plane);
            plane
        }),
        async {
            let before = cpu_now(postmaster, None, &[]);
            tokio::time::sleep(window).await;
            cpu_now(postmaster, None, &[]).postgres - before.postgres
        }
    );
    let plane = plane?;
    let kubernetes = plane.pids();
    let client = client_of(&plane.admin_kubeconfig).await?;
    // The operator authenticates as the chart's ServiceAccount.
    let kubeconfig = plane.operator_kubeconfig.clone();
    let mut operator = start_operator(
        &exe,
        &kubeconfig,
        &work.join("operator.log"),
        DEFAULT_RESYNC,
        args.workers,
    )?;
    // Provisioning runs at the default health settings (a batched query
    // every 30 s, each tenant's first login spread over 5 minutes), as a
    // user's burst of new tenants would; the steady state shortens them.
    let server = add_server(&client, &postgres, &admin_password).await?;

    let (provisioning, steady_state, reconcile_latency) = if args.memory_only {
        let _ = operator.kill().await;
        Api::<DatabaseServer>::all(client.clone())
            .patch(
                &server,
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"healthCheck": args.health_check()}})),
            )
            .await?;
        (None, None, None)
    } else {
        // 1. Provisioning: the three arms in the order floor, apply, operator,
        // operator, apply, floor, each compared by its mean: this machine's
        // speed drifts by tens of percent over minutes, and a drift that is
        // roughly linear over the run cancels out of A B B A means (a
        // best-of-k does not: it picks whichever run the drift favoured).
        // PostgreSQL's CPU seconds per tenant are reported beside wall clock;
        // they move far less with noise.
        // A warm-up, untimed: the first databases created on a fresh server
        // cost more than later ones (cold caches), which no A B B A order
        // cancels.
        eprintln!("warming up…");
        floor(&admin_url, "warmup", args.tenants.div_ceil(4), args.workers).await?;
        drop_databases_and_roles(&mut superuser, "warmup").await?;
        let mut floor_runs = Vec::new();
        let mut apply_runs = Vec::new();
        let mut operator_runs = Vec::new();
        let mut runs = Vec::new();
        for (turn, arm) in ["floor", "apply", "operator", "operator", "apply", "floor"]
            .into_iter()
            .enumerate()
        {
            let namespace = format!("{arm}{turn}");
            eprintln!("provisioning {} tenants: {arm} ({}/6)…", args.tenants, turn + 1);
            sqlx::query("SELECT pg_stat_statements_reset()")
                .execute(&mut superuser)
                .await?;
            let sessions_before = all_sessions(&mut superuser).await?;
            let requests_before = plane.audited_requests();
            let run = match arm {
                "floor" => {
                    measured(
                        postmaster,
                        None,
                        &kubernetes,
                        floor(&admin_url, &namespace, args.tenants, args.workers),
                    )
                    .await?
                    .1
                }
                "apply" => {
                    measured(
                        postmaster,
                        None,
                        &kubernetes,
                        apply(&exe, &work, &admin_url, &namespace, args.tenants, args.workers),
                    )
                    .await?
                    .1
                }
                _ => {
                    add_namespace(&client, &namespace).await?;
                    measured(postmaster, operator.id(), &kubernetes, async {
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
            let (admin, others) = run_statements(&mut superuser).await?;
            runs.push(RunStatements {
                arm: arm.to_owned(),
                sessions: all_sessions(&mut superuser).await? - sessions_before,
                admin: admin
                    .into_iter()
                    .map(|(query, calls, ms)| (first_words(&query), calls, round(ms)))
                    .collect(),
                others,
                requests: difference(&plane.audited_requests(), &requests_before),
            });
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

        let provisioning = summarize_provisioning(args.tenants, floor_runs, apply_runs, operator_runs, runs);

        // 2. The steady state, on tenants of its own provisioned (untimed)
        // after the measured runs, with an operator restarted at the steady
        // state's resync period.
        eprintln!("provisioning {} tenants for the steady state…", args.tenants);
        add_namespace(&client, "steady").await?;
        create_tenants(&client, "steady", args.tenants, &server).await?;
        wait_for_all(&client, "steady", args.tenants, "Ready", |t| {
            condition(t, "Ready")
        })
        .await?;
        let _ = operator.kill().await;
        Api::<DatabaseServer>::all(client.clone())
            .patch(
                &server,
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"healthCheck": args.health_check()}})),
            )
            .await?;
        let mut operator = start_operator(
            &exe,
            &kubeconfig,
            &work.join("operator-steady.log"),
            Duration::from_secs(args.resync_seconds),
            args.workers,
        )?;
        let steady_state = steady_state(
            &args,
            &client,
            &plane,
            &mut superuser,
            postmaster,
            &operator,
            idle,
        )
        .await?;

        // 4. Reconcile latency.
        eprintln!("timing {} spec changes…", args.changes);
        let reconcile_latency = latency(&client, "steady", &mut superuser, args.changes).await?;
        let _ = operator.kill().await;

        (Some(provisioning), Some(steady_state), Some(reconcile_latency))
    };

    // 3. Memory, with a fresh operator.
    let memory = memory(&args, &exe, &work, &kubeconfig, &client, &server).await?;

    let memory_all_provisioned_estimate = all_provisioned_estimate(&memory);
    let report = Report {
        machine: Machine {
            cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
            postgres: postgres_version,
        },
        tenants: args.tenants,
        workers: args.workers,
        provisioning,
        steady_state,
        memory,
        memory_all_provisioned_estimate,
        reconcile_latency,
    };
    tokio::task::spawn_blocking(move || drop(plane)).await?;
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

/// What `pg_stat_statements` holds since its last reset: the admin role's
/// statements (text, calls, execution milliseconds; the costliest first),
/// and the number of statements run by anyone but the admin role and this
/// process (the tenants').
async fn run_statements(superuser: &mut PgConnection) -> anyhow::Result<(Vec<(String, i64, f64)>, i64)> {
    let admin = sqlx::query_as(
        "SELECT query, calls, total_exec_time FROM pg_stat_statements s JOIN pg_roles r ON r.oid = s.userid
          WHERE r.rolname = $1 ORDER BY total_exec_time DESC",
    )
    .bind(ADMIN_ROLE)
    .fetch_all(&mut *superuser)
    .await?;
    let others = sqlx::query_scalar(
        "SELECT coalesce(sum(calls), 0)::int8 FROM pg_stat_statements s JOIN pg_roles r ON r.oid = s.userid
          WHERE r.rolname NOT IN ($1, current_user)",
    )
    .bind(ADMIN_ROLE)
    .fetch_one(&mut *superuser)
    .await?;
    Ok((admin, others))
}

/// Each arm's mean over its two runs, per tenant, and the ratios to the floor.
fn summarize_provisioning(
    tenants: usize,
    floor_runs: Vec<Cpu>,
    apply_runs: Vec<Cpu>,
    operator_runs: Vec<Cpu>,
    runs: Vec<RunStatements>,
) -> Provisioning {
    let per_tenant = |runs: &[Cpu], of: fn(&Cpu) -> f64| {
        runs.iter().map(of).sum::<f64>() / runs.len() as f64 / tenants as f64
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
    Provisioning {
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
        runs,
    }
}

/// The largest point's memory as if all its tenants were provisioned: its
/// RSS plus, for each tenant on the missing server, the difference between
/// a provisioned tenant's cost (the slope between the two largest
/// all-provisioned points) and an unprovisioned one's (the slope from the
/// largest all-provisioned point to the largest point).
fn all_provisioned_estimate(memory: &[MemoryPoint]) -> Option<MemoryPoint> {
    let full: Vec<&MemoryPoint> = memory.iter().filter(|p| p.provisioned == p.objects).collect();
    let [.., a, b] = full.as_slice() else {
        return None;
    };
    let last = memory.last()?;
    if last.provisioned == last.objects || b.objects <= a.objects || last.objects <= b.objects {
        return None;
    }
    let provisioned = (b.rss_mib - a.rss_mib) / (b.objects - a.objects) as f64;
    let unprovisioned = (last.rss_mib - b.rss_mib) / (last.objects - b.objects) as f64;
    let missing = (last.objects - last.provisioned) as f64;
    Some(MemoryPoint {
        objects: last.objects,
        provisioned: last.objects,
        rss_mib: round(last.rss_mib + missing * (provisioned - unprovisioned).max(0.0)),
    })
}

/// Sessions opened so far, in every database.
async fn all_sessions(superuser: &mut PgConnection) -> anyhow::Result<i64> {
    Ok(
        sqlx::query_scalar("SELECT coalesce(sum(sessions), 0)::int8 FROM pg_stat_database")
            .fetch_one(&mut *superuser)
            .await?,
    )
}

/// What PostgreSQL has counted so far: sessions opened in the tenants'
/// databases (`steady_…`) and in the others.
async fn sessions(superuser: &mut PgConnection) -> anyhow::Result<(i64, i64)> {
    Ok(sqlx::query_as(
        "SELECT coalesce(sum(sessions) FILTER (WHERE datname LIKE 'steady\\_%'), 0)::int8,
                coalesce(sum(sessions) FILTER (WHERE datname NOT LIKE 'steady\\_%'), 0)::int8
           FROM pg_stat_database",
    )
    .fetch_one(&mut *superuser)
    .await?)
}

/// The quiet fleet: once every tenant's first logins are in, a window of
/// `--window-seconds` (a resync and several login rotations) in which
/// everything tenantdb causes is counted — the operator's API requests from
/// the API server's audit log, statements from pg_stat_statements, sessions
/// from pg_stat_database, CPU from /proc — and then the cost per tenant per
/// hour, at the window's settings and at the defaults.
async fn steady_state(
    args: &Args,
    client: &kube::Client,
    plane: &ControlPlane,
    superuser: &mut PgConnection,
    postmaster: u32,
    operator: &tokio::process::Child,
    idle: f64,
) -> anyhow::Result<SteadyState> {
    eprintln!("watching a quiet fleet for {} s…", args.window_seconds);
    // Quiet means after every tenant's login (spread over the login
    // interval after the restart) reported a latency.
    wait_for_all(client, "steady", args.tenants, "Healthy", |t| {
        condition(t, "Healthy") && logged_in(t)
    })
    .await?;
    // Later rounds of logins, warm where the first met a cold database,
    // settle the smoothed latency.
    tokio::time::sleep(Duration::from_secs(args.login_seconds() * 3)).await;
    let window = Duration::from_secs(args.window_seconds);
    let kubernetes = plane.pids();
    let admin_oid: sqlx::postgres::types::Oid =
        sqlx::query_scalar("SELECT oid FROM pg_roles WHERE rolname = $1")
            .bind(ADMIN_ROLE)
            .fetch_one(&mut *superuser)
            .await?;
    // A window in which a tenant's health was news (a login latency that
    // really moved, say, on a loaded machine) is not a quiet one: such a
    // window is measured again, up to five times, and counted. Writes in a
    // grace second after the window count too, so a status write whose
    // reconcile ran inside the window is not missed.
    let mut noisy_windows = 0;
    let (requests, statements, tenant_statements, logins, admin_connections, cpu) = loop {
        sqlx::query("SELECT pg_stat_statements_reset()")
            .execute(&mut *superuser)
            .await?;
        let requests_before = plane.audited_requests();
        let sessions_before = sessions(superuser).await?;
        let cpu_before = cpu_now(postmaster, operator.id(), &kubernetes);
        tokio::time::sleep(window).await;
        let cpu_after = cpu_now(postmaster, operator.id(), &kubernetes);
        let sessions_after = sessions(superuser).await?;
        let requests_after = plane.audited_requests();
        let statements: Vec<(String, i64, f64)> =
            sqlx::query_as("SELECT query, calls, total_exec_time FROM pg_stat_statements WHERE userid = $1")
                .bind(admin_oid)
                .fetch_all(&mut *superuser)
                .await?;
        let tenant_statements: i64 = sqlx::query_scalar(
            "SELECT coalesce(sum(s.calls), 0)::int8 FROM pg_stat_statements s
               JOIN pg_roles r ON r.oid = s.userid WHERE r.rolname LIKE 'steady\\_%'",
        )
        .fetch_one(&mut *superuser)
        .await?;
        tokio::time::sleep(Duration::from_secs(1)).await;
        let requests_late = plane.audited_requests();
        let requests = difference(&requests_after, &requests_before);
        if writes(&difference(&requests_late, &requests_before)) == 0 || noisy_windows == 4 {
            break (
                requests,
                statements,
                tenant_statements,
                sessions_after.0 - sessions_before.0,
                sessions_after.1 - sessions_before.1,
                (cpu_before, cpu_after),
            );
        }
        noisy_windows += 1;
    };
    let (before, after) = cpu;
    // The batched health query is the one that starts so (pg_stat_statements
    // shows its text with constants as `$n`).
    let health = |query: &str| query.trim_start().starts_with("WITH activity AS");
    let health_queries: i64 = statements.iter().filter(|s| health(&s.0)).map(|s| s.1).sum();
    let resync_statements: i64 = statements.iter().filter(|s| !health(&s.0)).map(|s| s.1).sum();
    let health_ms: f64 = statements.iter().filter(|s| health(&s.0)).map(|s| s.2).sum();
    let resync_ms: f64 = statements.iter().filter(|s| !health(&s.0)).map(|s| s.2).sum();
    let postgres_cpu = after.postgres - before.postgres;
    // PostgreSQL's CPU beyond its idle work, by cause: the health query and
    // the resync's statements by their execution time, the rest — session
    // start (fork, SCRAM), `SELECT 1`, session end — to the logins.
    let busy_ms = ((postgres_cpu - idle) * 1000.0).max(0.0);
    let login_ms = (busy_ms - health_ms - resync_ms).max(0.0);
    let n = args.tenants as f64;
    let hours = window.as_secs_f64() / 3600.0;
    let writes_in_window = writes(&requests);
    let per_tenant_hour = Hourly {
        logins: round(logins as f64 / n / hours),
        admin_statements: round((health_queries + resync_statements) as f64 / n / hours),
        health_query_share: round(health_queries as f64 / n / hours),
        connections: round((logins + admin_connections) as f64 / n / hours),
        kubernetes_writes: round(writes_in_window as f64 / n / hours),
        postgres_cpu_ms: round(busy_ms / n / hours),
        login_cpu_ms: round(login_ms / n / hours),
        health_cpu_ms: round(health_ms / n / hours),
        resync_cpu_ms: round(resync_ms / n / hours),
    };
    // At the defaults: each cause scaled by how much more or less often it
    // runs. Writes as measured: the status heartbeat writes a quiet
    // tenant's status only when one of its numbers moved, so a quiet
    // fleet's writes do not depend on a setting.
    let scale = |measured: Duration, default: Duration| measured.as_secs_f64() / default.as_secs_f64();
    let (health_scale, login_scale, resync_scale) = (
        scale(Duration::from_secs(args.interval_seconds()), DEFAULT_INTERVAL),
        scale(Duration::from_secs(args.login_seconds()), DEFAULT_LOGIN_INTERVAL),
        scale(Duration::from_secs(args.resync_seconds), DEFAULT_RESYNC),
    );
    let resync_per_hour = (resync_statements as f64 / n / hours) * resync_scale;
    let per_tenant_hour_at_defaults = Hourly {
        logins: round(per_tenant_hour.logins * login_scale),
        admin_statements: round(per_tenant_hour.health_query_share * health_scale + resync_per_hour),
        health_query_share: round(per_tenant_hour.health_query_share * health_scale),
        connections: round(per_tenant_hour.logins * login_scale + admin_connections as f64 / n / hours),
        kubernetes_writes: per_tenant_hour.kubernetes_writes,
        postgres_cpu_ms: round(
            per_tenant_hour.login_cpu_ms * login_scale
                + per_tenant_hour.health_cpu_ms * health_scale
                + per_tenant_hour.resync_cpu_ms * resync_scale,
        ),
        login_cpu_ms: round(per_tenant_hour.login_cpu_ms * login_scale),
        health_cpu_ms: round(per_tenant_hour.health_cpu_ms * health_scale),
        resync_cpu_ms: round(per_tenant_hour.resync_cpu_ms * resync_scale),
    };
    Ok(SteadyState {
        tenants: args.tenants,
        window_seconds: args.window_seconds,
        interval_seconds: args.interval_seconds(),
        login_interval_seconds: args.login_seconds(),
        resync_seconds: args.resync_seconds,
        kubernetes_writes: writes_in_window,
        kubernetes_reads: requests
            .iter()
            .filter(|(k, _)| k.starts_with("get ") || k.starts_with("list "))
            .map(|(_, v)| *v)
            .sum(),
        requests,
        admin_statements: statements
            .iter()
            .map(|(query, calls, ms)| (first_words(query), *calls, round(*ms)))
            .collect(),
        health_queries,
        resync_statements,
        tenant_statements,
        logins,
        admin_connections,
        postgres_cpu_seconds: round(postgres_cpu),
        postgres_idle_cpu_seconds: round(idle),
        operator_cpu_seconds: round(after.operator - before.operator),
        kubernetes_cpu_seconds: round(after.kubernetes - before.kubernetes),
        noisy_windows,
        per_tenant_hour,
        per_tenant_hour_at_defaults,
    })
}

/// The operator's resident memory once its caches hold each of
/// `--memory-objects` TenantDatabases, with a fresh operator: the steady
/// state's tenants (unless `--memory-only`) and more, provisioned on
/// PostgreSQL up to `--memory-provisioned` (Ready, with Secrets, health
/// state and a login), the rest on a server that does not exist (stalled,
/// every one reconciled).
async fn memory(
    args: &Args,
    exe: &Path,
    work: &Path,
    kubeconfig: &Path,
    client: &kube::Client,
    server: &str,
) -> anyhow::Result<Vec<MemoryPoint>> {
    let mut memory = Vec::new();
    if args.memory_objects.is_empty() {
        return Ok(memory);
    }
    add_namespace(client, "memory").await?;
    add_namespace(client, "ghosts").await?;
    let mut operator = start_operator(
        exe,
        kubeconfig,
        &work.join("operator-memory.log"),
        DEFAULT_RESYNC,
        args.workers,
    )?;
    let own = if args.memory_only { 0 } else { args.tenants };
    let (mut real, mut ghosts) = (0, 0);
    let mut targets = args.memory_objects.clone();
    targets.sort_unstable();
    for objects in targets {
        eprintln!("reading the operator's memory with {objects} TenantDatabases…");
        let wanted = objects.saturating_sub(own);
        let wanted_real = wanted.min(args.memory_provisioned.saturating_sub(own));
        create_tenants_from(client, "memory", real, wanted_real.saturating_sub(real), server).await?;
        real = real.max(wanted_real);
        let wanted_ghosts = wanted - real;
        create_tenants_from(
            client,
            "ghosts",
            ghosts,
            wanted_ghosts.saturating_sub(ghosts),
            "ghost",
        )
        .await?;
        ghosts = ghosts.max(wanted_ghosts);
        wait_for_all(client, "memory", real, "Ready with a login", |t| {
            condition(t, "Ready") && logged_in(t)
        })
        .await?;
        wait_for_all(client, "ghosts", ghosts, "reconciled", |t| {
            t.status.as_ref().is_some_and(|s| !s.conditions.is_empty())
        })
        .await?;
        tokio::time::sleep(Duration::from_secs(3)).await;
        memory.push(MemoryPoint {
            objects: real + ghosts + own,
            provisioned: real + own,
            rss_mib: rss_mib(operator.id())?,
        });
    }
    let _ = operator.kill().await;
    Ok(memory)
}

pub(crate) fn round(value: f64) -> f64 {
    (value * 100.0).round() / 100.0
}

/// The `tenantdb` binary the benchmark runs: `TENANTDB_BIN`, else the one
/// cargo built beside this binary.
pub(crate) fn tenantdb_binary() -> anyhow::Result<PathBuf> {
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

pub(crate) fn tempdir(prefix: &str) -> anyhow::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!(
        "{prefix}-{}",
        tenantdb::password::generate()[..8].to_lowercase()
    ));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// A tenant spec as every run provisions it: a pool contract and guard rails.
pub(crate) fn tenant(namespace: &str, name: &str, server: &str) -> TenantDatabase {
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
    floor_range(admin_url, namespace, 0..tenants, workers).await
}

/// [`floor`] for tenants `t<first>`… of `range`.
pub(crate) async fn floor_range(
    admin_url: &str,
    namespace: &str,
    range: std::ops::Range<usize>,
    workers: usize,
) -> anyhow::Result<Duration> {
    let server: DatabaseServer = serde_json::from_value(json!({
        "apiVersion": "tenantdb.io/v1alpha1", "kind": "DatabaseServer", "metadata": {"name": "floor"},
        "spec": {"host": "unused", "adminSecretRef": {"namespace": "x", "name": "y"}}
    }))?;
    let mut scripts = Vec::new();
    for i in range {
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
pub(crate) fn first_words(query: &str) -> String {
    let line = query.split_whitespace().collect::<Vec<_>>().join(" ");
    line.chars().take(120).collect()
}

/// `tenantdb run` with `workers` tenants at once on the one server, as
/// many as the floor's connections and `apply --concurrency`: the operator
/// gives one server at most half its `--concurrency`, so that is twice
/// `workers`.
pub(crate) fn start_operator(
    exe: &Path,
    kubeconfig: &Path,
    log: &Path,
    resync: Duration,
    workers: usize,
) -> anyhow::Result<tokio::process::Child> {
    Ok(tokio::process::Command::new(exe)
        .args(["run", "--kubeconfig"])
        .arg(kubeconfig)
        .args([
            "--concurrency",
            &(2 * workers).to_string(),
            "--no-leader-election",
            "--http-addr",
            "127.0.0.1:0",
            "--resync",
            &format!("{}s", resync.as_secs()),
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

pub(crate) async fn add_namespace(client: &kube::Client, name: &str) -> anyhow::Result<()> {
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
                 "adminSecretRef": {"namespace": "ops", "name": "pg-admin"}}
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
pub(crate) async fn create_tenants_from(
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

pub(crate) fn condition(tenant: &TenantDatabase, kind: &str) -> bool {
    tenant
        .status
        .as_ref()
        .is_some_and(|s| s.conditions.iter().any(|c| c.type_ == kind && c.status == "True"))
}

/// Whether the tenant's status reports a login latency (a login happened).
pub(crate) fn logged_in(tenant: &TenantDatabase) -> bool {
    tenant
        .status
        .as_ref()
        .and_then(|s| s.health.as_ref())
        .is_some_and(|h| h.latency_ms.is_some())
}

/// Waits until `count` tenants of `namespace` pass `check` (10 minutes at
/// most), from a watch: polling lists of hundreds of objects would cost the
/// API server — which shares this machine's CPUs with PostgreSQL and the
/// operator — far more than the operator's own requests.
pub(crate) async fn wait_for_all(
    client: &kube::Client,
    namespace: &str,
    count: usize,
    what: &str,
    check: impl Fn(&TenantDatabase) -> bool,
) -> anyhow::Result<()> {
    use futures::TryStreamExt;
    use kube::runtime::{WatchStreamExt, watcher};
    let api: Api<TenantDatabase> = Api::namespaced(client.clone(), namespace);
    let mut passing = std::collections::BTreeSet::new();
    // A fleet of 10,000 takes an hour to provision here: the wait gives up
    // only when no more tenants passed for longer than a login interval.
    let mut best = 0;
    let mut progress = tokio::time::Instant::now();
    let events = watcher(api, watcher::Config::default()).default_backoff();
    futures::pin_mut!(events);
    loop {
        let event = tokio::select! {
            event = events.try_next() => event?,
            () = tokio::time::sleep_until(progress + STALLED) => bail!(
                "only {} of {count} tenants in {namespace} became {what} (none more for {} s)",
                passing.len(),
                STALLED.as_secs()
            ),
        };
        match event {
            None => bail!("the watch of {namespace} ended"),
            Some(watcher::Event::Init) => passing.clear(),
            Some(watcher::Event::Apply(tenant) | watcher::Event::InitApply(tenant)) => {
                let name = tenant.metadata.name.clone().unwrap_or_default();
                if check(&tenant) {
                    passing.insert(name);
                } else {
                    passing.remove(&name);
                }
            }
            Some(watcher::Event::Delete(tenant)) => {
                passing.remove(&tenant.metadata.name.unwrap_or_default());
            }
            Some(watcher::Event::InitDone) => {}
        }
        if passing.len() >= count {
            return Ok(());
        }
        if passing.len() > best {
            best = passing.len();
            progress = tokio::time::Instant::now();
        }
    }
}

/// How long [`wait_for_all`] waits for one more tenant to pass.
const STALLED: Duration = Duration::from_secs(600);

pub(crate) fn writes(counts: &BTreeMap<String, u64>) -> u64 {
    counts
        .iter()
        .filter(|(k, _)| {
            ["create ", "update ", "patch ", "delete ", "deletecollection "]
                .iter()
                .any(|w| k.starts_with(w))
        })
        .map(|(_, v)| *v)
        .sum()
}

/// Request counts in `after` beyond those in `before`, the zeros left out.
pub(crate) fn difference(
    after: &BTreeMap<String, u64>,
    before: &BTreeMap<String, u64>,
) -> BTreeMap<String, u64> {
    after
        .iter()
        .map(|(k, v)| (k.clone(), v - before.get(k).copied().unwrap_or(0)))
        .filter(|(_, v)| *v > 0)
        .collect()
}

/// A client for `kubeconfig`'s identity.
pub(crate) async fn client_of(kubeconfig: &Path) -> anyhow::Result<kube::Client> {
    let config = kube::config::Kubeconfig::read_from(kubeconfig)?;
    let config = kube::Config::from_custom_kubeconfig(config, &Default::default()).await?;
    Ok(kube::Client::try_from(config)?)
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
pub(crate) fn rss_mib(pid: Option<u32>) -> anyhow::Result<f64> {
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
    let machine = format!(
        "{} CPUs, PostgreSQL {}",
        report.machine.cpus, report.machine.postgres
    );
    if report.provisioning.is_some() {
        println!(
            "tenantdb-bench: {} tenants, {} workers, {machine}",
            report.tenants, report.workers
        );
    } else {
        println!("tenantdb-bench --memory-only: {machine}");
    }
    println!();
    if let Some(p) = &report.provisioning {
        print_provisioning(p);
    }
    if let Some(s) = &report.steady_state {
        print_steady_state(s);
    }
    print_memory(report);
    if let Some(l) = &report.reconcile_latency {
        print_latency(l);
    }
}

fn print_provisioning(p: &Provisioning) {
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
        "{:<22} {:>9} {:>11} {:>11} {:>11} {:>11}",
        "CPU seconds, each run", "wall", "postgres", "tenantdb", "kubernetes", "bench"
    );
    let runs = p
        .floor_runs
        .iter()
        .map(|c| ("(c) floor", c))
        .chain(p.apply_runs.iter().map(|c| ("(a) apply", c)))
        .chain(p.operator_runs.iter().map(|c| ("(b) operator", c)));
    for (name, cpu) in runs {
        println!(
            "{:<22} {:>9.2} {:>11.2} {:>11.2} {:>11.2} {:>11.2}",
            name, cpu.wall_seconds, cpu.postgres, cpu.tenantdb, cpu.kubernetes, cpu.bench
        );
    }
    println!();
    for run in &p.runs {
        println!(
            "{}: {} sessions, {} tenant statements, API requests {:?}, admin statements:",
            run.arm, run.sessions, run.others, run.requests
        );
        for (query, calls, ms) in run.admin.iter().take(8) {
            println!("  {calls:>6} calls {ms:>9.1} ms  {query}");
        }
    }
    println!();
}

fn print_steady_state(s: &SteadyState) {
    println!(
        "steady state, {} tenants Ready, {} s (health every {} s, logins every {} s, resync every {} s)",
        s.tenants, s.window_seconds, s.interval_seconds, s.login_interval_seconds, s.resync_seconds
    );
    let row = |name: &str, value: String| println!("{name:<52} {value:>14}");
    row("Kubernetes writes (audit log)", s.kubernetes_writes.to_string());
    row(
        "Kubernetes reads: get, list (audit log)",
        s.kubernetes_reads.to_string(),
    );
    for (request, count) in &s.requests {
        row(&format!("  {request}"), count.to_string());
    }
    row("batched health queries", s.health_queries.to_string());
    row(
        "other admin statements (resync, server)",
        s.resync_statements.to_string(),
    );
    for (query, calls, ms) in &s.admin_statements {
        println!("  {calls:>6} calls {ms:>9.1} ms  {query}");
    }
    row(
        "tenant logins (sessions in tenant databases)",
        s.logins.to_string(),
    );
    row("tenant statements (SELECT 1)", s.tenant_statements.to_string());
    row("admin connections opened", s.admin_connections.to_string());
    row("PostgreSQL CPU", format!("{:.2} s", s.postgres_cpu_seconds));
    row(
        "PostgreSQL CPU idle (same length, no tenantdb)",
        format!("{:.2} s", s.postgres_idle_cpu_seconds),
    );
    row("operator CPU", format!("{:.2} s", s.operator_cpu_seconds));
    row("control plane CPU", format!("{:.2} s", s.kubernetes_cpu_seconds));
    row(
        "windows measured again (health news written)",
        s.noisy_windows.to_string(),
    );
    println!();
    println!(
        "{:<52} {:>14} {:>14}",
        "per tenant per hour", "these settings", "defaults"
    );
    let (a, d) = (&s.per_tenant_hour, &s.per_tenant_hour_at_defaults);
    for (name, x, y) in [
        ("logins", a.logins, d.logins),
        ("connections opened", a.connections, d.connections),
        ("admin statements", a.admin_statements, d.admin_statements),
        (
            "  of which its share of the health query",
            a.health_query_share,
            d.health_query_share,
        ),
        ("Kubernetes writes", a.kubernetes_writes, d.kubernetes_writes),
        ("PostgreSQL CPU ms", a.postgres_cpu_ms, d.postgres_cpu_ms),
        ("  logins", a.login_cpu_ms, d.login_cpu_ms),
        ("  health query", a.health_cpu_ms, d.health_cpu_ms),
        ("  resync", a.resync_cpu_ms, d.resync_cpu_ms),
    ] {
        println!("{name:<52} {x:>14.2} {y:>14.2}");
    }
    println!();
}

fn print_memory(report: &Report) {
    for point in &report.memory {
        println!(
            "{:<52} {:>8.1} MiB",
            format!(
                "operator RSS, {} TenantDatabases ({} provisioned)",
                point.objects, point.provisioned
            ),
            point.rss_mib
        );
    }
    if let Some(point) = &report.memory_all_provisioned_estimate {
        println!(
            "{:<52} {:>8.1} MiB",
            format!("  estimate, {} TenantDatabases all provisioned", point.objects),
            point.rss_mib
        );
    }
    println!();
}

fn print_latency(l: &Latency) {
    println!(
        "reconcile latency, spec change to CONNECTION LIMIT, {} changes",
        l.changes
    );
    println!("{:<52} {:>9.1} ms", "p50", l.p50_ms);
    println!("{:<52} {:>9.1} ms", "p99", l.p99_ms);
    println!("{:<52} {:>9.1} ms", "max", l.max_ms);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(objects: usize, provisioned: usize, rss_mib: f64) -> MemoryPoint {
        MemoryPoint {
            objects,
            provisioned,
            rss_mib,
        }
    }

    #[test]
    fn the_estimate_adds_what_provisioning_costs_beyond_an_unprovisioned_tenant() {
        // 0.02 MiB per provisioned tenant, 0.005 per unprovisioned one: the
        // 9,000 unprovisioned tenants of the last point would cost 0.015
        // MiB more each.
        let memory = [
            point(500, 500, 30.0),
            point(1000, 1000, 40.0),
            point(10000, 1000, 85.0),
        ];
        let estimate = all_provisioned_estimate(&memory).unwrap();
        assert_eq!(estimate.objects, 10000);
        assert_eq!(estimate.provisioned, 10000);
        assert!((estimate.rss_mib - 220.0).abs() < 1e-9, "{estimate:?}");
    }

    #[test]
    fn no_estimate_without_two_all_provisioned_points_and_a_larger_one() {
        assert!(all_provisioned_estimate(&[point(1000, 1000, 40.0), point(10000, 1000, 85.0)]).is_none());
        assert!(all_provisioned_estimate(&[point(500, 500, 30.0), point(1000, 1000, 40.0)]).is_none());
        assert!(all_provisioned_estimate(&[]).is_none());
    }
}
