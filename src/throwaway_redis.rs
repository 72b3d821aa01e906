//! A throwaway Redis server for tests and `tenantdb sandbox`: Debian's
//! `redis-server` on a free loopback port, in a temporary directory, with
//! nothing persisted but an optional ACL file. Its `default` user is the
//! admin tenantdb logs in as. Stopped and removed on drop, and by a small
//! reaper process if the owning process dies without dropping it.

use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The admin (`default` user) password of every test's throwaway Redis.
pub const ADMIN_PASSWORD: &str = "throwaway-redis-admin";

/// A running throwaway Redis.
pub struct ThrowawayRedis {
    dir: PathBuf,
    port: u16,
    acl_file: bool,
    /// Every command in SLOWLOG and `DEBUG` enabled, for tests.
    for_tests: bool,
    /// TLS only (`tls-port`), with a certificate for 127.0.0.1 signed by a
    /// CA of its own (`ca.crt` in `dir`).
    tls: bool,
    server: Option<Child>,
    reaper: Option<Child>,
}

impl ThrowawayRedis {
    /// A Redis whose ACL users live only until it stops.
    pub fn start() -> anyhow::Result<Self> {
        Self::start_with(false, ADMIN_PASSWORD, true)
    }

    /// A Redis that keeps its ACL users in a file (`aclfile`), as a
    /// production server should.
    pub fn start_with_acl_file() -> anyhow::Result<Self> {
        Self::start_with(true, ADMIN_PASSWORD, true)
    }

    /// `tenantdb sandbox`'s Redis: an ACL file, the `default` user's
    /// password `password`, and no test settings.
    pub fn start_for_sandbox(password: &str) -> anyhow::Result<Self> {
        Self::start_with(true, password, false)
    }

    /// A Redis that speaks TLS only: its port is a `tls-port`, its
    /// certificate (for `127.0.0.1` and `localhost`) signed by a CA of its
    /// own ([`Self::ca_pem`]), made with the `openssl` command.
    pub fn start_with_tls() -> anyhow::Result<Self> {
        let mut redis = Self::prepare(false, ADMIN_PASSWORD, true)?;
        redis.tls = true;
        crate::throwaway_pki::make_certificates(&redis.dir)?;
        redis.launch()
    }

    /// The CA certificate (PEM) a TLS server's certificate is signed by.
    pub fn ca_pem(&self) -> Option<Vec<u8>> {
        self.tls
            .then(|| std::fs::read(self.dir.join("ca.crt")).ok())
            .flatten()
    }

    fn start_with(acl_file: bool, password: &str, for_tests: bool) -> anyhow::Result<Self> {
        Self::prepare(acl_file, password, for_tests)?.launch()
    }

    fn launch(mut self) -> anyhow::Result<Self> {
        self.port = free_port()?;
        self.spawn()?;
        self.reaper = Some(spawn_reaper(&self.dir, self.server_pid())?);
        Ok(self)
    }

    fn prepare(acl_file: bool, password: &str, for_tests: bool) -> anyhow::Result<Self> {
        let dir =
            std::env::temp_dir().join(format!("tenantdb-redis-{}-{}", std::process::id(), rand_suffix()));
        std::fs::create_dir_all(&dir)?;
        if acl_file {
            std::fs::write(
                dir.join("users.acl"),
                format!("user default on >{password} ~* &* +@all\n"),
            )?;
        }
        Ok(Self {
            dir,
            port: 0,
            acl_file,
            for_tests,
            tls: false,
            server: None,
            reaper: None,
        })
    }

    fn spawn(&mut self) -> anyhow::Result<()> {
        let binary = binary()?;
        let mut command = Command::new(&binary);
        // Debian's redis-tools ships the server as `redis-check-rdb`, which
        // is the server when started under the name `redis-server`.
        command.arg0("redis-server");
        command.args(["--bind", "127.0.0.1"]);
        if self.tls {
            command
                .args(["--port", "0", "--tls-port", &self.port.to_string()])
                .args(["--tls-auth-clients", "no"])
                .arg("--tls-cert-file")
                .arg(self.dir.join("server.crt"))
                .arg("--tls-key-file")
                .arg(self.dir.join("server.key"))
                .arg("--tls-ca-cert-file")
                .arg(self.dir.join("ca.crt"));
        } else {
            command.args(["--port", &self.port.to_string()]);
        }
        command.args(["--save", "", "--appendonly", "no", "--daemonize", "no"]);
        if self.for_tests {
            // Every command in SLOWLOG, with its duration; DEBUG enabled so
            // that only the ACL stands between a tenant and it.
            command
                .args(["--slowlog-log-slower-than", "0", "--slowlog-max-len", "100000"])
                .args(["--enable-debug-command", "yes"]);
        }
        command
            .arg("--dir")
            .arg(&self.dir)
            .arg("--logfile")
            .arg(self.dir.join("redis.log"));
        if self.acl_file {
            command.arg("--aclfile").arg(self.dir.join("users.acl"));
        } else {
            command.args(["--requirepass", ADMIN_PASSWORD]);
        }
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        self.server = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if let Some(status) = self.server.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                let log = std::fs::read_to_string(self.dir.join("redis.log")).unwrap_or_default();
                anyhow::bail!("redis-server exited ({status}) on start: {log}");
            }
            anyhow::ensure!(Instant::now() < deadline, "redis-server did not listen in 10 s");
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    fn server_pid(&self) -> u32 {
        self.server.as_ref().map(Child::id).unwrap_or(0)
    }

    /// Stops the server and starts it again on the same port: users not
    /// saved to an ACL file are gone, and `run_id` changes.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.stop();
        self.spawn()?;
        if let Some(mut reaper) = self.reaper.take() {
            let _ = reaper.kill();
            let _ = reaper.wait();
        }
        self.reaper = Some(spawn_reaper(&self.dir, self.server_pid())?);
        Ok(())
    }

    /// Stops the server (an outage) until [`Self::restart`].
    pub fn kill(&mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        if let Some(mut server) = self.server.take() {
            let _ = server.kill();
            let _ = server.wait();
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn host(&self) -> &str {
        "127.0.0.1"
    }

    /// The server's ACL file, when it has one.
    pub fn acl_file(&self) -> Option<PathBuf> {
        self.acl_file.then(|| self.dir.join("users.acl"))
    }
}

impl Drop for ThrowawayRedis {
    fn drop(&mut self) {
        self.stop();
        if let Some(mut reaper) = self.reaper.take() {
            let _ = reaper.kill();
            let _ = reaper.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The server binary: TENANTDB_REDIS_SERVER, else `redis-server` on the
/// PATH, else Debian's `redis-check-rdb` (package redis-tools, which `make
/// deps` installs: the same binary, without the redis-server package's
/// system service).
fn binary() -> anyhow::Result<PathBuf> {
    if let Some(path) = std::env::var_os("TENANTDB_REDIS_SERVER") {
        return Ok(path.into());
    }
    let path = std::env::var("PATH").unwrap_or_default();
    for name in ["redis-server", "redis-check-rdb"] {
        for dir in path.split(':').chain(["/usr/bin"]) {
            let candidate = Path::new(dir).join(name);
            if candidate.is_file() {
                return Ok(candidate);
            }
        }
    }
    anyhow::bail!(
        "redis-server not found: install Debian's redis-tools (`apt-get install -y redis-tools`; \
         make deps does), or set TENANTDB_REDIS_SERVER"
    )
}

fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn rand_suffix() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(Instant::now().elapsed().as_nanos());
    hasher.finish()
}

/// A detached shell that waits for this process to exit, then kills the
/// server `pid` and removes `dir`.
fn spawn_reaper(dir: &Path, pid: u32) -> anyhow::Result<Child> {
    const SCRIPT: &str = r#"
        while kill -0 "$1" 2>/dev/null; do sleep 1; done
        kill -9 "$2" 2>/dev/null
        rm -rf "$3"
    "#;
    Ok(Command::new("sh")
        .args(["-c", SCRIPT, "reaper"])
        .arg(std::process::id().to_string())
        .arg(pid.to_string())
        .arg(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()?)
}
