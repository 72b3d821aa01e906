//! One bounded admin pool per `DatabaseServer`, shared by all its tenants
//! and rebuilt only when the server's address or credentials change.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::Mutex;

use sqlx::PgPool;
use sqlx::postgres::PgConnectOptions;

use crate::admin_access::{self, AdminCredentials, MAX_ADMIN_CONNECTIONS};
use crate::api::DatabaseServer;

#[derive(Default)]
pub struct AdminPools {
    pools: Mutex<HashMap<String, (u64, PgPool, PgConnectOptions)>>,
}

impl AdminPools {
    /// The pool and connect options for `server` with `credentials`.
    pub fn get(&self, server: &DatabaseServer, credentials: &AdminCredentials) -> (PgPool, PgConnectOptions) {
        let name = server.metadata.name.clone().unwrap_or_default();
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        (
            &server.spec.host,
            server.spec.port,
            &server.spec.maintenance_database,
            format!("{:?}", server.spec.ssl_mode),
            &credentials.username,
            credentials.password.expose(),
        )
            .hash(&mut hasher);
        let fingerprint = hasher.finish();
        let mut pools = self.pools.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((existing, pool, options)) = pools.get(&name)
            && *existing == fingerprint
        {
            return (pool.clone(), options.clone());
        }
        let options = admin_access::connect_options(&server.spec, credentials, None);
        let pool = admin_access::admin_pool(options.clone(), MAX_ADMIN_CONNECTIONS);
        if let Some((_, old, _)) = pools.insert(name, (fingerprint, pool.clone(), options.clone())) {
            tokio::spawn(async move { old.close().await });
        }
        (pool, options)
    }

    /// Closes every pool (on shutdown).
    pub async fn close_all(&self) {
        let pools: Vec<PgPool> = {
            let mut pools = self.pools.lock().unwrap_or_else(|p| p.into_inner());
            pools.drain().map(|(_, (_, pool, _))| pool).collect()
        };
        for pool in pools {
            pool.close().await;
        }
    }
}
