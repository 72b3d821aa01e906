//! Running the reconcile core with no cluster: the manifests a person gives
//! (`tenantdb plan/apply/delete -f …`) are turned into jobs — one per
//! tenant, each with its resolved `Desired` state and the admin pool of its
//! server — which the command line then drives. Connection Secrets live as
//! manifest files in a directory instead of in the API server. A tenant's
//! cache (`spec.cache`) is worked on by [`cache`].

pub mod cache;

use std::collections::BTreeMap;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use sqlx::PgPool;
use sqlx::postgres::PgConnectOptions;

use crate::admin_access::{self, AdminCredentials, Password};
use crate::api::TenantDatabase;
use crate::connection_secret::{self, Endpoint};
use crate::health::HealthPolicy;
use crate::manifest::{AdminOverrides, ManifestError, ManifestSet, Origin};
use crate::reconcile::index_jobs::IndexJobs;
use crate::reconcile::indexes::{self, IndexOutcome};
use crate::reconcile::{self, Desired, Mode, Outcome, Plan, ReconcileError, Step, StoredPassword};

/// How tenantdb reaches one server: its admin pool and where applications connect.
#[derive(Clone)]
pub struct ServerHandle {
    pub pool: PgPool,
    pub admin: PgConnectOptions,
    pub endpoint: Endpoint,
    /// Its `spec.healthCheck`, resolved.
    pub health: HealthPolicy,
    /// Where its DatabaseServer document is.
    pub origin: Origin,
    /// Why the admin login failed, when [`Workspace::reach`] found it so.
    pub unreachable: Option<String>,
}

/// One tenant's catalog snapshot, read with the rest of its server's.
pub struct Observation {
    pub snapshot: reconcile::Snapshot,
    /// The server's `server_version_num`.
    pub version: u32,
}

/// One tenant to act on.
pub struct TenantJob {
    pub origin: Origin,
    pub tenant: TenantDatabase,
    pub namespace: String,
    pub desired: Desired,
    /// The CacheServer its cache goes on, when it has `spec.cache`.
    pub cache_server: Option<String>,
}

impl TenantJob {
    /// `namespace/name`, for output.
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.tenant.name_any())
    }
}

/// Everything needed to act on the tenants of a manifest set.
pub struct Workspace {
    pub servers: BTreeMap<String, ServerHandle>,
    pub caches: BTreeMap<String, cache::CacheHandle>,
    pub jobs: Vec<TenantJob>,
    /// Index builds, throttled per server like the operator's. A failed
    /// build is not retried within one run.
    pub index_jobs: Arc<IndexJobs>,
}

/// Why the admin connection for a server cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum LocalError {
    #[error("--admin-url is not a valid PostgreSQL URL: {0}")]
    AdminUrl(sqlx::Error),
    #[error(transparent)]
    CacheAdminUrl(#[from] cache::CacheAdminUrlError),
}

impl Workspace {
    /// Resolves every tenant of `set` against its server. Problems (a tenant
    /// whose spec cannot be resolved, a server without credentials) are
    /// returned with the document they concern, and that tenant gets no job —
    /// so nothing is ever executed for it.
    pub fn prepare(
        set: &ManifestSet,
        admin_url: Option<&str>,
        cache_admin_url: Option<&str>,
        concurrency: u32,
    ) -> Result<(Self, Vec<ManifestError>), LocalError> {
        let mut problems = set.problems(AdminOverrides {
            database: admin_url.is_some(),
            cache: cache_admin_url.is_some(),
        });
        let (caches, cache_problems) = cache::handles(set, cache_admin_url)?;
        problems.extend(cache_problems);
        let refused: std::collections::BTreeSet<_> = problems.iter().map(|p| p.origin.clone()).collect();
        let override_options = admin_url
            .map(PgConnectOptions::from_str)
            .transpose()
            .map_err(LocalError::AdminUrl)?
            .map(crate::admin_session::pinned);
        let mut servers = BTreeMap::new();
        for server in &set.servers {
            let spec = &server.object.spec;
            // The CA for verify-full (a missing one is a reference problem).
            let ca = match spec.ca_secret_ref.as_ref().map(|r| set.secret_key(r)).transpose() {
                Ok(ca) => ca,
                Err(_) => continue,
            };
            let (admin, endpoint) = match &override_options {
                Some(options) => (
                    match &ca {
                        Some(pem) => options.clone().ssl_root_cert_from_pem(pem.clone()),
                        None => options.clone(),
                    },
                    Endpoint {
                        host: options.get_host().to_owned(),
                        port: options.get_port(),
                        ssl_mode: spec.ssl_mode,
                    },
                ),
                None => {
                    let Some(secret) = set.secret(&spec.admin_secret_ref) else {
                        continue; // reported by reference_errors
                    };
                    let credentials = match AdminCredentials::from_secret(secret) {
                        Ok(credentials) => credentials,
                        Err(error) => {
                            problems.push(ManifestError {
                                origin: server.origin.clone(),
                                field: "spec.adminSecretRef".into(),
                                reason: error.to_string(),
                            });
                            continue;
                        }
                    };
                    (
                        admin_access::connect_options(spec, &credentials, ca),
                        Endpoint {
                            host: spec.host.clone(),
                            port: u16::try_from(spec.port).unwrap_or(5432),
                            ssl_mode: spec.ssl_mode,
                        },
                    )
                }
            };
            servers.insert(
                server.object.name_any(),
                ServerHandle {
                    pool: admin_access::admin_pool(admin.clone(), concurrency),
                    admin,
                    endpoint,
                    health: HealthPolicy::of(&server.object),
                    origin: server.origin.clone(),
                    unreachable: None,
                },
            );
        }

        let mut jobs = Vec::new();
        for tenant in &set.tenants {
            if refused.contains(&tenant.origin) {
                continue; // its problems are reported
            }
            let Ok(server) = set.place(&tenant.object) else {
                continue; // reported by reference_errors
            };
            if !servers.contains_key(&server.name_any()) {
                continue; // the server's own problem is reported
            }
            let cache_server = match set.place_cache(&tenant.object) {
                None => None,
                Some(Ok(cache)) if caches.contains_key(&cache.name_any()) => Some(cache.name_any()),
                // Reported: a missing CacheServer, or its unusable Secret.
                Some(_) => continue,
            };
            // Resolves: the set's problems include every spec problem.
            if let Ok(desired) = reconcile::resolve(&tenant.object, server) {
                jobs.push(TenantJob {
                    origin: tenant.origin.clone(),
                    namespace: tenant.object.namespace().unwrap_or_else(|| "default".into()),
                    tenant: tenant.object.clone(),
                    desired,
                    cache_server,
                });
            }
        }
        let index_jobs = IndexJobs::new(Duration::from_secs(24 * 3600));
        Ok((
            Self {
                servers,
                caches,
                jobs,
                index_jobs,
            },
            problems,
        ))
    }

    /// Logs in to every server once, within the connect timeout, before
    /// anything runs: a server that cannot be reached is one problem,
    /// saying what failed (refused, no answer, host not found, TLS,
    /// authentication) and where, at once — not a pool timeout per tenant
    /// after 30 s. The server is marked [`ServerHandle::unreachable`].
    pub async fn reach(&mut self) -> Vec<ManifestError> {
        let tries = self.servers.iter().map(|(name, server)| async move {
            let address = format!("{}:{}", server.admin.get_host(), server.admin.get_port());
            match admin_access::connect(&server.admin).await {
                Ok(conn) => {
                    let _ = sqlx::Connection::close(conn).await;
                    None
                }
                Err(error) => Some((name.clone(), crate::db_error::describe(&error, &address), error)),
            }
        });
        let mut problems = Vec::new();
        for (name, reason, error) in futures::future::join_all(tries).await.into_iter().flatten() {
            let authentication = error
                .as_database_error()
                .and_then(|e| e.code())
                .is_some_and(|code| code == "28P01" || code == "28000");
            let server = self.servers.get_mut(&name).expect("tried above");
            problems.push(ManifestError {
                origin: server.origin.clone(),
                field: if authentication {
                    "spec.adminSecretRef"
                } else {
                    "spec.host"
                }
                .into(),
                reason: format!("DatabaseServer {name}: cannot log in as administrator: {reason}"),
            });
            server.unreachable = Some(reason);
        }
        problems.extend(cache::reach(&mut self.caches).await);
        problems
    }

    /// Leaves out the servers and cache servers [`Self::reach`] could not
    /// log in to, and their tenants: nothing is tried on them.
    pub fn without_unreachable(&mut self) {
        self.servers.retain(|_, server| server.unreachable.is_none());
        self.caches.retain(|_, cache| cache.unreachable.is_none());
        let (servers, caches) = (&self.servers, &self.caches);
        self.jobs.retain(|job| {
            servers.contains_key(&job.desired.server)
                && job.cache_server.as_ref().is_none_or(|c| caches.contains_key(c))
        });
    }

    /// The handle of the CacheServer `job`'s cache goes on, with its intent.
    pub fn cache_of<'a>(
        &'a self,
        job: &'a TenantJob,
    ) -> Option<(&'a cache::CacheHandle, &'a reconcile::CacheIntent)> {
        let handle = self.caches.get(job.cache_server.as_ref()?)?;
        Some((handle, job.desired.cache.as_ref()?))
    }

    fn server(&self, job: &TenantJob) -> &ServerHandle {
        // prepare() only makes jobs for servers it has handles for.
        &self.servers[&job.desired.server]
    }

    /// Observes, plans and (in [`Mode::Apply`]) applies one tenant.
    pub async fn provision(
        &self,
        job: &TenantJob,
        stored: StoredPassword<'_>,
        mode: Mode,
    ) -> Result<Outcome, ReconcileError> {
        let server = self.server(job);
        reconcile::provision(&server.pool, &server.admin, &job.desired, stored, mode).await
    }

    /// The catalog snapshot of every job, in job order: one statement per
    /// server whatever the number of its tenants, the servers at once. A
    /// server that fails fails each of its jobs with the same reason.
    pub async fn observe_all(&self) -> Vec<Result<Observation, ReconcileError>> {
        let mut by_server: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
        for (i, job) in self.jobs.iter().enumerate() {
            by_server.entry(job.desired.server.as_str()).or_default().push(i);
        }
        let reads = by_server.into_iter().map(|(server, positions)| async move {
            let handle = &self.servers[server];
            let tenants: Vec<&Desired> = positions.iter().map(|&i| &self.jobs[i].desired).collect();
            let read = reconcile::observe_many(&handle.pool, &tenants).await;
            (positions, read)
        });
        let mut observed: Vec<Option<Result<Observation, ReconcileError>>> =
            self.jobs.iter().map(|_| None).collect();
        for (positions, read) in futures::future::join_all(reads).await {
            match read {
                Ok(read) => {
                    for (&i, snapshot) in positions.iter().zip(read.snapshots) {
                        observed[i] = Some(Ok(Observation {
                            snapshot,
                            version: read.version,
                        }));
                    }
                }
                Err(error) => {
                    let handle = self.server(&self.jobs[positions[0]]);
                    let address = format!("{}:{}", handle.admin.get_host(), handle.admin.get_port());
                    let reason = crate::db_error::describe(&error, &address);
                    for &i in &positions {
                        let desired = &self.jobs[i].desired;
                        let cause = sqlx::Error::Io(std::io::Error::other(reason.clone()));
                        observed[i] = Some(Err(reconcile::db_error(desired, "observe catalog")(cause)));
                    }
                }
            }
        }
        observed
            .into_iter()
            .map(|o| o.expect("every job is on one server"))
            .collect()
    }

    /// Plans one tenant over its snapshot from [`Self::observe_all`].
    pub async fn plan_observed(
        &self,
        job: &TenantJob,
        observation: Observation,
        stored: StoredPassword<'_>,
    ) -> Result<Plan, ReconcileError> {
        let server = self.server(job);
        reconcile::plan_observed(
            &server.admin,
            observation.version,
            &job.desired,
            observation.snapshot,
            stored,
        )
        .await
    }

    /// Looks at one tenant's indexes and (in [`Mode::Apply`]) starts the
    /// work they need; the returned jobs run in the background.
    pub async fn indexes(&self, job: &TenantJob, mode: Mode) -> Result<IndexOutcome, ReconcileError> {
        let server = self.server(job);
        indexes::reconcile(&server.pool, &server.admin, &job.desired, &self.index_jobs, mode).await
    }

    /// Plans and (in [`Mode::Apply`]) carries out `deletionPolicy: Delete` for one tenant.
    pub async fn delete(&self, job: &TenantJob, mode: Mode) -> Result<Vec<Step>, ReconcileError> {
        let server = self.server(job);
        reconcile::delete(&server.pool, &server.admin, &job.desired, mode).await
    }

    /// The connection Secret for `job` with `password`, and the cache's
    /// keys when it has a cache.
    pub fn connection_secret(
        &self,
        job: &TenantJob,
        password: &Password,
        cache: Option<&connection_secret::CacheKeys>,
    ) -> Secret {
        let mut secret =
            connection_secret::secret(&job.namespace, &job.desired, &self.server(job).endpoint, password);
        if let (Some(keys), Some(data)) = (cache, secret.string_data.as_mut()) {
            connection_secret::add_cache(data, keys);
        }
        secret
    }

    /// Closes every admin pool.
    pub async fn close(&self) {
        for server in self.servers.values() {
            server.pool.close().await;
        }
    }
}

/// The file a tenant's connection Secret is kept in: `DIR/<namespace>-<secretName>.yaml`.
pub fn secret_path(dir: &Path, job: &TenantJob) -> PathBuf {
    dir.join(format!("{}-{}.yaml", job.namespace, job.desired.secret_name))
}

/// The passwords in the Secret file at `path`, if the file exists and
/// holds them: the database's (`PGPASSWORD`) and the cache's
/// (`REDIS_PASSWORD`).
pub fn read_secret_passwords(path: &Path) -> std::io::Result<(Option<Password>, Option<Password>)> {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let secret: Secret = serde_norway::from_str(&text).map_err(|e| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("{}: {e}", path.display()),
                )
            })?;
            Ok((
                connection_secret::password_of(&secret),
                connection_secret::redis_password_of(&secret),
            ))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok((None, None)),
        Err(e) => Err(e),
    }
}

/// Writes `secret` to `path` readable by its owner only (0600), replacing
/// any previous file atomically; an identical file is left alone.
pub fn write_secret(path: &Path, secret: &Secret) -> std::io::Result<()> {
    let yaml = serde_norway::to_string(secret).map_err(|e| std::io::Error::other(e.to_string()))?;
    if std::fs::read_to_string(path).is_ok_and(|existing| existing == yaml) {
        return Ok(());
    }
    let temporary = path.with_extension("yaml.tmp");
    let _ = std::fs::remove_file(&temporary);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&temporary)?;
    std::io::Write::write_all(&mut file, yaml.as_bytes())?;
    file.sync_all()?;
    std::fs::rename(&temporary, path)
}
