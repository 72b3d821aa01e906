//! One rule book: the same invalid manifests fed to `tenantdb check`,
//! `plan` and `apply` (a real PostgreSQL) and to `kubectl apply` (a real
//! control plane with tenantdb's CRDs). `check` must refuse every one,
//! naming the field; `plan` and `apply` must refuse it with the same
//! message and create nothing; and the API server must refuse it too —
//! or docs/api.md must list the field under the rules only tenantdb
//! checks, so no page promises what `kubectl apply` does not do.

mod support;

use std::path::{Path, PathBuf};

use support::cluster::TestCluster;
use support::{tenantdb, text};

/// An invalid tenant: its spec (YAML flow), the field every tool must
/// name, and whether the API server refuses it as well.
struct Case {
    what: &'static str,
    spec: &'static str,
    field: &'static str,
    api_server_refuses: bool,
}

const INDEX: &str = "name: i1, table: orders";

fn cases() -> Vec<Case> {
    vec![
        Case {
            what: "a predicate with a second statement",
            spec: "{indexes: [{INDEX, columns: [id], where: 'id > 0; DROP TABLE orders'}]}",
            field: "spec.indexes[0].where",
            api_server_refuses: false,
        },
        Case {
            what: "a predicate with a subquery",
            spec: "{indexes: [{INDEX, columns: [id], where: 'id IN (SELECT 1)'}]}",
            field: "spec.indexes[0].where",
            api_server_refuses: false,
        },
        Case {
            what: "an expression calling pg_sleep",
            spec: "{indexes: [{INDEX, expressions: ['pg_sleep(10)']}]}",
            field: "spec.indexes[0].expressions[0]",
            api_server_refuses: false,
        },
        Case {
            what: "an extension not on the server's allow-list",
            spec: "{extensions: [plpython3u]}",
            field: "spec.extensions[0]",
            api_server_refuses: false,
        },
        Case {
            what: "a key prefix in another namespace's key space",
            spec: "{cache: {keyPrefix: 'elsewhere:shop:'}}",
            field: "spec.cache.keyPrefix",
            api_server_refuses: false,
        },
        Case {
            what: "a key prefix with a glob character",
            spec: "{cache: {keyPrefix: 'x:a*'}}",
            field: "spec.cache.keyPrefix",
            api_server_refuses: true,
        },
        Case {
            what: "a key prefix with a space",
            spec: "{cache: {keyPrefix: 'x: a'}}",
            field: "spec.cache.keyPrefix",
            api_server_refuses: true,
        },
        Case {
            what: "a key prefix with a control character",
            spec: "{cache: {keyPrefix: \"x:\\u0007\"}}",
            field: "spec.cache.keyPrefix",
            api_server_refuses: true,
        },
        Case {
            what: "an empty key prefix",
            spec: "{cache: {keyPrefix: ''}}",
            field: "spec.cache.keyPrefix",
            api_server_refuses: true,
        },
        Case {
            what: "one of the server's own databases",
            spec: "{databaseName: template1}",
            field: "spec.databaseName",
            api_server_refuses: true,
        },
        Case {
            what: "an index name tenantdb reserves for its rebuilds",
            spec: "{indexes: [{name: tenantdb_i1, table: orders, columns: [id]}]}",
            field: "spec.indexes[0].name",
            api_server_refuses: true,
        },
        Case {
            what: "an index declared twice",
            spec: "{indexes: [{INDEX, columns: [id]}, {INDEX, columns: [total]}]}",
            field: "spec.indexes[1].name",
            api_server_refuses: true,
        },
        Case {
            what: "a key column with a stray word",
            spec: "{indexes: [{INDEX, columns: [id DESCENDING]}]}",
            field: "spec.indexes[0].columns[0]",
            api_server_refuses: true,
        },
        Case {
            what: "a column name that is not an identifier",
            spec: "{indexes: [{INDEX, columns: ['id;drop']}]}",
            field: "spec.indexes[0].columns[0]",
            api_server_refuses: true,
        },
        Case {
            what: "an upper-case database name",
            spec: "{databaseName: Acme}",
            field: "spec.databaseName",
            api_server_refuses: true,
        },
        Case {
            what: "minConnections above maxConnections",
            spec: "{pool: {maxConnections: 2, minConnections: 5}}",
            field: "spec.pool.minConnections",
            api_server_refuses: true,
        },
        Case {
            what: "a duration that is not one",
            spec: "{limits: {statementTimeout: 5 parsecs}}",
            field: "spec.limits.statementTimeout",
            api_server_refuses: true,
        },
    ]
}

/// The manifest of tenant `name` in `namespace` with `spec`.
fn tenant(namespace: &str, name: &str, spec: &str) -> String {
    format!(
        "apiVersion: tenantdb.io/v1alpha1\nkind: TenantDatabase\nmetadata: {{name: {name}, namespace: {namespace}}}\nspec: {}\n",
        spec.replace("INDEX", INDEX)
    )
}

/// A directory with the test server's DatabaseServer, its admin Secret and
/// `manifest`.
async fn workdir(name: &str, manifest: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tenantdb-rules-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("server.yaml"), support::server_manifests().await).unwrap();
    std::fs::write(dir.join("tenants.yaml"), manifest).unwrap();
    dir
}

/// `tenantdb <command> -f dir`, with `--secrets-dir` for the commands that
/// take it.
fn run(command: &str, dir: &Path) -> std::process::Output {
    let secrets = dir.join("secrets");
    let mut args = vec![command, "-f", dir.to_str().unwrap()];
    if command != "check" {
        args.extend(["--secrets-dir", secrets.to_str().unwrap()]);
    }
    tenantdb(&args)
}

/// `tenantdb <command> -f dir` must fail naming `field` (as
/// `file:document: field: …`) — the same line for every command.
fn refused(command: &str, dir: &Path, field: &str, what: &str) -> String {
    let output = run(command, dir);
    let (stdout, stderr) = (text(&output.stdout), text(&output.stderr));
    assert!(
        !output.status.success(),
        "{what}: tenantdb {command} accepted it\n{stdout}{stderr}"
    );
    let line = stderr
        .lines()
        .find(|l| l.contains("tenants.yaml") && l.contains(&format!(": {field}: ")))
        .unwrap_or_else(|| panic!("{what}: tenantdb {command} did not name {field}\n{stdout}{stderr}"));
    line.to_owned()
}

/// The fields docs/api.md lists as checked by tenantdb only, with
/// `[N]` written `[]`.
fn documented_as_tenantdb_only() -> Vec<String> {
    let api = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/api.md")).unwrap();
    let section = api
        .split("\n## Checked by tenantdb, not the API server\n")
        .nth(1)
        .expect("docs/api.md has a section 'Checked by tenantdb, not the API server'");
    let section = section.split("\n## ").next().unwrap();
    section
        .lines()
        .filter(|l| l.starts_with('|'))
        .filter_map(|l| l.split('|').nth(2))
        .flat_map(|cell| {
            cell.split('`')
                .skip(1)
                .step_by(2)
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .collect()
}

fn generic(field: &str) -> String {
    let mut out = String::new();
    let mut in_index = false;
    for c in field.chars() {
        match c {
            '[' => {
                in_index = true;
                out.push('[');
            }
            ']' => {
                in_index = false;
                out.push(']');
            }
            _ if in_index => {}
            _ => out.push(c),
        }
    }
    out
}

async fn database_exists(name: &str) -> bool {
    support::database_exists(name).await
}

#[tokio::test]
async fn check_plan_apply_and_the_api_server_refuse_the_same_manifests() {
    let cluster = TestCluster::start().await;
    let namespace = cluster.namespace("rules").await;
    let documented = documented_as_tenantdb_only();
    for (i, case) in cases().iter().enumerate() {
        let name = format!("bad{i}");
        let manifest = tenant(&namespace, &name, case.spec);
        let dir = workdir(&name, &manifest).await;
        let checked = refused("check", &dir, case.field, case.what);
        // plan and apply refuse with check's own line, and nothing runs.
        for command in ["plan", "apply"] {
            let line = refused(command, &dir, case.field, case.what);
            assert_eq!(line, checked, "{}: {command} and check disagree", case.what);
        }
        let database = tenantdb::reconcile::desired::derive_name(&namespace, &name);
        assert!(
            !database_exists(&database).await,
            "{}: apply created {database}",
            case.what
        );

        let file = dir.join("tenants.yaml");
        let output = cluster.kubectl(&["apply", "-f", file.to_str().unwrap()]).await;
        let said = text(&output.stderr);
        if case.api_server_refuses {
            // The API server may name the field or the object holding it
            // (`spec.indexes[1]: Duplicate value` for a list keyed by name).
            let named = said.contains(case.field)
                || case
                    .field
                    .rsplit_once('.')
                    .is_some_and(|(holder, _)| said.contains(&format!("{holder}:")));
            assert!(
                !output.status.success() && named,
                "{}: kubectl apply was expected to refuse it naming {}: {said}{}",
                case.what,
                case.field,
                text(&output.stdout)
            );
        } else {
            assert!(
                output.status.success(),
                "{}: the API server refuses it ({said}): move it out of docs/api.md's tenantdb-only rules and set api_server_refuses",
                case.what
            );
            let field = generic(case.field);
            assert!(
                documented.contains(&field),
                "{}: the API server accepts it, and docs/api.md does not list {field} as checked by tenantdb only ({documented:?})",
                case.what
            );
            let _ = cluster
                .kubectl(&["delete", "-f", file.to_str().unwrap(), "--wait=false"])
                .await;
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
    cluster.delete_namespace(&namespace).await;
}

/// One run names every problem of a document, whichever layer finds it:
/// a column the schema refuses no longer hides a predicate only tenantdb
/// checks.
#[tokio::test]
async fn check_names_every_problem_of_a_document_in_one_run() {
    let manifest = tenant(
        "rules",
        "layers",
        "{extensions: [plpython3u], indexes: [{INDEX, columns: ['id;drop'], where: 'id IN (SELECT 1)'}]}",
    );
    let dir = workdir("layers", &manifest).await;
    for field in [
        "spec.indexes[0].columns[0]",
        "spec.indexes[0].where",
        "spec.extensions[0]",
    ] {
        refused("check", &dir, field, "three problems in one document");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// A set of manifests is checked as a whole: the same tenant defined
/// twice, two tenants claiming one database (or role, or Secret) — each
/// document is refused, naming the other, and nothing runs for either.
#[tokio::test]
async fn clashing_documents_are_refused_before_anything_runs() {
    let clashes = [
        (
            "the same tenant twice",
            tenant("rules", "twin", "{}")
                + "---\n"
                + &tenant("rules", "twin", "{databaseName: rules_twin_other}"),
            "metadata.name",
            ["rules_twin", "rules_twin_other"],
        ),
        (
            "two tenants claiming one database",
            tenant("rules", "left", "{databaseName: rules_shared}")
                + "---\n"
                + &tenant("rules", "right", "{databaseName: rules_shared}"),
            "spec.databaseName",
            ["rules_shared", "rules_shared"],
        ),
        (
            "two tenants claiming one role",
            tenant("rules", "one", "{roleName: rules_owner}")
                + "---\n"
                + &tenant("rules", "two", "{roleName: rules_owner}"),
            "spec.roleName",
            ["rules_one", "rules_two"],
        ),
        (
            "two tenants claiming one Secret",
            tenant("rules", "this", "{secretName: shared-db}")
                + "---\n"
                + &tenant("rules", "that", "{secretName: shared-db}"),
            "spec.secretName",
            ["rules_this", "rules_that"],
        ),
    ];
    for (i, (what, manifest, field, databases)) in clashes.iter().enumerate() {
        let dir = workdir(&format!("clash{i}"), manifest).await;
        for command in ["check", "plan", "apply"] {
            let output = run(command, &dir);
            let stderr = text(&output.stderr);
            assert!(
                !output.status.success(),
                "{what}: {command} accepted it\n{stderr}"
            );
            for document in [1, 2] {
                let at = format!("tenants.yaml:{document}: {field}: ");
                assert!(
                    stderr
                        .lines()
                        .any(|l| l.contains(&at) && l.contains("is also claimed by")),
                    "{what}: {command} did not refuse document {document} naming {field}\n{stderr}"
                );
            }
        }
        for database in databases {
            assert!(
                !database_exists(database).await,
                "{what}: apply created {database}"
            );
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
