//! Planning a tenant's cache access from what `ACL LIST` shows: pure, no
//! I/O. Provisioning is one `ACL SETUSER` with the whole rule set when the
//! user is missing or its rules are not exactly the expected ones (a user
//! removed, altered, re-enabled or given another password behind
//! tenantdb's back, or lost in a Redis restart); nothing otherwise.

use std::collections::BTreeMap;

use super::acl::{self, Commands, Template};
use super::key_prefix::KeyPrefix;

/// What a tenant's cache access should be.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DesiredCache {
    /// The Redis user ([`acl::user_name`]).
    pub user: String,
    pub prefix: KeyPrefix,
    pub commands: Commands,
    /// SHA-256 of the tenant's Redis password ([`acl::password_hash`]).
    pub password_hash: String,
}

/// Why the user is set again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Drift {
    /// No such user: new, removed by hand, or lost in a restart.
    Missing,
    /// The user's rules are not exactly the expected ones.
    Changed,
}

impl Drift {
    pub fn as_str(self) -> &'static str {
        match self {
            Drift::Missing => "created",
            Drift::Changed => "repaired",
        }
    }
}

/// One change to a tenant's cache access.
#[derive(Clone, PartialEq, Eq)]
pub enum CacheStep {
    /// `ACL SETUSER <user> <rules…>`.
    SetUser {
        user: String,
        rules: Vec<String>,
        why: Drift,
    },
}

// The rules hold the password's hash only, but a plan is printed by
// `tenantdb plan`: say what changes, not the hash.
impl std::fmt::Debug for CacheStep {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CacheStep::SetUser { user, why, .. } => write!(f, "SetUser({user}, {})", why.as_str()),
        }
    }
}

/// The step that makes `desired` true, given the server's users (from
/// [`acl::parse_list`]) and how it renders `desired.commands` (`template`);
/// `None` when the user is exactly as it should be.
pub fn plan(
    desired: &DesiredCache,
    users: &BTreeMap<String, String>,
    template: &Template,
) -> Option<CacheStep> {
    let why = match users.get(&desired.user) {
        None => Drift::Missing,
        Some(rules) if *rules == template.expected(&desired.prefix, &desired.password_hash) => return None,
        Some(_) => Drift::Changed,
    };
    Some(CacheStep::SetUser {
        user: desired.user.clone(),
        rules: acl::rules(desired.commands, &desired.prefix, &desired.password_hash),
        why,
    })
}

/// What deleting a tenant does to its cache access (`deletionPolicy`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Removal {
    /// `Retain`: the user is turned off (`ACL SETUSER <user> off`) and its
    /// connections closed (`CLIENT KILL USER`); keys, password and rules stay.
    Disable { user: String },
    /// `Retain`, the user gone: nothing to do.
    Nothing,
    /// `Delete`: the user is removed (`ACL DELUSER`, which also closes its
    /// connections) when it exists, then the keys matching `pattern` are
    /// unlinked in batches until a whole `SCAN` finds none.
    Delete { user: Option<String>, pattern: String },
}

/// The removal for a tenant with `user` and `prefix` under `delete`
/// (`deletionPolicy: Delete`) or not, given the server's users.
pub fn plan_removal(
    user: &str,
    prefix: &KeyPrefix,
    delete: bool,
    users: &BTreeMap<String, String>,
) -> Removal {
    let existing = users.get(user);
    if delete {
        return Removal::Delete {
            user: existing.map(|_| user.to_owned()),
            pattern: prefix.pattern(),
        };
    }
    // Disabled again even when it shows `off`: the kill and the save of
    // an earlier attempt may not have happened.
    match existing {
        Some(_) => Removal::Disable {
            user: user.to_owned(),
        },
        None => Removal::Nothing,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PROBE: &str = "on #0000000000000000000000000000000000000000000000000000000000000000 \
        ~TENANTDB-PROBE:* resetchannels &TENANTDB-PROBE:* -@all +@read";

    fn template() -> Template {
        let users = BTreeMap::from([(acl::probe_user(Commands::Default), PROBE.to_owned())]);
        Template::from_users(&users, Commands::Default).unwrap()
    }

    fn desired() -> DesiredCache {
        DesiredCache {
            user: acl::user_name("acme", "a"),
            prefix: KeyPrefix::resolve("acme", "a", None).unwrap(),
            commands: Commands::Default,
            password_hash: acl::password_hash("secret-password"),
        }
    }

    fn users(rules: &str) -> BTreeMap<String, String> {
        BTreeMap::from([(desired().user, rules.to_owned())])
    }

    #[test]
    fn a_missing_user_is_created_with_the_whole_rule_set() {
        let step = plan(&desired(), &BTreeMap::new(), &template()).unwrap();
        let CacheStep::SetUser { user, rules, why } = step;
        assert_eq!((user.as_str(), why), ("tdb.acme.a", Drift::Missing));
        assert_eq!(
            rules,
            acl::rules(Commands::Default, &desired().prefix, &desired().password_hash)
        );
    }

    #[test]
    fn an_up_to_date_user_needs_nothing() {
        let d = desired();
        let current = template().expected(&d.prefix, &d.password_hash);
        assert_eq!(plan(&d, &users(&current), &template()), None);
    }

    #[test]
    fn any_difference_is_repaired() {
        let d = desired();
        let current = template().expected(&d.prefix, &d.password_hash);
        for altered in [
            current.replacen("on", "off", 1),
            format!("{current} +flushall"),
            current.replace("~acme:a:*", "~*"),
            current.replace(&d.password_hash, &acl::password_hash("other")),
            format!("{current} #{}", acl::password_hash("added")),
            "on nopass ~* &* +@all".to_owned(),
        ] {
            let step = plan(&d, &users(&altered), &template());
            assert!(
                matches!(
                    step,
                    Some(CacheStep::SetUser {
                        why: Drift::Changed,
                        ..
                    })
                ),
                "{altered}"
            );
        }
    }

    #[test]
    fn the_plan_never_prints_the_hash() {
        let step = plan(&desired(), &BTreeMap::new(), &template()).unwrap();
        let printed = format!("{step:?}");
        assert!(!printed.contains(&desired().password_hash), "{printed}");
        assert_eq!(printed, "SetUser(tdb.acme.a, created)");
    }

    #[test]
    fn retain_disables_a_user_that_exists_even_when_it_shows_off() {
        let d = desired();
        let on = template().expected(&d.prefix, &d.password_hash);
        assert_eq!(
            plan_removal(&d.user, &d.prefix, false, &users(&on)),
            Removal::Disable { user: d.user.clone() }
        );
        // An earlier attempt may have turned it off and failed to close
        // its connections or save the ACL file: all of it again.
        let off = on.replacen("on", "off", 1);
        assert_eq!(
            plan_removal(&d.user, &d.prefix, false, &users(&off)),
            Removal::Disable { user: d.user.clone() }
        );
        assert_eq!(
            plan_removal(&d.user, &d.prefix, false, &BTreeMap::new()),
            Removal::Nothing
        );
    }

    #[test]
    fn delete_removes_the_user_if_present_and_always_the_keys() {
        let d = desired();
        let on = template().expected(&d.prefix, &d.password_hash);
        assert_eq!(
            plan_removal(&d.user, &d.prefix, true, &users(&on)),
            Removal::Delete {
                user: Some(d.user.clone()),
                pattern: "acme:a:*".into()
            }
        );
        // Resumed after the user was already removed: the keys still go.
        assert_eq!(
            plan_removal(&d.user, &d.prefix, true, &BTreeMap::new()),
            Removal::Delete {
                user: None,
                pattern: "acme:a:*".into()
            }
        );
    }
}
