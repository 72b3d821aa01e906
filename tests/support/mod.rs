//! Shared test support: the PostgreSQL server integration tests talk to.
//!
//! `TENANTDB_TEST_DATABASE_URL`, when set, names an existing server (a URL
//! for a role with CREATEDB and CREATEROLE); otherwise each test binary starts
//! one throwaway cluster, shared by its tests and removed when it exits.
//! There is no silent skip: without PostgreSQL binaries the tests fail with
//! instructions.

#![allow(dead_code)] // each test binary uses its own part of the support code

pub mod cluster;
pub mod fixtures;
/// The real control plane lives in the test kit, which the benchmark shares.
pub use tenantdb_testkit::control_plane;
pub mod hostile;
pub mod link;

use std::sync::OnceLock;

use sqlx::Connection;
use sqlx::postgres::PgConnectOptions;
use tenantdb::sql::{self, Ident, ScramVerifier};
use tenantdb::throwaway::ThrowawayPostgres;
use tokio::sync::OnceCell;

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

/// A single connection to the test server's maintenance database, as the
/// server's own user (the superuser of a throwaway cluster): for setting up
/// drift and for inspecting the catalog.
pub async fn connect() -> sqlx::PgConnection {
    sqlx::PgConnection::connect(&server().url)
        .await
        .unwrap_or_else(|e| panic!("connecting to the test server: {e}"))
}

/// Options for the test server's URL.
pub fn server_options() -> PgConnectOptions {
    server().url.parse().expect("the test server URL parses")
}

/// The administrative role tenantdb uses in tests.
#[derive(Clone, Debug)]
pub struct AdminLogin {
    pub user: String,
    pub password: String,
    pub host: String,
    pub port: u16,
}

impl AdminLogin {
    /// Connect options as tenantdb builds them: pinned by
    /// `tenantdb::admin_session`, like every admin session.
    pub fn options(&self) -> PgConnectOptions {
        tenantdb::admin_session::pinned(
            PgConnectOptions::new_without_pgpass()
                .host(&self.host)
                .port(self.port)
                .username(&self.user)
                .password(&self.password)
                .database("postgres"),
        )
    }

    pub fn url(&self) -> String {
        format!(
            "postgres://{}:{}@{}:{}/postgres",
            self.user, self.password, self.host, self.port
        )
    }
}

/// The test server as manifests: its admin Secret `ops/pg-admin` and the
/// DatabaseServer `test-pg` (no TLS), for the command line.
pub async fn server_manifests() -> String {
    let admin = admin().await;
    format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: pg-admin, namespace: ops}}\nstringData: {{username: {}, password: {}}}\n\
         ---\napiVersion: tenantdb.io/v1alpha1\nkind: DatabaseServer\nmetadata: {{name: test-pg}}\n\
         spec: {{host: {}, port: {}, sslMode: disable, adminSecretRef: {{namespace: ops, name: pg-admin}}}}\n",
        admin.user, admin.password, admin.host, admin.port
    )
}

/// LOGIN CREATEDB CREATEROLE and not superuser, like production. With
/// `TENANTDB_TEST_DATABASE_URL` that URL's role is used as it is.
pub async fn admin() -> &'static AdminLogin {
    static ADMIN: OnceCell<AdminLogin> = OnceCell::const_new();
    ADMIN
        .get_or_init(|| async {
            let options = server_options();
            if let Ok(url) = std::env::var("TENANTDB_TEST_DATABASE_URL")
                && !url.is_empty()
            {
                let credentials = url.split_once("://").unwrap().1.rsplit_once('@').unwrap().0;
                let (user, password) = credentials.split_once(':').unwrap_or((credentials, ""));
                return AdminLogin {
                    user: user.to_owned(),
                    password: password.to_owned(),
                    host: options.get_host().to_owned(),
                    port: options.get_port(),
                };
            }
            let password = tenantdb::password::generate();
            let role = Ident::parse("tenantdb_test_admin").unwrap();
            let mut conn = connect().await;
            sqlx::query(sql::create_admin_role(&role, &ScramVerifier::generate(&password)))
                .execute(&mut conn)
                .await
                .expect("creating the test admin role");
            AdminLogin {
                user: role.as_str().to_owned(),
                password,
                host: options.get_host().to_owned(),
                port: options.get_port(),
            }
        })
        .await
}

/// The keys of the connection Secret, as the design fixes them.
pub const SECRET_KEYS: [&str; 11] = [
    "DATABASE_URL",
    "PGHOST",
    "PGPORT",
    "PGDATABASE",
    "PGUSER",
    "PGPASSWORD",
    "PGSSLMODE",
    "DB_POOL_MAX",
    "DB_POOL_MIN",
    "DB_POOL_IDLE_TIMEOUT_MS",
    "DB_POOL_CONNECTION_TIMEOUT_MS",
];

/// Runs the `tenantdb` binary built for these tests.
pub fn tenantdb(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_tenantdb"))
        .args(args)
        .output()
        .expect("running tenantdb")
}

/// Command output as text.
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Polls `check` every 200 ms until it holds; fails after a minute, naming
/// `what`.
pub async fn wait_until(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !check().await {
        assert!(std::time::Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

/// Whether `name` is a database on the test server.
pub async fn database_exists(name: &str) -> bool {
    let mut conn = connect().await;
    sqlx::query_scalar::<_, bool>("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
        .bind(name)
        .fetch_one(&mut conn)
        .await
        .unwrap()
}

/// The stdout of a command that must have succeeded.
pub fn succeeded(what: &str, output: std::process::Output) -> String {
    assert!(
        output.status.success(),
        "{what} failed:\n{}\n{}",
        text(&output.stdout),
        text(&output.stderr)
    );
    text(&output.stdout)
}
