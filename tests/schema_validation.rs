//! What `kubectl apply` of a bad manifest runs into: the CRD's own schema
//! (checked by a JSON Schema validator) and its CEL rules (checked by kube's
//! CEL engine, including `oldSelf` transition rules) — taken from the CRD
//! files in `crds/` that users install, not from hand-written mirrors.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use serde_json::{Value, json};
use tenantdb::manifest::SchemaValidator;
use tenantdb::manifest::schema::FieldError;

fn validator() -> SchemaValidator {
    let crds: Vec<CustomResourceDefinition> = std::fs::read_dir("crds")
        .unwrap()
        .map(|entry| {
            let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
            serde_norway::from_str(&text).unwrap()
        })
        .collect();
    assert_eq!(crds.len(), 3);
    SchemaValidator::for_crds(&crds).unwrap()
}

fn tenant(spec: Value) -> Value {
    json!({
        "apiVersion": "tenantdb.io/v1alpha1",
        "kind": "TenantDatabase",
        "metadata": {"name": "acme", "namespace": "tenants"},
        "spec": spec
    })
}

/// `spec` with `pointer` set to `value`.
fn with(mut object: Value, pointer: &str, value: Value) -> Value {
    let (parent, key) = pointer.rsplit_once('/').unwrap();
    let mut node = &mut object;
    for segment in parent.split('/').skip(1) {
        node = node
            .as_object_mut()
            .unwrap()
            .entry(segment)
            .or_insert_with(|| json!({}));
    }
    node.as_object_mut().unwrap().insert(key.to_owned(), value);
    object
}

fn rejected(object: &Value, old: Option<&Value>) -> Vec<FieldError> {
    validator()
        .validate(object, old)
        .expect_err("the schema must reject this object")
}

fn assert_rejected(object: Value, field: &str, reason_contains: &str) {
    let errors = rejected(&object, None);
    assert!(
        errors
            .iter()
            .any(|e| e.field == field && e.reason.contains(reason_contains)),
        "expected {field}: …{reason_contains}…, got {errors:#?}"
    );
}

#[test]
fn a_good_tenant_is_accepted_and_defaulted() {
    let object = tenant(json!({
        "server": "pg-main",
        "databaseName": "acme_prod",
        "pool": {"maxConnections": 20, "minConnections": 2, "idleTimeout": "30s", "connectionTimeout": "2s", "replicas": 3},
        "limits": {"statementTimeout": "1h30m", "lockTimeout": "500ms", "idleInTransactionSessionTimeout": "0"},
        "indexes": [{"name": "orders_created_idx", "table": "orders", "columns": ["created_at DESC NULLS LAST"]}]
    }));
    let defaulted = validator().validate(&object, None).unwrap();
    assert_eq!(defaulted["spec"]["deletionPolicy"], "Retain");
    assert_eq!(defaulted["spec"]["indexes"][0]["schema"], "public");
    assert_eq!(defaulted["spec"]["indexes"][0]["method"], "btree");
}

#[test]
fn a_database_name_of_80_bytes_is_rejected() {
    assert_rejected(
        tenant(json!({"databaseName": "a".repeat(80)})),
        "spec.databaseName",
        "longer than 63",
    );
}

#[test]
fn max_connections_zero_is_rejected() {
    assert_rejected(
        tenant(json!({"pool": {"maxConnections": 0}})),
        "spec.pool.maxConnections",
        "minimum",
    );
    assert_rejected(
        tenant(json!({"pool": {"maxConnections": 10001}})),
        "spec.pool.maxConnections",
        "maximum",
    );
}

#[test]
fn min_connections_above_max_connections_is_rejected_by_the_cel_rule() {
    let object = tenant(json!({"pool": {"maxConnections": 5, "minConnections": 6}}));
    let errors = rejected(&object, None);
    assert!(
        errors
            .iter()
            .any(|e| e.reason == "minConnections must not exceed maxConnections"),
        "{errors:#?}"
    );
    // Equal is fine.
    let equal = tenant(json!({"pool": {"maxConnections": 5, "minConnections": 5}}));
    validator().validate(&equal, None).unwrap();
}

#[test]
fn an_unknown_deletion_policy_is_rejected() {
    assert_rejected(
        tenant(json!({"deletionPolicy": "Destroy"})),
        "spec.deletionPolicy",
        "is not one of",
    );
}

#[test]
fn names_with_quotes_or_semicolons_are_rejected() {
    for field in ["databaseName", "roleName"] {
        for name in [
            "acme\"; DROP DATABASE x; --",
            "acme;",
            "ac'me",
            "Acme",
            "acme db",
            "1acme",
            "acme-db",
        ] {
            assert_rejected(
                tenant(json!({field: name})),
                &format!("spec.{field}"),
                "must be lower-case letters",
            );
        }
    }
    let index = |name: &str, table: &str| {
        tenant(json!({"indexes": [{"name": name, "table": table, "columns": ["a"]}]}))
    };
    assert_rejected(index("idx\"", "orders"), "spec.indexes[0].name", "is not valid");
    assert_rejected(index("idx", "orders;"), "spec.indexes[0].table", "is not valid");
    assert_rejected(
        index("idx", &"t".repeat(64)),
        "spec.indexes[0].table",
        "longer than 63",
    );
    assert_rejected(
        tenant(json!({"indexes": [{"name": "i", "table": "t", "columns": ["a); DROP TABLE t; --"]}]})),
        "spec.indexes[0].columns[0]",
        "does not match",
    );
}

#[test]
fn reserved_pg_prefixes_are_rejected() {
    assert_rejected(
        tenant(json!({"databaseName": "pg_acme"})),
        "spec.databaseName",
        "must not start with pg_",
    );
    assert_rejected(
        tenant(json!({"roleName": "pg_monitor"})),
        "spec.roleName",
        "must not start with pg_",
    );
}

#[test]
fn bad_durations_are_rejected() {
    for bad in ["30", "30 s", "1d", "-5s", "30sec", "s", ""] {
        assert_rejected(
            tenant(json!({"pool": {"idleTimeout": bad}})),
            "spec.pool.idleTimeout",
            "",
        );
    }
    assert_rejected(
        tenant(json!({"limits": {"statementTimeout": "forever"}})),
        "spec.limits.statementTimeout",
        "must be a duration",
    );
}

#[test]
fn an_index_needs_exactly_one_of_columns_and_expressions() {
    let both = tenant(
        json!({"indexes": [{"name": "i", "table": "t", "columns": ["a"], "expressions": ["lower(a)"]}]}),
    );
    let neither = tenant(json!({"indexes": [{"name": "i", "table": "t"}]}));
    for object in [both, neither] {
        let errors = rejected(&object, None);
        assert!(
            errors
                .iter()
                .any(|e| e.reason.contains("exactly one of columns or expressions")),
            "{errors:#?}"
        );
    }
}

#[test]
fn unknown_fields_are_rejected_like_kubectl_strict_validation() {
    assert_rejected(
        tenant(json!({"databse": "typo"})),
        "spec.databse",
        "unknown field",
    );
}

#[test]
fn database_name_role_name_and_server_are_immutable_once_set() {
    let validator = validator();
    let old = tenant(json!({"server": "pg-main", "databaseName": "acme_db", "roleName": "acme_app"}));
    for (pointer, message) in [
        ("/spec/databaseName", "databaseName is immutable once set"),
        ("/spec/roleName", "roleName is immutable once set"),
        ("/spec/server", "server is immutable once set"),
    ] {
        let changed = with(old.clone(), pointer, json!("other"));
        let errors = validator.validate(&changed, Some(&old)).unwrap_err();
        assert!(
            errors.iter().any(|e| e.reason.starts_with(message)),
            "{pointer}: {errors:#?}"
        );

        let mut removed = old.clone();
        let field = pointer.rsplit('/').next().unwrap();
        removed["spec"].as_object_mut().unwrap().remove(field);
        let errors = validator.validate(&removed, Some(&old)).unwrap_err();
        assert!(
            errors.iter().any(|e| e.reason.starts_with(message)),
            "removing {pointer}: {errors:#?}"
        );
    }
    // Unchanged, or set for the first time, is allowed; so is any other edit.
    validator.validate(&old, Some(&old)).unwrap();
    let unset = tenant(json!({}));
    validator.validate(&old, Some(&unset)).unwrap();
    let resized = with(old.clone(), "/spec/pool/maxConnections", json!(50));
    validator.validate(&resized, Some(&old)).unwrap();
    // And the rules do not apply on create.
    validator.validate(&old, None).unwrap();
}

#[test]
fn a_database_server_is_validated_too() {
    let server = |spec: Value| {
        json!({
            "apiVersion": "tenantdb.io/v1alpha1",
            "kind": "DatabaseServer",
            "metadata": {"name": "pg-main"},
            "spec": spec
        })
    };
    let good =
        server(json!({"host": "db.example.com", "adminSecretRef": {"namespace": "ops", "name": "pg-admin"}}));
    let defaulted = validator().validate(&good, None).unwrap();
    assert_eq!(defaulted["spec"]["port"], 5432);
    assert_eq!(defaulted["spec"]["maintenanceDatabase"], "postgres");
    assert_eq!(defaulted["spec"]["sslMode"], "prefer");

    assert_rejected(server(json!({"host": "db"})), "spec", "adminSecretRef");
    assert_rejected(
        server(json!({"host": "db", "port": 70000, "adminSecretRef": {"namespace": "ops", "name": "a"}})),
        "spec.port",
        "maximum",
    );
    assert_rejected(
        server(
            json!({"host": "db", "sslMode": "verify-ca", "adminSecretRef": {"namespace": "ops", "name": "a"}}),
        ),
        "spec.sslMode",
        "is not one of",
    );
    let mut namespaced = good.clone();
    namespaced["metadata"]["namespace"] = json!("default");
    assert_rejected(namespaced, "metadata.namespace", "cluster-scoped");
}
