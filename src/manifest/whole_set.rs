//! The checks `tenantdb check`, `plan` and `apply` share before anything
//! runs, beyond each document's schema: every tenant's spec resolved
//! against the server it goes on, by the same rules the operator applies
//! ([`crate::reconcile::resolve_all`]: index expressions and predicates,
//! extensions against the server's allow-list, names), and the set checked
//! as a whole — a (kind, namespace, name) defined twice, two tenants
//! claiming one database or role on a server, two Secrets with one name,
//! two tenants given overlapping key prefixes on one cache server.
//! Every problem is reported at once, each naming its document and field.
//! No I/O.

use std::collections::BTreeMap;

use kube::ResourceExt;

use super::{AdminOverrides, Located, ManifestError, ManifestSet, Origin};
use crate::api::TenantDatabase;
use crate::cache::KeyPrefix;
use crate::cache::key_prefix::{Holder, overlap_error, overlapping_pairs};
use crate::reconcile::{self, Desired};

impl ManifestSet {
    /// Every problem of the set: references between documents, each
    /// tenant's spec, and clashes between documents. A tenant with any is
    /// never acted on.
    pub fn problems(&self, overrides: AdminOverrides) -> Vec<ManifestError> {
        let mut problems = self.reference_errors(overrides);
        problems.extend(self.spec_errors());
        problems.extend(self.clashes());
        problems.extend(self.key_prefix_overlaps());
        problems
    }

    /// Each tenant's spec resolved against its server, as `plan` and the
    /// operator resolve it — also the tenants the schema refused, so one
    /// run shows every layer's problems (a field the schema already named
    /// is not named twice).
    pub fn spec_errors(&self) -> Vec<ManifestError> {
        let mut errors = Vec::new();
        let valid = self.tenants.iter().map(|t| (t, &[][..]));
        let refused = self
            .refused_tenants
            .iter()
            .map(|(t, fields)| (t, fields.as_slice()));
        for (tenant, reported) in valid.chain(refused) {
            let Ok(server) = self.place(&tenant.object) else {
                continue; // a reference problem, reported as such
            };
            let Err(problems) = reconcile::resolve_all(&tenant.object, server) else {
                continue;
            };
            for problem in problems {
                let already = reported
                    .iter()
                    .any(|field| problem.field == *field || problem.field.starts_with(&format!("{field}.")));
                if !already {
                    errors.push(ManifestError {
                        origin: tenant.origin.clone(),
                        field: problem.field,
                        reason: problem.reason,
                    });
                }
            }
        }
        errors
    }

    /// Documents that clash: the same object defined twice, two tenants
    /// claiming one database or role on one server, or one Secret name
    /// (a connection Secret, or a Secret document) used twice in a
    /// namespace. Each document of a clash is named, with the other one.
    pub fn clashes(&self) -> Vec<ManifestError> {
        let mut claims: BTreeMap<String, Vec<(Origin, &'static str)>> = BTreeMap::new();
        let mut claim = |what: String, origin: &Origin, field: &'static str| {
            claims.entry(what).or_default().push((origin.clone(), field));
        };
        for server in &self.servers {
            claim(
                format!("DatabaseServer {}", server.object.name_any()),
                &server.origin,
                "metadata.name",
            );
        }
        for cache in &self.caches {
            claim(
                format!("CacheServer {}", cache.object.name_any()),
                &cache.origin,
                "metadata.name",
            );
        }
        for tenant in &self.tenants {
            let object = &tenant.object;
            let namespace = namespace_of(tenant);
            claim(
                format!("TenantDatabase {namespace}/{}", object.name_any()),
                &tenant.origin,
                "metadata.name",
            );
            let Ok(server) = self.place(object) else {
                continue;
            };
            let Ok(desired) = reconcile::resolve(object, server) else {
                continue;
            };
            let on = server.name_any();
            claim(
                format!("database {} on DatabaseServer {on}", desired.database.as_str()),
                &tenant.origin,
                "spec.databaseName",
            );
            claim(
                format!("role {} on DatabaseServer {on}", desired.role.as_str()),
                &tenant.origin,
                if object.spec.role_name.is_some() {
                    "spec.roleName"
                } else {
                    "spec.databaseName"
                },
            );
            claim(
                format!("Secret {namespace}/{}", desired.secret_name),
                &tenant.origin,
                "spec.secretName",
            );
        }
        for secret in &self.secrets {
            let namespace = secret.object.namespace().unwrap_or_else(|| "default".into());
            claim(
                format!("Secret {namespace}/{}", secret.object.name_any()),
                &secret.origin,
                "metadata.name",
            );
        }
        let mut errors = Vec::new();
        for (what, claimants) in claims {
            if claimants.len() < 2 {
                continue;
            }
            for (i, (origin, field)) in claimants.iter().enumerate() {
                let others: Vec<String> = claimants
                    .iter()
                    .enumerate()
                    .filter(|(j, _)| *j != i)
                    .map(|(_, (o, _))| o.to_string())
                    .collect();
                errors.push(ManifestError {
                    origin: origin.clone(),
                    field: (*field).to_owned(),
                    reason: format!("{what} is also claimed by {}", others.join(", ")),
                });
            }
        }
        errors.sort_by(|a, b| {
            (&a.origin.file, a.origin.document, &a.field).cmp(&(&b.origin.file, b.origin.document, &b.field))
        });
        errors
    }
}

/// A tenant of the manifests asking for a key prefix: its document, its
/// `namespace/name` and the prefix.
type CacheClaim<'a> = (&'a Located<TenantDatabase>, String, KeyPrefix);

impl ManifestSet {
    /// Tenants given overlapping key prefixes on one CacheServer: of each
    /// overlapping pair, the tenant with the larger `namespace/name` is
    /// refused (the rule the operator applies between tenants not yet
    /// provisioned), naming the other. Prefixes already on the server are
    /// checked when `plan` or `apply` looks at it.
    pub fn key_prefix_overlaps(&self) -> Vec<ManifestError> {
        let mut by_cache: BTreeMap<String, Vec<CacheClaim<'_>>> = BTreeMap::new();
        for tenant in &self.tenants {
            let (Ok(server), Some(Ok(cache))) =
                (self.place(&tenant.object), self.place_cache(&tenant.object))
            else {
                continue;
            };
            let Ok(Desired {
                cache: Some(intent), ..
            }) = reconcile::resolve(&tenant.object, server)
            else {
                continue;
            };
            let owner = format!("{}/{}", namespace_of(tenant), tenant.object.name_any());
            by_cache
                .entry(cache.name_any())
                .or_default()
                .push((tenant, owner, intent.prefix));
        }
        let mut errors = Vec::new();
        for tenants in by_cache.values() {
            let prefixes: Vec<&KeyPrefix> = tenants.iter().map(|(_, _, p)| p).collect();
            for (i, j) in overlapping_pairs(&prefixes) {
                let (refused, holder) = if tenants[i].1 > tenants[j].1 {
                    (i, j)
                } else {
                    (j, i)
                };
                let holder = Holder {
                    owner: &tenants[holder].1,
                    prefix: &tenants[holder].2,
                    provisioned: false,
                };
                let error = overlap_error(&tenants[refused].2, &holder);
                errors.push(ManifestError {
                    origin: tenants[refused].0.origin.clone(),
                    field: error.field,
                    reason: error.reason,
                });
            }
        }
        errors
    }
}

fn namespace_of(tenant: &Located<TenantDatabase>) -> String {
    tenant.object.namespace().unwrap_or_else(|| "default".into())
}
