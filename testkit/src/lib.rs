//! tenantdb's test kit: what the test suite and the benchmark need and the
//! operator never links. `emulator` is a small Kubernetes API server for
//! tests that need what a real one cannot give (request counts per client,
//! a short watch history) and for the benchmark without Go; `bench` is
//! `make bench` (the `tenantdb-bench` binary).

pub mod bench;
pub mod emulator;
