//! The one place ACL rule text is built: a tenant's Redis user, its rules
//! for each command profile, and reading `ACL LIST` back. Pure: no I/O.
//!
//! Names arrive as validated [`KeyPrefix`]es and Kubernetes names, the
//! password only as its SHA-256 hash (`#<hex>`), so the plaintext never
//! reaches Redis's ACL, its `ACL LIST`, its ACL file or a log.
//!
//! Drift is found without re-implementing Redis's own rendering of rules:
//! tenantdb sets the profile's rules on a probe user (a placeholder prefix
//! and hash), reads the probe's `ACL LIST` line back as a [`Template`], and
//! expects every tenant's line to be the template with its own prefix and
//! hash put in. One `ACL LIST` per server then observes every tenant.

use std::collections::BTreeMap;

use sha2::{Digest, Sha256};

use super::key_prefix::KeyPrefix;

/// A tenant's command profile (`spec.cache.commands`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Commands {
    /// What a cache or session store needs: every data type's commands on
    /// its own keys, expiry, transactions, pub/sub on its own channels —
    /// without admin, dangerous, blocking, scripting or whole-keyspace
    /// commands.
    #[default]
    Default,
    /// Reading its own keys and subscribing to its own channels only.
    ReadOnly,
}

impl Commands {
    pub const ALL: [Commands; 2] = [Commands::Default, Commands::ReadOnly];

    pub fn as_str(self) -> &'static str {
        match self {
            Commands::Default => "default",
            Commands::ReadOnly => "readOnly",
        }
    }
}

/// Categories a profile starts from. Everything else stays denied (`-@all`
/// comes first), so a command Redis adds later to an admin category is
/// never granted by accident.
const DEFAULT_CATEGORIES: &[&str] = &[
    "@keyspace",
    "@read",
    "@write",
    "@string",
    "@bitmap",
    "@hash",
    "@list",
    "@set",
    "@sortedset",
    "@hyperloglog",
    "@geo",
    "@stream",
    "@pubsub",
    "@transaction",
    "@connection",
];
const READ_ONLY_CATEGORIES: &[&str] = &["@read", "@pubsub", "@transaction", "@connection"];

/// Taken away again from both profiles, after the categories above:
/// - `@admin`, `@dangerous`: `FLUSHALL`, `FLUSHDB`, `KEYS`, `CONFIG`,
///   `DEBUG`, `SHUTDOWN`, `MONITOR`, `ACL`'s administrative subcommands,
///   `CLIENT LIST`/`KILL`, `INFO`, `MIGRATE`, `RESTORE`, `SWAPDB`, `SORT`
///   with patterns…
/// - `@blocking`: `BLPOP` and the like can hold a connection forever;
/// - `@scripting`: a script runs to completion and blocks every tenant;
/// - the whole-keyspace commands not in those categories: `SCAN` and
///   `RANDOMKEY` return other tenants' key names, `DBSIZE` counts them;
/// - `SELECT`, `MOVE`, `COPY`: other logical databases, where deletion
///   would not find a tenant's keys;
/// - `PUBSUB`: lists other tenants' channels; `WAIT`: blocks on replicas;
/// - `CLIENT` but for its harmless subcommands on the caller's own
///   connection (`CLIENT TRACKING` would report other tenants' keys).
/// - `ACL` as a whole (`ACL WHOAMI` included: a tenant needs none of it).
/// - commands whose cost a tenant chooses without bound on a tiny key:
///   `SRANDMEMBER`, `HRANDFIELD`, `ZRANDMEMBER` with a huge negative count
///   run for minutes and exhaust the server's memory; `LCS` is quadratic
///   in its strings' length; `LOLWUT` draws as large as asked.
/// - `OBJECT FREQ`: its error tells the server's eviction policy.
const DENIED: &[&str] = &[
    "-@admin",
    "-@dangerous",
    "-@blocking",
    "-@scripting",
    "-scan",
    "-randomkey",
    "-dbsize",
    "-select",
    "-move",
    "-copy",
    "-pubsub",
    "-wait",
    "-acl",
    "-client",
    "+client|id",
    "+client|getname",
    "+client|setname",
    "+client|info",
    "-srandmember",
    "-hrandfield",
    "-zrandmember",
    "-lcs",
    "-lolwut",
    "-object|freq",
];

/// Publishing is writing: a read-only tenant may only listen.
const READ_ONLY_DENIED: &[&str] = &["-publish", "-spublish"];

/// The Redis user of tenant `namespace`/`name`: `tdb.<namespace>.<name>`.
/// Kubernetes names hold only `[a-z0-9.-]` and a namespace no `.`, so the
/// user name is unique, has no space, and needs no escaping in a URL.
pub fn user_name(namespace: &str, name: &str) -> String {
    format!("tdb.{namespace}.{name}")
}

/// Whether `user` is one tenantdb manages (so it may be repaired or removed).
pub fn is_tenant_user(user: &str) -> bool {
    user.starts_with("tdb.")
}

/// The tenant (`namespace/name`) of a user named by [`user_name`].
pub fn owner_of(user: &str) -> Option<String> {
    let (namespace, name) = user.strip_prefix("tdb.")?.split_once('.')?;
    Some(format!("{namespace}/{name}"))
}

/// The key prefix `rules` (as `ACL LIST` renders them) give access to: the
/// first key pattern (`~P*` or `%R~P*`, any permission) without its `*`.
/// A user with a pattern of another shape, or none, has `None`.
pub fn key_prefix_in(rules: &str) -> Option<&str> {
    rules.split(' ').find_map(|rule| {
        let pattern = rule.strip_prefix('~').or_else(|| {
            rule.strip_prefix('%')
                .and_then(|r| r.split_once('~'))
                .map(|(_, p)| p)
        })?;
        pattern.strip_suffix('*')
    })
}

/// The password hash `rules` (as `ACL LIST` renders them) hold, if any.
pub fn password_hash_in(rules: &str) -> Option<&str> {
    rules.split(' ').find_map(|rule| rule.strip_prefix('#'))
}

/// The tenants a server's users (from [`parse_list`]) give key space to:
/// owner (`namespace/name`) and key prefix, for the overlap check. Users
/// that are not tenantdb's, or whose pattern is no valid prefix of their
/// namespace, hold nothing.
pub fn tenant_prefixes(users: &BTreeMap<String, String>) -> Vec<(String, KeyPrefix)> {
    users
        .iter()
        .filter_map(|(user, rules)| tenant_prefix(user, rules))
        .collect()
}

/// The owner and key prefix of one user, when it is a tenant's (see
/// [`tenant_prefixes`]).
pub fn tenant_prefix(user: &str, rules: &str) -> Option<(String, KeyPrefix)> {
    if !is_tenant_user(user) {
        return None;
    }
    let owner = owner_of(user)?;
    let namespace = owner.split_once('/')?.0.to_owned();
    let prefix = KeyPrefix::parse(&namespace, key_prefix_in(rules)?).ok()?;
    Some((owner, prefix))
}

/// The lowercase hex SHA-256 of `password`: how Redis stores it (`#<hash>`).
pub fn password_hash(password: &str) -> String {
    Sha256::digest(password.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The arguments of `ACL SETUSER <user> …` for a tenant with `commands` on
/// `prefix` and a password hashing to `hash`, enabled: `reset` first, so
/// whatever was added behind tenantdb's back is gone after one command.
pub fn rules(commands: Commands, prefix: &KeyPrefix, hash: &str) -> Vec<String> {
    rules_for(commands, prefix.as_str(), hash)
}

fn rules_for(commands: Commands, prefix: &str, hash: &str) -> Vec<String> {
    let mut rules: Vec<String> = vec!["reset".into(), "on".into(), format!("#{hash}")];
    let (keys, categories, extra): (String, &[&str], &[&str]) = match commands {
        Commands::Default => (format!("~{prefix}*"), DEFAULT_CATEGORIES, &[]),
        // `%R~`: a read-only key pattern (Redis 7.0), on top of leaving
        // `@write` out.
        Commands::ReadOnly => (format!("%R~{prefix}*"), READ_ONLY_CATEGORIES, READ_ONLY_DENIED),
    };
    rules.push(keys);
    rules.push("resetchannels".into());
    rules.push(format!("&{prefix}*"));
    rules.push("-@all".into());
    rules.extend(categories.iter().map(|c| format!("+{c}")));
    rules.extend(DENIED.iter().chain(extra).map(|r| (*r).to_owned()));
    rules
}

/// The arguments of `ACL SETUSER <user> …` that disable a retained tenant's
/// user: no new logins; its keys, password and rules stay.
pub fn disable_rules() -> Vec<String> {
    vec!["off".into()]
}

/// The user tenantdb sets `commands`' rules on to learn how Redis renders
/// them: `tenantdb.probe.<profile>`. It exists only between that `ACL
/// SETUSER` and its `ACL DELUSER`, in one `MULTI`.
pub fn probe_user(commands: Commands) -> String {
    format!("tenantdb.probe.{}", commands.as_str())
}
/// The probe's prefix: upper case, so no namespace's prefix can be it.
const PROBE_PREFIX: &str = "TENANTDB-PROBE:";
/// The probe's password hash: no password is known to hash to it.
const PROBE_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The arguments of `ACL SETUSER <probe_user(commands)> …`.
pub fn probe_rules(commands: Commands) -> Vec<String> {
    rules_for(commands, PROBE_PREFIX, PROBE_HASH)
}

/// How Redis renders a profile's rules, learnt from the probe user.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Template(String);

impl Template {
    /// The template of `commands` in its probe's `ACL LIST` entry, if
    /// `users` has one that mentions the probe's prefix and hash.
    pub fn from_users(users: &BTreeMap<String, String>, commands: Commands) -> Option<Template> {
        let rules = users.get(&probe_user(commands))?;
        (rules.contains(PROBE_PREFIX) && rules.contains(PROBE_HASH)).then(|| Template(rules.clone()))
    }

    /// The `ACL LIST` rules a tenant with `prefix` and password `hash`
    /// should have.
    pub fn expected(&self, prefix: &KeyPrefix, hash: &str) -> String {
        // The hash first: a prefix may hold 64 zeros, a hex hash never
        // holds the upper-case probe prefix.
        self.0
            .replace(PROBE_HASH, hash)
            .replace(PROBE_PREFIX, prefix.as_str())
    }
}

/// `ACL LIST`'s lines (`user <name> <rules…>`) as user name → rules text.
/// Lines of another shape are skipped.
pub fn parse_list<S: AsRef<str>>(lines: &[S]) -> BTreeMap<String, String> {
    lines
        .iter()
        .filter_map(|line| {
            let rest = line.as_ref().strip_prefix("user ")?;
            let (name, rules) = rest.split_once(' ').unwrap_or((rest, ""));
            Some((name.to_owned(), rules.to_owned()))
        })
        .collect()
}

/// Whether `rules` (as `ACL LIST` renders them) leave the user enabled.
pub fn is_enabled(rules: &str) -> bool {
    rules.split(' ').any(|r| r == "on")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prefix(p: &str) -> KeyPrefix {
        KeyPrefix::parse("acme", p).unwrap()
    }

    #[test]
    fn a_users_owner_and_prefix_read_back_from_acl_list() {
        assert_eq!(owner_of("tdb.shop.acme.eu").as_deref(), Some("shop/acme.eu"));
        assert_eq!(owner_of("default"), None);
        let rules = "on #00 ~shop:acme:* resetchannels &shop:acme:* -@all +@read";
        assert_eq!(key_prefix_in(rules), Some("shop:acme:"));
        let read_only = "on #00 %R~shop:ro:* resetchannels &shop:ro:* -@all +@read";
        assert_eq!(key_prefix_in(read_only), Some("shop:ro:"));
        assert_eq!(key_prefix_in("on #00 allkeys"), None);
        assert_eq!(key_prefix_in("on #00 ~exact-key"), None);
    }

    #[test]
    fn the_hash_is_sha256_hex_and_the_password_never_appears() {
        let hash = password_hash("hunter2");
        assert_eq!(
            hash,
            "f52fbd32b2b3b86ff88ef6c490628285f482af15ddcb29541f94bcf526a3f6c7"
        );
        let all = rules(Commands::Default, &prefix("acme:a:"), &hash).join(" ");
        assert!(!all.contains("hunter2") && !all.contains('>'), "{all}");
        assert!(all.contains(&format!("#{hash}")));
    }

    #[test]
    fn default_rules_start_from_nothing_and_reach_only_the_prefix() {
        let r = rules(Commands::Default, &prefix("acme:a:"), "ab");
        assert_eq!(&r[..3], ["reset", "on", "#ab"]);
        let keys: Vec<&String> = r
            .iter()
            .filter(|r| r.starts_with('~') || r.starts_with('%'))
            .collect();
        assert_eq!(keys, ["~acme:a:*"]);
        let channels: Vec<&String> = r.iter().filter(|r| r.starts_with('&')).collect();
        assert_eq!(channels, ["&acme:a:*"]);
        let reset_channels = r.iter().position(|r| r == "resetchannels").unwrap();
        assert!(reset_channels < r.iter().position(|r| r.starts_with('&')).unwrap());
        // Every category is granted after `-@all`, every denial after them.
        let none = r.iter().position(|r| r == "-@all").unwrap();
        let first_grant = r.iter().position(|r| r.starts_with("+@")).unwrap();
        let last_grant = r.iter().rposition(|r| r.starts_with("+@")).unwrap();
        assert!(none < first_grant);
        for denied in [
            "-@admin",
            "-@dangerous",
            "-@blocking",
            "-@scripting",
            "-scan",
            "-select",
            "-acl",
            "-client",
        ] {
            assert!(
                r.iter().position(|r| r == denied).unwrap() > last_grant,
                "{denied}"
            );
        }
        assert!(
            !r.iter()
                .any(|r| r == "+@all" || r == "allkeys" || r == "allchannels" || r == "nopass")
        );
    }

    #[test]
    fn read_only_rules_grant_no_writes() {
        let r = rules(Commands::ReadOnly, &prefix("acme:a:"), "ab");
        assert!(r.contains(&"%R~acme:a:*".to_owned()));
        assert!(!r.iter().any(|r| r.starts_with('~')));
        assert!(!r.iter().any(|r| r == "+@write" || r == "+@keyspace"));
        assert!(r.contains(&"-publish".to_owned()));
    }

    #[test]
    fn user_names_are_distinct_and_url_safe() {
        assert_eq!(user_name("acme", "shop"), "tdb.acme.shop");
        // A namespace holds no `.`: these cannot collide.
        assert_ne!(user_name("a", "b.c"), user_name("a-b", "c"));
        assert!(is_tenant_user("tdb.acme.shop"));
        assert!(!is_tenant_user("default") && !is_tenant_user(&probe_user(Commands::Default)));
    }

    #[test]
    fn the_template_puts_in_each_tenants_prefix_and_hash() {
        // As Redis 7.0 renders the probe.
        let probe = format!(
            "user tenantdb.probe.default on #{PROBE_HASH} ~{PROBE_PREFIX}* resetchannels &{PROBE_PREFIX}* -@all +@read"
        );
        let users = parse_list(&[
            "user default on nopass ~* &* +@all".to_owned(),
            probe,
            "user tdb.acme.a on #ab ~acme:a:* resetchannels &acme:a:* -@all +@read".to_owned(),
        ]);
        let template = Template::from_users(&users, Commands::Default).unwrap();
        assert!(Template::from_users(&users, Commands::ReadOnly).is_none());
        assert_eq!(
            template.expected(&prefix("acme:a:"), "ab"),
            users["tdb.acme.a"],
            "an up-to-date tenant matches"
        );
        assert_ne!(template.expected(&prefix("acme:a:"), "cd"), users["tdb.acme.a"]);
        assert_ne!(template.expected(&prefix("acme:b:"), "ab"), users["tdb.acme.a"]);
        assert!(is_enabled(&users["tdb.acme.a"]));
        assert!(!is_enabled("off #ab ~acme:a:*"));
    }

    #[test]
    fn a_prefix_holding_the_probe_hash_is_expected_as_it_is() {
        let zeros = format!("acme:{PROBE_HASH}:");
        let probe = format!("user tenantdb.probe.default on #{PROBE_HASH} ~{PROBE_PREFIX}* &{PROBE_PREFIX}*");
        let template = Template::from_users(&parse_list(&[probe]), Commands::Default).unwrap();
        assert_eq!(
            template.expected(&prefix(&zeros), "ab"),
            format!("on #ab ~{zeros}* &{zeros}*")
        );
    }

    #[test]
    fn no_template_without_the_probe() {
        let users = parse_list(&["user default on nopass ~* &* +@all"]);
        assert!(Template::from_users(&users, Commands::Default).is_none());
        let users = parse_list(&["user tenantdb.probe.default off"]);
        assert!(Template::from_users(&users, Commands::Default).is_none());
    }
}
