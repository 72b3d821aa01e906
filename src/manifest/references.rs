//! Checks between documents that no single schema can express: a tenant's
//! server exists (or its selector matches one), and each server's admin
//! Secret is among the documents.

use std::collections::BTreeMap;

use kube::ResourceExt;
use kube::core::{Selector, SelectorExt};

use super::{Located, ManifestError, ManifestSet};
use crate::api::common::SecretReference;
use crate::api::{DatabaseServer, TenantDatabase};

impl ManifestSet {
    /// Problems with references between the loaded documents. With
    /// `admin_override`, admin Secrets are not required (the caller has
    /// credentials from elsewhere, e.g. `--admin-url`).
    pub fn reference_errors(&self, admin_override: bool) -> Vec<ManifestError> {
        let mut errors = Vec::new();
        for tenant in &self.tenants {
            if let Err((field, reason)) = self.place(&tenant.object) {
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

    /// The server a tenant goes on: `spec.server`, or else the first server
    /// (by name) that `spec.serverSelector` matches, or the first server of
    /// all. With no cluster there is no status to remember a choice in, so
    /// the choice is deterministic instead. The error names the field at fault.
    pub fn place(&self, tenant: &TenantDatabase) -> Result<&DatabaseServer, (&'static str, String)> {
        let spec = &tenant.spec;
        if let Some(name) = &spec.server {
            return self.server(name).map(|s| &s.object).ok_or_else(|| {
                (
                    "spec.server",
                    format!("DatabaseServer {name:?} is not among the given manifests"),
                )
            });
        }
        let mut candidates: Vec<&DatabaseServer> = self.servers.iter().map(|s| &s.object).collect();
        candidates.sort_by_key(|s| s.name_any());
        match &spec.server_selector {
            Some(selector) => {
                let selector = Selector::try_from(selector.clone())
                    .map_err(|e| ("spec.serverSelector", e.to_string()))?;
                candidates
                    .into_iter()
                    .find(|s| selector.matches(s.labels()))
                    .ok_or_else(|| {
                        (
                            "spec.serverSelector",
                            "no DatabaseServer among the given manifests matches".to_owned(),
                        )
                    })
            }
            None => candidates.into_iter().next().ok_or_else(|| {
                (
                    "spec.server",
                    "no DatabaseServer among the given manifests to place the tenant on".to_owned(),
                )
            }),
        }
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
