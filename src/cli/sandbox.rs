//! `tenantdb sandbox`: a throwaway local PostgreSQL with an administrative
//! role shaped like production's (LOGIN CREATEDB CREATEROLE, not superuser),
//! for trying tenantdb out and for local development. Everything is removed
//! when it stops.

use std::process::ExitCode;

use anyhow::Context;
use sqlx::{Connection, PgConnection};
use tenantdb::sql::{self, Ident, ScramVerifier};
use tenantdb::throwaway::ThrowawayPostgres;

/// The admin role the sandbox creates.
const ADMIN_ROLE: &str = "tenantdb_admin";

#[derive(clap::Args)]
pub struct Args {
    /// Command to run against the sandbox, with TENANTDB_ADMIN_URL and PGHOST,
    /// PGPORT, PGUSER, PGPASSWORD, PGDATABASE set for the admin role; the
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
    let code = match args.command.split_first() {
        Some((program, rest)) => {
            let status = tokio::process::Command::new(program)
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
            eprintln!("Press Ctrl-C to stop.");
            tokio::signal::ctrl_c().await?;
            ExitCode::SUCCESS
        }
    };
    tokio::task::spawn_blocking(move || drop(cluster)).await?;
    Ok(code)
}
