//! Reading manifests from files the way the API server would accept them:
//! `load` splits YAML/JSON files into documents, `schema` checks each
//! document against the generated CRD schema (OpenAPI + CEL rules) and
//! applies its defaults, and `ManifestSet` sorts them into typed objects.
//!
//! Used by the command line (no cluster) and by tests; the operator itself
//! relies on the API server for the same checks.

mod load;
mod references;
pub mod schema;
mod whole_set;

use std::fmt;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::Secret;
use serde_json::Value;

use crate::api::{CacheServer, DatabaseServer, TenantDatabase};
pub use load::load_documents;
pub use schema::SchemaValidator;

/// Where a document came from: file and 1-based position in the file.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Origin {
    pub file: PathBuf,
    pub document: usize,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file.display(), self.document)
    }
}

/// One parsed document with its origin.
#[derive(Clone, Debug)]
pub struct Document {
    pub origin: Origin,
    pub value: Value,
}

/// A problem with one document, printed as `file:document: field: reason`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{origin}: {field}: {reason}")]
pub struct ManifestError {
    pub origin: Origin,
    /// Dotted path of the offending field (`spec.pool.maxConnections`), or
    /// `(document)` when the problem is the document as a whole.
    pub field: String,
    pub reason: String,
}

/// Error reading the files themselves (as opposed to their content).
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("reading {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path}: no .yaml, .yml or .json files found{}", if *subdirectories { " (it has subdirectories: give -R to read them too)" } else { "" })]
    NothingFound { path: PathBuf, subdirectories: bool },
}

/// Credentials given on the command line instead of the admin Secrets
/// among the manifests: `--admin-url` for every DatabaseServer,
/// `--cache-admin-url` for every CacheServer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AdminOverrides {
    pub database: bool,
    pub cache: bool,
}

/// A typed object from a manifest, with where it came from.
#[derive(Clone, Debug)]
pub struct Located<T> {
    pub origin: Origin,
    pub object: T,
}

/// The objects tenantdb understands, sorted by kind. Documents of other kinds
/// are ignored, so a directory can also hold the application's manifests.
#[derive(Clone, Debug, Default)]
pub struct ManifestSet {
    pub servers: Vec<Located<DatabaseServer>>,
    pub caches: Vec<Located<CacheServer>>,
    pub tenants: Vec<Located<TenantDatabase>>,
    pub secrets: Vec<Located<Secret>>,
    /// Tenants the schema refused (left out of `tenants`, never acted on),
    /// with the fields it named: their specs are still checked, so one run
    /// reports every problem of a document.
    pub refused_tenants: Vec<(Located<TenantDatabase>, Vec<String>)>,
}

impl ManifestSet {
    /// Loads every document under `paths` (directories below them too when
    /// `recursive`), validates the tenantdb ones against
    /// the CRD schema, and returns the valid objects with all problems found.
    /// A document with a problem is left out of the set, so nothing is ever
    /// done for it.
    pub fn load(
        paths: &[impl AsRef<Path>],
        recursive: bool,
        validator: &SchemaValidator,
    ) -> Result<(Self, Vec<ManifestError>), LoadError> {
        let (documents, mut errors) = load_documents(paths, recursive)?;
        let mut set = Self::default();
        for document in documents {
            if let Err(mut problems) = set.insert(document, validator) {
                errors.append(&mut problems);
            }
        }
        Ok((set, errors))
    }

    fn insert(&mut self, document: Document, validator: &SchemaValidator) -> Result<(), Vec<ManifestError>> {
        let Document { origin, value } = document;
        let whole = |reason: String| {
            vec![ManifestError {
                origin: origin.clone(),
                field: "(document)".into(),
                reason,
            }]
        };
        let api_version = value
            .get("apiVersion")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let kind = value.get("kind").and_then(Value::as_str).unwrap_or_default();
        if api_version.is_empty() || kind.is_empty() {
            return Err(whole(
                "not a Kubernetes object: apiVersion and kind are required".into(),
            ));
        }
        match (api_version, kind) {
            ("v1", "Secret") => {
                let secret = serde_json::from_value(value).map_err(|e| whole(e.to_string()))?;
                self.secrets.push(Located {
                    origin,
                    object: secret,
                });
            }
            (_, "TenantDatabase" | "DatabaseServer" | "CacheServer") if is_tenantdb(api_version) => {
                let value = match validator.validate(&value, None) {
                    Ok(value) => value,
                    Err(errors) => {
                        if kind == "TenantDatabase"
                            && let Ok(tenant) = serde_json::from_value(value)
                        {
                            let fields = errors.iter().map(|e| e.field.clone()).collect();
                            let refused = Located {
                                origin: origin.clone(),
                                object: tenant,
                            };
                            self.refused_tenants.push((refused, fields));
                        }
                        return Err(errors
                            .into_iter()
                            .map(|e| ManifestError {
                                origin: origin.clone(),
                                field: e.field,
                                reason: e.reason,
                            })
                            .collect());
                    }
                };
                if kind == "TenantDatabase" {
                    let tenant = serde_json::from_value(value).map_err(|e| whole(e.to_string()))?;
                    self.tenants.push(Located {
                        origin,
                        object: tenant,
                    });
                } else if kind == "CacheServer" {
                    let cache = serde_json::from_value(value).map_err(|e| whole(e.to_string()))?;
                    self.caches.push(Located {
                        origin,
                        object: cache,
                    });
                } else {
                    let server = serde_json::from_value(value).map_err(|e| whole(e.to_string()))?;
                    self.servers.push(Located {
                        origin,
                        object: server,
                    });
                }
            }
            _ if is_tenantdb(api_version) => {
                return Err(whole(format!("unknown kind {kind} in {api_version}")));
            }
            _ => {}
        }
        Ok(())
    }
}

fn is_tenantdb(api_version: &str) -> bool {
    api_version.starts_with("tenantdb.io/")
}
