//! `kube-emulator`: the Kubernetes API emulator as its own process, for
//! manual use and black-box checks with `kubectl`. For tests and demos only.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use tenantdb_testkit::emulator::{Emulator, EmulatorOptions};

#[derive(Parser)]
#[command(about = "A Kubernetes API emulator for tests and local demos (not a real cluster)")]
struct Args {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Where to write a kubeconfig for it.
    #[arg(long, value_name = "FILE")]
    kubeconfig_out: Option<PathBuf>,
    /// Install the CRDs in these files or directories at start.
    #[arg(long, value_name = "FILE_OR_DIR")]
    crds: Vec<PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut crds = Vec::new();
    for path in &args.crds {
        let files: Vec<PathBuf> = if path.is_dir() {
            let mut files: Vec<PathBuf> = std::fs::read_dir(path)?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
                .collect();
            files.sort();
            files
        } else {
            vec![path.clone()]
        };
        for file in files {
            let text =
                std::fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))?;
            for document in serde_norway::Deserializer::from_str(&text) {
                let crd = serde::Deserialize::deserialize(document)
                    .with_context(|| format!("{}: not a CRD", file.display()))?;
                crds.push(crd);
            }
        }
    }
    let emulator = Emulator::start(EmulatorOptions {
        listen: args.listen,
        crds,
        ..EmulatorOptions::default()
    })
    .await
    .map_err(|e| anyhow::anyhow!(e.message))?;
    if let Some(path) = &args.kubeconfig_out {
        std::fs::write(path, emulator.kubeconfig()).with_context(|| format!("writing {}", path.display()))?;
    }
    println!("Kubernetes API emulator on {} (stop with Ctrl-C)", emulator.url());
    tokio::signal::ctrl_c().await?;
    Ok(())
}
