//! The Kubernetes API tests talk to. By default each test gets a real
//! control plane of its own ([`ControlPlane`]: etcd, kube-apiserver with
//! RBAC, kube-controller-manager), with tenantdb's CRDs applied server-side
//! from `crds/` and everything `helm template` renders from the chart
//! applied too, so the operator runs as the chart's ServiceAccount and a
//! missing RBAC rule is a real 403. `TENANTDB_E2E_KUBECONFIG` points the
//! tests at any cluster instead (tenantdb's CRDs installed; the operator
//! then runs with that kubeconfig's identity); `TENANTDB_TEST_API=emulator`
//! runs them against the project's API emulator (quick, and no Go needed).
//! Each test works in namespaces of its own.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, DeleteParams, PostParams};
use tenantdb_testkit::emulator::{Emulator, EmulatorOptions};

use super::control_plane::{ControlPlane, OPERATOR_NAMESPACE, install_chart};

pub struct TestCluster {
    /// The test's own client: cluster admin.
    pub client: kube::Client,
    /// A kubeconfig file for `kubectl`, as cluster admin.
    pub kubeconfig: PathBuf,
    /// The operator's identity: the chart's ServiceAccount on a control
    /// plane of the test's own, else the same as `client`.
    pub operator_client: kube::Client,
    pub operator_kubeconfig: PathBuf,
    /// The emulator, when the tests run against one.
    pub emulator: Option<Emulator>,
    /// The control plane, when the test started one.
    pub control_plane: Option<ControlPlane>,
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

/// A client for `kubeconfig`'s identity that reaches the API server at
/// `url` instead (through a [`super::link::Link`], say).
pub async fn client_via(kubeconfig: &Path, url: &str) -> kube::Client {
    let config = kube::config::Kubeconfig::read_from(kubeconfig)
        .unwrap_or_else(|e| panic!("reading {}: {e}", kubeconfig.display()));
    let mut config = kube::Config::from_custom_kubeconfig(config, &Default::default())
        .await
        .unwrap();
    config.cluster_url = url.parse().unwrap();
    kube::Client::try_from(config).unwrap()
}

async fn client_of(kubeconfig: &Path) -> kube::Client {
    let config = kube::config::Kubeconfig::read_from(kubeconfig)
        .unwrap_or_else(|e| panic!("reading {}: {e}", kubeconfig.display()));
    let config = kube::Config::from_custom_kubeconfig(config, &Default::default())
        .await
        .unwrap();
    kube::Client::try_from(config).unwrap()
}

impl TestCluster {
    /// The cluster of `TENANTDB_E2E_KUBECONFIG`, else the emulator when
    /// `TENANTDB_TEST_API=emulator`, else a control plane of the test's own.
    pub async fn start() -> Self {
        match std::env::var("TENANTDB_E2E_KUBECONFIG") {
            Ok(path) if !path.is_empty() => return Self::existing(PathBuf::from(path)).await,
            _ => {}
        }
        match std::env::var("TENANTDB_TEST_API").as_deref() {
            Ok("emulator") => Self::emulated(EmulatorOptions::default()).await,
            Ok("") | Ok("control-plane") | Err(_) => Self::control_plane().await,
            Ok(other) => panic!("TENANTDB_TEST_API={other}: expected control-plane or emulator"),
        }
    }

    /// The API server's URL in the operator's kubeconfig, and its address
    /// (to put a [`super::link::Link`] in between).
    pub fn operator_server(&self) -> (String, std::net::SocketAddr) {
        let url = kube::config::Kubeconfig::read_from(&self.operator_kubeconfig)
            .unwrap()
            .clusters[0]
            .cluster
            .as_ref()
            .unwrap()
            .server
            .clone()
            .unwrap();
        let address = url.trim_start_matches("https://").parse().unwrap();
        (url, address)
    }

    /// Always an emulator, for what only the emulator can show quickly (a
    /// short watch history, fast bookmarks).
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
            operator_client: emulator.client().unwrap(),
            operator_kubeconfig: kubeconfig.clone(),
            kubeconfig,
            emulator: Some(emulator),
            control_plane: None,
            _dir: dir,
        }
    }

    /// A control plane of this test's own, set up as a user's cluster with
    /// the chart installed: CRDs applied server-side and Established, then
    /// everything `helm template` renders (ServiceAccount, RBAC, Deployment,
    /// Service…) applied in the operator's namespace. Nothing runs the
    /// Deployment (there is no kubelet): the tests run the operator
    /// themselves, with the ServiceAccount's identity.
    pub async fn control_plane() -> Self {
        Self::control_plane_with(&[]).await
    }

    /// The same, with more kube-apiserver flags.
    pub async fn control_plane_with(apiserver_args: &[&str]) -> Self {
        let apiserver_args: Vec<String> = apiserver_args.iter().map(|a| a.to_string()).collect();
        let plane = tokio::task::spawn_blocking(move || {
            let plane = ControlPlane::start_with(&apiserver_args);
            install_chart(&plane);
            plane
        })
        .await
        .expect("starting the control plane");
        Self {
            client: client_of(&plane.admin_kubeconfig).await,
            kubeconfig: plane.admin_kubeconfig.clone(),
            operator_client: client_of(&plane.operator_kubeconfig).await,
            operator_kubeconfig: plane.operator_kubeconfig.clone(),
            emulator: None,
            control_plane: Some(plane),
            _dir: TempDir::new("kube"),
        }
    }

    async fn existing(kubeconfig: PathBuf) -> Self {
        let client = client_of(&kubeconfig).await;
        Self {
            operator_client: client.clone(),
            operator_kubeconfig: kubeconfig.clone(),
            client,
            kubeconfig,
            emulator: None,
            control_plane: None,
            _dir: TempDir::new("kube"),
        }
    }

    /// Whether a real garbage collector deletes dependents (everywhere but
    /// in the emulator, which models it by hand).
    pub fn has_garbage_collector(&self) -> bool {
        self.emulator.is_none()
    }

    /// The namespace for the operator's leader Lease: the release's
    /// namespace, where the chart grants it, on a control plane of the
    /// test's own; a new one elsewhere, so tests sharing a cluster do not
    /// share a Lease.
    pub async fn lease_namespace(&self) -> String {
        if self.control_plane.is_some() {
            OPERATOR_NAMESPACE.to_owned()
        } else {
            self.namespace("lease").await
        }
    }

    /// API requests so far, as `"<verb> <resource>[.<group>][/<subresource>]"`
    /// → count (verbs list, watch, get, create, update, patch, delete):
    /// the emulator's own counts, or on a control plane of the test's own,
    /// kube-apiserver's `apiserver_request_total` from its `/metrics`.
    /// On a control plane the counts are everyone's — the test's own
    /// requests, kube-controller-manager's and the API server's (its
    /// identity Lease, every 10 s) — so a claim about the operator compares
    /// resources only it writes. kube-apiserver counts a watch when it ends.
    pub async fn request_counts(&self) -> BTreeMap<String, u64> {
        if let Some(emulator) = &self.emulator {
            return emulator.request_counts();
        }
        assert!(
            self.control_plane.is_some(),
            "request counts need the emulator or a control plane of the test's own"
        );
        let request = axum::http::Request::get("/metrics").body(Vec::new()).unwrap();
        let text = self
            .client
            .request_text(request)
            .await
            .expect("reading kube-apiserver's /metrics");
        let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned())))
            .expect("kube-apiserver's /metrics parses");
        let mut counts = BTreeMap::new();
        for sample in scrape.samples {
            if sample.metric != "apiserver_request_total" {
                continue;
            }
            let prometheus_parse::Value::Counter(value) = sample.value else {
                continue;
            };
            let label = |name: &str| sample.labels.get(name).unwrap_or("").to_owned();
            let verb = match label("verb").as_str() {
                "LIST" => "list",
                "WATCH" => "watch",
                "GET" => "get",
                "POST" => "create",
                "PUT" => "update",
                "PATCH" | "APPLY" => "patch",
                "DELETE" => "delete",
                _ => continue,
            };
            let mut resource = label("resource");
            if !label("group").is_empty() {
                resource = format!("{resource}.{}", label("group"));
            }
            if !label("subresource").is_empty() {
                resource = format!("{resource}/{}", label("subresource"));
            }
            *counts.entry(format!("{verb} {resource}")).or_default() += value as u64;
        }
        counts
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
