//! Building blocks shared by both resources: secret references, durations,
//! conditions, and the patterns the schema enforces on names.
//!
//! The patterns live here once so the CRD schema, the docs and the tests all
//! speak of the same rules.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Names tenantdb creates in PostgreSQL (databases, roles): lower-case ASCII
/// letters, digits and `_`, starting with a letter or `_`. Lower case only, so
/// the name a person types unquoted in `psql` is the name that exists.
pub const PG_NAME_PATTERN: &str = "^[a-z_][a-z0-9_]*$";

/// Names of objects the application owns (schemas, tables, columns, indexes):
/// mixed case is allowed because ORMs such as Prisma create quoted
/// `"PascalCase"` tables; quotes, spaces and punctuation are not.
pub const SQL_IDENTIFIER_PATTERN: &str = "^[A-Za-z_][A-Za-z0-9_$]*$";

/// PostgreSQL truncates identifiers longer than this many bytes (NAMEDATALEN - 1).
pub const PG_IDENTIFIER_MAX_BYTES: usize = 63;

/// A duration such as `500ms`, `30s`, `2m`, `1h30m`, or `0` (disabled).
pub const DURATION_PATTERN: &str = "^(0|([0-9]+(ms|s|m|h))+)$";

/// A Kubernetes object name (RFC 1123 subdomain).
pub const K8S_NAME_PATTERN: &str = "^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$";

/// Whether `name` is a valid Kubernetes object name (RFC 1123 subdomain),
/// the same rule as [`K8S_NAME_PATTERN`].
pub fn is_k8s_name(name: &str) -> bool {
    name.len() <= 253
        && name.split('.').all(|label| {
            let bytes = label.as_bytes();
            !bytes.is_empty()
                && bytes
                    .iter()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
                && bytes[0] != b'-'
                && bytes[bytes.len() - 1] != b'-'
        })
}

/// Reference to a Secret in a given namespace.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretReference {
    /// Namespace of the Secret.
    #[schemars(length(min = 1, max = 63), regex(pattern = K8S_NAME_PATTERN))]
    pub namespace: String,
    /// Name of the Secret.
    #[schemars(length(min = 1, max = 253), regex(pattern = K8S_NAME_PATTERN))]
    pub name: String,
}

/// Reference to one key of a Secret in a given namespace.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyReference {
    /// Namespace of the Secret.
    #[schemars(length(min = 1, max = 63), regex(pattern = K8S_NAME_PATTERN))]
    pub namespace: String,
    /// Name of the Secret.
    #[schemars(length(min = 1, max = 253), regex(pattern = K8S_NAME_PATTERN))]
    pub name: String,
    /// Key within the Secret. Default: `ca.crt`.
    #[serde(default = "default_ca_key")]
    #[schemars(length(min = 1, max = 253))]
    pub key: String,
}

fn default_ca_key() -> String {
    "ca.crt".to_owned()
}

/// The condition type shared by both resources: the standard Kubernetes
/// `metav1.Condition`, so kstatus, `kubectl wait`, Argo CD and Flux read it.
pub type Condition = k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;

/// Schema transform that marks a list as a map keyed by `type`, the way
/// Kubernetes declares `conditions`, so server-side apply merges entries by
/// type instead of replacing the whole list.
pub fn conditions_list_schema(schema: &mut schemars::Schema) {
    schema.insert("x-kubernetes-list-type".into(), "map".into());
    schema.insert("x-kubernetes-list-map-keys".into(), serde_json::json!(["type"]));
}

/// Schema transform for a list of objects keyed by their `name`.
pub fn list_map_keyed_by_name(schema: &mut schemars::Schema) {
    schema.insert("x-kubernetes-list-type".into(), "map".into());
    schema.insert("x-kubernetes-list-map-keys".into(), serde_json::json!(["name"]));
}

/// Schema transform for a list whose items are unique scalars.
pub fn list_set(schema: &mut schemars::Schema) {
    schema.insert("x-kubernetes-list-type".into(), "set".into());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubernetes_names() {
        assert!(is_k8s_name("acme-db.prod"));
        assert!(!is_k8s_name("Acme"));
        assert!(!is_k8s_name("-a"));
        assert!(!is_k8s_name("a..b"));
        assert!(!is_k8s_name("../../etc/passwd"));
        assert!(!is_k8s_name(&"a".repeat(254)));
    }
}
