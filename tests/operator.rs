//! `tenantdb run` end to end: the operator's real code path against a real
//! Kubernetes control plane of each test's own (or the cluster of
//! `TENANTDB_E2E_KUBECONFIG`; see tests/support/cluster.rs), running as the
//! chart's ServiceAccount, and a real PostgreSQL.

mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde_json::json;
use sqlx::{Connection, PgConnection};
use support::cluster::{TempDir, TestCluster};
use support::database_exists;
use support::fixtures::{
    add_cache_server, add_cache_server_with, add_server, add_server_with, add_tenant, admin_statements,
    condition, own_counting_postgres, own_postgres, own_postgres_with, own_tls_postgres, reset_statements,
};
use tenantdb::api::TenantDatabase;
use tenantdb::operator;
use tenantdb_testkit::throwaway_redis::{ADMIN_PASSWORD, ThrowawayRedis};

/// An operator running in this process, as `tenantdb run` runs it.
struct Operator {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Result<(), String>>,
    http: std::net::SocketAddr,
}

impl Operator {
    fn start(cluster: &TestCluster, resync: Duration) -> Self {
        Self::start_in(cluster, resync, Vec::new())
    }

    /// An operator that watches only `namespaces` (all when empty).
    fn start_in(cluster: &TestCluster, resync: Duration, namespaces: Vec<String>) -> Self {
        Self::start_as(cluster.operator_client.clone(), resync, namespaces)
    }

    /// An operator with `client` as its connection to the API server.
    fn start_as(client: kube::Client, resync: Duration, namespaces: Vec<String>) -> Self {
        Self::start_with(client, resync, namespaces, None)
    }

    /// A replica that reconciles only while it holds the lease.
    fn start_leading(client: kube::Client, election: operator::LeaderElection) -> Self {
        Self::start_with(client, Duration::from_secs(300), Vec::new(), Some(election))
    }

    fn start_with(
        client: kube::Client,
        resync: Duration,
        namespaces: Vec<String>,
        leader_election: Option<operator::LeaderElection>,
    ) -> Self {
        // The operator's log, captured per test and shown when one fails
        // (`RUST_LOG` to filter; tenantdb at info by default).
        let _ = tracing_subscriber::fmt()
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_default_env()
                    .unwrap_or_else(|_| "tenantdb=info,kube_runtime=warn".into()),
            )
            .with_test_writer()
            .try_init();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let http = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let config = operator::Config {
            namespaces,
            concurrency: 8,
            resync,
            index_retry: Duration::from_secs(1),
            http_addr: http,
            leader_election,
        };
        let task = tokio::spawn(operator::run(client, config, async {
            let _ = stopped.await;
        }));
        Self {
            stop: Some(stop),
            task,
            http,
        }
    }

    /// `GET path`: the status line and the body.
    async fn get(&self, path: &str) -> (String, String) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        // A just-started operator may not listen yet.
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut stream = loop {
            match tokio::net::TcpStream::connect(self.http).await {
                Ok(stream) => break stream,
                Err(e) if Instant::now() < deadline => {
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => panic!("the operator's HTTP endpoint {}: {e}", self.http),
            }
        };
        stream
            .write_all(format!("GET {path} HTTP/1.0\r\nHost: operator\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).await.unwrap();
        let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
        (
            head.lines().next().unwrap_or_default().to_owned(),
            body.to_owned(),
        )
    }

    /// The body of `/metrics`.
    async fn metrics_text(&self) -> String {
        self.get("/metrics").await.1
    }

    /// `/metrics`, parsed with a Prometheus text-format parser.
    async fn scrape(&self) -> prometheus_parse::Scrape {
        let body = self.metrics_text().await;
        prometheus_parse::Scrape::parse(body.lines().map(|l| Ok(l.to_owned()))).expect("/metrics parses")
    }

    /// The value of one series at `/metrics`.
    async fn metric(&self, series: &str) -> f64 {
        let body = self.metrics_text().await;
        body.lines()
            .find_map(|line| line.strip_prefix(series).and_then(|v| v.trim().parse().ok()))
            .unwrap_or(0.0)
    }

    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        tokio::time::timeout(Duration::from_secs(30), &mut self.task)
            .await
            .expect("the operator stops")
            .unwrap()
            .unwrap();
    }
}

/// A ValidatingAdmissionPolicy that makes the API server refuse UPDATEs of
/// a status subresource where `expression` (CEL over `object`) is false.
struct StatusWritesRefused {
    name: String,
    policies: Api<kube::api::DynamicObject>,
    bindings: Api<kube::api::DynamicObject>,
}

impl StatusWritesRefused {
    async fn create(cluster: &TestCluster, name: &str, resource: &str, expression: &str) -> Self {
        let api = |kind: &str| -> Api<kube::api::DynamicObject> {
            Api::all_with(
                cluster.client.clone(),
                &kube::api::ApiResource::from_gvk(&kube::api::GroupVersionKind::gvk(
                    "admissionregistration.k8s.io",
                    "v1",
                    kind,
                )),
            )
        };
        let (policies, bindings) = (
            api("ValidatingAdmissionPolicy"),
            api("ValidatingAdmissionPolicyBinding"),
        );
        let deny: kube::api::DynamicObject = serde_json::from_value(json!({
            "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicy",
            "metadata": {"name": name},
            "spec": {
                "failurePolicy": "Fail",
                "matchConstraints": {"resourceRules": [{
                    "apiGroups": ["tenantdb.io"], "apiVersions": ["*"], "operations": ["UPDATE"],
                    "resources": [resource]}]},
                "validations": [{"expression": expression,
                                 "message": "status writes refused by the test"}]
            }
        }))
        .unwrap();
        policies.create(&PostParams::default(), &deny).await.unwrap();
        let binding: kube::api::DynamicObject = serde_json::from_value(json!({
            "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicyBinding",
            "metadata": {"name": name},
            "spec": {"policyName": name, "validationActions": ["Deny"]}
        }))
        .unwrap();
        bindings.create(&PostParams::default(), &binding).await.unwrap();
        StatusWritesRefused {
            name: name.to_owned(),
            policies,
            bindings,
        }
    }

    async fn lift(self) {
        self.bindings
            .delete(&self.name, &DeleteParams::default())
            .await
            .unwrap();
        self.policies
            .delete(&self.name, &DeleteParams::default())
            .await
            .unwrap();
    }
}

/// A link the test can cut between the operator's identity and
/// kube-apiserver, and a client for that identity through it.
async fn operator_link(cluster: &TestCluster) -> (support::link::Link, kube::Client) {
    let (_, target) = cluster.operator_server();
    let link = support::link::Link::to(target).await;
    let client =
        support::cluster::client_via(&cluster.operator_kubeconfig, &format!("https://{}", link.addr)).await;
    (link, client)
}

fn server_name(label: &str) -> String {
    format!(
        "pg-{label}-{}",
        &tenantdb::password::generate()[..5].to_lowercase()
    )
}

/// Waits until `check` holds for the tenant, returning it.
async fn wait_for(
    cluster: &TestCluster,
    namespace: &str,
    name: &str,
    what: &str,
    check: impl Fn(&TenantDatabase) -> bool,
) -> TenantDatabase {
    let api: Api<TenantDatabase> = Api::namespaced(cluster.client.clone(), namespace);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let tenant = api.get(name).await.unwrap();
        if check(&tenant) {
            return tenant;
        }
        assert!(
            Instant::now() < deadline,
            "{namespace}/{name} never got {what}: {:#?}",
            tenant.status
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Ready, for the current generation.
async fn wait_ready(cluster: &TestCluster, namespace: &str, name: &str) -> TenantDatabase {
    wait_for(cluster, namespace, name, "Ready", |t| {
        condition(t, "Ready").is_some_and(|c| c.status == "True")
            && t.status.as_ref().and_then(|s| s.observed_generation) == t.metadata.generation
    })
    .await
}

async fn wait_gone<K>(api: &Api<K>, name: &str)
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let deadline = Instant::now() + Duration::from_secs(60);
    while api.get_opt(name).await.unwrap().is_some() {
        assert!(Instant::now() < deadline, "{name} was never deleted");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn secret_data(cluster: &TestCluster, namespace: &str, name: &str) -> BTreeMap<String, String> {
    let secret = Api::<Secret>::namespaced(cluster.client.clone(), namespace)
        .get(name)
        .await
        .unwrap();
    secret
        .data
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, String::from_utf8(v.0).unwrap()))
        .collect()
}

async fn role_connection_limit(role: &str) -> Option<i32> {
    let mut conn = support::connect().await;
    sqlx::query_scalar("SELECT rolconnlimit FROM pg_roles WHERE rolname = $1")
        .bind(role)
        .fetch_optional(&mut conn)
        .await
        .unwrap()
}

const WRITES: [&str; 5] = ["create", "update", "patch", "delete", "deletecollection"];

/// Write requests by resource. Leases are left out: on a real control
/// plane the API server renews its own identity Lease every 10 s, and the
/// tests that count writes run without leader election.
fn writes(counts: &BTreeMap<String, u64>) -> BTreeMap<String, u64> {
    counts
        .iter()
        .filter(|(k, _)| WRITES.iter().any(|w| k.starts_with(&format!("{w} "))))
        .filter(|(k, _)| !k.contains(" leases."))
        .map(|(k, v)| (k.clone(), *v))
        .collect()
}

/// Whether a request count is for what the operator reads or writes (its
/// resources, Secrets, Events), not the control plane's own bookkeeping.
fn the_operators(key: &str) -> bool {
    let resource = key.split_once(' ').map_or("", |(_, r)| r);
    resource.contains(".tenantdb.io") || resource.starts_with("secrets") || resource.starts_with("events")
}

#[tokio::test]
async fn a_tenant_becomes_ready_with_a_working_secret_and_follows_spec_changes() {
    let cluster = TestCluster::start().await;
    let server = server_name("ready");
    add_server(&cluster, &server, support::admin().await).await;
    let ns = cluster.namespace("ready").await;
    let operator = Operator::start(&cluster, Duration::from_secs(300));
    add_tenant(
        &cluster,
        &ns,
        "acme",
        json!({"server": server, "pool": {"maxConnections": 5, "replicas": 2}}),
    )
    .await;

    let tenant = wait_ready(&cluster, &ns, "acme").await;
    let status = tenant.status.clone().unwrap();
    assert_eq!(status.observed_generation, Some(1));
    for type_ in ["Ready", "DatabaseReady", "PoolConfigured"] {
        assert_eq!(condition(&tenant, type_).unwrap().status, "True", "{type_}");
    }
    for type_ in ["Reconciling", "Stalled"] {
        assert_eq!(condition(&tenant, type_).unwrap().status, "False", "{type_}");
    }
    let database = status.database_name.clone().unwrap();
    assert_eq!(status.pool.as_ref().unwrap().connection_limit, 12);

    let data = secret_data(&cluster, &ns, "acme-db").await;
    for key in support::SECRET_KEYS {
        assert!(data.contains_key(key), "{key}");
    }
    let mut conn = PgConnection::connect(&data["DATABASE_URL"])
        .await
        .expect("login with the Secret");
    let current: String = sqlx::query_scalar("SELECT current_database()::text")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(current, database);
    conn.close().await.unwrap();
    let secret = Api::<Secret>::namespaced(cluster.client.clone(), &ns)
        .get("acme-db")
        .await
        .unwrap();
    assert_eq!(
        secret.metadata.owner_references.unwrap()[0].uid,
        tenant.metadata.uid.unwrap()
    );

    Api::<TenantDatabase>::namespaced(cluster.client.clone(), &ns)
        .patch(
            "acme",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"pool": {"maxConnections": 9}}})),
        )
        .await
        .unwrap();
    let tenant = wait_for(&cluster, &ns, "acme", "generation 2", |t| {
        t.status.as_ref().and_then(|s| s.observed_generation) == Some(2)
            && condition(t, "Ready").is_some_and(|c| c.status == "True")
    })
    .await;
    assert_eq!(tenant.status.unwrap().pool.unwrap().connection_limit, 20);
    assert_eq!(role_connection_limit(&database).await, Some(20));
    assert_eq!(secret_data(&cluster, &ns, "acme-db").await["DB_POOL_MAX"], "9");
    assert_eq!(
        secret_data(&cluster, &ns, "acme-db").await["PGPASSWORD"],
        data["PGPASSWORD"],
        "no rotation"
    );

    // A person deletes the Secret: a new password is set and published.
    let secrets: Api<Secret> = Api::namespaced(cluster.client.clone(), &ns);
    secrets.delete("acme-db", &DeleteParams::default()).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let fresh = loop {
        if let Some(secret) = secrets.get_opt("acme-db").await.unwrap() {
            break secret;
        }
        assert!(Instant::now() < deadline, "the Secret was never recreated");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let fresh_url = String::from_utf8(fresh.data.unwrap()["DATABASE_URL"].0.clone()).unwrap();
    assert_ne!(fresh_url, data["DATABASE_URL"], "a new password");
    PgConnection::connect(&fresh_url)
        .await
        .expect("the new password works");
    assert!(
        PgConnection::connect(&data["DATABASE_URL"]).await.is_err(),
        "the old one no longer does"
    );
    wait_event(&cluster, &ns, "acme", "Provisioned").await;
    operator.stop().await;
}

/// Waits for an Event with `reason` about `name` (Events are published
/// just after the status write that a test usually waits for).
async fn wait_event(cluster: &TestCluster, namespace: &str, name: &str, reason: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let reasons = event_reasons(cluster, namespace, name).await;
        if reasons.iter().any(|r| r == reason) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "no {reason} Event about {name}: {reasons:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The reasons of the Events about `name` in `namespace`.
async fn event_reasons(cluster: &TestCluster, namespace: &str, name: &str) -> Vec<String> {
    Api::<k8s_openapi::api::events::v1::Event>::namespaced(cluster.client.clone(), namespace)
        .list(&Default::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
        .filter_map(|e| e.reason)
        .collect()
}

/// The storm: a server's status counts its databases, so it is written
/// each time a tenant is placed, and every write used to re-queue every
/// tenant on that server — at fleet scale the whole server was reconciled
/// again for each tenant provisioned. Twelve tenants settle, a thirteenth
/// is placed (the server's status is written), and the reconciles that
/// follow are the newcomer's own; before the fix they were at least
/// thirteen more.
#[tokio::test]
async fn a_tenant_placed_does_not_requeue_the_tenants_already_there() {
    let cluster = TestCluster::start().await;
    let server = server_name("storm");
    add_server(&cluster, &server, support::admin().await).await;
    let ns = cluster.namespace("storm").await;
    let operator = Operator::start(&cluster, Duration::from_secs(300));
    for i in 0..12 {
        add_tenant(&cluster, &ns, &format!("t{i:02}"), json!({"server": server})).await;
    }
    for i in 0..12 {
        wait_ready(&cluster, &ns, &format!("t{i:02}")).await;
    }
    wait_server_databases(&cluster, &server, 12).await;
    wait_until_no_writes(&cluster).await;
    let reconciled = r#"tenantdb_reconcile_total{controller="tenantdatabase",result="ok"}"#;
    let before = operator.metric(reconciled).await;
    add_tenant(&cluster, &ns, "late", json!({"server": server})).await;
    wait_ready(&cluster, &ns, "late").await;
    wait_server_databases(&cluster, &server, 13).await;
    // A re-queue follows the server's watch event within milliseconds;
    // two seconds is ample for it to show.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let reconciles = operator.metric(reconciled).await - before;
    assert!(
        (1.0..=6.0).contains(&reconciles),
        "only the newcomer is reconciled (placement, finalizer, Secret): {reconciles} reconciles"
    );
    operator.stop().await;
}

/// Waits until the server's status counts `databases`.
async fn wait_server_databases(cluster: &TestCluster, server: &str, databases: i32) {
    let servers = Api::<tenantdb::api::DatabaseServer>::all(cluster.client.clone());
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let status = servers.get(server).await.unwrap().status;
        if status.as_ref().and_then(|s| s.databases) == Some(databases) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "server {server} never counted {databases} databases: {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn twenty_ready_tenants_cost_no_writes_and_restarts_keep_passwords() {
    // Requests counted by the API server itself (its apiserver_request_total).
    let cluster = TestCluster::start().await;
    let server = server_name("quiet");
    // A PostgreSQL of its own: the server's connections in use (status,
    // written when they move by a tenth of max_connections) are this
    // operator's alone, not those of every test sharing a server.
    let (_postgres, admin) = own_postgres("quiet_admin").await;
    add_server_with(
        &cluster,
        &server,
        &admin,
        json!({"healthCheck": {"interval": "1s", "loginInterval": "2s", "loginsPerSecond": 100}}),
    )
    .await;
    let ns = cluster.namespace("quiet").await;
    let resync = Duration::from_secs(1);
    let operator = Operator::start(&cluster, resync);
    for i in 0..20 {
        add_tenant(&cluster, &ns, &format!("t{i:02}"), json!({"server": server})).await;
    }
    for i in 0..20 {
        wait_ready(&cluster, &ns, &format!("t{i:02}")).await;
    }
    let mut passwords = BTreeMap::new();
    for i in 0..20 {
        passwords.insert(
            i,
            secret_data(&cluster, &ns, &format!("t{i:02}-db")).await["PGPASSWORD"].clone(),
        );
    }
    // Let the server's status settle on 20 databases and the health
    // monitor see every tenant, then watch three resyncs.
    for i in 0..20 {
        wait_for(&cluster, &ns, &format!("t{i:02}"), "Healthy after a login", |t| {
            healthy(t) == Some(true)
                && t.status
                    .as_ref()
                    .and_then(|s| s.health.as_ref())
                    .is_some_and(|h| h.latency_ms.is_some())
        })
        .await;
    }
    // Logins (a per-tenant rotation of their own) pushed far out.
    push_logins_out(&cluster, &server).await;
    wait_until_no_writes(&cluster).await;
    let reconciled = r#"tenantdb_reconcile_total{controller="tenantdatabase",result="ok"}"#;
    let reconciles_before = operator.metric(reconciled).await;
    let before = operator_requests(&cluster).await;
    tokio::time::sleep(resync * 3 + Duration::from_millis(500)).await;
    let after = operator_requests(&cluster).await;
    let reconciles = operator.metric(reconciled).await - reconciles_before;
    assert!(
        before
            .get("patch tenantdatabases.tenantdb.io/status")
            .copied()
            .unwrap_or(0)
            >= 20,
        "the counts see the operator's own status writes for 20 tenants: {before:?}"
    );
    assert!(reconciles >= 40.0, "the resyncs did run: {reconciles} reconciles");
    assert_eq!(writes(&before), writes(&after), "a quiet fleet makes no writes");
    let reads = |counts: &BTreeMap<String, u64>| -> BTreeMap<String, u64> {
        counts
            .iter()
            .filter(|(k, _)| (k.starts_with("get ") || k.starts_with("list ")) && the_operators(k))
            .map(|(k, v)| (k.clone(), *v))
            .collect()
    };
    assert_eq!(
        reads(&before),
        reads(&after),
        "and, from its caches, no reads either"
    );
    // Numbers that moved (a size grown by the tenants' first sessions, say)
    // are written at the heartbeat: an hour from here on, so that the
    // restart below is seen alone.
    Api::<tenantdb::api::DatabaseServer>::all(cluster.client.clone())
        .patch(
            &server,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"healthCheck": {"statusHeartbeat": "1h"}}})),
        )
        .await
        .unwrap();
    wait_until_no_writes(&cluster).await;
    let after = writes(&operator_requests(&cluster).await);
    operator.stop().await;

    // A new operator process finds every Secret and changes no password —
    // after it has reconciled every tenant (its first list queues all 20;
    // 40 means the resyncs after that ran too).
    let operator = Operator::start(&cluster, resync);
    let started = Instant::now();
    let deadline = Instant::now() + Duration::from_secs(60);
    while operator.metric(reconciled).await < 40.0 {
        assert!(
            Instant::now() < deadline,
            "the restarted operator reconciled only {} times",
            operator.metric(reconciled).await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        writes(&operator_requests(&cluster).await),
        after,
        "the restarted operator had nothing to write"
    );
    // Every size is due after a restart, but a health check (every second
    // here) reads only its share: one of 20 at an hourly sizeInterval.
    let size_reads = format!("tenantdb_database_size_reads_total{{server=\"{server}\"}}");
    support::wait_until("the restarted operator read a size", async || {
        operator.metric(&size_reads).await >= 1.0
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (read, checks) = (
        operator.metric(&size_reads).await,
        (started.elapsed().as_secs_f64() / 0.9).ceil() + 1.0,
    );
    assert!(
        read <= checks,
        "{read} sizes read in {checks} health checks at most"
    );
    // Stopped before the logins below: a connection of the test's own is
    // connection use the health monitor may rightly report (a write).
    operator.stop().await;
    for (i, password) in &passwords {
        let data = secret_data(&cluster, &ns, &format!("t{i:02}-db")).await;
        assert_eq!(&data["PGPASSWORD"], password, "t{i:02}");
        PgConnection::connect(&data["DATABASE_URL"])
            .await
            .expect("the old password still works")
            .close()
            .await
            .unwrap();
    }
}

/// The operator's own requests: on a control plane of the test's own, from
/// the API server's audit log, which records the operator's identity alone
/// (so nothing the test, kube-controller-manager or the API server itself
/// does is counted); on the emulator, its counts.
async fn operator_requests(cluster: &TestCluster) -> BTreeMap<String, u64> {
    match &cluster.control_plane {
        Some(plane) => plane.audited_requests(),
        None => cluster.request_counts().await,
    }
}

#[tokio::test]
async fn an_ownership_conflict_stalls_the_second_tenant_and_drops_nothing() {
    let cluster = TestCluster::start().await;
    let server = server_name("owner");
    add_server(&cluster, &server, support::admin().await).await;
    let (first_ns, second_ns) = (
        cluster.namespace("owner-a").await,
        cluster.namespace("owner-b").await,
    );
    let shared = format!("shared_{}", first_ns.replace('-', "_"));
    let operator = Operator::start(&cluster, Duration::from_secs(300));
    add_tenant(
        &cluster,
        &first_ns,
        "first",
        json!({"server": server, "databaseName": shared}),
    )
    .await;
    wait_ready(&cluster, &first_ns, "first").await;
    add_tenant(
        &cluster,
        &second_ns,
        "second",
        json!({"server": server, "databaseName": shared, "roleName": "second_role", "deletionPolicy": "Delete"}),
    )
    .await;
    let stalled = wait_for(&cluster, &second_ns, "second", "Stalled", |t| {
        condition(t, "Stalled").is_some_and(|c| c.status == "True")
    })
    .await;
    let message = &condition(&stalled, "Stalled").unwrap().message;
    assert!(
        message.contains(&format!("belongs to {first_ns}/first")),
        "{message}"
    );
    assert_eq!(condition(&stalled, "Ready").unwrap().status, "False");
    wait_event(&cluster, &second_ns, "second", "Conflict").await;

    let second_api: Api<TenantDatabase> = Api::namespaced(cluster.client.clone(), &second_ns);
    second_api
        .delete("second", &DeleteParams::default())
        .await
        .unwrap();
    wait_gone(&second_api, "second").await;
    assert!(
        database_exists(&shared).await,
        "the first tenant's database is untouched"
    );
    let first = wait_ready(&cluster, &first_ns, "first").await;
    assert_eq!(condition(&first, "Ready").unwrap().status, "True");
    let data = secret_data(&cluster, &first_ns, "first-db").await;
    PgConnection::connect(&data["DATABASE_URL"])
        .await
        .expect("the first tenant still works");
    operator.stop().await;
}

#[tokio::test]
async fn delete_drops_and_retain_keeps_and_a_namespace_of_tenants_goes_away() {
    let cluster = TestCluster::start().await;
    let server = server_name("delete");
    add_server(&cluster, &server, support::admin().await).await;
    let ns = cluster.namespace("delete").await;
    let operator = Operator::start(&cluster, Duration::from_secs(300));
    add_tenant(
        &cluster,
        &ns,
        "gone",
        json!({"server": server, "deletionPolicy": "Delete"}),
    )
    .await;
    add_tenant(&cluster, &ns, "kept", json!({"server": server})).await;
    let gone = wait_ready(&cluster, &ns, "gone").await.status.unwrap();
    let kept = wait_ready(&cluster, &ns, "kept").await.status.unwrap();
    let (gone_db, kept_db) = (gone.database_name.unwrap(), kept.database_name.unwrap());

    let api: Api<TenantDatabase> = Api::namespaced(cluster.client.clone(), &ns);
    let secrets: Api<Secret> = Api::namespaced(cluster.client.clone(), &ns);
    api.delete("gone", &DeleteParams::default()).await.unwrap();
    wait_gone(&api, "gone").await;
    assert!(!database_exists(&gone_db).await, "Delete dropped the database");
    assert_eq!(role_connection_limit(&gone_db).await, None, "and the role");
    wait_gone(&secrets, "gone-db").await;
    wait_event(&cluster, &ns, "gone", "Deleted").await;

    api.delete("kept", &DeleteParams::default()).await.unwrap();
    wait_gone(&api, "kept").await;
    assert!(database_exists(&kept_db).await, "Retain kept the database");

    // A namespace full of tenants can be deleted: the finalizers complete.
    let crowded = cluster.namespace("crowded").await;
    for (name, policy) in [("a", "Delete"), ("b", "Retain"), ("c", "Delete")] {
        add_tenant(
            &cluster,
            &crowded,
            name,
            json!({"server": server, "deletionPolicy": policy}),
        )
        .await;
    }
    for name in ["a", "b", "c"] {
        wait_ready(&cluster, &crowded, name).await;
    }
    Api::<Namespace>::all(cluster.client.clone())
        .delete(&crowded, &DeleteParams::default())
        .await
        .unwrap();
    wait_gone(&Api::<Namespace>::all(cluster.client.clone()), &crowded).await;
    let prefix = crowded.replace('-', "_");
    assert!(!database_exists(&format!("{prefix}_a")).await);
    assert!(database_exists(&format!("{prefix}_b")).await);
    operator.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_outage_shows_in_status_and_heals_by_itself() {
    let cluster = TestCluster::start().await;
    let (mut postgres, admin) = own_postgres("outage_admin").await;
    let server = server_name("outage");
    add_server(&cluster, &server, &admin).await;
    let ns = cluster.namespace("outage").await;
    let operator = Operator::start(&cluster, Duration::from_secs(2));

    tokio::task::block_in_place(|| postgres.pause()).unwrap();
    add_tenant(&cluster, &ns, "acme", json!({"server": server})).await;
    let down = wait_for(&cluster, &ns, "acme", "a reported outage", |t| {
        condition(t, "Reconciling").is_some_and(|c| c.status == "True" && !c.message.is_empty())
    })
    .await;
    let ready = condition(&down, "Ready").unwrap();
    assert_eq!(ready.status, "False");
    assert!(
        ready.message.contains(&format!("server {server}")),
        "{}",
        ready.message
    );
    assert_eq!(
        condition(&down, "Stalled").unwrap().status,
        "False",
        "an outage is retried, not stalled"
    );

    tokio::task::block_in_place(|| postgres.resume()).unwrap();
    wait_ready(&cluster, &ns, "acme").await;
    // Healthy too: the health monitor's next sample has seen the server
    // back (until then the tenant is Ready but Degraded).
    wait_for(&cluster, &ns, "acme", "Ready and healthy", |t| {
        t.status.as_ref().and_then(|s| s.phase) == Some(tenantdb::api::tenant_database::TenantPhase::Ready)
            && healthy(t) != Some(false)
    })
    .await;

    // An outage after the tenant was Ready makes it Degraded, then Ready again.
    tokio::task::block_in_place(|| postgres.pause()).unwrap();
    let degraded = wait_for(&cluster, &ns, "acme", "Degraded", |t| {
        t.status.as_ref().and_then(|s| s.phase) == Some(tenantdb::api::tenant_database::TenantPhase::Degraded)
    })
    .await;
    assert_eq!(
        condition(&degraded, "Ready").unwrap().status,
        "False",
        "{:#?}",
        degraded.status
    );
    wait_event(&cluster, &ns, "acme", "Degraded").await;
    tokio::task::block_in_place(|| postgres.resume()).unwrap();
    wait_ready(&cluster, &ns, "acme").await;
    operator.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deletion_blocked_by_an_outage_says_why_and_completes_later() {
    let cluster = TestCluster::start().await;
    let (mut postgres, admin) = own_postgres("blocked_admin").await;
    let server = server_name("blocked");
    add_server(&cluster, &server, &admin).await;
    let ns = cluster.namespace("blocked").await;
    let operator = Operator::start(&cluster, Duration::from_secs(300));
    add_tenant(
        &cluster,
        &ns,
        "acme",
        json!({"server": server, "deletionPolicy": "Delete"}),
    )
    .await;
    wait_ready(&cluster, &ns, "acme").await;

    tokio::task::block_in_place(|| postgres.pause()).unwrap();
    let api: Api<TenantDatabase> = Api::namespaced(cluster.client.clone(), &ns);
    api.delete("acme", &DeleteParams::default()).await.unwrap();
    let blocked = wait_for(&cluster, &ns, "acme", "Deleting", |t| {
        t.status.as_ref().and_then(|s| s.phase) == Some(tenantdb::api::tenant_database::TenantPhase::Deleting)
    })
    .await;
    let ready = condition(&blocked, "Ready").unwrap();
    assert!(
        ready.message.contains("cannot drop the database yet") && ready.message.contains(&server),
        "{}",
        ready.message
    );
    wait_event(&cluster, &ns, "acme", "DeletionBlocked").await;
    assert!(
        api.get_opt("acme").await.unwrap().is_some(),
        "the finalizer holds the object"
    );

    tokio::task::block_in_place(|| postgres.resume()).unwrap();
    wait_gone(&api, "acme").await;
    let mut conn = PgConnection::connect(&postgres.superuser_url()).await.unwrap();
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_database WHERE datname LIKE 'blocked%'")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(left, 0, "the database was dropped once the server came back");
    operator.stop().await;
}

/// Starts `tenantdb run` as its own process.
fn spawn_operator(cluster: &TestCluster, identity: &str, lease_namespace: &str) -> tokio::process::Child {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_tenantdb"))
        .args(["run", "--kubeconfig"])
        .arg(&cluster.operator_kubeconfig)
        .args([
            "--http-addr",
            "127.0.0.1:0",
            "--resync",
            "30s",
            "--lease-duration",
            "3s",
        ])
        .args(["--lease-namespace", lease_namespace, "--identity", identity])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap()
}

async fn lease_holder(cluster: &TestCluster, namespace: &str) -> Option<String> {
    Api::<Lease>::namespaced(cluster.client.clone(), namespace)
        .get_opt("tenantdb-operator")
        .await
        .unwrap()
        .and_then(|l| l.spec)
        .and_then(|s| s.holder_identity)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_operators_elect_one_leader_and_the_other_takes_over() {
    let cluster = TestCluster::start().await;
    let server = server_name("leader");
    add_server(&cluster, &server, support::admin().await).await;
    let ns = cluster.namespace("leader").await;
    let lease_ns = cluster.lease_namespace().await;
    let mut first = spawn_operator(&cluster, "operator-one", &lease_ns);
    let mut second = spawn_operator(&cluster, "operator-two", &lease_ns);
    add_tenant(&cluster, &ns, "a", json!({"server": server})).await;
    wait_ready(&cluster, &ns, "a").await;
    // The Event follows the status write: wait for it, not for Ready alone.
    wait_event(&cluster, &ns, "a", "Provisioned").await;

    let leader = lease_holder(&cluster, &lease_ns)
        .await
        .expect("a leader holds the lease");
    let events = Api::<k8s_openapi::api::events::v1::Event>::namespaced(cluster.client.clone(), &ns)
        .list(&Default::default())
        .await
        .unwrap();
    let reporters: Vec<String> = events
        .items
        .iter()
        .filter_map(|e| e.reporting_instance.clone())
        .collect();
    assert!(
        !reporters.is_empty() && reporters.iter().all(|r| *r == leader),
        "only the leader reconciled: {reporters:?}"
    );

    let (leader_process, follower) = if leader == "operator-one" {
        (&mut first, "operator-two")
    } else {
        (&mut second, "operator-one")
    };
    leader_process.kill().await.unwrap();
    add_tenant(&cluster, &ns, "b", json!({"server": server})).await;
    wait_ready(&cluster, &ns, "b").await;
    assert_eq!(lease_holder(&cluster, &lease_ns).await.as_deref(), Some(follower));
}

/// The race: the lease library only logs a failed renewal, so a leader cut
/// off from the API server went on reconciling while the other replica
/// took the expired lease over — two leaders at once. Two replicas in this
/// process share a 4 s lease; the leader's link to the API server is cut.
/// It must stop reconciling (its `tenantdb_leader` gauge falls to 0) before
/// the other starts (its gauge rises to 1). Before the fix the cut-off
/// leader's gauge stayed at 1 while the other's rose.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_cut_off_from_the_api_server_stops_before_another_takes_over() {
    let cluster = TestCluster::start().await;
    let lease_namespace = cluster.lease_namespace().await;
    let (link, through_link) = operator_link(&cluster).await;
    let election = |identity: &str| operator::LeaderElection {
        namespace: lease_namespace.clone(),
        lease_name: "tenantdb-operator".into(),
        identity: identity.into(),
        lease_duration: Duration::from_secs(4),
    };
    const LEADER: &str = "tenantdb_leader";
    let first = Operator::start_leading(through_link, election("replica-one"));
    let deadline = Instant::now() + Duration::from_secs(60);
    while first.metric(LEADER).await != 1.0 {
        assert!(Instant::now() < deadline, "the first replica never led");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let second = Operator::start_leading(cluster.operator_client.clone(), election("replica-two"));
    assert_eq!(
        lease_holder(&cluster, &lease_namespace).await.as_deref(),
        Some("replica-one")
    );

    link.cut();
    let cut = Instant::now();
    let mut fenced_after = None;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        // The first replica's gauge is read before the second's: a 1 then
        // a 1 means both led at once.
        let first_leads = first.metric(LEADER).await == 1.0;
        if !first_leads && fenced_after.is_none() {
            fenced_after = Some(cut.elapsed());
        }
        if second.metric(LEADER).await == 1.0 {
            assert!(
                !first_leads,
                "the cut-off replica still led when the other took over, {:?} after the cut",
                cut.elapsed()
            );
            break;
        }
        assert!(Instant::now() < deadline, "the second replica never took over");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let fenced_after = fenced_after.expect("the first replica stopped leading");
    assert_eq!(
        lease_holder(&cluster, &lease_namespace).await.as_deref(),
        Some("replica-two")
    );
    eprintln!(
        "fenced {fenced_after:?} after the cut; the other replica took over {:?} after it",
        cut.elapsed()
    );
    // Reconnected, the first replica stays a follower.
    link.heal();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(first.metric(LEADER).await, 0.0);
    first.stop().await;
    second.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_drives_the_operator_black_box() {
    let cluster = TestCluster::start().await;
    let admin = support::admin().await;
    let ns = cluster.namespace("blackbox").await;
    let ops = cluster.namespace("blackbox-ops").await;
    let server = server_name("blackbox");
    let dir = TempDir::new("blackbox");
    let manifest = dir.0.join("tenant.yaml");
    std::fs::write(
        &manifest,
        format!(
            "apiVersion: v1\nkind: Secret\nmetadata: {{name: pg-admin, namespace: {ops}}}\n\
             stringData: {{username: {}, password: {}}}\n---\n\
             apiVersion: tenantdb.io/v1alpha1\nkind: DatabaseServer\nmetadata: {{name: {server}}}\n\
             spec: {{host: {}, port: {}, sslMode: disable, adminSecretRef: {{namespace: {ops}, name: pg-admin}}}}\n---\n\
             apiVersion: tenantdb.io/v1alpha1\nkind: TenantDatabase\nmetadata: {{name: acme, namespace: {ns}}}\n\
             spec: {{server: {server}, deletionPolicy: Delete}}\n",
            admin.user, admin.password, admin.host, admin.port
        ),
    )
    .unwrap();
    let _operator = spawn_operator(&cluster, "blackbox", &cluster.lease_namespace().await);
    let ok = support::cluster::succeeded;
    ok(cluster
        .kubectl(&[
            "apply",
            "--server-side",
            "--validate=false",
            "-f",
            manifest.to_str().unwrap(),
        ])
        .await);
    let waited = ok(cluster
        .kubectl(&[
            "wait",
            "--for=condition=Ready",
            "tdb/acme",
            "-n",
            &ns,
            "--timeout=60s",
        ])
        .await);
    assert!(waited.contains("condition met"));
    let listed = ok(cluster.kubectl(&["get", "tdb", "-n", &ns]).await);
    assert!(listed.contains("Ready") && listed.contains(&server), "{listed}");
    let database = format!("{}_acme", ns.replace('-', "_"));
    assert!(database_exists(&database).await);
    ok(cluster
        .kubectl(&["delete", "tdb", "acme", "-n", &ns, "--timeout=60s"])
        .await);
    assert!(
        !database_exists(&database).await,
        "deletionPolicy Delete dropped it"
    );
}

/// A CacheServer's `Ready` condition, once the operator wrote one.
async fn cache_server_ready(cluster: &TestCluster, name: &str) -> (String, String, String) {
    let api: Api<tenantdb::api::CacheServer> = Api::all(cluster.client.clone());
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let server = api.get(name).await.unwrap();
        let ready = server
            .status
            .as_ref()
            .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready"));
        if let Some(c) = ready {
            return (c.status.clone(), c.reason.clone(), c.message.clone());
        }
        assert!(
            Instant::now() < deadline,
            "{name} never got Ready: {:#?}",
            server.status
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn kubectl_get_cs_shows_cache_servers_and_a_refused_admin_login_says_why() {
    let redis = ThrowawayRedis::start().unwrap();
    let cluster = TestCluster::start().await;
    let (good, refused) = (server_name("cache-good"), server_name("cache-refused"));
    let wrong = "not-the-admin-password-4117";
    add_cache_server(
        &cluster,
        &good,
        (redis.host(), redis.port()),
        ("default", ADMIN_PASSWORD),
    )
    .await;
    add_cache_server(
        &cluster,
        &refused,
        (redis.host(), redis.port()),
        ("default", wrong),
    )
    .await;
    let _operator = Operator::start(&cluster, Duration::from_secs(300));

    let (status, reason, _) = cache_server_ready(&cluster, &good).await;
    assert_eq!((status.as_str(), reason.as_str()), ("True", "Reachable"));
    let (status, reason, message) = cache_server_ready(&cluster, &refused).await;
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("False", "AdminLoginFailed"),
        "{message}"
    );
    assert!(
        !message.contains(wrong),
        "the password is never in status: {message}"
    );

    // `cs` alone is the built-in ComponentStatus's short name, which
    // kube-apiserver still serves and kubectl prefers: the group says which.
    let listed = support::cluster::succeeded(cluster.kubectl(&["get", "cs.tenantdb.io"]).await);
    assert_eq!(
        support::cluster::succeeded(cluster.kubectl(&["get", "cacheservers", "-o", "name"]).await)
            .lines()
            .count(),
        2
    );
    let row = |name: &str| {
        listed
            .lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("no row for {name}: {listed}"))
            .split_whitespace()
            .collect::<Vec<_>>()
    };
    assert!(listed.starts_with("NAME"), "{listed}");
    for column in ["HOST", "READY", "VERSION", "TENANTS", "MEMORY", "ACLS", "AGE"] {
        assert!(
            listed.lines().next().unwrap().contains(column),
            "{column}: {listed}"
        );
    }
    let good_row = row(&good);
    assert_eq!(good_row[1..3], [redis.host(), "True"], "{listed}");
    assert!(good_row[3].starts_with("7."), "{listed}");
    assert_eq!(good_row[4], "0", "no tenant placed here: {listed}");
    assert!(good_row[5].ends_with("/unlimited"), "{listed}");
    assert_eq!(good_row[6], "memory", "no aclfile on this server: {listed}");
    assert_eq!(row(&refused)[1..3], [redis.host(), "False"], "{listed}");
}

#[tokio::test]
async fn a_tls_cache_server_is_verified_against_its_ca_and_its_tenants_get_rediss_urls() {
    let redis = ThrowawayRedis::start_with_tls().unwrap();
    let ca = String::from_utf8(redis.ca_pem().unwrap()).unwrap();
    let cluster = TestCluster::start().await;
    let (server, verified, unverified) = (
        server_name("tls-pg"),
        server_name("cache-tls"),
        server_name("cache-tls-roots"),
    );
    add_server(&cluster, &server, support::admin().await).await;
    let pki = cluster.namespace("cache-pki").await;
    let secret: k8s_openapi::api::core::v1::Secret =
        serde_json::from_value(json!({"metadata": {"name": "redis-ca"}, "stringData": {"ca.crt": ca}}))
            .unwrap();
    Api::<k8s_openapi::api::core::v1::Secret>::namespaced(cluster.client.clone(), &pki)
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
    let address = (redis.host(), redis.port());
    add_cache_server_with(
        &cluster,
        &verified,
        address,
        ("default", ADMIN_PASSWORD),
        json!({"tls": {"caSecretRef": {"namespace": pki, "name": "redis-ca"}}}),
    )
    .await;
    let _operator = Operator::start(&cluster, Duration::from_secs(300));
    let (status, reason, message) = cache_server_ready(&cluster, &verified).await;
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("True", "Reachable"),
        "{message}"
    );

    let ns = cluster.namespace("tls-cached").await;
    add_tenant(
        &cluster,
        &ns,
        "acme",
        json!({"server": server, "cache": {"server": verified}}),
    )
    .await;
    wait_ready(&cluster, &ns, "acme").await;
    let url = secret_data(&cluster, &ns, "acme-db").await["REDIS_URL"].clone();
    assert!(url.starts_with(&format!("rediss://tdb.{ns}.acme:")), "{url}");
    let client = redis::Client::build_with_tls(
        url.as_str(),
        redis::TlsCertificates {
            client_tls: None,
            root_cert: redis.ca_pem(),
        },
    )
    .unwrap();
    let mut app = client.get_multiplexed_async_connection().await.unwrap();
    let () = redis::cmd("SET")
        .arg(format!("{ns}:acme:session"))
        .arg("1")
        .query_async(&mut app)
        .await
        .unwrap();

    // The same server against the system's CA certificates: not trusted,
    // and status says why.
    add_cache_server_with(
        &cluster,
        &unverified,
        address,
        ("default", ADMIN_PASSWORD),
        json!({"tls": {}}),
    )
    .await;
    let (status, reason, message) = cache_server_ready(&cluster, &unverified).await;
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("False", "Unreachable"),
        "{message}"
    );
    assert!(message.contains("certificate"), "{message}");
}

/// The Ready condition of DatabaseServer `name` once it has one:
/// (status, reason, message).
async fn database_server_ready(cluster: &TestCluster, name: &str) -> (String, String, String) {
    let api: Api<tenantdb::api::DatabaseServer> = Api::all(cluster.client.clone());
    let mut found = None;
    support::wait_until(&format!("{name} has a Ready condition"), async || {
        found = api
            .get(name)
            .await
            .unwrap()
            .status
            .and_then(|s| s.conditions.into_iter().find(|c| c.type_ == "Ready"))
            .map(|c| (c.status, c.reason, c.message));
        found.is_some()
    })
    .await;
    found.unwrap()
}

#[tokio::test]
async fn verify_full_trusts_the_ca_in_the_servers_ca_secret_and_nothing_else() {
    let (postgres, admin) = own_tls_postgres("tls_admin").await;
    let ca = String::from_utf8(postgres.ca_pem().unwrap()).unwrap();
    let cluster = TestCluster::start().await;
    let pki = cluster.namespace("pg-pki").await;
    let secret: k8s_openapi::api::core::v1::Secret =
        serde_json::from_value(json!({"metadata": {"name": "pg-ca"}, "stringData": {"ca.crt": ca}})).unwrap();
    Api::<k8s_openapi::api::core::v1::Secret>::namespaced(cluster.client.clone(), &pki)
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
    let (verified, unverified) = (server_name("pg-verified"), server_name("pg-unverified"));
    add_server_with(
        &cluster,
        &verified,
        &admin,
        json!({"sslMode": "verify-full", "caSecretRef": {"namespace": pki, "name": "pg-ca"}}),
    )
    .await;
    add_server_with(&cluster, &unverified, &admin, json!({"sslMode": "verify-full"})).await;
    let _operator = Operator::start(&cluster, Duration::from_secs(300));

    let (status, reason, message) = database_server_ready(&cluster, &verified).await;
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("True", "Reachable"),
        "{message}"
    );
    let ns = cluster.namespace("verified").await;
    add_tenant(&cluster, &ns, "acme", json!({"server": verified})).await;
    wait_ready(&cluster, &ns, "acme").await;

    // The system's CA certificates do not vouch for this server.
    let (status, reason, message) = database_server_ready(&cluster, &unverified).await;
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("False", "Unreachable"),
        "{message}"
    );
    assert!(message.contains("certificate"), "{message}");
}

/// A connection as the tenant's application makes it: the `redis` crate
/// with nothing but the Secret's `REDIS_URL`.
async fn redis_app(url: &str) -> redis::aio::MultiplexedConnection {
    redis::Client::open(url)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap_or_else(|e| panic!("connecting with REDIS_URL: {e}"))
}

/// The throwaway Redis's admin connection.
async fn redis_admin(redis: &ThrowawayRedis) -> redis::aio::MultiplexedConnection {
    let url = format!(
        "redis://default:{ADMIN_PASSWORD}@{}:{}",
        redis.host(),
        redis.port()
    );
    redis_app(&url).await
}

/// The Redis users whose names start with `tdb.`.
async fn tenant_users(admin: &mut redis::aio::MultiplexedConnection) -> Vec<String> {
    let users: Vec<String> = redis::cmd("ACL").arg("USERS").query_async(admin).await.unwrap();
    users.into_iter().filter(|u| u.starts_with("tdb.")).collect()
}

async fn keys_under(admin: &mut redis::aio::MultiplexedConnection, prefix: &str) -> usize {
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}*"))
        .query_async(admin)
        .await
        .unwrap();
    keys.len()
}

#[tokio::test]
async fn a_tenant_with_a_cache_gets_redis_access_to_its_own_keys_repaired_and_removed() {
    let mut redis = ThrowawayRedis::start().unwrap();
    let cluster = TestCluster::start().await;
    let (server, cache) = (server_name("cached"), server_name("cache"));
    add_server(&cluster, &server, support::admin().await).await;
    add_cache_server(
        &cluster,
        &cache,
        (redis.host(), redis.port()),
        ("default", ADMIN_PASSWORD),
    )
    .await;
    let ns = cluster.namespace("cached").await;
    // Cache logins every second, for the health checks below.
    Api::<tenantdb::api::CacheServer>::all(cluster.client.clone())
        .patch(
            &cache,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"healthCheck": {"interval": "1s", "loginInterval": "1s", "loginsPerSecond": 100}}})),
        )
        .await
        .unwrap();
    // A short resync: drift is repaired on the next one.
    let operator = Operator::start(&cluster, Duration::from_secs(2));
    // No cache server named: placement picks the one Ready server.
    add_tenant(
        &cluster,
        &ns,
        "acme",
        json!({"server": server, "deletionPolicy": "Delete", "cache": {}}),
    )
    .await;
    add_tenant(
        &cluster,
        &ns,
        "other",
        json!({"server": server, "cache": {"commands": "readOnly"}}),
    )
    .await;
    let acme = wait_ready(&cluster, &ns, "acme").await.status.unwrap();
    let recorded = acme.cache.clone().unwrap();
    assert_eq!(recorded.server, cache);
    assert_eq!(
        recorded.key_prefix.as_deref(),
        Some(format!("{ns}:acme:").as_str())
    );
    wait_ready(&cluster, &ns, "other").await;
    // The server counts its tenants (`kubectl get cs.tenantdb.io` shows it).
    let caches = Api::<tenantdb::api::CacheServer>::all(cluster.client.clone());
    support::wait_until("the CacheServer counts 2 tenants", async || {
        caches.get(&cache).await.unwrap().status.and_then(|s| s.tenants) == Some(2)
    })
    .await;
    // A prefix that covers acme's (provisioned) is refused, naming the field.
    add_tenant(
        &cluster,
        &ns,
        "greedy",
        json!({"server": server, "cache": {"keyPrefix": format!("{ns}:ac")}}),
    )
    .await;

    let greedy = wait_for(&cluster, &ns, "greedy", "refused", |t| {
        condition(t, "Ready").is_some_and(|c| c.reason == "InvalidSpec")
    })
    .await;
    let refusal = condition(&greedy, "Ready").unwrap().message.clone();
    assert!(
        refusal.contains("spec.cache.keyPrefix") && refusal.contains(&format!("{ns}/acme")),
        "{refusal}"
    );

    let data = secret_data(&cluster, &ns, "acme-db").await;
    assert_eq!(data["REDIS_KEY_PREFIX"], format!("{ns}:acme:"));
    let url = data["REDIS_URL"].clone();
    assert!(
        url.starts_with(&format!("redis://tdb.{ns}.acme:")),
        "{}",
        url.split('@').next_back().unwrap()
    );
    let mut app = redis_app(&url).await;
    let mine = format!("{ns}:acme:session:1");
    let () = redis::cmd("SET")
        .arg(&mine)
        .arg("alice")
        .query_async(&mut app)
        .await
        .unwrap();
    let got: String = redis::cmd("GET").arg(&mine).query_async(&mut app).await.unwrap();
    assert_eq!(got, "alice");
    let theirs = format!("{ns}:other:session:1");
    let refused = redis::cmd("GET")
        .arg(&theirs)
        .query_async::<Option<String>>(&mut app)
        .await
        .unwrap_err();
    assert!(refused.to_string().to_uppercase().contains("NOPERM"), "{refused}");
    let other_url = secret_data(&cluster, &ns, "other-db").await["REDIS_URL"].clone();
    let mut reader = redis_app(&other_url).await;
    let written = redis::cmd("SET")
        .arg(&theirs)
        .arg("x")
        .query_async::<()>(&mut reader)
        .await
        .unwrap_err();
    assert!(
        written.to_string().to_uppercase().contains("NOPERM"),
        "readOnly: {written}"
    );

    // Removed behind tenantdb's back: back on the next resync, with the
    // password the Secret holds.
    let mut admin = redis_admin(&redis).await;
    let user = format!("tdb.{ns}.acme");
    let _: i64 = redis::cmd("ACL")
        .arg("DELUSER")
        .arg(&user)
        .query_async(&mut admin)
        .await
        .unwrap();
    support::wait_until("the user is set again", async || {
        tenant_users(&mut admin).await.contains(&user)
    })
    .await;
    let mut again = redis_app(&url).await;
    let got: String = redis::cmd("GET")
        .arg(&mine)
        .query_async(&mut again)
        .await
        .unwrap();
    assert_eq!(got, "alice");
    assert_eq!(
        secret_data(&cluster, &ns, "acme-db").await["REDIS_URL"],
        url,
        "same password"
    );

    // The cache health monitor logs in as each tenant: status says so.
    let cache_health = |t: &TenantDatabase| {
        let cache = t.status.as_ref()?.cache.clone()?;
        Some((cache.reachable?, cache.latency_ms.is_some(), cache.message))
    };
    let healthy = wait_for(&cluster, &ns, "acme", "a cache login", |t| {
        cache_health(t).is_some_and(|(reachable, latency, _)| reachable && latency)
    })
    .await;
    assert!(healthy.status.unwrap().cache.unwrap().checked_at.is_some());

    // Redis down: the tenant's cache is unreachable, and says why. Then it
    // comes back without an ACL file: every tenant user is gone, and set
    // again (same password) once the operator sees the new run_id.
    drop((app, again, admin));
    redis.kill();
    let down = wait_for(&cluster, &ns, "acme", "its cache unreachable", |t| {
        cache_health(t).is_some_and(|(reachable, ..)| !reachable)
    })
    .await;
    let message = down.status.unwrap().cache.unwrap().message.unwrap_or_default();
    assert!(message.contains("does not answer"), "{message}");
    redis.restart().unwrap();
    let mut admin = redis_admin(&redis).await;
    support::wait_until("the users are set again after a restart", async || {
        tenant_users(&mut admin).await.len() == 2
    })
    .await;
    let mut after_restart = redis_app(&url).await;
    let pong: String = redis::cmd("PING").query_async(&mut after_restart).await.unwrap();
    assert_eq!(pong, "PONG");
    wait_for(&cluster, &ns, "acme", "its cache reachable again", |t| {
        cache_health(t).is_some_and(|(reachable, ..)| reachable)
    })
    .await;

    // Deleted with deletionPolicy Delete: the user and exactly its keys go
    // (SCAN and UNLINK in batches); the other tenant's keys stay.
    let mut pipe = redis::pipe();
    for i in 0..3_000 {
        pipe.cmd("SET").arg(format!("{ns}:acme:k{i}")).arg(i).ignore();
        pipe.cmd("SET").arg(format!("{ns}:other:k{i}")).arg(i).ignore();
    }
    let () = pipe.query_async(&mut admin).await.unwrap();
    let api: Api<TenantDatabase> = Api::namespaced(cluster.client.clone(), &ns);
    api.delete("acme", &DeleteParams::default()).await.unwrap();
    wait_gone(&api, "acme").await;
    wait_event(&cluster, &ns, "acme", "CacheRemoved").await;
    assert!(
        !tenant_users(&mut admin).await.contains(&user),
        "the user is gone"
    );
    assert_eq!(keys_under(&mut admin, &format!("{ns}:acme:")).await, 0);
    assert_eq!(keys_under(&mut admin, &format!("{ns}:other:")).await, 3_000);
    // With acme gone, greedy's prefix overlaps no one.
    wait_ready(&cluster, &ns, "greedy").await;
    operator.stop().await;
}

#[tokio::test]
async fn a_missing_server_or_a_namespace_the_server_refuses_stalls_the_tenant() {
    let cluster = TestCluster::start().await;
    let server = server_name("picky");
    add_server(&cluster, &server, support::admin().await).await;
    Api::<tenantdb::api::DatabaseServer>::all(cluster.client.clone())
        .patch(
            &server,
            &PatchParams::default(),
            &Patch::Merge(
                json!({"spec": {"allowedNamespaces": {"matchLabels": {"tenantdb.io/tenants": "allowed"}}}}),
            ),
        )
        .await
        .unwrap();
    let ns = cluster.namespace("picky").await;
    // The server's status writes are refused, so nothing the server does
    // can re-queue the refused tenant: only its namespace's labels can
    // (the resync is 300 s). Before the namespace was watched, nothing did.
    let refusal = StatusWritesRefused::create(
        &cluster,
        &format!("deny-status-{server}"),
        "databaseservers/status",
        &format!("object.metadata.name != '{server}'"),
    )
    .await;
    let servers = Api::<tenantdb::api::DatabaseServer>::all(cluster.client.clone());
    let deadline = Instant::now() + Duration::from_secs(30);
    while servers
        .patch_status(
            &server,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"databases": 0}})),
        )
        .await
        .is_ok()
    {
        assert!(
            Instant::now() < deadline,
            "the admission policy never took effect"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let operator = Operator::start(&cluster, Duration::from_secs(300));
    add_tenant(&cluster, &ns, "refused", json!({"server": server})).await;
    add_tenant(&cluster, &ns, "lost", json!({"server": "no-such-server"})).await;
    for (name, reason, words) in [
        (
            "refused",
            "NamespaceNotAllowed",
            "does not admit tenants from namespace",
        ),
        (
            "lost",
            "ServerNotFound",
            "DatabaseServer no-such-server not found",
        ),
    ] {
        let tenant = wait_for(&cluster, &ns, name, "Stalled", |t| {
            condition(t, "Stalled").is_some_and(|c| c.status == "True")
        })
        .await;
        let stalled = condition(&tenant, "Stalled").unwrap();
        assert_eq!(stalled.reason, reason);
        assert!(stalled.message.contains(words), "{}", stalled.message);
    }

    // Labelling the namespace is the change that un-stalls the first one.
    Api::<Namespace>::all(cluster.client.clone())
        .patch(
            &ns,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"tenantdb.io/tenants": "allowed"}}})),
        )
        .await
        .unwrap();
    wait_ready(&cluster, &ns, "refused").await;
    operator.stop().await;
    refusal.lift().await;
}

#[tokio::test]
async fn an_operator_watching_some_namespaces_leaves_the_others_alone() {
    let cluster = TestCluster::start().await;
    let server = server_name("scoped");
    add_server(&cluster, &server, support::admin().await).await;
    let (first, second, other) = (
        cluster.namespace("scoped-a").await,
        cluster.namespace("scoped-b").await,
        cluster.namespace("scoped-c").await,
    );
    let operator = Operator::start_in(
        &cluster,
        Duration::from_secs(300),
        vec![first.clone(), second.clone()],
    );
    for ns in [&first, &second, &other] {
        add_tenant(&cluster, ns, "acme", json!({"server": server})).await;
    }
    wait_ready(&cluster, &first, "acme").await;
    wait_ready(&cluster, &second, "acme").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let untouched = Api::<TenantDatabase>::namespaced(cluster.client.clone(), &other)
        .get("acme")
        .await
        .unwrap();
    assert_eq!(
        untouched.status,
        Some(tenantdb::api::TenantDatabaseStatus {
            observed_generation: Some(0),
            ..Default::default()
        }),
        "only the schema's default: never observed"
    );
    assert!(
        untouched.metadata.finalizers.is_none(),
        "no finalizer outside the watched namespaces"
    );
    assert!(!database_exists(&format!("{}_acme", other.replace('-', "_"))).await);
    operator.stop().await;
}

/// `name → indisvalid` of the indexes on `table` in `database`.
async fn indexes_in(database: &str, table: &str) -> BTreeMap<String, bool> {
    let mut conn = PgConnection::connect_with(&support::server_options().database(database))
        .await
        .unwrap();
    sqlx::query_as::<_, (String, bool)>(
        "SELECT c.relname::text, i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
          WHERE i.indrelid = to_regclass($1)",
    )
    .bind(table)
    .fetch_all(&mut conn)
    .await
    .unwrap()
    .into_iter()
    .collect()
}

fn index_phase(tenant: &TenantDatabase, name: &str) -> Option<(String, String)> {
    let index = tenant.status.as_ref()?.indexes.iter().find(|i| i.name == name)?;
    Some((
        format!("{:?}", index.phase),
        index.message.clone().unwrap_or_default(),
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn indexes_wait_for_their_table_and_heal_a_failed_build_with_per_index_status() {
    let cluster = TestCluster::start().await;
    let server = server_name("indexes");
    add_server(&cluster, &server, support::admin().await).await;
    let ns = cluster.namespace("indexes").await;
    // Pending indexes are looked at again on the resync.
    let operator = Operator::start(&cluster, Duration::from_secs(2));
    let api: Api<TenantDatabase> = Api::namespaced(cluster.client.clone(), &ns);
    let created = json!({"name": "orders_created", "table": "orders", "columns": ["created_at"]});
    add_tenant(
        &cluster,
        &ns,
        "shop",
        json!({"server": server, "indexes": [created]}),
    )
    .await;

    // The database is ready while the index waits for the app's migrations.
    let tenant = wait_for(&cluster, &ns, "shop", "a Pending index", |t| {
        index_phase(t, "orders_created").is_some()
    })
    .await;
    assert_eq!(condition(&tenant, "Ready").unwrap().status, "True");
    assert_eq!(
        index_phase(&tenant, "orders_created").unwrap(),
        ("Pending".into(), "table public.orders does not exist yet".into())
    );
    let indexes_ready = condition(&tenant, "IndexesReady").unwrap();
    assert_eq!(
        (indexes_ready.status.as_str(), indexes_ready.reason.as_str()),
        ("False", "Pending")
    );
    let database = tenant.status.unwrap().database_name.unwrap();

    let url = secret_data(&cluster, &ns, "shop-db").await["DATABASE_URL"].clone();
    let mut app = PgConnection::connect(&url).await.unwrap();
    sqlx::raw_sql(
        "CREATE TABLE orders (id serial, email text, total numeric, created_at timestamptz DEFAULT now());
         INSERT INTO orders (email, total) VALUES ('a@example.com', 1), ('b@example.com', 2), ('a@example.com', 3);
         CREATE INDEX orders_total_by_app ON orders (total);",
    )
    .execute(&mut app)
    .await
    .unwrap();
    let tenant = wait_for(&cluster, &ns, "shop", "the index Ready", |t| {
        condition(t, "IndexesReady").is_some_and(|c| c.status == "True")
    })
    .await;
    assert_eq!(index_phase(&tenant, "orders_created").unwrap().0, "Ready");
    assert!(
        indexes_in(&database, "orders").await["orders_created"],
        "orders_created is valid"
    );

    // A unique index over duplicate rows: the build fails, PostgreSQL keeps
    // an INVALID index, and status says so with PostgreSQL's reason.
    let email = json!({"name": "orders_email", "table": "orders", "columns": ["email"], "unique": true});
    api.patch(
        "shop",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"indexes": [created, email]}})),
    )
    .await
    .unwrap();
    let tenant = wait_for(&cluster, &ns, "shop", "an Invalid index", |t| {
        index_phase(t, "orders_email").is_some_and(|(phase, _)| phase == "Invalid")
    })
    .await;
    let (_, message) = index_phase(&tenant, "orders_email").unwrap();
    assert!(
        message.contains("could not create unique index \"orders_email\""),
        "{message}"
    );
    assert_eq!(condition(&tenant, "IndexesReady").unwrap().reason, "Invalid");
    assert_eq!(condition(&tenant, "Ready").unwrap().status, "True");
    assert!(
        !indexes_in(&database, "orders").await["orders_email"],
        "orders_email is invalid"
    );

    // Once the duplicate is gone, the next retry drops and rebuilds it.
    sqlx::query("DELETE FROM orders WHERE id = 3")
        .execute(&mut app)
        .await
        .unwrap();
    let tenant = wait_for(&cluster, &ns, "shop", "both indexes Ready", |t| {
        condition(t, "IndexesReady").is_some_and(|c| c.status == "True")
    })
    .await;
    assert_eq!(index_phase(&tenant, "orders_email").unwrap().0, "Ready");
    assert!(
        indexes_in(&database, "orders").await["orders_email"],
        "orders_email is valid"
    );

    // Removed from the spec: dropped; the app's own index stays.
    api.patch(
        "shop",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"indexes": [email]}})),
    )
    .await
    .unwrap();
    wait_for(&cluster, &ns, "shop", "orders_created dropped", |t| {
        t.status.as_ref().is_some_and(|s| s.indexes.len() == 1)
            && condition(t, "IndexesReady").is_some_and(|c| c.status == "True")
    })
    .await;
    let left = indexes_in(&database, "orders").await;
    assert_eq!(
        left.keys().map(String::as_str).collect::<Vec<_>>(),
        ["orders_email", "orders_total_by_app"]
    );

    // A hostile predicate is refused before anything runs.
    api.patch(
        "shop",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"indexes": [
            {"name": "evil", "table": "orders", "columns": ["id"], "where": "true; DROP TABLE orders"}
        ]}})),
    )
    .await
    .unwrap();
    let tenant = wait_for(&cluster, &ns, "shop", "Stalled on the bad spec", |t| {
        condition(t, "Stalled").is_some_and(|c| c.status == "True")
    })
    .await;
    let stalled = condition(&tenant, "Stalled").unwrap();
    assert_eq!(stalled.reason, "InvalidSpec");
    assert!(
        stalled.message.contains("spec.indexes[0].where"),
        "{}",
        stalled.message
    );
    assert_eq!(indexes_in(&database, "orders").await, left);
    app.close().await.unwrap();
    operator.stop().await;
}

/// Waits until two readings of the API server's write counters, two
/// seconds apart, agree: what a test's change set in motion (status
/// writes, Events) has settled before a quiet window is measured.
async fn wait_until_no_writes(cluster: &TestCluster) {
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut last = writes(&cluster.request_counts().await);
    loop {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let now = writes(&cluster.request_counts().await);
        if now == last {
            return;
        }
        assert!(Instant::now() < deadline, "writes never settled: {now:?}");
        last = now;
    }
}

/// Moves `server`'s tenant logins (a per-tenant rotation of their own) an
/// hour out, keeping the batched health query every second and making the
/// status heartbeat a second.
async fn push_logins_out(cluster: &TestCluster, server: &str) {
    Api::<tenantdb::api::DatabaseServer>::all(cluster.client.clone())
        .patch(
            server,
            &PatchParams::default(),
            // A status heartbeat of a second: a quiet tenant's status is
            // not rewritten however often it comes (only numbers that moved
            // would be), and every quiet window checks that.
            &Patch::Merge(json!({"spec": {"healthCheck": {
                "interval": "1s", "loginInterval": "1h", "statusHeartbeat": "1s"
            }}})),
        )
        .await
        .unwrap();
}

/// Health checks every second, logins every second: test speed.
fn quick_health() -> serde_json::Value {
    json!({"healthCheck": {"interval": "1s", "loginInterval": "1s", "loginsPerSecond": 100}})
}

fn healthy(tenant: &TenantDatabase) -> Option<bool> {
    condition(tenant, "Healthy").map(|c| c.status == "True")
}

fn phase(tenant: &TenantDatabase) -> Option<tenantdb::api::tenant_database::TenantPhase> {
    tenant.status.as_ref().and_then(|s| s.phase)
}

/// Opens `n` connections with `url`.
async fn open_connections(url: &str, n: usize) -> Vec<PgConnection> {
    let mut connections = Vec::new();
    for _ in 0..n {
        connections.push(PgConnection::connect(url).await.unwrap());
    }
    connections
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_use_shows_in_status_and_metrics_and_near_the_limit_degrades() {
    let cluster = TestCluster::start().await;
    let server = server_name("busy");
    add_server_with(&cluster, &server, support::admin().await, quick_health()).await;
    let ns = cluster.namespace("busy").await;
    let operator = Operator::start(&cluster, Duration::from_secs(300));
    add_tenant(
        &cluster,
        &ns,
        "acme",
        json!({"server": server, "pool": {"maxConnections": 8, "connectionLimit": 10}}),
    )
    .await;
    wait_for(&cluster, &ns, "acme", "Healthy", |t| healthy(t) == Some(true)).await;
    let url = secret_data(&cluster, &ns, "acme-db").await["DATABASE_URL"].clone();
    assert!(operator.get("/healthz").await.0.contains(" 200 "));
    let (line, body) = operator.get("/readyz").await;
    assert!(line.contains(" 200 "), "{line} {body}");

    // Five open connections: in status (a utilization bucket was crossed)…
    let mut five = open_connections(&url, 5).await;
    let tenant = wait_for(&cluster, &ns, "acme", "5 connections in status", |t| {
        t.status
            .as_ref()
            .and_then(|s| s.pool.as_ref())
            .is_some_and(|p| p.active_connections >= 5)
    })
    .await;
    let status = tenant.status.unwrap();
    let pool = status.pool.unwrap();
    assert_eq!(pool.connection_limit, 10);
    assert!(pool.utilization >= 50, "{pool:?}");
    assert_eq!(
        status.connections,
        Some(format!("{}/10", pool.active_connections))
    );
    let health = status.health.unwrap();
    assert!(health.reachable && health.checked_at.is_some() && health.size_bytes.is_some());
    assert!(health.latency_ms.is_some());

    // …and in /metrics, parsed as Prometheus text.
    let labels_match = |sample: &prometheus_parse::Sample| {
        sample.labels.get("namespace") == Some(ns.as_str()) && sample.labels.get("tenant") == Some("acme")
    };
    let value = |sample: &prometheus_parse::Sample| match sample.value {
        prometheus_parse::Value::Gauge(v)
        | prometheus_parse::Value::Untyped(v)
        | prometheus_parse::Value::Counter(v) => v,
        _ => f64::NAN,
    };
    let scrape = operator.scrape().await;
    let connections: f64 = scrape
        .samples
        .iter()
        .filter(|s| s.metric == "tenantdb_tenant_connections" && labels_match(s))
        .map(value)
        .sum();
    assert!(connections >= 5.0, "{connections}");
    for metric in [
        "tenantdb_tenant_connection_limit",
        "tenantdb_tenant_up",
        "tenantdb_tenant_latency_seconds",
        "tenantdb_tenant_database_size_bytes",
    ] {
        let sample = scrape
            .samples
            .iter()
            .find(|s| s.metric == metric && labels_match(s))
            .unwrap_or_else(|| panic!("{metric} for the tenant"));
        assert!(value(sample) > 0.0, "{metric}");
    }
    for metric in [
        "tenantdb_server_up",
        "tenantdb_server_connections",
        "tenantdb_server_max_connections",
    ] {
        let sample = scrape
            .samples
            .iter()
            .find(|s| s.metric == metric && s.labels.get("server") == Some(server.as_str()))
            .unwrap_or_else(|| panic!("{metric} for the server"));
        assert!(value(sample) > 0.0, "{metric}");
    }
    let names: Vec<&str> = scrape.samples.iter().map(|s| s.metric.as_str()).collect();
    for metric in [
        "tenantdb_reconcile_total",
        "tenantdb_reconcile_duration_seconds",
        "tenantdb_status_writes_total",
    ] {
        assert!(names.iter().any(|n| n.starts_with(metric)), "{metric}: {names:?}");
    }

    // Nine of ten: Degraded, with the reason; Ready stays True.
    let mut four = open_connections(&url, 4).await;
    let tenant = wait_for(&cluster, &ns, "acme", "Degraded", |t| {
        phase(t) == Some(tenantdb::api::tenant_database::TenantPhase::Degraded)
    })
    .await;
    let unhealthy = condition(&tenant, "Healthy").unwrap();
    assert_eq!(unhealthy.reason, "ConnectionsNearLimit");
    assert!(
        unhealthy.message.contains("90% or more of the limit of 10"),
        "{}",
        unhealthy.message
    );
    assert_eq!(condition(&tenant, "Ready").unwrap().status, "True");

    // Closing them: Ready again, by itself.
    for conn in four.drain(..).chain(five.drain(..)) {
        conn.close().await.unwrap();
    }
    let tenant = wait_for(&cluster, &ns, "acme", "Ready again", |t| {
        phase(t) == Some(tenantdb::api::tenant_database::TenantPhase::Ready) && healthy(t) == Some(true)
    })
    .await;
    assert!(tenant.status.unwrap().pool.unwrap().utilization < 90);
    wait_event(&cluster, &ns, "acme", "ConnectionsNearLimit").await;
    wait_event(&cluster, &ns, "acme", "Healthy").await;
    operator.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_server_makes_its_tenants_unhealthy_until_it_is_back() {
    let cluster = TestCluster::start().await;
    let (mut postgres, admin) = own_postgres("health_admin").await;
    let server = server_name("down");
    add_server_with(&cluster, &server, &admin, quick_health()).await;
    let ns = cluster.namespace("down").await;
    let operator = Operator::start(&cluster, Duration::from_secs(300));
    for name in ["a", "b", "c"] {
        add_tenant(&cluster, &ns, name, json!({"server": server})).await;
    }
    for name in ["a", "b", "c"] {
        wait_for(&cluster, &ns, name, "Healthy", |t| healthy(t) == Some(true)).await;
    }
    let servers: Api<tenantdb::api::DatabaseServer> = Api::all(cluster.client.clone());
    let server_ready = |s: &tenantdb::api::DatabaseServer| {
        s.status
            .as_ref()
            .and_then(|st| st.conditions.iter().find(|c| c.type_ == "Ready"))
            .map(|c| c.status == "True")
    };

    tokio::task::block_in_place(|| postgres.pause()).unwrap();
    for name in ["a", "b", "c"] {
        let tenant = wait_for(&cluster, &ns, name, "unhealthy", |t| {
            healthy(t) == Some(false)
                && phase(t) == Some(tenantdb::api::tenant_database::TenantPhase::Degraded)
        })
        .await;
        assert_eq!(condition(&tenant, "Healthy").unwrap().reason, "ServerUnreachable");
        assert!(!tenant.status.unwrap().health.unwrap().reachable);
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while server_ready(&servers.get(&server).await.unwrap()) != Some(false) {
        assert!(Instant::now() < deadline, "the server never turned not Ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    tokio::task::block_in_place(|| postgres.resume()).unwrap();
    for name in ["a", "b", "c"] {
        wait_for(&cluster, &ns, name, "healthy again", |t| {
            healthy(t) == Some(true) && phase(t) == Some(tenantdb::api::tenant_database::TenantPhase::Ready)
        })
        .await;
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while server_ready(&servers.get(&server).await.unwrap()) != Some(true) {
        assert!(Instant::now() < deadline, "the server never turned Ready again");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    operator.stop().await;
}

/// The race: the health query shared the admin pool (4 connections) with
/// provisioning, whose reconciles hold a connection while they wait for
/// their tenant's advisory lock. Here the locks of six new tenants are
/// held from outside, so their reconciles fill the pool for the 10 s lock
/// timeout; before the fix the health query got no connection within its
/// deadline and the server and its tenants turned unreachable. Now the
/// monitor has a connection of its own and the server stays up throughout.
/// Then the server stops: its tenant shows it within
/// two health intervals, where it used to wait for the admin pool's 30 s
/// acquire timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_checks_have_their_own_connection_and_an_outage_shows_within_two_intervals() {
    let cluster = TestCluster::start().await;
    let (mut postgres, admin) = own_postgres("burst_admin").await;
    let server = server_name("burst");
    // Logins far apart: the outage is for the batched health query to find
    // (a login failing first would say LoginFailed, also true).
    let interval = Duration::from_secs(3);
    add_server_with(
        &cluster,
        &server,
        &admin,
        json!({"healthCheck": {"interval": "3s", "loginInterval": "1h"}}),
    )
    .await;
    let ns = cluster.namespace("burst").await;
    let operator = Operator::start(&cluster, Duration::from_secs(300));
    add_tenant(&cluster, &ns, "steady", json!({"server": server})).await;
    wait_ready(&cluster, &ns, "steady").await;
    wait_for(&cluster, &ns, "steady", "Healthy", |t| healthy(t) == Some(true)).await;

    let mut locks = PgConnection::connect(&postgres.superuser_url()).await.unwrap();
    let prefix = ns.replace('-', "_");
    for i in 0..6 {
        sqlx::query("SELECT pg_advisory_lock(hashtextextended($1, 0))")
            .bind(format!("tenantdb:{prefix}_burst{i}"))
            .execute(&mut locks)
            .await
            .unwrap();
    }
    for i in 0..6 {
        add_tenant(&cluster, &ns, &format!("burst{i}"), json!({"server": server})).await;
    }
    let up = format!("tenantdb_server_up{{server=\"{server}\"}}");
    // Six reconciles waiting on their locks hold the admin pool for the
    // lock timeout (10 s); the server must look up all along.
    let until = Instant::now() + Duration::from_secs(12);
    let mut samples = 0;
    while Instant::now() < until {
        assert_eq!(
            operator.metric(&up).await,
            1.0,
            "the server looked down while provisioning held the admin pool"
        );
        samples += 1;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(samples > 20, "the window was sampled: {samples} samples");
    let steady = Api::<TenantDatabase>::namespaced(cluster.client.clone(), &ns)
        .get("steady")
        .await
        .unwrap();
    assert_eq!(healthy(&steady), Some(true), "{:#?}", steady.status);
    assert!(
        !event_reasons(&cluster, &ns, "steady")
            .await
            .contains(&"ServerUnreachable".to_owned()),
        "the tenant never turned unreachable"
    );
    locks.close().await.unwrap();
    for i in 0..6 {
        wait_ready(&cluster, &ns, &format!("burst{i}")).await;
    }

    tokio::task::block_in_place(|| postgres.pause()).unwrap();
    let stopped = Instant::now();
    let tenant = wait_for(&cluster, &ns, "steady", "unhealthy", |t| {
        healthy(t) == Some(false)
    })
    .await;
    let shown = stopped.elapsed();
    eprintln!("the outage showed in the tenant's status after {shown:?}");
    assert_eq!(condition(&tenant, "Healthy").unwrap().reason, "ServerUnreachable");
    // Two intervals, plus a second for the status write and this poll.
    assert!(
        shown <= interval * 2 + Duration::from_secs(1),
        "the outage showed after {shown:?}, health interval {interval:?}"
    );
    tokio::task::block_in_place(|| postgres.resume()).unwrap();
    wait_for(&cluster, &ns, "steady", "healthy again", |t| {
        healthy(t) == Some(true)
    })
    .await;
    operator.stop().await;
}

#[tokio::test]
async fn a_password_changed_behind_the_operators_back_is_caught_and_set_back() {
    let cluster = TestCluster::start().await;
    let server = server_name("pw");
    add_server_with(&cluster, &server, support::admin().await, quick_health()).await;
    let ns = cluster.namespace("pw").await;
    let operator = Operator::start(&cluster, Duration::from_secs(300));
    add_tenant(&cluster, &ns, "acme", json!({"server": server})).await;
    let tenant = wait_for(&cluster, &ns, "acme", "Healthy", |t| healthy(t) == Some(true)).await;
    let role = tenant.status.unwrap().role_name.unwrap();
    let url = secret_data(&cluster, &ns, "acme-db").await["DATABASE_URL"].clone();

    // The operator's GETs of Secrets, from the API server's audit log.
    let secret_reads = || {
        cluster
            .control_plane
            .as_ref()
            .map(|plane| plane.audited_requests().get("get secrets").copied().unwrap_or(0))
    };
    let reads_before = secret_reads();
    let mut superuser = support::connect().await;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "ALTER ROLE \"{role}\" PASSWORD 'changed-by-hand-0123456789'"
    )))
    .execute(&mut superuser)
    .await
    .unwrap();
    // The login check is refused, says so, and the password is set back.
    wait_event(&cluster, &ns, "acme", "LoginFailed").await;
    wait_event(&cluster, &ns, "acme", "PasswordRestored").await;
    // Setting a password overwrites credentials: the Secret it comes from
    // was read fresh from the API server, not from the cache (which another
    // replica's rotation may not have reached yet).
    if let (Some(before), Some(after)) = (reads_before, secret_reads()) {
        assert!(
            after > before,
            "the Secret was read fresh: {before} → {after} GETs"
        );
    }
    wait_for(&cluster, &ns, "acme", "Healthy again", |t| {
        healthy(t) == Some(true)
    })
    .await;
    PgConnection::connect(&url)
        .await
        .expect("the Secret's password works again");
    assert_eq!(
        secret_data(&cluster, &ns, "acme-db").await["DATABASE_URL"],
        url,
        "the Secret was not rotated"
    );
    // Neither password — the Secret's nor the one set by hand — shows in
    // the Events about the failed login and the restore, or in status.
    let password = secret_data(&cluster, &ns, "acme-db").await["PGPASSWORD"].clone();
    let events = Api::<k8s_openapi::api::events::v1::Event>::namespaced(cluster.client.clone(), &ns)
        .list(&Default::default())
        .await
        .unwrap()
        .items;
    assert!(events.len() >= 2, "{events:?}");
    let shown = serde_json::to_string(&events).unwrap()
        + &serde_json::to_string(
            &Api::<TenantDatabase>::namespaced(cluster.client.clone(), &ns)
                .get("acme")
                .await
                .unwrap()
                .status,
        )
        .unwrap();
    assert!(password.len() >= 32);
    for secret in [password.as_str(), "changed-by-hand-0123456789"] {
        assert!(!shown.contains(secret), "a password shows in Events or status");
    }
    operator.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_quiet_tenants_cost_one_query_per_interval_and_no_writes() {
    // Requests counted by the API server itself (its apiserver_request_total).
    let cluster = TestCluster::start().await;
    let (_postgres, admin) = own_postgres_with(
        "quiet_admin",
        &[
            "shared_preload_libraries=pg_stat_statements",
            "max_connections=400",
        ],
    )
    .await;
    let superuser_url = _postgres.superuser_url();
    let mut superuser = PgConnection::connect(&superuser_url).await.unwrap();
    sqlx::query("CREATE EXTENSION pg_stat_statements")
        .execute(&mut superuser)
        .await
        .unwrap();
    let server = server_name("fleet");
    add_server_with(
        &cluster,
        &server,
        &admin,
        json!({"healthCheck": {"interval": "1s", "loginInterval": "2s", "loginsPerSecond": 200}}),
    )
    .await;
    let ns = cluster.namespace("fleet").await;
    let operator = Operator::start(&cluster, Duration::from_secs(300));
    let tenants: Vec<String> = (0..200).map(|i| format!("t{i:03}")).collect();
    for name in &tenants {
        add_tenant(
            &cluster,
            &ns,
            name,
            json!({"server": server, "pool": {"maxConnections": 1}}),
        )
        .await;
    }
    let api: Api<TenantDatabase> = Api::namespaced(cluster.client.clone(), &ns);
    let deadline = Instant::now() + Duration::from_secs(240);
    loop {
        let all = api.list(&Default::default()).await.unwrap().items;
        let settled = all
            .iter()
            .filter(|t| {
                healthy(t) == Some(true)
                    && t.status
                        .as_ref()
                        .is_some_and(|s| s.health.as_ref().is_some_and(|h| h.latency_ms.is_some()))
            })
            .count();
        if settled == tenants.len() {
            break;
        }
        assert!(Instant::now() < deadline, "only {settled} of 200 tenants healthy");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // The logins (a per-tenant rotation of their own) are pushed far out,
    // so what is watched is the batched query alone: five intervals.
    push_logins_out(&cluster, &server).await;
    wait_until_no_writes(&cluster).await;
    let admin_oid: sqlx::postgres::types::Oid =
        sqlx::query_scalar("SELECT oid FROM pg_roles WHERE rolname = $1")
            .bind(&admin.user)
            .fetch_one(&mut superuser)
            .await
            .unwrap();
    // The API window encloses the SQL one (reading kube-apiserver's
    // /metrics takes a moment), which only makes "no writes" stricter.
    let before = cluster.request_counts().await;
    reset_statements(&mut superuser).await;
    let window = Instant::now();
    tokio::time::sleep(Duration::from_millis(5_500)).await;
    let statements: Vec<(String, i64)> =
        sqlx::query_as("SELECT query, calls FROM pg_stat_statements WHERE userid = $1 ORDER BY calls DESC")
            .bind(admin_oid)
            .fetch_all(&mut superuser)
            .await
            .unwrap();
    let after = cluster.request_counts().await;
    assert!(
        before
            .get("create tenantdatabases.tenantdb.io")
            .copied()
            .unwrap_or(0)
            >= 200,
        "the counts see this test's own 200 creates: {before:?}"
    );
    // The admin role ran one statement — the batched health query — once
    // per interval, for all 200 tenants.
    assert_eq!(statements.len(), 1, "{statements:#?}");
    assert!(
        statements[0].0.contains("pg_stat_activity"),
        "{}",
        statements[0].0
    );
    // At most once per interval (1 s) — a loaded machine may run it less
    // often, never more.
    let intervals = window.elapsed().as_secs_f64().ceil() as i64;
    assert!(
        (1..=intervals + 1).contains(&statements[0].1),
        "{statements:?} in {intervals} intervals"
    );
    assert_eq!(
        writes(&before),
        writes(&after),
        "no status writes while nothing changes"
    );
    operator.stop().await;
}

#[tokio::test]
async fn foreground_deletion_is_not_blocked_and_children_are_not_recreated() {
    // Argo CD prunes with foreground deletion: the API server keeps the
    // object (finalizer foregroundDeletion) while the garbage collector
    // deletes its children — here the connection Secret. The emulator has
    // no foreground deletion, so the test plays the collector.
    let cluster = TestCluster::start().await;
    let server = server_name("prune");
    add_server(&cluster, &server, support::admin().await).await;
    let ns = cluster.namespace("prune").await;
    let operator = Operator::start(&cluster, Duration::from_secs(1));
    add_tenant(&cluster, &ns, "acme", json!({"server": server})).await;
    let tenant = wait_ready(&cluster, &ns, "acme").await;
    let database = tenant.status.unwrap().database_name.unwrap();
    let api: Api<TenantDatabase> = Api::namespaced(cluster.client.clone(), &ns);
    let secrets: Api<Secret> = Api::namespaced(cluster.client.clone(), &ns);
    assert!(secrets.get_opt("acme-db").await.unwrap().is_some());

    if cluster.has_garbage_collector() {
        // A real API server and garbage collector: foreground deletion for
        // real. The collector deletes the Secret, then the TenantDatabase.
        api.delete("acme", &DeleteParams::foreground()).await.unwrap();
        wait_gone(&api, "acme").await;
        assert!(
            secrets.get_opt("acme-db").await.unwrap().is_none(),
            "the Secret outlived its TenantDatabase"
        );
        assert!(database_exists(&database).await, "Retain kept the data");
        operator.stop().await;
        return;
    }
    let mut finalizers = api
        .get("acme")
        .await
        .unwrap()
        .metadata
        .finalizers
        .unwrap_or_default();
    finalizers.push("foregroundDeletion".into());
    api.patch(
        "acme",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": finalizers}})),
    )
    .await
    .unwrap();
    api.delete("acme", &DeleteParams::default()).await.unwrap();
    // tenantdb lets go at once (Retain: nothing to drop)…
    wait_for(
        &cluster,
        &ns,
        "acme",
        "only the collector's finalizer left",
        |t| t.metadata.finalizers.as_deref() == Some(&["foregroundDeletion".to_owned()][..]),
    )
    .await;
    // …and does not bring back the child the collector deletes.
    secrets.delete("acme-db", &DeleteParams::default()).await.unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        secrets.get_opt("acme-db").await.unwrap().is_none(),
        "the Secret of a tenant being deleted was recreated"
    );
    api.patch(
        "acme",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": []}})),
    )
    .await
    .unwrap();
    wait_gone(&api, "acme").await;
    assert!(database_exists(&database).await, "Retain kept the data");
    operator.stop().await;
}

/// Sessions ever opened to `database` (PostgreSQL's own count).
async fn sessions_opened(database: &str) -> i64 {
    let mut conn = support::connect().await;
    sqlx::query_scalar("SELECT sessions FROM pg_stat_database WHERE datname = $1")
        .bind(database)
        .fetch_one(&mut conn)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_tenant_never_runs_code_as_the_operators_admin_role() {
    let cluster = TestCluster::start().await;
    let server = server_name("hostile");
    add_server_with(&cluster, &server, support::admin().await, quick_health()).await;
    let ns = cluster.namespace("hostile").await;
    let operator = Operator::start(&cluster, Duration::from_secs(2));
    add_tenant(&cluster, &ns, "bank", json!({"server": server})).await;
    add_tenant(
        &cluster,
        &ns,
        "mallory",
        json!({"server": server, "extensions": ["pg_trgm"], "deletionPolicy": "Delete"}),
    )
    .await;
    let victim = wait_ready(&cluster, &ns, "bank").await.status.unwrap();
    let victim_role = victim.role_name.unwrap();
    let victim_url = secret_data(&cluster, &ns, "bank-db").await["DATABASE_URL"].clone();
    let status = wait_ready(&cluster, &ns, "mallory").await.status.unwrap();
    let (database, role) = (status.database_name.unwrap(), status.role_name.unwrap());
    let url = secret_data(&cluster, &ns, "mallory-db").await["DATABASE_URL"].clone();

    // The tenant plants its shadows and hostile settings with its Secret alone…
    let mut attacker = PgConnection::connect(&url).await.unwrap();
    let planted = support::hostile::plant(&mut attacker, &role, &database).await;
    drop(attacker);
    assert!(planted.functions >= 20 && planted.operators >= 20, "{planted:?}");
    let victim_before = support::hostile::role_fingerprint(&victim_role).await;
    let hostile_before = support::hostile::role_fingerprint(&role).await;
    // …then declares indexes over its hostile types and one more extension:
    // the operator reconciles, installs, probes, builds, resyncs and logs in
    // as the tenant every second.
    Api::<TenantDatabase>::namespaced(cluster.client.clone(), &ns)
        .patch(
            "mallory",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {
                "indexes": support::hostile::indexes(),
                "extensions": ["pg_trgm", "citext"],
            }})),
        )
        .await
        .unwrap();
    wait_for(&cluster, &ns, "mallory", "its indexes Ready", |t| {
        condition(t, "IndexesReady").is_some_and(|c| c.status == "True")
            && t.status.as_ref().and_then(|s| s.observed_generation) == t.metadata.generation
    })
    .await;
    let sessions = sessions_opened(&database).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    while sessions_opened(&database).await < sessions + 3 {
        assert!(
            Instant::now() < deadline,
            "the operator stopped opening sessions in the database"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let tenant = wait_ready(&cluster, &ns, "mallory").await;
    assert_eq!(healthy(&tenant), Some(true), "{:#?}", tenant.status);

    let mut inspector = support::hostile::inspector(&database).await;
    let (total, as_other) = support::hostile::runs(&mut inspector).await;
    assert!(total > 0, "no shadow ran: the test would prove nothing");
    assert_eq!(
        as_other,
        0,
        "{:?}",
        support::hostile::recorded(&mut inspector).await
    );
    support::hostile::assert_both_extensions_installed_apart(&mut inspector, &role).await;
    drop(inspector);
    assert_eq!(
        support::hostile::role_fingerprint(&victim_role).await,
        victim_before,
        "the other tenant's role changed"
    );
    assert_eq!(
        support::hostile::role_fingerprint(&role).await,
        hostile_before,
        "the hostile role gained something"
    );
    PgConnection::connect(&victim_url)
        .await
        .expect("the other tenant's Secret still works");

    // Deletion with Delete, although the tenant made its database a template.
    let mut attacker = PgConnection::connect_with(
        &url.parse::<sqlx::postgres::PgConnectOptions>()
            .unwrap()
            .database("postgres"),
    )
    .await
    .unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "ALTER DATABASE \"{database}\" IS_TEMPLATE true"
    )))
    .execute(&mut attacker)
    .await
    .unwrap();
    drop(attacker);
    let api: Api<TenantDatabase> = Api::namespaced(cluster.client.clone(), &ns);
    api.delete("mallory", &DeleteParams::default()).await.unwrap();
    wait_gone(&api, "mallory").await;
    assert!(!database_exists(&database).await);
    operator.stop().await;
}

// Before each watch backed off on its own, one backoff shared by all of a
// controller's watches grew with every reconnect error and `410 Gone` to
// 18 s and more, no watch was polled meanwhile, and this test failed about
// one run in three (docs/testing.md).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_recovers_by_itself_when_kube_apiserver_is_killed_mid_rollout() {
    // A control plane of the test's own even under TENANTDB_E2E_KUBECONFIG:
    // the test kills its API server.
    let mut cluster = TestCluster::control_plane().await;
    let server = server_name("crash");
    add_server(&cluster, &server, support::admin().await).await;
    let ns = cluster.namespace("crash").await;
    let operator = Operator::start(&cluster, Duration::from_secs(300));
    for i in 0..4 {
        add_tenant(&cluster, &ns, &format!("before{i}"), json!({"server": server})).await;
    }
    // SIGKILL while the operator is provisioning those: no graceful close
    // of its watches, writes in flight fail.
    let plane = cluster.control_plane.as_mut().unwrap();
    tokio::task::block_in_place(|| plane.kill("kube-apiserver"));
    tokio::time::sleep(Duration::from_secs(2)).await;
    let plane = cluster.control_plane.as_mut().unwrap();
    tokio::task::block_in_place(|| plane.restart("kube-apiserver"));

    // Tenants created after the restart reach the operator only through a
    // watch it re-established by itself.
    for i in 0..4 {
        add_tenant(&cluster, &ns, &format!("after{i}"), json!({"server": server})).await;
    }
    for name in (0..4).flat_map(|i| [format!("before{i}"), format!("after{i}")]) {
        wait_ready(&cluster, &ns, &name).await;
        let secret = secret_data(&cluster, &ns, &format!("{name}-db")).await;
        PgConnection::connect(&secret["DATABASE_URL"])
            .await
            .unwrap_or_else(|e| panic!("{name}'s Secret works: {e}"));
    }
    assert!(
        !operator.task.is_finished(),
        "the operator kept running through the outage"
    );
    operator.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_that_falls_out_of_the_compaction_window_relists() {
    // No watch cache, and etcd compacted every 2 s: a watch resumed from a
    // revision older than that gets 410 Gone from etcd itself.
    let cluster =
        TestCluster::control_plane_with(&["--watch-cache=false", "--etcd-compaction-interval=2s"]).await;
    // The operator reaches kube-apiserver only through a link the test cuts.
    let (link, through_link) = operator_link(&cluster).await;
    let server = server_name("relist");
    add_server(&cluster, &server, support::admin().await).await;
    let ns = cluster.namespace("relist").await;
    let operator = Operator::start_as(through_link, Duration::from_secs(300), Vec::new());
    add_tenant(&cluster, &ns, "before", json!({"server": server})).await;
    wait_ready(&cluster, &ns, "before").await;

    // Partitioned: the operator's watches break and cannot reconnect.
    let api: Api<TenantDatabase> = Api::namespaced(cluster.client.clone(), &ns);
    let last_seen = api
        .list_metadata(&Default::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    link.cut();
    add_tenant(&cluster, &ns, "during", json!({"server": server})).await;
    // Until etcd has compacted past what the operator saw, a watch from
    // there still replays `during`; after, it is refused with 410.
    let deadline = Instant::now() + Duration::from_secs(60);
    for tick in 0.. {
        let mut events = api
            .watch(&kube::api::WatchParams::default().timeout(5), &last_seen)
            .await
            .unwrap()
            .boxed();
        use futures::StreamExt;
        match events.next().await {
            Some(Ok(kube::api::WatchEvent::Error(e))) if e.code == 410 => break,
            Some(Err(kube::Error::Api(e))) if e.code == 410 => break,
            other => {
                assert!(
                    Instant::now() < deadline,
                    "etcd never compacted past {last_seen}: {other:?}"
                );
                // New revisions for the compactor to move past.
                api.patch(
                    "before",
                    &PatchParams::default(),
                    &Patch::Merge(json!({"metadata": {"annotations": {"test/tick": tick.to_string()}}})),
                )
                .await
                .unwrap();
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
    let lists = |counts: &BTreeMap<String, u64>| {
        counts
            .get("list tenantdatabases.tenantdb.io")
            .copied()
            .unwrap_or(0)
    };
    let lists_before = lists(&cluster.request_counts().await);

    // Healed: the operator's watches resume from a compacted revision, are
    // told 410 Gone, list again — and find the tenant created meanwhile.
    link.heal();
    wait_ready(&cluster, &ns, "during").await;
    let lists_after = lists(&cluster.request_counts().await);
    assert!(
        lists_after > lists_before,
        "the tenant was found without a new list ({lists_before} → {lists_after}): the watch did not fall out of the window"
    );
    let secret = secret_data(&cluster, &ns, "during-db").await;
    PgConnection::connect(&secret["DATABASE_URL"])
        .await
        .expect("the tenant created during the partition works");
    operator.stop().await;
}

/// The tenants of `namespace` by the condition that settled them: the
/// server of each Ready one, the reason of each Stalled one.
async fn settled(cluster: &TestCluster, namespace: &str, count: usize) -> BTreeMap<String, String> {
    let api: Api<TenantDatabase> = Api::namespaced(cluster.client.clone(), namespace);
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let tenants = api.list(&Default::default()).await.unwrap().items;
        let outcomes: BTreeMap<String, String> = tenants
            .iter()
            .filter_map(|t| {
                let name = t.metadata.name.clone()?;
                if condition(t, "Ready").is_some_and(|c| c.status == "True") {
                    Some((name, t.status.as_ref()?.server.clone()?))
                } else {
                    let stalled = condition(t, "Stalled").filter(|c| c.status == "True")?;
                    Some((name, stalled.reason.clone()))
                }
            })
            .collect();
        if outcomes.len() == count {
            return outcomes;
        }
        assert!(
            Instant::now() < deadline,
            "{namespace}: only {} of {count} tenants settled: {outcomes:?}",
            outcomes.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The race: ten tenants without `spec.server`, created at once, are
/// reconciled eight at a time while the servers' `status.databases` (what
/// placement used to count) is seconds stale — before the fix all ten
/// landed on one server with room for three. Placement now counts under
/// one lock from the tenants recorded on each server plus its own
/// placements in flight.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_placements_never_fill_a_server_past_its_capacity() {
    let cluster = TestCluster::start().await;
    let admin = support::admin().await;
    let pool = format!("p{}", &tenantdb::password::generate()[..6].to_lowercase());
    let servers = [server_name("full-a"), server_name("full-b")];
    for server in &servers {
        add_server_with(&cluster, server, admin, json!({"capacity": {"maxDatabases": 3}})).await;
        Api::<tenantdb::api::DatabaseServer>::all(cluster.client.clone())
            .patch(
                server,
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"labels": {"tenantdb.io/pool": pool}}})),
            )
            .await
            .unwrap();
    }
    let ns = cluster.namespace("placed").await;
    let names: Vec<String> = (0..10).map(|i| format!("t{i}")).collect();
    // All ten exist before the operator starts, so its first reconciles
    // run together.
    for name in &names {
        add_tenant(
            &cluster,
            &ns,
            name,
            json!({"serverSelector": {"matchLabels": {"tenantdb.io/pool": pool}}}),
        )
        .await;
    }
    let operator = Operator::start(&cluster, Duration::from_secs(300));
    let outcomes = settled(&cluster, &ns, names.len()).await;
    let count = |what: &str| outcomes.values().filter(|v| *v == what).count();
    assert_eq!(count(&servers[0]), 3, "{outcomes:?}");
    assert_eq!(count(&servers[1]), 3, "{outcomes:?}");
    assert_eq!(count("NoServerAvailable"), 4, "{outcomes:?}");
    // Only the placed tenants have databases.
    let prefix = ns.replace('-', "_");
    for (name, outcome) in &outcomes {
        let exists = database_exists(&format!("{prefix}_{name}")).await;
        assert_eq!(exists, servers.contains(outcome), "{name}: {outcome}");
    }
    // A tenant naming a full server is refused too, and says so.
    add_tenant(&cluster, &ns, "named", json!({"server": servers[0]})).await;
    let refused = wait_for(&cluster, &ns, "named", "Stalled", |t| {
        condition(t, "Stalled").is_some_and(|c| c.status == "True")
    })
    .await;
    let stalled = condition(&refused, "Stalled").unwrap();
    assert_eq!(stalled.reason, "ServerFull", "{}", stalled.message);
    assert!(
        stalled.message.contains("3 placed, capacity.maxDatabases 3"),
        "{}",
        stalled.message
    );
    assert!(!database_exists(&format!("{prefix}_named")).await);
    operator.stop().await;
}

/// The race: the placement used to be recorded in the status write at the
/// end of the reconcile, after the SQL, so an operator that died or could
/// not write status in between left a database on a server the tenant was
/// not recorded on (and the next reconcile could place it elsewhere). An
/// admission policy makes the API server refuse this tenant's status
/// writes: before the fix the database was created anyway; now nothing
/// runs until the placement is recorded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_placement_is_recorded_before_any_sql_runs() {
    let cluster = TestCluster::start().await;
    let server = server_name("first");
    add_server(&cluster, &server, support::admin().await).await;
    let ns = cluster.namespace("first").await;
    add_tenant(&cluster, &ns, "acme", json!({"server": server})).await;
    let refusal = StatusWritesRefused::create(
        &cluster,
        &format!("deny-status-{ns}"),
        "tenantdatabases/status",
        &format!("object.metadata.namespace != '{ns}'"),
    )
    .await;
    // The policy is in force once the API server refuses a status write.
    let tenants: Api<TenantDatabase> = Api::namespaced(cluster.client.clone(), &ns);
    let deadline = Instant::now() + Duration::from_secs(30);
    while tenants
        .patch_status(
            "acme",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"phase": "Pending"}})),
        )
        .await
        .is_ok()
    {
        assert!(
            Instant::now() < deadline,
            "the admission policy never took effect"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let operator = Operator::start(&cluster, Duration::from_secs(300));
    // Two reconciles failed (each at its first status write, refused by
    // the API server).
    let failed = "tenantdb_reconcile_total{controller=\"tenantdatabase\",result=\"kube_api\"}";
    let deadline = Instant::now() + Duration::from_secs(30);
    while operator.metric(failed).await < 2.0 {
        assert!(Instant::now() < deadline, "the operator never tried");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let database = format!("{}_acme", ns.replace('-', "_"));
    assert!(
        !database_exists(&database).await,
        "a database was created before its placement was recorded"
    );

    // Once status can be written, the tenant is placed and provisioned.
    refusal.lift().await;
    let ready = wait_ready(&cluster, &ns, "acme").await;
    assert_eq!(ready.status.unwrap().server.as_deref(), Some(server.as_str()));
    assert!(database_exists(&database).await);
    operator.stop().await;
}

/// Every path out of the finalizer under `deletionPolicy: Delete` did what
/// the policy says or says why not. Before the fix a tenant whose spec
/// named another server, or whose namespace the server no longer admitted,
/// lost its finalizer with nothing dropped and no Event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deletion_drops_or_says_why_and_only_a_person_lets_data_go() {
    let cluster = TestCluster::start().await;
    let admin = support::admin().await;
    let server = server_name("exits");
    add_server_with(
        &cluster,
        &server,
        admin,
        json!({"allowedNamespaces": {"matchLabels": {"tenantdb.io/tenants": "yes"}}}),
    )
    .await;
    let ns = cluster.namespace("exits").await;
    let namespaces = Api::<Namespace>::all(cluster.client.clone());
    let label =
        |value: Option<&str>| Patch::Merge(json!({"metadata": {"labels": {"tenantdb.io/tenants": value}}}));
    namespaces
        .patch(&ns, &PatchParams::default(), &label(Some("yes")))
        .await
        .unwrap();
    Api::<tenantdb::api::DatabaseServer>::all(cluster.client.clone())
        .patch(
            &server,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"tenantdb.io/pool": "exits"}}})),
        )
        .await
        .unwrap();
    let operator = Operator::start(&cluster, Duration::from_secs(300));
    let delete = json!({"server": server, "deletionPolicy": "Delete"});
    for name in ["evicted", "orphaned"] {
        add_tenant(&cluster, &ns, name, delete.clone()).await;
    }
    // (`spec.server` cannot change once set; a tenant placed by selector
    // can be given another one.)
    add_tenant(
        &cluster,
        &ns,
        "moved",
        json!({"serverSelector": {"matchLabels": {"tenantdb.io/pool": "exits"}}, "deletionPolicy": "Delete"}),
    )
    .await;
    // Never placed: nothing to drop, and the Event says so.
    add_tenant(
        &cluster,
        &ns,
        "homeless",
        json!({"serverSelector": {"matchLabels": {"no": "such-server"}}, "deletionPolicy": "Delete"}),
    )
    .await;
    for name in ["moved", "evicted", "orphaned"] {
        wait_ready(&cluster, &ns, name).await;
    }
    wait_for(&cluster, &ns, "homeless", "Stalled", |t| {
        condition(t, "Stalled").is_some_and(|c| c.status == "True")
    })
    .await;
    let database = |name: &str| format!("{}_{name}", ns.replace('-', "_"));
    let api: Api<TenantDatabase> = Api::namespaced(cluster.client.clone(), &ns);

    // spec.server naming another server after placement: refused while
    // it lives, and its database is dropped on the server it is on.
    api.patch(
        "moved",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"server": "elsewhere"}})),
    )
    .await
    .unwrap();
    wait_for(&cluster, &ns, "moved", "ServerChanged", |t| {
        condition(t, "Stalled").is_some_and(|c| c.reason == "ServerChanged")
    })
    .await;
    api.delete("moved", &DeleteParams::default()).await.unwrap();
    wait_gone(&api, "moved").await;
    assert!(!database_exists(&database("moved")).await, "moved: dropped");
    wait_event(&cluster, &ns, "moved", "Deleted").await;

    // The namespace no longer admitted: its tenants' databases still go.
    namespaces
        .patch(&ns, &PatchParams::default(), &label(None))
        .await
        .unwrap();
    api.delete("evicted", &DeleteParams::default()).await.unwrap();
    wait_gone(&api, "evicted").await;
    assert!(!database_exists(&database("evicted")).await, "evicted: dropped");
    wait_event(&cluster, &ns, "evicted", "Deleted").await;

    api.delete("homeless", &DeleteParams::default()).await.unwrap();
    wait_gone(&api, "homeless").await;
    wait_event(&cluster, &ns, "homeless", "NothingToDelete").await;

    // The server is gone for good: the deletion waits, says why and how
    // to let go; the annotation lets go and leaves the data.
    Api::<tenantdb::api::DatabaseServer>::all(cluster.client.clone())
        .delete(&server, &DeleteParams::default())
        .await
        .unwrap();
    api.delete("orphaned", &DeleteParams::default()).await.unwrap();
    let blocked = wait_for(&cluster, &ns, "orphaned", "Deleting", |t| {
        t.status.as_ref().and_then(|s| s.phase) == Some(tenantdb::api::tenant_database::TenantPhase::Deleting)
    })
    .await;
    let message = &condition(&blocked, "Ready").unwrap().message;
    assert!(
        message.contains("not found") && message.contains("tenantdb.io/leave-data-on-delete=true"),
        "{message}"
    );
    wait_event(&cluster, &ns, "orphaned", "DeletionBlocked").await;
    assert!(
        api.get_opt("orphaned").await.unwrap().is_some(),
        "the finalizer holds"
    );
    api.patch(
        "orphaned",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"annotations": {"tenantdb.io/leave-data-on-delete": "true"}}})),
    )
    .await
    .unwrap();
    wait_gone(&api, "orphaned").await;
    wait_event(&cluster, &ns, "orphaned", "DataLeft").await;
    assert!(
        database_exists(&database("orphaned")).await,
        "the data was left, as asked"
    );
    operator.stop().await;
}

/// A tenant just provisioned is logged in to at once, not somewhere in the
/// login interval (an hour here), and until that login its `Healthy`
/// condition says no login was tried — never "the tenant login works"
/// without a latency to show for it. (First logins were spread over the
/// whole interval, and the condition claimed the login worked meanwhile.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_tenant_is_logged_in_to_at_once_and_says_so_until_then() {
    let cluster = TestCluster::start().await;
    let server = server_name("firstlogin");
    add_server_with(
        &cluster,
        &server,
        support::admin().await,
        json!({"healthCheck": {"interval": "2s", "loginInterval": "1h"}}),
    )
    .await;
    let ns = cluster.namespace("firstlogin").await;
    let _operator = Operator::start(&cluster, Duration::from_secs(300));
    add_tenant(&cluster, &ns, "acme", json!({"server": server})).await;
    let api: Api<TenantDatabase> = Api::namespaced(cluster.client.clone(), &ns);
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut seen = Vec::new();
    loop {
        let tenant = api.get("acme").await.unwrap();
        let latency = tenant
            .status
            .as_ref()
            .and_then(|s| s.health.as_ref())
            .and_then(|h| h.latency_ms);
        if let Some(healthy) = condition(&tenant, "Healthy") {
            seen.push((healthy.reason.clone(), latency));
            assert!(
                healthy.reason != "Healthy" || latency.is_some(),
                "Healthy says the login works with no login to show for it: {}",
                healthy.message
            );
            if healthy.reason == "LoginNotChecked" {
                assert!(
                    healthy
                        .message
                        .contains("no login as the tenant has been tried yet"),
                    "{}",
                    healthy.message
                );
            }
        }
        if latency.is_some() && condition(&tenant, "Healthy").is_some_and(|c| c.reason == "Healthy") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no login within 60 s of provisioning (login interval 1 h): {seen:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// tenantdb's Events are where people look: `kubectl describe tdb` lists
/// them under the resource, and `kubectl get events` shows them for it —
/// on the real API server, which serves events.k8s.io/v1 Events through
/// the core API that kubectl reads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_describe_shows_the_tenants_events() {
    let cluster = TestCluster::start().await;
    let server = server_name("describe");
    add_server(&cluster, &server, support::admin().await).await;
    let ns = cluster.namespace("describe").await;
    let _operator = Operator::start(&cluster, Duration::from_secs(300));
    add_tenant(&cluster, &ns, "acme", json!({"server": server})).await;
    wait_event(&cluster, &ns, "acme", "Provisioned").await;
    let described = cluster.kubectl(&["describe", "tdb", "acme", "-n", &ns]).await;
    let said = support::text(&described.stdout);
    assert!(
        described.status.success(),
        "{said}{}",
        support::text(&described.stderr)
    );
    let events = said
        .split("\nEvents:")
        .nth(1)
        .unwrap_or_else(|| panic!("no Events section:\n{said}"));
    assert!(
        events
            .lines()
            .any(|l| l.contains("Normal") && l.contains("Provisioned") && l.contains("tenantdb")),
        "kubectl describe does not list the Provisioned Event:\n{events}"
    );
    let listed = cluster
        .kubectl(&[
            "get",
            "events",
            "-n",
            &ns,
            "--field-selector",
            "involvedObject.name=acme",
        ])
        .await;
    let listed = support::text(&listed.stdout);
    assert!(
        listed.contains("Provisioned"),
        "kubectl get events does not show it:\n{listed}"
    );
}

/// A quiet resync reads each server's catalog once per resync period for
/// all its tenants: a server with 50 tenants sees the same statements as
/// one with 5 — the health query and one catalog snapshot per period — and
/// no tenant's own lock or look; the API server sees no writes, with a
/// status heartbeat of a second (`push_logins_out`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quiet_resync_costs_a_server_of_50_tenants_what_it_costs_one_of_5() {
    let cluster = TestCluster::start().await;
    let resync = Duration::from_secs(3);
    let mut servers = Vec::new();
    for (label, count) in [("few", 5), ("many", 50)] {
        let (postgres, admin, superuser) = own_counting_postgres(&format!("{label}_admin")).await;
        let name = server_name(label);
        add_server_with(&cluster, &name, &admin, quick_health()).await;
        servers.push((postgres, admin, superuser, name, count));
    }
    let ns = cluster.namespace("quiet").await;
    let operator = Operator::start(&cluster, resync);
    for (_, _, _, server, count) in &servers {
        for i in 0..*count {
            let name = format!("{server}-{i:02}");
            add_tenant(&cluster, &ns, &name, json!({"server": server})).await;
        }
    }
    let placed = settled(&cluster, &ns, 55).await;
    assert_eq!(
        placed.values().filter(|s| **s == servers[1].3).count(),
        50,
        "{placed:?}"
    );
    for (_, _, _, server, _) in &servers {
        push_logins_out(&cluster, server).await;
    }
    wait_until_no_writes(&cluster).await;

    let looks_before = operator
        .metric("tenantdb_tenant_looks_total{how=\"snapshot\"}")
        .await;
    let before = cluster.request_counts().await;
    for (_, _, superuser, _, _) in servers.iter_mut() {
        reset_statements(superuser).await;
    }
    // Four resync periods: every tenant comes due three or four times.
    let window = resync * 4;
    tokio::time::sleep(window).await;
    let mut seen = Vec::new();
    for (_, admin, superuser, _, count) in servers.iter_mut() {
        seen.push((*count, admin_statements(superuser, &admin.user).await));
    }
    let after = cluster.request_counts().await;
    let looks = operator
        .metric("tenantdb_tenant_looks_total{how=\"snapshot\"}")
        .await
        - looks_before;

    let snapshot_calls = |statements: &BTreeMap<String, i64>| -> i64 {
        statements
            .iter()
            .filter(|(query, _)| query.contains("unnest($1::text[], $2::text[], $3::text[])"))
            .map(|(_, calls)| calls)
            .sum()
    };
    for (count, statements) in &seen {
        // (Texts are matched on words pg_stat_statements keeps whether it
        // stored the statement with its constants or with `$n`.)
        // Only the health query, the server's own probe (for its status,
        // once a resync period) and the snapshot: no tenant lock, no
        // single-tenant look.
        let others: Vec<_> = statements
            .iter()
            .filter(|(query, _)| {
                !query.contains("pg_stat_activity")
                    && !query.contains("AS server_version_num")
                    && !query.contains("unnest($1::text[], $2::text[], $3::text[])")
            })
            .collect();
        assert!(others.is_empty(), "{count} tenants: {others:#?}");
        // One snapshot per period the window touches (a period none of the
        // server's tenants came due in has none).
        let calls = snapshot_calls(statements);
        assert!(
            (3..=5).contains(&calls),
            "{count} tenants: {calls} snapshots: {statements:#?}"
        );
    }
    let (few, many) = (snapshot_calls(&seen[0].1), snapshot_calls(&seen[1].1));
    assert!(
        few.abs_diff(many) <= 1,
        "5 tenants: {few} snapshots, 50 tenants: {many}"
    );
    // The 55 tenants were all looked at, over the snapshots.
    assert!(looks >= 55.0 * 2.0, "{looks} looks over the snapshot");
    assert_eq!(writes(&before), writes(&after), "no writes while nothing changes");
    operator.stop().await;
}

/// Sessions ever opened to the databases whose names start with `prefix`,
/// on the server behind `conn` (PostgreSQL's own count).
async fn sessions_under(conn: &mut PgConnection, prefix: &str) -> i64 {
    sqlx::query_scalar(
        "SELECT COALESCE(sum(sessions), 0)::bigint FROM pg_stat_database WHERE starts_with(datname, $1)",
    )
    .bind(prefix)
    .fetch_one(&mut *conn)
    .await
    .unwrap()
}

/// A login granted for a sample the server did not answer was not made,
/// so it stays due: a tenant whose Secret changed during an outage is
/// logged in to as soon as the server answers again, not a login interval
/// (here an hour) later.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_due_during_an_outage_is_made_when_the_server_answers() {
    let cluster = TestCluster::start().await;
    let (mut postgres, admin) = own_postgres_with("due_admin", &["log_connections=on"]).await;
    let server = server_name("due");
    add_server_with(
        &cluster,
        &server,
        &admin,
        json!({"healthCheck": {"interval": "1s", "loginInterval": "1h"}}),
    )
    .await;
    let ns = cluster.namespace("due").await;
    let operator = Operator::start(&cluster, Duration::from_secs(300));
    add_tenant(&cluster, &ns, "acme", json!({"server": server})).await;
    let status = wait_ready(&cluster, &ns, "acme").await.status.unwrap();
    // The monitor's logins as the tenant, from the server's log.
    let login = format!(
        "connection authorized: user={} database={} application_name=tenantdb-health",
        status.role_name.unwrap(),
        status.database_name.unwrap()
    );
    let log = postgres.log_file();
    let logins = || std::fs::read_to_string(&log).unwrap().matches(&login).count();
    support::wait_until("the first login as acme", async || logins() > 0).await;
    let before = logins();

    // The Secret changes (a new version) and the server stops answering
    // at once; the monitor finds the login due and the server silent.
    let secrets: Api<Secret> = Api::namespaced(cluster.client.clone(), &ns);
    secrets
        .patch(
            "acme-db",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {"example.com/rotated": "now"}}})),
        )
        .await
        .unwrap();
    tokio::task::block_in_place(|| postgres.pause()).unwrap();
    wait_for(&cluster, &ns, "acme", "Degraded", |t| {
        phase(t) == Some(tenantdb::api::tenant_database::TenantPhase::Degraded)
    })
    .await;
    tokio::task::block_in_place(|| postgres.resume()).unwrap();
    support::wait_until("acme logged in to again once the server answers", async || {
        logins() > before
    })
    .await;
    operator.stop().await;
}

/// The health monitor logs in as tenants within the server's budget
/// (`loginsPerSecond`) however many are due, says in the server's status
/// how long a rotation takes, and logs in at once as a tenant whose
/// Secret changed even when no login is due for an hour.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logins_keep_to_the_servers_budget_and_a_changed_secret_goes_first() {
    let cluster = TestCluster::start().await;
    let (postgres, admin) = own_postgres_with("budget_admin", &[]).await;
    let mut superuser = PgConnection::connect(&postgres.superuser_url()).await.unwrap();
    let server = server_name("budget");
    // Every tenant due every second; two logins a second allowed.
    add_server_with(
        &cluster,
        &server,
        &admin,
        json!({"healthCheck": {"interval": "1s", "loginInterval": "1s", "loginsPerSecond": 2}}),
    )
    .await;
    let ns = cluster.namespace("budget").await;
    let operator = Operator::start(&cluster, Duration::from_secs(300));
    for i in 0..20 {
        add_tenant(&cluster, &ns, &format!("t{i:02}"), json!({"server": server})).await;
    }
    settled(&cluster, &ns, 20).await;
    let servers: Api<tenantdb::api::DatabaseServer> = Api::all(cluster.client.clone());
    support::wait_until("a rotation of 20 tenants at 2 logins/s", async || {
        let status = servers.get(&server).await.unwrap().status;
        status.and_then(|s| s.login_rotation_seconds) == Some(10)
    })
    .await;

    let prefix = ns.replace('-', "_");
    let metric = format!("tenantdb_tenant_logins_total{{server=\"{server}\"}}");
    let (sessions_before, logins_before) = (
        sessions_under(&mut superuser, &prefix).await,
        operator.metric(&metric).await,
    );
    let window = Instant::now();
    tokio::time::sleep(Duration::from_secs(6)).await;
    let logins = operator.metric(&metric).await - logins_before;
    let elapsed = window.elapsed().as_secs_f64();
    let sessions = sessions_under(&mut superuser, &prefix).await - sessions_before;
    // 20 tenants due every second would be 120 logins; the budget allows
    // 2 a second, plus at most one interval's worth carried in.
    let allowed = (2.0 * (elapsed + 1.0)).ceil() + 2.0;
    assert!(
        logins >= 2.0 && logins <= allowed,
        "{logins} logins in {elapsed:.1} s"
    );
    assert!(
        (sessions as f64) <= allowed + 1.0,
        "{sessions} sessions opened to tenant databases in {elapsed:.1} s"
    );

    // No login due for an hour; then t07's Secret is deleted, and the
    // operator writes a new one (and sets its password on the role).
    servers
        .patch(
            &server,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"healthCheck": {"loginInterval": "1h"}}})),
        )
        .await
        .unwrap();
    let tenant = wait_ready(&cluster, &ns, "t07").await;
    let database = tenant.status.unwrap().database_name.unwrap();
    // The new policy is in force once no tenant is logged in to any more.
    let mut quiet_since = (sessions_under(&mut superuser, &prefix).await, Instant::now());
    while quiet_since.1.elapsed() < Duration::from_secs(3) {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = sessions_under(&mut superuser, &prefix).await;
        if now != quiet_since.0 {
            quiet_since = (now, Instant::now());
        }
        assert!(window.elapsed() < Duration::from_secs(90), "logins never stopped");
    }
    let before = sessions_under(&mut superuser, &database).await;
    let secrets: Api<Secret> = Api::namespaced(cluster.client.clone(), &ns);
    let old = secret_data(&cluster, &ns, "t07-db").await;
    secrets.delete("t07-db", &Default::default()).await.unwrap();
    support::wait_until("t07 logged in to with its new Secret", async || {
        sessions_under(&mut superuser, &database).await > before
    })
    .await;
    let new = secret_data(&cluster, &ns, "t07-db").await;
    assert!(old.contains_key("PGPASSWORD"));
    assert_ne!(old.get("PGPASSWORD"), new.get("PGPASSWORD"), "a new password");
    // Only t07 was logged in to.
    assert_eq!(
        sessions_under(&mut superuser, &prefix).await - quiet_since.0,
        sessions_under(&mut superuser, &database).await - before
    );
    operator.stop().await;
}
