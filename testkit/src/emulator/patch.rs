//! The three patch types clients send: JSON merge patch (RFC 7386), JSON
//! patch (RFC 6902), and an approximation of server-side apply.
//!
//! Server-side apply here: the applied fields are set (objects merge; lists
//! of objects keyed by `name` or `type` merge by that key; other lists are
//! replaced), and fields the same field manager applied before but no longer
//! applies are removed. Not modelled: `managedFields` and exact field
//! ownership. Conflicts are modelled coarsely: an apply that changes
//! a field another manager applied is refused (409) unless forced, and an
//! update or non-apply patch takes over the fields it changes.

use serde_json::{Map, Value};

/// RFC 7386: objects merge recursively, `null` removes, anything else replaces.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let Value::Object(target) = target else { return };
    for (key, value) in patch {
        if value.is_null() {
            target.remove(key);
        } else {
            merge_patch(target.entry(key.clone()).or_insert(Value::Null), value);
        }
    }
}

/// RFC 6902, as Kubernetes applies it: a `test` for `null` passes on a
/// field that is absent (clients rely on it, e.g. to add the first finalizer).
pub fn json_patch(target: &mut Value, patch: &Value) -> Result<(), String> {
    let operations: Vec<Value> = patch
        .as_array()
        .ok_or("a JSON patch is a list of operations")?
        .iter()
        .filter(|op| {
            let absent_null_test = op["op"] == "test"
                && op["value"].is_null()
                && op["path"].as_str().is_some_and(|p| target.pointer(p).is_none());
            !absent_null_test
        })
        .cloned()
        .collect();
    let patch: json_patch::Patch =
        serde_json::from_value(Value::Array(operations)).map_err(|e| e.to_string())?;
    json_patch::patch(target, &patch).map_err(|e| e.to_string())
}

/// Server-side apply of `applied` onto `target`, given what the same field
/// manager applied last time (`previous`).
pub fn apply(target: &mut Value, applied: &Value, previous: Option<&Value>) {
    if let Some(previous) = previous {
        remove_dropped(target, applied, previous);
    }
    merge_applied(target, applied);
}

fn list_key(items: &[Value]) -> Option<&'static str> {
    ["name", "type"]
        .into_iter()
        .find(|key| !items.is_empty() && items.iter().all(|i| i.get(*key).is_some_and(Value::is_string)))
}

fn merge_applied(target: &mut Value, applied: &Value) {
    match (target, applied) {
        (Value::Object(target), Value::Object(applied)) => {
            for (key, value) in applied {
                match target.get_mut(key) {
                    Some(existing) => merge_applied(existing, value),
                    None => {
                        target.insert(key.clone(), value.clone());
                    }
                }
            }
        }
        (Value::Array(target), Value::Array(applied))
            if list_key(applied).is_some() && list_key(target).is_some() =>
        {
            let key = list_key(applied).unwrap_or("name");
            for item in applied {
                match target.iter_mut().find(|t| t.get(key) == item.get(key)) {
                    Some(existing) => merge_applied(existing, item),
                    None => target.push(item.clone()),
                }
            }
        }
        (target, applied) => *target = applied.clone(),
    }
}

fn remove_dropped(target: &mut Value, applied: &Value, previous: &Value) {
    match (target, previous) {
        (Value::Object(target), Value::Object(previous)) => {
            for (key, old) in previous {
                match applied.get(key) {
                    None => {
                        target.remove(key);
                    }
                    Some(now) => {
                        if let Some(existing) = target.get_mut(key) {
                            remove_dropped(existing, now, old);
                        }
                    }
                }
            }
        }
        (Value::Array(target), Value::Array(previous)) => {
            let Some(key) = list_key(previous) else { return };
            let applied_items = applied.as_array().map(Vec::as_slice).unwrap_or_default();
            for old in previous {
                let still = applied_items.iter().find(|a| a.get(key) == old.get(key));
                match still {
                    None => target.retain(|t| t.get(key) != old.get(key)),
                    Some(now) => {
                        if let Some(existing) = target.iter_mut().find(|t| t.get(key) == old.get(key)) {
                            remove_dropped(existing, now, old);
                        }
                    }
                }
            }
        }
        _ => {}
    }
}

/// The paths of the leaves of `value` (objects recurse, everything else is a leaf).
pub fn leaf_paths(value: &Value, prefix: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
    match value {
        Value::Object(map) if !map.is_empty() => {
            for (key, child) in map {
                prefix.push(key.clone());
                leaf_paths(child, prefix, out);
                prefix.pop();
            }
        }
        _ if !prefix.is_empty() => out.push(prefix.clone()),
        _ => {}
    }
}

pub fn get_path<'a>(value: &'a Value, path: &[String]) -> Option<&'a Value> {
    path.iter().try_fold(value, |v, key| v.get(key))
}

pub fn remove_path(value: &mut Value, path: &[String]) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut node = value;
    for key in parents {
        match node.get_mut(key) {
            Some(child) => node = child,
            None => return,
        }
    }
    if let Some(map) = node.as_object_mut() {
        map.remove(last);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merge_patch_follows_rfc_7386() {
        let mut target = json!({"a": "b", "c": {"d": "e", "f": "g"}});
        merge_patch(&mut target, &json!({"a": "z", "c": {"f": null}}));
        assert_eq!(target, json!({"a": "z", "c": {"d": "e"}}));
    }

    #[test]
    fn apply_merges_keyed_lists_and_removes_what_the_manager_dropped() {
        let mut target =
            json!({"spec": {"x": 1, "y": 2, "other": true}, "conditions": [{"type": "A", "status": "True"}]});
        let previous = json!({"spec": {"x": 1, "y": 2}});
        let applied = json!({"spec": {"x": 5}, "conditions": [{"type": "B", "status": "False"}]});
        apply(&mut target, &applied, Some(&previous));
        assert_eq!(
            target,
            json!({"spec": {"x": 5, "other": true}, "conditions": [{"type": "A", "status": "True"}, {"type": "B", "status": "False"}]})
        );
    }
}
