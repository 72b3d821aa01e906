//! Kill points for the fault-injection suite (`tests/fault_injection.rs`).
//!
//! `kill_point!("name")` marks a place in the operator where a crash leaves
//! a state worth proving recoverable: after placement was recorded, between
//! two SQL steps, after provisioning but before the Secret, after dropping
//! but before the finalizer goes. Built with the `fault-injection` feature,
//! each point is a [`fail`] fail point: `FAILPOINTS="name=2*off->return"`
//! in `tenantdb run`'s environment lets it pass twice and then SIGKILLs the
//! process at the third pass — no unwinding, no destructor, no flush, as an
//! OOM kill or a node loss would. Without the feature (every release
//! build) the macro expands to nothing. I/O: the signal only.

/// The kill points the suite's seeded rounds arm. One more,
/// `tenant.reconcile` at the start of every tenant reconcile pass, is armed
/// by a check of its own (a new tenant is Ready before the second pass).
pub const KILL_POINTS: &[&str] = &[
    "placement.before_record",
    "placement.after_record",
    "apply.before_step",
    "apply.after_step",
    "tenant.before_secret",
    "tenant.before_status",
    "tenant.after_status",
    "cleanup.before_drop",
    "cleanup.after_drop",
];

/// Marks a kill point (see the module docs).
#[macro_export]
macro_rules! kill_point {
    ($name:literal) => {
        #[cfg(feature = "fault-injection")]
        ::fail::fail_point!($name, |_| $crate::fault::kill($name));
    };
}

/// Reads the kill points armed in `FAILPOINTS`; a no-op without the feature.
pub fn arm_from_env() {
    #[cfg(feature = "fault-injection")]
    if let Ok(points) = std::env::var("FAILPOINTS")
        && !points.is_empty()
    {
        // The scenario's only job here is reading FAILPOINTS; it lives as
        // long as the process (a kill point ends it anyway).
        std::mem::forget(fail::FailScenario::setup());
        tracing::warn!(%points, "fault injection: kill points armed");
    }
}

/// Ends this process with SIGKILL at kill point `name`.
#[cfg(feature = "fault-injection")]
pub fn kill(name: &str) -> ! {
    eprintln!("fault injection: SIGKILL at {name}");
    // SAFETY: kill(2) on our own pid with a valid signal number has no
    // memory-safety preconditions.
    unsafe {
        libc::kill(libc::getpid(), libc::SIGKILL);
    }
    // SIGKILL to oneself is delivered before kill(2) returns; never go on.
    loop {
        std::thread::sleep(std::time::Duration::from_secs(1));
    }
}
