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
    let (set, problems) = ManifestSet::load(&["examples"], false, &SchemaValidator::new().unwrap()).unwrap();
    assert!(problems.is_empty(), "{problems:#?}");
    assert!(
        set.problems(Default::default()).is_empty(),
        "{:#?}",
        set.problems(Default::default())
    );
    assert_eq!(set.servers.len(), 1);
    assert_eq!(set.caches.len(), 1);
    assert_eq!(set.secrets.len(), 2);
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
        stdout.contains("1 DatabaseServer, 1 CacheServer, 3 TenantDatabase, 2 Secret; 0 problem(s)"),
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
    // The sandbox's Redis, through TENANTDB_CACHE_ADMIN_URL.
    assert!(
        stdout.contains("cache-main: logged in to Redis at 127.0.0.1:"),
        "{stdout}"
    );

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

/// A directory's subdirectories are read with `-R` (as `kubectl apply -R`);
/// without it, a directory holding only subdirectories says so and names
/// the flag. Standard input is `-f -`, so a kustomize overlay is checked as
/// it renders.
#[test]
fn directories_below_are_read_with_r_and_standard_input_with_a_dash() {
    let flat = tenantdb(&["check", "-f", "examples/gitops/"]);
    assert!(!flat.status.success());
    assert!(
        text(&flat.stderr).contains("examples/gitops/: no .yaml, .yml or .json files found (it has subdirectories: give -R to read them too)"),
        "{}",
        text(&flat.stderr)
    );
    let deep = tenantdb(&[
        "check",
        "-R",
        "-f",
        "examples/gitops/",
        "-f",
        "examples/database-server.yaml",
    ]);
    let said = text(&deep.stdout);
    assert!(
        said.contains("examples/gitops/base/tenantdatabase.yaml:1"),
        "{said}{}",
        text(&deep.stderr)
    );

    let rendered = std::process::Command::new("kubectl")
        .args(["kustomize", "examples/gitops/tenants/acme"])
        .output()
        .expect("kubectl is installed (make deps)");
    assert!(rendered.status.success(), "{}", text(&rendered.stderr));
    let mut check = std::process::Command::new(env!("CARGO_BIN_EXE_tenantdb"))
        .args(["check", "-f", "-", "-f", "examples/database-server.yaml"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    check.stdin.take().unwrap().write_all(&rendered.stdout).unwrap();
    let output = check.wait_with_output().unwrap();
    let said = text(&output.stdout);
    assert!(output.status.success(), "{said}{}", text(&output.stderr));
    assert!(
        said.contains("TenantDatabase tenant-acme/app") && said.contains(" -:"),
        "{said}"
    );
}

/// Every file a README command reads with `-f` exists (a snippet once
/// applied a `namespaces.yaml` that was never there).
#[test]
fn files_the_readme_applies_exist() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let mut checked = 0;
    for block in readme.split("```sh").skip(1) {
        let block = block.split("```").next().unwrap();
        let words: Vec<&str> = block.split_whitespace().collect();
        for pair in words.windows(2) {
            let path = pair[1];
            if pair[0] != "-f" || path.starts_with(['-', '/', '$', '<']) || path.contains("://") {
                continue;
            }
            let full = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
            assert!(full.exists(), "README.md applies {path}, which does not exist");
            checked += 1;
        }
    }
    assert!(
        checked > 0,
        "no -f in README.md's sh blocks: the test proves nothing"
    );
}

/// `make demo`'s script, as it runs there: inside `tenantdb sandbox`
/// (PostgreSQL and Redis), every step succeeding — the script itself exits
/// non-zero when a tenant reaches another's database or keys.
#[test]
fn the_demo_provisions_the_examples_and_shows_each_tenant_kept_apart() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_tenantdb"))
        .args(["sandbox", "--", "bash", "examples/demo.sh"])
        .env("TENANTDB", env!("CARGO_BIN_EXE_tenantdb"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("running the demo");
    let said = format!("{}{}", text(&output.stdout), text(&output.stderr));
    assert!(output.status.success(), "{said}");
    for expected in [
        "Redis sandbox on 127.0.0.1:",
        "ACL SETUSER tdb.tenants.acme … -- cache user created on CacheServer cache-main",
        "{\"user\":\"ada\"}",
        "GET tenants:globex:session:1: NOPERM",
        "FLUSHALL: NOPERM",
        "permission denied for database \"tenants_globex\"",
        "Plan: 0 to change, 3 up to date, 0 failed.",
    ] {
        assert!(said.contains(expected), "missing {expected:?} in:\n{said}");
    }
}

/// `make demo` installs only what the demo uses (PostgreSQL, Redis's tools
/// and Rust, not the test tools) and runs the binary where
/// `CARGO_TARGET_DIR` puts it.
#[test]
fn make_demo_needs_only_postgres_redis_and_rust_and_follows_cargo_target_dir() {
    let dry = std::process::Command::new("make")
        .args(["-n", "demo"])
        .env("CARGO_TARGET_DIR", "/elsewhere/target")
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("make is installed");
    let said = text(&dry.stdout);
    assert!(dry.status.success(), "{said}{}", text(&dry.stderr));
    for tool in [
        "kubectl",
        "helm",
        "kubernetes-validate",
        "lua5.4",
        "openssl",
        "clippy",
    ] {
        assert!(!said.contains(tool), "make demo would install {tool}:\n{said}");
    }
    for step in [
        "/elsewhere/target/debug/tenantdb check -f examples/",
        "/elsewhere/target/debug/tenantdb sandbox -- examples/demo.sh",
    ] {
        assert!(said.contains(step), "make demo does not run {step}:\n{said}");
    }
    let demo = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/demo.sh")).unwrap();
    assert!(
        demo.contains("${CARGO_TARGET_DIR:-target}/debug/tenantdb"),
        "examples/demo.sh ignores CARGO_TARGET_DIR"
    );
}

/// A text log written to a file or a pipe carries no colour escape codes
/// (they stay for a terminal).
#[test]
fn a_log_written_to_a_pipe_has_no_colour_codes() {
    use std::io::BufRead;
    let dir = support::cluster::TempDir::new("nocolour");
    let kubeconfig = dir.0.join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        "apiVersion: v1\nkind: Config\nclusters: [{name: c, cluster: {server: 'https://127.0.0.1:9'}}]\n\
         users: [{name: u, user: {token: x}}]\ncontexts: [{name: c, context: {cluster: c, user: u}}]\ncurrent-context: c\n",
    )
    .unwrap();
    let mut run = std::process::Command::new(env!("CARGO_BIN_EXE_tenantdb"))
        .args([
            "run",
            "--no-leader-election",
            "--http-addr",
            "127.0.0.1:0",
            "--kubeconfig",
        ])
        .arg(&kubeconfig)
        .env("RUST_LOG", "tenantdb=info")
        .env_remove("NO_COLOR")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(run.stderr.take().unwrap()).lines();
    let line = lines
        .find_map(|line| line.ok().filter(|l| l.contains("starting the operator")))
        .expect("the operator logs that it starts");
    run.kill().unwrap();
    let _ = run.wait();
    assert!(line.contains("INFO"), "{line:?}");
    assert!(!line.contains('\u{1b}'), "colour codes in a piped log: {line:?}");
}
