//! Step one of the tenant pipeline ([`super::tenant`]): the tenant's
//! server — the one recorded in `status.server` ([`locate`]), else, for a
//! tenant not on a server yet, placement and admission: choose its server (`spec.server`, else the matching server with the most room
//! under `capacity.maxDatabases`) and record the choice in `status.server`
//! — written and confirmed by the API server before any SQL runs, so a
//! database is never created on a server the tenant is not recorded on.
//!
//! Room is counted under one lock, from one source: the tenants in the
//! operator's cache recorded on each server, plus the placements this
//! process made that the cache does not show yet. Concurrent reconciles
//! therefore cannot fill a server past its capacity.
//!
//! I/O: the Kubernetes API (one conditional status patch); everything else
//! — servers, tenants, Namespace labels — is read from the caches.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};
use kube::core::{Selector, SelectorExt};
use kube::runtime::reflector::ObjectRef;
use serde_json::json;

use super::{OperatorError, Stores};
use crate::api::{DatabaseServer, TenantDatabase};
use crate::status::Failure;

/// How long the placement write may take before the reconcile gives up
/// (and retries with backoff).
const WRITE_TIMEOUT: Duration = Duration::from_secs(15);

/// The placements this process wrote, by tenant key (`namespace/name`),
/// until the cache shows them; the lock every placement holds.
#[derive(Default)]
pub struct Placements(tokio::sync::Mutex<HashMap<String, String>>);

/// A permanent failure to report: waits for a change.
pub(super) fn refuse<T>(reason: &'static str, message: String) -> Result<Result<T, Failure>, OperatorError> {
    Ok(Err(Failure {
        reason,
        message,
        permanent: true,
    }))
}

/// The server `tenant` is on: the one recorded in `status.server` (which
/// `spec.server` may not contradict: a tenant is never moved), else the
/// one [`place`] chooses and records. The inner error is a failure to
/// report (no such server, none with room, …).
pub async fn locate(
    tenant: &TenantDatabase,
    client: &kube::Client,
    stores: &Stores,
    placements: &Placements,
) -> Result<Result<Arc<DatabaseServer>, Failure>, OperatorError> {
    let Some(placed) = tenant.status.as_ref().and_then(|s| s.server.clone()) else {
        return place(tenant, client, stores, placements).await;
    };
    if let Some(wanted) = &tenant.spec.server
        && *wanted != placed
    {
        return refuse(
            "ServerChanged",
            format!("the tenant is on DatabaseServer {placed}; moving it to {wanted} is not supported"),
        );
    }
    match stores.servers.get(&ObjectRef::new(&placed)) {
        Some(server) => Ok(Ok(server)),
        None => refuse("ServerNotFound", format!("DatabaseServer {placed} not found")),
    }
}

/// Places `tenant` (not on a server yet) and records the placement: the
/// server, or the failure to report (no server, none with room, or a
/// namespace no candidate admits).
pub async fn place(
    tenant: &TenantDatabase,
    client: &kube::Client,
    stores: &Stores,
    placements: &Placements,
) -> Result<Result<Arc<DatabaseServer>, Failure>, OperatorError> {
    let candidates: Vec<Arc<DatabaseServer>> = match &tenant.spec.server {
        Some(name) => match stores.servers.get(&ObjectRef::new(name)) {
            Some(server) => vec![server],
            None => return refuse("ServerNotFound", format!("DatabaseServer {name} not found")),
        },
        None => {
            let selector = match tenant.spec.server_selector.clone().map(Selector::try_from) {
                Some(Ok(selector)) => Some(selector),
                Some(Err(error)) => {
                    return refuse("InvalidSpec", format!("spec.serverSelector: {error}"));
                }
                None => None,
            };
            stores
                .servers
                .state()
                .into_iter()
                .filter(|s| selector.as_ref().is_none_or(|sel| sel.matches(s.labels())))
                .collect()
        }
    };
    let namespace = tenant.namespace().unwrap_or_default();
    let labels = stores.namespace_labels(&namespace);
    let admitted: Vec<Arc<DatabaseServer>> = candidates
        .iter()
        .filter(|s| admits(s, &labels))
        .cloned()
        .collect();
    if admitted.is_empty() {
        return match &tenant.spec.server {
            Some(name) => refuse(
                "NamespaceNotAllowed",
                format!(
                    "DatabaseServer {name} does not admit tenants from namespace {namespace} (spec.allowedNamespaces)"
                ),
            ),
            None => refuse(
                "NoServerAvailable",
                "no DatabaseServer matches spec.serverSelector and admits this namespace".into(),
            ),
        };
    }

    let key = format!("{namespace}/{}", tenant.name_any());
    let mut pending = placements.0.lock().await;
    let used = databases_by_server(stores, &mut pending, &key);
    let Some((_, server)) = admitted
        .into_iter()
        .map(|s| (room(&s, &used), s))
        .filter(|(room, _)| *room > 0)
        .max_by(|a, b| a.0.cmp(&b.0).then_with(|| b.1.name_any().cmp(&a.1.name_any())))
    else {
        return match &tenant.spec.server {
            Some(name) => refuse(
                "ServerFull",
                format!(
                    "DatabaseServer {name} has no room for another database: {} placed, capacity.maxDatabases {}",
                    used.get(name).copied().unwrap_or(0),
                    candidates[0]
                        .spec
                        .capacity
                        .as_ref()
                        .and_then(|c| c.max_databases)
                        .unwrap_or_default()
                ),
            ),
            None => refuse(
                "NoServerAvailable",
                "no DatabaseServer matches spec.serverSelector with room for another database".into(),
            ),
        };
    };
    let name = server.name_any();
    crate::kill_point!("placement.before_record");
    // Conditional on the tenant being as read: a second writer (another
    // replica, or a person) makes this fail instead of placing twice.
    let patch = json!({
        "metadata": {"resourceVersion": tenant.resource_version()},
        "status": {"server": name},
    });
    let api: Api<TenantDatabase> = Api::namespaced(client.clone(), &namespace);
    tokio::time::timeout(
        WRITE_TIMEOUT,
        api.patch_status(&tenant.name_any(), &PatchParams::default(), &Patch::Merge(&patch)),
    )
    .await
    .map_err(|_| OperatorError::Timeout {
        action: format!("recording the placement on {name}"),
        after: WRITE_TIMEOUT,
    })??;
    crate::kill_point!("placement.after_record");
    pending.insert(key, name);
    Ok(Ok(server))
}

/// Whether `server` admits tenants from a namespace with `labels`.
pub fn admits(server: &DatabaseServer, labels: &std::collections::BTreeMap<String, String>) -> bool {
    selector_admits(server.spec.allowed_namespaces.as_ref(), labels)
}

/// Whether an `allowedNamespaces` selector (none: every namespace) admits
/// a namespace with `labels`.
pub fn selector_admits(
    selector: Option<&k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector>,
    labels: &std::collections::BTreeMap<String, String>,
) -> bool {
    match selector {
        None => true,
        Some(selector) => Selector::try_from(selector.clone()).is_ok_and(|s| s.matches(labels)),
    }
}

/// Databases on each server: every cached tenant recorded there but
/// `except`, and every placement of this process the cache does not show
/// yet. Placements the cache shows (or whose tenant is gone) are dropped
/// from `pending`.
fn databases_by_server(
    stores: &Stores,
    pending: &mut HashMap<String, String>,
    except: &str,
) -> HashMap<String, i64> {
    let mut used: HashMap<String, i64> = HashMap::new();
    let mut seen: HashMap<String, bool> = HashMap::new();
    for tenant in stores.all_tenants() {
        let key = format!("{}/{}", tenant.namespace().unwrap_or_default(), tenant.name_any());
        let recorded = tenant.status.as_ref().and_then(|s| s.server.clone());
        seen.insert(key.clone(), recorded.is_some());
        if key == except {
            continue;
        }
        if let Some(server) = recorded {
            *used.entry(server).or_default() += 1;
        }
    }
    pending.retain(|key, _| seen.get(key) == Some(&false));
    for (key, server) in pending.iter() {
        if key != except {
            *used.entry(server.clone()).or_default() += 1;
        }
    }
    used
}

/// Room left on `server` for databases, given those `used`.
fn room(server: &DatabaseServer, used: &HashMap<String, i64>) -> i64 {
    let max = server.spec.capacity.as_ref().and_then(|c| c.max_databases);
    let used = used.get(&server.name_any()).copied().unwrap_or(0);
    max.map_or(i64::MAX, |max| i64::from(max) - used)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::runtime::reflector;
    use kube::runtime::watcher::Event;

    fn tenant(namespace: &str, name: &str, server: Option<&str>) -> TenantDatabase {
        serde_json::from_value(json!({
            "apiVersion": "tenantdb.io/v1alpha1", "kind": "TenantDatabase",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {},
            "status": server.map(|s| json!({"server": s})),
        }))
        .unwrap()
    }

    fn stores(tenants: Vec<TenantDatabase>) -> Stores {
        let (servers, _) = reflector::store::<DatabaseServer>();
        let (store, mut writer) = reflector::store::<TenantDatabase>();
        for tenant in tenants {
            writer.apply_watcher_event(&Event::Apply(tenant));
        }
        Stores {
            servers,
            tenants: vec![store],
            secrets: Vec::new(),
            namespaces: reflector::store().0,
            cache_servers: reflector::store().0,
        }
    }

    #[test]
    fn placements_the_cache_does_not_show_yet_count_until_it_does() {
        let stores = stores(vec![
            tenant("ns", "recorded", Some("a")),
            tenant("ns", "in-flight", None),
            tenant("ns", "unplaced", None),
            tenant("ns", "self", Some("a")),
        ]);
        let mut pending: HashMap<String, String> = [
            // Written, and now in the cache: counted once, from the cache.
            ("ns/recorded", "a"),
            // Written, not yet in the cache: counted from here.
            ("ns/in-flight", "a"),
            // Its tenant is gone.
            ("ns/deleted", "b"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let used = databases_by_server(&stores, &mut pending, "ns/self");
        assert_eq!(used.get("a"), Some(&2), "{used:?}");
        assert_eq!(used.get("b"), None, "{used:?}");
        assert_eq!(pending.keys().collect::<Vec<_>>(), ["ns/in-flight"]);
    }

    #[test]
    fn room_is_capacity_less_what_is_used_and_unlimited_without_one() {
        let server = |max: Option<i32>| -> DatabaseServer {
            serde_json::from_value(json!({
                "apiVersion": "tenantdb.io/v1alpha1", "kind": "DatabaseServer",
                "metadata": {"name": "a"},
                "spec": {"host": "h", "adminSecretRef": {"namespace": "x", "name": "y"},
                         "capacity": max.map(|m| json!({"maxDatabases": m}))}
            }))
            .unwrap()
        };
        let used: HashMap<String, i64> = [("a".to_owned(), 3)].into();
        assert_eq!(room(&server(Some(3)), &used), 0);
        assert_eq!(room(&server(Some(5)), &used), 2);
        assert_eq!(room(&server(None), &used), i64::MAX);
    }
}
