//! The CRDs against a real kube-apiserver (built from its Go modules by
//! tests/kube/build.sh): accepted as generated, CEL rules within the cost
//! budget, and bad manifests refused by the API server and by `tenantdb
//! check` alike, naming the same field.

mod support;

use support::control_plane::ControlPlane;
use support::{tenantdb, text};

fn tenant(name: &str, spec: &str) -> String {
    format!(
        "apiVersion: tenantdb.io/v1alpha1\nkind: TenantDatabase\nmetadata: {{name: {name}, namespace: shop}}\nspec: {spec}\n"
    )
}

#[test]
fn the_crds_are_accepted_and_bad_manifests_are_refused_like_tenantdb_check() {
    let plane = ControlPlane::start();
    let crds = concat!(env!("CARGO_MANIFEST_DIR"), "/crds");
    let applied = plane.kubectl(&["apply", "--server-side", "-f", crds]);
    assert!(applied.status.success(), "{}", text(&applied.stderr));
    let established = plane.kubectl(&[
        "wait",
        "--for=condition=Established",
        "--timeout=60s",
        "crd/tenantdatabases.tenantdb.io",
        "crd/databaseservers.tenantdb.io",
    ]);
    assert!(established.status.success(), "{}", text(&established.stderr));

    // The examples are accepted (server-side dry run) and pass `check`.
    for namespace in ["tenants", "tenantdb-system", "shop"] {
        let created = plane.kubectl(&["create", "namespace", namespace]);
        assert!(created.status.success(), "{}", text(&created.stderr));
    }
    let examples = concat!(env!("CARGO_MANIFEST_DIR"), "/examples");
    let dry_run = plane.kubectl(&["apply", "--server-side", "--dry-run=server", "-f", examples]);
    assert!(dry_run.status.success(), "{}", text(&dry_run.stderr));
    assert!(tenantdb(&["check", "-f", examples]).status.success());

    let cases = [
        ("{pool: {maxConnections: 0}}", "spec.pool.maxConnections"),
        ("{pool: {maxConnections: 5, minConnections: 9}}", "spec.pool"),
        ("{deletionPolicy: Sometimes}", "spec.deletionPolicy"),
        ("{databaseName: pg_shop}", "spec.databaseName"),
        ("{databaseName: \"shop; DROP\"}", "spec.databaseName"),
        ("{pool: {idleTimeout: 30 seconds}}", "spec.pool.idleTimeout"),
        ("{databse: shop}", "spec.databse"),
        (
            "{indexes: [{name: i, table: t, columns: [a], expressions: [lower(a)]}]}",
            "spec.indexes[0]",
        ),
    ];
    let dir = plane.scratch().join("manifests");
    std::fs::create_dir_all(&dir).unwrap();
    for (i, (spec, field)) in cases.iter().enumerate() {
        let file = dir.join(format!("case{i}.yaml"));
        std::fs::write(&file, tenant(&format!("case{i}"), spec)).unwrap();
        let file = file.to_str().unwrap();
        let server = plane.kubectl(&["apply", "--server-side", "--dry-run=server", "-f", file]);
        assert!(!server.status.success(), "the API server accepted {spec}");
        let server_says = text(&server.stderr);
        assert!(
            server_says.contains(field),
            "{spec}: the API server does not name {field}: {server_says}"
        );
        let check = tenantdb(&["check", "-f", file]);
        let check_says = text(&check.stdout) + &text(&check.stderr);
        assert!(!check.status.success(), "tenantdb check accepted {spec}");
        assert!(
            check_says.contains(field),
            "{spec}: tenantdb check does not name {field}: {check_says}"
        );
    }

    // Immutable once set: the real CEL transition rule.
    let file = dir.join("immutable.yaml");
    std::fs::write(&file, tenant("fixed", "{databaseName: shop_one}")).unwrap();
    let created = plane.kubectl(&["apply", "--server-side", "-f", file.to_str().unwrap()]);
    assert!(created.status.success(), "{}", text(&created.stderr));
    std::fs::write(&file, tenant("fixed", "{databaseName: shop_two}")).unwrap();
    let changed = plane.kubectl(&["apply", "--server-side", "-f", file.to_str().unwrap()]);
    assert!(!changed.status.success(), "databaseName changed");
    assert!(
        text(&changed.stderr).contains("spec.databaseName"),
        "{}",
        text(&changed.stderr)
    );
}
