//! `tenantdb run`: the operator process.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use tenantdb::operator::{self, LeaderElection};

#[derive(clap::Args)]
pub struct Args {
    /// Kubeconfig file; default: $KUBECONFIG, else ~/.kube/config, else the in-cluster configuration.
    #[arg(long, value_name = "FILE")]
    kubeconfig: Option<PathBuf>,

    /// Watch TenantDatabases in these namespaces only, comma-separated or
    /// repeated (default: all namespaces).
    #[arg(
        long = "namespace",
        env = "TENANTDB_NAMESPACES",
        value_name = "NAMESPACE",
        value_delimiter = ','
    )]
    namespaces: Vec<String>,

    /// Tenants reconciled at once.
    #[arg(long, env = "TENANTDB_CONCURRENCY", default_value_t = 8)]
    concurrency: u16,

    /// How often a converged tenant is checked again for drift, e.g. 5m or 30s.
    #[arg(long, env = "TENANTDB_RESYNC", default_value = "5m", value_parser = parse_interval)]
    resync: Duration,

    /// First retry delay of a failed index build, doubled per failure in a row (at most 10m).
    #[arg(long, env = "TENANTDB_INDEX_RETRY", default_value = "30s", value_parser = parse_interval)]
    index_retry: Duration,

    /// Address for /healthz, /readyz and /metrics.
    #[arg(long, env = "TENANTDB_HTTP_ADDR", default_value = "0.0.0.0:8080")]
    http_addr: SocketAddr,

    /// Run without leader election (only for a single replica).
    #[arg(long)]
    no_leader_election: bool,

    /// Namespace of the leader Lease; default: the pod's namespace (POD_NAMESPACE), else `default`.
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    lease_namespace: String,

    /// Name of the leader Lease.
    #[arg(long, default_value = "tenantdb-operator")]
    lease_name: String,

    /// How long the leader's lease lasts without renewal, e.g. 15s.
    #[arg(long, default_value = "15s", value_parser = parse_interval)]
    lease_duration: Duration,

    /// This replica's identity in the Lease; default: POD_NAME, else the host name with a random suffix.
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,
}

/// A duration of at least one second (a zero resync would spin).
fn parse_interval(text: &str) -> Result<Duration, String> {
    let millis = tenantdb::api::duration::parse_millis(text).map_err(|e| e.to_string())?;
    if millis < 1000 {
        return Err(format!("{text:?} is shorter than the minimum of 1s"));
    }
    Ok(Duration::from_millis(millis.unsigned_abs()))
}

pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let config = match &args.kubeconfig {
        Some(path) => {
            let kubeconfig = kube::config::Kubeconfig::read_from(path)
                .with_context(|| format!("reading {}", path.display()))?;
            kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default()).await?
        }
        None => kube::Config::infer().await?,
    };
    let client = kube::Client::try_from(config)?;
    let identity = args.identity.unwrap_or_else(|| {
        let host = std::fs::read_to_string("/etc/hostname").unwrap_or_else(|_| "tenantdb".into());
        format!(
            "{}-{}",
            host.trim(),
            &tenantdb::password::generate()[..6].to_lowercase()
        )
    });
    let config = operator::Config {
        namespaces: args.namespaces,
        concurrency: args.concurrency.max(1),
        resync: args.resync,
        index_retry: args.index_retry,
        http_addr: args.http_addr,
        leader_election: (!args.no_leader_election).then(|| LeaderElection {
            namespace: args.lease_namespace,
            lease_name: args.lease_name,
            identity: identity.clone(),
            lease_duration: args.lease_duration,
        }),
    };
    tracing::info!(%identity, resync = ?config.resync, namespaces = ?config.namespaces, "starting the operator");
    tenantdb::fault::arm_from_env();
    operator::run(client, config, shutdown_signal())
        .await
        .map_err(|e| anyhow::anyhow!(e))?;
    tracing::info!("stopped");
    Ok(ExitCode::SUCCESS)
}

/// SIGTERM (Kubernetes stopping the pod) or Ctrl-C.
async fn shutdown_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate => {}
    }
}
