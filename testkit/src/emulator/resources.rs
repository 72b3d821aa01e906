//! The resource types the emulator serves: a few built-in ones the operator
//! and `kubectl` need, plus every CustomResourceDefinition created in it.

use std::sync::Arc;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use serde_json::{Value, json};

use tenantdb::manifest::SchemaValidator;

/// A printer column, as in a CRD's `additionalPrinterColumns`.
#[derive(Clone, Debug)]
pub struct PrinterColumn {
    pub name: String,
    pub type_: String,
    pub json_path: String,
    pub description: String,
    pub priority: i32,
}

/// One served resource type (one version of it).
#[derive(Clone)]
pub struct ResourceType {
    pub group: String,
    pub version: String,
    pub kind: String,
    pub plural: String,
    pub singular: String,
    pub short_names: Vec<String>,
    pub categories: Vec<String>,
    pub namespaced: bool,
    pub status_subresource: bool,
    pub printer_columns: Vec<PrinterColumn>,
    /// Schema and CEL rules, for custom resources.
    pub validator: Option<Arc<SchemaValidator>>,
    /// The CRD this type comes from, if any.
    pub crd: Option<String>,
}

impl ResourceType {
    fn builtin(group: &str, version: &str, kind: &str, plural: &str, namespaced: bool) -> Self {
        Self {
            group: group.into(),
            version: version.into(),
            kind: kind.into(),
            plural: plural.into(),
            singular: kind.to_lowercase(),
            short_names: Vec::new(),
            categories: Vec::new(),
            namespaced,
            status_subresource: false,
            printer_columns: Vec::new(),
            validator: None,
            crd: None,
        }
    }

    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// `plural.group`, the way Kubernetes names a resource in messages.
    pub fn qualified(&self) -> String {
        if self.group.is_empty() {
            self.plural.clone()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    /// The discovery entries (the resource and its status subresource).
    pub fn discovery(&self) -> Vec<Value> {
        let verbs = [
            "create",
            "delete",
            "deletecollection",
            "get",
            "list",
            "patch",
            "update",
            "watch",
        ];
        let mut entries = vec![json!({
            "name": self.plural,
            "singularName": self.singular,
            "namespaced": self.namespaced,
            "kind": self.kind,
            "verbs": verbs,
            "shortNames": self.short_names,
            "categories": self.categories,
        })];
        if self.status_subresource {
            entries.push(json!({
                "name": format!("{}/status", self.plural),
                "singularName": "",
                "namespaced": self.namespaced,
                "kind": self.kind,
                "verbs": ["get", "patch", "update"],
            }));
        }
        entries
    }
}

/// The built-in types: what the operator, kube-runtime and `kubectl` use.
pub fn builtins() -> Vec<ResourceType> {
    let mut namespaces = ResourceType::builtin("", "v1", "Namespace", "namespaces", false);
    namespaces.short_names = vec!["ns".into()];
    namespaces.status_subresource = true;
    let mut crds = ResourceType::builtin(
        "apiextensions.k8s.io",
        "v1",
        "CustomResourceDefinition",
        "customresourcedefinitions",
        false,
    );
    crds.short_names = vec!["crd".into(), "crds".into()];
    crds.status_subresource = true;
    vec![
        namespaces,
        ResourceType::builtin("", "v1", "Secret", "secrets", true),
        ResourceType::builtin("", "v1", "ConfigMap", "configmaps", true),
        ResourceType::builtin("", "v1", "Event", "events", true),
        ResourceType::builtin("", "v1", "ServiceAccount", "serviceaccounts", true),
        ResourceType::builtin("events.k8s.io", "v1", "Event", "events", true),
        ResourceType::builtin("coordination.k8s.io", "v1", "Lease", "leases", true),
        crds,
    ]
}

/// The served versions of a CRD as resource types, validated against its schema.
pub fn from_crd(crd: &CustomResourceDefinition) -> Result<Vec<ResourceType>, String> {
    let name = crd.metadata.name.clone().unwrap_or_default();
    let validator =
        Arc::new(SchemaValidator::for_crds(std::slice::from_ref(crd)).map_err(|e| e.to_string())?);
    let names = &crd.spec.names;
    Ok(crd
        .spec
        .versions
        .iter()
        .filter(|v| v.served)
        .map(|version| ResourceType {
            group: crd.spec.group.clone(),
            version: version.name.clone(),
            kind: names.kind.clone(),
            plural: names.plural.clone(),
            singular: names
                .singular
                .clone()
                .unwrap_or_else(|| names.kind.to_lowercase()),
            short_names: names.short_names.clone().unwrap_or_default(),
            categories: names.categories.clone().unwrap_or_default(),
            namespaced: crd.spec.scope == "Namespaced",
            status_subresource: version
                .subresources
                .as_ref()
                .and_then(|s| s.status.as_ref())
                .is_some(),
            printer_columns: version
                .additional_printer_columns
                .iter()
                .flatten()
                .map(|c| PrinterColumn {
                    name: c.name.clone(),
                    type_: c.type_.clone(),
                    json_path: c.json_path.clone(),
                    description: c.description.clone().unwrap_or_default(),
                    priority: c.priority.unwrap_or(0),
                })
                .collect(),
            validator: Some(validator.clone()),
            crd: Some(name.clone()),
        })
        .collect())
}
