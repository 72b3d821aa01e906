//! The `tenantdb.io/v1alpha1` API: `TenantDatabase` and `DatabaseServer`,
//! and the CRDs generated from them.

pub mod common;
pub mod database_server;
pub mod duration;
pub mod tenant_database;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

pub use database_server::{DatabaseServer, DatabaseServerSpec, DatabaseServerStatus};
pub use tenant_database::{TenantDatabase, TenantDatabaseSpec, TenantDatabaseStatus};

/// Every CRD of the API, in the order `tenantdb crd` prints them.
pub fn crds() -> Vec<CustomResourceDefinition> {
    vec![DatabaseServer::crd(), TenantDatabase::crd()]
}

/// Each CRD as `(file name, YAML document)`: the files under `crds/`.
pub fn crd_files() -> Result<Vec<(String, String)>, serde_norway::Error> {
    crds()
        .into_iter()
        .map(|crd| {
            let name = format!("{}.yaml", crd.metadata.name.as_deref().unwrap_or_default());
            Ok((name, format!("---\n{}", serde_norway::to_string(&crd)?)))
        })
        .collect()
}

/// All CRDs as one multi-document YAML stream: the files of [`crd_files`],
/// concatenated in file-name order.
pub fn crds_yaml() -> Result<String, serde_norway::Error> {
    let mut files = crd_files()?;
    files.sort();
    Ok(files.into_iter().map(|(_, yaml)| yaml).collect())
}
