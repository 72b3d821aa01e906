//! A small run of `tenantdb-bench`, so the benchmark does not rot. It checks
//! that every part runs and reports, and the claims that are about
//! correctness rather than speed: a quiet fleet writes nothing and runs one
//! statement per health interval.

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
            "--intervals",
            "2",
            "--interval-seconds",
            "1",
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
    let steady = &report["steady_state"];
    assert_eq!(steady["kubernetes_writes"], 0, "{report}");
    assert_eq!(steady["distinct_statements"], 1, "{report}");
    assert!(
        steady["statements_per_interval"].as_f64().unwrap() >= 0.5,
        "{report}"
    );
    let memory = report["memory"].as_array().unwrap();
    assert_eq!(memory.len(), 1);
    assert_eq!(memory[0]["objects"], 20);
    assert!(memory[0]["rss_mib"].as_f64().unwrap() > 1.0);
    let latency = &report["reconcile_latency"];
    assert_eq!(latency["changes"], 3);
    assert!(latency["p50_ms"].as_f64().unwrap() > 0.0);
    assert!(latency["p99_ms"].as_f64().unwrap() >= latency["p50_ms"].as_f64().unwrap());
}
