//! The examples are valid manifests, and the command line around them works
//! as the README says: `tenantdb check` reports problems as
//! `file:document: field: reason`, and `tenantdb sandbox` gives a real
//! PostgreSQL with a production-shaped admin role.

mod support;

use support::{tenantdb, text};

use kube::ResourceExt;
use tenantdb::api::tenant_database::DeletionPolicy;
use tenantdb::manifest::{ManifestSet, SchemaValidator};

#[test]
fn every_example_parses_and_validates_against_the_crd_schema() {
    let (set, problems) = ManifestSet::load(&["examples"], &SchemaValidator::new().unwrap()).unwrap();
    assert!(problems.is_empty(), "{problems:#?}");
    assert!(
        set.reference_errors(false).is_empty(),
        "{:#?}",
        set.reference_errors(false)
    );
    assert_eq!(set.servers.len(), 1);
    assert_eq!(set.secrets.len(), 1);
    let mut names: Vec<String> = set.tenants.iter().map(|t| t.object.name_any()).collect();
    names.sort();
    assert_eq!(names, ["acme", "globex", "initech"]);

    let tenant = |name: &str| {
        &set.tenants
            .iter()
            .find(|t| t.object.name_any() == name)
            .unwrap()
            .object
            .spec
    };
    let acme = tenant("acme");
    assert_eq!(acme.pool.as_ref().unwrap().replicas, Some(3));
    assert_eq!(
        acme.deletion_policy,
        DeletionPolicy::Retain,
        "schema default applied"
    );
    assert_eq!(tenant("globex").indexes.len(), 4);
    assert_eq!(tenant("globex").indexes[3].schema, "app");
    assert_eq!(
        tenant("globex").indexes[0].schema,
        "public",
        "schema default applied"
    );
    assert_eq!(tenant("initech").deletion_policy, DeletionPolicy::Delete);
    assert_eq!(set.servers[0].object.spec.port, 5432);
}

#[test]
fn check_accepts_the_examples() {
    let output = tenantdb(&["check", "-f", "examples"]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    let stdout = text(&output.stdout);
    assert!(stdout.contains("TenantDatabase tenants/acme"), "{stdout}");
    assert!(
        stdout.contains("1 DatabaseServer, 3 TenantDatabase, 1 Secret; 0 problem(s)"),
        "{stdout}"
    );
}

#[test]
fn check_reports_each_problem_as_file_document_field_reason() {
    let dir = std::env::temp_dir().join(format!("tenantdb-check-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("bad.yaml");
    std::fs::write(
        &file,
        "apiVersion: tenantdb.io/v1alpha1\nkind: TenantDatabase\nmetadata: {name: ok, namespace: t}\nspec: {server: missing}\n\
         ---\napiVersion: tenantdb.io/v1alpha1\nkind: TenantDatabase\nmetadata: {name: bad, namespace: t}\nspec:\n  pool: {maxConnections: 0}\n  databaseName: \"x;y\"\n\
         ---\nkind: [unclosed\n",
    )
    .unwrap();
    let output = tenantdb(&["check", "-f", file.to_str().unwrap()]);
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = text(&output.stderr);
    let path = file.display();
    for expected in [
        format!("{path}:1: spec.server: DatabaseServer \"missing\" is not among the given manifests"),
        format!("{path}:2: spec.pool.maxConnections: 0 is less than the minimum of 1"),
        format!("{path}:2: spec.databaseName: \"x;y\" is not valid: must be lower-case letters"),
        format!("{path}:3: (document): invalid YAML"),
    ] {
        assert!(stderr.contains(&expected), "missing {expected:?} in:\n{stderr}");
    }
}

#[test]
fn the_sandbox_admin_can_manage_tenants_but_is_no_superuser() {
    let output = tenantdb(&[
        "sandbox",
        "--",
        env!("CARGO_BIN_EXE_tenantdb"),
        "check",
        "-f",
        "examples",
        "--connect",
    ]);
    let stdout = text(&output.stdout);
    assert!(output.status.success(), "{stdout}{}", text(&output.stderr));
    assert!(
        stdout.contains("pg-main: connected as tenantdb_admin to PostgreSQL"),
        "{stdout}"
    );
    assert!(stdout.contains("can manage tenants"), "{stdout}");

    // The real client, with the environment the sandbox sets.
    let psql = tenantdb::throwaway::find_bin_dir().unwrap().join("psql");
    let output = tenantdb(&[
        "sandbox",
        "--",
        psql.to_str().unwrap(),
        "-XAtc",
        "SELECT rolsuper, rolcreatedb, rolcreaterole FROM pg_roles WHERE rolname = current_user",
    ]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert_eq!(text(&output.stdout).trim(), "f|t|t");
}

#[test]
fn the_sandbox_passes_on_the_commands_exit_code() {
    let output = tenantdb(&["sandbox", "--", "sh", "-c", "exit 3"]);
    assert_eq!(output.status.code(), Some(3));
}

#[test]
fn a_failed_admin_login_is_reported_without_the_password() {
    let wrong_password = "Wrong-Password-Never-Printed-42";
    let url = support::server()
        .url
        .parse::<sqlx::postgres::PgConnectOptions>()
        .unwrap()
        .password(wrong_password);
    let url = format!(
        "postgres://{}:{wrong_password}@{}:{}/postgres",
        url.get_username(),
        url.get_host(),
        url.get_port()
    );
    let output = tenantdb(&["check", "-f", "examples", "--connect", "--admin-url", &url]);
    assert_eq!(output.status.code(), Some(1));
    let all = format!("{}{}", text(&output.stdout), text(&output.stderr));
    assert!(all.contains("pg-main: cannot log in as administrator"), "{all}");
    assert!(!all.contains(wrong_password), "the password leaked: {all}");
}

#[test]
fn run_refuses_a_resync_that_would_spin() {
    let output = tenantdb(&["run", "--resync", "0s", "--no-leader-election"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        text(&output.stderr).contains("shorter than the minimum of 1s"),
        "{}",
        text(&output.stderr)
    );
}
