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
            "20",
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
    // Every tenant logged in (every 2 s) and was resynced (every 3 s) in
    // the window, and each is counted.
    assert!(count("logins") >= 5, "{report}");
    assert!(count("tenant_statements") >= 5, "{report}");
    assert!(count("resync_statements") >= 5, "{report}");
    let hourly = &steady["per_tenant_hour"];
    assert!(hourly["logins"].as_f64().unwrap() > 0.0, "{report}");
    assert!(hourly["admin_statements"].as_f64().unwrap() > 0.0, "{report}");
    let memory = report["memory"].as_array().unwrap();
    assert_eq!(memory.len(), 1);
    assert_eq!(memory[0]["objects"], 20);
    assert_eq!(memory[0]["provisioned"], 20, "{report}");
    assert!(memory[0]["rss_mib"].as_f64().unwrap() > 1.0);
    let latency = &report["reconcile_latency"];
    assert_eq!(latency["changes"], 3);
    assert!(latency["p50_ms"].as_f64().unwrap() > 0.0);
    assert!(latency["p99_ms"].as_f64().unwrap() >= latency["p50_ms"].as_f64().unwrap());
}
