//! A small run of `tenantdb-bench` (on a real control plane of its own), so
//! the benchmark does not rot. It checks that every part runs and reports,
//! and the claims that are about correctness rather than speed: a quiet
//! fleet writes nothing to the API server (its audit log says), runs at most
//! one health query per interval, and every cost is counted (logins and
//! resyncs too).

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn a_small_benchmark_run_completes_and_reports_every_figure() {
    // It runs the `tenantdb` binary cargo built beside it (`make test`
    // builds the whole workspace first).
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_tenantdb-bench"))
        .args([
            "--tenants",
            "5",
            "--workers",
            "2",
            "--memory-objects",
            "12,16,20",
            "--memory-provisioned",
            "16",
            "--changes",
            "3",
            "--window-seconds",
            "4",
            "--interval-seconds",
            "1",
            "--login-seconds",
            "2",
            "--resync-seconds",
            "3",
            "--json",
        ])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", text(&output.stderr));
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["tenants"], 5);
    let provisioning = &report["provisioning"];
    for field in [
        "floor_ms_per_tenant",
        "apply_ms_per_tenant",
        "operator_ms_per_tenant",
        "apply_ratio",
        "operator_ratio",
        "floor_postgres_cpu_ms_per_tenant",
        "apply_postgres_cpu_ms_per_tenant",
        "operator_postgres_cpu_ms_per_tenant",
        "apply_postgres_cpu_ratio",
        "operator_postgres_cpu_ratio",
    ] {
        assert!(provisioning[field].as_f64().unwrap() > 0.0, "{field}: {report}");
    }
    // Each arm ran twice, in the order floor, apply, operator, operator,
    // apply, floor.
    for arm in ["floor_runs", "apply_runs", "operator_runs"] {
        assert_eq!(provisioning[arm].as_array().unwrap().len(), 2, "{arm}: {report}");
    }
    // The audit log sees the operator: each operator run patched each
    // tenant's status at least once (so the 0 writes below are counted,
    // not missed).
    let runs = provisioning["runs"].as_array().unwrap();
    let operator_runs: Vec<_> = runs.iter().filter(|r| r["arm"] == "operator").collect();
    assert_eq!(operator_runs.len(), 2, "{report}");
    for run in operator_runs {
        let status_patches = run["requests"]["patch tenantdatabases.tenantdb.io/status"]
            .as_u64()
            .unwrap_or(0);
        assert!(status_patches >= 5, "{report}");
    }
    let steady = &report["steady_state"];
    let count = |field: &str| {
        steady[field]
            .as_i64()
            .unwrap_or_else(|| panic!("{field}: {report}"))
    };
    assert_eq!(steady["kubernetes_writes"], 0, "{report}");
    // One health query per interval (four in a 4 s window, give or take the
    // window's edges), never one per tenant.
    assert!((3..=5).contains(&count("health_queries")), "{report}");
    // Every tenant logged in (every 2 s, within the server's budget) and
    // was resynced (every 3 s) in the window, and each is counted; the
    // resync is over the server's shared catalog snapshot, so its
    // statements do not scale with the tenants.
    assert!(count("logins") >= 5, "{report}");
    assert!(count("tenant_statements") >= 5, "{report}");
    assert!(count("resync_statements") >= 1, "{report}");
    let hourly = &steady["per_tenant_hour"];
    assert!(hourly["logins"].as_f64().unwrap() > 0.0, "{report}");
    assert!(hourly["admin_statements"].as_f64().unwrap() > 0.0, "{report}");
    // The steady state's 5 tenants count among the memory's objects; of
    // 20, 16 are provisioned and 4 stand on a server that does not exist.
    assert_eq!(memory_points(&report), [(12, 12), (16, 16), (20, 16)], "{report}");
    let estimate = &report["memory_all_provisioned_estimate"];
    assert_eq!(estimate["objects"], 20, "{report}");
    assert_eq!(estimate["provisioned"], 20, "{report}");
    let latency = &report["reconcile_latency"];
    assert_eq!(latency["changes"], 3);
    assert!(latency["p50_ms"].as_f64().unwrap() > 0.0);
    assert!(latency["p99_ms"].as_f64().unwrap() >= latency["p50_ms"].as_f64().unwrap());
}

/// Each memory point's (objects, provisioned), after checking it has an RSS.
fn memory_points(report: &serde_json::Value) -> Vec<(u64, u64)> {
    let points = report["memory"].as_array().unwrap();
    points
        .iter()
        .map(|p| {
            assert!(p["rss_mib"].as_f64().unwrap() > 1.0, "{report}");
            (p["objects"].as_u64().unwrap(), p["provisioned"].as_u64().unwrap())
        })
        .collect()
}

#[test]
fn a_memory_only_run_provisions_what_it_is_told_and_nothing_else() {
    // `make bench-fleet` runs this mode with 10,000 tenants; here 8, of
    // which 6 provisioned, with short health settings so that the first
    // logins it waits for come within seconds.
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_tenantdb-bench"))
        .args([
            "--memory-only",
            "--memory-objects",
            "4,8",
            "--memory-provisioned",
            "6",
            "--interval-seconds",
            "1",
            "--login-seconds",
            "2",
            "--json",
        ])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", text(&output.stderr));
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    for part in ["provisioning", "steady_state", "reconcile_latency"] {
        assert!(report[part].is_null(), "{part}: {report}");
    }
    assert_eq!(memory_points(&report), [(4, 4), (8, 6)], "{report}");
    // No two all-provisioned points below the largest: no estimate.
    assert!(report["memory_all_provisioned_estimate"].is_null(), "{report}");
    // The provisioning arms never ran.
    let stderr = text(&output.stderr);
    assert!(!stderr.contains("warming up"), "{stderr}");
}
