//! Provisioning against a real PostgreSQL, through the reconcile core the
//! operator and `tenantdb apply` share: convergence, tenant isolation, the
//! pool contract, drift repair, ownership and deletion. The admin role is a
//! plain CREATEDB CREATEROLE role, as in production.

mod support;

use serde_json::json;
use sqlx::postgres::PgConnectOptions;
use sqlx::{Connection, PgConnection, PgPool, Row};
use tenantdb::admin_access::{self, Password};
use tenantdb::api::{DatabaseServer, TenantDatabase};
use tenantdb::reconcile::{
    self, Desired, ErrorCategory, Mode, Outcome, ReconcileError, Step, StoredPassword,
};
use tenantdb::sql::statements::{Grantee, Setting};

struct Harness {
    pool: PgPool,
    admin: PgConnectOptions,
    server: DatabaseServer,
}

impl Harness {
    async fn new() -> Self {
        let admin = support::admin().await;
        let server: DatabaseServer = serde_json::from_value(json!({
            "apiVersion": "tenantdb.io/v1alpha1",
            "kind": "DatabaseServer",
            "metadata": {"name": "test-pg"},
            "spec": {
                "host": admin.host, "port": admin.port, "sslMode": "disable",
                "adminSecretRef": {"namespace": "ops", "name": "pg-admin"}
            }
        }))
        .unwrap();
        Self {
            pool: admin_access::admin_pool(admin.options(), 4),
            admin: admin.options(),
            server,
        }
    }

    fn desired(&self, tenant: &TenantDatabase) -> Desired {
        reconcile::resolve(tenant, &self.server).unwrap()
    }

    async fn provision(
        &self,
        desired: &Desired,
        stored: StoredPassword<'_>,
        mode: Mode,
    ) -> Result<Outcome, ReconcileError> {
        reconcile::provision(&self.pool, &self.admin, desired, stored, mode).await
    }

    /// Applies with a tracked password store: returns the password the Secret holds.
    async fn apply(&self, desired: &Desired, stored: Option<&Password>) -> (Outcome, Password) {
        let stored = stored.map_or(StoredPassword::Missing, StoredPassword::Found);
        let outcome = self.provision(desired, stored, Mode::Apply).await.unwrap();
        let password = outcome.plan.password.clone().unwrap();
        (outcome, password)
    }

    async fn plan(&self, desired: &Desired, password: &Password) -> Vec<Step> {
        self.provision(desired, StoredPassword::Found(password), Mode::DryRun)
            .await
            .unwrap()
            .plan
            .steps
    }

    async fn delete(&self, desired: &Desired) -> Result<Vec<Step>, ReconcileError> {
        reconcile::delete(&self.pool, &self.admin, desired, Mode::Apply).await
    }

    /// Logs in as the tenant role to `database`.
    async fn login(
        &self,
        desired: &Desired,
        password: &Password,
        database: &str,
    ) -> Result<PgConnection, sqlx::Error> {
        PgConnection::connect_with(
            &support::server_options()
                .username(desired.role.as_str())
                .password(password.expose())
                .database(database),
        )
        .await
    }
}

fn tenant(namespace: &str, name: &str, spec: serde_json::Value) -> TenantDatabase {
    serde_json::from_value(json!({
        "apiVersion": "tenantdb.io/v1alpha1",
        "kind": "TenantDatabase",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec
    }))
    .unwrap()
}

/// Everything tenantdb might touch on the server for roles and databases
/// whose names start with `prefix` (tests run in parallel on one server, each
/// with its own prefix), as text, for "nothing changed" comparisons.
async fn catalog(prefix: &str) -> Vec<String> {
    let mut conn = support::connect().await;
    sqlx::query(
        "SELECT 'role ' || rolname || ' ' || rolcanlogin || rolcreatedb || rolcreaterole || ' ' || rolconnlimit
                || ' ' || coalesce(shobj_description(oid, 'pg_authid'), '') AS line
           FROM pg_roles WHERE starts_with(rolname, $1)
         UNION ALL
         SELECT 'database ' || datname || ' ' || pg_get_userbyid(datdba) || ' ' || datconnlimit || ' '
                || coalesce(datacl::text, '') || ' ' || coalesce(shobj_description(oid, 'pg_database'), '')
           FROM pg_database WHERE starts_with(datname, $1)
         UNION ALL
         SELECT 'setting ' || d.datname || ' ' || r.rolname || ' ' || s.setconfig::text
           FROM pg_db_role_setting s JOIN pg_database d ON d.oid = s.setdatabase JOIN pg_roles r ON r.oid = s.setrole
          WHERE starts_with(d.datname, $1)
         ORDER BY 1",
    )
    .bind(prefix)
    .fetch_all(&mut conn)
    .await
    .unwrap()
    .iter()
    .map(|row| row.get::<String, _>("line"))
    .collect()
}

async fn scalar_i32(query: &str, bind: &str) -> i32 {
    let mut conn = support::connect().await;
    sqlx::query_scalar(sqlx::AssertSqlSafe(query.to_owned()))
        .bind(bind)
        .fetch_one(&mut conn)
        .await
        .unwrap()
}

async fn superuser_exec(statement: &str) {
    let mut conn = support::connect().await;
    sqlx::query(sqlx::AssertSqlSafe(statement.to_owned()))
        .execute(&mut conn)
        .await
        .unwrap_or_else(|e| panic!("{statement}: {e}"));
}

#[tokio::test]
async fn apply_converges_and_a_second_apply_changes_nothing() {
    let h = Harness::new().await;
    let desired = h.desired(&tenant(
        "conv",
        "acme",
        json!({"limits": {"statementTimeout": "15s", "lockTimeout": "5s"}, "extensions": ["pg_trgm"]}),
    ));
    let (first, password) = h.apply(&desired, None).await;
    assert!(first.executed > 0);
    assert!(first.plan.password_is_new);

    assert_eq!(
        h.plan(&desired, &password).await,
        [],
        "apply then plan: nothing to do"
    );
    let before = catalog("conv_").await;
    let (second, _) = h.apply(&desired, Some(&password)).await;
    assert_eq!(second.executed, 0, "a second apply runs no DDL");
    assert_eq!(catalog("conv_").await, before);
}

#[tokio::test]
async fn a_tenant_logs_in_to_its_own_database_and_no_other() {
    let h = Harness::new().await;
    let a = h.desired(&tenant("iso", "alpha", json!({})));
    let b = h.desired(&tenant("iso", "beta", json!({})));
    let (_, password_a) = h.apply(&a, None).await;
    let (_, password_b) = h.apply(&b, None).await;

    let mut conn = h.login(&a, &password_a, a.database.as_str()).await.unwrap();
    let (database, user): (String, String) = sqlx::query_as("SELECT current_database(), current_user::text")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(
        (database.as_str(), user.as_str()),
        (a.database.as_str(), a.role.as_str())
    );
    sqlx::query("CREATE TABLE orders (id int)")
        .execute(&mut conn)
        .await
        .expect("the tenant owns its public schema");

    let refused = h.login(&a, &password_a, b.database.as_str()).await.unwrap_err();
    let code = refused
        .as_database_error()
        .and_then(|e| e.code())
        .map(|c| c.into_owned());
    assert_eq!(code.as_deref(), Some("42501"), "CONNECT refused: {refused}");
    assert!(h.login(&b, &password_b, b.database.as_str()).await.is_ok());
    assert!(
        h.login(&a, &Password::new("wrong"), a.database.as_str())
            .await
            .is_err()
    );
}

#[tokio::test]
async fn connection_limits_follow_the_pool_contract() {
    let h = Harness::new().await;
    let limits = |d: &Desired| {
        let role = d.role.as_str().to_owned();
        let database = d.database.as_str().to_owned();
        async move {
            (
                scalar_i32("SELECT rolconnlimit FROM pg_roles WHERE rolname = $1", &role).await,
                scalar_i32(
                    "SELECT datconnlimit FROM pg_database WHERE datname = $1",
                    &database,
                )
                .await,
            )
        }
    };
    let spec = |pool: serde_json::Value| tenant("limits", "acme", json!({"pool": pool}));
    let desired = h.desired(&spec(json!({"maxConnections": 10, "replicas": 3})));
    let (_, password) = h.apply(&desired, None).await;
    assert_eq!(limits(&desired).await, (32, 32), "10 × 3 + the reserve of 2");

    let desired = h.desired(&spec(json!({"maxConnections": 25, "replicas": 3})));
    h.apply(&desired, Some(&password)).await;
    assert_eq!(limits(&desired).await, (77, 77));

    let desired = h.desired(&spec(json!({"maxConnections": 25, "replicas": 4})));
    h.apply(&desired, Some(&password)).await;
    assert_eq!(limits(&desired).await, (102, 102));

    let desired = h.desired(&spec(
        json!({"maxConnections": 25, "replicas": 4, "connectionLimit": 50}),
    ));
    h.apply(&desired, Some(&password)).await;
    assert_eq!(limits(&desired).await, (50, 50));
    assert_eq!(h.plan(&desired, &password).await, []);
}

/// A name, the statements that cause the drift, and the step that must repair it.
type DriftCase = (&'static str, Vec<String>, fn(&Step) -> bool);

#[tokio::test]
async fn drift_is_detected_by_plan_and_repaired_by_apply() {
    let h = Harness::new().await;
    let desired = h.desired(&tenant(
        "drift",
        "acme",
        json!({"limits": {"statementTimeout": "15s", "lockTimeout": "5s"}}),
    ));
    let (_, password) = h.apply(&desired, None).await;
    let (db, role) = (desired.database.to_string(), desired.role.to_string());
    let admin = support::admin().await.user.clone();
    // A role the admin can act for, to hand the database to behind tenantdb's back.
    superuser_exec("CREATE ROLE drift_other").await;
    superuser_exec(&format!("GRANT drift_other TO \"{admin}\"")).await;

    let cases: Vec<DriftCase> = vec![
        (
            "role altered",
            vec![format!("ALTER ROLE {role} NOLOGIN CREATEDB CONNECTION LIMIT 1")],
            |s| matches!(s, Step::AlterRole { changes, .. } if changes.login == Some(true) && changes.create_db == Some(false) && changes.connection_limit == Some(22)),
        ),
        (
            "setting changed",
            vec![format!(
                "ALTER ROLE {role} IN DATABASE {db} SET statement_timeout = '1h'"
            )],
            |s| {
                matches!(
                    s,
                    Step::SetRoleSetting {
                        setting: Setting::StatementTimeout,
                        millis: 15_000,
                        ..
                    }
                )
            },
        ),
        (
            "setting removed",
            vec![format!("ALTER ROLE {role} IN DATABASE {db} RESET lock_timeout")],
            |s| {
                matches!(
                    s,
                    Step::SetRoleSetting {
                        setting: Setting::LockTimeout,
                        millis: 5_000,
                        ..
                    }
                )
            },
        ),
        (
            "setting added",
            vec![format!(
                "ALTER ROLE {role} IN DATABASE {db} SET idle_in_transaction_session_timeout = '1min'"
            )],
            |s| {
                matches!(
                    s,
                    Step::ResetRoleSetting {
                        setting: Setting::IdleInTransactionSessionTimeout,
                        ..
                    }
                )
            },
        ),
        (
            "database limit changed",
            vec![format!("ALTER DATABASE {db} CONNECTION LIMIT 1")],
            |s| matches!(s, Step::AlterDatabaseConnectionLimit { limit: 22, .. }),
        ),
        (
            "CONNECT granted to PUBLIC",
            vec![format!("GRANT CONNECT ON DATABASE {db} TO PUBLIC")],
            |s| {
                matches!(
                    s,
                    Step::RevokeConnect {
                        grantee: Grantee::Public,
                        ..
                    }
                )
            },
        ),
        (
            "CONNECT revoked from the tenant",
            vec![format!("REVOKE CONNECT ON DATABASE {db} FROM {role}")],
            |s| matches!(s, Step::GrantConnect { .. }),
        ),
        (
            "admin membership revoked",
            vec![format!("REVOKE {role} FROM \"{admin}\"")],
            |s| matches!(s, Step::GrantRoleToAdmin { .. }),
        ),
        (
            "database owner changed",
            vec![format!("ALTER DATABASE {db} OWNER TO drift_other")],
            |s| matches!(s, Step::AlterDatabaseOwner { .. }),
        ),
        (
            "role dropped",
            vec![
                format!("ALTER DATABASE {db} OWNER TO drift_other"),
                format!("DROP ROLE {role}"),
            ],
            |s| matches!(s, Step::CreateRole { .. }),
        ),
    ];
    for (case, statements, expected) in cases {
        for statement in &statements {
            superuser_exec(statement).await;
        }
        let steps = h.plan(&desired, &password).await;
        assert!(
            steps.iter().any(expected),
            "{case}: plan does not repair it: {steps:#?}"
        );
        h.apply(&desired, Some(&password)).await;
        assert_eq!(
            h.plan(&desired, &password).await,
            [],
            "{case}: not converged after apply"
        );
        // The Secret's password works again, also after the role was recreated.
        let mut conn = h
            .login(&desired, &password, desired.database.as_str())
            .await
            .unwrap_or_else(|e| panic!("{case}: {e}"));
        let timeout: String = sqlx::query_scalar("SHOW statement_timeout")
            .fetch_one(&mut conn)
            .await
            .unwrap();
        assert_eq!(timeout, "15s", "{case}");
    }

    // What the admin role cannot undo is reported as a permission problem,
    // not retried as if it were passing.
    superuser_exec(&format!("ALTER DATABASE {db} OWNER TO postgres")).await;
    let error = h
        .provision(&desired, StoredPassword::Found(&password), Mode::Apply)
        .await
        .unwrap_err();
    assert_eq!(error.category(), ErrorCategory::Permission);
    assert!(error.to_string().contains("set database owner"), "{error}");
}

#[tokio::test]
async fn a_deleted_secret_means_a_new_password_for_the_existing_role() {
    let h = Harness::new().await;
    let desired = h.desired(&tenant("rotate", "acme", json!({})));
    let (_, old) = h.apply(&desired, None).await;
    let (outcome, new) = h.apply(&desired, None).await; // the Secret is gone
    assert!(
        outcome
            .plan
            .steps
            .iter()
            .any(|s| matches!(s, Step::SetPassword { .. }))
    );
    assert_ne!(old, new);
    assert!(h.login(&desired, &new, desired.database.as_str()).await.is_ok());
    assert!(h.login(&desired, &old, desired.database.as_str()).await.is_err());
    // Without any password store, an existing role's password is left alone.
    let untracked = h
        .provision(&desired, StoredPassword::Untracked, Mode::DryRun)
        .await
        .unwrap();
    assert_eq!(untracked.plan.steps, []);
}

#[tokio::test]
async fn a_database_owned_by_another_resource_is_refused_and_never_dropped() {
    let h = Harness::new().await;
    let first = h.desired(&tenant(
        "own",
        "first",
        json!({"databaseName": "own_shared", "roleName": "own_first"}),
    ));
    let (_, password) = h.apply(&first, None).await;
    let before = catalog("own_").await;

    let second = h.desired(&tenant(
        "own",
        "second",
        json!({"databaseName": "own_shared", "roleName": "own_second", "deletionPolicy": "Delete"}),
    ));
    let error = h
        .provision(&second, StoredPassword::Missing, Mode::Apply)
        .await
        .unwrap_err();
    assert_eq!(error.category(), ErrorCategory::Conflict);
    assert!(error.to_string().contains("belongs to own/first"), "{error}");
    assert_eq!(
        catalog("own_").await,
        before,
        "the refused tenant changed nothing"
    );

    let error = h.delete(&second).await.unwrap_err();
    assert_eq!(error.category(), ErrorCategory::Conflict);
    assert_eq!(
        catalog("own_").await,
        before,
        "deleting the refused tenant dropped nothing"
    );
    assert!(h.login(&first, &password, "own_shared").await.is_ok());

    // A role of that name owned by another resource is refused the same way.
    let third = h.desired(&tenant(
        "own",
        "third",
        json!({"databaseName": "own_third", "roleName": "own_first"}),
    ));
    let error = h
        .provision(&third, StoredPassword::Missing, Mode::Apply)
        .await
        .unwrap_err();
    assert!(
        error
            .to_string()
            .contains("role \"own_first\" belongs to own/first"),
        "{error}"
    );
    assert_eq!(catalog("own_").await, before);
}

#[tokio::test]
async fn an_unmarked_database_is_taken_over_only_with_adopt() {
    let h = Harness::new().await;
    superuser_exec("CREATE ROLE adopt_legacy LOGIN").await;
    superuser_exec("CREATE DATABASE adopt_legacy OWNER adopt_legacy").await;
    let spec = |adopt: bool| {
        tenant(
            "adopt",
            "legacy",
            json!({"databaseName": "adopt_legacy", "adopt": adopt}),
        )
    };
    let before = catalog("adopt_").await;
    let error = h
        .provision(&h.desired(&spec(false)), StoredPassword::Missing, Mode::Apply)
        .await
        .unwrap_err();
    assert!(
        error
            .to_string()
            .contains("is not managed by tenantdb; set spec.adopt: true"),
        "{error}"
    );
    assert_eq!(catalog("adopt_").await, before);

    // adopt alone is not enough: the server must grant it to this namespace.
    let error = h
        .provision(&h.desired(&spec(true)), StoredPassword::Missing, Mode::Apply)
        .await
        .unwrap_err();
    assert!(error.to_string().contains("spec.adoption"), "{error}");
    assert_eq!(catalog("adopt_").await, before);

    let mut h = h;
    h.server.spec.adoption = vec![tenantdb::api::database_server::AdoptionGrant {
        namespace: "adopt".into(),
        database: "adopt_legacy".into(),
        role: Some("adopt_legacy".into()),
    }];
    let desired = h.desired(&spec(true));
    let (_, password) = h.apply(&desired, None).await;
    assert!(h.login(&desired, &password, "adopt_legacy").await.is_ok());
    // Once marked, it is ours without adopt.
    assert_eq!(h.plan(&h.desired(&spec(false)), &password).await, []);
}

#[tokio::test]
async fn retain_keeps_everything_and_delete_drops_even_with_a_session_connected() {
    let h = Harness::new().await;
    let desired = h.desired(&tenant("del", "acme", json!({"deletionPolicy": "Delete"})));
    let (_, password) = h.apply(&desired, None).await;
    let mut session = h
        .login(&desired, &password, desired.database.as_str())
        .await
        .unwrap();
    sqlx::query("SELECT 1").execute(&mut session).await.unwrap();

    let steps = h.delete(&desired).await.unwrap();
    assert!(matches!(steps.first(), Some(Step::AlterRole { changes, .. }) if changes.login == Some(false)));
    assert!(steps.iter().any(|s| matches!(s, Step::DropDatabase { .. })));
    let remaining = scalar_i32(
        "SELECT (SELECT count(*) FROM pg_database WHERE datname = $1)::int + (SELECT count(*) FROM pg_roles WHERE rolname = $1)::int",
        desired.database.as_str(),
    )
    .await;
    assert_eq!(remaining, 0, "database and role are gone");
    assert!(
        sqlx::query("SELECT 1").execute(&mut session).await.is_err(),
        "the session was ended"
    );

    assert_eq!(
        h.delete(&desired).await.unwrap(),
        [],
        "deleting what is already gone succeeds"
    );
}

#[tokio::test]
async fn an_extension_not_on_the_allow_list_is_refused_before_any_sql() {
    let h = Harness::new().await;
    let error = reconcile::resolve(
        &tenant("ext", "acme", json!({"extensions": ["plpython3u"]})),
        &h.server,
    )
    .unwrap_err();
    assert_eq!(error.field, "spec.extensions[0]");
    assert!(error.reason.contains("allow-list"), "{error}");
}

/// The race, seen at 9,000 tenants: the batched health query read
/// `pg_database_size` of a database just created, before tenantdb granted
/// itself CONNECT on it (CONNECT is revoked from PUBLIC), got "permission
/// denied", and the whole server's sample failed — every tenant of the
/// server turned ServerUnreachable and was re-queued, every few seconds
/// while provisioning went on. Now a database the admin role may not
/// connect to has no size this time, and the sample stands.
#[tokio::test]
async fn a_database_the_admin_cannot_connect_to_does_not_fail_the_server_sample() {
    let h = Harness::new().await;
    let database = "sized_out_db";
    superuser_exec(&format!("DROP DATABASE IF EXISTS {database}")).await;
    superuser_exec(&format!("CREATE DATABASE {database}")).await;
    superuser_exec(&format!("REVOKE CONNECT ON DATABASE {database} FROM PUBLIC")).await;
    let databases = [database.to_owned(), "postgres".to_owned()];
    let sample = tenantdb::health::sample_server(&h.pool, &databases, &databases)
        .await
        .expect("the sample stands");
    assert_eq!(sample.databases[database].size_bytes, None);
    assert!(
        sample.databases["postgres"]
            .size_bytes
            .is_some_and(|size| size > 0)
    );
    superuser_exec(&format!("DROP DATABASE {database}")).await;
}

/// The health monitor re-reads a database's size only when its write count
/// moved (or once a day): reading a size walks the database's files, and a
/// quiet fleet of 10,000 tenants would otherwise pay that for each of them
/// every hour. The count must stay put for a tenant's health login and
/// move for its rows. Each step's statistics are flushed before the next
/// (`pg_stat_force_next_flush()`, then one more statement: the flush runs
/// before the backend reports itself ready).
#[tokio::test]
async fn a_database_write_count_moves_with_its_rows_and_not_with_logins() {
    let h = Harness::new().await;
    let database = "write_count_db";
    superuser_exec(&format!("DROP DATABASE IF EXISTS {database}")).await;
    superuser_exec(&format!("CREATE DATABASE {database}")).await;
    let databases = [database.to_owned()];
    let writes = async || {
        tenantdb::health::sample_server(&h.pool, &databases, &[])
            .await
            .expect("the sample stands")
            .databases[database]
            .writes
    };
    let run = async |statements: &[&str]| {
        let mut conn = PgConnection::connect_with(&support::server_options().database(database))
            .await
            .unwrap();
        for statement in statements
            .iter()
            .chain(&["SELECT pg_stat_force_next_flush()", "SELECT 1"])
        {
            sqlx::query(sqlx::AssertSqlSafe(statement.to_string()))
                .execute(&mut conn)
                .await
                .unwrap_or_else(|e| panic!("{statement}: {e}"));
        }
    };
    run(&["CREATE TABLE t (i int)"]).await;
    let created = writes().await;
    assert!(created > 0, "creating a table writes catalog rows: {created}");
    run(&["SELECT 1"]).await;
    assert_eq!(writes().await, created, "a login and SELECT 1 write nothing");
    run(&[
        "INSERT INTO t SELECT generate_series(1, 3)",
        "UPDATE t SET i = 0 WHERE i = 1",
        "DELETE FROM t WHERE i = 2",
    ])
    .await;
    assert_eq!(writes().await, created + 5, "3 inserted, 1 updated, 1 deleted");
    superuser_exec(&format!("DROP DATABASE {database} WITH (FORCE)")).await;
}
