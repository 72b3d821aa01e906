//! `tenantdb sandbox`: a throwaway local PostgreSQL with an administrative
//! role shaped like production's (LOGIN CREATEDB CREATEROLE, not superuser),
//! and — when `redis-server` is installed — a throwaway Redis keeping its
//! ACL users in a file, for trying tenantdb out and for local development.
//! Everything is removed when it stops.

use std::process::ExitCode;

use anyhow::Context;
use sqlx::{Connection, PgConnection};
use tenantdb::sql::{self, Ident, ScramVerifier};
use tenantdb::throwaway::ThrowawayPostgres;
use tenantdb::throwaway_redis::ThrowawayRedis;

/// The admin role the sandbox creates.
const ADMIN_ROLE: &str = "tenantdb_admin";

#[derive(clap::Args)]
pub struct Args {
    /// Command to run against the sandbox, with TENANTDB_ADMIN_URL and PGHOST,
    /// PGPORT, PGUSER, PGPASSWORD, PGDATABASE set for the admin role (and
    /// TENANTDB_CACHE_ADMIN_URL for Redis's admin user when it runs); the
    /// sandbox stops when it exits. Without one, the sandbox runs until Ctrl-C.
    #[arg(last = true, value_name = "COMMAND")]
    command: Vec<String>,
}

pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let cluster = tokio::task::spawn_blocking(ThrowawayPostgres::start).await??;
    let password = tenantdb::password::generate();
    let mut conn = PgConnection::connect(&cluster.superuser_url()).await?;
    let role = Ident::parse(ADMIN_ROLE)?;
    sqlx::query(sql::create_admin_role(&role, &ScramVerifier::generate(&password)))
        .execute(&mut conn)
        .await
        .context("creating the admin role")?;
    conn.close().await?;
    let admin_url = cluster.url(ADMIN_ROLE, &password, "postgres");

    eprintln!(
        "PostgreSQL sandbox on {}:{} (data in {}; removed on exit)",
        cluster.host(),
        cluster.port(),
        cluster.data_dir().display()
    );
    // Redis is optional: without it, everything but spec.cache works.
    let cache_password = tenantdb::password::generate();
    let redis = match tokio::task::spawn_blocking({
        let password = cache_password.clone();
        move || ThrowawayRedis::start_for_sandbox(&password)
    })
    .await?
    {
        Ok(redis) => {
            eprintln!(
                "Redis sandbox on {}:{} (ACL users in a file; removed on exit)",
                redis.host(),
                redis.port()
            );
            Some(redis)
        }
        Err(error) => {
            eprintln!("no Redis sandbox (spec.cache cannot be tried): {error:#}");
            None
        }
    };
    let cache_admin_url = redis
        .as_ref()
        .map(|r| format!("redis://default:{cache_password}@{}:{}", r.host(), r.port()));
    let code = match args.command.split_first() {
        Some((program, rest)) => {
            let mut command = tokio::process::Command::new(program);
            if let Some(url) = &cache_admin_url {
                command.env("TENANTDB_CACHE_ADMIN_URL", url);
            }
            let status = command
                .args(rest)
                .env("TENANTDB_ADMIN_URL", &admin_url)
                .env("PGHOST", cluster.host())
                .env("PGPORT", cluster.port().to_string())
                .env("PGUSER", ADMIN_ROLE)
                .env("PGPASSWORD", &password)
                .env("PGDATABASE", "postgres")
                .status()
                .await
                .with_context(|| format!("running {program}"))?;
            u8::try_from(status.code().unwrap_or(1)).map_or(ExitCode::FAILURE, ExitCode::from)
        }
        None => {
            // The one place a password is printed: a local throwaway
            // sandbox, whose whole point is to be connected to.
            println!("export TENANTDB_ADMIN_URL='{admin_url}'");
            if let Some(url) = &cache_admin_url {
                println!("export TENANTDB_CACHE_ADMIN_URL='{url}'");
            }
            eprintln!("Press Ctrl-C to stop.");
            tokio::signal::ctrl_c().await?;
            ExitCode::SUCCESS
        }
    };
    tokio::task::spawn_blocking(move || {
        drop(redis);
        drop(cluster);
    })
    .await?;
    Ok(code)
}
