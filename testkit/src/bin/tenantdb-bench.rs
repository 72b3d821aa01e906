//! `tenantdb-bench` (`make bench`): provisioning against the raw-SQL floor,
//! the steady state, memory and reconcile latency (docs/benchmarks.md).

use std::process::ExitCode;

use clap::Parser;

#[tokio::main]
async fn main() -> ExitCode {
    let args = tenantdb_testkit::bench::Args::parse();
    match tenantdb_testkit::bench::run(args).await {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
