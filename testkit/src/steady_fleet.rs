//! `tenantdb-bench --steady-fleet N`: the operator with N tenants on two
//! servers — provisioning them from nothing, then a quiet fleet at the
//! default settings over a resync period plus a full login rotation.
//!
//! 1. **Provisioning**: two throwaway PostgreSQL servers and a real control
//!    plane (the chart's CRDs and RBAC; the operator authenticated as the
//!    chart's ServiceAccount, `--concurrency 2 × --workers`: `--workers`
//!    tenants at once per server). N/2 TenantDatabases per server are
//!    created in batches of 1,000 on both servers at once, each batch
//!    waited for until Ready; each batch's wall clock and PostgreSQL CPU
//!    per server show how the cost per tenant grows with the number of
//!    databases. While provisioning, the servers' `healthCheck` lets 20
//!    logins a second, each tenant's every minute, reads each size every 3
//!    minutes and writes numbers that moved after a minute, so that every
//!    tenant's first login — and its size after that login (its first
//!    session writes a file into the database), and the latency of a login
//!    after provisioning (the first ones ran under its load) — is in its
//!    status before the quiet window: once all are Ready with a login, the
//!    benchmark waits those 4 minutes (or a rotation at 20 logins a second
//!    and a minute, if longer) and a minute with no API writes.
//! 2. **The quiet fleet**: the servers' `healthCheck` back to the defaults
//!    (1 login a second, 30 s health query, 5-minute logins, hourly
//!    sizes of databases written to, 5-minute heartbeat; the operator's
//!    5-minute resync); once a
//!    minute passes with no API writes, a window of one resync period plus
//!    the servers' reported login rotation is measured: the operator's API
//!    requests (audit log), each server's admin statements by cause
//!    (pg_stat_statements), tenant logins (their `SELECT 1`, counted each
//!    30 s against the budget), sessions opened in tenant databases, and
//!    each server's PostgreSQL CPU; then, with the operator stopped, each
//!    server's idle CPU over 5 minutes (or the window, if shorter), so what
//!    tenantdb costs is the difference — reported per server per hour, by
//!    cause (health query, resync, logins).
//!
//! I/O: PostgreSQL, the control plane, the `tenantdb` binary as a child
//! process, a temporary directory, /proc.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::bail;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde::Serialize;
use serde_json::json;
use sqlx::PgConnection;
use tenantdb::api::DatabaseServer;
use tenantdb::health::HealthPolicy;

use crate::bench::{
    DEFAULT_RESYNC, add_namespace, client_of, condition, cpu_now, create_tenants_from, difference,
    first_words, logged_in, round, rss_mib, start_operator, tempdir, tenantdb_binary, wait_for_all, writes,
};
use crate::control_plane::{ControlPlane, install_chart};
use crate::plan_fleet::{Server, start_servers};

const ADMIN_ROLE: &str = "tenantdb_fleet_admin";
const BATCH: usize = 1000;
/// Tenant logins a second per server until the quiet window.
const PROVISIONING_LOGINS_PER_SECOND: f64 = 20.0;

/// How often logins are counted during the window.
const SLICE: Duration = Duration::from_secs(30);
/// The idle measurement after the window, at most.
const IDLE: Duration = Duration::from_secs(300);

#[derive(Serialize)]
struct Report {
    tenants: usize,
    workers: usize,
    provisioning: Provisioning,
    quiet: Quiet,
}

#[derive(Serialize)]
struct Provisioning {
    wall_seconds: f64,
    /// Per server, per batch of (up to) 1,000 tenants in order.
    batches: BTreeMap<String, Vec<Batch>>,
}

#[derive(Serialize)]
struct Batch {
    tenants_before: usize,
    tenants: usize,
    wall_seconds: f64,
    postgres_cpu_seconds: f64,
    /// Wall clock per tenant of the batch, in milliseconds.
    ms_per_tenant: f64,
    /// PostgreSQL CPU per tenant of the batch, in milliseconds.
    cpu_ms_per_tenant: f64,
}

#[derive(Serialize)]
struct Quiet {
    window_seconds: u64,
    resync_seconds: u64,
    /// The operator's requests in the window (API server audit log).
    requests: BTreeMap<String, u64>,
    kubernetes_writes: u64,
    operator_cpu_seconds: f64,
    operator_rss_mib: f64,
    kubernetes_cpu_seconds: f64,
    servers: Vec<QuietServer>,
}

#[derive(Serialize)]
struct QuietServer {
    server: String,
    tenants: usize,
    /// `status.loginRotationSeconds` and the budget it follows from.
    login_rotation_seconds: i64,
    logins_per_second_budget: f64,
    /// The admin role's statements (text, calls).
    admin_statements: Vec<(String, i64)>,
    health_queries: i64,
    catalog_snapshots: i64,
    other_admin_statements: i64,
    /// Tenant logins: their `SELECT 1`, in the window and per 30 s slice.
    logins: i64,
    logins_per_slice: Vec<i64>,
    /// The most a slice may hold: the budget over the slice plus the
    /// bucket's burst (one health interval's worth).
    logins_allowed_per_slice: f64,
    /// Execution time of the admin statements, by cause, in milliseconds.
    health_query_ms: f64,
    catalog_snapshot_ms: f64,
    other_admin_ms: f64,
    /// Sessions opened in tenant databases, by anyone.
    tenant_database_sessions: i64,
    /// Sessions opened in the `postgres` database: the admin role's pools.
    admin_connections: i64,
    postgres_cpu_seconds: f64,
    postgres_idle_cpu_seconds_per_window: f64,
    /// PostgreSQL CPU beyond idle, as a percentage of one core.
    tenantdb_cpu_percent_of_a_core: f64,
    /// The whole server's cost per hour of a quiet fleet, by cause.
    per_hour: PerHour,
}

/// One server's cost per hour. CPU beyond idle is split by cause: the
/// health query and the resync (catalog snapshots and the rest of the
/// admin statements) by their execution time, the remainder — session
/// start (fork, SCRAM), `SELECT 1`, session end — to the logins.
#[derive(Serialize, Default)]
struct PerHour {
    health_queries: f64,
    resync_statements: f64,
    logins: f64,
    connections_opened: f64,
    postgres_cpu_seconds: f64,
    health_cpu_seconds: f64,
    resync_cpu_seconds: f64,
    login_cpu_seconds: f64,
}

pub async fn run(
    tenants: usize,
    workers: usize,
    window: Option<u64>,
    json: bool,
) -> anyhow::Result<ExitCode> {
    if tenants < 2 || workers == 0 {
        bail!("--steady-fleet needs at least 2 tenants and --workers at least 1");
    }
    let exe = tenantdb_binary()?;
    let work = tempdir("tenantdb-steady-fleet")?;
    let mut servers = start_servers(ADMIN_ROLE, tenants).await?;
    eprintln!("starting a Kubernetes control plane (the chart's CRDs and RBAC applied)…");
    let plane = tokio::task::spawn_blocking(|| {
        let plane = ControlPlane::start();
        install_chart(&plane);
        plane
    })
    .await?;
    let client = client_of(&plane.admin_kubeconfig).await?;
    add_namespace(&client, "ops").await?;
    let provisioning_health = json!({
        "loginsPerSecond": PROVISIONING_LOGINS_PER_SECOND,
        "loginInterval": "1m",
        "sizeInterval": "3m",
        "statusHeartbeat": "1m",
    });
    for server in &servers {
        add_namespace(&client, &server.namespace).await?;
        add_server(&client, server, provisioning_health.clone()).await?;
    }
    let mut operator = start_operator(
        &exe,
        &plane.operator_kubeconfig,
        &work.join("operator.log"),
        DEFAULT_RESYNC,
        workers,
    )?;
    for server in &servers {
        wait_for_server(&client, &server.name, |_| true).await?;
    }

    // 1. Provisioning, both servers at once, a batch at a time each.
    eprintln!("provisioning {tenants} tenants on two servers…");
    let started = Instant::now();
    let batches =
        futures::future::try_join_all(servers.iter().map(|server| provision(&client, server))).await?;
    let provisioning = Provisioning {
        wall_seconds: round(started.elapsed().as_secs_f64()),
        batches: servers.iter().map(|s| s.name.clone()).zip(batches).collect(),
    };
    for server in &servers {
        wait_for_all(
            &client,
            &server.namespace,
            server.tenants,
            "Ready with a login",
            |t| condition(t, "Ready") && logged_in(t),
        )
        .await?;
    }

    eprintln!("every tenant Ready with a login; their sizes, and logins after provisioning…");
    let per_server = servers.iter().map(|s| s.tenants).max().unwrap_or(0);
    let rotation = per_server as f64 / PROVISIONING_LOGINS_PER_SECOND;
    tokio::time::sleep(Duration::from_secs(240).max(Duration::from_secs_f64(rotation + 60.0))).await;
    wait_for_a_quiet_minute(&plane).await?;

    // 2. The quiet fleet, at the defaults.
    eprintln!("back to the default health settings; waiting for a quiet minute…");
    let defaults = HealthPolicy::default();
    let mut rotations = Vec::new();
    for server in &servers {
        Api::<DatabaseServer>::all(client.clone())
            .patch(
                &server.name,
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"healthCheck": null}})),
            )
            .await?;
        let expected = defaults.login_rotation(server.tenants).as_secs() as i64;
        let rotation = wait_for_server(&client, &server.name, |s| {
            s.status
                .as_ref()
                .and_then(|s| s.login_rotation_seconds)
                .is_some_and(|r| (r - expected).abs() <= 1)
        })
        .await?;
        rotations.push(rotation);
    }
    wait_for_a_quiet_minute(&plane).await?;
    let rotation = rotations.iter().copied().max().unwrap_or(0);
    let window = Duration::from_secs(window.unwrap_or(DEFAULT_RESYNC.as_secs() + rotation.max(0) as u64));
    eprintln!("watching the quiet fleet for {} s…", window.as_secs());

    let kubernetes = plane.pids();
    let mut admin_oids = Vec::new();
    for server in servers.iter_mut() {
        sqlx::query("SELECT pg_stat_statements_reset()")
            .execute(&mut server.superuser)
            .await?;
        admin_oids.push(role_oid(&mut server.superuser, ADMIN_ROLE).await?);
    }
    let requests_before = plane.audited_requests();
    let mut sessions_before = Vec::new();
    let mut cpu_before = Vec::new();
    for server in servers.iter_mut() {
        sessions_before.push(sessions(&mut server.superuser).await?);
        cpu_before.push(cpu_now(server.postmaster, operator.id(), &kubernetes));
    }
    let window_started = tokio::time::Instant::now();
    let mut slices: Vec<Vec<i64>> = vec![Vec::new(); servers.len()];
    let mut last: Vec<i64> = vec![0; servers.len()];
    while window_started.elapsed() < window {
        let left = window.saturating_sub(window_started.elapsed());
        tokio::time::sleep(left.min(SLICE)).await;
        for (i, server) in servers.iter_mut().enumerate() {
            let now = tenant_logins(&mut server.superuser, admin_oids[i]).await?;
            slices[i].push(now - last[i]);
            last[i] = now;
        }
    }
    let mut cpu_after = Vec::new();
    for server in &servers {
        cpu_after.push(cpu_now(server.postmaster, operator.id(), &kubernetes));
    }
    let operator_rss_mib = rss_mib(operator.id())?;
    // A write whose reconcile started inside the window counts.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let requests = difference(&plane.audited_requests(), &requests_before);
    let mut quiet_servers = Vec::new();
    for (i, server) in servers.iter_mut().enumerate() {
        let statements: Vec<(String, i64, f64)> = sqlx::query_as(
            "SELECT query, calls, total_exec_time FROM pg_stat_statements WHERE userid = $1 ORDER BY calls DESC",
        )
        .bind(admin_oids[i])
        .fetch_all(&mut server.superuser)
        .await?;
        let health = |q: &str| q.trim_start().starts_with("WITH activity AS");
        let snapshot = |q: &str| q.contains("WITH ORDINALITY");
        let other = |q: &str| !health(q) && !snapshot(q);
        let count =
            |f: &dyn Fn(&str) -> bool| statements.iter().filter(|s| f(&s.0)).map(|s| s.1).sum::<i64>();
        let ms = |f: &dyn Fn(&str) -> bool| statements.iter().filter(|s| f(&s.0)).map(|s| s.2).sum::<f64>();
        let (tenant_sessions, admin_sessions) = sessions(&mut server.superuser).await?;
        let (tenant_sessions, admin_sessions) = (
            tenant_sessions - sessions_before[i].0,
            admin_sessions - sessions_before[i].1,
        );
        let budget = defaults.logins_per_second();
        quiet_servers.push(QuietServer {
            server: server.name.clone(),
            tenants: server.tenants,
            login_rotation_seconds: rotations[i],
            logins_per_second_budget: budget,
            admin_statements: statements.iter().map(|(q, c, _)| (first_words(q), *c)).collect(),
            health_queries: count(&health),
            catalog_snapshots: count(&snapshot),
            other_admin_statements: count(&other),
            health_query_ms: round(ms(&health)),
            catalog_snapshot_ms: round(ms(&snapshot)),
            other_admin_ms: round(ms(&other)),
            logins: slices[i].iter().sum(),
            logins_per_slice: slices[i].clone(),
            logins_allowed_per_slice: round(
                budget * SLICE.as_secs_f64() + budget * defaults.interval.as_secs_f64(),
            ),
            tenant_database_sessions: tenant_sessions,
            admin_connections: admin_sessions,
            postgres_cpu_seconds: round(cpu_after[i].postgres - cpu_before[i].postgres),
            postgres_idle_cpu_seconds_per_window: 0.0,
            tenantdb_cpu_percent_of_a_core: 0.0,
            per_hour: PerHour::default(),
        });
    }
    let operator_cpu_seconds = round(cpu_after[0].operator - cpu_before[0].operator);
    let kubernetes_cpu_seconds = round(cpu_after[0].kubernetes - cpu_before[0].kubernetes);

    // What the servers cost with nobody connected but this benchmark.
    let idle_window = window.min(IDLE);
    eprintln!(
        "the operator stopped: PostgreSQL's idle CPU over {} s…",
        idle_window.as_secs()
    );
    let _ = operator.kill().await;
    tokio::time::sleep(Duration::from_secs(10)).await;
    let idle_before: Vec<f64> = servers
        .iter()
        .map(|s| cpu_now(s.postmaster, None, &[]).postgres)
        .collect();
    tokio::time::sleep(idle_window).await;
    for (i, server) in servers.iter().enumerate() {
        let idle = cpu_now(server.postmaster, None, &[]).postgres - idle_before[i];
        let idle_per_window = idle * window.as_secs_f64() / idle_window.as_secs_f64();
        let quiet = &mut quiet_servers[i];
        quiet.postgres_idle_cpu_seconds_per_window = round(idle_per_window);
        let busy = (quiet.postgres_cpu_seconds - idle_per_window).max(0.0);
        quiet.tenantdb_cpu_percent_of_a_core = round(busy / window.as_secs_f64() * 100.0);
        let hourly = |value: f64| round(value * 3600.0 / window.as_secs_f64());
        let health_cpu = quiet.health_query_ms / 1000.0;
        let resync_cpu = (quiet.catalog_snapshot_ms + quiet.other_admin_ms) / 1000.0;
        quiet.per_hour = PerHour {
            health_queries: hourly(quiet.health_queries as f64),
            resync_statements: hourly((quiet.catalog_snapshots + quiet.other_admin_statements) as f64),
            logins: hourly(quiet.logins as f64),
            connections_opened: hourly((quiet.tenant_database_sessions + quiet.admin_connections) as f64),
            postgres_cpu_seconds: hourly(busy),
            health_cpu_seconds: hourly(health_cpu),
            resync_cpu_seconds: hourly(resync_cpu),
            login_cpu_seconds: hourly((busy - health_cpu - resync_cpu).max(0.0)),
        };
    }

    let report = Report {
        tenants,
        workers,
        provisioning,
        quiet: Quiet {
            window_seconds: window.as_secs(),
            resync_seconds: DEFAULT_RESYNC.as_secs(),
            kubernetes_writes: writes(&requests),
            requests,
            operator_cpu_seconds,
            operator_rss_mib,
            kubernetes_cpu_seconds,
            servers: quiet_servers,
        },
    };
    print(&report, json)?;
    drop(servers);
    // TENANTDB_BENCH_KEEP keeps the operator's log (at the level of
    // TENANTDB_BENCH_OPERATOR_LOG) in /var/tmp: the work directory is on
    // the fleet's file system, deleted with it.
    if std::env::var_os("TENANTDB_BENCH_KEEP").is_some() {
        let kept =
            std::path::Path::new("/var/tmp").join(format!("tenantdb-steady-fleet-{tenants}-operator.log"));
        std::fs::copy(work.join("operator.log"), &kept)?;
        eprintln!("the operator's log is kept in {}", kept.display());
    }
    let _ = std::fs::remove_dir_all(&work);
    Ok(ExitCode::SUCCESS)
}

/// Provisions `server`'s tenants through the operator, a batch of 1,000 at
/// a time, each waited for until Ready.
async fn provision(client: &kube::Client, server: &Server) -> anyhow::Result<Vec<Batch>> {
    let mut batches = Vec::new();
    let mut start = 0;
    while start < server.tenants {
        let end = (start + BATCH).min(server.tenants);
        let cpu = cpu_now(server.postmaster, None, &[]).postgres;
        let began = Instant::now();
        create_tenants_from(client, &server.namespace, start, end - start, &server.name).await?;
        wait_for_all(client, &server.namespace, end, "Ready", |t| condition(t, "Ready")).await?;
        let wall = began.elapsed().as_secs_f64();
        let cpu = cpu_now(server.postmaster, None, &[]).postgres - cpu;
        let n = (end - start) as f64;
        eprintln!(
            "{}: tenants {start}–{end} Ready in {wall:.1} s ({:.0} ms each, {:.0} ms of PostgreSQL CPU)",
            server.name,
            wall * 1000.0 / n,
            cpu * 1000.0 / n
        );
        batches.push(Batch {
            tenants_before: start,
            tenants: end - start,
            wall_seconds: round(wall),
            postgres_cpu_seconds: round(cpu),
            ms_per_tenant: round(wall * 1000.0 / n),
            cpu_ms_per_tenant: round(cpu * 1000.0 / n),
        });
        start = end;
    }
    Ok(batches)
}

/// The server's admin Secret and DatabaseServer, with `health_check`.
async fn add_server(
    client: &kube::Client,
    server: &Server,
    health_check: serde_json::Value,
) -> anyhow::Result<()> {
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": format!("{}-admin", server.name)},
        "stringData": {"username": ADMIN_ROLE, "password": server.admin_password}
    }))?;
    Api::<Secret>::namespaced(client.clone(), "ops")
        .create(&PostParams::default(), &secret)
        .await?;
    let resource: DatabaseServer = serde_json::from_value(json!({
        "apiVersion": "tenantdb.io/v1alpha1", "kind": "DatabaseServer",
        "metadata": {"name": server.name},
        "spec": {"host": server.postgres.host(), "port": server.postgres.port(), "sslMode": "disable",
                 "adminSecretRef": {"namespace": "ops", "name": format!("{}-admin", server.name)},
                 "healthCheck": health_check}
    }))?;
    Api::<DatabaseServer>::all(client.clone())
        .create(&PostParams::default(), &resource)
        .await?;
    Ok(())
}

/// Waits (two minutes at most) until the server is Ready and passes
/// `check`; returns its `status.loginRotationSeconds`.
async fn wait_for_server(
    client: &kube::Client,
    name: &str,
    check: impl Fn(&DatabaseServer) -> bool,
) -> anyhow::Result<i64> {
    let api: Api<DatabaseServer> = Api::all(client.clone());
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let server = api.get(name).await?;
        let ready = server.status.as_ref().is_some_and(|s| {
            s.conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True")
        });
        if ready && check(&server) {
            return Ok(server
                .status
                .as_ref()
                .and_then(|s| s.login_rotation_seconds)
                .unwrap_or(0));
        }
        if Instant::now() > deadline {
            bail!(
                "DatabaseServer {name} never became what was waited for: {:?}",
                server.status
            );
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Waits until a whole minute passes without the operator writing to the
/// API server (30 minutes at most).
async fn wait_for_a_quiet_minute(plane: &ControlPlane) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(1800);
    loop {
        let before = plane.audited_requests();
        tokio::time::sleep(Duration::from_secs(60)).await;
        let written = writes(&difference(&plane.audited_requests(), &before));
        if written == 0 {
            return Ok(());
        }
        eprintln!("  {written} writes in the last minute");
        if Instant::now() > deadline {
            bail!("the operator kept writing for 30 minutes after provisioning");
        }
    }
}

async fn role_oid(superuser: &mut PgConnection, role: &str) -> anyhow::Result<sqlx::postgres::types::Oid> {
    Ok(sqlx::query_scalar("SELECT oid FROM pg_roles WHERE rolname = $1")
        .bind(role)
        .fetch_one(superuser)
        .await?)
}

/// Statements run so far by roles other than the admin role and the
/// superuser: the tenants' login checks, one `SELECT 1` each.
async fn tenant_logins(
    superuser: &mut PgConnection,
    admin: sqlx::postgres::types::Oid,
) -> anyhow::Result<i64> {
    Ok(sqlx::query_scalar(
        "SELECT coalesce(sum(s.calls), 0)::int8 FROM pg_stat_statements s
          WHERE s.userid <> $1 AND s.userid <> (SELECT oid FROM pg_roles WHERE rolname = current_user)",
    )
    .bind(admin)
    .fetch_one(superuser)
    .await?)
}

/// Sessions opened so far in the tenants' databases, and in `postgres`
/// (where the admin role's pools connect).
async fn sessions(superuser: &mut PgConnection) -> anyhow::Result<(i64, i64)> {
    Ok(sqlx::query_as(
        "SELECT coalesce(sum(sessions) FILTER (WHERE datname NOT IN ('postgres', 'template0', 'template1')), 0)::int8,
                coalesce(sum(sessions) FILTER (WHERE datname = 'postgres'), 0)::int8
           FROM pg_stat_database WHERE datname IS NOT NULL",
    )
    .fetch_one(superuser)
    .await?)
}

fn print(report: &Report, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(report)?);
        return Ok(());
    }
    let p = &report.provisioning;
    println!(
        "provisioning {} tenants on two servers through the operator: {:.0} s",
        report.tenants, p.wall_seconds
    );
    for (server, batches) in &p.batches {
        for b in batches {
            println!(
                "  {server}: tenants {}–{}: {:.1} s, {:.0} ms each, {:.0} ms of PostgreSQL CPU each",
                b.tenants_before,
                b.tenants_before + b.tenants,
                b.wall_seconds,
                b.ms_per_tenant,
                b.cpu_ms_per_tenant
            );
        }
    }
    let q = &report.quiet;
    println!(
        "quiet fleet, {} s (resync {} s + login rotation): {} API writes, requests {:?}",
        q.window_seconds, q.resync_seconds, q.kubernetes_writes, q.requests
    );
    println!(
        "  operator CPU {:.1} s, RSS {:.1} MiB; control plane CPU {:.1} s",
        q.operator_cpu_seconds, q.operator_rss_mib, q.kubernetes_cpu_seconds
    );
    for s in &q.servers {
        println!(
            "  {}: {} tenants, rotation {} s at {}/s; health queries {}, catalog snapshots {}, other admin \
             statements {}; logins {} (most in a 30 s slice {}, allowed {}); sessions in tenant databases {}; \
             PostgreSQL CPU {:.1} s (idle {:.1} s): tenantdb {:.2} % of a core",
            s.server,
            s.tenants,
            s.login_rotation_seconds,
            s.logins_per_second_budget,
            s.health_queries,
            s.catalog_snapshots,
            s.other_admin_statements,
            s.logins,
            s.logins_per_slice.iter().max().unwrap_or(&0),
            s.logins_allowed_per_slice,
            s.tenant_database_sessions,
            s.postgres_cpu_seconds,
            s.postgres_idle_cpu_seconds_per_window,
            s.tenantdb_cpu_percent_of_a_core
        );
        println!("    admin statements: {:?}", s.admin_statements);
        let h = &s.per_hour;
        println!(
            "    per hour: {} health queries, {} resync statements, {} logins, {} connections opened; \
             PostgreSQL CPU {:.1} s (health {:.1}, resync {:.1}, logins {:.1})",
            h.health_queries,
            h.resync_statements,
            h.logins,
            h.connections_opened,
            h.postgres_cpu_seconds,
            h.health_cpu_seconds,
            h.resync_cpu_seconds,
            h.login_cpu_seconds
        );
    }
    Ok(())
}
