//! Declared indexes: observe what the tenant database has, decide per index
//! (pure) what it needs, and hand the work to [`IndexJobs`], which builds in
//! the background so a reconcile never waits for a long build.
//!
//! An index tenantdb built carries a marker comment naming the owning
//! resource and the fingerprint of the definition it was built from. A
//! matching fingerprint means "as declared" without asking PostgreSQL;
//! otherwise the definitions are compared the way PostgreSQL normalises them
//! (`pg_get_indexdef` of the index, and of the wanted index created on an
//! empty temporary copy of the table in a rolled-back transaction), so a
//! spelling change in the spec never causes a rebuild.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::time::Instant;

use sha2::{Digest, Sha256};
use sqlx::postgres::PgConnectOptions;
use sqlx::{Connection, PgConnection, Row};

use crate::api::tenant_database::{IndexPhase, IndexStatus};
use crate::sql::index::{self as sql, IndexDefinition, normalized_definition};
use crate::sql::{Ident, Statement};

use super::desired::{Desired, DesiredIndex, INDEX_DEFINITION_SEPARATOR, OWNER_MARKER_PREFIX};
use super::error::ReconcileError;
use super::index_jobs::{IndexJobs, Job, JobKey, JobPhase, JobRecord};
use super::{Mode, db_error};

/// An index as it exists in the tenant database.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObservedIndex {
    pub schema: String,
    pub name: String,
    pub table: String,
    pub valid: bool,
    /// A CREATE INDEX CONCURRENTLY for it is running (by anyone).
    pub building: bool,
    /// `pg_get_indexdef` of the index.
    pub definition: String,
    pub comment: Option<String>,
}

/// What the tenant database holds that matters to its declared indexes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IndexSnapshot {
    /// `(schema, table)` of the declared tables that exist.
    pub tables: BTreeSet<(String, String)>,
    /// Indexes with a declared or reserved name, and every index carrying a
    /// tenantdb marker; keyed by `(schema, name)`.
    pub indexes: BTreeMap<(String, String), ObservedIndex>,
    /// PostgreSQL's normalised form of each declared index whose existing
    /// namesake could not be recognised by its marker alone: `Ok(definition)`,
    /// or why PostgreSQL refused the definition.
    pub probes: BTreeMap<String, Result<String, String>>,
}

const TABLES_QUERY: &str = "
SELECT n.nspname::text AS schema, c.relname::text AS name
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE c.relkind IN ('r', 'p', 'm')
   AND (n.nspname::text, c.relname::text) IN (SELECT * FROM unnest($1::text[], $2::text[]))";

const INDEXES_QUERY: &str = "
SELECT n.nspname::text AS schema, c.relname::text AS name, t.relname::text AS table_name,
       i.indisvalid AS valid, pg_get_indexdef(c.oid) AS definition, d.description AS comment,
       EXISTS (SELECT 1 FROM pg_stat_progress_create_index p WHERE p.index_relid = c.oid) AS building
  FROM pg_index i
  JOIN pg_class c ON c.oid = i.indexrelid
  JOIN pg_namespace n ON n.oid = c.relnamespace
  JOIN pg_class t ON t.oid = i.indrelid
  LEFT JOIN pg_description d
         ON d.objoid = c.oid AND d.classoid = 'pg_class'::regclass AND d.objsubid = 0
 WHERE (n.nspname::text, c.relname::text) IN (SELECT * FROM unnest($1::text[], $2::text[]))
    OR d.description LIKE 'tenantdb.io/%'";

/// The name under which a changed index is rebuilt before the swap, and
/// the name the old one has between the swap and its drop. Both start with
/// the reserved prefix, so no declared index can be named so.
pub fn temporary_names(index: &DesiredIndex) -> (Ident, Ident) {
    let digest = Sha256::digest(format!("{}|{}", index.name.as_str(), index.fingerprint).as_bytes());
    let hash: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
    let name = |kind: &str| Ident::parse(&format!("tenantdb_{kind}_{hash}")).expect("a valid name");
    (name("new"), name("old"))
}

/// Reads the snapshot over a connection to the tenant database.
pub async fn observe(conn: &mut PgConnection, desired: &Desired) -> Result<IndexSnapshot, sqlx::Error> {
    let (schemas, tables): (Vec<String>, Vec<String>) = desired
        .indexes
        .iter()
        .map(|i| {
            (
                i.definition.schema.as_str().to_owned(),
                i.definition.table.as_str().to_owned(),
            )
        })
        .unzip();
    let mut tables_found = BTreeSet::new();
    if !tables.is_empty() {
        for row in sqlx::query(TABLES_QUERY)
            .bind(&schemas)
            .bind(&tables)
            .fetch_all(&mut *conn)
            .await?
        {
            tables_found.insert((row.try_get("schema")?, row.try_get("name")?));
        }
    }
    let mut index_schemas = Vec::new();
    let mut index_names = Vec::new();
    for index in &desired.indexes {
        let (new, _) = temporary_names(index);
        for name in [index.name.as_str(), new.as_str()] {
            index_schemas.push(index.definition.schema.as_str().to_owned());
            index_names.push(name.to_owned());
        }
    }
    let mut indexes = BTreeMap::new();
    for row in sqlx::query(INDEXES_QUERY)
        .bind(&index_schemas)
        .bind(&index_names)
        .fetch_all(&mut *conn)
        .await?
    {
        let index = ObservedIndex {
            schema: row.try_get("schema")?,
            name: row.try_get("name")?,
            table: row.try_get("table_name")?,
            valid: row.try_get("valid")?,
            building: row.try_get("building")?,
            definition: row.try_get("definition")?,
            comment: row.try_get("comment")?,
        };
        indexes.insert((index.schema.clone(), index.name.clone()), index);
    }
    let mut snapshot = IndexSnapshot {
        tables: tables_found,
        indexes,
        probes: BTreeMap::new(),
    };
    for index in &desired.indexes {
        let Some(existing) = snapshot.index(&index.definition.schema, &index.name) else {
            continue;
        };
        if !existing.building && !marked_as(desired, index, existing) {
            let probed = probe(&mut *conn, &desired.role, &index.definition)
                .await
                .map_err(|e| reason(&e));
            snapshot.probes.insert(index.name.as_str().to_owned(), probed);
        }
    }
    Ok(snapshot)
}

impl IndexSnapshot {
    fn index(&self, schema: &Ident, name: &Ident) -> Option<&ObservedIndex> {
        self.indexes
            .get(&(schema.as_str().to_owned(), name.as_str().to_owned()))
    }
}

/// PostgreSQL's own definition of `definition`, from an index on an empty
/// temporary copy of the table, in a transaction that is rolled back, run
/// as the tenant's role (see [`sql::probe_as`]).
async fn probe(
    conn: &mut PgConnection,
    role: &Ident,
    definition: &IndexDefinition,
) -> Result<String, sqlx::Error> {
    let mut tx = conn.begin().await?;
    sqlx::query("SET LOCAL lock_timeout = '5s'")
        .execute(&mut *tx)
        .await?;
    sqlx::query(sql::probe_as(role)).execute(&mut *tx).await?;
    sqlx::query(sql::create_probe_table(definition))
        .execute(&mut *tx)
        .await?;
    sqlx::query(sql::create_probe_index(definition))
        .execute(&mut *tx)
        .await?;
    let text: String = sqlx::query_scalar("SELECT pg_get_indexdef(to_regclass($1))")
        .bind(format!("pg_temp.{}", sql::PROBE_INDEX))
        .fetch_one(&mut *tx)
        .await?;
    tx.rollback().await?;
    Ok(text)
}

/// PostgreSQL's message for a failed statement, without the driver's
/// prefix; for a connection, what failed ([`crate::db_error::describe`]).
pub fn reason(error: &sqlx::Error) -> String {
    match error.as_database_error() {
        Some(db) => db.message().to_owned(),
        None => crate::db_error::describe(error, "the server"),
    }
}

fn owner_of(comment: Option<&str>) -> Option<&str> {
    let rest = comment?.strip_prefix(OWNER_MARKER_PREFIX)?;
    Some(
        rest.split_once(INDEX_DEFINITION_SEPARATOR)
            .map_or(rest, |(owner, _)| owner),
    )
}

fn marked_as(desired: &Desired, index: &DesiredIndex, existing: &ObservedIndex) -> bool {
    existing.comment.as_deref() == Some(desired.index_marker(index).as_str())
        && existing.table == index.definition.table.as_str()
}

/// One piece of index work.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IndexAction {
    /// Build a missing index.
    Create(DesiredIndex),
    /// Drop an invalid leftover of a failed build, then build it again.
    Repair(DesiredIndex),
    /// Build the changed definition under a temporary name, swap the names
    /// in one transaction, then drop the old index: never a moment without
    /// an index.
    Rebuild(DesiredIndex),
    /// Mark an index that already matches the spec as tenantdb's (adopting
    /// an identical one, or recording a re-spelt definition's fingerprint).
    Mark(DesiredIndex),
    /// Drop a tenantdb-built index that is no longer declared.
    Drop { schema: Ident, name: Ident },
}

/// A statement of a job, run alone (outside any transaction, as
/// CONCURRENTLY requires) or with its neighbours in one transaction.
pub enum JobStep {
    Alone(Statement),
    Together(Vec<Statement>),
}

impl IndexAction {
    /// The declared index name, or the dropped one.
    pub fn index_name(&self) -> &str {
        match self {
            IndexAction::Create(i)
            | IndexAction::Repair(i)
            | IndexAction::Rebuild(i)
            | IndexAction::Mark(i) => i.name.as_str(),
            IndexAction::Drop { name, .. } => name.as_str(),
        }
    }

    /// The name its jobs are recorded under: the declared index's name, or
    /// `schema.name` for a drop.
    pub fn job_name(&self) -> String {
        match self {
            IndexAction::Drop { schema, name } => drop_job_name(schema.as_str(), name.as_str()),
            other => other.index_name().to_owned(),
        }
    }

    /// Whether the action builds an index, and so takes one of the
    /// server's build slots.
    pub fn builds(&self) -> bool {
        matches!(
            self,
            IndexAction::Create(_) | IndexAction::Repair(_) | IndexAction::Rebuild(_)
        )
    }

    /// A short description for people.
    pub fn describe(&self) -> String {
        match self {
            IndexAction::Create(i) => format!("build index {}", i.name.as_str()),
            IndexAction::Repair(i) => {
                format!("drop the invalid index {} and build it again", i.name.as_str())
            }
            IndexAction::Rebuild(i) => format!("rebuild index {} to match the spec", i.name.as_str()),
            IndexAction::Mark(i) => format!("mark index {} as managed by tenantdb", i.name.as_str()),
            IndexAction::Drop { schema, name } => {
                format!(
                    "drop index {}.{}, no longer declared",
                    schema.as_str(),
                    name.as_str()
                )
            }
        }
    }

    /// The statements, in order.
    pub fn steps(&self, desired: &Desired) -> Vec<JobStep> {
        use JobStep::{Alone, Together};
        let build = |index: &DesiredIndex, name: &Ident| {
            vec![
                Alone(sql::create_index_concurrently(name, &index.definition)),
                Alone(sql::comment_on_index(
                    &index.definition.schema,
                    name,
                    &desired.index_marker(index),
                )),
            ]
        };
        match self {
            IndexAction::Create(index) => build(index, &index.name),
            IndexAction::Repair(index) => {
                let mut steps = vec![Alone(sql::drop_index_concurrently(
                    &index.definition.schema,
                    &index.name,
                ))];
                steps.extend(build(index, &index.name));
                steps
            }
            IndexAction::Rebuild(index) => {
                let schema = &index.definition.schema;
                let (new, old) = temporary_names(index);
                let mut steps = vec![Alone(sql::drop_index_concurrently(schema, &new))];
                steps.extend(build(index, &new));
                steps.push(Together(vec![
                    sql::rename_index(schema, &index.name, &old),
                    sql::rename_index(schema, &new, &index.name),
                ]));
                steps.push(Alone(sql::drop_index_concurrently(schema, &old)));
                steps
            }
            IndexAction::Mark(index) => vec![Alone(sql::comment_on_index(
                &index.definition.schema,
                &index.name,
                &desired.index_marker(index),
            ))],
            IndexAction::Drop { schema, name } => vec![Alone(sql::drop_index_concurrently(schema, name))],
        }
    }

    /// The statements as shown by `tenantdb plan`.
    pub fn display(&self, desired: &Desired) -> String {
        let mut out = format!("-- {}", self.describe());
        for step in self.steps(desired) {
            match step {
                JobStep::Alone(statement) => {
                    let _ = write!(out, "\n{};", statement.0);
                }
                JobStep::Together(statements) => {
                    out.push_str("\nBEGIN;");
                    for statement in statements {
                        let _ = write!(out, "\n{};", statement.0);
                    }
                    out.push_str("\nCOMMIT;");
                }
            }
        }
        out
    }
}

/// The plan for a tenant's indexes: each declared index's state, and the
/// work to start.
#[derive(Clone, Debug, Default)]
pub struct IndexPlan {
    pub statuses: Vec<IndexStatus>,
    pub actions: Vec<IndexAction>,
    /// Undeclared tenantdb indexes still being dropped or waiting to be.
    pub dropping: usize,
    /// When a failed build may next be retried, the earliest.
    pub retry_at: Option<Instant>,
}

fn drop_job_name(schema: &str, name: &str) -> String {
    format!("{schema}.{name}")
}

fn waiting_for_a_slot(desired: &Desired) -> String {
    format!(
        "queued: one index job at a time per database, {} builds at a time on server {}",
        desired.max_index_builds, desired.server
    )
}

const BUILDING: &str = "building with CREATE INDEX CONCURRENTLY";

fn status(name: &Ident, phase: IndexPhase, message: Option<String>) -> IndexStatus {
    IndexStatus {
        name: name.as_str().to_owned(),
        phase,
        message,
    }
}

/// Decides, for every declared index and every undeclared tenantdb index,
/// what state it is in and what (if anything) to do. Pure: `job` says what
/// the background jobs know of an index (by name), `now` is the clock.
pub fn plan(
    desired: &Desired,
    snapshot: &IndexSnapshot,
    job: &dyn Fn(&str) -> Option<JobRecord>,
    now: Instant,
) -> IndexPlan {
    let mut plan = IndexPlan::default();
    let mut note_retry = |at: Option<Instant>| {
        if let Some(at) = at {
            plan.retry_at = Some(plan.retry_at.map_or(at, |r: Instant| r.min(at)));
        }
    };
    let mut statuses = Vec::new();
    let mut actions = Vec::new();
    for index in &desired.indexes {
        let definition = &index.definition;
        let record = job(index.name.as_str()).unwrap_or_default();
        let backing_off = record.retry_at.is_some_and(|at| at > now);
        if backing_off {
            note_retry(record.retry_at);
        }
        let failed = record.last_error.clone();
        let table = format!("{}.{}", definition.schema.as_str(), definition.table.as_str());
        let (new, _) = temporary_names(index);
        let existing = snapshot.index(&definition.schema, &index.name);
        let (phase, message, action) = if let Some(phase) = record.phase {
            let message = match phase {
                JobPhase::Queued => waiting_for_a_slot(desired),
                JobPhase::Running => record.purpose.clone(),
            };
            (IndexPhase::Building, Some(message), None)
        } else if !snapshot.tables.contains(&(
            definition.schema.as_str().to_owned(),
            definition.table.as_str().to_owned(),
        )) {
            (
                IndexPhase::Pending,
                Some(format!("table {table} does not exist yet")),
                None,
            )
        } else if existing.is_some_and(|e| e.building)
            || snapshot
                .index(&definition.schema, &new)
                .is_some_and(|e| e.building)
        {
            (
                IndexPhase::Building,
                Some(format!("{BUILDING} (started by another tenantdb process)")),
                None,
            )
        } else {
            match existing {
                None if backing_off => (
                    IndexPhase::Pending,
                    Some(format!(
                        "the last build failed: {}; retrying",
                        failed.as_deref().unwrap_or("unknown error")
                    )),
                    None,
                ),
                None => (
                    IndexPhase::Building,
                    Some(BUILDING.to_owned()),
                    Some(IndexAction::Create(index.clone())),
                ),
                Some(existing) => {
                    let owner = owner_of(existing.comment.as_deref());
                    let ours = owner == Some(desired.owner.as_str());
                    let same = marked_as(desired, index, existing)
                        || (existing.table == definition.table.as_str()
                            && matches!(
                                snapshot.probes.get(index.name.as_str()),
                                Some(Ok(probed)) if normalized_definition(probed).is_some()
                                    && normalized_definition(probed) == normalized_definition(&existing.definition)
                            ));
                    let probe_error = match snapshot.probes.get(index.name.as_str()) {
                        Some(Err(error)) => Some(error.clone()),
                        _ => None,
                    };
                    if let Some(other) = owner.filter(|o| *o != desired.owner) {
                        (
                            IndexPhase::Pending,
                            Some(format!(
                                "index {}.{} belongs to {other}; tenantdb leaves it alone",
                                definition.schema.as_str(),
                                index.name.as_str()
                            )),
                            None,
                        )
                    } else if !ours && !same {
                        (
                            IndexPhase::Pending,
                            Some(match probe_error {
                                Some(error) => format!("PostgreSQL refuses the definition: {error}"),
                                None => format!(
                                    "index {}.{} already exists with another definition and was not created by tenantdb; it is left alone (rename or drop it)",
                                    definition.schema.as_str(),
                                    index.name.as_str()
                                ),
                            }),
                            None,
                        )
                    } else if !existing.valid {
                        let reason = failed.unwrap_or_else(|| {
                            "a concurrent build failed and left the index invalid".to_owned()
                        });
                        if backing_off {
                            (
                                IndexPhase::Invalid,
                                Some(format!("{reason}; it will be dropped and rebuilt")),
                                None,
                            )
                        } else {
                            (
                                IndexPhase::Building,
                                Some(format!("rebuilding an invalid index ({reason})")),
                                Some(IndexAction::Repair(index.clone())),
                            )
                        }
                    } else if same {
                        let mark =
                            (!marked_as(desired, index, existing)).then(|| IndexAction::Mark(index.clone()));
                        (IndexPhase::Ready, None, mark)
                    } else if let Some(error) = probe_error {
                        (
                            IndexPhase::Pending,
                            Some(format!("PostgreSQL refuses the new definition: {error}")),
                            None,
                        )
                    } else if backing_off {
                        (
                            IndexPhase::Pending,
                            Some(format!(
                                "rebuilding to the new definition failed: {}; the previous definition stays in place; retrying",
                                failed.as_deref().unwrap_or("unknown error")
                            )),
                            None,
                        )
                    } else {
                        (
                            IndexPhase::Building,
                            Some(
                                "rebuilding to match the spec; the previous definition serves until the swap"
                                    .to_owned(),
                            ),
                            Some(IndexAction::Rebuild(index.clone())),
                        )
                    }
                }
            }
        };
        statuses.push(status(&index.name, phase, message));
        actions.extend(action);
    }

    let declared: BTreeSet<(&str, &str)> = desired
        .indexes
        .iter()
        .map(|i| (i.definition.schema.as_str(), i.name.as_str()))
        .collect();
    for existing in snapshot.indexes.values() {
        if owner_of(existing.comment.as_deref()) != Some(desired.owner.as_str())
            || declared.contains(&(existing.schema.as_str(), existing.name.as_str()))
        {
            continue;
        }
        let dropping = job(&drop_job_name(&existing.schema, &existing.name))
            .and_then(|r| r.phase)
            .is_some();
        plan.dropping += 1;
        if dropping || existing.building {
            continue;
        }
        // A rebuild's new copy is marked before the swap: leave it to the
        // rebuild while any of this tenant's jobs runs.
        if existing.name.starts_with("tenantdb_new_")
            && desired
                .indexes
                .iter()
                .any(|i| job(i.name.as_str()).and_then(|r| r.phase).is_some())
        {
            continue;
        }
        if let (Ok(schema), Ok(name)) = (Ident::parse(&existing.schema), Ident::parse(&existing.name)) {
            actions.push(IndexAction::Drop { schema, name });
        }
    }
    plan.statuses = statuses;
    plan.actions = actions;
    plan
}

/// What an index reconcile found and started.
#[derive(Debug, Default)]
pub struct IndexOutcome {
    pub plan: IndexPlan,
    /// The jobs started (empty in a dry run); the operator lets them run,
    /// the command line waits for them.
    pub started: Vec<(IndexAction, tokio::task::JoinHandle<()>)>,
}

/// The record of `action`'s jobs for `desired`.
pub fn job_record(jobs: &IndexJobs, desired: &Desired, action: &IndexAction) -> Option<JobRecord> {
    jobs.record(&JobKey::new(
        &desired.server,
        desired.database.as_str(),
        &action.job_name(),
    ))
}

/// [`reconcile_in`] with the tenant database reached from the server's
/// admin pool and its connect options (for callers not holding the
/// tenant's lock; the operator runs [`reconcile_in`] under it).
pub async fn reconcile(
    pool: &sqlx::PgPool,
    admin: &PgConnectOptions,
    desired: &Desired,
    jobs: &std::sync::Arc<IndexJobs>,
    mode: Mode,
) -> Result<IndexOutcome, ReconcileError> {
    let version = crate::admin_access::server_version(pool)
        .await
        .map_err(db_error(desired, "connect as admin"))?;
    let tenant_db = crate::admin_session::in_tenant_database(admin, desired.database.as_str(), version);
    reconcile_in(&tenant_db, desired, jobs, mode).await
}

/// Observes the tenant database's indexes, plans, and (in [`Mode::Apply`])
/// marks matching indexes at once and starts the builds and drops in the
/// background. `tenant_db` are the admin options for the tenant database
/// (pinned for its server's version). Every call on the connection has a
/// client-side deadline ([`super::deadline`]).
pub async fn reconcile_in(
    tenant_db: &PgConnectOptions,
    desired: &Desired,
    jobs: &std::sync::Arc<IndexJobs>,
    mode: Mode,
) -> Result<IndexOutcome, ReconcileError> {
    use super::deadline::{ANSWER, within};
    let mut conn = crate::admin_access::connect(tenant_db)
        .await
        .map_err(db_error(desired, "connect to the tenant database"))?;
    let snapshot = within(ANSWER, observe(&mut conn, desired))
        .await
        .map_err(db_error(desired, "observe indexes"))?;
    let key = |job: &str| JobKey::new(&desired.server, desired.database.as_str(), job);
    let mut plan = plan(
        desired,
        &snapshot,
        &|index| jobs.record(&key(index)),
        Instant::now(),
    );
    let mut started = Vec::new();
    if mode == Mode::Apply {
        within(ANSWER, sqlx::query("SET lock_timeout = '10s'").execute(&mut conn))
            .await
            .map_err(db_error(desired, "mark index"))?;
        for action in &plan.actions {
            if let IndexAction::Mark(_) = action {
                for step in action.steps(desired) {
                    if let JobStep::Alone(statement) = step {
                        within(ANSWER, sqlx::query(statement).execute(&mut conn))
                            .await
                            .map_err(db_error(desired, "mark index"))?;
                    }
                }
            } else {
                let purpose = plan
                    .statuses
                    .iter()
                    .find(|s| s.name == action.index_name() && action.builds())
                    .and_then(|s| s.message.clone())
                    .unwrap_or_else(|| action.describe());
                let handle = jobs.start(Job {
                    key: key(&action.job_name()),
                    limit: desired.max_index_builds,
                    tenant_db: tenant_db.clone(),
                    owner: desired.owner.clone(),
                    purpose,
                    steps: action.steps(desired),
                    throttled: action.builds(),
                });
                started.push((action.clone(), handle));
            }
        }
        // A build just started may be waiting for a slot.
        for status in &mut plan.statuses {
            if status.phase == IndexPhase::Building
                && jobs.record(&key(&status.name)).and_then(|r| r.phase) == Some(JobPhase::Queued)
            {
                status.message = Some(waiting_for_a_slot(desired));
            }
        }
    }
    let _ = within(ANSWER, conn.close()).await;
    Ok(IndexOutcome { plan, started })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{DatabaseServer, TenantDatabase};
    use std::time::Duration;

    fn desired() -> Desired {
        let tenant: TenantDatabase = serde_json::from_value(serde_json::json!({
            "apiVersion": "tenantdb.io/v1alpha1", "kind": "TenantDatabase",
            "metadata": {"name": "acme", "namespace": "tenants"},
            "spec": {"indexes": [{"name": "orders_created", "table": "orders", "columns": ["created_at"]}]}
        }))
        .unwrap();
        let server: DatabaseServer = serde_json::from_value(serde_json::json!({
            "apiVersion": "tenantdb.io/v1alpha1", "kind": "DatabaseServer",
            "metadata": {"name": "pg"},
            "spec": {"host": "db", "adminSecretRef": {"namespace": "ops", "name": "a"}}
        }))
        .unwrap();
        super::super::resolve(&tenant, &server).unwrap()
    }

    fn observed(name: &str, valid: bool, comment: Option<String>) -> ObservedIndex {
        ObservedIndex {
            schema: "public".into(),
            name: name.into(),
            table: "orders".into(),
            valid,
            building: false,
            definition: format!("CREATE INDEX {name} ON public.orders USING btree (created_at)"),
            comment,
        }
    }

    fn snapshot(indexes: Vec<ObservedIndex>) -> IndexSnapshot {
        IndexSnapshot {
            tables: BTreeSet::from([("public".to_owned(), "orders".to_owned())]),
            indexes: indexes
                .into_iter()
                .map(|i| ((i.schema.clone(), i.name.clone()), i))
                .collect(),
            probes: BTreeMap::new(),
        }
    }

    #[test]
    fn only_this_tenants_undeclared_indexes_are_dropped() {
        let desired = desired();
        let marker = desired.index_marker(&desired.indexes[0]);
        let snapshot = snapshot(vec![
            observed("orders_created", true, Some(marker)),
            observed(
                "old_ours",
                true,
                Some("tenantdb.io/owner=tenants/acme; definition=00".into()),
            ),
            observed(
                "someone_elses",
                true,
                Some("tenantdb.io/owner=other/t; definition=00".into()),
            ),
            observed("apps_own", true, None),
        ]);
        let plan = plan(&desired, &snapshot, &|_| None, Instant::now());
        assert_eq!(plan.statuses[0].phase, IndexPhase::Ready);
        assert_eq!(
            plan.actions,
            [IndexAction::Drop {
                schema: Ident::parse("public").unwrap(),
                name: Ident::parse("old_ours").unwrap()
            }]
        );
        assert_eq!(plan.dropping, 1);
    }

    #[test]
    fn a_running_job_is_not_started_again_and_a_failure_waits_for_its_retry() {
        let desired = desired();
        let now = Instant::now();
        let running = JobRecord {
            phase: Some(JobPhase::Running),
            purpose: BUILDING.into(),
            ..JobRecord::default()
        };
        let plan_running = plan(&desired, &snapshot(vec![]), &|_| Some(running.clone()), now);
        assert!(plan_running.actions.is_empty());
        assert_eq!(
            (
                plan_running.statuses[0].phase,
                plan_running.statuses[0].message.as_deref()
            ),
            (IndexPhase::Building, Some(BUILDING))
        );

        let failed = JobRecord {
            failures: 1,
            last_error: Some("could not create unique index \"orders_created\"".into()),
            retry_at: Some(now + Duration::from_secs(30)),
            ..JobRecord::default()
        };
        let invalid = snapshot(vec![observed("orders_created", false, None)]);
        let mut with_probe = invalid.clone();
        with_probe.probes.insert(
            "orders_created".into(),
            Ok("CREATE INDEX tenantdb_index_probe_idx ON pg_temp_3.tenantdb_index_probe USING btree (created_at)".into()),
        );
        let waiting = plan(&desired, &with_probe, &|_| Some(failed.clone()), now);
        assert!(waiting.actions.is_empty());
        assert_eq!(waiting.statuses[0].phase, IndexPhase::Invalid);
        assert_eq!(waiting.retry_at, failed.retry_at);
        let due = plan(
            &desired,
            &with_probe,
            &|_| Some(failed.clone()),
            now + Duration::from_secs(31),
        );
        assert!(matches!(due.actions.as_slice(), [IndexAction::Repair(_)]));
        // An invalid index whose definition is not the declared one, and
        // which tenantdb did not mark, is the application's: left alone.
        let foreign = plan(&desired, &invalid, &|_| None, now);
        assert!(foreign.actions.is_empty());
        assert_eq!(foreign.statuses[0].phase, IndexPhase::Pending);
    }
}
