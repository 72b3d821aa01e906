//! The benchmark, the emulator's own tests and the chart's per-client RBAC
//! comparison need the `emulator` feature (`cargo test --all-features`, as
//! `make test` runs it). A plain `cargo test` compiles those files to
//! nothing; this test makes that run fail, saying why, instead of passing
//! with less than the suite.

#[cfg(not(feature = "emulator"))]
#[test]
fn the_suite_runs_with_all_features() {
    panic!(
        "built without the emulator feature: tests/bench.rs, tests/emulator.rs and the chart's RBAC test did not run; run `cargo test --all-features` (make test)"
    );
}

#[cfg(feature = "emulator")]
#[test]
fn the_suite_runs_with_all_features() {
    // The gated files are compiled in: tenantdb's emulator is reachable.
    let _ = tenantdb::emulator::EmulatorOptions::default();
}
