//! Step two of the tenant pipeline: what a reconcile reads besides its
//! server — whether the server admits the tenant's namespace, the admin
//! credentials, the spec resolved against the server, and the connection
//! Secret with the password it holds.
//!
//! I/O: reads only. The caches (servers, Namespace labels, connection
//! Secrets, the health monitor's findings) serve the steady state; the API
//! server is asked only where a cached answer could do harm — a connection
//! Secret the cache does not show (one just written may not be cached yet,
//! and a wrong "missing" would set a new password), a Secret whose password
//! is about to be set on the role again (another replica may just have
//! rotated it), and an admin Secret on first use. No SQL, no writes.

use std::sync::Arc;

use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::reflector::ObjectRef;

use super::{Failure, key};
use crate::admin_access::{AdminCredentials, Password};
use crate::api::{DatabaseServer, TenantDatabase};
use crate::connection_secret;
use crate::operator::context::Context;
use crate::operator::placement::{self, refuse};
use crate::operator::{OperatorError, Stores};
use crate::reconcile::{self, Desired, StoredPassword};

/// What reaching the tenant's server needs.
pub struct Access {
    pub server: Arc<DatabaseServer>,
    pub credentials: AdminCredentials,
    /// The server's CA certificate (`spec.caSecretRef`), if it names one.
    pub ca: Option<Vec<u8>>,
    pub desired: Desired,
    /// The tenant's cache, once its step ([`super::cache`]) made it ready.
    pub cache: Option<super::cache::CacheAccess>,
}

/// The connection Secret as found, and what its password means.
pub struct SecretState {
    pub existing: Option<Secret>,
    /// The password it holds.
    password: Option<Password>,
    /// The last login with the Secret's password was refused: someone
    /// changed the role's password behind tenantdb's back, and provisioning
    /// sets the Secret's password on the role again. Read fresh.
    pub rejected: bool,
}

impl SecretState {
    /// The password for planning: found, found and refused, or missing.
    pub fn stored(&self) -> StoredPassword<'_> {
        match &self.password {
            Some(password) if self.rejected => StoredPassword::Rejected(password),
            Some(password) => StoredPassword::Found(password),
            None => StoredPassword::Missing,
        }
    }
}

/// The server a tenant being deleted is on: the one recorded, else (a
/// tenant never placed) `spec.server`. No placement happens on the way out.
pub fn server_to_clean(tenant: &TenantDatabase, stores: &Stores) -> Result<Arc<DatabaseServer>, Failure> {
    let refused = |reason: &'static str, message: String| Failure {
        reason,
        message,
        permanent: true,
    };
    let name = tenant
        .status
        .as_ref()
        .and_then(|s| s.server.clone())
        .or_else(|| tenant.spec.server.clone())
        .ok_or_else(|| refused("NotPlaced", "the tenant was never placed on a server".into()))?;
    stores
        .servers
        .get(&ObjectRef::new(&name))
        .ok_or_else(|| refused("ServerNotFound", format!("DatabaseServer {name} not found")))
}

/// Checks `server` admits the tenant's namespace (not when `deleting`: the
/// tenant's database was admitted when it was made), reads the admin
/// credentials and resolves the spec. The inner error is a failure to
/// report.
pub async fn access(
    tenant: &TenantDatabase,
    ctx: &Context,
    stores: &Stores,
    server: Arc<DatabaseServer>,
    deleting: bool,
) -> Result<Result<Access, Failure>, OperatorError> {
    let namespace = tenant.namespace().unwrap_or_default();
    if !deleting && !placement::admits(&server, &stores.namespace_labels(&namespace)) {
        return refuse(
            "NamespaceNotAllowed",
            format!(
                "DatabaseServer {} does not admit tenants from namespace {namespace} (spec.allowedNamespaces)",
                server.name_any()
            ),
        );
    }
    let reference = &server.spec.admin_secret_ref;
    let credentials = match ctx.admin_credentials(reference).await? {
        Some(Ok(credentials)) => credentials,
        Some(Err(error)) => return refuse("AdminSecretInvalid", error.to_string()),
        None => {
            return refuse(
                "AdminSecretMissing",
                format!(
                    "admin Secret {}/{} of DatabaseServer {} not found",
                    reference.namespace,
                    reference.name,
                    server.name_any()
                ),
            );
        }
    };
    let ca = match ctx.server_ca(&server).await? {
        Ok(ca) => ca,
        Err(message) => return refuse("CaSecretMissing", message),
    };
    match reconcile::resolve_all(tenant, &server) {
        Ok(desired) => Ok(Ok(Access {
            server,
            credentials,
            ca,
            desired,
            cache: None,
        })),
        Err(problems) => {
            let all: Vec<String> = problems.iter().map(ToString::to_string).collect();
            refuse("InvalidSpec", all.join("; "))
        }
    }
}

/// The tenant's connection Secret (refused when it exists and another
/// object owns it).
pub async fn secret(
    tenant: &TenantDatabase,
    ctx: &Context,
    stores: &Stores,
    desired: &Desired,
) -> Result<Result<SecretState, Failure>, OperatorError> {
    let namespace = tenant.namespace().unwrap_or_default();
    // A decision that overwrites credentials reads the Secret fresh.
    let rejected = ctx.health.password_rejected(&key(tenant));
    let cached = stores
        .secret(&namespace, &desired.secret_name)
        .filter(|_| !rejected);
    let existing = match cached {
        Some(secret) => Some(secret.as_ref().clone()),
        None => {
            let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &namespace);
            secrets.get_opt(&desired.secret_name).await?
        }
    };
    if let Some(secret) = &existing
        && !owned_by(secret, tenant)
    {
        return refuse(
            "SecretConflict",
            format!(
                "Secret {namespace}/{} exists and is not owned by this TenantDatabase; set spec.secretName to another name",
                desired.secret_name
            ),
        );
    }
    let password = existing.as_ref().and_then(connection_secret::password_of);
    let rejected = rejected && password.is_some();
    Ok(Ok(SecretState {
        existing,
        password,
        rejected,
    }))
}

/// Whether `tenant` is the controlling owner of `secret`.
pub fn owned_by(secret: &Secret, tenant: &TenantDatabase) -> bool {
    let uid = tenant.metadata.uid.as_deref();
    secret
        .owner_references()
        .iter()
        .any(|r| Some(r.uid.as_str()) == uid && r.controller == Some(true))
}
