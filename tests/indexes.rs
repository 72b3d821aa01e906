//! Declared indexes against a real PostgreSQL, through the code the
//! operator and `tenantdb apply` share: built concurrently without blocking
//! the tenant, waiting for missing tables, repaired when a build fails,
//! swapped without a gap when changed, dropped only when tenantdb built
//! them, never rebuilt when unchanged, and throttled per server.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;
use sqlx::postgres::PgConnectOptions;
use sqlx::{Connection, PgConnection, PgPool};
use tenantdb::admin_access::{self, Password};
use tenantdb::api::tenant_database::{IndexPhase, IndexStatus};
use tenantdb::api::{DatabaseServer, TenantDatabase};
use tenantdb::reconcile::index_jobs::IndexJobs;
use tenantdb::reconcile::indexes::{self, IndexAction, IndexOutcome, IndexPlan};
use tenantdb::reconcile::{self, Desired, Mode, StoredPassword};

/// One provisioned tenant and the means to drive its indexes.
struct Tenant {
    desired: Desired,
    password: Password,
    admin: PgConnectOptions,
    pool: PgPool,
    server: DatabaseServer,
    namespace: String,
    name: String,
}

fn server(max_index_builds: i32) -> DatabaseServer {
    serde_json::from_value(json!({
        "apiVersion": "tenantdb.io/v1alpha1", "kind": "DatabaseServer",
        "metadata": {"name": "test-pg"},
        "spec": {"host": "unused", "adminSecretRef": {"namespace": "ops", "name": "pg-admin"},
                 "capacity": {"maxIndexBuilds": max_index_builds}}
    }))
    .unwrap()
}

fn resolve(server: &DatabaseServer, namespace: &str, name: &str, indexes: serde_json::Value) -> Desired {
    let tenant: TenantDatabase = serde_json::from_value(json!({
        "apiVersion": "tenantdb.io/v1alpha1", "kind": "TenantDatabase",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"indexes": indexes}
    }))
    .unwrap();
    reconcile::resolve(&tenant, server).unwrap()
}

impl Tenant {
    async fn provision(namespace: &str, name: &str, indexes: serde_json::Value) -> Self {
        Self::provision_on(server(2), namespace, name, indexes).await
    }

    async fn provision_on(
        server: DatabaseServer,
        namespace: &str,
        name: &str,
        indexes: serde_json::Value,
    ) -> Self {
        let admin = support::admin().await.options();
        let pool = admin_access::admin_pool(admin.clone(), 2);
        let desired = resolve(&server, namespace, name, indexes);
        let outcome = reconcile::provision(&pool, &admin, &desired, StoredPassword::Missing, Mode::Apply)
            .await
            .unwrap();
        Self {
            password: outcome.plan.password.unwrap(),
            desired,
            admin,
            pool,
            server,
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        }
    }

    /// The same tenant with another `spec.indexes`.
    fn respec(&mut self, indexes: serde_json::Value) {
        self.desired = resolve(&self.server, &self.namespace, &self.name, indexes);
    }

    /// A session as the tenant's own role in its database, as the application has.
    async fn login(&self) -> PgConnection {
        PgConnection::connect_with(
            &support::server_options()
                .username(self.desired.role.as_str())
                .password(self.password.expose())
                .database(self.desired.database.as_str()),
        )
        .await
        .unwrap()
    }

    /// A superuser session in the tenant database, for inspection.
    async fn inspect(&self) -> PgConnection {
        PgConnection::connect_with(&support::server_options().database(self.desired.database.as_str()))
            .await
            .unwrap()
    }

    async fn reconcile(&self, jobs: &Arc<IndexJobs>, mode: Mode) -> IndexOutcome {
        indexes::reconcile(&self.pool, &self.admin, &self.desired, jobs, mode)
            .await
            .unwrap()
    }

    /// Applies until nothing more is started, waiting for every job; the
    /// final plan (a dry run) says where each index ended up.
    async fn settle(&self, jobs: &Arc<IndexJobs>) -> IndexPlan {
        for _ in 0..5 {
            let outcome = self.reconcile(jobs, Mode::Apply).await;
            if outcome.started.is_empty() {
                break;
            }
            for (_, handle) in outcome.started {
                handle.await.unwrap();
            }
        }
        self.reconcile(jobs, Mode::DryRun).await.plan
    }

    /// `name → (oid, valid, pg_get_indexdef)` of every index on `table`.
    async fn indexes_on(&self, table: &str) -> Vec<(String, u32, bool, String)> {
        let mut conn = self.inspect().await;
        sqlx::query_as::<_, (String, sqlx::postgres::types::Oid, bool, String)>(
            "SELECT c.relname::text, c.oid, i.indisvalid, pg_get_indexdef(c.oid)
               FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
              WHERE i.indrelid = to_regclass($1) ORDER BY 1",
        )
        .bind(table)
        .fetch_all(&mut conn)
        .await
        .unwrap()
        .into_iter()
        .map(|(name, oid, valid, def)| (name, oid.0, valid, def))
        .collect()
    }

    async fn close(self) {
        self.pool.close().await;
    }
}

fn phase_of<'a>(plan: &'a IndexPlan, name: &str) -> &'a IndexStatus {
    plan.statuses
        .iter()
        .find(|s| s.name == name)
        .unwrap_or_else(|| panic!("no status for {name}: {:?}", plan.statuses))
}

async fn execute(conn: &mut PgConnection, statement: &str) {
    sqlx::raw_sql(sqlx::AssertSqlSafe(statement.to_owned()))
        .execute(conn)
        .await
        .unwrap_or_else(|e| panic!("{statement}: {e}"));
}

#[tokio::test]
async fn an_index_waits_for_its_table_then_is_built_valid_and_never_rebuilt() {
    let jobs = IndexJobs::new(Duration::from_secs(3600));
    let spec = |email: &str| {
        json!([
            {"name": "orders_recent", "table": "orders", "columns": ["created_at", "total DESC NULLS LAST"],
             "where": "deleted_at IS NULL"},
            {"name": "orders_email", "table": "orders", "expressions": [email], "unique": true}
        ])
    };
    let mut tenant = Tenant::provision("idx", "waits", spec("lower(email)")).await;

    // No table yet: both wait, nothing is started, and the plan says why.
    let outcome = tenant.reconcile(&jobs, Mode::Apply).await;
    assert!(outcome.started.is_empty() && outcome.plan.actions.is_empty());
    for name in ["orders_recent", "orders_email"] {
        let status = phase_of(&outcome.plan, name);
        assert_eq!(status.phase, IndexPhase::Pending, "{status:?}");
        assert_eq!(
            status.message.as_deref(),
            Some("table public.orders does not exist yet")
        );
    }

    // The application's migration creates the table, with an index of its own.
    let mut app = tenant.login().await;
    execute(
        &mut app,
        "CREATE TABLE orders (id bigserial PRIMARY KEY, email varchar(200), total numeric,
                              created_at timestamptz DEFAULT now(), deleted_at timestamptz);
         INSERT INTO orders (email, total) SELECT 'user' || g || '@example.com', g FROM generate_series(1, 500) g;
         CREATE INDEX orders_total_by_app ON orders (total);",
    )
    .await;

    // Both built — two on one table, one job at a time — valid and marked.
    let plan = tenant.settle(&jobs).await;
    for name in ["orders_recent", "orders_email"] {
        assert_eq!(phase_of(&plan, name).phase, IndexPhase::Ready, "{plan:?}");
    }
    let built = tenant.indexes_on("orders").await;
    let find =
        |indexes: &[(String, u32, bool, String)], name: &str| indexes.iter().find(|i| i.0 == name).cloned();
    let recent = find(&built, "orders_recent").expect("orders_recent exists");
    assert!(recent.2, "indisvalid");
    assert_eq!(
        recent.3,
        "CREATE INDEX orders_recent ON public.orders USING btree (created_at, total DESC NULLS LAST) WHERE (deleted_at IS NULL)"
    );
    let email = find(&built, "orders_email").expect("orders_email exists");
    assert!(email.2, "indisvalid");
    assert_eq!(
        email.3,
        "CREATE UNIQUE INDEX orders_email ON public.orders USING btree (lower((email)::text))"
    );

    // Unchanged spec: nothing to do, nothing rebuilt (same OIDs).
    let again = tenant.reconcile(&jobs, Mode::Apply).await;
    assert!(again.plan.actions.is_empty(), "{:?}", again.plan.actions);
    assert_eq!(tenant.indexes_on("orders").await, built);

    // The same definition spelt differently: PostgreSQL says it is the same
    // index, so only the marker is updated — no rebuild.
    tenant.respec(spec("LOWER( email )"));
    let respelt = tenant.reconcile(&jobs, Mode::DryRun).await.plan;
    assert!(
        matches!(respelt.actions.as_slice(), [IndexAction::Mark(i)] if i.name.as_str() == "orders_email"),
        "{:?}",
        respelt.actions
    );
    let plan = tenant.settle(&jobs).await;
    assert!(plan.actions.is_empty(), "{:?}", plan.actions);
    assert_eq!(tenant.indexes_on("orders").await, built);

    // The app's own index is never taken over when declared differently…
    tenant.respec(json!([
        {"name": "orders_total_by_app", "table": "orders", "columns": ["id"]}
    ]));
    let plan = tenant.reconcile(&jobs, Mode::DryRun).await.plan;
    let status = phase_of(&plan, "orders_total_by_app");
    assert_eq!(status.phase, IndexPhase::Pending);
    assert!(
        status
            .message
            .as_deref()
            .unwrap()
            .contains("was not created by tenantdb; it is left alone"),
        "{status:?}"
    );
    // …and removing orders_recent and orders_email from the spec drops
    // exactly those two: the app's index survives, untouched.
    for (action, handle) in tenant.reconcile(&jobs, Mode::Apply).await.started {
        assert!(matches!(action, IndexAction::Drop { .. }), "{action:?}");
        handle.await.unwrap();
    }
    let left = tenant.indexes_on("orders").await;
    assert_eq!(
        left.iter().map(|i| i.0.as_str()).collect::<Vec<_>>(),
        ["orders_pkey", "orders_total_by_app"]
    );
    assert_eq!(
        find(&left, "orders_total_by_app"),
        find(&built, "orders_total_by_app")
    );

    // Declared exactly as the app made it, it is adopted as it is (marked, not rebuilt).
    tenant.respec(json!([
        {"name": "orders_total_by_app", "table": "orders", "columns": ["total"]}
    ]));
    let plan = tenant.settle(&jobs).await;
    assert_eq!(phase_of(&plan, "orders_total_by_app").phase, IndexPhase::Ready);
    assert_eq!(
        find(&tenant.indexes_on("orders").await, "orders_total_by_app").map(|i| i.1),
        find(&built, "orders_total_by_app").map(|i| i.1)
    );
    tenant.close().await;
}

/// The backend running CREATE INDEX CONCURRENTLY in `database`, once it runs.
async fn building_backend(inspect: &mut PgConnection, database: &str) -> i32 {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let pid: Option<i32> = sqlx::query_scalar(
            "SELECT p.pid FROM pg_stat_progress_create_index p WHERE p.datname = $1 AND p.command = 'CREATE INDEX CONCURRENTLY'",
        )
        .bind(database)
        .fetch_optional(&mut *inspect)
        .await
        .unwrap();
        if let Some(pid) = pid {
            return pid;
        }
        assert!(Instant::now() < deadline, "no build started in {database}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_build_never_blocks_the_tenant_and_a_changed_index_is_swapped_without_a_gap() {
    let jobs = IndexJobs::new(Duration::from_secs(3600));
    let mut tenant = Tenant::provision(
        "idx",
        "online",
        json!([{"name": "orders_created", "table": "orders", "columns": ["created_at"]}]),
    )
    .await;
    let mut app = tenant.login().await;
    execute(
        &mut app,
        "CREATE TABLE orders (id bigserial PRIMARY KEY, total numeric, created_at timestamptz DEFAULT now());
         INSERT INTO orders (total) SELECT g FROM generate_series(1, 2000) g;",
    )
    .await;
    let plan = tenant.settle(&jobs).await;
    assert_eq!(phase_of(&plan, "orders_created").phase, IndexPhase::Ready);
    let old_definition = "CREATE INDEX orders_created ON public.orders USING btree (created_at)";
    assert_eq!(tenant.indexes_on("orders").await[0].3, old_definition);

    // Watch, as fast as possible, that a valid index with the old or the new
    // definition exists on the table at every moment of the change.
    let stop = Arc::new(AtomicBool::new(false));
    let (checks, gaps) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let watcher = {
        let (stop, checks, gaps) = (stop.clone(), checks.clone(), gaps.clone());
        let mut conn = tenant.inspect().await;
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                // Plain catalog reads only: `pg_get_indexdef` looks the
                // index up in the catalog caches, not in the query's
                // snapshot, and fails ("cache lookup failed") on an index
                // dropped concurrently after the snapshot was taken.
                let covered: bool = sqlx::query_scalar(
                    "SELECT EXISTS (SELECT 1 FROM pg_index i
                       JOIN pg_class c ON c.oid = i.indexrelid
                       JOIN pg_am am ON am.oid = c.relam AND am.amname = 'btree'
                      WHERE i.indrelid = 'orders'::regclass AND i.indisvalid
                        AND i.indexprs IS NULL AND i.indpred IS NULL
                        AND ARRAY(SELECT a.attname::text
                                    FROM unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, n)
                                    JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
                                   ORDER BY k.n)
                            IN (ARRAY['created_at'], ARRAY['created_at', 'total']))",
                )
                .fetch_one(&mut conn)
                .await
                .unwrap();
                checks.fetch_add(1, Ordering::Relaxed);
                if !covered {
                    gaps.fetch_add(1, Ordering::Relaxed);
                }
            }
        })
    };

    // An open transaction of the tenant's holds the build in its wait phase,
    // so what happens while it runs can be looked at.
    let mut blocker = tenant.login().await;
    execute(
        &mut blocker,
        "BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT count(*) FROM orders;",
    )
    .await;

    tenant.respec(json!([{"name": "orders_created", "table": "orders", "columns": ["created_at", "total"]}]));
    let outcome = tenant.reconcile(&jobs, Mode::Apply).await;
    let [(IndexAction::Rebuild(_), job)] = <[_; 1]>::try_from(outcome.started).unwrap() else {
        panic!("a rebuild was started");
    };
    // The reconcile returned while the build runs: Building.
    assert_eq!(
        phase_of(&outcome.plan, "orders_created").phase,
        IndexPhase::Building
    );

    let mut inspect = tenant.inspect().await;
    let pid = building_backend(&mut inspect, tenant.desired.database.as_str()).await;
    // The build holds nothing stronger than SHARE UPDATE EXCLUSIVE on the
    // table, which conflicts with no reads or writes…
    let modes: Vec<String> = sqlx::query_scalar(
        "SELECT mode FROM pg_locks WHERE pid = $1 AND relation = 'orders'::regclass AND granted",
    )
    .bind(pid)
    .fetch_all(&mut inspect)
    .await
    .unwrap();
    assert_eq!(modes, ["ShareUpdateExclusiveLock"]);
    // …and the tenant writes while it runs, within a 2 s lock timeout.
    execute(
        &mut app,
        "SET lock_timeout = '2s'; INSERT INTO orders (total) VALUES (42); UPDATE orders SET total = total + 1 WHERE id = 1;",
    )
    .await;
    // A look meanwhile starts nothing new and still says Building.
    let during = tenant.reconcile(&jobs, Mode::Apply).await;
    assert!(during.started.is_empty() && during.plan.actions.is_empty());
    assert_eq!(
        phase_of(&during.plan, "orders_created").phase,
        IndexPhase::Building
    );
    assert!(!job.is_finished(), "the build waits for the open transaction");

    execute(&mut blocker, "COMMIT").await;
    job.await.unwrap();
    stop.store(true, Ordering::Relaxed);
    watcher.await.unwrap();

    let after = tenant.indexes_on("orders").await;
    let names: Vec<&str> = after.iter().map(|i| i.0.as_str()).collect();
    assert_eq!(
        names,
        ["orders_created", "orders_pkey"],
        "the old copy is dropped"
    );
    assert_eq!(
        after[0].3,
        "CREATE INDEX orders_created ON public.orders USING btree (created_at, total)"
    );
    assert!(after[0].2, "indisvalid");
    assert!(
        checks.load(Ordering::Relaxed) > 20,
        "the watcher looked often enough"
    );
    assert_eq!(gaps.load(Ordering::Relaxed), 0, "a moment without either index");
    let plan = tenant.settle(&jobs).await;
    assert_eq!(phase_of(&plan, "orders_created").phase, IndexPhase::Ready);
    assert!(plan.actions.is_empty());
    tenant.close().await;
}

#[tokio::test]
async fn an_invalid_leftover_is_reported_with_the_reason_and_rebuilt_once_fixed() {
    let jobs = IndexJobs::new(Duration::from_secs(3600));
    let tenant = Tenant::provision(
        "idx",
        "invalid",
        json!([{"name": "users_email", "table": "users", "columns": ["email"], "unique": true}]),
    )
    .await;
    let mut app = tenant.login().await;
    execute(
        &mut app,
        "CREATE TABLE users (id serial, email text);
         INSERT INTO users (email) VALUES ('a@example.com'), ('b@example.com'), ('a@example.com');",
    )
    .await;

    let outcome = tenant.reconcile(&jobs, Mode::Apply).await;
    for (_, handle) in outcome.started {
        handle.await.unwrap();
    }
    // PostgreSQL left an INVALID index behind.
    let left = tenant.indexes_on("users").await;
    assert_eq!(left.len(), 1);
    assert_eq!((left[0].0.as_str(), left[0].2), ("users_email", false));
    // Reported Invalid with PostgreSQL's reason (not the duplicated value:
    // tenant data stays out of Kubernetes), and not retried before its time.
    let plan = tenant.reconcile(&jobs, Mode::Apply).await;
    assert!(plan.started.is_empty());
    let status = phase_of(&plan.plan, "users_email");
    assert_eq!(status.phase, IndexPhase::Invalid, "{status:?}");
    let message = status.message.as_deref().unwrap();
    assert!(
        message.contains("could not create unique index \"users_email\""),
        "{message}"
    );
    assert!(!message.contains("a@example.com"), "{message}");

    // The application removes the duplicate. A fresh process (as after a
    // restart, or once the backoff expires) drops the invalid index and
    // builds it again.
    execute(
        &mut app,
        "DELETE FROM users WHERE ctid = (SELECT max(ctid) FROM users WHERE email = 'a@example.com')",
    )
    .await;
    let fresh = IndexJobs::new(Duration::from_secs(3600));
    let first = tenant.reconcile(&fresh, Mode::DryRun).await.plan;
    assert_eq!(phase_of(&first, "users_email").phase, IndexPhase::Building);
    assert!(matches!(first.actions.as_slice(), [IndexAction::Repair(_)]));
    let plan = tenant.settle(&fresh).await;
    assert_eq!(phase_of(&plan, "users_email").phase, IndexPhase::Ready);
    let rebuilt = tenant.indexes_on("users").await;
    assert_eq!((rebuilt[0].0.as_str(), rebuilt[0].2), ("users_email", true));
    let mut duplicate = tenant.login().await;
    let refused = sqlx::query("INSERT INTO users (email) VALUES ('b@example.com')")
        .execute(&mut duplicate)
        .await
        .expect_err("the unique index is in force");
    assert!(refused.to_string().contains("users_email"), "{refused}");
    tenant.close().await;
}

#[tokio::test]
async fn builds_are_throttled_per_server() {
    let jobs = IndexJobs::new(Duration::from_secs(3600));
    let mut tenants = Vec::new();
    let mut blockers = Vec::new();
    for i in 0..3 {
        let tenant = Tenant::provision_on(
            server(2),
            "idx-throttle",
            &format!("t{i}"),
            json!([{"name": "events_at", "table": "events", "columns": ["at"]}]),
        )
        .await;
        let mut app = tenant.login().await;
        execute(
            &mut app,
            "CREATE TABLE events (id serial, at timestamptz DEFAULT now());
             INSERT INTO events (at) SELECT now() FROM generate_series(1, 100);",
        )
        .await;
        let mut blocker = tenant.login().await;
        execute(
            &mut blocker,
            "BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT count(*) FROM events;",
        )
        .await;
        blockers.push(blocker);
        tenants.push(tenant);
    }
    let mut handles = Vec::new();
    let mut statuses = Vec::new();
    for tenant in &tenants {
        let outcome = tenant.reconcile(&jobs, Mode::Apply).await;
        statuses.push(phase_of(&outcome.plan, "events_at").clone());
        handles.extend(outcome.started.into_iter().map(|(_, h)| h));
    }
    assert_eq!(handles.len(), 3);
    assert!(statuses.iter().all(|s| s.phase == IndexPhase::Building));
    let queued = &statuses[2];
    assert!(
        queued.message.as_deref().unwrap().starts_with("queued"),
        "{queued:?}"
    );

    // Two builds run (held by the open transactions); the third waits its turn.
    let mut inspect = support::connect().await;
    let databases: Vec<String> = tenants
        .iter()
        .map(|t| t.desired.database.as_str().to_owned())
        .collect();
    let running = async |inspect: &mut PgConnection| -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM pg_stat_progress_create_index WHERE datname = ANY($1)")
            .bind(&databases)
            .fetch_one(inspect)
            .await
            .unwrap()
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while running(&mut inspect).await < 2 {
        assert!(Instant::now() < deadline, "two builds should start");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(running(&mut inspect).await, 2, "at most two at once");
    assert_eq!(jobs.active("test-pg"), (2, 1));
    let waiting = tenants[2].reconcile(&jobs, Mode::DryRun).await.plan;
    assert!(
        phase_of(&waiting, "events_at")
            .message
            .as_deref()
            .unwrap()
            .starts_with("queued"),
        "{waiting:?}"
    );

    for mut blocker in blockers {
        execute(&mut blocker, "COMMIT").await;
    }
    for handle in handles {
        handle.await.unwrap();
    }
    for tenant in tenants {
        let plan = tenant.settle(&jobs).await;
        assert_eq!(phase_of(&plan, "events_at").phase, IndexPhase::Ready);
        tenant.close().await;
    }
}

/// A build in flight on a server that goes silent — the call sent, no
/// answer coming back — ends once the server stops answering a liveness
/// check on the side, instead of waiting for TCP to give up (a quarter of
/// an hour) with a build slot held. The build is made to wait (an open
/// transaction of the tenant's writes to the table, which CREATE INDEX
/// CONCURRENTLY waits for; the server would end that wait at the build's
/// 60 s lock_timeout, but its answer goes into the silence too), then the
/// link between tenantdb and the server is blackholed. (Without the check
/// the job never ended.)
#[tokio::test]
async fn a_build_on_a_server_gone_silent_ends_once_it_stops_answering() {
    let jobs = IndexJobs::new(Duration::from_secs(3600));
    let tenant = Tenant::provision(
        "idx",
        "silent",
        json!([{"name": "orders_created", "table": "orders", "columns": ["created_at"]}]),
    )
    .await;
    let mut app = tenant.login().await;
    execute(
        &mut app,
        "CREATE TABLE orders (id bigserial PRIMARY KEY, created_at timestamptz DEFAULT now())",
    )
    .await;
    execute(&mut app, "BEGIN; INSERT INTO orders DEFAULT VALUES").await;
    let login = support::admin().await;
    let target = tokio::net::lookup_host((login.host.as_str(), login.port))
        .await
        .unwrap()
        .next()
        .unwrap();
    let link = support::link::Link::to(target).await;
    let via_link = tenant.admin.clone().host("127.0.0.1").port(link.addr.port());
    let pool = admin_access::admin_pool(via_link.clone(), 2);
    let outcome = indexes::reconcile(&pool, &via_link, &tenant.desired, &jobs, Mode::Apply)
        .await
        .unwrap();
    let mut inspect = tenant.inspect().await;
    building_backend(&mut inspect, tenant.desired.database.as_str()).await;
    link.blackhole();
    let silenced = Instant::now();
    let (action, handle) = outcome.started.into_iter().next().expect("a build started");
    tokio::time::timeout(Duration::from_secs(120), handle)
        .await
        .expect("the build still waits on its silent server after 120 s")
        .unwrap();
    eprintln!(
        "the build ended {:.1} s into the silence",
        silenced.elapsed().as_secs_f64()
    );
    let record = indexes::job_record(&jobs, &tenant.desired, &action).unwrap();
    let error = record.last_error.unwrap_or_default();
    assert!(error.contains("stopped answering"), "{error}");
    link.heal();
    execute(&mut app, "COMMIT").await;
}
