//! The fault-injection suite: real `tenantdb run` processes (built with the
//! `fault-injection` feature, as `make test` builds them), a real control
//! plane and two real PostgreSQL servers — the second reached through a TCP
//! link the suite can cut or blackhole — under a seeded workload of tenants
//! created (`Delete` or `Retain`), filled with rows and deleted, while
//! faults are injected:
//!
//! - **SIGKILL at kill points** (`tenantdb::fault::KILL_POINTS`): each
//!   round arms one point, chosen by the seed, to fire after 0–2 passes,
//!   starts the operator with it, gives it work that reaches the point and
//!   waits for the kill; a point never reached fails the suite.
//! - **PostgreSQL restarted** with placements recorded and provisioning in
//!   flight.
//! - **The link to PostgreSQL dropped**, then **blackholed** (connections
//!   hang); while the second server hangs, a tenant on the first must still
//!   become Ready — a hung server never wedges the operator.
//! - **A server silent mid-call**: blackholed while a reconcile holds the
//!   tenant's lock on an open connection; the call must end at its
//!   client-side deadline and the tenant say so.
//! - **One of two replicas cut off from the API server** while it leads;
//!   the other must take over and converge while the cut-off one, still
//!   running, has fenced itself.
//! - **kube-apiserver restarted** while tenants come and go.
//!
//! Two races are made to happen first: a new tenant must be Ready within
//! the reconcile pass that adds its finalizer, and the connection Secret
//! must be written while the tenant's lock is held.
//!
//! After every fault the invariants are checked on the state the fault left
//! (the operator stopped): no database or role tenantdb made belongs to no
//! live resource unless `Retain` kept it (no orphans; `Delete` left nothing
//! behind), no tenant has a database on two servers or on another server
//! than its recorded one, and no published password changed. Every few
//! faults, and after each fault of the other kinds, a clean operator must
//! converge with no one acting (every live tenant Ready, every deleted one
//! gone) and the rows each tenant was given are all still there, read with
//! its own password. The summary line counts the faults and the findings;
//! any finding fails the suite.
//!
//! `TENANTDB_FAULT_KILLS` (default 50) sets the number of SIGKILL rounds —
//! a soak is `TENANTDB_FAULT_KILLS=1000` — and `TENANTDB_FAULT_SEED`
//! (default below) replays a run exactly. The binary has its own `main`
//! (no test harness), so the summary always prints.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use serde_json::json;
use sqlx::postgres::PgConnectOptions;
use sqlx::{Connection, PgConnection};
use support::cluster::{TempDir, TestCluster};
use support::fixtures::{add_server_with, add_tenant, condition, own_postgres};
use support::link::Link;
use support::{AdminLogin, wait_until};
use tenantdb::api::TenantDatabase;
use tenantdb::fault::KILL_POINTS;
use tenantdb::throwaway::ThrowawayPostgres;

const DEFAULT_KILLS: usize = 50;
const DEFAULT_SEED: u64 = 20_261_203;
/// SIGKILL rounds between two convergence checks.
const CONVERGE_EVERY: usize = 10;
/// How long an armed operator has to reach its kill point.
const KILL_WITHIN: Duration = Duration::from_secs(60);
/// How long a tenant on a healthy server may wait while another server
/// hangs: well under the admin pool's 30 s acquire timeout that a hung
/// server's reconciles would hold every worker for.
const BYSTANDER_WITHIN: Duration = Duration::from_secs(15);
/// How long a clean operator has to converge after a fault.
const CONVERGE_WITHIN: Duration = Duration::from_secs(120);

fn main() -> ExitCode {
    // `cargo test <filter>` passes the filter on; run only when it matches.
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--list") {
        println!("fault_injection: test");
        return ExitCode::SUCCESS;
    }
    if let Some(filter) = args.iter().find(|a| !a.starts_with('-'))
        && !"fault_injection".contains(filter.as_str())
    {
        return ExitCode::SUCCESS;
    }
    let number = |name: &str, default: u64| {
        std::env::var(name)
            .ok()
            .filter(|v| !v.is_empty())
            .map(|v| v.parse().unwrap_or_else(|_| panic!("{name}={v}: not a number")))
            .unwrap_or(default)
    };
    let kills = number("TENANTDB_FAULT_KILLS", DEFAULT_KILLS as u64) as usize;
    let seed = number("TENANTDB_FAULT_SEED", DEFAULT_SEED);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let summary = runtime.block_on(suite(kills, seed));
    println!("{summary}");
    ExitCode::SUCCESS
}

/// What the suite knows of one tenant it made.
struct Tenant {
    policy: &'static str,
    deleted: bool,
    /// The password of its connection Secret, once published.
    password: Option<String>,
    /// Where its connection Secret points.
    endpoint: Option<(String, u16, String, String)>,
    /// Rows the suite wrote into its database.
    rows: i64,
}

/// Counts for the summary; any finding fails the suite.
struct Findings {
    seed: u64,
    faults: BTreeMap<&'static str, usize>,
    checks: usize,
    orphans: Vec<String>,
    duplicates: Vec<String>,
    password_changes: Vec<String>,
    rows_lost: Vec<String>,
    left_behind: Vec<String>,
}

impl Findings {
    fn count(&self) -> usize {
        self.orphans.len()
            + self.duplicates.len()
            + self.password_changes.len()
            + self.rows_lost.len()
            + self.left_behind.len()
    }

    fn summary(&self) -> String {
        let faults: usize = self.faults.values().sum();
        let kinds: Vec<String> = self.faults.iter().map(|(k, n)| format!("{n} {k}")).collect();
        format!(
            "fault-injection: {faults} faults ({}), seed {}, {} invariant checks: {} orphans, {} duplicate placements, {} unexpected password changes, {} rows lost, {} left behind by Delete",
            kinds.join(", "),
            self.seed,
            self.checks,
            self.orphans.len(),
            self.duplicates.len(),
            self.password_changes.len(),
            self.rows_lost.len(),
            self.left_behind.len()
        )
    }
}

struct Server {
    name: String,
    postgres: ThrowawayPostgres,
}

struct World {
    cluster: TestCluster,
    servers: Vec<Server>,
    /// Between the operator (and tenants) and the second server.
    link: Link,
    namespace: String,
    tenants: BTreeMap<String, Tenant>,
    next: usize,
    rng: StdRng,
    findings: Findings,
    logs: TempDir,
    spawned: usize,
}

async fn suite(kills: usize, seed: u64) -> String {
    let cluster = TestCluster::control_plane().await;
    let (first, first_admin) = own_postgres("fault_admin").await;
    let (second, second_admin) = own_postgres("fault_admin").await;
    let link = Link::to(format!("127.0.0.1:{}", second_admin.port).parse().unwrap()).await;
    let names = [format!("fault-a-{seed}"), format!("fault-b-{seed}")];
    // With room counted on both, placement spreads tenants over them.
    let capacity = json!({"capacity": {"maxDatabases": 1000}});
    add_server_with(&cluster, &names[0], &first_admin, capacity.clone()).await;
    let through_link = AdminLogin {
        port: link.addr.port(),
        ..second_admin
    };
    add_server_with(&cluster, &names[1], &through_link, capacity).await;
    let namespace = cluster.namespace("faults").await;
    let mut world = World {
        cluster,
        servers: vec![
            Server {
                name: names[0].clone(),
                postgres: first,
            },
            Server {
                name: names[1].clone(),
                postgres: second,
            },
        ],
        link,
        namespace,
        tenants: BTreeMap::new(),
        next: 0,
        rng: StdRng::seed_from_u64(seed),
        findings: Findings {
            seed,
            faults: BTreeMap::new(),
            checks: 0,
            orphans: Vec::new(),
            duplicates: Vec::new(),
            password_changes: Vec::new(),
            rows_lost: Vec::new(),
            left_behind: Vec::new(),
        },
        logs: TempDir::new("faults"),
        spawned: 0,
    };

    world.provisioned_in_the_pass_that_adds_the_finalizer().await;
    world.secret_published_under_the_lock().await;
    // A settled fleet to start from.
    for _ in 0..6 {
        world.create().await;
    }
    let operator = world.spawn(None);
    world.converge_and_check("the start", operator).await;

    for round in 1..=kills {
        world.kill_round(round).await;
        if round % CONVERGE_EVERY == 0 || round == kills {
            let operator = world.spawn(None);
            world
                .converge_and_check(&format!("SIGKILL round {round}"), operator)
                .await;
        }
    }
    world.postgres_restart().await;
    world.link_dropped().await;
    world.link_blackholed().await;
    world.silent_mid_call().await;
    world.replica_cut_off().await;
    world.apiserver_restart().await;
    world.findings.summary()
}

impl World {
    fn tenant_name(&mut self) -> String {
        self.next += 1;
        format!("t{}", self.next)
    }

    /// Creates a tenant with a seeded policy; no server named, so
    /// placement chooses one.
    async fn create(&mut self) -> String {
        let policy = if self.rng.random_bool(0.5) {
            "Delete"
        } else {
            "Retain"
        };
        self.add(policy, json!({"deletionPolicy": policy})).await
    }

    /// Creates a tenant on one named server.
    async fn create_on(&mut self, server: &str) -> String {
        self.add("Delete", json!({"deletionPolicy": "Delete", "server": server}))
            .await
    }

    /// Creates a tenant with `spec` (whose policy is `policy`) and keeps
    /// track of it.
    async fn add(&mut self, policy: &'static str, spec: serde_json::Value) -> String {
        let name = self.tenant_name();
        add_tenant(&self.cluster, &self.namespace, &name, spec).await;
        self.tenants.insert(
            name.clone(),
            Tenant {
                policy,
                deleted: false,
                password: None,
                endpoint: None,
                rows: 0,
            },
        );
        name
    }

    /// Deletes a seeded choice among the live tenants — only provisioned
    /// ones under `deletionPolicy: Delete` when `dropping` (a deletion that
    /// must reach the SQL that drops) — if there is one.
    async fn delete_one(&mut self, dropping: bool) -> Option<String> {
        let live: Vec<String> = self
            .tenants
            .iter()
            .filter(|(_, t)| !t.deleted)
            .filter(|(_, t)| !dropping || (t.policy == "Delete" && t.password.is_some()))
            .map(|(n, _)| n.clone())
            .collect();
        if live.is_empty() {
            return None;
        }
        let name = live[self.rng.random_range(0..live.len())].clone();
        self.api()
            .delete(&name, &DeleteParams::default())
            .await
            .unwrap_or_else(|e| panic!("deleting {name}: {e}"));
        self.tenants.get_mut(&name).unwrap().deleted = true;
        Some(name)
    }

    fn api(&self) -> Api<TenantDatabase> {
        Api::namespaced(self.cluster.client.clone(), &self.namespace)
    }

    fn log_path(&self) -> PathBuf {
        self.logs.0.join("operator.log")
    }

    /// Starts `tenantdb run` as the chart's ServiceAccount, with
    /// `failpoints` armed.
    fn spawn(&mut self, failpoints: Option<&str>) -> tokio::process::Child {
        let kubeconfig = self.cluster.operator_kubeconfig.clone();
        self.spawn_with(failpoints, &kubeconfig, &["--no-leader-election"])
    }

    /// [`Self::spawn`] with its own kubeconfig and more arguments.
    fn spawn_with(
        &mut self,
        failpoints: Option<&str>,
        kubeconfig: &Path,
        args: &[&str],
    ) -> tokio::process::Child {
        self.spawned += 1;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .unwrap();
        use std::io::Write;
        writeln!(
            &log,
            "===== operator {} (FAILPOINTS={}) {}",
            self.spawned,
            failpoints.unwrap_or(""),
            args.join(" ")
        )
        .unwrap();
        tokio::process::Command::new(env!("CARGO_BIN_EXE_tenantdb"))
            .args(["run", "--kubeconfig"])
            .arg(kubeconfig)
            .args([
                "--http-addr",
                "127.0.0.1:0",
                "--resync",
                "30s",
                "--concurrency",
                "4",
            ])
            .args(args)
            .env("FAILPOINTS", failpoints.unwrap_or(""))
            .env("RUST_LOG", "tenantdb=info,kube_runtime=warn")
            .env("NO_COLOR", "1")
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .expect("starting tenantdb run")
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// One SIGKILL round: arm a seeded kill point, give the operator work
    /// that reaches it, and wait for the kill.
    async fn kill_round(&mut self, round: usize) {
        let mut point = KILL_POINTS[self.rng.random_range(0..KILL_POINTS.len())];
        let passes = self.rng.random_range(0..3usize);
        let droppable = self
            .tenants
            .values()
            .filter(|t| !t.deleted && t.policy == "Delete" && t.password.is_some())
            .count();
        if point.starts_with("cleanup.") && droppable <= passes {
            // Not enough to delete: a point of provisioning instead.
            let others: Vec<&str> = KILL_POINTS
                .iter()
                .copied()
                .filter(|p| !p.starts_with("cleanup."))
                .collect();
            point = others[self.rng.random_range(0..others.len())];
        }
        // Enough work to pass the point `passes` times and reach it once
        // more: one deletion, or one new tenant (placed, provisioned,
        // published), per pass.
        let mut work = Vec::new();
        for _ in 0..=passes {
            if point.starts_with("cleanup.") {
                work.push(format!("deleting {}", self.delete_one(true).await.unwrap()));
            } else {
                work.push(format!("creating {}", self.create().await));
            }
        }
        let work = work.join(", ");
        let actions = match passes {
            0 => "return".to_owned(),
            n => format!("{n}*off->return"),
        };
        let mut operator = self.spawn(Some(&format!("{point}={actions}")));
        let status = match tokio::time::timeout(KILL_WITHIN, operator.wait()).await {
            Ok(status) => status.unwrap(),
            Err(_) => panic!(
                "round {round}: kill point {point} (after {passes} passes, {work}) was not reached within {KILL_WITHIN:?} — is tenantdb built with --features fault-injection (make test builds it so)?\n{}",
                self.log_tail()
            ),
        };
        assert_eq!(
            status.signal(),
            Some(SIGKILL),
            "round {round}: the operator ended with {status} instead of SIGKILL at {point}\n{}",
            self.log_tail()
        );
        *self.findings.faults.entry("SIGKILLs").or_default() += 1;
        self.check_safety(&format!("SIGKILL at {point} ({work})")).await;
    }

    /// A new tenant is provisioned in the reconcile pass that adds its
    /// finalizer. The operator, with no other tenant to look at, is armed
    /// to die at the start of its second pass (`tenant.reconcile`, which
    /// every pass crosses); the tenant must be Ready by then. (With
    /// kube-runtime's finalizer helper the first pass only added the
    /// finalizer and the work waited for the watch to bring that change
    /// back — the pass this kill cuts off: the tenant was never Ready.)
    async fn provisioned_in_the_pass_that_adds_the_finalizer(&mut self) {
        assert!(
            self.tenants.is_empty(),
            "this check needs an operator with nothing else to reconcile"
        );
        let mut operator = self.spawn(Some("tenant.reconcile=1*off->return"));
        let first = self.servers[0].name.clone();
        let name = self.create_on(&first).await;
        let status = match tokio::time::timeout(KILL_WITHIN, operator.wait()).await {
            Ok(status) => status.unwrap(),
            Err(_) => panic!(
                "no second reconcile pass within {KILL_WITHIN:?} (is tenantdb built with --features fault-injection?)\n{}",
                self.log_tail()
            ),
        };
        assert_eq!(status.signal(), Some(SIGKILL), "{status}\n{}", self.log_tail());
        let tenant = self.api().get(&name).await.unwrap();
        assert!(
            is_ready(&tenant)
                && tenant
                    .finalizers()
                    .iter()
                    .any(|f| f == tenantdb::operator::FINALIZER),
            "{name} was not Ready with its finalizer when the second reconcile pass began: {:?}\n{}",
            condition(&tenant, "Ready").map(|c| (&c.reason, &c.message)),
            self.log_tail()
        );
        self.findings.checks += 1;
    }

    /// A server that goes silent while a reconcile is mid-call on an open
    /// connection — past the login, the health check and the pool, where
    /// neither the pinned `statement_timeout` (the server never sees the
    /// call end) nor TCP (the connection is up) ends the wait. The operator
    /// is made to pause 3 s before each batch of SQL steps
    /// (`apply.before_step=sleep`); once the tenant's lock is seen held,
    /// the link is blackholed, so the next call goes into silence. The
    /// call must end at its client-side deadline and the tenant say so.
    /// (Without a deadline the reconcile waited with the lock, an admin
    /// connection and a worker held, until TCP gave up.)
    async fn silent_mid_call(&mut self) {
        let mut operator = self.spawn(Some("apply.before_step=sleep(3000)"));
        let second = self.servers[1].name.clone();
        let name = self.create_on(&second).await;
        let database = format!("{}_{name}", self.namespace.replace('-', "_"));
        // Straight to the server, not through the link.
        let url = self.servers[1].postgres.superuser_url();
        let key = format!("tenantdb:{database}");
        wait_until(&format!("{name}'s lock held by the operator"), async || {
            let mut conn = PgConnection::connect(&url).await.unwrap();
            let free: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock(hashtextextended($1, 0))")
                .bind(&key)
                .fetch_one(&mut conn)
                .await
                .unwrap();
            // Closing the session releases the lock if this probe took it.
            conn.close().await.unwrap();
            !free
        })
        .await;
        self.link.blackhole();
        let silenced = Instant::now();
        let api = self.api();
        wait_until(&format!("{name} reports the silent call"), async || {
            api.get(&name).await.is_ok_and(|t| {
                condition(&t, "Ready")
                    .is_some_and(|c| c.status == "False" && c.message.contains("did not answer within"))
            })
        })
        .await;
        eprintln!(
            "fault-injection: {name}'s call into {second}'s silence ended after {:.1} s",
            silenced.elapsed().as_secs_f64()
        );
        operator.kill().await.unwrap();
        self.link.heal();
        *self.findings.faults.entry("servers silent mid-call").or_default() += 1;
        self.check_safety("a server silent mid-call").await;
        let operator = self.spawn(None);
        self.converge_and_check("a server silent mid-call", operator)
            .await;
    }

    /// One of two replicas is cut off from the API server while it leads
    /// (its kubeconfig goes through a link the suite cuts); tenants come
    /// and go meanwhile. The other replica must take over and converge
    /// everything with the cut-off one still running, and the cut-off one
    /// must have fenced itself.
    async fn replica_cut_off(&mut self) {
        let kubeconfig = std::fs::read_to_string(&self.cluster.operator_kubeconfig).unwrap();
        let (server, target) = self.cluster.operator_server();
        let link = Link::to(target).await;
        let via_link = self.logs.0.join("via-link.kubeconfig");
        std::fs::write(
            &via_link,
            kubeconfig.replace(&server, &format!("https://{}", link.addr)),
        )
        .unwrap();
        let lease_namespace = self.cluster.lease_namespace().await;
        let lease_name = format!("fault-{}", self.findings.seed);
        let election = |identity: &'static str| {
            vec![
                "--lease-namespace".to_owned(),
                lease_namespace.clone(),
                "--lease-name".to_owned(),
                lease_name.clone(),
                "--lease-duration".to_owned(),
                "4s".to_owned(),
                "--identity".to_owned(),
                identity.to_owned(),
            ]
        };
        fn args(v: &[String]) -> Vec<&str> {
            v.iter().map(String::as_str).collect()
        }
        let (a_args, b_args) = (election("replica-a"), election("replica-b"));
        let mut a = self.spawn_with(None, &via_link, &args(&a_args));
        let leases: Api<k8s_openapi::api::coordination::v1::Lease> =
            Api::namespaced(self.cluster.client.clone(), &lease_namespace);
        let holder = async || -> Option<String> {
            leases
                .get_opt(&lease_name)
                .await
                .unwrap()
                .and_then(|l| l.spec)
                .and_then(|s| s.holder_identity)
        };
        wait_until("replica-a leads", async || {
            holder().await.as_deref() == Some("replica-a")
        })
        .await;
        let operator_kubeconfig = self.cluster.operator_kubeconfig.clone();
        let b = self.spawn_with(None, &operator_kubeconfig, &args(&b_args));
        link.cut();
        self.create().await;
        self.create().await;
        self.delete_one(false).await;
        wait_until("replica-b leads", async || {
            holder().await.as_deref() == Some("replica-b")
        })
        .await;
        *self
            .findings
            .faults
            .entry("replicas cut off from the API server")
            .or_default() += 1;
        // replica-a is still running, cut off, while replica-b converges.
        self.converge_and_check("a replica cut off from the API server", b)
            .await;
        let running = a.try_wait().unwrap().is_none();
        a.kill().await.unwrap();
        assert!(
            running,
            "replica-a ended instead of fencing itself\n{}",
            self.log_tail()
        );
        let log = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        assert!(
            log.lines()
                .any(|l| l.contains("fencing") && l.contains("replica-a")),
            "replica-a never fenced itself after its cut\n{}",
            self.log_tail()
        );
        self.findings.checks += 1;
    }

    /// A race, made to happen: the connection Secret must be written while
    /// the tenant's advisory lock is held, or another reconciler of the
    /// same tenant (a replica about to be fenced, `tenantdb apply`) could
    /// set a second password between the role's change and the Secret's,
    /// and the Secret would hold a password the role no longer has. The
    /// operator is made to stop for 4 s just before it writes the Secret
    /// (`tenant.before_secret=sleep`); in that window — the database made,
    /// the Secret not there yet — the test tries the tenant's lock, which
    /// must be taken. (Before the Secret moved under the lock, it was free.)
    async fn secret_published_under_the_lock(&mut self) {
        let mut operator = self.spawn(Some("tenant.before_secret=sleep(4000)"));
        let first = self.servers[0].name.clone();
        let name = self.create_on(&first).await;
        let database = format!("{}_{name}", self.namespace.replace('-', "_"));
        let url = self.servers[0].postgres.superuser_url();
        wait_until(&format!("database {database} made"), async || {
            let mut conn = PgConnection::connect(&url).await.unwrap();
            sqlx::query_scalar::<_, bool>("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
                .bind(&database)
                .fetch_one(&mut conn)
                .await
                .unwrap()
        })
        .await;
        // The rest of the plan takes milliseconds; the operator then waits
        // at the kill point until 4 s have passed.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let mut conn = PgConnection::connect(&url).await.unwrap();
        let free: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock(hashtextextended($1, 0))")
            .bind(format!("tenantdb:{database}"))
            .fetch_one(&mut conn)
            .await
            .unwrap();
        let secrets: Api<Secret> = Api::namespaced(self.cluster.client.clone(), &self.namespace);
        let written = secrets.get_opt(&format!("{name}-db")).await.unwrap().is_some();
        conn.close().await.unwrap();
        assert!(
            !written,
            "the Secret was written before the 4 s pause ended: the kill point tenant.before_secret is not armed\n{}",
            self.log_tail()
        );
        assert!(
            !free,
            "the tenant lock was free while the connection Secret was not written yet\n{}",
            self.log_tail()
        );
        self.findings.checks += 1;
        operator.kill().await.unwrap();
    }

    /// PostgreSQL restarted while new tenants are being provisioned on it.
    async fn postgres_restart(&mut self) {
        let operator = self.spawn(None);
        let first = self.servers[0].name.clone();
        let mut names = Vec::new();
        for _ in 0..3 {
            names.push(self.create_on(&first).await);
        }
        // Restart once a placement is recorded: provisioning is under way.
        let api = self.api();
        wait_until("a placement on the first server", async || {
            for name in &names {
                let tenant = api.get(name).await.unwrap();
                if tenant.status.and_then(|s| s.server).is_some() {
                    return true;
                }
            }
            false
        })
        .await;
        let postgres = &mut self.servers[0].postgres;
        tokio::task::block_in_place(|| {
            postgres.pause().unwrap();
            postgres.resume().unwrap();
        });
        *self.findings.faults.entry("PostgreSQL restarts").or_default() += 1;
        self.check_safety("PostgreSQL restart").await;
        self.converge_and_check("PostgreSQL restart", operator).await;
    }

    /// The link to the second server drops every connection and refuses
    /// new ones for a while.
    async fn link_dropped(&mut self) {
        let operator = self.spawn(None);
        let second = self.servers[1].name.clone();
        self.link.cut();
        self.create_on(&second).await;
        self.create().await;
        self.delete_one(false).await;
        // The fault lasts this long; convergence after it is the proof.
        tokio::time::sleep(Duration::from_secs(3)).await;
        self.link.heal();
        *self.findings.faults.entry("dropped links").or_default() += 1;
        self.check_safety("dropped link").await;
        self.converge_and_check("dropped link", operator).await;
    }

    /// The link to the second server hangs: connections open, nothing
    /// answers. A tenant on the first server must still become Ready
    /// meanwhile — calls to a hung server are bounded and never take all of
    /// the operator's workers.
    async fn link_blackholed(&mut self) {
        let operator = self.spawn(None);
        let (first, second) = (self.servers[0].name.clone(), self.servers[1].name.clone());
        self.link.blackhole();
        for _ in 0..4 {
            self.create_on(&second).await;
        }
        self.delete_one(false).await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        let bystander = self.create_on(&first).await;
        let api = self.api();
        let started = Instant::now();
        wait_until(&format!("{bystander} Ready while {second} hangs"), async || {
            api.get(&bystander).await.is_ok_and(|t| is_ready(&t))
        })
        .await;
        // Not a timing claim: a hung server that held every worker until
        // the admin pool's 30 s acquire timeout is what this tells apart.
        let waited = started.elapsed() + Duration::from_secs(1);
        eprintln!(
            "fault-injection: {bystander} on {first} was Ready {:.1} s into {second}'s blackhole",
            waited.as_secs_f64()
        );
        assert!(
            waited < BYSTANDER_WITHIN,
            "{bystander} on {first} waited {waited:?} for workers held by {second}'s hung calls\n{}",
            self.log_tail()
        );
        self.link.heal();
        *self.findings.faults.entry("blackholed links").or_default() += 1;
        self.check_safety("blackholed link").await;
        self.converge_and_check("blackholed link", operator).await;
    }

    /// kube-apiserver restarted while tenants come and go.
    async fn apiserver_restart(&mut self) {
        let operator = self.spawn(None);
        self.create().await;
        self.create().await;
        self.delete_one(false).await;
        let plane = self.cluster.control_plane.as_mut().unwrap();
        tokio::task::block_in_place(|| plane.restart("kube-apiserver"));
        *self.findings.faults.entry("kube-apiserver restarts").or_default() += 1;
        self.check_safety("kube-apiserver restart").await;
        self.converge_and_check("kube-apiserver restart", operator).await;
    }

    /// Lets `operator` (no kill point armed) run until every live tenant
    /// is Ready and every deleted one is gone — no one acts meanwhile —
    /// then stops it and checks every invariant, rows included, and gives
    /// each live tenant one more row.
    async fn converge_and_check(&mut self, after: &str, mut operator: tokio::process::Child) {
        let deadline = Instant::now() + CONVERGE_WITHIN;
        loop {
            let pending = self.convergence().await;
            if pending.is_empty() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "after {after}: not converged within {CONVERGE_WITHIN:?}: {pending:?}\n{}",
                self.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        operator.kill().await.unwrap();
        self.check_safety(after).await;
        self.check_rows(after).await;
        self.fail_on_findings(after);
    }

    /// The suite's TenantDatabases as the API server has them, by name.
    async fn listed(&self) -> BTreeMap<String, TenantDatabase> {
        self.api()
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .map(|t| (t.metadata.name.clone().unwrap(), t))
            .collect()
    }

    /// What is not converged yet: live tenants not Ready, deleted ones
    /// still there.
    async fn convergence(&self) -> Vec<String> {
        let listed = self.listed().await;
        let mut pending = Vec::new();
        for (name, tenant) in &self.tenants {
            match (tenant.deleted, listed.get(name)) {
                (true, Some(_)) => pending.push(format!("{name}: still there")),
                (true, None) => {}
                (false, None) => panic!("{name} vanished without being deleted"),
                (false, Some(t)) if is_ready(t) => {}
                (false, Some(t)) => pending.push(format!(
                    "{name}: {:?}",
                    condition(t, "Ready").map(|c| (&c.reason, &c.message))
                )),
            }
        }
        pending
    }

    /// The invariants that hold in any state a fault leaves: no orphans,
    /// no tenant on two servers, no published password changed.
    async fn check_safety(&mut self, after: &str) {
        self.findings.checks += 1;
        let listed = self.listed().await;
        let prefix = format!("{}/", self.namespace);
        // owner → servers holding a database of it
        let mut placed: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for server in &self.servers {
            let mut conn = PgConnection::connect(&server.postgres.superuser_url())
                .await
                .unwrap();
            let marked: Vec<(String, String, String)> = sqlx::query_as(
                "SELECT 'database', d.datname::text,
                        coalesce(shobj_description(d.oid, 'pg_database'), shobj_description(d.datdba, 'pg_authid'))
                   FROM pg_database d
                 UNION ALL
                 SELECT 'role', r.rolname::text, shobj_description(r.oid, 'pg_authid')
                   FROM pg_roles r",
            )
            .fetch_all(&mut conn)
            .await
            .unwrap()
            .into_iter()
            .filter_map(|(kind, name, marker): (String, String, Option<String>)| {
                let owner = marker?.strip_prefix(tenantdb::reconcile::desired::OWNER_MARKER_PREFIX)?.to_owned();
                Some((kind, name, owner))
            })
            .collect();
            conn.close().await.unwrap();
            for (kind, object, owner) in marked {
                let Some(name) = owner.strip_prefix(&prefix) else {
                    continue;
                };
                let retained = self
                    .tenants
                    .get(name)
                    .is_some_and(|t| t.deleted && t.policy == "Retain");
                if !listed.contains_key(name) && !retained {
                    let finding = format!(
                        "after {after}: {kind} {object} on {} belongs to {owner}, which is gone",
                        server.name
                    );
                    if self
                        .tenants
                        .get(name)
                        .is_some_and(|t| t.deleted && t.policy == "Delete")
                    {
                        self.findings.left_behind.push(finding);
                    } else {
                        self.findings.orphans.push(finding);
                    }
                }
                if kind == "database" {
                    placed
                        .entry(name.to_owned())
                        .or_default()
                        .insert(server.name.clone());
                }
            }
        }
        for (name, servers) in &placed {
            let recorded = listed
                .get(name)
                .and_then(|t| t.status.as_ref())
                .and_then(|s| s.server.clone());
            if servers.len() > 1 {
                self.findings
                    .duplicates
                    .push(format!("after {after}: {name} has databases on {servers:?}"));
            } else if let Some(recorded) = recorded
                && !servers.contains(&recorded)
            {
                self.findings.duplicates.push(format!(
                    "after {after}: {name} is recorded on {recorded} but its database is on {servers:?}"
                ));
            }
        }
        let secrets: Api<Secret> = Api::namespaced(self.cluster.client.clone(), &self.namespace);
        for (name, tenant) in self.tenants.iter_mut().filter(|(_, t)| !t.deleted) {
            let Some(secret) = secrets.get_opt(&format!("{name}-db")).await.unwrap() else {
                continue;
            };
            let data: BTreeMap<String, String> = secret
                .data
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| (k, String::from_utf8(v.0).unwrap()))
                .collect();
            let password = data["PGPASSWORD"].clone();
            match &tenant.password {
                Some(known) if *known != password => self
                    .findings
                    .password_changes
                    .push(format!("after {after}: {name}'s Secret holds another password")),
                Some(_) => {}
                None => {
                    tenant.password = Some(password);
                    tenant.endpoint = Some((
                        data["PGHOST"].clone(),
                        data["PGPORT"].parse().unwrap(),
                        data["PGDATABASE"].clone(),
                        data["PGUSER"].clone(),
                    ));
                }
            }
        }
        self.fail_on_findings(after);
    }

    /// Every tenant the suite wrote rows for — live, or kept by `Retain` —
    /// still has them all, read with its own password; each live tenant
    /// then gets one more.
    async fn check_rows(&mut self, after: &str) {
        for (name, tenant) in self.tenants.iter_mut() {
            if tenant.deleted && tenant.policy == "Delete" {
                continue;
            }
            let (Some(password), Some((host, port, database, user))) = (&tenant.password, &tenant.endpoint)
            else {
                continue;
            };
            let options = PgConnectOptions::new_without_pgpass()
                .host(host)
                .port(*port)
                .username(user)
                .password(password)
                .database(database);
            let mut conn = match PgConnection::connect_with(&options).await {
                Ok(conn) => conn,
                Err(error) => {
                    self.findings.password_changes.push(format!(
                        "after {after}: {name} cannot log in with its password: {error}"
                    ));
                    continue;
                }
            };
            sqlx::query("CREATE TABLE IF NOT EXISTS fault_rows (id bigserial PRIMARY KEY)")
                .execute(&mut conn)
                .await
                .unwrap();
            let count: i64 = sqlx::query_scalar("SELECT count(*) FROM fault_rows")
                .fetch_one(&mut conn)
                .await
                .unwrap();
            if count != tenant.rows {
                self.findings.rows_lost.push(format!(
                    "after {after}: {name} has {count} rows, {} were written",
                    tenant.rows
                ));
            }
            if !tenant.deleted {
                sqlx::query("INSERT INTO fault_rows DEFAULT VALUES")
                    .execute(&mut conn)
                    .await
                    .unwrap();
                tenant.rows = count + 1;
            }
            conn.close().await.unwrap();
        }
        self.findings.checks += 1;
    }

    fn fail_on_findings(&self, after: &str) {
        if self.findings.count() == 0 {
            return;
        }
        let f = &self.findings;
        panic!(
            "after {after}:\n{}\norphans: {:#?}\nduplicates: {:#?}\npassword changes: {:#?}\nrows lost: {:#?}\nleft behind: {:#?}\n{}",
            f.summary(),
            f.orphans,
            f.duplicates,
            f.password_changes,
            f.rows_lost,
            f.left_behind,
            self.log_tail()
        );
    }
}

fn is_ready(tenant: &TenantDatabase) -> bool {
    condition(tenant, "Ready").is_some_and(|c| c.status == "True")
        && tenant.status.as_ref().and_then(|s| s.observed_generation) == tenant.metadata.generation
}

/// The signal a kill point ends the operator with.
const SIGKILL: i32 = 9;
