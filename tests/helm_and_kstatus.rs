//! What a user's tools see, with current clients built from their Go
//! modules (`tests/kube/build-clients.sh`: helm v3.22 and a small command
//! around sigs.k8s.io/cli-utils' kstatus) against a real control plane of
//! each test's own:
//!
//! - `helm install` and `helm upgrade` of the chart as the README says, and
//!   `tenantdb run` with the arguments of the Deployment helm installed, as
//!   the ServiceAccount helm created (a client certificate for
//!   `system:serviceaccount:tenantdb-system:tenantdb`): the installed RBAC
//!   is enough to provision a tenant and hold the leader Lease; `helm
//!   uninstall` keeps the CRDs, the tenant, its Secret and its database.
//! - kstatus — what Flux and kpt judge health by — on TenantDatabases read
//!   from the API server: Ready is `Current`, never observed or a spec change not yet
//!   reconciled is `InProgress`, Stalled is `Failed`.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::control_plane::{ControlPlane, OPERATOR_NAMESPACE, OPERATOR_SERVICE_ACCOUNT};
use support::{database_exists, succeeded, text};

/// The release name the README installs with.
const RELEASE: &str = "tenantdb";
const IMAGE: &str = "registry.example.com/platform/tenantdb";

/// The directory holding `helm` and `kstatus`, built on first use.
fn clients() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(support::control_plane::clients)
}

fn chart() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("charts/tenantdb")
}

/// The built helm, as cluster admin, with its own config, cache and data
/// directories (nothing from the user's ~/.config/helm).
fn helm(plane: &ControlPlane, args: &[&str]) -> Output {
    let home = plane.scratch().join("helm");
    Command::new(clients().join("helm"))
        .args(args)
        .arg("--kubeconfig")
        .arg(&plane.admin_kubeconfig)
        .env("HELM_CONFIG_HOME", home.join("config"))
        .env("HELM_CACHE_HOME", home.join("cache"))
        .env("HELM_DATA_HOME", home.join("data"))
        .env_remove("KUBECONFIG")
        .output()
        .expect("running the built helm")
}

/// `kubectl get … -o json` as cluster admin.
fn get(plane: &ControlPlane, args: &[&str]) -> Value {
    let mut all = vec!["get"];
    all.extend(args);
    all.extend(["-o", "json"]);
    let stdout = succeeded(&format!("kubectl {all:?}"), plane.kubectl(&all));
    serde_json::from_str(&stdout).unwrap()
}

/// Whether `kubectl get` finds the object.
fn exists(plane: &ControlPlane, args: &[&str]) -> bool {
    let mut all = vec!["get"];
    all.extend(args);
    let output = plane.kubectl(&all);
    if output.status.success() {
        return true;
    }
    let stderr = text(&output.stderr);
    assert!(stderr.contains("NotFound"), "kubectl {all:?}: {stderr}");
    false
}

/// `kubectl apply --server-side` of `objects`, as cluster admin.
fn apply(plane: &ControlPlane, objects: &[Value]) {
    let file = plane
        .scratch()
        .join(format!("objects-{}.yaml", &tenantdb::password::generate()[..8]));
    let list = json!({"apiVersion": "v1", "kind": "List", "items": objects});
    std::fs::write(&file, list.to_string()).unwrap();
    succeeded(
        "kubectl apply",
        plane.kubectl(&["apply", "--server-side", "-f", file.to_str().unwrap()]),
    );
}

/// A random lower-case suffix, so names stay unique on a shared PostgreSQL.
fn suffix() -> String {
    tenantdb::password::generate()[..6].to_lowercase()
}

/// A namespace, the admin Secret in it and a DatabaseServer `server` for
/// the test's PostgreSQL, as an administrator would apply them.
async fn add_server(plane: &ControlPlane, server: &str) {
    let admin = support::admin().await;
    let ops = format!("ops-{}", suffix());
    apply(
        plane,
        &[
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ops}}),
            json!({"apiVersion": "v1", "kind": "Secret",
                   "metadata": {"name": "pg-admin", "namespace": ops},
                   "stringData": {"username": admin.user, "password": admin.password}}),
            json!({"apiVersion": "tenantdb.io/v1alpha1", "kind": "DatabaseServer",
                   "metadata": {"name": server},
                   "spec": {"host": admin.host, "port": admin.port, "sslMode": "disable",
                            "adminSecretRef": {"namespace": ops, "name": "pg-admin"}}}),
        ],
    );
}

fn tenant(namespace: &str, name: &str, spec: Value) -> Value {
    json!({"apiVersion": "tenantdb.io/v1alpha1", "kind": "TenantDatabase",
           "metadata": {"name": name, "namespace": namespace}, "spec": spec})
}

fn condition<'a>(object: &'a Value, type_: &str) -> Option<&'a Value> {
    object["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)
}

fn condition_is(object: &Value, type_: &str, status: &str) -> bool {
    condition(object, type_).is_some_and(|c| c["status"] == status)
}

/// Polls the tenant until `check` holds; fails after a minute, showing the
/// operator's log.
fn wait_for(
    plane: &ControlPlane,
    operator: Option<&OperatorProcess>,
    namespace: &str,
    name: &str,
    what: &str,
    check: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let tenant = get(plane, &["tenantdatabase", name, "-n", namespace]);
        if check(&tenant) {
            return tenant;
        }
        assert!(
            Instant::now() < deadline,
            "{namespace}/{name} never got {what}: {:#}\noperator log:\n{}",
            tenant["status"],
            operator.map(OperatorProcess::log_tail).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Ready for the current generation.
fn wait_ready(plane: &ControlPlane, operator: &OperatorProcess, namespace: &str, name: &str) -> Value {
    wait_for(plane, Some(operator), namespace, name, "Ready", |t| {
        condition_is(t, "Ready", "True") && t["status"]["observedGeneration"] == t["metadata"]["generation"]
    })
}

/// `helm install` of the chart as the README has it (no `--wait`: there is
/// no kubelet to run the pods).
fn helm_install(plane: &ControlPlane) {
    succeeded(
        "helm install",
        helm(
            plane,
            &[
                "install",
                RELEASE,
                chart().to_str().unwrap(),
                "--namespace",
                OPERATOR_NAMESPACE,
                "--create-namespace",
                "--set",
                &format!("image.repository={IMAGE}"),
            ],
        ),
    );
}

/// `tenantdb run` as the pod of the Deployment helm installed would run it
/// (its container's arguments, POD_NAMESPACE and POD_NAME), as the
/// ServiceAccount it names, on a free loopback port. Its log is kept in a
/// file and shown when a wait fails.
struct OperatorProcess {
    child: Child,
    log: PathBuf,
}

impl OperatorProcess {
    fn start_as_deployed(plane: &ControlPlane, pod: &str) -> Self {
        let deployment = get(plane, &["deployment", RELEASE, "-n", OPERATOR_NAMESPACE]);
        let pod_spec = &deployment["spec"]["template"]["spec"];
        assert_eq!(
            pod_spec["serviceAccountName"], OPERATOR_SERVICE_ACCOUNT,
            "the control plane's operator certificate is for the ServiceAccount the Deployment runs as"
        );
        let container = &pod_spec["containers"][0];
        let args: Vec<String> = container["args"]
            .as_array()
            .expect("the container has args")
            .iter()
            .map(|a| a.as_str().unwrap().to_owned())
            // Every test's operator on its own port.
            .map(|a| {
                if a.starts_with("--http-addr=") {
                    "--http-addr=127.0.0.1:0".to_owned()
                } else {
                    a
                }
            })
            .collect();
        assert_eq!(args.first().map(String::as_str), Some("run"), "{args:?}");
        let log = plane.scratch().join(format!("{pod}.log"));
        let file = std::fs::File::create(&log).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_tenantdb"))
            .args(&args)
            .arg("--kubeconfig")
            .arg(&plane.operator_kubeconfig)
            .env("POD_NAMESPACE", OPERATOR_NAMESPACE)
            .env("POD_NAME", pod)
            .env("NO_COLOR", "1")
            .env_remove("TENANTDB_HTTP_ADDR")
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .expect("starting tenantdb run");
        Self { child, log }
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// SIGTERM, as the kubelet stops a pod; the operator releases its Lease.
    fn stop(mut self) {
        let _ = Command::new("kill").arg(self.child.id().to_string()).status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.child.try_wait().unwrap().is_none() {
            assert!(Instant::now() < deadline, "tenantdb run did not stop on SIGTERM");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for OperatorProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// kstatus's verdict on a TenantDatabase read from the API server:
/// `{"status": …, "message": …, …}`.
fn kstatus(plane: &ControlPlane, namespace: &str, name: &str) -> Value {
    let output = Command::new(clients().join("kstatus"))
        .arg("--kubeconfig")
        .arg(&plane.admin_kubeconfig)
        .args(["--gvr", "tenantdatabases.v1alpha1.tenantdb.io"])
        .args(["--namespace", namespace, "--name", name])
        .output()
        .expect("running kstatus");
    serde_json::from_str(&succeeded("kstatus", output)).unwrap()
}

fn database_name(tenant: &Value) -> String {
    tenant["status"]["databaseName"]
        .as_str()
        .expect("status.databaseName")
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn helm_installs_and_upgrades_the_chart_and_its_rbac_runs_the_operator() {
    let version = succeeded(
        "helm version",
        Command::new(clients().join("helm"))
            .args(["version", "--template", "{{.Version}}"])
            .output()
            .unwrap(),
    );
    assert_eq!(version, "v3.22.0", "the helm pinned in tests/kube/clients/go.mod");

    let plane = tokio::task::spawn_blocking(ControlPlane::start).await.unwrap();
    // Nothing but the control plane: helm installs the CRDs from the
    // chart's crds/, then everything else.
    assert!(!exists(&plane, &["crd", "tenantdatabases.tenantdb.io"]));
    helm_install(&plane);

    for crd in ["tenantdatabases.tenantdb.io", "databaseservers.tenantdb.io"] {
        let crd = get(&plane, &["crd", crd]);
        assert!(condition_is(&crd, "Established", "True"), "{crd:#}");
        // From the chart's crds/: installed, not owned by the release.
        assert!(
            crd["metadata"]["annotations"]["meta.helm.sh/release-name"].is_null(),
            "{:#}",
            crd["metadata"]
        );
    }
    let ns = ["-n", OPERATOR_NAMESPACE];
    for (kind, name) in [
        ("deployment", RELEASE.to_owned()),
        ("service", format!("{RELEASE}-metrics")),
        ("serviceaccount", OPERATOR_SERVICE_ACCOUNT.to_owned()),
        ("role", format!("{RELEASE}-leader-election")),
        ("rolebinding", format!("{RELEASE}-leader-election")),
    ] {
        let object = get(&plane, &[kind, &name, ns[0], ns[1]]);
        assert_eq!(
            object["metadata"]["labels"]["app.kubernetes.io/managed-by"], "Helm",
            "{kind}/{name}"
        );
        assert_eq!(
            object["metadata"]["annotations"]["meta.helm.sh/release-name"], RELEASE,
            "{kind}/{name}"
        );
    }
    let cluster_role = get(&plane, &["clusterrole", RELEASE]);
    assert!(!cluster_role["rules"].as_array().unwrap().is_empty());
    let binding = get(&plane, &["clusterrolebinding", RELEASE]);
    assert_eq!(
        binding["subjects"],
        json!([{"kind": "ServiceAccount", "name": OPERATOR_SERVICE_ACCOUNT, "namespace": OPERATOR_NAMESPACE}])
    );
    let deployment = get(&plane, &["deployment", RELEASE, ns[0], ns[1]]);
    assert_eq!(deployment["spec"]["replicas"], 2);
    let image = deployment["spec"]["template"]["spec"]["containers"][0]["image"].clone();
    assert_eq!(image, format!("{IMAGE}:0.1.0"), "the chart's appVersion as tag");

    // An upgrade changing two values; --reuse-values keeps the image.
    succeeded(
        "helm upgrade",
        helm(
            &plane,
            &[
                "upgrade",
                RELEASE,
                chart().to_str().unwrap(),
                "--namespace",
                OPERATOR_NAMESPACE,
                "--reuse-values",
                "--set",
                "replicas=3",
                "--set",
                "logFormat=text",
            ],
        ),
    );
    let deployment = get(&plane, &["deployment", RELEASE, ns[0], ns[1]]);
    assert_eq!(deployment["spec"]["replicas"], 3);
    assert_eq!(deployment["metadata"]["generation"], 2);
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["image"], image);
    assert!(
        container["args"]
            .as_array()
            .unwrap()
            .contains(&json!("--log-format=text")),
        "{:#}",
        container["args"]
    );
    let history: Value = serde_json::from_str(&succeeded(
        "helm history",
        helm(
            &plane,
            &["history", RELEASE, "-n", OPERATOR_NAMESPACE, "-o", "json"],
        ),
    ))
    .unwrap();
    let revisions: Vec<(i64, String)> = history
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["revision"].as_i64().unwrap(),
                r["status"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        revisions,
        [(1, "superseded".to_owned()), (2, "deployed".to_owned())],
        "{history:#}"
    );
    // A schema violation is refused before anything changes.
    let refused = helm(
        &plane,
        &[
            "upgrade",
            RELEASE,
            chart().to_str().unwrap(),
            "-n",
            OPERATOR_NAMESPACE,
            "--reuse-values",
            "--set",
            "replicas=many",
        ],
    );
    assert!(!refused.status.success());
    assert!(
        text(&refused.stderr).contains("replicas"),
        "{}",
        text(&refused.stderr)
    );
    assert_eq!(
        get(&plane, &["deployment", RELEASE, ns[0], ns[1]])["metadata"]["generation"],
        2
    );

    // The operator as the upgraded Deployment's pod would run it, as its
    // ServiceAccount: the RBAC helm installed is all it has.
    let server = format!("pg-helm-{}", suffix());
    add_server(&plane, &server).await;
    let tenants = format!("helm-shop-{}", suffix());
    apply(
        &plane,
        &[json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": tenants}})],
    );
    let pod = "tenantdb-7d9f8b6c4-x2v9k";
    let operator = OperatorProcess::start_as_deployed(&plane, pod);
    apply(
        &plane,
        &[tenant(
            &tenants,
            "acme",
            json!({"server": server, "pool": {"maxConnections": 5}}),
        )],
    );
    let ready = wait_ready(&plane, &operator, &tenants, "acme");
    let database = database_name(&ready);
    assert!(database_exists(&database).await);
    let secret = get(&plane, &["secret", "acme-db", "-n", &tenants]);
    assert!(secret["data"]["DATABASE_URL"].is_string(), "{secret:#}");
    let lease = get(&plane, &["lease", RELEASE, ns[0], ns[1]]);
    assert_eq!(
        lease["spec"]["holderIdentity"], pod,
        "the leader Lease, by the chart's Role"
    );
    assert_eq!(kstatus(&plane, &tenants, "acme")["status"], "Current");
    operator.stop();

    // Uninstall removes the operator and its RBAC, and keeps the CRDs, the
    // tenant, its Secret and its database.
    succeeded(
        "helm uninstall",
        helm(&plane, &["uninstall", RELEASE, "-n", OPERATOR_NAMESPACE]),
    );
    for (kind, name) in [
        ("deployment", RELEASE),
        ("serviceaccount", OPERATOR_SERVICE_ACCOUNT),
        ("clusterrole", RELEASE),
        ("clusterrolebinding", RELEASE),
    ] {
        assert!(!exists(&plane, &[kind, name, ns[0], ns[1]]), "{kind}/{name}");
    }
    // Kept, not merely still there: a deleted CRD lingers while its
    // objects' finalizers (tenantdb.io/cleanup, with no operator) hold it.
    for args in [
        &["crd", "tenantdatabases.tenantdb.io"][..],
        &["crd", "databaseservers.tenantdb.io"],
        &["tenantdatabase", "acme", "-n", &tenants],
        &["secret", "acme-db", "-n", &tenants],
    ] {
        let object = get(&plane, args);
        assert!(
            object["metadata"]["deletionTimestamp"].is_null(),
            "{args:?} is being deleted: {:#}",
            object["metadata"]
        );
    }
    assert!(database_exists(&database).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kstatus_says_current_when_ready_in_progress_when_behind_and_failed_when_stalled() {
    let plane = tokio::task::spawn_blocking(ControlPlane::start).await.unwrap();
    helm_install(&plane);
    let server = format!("pg-kstatus-{}", suffix());
    add_server(&plane, &server).await;
    let ns = format!("kstatus-shop-{}", suffix());
    apply(
        &plane,
        &[json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})],
    );
    let operator = OperatorProcess::start_as_deployed(&plane, "tenantdb-kstatus-1");

    // Ready for its generation: Current.
    apply(&plane, &[tenant(&ns, "ready", json!({"server": server}))]);
    wait_ready(&plane, &operator, &ns, "ready");
    let current = kstatus(&plane, &ns, "ready");
    assert_eq!(current["status"], "Current", "{current:#}");
    assert_eq!(current["message"], "Resource is Ready", "{current:#}");

    // Stalled (its server does not exist): Failed, with the condition's message.
    let later = format!("pg-later-{}", suffix());
    apply(&plane, &[tenant(&ns, "lost", json!({"server": later}))]);
    wait_for(&plane, Some(&operator), &ns, "lost", "Stalled", |t| {
        condition_is(t, "Stalled", "True")
    });
    let failed = kstatus(&plane, &ns, "lost");
    assert_eq!(failed["status"], "Failed", "{failed:#}");
    assert_eq!(
        failed["message"],
        format!("DatabaseServer {later} not found"),
        "{failed:#}"
    );

    // A spec change while no operator runs: the old Ready=True is still
    // there, and kstatus does not trust it — InProgress, from
    // observedGeneration alone.
    operator.stop();
    succeeded(
        "kubectl patch",
        plane.kubectl(&[
            "patch",
            "tenantdatabase",
            "ready",
            "-n",
            &ns,
            "--type=merge",
            "-p",
            r#"{"spec":{"pool":{"maxConnections":9}}}"#,
        ]),
    );
    let behind = get(&plane, &["tenantdatabase", "ready", "-n", &ns]);
    assert!(condition_is(&behind, "Ready", "True"), "{behind:#}");
    let in_progress = kstatus(&plane, &ns, "ready");
    assert_eq!(in_progress["status"], "InProgress", "{in_progress:#}");
    assert_eq!(
        in_progress["message"], "TenantDatabase generation is 2, but latest observed generation is 1",
        "{in_progress:#}"
    );

    // A tenant no operator has seen yet: without a status kstatus could not
    // tell it from a converged object ("Current", and Flux's `wait: true`
    // would count it healthy). The CRD defaults `status.observedGeneration`
    // to 0, so generation 1 reads as not yet observed.
    apply(&plane, &[tenant(&ns, "unseen", json!({"server": server}))]);
    let unseen = get(&plane, &["tenantdatabase", "unseen", "-n", &ns]);
    assert_eq!(unseen["status"], json!({"observedGeneration": 0}), "{unseen:#}");
    let verdict = kstatus(&plane, &ns, "unseen");
    assert_eq!(verdict["status"], "InProgress", "{verdict:#}");
    assert_eq!(
        verdict["message"], "TenantDatabase generation is 1, but latest observed generation is 0",
        "{verdict:#}"
    );

    // The operator back: everything converges to Current, the stalled
    // tenant too once its server exists.
    let operator = OperatorProcess::start_as_deployed(&plane, "tenantdb-kstatus-2");
    let admin = support::admin().await;
    let secret_ref = get(&plane, &["databaseserver", &server])["spec"]["adminSecretRef"].clone();
    apply(
        &plane,
        &[
            json!({"apiVersion": "tenantdb.io/v1alpha1", "kind": "DatabaseServer",
               "metadata": {"name": later},
               "spec": {"host": admin.host, "port": admin.port, "sslMode": "disable",
                        "adminSecretRef": secret_ref}}),
        ],
    );
    for name in ["ready", "unseen", "lost"] {
        let tenant = wait_ready(&plane, &operator, &ns, name);
        assert_eq!(
            tenant["status"]["observedGeneration"],
            tenant["metadata"]["generation"]
        );
        let verdict = kstatus(&plane, &ns, name);
        assert_eq!(verdict["status"], "Current", "{name}: {verdict:#}");
    }

    // The DatabaseServer too, through --group/--version/--resource, once the
    // operator has written its status (its controller debounces the
    // tenants' changes): InProgress until then, which the default in the
    // CRD makes visible.
    let server_verdict = || {
        let output = Command::new(clients().join("kstatus"))
            .arg("--kubeconfig")
            .arg(&plane.admin_kubeconfig)
            .args([
                "--group",
                "tenantdb.io",
                "--version",
                "v1alpha1",
                "--resource",
                "databaseservers",
            ])
            .args(["--name", &server])
            .output()
            .unwrap();
        serde_json::from_str::<Value>(&succeeded("kstatus", output)).unwrap()
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let verdict = server_verdict();
        if verdict["status"] == "Current" {
            break;
        }
        assert_eq!(verdict["status"], "InProgress", "{verdict:#}");
        assert!(
            Instant::now() < deadline,
            "the DatabaseServer never became Current: {verdict:#}\n{}",
            operator.log_tail()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    operator.stop();
}
