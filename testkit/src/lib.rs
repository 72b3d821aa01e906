//! tenantdb's test kit: what the test suite and the benchmark need and the
//! operator never links. `emulator` is a small Kubernetes API server for
//! tests that need what a real one cannot give quickly (a short watch
//! history, fast bookmarks); `control_plane` starts a real one (etcd,
//! kube-apiserver, kube-controller-manager built from their Go modules);
//! `bench` is `make bench` (the `tenantdb-bench` binary), `plan_fleet` its
//! `--plan-fleet N` mode and `steady_fleet` its `--steady-fleet N` mode;
//! `throwaway_redis` (tenantdb's own, which `tenantdb sandbox` uses too)
//! starts a Redis server for the cache tests.

pub mod bench;
pub mod control_plane;
pub mod emulator;
pub mod plan_fleet;
pub mod steady_fleet;
pub use tenantdb::throwaway_redis;
