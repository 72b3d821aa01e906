//! A throwaway PostgreSQL cluster in a temporary directory, for tests,
//! `tenantdb sandbox` and benchmarks — never used by the operator itself.
//!
//! `initdb` + `pg_ctl` from the installed server binaries, a free loopback
//! port, password (SCRAM) authentication like a real server, and durability
//! switched off for speed. The cluster is stopped and its directory removed
//! on drop, and also by a small reaper process if the owning process dies
//! without dropping it (a panic across threads, a `static`, `kill -9`).

use std::fs::DirBuilder;
use std::net::TcpListener;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// How the failure to start or stop a throwaway cluster is reported.
#[derive(Debug, thiserror::Error)]
pub enum ThrowawayError {
    #[error(
        "PostgreSQL server binaries (initdb, pg_ctl) not found (looked in {searched}). \
         Install them with `apt-get install -y postgresql` on Debian/Ubuntu, \
         or set TENANTDB_PG_BIN to the directory that holds them"
    )]
    BinariesNotFound { searched: String },
    #[error(
        "running as root, but there is no `postgres` system user to run the server as \
         (initdb refuses to run as root); `apt-get install -y postgresql` creates it"
    )]
    NoPostgresUser,
    #[error("{step} failed: {detail}")]
    Command { step: &'static str, detail: String },
    #[error("throwaway PostgreSQL: {0}")]
    Io(#[from] std::io::Error),
}

/// The superuser every throwaway cluster is created with.
pub const SUPERUSER: &str = "postgres";

/// A running throwaway cluster. Dropping it stops the server and removes its files.
pub struct ThrowawayPostgres {
    root: PathBuf,
    bin_dir: PathBuf,
    port: u16,
    superuser_password: String,
    run_as: Option<SystemUser>,
    reaper: Option<Child>,
    running: bool,
    /// Extra `-c` settings, kept across pause and resume.
    settings: Vec<String>,
}

#[derive(Clone, Debug)]
struct SystemUser {
    name: String,
    uid: u32,
    gid: u32,
}

impl ThrowawayPostgres {
    /// Creates and starts a new cluster; blocks until it accepts connections.
    pub fn start() -> Result<Self, ThrowawayError> {
        Self::start_with(&[])
    }

    /// Like [`start`](Self::start), with extra server settings
    /// (`name=value`, e.g. `shared_preload_libraries=pg_stat_statements`).
    pub fn start_with(settings: &[&str]) -> Result<Self, ThrowawayError> {
        Self::prepare(settings)?.launch()
    }

    fn launch(mut self) -> Result<Self, ThrowawayError> {
        self.init()?;
        self.reaper = Some(self.spawn_reaper()?);
        self.start_on_free_port()?;
        Ok(self)
    }

    fn prepare(settings: &[&str]) -> Result<Self, ThrowawayError> {
        let bin_dir = find_bin_dir()?;
        let run_as = if running_as_root()? {
            Some(system_user("postgres")?.ok_or(ThrowawayError::NoPostgresUser)?)
        } else {
            None
        };
        let root = make_private_dir(run_as.as_ref())?;
        Ok(Self {
            root,
            bin_dir,
            port: 0,
            superuser_password: crate::password::generate(),
            run_as,
            reaper: None,
            running: false,
            settings: settings.iter().map(|s| (*s).to_owned()).collect(),
        })
    }

    /// A cluster that also accepts TLS (`ssl=on`), its certificate for
    /// 127.0.0.1 signed by a CA of its own ([`Self::ca_pem`]).
    pub fn start_with_tls() -> Result<Self, ThrowawayError> {
        let mut cluster = Self::prepare(&[])?;
        let pki = cluster.root.join("pki");
        std::fs::create_dir_all(&pki)?;
        crate::throwaway_pki::make_certificates(&pki).map_err(|e| ThrowawayError::Command {
            step: "openssl",
            detail: format!("{e:#}"),
        })?;
        // PostgreSQL refuses a key others may read.
        std::fs::set_permissions(pki.join("server.key"), std::fs::Permissions::from_mode(0o600))?;
        for file in ["server.crt", "server.key"] {
            cluster.give_to_run_as(&pki.join(file))?;
        }
        cluster.give_to_run_as(&pki)?;
        cluster.settings.extend([
            "ssl=on".to_owned(),
            format!("ssl_cert_file={}", pki.join("server.crt").display()),
            format!("ssl_key_file={}", pki.join("server.key").display()),
        ]);
        cluster.launch()
    }

    /// The CA certificate (PEM) of a cluster started with TLS.
    pub fn ca_pem(&self) -> Option<Vec<u8>> {
        std::fs::read(self.root.join("pki/ca.crt")).ok()
    }

    pub fn host(&self) -> &str {
        "127.0.0.1"
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn superuser_password(&self) -> &str {
        &self.superuser_password
    }

    /// A `postgres://` URL for `user` (whose password must be URL-safe, as
    /// generated passwords are) and `database`.
    pub fn url(&self, user: &str, password: &str, database: &str) -> String {
        format!(
            "postgres://{user}:{password}@{}:{}/{database}",
            self.host(),
            self.port
        )
    }

    /// URL of the superuser on the `postgres` database.
    pub fn superuser_url(&self) -> String {
        self.url(SUPERUSER, &self.superuser_password, "postgres")
    }

    /// The cluster's data directory.
    pub fn data_dir(&self) -> PathBuf {
        self.root.join("data")
    }

    /// The server log, for diagnosing a failing test.
    pub fn log_file(&self) -> PathBuf {
        self.root.join("postgres.log")
    }

    /// Stops the server but keeps its data, as an outage would.
    pub fn pause(&mut self) -> Result<(), ThrowawayError> {
        if self.running {
            let data = self.data_dir();
            self.run(
                "pg_ctl stop",
                Command::new(self.bin_dir.join("pg_ctl"))
                    .args(["-D".as_ref(), data.as_os_str()])
                    .args(["-m", "fast", "-w", "-t", "60", "-s", "stop"]),
            )?;
            self.running = false;
        }
        Ok(())
    }

    /// Starts a paused server again, on the same port.
    pub fn resume(&mut self) -> Result<(), ThrowawayError> {
        if !self.running {
            self.start_on_port(self.port).map_err(|(error, _)| error)?;
            self.running = true;
        }
        Ok(())
    }

    /// Stops the server and removes its directory. Idempotent.
    pub fn stop(&mut self) -> Result<(), ThrowawayError> {
        let mut result = Ok(());
        if self.running {
            let data = self.data_dir();
            result = self
                .run(
                    "pg_ctl stop",
                    Command::new(self.bin_dir.join("pg_ctl"))
                        .args(["-D".as_ref(), data.as_os_str()])
                        .args(["-m", "fast", "-w", "-t", "60", "-s", "stop"]),
                )
                .map(drop);
            self.running = false;
        }
        if let Some(mut reaper) = self.reaper.take() {
            let _ = reaper.kill();
            let _ = reaper.wait();
        }
        if self.root.exists() {
            std::fs::remove_dir_all(&self.root)?;
        }
        result
    }

    fn init(&self) -> Result<(), ThrowawayError> {
        let pwfile = self.root.join("pwfile");
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&pwfile)
            .and_then(|mut f| std::io::Write::write_all(&mut f, self.superuser_password.as_bytes()))?;
        self.give_to_run_as(&pwfile)?;
        let data = self.data_dir();
        let result = self.run(
            "initdb",
            Command::new(self.bin_dir.join("initdb"))
                .args(["-D".as_ref(), data.as_os_str()])
                .args([
                    "-U",
                    SUPERUSER,
                    "--auth=scram-sha-256",
                    "-E",
                    "UTF8",
                    "--no-locale",
                ])
                .args(["--no-sync", "--no-instructions"])
                .arg(format!("--pwfile={}", pwfile.display())),
        );
        std::fs::remove_file(&pwfile)?;
        result.map(drop)
    }

    fn start_on_free_port(&mut self) -> Result<(), ThrowawayError> {
        // Another process can take the port between our probe and the
        // server's bind; try a few ports before giving up.
        let mut last_error = None;
        for _ in 0..5 {
            self.port = free_port()?;
            match self.start_on_port(self.port) {
                Ok(()) => {
                    self.running = true;
                    return Ok(());
                }
                Err((error, log)) if log.contains("could not bind") => last_error = Some(error),
                Err((error, _)) => return Err(error),
            }
        }
        Err(last_error.unwrap_or(ThrowawayError::Command {
            step: "pg_ctl start",
            detail: "no free port".into(),
        }))
    }

    /// Starts the server on `port`; on failure returns the error and the server log.
    fn start_on_port(&self, port: u16) -> Result<(), (ThrowawayError, String)> {
        let options = [
            "-c listen_addresses=127.0.0.1".to_owned(),
            format!("-p {port}"),
            format!("-c unix_socket_directories={}", self.root.display()),
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off".to_owned(),
            "-c max_connections=300".to_owned(),
        ]
        .into_iter()
        .chain(self.settings.iter().map(|s| format!("-c {s}")))
        .collect::<Vec<_>>()
        .join(" ");
        let data = self.data_dir();
        let log = self.log_file();
        self.run(
            "pg_ctl start",
            Command::new(self.bin_dir.join("pg_ctl"))
                .args(["-D".as_ref(), data.as_os_str(), "-l".as_ref(), log.as_os_str()])
                .args(["-w", "-t", "60", "-s", "-o", &options, "start"]),
        )
        .map(drop)
        .map_err(|error| {
            let log = std::fs::read_to_string(self.log_file()).unwrap_or_default();
            (with_log(error, &log), log)
        })
    }

    /// A detached shell that waits for this process to exit, then stops the
    /// server and removes the directory, so no cluster outlives its owner.
    fn spawn_reaper(&self) -> Result<Child, ThrowawayError> {
        const SCRIPT: &str = r#"
            while kill -0 "$1" 2>/dev/null; do sleep 1; done
            pid=$(head -n 1 "$2/data/postmaster.pid" 2>/dev/null)
            if [ -n "$pid" ]; then
                kill -INT "$pid" 2>/dev/null
                for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
            fi
            rm -rf "$2"
        "#;
        Ok(Command::new("sh")
            .args(["-c", SCRIPT, "tenantdb-pg-reaper"])
            .arg(std::process::id().to_string())
            .arg(&self.root)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?)
    }

    /// Runs a PostgreSQL tool, as the `postgres` user when we are root.
    fn run(&self, step: &'static str, command: &mut Command) -> Result<String, ThrowawayError> {
        let mut command = match &self.run_as {
            Some(user) => {
                let mut wrapped = Command::new("runuser");
                wrapped
                    .args(["-u", &user.name, "--"])
                    .arg(command.get_program())
                    .args(command.get_args());
                wrapped
            }
            None => std::mem::replace(command, Command::new("true")),
        };
        let output = command
            .current_dir(&self.root)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| ThrowawayError::Command {
                step,
                detail: e.to_string(),
            })?;
        if output.status.success() {
            Ok(String::from_utf8_lossy(&output.stdout).into_owned())
        } else {
            Err(ThrowawayError::Command {
                step,
                detail: format!(
                    "{}{}",
                    String::from_utf8_lossy(&output.stderr).trim(),
                    String::from_utf8_lossy(&output.stdout).trim()
                ),
            })
        }
    }

    fn give_to_run_as(&self, path: &Path) -> Result<(), ThrowawayError> {
        if let Some(user) = &self.run_as {
            std::os::unix::fs::chown(path, Some(user.uid), Some(user.gid))?;
        }
        Ok(())
    }
}

impl Drop for ThrowawayPostgres {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

fn with_log(error: ThrowawayError, log: &str) -> ThrowawayError {
    match error {
        ThrowawayError::Command { step, detail } => ThrowawayError::Command {
            step,
            detail: format!("{detail}\n--- server log ---\n{}", log.trim()),
        },
        other => other,
    }
}

/// The directory of the PostgreSQL server binaries (and `psql`) used:
/// `TENANTDB_PG_BIN`, else the newest `/usr/lib/postgresql/<version>/bin`
/// (Debian and Ubuntu), else the directory of `initdb` on `PATH`.
pub fn find_bin_dir() -> Result<PathBuf, ThrowawayError> {
    let has_tools = |dir: &Path| dir.join("initdb").is_file() && dir.join("pg_ctl").is_file();
    if let Some(dir) = std::env::var_os("TENANTDB_PG_BIN") {
        let dir = PathBuf::from(dir);
        return if has_tools(&dir) {
            Ok(dir)
        } else {
            Err(ThrowawayError::BinariesNotFound {
                searched: format!("TENANTDB_PG_BIN={}", dir.display()),
            })
        };
    }
    let mut debian: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse::<u32>().ok()?;
            Some((version, entry.path().join("bin")))
        })
        .filter(|(_, dir)| has_tools(dir))
        .collect();
    debian.sort();
    if let Some((_, dir)) = debian.pop() {
        return Ok(dir);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .find(|dir| has_tools(dir))
        .ok_or_else(|| ThrowawayError::BinariesNotFound {
            searched: "TENANTDB_PG_BIN, /usr/lib/postgresql/*/bin and PATH".into(),
        })
}

fn running_as_root() -> Result<bool, ThrowawayError> {
    // The owner of /proc/self is the effective uid of this process.
    Ok(std::fs::metadata("/proc/self")?.uid() == 0)
}

fn system_user(name: &str) -> Result<Option<SystemUser>, ThrowawayError> {
    let passwd = std::fs::read_to_string("/etc/passwd")?;
    Ok(passwd.lines().find_map(|line| {
        let mut fields = line.split(':');
        if fields.next()? != name {
            return None;
        }
        let _password = fields.next()?;
        Some(SystemUser {
            name: name.to_owned(),
            uid: fields.next()?.parse().ok()?,
            gid: fields.next()?.parse().ok()?,
        })
    }))
}

fn make_private_dir(owner: Option<&SystemUser>) -> Result<PathBuf, ThrowawayError> {
    let base = std::env::temp_dir();
    loop {
        let suffix: String = crate::password::generate().chars().take(10).collect();
        let dir = base.join(format!("tenantdb-pg-{}", suffix.to_lowercase()));
        match DirBuilder::new().mode(0o700).create(&dir) {
            Ok(()) => {
                if let Some(user) = owner {
                    std::os::unix::fs::chown(&dir, Some(user.uid), Some(user.gid))?;
                }
                return Ok(dir);
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

fn free_port() -> Result<u16, ThrowawayError> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}
