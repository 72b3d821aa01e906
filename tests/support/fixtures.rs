//! Fixtures the operator tests and the fault-injection suite share: a
//! PostgreSQL of a test's own with tenantdb's admin role, DatabaseServers
//! and TenantDatabases created as a user would.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, PostParams};
use serde_json::json;
use sqlx::{Connection, PgConnection};
use tenantdb::api::TenantDatabase;
use tenantdb::throwaway::ThrowawayPostgres;

use super::AdminLogin;
use super::cluster::TestCluster;

/// A PostgreSQL of the test's own, to stop and start, with an admin role.
pub async fn own_postgres(role: &str) -> (ThrowawayPostgres, AdminLogin) {
    own_postgres_with(role, &[]).await
}

/// Likewise, with extra server settings.
pub async fn own_postgres_with(role: &str, settings: &[&str]) -> (ThrowawayPostgres, AdminLogin) {
    let postgres = ThrowawayPostgres::start_with(settings).unwrap_or_else(|e| panic!("{e}"));
    with_admin(postgres, role).await
}

/// A PostgreSQL of the test's own that accepts TLS, its certificate signed
/// by a CA of its own (`ca_pem()`), with an admin role.
pub async fn own_tls_postgres(role: &str) -> (ThrowawayPostgres, AdminLogin) {
    let postgres = ThrowawayPostgres::start_with_tls().unwrap_or_else(|e| panic!("{e}"));
    with_admin(postgres, role).await
}

async fn with_admin(postgres: ThrowawayPostgres, role: &str) -> (ThrowawayPostgres, AdminLogin) {
    let password = tenantdb::password::generate();
    let mut conn = PgConnection::connect(&postgres.superuser_url()).await.unwrap();
    let ident = tenantdb::sql::Ident::parse(role).unwrap();
    sqlx::query(tenantdb::sql::create_admin_role(
        &ident,
        &tenantdb::sql::ScramVerifier::generate(&password),
    ))
    .execute(&mut conn)
    .await
    .unwrap();
    conn.close().await.unwrap();
    let admin = AdminLogin {
        user: role.into(),
        password,
        host: postgres.host().into(),
        port: postgres.port(),
    };
    (postgres, admin)
}

/// A PostgreSQL of the test's own that counts statements
/// (pg_stat_statements), with an admin role, and a superuser connection
/// to read the counts with ([`admin_statements`]).
pub async fn own_counting_postgres(role: &str) -> (ThrowawayPostgres, AdminLogin, PgConnection) {
    let (postgres, admin) = own_postgres_with(role, &["shared_preload_libraries=pg_stat_statements"]).await;
    let mut superuser = PgConnection::connect(&postgres.superuser_url()).await.unwrap();
    sqlx::query("CREATE EXTENSION pg_stat_statements")
        .execute(&mut superuser)
        .await
        .unwrap();
    (postgres, admin, superuser)
}

/// Forgets the statements counted so far.
pub async fn reset_statements(superuser: &mut PgConnection) {
    sqlx::query("SELECT pg_stat_statements_reset()")
        .execute(&mut *superuser)
        .await
        .unwrap();
}

/// The statements role `admin` ran since the last reset: text → calls.
pub async fn admin_statements(superuser: &mut PgConnection, admin: &str) -> BTreeMap<String, i64> {
    sqlx::query_as::<_, (String, i64)>(
        "SELECT s.query, s.calls FROM pg_stat_statements s JOIN pg_roles r ON r.oid = s.userid
          WHERE r.rolname = $1",
    )
    .bind(admin)
    .fetch_all(&mut *superuser)
    .await
    .unwrap()
    .into_iter()
    .collect()
}

/// A DatabaseServer (named `name`) with its admin Secret, for `admin`'s server.
pub async fn add_server(cluster: &TestCluster, name: &str, admin: &AdminLogin) {
    add_server_with(cluster, name, admin, json!({})).await;
}

/// Likewise, with more fields in its spec.
pub async fn add_server_with(
    cluster: &TestCluster,
    name: &str,
    admin: &AdminLogin,
    extra: serde_json::Value,
) {
    let ops = cluster.namespace("ops").await;
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": "pg-admin"},
        "stringData": {"username": admin.user, "password": admin.password}
    }))
    .unwrap();
    Api::<Secret>::namespaced(cluster.client.clone(), &ops)
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
    let mut spec = json!({"host": admin.host, "port": admin.port, "sslMode": "disable",
                          "adminSecretRef": {"namespace": ops, "name": "pg-admin"}});
    for (key, value) in extra.as_object().unwrap() {
        spec[key] = value.clone();
    }
    let server = serde_json::from_value(json!({
        "apiVersion": "tenantdb.io/v1alpha1", "kind": "DatabaseServer",
        "metadata": {"name": name},
        "spec": spec
    }))
    .unwrap();
    Api::<tenantdb::api::DatabaseServer>::all(cluster.client.clone())
        .create(&PostParams::default(), &server)
        .await
        .unwrap();
}

pub async fn add_tenant(cluster: &TestCluster, namespace: &str, name: &str, spec: serde_json::Value) {
    let tenant: TenantDatabase = serde_json::from_value(json!({
        "apiVersion": "tenantdb.io/v1alpha1", "kind": "TenantDatabase",
        "metadata": {"name": name}, "spec": spec
    }))
    .unwrap();
    Api::<TenantDatabase>::namespaced(cluster.client.clone(), namespace)
        .create(&PostParams::default(), &tenant)
        .await
        .unwrap();
}

pub fn condition<'a>(
    tenant: &'a TenantDatabase,
    type_: &str,
) -> Option<&'a k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition> {
    tenant
        .status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
}

/// A CacheServer `name` for Redis at `host:port`, whose admin Secret (in a
/// namespace of its own) holds `username`/`password`.
pub async fn add_cache_server(
    cluster: &TestCluster,
    name: &str,
    address: (&str, u16),
    credentials: (&str, &str),
) {
    add_cache_server_with(cluster, name, address, credentials, json!({})).await;
}

/// Likewise, with `extra` merged into its spec (`tls`, say).
pub async fn add_cache_server_with(
    cluster: &TestCluster,
    name: &str,
    (host, port): (&str, u16),
    (username, password): (&str, &str),
    extra: serde_json::Value,
) {
    let ops = cluster.namespace("cache-ops").await;
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": "redis-admin"},
        "stringData": {"username": username, "password": password}
    }))
    .unwrap();
    Api::<Secret>::namespaced(cluster.client.clone(), &ops)
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
    let mut spec =
        json!({"host": host, "port": port, "adminSecretRef": {"namespace": ops, "name": "redis-admin"}});
    if let (Some(spec), Some(extra)) = (spec.as_object_mut(), extra.as_object()) {
        spec.extend(extra.clone());
    }
    let server = serde_json::from_value(json!({
        "apiVersion": "tenantdb.io/v1alpha1", "kind": "CacheServer",
        "metadata": {"name": name},
        "spec": spec
    }))
    .unwrap();
    Api::<tenantdb::api::CacheServer>::all(cluster.client.clone())
        .create(&PostParams::default(), &server)
        .await
        .unwrap();
}
