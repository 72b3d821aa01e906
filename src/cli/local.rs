//! `tenantdb plan`, `apply`, `status` and `delete`: the reconcile core
//! against the servers named in manifest files, with no cluster. Tenants on
//! one server run concurrently, bounded by `--concurrency` (and by the
//! admin pool of at most four connections per server); a tenant's cache
//! (`spec.cache`) is planned and applied with its database, on its
//! CacheServer's one admin connection.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use futures::StreamExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use tenantdb::admin_access::Password;
use tenantdb::api::TenantDatabase;
use tenantdb::api::tenant_database::CacheStatus;
use tenantdb::api::tenant_database::DeletionPolicy;
use tenantdb::api::tenant_database::IndexPhase;
use tenantdb::cache::{CacheStep, Removal};
use tenantdb::health;
use tenantdb::local::cache::{self as local_cache, CacheOutcome};
use tenantdb::local::{self, Observation, TenantJob, Workspace};
use tenantdb::manifest::{ManifestError, ManifestSet, SchemaValidator};
use tenantdb::reconcile::indexes::{self, IndexPlan};
use tenantdb::reconcile::{Mode, Outcome, ReconcileError, Step, StoredPassword};
use tenantdb::status::{Failure, IndexReport};

#[derive(clap::Args)]
pub struct Common {
    /// Manifest files or directories (each directory's .yaml, .yml and .json files), or - for standard input.
    #[arg(short = 'f', long = "filename", value_name = "FILE_OR_DIR", required = true)]
    paths: Vec<PathBuf>,

    /// Also read the directories below each directory given (as `kubectl apply -R`).
    #[arg(short = 'R', long)]
    recursive: bool,

    /// Admin connection URL to use for every DatabaseServer instead of its host and admin Secret.
    #[arg(long, env = "TENANTDB_ADMIN_URL", hide_env_values = true, value_name = "URL")]
    admin_url: Option<String>,

    /// Admin URL (`redis://user:password@host:port`) to use for every
    /// CacheServer instead of its host, port and admin Secret.
    #[arg(
        long,
        env = "TENANTDB_CACHE_ADMIN_URL",
        hide_env_values = true,
        value_name = "URL"
    )]
    cache_admin_url: Option<String>,

    /// Tenants worked on at once per server (the admin pool holds at most 4 connections).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=64))]
    concurrency: u32,

    /// Directory of connection Secret manifests (`<namespace>-<secretName>.yaml`).
    /// Passwords found there are kept; apply writes the files (mode 0600).
    #[arg(long, value_name = "DIR")]
    secrets_dir: Option<PathBuf>,

    /// Also look inside the databases of tenants that declare no indexes,
    /// for indexes tenantdb built earlier (which apply then drops). Costs a
    /// connection per tenant; without it only tenants with spec.indexes are
    /// looked into.
    #[arg(long)]
    scan_indexes: bool,
}

#[derive(clap::Args)]
pub struct PlanArgs {
    #[command(flatten)]
    common: Common,

    /// Exit 0 when nothing would change, 2 when changes are pending, 1 on error.
    #[arg(long)]
    detailed_exitcode: bool,
}

#[derive(clap::Args)]
pub struct ApplyArgs {
    #[command(flatten)]
    common: Common,

    /// Set new passwords even without --secrets-dir, where they are saved
    /// nowhere (the role then has a password no one knows until it is set
    /// again). Without this, a tenant that would get one is refused.
    #[arg(long)]
    discard_passwords: bool,

    /// Output format: a summary table, or the TenantDatabase objects with status as a JSON list.
    #[arg(short = 'o', long = "output", value_enum, default_value = "table")]
    output: Output,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Output {
    Table,
    Json,
}

/// Loads and checks the manifests and logs in to each server once; a
/// server that cannot be reached is a problem, and (unless the caller
/// only `observes`, as `status` does) its tenants get no job.
async fn prepare(common: &Common, observes: bool) -> anyhow::Result<(Workspace, Vec<ManifestError>)> {
    let validator = SchemaValidator::new()?;
    let (set, mut problems) = ManifestSet::load(&common.paths, common.recursive, &validator)?;
    let (mut workspace, more) = Workspace::prepare(
        &set,
        common.admin_url.as_deref(),
        common.cache_admin_url.as_deref(),
        common.concurrency,
    )?;
    problems.extend(more);
    problems.extend(workspace.reach().await);
    if !observes {
        workspace.without_unreachable();
    }
    for problem in &problems {
        eprintln!("{problem}");
    }
    Ok((workspace, problems))
}

/// Runs `work` for every job (with its position), `concurrency` at a time,
/// results in job order.
async fn for_each_job<'a, T>(
    workspace: &'a Workspace,
    concurrency: u32,
    work: impl AsyncFn(usize, &'a TenantJob) -> T,
) -> Vec<T> {
    let work = &work;
    let mut results: Vec<(usize, T)> = futures::stream::iter(workspace.jobs.iter().enumerate())
        .map(|(i, job)| async move { (i, work(i, job).await) })
        .buffer_unordered(concurrency as usize * workspace.servers.len().max(1))
        .collect()
        .await;
    results.sort_by_key(|(i, _)| *i);
    results.into_iter().map(|(_, r)| r).collect()
}

/// The passwords kept for `job`, read from `--secrets-dir` (untracked
/// without one): `None` untracked, `Some(None)` none saved yet.
struct Kept {
    database: Option<Option<Password>>,
    cache: Option<Option<Password>>,
}

fn kept_passwords(common: &Common, job: &TenantJob) -> anyhow::Result<Kept> {
    Ok(match &common.secrets_dir {
        Some(dir) => {
            let (database, cache) = local::read_secret_passwords(&local::secret_path(dir, job))?;
            Kept {
                database: Some(database),
                cache: Some(cache),
            }
        }
        None => Kept {
            database: None,
            cache: None,
        },
    })
}

/// The tenant's cache planned (or, with `apply`, made true), when it has one.
async fn cache_of(
    workspace: &Workspace,
    job: &TenantJob,
    kept: &Kept,
    apply: bool,
) -> anyhow::Result<Option<CacheOutcome>> {
    let Some((handle, intent)) = workspace.cache_of(job) else {
        return Ok(None);
    };
    let outcome = local_cache::provision(handle, &job.key(), intent, stored(&kept.cache), apply).await?;
    Ok(Some(outcome))
}

/// The plan's line for a cache step: what changes, never the password's hash.
fn cache_step_line(cache: &CacheOutcome, job: &TenantJob) -> Option<String> {
    let CacheStep::SetUser { user, why, .. } = cache.step.as_ref()?;
    let commands = job.desired.cache.as_ref().map_or("", |c| c.commands.as_str());
    Some(format!(
        "ACL SETUSER {user} … -- cache user {} on CacheServer {}: keys and channels {}*, commands {commands}{}",
        why.as_str(),
        cache.server,
        cache.prefix,
        if cache.password_is_new {
            ", a new password"
        } else {
            ""
        }
    ))
}

/// What `status.cache` says of a provisioned cache.
fn cache_status(cache: &CacheOutcome) -> CacheStatus {
    CacheStatus {
        server: cache.server.clone(),
        user: Some(cache.user.clone()),
        key_prefix: Some(cache.prefix.clone()),
        acl_persistence: Some(if cache.acl_file {
            tenantdb::api::cache_server::AclPersistence::AclFile
        } else {
            tenantdb::api::cache_server::AclPersistence::Memory
        }),
        ..CacheStatus::default()
    }
}

/// Each job's observation, to be taken once by the job's own work.
fn taken_one_each(
    observed: Vec<Result<Observation, ReconcileError>>,
) -> Vec<std::sync::Mutex<Option<Result<Observation, ReconcileError>>>> {
    observed
        .into_iter()
        .map(|o| std::sync::Mutex::new(Some(o)))
        .collect()
}

fn take(
    slot: &std::sync::Mutex<Option<Result<Observation, ReconcileError>>>,
) -> Result<Observation, ReconcileError> {
    slot.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .take()
        .expect("each job takes its own observation once")
}

fn stored(password: &Option<Option<Password>>) -> StoredPassword<'_> {
    match password {
        Some(Some(password)) => StoredPassword::Found(password),
        Some(None) => StoredPassword::Missing,
        None => StoredPassword::Untracked,
    }
}

/// What a dry run says of a tenant's indexes.
enum IndexView {
    /// Nothing declared and nothing of tenantdb's found.
    Nothing,
    Planned(IndexPlan),
    /// The database does not exist yet (or cannot be looked into until the
    /// database steps are applied): every declared index will wait for its table.
    AfterProvisioning,
}

/// The index plan of a tenant whose database steps are `steps`. Only a
/// tenant that declares indexes is looked into, unless `scan` says every
/// tenant is (for indexes left from an earlier spec).
async fn index_view(
    workspace: &Workspace,
    job: &TenantJob,
    steps: &[Step],
    scan: bool,
) -> Result<IndexView, ReconcileError> {
    if steps.iter().any(|s| matches!(s, Step::CreateDatabase { .. })) {
        return Ok(IndexView::AfterProvisioning);
    }
    if job.desired.indexes.is_empty() && !scan {
        return Ok(IndexView::Nothing);
    }
    match workspace.indexes(job, Mode::DryRun).await {
        Ok(outcome) if outcome.plan.statuses.is_empty() && outcome.plan.actions.is_empty() => {
            Ok(IndexView::Nothing)
        }
        Ok(outcome) => Ok(IndexView::Planned(outcome.plan)),
        // Access to the database may be what the database steps fix.
        Err(_) if !steps.is_empty() => Ok(IndexView::AfterProvisioning),
        Err(error) => Err(error),
    }
}

pub async fn plan(args: PlanArgs) -> anyhow::Result<ExitCode> {
    let (workspace, problems) = prepare(&args.common, false).await?;
    // One catalog statement per server for all its tenants; planning each
    // is then pure (bar a look inside the databases that declare
    // extensions or indexes). Each cache server was looked at once.
    let observed = taken_one_each(workspace.observe_all().await);
    let results = for_each_job(&workspace, args.common.concurrency, async |i, job| {
        let kept = kept_passwords(&args.common, job)?;
        let observation = take(&observed[i])?;
        let plan = workspace
            .plan_observed(job, observation, stored(&kept.database))
            .await?;
        let indexes = index_view(&workspace, job, &plan.steps, args.common.scan_indexes).await?;
        let cache = cache_of(&workspace, job, &kept, false).await?;
        Ok::<_, anyhow::Error>((Outcome { plan, executed: 0 }, indexes, cache))
    })
    .await;
    workspace.close().await;

    let (mut changing, mut converged, mut failed) = (0, 0, problems.len());
    for (job, result) in workspace.jobs.iter().zip(results) {
        let header = format!(
            "{} (server {}, database {}, role {})",
            job.key(),
            job.desired.server,
            job.desired.database.as_str(),
            job.desired.role.as_str()
        );
        match result {
            Ok((outcome, indexes, cache)) => {
                let index_actions = match &indexes {
                    IndexView::Planned(plan) => plan.actions.as_slice(),
                    _ => &[],
                };
                let pending_builds = match &indexes {
                    IndexView::AfterProvisioning => job.desired.indexes.len(),
                    _ => 0,
                };
                let cache_line = cache.as_ref().and_then(|c| cache_step_line(c, job));
                let steps =
                    outcome.plan.steps.len() + index_actions.len() + usize::from(cache_line.is_some());
                if steps + pending_builds == 0 {
                    converged += 1;
                    println!("{header}: up to date");
                } else {
                    changing += 1;
                    println!("{header}: {steps} step(s)");
                }
                for step in &outcome.plan.steps {
                    println!("  {step};");
                }
                for action in index_actions {
                    for line in action.display(&job.desired).lines() {
                        println!("  {line}");
                    }
                }
                if let Some(line) = &cache_line {
                    println!("  {line}");
                }
                match &indexes {
                    IndexView::Planned(plan) => {
                        for status in &plan.statuses {
                            if status.phase != IndexPhase::Ready
                                && !index_actions.iter().any(|a| a.index_name() == status.name)
                            {
                                println!(
                                    "  -- index {}: {:?}: {}",
                                    status.name,
                                    status.phase,
                                    status.message.as_deref().unwrap_or("")
                                );
                            }
                        }
                    }
                    IndexView::AfterProvisioning => {
                        for index in &job.desired.indexes {
                            println!(
                                "  -- index {}: built once the database exists and table {}.{} does",
                                index.name.as_str(),
                                index.definition.schema.as_str(),
                                index.definition.table.as_str()
                            );
                        }
                    }
                    IndexView::Nothing => {}
                }
            }
            Err(error) => {
                failed += 1;
                eprintln!("{}: {}: {error:#}", job.origin, job.key());
            }
        }
    }
    println!("Plan: {changing} to change, {converged} up to date, {failed} failed.");
    Ok(if failed > 0 {
        ExitCode::FAILURE
    } else if changing > 0 && args.detailed_exitcode {
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    })
}

pub async fn apply(args: ApplyArgs) -> anyhow::Result<ExitCode> {
    let (workspace, problems) = prepare(&args.common, false).await?;
    let common = &args.common;
    let observed = taken_one_each(workspace.observe_all().await);
    let results = for_each_job(&workspace, common.concurrency, async |i, job| {
        let started = Instant::now();
        let result = apply_one(
            &workspace,
            common,
            args.discard_passwords,
            job,
            take(&observed[i]),
        )
        .await;
        let elapsed = started.elapsed().as_millis();
        let cache_steps = |applied: &Applied| {
            applied
                .cache
                .as_ref()
                .map_or(0, |c| usize::from(c.step.is_some()))
        };
        match &result {
            Ok(applied)
                if applied.outcome.executed == 0 && applied.index_jobs == 0 && cache_steps(applied) == 0 =>
            {
                eprintln!("{}: up to date ({elapsed} ms)", job.key())
            }
            Ok(applied) => eprintln!(
                "{}: {} step(s), {} index step(s) and {} cache step(s) applied ({elapsed} ms)",
                job.key(),
                applied.outcome.executed,
                applied.index_jobs,
                cache_steps(applied)
            ),
            Err(error) => eprintln!("{}: {}: {error:#}", job.origin, job.key()),
        }
        result
    })
    .await;
    workspace.close().await;
    // Every Secret file is on disk before apply reports.
    let mut results = results;
    for (job, result) in workspace.jobs.iter().zip(results.iter_mut()) {
        let written = match result {
            Ok(applied) => applied.secret_written.take(),
            Err(_) => None,
        };
        if let Some(written) = written {
            let outcome = written.await.map_err(std::io::Error::other).and_then(|r| r);
            if let Err(error) = outcome {
                eprintln!(
                    "{}: the connection Secret could not be written: {error}",
                    job.key()
                );
                *result = Err(anyhow::anyhow!("writing the connection Secret: {error}"));
            }
        }
    }

    let now = Time(k8s_openapi::jiff::Timestamp::now());
    let mut failed = problems.len();
    let mut objects = Vec::new();
    for (job, result) in workspace.jobs.iter().zip(&results) {
        let error = result
            .as_ref()
            .err()
            .and_then(|e| e.downcast_ref::<ReconcileError>());
        match result {
            Err(_) => failed += 1,
            Ok(applied) if applied.index_failures > 0 => failed += 1,
            Ok(_) => {}
        }
        let failure = match (result, error) {
            (Ok(_), _) => None,
            (Err(_), Some(error)) => Some(Failure::from(error)),
            // Said above, as it happened.
            (Err(_), None) => continue,
        };
        let mut object: TenantDatabase = job.tenant.clone();
        let mut status = tenantdb::status::provisioned(
            None,
            object.metadata.generation,
            Some(&job.desired),
            failure.as_ref().map_or(Ok(()), Err),
            &now,
        );
        if let Ok(applied) = result {
            let report = if applied.indexes.statuses.is_empty() && applied.indexes.dropping == 0 {
                IndexReport::NoneDeclared
            } else {
                IndexReport::Planned(&applied.indexes)
            };
            tenantdb::status::indexes(&mut status, report, object.metadata.generation, &now);
            status.cache = applied.cache.as_ref().map(cache_status);
        }
        object.status = Some(status);
        objects.push(object);
    }

    match args.output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&objects)?),
        Output::Table => {
            println!(
                "{:<32} {:<32} {:<12} {:<8} {:<16} CONNECTION LIMIT",
                "TENANT", "DATABASE", "PHASE", "INDEXES", "CACHE"
            );
            for object in &objects {
                let status = object.status.as_ref();
                let indexes = match status.map(|s| &s.indexes) {
                    Some(indexes) if !indexes.is_empty() => {
                        let ready = indexes.iter().filter(|i| i.phase == IndexPhase::Ready).count();
                        format!("{ready}/{}", indexes.len())
                    }
                    _ => "-".to_owned(),
                };
                println!(
                    "{:<32} {:<32} {:<12} {:<8} {:<16} {}",
                    format!(
                        "{}/{}",
                        object.metadata.namespace.as_deref().unwrap_or("default"),
                        object.metadata.name.as_deref().unwrap_or_default()
                    ),
                    status.and_then(|s| s.database_name.as_deref()).unwrap_or("-"),
                    status
                        .and_then(|s| s.phase)
                        .map_or("-".to_owned(), |p| format!("{p:?}")),
                    indexes,
                    status
                        .and_then(|s| s.cache.as_ref())
                        .map_or("-", |c| c.server.as_str()),
                    status
                        .and_then(|s| s.pool.as_ref())
                        .map_or("-".to_owned(), |p| p.connection_limit.to_string()),
                );
            }
        }
    }
    Ok(if failed > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// What `apply` did for one tenant.
struct Applied {
    outcome: Outcome,
    /// The indexes' states once their builds ended.
    indexes: IndexPlan,
    /// Index actions taken, and how many of them failed.
    index_jobs: usize,
    index_failures: usize,
    /// The connection Secret file being written, if any.
    secret_written: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
    /// The tenant's cache, made true.
    cache: Option<CacheOutcome>,
}

async fn apply_one(
    workspace: &Workspace,
    common: &Common,
    discard_passwords: bool,
    job: &TenantJob,
    observed: Result<Observation, ReconcileError>,
) -> anyhow::Result<Applied> {
    let kept = kept_passwords(common, job)?;
    let password = &kept.database;
    // The plan over the server-wide snapshot: a tenant with nothing to do
    // costs no statement of its own. Anything to do is done through the
    // locked path, which looks again first.
    let preview = workspace.plan_observed(job, observed?, stored(password)).await?;
    // The cache's plan before anything runs: a refused prefix (or a full
    // server) stops the tenant with nothing changed.
    let cache_preview = cache_of(workspace, job, &kept, false).await?;
    if common.secrets_dir.is_none() && !discard_passwords {
        // Nothing may run that sets a password saved nowhere.
        if preview.password_is_new {
            anyhow::bail!(
                "refused: a new password would be set on role {} and saved nowhere; give --secrets-dir DIR to keep it (or --discard-passwords); nothing was changed",
                job.desired.role.as_str()
            );
        }
        if let Some(cache) = cache_preview.as_ref().filter(|c| c.password_is_new) {
            anyhow::bail!(
                "refused: a new password would be set on cache user {} and saved nowhere; give --secrets-dir DIR to keep it (or --discard-passwords); nothing was changed",
                cache.user
            );
        }
    }
    let outcome = if preview.steps.is_empty() && !preview.password_is_new {
        Outcome {
            plan: preview,
            executed: 0,
        }
    } else {
        workspace.provision(job, stored(password), Mode::Apply).await?
    };
    let (cache, cache_failed) = match cache_preview {
        Some(preview) if preview.step.is_none() => (Some(preview), None),
        Some(_) => match cache_of(workspace, job, &kept, true).await {
            Ok(cache) => (cache, None),
            Err(error) => (None, Some(error)),
        },
        None => (None, None),
    };
    // The password is saved first, and off the tenant's turn: the file is
    // fsynced, which on a slow disk costs as much as the SQL. When the
    // cache failed, the Secret keeps the cache password it had.
    let cache_keys = match &cache {
        Some(cache) => cache.keys(),
        None => workspace
            .cache_of(job)
            .zip(kept.cache.clone().flatten())
            .map(|((handle, intent), password)| local_cache::keys(handle, intent, password)),
    };
    let secret_written = match (&common.secrets_dir, &outcome.plan.password) {
        (Some(dir), Some(password)) => {
            let path = local::secret_path(dir, job);
            let secret = workspace.connection_secret(job, password, cache_keys.as_ref());
            let dir = dir.clone();
            Some(tokio::task::spawn_blocking(move || {
                std::fs::create_dir_all(&dir)?;
                local::write_secret(&path, &secret)
            }))
        }
        _ => {
            if outcome.plan.password_is_new || cache.as_ref().is_some_and(|c| c.password_is_new) {
                eprintln!(
                    "{}: warning: --discard-passwords: a new password was set and saved nowhere",
                    job.key()
                );
            }
            None
        }
    };
    if let Some(error) = cache_failed {
        // The database's password is on disk before the failure is told.
        if let Some(written) = secret_written {
            written.await??;
        }
        return Err(error);
    }
    // Only a tenant that declares indexes is looked into (or every one,
    // with --scan-indexes): a database created just now holds none to drop.
    let created = outcome
        .plan
        .steps
        .iter()
        .any(|s| matches!(s, Step::CreateDatabase { .. }));
    let look_inside = !job.desired.indexes.is_empty() || (common.scan_indexes && !created);
    let (indexes, index_jobs, index_failures) = if !look_inside {
        (IndexPlan::default(), 0, 0)
    } else {
        build_indexes(workspace, job).await?
    };
    Ok(Applied {
        outcome,
        indexes,
        index_jobs,
        index_failures,
        secret_written,
        cache,
    })
}

/// Starts the tenant's index work and waits for it, saying what happens as
/// it happens; then looks again for the final states.
async fn build_indexes(
    workspace: &Workspace,
    job: &TenantJob,
) -> Result<(IndexPlan, usize, usize), ReconcileError> {
    let outcome = workspace.indexes(job, Mode::Apply).await?;
    let started = outcome.plan.actions.len();
    if outcome.started.is_empty() {
        // Nothing ran in the background: the plan's states are the final ones.
        return Ok((outcome.plan, started, 0));
    }
    let mut running = futures::stream::FuturesUnordered::new();
    for (action, handle) in outcome.started {
        eprintln!("{}: {}…", job.key(), action.describe());
        let started = Instant::now();
        running.push(async move {
            let _ = handle.await;
            (action, started.elapsed())
        });
    }
    let mut failures = 0;
    while let Some((action, elapsed)) = running.next().await {
        let record = indexes::job_record(&workspace.index_jobs, &job.desired, &action);
        match record.and_then(|r| r.last_error) {
            None => eprintln!(
                "{}: {} done ({} ms)",
                job.key(),
                action.describe(),
                elapsed.as_millis()
            ),
            Some(error) => {
                failures += 1;
                eprintln!("{}: {} failed: {error}", job.key(), action.describe());
            }
        }
    }
    let after = workspace.indexes(job, Mode::DryRun).await?;
    Ok((after.plan, started, failures))
}

#[derive(clap::Args)]
pub struct DeleteArgs {
    #[command(flatten)]
    common: Common,

    /// Drop what the plan shows. Without it, delete only says what it
    /// would drop (exit code 2 when something would be), and drops nothing.
    #[arg(long)]
    yes: bool,
}

pub async fn delete(args: DeleteArgs) -> anyhow::Result<ExitCode> {
    let common = args.common;
    let mode = if args.yes { Mode::Apply } else { Mode::DryRun };
    let (workspace, problems) = prepare(&common, false).await?;
    let results = for_each_job(&workspace, common.concurrency, async |_, job| {
        let delete = job.tenant.spec.deletion_policy == DeletionPolicy::Delete;
        // The cache first, as the operator's finalizer does: its user's
        // access ends before the database goes.
        let cache = match workspace.cache_of(job) {
            Some((handle, intent)) => Some(
                local_cache::remove(handle, intent, delete, mode == Mode::Apply)
                    .await
                    .map_err(anyhow::Error::from)?,
            ),
            None => None,
        };
        let database = match delete {
            false => None,
            true => Some(workspace.delete(job, mode).await?),
        };
        Ok::<_, anyhow::Error>((cache, database))
    })
    .await;
    workspace.close().await;

    let mut failed = problems.len();
    let mut pending = 0;
    for (job, result) in workspace.jobs.iter().zip(results) {
        let (database, role) = (job.desired.database.as_str(), job.desired.role.as_str());
        let result = match result {
            Ok((cache, database)) => {
                if let Some(line) = cache.as_ref().and_then(|c| cache_removal_line(c, job, mode)) {
                    println!("{}: {line}", job.key());
                }
                if mode == Mode::DryRun
                    && cache
                        .as_ref()
                        .is_some_and(|c| matches!(c.removal, Removal::Delete { .. }))
                    && database.as_ref().is_none_or(Vec::is_empty)
                {
                    pending += 1;
                }
                Ok(database)
            }
            Err(error) => Err(error),
        };
        match result {
            Ok(None) => println!(
                "{}: deletionPolicy Retain: database {database} and role {role} kept",
                job.key()
            ),
            Ok(Some(steps)) if steps.is_empty() => println!("{}: nothing to delete", job.key()),
            Ok(Some(steps)) => {
                let dropped: Vec<String> = steps
                    .iter()
                    .filter_map(|s| match s {
                        Step::DropDatabase { database } => Some(format!("database {}", database.as_str())),
                        Step::DropRole { role } => Some(format!("role {}", role.as_str())),
                        _ => None,
                    })
                    .collect();
                if mode == Mode::DryRun {
                    pending += 1;
                    println!("{}: would drop {}", job.key(), dropped.join(" and "));
                    continue;
                }
                println!("{}: dropped {}", job.key(), dropped.join(" and "));
                if let Some(dir) = &common.secrets_dir {
                    let _ = std::fs::remove_file(local::secret_path(dir, job));
                }
            }
            Err(error) => {
                failed += 1;
                eprintln!("{}: {}: {error}", job.origin, job.key());
            }
        }
    }
    if pending > 0 {
        println!(
            "nothing was dropped: {pending} tenant(s) would lose their database and role; run again with --yes to drop them"
        );
    }
    Ok(if failed > 0 {
        ExitCode::FAILURE
    } else if pending > 0 {
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    })
}

/// `status.cache` of a tenant with a cache: where it is, and a login as
/// its user with the Secret file's password (`reachable` unknown without
/// one).
async fn cache_login(
    workspace: &Workspace,
    job: &TenantJob,
    password: Option<Password>,
) -> Option<CacheStatus> {
    let (handle, intent) = workspace.cache_of(job)?;
    let mut status = CacheStatus {
        server: handle.address.server.clone(),
        user: Some(intent.user.clone()),
        key_prefix: Some(intent.prefix.as_str().to_owned()),
        ..CacheStatus::default()
    };
    if let Some(reason) = &handle.unreachable {
        status.reachable = Some(false);
        status.message = Some(format!("the cache server does not answer: {reason}"));
    } else if let Some(password) = password {
        match local_cache::login(handle, &intent.user, &password).await {
            Ok(latency) => {
                status.reachable = Some(true);
                status.latency_ms = Some(i64::try_from(latency.as_millis()).unwrap_or(i64::MAX));
            }
            Err(error) => {
                status.reachable = Some(false);
                status.message = Some(error.to_string());
            }
        }
    }
    Some(status)
}

/// What `delete` says of a tenant's cache.
fn cache_removal_line(removed: &local_cache::Removed, job: &TenantJob, mode: Mode) -> Option<String> {
    let prefix = job.desired.cache.as_ref()?.prefix.as_str();
    let dry = mode == Mode::DryRun;
    Some(match &removed.removal {
        Removal::Nothing => "deletionPolicy Retain: no cache user to turn off; keys kept".to_owned(),
        Removal::Disable { user } if dry => {
            format!("deletionPolicy Retain: would turn cache user {user} off (keys under {prefix} kept)")
        }
        Removal::Disable { user } => {
            format!("deletionPolicy Retain: cache user {user} turned off (keys under {prefix} kept)")
        }
        Removal::Delete { user, .. } if dry => format!(
            "would remove {}every key under {prefix}",
            user.as_ref()
                .map_or(String::new(), |u| format!("cache user {u} and "))
        ),
        Removal::Delete { user, .. } => format!(
            "removed {}{} key(s) under {prefix}",
            user.as_ref()
                .map_or(String::new(), |u| format!("cache user {u} and ")),
            removed.keys_removed
        ),
    })
}

#[derive(clap::Args)]
pub struct StatusArgs {
    #[command(flatten)]
    common: Common,

    /// Output format: a health table, or the TenantDatabase objects with status as a JSON list.
    #[arg(short = 'o', long = "output", value_enum, default_value = "table")]
    output: Output,
}

/// The fleet view without a cluster: per server, one batched query for all
/// its tenants (connections, sizes), then a login as each tenant whose
/// password is in `--secrets-dir`; the same health rules as the operator.
pub async fn status(args: StatusArgs) -> anyhow::Result<ExitCode> {
    let (workspace, problems) = prepare(&args.common, true).await?;
    let now = Time(k8s_openapi::jiff::Timestamp::now());
    let mut objects = Vec::new();
    let mut unhealthy = 0;
    for (name, server) in &workspace.servers {
        let jobs: Vec<&TenantJob> = workspace
            .jobs
            .iter()
            .filter(|j| &j.desired.server == name)
            .collect();
        let databases: Vec<String> = jobs
            .iter()
            .map(|j| j.desired.database.as_str().to_owned())
            .collect();
        // A server the login before found unreachable is reported as such
        // at once, not after the pool's timeout.
        let sample = match &server.unreachable {
            Some(reason) => Err(reason.clone()),
            None => health::sample_server(&server.pool, &databases, &databases)
                .await
                .map_err(|e| tenantdb::reconcile::indexes::reason(&e)),
        };
        let mut logins = Vec::new();
        let mut caches = Vec::new();
        for job in &jobs {
            let kept = kept_passwords(&args.common, job)?;
            caches.push(cache_login(&workspace, job, kept.cache.flatten()).await);
            let password = match server.unreachable {
                Some(_) => None,
                None => kept.database.flatten(),
            };
            let options = password.map(|password| {
                server
                    .admin
                    .clone()
                    .username(job.desired.role.as_str())
                    .password(password.expose())
                    .database(job.desired.database.as_str())
                    .application_name("tenantdb-status")
            });
            logins.push(options);
        }
        let logins: Vec<Option<health::LoginResult>> = futures::stream::iter(logins)
            .map(|options| async move {
                match options {
                    Some(options) => Some(health::login(&options).await),
                    None => None,
                }
            })
            .buffered(4)
            .collect()
            .await;
        for ((job, login), cache) in jobs.iter().zip(logins).zip(caches) {
            let found = sample
                .as_ref()
                .ok()
                .and_then(|s| s.databases.get(job.desired.database.as_str()).cloned());
            let tenant_health = health::TenantHealth {
                checked_at: Some(now.clone()),
                server_error: sample.as_ref().err().cloned(),
                size_bytes: found.as_ref().and_then(|d| d.size_bytes),
                database: found,
                login: if sample.is_ok() { login } else { None },
            };
            let mut object: TenantDatabase = job.tenant.clone();
            let mut status = tenantdb::status::provisioned(
                None,
                object.metadata.generation,
                Some(&job.desired),
                Ok(()),
                &now,
            );
            // Only what was observed: no claim about provisioning.
            status.conditions.retain(|c| c.type_ == "Healthy");
            status.phase = None;
            health::apply(
                &mut status,
                &tenant_health,
                &server.health,
                object.metadata.generation,
                &now,
            );
            if status
                .conditions
                .iter()
                .any(|c| c.type_ == "Healthy" && c.status != "True")
                || cache.as_ref().is_some_and(|c| c.reachable == Some(false))
            {
                unhealthy += 1;
            }
            status.cache = cache;
            object.status = Some(status);
            objects.push(object);
        }
    }
    workspace.close().await;

    match args.output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&objects)?),
        Output::Table => {
            println!(
                "{:<32} {:<28} {:<8} {:<12} {:<8} {:<10} {:<10} {:<10} MESSAGE",
                "TENANT", "DATABASE", "HEALTHY", "CONNECTIONS", "UTIL", "LATENCY", "SIZE", "CACHE"
            );
            for object in &objects {
                let status = object.status.as_ref();
                let health = status.and_then(|s| s.health.as_ref());
                let healthy = status
                    .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Healthy"))
                    .map_or("-", |c| if c.status == "True" { "yes" } else { "no" });
                let cache = status.and_then(|s| s.cache.as_ref());
                let message = [
                    health.and_then(|h| h.message.clone()),
                    cache.and_then(|c| c.message.as_ref().map(|m| format!("cache: {m}"))),
                ];
                println!(
                    "{:<32} {:<28} {:<8} {:<12} {:<8} {:<10} {:<10} {:<10} {}",
                    format!(
                        "{}/{}",
                        object.metadata.namespace.as_deref().unwrap_or("default"),
                        object.metadata.name.as_deref().unwrap_or_default()
                    ),
                    status.and_then(|s| s.database_name.as_deref()).unwrap_or("-"),
                    healthy,
                    status
                        .and_then(|s| s.connections.clone())
                        .unwrap_or_else(|| "-".into()),
                    status
                        .and_then(|s| s.pool.as_ref())
                        .map_or("-".to_owned(), |p| format!("{}%", p.utilization)),
                    health
                        .and_then(|h| h.latency_ms)
                        .map_or("-".to_owned(), |ms| format!("{ms} ms")),
                    health
                        .and_then(|h| h.size_bytes)
                        .map_or("-".to_owned(), |b| format!("{} MiB", b / (1024 * 1024))),
                    match cache.map(|c| (c.reachable, c.latency_ms)) {
                        None | Some((None, _)) => "-".to_owned(),
                        Some((Some(true), Some(ms))) => format!("{ms} ms"),
                        Some((Some(true), None)) => "yes".to_owned(),
                        Some((Some(false), _)) => "no".to_owned(),
                    },
                    message.into_iter().flatten().collect::<Vec<_>>().join("; "),
                );
            }
            if args.common.secrets_dir.is_none() {
                eprintln!("note: logins were not checked (give --secrets-dir to log in as each tenant)");
            }
        }
    }
    Ok(if unhealthy > 0 || !problems.is_empty() {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
