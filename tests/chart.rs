//! Shipping: the Helm chart (linted, rendered, validated against the
//! Kubernetes schemas with real tools), its RBAC against what the operator
//! actually asks the API server for, the Argo CD health check run by a real
//! Lua interpreter, and the GitOps examples rendered by kustomize.

mod support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::{Value, json};
use support::cluster::TempDir;
use support::{succeeded, text};

const CHART: &str = "charts/tenantdb";

/// A tool `make deps` installs; a clear failure when it is missing.
fn tool(name: &str) -> PathBuf {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(name))
            .find(|path| path.is_file())
    });
    found.unwrap_or_else(|| panic!("{name} not found on PATH: run `make deps` (see the README)"))
}

fn run(program: &Path, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{}: {e}", program.display()))
}

/// Every YAML document of `text`, as JSON values (empty documents dropped).
fn documents(text: &str) -> Vec<Value> {
    serde_norway::Deserializer::from_str(text)
        .map(|document| serde::Deserialize::deserialize(document).unwrap())
        .filter(|value: &Value| !value.is_null())
        .collect()
}

/// `helm template` of the chart with `args`.
fn render(args: &[&str]) -> Vec<Value> {
    let mut all = vec!["template", "t", CHART, "--namespace", "tenantdb-system"];
    all.extend(args);
    documents(&succeeded("helm template", run(&tool("helm"), &all)))
}

/// Values with every optional feature on.
const EVERYTHING_ON: &str = r#"
replicas: 3
logFormat: text
watchNamespaces: [shop-a, shop-b]
metrics:
  port: 9090
  serviceMonitor: {enabled: true, interval: 15s, labels: {release: prometheus}}
networkPolicy:
  enabled: true
  metricsFrom: [{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: monitoring}}}]
  apiServerCIDRs: [10.0.0.1/32]
  postgresCIDRs: [10.20.0.0/16]
serviceAccount: {create: true, name: tenantdb-operator, annotations: {example.com/role: operator}}
podAnnotations: {example.com/scrape: "true"}
imagePullSecrets: [{name: registry}]
"#;

/// Validates `objects` with kubernetes-validate against Kubernetes 1.33's schemas.
fn kubernetes_validate(objects: &[Value]) {
    let dir = TempDir::new("validate");
    let file = dir.0.join("objects.yaml");
    let yaml: Vec<String> = objects
        .iter()
        .map(|o| serde_norway::to_string(o).unwrap())
        .collect();
    std::fs::write(&file, yaml.join("---\n")).unwrap();
    succeeded(
        "kubernetes-validate",
        run(
            &tool("kubernetes-validate"),
            &["--strict", "-k", "1.33.0", file.to_str().unwrap()],
        ),
    );
}

fn of_kind<'a>(objects: &'a [Value], kind: &str) -> Vec<&'a Value> {
    objects.iter().filter(|o| o["kind"] == kind).collect()
}

#[test]
fn the_chart_lints_and_renders_valid_objects_with_defaults_and_with_everything_on() {
    let dir = TempDir::new("values");
    let everything = dir.0.join("everything.yaml");
    std::fs::write(&everything, EVERYTHING_ON).unwrap();
    let everything = everything.to_str().unwrap();
    succeeded("helm lint", run(&tool("helm"), &["lint", "--strict", CHART]));
    succeeded(
        "helm lint with everything on",
        run(&tool("helm"), &["lint", "--strict", CHART, "-f", everything]),
    );

    let defaults = render(&[]);
    let all_on = render(&["-f", everything]);
    for objects in [&defaults, &all_on] {
        // The ServiceMonitor's schema is the Prometheus Operator's, not Kubernetes'.
        let core: Vec<Value> = objects
            .iter()
            .filter(|o| o["kind"] != "ServiceMonitor")
            .cloned()
            .collect();
        kubernetes_validate(&core);
    }

    // Defaults: two replicas with leader election, hardened, probed.
    let deployment = of_kind(&defaults, "Deployment")[0];
    assert_eq!(deployment["spec"]["replicas"], 2);
    let pod = &deployment["spec"]["template"]["spec"];
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(pod["securityContext"]["seccompProfile"]["type"], "RuntimeDefault");
    assert!(pod["terminationGracePeriodSeconds"].as_i64().unwrap() >= 30);
    let container = &pod["containers"][0];
    let security = &container["securityContext"];
    assert_eq!(security["readOnlyRootFilesystem"], true);
    assert_eq!(security["allowPrivilegeEscalation"], false);
    assert_eq!(security["capabilities"]["drop"], json!(["ALL"]));
    assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(container["image"], "ghcr.io/tenantdb/tenantdb:0.1.0");
    let args: Vec<&str> = container["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert!(
        args.contains(&"--log-format=json") && args.contains(&"--lease-name=t-tenantdb"),
        "{args:?}"
    );
    assert!(
        of_kind(&defaults, "ServiceMonitor").is_empty() && of_kind(&defaults, "NetworkPolicy").is_empty()
    );

    // Everything on: the options show up where they belong.
    assert_eq!(of_kind(&all_on, "ServiceMonitor").len(), 1);
    assert_eq!(of_kind(&all_on, "NetworkPolicy").len(), 1);
    let args = of_kind(&all_on, "Deployment")[0]["spec"]["template"]["spec"]["containers"][0]["args"].clone();
    for arg in [
        "--namespace=shop-a",
        "--namespace=shop-b",
        "--http-addr=0.0.0.0:9090",
        "--log-format=text",
    ] {
        assert!(args.as_array().unwrap().iter().any(|a| a == arg), "{arg}: {args}");
    }
    let role_namespaces: BTreeSet<&str> = of_kind(&all_on, "Role")
        .iter()
        .filter(|r| r["metadata"]["name"] == "t-tenantdb")
        .map(|r| r["metadata"]["namespace"].as_str().unwrap())
        .collect();
    assert_eq!(role_namespaces, BTreeSet::from(["shop-a", "shop-b"]));
    let cluster_role = of_kind(&all_on, "ClusterRole")[0];
    assert!(
        !cluster_role.to_string().contains("tenantdatabases"),
        "watching namespaces, tenant permissions are namespaced"
    );

    // Two unelected replicas would reconcile the same tenants: refused.
    let refused = run(
        &tool("helm"),
        &["template", "t", CHART, "--set", "leaderElection.enabled=false"],
    );
    assert!(!refused.status.success());
    assert!(text(&refused.stderr).contains("replicas > 1 needs leaderElection.enabled"));
}

#[test]
fn the_charts_crds_are_the_repositorys() {
    for entry in std::fs::read_dir("crds").unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            std::fs::read_to_string(Path::new(CHART).join("crds").join(name)).unwrap(),
            "{}: run `make crds`",
            name.to_string_lossy()
        );
    }
    assert_eq!(
        std::fs::read_dir(Path::new(CHART).join("crds")).unwrap().count(),
        std::fs::read_dir("crds").unwrap().count()
    );
    let chart = std::fs::read_to_string(Path::new(CHART).join("Chart.yaml")).unwrap();
    assert!(
        chart.contains(&format!("appVersion: \"{}\"", env!("CARGO_PKG_VERSION"))),
        "appVersion is the crate's version"
    );
}

#[test]
fn the_values_schema_refuses_bad_values_by_name() {
    for (set, field) in [
        ("replicas=two", "replicas"),
        ("logFormat=xml", "logFormat"),
        ("resync=often", "resync"),
        ("metrics.port=0", "port"),
        ("unknownKey=1", "unknownKey"),
    ] {
        let output = run(&tool("helm"), &["template", "t", CHART, "--set", set]);
        assert!(!output.status.success(), "{set} was accepted");
        let stderr = text(&output.stderr);
        assert!(
            stderr.contains("values don't meet the specifications of the schema") && stderr.contains(field),
            "{set}: {stderr}"
        );
    }
}

/// The chart's RBAC against what the operator asks for, on a real control
/// plane with the chart installed: the operator runs as the chart's
/// ServiceAccount (so a missing rule is a real 403), and the API server's
/// audit log of that identity says which rules it used.
mod rbac {
    use super::*;

    use support::wait_until;

    use k8s_openapi::api::core::v1::{Namespace, Secret};
    use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
    use support::cluster::TestCluster;
    use tenantdb::api::TenantDatabase;

    /// `(apiGroup, resource, verb)` of every rule in the rendered RBAC objects.
    fn granted(objects: &[Value]) -> BTreeSet<(String, String, String)> {
        let mut granted = BTreeSet::new();
        for role in objects
            .iter()
            .filter(|o| o["kind"] == "ClusterRole" || o["kind"] == "Role")
        {
            for rule in role["rules"].as_array().unwrap() {
                for group in rule["apiGroups"].as_array().unwrap() {
                    for resource in rule["resources"].as_array().unwrap() {
                        for verb in rule["verbs"].as_array().unwrap() {
                            let triple = (
                                group.as_str().unwrap().to_owned(),
                                resource.as_str().unwrap().to_owned(),
                                verb.as_str().unwrap().to_owned(),
                            );
                            assert!(
                                !triple.0.contains('*') && !triple.1.contains('*') && !triple.2.contains('*'),
                                "wildcard in {}: {rule}",
                                role["metadata"]["name"]
                            );
                            granted.insert(triple);
                        }
                    }
                }
            }
        }
        granted
    }

    /// Granted although no request of the operator's names them, and why.
    const NOT_SEEN_BUT_NEEDED: [(&str, &str, &str, &str); 2] = [
        (
            "tenantdb.io",
            "tenantdatabases/finalizers",
            "update",
            "the connection Secret's ownerReference sets blockOwnerDeletion, which the API server's OwnerReferencesPermissionEnforcement allows only with update on the owner's finalizers",
        ),
        (
            "",
            "secrets",
            "create",
            "a server-side apply that creates an object is authorized as create as well as patch",
        ),
    ];

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_chart_grants_exactly_what_the_operator_asks_for() {
        let granted = granted(&render(&[]));
        let cluster = TestCluster::control_plane().await;
        let plane = cluster.control_plane.as_ref().unwrap();

        // The operator as deployed: its own process, with leader election,
        // as the chart's ServiceAccount (the chart created tenantdb-system).
        let mut operator = tokio::process::Command::new(env!("CARGO_BIN_EXE_tenantdb"))
            .args(["run", "--kubeconfig"])
            .arg(&plane.operator_kubeconfig)
            .args(["--http-addr", "127.0.0.1:0", "--lease-duration", "3s"])
            .args(["--lease-namespace", "tenantdb-system", "--identity", "rbac"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap();

        // Everything a tenant's life touches: a server admitting namespaces by
        // label, its admin Secret, a tenant that is created, changed, becomes
        // healthy and is deleted with its database.
        let admin = support::admin().await;
        let client = cluster.client.clone();
        let ops = cluster.namespace("ops").await;
        let shop: Namespace = serde_json::from_value(
            json!({"metadata": {"name": "rbac-shop", "labels": {"tenantdb.io/tenants": "yes"}}}),
        )
        .unwrap();
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &shop)
            .await
            .unwrap();
        let secret: Secret = serde_json::from_value(json!({
            "metadata": {"name": "pg-admin"},
            "stringData": {"username": admin.user, "password": admin.password}
        }))
        .unwrap();
        Api::<Secret>::namespaced(client.clone(), &ops)
            .create(&PostParams::default(), &secret)
            .await
            .unwrap();
        let server = serde_json::from_value(json!({
            "apiVersion": "tenantdb.io/v1alpha1", "kind": "DatabaseServer",
            "metadata": {"name": "rbac-pg"},
            "spec": {"host": admin.host, "port": admin.port, "sslMode": "disable",
                     "adminSecretRef": {"namespace": ops, "name": "pg-admin"},
                     "allowedNamespaces": {"matchLabels": {"tenantdb.io/tenants": "yes"}},
                     "healthCheck": {"interval": "1s", "loginInterval": "1s", "loginsPerSecond": 100}}
        }))
        .unwrap();
        Api::<tenantdb::api::DatabaseServer>::all(client.clone())
            .create(&PostParams::default(), &server)
            .await
            .unwrap();
        let servers: Api<tenantdb::api::DatabaseServer> = Api::all(client.clone());
        wait_until("the server is Ready", async || {
            servers.get("rbac-pg").await.unwrap().status.is_some_and(|s| {
                s.conditions
                    .iter()
                    .any(|c| c.type_ == "Ready" && c.status == "True")
            })
        })
        .await;
        // A cache server, with its admin Secret beside the database's.
        let redis = tenantdb_testkit::throwaway_redis::ThrowawayRedis::start().unwrap();
        let redis_secret: Secret = serde_json::from_value(json!({
            "metadata": {"name": "redis-admin"},
            "stringData": {"username": "default",
                           "password": tenantdb_testkit::throwaway_redis::ADMIN_PASSWORD}
        }))
        .unwrap();
        Api::<Secret>::namespaced(client.clone(), &ops)
            .create(&PostParams::default(), &redis_secret)
            .await
            .unwrap();
        let cache = serde_json::from_value(json!({
            "apiVersion": "tenantdb.io/v1alpha1", "kind": "CacheServer",
            "metadata": {"name": "rbac-redis"},
            "spec": {"host": redis.host(), "port": redis.port(),
                     "adminSecretRef": {"namespace": ops, "name": "redis-admin"}}
        }))
        .unwrap();
        let caches: Api<tenantdb::api::CacheServer> = Api::all(client.clone());
        caches.create(&PostParams::default(), &cache).await.unwrap();
        wait_until("the cache server is Ready", async || {
            caches.get("rbac-redis").await.unwrap().status.is_some_and(|s| {
                s.conditions
                    .iter()
                    .any(|c| c.type_ == "Ready" && c.status == "True")
            })
        })
        .await;
        let tenants: Api<TenantDatabase> = Api::namespaced(client.clone(), "rbac-shop");
        let tenant = serde_json::from_value(json!({
            "apiVersion": "tenantdb.io/v1alpha1", "kind": "TenantDatabase",
            "metadata": {"name": "acme"},
            "spec": {"server": "rbac-pg", "deletionPolicy": "Delete", "databaseName": "rbac_shop_acme"}
        }))
        .unwrap();
        tenants.create(&PostParams::default(), &tenant).await.unwrap();
        let condition_true = |tenant: &TenantDatabase, kind: &str| {
            tenant
                .status
                .as_ref()
                .is_some_and(|s| s.conditions.iter().any(|c| c.type_ == kind && c.status == "True"))
        };
        wait_until("the tenant is Ready and Healthy", async || {
            let tenant = tenants.get("acme").await.unwrap();
            condition_true(&tenant, "Ready") && condition_true(&tenant, "Healthy")
        })
        .await;
        tenants
            .patch(
                "acme",
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"pool": {"maxConnections": 3}}})),
            )
            .await
            .unwrap();
        wait_until("the change is applied", async || {
            let tenant = tenants.get("acme").await.unwrap();
            tenant.status.as_ref().and_then(|s| s.observed_generation) == Some(2)
                && condition_true(&tenant, "Ready")
        })
        .await;
        tenants.delete("acme", &DeleteParams::default()).await.unwrap();
        wait_until("the tenant is gone", async || {
            tenants.get_opt("acme").await.unwrap().is_none()
        })
        .await;

        let _ = operator.kill().await;
        let used: BTreeSet<(String, String, String)> = plane
            .audited_requests()
            .keys()
            .map(|key| {
                let (verb, resource) = key.split_once(' ').unwrap();
                let (base, subresource) = resource
                    .split_once('/')
                    .map_or((resource, None), |(b, s)| (b, Some(s)));
                let (plural, group) = base.split_once('.').unwrap_or((base, ""));
                let resource = match subresource {
                    Some(sub) => format!("{plural}/{sub}"),
                    None => plural.to_owned(),
                };
                (group.to_owned(), resource, verb.to_owned())
            })
            .collect();
        assert!(used.len() >= 10, "the scenario exercised the operator: {used:?}");
        let missing: Vec<_> = used.difference(&granted).collect();
        assert!(
            missing.is_empty(),
            "the operator needs, and the chart does not grant: {missing:?}"
        );
        let exceptions: BTreeSet<(String, String, String)> = NOT_SEEN_BUT_NEEDED
            .iter()
            .map(|(g, r, v, _)| ((*g).to_owned(), (*r).to_owned(), (*v).to_owned()))
            .collect();
        let unused: Vec<_> = granted
            .difference(&used)
            .filter(|g| !exceptions.contains(*g))
            .collect();
        assert!(unused.is_empty(), "granted but never used: {unused:?}");
    }
}

/// `value` as a Lua table constructor.
fn lua(value: &Value) -> String {
    match value {
        Value::Null => "nil".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => format!("{s:?}"),
        Value::Array(items) => format!("{{{}}}", items.iter().map(lua).collect::<Vec<_>>().join(", ")),
        Value::Object(map) => format!(
            "{{{}}}",
            map.iter()
                .map(|(k, v)| format!("[{k:?}] = {}", lua(v)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

const HEALTH_LUA: &str = "examples/gitops/argocd/tenantdatabase-health.lua";

/// Runs the Argo CD health script on `object` with lua5.4: `(status, message)`.
fn argo_health(object: &Value) -> (String, String) {
    let program = format!(
        "obj = {}\nlocal hs = dofile({HEALTH_LUA:?})\nio.write(hs.status, '\\n', hs.message or '')",
        lua(object)
    );
    let output = succeeded("lua5.4", run(&tool("lua5.4"), &["-e", &program]));
    let (status, message) = output.split_once('\n').unwrap_or((&output, ""));
    (status.to_owned(), message.to_owned())
}

fn tenant_object(generation: i64, status: Value) -> Value {
    json!({"apiVersion": "tenantdb.io/v1alpha1", "kind": "TenantDatabase",
           "metadata": {"name": "acme", "namespace": "shop", "generation": generation},
           "spec": {}, "status": status})
}

fn condition(kind: &str, status: &str, reason: &str, message: &str, generation: i64) -> Value {
    json!({"type": kind, "status": status, "reason": reason, "message": message,
           "observedGeneration": generation, "lastTransitionTime": "2026-01-01T00:00:00Z"})
}

#[test]
fn the_argo_cd_health_check_follows_the_conditions() {
    let ready = condition("Ready", "True", "Provisioned", "the tenant database is ready", 2);
    let not_reconciling = condition("Reconciling", "False", "Converged", "", 2);
    let not_stalled = condition("Stalled", "False", "Converged", "", 2);
    for (object, expected, message) in [
        (
            json!({"apiVersion": "tenantdb.io/v1alpha1", "kind": "TenantDatabase", "metadata": {"name": "a", "generation": 1}, "spec": {}}),
            "Progressing",
            "Waiting for the operator",
        ),
        (
            tenant_object(
                3,
                json!({"observedGeneration": 2, "phase": "Ready", "conditions": [ready, not_reconciling, not_stalled]}),
            ),
            "Progressing",
            "The operator has not yet seen generation 3",
        ),
        (
            tenant_object(
                2,
                json!({"observedGeneration": 2, "phase": "Provisioning", "conditions": [
                condition("Ready", "False", "ServerUnavailable", "server pg: connection refused", 2),
                condition("Reconciling", "True", "ServerUnavailable", "server pg: connection refused", 2),
                not_stalled]}),
            ),
            "Progressing",
            "server pg: connection refused",
        ),
        (
            tenant_object(
                2,
                json!({"observedGeneration": 2, "phase": "Failed", "conditions": [
                condition("Ready", "False", "Conflict", "database acme belongs to shop/other", 2),
                condition("Reconciling", "False", "Conflict", "", 2),
                condition("Stalled", "True", "Conflict", "database acme belongs to shop/other", 2)]}),
            ),
            "Degraded",
            "database acme belongs to shop/other",
        ),
        (
            tenant_object(
                2,
                json!({"observedGeneration": 2, "phase": "Degraded", "conditions": [
                ready, not_reconciling, not_stalled,
                condition("Healthy", "False", "ConnectionsNearLimit", "connection use at 90% or more of the limit of 10 (threshold 90%)", 2)]}),
            ),
            "Degraded",
            "connection use at 90% or more of the limit of 10 (threshold 90%)",
        ),
        (
            tenant_object(
                2,
                json!({"observedGeneration": 2, "phase": "Ready", "conditions": [ready, not_reconciling, not_stalled]}),
            ),
            "Healthy",
            "the tenant database is ready",
        ),
    ] {
        assert_eq!(
            argo_health(&object),
            (expected.to_owned(), message.to_owned()),
            "{object}"
        );
    }
    let mut deleting = tenant_object(
        2,
        json!({"observedGeneration": 2, "phase": "Ready", "conditions": [ready]}),
    );
    deleting["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
    assert_eq!(argo_health(&deleting).0, "Progressing");
}

#[test]
fn the_argocd_cm_patch_carries_the_health_script_verbatim() {
    let patch = documents(&std::fs::read_to_string("examples/gitops/argocd/argocd-cm-patch.yaml").unwrap());
    let embedded = patch[0]["data"]["resource.customizations.health.tenantdb.io_TenantDatabase"]
        .as_str()
        .unwrap();
    assert_eq!(embedded, std::fs::read_to_string(HEALTH_LUA).unwrap());
}

#[test]
fn the_gitops_examples_render_to_valid_manifests_for_three_tiers() {
    let validator = tenantdb::manifest::SchemaValidator::new().unwrap();
    let mut pools = Vec::new();
    for (tenant, tier) in [("acme", "small"), ("initech", "medium"), ("globex", "large")] {
        let rendered = succeeded(
            "kubectl kustomize",
            run(
                &tool("kubectl"),
                &["kustomize", &format!("examples/gitops/tenants/{tenant}")],
            ),
        );
        let objects = documents(&rendered);
        let tenants = of_kind(&objects, "TenantDatabase");
        assert_eq!(tenants.len(), 1);
        if let Err(problems) = validator.validate(tenants[0], None) {
            panic!("{tenant}: {problems:?}");
        }
        assert_eq!(tenants[0]["metadata"]["namespace"], format!("tenant-{tenant}"));
        assert_eq!(tenants[0]["metadata"]["labels"]["tenantdb.io/tier"], tier);
        assert_eq!(tenants[0]["spec"]["tenant"], tenant);
        pools.push(tenants[0]["spec"]["pool"]["maxConnections"].as_i64().unwrap());
        // The application reads the connection Secret tenantdb writes for `app`.
        let deployment = of_kind(&objects, "Deployment")[0];
        assert_eq!(
            deployment["spec"]["template"]["spec"]["containers"][0]["envFrom"][0]["secretRef"]["name"],
            "app-db"
        );
        let others: Vec<Value> = objects
            .iter()
            .filter(|o| o["kind"] != "TenantDatabase")
            .cloned()
            .collect();
        kubernetes_validate(&others);
    }
    assert!(pools.windows(2).all(|w| w[0] < w[1]), "tiers grow: {pools:?}");
}
