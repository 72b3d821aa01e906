//! The HTTP face of the emulator: Kubernetes REST paths, discovery, list,
//! watch (streamed, with bookmarks and 410 Gone), server-side Table output
//! for `kubectl get`, Status errors, and per-verb request counts.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::resources::{PrinterColumn, ResourceType};
use super::selector::{FieldSelector, LabelSelector};
use super::store::{ApiError, PatchKind, Store, WatchEvent};

#[derive(Clone)]
pub struct App {
    pub store: Arc<Mutex<Store>>,
    pub counts: Arc<Mutex<BTreeMap<String, u64>>>,
    /// The same, per bearer token (`""` without one), to tell clients apart.
    pub counts_by_user: Arc<Mutex<BTreeMap<String, BTreeMap<String, u64>>>>,
    pub bookmark_interval: Duration,
}

impl App {
    fn store(&self) -> std::sync::MutexGuard<'_, Store> {
        // A panic while holding the lock is a bug in the emulator; keep serving.
        self.store.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn count(&self, user: &str, verb: &str, resource: &str) {
        let key = format!("{verb} {resource}");
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        *counts.entry(key.clone()).or_default() += 1;
        let mut by_user = self.counts_by_user.lock().unwrap_or_else(|p| p.into_inner());
        *by_user
            .entry(user.to_owned())
            .or_default()
            .entry(key)
            .or_default() += 1;
    }
}

pub async fn handle(
    State(app): State<App>,
    Query(query): Query<BTreeMap<String, String>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let segments: Vec<&str> = uri.path().split('/').filter(|s| !s.is_empty()).collect();
    let result = match segments.as_slice() {
        ["version"] => Ok(json_response(json!({
            "major": "1", "minor": "33", "gitVersion": "v1.33.0-tenantdb-emulator",
            "platform": "linux/amd64", "goVersion": "n/a", "compiler": "n/a",
        }))),
        ["healthz"] | ["readyz"] | ["livez"] => Ok((StatusCode::OK, "ok").into_response()),
        ["emulator", "requests"] => {
            let counts = app.counts.lock().unwrap_or_else(|p| p.into_inner()).clone();
            Ok(json_response(json!(counts)))
        }
        ["api"] => Ok(json_response(json!({
            "kind": "APIVersions", "versions": ["v1"],
            "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}],
        }))),
        ["apis"] => Ok(json_response(group_list(&app.store()))),
        ["api", version, rest @ ..] => {
            resource(&app, &method, "", version, rest, &query, &headers, &body).await
        }
        ["apis", group, version, rest @ ..] => {
            resource(&app, &method, group, version, rest, &query, &headers, &body).await
        }
        _ => Err(ApiError::new(
            404,
            "NotFound",
            format!(
                "the server could not find the requested resource ({})",
                uri.path()
            ),
        )),
    };
    result.unwrap_or_else(error_response)
}

fn json_response(value: Value) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], value.to_string()).into_response()
}

fn error_response(error: ApiError) -> Response {
    let status = StatusCode::from_u16(error.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        error.to_status().to_string(),
    )
        .into_response()
}

fn group_list(store: &Store) -> Value {
    let mut groups: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for rt in store.types().iter().filter(|t| !t.group.is_empty()) {
        let versions = groups.entry(rt.group.clone()).or_default();
        if !versions.contains(&rt.version) {
            versions.push(rt.version.clone());
        }
    }
    let groups: Vec<Value> = groups
        .into_iter()
        .map(|(name, versions)| {
            let entries: Vec<Value> = versions
                .iter()
                .map(|v| json!({"groupVersion": format!("{name}/{v}"), "version": v}))
                .collect();
            json!({"name": name, "versions": entries, "preferredVersion": entries[0]})
        })
        .collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

/// Where a request points inside one group/version.
struct Target {
    rt: ResourceType,
    namespace: Option<String>,
    name: Option<String>,
    subresource: Option<String>,
}

fn target(store: &Store, group: &str, version: &str, rest: &[&str]) -> Result<Target, ApiError> {
    let lookup = |plural: &str| {
        store.resource_type(group, version, plural).ok_or_else(|| {
            ApiError::new(
                404,
                "NotFound",
                format!("the server could not find the requested resource ({plural})"),
            )
        })
    };
    let owned = |s: &&str| s.to_string();
    let (plural, namespace, name, subresource) = match rest {
        ["namespaces", ns, plural, tail @ ..]
            if !(group.is_empty() && tail.is_empty() && matches!(*plural, "status" | "finalize")) =>
        {
            (
                *plural,
                Some(ns.to_string()),
                tail.first().map(owned),
                tail.get(1).map(owned),
            )
        }
        [plural, tail @ ..] => (*plural, None, tail.first().map(owned), tail.get(1).map(owned)),
        [] => return Err(ApiError::new(404, "NotFound", "no resource")),
    };
    let rt = lookup(plural)?;
    if namespace.is_some() && !rt.namespaced {
        return Err(ApiError::new(
            404,
            "NotFound",
            format!("{} is not namespaced", rt.qualified()),
        ));
    }
    if let Some(sub) = &subresource
        && !(sub == "status" && rt.status_subresource)
    {
        return Err(ApiError::new(
            404,
            "NotFound",
            format!("{} has no subresource {sub}", rt.qualified()),
        ));
    }
    Ok(Target {
        rt,
        namespace,
        name,
        subresource,
    })
}

#[allow(clippy::too_many_arguments)]
async fn resource(
    app: &App,
    method: &Method,
    group: &str,
    version: &str,
    rest: &[&str],
    query: &BTreeMap<String, String>,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<Response, ApiError> {
    if rest.is_empty() {
        let store = app.store();
        let resources: Vec<Value> = store
            .types()
            .iter()
            .filter(|t| t.group == group && t.version == version)
            .flat_map(ResourceType::discovery)
            .collect();
        if resources.is_empty() {
            return Err(ApiError::new(
                404,
                "NotFound",
                format!("{group}/{version} is not served"),
            ));
        }
        let group_version = if group.is_empty() {
            version.to_owned()
        } else {
            format!("{group}/{version}")
        };
        return Ok(json_response(
            json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version, "resources": resources}),
        ));
    }
    let Target {
        rt,
        namespace,
        name,
        subresource,
    } = target(&app.store(), group, version, rest)?;
    let user = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default()
        .to_owned();
    let namespace_str = namespace.clone().unwrap_or_default();
    let status = subresource.as_deref() == Some("status");
    let resource_label = match &subresource {
        Some(sub) => format!("{}/{sub}", rt.qualified()),
        None => rt.qualified(),
    };
    let labels = LabelSelector::parse(query.get("labelSelector").map_or("", String::as_str))
        .map_err(ApiError::bad_request)?;
    let fields = FieldSelector::parse(query.get("fieldSelector").map_or("", String::as_str))
        .map_err(ApiError::bad_request)?;
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let wants_table = accept.contains("as=Table");
    let metadata_only = accept.contains("as=PartialObjectMetadata");

    match (method.clone(), name) {
        (Method::GET, None) if query.get("watch").is_some_and(|w| w == "true" || w == "1") => {
            app.count(&user, "watch", &resource_label);
            let since = query
                .get("resourceVersion")
                .and_then(|v| v.parse::<u64>().ok())
                .filter(|v| *v > 0);
            let timeout = query
                .get("timeoutSeconds")
                .and_then(|t| t.parse::<u64>().ok())
                .unwrap_or(1800);
            let bookmarks = query.get("allowWatchBookmarks").is_some_and(|b| b == "true");
            // Streaming lists (sendInitialEvents) start from the current state.
            let initial_events = query.get("sendInitialEvents").is_some_and(|b| b == "true");
            let since = if initial_events { None } else { since };
            let options = WatchOptions {
                since,
                timeout: Duration::from_secs(timeout),
                bookmarks,
                initial_events_end: initial_events && bookmarks,
            };
            Ok(watch(app, rt, namespace, labels, fields, options, metadata_only))
        }
        (Method::GET, None) => {
            app.count(&user, "list", &resource_label);
            let store = app.store();
            let items = store.list(&rt, namespace.as_deref(), &labels, &fields);
            let resource_version = store.resource_version().to_string();
            drop(store);
            if wants_table {
                return Ok(json_response(table(&rt, &items, &resource_version)));
            }
            if metadata_only {
                return Ok(json_response(json!({
                    "kind": "PartialObjectMetadataList",
                    "apiVersion": "meta.k8s.io/v1",
                    "metadata": {"resourceVersion": resource_version},
                    "items": items.into_iter().map(partial_metadata).collect::<Vec<_>>(),
                })));
            }
            Ok(json_response(json!({
                "kind": format!("{}List", rt.kind),
                "apiVersion": rt.api_version(),
                "metadata": {"resourceVersion": resource_version},
                "items": items,
            })))
        }
        (Method::GET, Some(name)) => {
            app.count(&user, "get", &resource_label);
            let store = app.store();
            let object = store.get(&rt, &namespace_str, &name)?;
            if wants_table {
                return Ok(json_response(table(
                    &rt,
                    &[object],
                    &store.resource_version().to_string(),
                )));
            }
            Ok(json_response(object))
        }
        (Method::POST, None) => {
            app.count(&user, "create", &resource_label);
            let object = parse_body(body, headers)?;
            let created = app.store().create(&rt, &namespace_str, object)?;
            Ok((StatusCode::CREATED, json_response(created)).into_response())
        }
        (Method::PUT, Some(name)) => {
            app.count(&user, "update", &resource_label);
            let object = parse_body(body, headers)?;
            let manager = query.get("fieldManager").map(String::as_str);
            Ok(json_response(app.store().update(
                &rt,
                &namespace_str,
                &name,
                object,
                status,
                manager,
            )?))
        }
        (Method::PATCH, Some(name)) => {
            app.count(&user, "patch", &resource_label);
            let content_type = headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default();
            let kind = if content_type.starts_with("application/apply-patch") {
                PatchKind::Apply
            } else if content_type.starts_with("application/json-patch") {
                PatchKind::Json
            } else if content_type.starts_with("application/merge-patch")
                || content_type.starts_with("application/strategic-merge-patch")
            {
                // Strategic merge patch is served as a merge patch (see README).
                PatchKind::Merge
            } else {
                return Err(ApiError::new(
                    415,
                    "UnsupportedMediaType",
                    format!("the body of the request was in an unknown format: {content_type}"),
                ));
            };
            let patch = parse_body(body, headers)?;
            let manager = query.get("fieldManager").map(String::as_str);
            let force = query.get("force").is_some_and(|f| f == "true");
            Ok(json_response(app.store().patch(
                &rt,
                &namespace_str,
                &name,
                kind,
                patch,
                status,
                manager,
                force,
            )?))
        }
        (Method::DELETE, Some(name)) => {
            app.count(&user, "delete", &resource_label);
            Ok(json_response(app.store().delete(&rt, &namespace_str, &name)?))
        }
        (Method::DELETE, None) => {
            app.count(&user, "deletecollection", &resource_label);
            let mut store = app.store();
            let items = store.list(&rt, namespace.as_deref(), &labels, &fields);
            for item in &items {
                let ns = item
                    .pointer("/metadata/namespace")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                let name = item
                    .pointer("/metadata/name")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                store.delete(&rt, ns, name)?;
            }
            Ok(json_response(
                json!({"kind": format!("{}List", rt.kind), "apiVersion": rt.api_version(), "metadata": {}, "items": items}),
            ))
        }
        (method, _) => Err(ApiError::new(
            405,
            "MethodNotAllowed",
            format!("{method} is not supported here"),
        )),
    }
}

/// An object as `PartialObjectMetadata`, for metadata-only requests.
fn partial_metadata(object: Value) -> Value {
    json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": object["metadata"].clone()})
}

fn parse_body(body: &Bytes, headers: &HeaderMap) -> Result<Value, ApiError> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if content_type.contains("protobuf") {
        return Err(ApiError::new(
            415,
            "UnsupportedMediaType",
            "the emulator speaks JSON only",
        ));
    }
    if content_type.contains("yaml") {
        serde_norway::from_slice(body).map_err(|e| ApiError::bad_request(format!("invalid YAML body: {e}")))
    } else {
        serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))
    }
}

struct WatchOptions {
    /// Replay events after this version; `None` starts with the current objects.
    since: Option<u64>,
    timeout: Duration,
    bookmarks: bool,
    /// Mark the end of the initial objects with a bookmark (streaming lists).
    initial_events_end: bool,
}

/// A streamed watch: the backlog (or the current objects, for a watch from
/// "any" version), then live events, bookmarks when asked for, and an end
/// after `timeout` or when the client goes away.
fn watch(
    app: &App,
    rt: ResourceType,
    namespace: Option<String>,
    labels: LabelSelector,
    fields: FieldSelector,
    options: WatchOptions,
    metadata_only: bool,
) -> Response {
    let WatchOptions {
        since,
        timeout,
        bookmarks,
        initial_events_end,
    } = options;
    let matches = {
        let rt = rt.clone();
        let namespace = namespace.clone();
        move |event: &WatchEvent| {
            event.key.group == rt.group
                && event.key.plural == rt.plural
                && namespace.as_ref().is_none_or(|ns| &event.key.namespace == ns)
                && labels.matches(&event.object)
                && fields.matches(&event.object)
        }
    };
    let line = move |type_: &str, object: Value| {
        let object = if metadata_only && type_ != "BOOKMARK" && type_ != "ERROR" {
            partial_metadata(object)
        } else {
            object
        };
        Bytes::from(format!("{}\n", json!({"type": type_, "object": object})))
    };
    let (backlog, mut receiver, mut seen) = {
        let store = app.store();
        let receiver = store.subscribe();
        let current = store.resource_version();
        let backlog = match since {
            None => store
                .list(
                    &rt,
                    namespace.as_deref(),
                    &LabelSelector::default(),
                    &FieldSelector::default(),
                )
                .into_iter()
                .map(|o| (0, "ADDED", o))
                .filter(|(_, _, o)| {
                    // the same filter, on objects rather than events
                    let event = WatchEvent {
                        resource_version: 0,
                        type_: super::store::EventType::Added,
                        key: super::store::ObjectKey {
                            group: rt.group.clone(),
                            plural: rt.plural.clone(),
                            namespace: o
                                .pointer("/metadata/namespace")
                                .and_then(Value::as_str)
                                .unwrap_or_default()
                                .to_owned(),
                            name: String::new(),
                        },
                        object: o.clone(),
                    };
                    matches(&event)
                })
                .collect::<Vec<_>>(),
            Some(since) => match store.events_since(since) {
                Some(events) => events
                    .iter()
                    .filter(|e| matches(e))
                    .map(|e| {
                        (
                            e.resource_version,
                            e.type_.as_str(),
                            Store::present(&rt, e.object.clone()),
                        )
                    })
                    .collect(),
                None => {
                    let status = ApiError::new(
                        410,
                        "Expired",
                        format!("too old resource version: {since} ({current})"),
                    );
                    let body = line("ERROR", status.to_status());
                    return ([(header::CONTENT_TYPE, "application/json")], body).into_response();
                }
            },
        };
        (backlog, receiver, current)
    };
    let (sender, stream) = tokio::sync::mpsc::channel::<Result<Bytes, Infallible>>(256);
    let bookmark_interval = app.bookmark_interval;
    tokio::spawn(async move {
        for (_, type_, object) in backlog {
            if sender.send(Ok(line(type_, object))).await.is_err() {
                return;
            }
        }
        if initial_events_end {
            let bookmark = json!({"kind": rt.kind, "apiVersion": rt.api_version(), "metadata": {"resourceVersion": seen.to_string(), "annotations": {"k8s.io/initial-events-end": "true"}}});
            if sender.send(Ok(line("BOOKMARK", bookmark))).await.is_err() {
                return;
            }
        }
        let deadline = tokio::time::sleep(timeout);
        tokio::pin!(deadline);
        let mut ticker = tokio::time::interval(bookmark_interval);
        ticker.tick().await;
        loop {
            tokio::select! {
                _ = &mut deadline => break,
                _ = sender.closed() => break,
                _ = ticker.tick(), if bookmarks => {
                    let bookmark = json!({"kind": rt.kind, "apiVersion": rt.api_version(), "metadata": {"resourceVersion": seen.to_string()}});
                    if sender.send(Ok(line("BOOKMARK", bookmark))).await.is_err() { break; }
                }
                event = receiver.recv() => match event {
                    Ok(event) => {
                        seen = event.resource_version;
                        if matches(&event) {
                            let object = Store::present(&rt, event.object.clone());
                            if sender.send(Ok(line(event.type_.as_str(), object))).await.is_err() { break; }
                        }
                    }
                    // A watcher too slow to keep up is dropped; it re-watches.
                    Err(_) => break,
                },
            }
        }
    });
    let body = Body::from_stream(futures::stream::unfold(stream, |mut stream| async move {
        stream.recv().await.map(|item| (item, stream))
    }));
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// Server-side printing for `kubectl get`: the CRD's printer columns, or
/// NAME and AGE.
fn table(rt: &ResourceType, items: &[Value], resource_version: &str) -> Value {
    let mut columns = vec![
        json!({"name": "Name", "type": "string", "format": "name", "description": "Name of the object", "priority": 0}),
    ];
    let printer: Vec<PrinterColumn> = if rt.printer_columns.is_empty() {
        vec![PrinterColumn {
            name: "Age".into(),
            type_: "date".into(),
            json_path: ".metadata.creationTimestamp".into(),
            description: "Time since creation".into(),
            priority: 0,
        }]
    } else {
        rt.printer_columns.clone()
    };
    for column in &printer {
        let type_ = if column.type_ == "date" {
            "string"
        } else {
            column.type_.as_str()
        };
        columns.push(json!({"name": column.name, "type": type_, "format": "", "description": column.description, "priority": column.priority}));
    }
    let rows: Vec<Value> = items
        .iter()
        .map(|item| {
            let mut cells = vec![item.pointer("/metadata/name").cloned().unwrap_or(Value::Null)];
            for column in &printer {
                let value = json_path(item, &column.json_path);
                cells.push(match (column.type_.as_str(), value) {
                    ("date", Some(Value::String(t))) => json!(age(&t)),
                    (_, Some(v)) => v,
                    (_, None) => Value::Null,
                });
            }
            json!({"cells": cells, "object": item})
        })
        .collect();
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {"resourceVersion": resource_version},
        "columnDefinitions": columns,
        "rows": rows,
    })
}

/// The subset of JSONPath printer columns use: `.a.b` and `.a[?(@.k=="v")].b`.
fn json_path(object: &Value, path: &str) -> Option<Value> {
    let mut current = object.clone();
    let mut rest = path.trim_start_matches('.');
    while !rest.is_empty() {
        if let Some(filter_start) = rest
            .find("[?(@.")
            .filter(|i| rest.find('.').is_none_or(|d| *i < d))
        {
            let field = &rest[..filter_start];
            let after = &rest[filter_start + 5..];
            let end = after.find(")]")?;
            let (key, value) = after[..end].split_once("==")?;
            let value = value.trim_matches(|c| c == '"' || c == '\'');
            current = current
                .get(field)?
                .as_array()?
                .iter()
                .find(|e| e.get(key).and_then(Value::as_str) == Some(value))?
                .clone();
            rest = after[end + 2..].trim_start_matches('.');
        } else {
            let (field, tail) = rest.split_once('.').unwrap_or((rest, ""));
            current = current.get(field)?.clone();
            rest = tail;
        }
    }
    Some(current)
}

fn age(timestamp: &str) -> String {
    let Ok(then) = timestamp.parse::<k8s_openapi::jiff::Timestamp>() else {
        return "<unknown>".into();
    };
    let seconds = (k8s_openapi::jiff::Timestamp::now().as_second() - then.as_second()).max(0);
    match seconds {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn printer_column_paths() {
        let object =
            json!({"status": {"conditions": [{"type": "Ready", "status": "True"}], "pool": {"x": 3}}});
        assert_eq!(json_path(&object, ".status.pool.x"), Some(json!(3)));
        assert_eq!(
            json_path(&object, ".status.conditions[?(@.type==\"Ready\")].status"),
            Some(json!("True"))
        );
        assert_eq!(json_path(&object, ".status.missing"), None);
    }
}
