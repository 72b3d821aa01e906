//! `tenantdb check`: validate manifests exactly as the API server would
//! (schema, defaults, CEL rules), then as `plan` and the operator would
//! (each tenant's spec against its server, the set as a whole: see
//! [`tenantdb::manifest::ManifestSet::problems`]), and with `--connect` log
//! in to each DatabaseServer and CacheServer as its administrator.
//!
//! Problems are printed as `file:document: field: reason`; the exit code is
//! 1 when there is any.

use std::path::PathBuf;
use std::process::ExitCode;
use std::str::FromStr;

use anyhow::Context;
use kube::ResourceExt;
use sqlx::postgres::PgConnectOptions;
use tenantdb::admin_access::{self, AdminCredentials};
use tenantdb::manifest::{AdminOverrides, ManifestSet, SchemaValidator};

#[derive(clap::Args)]
pub struct Args {
    /// Manifest files or directories (each directory's .yaml, .yml and .json files), or - for standard input.
    #[arg(short = 'f', long = "filename", value_name = "FILE_OR_DIR", required = true)]
    paths: Vec<PathBuf>,

    /// Also read the directories below each directory given (as `kubectl apply -R`).
    #[arg(short = 'R', long)]
    recursive: bool,

    /// Also log in to every DatabaseServer and CacheServer with its admin credentials.
    #[arg(long)]
    connect: bool,

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
}

pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let validator = SchemaValidator::new()?;
    let (set, mut problems) = ManifestSet::load(&args.paths, args.recursive, &validator)?;
    problems.extend(set.problems(AdminOverrides {
        database: args.admin_url.is_some(),
        cache: args.cache_admin_url.is_some(),
    }));
    for problem in &problems {
        eprintln!("{problem}");
    }

    for server in &set.servers {
        println!(
            "DatabaseServer {:<28} {}",
            server.object.name_any(),
            server.origin
        );
    }
    for cache in &set.caches {
        println!("CacheServer    {:<28} {}", cache.object.name_any(), cache.origin);
    }
    for tenant in &set.tenants {
        let name = format!(
            "{}/{}",
            tenant.object.namespace().unwrap_or_else(|| "default".into()),
            tenant.object.name_any()
        );
        println!("TenantDatabase {name:<28} {}", tenant.origin);
    }

    let mut unreachable = 0;
    if args.connect {
        let override_options = args
            .admin_url
            .as_deref()
            .map(PgConnectOptions::from_str)
            .transpose()
            .context("--admin-url is not a valid PostgreSQL URL")?
            .map(tenantdb::admin_session::pinned);
        for server in &set.servers {
            let name = server.object.name_any();
            let options = match &override_options {
                Some(options) => options.clone(),
                None => {
                    let Some(secret) = set.secret(&server.object.spec.admin_secret_ref) else {
                        continue; // already reported as a reference problem
                    };
                    let credentials = AdminCredentials::from_secret(secret)?;
                    let ca = server
                        .object
                        .spec
                        .ca_secret_ref
                        .as_ref()
                        .and_then(|r| set.secret_key(r).ok());
                    admin_access::connect_options(&server.object.spec, &credentials, ca)
                }
            };
            match admin_access::probe(&options).await {
                Ok(probe) => {
                    let missing = probe.missing_privileges();
                    let verdict = if !probe.is_supported_version() {
                        unreachable += 1;
                        "PostgreSQL 15 or newer is required".to_owned()
                    } else if missing.is_empty() {
                        "can manage tenants".to_owned()
                    } else {
                        unreachable += 1;
                        format!("lacks {} (tenantdb cannot manage tenants)", missing.join(" and "))
                    };
                    println!(
                        "{name}: connected as {} to PostgreSQL {} (max_connections {}); {verdict}",
                        probe.role, probe.server_version, probe.max_connections
                    );
                }
                Err(error) => {
                    unreachable += 1;
                    let address = format!("{}:{}", options.get_host(), options.get_port());
                    let reason = tenantdb::db_error::describe(&error, &address);
                    eprintln!("{name}: cannot log in as administrator: {reason}");
                }
            }
        }
    }

    if args.connect {
        // Each CacheServer logged in to and looked at, as plan would.
        let (mut caches, more) = tenantdb::local::cache::handles(&set, args.cache_admin_url.as_deref())?;
        for problem in more
            .iter()
            .chain(&tenantdb::local::cache::reach(&mut caches).await)
        {
            unreachable += 1;
            eprintln!("{problem}");
        }
        for (name, cache) in &caches {
            if cache.unreachable.is_none() {
                println!(
                    "{name}: logged in to Redis at {}:{}; can manage tenants' ACL users",
                    cache.address.host, cache.address.port
                );
            }
        }
    }

    let counts = set.counts();
    let caches = match counts["CacheServer"] {
        0 => String::new(),
        n => format!("{n} CacheServer, "),
    };
    println!(
        "{} DatabaseServer, {caches}{} TenantDatabase, {} Secret; {} problem(s)",
        counts["DatabaseServer"],
        counts["TenantDatabase"],
        counts["Secret"],
        problems.len() + unreachable
    );
    Ok(if problems.is_empty() && unreachable == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
