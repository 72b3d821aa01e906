//! Checks between documents that no single schema can express: a tenant's
//! server exists (or its selector matches one), and each server's admin
//! Secret is among the documents.

use std::collections::BTreeMap;

use kube::ResourceExt;
use kube::core::{Selector, SelectorExt};

use super::{Located, ManifestError, ManifestSet};
use crate::api::DatabaseServer;
use crate::api::common::SecretReference;

impl ManifestSet {
    /// Problems with references between the loaded documents. With
    /// `admin_override`, admin Secrets are not required (the caller has
    /// credentials from elsewhere, e.g. `--admin-url`).
    pub fn reference_errors(&self, admin_override: bool) -> Vec<ManifestError> {
        let mut errors = Vec::new();
        for tenant in &self.tenants {
            let spec = &tenant.object.spec;
            let problem = match (&spec.server, &spec.server_selector) {
                (Some(name), _) if self.server(name).is_none() => Some((
                    "spec.server",
                    format!("DatabaseServer {name:?} is not among the given manifests"),
                )),
                (None, Some(selector)) => match Selector::try_from(selector.clone()) {
                    Err(e) => Some(("spec.serverSelector", e.to_string())),
                    Ok(selector) if !self.servers.iter().any(|s| selector.matches(s.object.labels())) => {
                        Some((
                            "spec.serverSelector",
                            "no DatabaseServer among the given manifests matches".to_owned(),
                        ))
                    }
                    Ok(_) => None,
                },
                (None, None) if self.servers.is_empty() => Some((
                    "spec.server",
                    "no DatabaseServer among the given manifests to place the tenant on".to_owned(),
                )),
                _ => None,
            };
            if let Some((field, reason)) = problem {
                errors.push(ManifestError {
                    origin: tenant.origin.clone(),
                    field: field.into(),
                    reason,
                });
            }
        }
        if !admin_override {
            for server in &self.servers {
                let reference = &server.object.spec.admin_secret_ref;
                if self.secret(reference).is_none() {
                    errors.push(ManifestError {
                        origin: server.origin.clone(),
                        field: "spec.adminSecretRef".into(),
                        reason: format!(
                            "Secret {}/{} is not among the given manifests (add it, or give --admin-url)",
                            reference.namespace, reference.name
                        ),
                    });
                }
            }
        }
        errors
    }

    /// The DatabaseServer called `name`, if loaded.
    pub fn server(&self, name: &str) -> Option<&Located<DatabaseServer>> {
        self.servers.iter().find(|s| s.object.name_any() == name)
    }

    /// The Secret `reference` points at, if loaded.
    pub fn secret(&self, reference: &SecretReference) -> Option<&k8s_openapi::api::core::v1::Secret> {
        self.secrets.iter().map(|s| &s.object).find(|s| {
            s.metadata.name.as_deref() == Some(&reference.name)
                && s.namespace().as_deref() == Some(&reference.namespace)
        })
    }

    /// How many documents of each kind were loaded, for summaries.
    pub fn counts(&self) -> BTreeMap<&'static str, usize> {
        BTreeMap::from([
            ("DatabaseServer", self.servers.len()),
            ("Secret", self.secrets.len()),
            ("TenantDatabase", self.tenants.len()),
        ])
    }
}
