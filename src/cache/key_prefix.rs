//! A tenant's key prefix in Redis: derived, validated, and checked against
//! every other tenant's on the same cache server. Pure: no I/O.
//!
//! A prefix is the whole of a tenant's key space (its ACL user may touch
//! `<prefix>*` and nothing else), so two rules keep tenants apart:
//!
//! - **A namespace owns its part of the key space.** Every prefix starts
//!   with `<namespace>:`; Kubernetes namespace names cannot hold `:`, so no
//!   prefix of one namespace can reach a key of another, whatever its
//!   tenants write in `spec.cache.keyPrefix`.
//! - **Within a namespace, no prefix may be a prefix of another**: `acme:a`
//!   would match every key of `acme:ab:`. The default, `<namespace>:<name>:`,
//!   ends in a `:` a name cannot hold, so defaults never overlap; a chosen
//!   prefix that overlaps another tenant's is refused for the tenant that
//!   did not hold it first.
//!
//! Only letters, digits and `.`, `_`, `:`, `-` are allowed: no glob
//! character (`*`, `?`, `[`, `]`, `\`) can reach an ACL key pattern or a
//! `SCAN MATCH`, and no space or control character can split an ACL rule.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound;

use crate::reconcile::SpecError;

/// The longest prefix accepted, in bytes.
pub const MAX_LENGTH: usize = 128;

/// The field a chosen prefix comes from, named in every refusal.
pub const FIELD: &str = "spec.cache.keyPrefix";

/// A validated key prefix: non-empty, at most [`MAX_LENGTH`] bytes of
/// `[A-Za-z0-9._:-]`, starting with its tenant's `<namespace>:`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KeyPrefix(String);

impl KeyPrefix {
    /// The prefix of the tenant `namespace`/`name`: `chosen` when given
    /// (validated), otherwise `<namespace>:<name>:`.
    pub fn resolve(namespace: &str, name: &str, chosen: Option<&str>) -> Result<Self, SpecError> {
        match chosen {
            None => Self::parse(namespace, &format!("{namespace}:{name}:")),
            Some(chosen) => Self::parse(namespace, chosen),
        }
    }

    /// `prefix` checked for the tenant in `namespace`.
    pub fn parse(namespace: &str, prefix: &str) -> Result<Self, SpecError> {
        if prefix.is_empty() {
            return Err(SpecError::new(
                FIELD,
                "must not be empty: an empty prefix is every key of the server",
            ));
        }
        if prefix.len() > MAX_LENGTH {
            return Err(SpecError::new(
                FIELD,
                format!("is {} bytes long; at most {MAX_LENGTH} are allowed", prefix.len()),
            ));
        }
        if let Some(bad) = prefix.chars().find(|c| !allowed(*c)) {
            return Err(SpecError::new(
                FIELD,
                format!(
                    "{:?} is not allowed in a key prefix (only letters, digits and . _ : -; \
                     never a glob character, a space or a control character)",
                    bad
                ),
            ));
        }
        let own = format!("{namespace}:");
        if !prefix.starts_with(&own) {
            return Err(SpecError::new(
                FIELD,
                format!(
                    "{prefix:?} must start with {own:?}: a namespace's tenants keep to its part \
                     of the key space"
                ),
            ));
        }
        Ok(Self(prefix.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether a key of one prefix could match the other's pattern.
    pub fn overlaps(&self, other: &KeyPrefix) -> bool {
        self.0.starts_with(&other.0) || other.0.starts_with(&self.0)
    }

    /// The ACL key and channel pattern of this prefix, and the `SCAN MATCH`
    /// pattern of its keys: the prefix then `*`. The prefix holds no glob
    /// character, so the pattern matches exactly the keys that start with it.
    pub fn pattern(&self) -> String {
        format!("{}*", self.0)
    }
}

impl std::fmt::Display for KeyPrefix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

fn allowed(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '-')
}

/// A tenant holding, or asking for, a prefix on one cache server.
#[derive(Clone, Debug)]
pub struct Holder<'a> {
    /// `namespace/name` of the tenant.
    pub owner: &'a str,
    pub prefix: &'a KeyPrefix,
    /// Whether the tenant's status records the prefix as provisioned.
    pub provisioned: bool,
}

/// The first of `others` whose prefix overlaps `mine` and who holds it
/// before `mine`: a tenant with the prefix provisioned holds it before one
/// without; between two alike, the smaller `namespace/name` does. `mine`
/// itself (the same owner) is skipped. Two tenants can therefore never both
/// be given overlapping prefixes: of any overlapping pair, exactly one is
/// refused.
pub fn held_before<'a>(
    mine: &Holder<'_>,
    others: impl IntoIterator<Item = Holder<'a>>,
) -> Option<Holder<'a>> {
    others.into_iter().find(|other| {
        other.owner != mine.owner
            && other.prefix.overlaps(mine.prefix)
            && (other.provisioned, std::cmp::Reverse(other.owner))
                > (mine.provisioned, std::cmp::Reverse(mine.owner))
    })
}

/// The key prefixes the tenant users of one server hold, by prefix: the
/// overlap check of one tenant costs a lookup per byte of its prefix and a
/// range scan, not a pass over every tenant of the server.
#[derive(Clone, Debug, Default)]
pub struct PrefixIndex {
    owners: BTreeMap<KeyPrefix, BTreeSet<String>>,
    count: usize,
}

impl PrefixIndex {
    /// `owner` (`namespace/name`) holds `prefix`.
    pub fn insert(&mut self, prefix: KeyPrefix, owner: String) {
        if self.owners.entry(prefix).or_default().insert(owner) {
            self.count += 1;
        }
    }

    /// `owner` no longer holds `prefix`.
    pub fn remove(&mut self, prefix: &KeyPrefix, owner: &str) {
        if let Some(owners) = self.owners.get_mut(prefix.as_str()) {
            if owners.remove(owner) {
                self.count -= 1;
            }
            if owners.is_empty() {
                self.owners.remove(prefix.as_str());
            }
        }
    }

    /// How many (owner, prefix) pairs are held.
    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Every holder whose prefix overlaps `mine`: those whose prefix is a
    /// prefix of `mine` (one lookup per length), then those whose prefix
    /// starts with `mine` (sorted right after it).
    pub fn overlapping<'a>(&'a self, mine: &'a KeyPrefix) -> impl Iterator<Item = Holder<'a>> + 'a {
        let text = mine.as_str();
        let shorter = (1..=text.len())
            .filter(move |&end| text.is_char_boundary(end))
            .filter_map(move |end| self.owners.get_key_value(&text[..end]));
        let longer = self
            .owners
            .range::<str, _>((Bound::Excluded(text), Bound::Unbounded))
            .take_while(move |(prefix, _)| prefix.as_str().starts_with(text));
        shorter.chain(longer).flat_map(|(prefix, owners)| {
            owners.iter().map(move |owner| Holder {
                owner,
                prefix,
                provisioned: true,
            })
        })
    }
}

impl std::borrow::Borrow<str> for KeyPrefix {
    fn borrow(&self) -> &str {
        &self.0
    }
}

/// Every overlapping pair among `prefixes`, as positions `(i, j)` with
/// `i < j`, each pair once: sorted, a prefix's overlaps are the entries
/// right after it that start with it (anything sorting between a prefix
/// and a longer key that starts with it starts with it too), so the cost
/// is a sort plus the pairs found — not every pair of a fleet.
pub fn overlapping_pairs(prefixes: &[&KeyPrefix]) -> Vec<(usize, usize)> {
    let mut order: Vec<usize> = (0..prefixes.len()).collect();
    order.sort_by(|&a, &b| prefixes[a].cmp(prefixes[b]));
    let mut pairs = Vec::new();
    for (at, &i) in order.iter().enumerate() {
        for &j in order[at + 1..]
            .iter()
            .take_while(|&&j| prefixes[j].as_str().starts_with(prefixes[i].as_str()))
        {
            pairs.push((i.min(j), i.max(j)));
        }
    }
    pairs
}

/// The refusal for `mine` when `holder` holds an overlapping prefix; the
/// other tenant's prefix is named, never anything of its credentials.
pub fn overlap_error(mine: &KeyPrefix, holder: &Holder<'_>) -> SpecError {
    SpecError::new(
        FIELD,
        format!(
            "{:?} overlaps {:?}, the key prefix of TenantDatabase {} on the same cache server \
             (neither may be a prefix of the other)",
            mine.as_str(),
            holder.prefix.as_str(),
            holder.owner
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prefix(p: &str) -> KeyPrefix {
        KeyPrefix::parse("acme", p).unwrap()
    }

    #[test]
    fn the_index_finds_exactly_the_overlapping_holders() {
        let held = ["acme:a", "acme:a:", "acme:ab", "acme:b:", "acme:a:x:y", "acme:"];
        let mut index = PrefixIndex::default();
        for (i, p) in held.iter().enumerate() {
            index.insert(prefix(p), format!("acme/t{i}"));
        }
        index.insert(prefix("acme:a"), "acme/twin".into());
        assert_eq!(index.len(), 7);
        for mine in ["acme:a:", "acme:a:x", "acme:b", "acme:c:", "acme:ab:", "acme:"] {
            let mine = prefix(mine);
            let mut found: Vec<String> = index.overlapping(&mine).map(|h| h.owner.to_owned()).collect();
            found.sort();
            let mut expected: Vec<String> = held
                .iter()
                .enumerate()
                .filter(|(_, p)| prefix(p).overlaps(&mine))
                .map(|(i, _)| format!("acme/t{i}"))
                .collect();
            if prefix("acme:a").overlaps(&mine) {
                expected.push("acme/twin".into());
            }
            expected.sort();
            assert_eq!(found, expected, "{mine}");
        }
        index.remove(&prefix("acme:a"), "acme/twin");
        index.remove(&prefix("acme:a"), "acme/t0");
        assert_eq!(index.len(), 5);
        let mine = prefix("acme:ab");
        let found: Vec<&str> = index.overlapping(&mine).map(|h| h.owner).collect();
        assert_eq!(found, ["acme/t5", "acme/t2"]);
    }

    #[test]
    fn overlapping_pairs_are_found_after_a_sort_and_each_once() {
        let prefixes: Vec<KeyPrefix> = ["acme:b", "acme:a:", "acme:ab", "acme:a", "acme:c:", "acme:a:x"]
            .into_iter()
            .map(prefix)
            .collect();
        let refs: Vec<&KeyPrefix> = prefixes.iter().collect();
        let mut found = overlapping_pairs(&refs);
        found.sort();
        // By brute force: the same pairs.
        let mut expected = Vec::new();
        for i in 0..refs.len() {
            for j in i + 1..refs.len() {
                if refs[i].overlaps(refs[j]) {
                    expected.push((i, j));
                }
            }
        }
        assert_eq!(found, expected);
        assert_eq!(found, vec![(1, 3), (1, 5), (2, 3), (3, 5)]);
        assert!(overlapping_pairs(&[&prefix("acme:x:"), &prefix("acme:y:")]).is_empty());
    }

    #[test]
    fn the_default_is_namespace_name_colon() {
        let p = KeyPrefix::resolve("acme", "shop", None).unwrap();
        assert_eq!(p.as_str(), "acme:shop:");
        assert_eq!(p.pattern(), "acme:shop:*");
    }

    #[test]
    fn hostile_prefixes_are_refused_naming_the_field() {
        for hostile in [
            "",
            "acme:*",
            "acme:a?",
            "acme:[ab]",
            "acme:a\\b",
            "acme:a b",
            "acme:a\tb",
            "acme:a\nb",
            "acme:a\u{0}",
            "acme:é",
            "acme:a\"",
            "acme:>pass",
            "*",
            "acme",
            "other:a:",
            ":acme:",
            "acme-2:a",
        ] {
            let err = KeyPrefix::parse("acme", hostile).unwrap_err();
            assert_eq!(err.field, FIELD, "{hostile:?}");
        }
        let long = format!("acme:{}", "a".repeat(MAX_LENGTH));
        assert_eq!(KeyPrefix::parse("acme", &long).unwrap_err().field, FIELD);
        assert!(KeyPrefix::parse("acme", &long[..MAX_LENGTH]).is_ok());
    }

    #[test]
    fn allowed_prefixes_pass() {
        for fine in ["acme:", "acme:shop:", "acme:Shop.v2_x-1:", "acme::"] {
            assert_eq!(KeyPrefix::parse("acme", fine).unwrap().as_str(), fine);
        }
    }

    #[test]
    fn overlap_is_either_way_round() {
        assert!(prefix("acme:a").overlaps(&prefix("acme:ab:")));
        assert!(prefix("acme:ab:").overlaps(&prefix("acme:a")));
        assert!(prefix("acme:a:").overlaps(&prefix("acme:a:")));
        assert!(!prefix("acme:a:").overlaps(&prefix("acme:ab:")));
        // Defaults never overlap: a name cannot hold `:`.
        let a = KeyPrefix::resolve("acme", "a", None).unwrap();
        let ab = KeyPrefix::resolve("acme", "ab", None).unwrap();
        assert!(!a.overlaps(&ab));
    }

    #[test]
    fn of_two_overlapping_tenants_exactly_one_is_refused() {
        let (a, b) = (prefix("acme:a"), prefix("acme:ab:"));
        for (a_provisioned, b_provisioned) in [(false, false), (true, false), (false, true), (true, true)] {
            let ha = Holder {
                owner: "acme/a",
                prefix: &a,
                provisioned: a_provisioned,
            };
            let hb = Holder {
                owner: "acme/b",
                prefix: &b,
                provisioned: b_provisioned,
            };
            let a_refused = held_before(&ha, [hb.clone()]).is_some();
            let b_refused = held_before(&hb, [ha.clone()]).is_some();
            assert!(a_refused ^ b_refused, "{a_provisioned} {b_provisioned}");
            if a_provisioned != b_provisioned {
                // The one that holds the prefix keeps it.
                assert_eq!(a_refused, b_provisioned);
            }
        }
    }

    #[test]
    fn a_tenant_never_conflicts_with_itself_or_a_disjoint_prefix() {
        let (a, c) = (prefix("acme:a:"), prefix("acme:c:"));
        let me = Holder {
            owner: "acme/a",
            prefix: &a,
            provisioned: false,
        };
        let same = Holder {
            owner: "acme/a",
            prefix: &a,
            provisioned: true,
        };
        let disjoint = Holder {
            owner: "acme/c",
            prefix: &c,
            provisioned: true,
        };
        assert!(held_before(&me, [same, disjoint]).is_none());
    }

    #[test]
    fn the_refusal_names_the_other_prefix_and_tenant() {
        let (a, b) = (prefix("acme:a"), prefix("acme:ab:"));
        let holder = Holder {
            owner: "acme/b",
            prefix: &b,
            provisioned: true,
        };
        let err = overlap_error(&a, &holder);
        assert_eq!(err.field, FIELD);
        assert!(
            err.reason.contains("acme:ab:") && err.reason.contains("acme/b"),
            "{err}"
        );
    }
}
