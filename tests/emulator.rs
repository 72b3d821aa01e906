//! The Kubernetes API emulator behaves like an API server where tenantdb
//! depends on it, proven through `kube::Api`, kube-runtime and the real
//! `kubectl` — not through its internals. Every contract runs on the
//! emulator and on a real kube-apiserver with the same assertions, which
//! keeps the emulator honest (see `on_both!`).

mod support;

use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams};
use kube::runtime::{Controller, controller::Action, watcher};
use serde_json::json;
use support::cluster::TestCluster;
use support::text;
use tenantdb::api::TenantDatabase;
use tenantdb_testkit::emulator::EmulatorOptions;

/// Each contract below runs twice: on the emulator, and on a real API
/// server (a control plane of the test's own, or the cluster of
/// `TENANTDB_E2E_KUBECONFIG`) — the same assertions, so the emulator cannot
/// drift from kube-apiserver where the other tests rely on it.
macro_rules! on_both {
    ($($name:ident),* $(,)?) => { $(
        mod $name {
            #[tokio::test]
            async fn on_the_emulator() {
                super::$name(super::TestCluster::emulated(Default::default()).await).await
            }
            #[tokio::test]
            async fn on_a_real_api_server() {
                super::$name(super::TestCluster::start().await).await
            }
        }
    )* };
}

on_both!(
    a_stale_update_conflicts_and_a_duplicate_create_is_refused,
    generation_moves_with_spec_and_status_is_a_separate_subresource,
    json_patch_and_server_side_apply_work,
    finalizers_hold_deletion_until_the_last_is_removed,
    deleting_an_owner_deletes_its_dependents,
    invalid_custom_resources_are_refused_with_the_validators_message,
    label_selectors_filter_lists_and_watches,
    deleting_a_namespace_deletes_its_objects_and_waits_for_their_finalizers,
    kubectl_applies_gets_patches_waits_and_deletes,
    kubectl_applies_the_examples,
    a_streaming_list_watcher_gets_the_current_objects_then_init_done,
    apply_conflicts_between_managers_are_refused_unless_forced,
);

fn config_map(name: &str, labels: serde_json::Value) -> ConfigMap {
    serde_json::from_value(json!({"metadata": {"name": name, "labels": labels}, "data": {"k": "v"}})).unwrap()
}

fn tenant(name: &str, spec: serde_json::Value) -> TenantDatabase {
    serde_json::from_value(json!({
        "apiVersion": "tenantdb.io/v1alpha1", "kind": "TenantDatabase",
        "metadata": {"name": name}, "spec": spec
    }))
    .unwrap()
}

fn error_code(error: &kube::Error) -> Option<u16> {
    match error {
        kube::Error::Api(status) => Some(status.code),
        _ => None,
    }
}

fn error_message(error: &kube::Error) -> String {
    match error {
        kube::Error::Api(status) => status.message.clone(),
        other => other.to_string(),
    }
}

async fn a_stale_update_conflicts_and_a_duplicate_create_is_refused(cluster: TestCluster) {
    let ns = cluster.namespace("conflict").await;
    let api: Api<ConfigMap> = Api::namespaced(cluster.client.clone(), &ns);
    let created = api
        .create(&PostParams::default(), &config_map("a", json!({})))
        .await
        .unwrap();
    let duplicate = api
        .create(&PostParams::default(), &config_map("a", json!({})))
        .await
        .unwrap_err();
    assert_eq!(error_code(&duplicate), Some(409));

    let mut fresh = api.get("a").await.unwrap();
    fresh.data = Some([("k".to_owned(), "new".to_owned())].into());
    let updated = api.replace("a", &PostParams::default(), &fresh).await.unwrap();
    assert_ne!(
        updated.metadata.resource_version,
        created.metadata.resource_version
    );

    let mut stale = created.clone();
    stale.data = Some([("k".to_owned(), "stale".to_owned())].into());
    let conflict = api
        .replace("a", &PostParams::default(), &stale)
        .await
        .unwrap_err();
    assert_eq!(error_code(&conflict), Some(409), "{conflict}");
    assert_eq!(api.get("a").await.unwrap().data.unwrap()["k"], "new");
    cluster.delete_namespace(&ns).await;
}

async fn generation_moves_with_spec_and_status_is_a_separate_subresource(cluster: TestCluster) {
    let ns = cluster.namespace("generation").await;
    let api: Api<TenantDatabase> = Api::namespaced(cluster.client.clone(), &ns);
    let created = api
        .create(&PostParams::default(), &tenant("acme", json!({"server": "pg"})))
        .await
        .unwrap();
    assert_eq!(created.metadata.generation, Some(1));
    // The schema's default: generation 1 not yet observed.
    assert_eq!(
        created.status,
        Some(tenantdb::api::TenantDatabaseStatus {
            observed_generation: Some(0),
            ..Default::default()
        })
    );

    let patched = api
        .patch(
            "acme",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"pool": {"maxConnections": 5}}})),
        )
        .await
        .unwrap();
    assert_eq!(patched.metadata.generation, Some(2));

    let status = api
        .patch_status(
            "acme",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"phase": "Ready"}, "spec": {"pool": {"maxConnections": 99}}})),
        )
        .await
        .unwrap();
    assert_eq!(
        status.metadata.generation,
        Some(2),
        "a status write does not bump generation"
    );
    assert_ne!(
        status.metadata.resource_version,
        patched.metadata.resource_version
    );
    assert_eq!(
        status.spec.pool.as_ref().unwrap().max_connections,
        Some(5),
        "a status write ignores spec"
    );

    let main = api
        .patch(
            "acme",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"phase": "Failed"}})),
        )
        .await
        .unwrap();
    assert_eq!(
        main.status.unwrap().phase,
        Some(tenantdb::api::tenant_database::TenantPhase::Ready),
        "a main-resource write ignores status"
    );
    assert_eq!(main.metadata.generation, Some(2));

    // A write that changes nothing is a no-op: same resourceVersion.
    let again = api
        .patch(
            "acme",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"pool": {"maxConnections": 5}}})),
        )
        .await
        .unwrap();
    assert_eq!(again.metadata.resource_version, main.metadata.resource_version);
    cluster.delete_namespace(&ns).await;
}

async fn json_patch_and_server_side_apply_work(cluster: TestCluster) {
    let ns = cluster.namespace("patch").await;
    let api: Api<ConfigMap> = Api::namespaced(cluster.client.clone(), &ns);
    let applied = api
        .patch(
            "cm",
            &PatchParams::apply("tests"),
            &Patch::Apply(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cm"}, "data": {"a": "1", "b": "2"}})),
        )
        .await
        .unwrap();
    assert_eq!(applied.data.as_ref().unwrap().len(), 2);
    // The same manager applying without `b` removes it.
    let reapplied = api
        .patch(
            "cm",
            &PatchParams::apply("tests"),
            &Patch::Apply(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cm"}, "data": {"a": "1"}})),
        )
        .await
        .unwrap();
    assert_eq!(reapplied.data.unwrap().keys().collect::<Vec<_>>(), ["a"]);
    let patch: json_patch::Patch =
        serde_json::from_value(json!([{"op": "add", "path": "/data/c", "value": "3"}])).unwrap();
    let patched = api
        .patch("cm", &PatchParams::default(), &Patch::<()>::Json(patch))
        .await
        .unwrap();
    assert_eq!(patched.data.unwrap()["c"], "3");
    cluster.delete_namespace(&ns).await;
}

async fn finalizers_hold_deletion_until_the_last_is_removed(cluster: TestCluster) {
    let ns = cluster.namespace("finalizers").await;
    let api: Api<ConfigMap> = Api::namespaced(cluster.client.clone(), &ns);
    let mut object = config_map("held", json!({}));
    object.metadata.finalizers = Some(vec!["tenantdb.io/cleanup".into(), "example.com/other".into()]);
    api.create(&PostParams::default(), &object).await.unwrap();

    api.delete("held", &DeleteParams::default()).await.unwrap();
    let marked = api.get("held").await.unwrap();
    assert!(marked.metadata.deletion_timestamp.is_some());

    api.patch(
        "held",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": ["example.com/other"]}})),
    )
    .await
    .unwrap();
    assert!(api.get("held").await.is_ok(), "one finalizer left");
    let adding = api
        .patch(
            "held",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"finalizers": ["example.com/other", "new/one"]}})),
        )
        .await
        .unwrap_err();
    assert_eq!(error_code(&adding), Some(422), "no new finalizers while deleting");

    api.patch(
        "held",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await
    .unwrap();
    assert_eq!(error_code(&api.get("held").await.unwrap_err()), Some(404));
    cluster.delete_namespace(&ns).await;
}

async fn deleting_an_owner_deletes_its_dependents(cluster: TestCluster) {
    let ns = cluster.namespace("gc").await;
    let tenants: Api<TenantDatabase> = Api::namespaced(cluster.client.clone(), &ns);
    let secrets: Api<Secret> = Api::namespaced(cluster.client.clone(), &ns);
    let owner = tenants
        .create(&PostParams::default(), &tenant("acme", json!({})))
        .await
        .unwrap();
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": "acme-db", "ownerReferences": [{
            "apiVersion": "tenantdb.io/v1alpha1", "kind": "TenantDatabase", "name": "acme",
            "uid": owner.metadata.uid, "controller": true
        }]},
        "stringData": {"PGPASSWORD": "x"}
    }))
    .unwrap();
    secrets.create(&PostParams::default(), &secret).await.unwrap();
    let unrelated: Secret = serde_json::from_value(json!({"metadata": {"name": "other"}})).unwrap();
    secrets.create(&PostParams::default(), &unrelated).await.unwrap();

    tenants.delete("acme", &DeleteParams::default()).await.unwrap();
    // The real garbage collector sees a just-installed CRD's objects only
    // after its next discovery sync (every 30 s): up to a minute.
    support::wait_until("the owned Secret is collected", async || {
        secrets.get_opt("acme-db").await.unwrap().is_none()
    })
    .await;
    assert!(
        secrets.get_opt("other").await.unwrap().is_some(),
        "an unowned Secret stays"
    );
    cluster.delete_namespace(&ns).await;
}

async fn invalid_custom_resources_are_refused_with_the_validators_message(cluster: TestCluster) {
    let ns = cluster.namespace("invalid").await;
    let api: Api<TenantDatabase> = Api::namespaced(cluster.client.clone(), &ns);
    for (spec, field) in [
        (json!({"pool": {"maxConnections": 0}}), "spec.pool.maxConnections"),
        (json!({"databaseName": "a".repeat(80)}), "spec.databaseName"),
        (
            json!({"pool": {"maxConnections": 5, "minConnections": 6}}),
            "minConnections must not exceed maxConnections",
        ),
    ] {
        let error = api
            .create(&PostParams::default(), &tenant("bad", spec.clone()))
            .await
            .unwrap_err();
        assert_eq!(error_code(&error), Some(422), "{spec}");
        assert!(
            error_message(&error).contains(field),
            "{spec}: {}",
            error_message(&error)
        );
    }
    api.create(
        &PostParams::default(),
        &tenant("acme", json!({"databaseName": "acme_db"})),
    )
    .await
    .unwrap();
    let error = api
        .patch(
            "acme",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"databaseName": "other_db"}})),
        )
        .await
        .unwrap_err();
    assert_eq!(error_code(&error), Some(422));
    assert!(
        error_message(&error).contains("databaseName is immutable once set"),
        "{}",
        error_message(&error)
    );
    cluster.delete_namespace(&ns).await;
}

async fn label_selectors_filter_lists_and_watches(cluster: TestCluster) {
    let ns = cluster.namespace("labels").await;
    let api: Api<ConfigMap> = Api::namespaced(cluster.client.clone(), &ns);
    let list = api.list(&ListParams::default()).await.unwrap();
    let mut stream = api
        .watch(
            &WatchParams::default().labels("tier=db").timeout(10),
            &list.metadata.resource_version.unwrap(),
        )
        .await
        .unwrap()
        .boxed();
    api.create(&PostParams::default(), &config_map("web", json!({"tier": "web"})))
        .await
        .unwrap();
    api.create(&PostParams::default(), &config_map("db", json!({"tier": "db"})))
        .await
        .unwrap();

    for selector in ["tier=db", "tier in (db,web),tier!=web"] {
        let names: Vec<String> = api
            .list(&ListParams::default().labels(selector))
            .await
            .unwrap()
            .items
            .into_iter()
            .map(|c| c.metadata.name.unwrap())
            .collect();
        assert_eq!(names, ["db"], "{selector}");
    }
    match stream.try_next().await.unwrap() {
        Some(WatchEvent::Added(cm)) => assert_eq!(cm.metadata.name.as_deref(), Some("db")),
        other => panic!("expected the db ConfigMap only, got {other:?}"),
    }
    cluster.delete_namespace(&ns).await;
}

#[tokio::test]
async fn a_watch_replays_from_a_resource_version_and_a_too_old_one_is_gone() {
    let cluster = TestCluster::emulated(EmulatorOptions {
        history_limit: 20,
        ..EmulatorOptions::default()
    })
    .await;
    let ns = cluster.namespace("watch").await;
    let api: Api<ConfigMap> = Api::namespaced(cluster.client.clone(), &ns);
    let start = api
        .create(&PostParams::default(), &config_map("a", json!({})))
        .await
        .unwrap();
    let start_version = start.metadata.resource_version.clone().unwrap();
    api.patch(
        "a",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"k": "2"}})),
    )
    .await
    .unwrap();
    api.create(&PostParams::default(), &config_map("b", json!({})))
        .await
        .unwrap();
    api.delete("a", &DeleteParams::default()).await.unwrap();

    let events: Vec<String> = api
        .watch(&WatchParams::default().timeout(1), &start_version)
        .await
        .unwrap()
        .take(3)
        .map(|e| match e.unwrap() {
            WatchEvent::Added(c) => format!("ADDED {}", c.metadata.name.unwrap()),
            WatchEvent::Modified(c) => format!("MODIFIED {}", c.metadata.name.unwrap()),
            WatchEvent::Deleted(c) => format!("DELETED {}", c.metadata.name.unwrap()),
            other => format!("{other:?}"),
        })
        .collect()
        .await;
    assert_eq!(events, ["MODIFIED a", "ADDED b", "DELETED a"]);

    for i in 0..30 {
        api.create(
            &PostParams::default(),
            &config_map(&format!("filler-{i}"), json!({})),
        )
        .await
        .unwrap();
    }
    let mut stream = api
        .watch(&WatchParams::default().timeout(5), &start_version)
        .await
        .unwrap()
        .boxed();
    match stream.next().await {
        Some(Ok(WatchEvent::Error(status))) => assert_eq!(status.code, 410),
        other => panic!("expected 410 Gone, got {other:?}"),
    }
}

#[tokio::test]
async fn watches_get_bookmarks() {
    let cluster = TestCluster::emulated(EmulatorOptions {
        bookmark_interval: Duration::from_millis(200),
        ..EmulatorOptions::default()
    })
    .await;
    let api: Api<ConfigMap> = Api::namespaced(cluster.client.clone(), "default");
    let version = api
        .list(&ListParams::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    let mut stream = api
        .watch(&WatchParams::default().timeout(5), &version)
        .await
        .unwrap()
        .boxed();
    match tokio::time::timeout(Duration::from_secs(3), stream.next()).await {
        Ok(Some(Ok(WatchEvent::Bookmark(bookmark)))) => {
            assert!(!bookmark.metadata.resource_version.is_empty())
        }
        other => panic!("expected a bookmark, got {other:?}"),
    }
}

async fn deleting_a_namespace_deletes_its_objects_and_waits_for_their_finalizers(cluster: TestCluster) {
    let ns = cluster.namespace("nsdelete").await;
    let maps: Api<ConfigMap> = Api::namespaced(cluster.client.clone(), &ns);
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(cluster.client.clone());
    maps.create(&PostParams::default(), &config_map("plain", json!({})))
        .await
        .unwrap();
    let mut held = config_map("held", json!({}));
    held.metadata.finalizers = Some(vec!["example.com/hold".into()]);
    maps.create(&PostParams::default(), &held).await.unwrap();

    namespaces.delete(&ns, &DeleteParams::default()).await.unwrap();
    // The namespace controller empties it in its own time.
    support::wait_until("the namespace's plain ConfigMap is deleted", async || {
        maps.get_opt("plain").await.unwrap().is_none()
    })
    .await;
    assert!(
        maps.get("held")
            .await
            .unwrap()
            .metadata
            .deletion_timestamp
            .is_some()
    );
    let terminating = namespaces.get(&ns).await.unwrap();
    assert_eq!(terminating.status.unwrap().phase.as_deref(), Some("Terminating"));
    let refused = maps
        .create(&PostParams::default(), &config_map("late", json!({})))
        .await
        .unwrap_err();
    assert_eq!(error_code(&refused), Some(403));

    maps.patch(
        "held",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await
    .unwrap();
    let mut gone = false;
    for _ in 0..100 {
        if namespaces.get_opt(&ns).await.unwrap().is_none() {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(gone, "the namespace goes when it is empty");
}

#[tokio::test]
async fn a_kube_runtime_controller_runs_without_errors_or_hot_loops() {
    let cluster = TestCluster::emulated(EmulatorOptions {
        bookmark_interval: Duration::from_millis(500),
        ..EmulatorOptions::default()
    })
    .await;
    let ns = cluster.namespace("controller").await;
    let api: Api<TenantDatabase> = Api::namespaced(cluster.client.clone(), &ns);
    for name in ["a", "b", "c"] {
        api.create(&PostParams::default(), &tenant(name, json!({})))
            .await
            .unwrap();
    }
    let reconciled = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    // Errors are recorded and asserted on below: a panic inside the spawned
    // controller would be lost when the task is aborted.
    let errors = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let seen = reconciled.clone();
    let (policy_errors, stream_errors) = (errors.clone(), errors.clone());
    let controller = Controller::new(api.clone(), watcher::Config::default())
        .run(
            move |object: std::sync::Arc<TenantDatabase>, _ctx: std::sync::Arc<()>| {
                let seen = seen.clone();
                async move {
                    seen.lock().unwrap().push(object.metadata.name.clone().unwrap());
                    Ok::<_, kube::Error>(Action::await_change())
                }
            },
            move |_, error, _| {
                policy_errors
                    .lock()
                    .unwrap()
                    .push(format!("reconcile failed: {error}"));
                Action::await_change()
            },
            std::sync::Arc::new(()),
        )
        .for_each(move |result| {
            if let Err(error) = result {
                stream_errors
                    .lock()
                    .unwrap()
                    .push(format!("controller error: {error}"));
            }
            async {}
        });
    let handle = tokio::spawn(controller);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = cluster.emulator.as_ref().unwrap().request_counts();
    tokio::time::sleep(Duration::from_secs(8)).await;
    let after = cluster.emulator.as_ref().unwrap().request_counts();
    assert!(!handle.is_finished(), "the controller stream ended early");
    handle.abort();
    assert_eq!(*errors.lock().unwrap(), Vec::<String>::new());

    let mut names = reconciled.lock().unwrap().clone();
    names.sort();
    assert_eq!(
        names,
        ["a", "b", "c"],
        "each object reconciled once, none again while idle"
    );
    let key = "tenantdatabases.tenantdb.io";
    let calls = |counts: &std::collections::BTreeMap<String, u64>, verb: &str| {
        counts.get(&format!("{verb} {key}")).copied().unwrap_or(0)
    };
    assert!(
        calls(&before, "list") >= 1 && calls(&before, "watch") >= 1,
        "{before:?}"
    );
    let idle_calls =
        calls(&after, "list") + calls(&after, "watch") - calls(&before, "list") - calls(&before, "watch");
    assert!(
        idle_calls <= 2,
        "8 idle seconds cost {idle_calls} list/watch calls: {after:?}"
    );
}

async fn kubectl_applies_gets_patches_waits_and_deletes(cluster: TestCluster) {
    let ns = cluster.namespace("kubectl").await;
    let dir = support::cluster::TempDir::new("kubectl");
    let manifest = dir.0.join("tenant.yaml");
    std::fs::write(
        &manifest,
        format!(
            "apiVersion: tenantdb.io/v1alpha1\nkind: TenantDatabase\nmetadata: {{name: acme, namespace: {ns}}}\n\
             spec: {{tenant: acme, server: pg-main, pool: {{maxConnections: 20, replicas: 3}}}}\n"
        ),
    )
    .unwrap();
    let ok = support::cluster::succeeded;

    let applied = ok(cluster
        .kubectl(&[
            "apply",
            "--server-side",
            "--validate=false",
            "-f",
            manifest.to_str().unwrap(),
        ])
        .await);
    assert!(
        applied.contains("tenantdatabase.tenantdb.io/acme serverside-applied"),
        "{applied}"
    );
    let listed = ok(cluster.kubectl(&["get", "tdb", "-A"]).await);
    assert!(
        listed.contains("TENANT") && listed.contains("CONNECTIONS") && listed.contains(&ns),
        "{listed}"
    );
    let yaml = ok(cluster
        .kubectl(&["get", "tdb", "acme", "-n", &ns, "-o", "yaml"])
        .await);
    assert!(
        yaml.contains("maxConnections: 20") && yaml.contains("deletionPolicy: Retain"),
        "{yaml}"
    );

    ok(cluster
        .kubectl(&[
            "patch",
            "tdb",
            "acme",
            "-n",
            &ns,
            "--type=merge",
            "-p",
            r#"{"spec":{"pool":{"maxConnections":25}}}"#,
        ])
        .await);
    let refused = cluster
        .kubectl(&[
            "patch",
            "tdb",
            "acme",
            "-n",
            &ns,
            "--type=merge",
            "-p",
            r#"{"spec":{"pool":{"maxConnections":0}}}"#,
        ])
        .await;
    assert!(!refused.status.success());
    assert!(
        text(&refused.stderr).contains("spec.pool.maxConnections"),
        "{}",
        text(&refused.stderr)
    );

    // `kubectl wait` returns once something sets the Ready condition.
    let api: Api<TenantDatabase> = Api::namespaced(cluster.client.clone(), &ns);
    let generation = api.get("acme").await.unwrap().metadata.generation;
    let setter = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(500)).await;
        api.patch_status(
            "acme",
            &PatchParams::default(),
            // As a controller writes it: for the generation it observed
            // (kubectl wait compares it with metadata.generation).
            &Patch::Merge(
                json!({"status": {"observedGeneration": generation, "conditions": [{
                    "type": "Ready", "status": "True", "reason": "Provisioned", "message": "",
                    "lastTransitionTime": "2026-01-01T00:00:00Z"
                }]}}),
            ),
        )
        .await
        .unwrap();
    });
    let waited = cluster
        .kubectl(&[
            "wait",
            "--for=condition=Ready",
            "tdb/acme",
            "-n",
            &ns,
            "--timeout=20s",
        ])
        .await;
    setter.await.unwrap();
    assert!(ok(waited).contains("condition met"));

    let deleted = ok(cluster.kubectl(&["delete", "tdb", "acme", "-n", &ns]).await);
    assert!(deleted.contains("deleted"), "{deleted}");
    let after = ok(cluster.kubectl(&["get", "tdb", "-n", &ns]).await);
    assert!(!after.contains("acme"), "{after}");
    cluster.delete_namespace(&ns).await;
}

async fn kubectl_applies_the_examples(cluster: TestCluster) {
    let dir = support::cluster::TempDir::new("examples");
    let namespaces = dir.0.join("namespaces.yaml");
    std::fs::write(
        &namespaces,
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: tenants}\n---\napiVersion: v1\nkind: Namespace\nmetadata: {name: tenantdb-system}\n",
    )
    .unwrap();
    for path in [namespaces.to_str().unwrap(), "examples/"] {
        let output = cluster
            .kubectl(&["apply", "--server-side", "--validate=false", "-f", path])
            .await;
        assert!(output.status.success(), "{}", text(&output.stderr));
    }
    let output = cluster
        .kubectl(&["get", "tdb", "-n", "tenants", "-o", "name"])
        .await;
    assert_eq!(
        text(&output.stdout).lines().collect::<Vec<_>>(),
        [
            "tenantdatabase.tenantdb.io/acme",
            "tenantdatabase.tenantdb.io/globex",
            "tenantdatabase.tenantdb.io/initech"
        ]
    );
    let output = cluster.kubectl(&["get", "dbs"]).await;
    assert!(
        text(&output.stdout).contains("pg-main"),
        "{}",
        text(&output.stdout)
    );
}

async fn a_streaming_list_watcher_gets_the_current_objects_then_init_done(cluster: TestCluster) {
    let ns = cluster.namespace("streaming").await;
    let api: Api<ConfigMap> = Api::namespaced(cluster.client.clone(), &ns);
    for name in ["x", "y"] {
        api.create(&PostParams::default(), &config_map(name, json!({})))
            .await
            .unwrap();
    }
    let mut stream = watcher(api, watcher::Config::default().streaming_lists()).boxed();
    let mut initial = Vec::new();
    let done = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(event) = stream.try_next().await.unwrap() {
            match event {
                watcher::Event::InitApply(cm) => initial.push(cm.metadata.name.unwrap()),
                watcher::Event::InitDone => return true,
                _ => {}
            }
        }
        false
    })
    .await;
    assert_eq!(done, Ok(true), "the end of the initial objects is marked");
    assert!(!initial.is_empty(), "the initial objects come before InitDone");
    // A real API server serves the initial events from its watch cache,
    // which may not hold an object created a moment before yet: then it
    // arrives right after, as an ordinary event.
    let caught_up = tokio::time::timeout(Duration::from_secs(30), async {
        while initial.len() < 2 {
            match stream.try_next().await.unwrap() {
                Some(watcher::Event::Apply(cm)) => initial.push(cm.metadata.name.unwrap()),
                Some(_) => {}
                None => return false,
            }
        }
        true
    })
    .await;
    assert_eq!(caught_up, Ok(true), "every object arrives: {initial:?}");
    initial.sort();
    assert_eq!(initial, ["x", "y"]);
    cluster.delete_namespace(&ns).await;
}

async fn apply_conflicts_between_managers_are_refused_unless_forced(cluster: TestCluster) {
    let ns = cluster.namespace("ssa").await;
    let api: Api<ConfigMap> = Api::namespaced(cluster.client.clone(), &ns);
    let apply = |value: &str| {
        Patch::Apply(
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cm"}, "data": {"k": value}}),
        )
    };
    api.patch("cm", &PatchParams::apply("first"), &apply("1"))
        .await
        .unwrap();
    let conflict = api
        .patch("cm", &PatchParams::apply("second"), &apply("2"))
        .await
        .unwrap_err();
    assert_eq!(error_code(&conflict), Some(409), "{conflict}");
    assert!(
        error_message(&conflict).contains("first"),
        "{}",
        error_message(&conflict)
    );
    // The same value is no conflict; force takes the field over.
    api.patch("cm", &PatchParams::apply("second"), &apply("1"))
        .await
        .unwrap();
    api.patch("cm", &PatchParams::apply("second").force(), &apply("2"))
        .await
        .unwrap();
    let now_first = api
        .patch("cm", &PatchParams::apply("first"), &apply("3"))
        .await
        .unwrap_err();
    assert_eq!(
        error_code(&now_first),
        Some(409),
        "the field moved to the forcing manager"
    );

    // An update by a third manager (no fieldManager: kube-apiserver names
    // it after the client, "unknown" here) takes the field over from both:
    // an apply that changes it now conflicts with the updater, and force
    // takes it back.
    api.patch(
        "cm",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"k": "4"}})),
    )
    .await
    .unwrap();
    let with_updater = api
        .patch("cm", &PatchParams::apply("second"), &apply("5"))
        .await
        .unwrap_err();
    assert_eq!(error_code(&with_updater), Some(409));
    assert!(
        error_message(&with_updater).contains("conflict with \"unknown\"")
            && error_message(&with_updater).contains(".data.k"),
        "{}",
        error_message(&with_updater)
    );
    api.patch("cm", &PatchParams::apply("first").force(), &apply("5"))
        .await
        .unwrap();

    // A resourceVersion in a merge patch is a precondition.
    let stale = api
        .patch(
            "cm",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"resourceVersion": "1"}, "data": {"k": "6"}})),
        )
        .await
        .unwrap_err();
    assert_eq!(error_code(&stale), Some(409));
    cluster.delete_namespace(&ns).await;
}
