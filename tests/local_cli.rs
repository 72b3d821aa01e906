//! `tenantdb plan`, `apply` and `delete` as a person runs them: manifests
//! in files, a real PostgreSQL, real `psql` logins with the Secrets written.

mod support;

use support::{tenantdb, text};

use std::fmt::Write as _;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use k8s_openapi::api::core::v1::Secret;
use sqlx::{Connection, PgConnection, Row};

/// A fresh directory with the test server's DatabaseServer and admin Secret.
async fn workdir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tenantdb-cli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("manifests")).unwrap();
    std::fs::write(
        dir.join("manifests/server.yaml"),
        support::server_manifests().await,
    )
    .unwrap();
    dir
}

fn tenant_yaml(namespace: &str, name: &str, spec: &str) -> String {
    format!(
        "---\napiVersion: tenantdb.io/v1alpha1\nkind: TenantDatabase\nmetadata: {{name: {name}, namespace: {namespace}}}\nspec: {spec}\n"
    )
}

fn read_secret(path: &Path) -> Secret {
    serde_norway::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn psql(url: &str, query: &str) -> Output {
    let psql = tenantdb::throwaway::find_bin_dir().unwrap().join("psql");
    Command::new(psql)
        .args(["-XAtq", "-d", url, "-c", query])
        .output()
        .unwrap()
}

#[tokio::test]
async fn apply_then_plan_is_converged_and_secrets_work_with_psql() {
    let dir = workdir("apply").await;
    std::fs::write(
        dir.join("manifests/tenants.yaml"),
        tenant_yaml(
            "cli",
            "acme",
            "{server: test-pg, pool: {maxConnections: 5, replicas: 2}, limits: {statementTimeout: 15s}}",
        ) + &tenant_yaml(
            "cli",
            "globex",
            "{server: test-pg, databaseName: cli_globex_db, secretName: globex-pg}",
        ),
    )
    .unwrap();
    let manifests = dir.join("manifests");
    let secrets = dir.join("secrets");
    let (m, s) = (manifests.to_str().unwrap(), secrets.to_str().unwrap());

    let before = tenantdb(&["plan", "-f", m, "--secrets-dir", s, "--detailed-exitcode"]);
    assert_eq!(
        before.status.code(),
        Some(2),
        "changes pending: {}",
        text(&before.stdout)
    );
    assert!(text(&before.stdout).contains("PASSWORD '<redacted>'"));

    let applied = tenantdb(&["apply", "-f", m, "--secrets-dir", s, "-o", "json"]);
    assert!(applied.status.success(), "{}", text(&applied.stderr));
    let objects: Vec<tenantdb::api::TenantDatabase> = serde_json::from_slice(&applied.stdout).unwrap();
    assert_eq!(objects.len(), 2);
    for object in &objects {
        let status = object.status.as_ref().unwrap();
        assert_eq!(
            status.phase,
            Some(tenantdb::api::tenant_database::TenantPhase::Ready)
        );
        assert!(
            status
                .conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True")
        );
    }
    assert_eq!(
        objects[0]
            .status
            .as_ref()
            .unwrap()
            .pool
            .as_ref()
            .unwrap()
            .connection_limit,
        12
    );

    let after = tenantdb(&["plan", "-f", m, "--secrets-dir", s, "--detailed-exitcode"]);
    assert_eq!(after.status.code(), Some(0), "converged: {}", text(&after.stdout));
    assert!(text(&after.stdout).contains("Plan: 0 to change, 2 up to date, 0 failed."));

    let acme_file = secrets.join("cli-acme-db.yaml");
    let globex_file = secrets.join("cli-globex-pg.yaml");
    assert_eq!(
        std::fs::metadata(&acme_file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let acme = read_secret(&acme_file).string_data.unwrap();
    for key in support::SECRET_KEYS {
        assert!(acme.contains_key(key), "{key}");
    }
    assert_eq!(acme["DB_POOL_MAX"], "5");
    assert_eq!(acme["DB_POOL_IDLE_TIMEOUT_MS"], "30000");
    assert!(acme["PGPASSWORD"].len() >= 32);

    let login = psql(
        &acme["DATABASE_URL"],
        "SELECT current_database() || ' ' || current_user || ' ' || current_setting('statement_timeout')",
    );
    assert!(login.status.success(), "{}", text(&login.stderr));
    assert_eq!(text(&login.stdout).trim(), "cli_acme cli_acme 15s");
    let globex = read_secret(&globex_file).string_data.unwrap();
    let cross = psql(
        &globex["DATABASE_URL"].replace("/cli_globex_db?", "/cli_acme?"),
        "SELECT 1",
    );
    assert!(!cross.status.success(), "globex must not reach acme's database");
    assert!(
        text(&cross.stderr).contains("permission denied for database"),
        "{}",
        text(&cross.stderr)
    );

    // Re-running apply keeps the passwords.
    let again = tenantdb(&["apply", "-f", m, "--secrets-dir", s]);
    assert!(again.status.success());
    assert_eq!(
        read_secret(&acme_file).string_data.unwrap()["PGPASSWORD"],
        acme["PGPASSWORD"]
    );
    assert!(
        text(&again.stderr).contains("cli/acme: up to date"),
        "{}",
        text(&again.stderr)
    );

    // Passwords never reach the output.
    for output in [&before, &applied, &after, &again] {
        let all = text(&output.stdout) + &text(&output.stderr);
        assert!(!all.contains(&acme["PGPASSWORD"]) && !all.contains(&globex["PGPASSWORD"]));
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn delete_honours_the_deletion_policy_with_sessions_connected() {
    let dir = workdir("delete").await;
    std::fs::write(
        dir.join("manifests/tenants.yaml"),
        tenant_yaml("clidel", "kept", "{server: test-pg}")
            + &tenant_yaml("clidel", "gone", "{server: test-pg, deletionPolicy: Delete}"),
    )
    .unwrap();
    let (m, secrets) = (dir.join("manifests"), dir.join("secrets"));
    let (m, s) = (m.to_str().unwrap(), secrets.to_str().unwrap());
    assert!(tenantdb(&["apply", "-f", m, "--secrets-dir", s]).status.success());
    let session = |name: &str| {
        let url = read_secret(&secrets.join(format!("clidel-{name}-db.yaml")))
            .string_data
            .unwrap()["DATABASE_URL"]
            .clone();
        async move { PgConnection::connect(&url).await.unwrap() }
    };
    let mut kept_session = session("kept").await;
    let mut gone_session = session("gone").await;

    // Without --yes, delete only says what it would drop.
    let preview = tenantdb(&["delete", "-f", m, "--secrets-dir", s]);
    assert_eq!(preview.status.code(), Some(2), "{}", text(&preview.stderr));
    let said = text(&preview.stdout);
    assert!(
        said.contains("clidel/gone: would drop database clidel_gone and role clidel_gone")
            && said.contains(
                "nothing was dropped: 1 tenant(s) would lose their database and role; run again with --yes"
            ),
        "{said}"
    );
    assert!(
        support::database_exists("clidel_gone").await,
        "a delete without --yes dropped it"
    );
    sqlx::query("SELECT 1")
        .execute(&mut gone_session)
        .await
        .expect("a delete without --yes ended a session");

    let output = tenantdb(&["delete", "-f", m, "--secrets-dir", s, "--yes"]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    let stdout = text(&output.stdout);
    assert!(
        stdout.contains("clidel/kept: deletionPolicy Retain: database clidel_kept and role clidel_kept kept"),
        "{stdout}"
    );
    assert!(
        stdout.contains("clidel/gone: dropped database clidel_gone and role clidel_gone"),
        "{stdout}"
    );

    let one: i32 = sqlx::query_scalar("SELECT 1")
        .fetch_one(&mut kept_session)
        .await
        .expect("Retain leaves sessions alone");
    assert_eq!(one, 1);
    assert!(
        sqlx::query("SELECT 1").execute(&mut gone_session).await.is_err(),
        "Delete ended the session"
    );
    let mut conn = support::connect().await;
    let names: Vec<String> = sqlx::query_scalar(
        "SELECT datname::text FROM pg_database WHERE datname LIKE 'clidel_%'
         UNION ALL SELECT rolname::text FROM pg_roles WHERE rolname LIKE 'clidel_%' ORDER BY 1",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    assert_eq!(
        names,
        ["clidel_kept", "clidel_kept"],
        "the kept database and role, nothing of the other"
    );
    assert!(secrets.join("clidel-kept-db.yaml").exists());
    assert!(
        !secrets.join("clidel-gone-db.yaml").exists(),
        "the dropped tenant's Secret file is removed"
    );

    let again = tenantdb(&["delete", "-f", m, "--yes"]);
    assert!(again.status.success());
    assert!(text(&again.stdout).contains("clidel/gone: nothing to delete"));
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Every hostile input is refused with a message naming the field, and the
/// catalog is exactly as it was.
#[tokio::test]
async fn hostile_inputs_are_refused_and_change_nothing() {
    let cases: &[(&str, &str)] = &[
        (
            "{server: test-pg, databaseName: \"x\\\"; DROP DATABASE postgres; --\"}",
            "spec.databaseName",
        ),
        (
            "{server: test-pg, databaseName: \"x; DROP ROLE postgres\"}",
            "spec.databaseName",
        ),
        (
            "{server: test-pg, databaseName: \"x' OR '1'='1\"}",
            "spec.databaseName",
        ),
        (
            "{server: test-pg, databaseName: \"x -- comment\"}",
            "spec.databaseName",
        ),
        (
            "{server: test-pg, databaseName: \"x/* c */y\"}",
            "spec.databaseName",
        ),
        ("{server: test-pg, databaseName: \"аcme\"}", "spec.databaseName"), // Cyrillic а
        (
            "{server: test-pg, databaseName: \"acme\\u200b\"}",
            "spec.databaseName",
        ), // zero-width space
        ("{server: test-pg, databaseName: \"x\\0y\"}", "spec.databaseName"),
        (
            "{server: test-pg, databaseName: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa}",
            "spec.databaseName",
        ), // 64 bytes
        ("{server: test-pg, databaseName: \"\"}", "spec.databaseName"),
        ("{server: test-pg, databaseName: pg_evil}", "spec.databaseName"),
        ("{server: test-pg, roleName: pg_read_all_data}", "spec.roleName"),
        ("{server: test-pg, roleName: \"Admin\"}", "spec.roleName"),
        ("{server: test-pg, roleName: \"a b\"}", "spec.roleName"),
        (
            "{server: test-pg, pool: {idleTimeout: \"30 seconds\"}}",
            "spec.pool.idleTimeout",
        ),
        (
            "{server: test-pg, pool: {connectionTimeout: \"-1s\"}}",
            "spec.pool.connectionTimeout",
        ),
        (
            "{server: test-pg, limits: {statementTimeout: \"1d\"}}",
            "spec.limits.statementTimeout",
        ),
        (
            "{server: test-pg, limits: {lockTimeout: \"5s; SET ROLE postgres\"}}",
            "spec.limits.lockTimeout",
        ),
        (
            "{server: test-pg, extensions: [plpython3u]}",
            "spec.extensions[0]",
        ),
        (
            "{server: test-pg, extensions: [\"pg_trgm\\\"; DROP\"]}",
            "spec.extensions[0]",
        ),
        (
            "{server: test-pg, pool: {maxConnections: -5}}",
            "spec.pool.maxConnections",
        ),
        (
            "{server: test-pg, pool: {maxConnections: 3, minConnections: 9}}",
            "spec.pool.minConnections",
        ),
        (
            "{server: test-pg, deletionPolicy: DropEverything}",
            "spec.deletionPolicy",
        ),
        (
            "{server: test-pg, secretName: \"../../etc/passwd\"}",
            "spec.secretName",
        ),
        ("{server: \"no-such-server\"}", "spec.server"),
        (
            "{server: test-pg, indexes: [{name: \"i\\\"x\", table: t, columns: [a]}]}",
            "spec.indexes[0].name",
        ),
        (
            "{server: test-pg, indexes: [{name: i, table: t, columns: [a], where: \"true; DROP TABLE t\"}]}",
            "spec.indexes[0].where",
        ),
        (
            "{server: test-pg, indexes: [{name: i, table: t, expressions: [\"pg_sleep(5) IS NULL\"]}]}",
            "spec.indexes[0].expressions[0]",
        ),
    ];
    assert!(cases.len() >= 20);
    let dir = workdir("hostile").await;
    let mut yaml = String::new();
    for (i, (spec, _)) in cases.iter().enumerate() {
        write!(yaml, "{}", tenant_yaml("hostile", &format!("t{i}"), spec)).unwrap();
    }
    let file = dir.join("manifests/hostile.yaml");
    std::fs::write(&file, yaml).unwrap();

    let before = catalog_text().await;
    let output = tenantdb(&["apply", "-f", dir.join("manifests").to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = text(&output.stderr);
    for (i, (spec, field)) in cases.iter().enumerate() {
        // Documents are numbered from 1 and the server file holds none of these.
        let expected = format!("{}:{}: {field}", file.display(), i + 1);
        assert!(
            stderr.contains(&expected),
            "{spec}: expected {expected:?} in\n{stderr}"
        );
    }
    assert!(
        !text(&output.stdout).contains("hostile/"),
        "no tenant was applied: {}",
        text(&output.stdout)
    );
    assert_eq!(catalog_text().await, before, "the catalog is unchanged");
    std::fs::remove_dir_all(&dir).unwrap();
}

async fn catalog_text() -> Vec<String> {
    let mut conn = support::connect().await;
    sqlx::query(
        "SELECT datname::text AS name FROM pg_database WHERE datname NOT LIKE 'cli%' AND datname NOT LIKE 'fifty%'
         UNION ALL SELECT rolname::text FROM pg_roles WHERE rolname NOT LIKE 'cli%' AND rolname NOT LIKE 'fifty%'
         UNION ALL SELECT setrole::text FROM pg_db_role_setting
         ORDER BY 1",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap()
    .iter()
    .map(|r| r.get::<String, _>("name"))
    .collect()
}

#[tokio::test]
async fn fifty_tenants_are_provisioned_and_each_is_usable() {
    let dir = workdir("fifty").await;
    let mut yaml = String::new();
    for i in 0..50 {
        yaml.push_str(&tenant_yaml(
            "fifty",
            &format!("t{i:02}"),
            "{server: test-pg, pool: {maxConnections: 3}}",
        ));
    }
    std::fs::write(dir.join("manifests/tenants.yaml"), yaml).unwrap();
    let secrets = dir.join("secrets");
    let output = tenantdb(&[
        "apply",
        "-f",
        dir.join("manifests").to_str().unwrap(),
        "--secrets-dir",
        secrets.to_str().unwrap(),
    ]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert_eq!(
        text(&output.stdout).matches(" Ready ").count(),
        50,
        "{}",
        text(&output.stdout)
    );

    for i in 0..50 {
        let secret = read_secret(&secrets.join(format!("fifty-t{i:02}-db.yaml")))
            .string_data
            .unwrap();
        let mut conn = PgConnection::connect(&secret["DATABASE_URL"])
            .await
            .unwrap_or_else(|e| panic!("tenant t{i:02}: {e}"));
        let (database, limit): (String, i32) = sqlx::query_as(
            "SELECT current_database()::text, rolconnlimit FROM pg_roles WHERE rolname = current_user",
        )
        .fetch_one(&mut conn)
        .await
        .unwrap();
        assert_eq!(database, format!("fifty_t{i:02}"));
        assert_eq!(limit, 5);
        sqlx::query("CREATE TABLE t (id int)")
            .execute(&mut conn)
            .await
            .unwrap();
        conn.close().await.unwrap();
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn plan_shows_index_steps_and_apply_builds_them_once_the_table_exists() {
    let dir = workdir("indexes").await;
    std::fs::write(
        dir.join("manifests/tenants.yaml"),
        tenant_yaml(
            "cliidx",
            "shop",
            "{server: test-pg, indexes: [{name: orders_recent, table: orders, columns: [created_at DESC], where: 'deleted_at IS NULL'}]}",
        ),
    )
    .unwrap();
    let (m, secrets) = (dir.join("manifests"), dir.join("secrets"));
    let (m, s) = (m.to_str().unwrap(), secrets.to_str().unwrap());

    // Before the database exists, plan says the index waits for it.
    let first = tenantdb(&["plan", "-f", m, "--secrets-dir", s]);
    assert!(
        text(&first.stdout)
            .contains("-- index orders_recent: built once the database exists and table public.orders does"),
        "{}",
        text(&first.stdout)
    );
    // Applied without the table: the tenant is Ready, the index Pending.
    let applied = tenantdb(&["apply", "-f", m, "--secrets-dir", s, "-o", "json"]);
    assert!(applied.status.success(), "{}", text(&applied.stderr));
    let objects: Vec<tenantdb::api::TenantDatabase> = serde_json::from_slice(&applied.stdout).unwrap();
    let status = objects[0].status.as_ref().unwrap();
    assert_eq!(
        status.phase,
        Some(tenantdb::api::tenant_database::TenantPhase::Ready)
    );
    assert_eq!(
        status.indexes[0].phase,
        tenantdb::api::tenant_database::IndexPhase::Pending
    );
    let indexes_ready = status
        .conditions
        .iter()
        .find(|c| c.type_ == "IndexesReady")
        .unwrap();
    assert_eq!(
        (indexes_ready.status.as_str(), indexes_ready.reason.as_str()),
        ("False", "Pending")
    );
    let pending = tenantdb(&["plan", "-f", m, "--secrets-dir", s, "--detailed-exitcode"]);
    assert_eq!(pending.status.code(), Some(0), "{}", text(&pending.stdout));
    assert!(
        text(&pending.stdout)
            .contains("-- index orders_recent: Pending: table public.orders does not exist yet"),
        "{}",
        text(&pending.stdout)
    );

    let url = read_secret(&secrets.join("cliidx-shop-db.yaml"))
        .string_data
        .unwrap()["DATABASE_URL"]
        .clone();
    let migrate = psql(
        &url,
        "CREATE TABLE orders (id serial, created_at timestamptz, deleted_at timestamptz)",
    );
    assert!(migrate.status.success(), "{}", text(&migrate.stderr));

    let plan = tenantdb(&["plan", "-f", m, "--secrets-dir", s, "--detailed-exitcode"]);
    assert_eq!(plan.status.code(), Some(2), "{}", text(&plan.stdout));
    assert!(
        text(&plan.stdout).contains(
            "  CREATE INDEX CONCURRENTLY \"orders_recent\" ON \"public\".\"orders\" USING btree (\"created_at\" DESC) WHERE (deleted_at IS NULL);"
        ),
        "{}",
        text(&plan.stdout)
    );
    let built = tenantdb(&["apply", "-f", m, "--secrets-dir", s]);
    assert!(built.status.success(), "{}", text(&built.stderr));
    let progress = text(&built.stderr);
    assert!(
        progress.contains("cliidx/shop: build index orders_recent…"),
        "{progress}"
    );
    assert!(
        progress.contains("cliidx/shop: build index orders_recent done ("),
        "{progress}"
    );
    assert!(
        text(&built.stdout).contains("Ready        1/1"),
        "{}",
        text(&built.stdout)
    );
    let valid = psql(
        &url,
        "SELECT indisvalid FROM pg_index WHERE indexrelid = 'orders_recent'::regclass",
    );
    assert_eq!(text(&valid.stdout).trim(), "t");

    let converged = tenantdb(&["plan", "-f", m, "--secrets-dir", s, "--detailed-exitcode"]);
    assert_eq!(converged.status.code(), Some(0), "{}", text(&converged.stdout));
    let again = tenantdb(&["apply", "-f", m, "--secrets-dir", s]);
    assert!(
        text(&again.stderr).contains("cliidx/shop: up to date"),
        "{}",
        text(&again.stderr)
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn hostile_index_expressions_are_refused_by_field_and_change_nothing() {
    let hostile: [(&str, &str); 18] = [
        ("where", "true; DROP TABLE orders"),
        ("where", "deleted_at IS NULL; DELETE FROM orders"),
        ("where", "id IN (SELECT id FROM orders)"),
        ("where", "EXISTS (SELECT 1 FROM pg_authid)"),
        ("where", "pg_sleep(10) IS NULL"),
        ("where", "true -- and a comment"),
        ("where", "true /* hidden */"),
        ("where", "status = 'open"),
        ("where", "DROP TABLE orders"),
        ("where", "current_setting('is_superuser') = 'on'"),
        ("expressions", "pg_read_file('/etc/passwd')"),
        ("expressions", "(SELECT max(id) FROM orders)"),
        ("expressions", "lower(email)); DROP TABLE orders; --"),
        ("expressions", "random()"),
        ("expressions", "orders.email"),
        ("expressions", "'unbalanced"),
        ("expressions", "lo_import('/etc/passwd')"),
        ("expressions", "ALTER ROLE x SUPERUSER"),
    ];
    let dir = workdir("hostile-code").await;
    let mut manifests = String::new();
    for (i, (field, text)) in hostile.iter().enumerate() {
        let value = serde_json::to_string(text).unwrap();
        let index = match *field {
            "where" => format!("{{name: i, table: orders, columns: [id], where: {value}}}"),
            _ => format!("{{name: i, table: orders, expressions: [{value}]}}"),
        };
        manifests += &tenant_yaml(
            "clihostile",
            &format!("t{i}"),
            &format!("{{server: test-pg, indexes: [{index}]}}"),
        );
    }
    std::fs::write(dir.join("manifests/tenants.yaml"), manifests).unwrap();
    let m = dir.join("manifests");
    let m = m.to_str().unwrap();
    for command in ["plan", "apply"] {
        let output = tenantdb(&[command, "-f", m]);
        assert_eq!(output.status.code(), Some(1), "{command}");
        let stderr = text(&output.stderr);
        for (i, (field, _)) in hostile.iter().enumerate() {
            let field = match *field {
                "where" => "spec.indexes[0].where",
                _ => "spec.indexes[0].expressions[0]",
            };
            // Errors name the document (file:number) and the field.
            let at = format!("tenants.yaml:{}: {field}: ", i + 1);
            assert!(
                stderr.lines().any(|l| l.contains(&at)),
                "t{i} refused at {at}: {stderr}"
            );
        }
    }
    let mut conn = support::connect().await;
    let created: i64 =
        sqlx::query_scalar("SELECT count(*) FROM pg_database WHERE starts_with(datname, 'clihostile')")
            .fetch_one(&mut conn)
            .await
            .unwrap();
    assert_eq!(created, 0, "nothing was executed for a refused tenant");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn status_shows_each_tenants_health_from_one_query_and_a_real_login() {
    let dir = workdir("status").await;
    std::fs::write(
        dir.join("manifests/tenants.yaml"),
        tenant_yaml(
            "clistatus",
            "acme",
            "{server: test-pg, pool: {connectionLimit: 10}}",
        ) + &tenant_yaml(
            "clistatus",
            "later",
            "{server: test-pg, databaseName: clistatus_never_applied}",
        ),
    )
    .unwrap();
    let (m, secrets) = (dir.join("manifests"), dir.join("secrets"));
    let (m, s) = (m.to_str().unwrap(), secrets.to_str().unwrap());
    std::fs::write(
        dir.join("acme-only.yaml"),
        tenant_yaml(
            "clistatus",
            "acme",
            "{server: test-pg, pool: {connectionLimit: 10}}",
        ),
    )
    .unwrap();
    let server_file = dir.join("manifests/server.yaml");
    let acme_only = dir.join("acme-only.yaml");
    let applied = tenantdb(&[
        "apply",
        "-f",
        server_file.to_str().unwrap(),
        "-f",
        acme_only.to_str().unwrap(),
        "--secrets-dir",
        s,
    ]);
    assert!(applied.status.success(), "{}", text(&applied.stderr));
    let url = read_secret(&secrets.join("clistatus-acme-db.yaml"))
        .string_data
        .unwrap()["DATABASE_URL"]
        .clone();
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(PgConnection::connect(&url).await.unwrap());
    }

    let status = |secrets_dir: bool| {
        let mut args = vec!["status", "-f", m, "-o", "json"];
        if secrets_dir {
            args.extend(["--secrets-dir", s]);
        }
        let output = tenantdb(&args);
        let objects: Vec<tenantdb::api::TenantDatabase> = serde_json::from_slice(&output.stdout)
            .unwrap_or_else(|e| panic!("{e}: {}", text(&output.stderr)));
        (output.status.code(), objects)
    };
    let healthy = |object: &tenantdb::api::TenantDatabase| {
        let condition = object
            .status
            .as_ref()
            .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Healthy"))
            .unwrap();
        (condition.status.clone(), condition.reason.clone())
    };

    let (code, objects) = status(true);
    assert_eq!(code, Some(1), "one tenant is not applied yet");
    let acme = objects[0].status.as_ref().unwrap();
    assert_eq!(healthy(&objects[0]), ("True".into(), "Healthy".into()));
    let pool = acme.pool.as_ref().unwrap();
    assert!(pool.active_connections >= 3, "{pool:?}");
    assert_eq!(acme.connections, Some(format!("{}/10", pool.active_connections)));
    let health = acme.health.as_ref().unwrap();
    assert!(health.reachable && health.latency_ms.is_some() && health.size_bytes.unwrap() > 0);
    assert_eq!(healthy(&objects[1]), ("False".into(), "DatabaseMissing".into()));

    // A password changed behind tenantdb's back: the login check says so.
    let mut superuser = support::connect().await;
    sqlx::query("ALTER ROLE clistatus_acme PASSWORD 'changed-by-hand-0123456789'")
        .execute(&mut superuser)
        .await
        .unwrap();
    let (_, objects) = status(true);
    assert_eq!(healthy(&objects[0]), ("False".into(), "LoginFailed".into()));
    let message = objects[0]
        .status
        .as_ref()
        .unwrap()
        .health
        .as_ref()
        .unwrap()
        .message
        .clone()
        .unwrap();
    assert!(message.contains("password authentication failed"), "{message}");
    // Without the Secrets there is no login to check, and status says so.
    let (_, objects) = status(false);
    assert_eq!(healthy(&objects[0]), ("True".into(), "LoginNotChecked".into()));
    let said = &objects[0].status.as_ref().unwrap().conditions;
    let said = &said.iter().find(|c| c.type_ == "Healthy").unwrap().message;
    assert!(
        said.contains("no login as the tenant has been tried yet"),
        "{said}"
    );
    for conn in held {
        conn.close().await.unwrap();
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `apply` without `--secrets-dir` would set a password saved nowhere for
/// a new tenant: refused, naming the way out, and nothing is created;
/// `--discard-passwords` says yes to it, and a tenant whose role exists
/// (no new password) is applied either way.
#[tokio::test]
async fn apply_refuses_to_set_a_password_it_cannot_save() {
    let dir = workdir("nosave").await;
    std::fs::write(
        dir.join("manifests/tenants.yaml"),
        tenant_yaml("clinosave", "acme", "{server: test-pg, deletionPolicy: Delete}"),
    )
    .unwrap();
    let m = dir.join("manifests");
    let m = m.to_str().unwrap();
    let refused = tenantdb(&["apply", "-f", m]);
    let stderr = text(&refused.stderr);
    assert_eq!(refused.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("a new password would be set on role clinosave_acme and saved nowhere; give --secrets-dir DIR to keep it (or --discard-passwords); nothing was changed"),
        "{stderr}"
    );
    assert!(
        !support::database_exists("clinosave_acme").await,
        "the refused apply created the database"
    );

    let discarded = tenantdb(&["apply", "-f", m, "--discard-passwords"]);
    assert!(discarded.status.success(), "{}", text(&discarded.stderr));
    assert!(support::database_exists("clinosave_acme").await);
    // The role exists now: no new password, nothing to refuse.
    let again = tenantdb(&["apply", "-f", m]);
    assert!(again.status.success(), "{}", text(&again.stderr));
    assert!(tenantdb(&["delete", "-f", m, "--yes"]).status.success());
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A server that cannot be reached is one problem, said before anything
/// runs, naming the server, its address and what failed — refused (nothing
/// listens), no answer (the connect timeout, not the pool's 30 s "pool
/// timed out"), authentication (the admin Secret named) — in one line,
/// with no PostgreSQL source line number and nothing said twice.
#[tokio::test]
async fn an_unreachable_server_is_one_problem_that_says_what_failed() {
    let admin = support::admin().await;
    let dir = std::env::temp_dir().join(format!("tenantdb-cli-unreachable-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let manifests = |port: u16, password: &str| {
        format!(
            "apiVersion: v1\nkind: Secret\nmetadata: {{name: pg-admin, namespace: ops}}\nstringData: {{username: {}, password: {password}}}\n\
             ---\napiVersion: tenantdb.io/v1alpha1\nkind: DatabaseServer\nmetadata: {{name: test-pg}}\n\
             spec: {{host: 127.0.0.1, port: {port}, sslMode: disable, adminSecretRef: {{namespace: ops, name: pg-admin}}}}\n{}",
            admin.user,
            tenant_yaml("cliunreach", "acme", "{server: test-pg}")
        )
    };
    let run = |port: u16, password: &str| {
        std::fs::write(dir.join("all.yaml"), manifests(port, password)).unwrap();
        let started = std::time::Instant::now();
        let output = tenantdb(&["plan", "-f", dir.to_str().unwrap()]);
        (output, started.elapsed())
    };
    let lines = |output: &Output| -> Vec<String> {
        text(&output.stderr)
            .lines()
            .filter(|l| l.contains("cannot log in as administrator"))
            .map(str::to_owned)
            .collect()
    };
    let file = dir.join("all.yaml");
    let at = format!("{}:2:", file.display());

    // Nothing listens on the port.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let (refused, _) = run(port, &admin.password);
    let said = lines(&refused);
    assert_eq!(refused.status.code(), Some(1));
    assert_eq!(
        said.len(),
        1,
        "one problem for the server: {}",
        text(&refused.stderr)
    );
    assert!(
        said[0].starts_with(&format!("{at} spec.host: DatabaseServer test-pg: cannot log in as administrator: connection to 127.0.0.1:{port} refused")),
        "{said:?}"
    );

    // status still shows the tenants of that server, unreachable, at once.
    let viewed = tenantdb(&["status", "-f", dir.to_str().unwrap(), "-o", "json"]);
    let objects: Vec<tenantdb::api::TenantDatabase> =
        serde_json::from_slice(&viewed.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&viewed.stderr)));
    assert_eq!(objects.len(), 1, "{}", text(&viewed.stderr));
    let healthy = objects[0]
        .status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Healthy"))
        .unwrap();
    assert_eq!(
        (healthy.status.as_str(), healthy.reason.as_str()),
        ("False", "ServerUnreachable")
    );
    assert!(
        healthy
            .message
            .contains(&format!("connection to 127.0.0.1:{port} refused")),
        "{}",
        healthy.message
    );

    // Something accepts connections and never answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let (unanswered, took) = run(port, &admin.password);
    let said = lines(&unanswered);
    eprintln!("a silent server was reported after {:.1} s", took.as_secs_f64());
    assert_eq!(said.len(), 1, "{}", text(&unanswered.stderr));
    assert!(
        said[0].contains(&format!("spec.host: DatabaseServer test-pg: cannot log in as administrator: no answer from 127.0.0.1:{port}")),
        "{said:?}"
    );
    drop(silent);

    // The server answers, and refuses the password.
    let (denied, _) = run(admin.port, "not-the-password");
    let stderr = text(&denied.stderr);
    let said = lines(&denied);
    assert_eq!(said.len(), 1, "{stderr}");
    assert!(
        said[0].contains("spec.adminSecretRef: DatabaseServer test-pg: cannot log in as administrator: password authentication failed for user")
            && said[0].contains("check the username and password"),
        "{said:?}"
    );
    for output in [&refused, &unanswered, &denied] {
        let all = text(&output.stderr);
        assert!(!all.contains(" at line "), "a PostgreSQL source line: {all}");
        assert!(!all.contains("pool timed out"), "the pool's vague timeout: {all}");
        assert!(
            !all.contains("cliunreach/acme"),
            "a tenant of an unreachable server was tried: {all}"
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `tenantdb plan` over up-to-date tenants reads the catalog once per
/// server: the statements the admin role runs (pg_stat_statements) are the
/// same for 5 tenants as for 50.
#[tokio::test]
async fn planning_5_or_50_tenants_costs_the_same_statements() {
    let (_postgres, admin, mut superuser) = support::fixtures::own_counting_postgres("plan_admin").await;
    let dir = std::env::temp_dir().join(format!("tenantdb-cli-fleet-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("manifests")).unwrap();
    std::fs::write(
        dir.join("manifests/server.yaml"),
        format!(
            "apiVersion: v1\nkind: Secret\nmetadata: {{name: pg-admin, namespace: ops}}\nstringData: {{username: {}, password: {}}}\n\
             ---\napiVersion: tenantdb.io/v1alpha1\nkind: DatabaseServer\nmetadata: {{name: fleet-pg}}\n\
             spec: {{host: {}, port: {}, sslMode: disable, adminSecretRef: {{namespace: ops, name: pg-admin}}}}\n",
            admin.user, admin.password, admin.host, admin.port
        ),
    )
    .unwrap();
    let (manifests, secrets) = (dir.join("manifests"), dir.join("secrets"));
    let (m, s) = (manifests.to_str().unwrap(), secrets.to_str().unwrap());

    // The statements the admin role ran for one up-to-date plan.
    let plan_costs = async |superuser: &mut PgConnection| -> Vec<(String, i64)> {
        support::fixtures::reset_statements(superuser).await;
        let plan = tenantdb(&["plan", "-f", m, "--secrets-dir", s, "--detailed-exitcode"]);
        assert_eq!(
            plan.status.code(),
            Some(0),
            "{}",
            text(&plan.stdout) + &text(&plan.stderr)
        );
        support::fixtures::admin_statements(superuser, &admin.user)
            .await
            .into_iter()
            .collect()
    };
    let mut costs = Vec::new();
    for count in [5, 50] {
        let mut yaml = String::new();
        for i in 0..count {
            yaml += &tenant_yaml("fleet", &format!("t{i:02}"), "{server: fleet-pg}");
        }
        std::fs::write(dir.join("manifests/tenants.yaml"), yaml).unwrap();
        let applied = tenantdb(&["apply", "-f", m, "--secrets-dir", s]);
        assert!(applied.status.success(), "{}", text(&applied.stderr));
        let statements = plan_costs(&mut superuser).await;
        let calls: i64 = statements.iter().map(|(_, calls)| calls).sum();
        costs.push((count, calls, statements));
    }
    let [(_, five, at_five), (_, fifty, at_fifty)] = <[_; 2]>::try_from(costs).unwrap();
    assert_eq!(five, fifty, "5 tenants: {at_five:#?}\n50 tenants: {at_fifty:#?}");
    // One catalog snapshot for the whole server.
    assert_eq!(fifty, 1, "{at_fifty:#?}");
    assert!(at_fifty[0].0.contains("unnest"), "{at_fifty:#?}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// The CacheServer of a throwaway Redis, with its admin Secret.
fn cache_server_yaml(redis: &tenantdb::throwaway_redis::ThrowawayRedis) -> String {
    format!(
        "---\napiVersion: v1\nkind: Secret\nmetadata: {{name: cache-admin, namespace: tenantdb-system}}\n\
         stringData: {{username: default, password: {}}}\n\
         ---\napiVersion: tenantdb.io/v1alpha1\nkind: CacheServer\nmetadata: {{name: test-redis}}\n\
         spec: {{host: {}, port: {}, adminSecretRef: {{namespace: tenantdb-system, name: cache-admin}}}}\n",
        tenantdb::throwaway_redis::ADMIN_PASSWORD,
        redis.host(),
        redis.port()
    )
}

async fn redis_as(url: &str) -> redis::aio::MultiplexedConnection {
    redis::Client::open(url)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

async fn redis_admin(redis: &tenantdb::throwaway_redis::ThrowawayRedis) -> redis::aio::MultiplexedConnection {
    redis_as(&format!(
        "redis://default:{}@{}:{}",
        tenantdb::throwaway_redis::ADMIN_PASSWORD,
        redis.host(),
        redis.port()
    ))
    .await
}

fn string_data(secret: &Secret, key: &str) -> String {
    secret.string_data.as_ref().unwrap()[key].clone()
}

#[tokio::test]
async fn plan_apply_status_and_delete_provision_a_tenants_cache_with_no_cluster() {
    let redis = tenantdb::throwaway_redis::ThrowawayRedis::start_with_acl_file().unwrap();
    let dir = workdir("cache").await;
    let manifests = dir.join("manifests");
    let secrets = dir.join("secrets");
    let (m, s) = (manifests.to_str().unwrap(), secrets.to_str().unwrap());
    std::fs::write(manifests.join("cache.yaml"), cache_server_yaml(&redis)).unwrap();
    std::fs::write(
        manifests.join("tenants.yaml"),
        tenant_yaml(
            "clicache",
            "acme",
            "{server: test-pg, cache: {server: test-redis}}",
        ) + &tenant_yaml(
            "clicache",
            "globex",
            "{server: test-pg, deletionPolicy: Delete, cache: {keyPrefix: 'clicache:gx:'}}",
        ),
    )
    .unwrap();
    let mut admin = redis_admin(&redis).await;
    // Another tenant's keys on the server, which nothing here may touch.
    for i in 0..100 {
        let () = redis::cmd("SET")
            .arg(format!("other:keys:{i}"))
            .arg(i)
            .query_async(&mut admin)
            .await
            .unwrap();
    }

    // plan: the user to create, never a password or its hash.
    let planned = tenantdb(&["plan", "-f", m, "--secrets-dir", s, "--detailed-exitcode"]);
    let said = text(&planned.stdout);
    assert_eq!(planned.status.code(), Some(2), "{said}{}", text(&planned.stderr));
    assert!(
        said.contains(
            "ACL SETUSER tdb.clicache.acme … -- cache user created on CacheServer test-redis: keys and channels clicache:acme:*"
        ),
        "{said}"
    );
    assert!(said.contains("tdb.clicache.globex"), "{said}");
    assert!(!said.contains('#'), "a hash in the plan: {said}");
    let users: Vec<String> = redis::cmd("ACL")
        .arg("USERS")
        .query_async(&mut admin)
        .await
        .unwrap();
    assert_eq!(users, ["default"], "plan changed nothing");

    // apply: users set and saved to the ACL file, the Secret holds the keys.
    let applied = tenantdb(&["apply", "-f", m, "--secrets-dir", s]);
    assert!(applied.status.success(), "{}", text(&applied.stderr));
    let acme = read_secret(&secrets.join("clicache-acme-db.yaml"));
    let url = string_data(&acme, "REDIS_URL");
    let password = string_data(&acme, "REDIS_PASSWORD");
    assert_eq!(string_data(&acme, "REDIS_KEY_PREFIX"), "clicache:acme:");
    assert_eq!(
        url,
        format!(
            "redis://tdb.clicache.acme:{password}@{}:{}",
            redis.host(),
            redis.port()
        )
    );
    let saved = std::fs::read_to_string(redis.acl_file().unwrap()).unwrap();
    assert!(saved.contains("user tdb.clicache.acme on"), "{saved}");
    assert!(!saved.contains(&password), "the ACL file holds the password");
    let mut tenant = redis_as(&url).await;
    let () = redis::cmd("SET")
        .arg("clicache:acme:session:1")
        .arg("ada")
        .query_async(&mut tenant)
        .await
        .unwrap();
    for refused in [
        &["GET", "other:keys:1"][..],
        &["GET", "clicache:gx:x"],
        &["FLUSHALL"],
    ] {
        let mut cmd = redis::cmd(refused[0]);
        cmd.arg(&refused[1..]);
        let error = cmd.query_async::<redis::Value>(&mut tenant).await.unwrap_err();
        assert_eq!(error.code(), Some("NOPERM"), "{refused:?}: {error}");
    }

    // Converged; a user removed behind tenantdb's back is set again with
    // the Secret's password.
    let again = tenantdb(&["plan", "-f", m, "--secrets-dir", s, "--detailed-exitcode"]);
    assert_eq!(again.status.code(), Some(0), "{}", text(&again.stdout));
    let _: i64 = redis::cmd("ACL")
        .arg("DELUSER")
        .arg("tdb.clicache.acme")
        .query_async(&mut admin)
        .await
        .unwrap();
    let repaired = tenantdb(&["apply", "-f", m, "--secrets-dir", s]);
    assert!(repaired.status.success(), "{}", text(&repaired.stderr));
    assert!(
        text(&repaired.stderr).contains("1 cache step(s) applied"),
        "{}",
        text(&repaired.stderr)
    );
    let acme = read_secret(&secrets.join("clicache-acme-db.yaml"));
    assert_eq!(
        string_data(&acme, "REDIS_PASSWORD"),
        password,
        "the same password"
    );
    let value: String = redis::cmd("GET")
        .arg("clicache:acme:session:1")
        .query_async(&mut redis_as(&url).await)
        .await
        .unwrap();
    assert_eq!(value, "ada");

    // status: a real login as each tenant's user.
    let status = tenantdb(&["status", "-f", m, "--secrets-dir", s, "-o", "json"]);
    assert!(
        status.status.success(),
        "{}{}",
        text(&status.stdout),
        text(&status.stderr)
    );
    let objects: Vec<tenantdb::api::TenantDatabase> = serde_json::from_slice(&status.stdout).unwrap();
    for object in &objects {
        let cache = object.status.as_ref().unwrap().cache.as_ref().unwrap();
        assert_eq!(cache.server, "test-redis");
        assert_eq!(cache.reachable, Some(true), "{cache:?}");
    }

    // delete: Retain turns acme's user off and keeps its keys; Delete
    // removes globex's user and keys, and nothing else.
    let mut globex = redis_as(&string_data(
        &read_secret(&secrets.join("clicache-globex-db.yaml")),
        "REDIS_URL",
    ))
    .await;
    for i in 0..1200 {
        let () = redis::cmd("SET")
            .arg(format!("clicache:gx:{i}"))
            .arg(i)
            .query_async(&mut globex)
            .await
            .unwrap();
    }
    let dry = tenantdb(&["delete", "-f", m, "--secrets-dir", s]);
    assert_eq!(dry.status.code(), Some(2), "{}", text(&dry.stdout));
    assert!(
        text(&dry.stdout)
            .contains("would remove cache user tdb.clicache.globex and every key under clicache:gx:"),
        "{}",
        text(&dry.stdout)
    );
    let deleted = tenantdb(&["delete", "-f", m, "--secrets-dir", s, "--yes"]);
    let said = text(&deleted.stdout);
    assert!(deleted.status.success(), "{said}{}", text(&deleted.stderr));
    assert!(
        said.contains("removed cache user tdb.clicache.globex and 1200 key(s) under clicache:gx:"),
        "{said}"
    );
    assert!(said.contains("cache user tdb.clicache.acme turned off"), "{said}");
    let users: Vec<String> = redis::cmd("ACL")
        .arg("USERS")
        .query_async(&mut admin)
        .await
        .unwrap();
    assert_eq!(users, ["default", "tdb.clicache.acme"]);
    let left: Vec<String> = redis::cmd("KEYS").arg("*").query_async(&mut admin).await.unwrap();
    assert_eq!(left.len(), 101, "acme's key and the other 100: {left:?}");
    assert!(
        redis::Client::open(url.as_str())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .is_err(),
        "acme's user is off"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn overlapping_key_prefixes_are_refused_by_field_before_anything_runs() {
    let redis = tenantdb::throwaway_redis::ThrowawayRedis::start().unwrap();
    let dir = workdir("cache-overlap").await;
    let manifests = dir.join("manifests");
    let secrets = dir.join("secrets");
    let (m, s) = (manifests.to_str().unwrap(), secrets.to_str().unwrap());
    std::fs::write(manifests.join("cache.yaml"), cache_server_yaml(&redis)).unwrap();
    // Within the manifests: the second of an overlapping pair (by name) is refused.
    std::fs::write(
        manifests.join("tenants.yaml"),
        tenant_yaml(
            "clioverlap",
            "a",
            "{server: test-pg, cache: {keyPrefix: 'clioverlap:x'}}",
        ) + &tenant_yaml(
            "clioverlap",
            "b",
            "{server: test-pg, cache: {keyPrefix: 'clioverlap:xy:'}}",
        ),
    )
    .unwrap();
    let checked = tenantdb(&["check", "-f", m]);
    assert_eq!(checked.status.code(), Some(1));
    let said = text(&checked.stderr);
    assert!(
        said.contains(
            "tenants.yaml:2: spec.cache.keyPrefix: \"clioverlap:xy:\" overlaps \"clioverlap:x\", the key prefix of TenantDatabase clioverlap/a"
        ),
        "{said}"
    );

    // Against the server: a user already holding an overlapping prefix
    // refuses the tenant, and neither its database nor its user is made.
    std::fs::write(
        manifests.join("tenants.yaml"),
        tenant_yaml(
            "clioverlap",
            "a",
            "{server: test-pg, cache: {keyPrefix: 'clioverlap:x'}}",
        ),
    )
    .unwrap();
    let applied = tenantdb(&["apply", "-f", m, "--secrets-dir", s]);
    assert!(applied.status.success(), "{}", text(&applied.stderr));
    std::fs::write(
        manifests.join("tenants.yaml"),
        tenant_yaml(
            "clioverlap",
            "b",
            "{server: test-pg, cache: {keyPrefix: 'clioverlap:xy:'}}",
        ),
    )
    .unwrap();
    let refused = tenantdb(&["apply", "-f", m, "--secrets-dir", s]);
    assert_eq!(refused.status.code(), Some(1));
    let said = text(&refused.stderr);
    assert!(
        said.contains("spec.cache.keyPrefix: \"clioverlap:xy:\" overlaps \"clioverlap:x\""),
        "{said}"
    );
    let mut admin = redis_admin(&redis).await;
    let users: Vec<String> = redis::cmd("ACL")
        .arg("USERS")
        .query_async(&mut admin)
        .await
        .unwrap();
    assert_eq!(users, ["default", "tdb.clioverlap.a"]);
    let mut conn = PgConnection::connect(&support::server().url).await.unwrap();
    let databases: i64 =
        sqlx::query_scalar("SELECT count(*) FROM pg_database WHERE datname = 'clioverlap_b'")
            .fetch_one(&mut conn)
            .await
            .unwrap();
    assert_eq!(databases, 0, "nothing ran for the refused tenant");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn a_tls_cache_server_is_verified_against_its_ca_and_tenants_get_rediss_urls() {
    let redis = tenantdb::throwaway_redis::ThrowawayRedis::start_with_tls().unwrap();
    let ca = String::from_utf8(redis.ca_pem().unwrap()).unwrap();
    let dir = workdir("cache-tls").await;
    let manifests = dir.join("manifests");
    let secrets = dir.join("secrets");
    let (m, s) = (manifests.to_str().unwrap(), secrets.to_str().unwrap());
    let cache = |tls: &str| {
        format!(
            "---\napiVersion: v1\nkind: Secret\nmetadata: {{name: cache-admin, namespace: tenantdb-system}}\n\
             stringData: {{username: default, password: {}}}\n\
             ---\napiVersion: v1\nkind: Secret\nmetadata: {{name: cache-ca, namespace: tenantdb-system}}\n\
             stringData: {{ca.crt: {}}}\n\
             ---\napiVersion: tenantdb.io/v1alpha1\nkind: CacheServer\nmetadata: {{name: tls-redis}}\n\
             spec: {{host: {}, port: {}, tls: {tls}, adminSecretRef: {{namespace: tenantdb-system, name: cache-admin}}}}\n",
            tenantdb::throwaway_redis::ADMIN_PASSWORD,
            serde_json::to_string(&ca).unwrap(),
            redis.host(),
            redis.port()
        )
    };
    std::fs::write(
        manifests.join("tenants.yaml"),
        tenant_yaml("clitls", "acme", "{server: test-pg, cache: {}}"),
    )
    .unwrap();

    // The system's CA certificates do not vouch for this server: refused
    // before anything runs, saying why.
    std::fs::write(manifests.join("cache.yaml"), cache("{}")).unwrap();
    let refused = tenantdb(&["apply", "-f", m, "--secrets-dir", s]);
    assert_eq!(refused.status.code(), Some(1));
    let said = text(&refused.stderr);
    assert!(
        said.contains("spec.host: CacheServer tls-redis: cannot log in as the admin user")
            && said.contains("certificate"),
        "{said}"
    );
    assert!(!secrets.join("clitls-acme-db.yaml").exists(), "nothing ran");

    // With its CA: provisioned, and the tenant's URL is rediss://.
    std::fs::write(
        manifests.join("cache.yaml"),
        cache("{caSecretRef: {namespace: tenantdb-system, name: cache-ca}}"),
    )
    .unwrap();
    let applied = tenantdb(&["apply", "-f", m, "--secrets-dir", s]);
    assert!(applied.status.success(), "{}", text(&applied.stderr));
    let url = string_data(&read_secret(&secrets.join("clitls-acme-db.yaml")), "REDIS_URL");
    assert!(url.starts_with("rediss://tdb.clitls.acme:"), "{url}");
    let client = redis::Client::build_with_tls(
        url.as_str(),
        redis::TlsCertificates {
            client_tls: None,
            root_cert: redis.ca_pem(),
        },
    )
    .unwrap();
    let mut tenant = client.get_multiplexed_async_connection().await.unwrap();
    let () = redis::cmd("SET")
        .arg("clitls:acme:session")
        .arg("1")
        .query_async(&mut tenant)
        .await
        .unwrap();
    let status = tenantdb(&["status", "-f", m, "--secrets-dir", s, "-o", "json"]);
    assert!(status.status.success(), "{}", text(&status.stderr));
    let objects: Vec<tenantdb::api::TenantDatabase> = serde_json::from_slice(&status.stdout).unwrap();
    let cache = objects[0].status.as_ref().unwrap().cache.as_ref().unwrap();
    assert_eq!(cache.reachable, Some(true), "{cache:?}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn verify_full_uses_the_ca_secret_among_the_manifests() {
    let (postgres, admin) = support::fixtures::own_tls_postgres("cli_tls_admin").await;
    let ca = String::from_utf8(postgres.ca_pem().unwrap()).unwrap();
    let dir = std::env::temp_dir().join(format!("tenantdb-cli-pg-tls-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("manifests")).unwrap();
    let server = |ca_ref: &str| {
        format!(
            "apiVersion: v1\nkind: Secret\nmetadata: {{name: pg-admin, namespace: ops}}\nstringData: {{username: {}, password: {}}}\n\
             ---\napiVersion: v1\nkind: Secret\nmetadata: {{name: pg-ca, namespace: ops}}\nstringData: {{ca.crt: {}}}\n\
             ---\napiVersion: tenantdb.io/v1alpha1\nkind: DatabaseServer\nmetadata: {{name: tls-pg}}\n\
             spec: {{host: {}, port: {}, sslMode: verify-full, adminSecretRef: {{namespace: ops, name: pg-admin}}{ca_ref}}}\n",
            admin.user,
            admin.password,
            serde_json::to_string(&ca).unwrap(),
            admin.host,
            admin.port
        )
    };
    let manifests = dir.join("manifests");
    let m = manifests.to_str().unwrap();
    std::fs::write(
        manifests.join("server.yaml"),
        server(", caSecretRef: {namespace: ops, name: pg-ca}"),
    )
    .unwrap();
    let trusted = tenantdb(&["check", "-f", m, "--connect"]);
    assert!(
        trusted.status.success(),
        "{}{}",
        text(&trusted.stdout),
        text(&trusted.stderr)
    );
    assert!(text(&trusted.stdout).contains("tls-pg: connected as cli_tls_admin"));
    std::fs::write(
        manifests.join("tenants.yaml"),
        tenant_yaml("clipgtls", "acme", "{server: tls-pg}"),
    )
    .unwrap();
    let secrets = dir.join("secrets");
    let applied = tenantdb(&["apply", "-f", m, "--secrets-dir", secrets.to_str().unwrap()]);
    assert!(applied.status.success(), "{}", text(&applied.stderr));

    // Without the CA, verify-full trusts only the system's certificates.
    std::fs::write(manifests.join("server.yaml"), server("")).unwrap();
    let refused = tenantdb(&["check", "-f", m, "--connect"]);
    assert_eq!(refused.status.code(), Some(1));
    let said = text(&refused.stderr);
    assert!(said.contains("tls-pg: cannot log in as administrator"), "{said}");
    assert!(said.to_lowercase().contains("certificate"), "{said}");
    std::fs::remove_dir_all(&dir).unwrap();
}
