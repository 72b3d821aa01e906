//! The emulator's object store and the API semantics clients depend on:
//! resourceVersion and optimistic concurrency, generation, the status
//! subresource, finalizers and deletionTimestamp, owner-reference garbage
//! collection, namespace termination, schema validation of custom
//! resources, and the event history that watches replay.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;

use serde_json::{Map, Value, json};
use tokio::sync::broadcast;

use super::patch;
use super::resources::{self, ResourceType};
use super::selector::{FieldSelector, LabelSelector};

/// Where an object lives; the version is not part of it, so all served
/// versions of a type share their objects.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectKey {
    pub group: String,
    pub plural: String,
    pub namespace: String,
    pub name: String,
}

/// An API error, rendered as a `Status` object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiError {
    pub code: u16,
    pub reason: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn new(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            reason,
            message: message.into(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message)
    }

    fn not_found(rt: &ResourceType, name: &str) -> Self {
        Self::new(
            404,
            "NotFound",
            format!("{} \"{name}\" not found", rt.qualified()),
        )
    }

    pub fn to_status(&self) -> Value {
        json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventType {
    Added,
    Modified,
    Deleted,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        }
    }
}

/// One change, as watches deliver it.
#[derive(Clone, Debug)]
pub struct WatchEvent {
    pub resource_version: u64,
    pub type_: EventType,
    pub key: ObjectKey,
    pub object: Value,
}

/// How a patch request's body is to be read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PatchKind {
    Merge,
    Json,
    Apply,
}

pub struct Store {
    types: Vec<ResourceType>,
    objects: BTreeMap<ObjectKey, Value>,
    /// Last configuration each field manager applied, per object and subresource.
    applied: HashMap<(ObjectKey, String, bool), Value>,
    /// Fields each manager set by an update or a non-apply patch (named by
    /// its fieldManager, else "unknown" as kube-apiserver names a client
    /// without a user agent): an apply that changes one conflicts with it.
    updated: HashMap<(ObjectKey, String, bool), Value>,
    resource_version: u64,
    history: VecDeque<Arc<WatchEvent>>,
    history_limit: usize,
    /// Events up to this resourceVersion are no longer in the history.
    compacted: u64,
    events: broadcast::Sender<Arc<WatchEvent>>,
}

impl Store {
    pub fn new(history_limit: usize) -> Self {
        let (events, _) = broadcast::channel(16_384);
        Self {
            types: resources::builtins(),
            objects: BTreeMap::new(),
            applied: HashMap::new(),
            updated: HashMap::new(),
            resource_version: 1,
            history: VecDeque::new(),
            history_limit: history_limit.max(1),
            compacted: 0,
            events,
        }
    }

    pub fn types(&self) -> &[ResourceType] {
        &self.types
    }

    pub fn resource_type(&self, group: &str, version: &str, plural: &str) -> Option<ResourceType> {
        self.types
            .iter()
            .find(|t| t.group == group && t.version == version && t.plural == plural)
            .cloned()
    }

    pub fn resource_version(&self) -> u64 {
        self.resource_version
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<WatchEvent>> {
        self.events.subscribe()
    }

    /// Events after `since`, or `None` when some of them were compacted away (410 Gone).
    pub fn events_since(&self, since: u64) -> Option<Vec<Arc<WatchEvent>>> {
        if since < self.compacted {
            return None;
        }
        Some(
            self.history
                .iter()
                .filter(|e| e.resource_version > since)
                .cloned()
                .collect(),
        )
    }

    fn key(rt: &ResourceType, namespace: &str, name: &str) -> ObjectKey {
        ObjectKey {
            group: rt.group.clone(),
            plural: rt.plural.clone(),
            namespace: if rt.namespaced {
                namespace.to_owned()
            } else {
                String::new()
            },
            name: name.to_owned(),
        }
    }

    fn emit(&mut self, type_: EventType, key: ObjectKey, object: Value) {
        let event = Arc::new(WatchEvent {
            resource_version: self.resource_version,
            type_,
            key,
            object,
        });
        self.history.push_back(event.clone());
        while self.history.len() > self.history_limit {
            if let Some(dropped) = self.history.pop_front() {
                self.compacted = dropped.resource_version;
            }
        }
        let _ = self.events.send(event);
    }

    fn next_resource_version(&mut self) -> String {
        self.resource_version += 1;
        self.resource_version.to_string()
    }

    /// Shapes an object as stored for `rt`: kind and apiVersion of the
    /// requested version.
    pub fn present(rt: &ResourceType, mut object: Value) -> Value {
        object["apiVersion"] = json!(rt.api_version());
        object["kind"] = json!(rt.kind);
        object
    }

    pub fn get(&self, rt: &ResourceType, namespace: &str, name: &str) -> Result<Value, ApiError> {
        self.objects
            .get(&Self::key(rt, namespace, name))
            .map(|o| Self::present(rt, o.clone()))
            .ok_or_else(|| ApiError::not_found(rt, name))
    }

    /// Objects of `rt` in `namespace` (all namespaces when `None`) that match.
    pub fn list(
        &self,
        rt: &ResourceType,
        namespace: Option<&str>,
        labels: &LabelSelector,
        fields: &FieldSelector,
    ) -> Vec<Value> {
        self.objects
            .iter()
            .filter(|(k, _)| k.group == rt.group && k.plural == rt.plural)
            .filter(|(k, _)| namespace.is_none_or(|ns| k.namespace == ns))
            .filter(|(_, o)| labels.matches(o) && fields.matches(o))
            .map(|(_, o)| Self::present(rt, o.clone()))
            .collect()
    }

    pub fn create(
        &mut self,
        rt: &ResourceType,
        namespace: &str,
        mut object: Value,
    ) -> Result<Value, ApiError> {
        if !object.is_object() {
            return Err(ApiError::bad_request("the body must be an object"));
        }
        let metadata = object["metadata"].as_object().cloned().unwrap_or_default();
        let name = match metadata.get("name").and_then(Value::as_str) {
            Some(name) if !name.is_empty() => name.to_owned(),
            _ => match metadata.get("generateName").and_then(Value::as_str) {
                Some(prefix) => format!("{prefix}{}", random_suffix()),
                None => {
                    return Err(invalid(
                        rt,
                        "",
                        vec![("metadata.name".into(), "Required value".into())],
                    ));
                }
            },
        };
        if rt.namespaced {
            if let Some(body_ns) = metadata.get("namespace").and_then(Value::as_str)
                && body_ns != namespace
            {
                return Err(ApiError::bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request",
                ));
            }
            self.check_namespace_accepts(namespace)?;
        }
        let key = Self::key(rt, namespace, &name);
        if self.objects.contains_key(&key) {
            return Err(ApiError::new(
                409,
                "AlreadyExists",
                format!("{} \"{name}\" already exists", rt.qualified()),
            ));
        }
        if metadata
            .get("resourceVersion")
            .is_some_and(|v| !v.as_str().unwrap_or_default().is_empty())
        {
            return Err(ApiError::bad_request(
                "resourceVersion should not be set on objects to be created",
            ));
        }
        let mut metadata: Map<String, Value> = metadata
            .into_iter()
            .filter(|(k, _)| {
                !matches!(
                    k.as_str(),
                    "uid"
                        | "creationTimestamp"
                        | "deletionTimestamp"
                        | "deletionGracePeriodSeconds"
                        | "managedFields"
                        | "generation"
                        | "resourceVersion"
                        | "selfLink"
                )
            })
            .collect();
        metadata.insert("name".into(), json!(name));
        if rt.namespaced {
            metadata.insert("namespace".into(), json!(namespace));
        } else {
            metadata.remove("namespace");
        }
        metadata.insert("uid".into(), json!(uid()));
        metadata.insert("creationTimestamp".into(), json!(now()));
        metadata.insert("generation".into(), json!(1));
        object["metadata"] = Value::Object(metadata);
        if rt.status_subresource
            && let Value::Object(map) = &mut object
        {
            map.remove("status");
        }
        object = Self::present(rt, object);
        if rt.kind == "Namespace" && rt.group.is_empty() {
            object["status"] = json!({"phase": "Active"});
        }
        object = validate(rt, object, None)?;
        if rt.kind == "CustomResourceDefinition" {
            object = self.register_crd(object)?;
        }
        object["metadata"]["resourceVersion"] = json!(self.next_resource_version());
        self.objects.insert(key.clone(), object.clone());
        self.emit(EventType::Added, key, object.clone());
        Ok(object)
    }

    /// PUT of the whole object, or of its status with `status`.
    pub fn update(
        &mut self,
        rt: &ResourceType,
        namespace: &str,
        name: &str,
        object: Value,
        status: bool,
        manager: Option<&str>,
    ) -> Result<Value, ApiError> {
        let key = Self::key(rt, namespace, name);
        let old = self
            .objects
            .get(&key)
            .cloned()
            .ok_or_else(|| ApiError::not_found(rt, name))?;
        check_resource_version(rt, name, &object, &old)?;
        if object
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .is_some_and(|n| n != name)
        {
            return Err(ApiError::bad_request(
                "the name of the object does not match the name on the URL",
            ));
        }
        self.release_changed(&key, manager, status, &old, &object);
        self.commit(rt, key, old, object, status)
    }

    /// PATCH of the object, or of its status with `status`. A server-side
    /// apply of an object that does not exist creates it.
    #[allow(clippy::too_many_arguments)]
    pub fn patch(
        &mut self,
        rt: &ResourceType,
        namespace: &str,
        name: &str,
        kind: PatchKind,
        body: Value,
        status: bool,
        manager: Option<&str>,
        force: bool,
    ) -> Result<Value, ApiError> {
        let key = Self::key(rt, namespace, name);
        let Some(old) = self.objects.get(&key).cloned() else {
            if kind == PatchKind::Apply && !status {
                let mut object = body.clone();
                object["metadata"]["name"] = json!(name);
                let created = self.create(rt, namespace, object)?;
                if let Some(manager) = manager {
                    self.applied
                        .insert((key, manager.to_owned(), false), owned_fields(body));
                }
                return Ok(created);
            }
            return Err(ApiError::not_found(rt, name));
        };
        let mut patched = Self::present(rt, old.clone());
        match kind {
            PatchKind::Merge => {
                // A resourceVersion in a merge patch is a precondition.
                check_resource_version(rt, name, &body, &old)?;
                patch::merge_patch(&mut patched, &body)
            }
            PatchKind::Json => patch::json_patch(&mut patched, &body).map_err(|e| {
                ApiError::new(
                    422,
                    "Invalid",
                    format!("the JSON patch could not be applied: {e}"),
                )
            })?,
            PatchKind::Apply => {
                let manager = manager.ok_or_else(|| {
                    ApiError::bad_request("PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch")
                })?;
                let slot = (key.clone(), manager.to_owned(), status);
                let owned = owned_fields(body);
                self.take_ownership(&key, manager, status, &owned, &old, force)?;
                patch::apply(&mut patched, &owned, self.applied.get(&slot));
                self.applied.insert(slot, owned);
            }
        }
        if kind != PatchKind::Apply {
            self.release_changed(&key, manager, status, &old, &patched);
        }
        self.commit(rt, key, old, patched, status)
    }

    /// Server-side apply conflicts: a field this apply changes that another
    /// manager applied is a 409, unless `force` moves it to this manager.
    fn take_ownership(
        &mut self,
        key: &ObjectKey,
        manager: &str,
        status: bool,
        applied: &Value,
        current: &Value,
        force: bool,
    ) -> Result<(), ApiError> {
        let mut changed = Vec::new();
        patch::leaf_paths(applied, &mut Vec::new(), &mut changed);
        changed.retain(|path| patch::get_path(current, path) != patch::get_path(applied, path));
        let mut conflicts = Vec::new();
        for ((k, other, sub), record) in self.applied.iter_mut().chain(self.updated.iter_mut()) {
            if k != key || other == manager || *sub != status {
                continue;
            }
            for path in &changed {
                if patch::get_path(record, path).is_some() {
                    if force {
                        patch::remove_path(record, path);
                    } else {
                        conflicts.push(format!("conflict with \"{other}\": .{}", path.join(".")));
                    }
                }
            }
        }
        if conflicts.is_empty() {
            Ok(())
        } else {
            Err(ApiError::new(
                409,
                "Conflict",
                format!(
                    "Apply failed with {} conflict(s): {}",
                    conflicts.len(),
                    conflicts.join("; ")
                ),
            ))
        }
    }

    /// An update or a non-apply patch takes over the fields it changes:
    /// they leave every other manager's records and become the updater's.
    fn release_changed(
        &mut self,
        key: &ObjectKey,
        manager: Option<&str>,
        status: bool,
        old: &Value,
        new: &Value,
    ) {
        let updater = manager.unwrap_or("unknown");
        for ((k, other, sub), record) in self.applied.iter_mut().chain(self.updated.iter_mut()) {
            if k != key || other == updater || *sub != status {
                continue;
            }
            let mut paths = Vec::new();
            patch::leaf_paths(record, &mut Vec::new(), &mut paths);
            for path in paths {
                if patch::get_path(old, &path) != patch::get_path(new, &path) {
                    patch::remove_path(record, &path);
                }
            }
        }
        let mut paths = Vec::new();
        patch::leaf_paths(new, &mut Vec::new(), &mut paths);
        let record = self
            .updated
            .entry((key.clone(), updater.to_owned(), status))
            .or_insert_with(|| json!({}));
        for path in paths {
            let owned = match path.first().map(String::as_str) {
                Some("metadata") => matches!(path.get(1).map(String::as_str), Some("labels" | "annotations")),
                Some("status") => status,
                Some("apiVersion" | "kind") | None => false,
                Some(_) => !status,
            };
            if owned && patch::get_path(old, &path) != patch::get_path(new, &path) {
                set_path(
                    record,
                    &path,
                    patch::get_path(new, &path).cloned().unwrap_or(Value::Null),
                );
            }
        }
    }

    /// Validates and stores an update of `old` to `new`, honouring the
    /// status subresource, generation, finalizers and no-op detection.
    fn commit(
        &mut self,
        rt: &ResourceType,
        key: ObjectKey,
        old: Value,
        new: Value,
        status: bool,
    ) -> Result<Value, ApiError> {
        let old = Self::present(rt, old);
        let mut result = if status {
            let mut result = old.clone();
            match new.get("status") {
                Some(s) => result["status"] = s.clone(),
                None => {
                    result.as_object_mut().map(|o| o.remove("status"));
                }
            }
            result
        } else {
            let mut result = Self::present(rt, new);
            if rt.status_subresource {
                match old.get("status") {
                    Some(s) => result["status"] = s.clone(),
                    None => {
                        result.as_object_mut().map(|o| o.remove("status"));
                    }
                }
            }
            // System-owned metadata is kept from the stored object.
            let old_meta = &old["metadata"];
            for field in [
                "uid",
                "creationTimestamp",
                "deletionTimestamp",
                "deletionGracePeriodSeconds",
                "namespace",
                "name",
                "generation",
            ] {
                match old_meta.get(field) {
                    Some(v) => result["metadata"][field] = v.clone(),
                    None => {
                        result["metadata"].as_object_mut().map(|m| m.remove(field));
                    }
                }
            }
            result
        };
        result["metadata"]["resourceVersion"] = old["metadata"]["resourceVersion"].clone();
        if let Some(m) = result["metadata"].as_object_mut() {
            m.remove("managedFields");
        }

        let deleting = old.pointer("/metadata/deletionTimestamp").is_some();
        if deleting {
            let before = finalizers(&old);
            if finalizers(&result).iter().any(|f| !before.contains(f)) {
                return Err(invalid(
                    rt,
                    key.name.as_str(),
                    vec![(
                        "metadata.finalizers".into(),
                        "Forbidden: no new finalizers can be added if the object is being deleted".into(),
                    )],
                ));
            }
        }
        if without(&old, &["metadata", "status"]) != without(&result, &["metadata", "status"]) {
            let generation = old
                .pointer("/metadata/generation")
                .and_then(Value::as_i64)
                .unwrap_or(1);
            result["metadata"]["generation"] = json!(generation + 1);
        }
        let mut result = validate(rt, result, Some(&old))?;
        if result == old {
            return Ok(old); // a no-op: no new resourceVersion, no event
        }
        if rt.kind == "CustomResourceDefinition" {
            result = self.register_crd(result)?;
        }
        result["metadata"]["resourceVersion"] = json!(self.next_resource_version());
        if deleting && finalizers(&result).is_empty() {
            self.remove(&key, result.clone());
            return Ok(result);
        }
        self.objects.insert(key.clone(), result.clone());
        self.emit(EventType::Modified, key, result.clone());
        Ok(result)
    }

    /// DELETE: an object with finalizers is only marked; one without is removed.
    pub fn delete(&mut self, rt: &ResourceType, namespace: &str, name: &str) -> Result<Value, ApiError> {
        let key = Self::key(rt, namespace, name);
        let object = self
            .objects
            .get(&key)
            .cloned()
            .ok_or_else(|| ApiError::not_found(rt, name))?;
        Ok(self.delete_key(&key, object))
    }

    fn delete_key(&mut self, key: &ObjectKey, mut object: Value) -> Value {
        let is_namespace = key.group.is_empty() && key.plural == "namespaces";
        if is_namespace {
            if object.pointer("/metadata/deletionTimestamp").is_none() {
                object["metadata"]["deletionTimestamp"] = json!(now());
                object["status"] = json!({"phase": "Terminating"});
                object["metadata"]["resourceVersion"] = json!(self.next_resource_version());
                self.objects.insert(key.clone(), object.clone());
                self.emit(EventType::Modified, key.clone(), object.clone());
            }
            let contents: Vec<(ObjectKey, Value)> = self
                .objects
                .iter()
                .filter(|(k, _)| k.namespace == key.name)
                .map(|(k, o)| (k.clone(), o.clone()))
                .collect();
            for (k, o) in contents {
                self.delete_key(&k, o);
            }
            self.finish_namespace(&key.name);
            return self.objects.get(key).cloned().unwrap_or(object);
        }
        if finalizers(&object).is_empty() {
            object["metadata"]["resourceVersion"] = json!(self.next_resource_version());
            self.remove(key, object.clone());
        } else if object.pointer("/metadata/deletionTimestamp").is_none() {
            object["metadata"]["deletionTimestamp"] = json!(now());
            object["metadata"]["deletionGracePeriodSeconds"] = json!(0);
            object["metadata"]["resourceVersion"] = json!(self.next_resource_version());
            self.objects.insert(key.clone(), object.clone());
            self.emit(EventType::Modified, key.clone(), object.clone());
        }
        object
    }

    /// Removes an object for good, then collects what it owned and lets a
    /// terminating namespace finish.
    fn remove(&mut self, key: &ObjectKey, object: Value) {
        self.objects.remove(key);
        self.applied.retain(|(k, _, _), _| k != key);
        self.updated.retain(|(k, _, _), _| k != key);
        self.emit(EventType::Deleted, key.clone(), object.clone());
        if key.group == "apiextensions.k8s.io" && key.plural == "customresourcedefinitions" {
            self.unregister_crd(&key.name);
        }
        let uid = object
            .pointer("/metadata/uid")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let orphans: Vec<(ObjectKey, Value)> = self
            .objects
            .iter()
            .filter(|(_, o)| {
                let owners: Vec<&str> = o
                    .pointer("/metadata/ownerReferences")
                    .and_then(Value::as_array)
                    .map(|refs| {
                        refs.iter()
                            .filter_map(|r| r.get("uid").and_then(Value::as_str))
                            .collect()
                    })
                    .unwrap_or_default();
                owners.contains(&uid.as_str()) && owners.iter().all(|u| *u == uid || !self.uid_exists(u))
            })
            .map(|(k, o)| (k.clone(), o.clone()))
            .collect();
        for (k, o) in orphans {
            if o.pointer("/metadata/deletionTimestamp").is_none() {
                self.delete_key(&k, o);
            }
        }
        if !key.namespace.is_empty() {
            self.finish_namespace(&key.namespace);
        }
    }

    fn uid_exists(&self, uid: &str) -> bool {
        self.objects
            .values()
            .any(|o| o.pointer("/metadata/uid").and_then(Value::as_str) == Some(uid))
    }

    /// Removes a terminating namespace once nothing is left in it.
    fn finish_namespace(&mut self, namespace: &str) {
        let key = ObjectKey {
            group: String::new(),
            plural: "namespaces".into(),
            namespace: String::new(),
            name: namespace.to_owned(),
        };
        let Some(object) = self.objects.get(&key).cloned() else {
            return;
        };
        let terminating = object.pointer("/metadata/deletionTimestamp").is_some();
        if terminating && !self.objects.keys().any(|k| k.namespace == namespace) {
            let mut object = object;
            object["metadata"]["resourceVersion"] = json!(self.next_resource_version());
            self.objects.remove(&key);
            self.emit(EventType::Deleted, key, object);
        }
    }

    fn check_namespace_accepts(&self, namespace: &str) -> Result<(), ApiError> {
        let key = ObjectKey {
            group: String::new(),
            plural: "namespaces".into(),
            namespace: String::new(),
            name: namespace.to_owned(),
        };
        match self.objects.get(&key) {
            None => Err(ApiError::new(
                404,
                "NotFound",
                format!("namespaces \"{namespace}\" not found"),
            )),
            Some(ns) if ns.pointer("/metadata/deletionTimestamp").is_some() => Err(ApiError::new(
                403,
                "Forbidden",
                format!(
                    "unable to create new content in namespace {namespace} because it is being terminated"
                ),
            )),
            Some(_) => Ok(()),
        }
    }

    /// Serves the types a CRD defines and marks it Established.
    fn register_crd(&mut self, mut object: Value) -> Result<Value, ApiError> {
        let name = object
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let crd = serde_json::from_value(object.clone()).map_err(|e| {
            invalid_message(
                "customresourcedefinitions.apiextensions.k8s.io",
                &name,
                e.to_string(),
            )
        })?;
        let types = resources::from_crd(&crd)
            .map_err(|e| invalid_message("customresourcedefinitions.apiextensions.k8s.io", &name, e))?;
        self.types.retain(|t| t.crd.as_deref() != Some(name.as_str()));
        self.types.extend(types);
        let now = now();
        object["status"] = json!({
            "acceptedNames": object["spec"]["names"].clone(),
            "storedVersions": object["spec"]["versions"].as_array().map(|vs| vs.iter().filter(|v| v["storage"] == true).map(|v| v["name"].clone()).collect::<Vec<_>>()).unwrap_or_default(),
            "conditions": [
                {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts", "message": "no conflicts found", "lastTransitionTime": now},
                {"type": "Established", "status": "True", "reason": "InitialNamesAccepted", "message": "the initial names have been accepted", "lastTransitionTime": now},
            ],
        });
        Ok(object)
    }

    fn unregister_crd(&mut self, name: &str) {
        let Some(rt) = self
            .types
            .iter()
            .find(|t| t.crd.as_deref() == Some(name))
            .cloned()
        else {
            return;
        };
        self.types.retain(|t| t.crd.as_deref() != Some(name));
        let keys: Vec<(ObjectKey, Value)> = self
            .objects
            .iter()
            .filter(|(k, _)| k.group == rt.group && k.plural == rt.plural)
            .map(|(k, o)| (k.clone(), o.clone()))
            .collect();
        for (key, object) in keys {
            self.objects.remove(&key);
            self.emit(EventType::Deleted, key, object);
        }
    }
}

/// Optimistic concurrency: a `metadata.resourceVersion` in the request must
/// be the stored one (409 Conflict otherwise); none means no precondition.
fn check_resource_version(
    rt: &ResourceType,
    name: &str,
    request: &Value,
    stored: &Value,
) -> Result<(), ApiError> {
    let expected = request
        .pointer("/metadata/resourceVersion")
        .and_then(Value::as_str);
    match expected {
        Some(version)
            if !version.is_empty()
                && Some(version)
                    != stored
                        .pointer("/metadata/resourceVersion")
                        .and_then(Value::as_str) =>
        {
            Err(ApiError::new(
                409,
                "Conflict",
                format!(
                    "Operation cannot be fulfilled on {} \"{name}\": the object has been modified; please apply your changes to the latest version and try again",
                    rt.qualified()
                ),
            ))
        }
        _ => Ok(()),
    }
}

/// Sets the leaf at `path` in `record`, making the objects on the way.
fn set_path(record: &mut Value, path: &[String], value: Value) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut node = record;
    for key in parents {
        if !node.get(key).is_some_and(Value::is_object) {
            node[key.as_str()] = json!({});
        }
        node = &mut node[key.as_str()];
    }
    node[last.as_str()] = value;
}

/// An applied configuration without its identity fields, which no field
/// manager owns.
fn owned_fields(mut applied: Value) -> Value {
    if let Some(map) = applied.as_object_mut() {
        map.remove("apiVersion");
        map.remove("kind");
    }
    applied
}

fn finalizers(object: &Value) -> Vec<String> {
    object
        .pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .map(|f| f.iter().filter_map(Value::as_str).map(str::to_owned).collect())
        .unwrap_or_default()
}

fn without(object: &Value, keys: &[&str]) -> Value {
    let mut copy = object.clone();
    if let Some(map) = copy.as_object_mut() {
        for key in keys {
            map.remove(*key);
        }
    }
    copy
}

/// Schema and CEL validation of custom resources (422 with every cause).
fn validate(rt: &ResourceType, object: Value, old: Option<&Value>) -> Result<Value, ApiError> {
    let Some(validator) = &rt.validator else {
        return Ok(object);
    };
    let name = object
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    validator.validate(&object, old).map_err(|errors| {
        invalid(
            rt,
            &name,
            errors.into_iter().map(|e| (e.field, e.reason)).collect(),
        )
    })
}

fn invalid(rt: &ResourceType, name: &str, causes: Vec<(String, String)>) -> ApiError {
    let detail: Vec<String> = causes
        .iter()
        .map(|(field, reason)| format!("{field}: {reason}"))
        .collect();
    invalid_message(
        &format!("{}.{}", rt.kind, rt.group),
        name,
        format!("[{}]", detail.join(", ")),
    )
}

fn invalid_message(what: &str, name: &str, detail: impl std::fmt::Display) -> ApiError {
    ApiError::new(
        422,
        "Invalid",
        format!("{} \"{name}\" is invalid: {detail}", what.trim_end_matches('.')),
    )
}

pub fn now() -> String {
    k8s_openapi::jiff::Timestamp::now()
        .round(k8s_openapi::jiff::Unit::Second)
        .map_or_else(
            |_| k8s_openapi::jiff::Timestamp::now().to_string(),
            |t| t.to_string(),
        )
}

fn uid() -> String {
    use rand::RngExt;
    let bytes: [u8; 16] = rand::rng().random();
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

fn random_suffix() -> String {
    tenantdb::password::generate()
        .to_lowercase()
        .chars()
        .take(5)
        .collect()
}
