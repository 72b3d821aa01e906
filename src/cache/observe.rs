//! Observing a Redis server as its admin user: every user's rules and how
//! the server renders each profile, in one `MULTI` (`ACL LIST` between
//! setting and deleting the probe users), and the server's identity and
//! memory in one `INFO server memory` and `CONFIG GET aclfile`. Three round trips per server,
//! however many tenants it has. Changes nothing but the probe users, which
//! exist only inside the `MULTI`.

use std::collections::BTreeMap;

use redis::aio::MultiplexedConnection;

use super::acl::{self, Commands, Template};
use super::error::CacheError;
use super::key_prefix::PrefixIndex;

/// The oldest Redis tenantdb provisions on: 7.0 has read-only key patterns
/// (`%R~`) and refuses `SORT … BY/GET` to users limited to some keys.
pub const MIN_VERSION: (u32, u32) = (7, 0);

/// What one Redis server looks like to tenantdb.
#[derive(Clone)]
pub struct Snapshot {
    /// Every user's rules as `ACL LIST` renders them. Changed only through
    /// [`Snapshot::set_user`] and [`Snapshot::remove_user`], which keep
    /// `prefixes` in step.
    pub users: BTreeMap<String, String>,
    /// The key prefixes its tenant users hold ([`acl::tenant_prefixes`]).
    pub prefixes: PrefixIndex,
    /// How this server renders each command profile.
    pub templates: BTreeMap<Commands, Template>,
    /// `redis_version`.
    pub version: String,
    /// `run_id`: a new one means the server restarted.
    pub run_id: String,
    /// Whether ACL users are saved to a file (`ACL SAVE` works) or live
    /// only until a restart.
    pub acl_file: bool,
    /// `used_memory`, in bytes.
    pub used_memory: i64,
    /// `maxmemory`, in bytes (0: no limit).
    pub max_memory: i64,
}

// Users' rules hold password hashes (the admin's too, unsalted): a
// snapshot prints its user names only.
impl std::fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Snapshot")
            .field("users", &self.users.keys().collect::<Vec<_>>())
            .field("version", &self.version)
            .field("run_id", &self.run_id)
            .field("acl_file", &self.acl_file)
            .field("used_memory", &self.used_memory)
            .field("max_memory", &self.max_memory)
            .finish_non_exhaustive()
    }
}

impl Snapshot {
    /// `user` now has `rules` on the server (as `ACL LIST` renders them).
    pub fn set_user(&mut self, user: &str, rules: String) {
        self.remove_user(user);
        if let Some((owner, prefix)) = acl::tenant_prefix(user, &rules) {
            self.prefixes.insert(prefix, owner);
        }
        self.users.insert(user.to_owned(), rules);
    }

    /// `user` is gone from the server.
    pub fn remove_user(&mut self, user: &str) {
        if let Some(rules) = self.users.remove(user)
            && let Some((owner, prefix)) = acl::tenant_prefix(user, &rules)
        {
            self.prefixes.remove(&prefix, &owner);
        }
    }
}

/// Reads `server`'s users, templates and identity over `conn`.
pub async fn observe(server: &str, conn: &mut MultiplexedConnection) -> Result<Snapshot, CacheError> {
    let info: String = redis::cmd("INFO")
        .arg("server")
        .arg("memory")
        .query_async(conn)
        .await
        .map_err(|e| CacheError::redis(server, "INFO server memory", e))?;
    let fields = info_fields(&info);
    let version = fields.get("redis_version").cloned().unwrap_or_default();
    if !at_least(&version, MIN_VERSION) {
        return Err(CacheError::Unsupported {
            server: server.to_owned(),
            reason: format!(
                "Redis {version} is too old: tenantdb needs {}.{} or later (read-only key patterns, \
                 SORT patterns checked against key permissions)",
                MIN_VERSION.0, MIN_VERSION.1
            ),
        });
    }
    let aclfile: Vec<String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("aclfile")
        .query_async(conn)
        .await
        .map_err(|e| CacheError::redis(server, "CONFIG GET aclfile", e))?;
    let mut pipe = redis::pipe();
    pipe.atomic();
    for commands in Commands::ALL {
        pipe.cmd("ACL")
            .arg("SETUSER")
            .arg(acl::probe_user(commands))
            .arg(acl::probe_rules(commands))
            .ignore();
    }
    pipe.cmd("ACL").arg("LIST");
    pipe.cmd("ACL")
        .arg("DELUSER")
        .arg(Commands::ALL.map(acl::probe_user).to_vec())
        .ignore();
    let (lines,): (Vec<String>,) = pipe
        .query_async(conn)
        .await
        .map_err(|e| CacheError::redis(server, "ACL LIST", e))?;
    let mut users = acl::parse_list(&lines);
    let mut templates = BTreeMap::new();
    for commands in Commands::ALL {
        let template = Template::from_users(&users, commands).ok_or_else(|| CacheError::Unsupported {
            server: server.to_owned(),
            reason: format!(
                "the {} profile's rules did not read back from ACL LIST",
                commands.as_str()
            ),
        })?;
        templates.insert(commands, template);
        users.remove(&acl::probe_user(commands));
    }
    let mut prefixes = PrefixIndex::default();
    for (owner, prefix) in acl::tenant_prefixes(&users) {
        prefixes.insert(prefix, owner);
    }
    Ok(Snapshot {
        users,
        prefixes,
        templates,
        version,
        run_id: fields.get("run_id").cloned().unwrap_or_default(),
        acl_file: aclfile.get(1).is_some_and(|path| !path.is_empty()),
        used_memory: number(&fields, "used_memory"),
        max_memory: number(&fields, "maxmemory"),
    })
}

/// An `INFO` field as a number (0 when absent or not a number).
fn number(fields: &BTreeMap<String, String>, name: &str) -> i64 {
    fields.get(name).and_then(|v| v.parse().ok()).unwrap_or(0)
}

/// `INFO`'s `name:value` lines.
pub fn info_fields(info: &str) -> BTreeMap<String, String> {
    info.lines()
        .filter_map(|line| line.trim_end().split_once(':'))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

/// Whether the dotted `version` is at least `min` (major, minor).
pub fn at_least(version: &str, min: (u32, u32)) -> bool {
    let mut parts = version.split('.').map(|p| p.parse::<u32>().ok());
    match (parts.next().flatten(), parts.next().flatten()) {
        (Some(major), Some(minor)) => (major, minor) >= min,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn info_is_read_as_fields() {
        let info = "# Server\r\nredis_version:7.0.15\r\nrun_id:abc123\r\n\r\n";
        let fields = info_fields(info);
        assert_eq!(fields["redis_version"], "7.0.15");
        assert_eq!(fields["run_id"], "abc123");
    }

    #[test]
    fn versions_compare_by_number() {
        assert!(at_least("7.0.15", (7, 0)));
        assert!(at_least("7.2.4", (7, 0)));
        assert!(at_least("10.0.0", (7, 0)));
        assert!(!at_least("6.2.14", (7, 0)));
        assert!(!at_least("", (7, 0)));
        assert!(!at_least("seven", (7, 0)));
    }
}
