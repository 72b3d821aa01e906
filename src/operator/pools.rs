//! Per `DatabaseServer`: one bounded admin pool shared by all its tenants,
//! and the health monitor's own connection, both rebuilt only when the
//! server's address, credentials or CA certificate change. No I/O here: pools connect
//! lazily.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::Mutex;

use sqlx::PgPool;
use sqlx::postgres::PgConnectOptions;

use crate::admin_access::{self, AdminCredentials, MAX_ADMIN_CONNECTIONS};
use crate::api::DatabaseServer;

struct ServerPools {
    fingerprint: u64,
    admin: PgPool,
    health: PgPool,
    options: PgConnectOptions,
}

#[derive(Default)]
pub struct AdminPools {
    pools: Mutex<HashMap<String, ServerPools>>,
}

impl AdminPools {
    /// The admin pool and connect options for `server` with `credentials`
    /// (and `ca`, its `caSecretRef`'s certificate).
    pub fn get(
        &self,
        server: &DatabaseServer,
        credentials: &AdminCredentials,
        ca: Option<&[u8]>,
    ) -> (PgPool, PgConnectOptions) {
        self.with(server, credentials, ca, |p| (p.admin.clone(), p.options.clone()))
    }

    /// The health monitor's connection to `server`, apart from the admin
    /// pool ([`admin_access::health_pool`]).
    pub fn health(
        &self,
        server: &DatabaseServer,
        credentials: &AdminCredentials,
        ca: Option<&[u8]>,
    ) -> PgPool {
        self.with(server, credentials, ca, |p| p.health.clone())
    }

    fn with<T>(
        &self,
        server: &DatabaseServer,
        credentials: &AdminCredentials,
        ca: Option<&[u8]>,
        read: impl FnOnce(&ServerPools) -> T,
    ) -> T {
        let name = server.metadata.name.clone().unwrap_or_default();
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        (
            &server.spec.host,
            server.spec.port,
            &server.spec.maintenance_database,
            format!("{:?}", server.spec.ssl_mode),
            &credentials.username,
            credentials.password.expose(),
            ca,
        )
            .hash(&mut hasher);
        let fingerprint = hasher.finish();
        let mut pools = self.pools.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(existing) = pools.get(&name)
            && existing.fingerprint == fingerprint
        {
            return read(existing);
        }
        let options = admin_access::connect_options(&server.spec, credentials, ca.map(<[u8]>::to_vec));
        let fresh = ServerPools {
            fingerprint,
            admin: admin_access::admin_pool(options.clone(), MAX_ADMIN_CONNECTIONS),
            health: admin_access::health_pool(options.clone()),
            options,
        };
        let value = read(&fresh);
        if let Some(old) = pools.insert(name, fresh) {
            tokio::spawn(async move {
                old.admin.close().await;
                old.health.close().await;
            });
        }
        value
    }

    /// Closes every pool (on shutdown).
    pub async fn close_all(&self) {
        let pools: Vec<ServerPools> = {
            let mut pools = self.pools.lock().unwrap_or_else(|p| p.into_inner());
            pools.drain().map(|(_, pools)| pools).collect()
        };
        for pools in pools {
            pools.admin.close().await;
            pools.health.close().await;
        }
    }
}
