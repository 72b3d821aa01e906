//! `tenantdb-bench --plan-fleet N`: `tenantdb plan` over N up-to-date
//! tenants on two servers. Two throwaway PostgreSQL servers
//! (`pg_stat_statements` loaded, autovacuum off) get N/2 tenants each,
//! provisioned by the raw-SQL floor in batches of 1,000 per server (each
//! batch's time is reported: how provisioning cost grows with the number
//! of databases); then `tenantdb plan` runs three times over manifests
//! naming both servers, and for each run the wall clock, the statements
//! each server's admin role ran (`pg_stat_statements`) and each server's
//! PostgreSQL CPU are reported. I/O: PostgreSQL, the `tenantdb` binary as a
//! child process, a temporary directory, /proc.

use std::process::ExitCode;
use std::time::Instant;

use anyhow::bail;
use serde::Serialize;
use sqlx::PgConnection;
use tenantdb::throwaway::ThrowawayPostgres;

use crate::bench::{
    counting_postgres, cpu_now, floor_range, postmaster_pid, tempdir, tenant, tenantdb_binary,
};

const ADMIN_ROLE: &str = "tenantdb_plan_admin";
const BATCH: usize = 1000;

/// One server of the fleet.
pub(crate) struct Server {
    pub(crate) name: String,
    pub(crate) namespace: String,
    pub(crate) postgres: ThrowawayPostgres,
    pub(crate) postmaster: u32,
    pub(crate) superuser: PgConnection,
    pub(crate) admin_url: String,
    pub(crate) admin_password: String,
    pub(crate) tenants: usize,
}

/// Two throwaway PostgreSQL servers, `fleet-a` and `fleet-b`, for `tenants`
/// tenants between them (namespaces of the same names): pg_stat_statements
/// loaded and able to hold a statement per tenant role, autovacuum off (its
/// work grows with the number of databases, and is nobody's but the
/// platform's), and an admin role `admin_role` made as tenantdb's
/// documentation says.
pub(crate) async fn start_servers(admin_role: &str, tenants: usize) -> anyhow::Result<Vec<Server>> {
    let mut servers = Vec::new();
    for (i, label) in ["a", "b"].into_iter().enumerate() {
        eprintln!("starting throwaway PostgreSQL {label}…");
        let (postgres, superuser, admin_password) = counting_postgres(
            admin_role,
            &[
                "shared_preload_libraries=pg_stat_statements",
                "pg_stat_statements.max=20000",
                "max_connections=200",
                "autovacuum=off",
            ],
        )
        .await?;
        servers.push(Server {
            name: format!("fleet-{label}"),
            namespace: format!("fleet-{label}"),
            postmaster: postmaster_pid(&postgres)?,
            admin_url: postgres.url(admin_role, &admin_password, "postgres"),
            admin_password,
            superuser,
            postgres,
            tenants: tenants / 2 + usize::from(i == 0 && tenants % 2 == 1),
        });
    }

    Ok(servers)
}

#[derive(Serialize)]
struct Report {
    tenants: usize,
    servers: usize,
    workers: usize,
    /// Seconds per batch of 1,000 tenants on one server, in order, per server.
    provisioning_batches: Vec<Vec<f64>>,
    plans: Vec<PlanRun>,
}

#[derive(Serialize)]
struct PlanRun {
    wall_seconds: f64,
    /// Per server: tenants, statements (text, calls) the admin role ran,
    /// and PostgreSQL CPU seconds.
    servers: Vec<ServerCost>,
}

#[derive(Serialize)]
struct ServerCost {
    server: String,
    tenants: usize,
    statements: Vec<(String, i64)>,
    calls: i64,
    postgres_cpu_seconds: f64,
}

pub async fn run(tenants: usize, workers: usize, json: bool) -> anyhow::Result<ExitCode> {
    if tenants < 2 || workers == 0 {
        bail!("--plan-fleet needs at least 2 tenants and --workers at least 1");
    }
    let exe = tenantdb_binary()?;
    let work = tempdir("tenantdb-plan-fleet")?;
    let mut servers = start_servers(ADMIN_ROLE, tenants).await?;

    // Both servers at once, a batch at a time each.
    let batches = futures::future::try_join_all(servers.iter().map(|server| async move {
        let mut times = Vec::new();
        let mut start = 0;
        while start < server.tenants {
            let end = (start + BATCH).min(server.tenants);
            let took = floor_range(&server.admin_url, &server.namespace, start..end, workers).await?;
            let per_thousand = took.as_secs_f64() * BATCH as f64 / (end - start) as f64;
            eprintln!(
                "{}: tenants {start}–{end} provisioned in {:.1} s",
                server.name,
                took.as_secs_f64()
            );
            times.push(round(per_thousand));
            start = end;
        }
        anyhow::Ok(times)
    }))
    .await?;

    let manifests = work.join("manifests");
    std::fs::create_dir_all(&manifests)?;
    for server in &servers {
        let mut yaml = format!(
            "apiVersion: v1\nkind: Secret\nmetadata: {{name: {name}-admin, namespace: ops}}\n\
             stringData: {{username: {ADMIN_ROLE}, password: {password}}}\n---\n\
             apiVersion: tenantdb.io/v1alpha1\nkind: DatabaseServer\nmetadata: {{name: {name}}}\n\
             spec: {{host: {host}, port: {port}, sslMode: disable, adminSecretRef: {{namespace: ops, name: {name}-admin}}}}\n",
            name = server.name,
            password = server.admin_password,
            host = server.postgres.host(),
            port = server.postgres.port(),
        );
        for i in 0..server.tenants {
            yaml.push_str("---\n");
            yaml.push_str(&serde_norway::to_string(&tenant(
                &server.namespace,
                &format!("t{i:05}"),
                &server.name,
            ))?);
        }
        std::fs::write(manifests.join(format!("{}.yaml", server.name)), yaml)?;
    }

    let mut plans = Vec::new();
    for _ in 0..3 {
        let mut cpu_before = Vec::new();
        for server in servers.iter_mut() {
            sqlx::query("SELECT pg_stat_statements_reset()")
                .execute(&mut server.superuser)
                .await?;
            cpu_before.push(cpu_now(server.postmaster, None, &[]).postgres);
        }
        let started = Instant::now();
        let output = tokio::process::Command::new(&exe)
            .args(["plan", "--detailed-exitcode", "-f"])
            .arg(&manifests)
            .output()
            .await?;
        let wall = started.elapsed();
        if output.status.code() != Some(0) {
            bail!(
                "tenantdb plan did not find every tenant up to date (exit {:?}): {}{}",
                output.status.code(),
                String::from_utf8_lossy(&output.stdout)
                    .lines()
                    .filter(|l| !l.ends_with("up to date"))
                    .take(20)
                    .collect::<Vec<_>>()
                    .join("\n"),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        let mut costs = Vec::new();
        for (server, before) in servers.iter_mut().zip(cpu_before) {
            let statements: Vec<(String, i64)> = sqlx::query_as(
                "SELECT left(regexp_replace(s.query, '\\s+', ' ', 'g'), 100), s.calls
                   FROM pg_stat_statements s JOIN pg_roles r ON r.oid = s.userid
                  WHERE r.rolname = $1 ORDER BY s.calls DESC",
            )
            .bind(ADMIN_ROLE)
            .fetch_all(&mut server.superuser)
            .await?;
            costs.push(ServerCost {
                server: server.name.clone(),
                tenants: server.tenants,
                calls: statements.iter().map(|(_, calls)| calls).sum(),
                statements,
                postgres_cpu_seconds: round(cpu_now(server.postmaster, None, &[]).postgres - before),
            });
        }
        plans.push(PlanRun {
            wall_seconds: round(wall.as_secs_f64()),
            servers: costs,
        });
    }
    let report = Report {
        tenants,
        servers: servers.len(),
        workers,
        provisioning_batches: batches,
        plans,
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!("tenantdb plan over {tenants} up-to-date tenants on 2 servers");
        for (server, times) in servers.iter().zip(&report.provisioning_batches) {
            println!(
                "  {}: seconds per 1,000 tenants provisioned (floor), in order: {times:?}",
                server.name
            );
        }
        for run in &report.plans {
            println!("  plan: {:.2} s", run.wall_seconds);
            for cost in &run.servers {
                println!(
                    "    {}: {} tenants, {} statement(s), PostgreSQL CPU {:.3} s: {:?}",
                    cost.server, cost.tenants, cost.calls, cost.postgres_cpu_seconds, cost.statements
                );
            }
        }
    }
    drop(servers);
    let _ = std::fs::remove_dir_all(&work);
    Ok(ExitCode::SUCCESS)
}

fn round(value: f64) -> f64 {
    (value * 1000.0).round() / 1000.0
}
