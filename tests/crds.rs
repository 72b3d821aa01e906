//! The CRDs under `crds/` are exactly what the Rust types generate, and the
//! generated schema is one a real API server accepts: structural, with CEL
//! rules that compile and fit the cost budget.

use std::path::Path;
use std::process::Command;

use kube::core::cel::{ScopeContext, analyze_rule, compile_schema};
use serde_json::Value;

const REGENERATE: &str = "regenerate with `make crds`";

#[test]
fn checked_in_crds_match_the_rust_types() {
    let files = tenantdb::api::crd_files().unwrap();
    assert_eq!(files.len(), 3);
    // The repository's copy, and the Helm chart's (Helm installs crds/ first).
    for dir in ["crds", "charts/tenantdb/crds"] {
        for (name, generated) in &files {
            let path = Path::new(dir).join(name);
            let on_disk = std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("{}: {e}; {REGENERATE}", path.display()));
            assert!(
                on_disk == *generated,
                "{} differs from the Rust types; {REGENERATE}",
                path.display()
            );
        }
        let mut names: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        let expected: Vec<_> = files.iter().map(|(n, _)| n.clone()).collect();
        assert_eq!(names, expected, "{dir}/ holds exactly the generated files");
    }
}

#[test]
fn the_charts_app_version_is_the_crate_version() {
    let chart: serde_json::Value =
        serde_norway::from_str(&std::fs::read_to_string("charts/tenantdb/Chart.yaml").unwrap()).unwrap();
    assert_eq!(chart["appVersion"], env!("CARGO_PKG_VERSION"));
}

#[test]
fn tenantdb_crd_prints_the_checked_in_files() {
    let output = Command::new(env!("CARGO_BIN_EXE_tenantdb"))
        .arg("crd")
        .output()
        .unwrap();
    assert!(output.status.success());
    let mut on_disk = String::new();
    for name in [
        "cacheservers.tenantdb.io.yaml",
        "databaseservers.tenantdb.io.yaml",
        "tenantdatabases.tenantdb.io.yaml",
    ] {
        on_disk.push_str(&std::fs::read_to_string(Path::new("crds").join(name)).unwrap());
    }
    assert_eq!(String::from_utf8(output.stdout).unwrap(), on_disk);
}

fn schemas() -> Vec<(String, Value)> {
    tenantdb::api::crds()
        .into_iter()
        .map(|crd| {
            let name = crd.metadata.name.clone().unwrap();
            let schema = crd.spec.versions[0]
                .schema
                .clone()
                .unwrap()
                .open_api_v3_schema
                .unwrap();
            (name, serde_json::to_value(schema).unwrap())
        })
        .collect()
}

/// Kubernetes' structural schema rules, as far as they concern generated
/// schemas: every node states its type, and no type-bearing `anyOf`,
/// `oneOf`, `allOf`, `not` or `$ref` appears.
fn structural_violations(schema: &Value, path: &str, out: &mut Vec<String>) {
    let Value::Object(node) = schema else { return };
    let typed = node.contains_key("type")
        || node.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true))
        || node.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true));
    if !typed {
        out.push(format!("{path}: no type"));
    }
    for keyword in ["anyOf", "oneOf", "allOf", "not", "$ref"] {
        if node.contains_key(keyword) {
            out.push(format!("{path}: uses {keyword}"));
        }
    }
    if let Some(Value::Object(properties)) = node.get("properties") {
        for (name, child) in properties {
            structural_violations(child, &format!("{path}.{name}"), out);
        }
    }
    if let Some(items) = node.get("items") {
        structural_violations(items, &format!("{path}[]"), out);
    }
    if let Some(additional @ Value::Object(_)) = node.get("additionalProperties") {
        structural_violations(additional, &format!("{path}{{}}"), out);
    }
}

#[test]
fn generated_schemas_are_structural() {
    for (name, schema) in schemas() {
        let mut violations = Vec::new();
        structural_violations(&schema, "", &mut violations);
        assert!(violations.is_empty(), "{name} is not structural: {violations:#?}");
    }
}

#[test]
fn the_structural_check_catches_an_untyped_property() {
    let mut violations = Vec::new();
    let schema = serde_json::json!({"type": "object", "properties": {"a": {"anyOf": [{"type": "string"}]}}});
    structural_violations(&schema, "", &mut violations);
    assert_eq!(violations, [".a: no type", ".a: uses anyOf"]);
}

/// Every `x-kubernetes-validations` rule with the schema node it sits on.
fn rules(schema: &Value, out: &mut Vec<(String, Value)>) {
    let Value::Object(node) = schema else { return };
    if let Some(Value::Array(list)) = node.get("x-kubernetes-validations") {
        for rule in list {
            out.push((rule["rule"].as_str().unwrap().to_owned(), schema.clone()));
        }
    }
    for key in ["properties"] {
        if let Some(Value::Object(children)) = node.get(key) {
            children.values().for_each(|c| rules(c, out));
        }
    }
    if let Some(items) = node.get("items") {
        rules(items, out);
    }
}

#[test]
fn cel_rules_compile_and_fit_the_api_servers_cost_budget() {
    let mut all = Vec::new();
    for (_, schema) in schemas() {
        rules(&schema, &mut all);
    }
    assert!(
        all.len() >= 7,
        "the immutability, range and index rules are present: {}",
        all.len()
    );
    for (rule, node) in all {
        let compiled = compile_schema(&node);
        assert!(
            !compiled.has_errors(),
            "{rule}: {:?}",
            compiled.compilation_errors()
        );
        let warnings = analyze_rule(&rule, &compiled, ScopeContext::CrdValidation);
        assert!(warnings.is_empty(), "{rule}: {warnings:?}");
    }
}

#[test]
fn printer_columns_are_the_documented_ones() {
    let columns = |crd: &k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition| {
        crd.spec.versions[0]
            .additional_printer_columns
            .iter()
            .flatten()
            .map(|c| c.name.to_uppercase())
            .collect::<Vec<_>>()
    };
    let crds = tenantdb::api::crds();
    let server = crds
        .iter()
        .find(|c| c.spec.names.kind == "DatabaseServer")
        .unwrap();
    let tenant = crds
        .iter()
        .find(|c| c.spec.names.kind == "TenantDatabase")
        .unwrap();
    assert_eq!(
        columns(tenant),
        [
            "TENANT",
            "SERVER",
            "DATABASE",
            "PHASE",
            "CONNECTIONS",
            "LATENCY",
            "AGE"
        ]
    );
    assert_eq!(
        columns(server),
        ["HOST", "READY", "DATABASES", "CONNECTIONS", "AGE"]
    );
    assert_eq!(
        tenant.spec.names.short_names.as_deref(),
        Some(&["tdb".to_owned()][..])
    );
    assert_eq!(
        server.spec.names.short_names.as_deref(),
        Some(&["dbs".to_owned()][..])
    );
    assert_eq!(tenant.spec.scope, "Namespaced");
    assert_eq!(server.spec.scope, "Cluster");
    for crd in [server, tenant] {
        let version = &crd.spec.versions[0];
        assert!(
            version
                .subresources
                .as_ref()
                .and_then(|s| s.status.as_ref())
                .is_some(),
            "status subresource"
        );
    }
}

#[test]
fn the_cost_check_catches_an_unbounded_rule() {
    let node = serde_json::json!({
        "type": "array",
        "items": {"type": "string"},
        "x-kubernetes-validations": [{"rule": "self.all(x, self.all(y, x.startsWith(y)))"}]
    });
    let compiled = compile_schema(&node);
    let warnings = analyze_rule(
        "self.all(x, self.all(y, x.startsWith(y)))",
        &compiled,
        ScopeContext::CrdValidation,
    );
    assert!(
        !warnings.is_empty(),
        "an unbounded nested comprehension is flagged"
    );
}
