//! The trust boundary, tested as an attacker would: a tenant holding its own
//! credentials and owning its database tries to make tenantdb's admin role
//! run its code, and a namespace user tries to take over a database that is
//! not theirs. docs/security.md names these tests.

mod support;

use serde_json::json;
use sqlx::postgres::PgConnectOptions;
use sqlx::{Connection, PgConnection, PgPool};
use support::hostile;
use tenantdb::admin_access::{self, AdminCredentials, Password};
use tenantdb::admin_session::{self, PINNED, Treatment};
use tenantdb::api::{DatabaseServer, TenantDatabase};
use tenantdb::reconcile::index_jobs::IndexJobs;
use tenantdb::reconcile::{self, Desired, Mode, StoredPassword, indexes, observe};
use tenantdb::{health, sql};

struct Harness {
    pool: PgPool,
    admin: PgConnectOptions,
    server: DatabaseServer,
}

impl Harness {
    async fn new(extra: serde_json::Value) -> Self {
        Self::with_admin_options(extra, support::admin().await.options()).await
    }

    /// A harness whose admin sessions start from `admin_options` (the
    /// mutant below passes options that are not pinned).
    async fn with_admin_options(extra: serde_json::Value, admin_options: PgConnectOptions) -> Self {
        let admin = support::admin().await;
        let mut spec = json!({
            "host": admin.host, "port": admin.port, "sslMode": "disable",
            "adminSecretRef": {"namespace": "ops", "name": "pg-admin"}
        });
        spec.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        let server: DatabaseServer = serde_json::from_value(json!({
            "apiVersion": "tenantdb.io/v1alpha1", "kind": "DatabaseServer",
            "metadata": {"name": "test-pg"}, "spec": spec
        }))
        .unwrap();
        Self {
            pool: admin_access::admin_pool(admin_options.clone(), 4),
            admin: admin_options,
            server,
        }
    }

    fn desired(&self, namespace: &str, name: &str, spec: serde_json::Value) -> Desired {
        let tenant: TenantDatabase = serde_json::from_value(json!({
            "apiVersion": "tenantdb.io/v1alpha1", "kind": "TenantDatabase",
            "metadata": {"name": name, "namespace": namespace}, "spec": spec
        }))
        .unwrap();
        reconcile::resolve(&tenant, &self.server).unwrap()
    }

    /// Plans or applies with the password the tenant's Secret holds.
    async fn provision(&self, desired: &Desired, password: &Password, mode: Mode) -> reconcile::Outcome {
        reconcile::provision(
            &self.pool,
            &self.admin,
            desired,
            StoredPassword::Found(password),
            mode,
        )
        .await
        .unwrap()
    }

    async fn apply(
        &self,
        desired: &Desired,
        stored: Option<&Password>,
    ) -> Result<Password, reconcile::ReconcileError> {
        let stored = stored.map_or(StoredPassword::Missing, StoredPassword::Found);
        let outcome = reconcile::provision(&self.pool, &self.admin, desired, stored, Mode::Apply).await?;
        Ok(outcome.plan.password.unwrap())
    }
}

/// A session as the tenant's application has it: its role, its password,
/// no pinning.
async fn tenant_session(
    desired: &Desired,
    password: &str,
    database: &str,
) -> Result<PgConnection, sqlx::Error> {
    PgConnection::connect_with(
        &support::server_options()
            .username(desired.role.as_str())
            .password(password)
            .database(database),
    )
    .await
}

#[tokio::test]
async fn every_setting_a_database_owner_can_set_is_pinned_or_judged_harmless() {
    let h = Harness::new(json!({})).await;
    let tenant = h.desired("settings", "owner", json!({}));
    let password = h.apply(&tenant, None).await.unwrap();
    let mut conn = tenant_session(&tenant, password.expose(), tenant.database.as_str())
        .await
        .unwrap();
    // Ask the server, not a list: try every setting it has (and the two
    // PostgreSQL keeps out of pg_settings) as the database's owner.
    let accepted: Vec<String> = sqlx::query_scalar(
        "SELECT name FROM (SELECT name, reset_val FROM pg_settings
                           UNION ALL VALUES ('role', 'none'), ('session_authorization', current_user)) s (name, value)",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    let mut settable = Vec::new();
    for name in accepted {
        let value: String = sqlx::query_scalar(
            "SELECT COALESCE((SELECT reset_val FROM pg_settings WHERE name = $1), CASE $1 WHEN 'role' THEN 'none' ELSE current_user END)",
        )
        .bind(&name)
        .fetch_one(&mut conn)
        .await
        .unwrap();
        let statement = format!(
            "ALTER DATABASE \"{}\" SET \"{name}\" = '{}'",
            tenant.database.as_str(),
            value.replace('\'', "''")
        );
        if sqlx::raw_sql(sqlx::AssertSqlSafe(statement))
            .execute(&mut conn)
            .await
            .is_ok()
        {
            settable.push(name);
        }
    }
    assert!(
        settable.len() > 100
            && settable.iter().any(|n| n == "search_path")
            && settable.iter().any(|n| n == "role"),
        "the probe found too few settable settings: {settable:?}"
    );
    let unjudged: Vec<&String> = settable
        .iter()
        .filter(|name| admin_session::treatment(name).is_none())
        .collect();
    assert!(
        unjudged.is_empty(),
        "a database owner can set these, and src/admin_session.rs neither pins them nor says why they are harmless: {unjudged:?}"
    );
    for pin in PINNED {
        assert!(
            pin.since > 0 || settable.iter().any(|n| n.eq_ignore_ascii_case(pin.name)),
            "{} is pinned but a database owner cannot set it: drop it from the pins",
            pin.name
        );
    }
}

/// Every pinned setting as the session sees it, and as PostgreSQL spells
/// the pinned value (read in the same session, in a rolled-back transaction).
async fn settings_seen(conn: &mut PgConnection) -> Vec<(String, String, String)> {
    let names: Vec<String> = PINNED
        .iter()
        .filter(|p| p.since == 0)
        .map(|p| p.name.to_owned())
        .collect();
    let values: Vec<String> = PINNED
        .iter()
        .filter(|p| p.since == 0)
        .map(|p| p.value.to_owned())
        .collect();
    let seen: Vec<String> = sqlx::query_scalar(
        "SELECT current_setting(n) FROM unnest($1::text[]) WITH ORDINALITY AS u(n, i) ORDER BY i",
    )
    .bind(&names)
    .fetch_all(&mut *conn)
    .await
    .unwrap();
    let mut tx = conn.begin().await.unwrap();
    let mut canonical = Vec::new();
    for (name, value) in names.iter().zip(&values) {
        let spelled: String = sqlx::query_scalar("SELECT set_config($1, $2, true)")
            .bind(name)
            .bind(value)
            .fetch_one(&mut *tx)
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        canonical.push(spelled);
    }
    tx.rollback().await.unwrap();
    names
        .into_iter()
        .zip(seen)
        .zip(canonical)
        .map(|((n, s), c)| (n, s, c))
        .collect()
}

#[tokio::test]
async fn admin_sessions_run_pinned_whatever_the_database_says() {
    let h = Harness::new(json!({})).await;
    let tenant = h.desired("settings", "hostile", json!({}));
    let password = h.apply(&tenant, None).await.unwrap();
    let database = tenant.database.as_str();
    let mut conn = tenant_session(&tenant, password.expose(), database)
        .await
        .unwrap();
    for setting in [
        "SET search_path = public, pg_catalog",
        "SET statement_timeout = '1ms'",
        "SET lock_timeout = '1ms'",
        "SET default_transaction_read_only = on",
        "SET default_transaction_isolation = 'serializable'",
        "SET standard_conforming_strings = off",
        "SET client_min_messages = 'debug5'",
        "SET exit_on_error = on",
        "SET quote_all_identifiers = on",
        "SET idle_session_timeout = '1ms'",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain([format!("SET role = '{}'", tenant.role.as_str())])
    {
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "ALTER DATABASE \"{database}\" {setting}"
        )))
        .execute(&mut conn)
        .await
        .unwrap();
    }
    drop(conn);

    // The admin session tenantdb opens there, asked from the inside.
    let mut pool_conn = h.pool.acquire().await.unwrap();
    let version = admin_access::version_of(&pool_conn);
    let options = admin_session::in_tenant_database(&h.admin, database, version);
    let mut admin = PgConnection::connect_with(&options).await.unwrap();
    let who: (String, String) = sqlx::query_as("SELECT current_user::text, session_user::text")
        .fetch_one(&mut admin)
        .await
        .unwrap();
    assert_eq!(
        who.0, who.1,
        "the admin session runs as the admin role, not SET ROLE to the tenant"
    );
    for (name, seen, pinned) in settings_seen(&mut admin).await {
        assert_eq!(seen, pinned, "{name} in an admin session");
    }
    // So does the maintenance database's.
    for (name, seen, pinned) in settings_seen(&mut pool_conn).await {
        assert_eq!(seen, pinned, "{name} in a maintenance session");
    }

    // Positive control: the same database through unpinned options shows
    // the tenant's values (so the check above could fail).
    let unpinned = support::admin().await;
    let mut plain = PgConnection::connect_with(
        &PgConnectOptions::new_without_pgpass()
            .host(&unpinned.host)
            .port(unpinned.port)
            .username(&unpinned.user)
            .password(&unpinned.password)
            .database(database)
            // Only so that the control session lives long enough to answer
            // (the tenant's 1 ms statement_timeout cancels even the
            // connection's own first statements on a busy machine).
            .options([("idle_session_timeout", "0"), ("statement_timeout", "0")]),
    )
    .await
    .unwrap();
    let (path, user): (String, String) =
        sqlx::query_as("SELECT pg_catalog.current_setting('search_path'), current_user::text")
            .fetch_one(&mut plain)
            .await
            .unwrap();
    assert_eq!(path, "public, pg_catalog");
    assert_eq!(user, tenant.role.as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_tenant_never_runs_code_as_the_admin() {
    // Provisioning with the pinned options tenantdb builds, and the
    // hostile tenant's planted database, as every other path sees them.
    let pinned = Harness::new(json!({})).await;
    let setup = Harness::new(json!({})).await;
    hostile_scenario(&setup, &pinned, "attackers").await;
}

/// The mutant: the same scenario with admin sessions that skip the pins
/// that keep tenantdb safe (search path, role) but keep those that keep it
/// working (timeouts, read-only). The suite must catch it — as a shadow
/// escaping, not as a timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hostile_suite_fails_when_admin_sessions_are_not_pinned() {
    use futures::FutureExt;
    let admin = support::admin().await;
    let unpinned = PgConnectOptions::new_without_pgpass()
        .host(&admin.host)
        .port(admin.port)
        .username(&admin.user)
        .password(&admin.password)
        .database("postgres")
        .options([
            ("role", "none"),
            ("statement_timeout", "0"),
            ("lock_timeout", "0"),
            ("idle_in_transaction_session_timeout", "0"),
            ("default_transaction_read_only", "off"),
            ("default_transaction_isolation", "read committed"),
            ("default_transaction_deferrable", "off"),
            ("exit_on_error", "off"),
            ("client_min_messages", "notice"),
            ("standard_conforming_strings", "on"),
        ]);
    let mutant = Harness::with_admin_options(json!({}), unpinned).await;
    let setup = Harness::new(json!({})).await;
    let outcome = std::panic::AssertUnwindSafe(hostile_scenario(&setup, &mutant, "mutants"))
        .catch_unwind()
        .await;
    let panic = outcome.expect_err("the hostile suite passed with unpinned admin sessions");
    let message = panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_default();
    assert!(
        message.contains(hostile::ESCAPE),
        "the suite failed, but not because a shadow ran as the admin: {message}"
    );
}

/// Provisions a victim and a hostile tenant with `setup`, lets the hostile
/// tenant plant its shadows and settings, then runs every path of the
/// reconcile core that touches its database through `h`: plan, apply with
/// indexes and a new extension, the health query and login, and deletion
/// with `Delete`. Panics on anything a hostile tenant gained.
async fn hostile_scenario(setup: &Harness, h: &Harness, namespace: &str) {
    let victim = setup.desired(&format!("{namespace}-victims"), "bank", json!({}));
    let victim_password = setup.apply(&victim, None).await.unwrap();
    let victim_before = hostile::role_fingerprint(victim.role.as_str()).await;

    // One extension now; the second is declared after the tenant planted
    // its shadows, so its install runs in the hostile database.
    let spec = |extensions: serde_json::Value| json!({"extensions": extensions, "indexes": hostile::indexes(), "deletionPolicy": "Delete"});
    let initial = setup.desired(namespace, "mallory", spec(json!(["pg_trgm"])));
    let hostile = h.desired(namespace, "mallory", spec(json!(["pg_trgm", "citext"])));
    let database = hostile.database.as_str().to_owned();
    let role = hostile.role.as_str().to_owned();
    let password = setup.apply(&initial, None).await.unwrap();
    let mut attacker = tenant_session(&hostile, password.expose(), &database)
        .await
        .unwrap();
    let planted = hostile::plant(&mut attacker, &role, &database).await;
    drop(attacker);
    assert!(
        planted.functions >= 20 && planted.relations >= 5 && planted.types >= 3 && planted.operators >= 20,
        "too few shadows planted: {planted:?}"
    );
    let hostile_before = hostile::role_fingerprint(&role).await;
    let mut inspector = hostile::inspector(&database).await;

    // Positive control: tenantdb's own extension query, sent through
    // options that keep the timeouts and read-only off but not the search
    // path, runs a shadow as the admin — which fails the query.
    {
        let admin = support::admin().await;
        let mut plain = PgConnection::connect_with(
            &PgConnectOptions::new_without_pgpass()
                .host(&admin.host)
                .port(admin.port)
                .username(&admin.user)
                .password(&admin.password)
                .database(&database)
                .options([
                    ("role", "none"),
                    ("statement_timeout", "0"),
                    ("default_transaction_read_only", "off"),
                ]),
        )
        .await
        .unwrap();
        let error = sqlx::query(observe::EXTENSIONS_QUERY)
            .bind(&role)
            .bind(sql::statements::EXTENSION_SCHEMA)
            .fetch_one(&mut plain)
            .await
            .expect_err("a shadow ran as the admin and failed its statement");
        assert!(error.to_string().contains(hostile::ESCAPE), "{error}");
        let (_, as_other) = hostile::runs(&mut inspector).await;
        assert!(
            as_other > 0,
            "the shadows did not catch an unpinned admin session"
        );
        hostile::reset(&mut inspector).await;
    }

    // plan
    let dry = h.provision(&hostile, &password, Mode::DryRun).await;
    assert!(
        !dry.plan.steps.is_empty(),
        "the template flag and connection limit are to be undone"
    );
    let jobs = IndexJobs::new(std::time::Duration::from_millis(100));
    indexes::reconcile(&h.pool, &h.admin, &hostile, &jobs, Mode::DryRun)
        .await
        .unwrap();
    // apply, until the indexes settle
    h.provision(&hostile, &password, Mode::Apply).await;
    let mut settled = None;
    for _ in 0..6 {
        let outcome = indexes::reconcile(&h.pool, &h.admin, &hostile, &jobs, Mode::Apply)
            .await
            .unwrap();
        if outcome.started.is_empty() {
            settled = Some(outcome.plan);
            break;
        }
        for (_, handle) in outcome.started {
            handle.await.unwrap();
        }
    }
    let settled = settled.expect("the indexes settle");
    for status in &settled.statuses {
        assert_eq!(
            status.phase,
            tenantdb::api::tenant_database::IndexPhase::Ready,
            "{status:?}"
        );
    }
    let again = h.provision(&hostile, &password, Mode::DryRun).await;
    assert_eq!(again.plan.steps, [], "converged despite the hostile database");
    let valid: Vec<(String, bool)> = sqlx::query_as(
        "SELECT c.relname::text, i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
          WHERE c.relname IN ('orders_status_idx', 'orders_email_idx') ORDER BY 1",
    )
    .fetch_all(&mut inspector)
    .await
    .unwrap();
    assert_eq!(
        valid,
        [
            ("orders_email_idx".to_owned(), true),
            ("orders_status_idx".to_owned(), true)
        ]
    );
    // `lower` in the declared expressions is pg_catalog's, not the shadow
    // in public (pg_get_indexdef qualifies a name off the search path).
    let definitions: Vec<String> = sqlx::query_scalar(
        "SELECT pg_get_indexdef(c.oid) FROM pg_class c
          WHERE c.relname IN ('orders_status_idx', 'orders_email_idx') ORDER BY 1",
    )
    .fetch_all(&mut inspector)
    .await
    .unwrap();
    assert_eq!(definitions.len(), 2);
    for definition in definitions.iter().map(|d| d.replace('"', "")) {
        assert!(
            definition.contains("lower(") && !definition.contains("public.lower"),
            "{definition}"
        );
    }
    hostile::assert_both_extensions_installed_apart(&mut inspector, &role).await;

    // status: the batched health query and a real login as the tenant
    let sample = health::sample_server(
        &h.pool,
        std::slice::from_ref(&database),
        std::slice::from_ref(&database),
    )
    .await
    .unwrap();
    assert!(sample.databases.contains_key(&database));
    let login = health::login(
        &admin_access::connect_options(
            &h.server.spec,
            &AdminCredentials {
                username: role.clone(),
                password: password.clone(),
            },
            None,
        )
        .database(&database),
    )
    .await;
    assert!(login.ok, "{login:?}");
    // The tenant's application finds its extensions without qualifying them.
    // (Its own session undoes the hostile 1 ms statement timeout it set.)
    let mut app = PgConnection::connect_with(
        &support::server_options()
            .username(&role)
            .password(password.expose())
            .database(&database)
            .options([("statement_timeout", "0")]),
    )
    .await
    .unwrap();
    let similarity: f32 = sqlx::query_scalar("SELECT similarity('tenantdb', 'tenant')")
        .fetch_one(&mut app)
        .await
        .unwrap();
    assert!(similarity > 0.0);
    drop(app);

    // The shadows were reachable (the cast ran during the index work, as
    // the tenant) and never ran as anyone else.
    let (total, as_other) = hostile::runs(&mut inspector).await;
    let recorded = hostile::recorded(&mut inspector).await;
    assert!(total > 0, "no shadow ran at all: the suite would prove nothing");
    assert!(
        recorded.iter().any(|(_, _, what)| what.starts_with("cast")),
        "{recorded:?}"
    );
    assert_eq!(
        as_other,
        0,
        "a tenant object ran as another role: {:?}",
        recorded
            .iter()
            .filter(|(who, _, _)| *who != role)
            .collect::<Vec<_>>()
    );
    assert!(recorded.iter().all(|(who, _, _)| *who == role), "{recorded:?}");
    assert_eq!(
        hostile::role_fingerprint(victim.role.as_str()).await,
        victim_before,
        "the victim's role changed"
    );
    assert_eq!(
        hostile::role_fingerprint(&role).await,
        hostile_before,
        "the hostile role gained something"
    );
    assert!(
        tenant_session(&victim, victim_password.expose(), victim.database.as_str())
            .await
            .is_ok(),
        "the victim's Secret still works"
    );
    drop(inspector);

    // deletion with Delete, after the tenant made its database a template again
    let mut attacker = tenant_session(&hostile, password.expose(), "postgres")
        .await
        .unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "ALTER DATABASE \"{database}\" IS_TEMPLATE true"
    )))
    .execute(&mut attacker)
    .await
    .unwrap();
    drop(attacker);
    reconcile::delete(&h.pool, &h.admin, &hostile, Mode::Apply)
        .await
        .unwrap();
    let mut superuser = support::connect().await;
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_database WHERE datname = $1")
        .bind(&database)
        .fetch_one(&mut superuser)
        .await
        .unwrap();
    assert_eq!(left, 0, "the hostile tenant's database is dropped");
    assert_eq!(
        hostile::role_fingerprint(victim.role.as_str()).await,
        victim_before
    );
}

/// An application's database and login role, created by hand.
async fn hand_made(name: &str, password: &str, attributes: &str) {
    let mut conn = support::connect().await;
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "CREATE ROLE {name} LOGIN {attributes} PASSWORD '{password}'"
    )))
    .execute(&mut conn)
    .await
    .unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "CREATE DATABASE {name} OWNER {name}"
    )))
    .execute(&mut conn)
    .await
    .unwrap();
    // The admin must be able to act as the owner to adopt at all.
    let admin = &support::admin().await.user;
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("GRANT {name} TO {admin}")))
        .execute(&mut conn)
        .await
        .unwrap();
}

/// What a refused adoption must leave as it was: the database's owner,
/// comment, privileges, connection limit and flags (read as the superuser).
async fn database_fingerprint(database: &str) -> String {
    let mut conn = support::connect().await;
    sqlx::query_scalar(
        "SELECT concat_ws('|', pg_get_userbyid(d.datdba), shobj_description(d.oid, 'pg_database'),
                          d.datacl::text, d.datconnlimit, d.datallowconn, d.datistemplate)
           FROM pg_database d WHERE d.datname = $1",
    )
    .bind(database)
    .fetch_one(&mut conn)
    .await
    .unwrap()
}

async fn app_login_works(name: &str, password: &str) -> bool {
    PgConnection::connect_with(
        &support::server_options()
            .username(name)
            .password(password)
            .database(name),
    )
    .await
    .is_ok()
}

#[tokio::test]
async fn adoption_needs_the_servers_grant_and_never_takes_privileges() {
    hand_made("legacy_billing", "billing-app-secret", "").await;
    hand_made("legacy_other", "other-app-secret", "").await;
    let elevated = [
        ("legacy_ops", "CREATEROLE"),
        ("legacy_creator", "CREATEDB"),
        ("legacy_replica", "REPLICATION"),
        ("legacy_bypass", "BYPASSRLS"),
        ("legacy_reader", ""),
    ];
    for (name, attributes) in elevated {
        hand_made(name, &format!("{name}-secret"), attributes).await;
    }
    let mut superuser = support::connect().await;
    // The admin must not inherit what it is being tested to refuse.
    let admin_user = &support::admin().await.user;
    for statement in [
        "GRANT pg_read_all_data TO legacy_reader".to_owned(),
        format!("REVOKE legacy_reader FROM {admin_user}"),
    ] {
        sqlx::raw_sql(sqlx::AssertSqlSafe(statement))
            .execute(&mut superuser)
            .await
            .unwrap();
    }
    let mut adoption =
        vec![json!({"namespace": "billing", "database": "legacy_billing", "role": "legacy_billing"})];
    adoption.extend(
        elevated
            .iter()
            .map(|(name, _)| json!({"namespace": "billing", "database": name, "role": name})),
    );
    let grants = json!({ "adoption": adoption });
    let other_before = hostile::role_fingerprint("legacy_other").await;
    let other_database_before = database_fingerprint("legacy_other").await;
    let names = |db: &str| json!({"adopt": true, "databaseName": db, "roleName": db});

    // Without a grant (no adoption on the server, or another namespace's):
    // refused, nothing changed, the application's password still works.
    let before = hostile::role_fingerprint("legacy_billing").await;
    let billing_database_before = database_fingerprint("legacy_billing").await;
    for (server, namespace) in [(json!({}), "billing"), (grants.clone(), "intruders")] {
        let h = Harness::new(server).await;
        let error = h
            .apply(&h.desired(namespace, "takeover", names("legacy_billing")), None)
            .await
            .unwrap_err();
        assert!(error.to_string().contains("spec.adoption"), "{error}");
        assert_eq!(hostile::role_fingerprint("legacy_billing").await, before);
        assert_eq!(
            database_fingerprint("legacy_billing").await,
            billing_database_before
        );
        assert!(app_login_works("legacy_billing", "billing-app-secret").await);
    }

    let h = Harness::new(grants).await;
    // A granted namespace asking for a database it was not granted.
    let error = h
        .apply(&h.desired("billing", "other", names("legacy_other")), None)
        .await
        .unwrap_err();
    assert!(error.to_string().contains("spec.adoption"), "{error}");
    let other_after = hostile::role_fingerprint("legacy_other").await;
    assert_eq!(other_after, other_before, "an ungranted database's role changed");
    assert_eq!(database_fingerprint("legacy_other").await, other_database_before);
    assert!(app_login_works("legacy_other", "other-app-secret").await);

    // Elevated roles, members of elevated or predefined roles, and
    // tenantdb's own admin role: refused even when granted.
    for (name, reason) in [
        ("legacy_ops", "has CREATEROLE"),
        ("legacy_creator", "has CREATEDB"),
        ("legacy_replica", "has REPLICATION"),
        ("legacy_bypass", "has BYPASSRLS"),
        ("legacy_reader", "is a member of"),
    ] {
        let before = hostile::role_fingerprint(name).await;
        let error = h
            .apply(&h.desired("billing", &name.replace('_', "-"), names(name)), None)
            .await
            .unwrap_err();
        assert!(error.to_string().contains(reason), "{name}: {error}");
        assert_eq!(hostile::role_fingerprint(name).await, before, "{name} changed");
        assert!(app_login_works(name, &format!("{name}-secret")).await, "{name}");
    }
    let admin_user = support::admin().await.user.clone();
    let error = h
        .apply(
            &h.desired(
                "billing",
                "admin",
                json!({"adopt": true, "databaseName": "legacy_billing", "roleName": admin_user}),
            ),
            None,
        )
        .await
        .unwrap_err();
    assert!(error.to_string().contains("tenantdb's own admin role"), "{error}");
    let maintenance = reconcile::resolve(
        &serde_json::from_value(json!({
            "apiVersion": "tenantdb.io/v1alpha1", "kind": "TenantDatabase",
            "metadata": {"name": "x", "namespace": "billing"},
            "spec": {"adopt": true, "databaseName": "postgres"}
        }))
        .unwrap(),
        &h.server,
    )
    .unwrap_err();
    assert_eq!(maintenance.field, "spec.databaseName");

    // With the grant, in its namespace: adopted, and the Secret's password now works.
    let adopted = h.desired("billing", "legacy", names("legacy_billing"));
    let password = h.apply(&adopted, None).await.unwrap();
    assert!(app_login_works("legacy_billing", password.expose()).await);
    assert!(!app_login_works("legacy_billing", "billing-app-secret").await);
}

#[test]
fn every_pin_is_documented_with_a_reason() {
    for pin in PINNED {
        assert!(!pin.why.is_empty(), "{}", pin.name);
        assert_eq!(
            admin_session::treatment(pin.name),
            Some(Treatment::Pinned(pin.value))
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_command_line_never_runs_a_hostile_tenants_code_as_the_admin() {
    let admin = support::admin().await;
    let dir = std::env::temp_dir().join(format!("tenantdb-hostile-cli-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("manifests")).unwrap();
    std::fs::write(
        dir.join("manifests/all.yaml"),
        format!(
            "apiVersion: v1\nkind: Secret\nmetadata: {{name: pg-admin, namespace: ops}}\nstringData: {{username: {}, password: {}}}\n\
             ---\napiVersion: tenantdb.io/v1alpha1\nkind: DatabaseServer\nmetadata: {{name: test-pg}}\n\
             spec: {{host: {}, port: {}, sslMode: disable, adminSecretRef: {{namespace: ops, name: pg-admin}}}}\n\
             ---\napiVersion: tenantdb.io/v1alpha1\nkind: TenantDatabase\nmetadata: {{name: eve, namespace: clihostile}}\n\
             spec: {{server: test-pg, extensions: [pg_trgm], deletionPolicy: Delete}}\n",
            admin.user, admin.password, admin.host, admin.port
        ),
    )
    .unwrap();
    let manifests = dir.join("manifests");
    let secrets = dir.join("secrets");
    let (m, s) = (manifests.to_str().unwrap(), secrets.to_str().unwrap());
    let run = |args: &[&str]| {
        let output = support::tenantdb(args);
        (
            output.status.code(),
            support::text(&output.stdout),
            support::text(&output.stderr),
        )
    };
    let (code, out, err) = run(&["apply", "-f", m, "--secrets-dir", s]);
    assert_eq!(code, Some(0), "{out}{err}");
    let secret: k8s_openapi::api::core::v1::Secret =
        serde_norway::from_str(&std::fs::read_to_string(secrets.join("clihostile-eve-db.yaml")).unwrap())
            .unwrap();
    let data = secret.string_data.unwrap();
    let (database, role) = (data["PGDATABASE"].clone(), data["PGUSER"].clone());
    let mut attacker = PgConnection::connect(&data["DATABASE_URL"]).await.unwrap();
    hostile::plant(&mut attacker, &role, &database).await;
    drop(attacker);
    // Now with the hostile indexes declared.
    let manifest = std::fs::read_to_string(dir.join("manifests/all.yaml"))
        .unwrap()
        .replace(
            "extensions: [pg_trgm],",
            &format!("extensions: [pg_trgm], indexes: {},", hostile::indexes()),
        );
    std::fs::write(dir.join("manifests/all.yaml"), manifest).unwrap();

    let (code, out, err) = run(&["plan", "-f", m, "--secrets-dir", s, "--detailed-exitcode"]);
    assert_eq!(
        code,
        Some(2),
        "the owner's flags and the indexes are to be done: {out}{err}"
    );
    let (code, out, err) = run(&["apply", "-f", m, "--secrets-dir", s]);
    assert_eq!(code, Some(0), "{out}{err}");
    // --admin-url takes the same pinned path as the Secret's credentials.
    let (code, out, err) = run(&[
        "plan",
        "-f",
        m,
        "--secrets-dir",
        s,
        "--detailed-exitcode",
        "--admin-url",
        &admin.url(),
    ]);
    assert_eq!(code, Some(0), "converged: {out}{err}");
    let (code, out, err) = run(&["status", "-f", m, "--secrets-dir", s]);
    assert_eq!(code, Some(0), "{out}{err}");

    let mut inspector = hostile::inspector(&database).await;
    let (total, as_other) = hostile::runs(&mut inspector).await;
    assert!(total > 0, "no shadow ran: the test would prove nothing");
    assert_eq!(as_other, 0, "{:?}", hostile::recorded(&mut inspector).await);
    drop(inspector);

    let (code, out, err) = run(&["delete", "-f", m, "--secrets-dir", s, "--yes"]);
    assert_eq!(code, Some(0), "{out}{err}");
    let mut superuser = support::connect().await;
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_database WHERE datname = $1")
        .bind(&database)
        .fetch_one(&mut superuser)
        .await
        .unwrap();
    assert_eq!(left, 0);
}
