//! Command-line parsing and dispatch. Each subcommand lives in its own file
//! and reports failure through `anyhow`, which stops here.

mod check;
mod crd;
mod local;
mod run;
mod sandbox;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

#[derive(Parser)]
#[command(
    name = "tenantdb",
    version,
    about = "Kubernetes operator for the database-per-tenant architecture on PostgreSQL"
)]
struct Cli {
    /// Log format on stderr.
    #[arg(
        long,
        global = true,
        value_enum,
        default_value = "text",
        env = "TENANTDB_LOG_FORMAT"
    )]
    log_format: LogFormat,

    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run the operator: reconcile TenantDatabases and DatabaseServers in a cluster.
    Run(Box<run::Args>),
    /// Print the CustomResourceDefinitions as YAML (or write one file per CRD).
    Crd {
        /// Write `<crd-name>.yaml` files into this directory instead of printing.
        #[arg(long, value_name = "DIR")]
        output_dir: Option<PathBuf>,
    },
    /// Validate manifests as the API server would, and optionally log in to each DatabaseServer.
    Check(check::Args),
    /// Show what apply would change on the servers, without changing anything.
    Plan(local::PlanArgs),
    /// Provision the tenants in the manifests on their servers.
    Apply(local::ApplyArgs),
    /// Show each tenant's health: connections against its limit, a real login, latency, size.
    Status(local::StatusArgs),
    /// Carry out each tenant's deletionPolicy (Retain: nothing; Delete: drop
    /// database and role) — only with --yes; without, say what would be dropped.
    Delete(local::DeleteArgs),
    /// Run a throwaway local PostgreSQL with an admin role (and a Redis, when installed), for trying tenantdb out.
    Sandbox(sandbox::Args),
}

pub async fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    let result = match cli.command {
        Command::Run(args) => run::run(*args).await,
        Command::Crd { output_dir } => crd::run(output_dir.as_deref()),
        Command::Check(args) => check::run(args).await,
        Command::Plan(args) => local::plan(args).await,
        Command::Apply(args) => local::apply(args).await,
        Command::Delete(args) => local::delete(args).await,
        Command::Status(args) => local::status(args).await,
        Command::Sandbox(args) => sandbox::run(args).await,
    };
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // Colour only for a person at a terminal: a log written to a file or a
    // pipe (a pod's log, `2> log`) keeps no escape codes; NO_COLOR is honoured.
    let colour =
        std::io::IsTerminal::is_terminal(&std::io::stderr()) && std::env::var_os("NO_COLOR").is_none();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colour)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}
