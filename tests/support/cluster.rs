//! The Kubernetes API tests talk to: the project's emulator, or a real
//! cluster when `TENANTDB_E2E_KUBECONFIG` names one (with tenantdb's CRDs
//! installed). Each test works in namespaces of its own.

use std::path::PathBuf;

use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, DeleteParams, PostParams};
use tenantdb::emulator::{Emulator, EmulatorOptions};

pub struct TestCluster {
    pub client: kube::Client,
    /// A kubeconfig file for `kubectl`.
    pub kubeconfig: PathBuf,
    /// The emulator, when the tests run against one.
    pub emulator: Option<Emulator>,
    _dir: TempDir,
}

/// A directory removed on drop.
pub struct TempDir(pub PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl TempDir {
    pub fn new(label: &str) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "tenantdb-{label}-{}",
            tenantdb::password::generate()[..10].to_lowercase()
        ));
        std::fs::create_dir_all(&dir).expect("creating a temporary directory");
        Self(dir)
    }
}

/// tenantdb's CRDs as checked in.
pub fn crds()
-> Vec<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition> {
    tenantdb::api::crds()
}

impl TestCluster {
    /// The real cluster of `TENANTDB_E2E_KUBECONFIG`, else a new emulator with tenantdb's CRDs.
    pub async fn start() -> Self {
        match std::env::var("TENANTDB_E2E_KUBECONFIG") {
            Ok(path) if !path.is_empty() => Self::real(PathBuf::from(path)).await,
            _ => Self::emulated(EmulatorOptions::default()).await,
        }
    }

    /// Always an emulator, for what only the emulator can show (request
    /// counts, a short watch history).
    pub async fn emulated(options: EmulatorOptions) -> Self {
        let emulator = Emulator::start(EmulatorOptions {
            crds: crds(),
            ..options
        })
        .await
        .unwrap_or_else(|e| panic!("starting the emulator: {}", e.message));
        let dir = TempDir::new("kube");
        let kubeconfig = dir.0.join("kubeconfig");
        std::fs::write(&kubeconfig, emulator.kubeconfig()).unwrap();
        Self {
            client: emulator.client().unwrap(),
            kubeconfig,
            emulator: Some(emulator),
            _dir: dir,
        }
    }

    async fn real(kubeconfig: PathBuf) -> Self {
        let config =
            kube::config::Kubeconfig::read_from(&kubeconfig).expect("reading TENANTDB_E2E_KUBECONFIG");
        let config = kube::Config::from_custom_kubeconfig(config, &Default::default())
            .await
            .unwrap();
        Self {
            client: kube::Client::try_from(config).unwrap(),
            kubeconfig,
            emulator: None,
            _dir: TempDir::new("kube"),
        }
    }

    /// Creates a namespace named `prefix-<random>` and returns its name.
    pub async fn namespace(&self, prefix: &str) -> String {
        let name = format!("{prefix}-{}", tenantdb::password::generate()[..6].to_lowercase());
        let namespace: Namespace =
            serde_json::from_value(serde_json::json!({"metadata": {"name": name}})).unwrap();
        Api::<Namespace>::all(self.client.clone())
            .create(&PostParams::default(), &namespace)
            .await
            .unwrap();
        name
    }

    pub async fn delete_namespace(&self, name: &str) {
        let _ = Api::<Namespace>::all(self.client.clone())
            .delete(name, &DeleteParams::default())
            .await;
    }

    /// Runs the real `kubectl` with this cluster's kubeconfig (without
    /// blocking the runtime the emulator serves on).
    pub async fn kubectl(&self, args: &[&str]) -> std::process::Output {
        tokio::process::Command::new("kubectl")
            .args(args)
            .env("KUBECONFIG", &self.kubeconfig)
            .output()
            .await
            .expect("kubectl is installed (see .ci/run)")
    }
}

/// The stdout of a command that must have succeeded (else its output is shown).
pub fn succeeded(output: std::process::Output) -> String {
    assert!(
        output.status.success(),
        "command failed: {}{}",
        super::text(&output.stdout),
        super::text(&output.stderr)
    );
    super::text(&output.stdout)
}
