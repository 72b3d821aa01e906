//! Checks between documents that no single schema can express: a tenant's
//! server exists (or its selector matches one), so does its cache server
//! (`spec.cache.server`, or any CacheServer), and each server's admin
//! Secret is among the documents.

use std::collections::BTreeMap;

use kube::ResourceExt;
use kube::core::{Selector, SelectorExt};

use super::{AdminOverrides, Located, ManifestError, ManifestSet};
use crate::api::common::{SecretKeyReference, SecretReference};
use crate::api::{CacheServer, DatabaseServer, TenantDatabase};

impl ManifestSet {
    /// Problems with references between the loaded documents. Admin
    /// Secrets are not required for the kinds `overrides` gives
    /// credentials for (e.g. `--admin-url`).
    pub fn reference_errors(&self, overrides: AdminOverrides) -> Vec<ManifestError> {
        let mut errors = Vec::new();
        for tenant in &self.tenants {
            let placed = [
                self.place(&tenant.object).err(),
                self.place_cache(&tenant.object).and_then(Result::err),
            ];
            for (field, reason) in placed.into_iter().flatten() {
                errors.push(ManifestError {
                    origin: tenant.origin.clone(),
                    field: field.into(),
                    reason,
                });
            }
        }
        let missing = |reference: &SecretReference, flag: &str| {
            self.secret(reference).is_none().then(|| {
                format!(
                    "Secret {}/{} is not among the given manifests (add it, or give {flag})",
                    reference.namespace, reference.name
                )
            })
        };
        if !overrides.database {
            for server in &self.servers {
                if let Some(reason) = missing(&server.object.spec.admin_secret_ref, "--admin-url") {
                    errors.push(ManifestError {
                        origin: server.origin.clone(),
                        field: "spec.adminSecretRef".into(),
                        reason,
                    });
                }
            }
        }
        for server in &self.servers {
            if let Some(reference) = &server.object.spec.ca_secret_ref
                && let Err(reason) = self.secret_key(reference)
            {
                errors.push(ManifestError {
                    origin: server.origin.clone(),
                    field: "spec.caSecretRef".into(),
                    reason,
                });
            }
        }
        for cache in &self.caches {
            let tls = cache.object.spec.tls.as_ref();
            if let Some(reference) = tls.and_then(|t| t.ca_secret_ref.as_ref())
                && let Err(reason) = self.secret_key(reference)
            {
                errors.push(ManifestError {
                    origin: cache.origin.clone(),
                    field: "spec.tls.caSecretRef".into(),
                    reason,
                });
            }
        }
        if !overrides.cache {
            for cache in &self.caches {
                if let Some(reason) = missing(&cache.object.spec.admin_secret_ref, "--cache-admin-url") {
                    errors.push(ManifestError {
                        origin: cache.origin.clone(),
                        field: "spec.adminSecretRef".into(),
                        reason,
                    });
                }
            }
        }
        errors
    }

    /// The CacheServer a tenant's cache goes on, when it has `spec.cache`:
    /// `spec.cache.server`, or else the first CacheServer by name (with no
    /// cluster there are no Namespace labels to match `allowedNamespaces`
    /// against, nor a status to remember a choice in).
    pub fn place_cache(
        &self,
        tenant: &TenantDatabase,
    ) -> Option<Result<&CacheServer, (&'static str, String)>> {
        let cache = tenant.spec.cache.as_ref()?;
        Some(match &cache.server {
            Some(name) => self.cache(name).map(|c| &c.object).ok_or_else(|| {
                (
                    "spec.cache.server",
                    format!("CacheServer {name:?} is not among the given manifests"),
                )
            }),
            None => self
                .caches
                .iter()
                .map(|c| &c.object)
                .min_by_key(|c| c.name_any())
                .ok_or_else(|| {
                    (
                        "spec.cache.server",
                        "no CacheServer among the given manifests to place the cache on".to_owned(),
                    )
                }),
        })
    }

    /// The CacheServer called `name`, if loaded.
    pub fn cache(&self, name: &str) -> Option<&Located<CacheServer>> {
        self.caches.iter().find(|c| c.object.name_any() == name)
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

    /// The value of key `reference.key` in the Secret `reference` points
    /// at, or why there is none.
    pub fn secret_key(&self, reference: &SecretKeyReference) -> Result<Vec<u8>, String> {
        let secret = self
            .secret(&SecretReference {
                namespace: reference.namespace.clone(),
                name: reference.name.clone(),
            })
            .ok_or_else(|| {
                format!(
                    "Secret {}/{} is not among the given manifests",
                    reference.namespace, reference.name
                )
            })?;
        crate::connection_secret::key_of(secret, &reference.key).ok_or_else(|| {
            format!(
                "Secret {}/{} has no key {:?}",
                reference.namespace, reference.name, reference.key
            )
        })
    }

    /// How many documents of each kind were loaded, for summaries.
    pub fn counts(&self) -> BTreeMap<&'static str, usize> {
        BTreeMap::from([
            ("CacheServer", self.caches.len()),
            ("DatabaseServer", self.servers.len()),
            ("Secret", self.secrets.len()),
            ("TenantDatabase", self.tenants.len()),
        ])
    }
}
