//! `tenantdb plan`, `apply` and `delete`: the reconcile core against the
//! servers named in manifest files, with no cluster. Tenants on one server
//! run concurrently, bounded by `--concurrency` (and by the admin pool of at
//! most four connections per server).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use futures::StreamExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use tenantdb::admin_access::Password;
use tenantdb::api::TenantDatabase;
use tenantdb::api::tenant_database::DeletionPolicy;
use tenantdb::local::{self, TenantJob, Workspace};
use tenantdb::manifest::{ManifestError, ManifestSet, SchemaValidator};
use tenantdb::reconcile::{Mode, Outcome, ReconcileError, Step, StoredPassword};
use tenantdb::status::Failure;

#[derive(clap::Args)]
pub struct Common {
    /// Manifest files or directories (each directory's .yaml, .yml and .json files).
    #[arg(short = 'f', long = "filename", value_name = "FILE_OR_DIR", required = true)]
    paths: Vec<PathBuf>,

    /// Admin connection URL to use for every DatabaseServer instead of its host and admin Secret.
    #[arg(long, env = "TENANTDB_ADMIN_URL", hide_env_values = true, value_name = "URL")]
    admin_url: Option<String>,

    /// Tenants worked on at once per server (the admin pool holds at most 4 connections).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=64))]
    concurrency: u32,

    /// Directory of connection Secret manifests (`<namespace>-<secretName>.yaml`).
    /// Passwords found there are kept; apply writes the files (mode 0600).
    #[arg(long, value_name = "DIR")]
    secrets_dir: Option<PathBuf>,
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

    /// Output format: a summary table, or the TenantDatabase objects with status as a JSON list.
    #[arg(short = 'o', long = "output", value_enum, default_value = "table")]
    output: Output,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Output {
    Table,
    Json,
}

async fn prepare(common: &Common) -> anyhow::Result<(Workspace, Vec<ManifestError>)> {
    let validator = SchemaValidator::new()?;
    let (set, mut problems) = ManifestSet::load(&common.paths, &validator)?;
    let (workspace, more) = Workspace::prepare(&set, common.admin_url.as_deref(), common.concurrency)?;
    problems.extend(more);
    for problem in &problems {
        eprintln!("{problem}");
    }
    Ok((workspace, problems))
}

/// Runs `work` for every job, `concurrency` at a time, results in job order.
async fn for_each_job<'a, T>(
    workspace: &'a Workspace,
    concurrency: u32,
    work: impl AsyncFn(&'a TenantJob) -> T,
) -> Vec<T> {
    let work = &work;
    let mut results: Vec<(usize, T)> = futures::stream::iter(workspace.jobs.iter().enumerate())
        .map(|(i, job)| async move { (i, work(job).await) })
        .buffer_unordered(concurrency as usize * workspace.servers.len().max(1))
        .collect()
        .await;
    results.sort_by_key(|(i, _)| *i);
    results.into_iter().map(|(_, r)| r).collect()
}

/// The password kept for `job`: read from `--secrets-dir`, untracked without one.
fn secret_password(common: &Common, job: &TenantJob) -> anyhow::Result<Option<Option<Password>>> {
    Ok(match &common.secrets_dir {
        Some(dir) => Some(local::read_secret_password(&local::secret_path(dir, job))?),
        None => None,
    })
}

fn stored(password: &Option<Option<Password>>) -> StoredPassword<'_> {
    match password {
        Some(Some(password)) => StoredPassword::Found(password),
        Some(None) => StoredPassword::Missing,
        None => StoredPassword::Untracked,
    }
}

pub async fn plan(args: PlanArgs) -> anyhow::Result<ExitCode> {
    let (workspace, problems) = prepare(&args.common).await?;
    let results = for_each_job(&workspace, args.common.concurrency, async |job| {
        let password = secret_password(&args.common, job)?;
        Ok::<_, anyhow::Error>(workspace.provision(job, stored(&password), Mode::DryRun).await?)
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
            Ok(outcome) if outcome.plan.steps.is_empty() => {
                converged += 1;
                println!("{header}: up to date");
            }
            Ok(outcome) => {
                changing += 1;
                println!("{header}: {} step(s)", outcome.plan.steps.len());
                for step in &outcome.plan.steps {
                    println!("  {step};");
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
    let (workspace, problems) = prepare(&args.common).await?;
    let common = &args.common;
    let results = for_each_job(&workspace, common.concurrency, async |job| {
        let started = Instant::now();
        let result = apply_one(&workspace, common, job).await;
        let elapsed = started.elapsed().as_millis();
        match &result {
            Ok(outcome) if outcome.executed == 0 => eprintln!("{}: up to date ({elapsed} ms)", job.key()),
            Ok(outcome) => eprintln!(
                "{}: {} step(s) applied ({elapsed} ms)",
                job.key(),
                outcome.executed
            ),
            Err(error) => eprintln!("{}: {}: {error:#}", job.origin, job.key()),
        }
        result
    })
    .await;
    workspace.close().await;

    let now = Time(k8s_openapi::jiff::Timestamp::now());
    let mut failed = problems.len();
    let mut objects = Vec::new();
    for (job, result) in workspace.jobs.iter().zip(&results) {
        let error = result
            .as_ref()
            .err()
            .and_then(|e| e.downcast_ref::<ReconcileError>());
        if result.is_err() {
            failed += 1;
        }
        let failure = match (result, error) {
            (Ok(_), _) => None,
            (Err(_), Some(error)) => Some(Failure::from(error)),
            (Err(other), None) => {
                eprintln!("{}: {other:#}", job.key());
                continue;
            }
        };
        let mut object: TenantDatabase = job.tenant.clone();
        object.status = Some(tenantdb::status::provisioned(
            None,
            object.metadata.generation,
            Some(&job.desired),
            failure.as_ref().map_or(Ok(()), Err),
            &now,
        ));
        objects.push(object);
    }

    match args.output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&objects)?),
        Output::Table => {
            println!(
                "{:<32} {:<32} {:<12} CONNECTION LIMIT",
                "TENANT", "DATABASE", "PHASE"
            );
            for object in &objects {
                let status = object.status.as_ref();
                println!(
                    "{:<32} {:<32} {:<12} {}",
                    format!(
                        "{}/{}",
                        object.metadata.namespace.as_deref().unwrap_or("default"),
                        object.metadata.name.as_deref().unwrap_or_default()
                    ),
                    status.and_then(|s| s.database_name.as_deref()).unwrap_or("-"),
                    status
                        .and_then(|s| s.phase)
                        .map_or("-".to_owned(), |p| format!("{p:?}")),
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

async fn apply_one(workspace: &Workspace, common: &Common, job: &TenantJob) -> anyhow::Result<Outcome> {
    let password = secret_password(common, job)?;
    let outcome = workspace.provision(job, stored(&password), Mode::Apply).await?;
    if let (Some(dir), Some(password)) = (&common.secrets_dir, &outcome.plan.password) {
        std::fs::create_dir_all(dir)?;
        let secret = workspace.connection_secret(job, password);
        local::write_secret(&local::secret_path(dir, job), &secret)?;
    } else if outcome.plan.password_is_new {
        eprintln!(
            "{}: warning: a new password was set but not saved anywhere (give --secrets-dir to keep it)",
            job.key()
        );
    }
    Ok(outcome)
}

pub async fn delete(common: Common) -> anyhow::Result<ExitCode> {
    let (workspace, problems) = prepare(&common).await?;
    let results = for_each_job(&workspace, common.concurrency, async |job| {
        match job.tenant.spec.deletion_policy {
            DeletionPolicy::Retain => Ok(None),
            DeletionPolicy::Delete => workspace.delete(job, Mode::Apply).await.map(Some),
        }
    })
    .await;
    workspace.close().await;

    let mut failed = problems.len();
    for (job, result) in workspace.jobs.iter().zip(results) {
        let (database, role) = (job.desired.database.as_str(), job.desired.role.as_str());
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
    Ok(if failed > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
