//! An emulator of the Kubernetes API, for tests and local demos — never
//! used by the operator itself. No real kube-apiserver can run where this
//! project is built and tested, yet the operator's behaviour (watches,
//! conflicts, finalizers, garbage collection, status discipline) needs an
//! API server to be tested against. This is a small one, honest about what
//! it does:
//!
//! - plain HTTP on loopback, no authentication or authorization;
//! - a generic JSON object store for the built-in types the operator and
//!   `kubectl` use and for every CRD created in it, with schema and CEL
//!   validation of custom resources (422, as a real server);
//! - resourceVersion, 409 on stale updates, generation, the status
//!   subresource, finalizers, owner-reference garbage collection
//!   (background), namespace termination;
//! - list and watch with label and field (`metadata.name`,
//!   `metadata.namespace`) selectors, bookmarks and 410 Gone;
//! - merge and JSON patches, an approximation of server-side apply with
//!   coarse conflict detection (see [`patch`]), strategic merge patch served
//!   as merge patch;
//! - discovery and server-side Table printing for `kubectl`;
//! - request counts per verb and resource at `GET /emulator/requests`.
//!
//! Not emulated: admission webhooks, RBAC, `managedFields` and exact field
//! ownership, foreground deletion, pagination (`limit` returns everything),
//! protobuf, pruning of unknown fields (they are refused, as with
//! `fieldValidation=Strict`), and the built-in types' own schemas.

mod patch;
mod resources;
mod selector;
mod server;
mod store;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use serde_json::json;

pub use store::ApiError;

/// How to start an emulator.
#[derive(Clone, Debug)]
pub struct EmulatorOptions {
    /// Address to listen on; port 0 picks a free one.
    pub listen: SocketAddr,
    /// How many past events watches can resume from before getting 410 Gone.
    pub history_limit: usize,
    /// How often watches that asked for bookmarks get one.
    pub bookmark_interval: Duration,
    /// CRDs installed at start.
    pub crds: Vec<CustomResourceDefinition>,
}

impl Default for EmulatorOptions {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            history_limit: 100_000,
            bookmark_interval: Duration::from_secs(10),
            crds: Vec::new(),
        }
    }
}

/// A running emulator; stopped on drop.
pub struct Emulator {
    address: SocketAddr,
    app: server::App,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Emulator {
    /// Starts serving, with namespaces `default` and `kube-system` and the given CRDs.
    pub async fn start(options: EmulatorOptions) -> Result<Self, ApiError> {
        let mut store = store::Store::new(options.history_limit);
        let namespaces = store
            .resource_type("", "v1", "namespaces")
            .ok_or_else(|| ApiError::new(500, "InternalError", "no namespaces type"))?;
        for name in ["default", "kube-system"] {
            store.create(
                &namespaces,
                "",
                json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}),
            )?;
        }
        let crd_type = store
            .resource_type("apiextensions.k8s.io", "v1", "customresourcedefinitions")
            .ok_or_else(|| ApiError::new(500, "InternalError", "no CRD type"))?;
        for crd in &options.crds {
            let object = serde_json::to_value(crd).map_err(|e| ApiError::bad_request(e.to_string()))?;
            store.create(&crd_type, "", object)?;
        }
        let app = server::App {
            store: Arc::new(Mutex::new(store)),
            counts: Arc::new(Mutex::new(BTreeMap::new())),
            counts_by_user: Arc::new(Mutex::new(BTreeMap::new())),
            bookmark_interval: options.bookmark_interval,
        };
        let listener = tokio::net::TcpListener::bind(options.listen).await.map_err(|e| {
            ApiError::new(
                500,
                "InternalError",
                format!("listening on {}: {e}", options.listen),
            )
        })?;
        let address = listener
            .local_addr()
            .map_err(|e| ApiError::new(500, "InternalError", e.to_string()))?;
        let router = axum::Router::new()
            .fallback(server::handle)
            .with_state(app.clone());
        let (shutdown, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            let _ = axum::serve(listener, router)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await;
        });
        Ok(Self {
            address,
            app,
            shutdown: Some(shutdown),
        })
    }

    pub fn address(&self) -> SocketAddr {
        self.address
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.address)
    }

    /// A kubeconfig for this emulator (context `emulator`, namespace `default`).
    pub fn kubeconfig(&self) -> String {
        self.kubeconfig_for("emulator")
    }

    /// A kubeconfig whose client sends bearer token `token` (no token is
    /// checked; it only tells clients apart in the request counts).
    pub fn kubeconfig_for(&self, token: &str) -> String {
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: emulator\n  cluster:\n    server: {}\n\
             users:\n- name: emulator\n  user:\n    token: {token}\n\
             contexts:\n- name: emulator\n  context:\n    cluster: emulator\n    user: emulator\n    namespace: default\n\
             current-context: emulator\n",
            self.url()
        )
    }

    /// A client for this emulator.
    pub fn client(&self) -> Result<kube::Client, kube::Error> {
        let url = self
            .url()
            .parse()
            .map_err(|e: axum::http::uri::InvalidUri| kube::Error::Service(Box::new(e)))?;
        kube::Client::try_from(kube::Config::new(url))
    }

    /// Requests served so far, by `"<verb> <resource>"`.
    pub fn request_counts(&self) -> BTreeMap<String, u64> {
        self.app.counts.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The same, for the clients that sent bearer token `token` (the
    /// kubeconfig of [`kubeconfig_for`](Self::kubeconfig_for)).
    pub fn request_counts_of(&self, token: &str) -> BTreeMap<String, u64> {
        self.app
            .counts_by_user
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(token)
            .cloned()
            .unwrap_or_default()
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
    }
}
