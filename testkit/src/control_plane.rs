//! A real Kubernetes control plane for tests: etcd, kube-apiserver (RBAC,
//! client-certificate identities) and kube-controller-manager (garbage
//! collector and namespace controller), built from the Go modules pinned in
//! `tests/kube/go.mod` by `tests/kube/build.sh` (cached after the first
//! build) and started on free loopback ports in a temporary directory.
//! Everything is stopped when the value is dropped, a panicking test included.
//! [`install_chart`] sets it up as a user's cluster (CRDs, the chart's
//! RBAC); [`ControlPlane::audited_requests`] counts one identity's requests
//! from the API server's audit log. The tests and the benchmark use it.

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The ServiceAccount the chart renders for the operator.
pub const OPERATOR_NAMESPACE: &str = "tenantdb-system";
pub const OPERATOR_SERVICE_ACCOUNT: &str = "tenantdb";
/// That ServiceAccount's user name, as the API server authenticates it.
pub const OPERATOR_USER: &str = "system:serviceaccount:tenantdb-system:tenantdb";

pub struct ControlPlane {
    dir: PathBuf,
    bin: PathBuf,
    children: Vec<(&'static str, Child)>,
    /// Each component's arguments, for a restart.
    args: Vec<(&'static str, Vec<String>)>,
    /// `system:masters`.
    pub admin_kubeconfig: PathBuf,
    /// `system:serviceaccount:tenantdb-system:tenantdb`, with no rights
    /// until RBAC grants them.
    pub operator_kubeconfig: PathBuf,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn run(program: &str, args: &[&str], dir: &Path) {
    let output = Command::new(program)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    assert!(
        output.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The tenantdb repository this kit was built in.
pub fn repository() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("testkit/ lives in the repository")
        .to_path_buf()
}

/// The directory `tests/kube/<script>` builds into (the last line it
/// prints), building on first use and reusing its cache after.
fn built_by(script: &str) -> PathBuf {
    let output = Command::new("bash")
        .arg(repository().join("tests/kube").join(script))
        .stderr(Stdio::inherit())
        .output()
        .unwrap_or_else(|e| panic!("running tests/kube/{script}: {e}"));
    assert!(
        output.status.success(),
        "tests/kube/{script} failed (it needs Go and the module proxy; see tests/kube/README.md)"
    );
    let text = String::from_utf8(output.stdout).unwrap();
    PathBuf::from(
        text.lines()
            .last()
            .unwrap_or_else(|| panic!("tests/kube/{script} prints the directory"))
            .trim(),
    )
}

/// The directory holding etcd, kube-apiserver and kube-controller-manager.
pub fn binaries() -> PathBuf {
    built_by("build.sh")
}

/// The directory holding the clients users point at a cluster: `helm` and
/// `kstatus` (tests/kube/clients/).
pub fn clients() -> PathBuf {
    built_by("build-clients.sh")
}

fn kubeconfig(dir: &Path, name: &str, server: &str, user: &str) -> PathBuf {
    let path = dir.join(format!("{name}.kubeconfig"));
    let d = dir.display();
    std::fs::write(
        &path,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: local\n  cluster:\n    server: {server}\n    certificate-authority: {d}/ca.crt\n\
             users:\n- name: {name}\n  user:\n    client-certificate: {d}/{user}.crt\n    client-key: {d}/{user}.key\n\
             contexts:\n- name: local\n  context: {{cluster: local, user: {name}}}\ncurrent-context: local\n"
        ),
    )
    .unwrap();
    path
}

impl ControlPlane {
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// A control plane whose kube-apiserver also gets `apiserver_args`.
    /// Its ports are picked free and then bound by etcd and kube-apiserver;
    /// another process (a test's PostgreSQL, another control plane) can
    /// take one in between, so a component that exits with "address already
    /// in use" makes a new attempt on new ports (three in all).
    pub fn start_with(apiserver_args: &[String]) -> Self {
        let mut attempt = 1;
        loop {
            match Self::try_start(apiserver_args) {
                Ok(plane) => return plane,
                Err(failure) if attempt < 3 && failure.contains("address already in use") => {
                    eprintln!("control plane: a port was taken meanwhile; starting again on new ports");
                    attempt += 1;
                }
                Err(failure) => panic!("{failure}"),
            }
        }
    }

    fn try_start(apiserver_args: &[String]) -> Result<Self, String> {
        let bin = binaries();
        let dir = std::env::temp_dir().join(format!(
            "tenantdb-control-plane-{}-{}",
            std::process::id(),
            free_port()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let sign = |name: &str, subject: &str, ext: &str| {
            run(
                "openssl",
                &[
                    "req",
                    "-newkey",
                    "rsa:2048",
                    "-nodes",
                    "-subj",
                    subject,
                    "-keyout",
                    &format!("{name}.key"),
                    "-out",
                    &format!("{name}.csr"),
                ],
                &dir,
            );
            run(
                "openssl",
                &[
                    "x509",
                    "-req",
                    "-in",
                    &format!("{name}.csr"),
                    "-CA",
                    "ca.crt",
                    "-CAkey",
                    "ca.key",
                    "-CAcreateserial",
                    "-days",
                    "1",
                    "-extfile",
                    ext,
                    "-out",
                    &format!("{name}.crt"),
                ],
                &dir,
            );
        };
        run(
            "openssl",
            &[
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "1",
                "-subj",
                "/CN=tenantdb-test-ca",
                "-keyout",
                "ca.key",
                "-out",
                "ca.crt",
            ],
            &dir,
        );
        std::fs::write(
            dir.join("serving.ext"),
            "subjectAltName = IP:127.0.0.1, DNS:localhost\nextendedKeyUsage = serverAuth\n",
        )
        .unwrap();
        std::fs::write(dir.join("client.ext"), "extendedKeyUsage = clientAuth\n").unwrap();
        sign("apiserver", "/CN=kube-apiserver", "serving.ext");
        sign("admin", "/O=system:masters/CN=tenantdb-test-admin", "client.ext");
        sign(
            "operator",
            &format!(
                "/O=system:serviceaccounts/O=system:serviceaccounts:{OPERATOR_NAMESPACE}/CN=system:serviceaccount:{OPERATOR_NAMESPACE}:{OPERATOR_SERVICE_ACCOUNT}"
            ),
            "client.ext",
        );
        run(
            "openssl",
            &[
                "genpkey",
                "-algorithm",
                "RSA",
                "-pkeyopt",
                "rsa_keygen_bits:2048",
                "-out",
                "sa.key",
            ],
            &dir,
        );
        run(
            "openssl",
            &["pkey", "-in", "sa.key", "-pubout", "-out", "sa.pub"],
            &dir,
        );

        // The operator's identity, and only it, in the audit log: what it
        // asks of the API server, counted by the API server.
        std::fs::write(
            dir.join("audit-policy.yaml"),
            format!(
                "apiVersion: audit.k8s.io/v1\nkind: Policy\nomitStages: [RequestReceived]\n\
                 rules:\n- level: Metadata\n  users: [\"{OPERATOR_USER}\"]\n- level: None\n"
            ),
        )
        .unwrap();
        let (etcd_client, etcd_peer, api) = (free_port(), free_port(), free_port());
        let server = format!("https://127.0.0.1:{api}");
        let mut plane = Self {
            admin_kubeconfig: kubeconfig(&dir, "admin", &server, "admin"),
            operator_kubeconfig: kubeconfig(&dir, "operator", &server, "operator"),
            dir,
            bin: bin.clone(),
            children: Vec::new(),
            args: Vec::new(),
        };
        let d = plane.dir.display().to_string();
        plane.spawn(
            &bin,
            "etcd",
            &[
                "--name=tenantdb-test".into(),
                format!("--data-dir={d}/etcd-data"),
                format!("--listen-client-urls=http://127.0.0.1:{etcd_client}"),
                format!("--advertise-client-urls=http://127.0.0.1:{etcd_client}"),
                format!("--listen-peer-urls=http://127.0.0.1:{etcd_peer}"),
                format!("--initial-advertise-peer-urls=http://127.0.0.1:{etcd_peer}"),
                format!("--initial-cluster=tenantdb-test=http://127.0.0.1:{etcd_peer}"),
                "--listen-metrics-urls=".into(),
                "--unsafe-no-fsync".into(),
                "--log-level=warn".into(),
            ],
        );
        plane.spawn(
            &bin,
            "kube-apiserver",
            &[
                "--bind-address=127.0.0.1".into(),
                "--advertise-address=127.0.0.1".into(),
                // Loopback cannot be the `kubernetes` Service's endpoint.
                "--endpoint-reconciler-type=none".into(),
                format!("--secure-port={api}"),
                format!("--tls-cert-file={d}/apiserver.crt"),
                format!("--tls-private-key-file={d}/apiserver.key"),
                format!("--client-ca-file={d}/ca.crt"),
                "--authorization-mode=RBAC".into(),
                format!("--etcd-servers=http://127.0.0.1:{etcd_client}"),
                "--service-cluster-ip-range=10.0.0.0/24".into(),
                format!("--service-account-issuer={server}"),
                format!("--service-account-key-file={d}/sa.pub"),
                format!("--service-account-signing-key-file={d}/sa.key"),
                format!("--cert-dir={d}/apiserver-certs"),
                format!("--audit-policy-file={d}/audit-policy.yaml"),
                format!("--audit-log-path={d}/audit.log"),
                "--audit-log-format=json".into(),
            ]
            .into_iter()
            .chain(apiserver_args.iter().cloned())
            .collect::<Vec<_>>(),
        );
        plane.wait_ready()?;
        plane.spawn(
            &bin,
            "kube-controller-manager",
            &[
                format!("--kubeconfig={}", plane.admin_kubeconfig.display()),
                "--controllers=garbage-collector-controller,namespace-controller".into(),
                "--leader-elect=false".into(),
                "--secure-port=0".into(),
            ],
        );
        Ok(plane)
    }

    fn spawn(&mut self, bin: &Path, name: &'static str, args: &[String]) {
        self.args.retain(|(n, _)| *n != name);
        self.args.push((name, args.to_vec()));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join(format!("{name}.log")))
            .unwrap();
        let child = Command::new(bin.join(name))
            .args(args)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {name}: {e}"));
        self.children.push((name, child));
    }

    /// Kills `name` (etcd, kube-apiserver or kube-controller-manager) with
    /// SIGKILL, as a crash or an OOM kill would, and reaps it.
    pub fn kill(&mut self, name: &str) {
        let index = self
            .children
            .iter()
            .position(|(n, _)| *n == name)
            .unwrap_or_else(|| panic!("{name} is not running"));
        let (_, mut child) = self.children.remove(index);
        child.kill().unwrap();
        child.wait().unwrap();
    }

    /// Starts `name` again with the arguments it first had (the same ports
    /// and data), waiting for `/readyz` when it is the API server.
    pub fn restart(&mut self, name: &str) {
        let (name, args) = self
            .args
            .iter()
            .find(|(n, _)| *n == name)
            .cloned()
            .unwrap_or_else(|| panic!("{name} never ran"));
        let bin = self.bin.clone();
        self.spawn(&bin, name, &args);
        if name == "kube-apiserver" {
            self.wait_ready().unwrap_or_else(|failure| panic!("{failure}"));
        }
    }

    /// The process ids of the running components, for reading their CPU.
    pub fn pids(&self) -> Vec<u32> {
        self.children.iter().map(|(_, child)| child.id()).collect()
    }

    /// The last lines of a component's log.
    pub fn log_tail(&self, name: &str) -> String {
        let text = std::fs::read_to_string(self.dir.join(format!("{name}.log"))).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// Waits for kube-apiserver's `/readyz`; a component that exited
    /// meanwhile is an error with the end of its log.
    fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let ready = Command::new("kubectl")
                .args([
                    "--kubeconfig",
                    self.admin_kubeconfig.to_str().unwrap(),
                    "get",
                    "--raw",
                    "/readyz",
                ])
                .output()
                .is_ok_and(|o| o.status.success());
            if ready {
                return Ok(());
            }
            let exited = self
                .children
                .iter_mut()
                .find_map(|(name, child)| child.try_wait().ok().flatten().map(|status| (*name, status)));
            if let Some((name, status)) = exited {
                return Err(format!("{name} exited with {status}:\n{}", self.log_tail(name)));
            }
            assert!(
                Instant::now() < deadline,
                "kube-apiserver never became ready:\n{}",
                self.log_tail("kube-apiserver")
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// `kubectl --kubeconfig <admin> args…`.
    pub fn kubectl(&self, args: &[&str]) -> std::process::Output {
        self.kubectl_as(&self.admin_kubeconfig, args)
    }

    pub fn kubectl_as(&self, kubeconfig: &Path, args: &[&str]) -> std::process::Output {
        Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(kubeconfig)
            .args(args)
            .output()
            .expect("running kubectl")
    }

    /// The requests the operator's identity ([`OPERATOR_USER`]) made so far,
    /// as the API server's audit log records them:
    /// `"<verb> <resource>[.<group>][/<subresource>]"` → count (verbs get,
    /// list, watch, create, update, patch, delete). A watch is counted when
    /// it starts (its response began), every other request when it
    /// completed.
    pub fn audited_requests(&self) -> BTreeMap<String, u64> {
        let text = std::fs::read_to_string(self.dir.join("audit.log")).unwrap_or_default();
        let mut counts = BTreeMap::new();
        for line in text.lines() {
            let Ok(event) = serde_json::from_str::<serde_json::Value>(line) else {
                // The line the API server is writing right now.
                continue;
            };
            let counted = if event["verb"] == "watch" {
                "ResponseStarted"
            } else {
                "ResponseComplete"
            };
            if event["stage"] != counted || event["user"]["username"] != OPERATOR_USER {
                continue;
            }
            let object = &event["objectRef"];
            let mut resource = object["resource"].as_str().unwrap_or("").to_owned();
            if let Some(group) = object["apiGroup"].as_str().filter(|g| !g.is_empty()) {
                resource = format!("{resource}.{group}");
            }
            if let Some(sub) = object["subresource"].as_str().filter(|s| !s.is_empty()) {
                resource = format!("{resource}/{sub}");
            }
            let verb = event["verb"].as_str().unwrap_or("");
            *counts.entry(format!("{verb} {resource}")).or_default() += 1;
        }
        counts
    }

    /// A scratch directory inside the control plane's own.
    pub fn scratch(&self) -> &Path {
        &self.dir
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        // Reverse order: the API server still reaches etcd while it stops.
        while let Some((_, mut child)) = self.children.pop() {
            let _ = Command::new("kill").arg(child.id().to_string()).status();
            let deadline = Instant::now() + Duration::from_secs(10);
            while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::env::var_os("TENANTDB_KUBE_KEEP_DIR").is_some() {
            eprintln!("kept the control plane's directory {}", self.dir.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// `kubectl apply --server-side -f crds/`, the CRDs Established, then the
/// chart rendered by `helm template` into the operator's namespace and
/// applied, on `plane` as cluster admin: the cluster a user has after
/// installing the chart, but for the Deployment's pod (there is no kubelet).
pub fn install_chart(plane: &ControlPlane) {
    let root = repository();
    let checked = |what: &str, output: std::process::Output| {
        assert!(
            output.status.success(),
            "{what}: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        output
    };
    checked(
        "applying crds/",
        plane.kubectl(&[
            "apply",
            "--server-side",
            "-f",
            root.join("crds").to_str().unwrap(),
        ]),
    );
    checked(
        "waiting for the CRDs",
        plane.kubectl(&[
            "wait",
            "--for=condition=Established",
            "--timeout=60s",
            "crd/tenantdatabases.tenantdb.io",
            "crd/databaseservers.tenantdb.io",
            "crd/cacheservers.tenantdb.io",
        ]),
    );
    checked(
        "creating the operator's namespace",
        plane.kubectl(&["create", "namespace", OPERATOR_NAMESPACE]),
    );
    let rendered = checked(
        "helm template",
        Command::new("helm")
            .args(["template", "tenantdb"])
            .arg(root.join("charts/tenantdb"))
            .args(["--namespace", OPERATOR_NAMESPACE])
            .output()
            .expect("helm is installed (make deps)"),
    );
    let manifest = plane.scratch().join("chart.yaml");
    std::fs::write(&manifest, &rendered.stdout).unwrap();
    checked(
        "applying the rendered chart",
        plane.kubectl(&[
            "apply",
            "--server-side",
            "-n",
            OPERATOR_NAMESPACE,
            "-f",
            manifest.to_str().unwrap(),
        ]),
    );
}
