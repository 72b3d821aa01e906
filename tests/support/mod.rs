//! Shared test support: the PostgreSQL server integration tests talk to.
//!
//! `TENANTDB_TEST_DATABASE_URL`, when set, names an existing server (a URL
//! for a role with CREATEDB and CREATEROLE); otherwise each test binary starts
//! one throwaway cluster, shared by its tests and removed when it exits.
//! There is no silent skip: without PostgreSQL binaries the tests fail with
//! instructions.

#![allow(dead_code)] // each test binary uses its own part of the support code

use std::sync::OnceLock;

use tenantdb::throwaway::ThrowawayPostgres;

pub struct TestServer {
    pub url: String,
    _cluster: Option<ThrowawayPostgres>,
}

/// The server for this test binary, started on first use.
pub fn server() -> &'static TestServer {
    static SERVER: OnceLock<TestServer> = OnceLock::new();
    SERVER.get_or_init(|| match std::env::var("TENANTDB_TEST_DATABASE_URL") {
        Ok(url) if !url.is_empty() => TestServer { url, _cluster: None },
        _ => {
            let cluster = ThrowawayPostgres::start().unwrap_or_else(|e| panic!("{e}"));
            TestServer {
                url: cluster.superuser_url(),
                _cluster: Some(cluster),
            }
        }
    })
}

/// A single connection to the test server's maintenance database.
pub async fn connect() -> sqlx::PgConnection {
    use sqlx::Connection;
    sqlx::PgConnection::connect(&server().url)
        .await
        .unwrap_or_else(|e| panic!("connecting to the test server: {e}"))
}
