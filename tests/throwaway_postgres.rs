//! The throwaway PostgreSQL that the test suite owns: it starts, accepts a
//! password login and queries, refuses a wrong password, and leaves nothing
//! behind — whether stopped, dropped, or orphaned by a killed process.

mod support;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use sqlx::{Connection, PgConnection, Row};
use tenantdb::throwaway::ThrowawayPostgres;

#[tokio::test]
async fn starts_answers_queries_and_is_removed_on_stop() {
    let mut cluster = ThrowawayPostgres::start().unwrap_or_else(|e| panic!("{e}"));
    let data_dir = cluster.data_dir();
    assert!(data_dir.join("PG_VERSION").is_file());

    let mut conn = PgConnection::connect(&cluster.superuser_url()).await.unwrap();
    let row = sqlx::query("SELECT current_setting('server_version_num')::int AS version, current_setting('fsync') AS fsync, 40 + $1::int AS answer")
        .bind(2_i32)
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert!(row.get::<i32, _>("version") >= 120000, "PostgreSQL 12 or newer");
    assert_eq!(row.get::<String, _>("fsync"), "off");
    assert_eq!(row.get::<i32, _>("answer"), 42);
    conn.close().await.unwrap();

    let port = cluster.port();
    cluster.stop().unwrap();
    assert!(!data_dir.exists(), "the cluster's directory is removed");
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "nothing listens on the port any more"
    );
    cluster.stop().unwrap(); // idempotent
}

#[tokio::test]
async fn password_authentication_is_enforced() {
    let cluster = ThrowawayPostgres::start().unwrap_or_else(|e| panic!("{e}"));
    let wrong = cluster.url("postgres", "not-the-password", "postgres");
    let error = PgConnection::connect(&wrong).await.unwrap_err();
    let code = error
        .as_database_error()
        .and_then(|e| e.code())
        .map(|c| c.into_owned());
    assert_eq!(code.as_deref(), Some("28P01"), "invalid_password, got {error}");
}

#[tokio::test]
async fn the_shared_test_server_answers() {
    let mut conn = support::connect().await;
    let one: i32 = sqlx::query_scalar("SELECT 1").fetch_one(&mut conn).await.unwrap();
    assert_eq!(one, 1);
}

#[test]
fn a_cluster_orphaned_by_a_killed_process_is_reaped() {
    // `tenantdb sandbox` holds a cluster until Ctrl-C; SIGKILL gives it no
    // chance to clean up, so only the reaper can.
    let mut sandbox = Command::new(env!("CARGO_BIN_EXE_tenantdb"))
        .arg("sandbox")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = BufReader::new(sandbox.stderr.take().unwrap());
    let line = stderr
        .lines()
        .map_while(Result::ok)
        .find(|l| l.starts_with("PostgreSQL sandbox on "))
        .expect("the sandbox says where its cluster is");
    // "PostgreSQL sandbox on 127.0.0.1:PORT (data in DIR; removed on exit)"
    let port: u16 = line
        .split(':')
        .nth(1)
        .unwrap()
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let data_dir = PathBuf::from(line.split("data in ").nth(1).unwrap().split(';').next().unwrap());
    assert!(data_dir.join("PG_VERSION").is_file());
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok(),
        "the cluster runs"
    );

    sandbox.kill().unwrap();
    sandbox.wait().unwrap();

    let deadline = Instant::now() + Duration::from_secs(30);
    while data_dir.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(!data_dir.exists(), "the reaper removed {}", data_dir.display());
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "the reaper stopped the server"
    );
}

#[tokio::test]
async fn scram_verifiers_agree_with_postgresql() {
    use tenantdb::sql::{self, Ident, ScramVerifier};
    let mut conn = support::connect().await;
    let superuser: bool = sqlx::query_scalar("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    // The throwaway server's test session is a superuser; only an external
    // server (TENANTDB_TEST_DATABASE_URL) may lack it, and then the run says
    // what it left out.
    let external = std::env::var("TENANTDB_TEST_DATABASE_URL").is_ok_and(|u| !u.is_empty());
    assert!(
        superuser || external,
        "the throwaway server's session is not a superuser: the known-answer half would not run"
    );
    if !superuser {
        eprintln!(
            "scram_verifiers_agree_with_postgresql: not a superuser on TENANTDB_TEST_DATABASE_URL; PostgreSQL's own verifier (pg_authid) is not checked"
        );
    }
    if superuser {
        // PostgreSQL's own verifier, checked by ours (reading pg_authid needs a superuser).
        sqlx::query("SET password_encryption = 'scram-sha-256'")
            .execute(&mut conn)
            .await
            .unwrap();
        sqlx::query("CREATE ROLE scram_known_answer PASSWORD 'Known-Answer-123'")
            .execute(&mut conn)
            .await
            .unwrap();
        let stored: String =
            sqlx::query_scalar("SELECT rolpassword FROM pg_authid WHERE rolname = 'scram_known_answer'")
                .fetch_one(&mut conn)
                .await
                .unwrap();
        sqlx::query("DROP ROLE scram_known_answer")
            .execute(&mut conn)
            .await
            .unwrap();
        let verifier = ScramVerifier::from_stored(&stored).unwrap();
        assert!(verifier.matches("Known-Answer-123"));
        assert!(!verifier.matches("Known-Answer-124"));
    }
    // Ours, checked by PostgreSQL: a role created with it can log in.
    let password = tenantdb::password::generate();
    let role = Ident::parse("scram_login_check").unwrap();
    sqlx::query(sql::create_admin_role(&role, &ScramVerifier::generate(&password)))
        .execute(&mut conn)
        .await
        .unwrap();
    let as_role = |password: &str| {
        support::server()
            .url
            .parse::<sqlx::postgres::PgConnectOptions>()
            .unwrap()
            .username("scram_login_check")
            .password(password)
    };
    let login = PgConnection::connect_with(&as_role(&password)).await;
    let wrong = PgConnection::connect_with(&as_role("wrong")).await;
    sqlx::query("DROP ROLE scram_login_check")
        .execute(&mut conn)
        .await
        .unwrap();
    login.expect("login with the password behind our verifier");
    assert!(wrong.is_err());
}
