//! The `tenantdb.io/v1alpha1` API: `TenantDatabase`, `DatabaseServer` and
//! `CacheServer`, and the CRDs generated from them.

pub mod cache_server;
pub mod common;
pub mod database_server;
pub mod duration;
pub mod tenant_database;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{CustomResourceDefinition, JSON};
use kube::CustomResourceExt;

pub use cache_server::{CacheServer, CacheServerSpec, CacheServerStatus};
pub use database_server::{DatabaseServer, DatabaseServerSpec, DatabaseServerStatus};
pub use tenant_database::{TenantDatabase, TenantDatabaseSpec, TenantDatabaseStatus};

/// Every CRD of the API, in the order `tenantdb crd` prints them.
pub fn crds() -> Vec<CustomResourceDefinition> {
    vec![
        unobserved_until_reconciled(CacheServer::crd()),
        unobserved_until_reconciled(DatabaseServer::crd()),
        unobserved_until_reconciled(TenantDatabase::crd()),
    ]
}

/// A new object reads `status: {observedGeneration: 0}` until the operator
/// writes its status, so kstatus (Flux's `wait`, kpt) sees generation 1 not
/// yet observed — `InProgress` — instead of an object without conditions,
/// which it calls `Current`: a tenant no operator has looked at yet must not
/// pass for healthy. Schema defaults cost nothing in etcd: the API server
/// applies them on every read.
fn unobserved_until_reconciled(mut crd: CustomResourceDefinition) -> CustomResourceDefinition {
    for version in &mut crd.spec.versions {
        let status = version
            .schema
            .as_mut()
            .and_then(|s| s.open_api_v3_schema.as_mut())
            .and_then(|s| s.properties.as_mut())
            .and_then(|p| p.get_mut("status"));
        if let Some(status) = status {
            status.default = Some(JSON(serde_json::json!({})));
            if let Some(observed) = status
                .properties
                .as_mut()
                .and_then(|p| p.get_mut("observedGeneration"))
            {
                observed.default = Some(JSON(serde_json::json!(0)));
            }
        }
    }
    crd
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
