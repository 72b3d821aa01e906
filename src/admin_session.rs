//! The one place that decides what an admin session runs under. A tenant
//! owns its database and may `ALTER DATABASE … SET` any user-settable
//! setting there (and `SET ROLE` through the `role` setting); every such
//! setting tenantdb's statements could be steered or stalled by is pinned
//! here, in the startup packet, so it applies before the first statement
//! and outranks whatever the database carries. No I/O: this module only
//! builds connect options.
//!
//! Every setting a database owner can set is either in [`PINNED`] or in
//! [`LEFT_ALONE`] with the reason it cannot hurt tenantdb's work;
//! `tests/hostile_tenant.rs` asks a real server which settings an owner
//! can set and fails on any that is in neither list.

use sqlx::postgres::PgConnectOptions;

/// One pinned setting.
#[derive(Clone, Copy, Debug)]
pub struct Pin {
    pub name: &'static str,
    pub value: &'static str,
    /// The first `server_version_num` that knows the setting. Pins with a
    /// minimum are added only to tenant-database sessions, whose server
    /// version is known; PostgreSQL refuses a connection that names a
    /// setting it does not have.
    pub since: u32,
    /// What a hostile value would do to tenantdb's work.
    pub why: &'static str,
}

const fn pin(name: &'static str, value: &'static str, why: &'static str) -> Pin {
    Pin {
        name,
        value,
        since: 0,
        why,
    }
}

/// The search path of every admin session: catalog names only. `pg_temp`
/// is named last so the session's own temporary objects never shadow a
/// catalog name (functions and operators are never looked up there).
pub const SEARCH_PATH: &str = "pg_catalog,pg_temp";

/// How long one admin statement may run (index builds lift it for their
/// own session).
pub const STATEMENT_TIMEOUT: &str = "300s";

/// How long an admin statement waits for a lock before it fails and is
/// retried, instead of queueing behind a tenant's long transaction.
pub const LOCK_TIMEOUT: &str = "10s";

/// Settings every admin session runs under, whatever the database says.
pub const PINNED: &[Pin] = &[
    pin(
        "search_path",
        SEARCH_PATH,
        "a tenant schema first in the path would resolve tenantdb's function, view, operator and type names to the tenant's objects, run as the admin role",
    ),
    pin(
        "role",
        "none",
        "ALTER DATABASE … SET role would run every admin statement as another role",
    ),
    pin(
        "statement_timeout",
        STATEMENT_TIMEOUT,
        "a tiny value fails every statement; zero lets one hang forever",
    ),
    pin(
        "lock_timeout",
        LOCK_TIMEOUT,
        "a tiny value fails DDL at once; zero queues it behind any lock forever",
    ),
    pin(
        "idle_in_transaction_session_timeout",
        "0",
        "a tiny value ends admin sessions between two statements of a transaction",
    ),
    pin(
        "idle_session_timeout",
        "0",
        "a tiny value ends pooled admin sessions while they wait",
    ),
    Pin {
        since: 170_000,
        ..pin(
            "transaction_timeout",
            "0",
            "a tiny value aborts every admin transaction",
        )
    },
    pin(
        "default_transaction_read_only",
        "off",
        "every admin transaction would be read-only and refuse DDL",
    ),
    pin("transaction_read_only", "off", "as default_transaction_read_only"),
    pin(
        "default_transaction_isolation",
        "read committed",
        "serializable admin transactions fail with serialization errors under concurrent DDL",
    ),
    pin(
        "transaction_isolation",
        "read committed",
        "as default_transaction_isolation",
    ),
    pin(
        "default_transaction_deferrable",
        "off",
        "deferrable serializable transactions wait for a safe snapshot",
    ),
    pin(
        "check_function_bodies",
        "on",
        "tenantdb creates no functions, but extension scripts do: they must be checked",
    ),
    pin(
        "client_min_messages",
        "warning",
        "debug levels flood tenantdb's log with the server's messages",
    ),
    pin(
        "standard_conforming_strings",
        "on",
        "off makes backslashes in string literals escapes: the literals tenantdb renders would change meaning",
    ),
    pin(
        "backslash_quote",
        "safe_encoding",
        "as standard_conforming_strings",
    ),
    pin("escape_string_warning", "on", "as standard_conforming_strings"),
    pin(
        "quote_all_identifiers",
        "off",
        "changes pg_get_indexdef's text, which index comparison reads",
    ),
    pin(
        "transform_null_equals",
        "off",
        "changes what a declared index predicate `x = NULL` means",
    ),
    pin("array_nulls", "on", "changes how array literals are read"),
    pin(
        "default_tablespace",
        "",
        "would place the index builds tenantdb runs in another tablespace",
    ),
    pin(
        "temp_tablespaces",
        "",
        "would place the index probe's temporary table in another tablespace",
    ),
    pin(
        "default_table_access_method",
        "heap",
        "the index probe's temporary table must use the built-in heap",
    ),
    pin(
        "default_text_search_config",
        "pg_catalog.simple",
        "could name a text search configuration in a tenant schema",
    ),
    pin(
        "exit_on_error",
        "off",
        "on ends the admin session at the first expected error (an index probe PostgreSQL refuses)",
    ),
    pin(
        "IntervalStyle",
        "postgres",
        "changes the text of interval values tenantdb reads",
    ),
    pin("bytea_output", "hex", "changes the text of bytea values"),
    pin("xmlbinary", "base64", "changes the text of XML values"),
    pin("xmloption", "content", "changes how XML values are read"),
    pin("lc_monetary", "C", "changes formatted numbers and money"),
    pin("lc_numeric", "C", "changes formatted numbers"),
    pin("lc_time", "C", "changes formatted dates"),
    pin(
        "timezone_abbreviations",
        "Default",
        "changes how time constants in declared index predicates are read",
    ),
    pin(
        "local_preload_libraries",
        "",
        "loads libraries into the admin session at login",
    ),
    pin(
        "row_security",
        "on",
        "off turns row-level security policies into errors",
    ),
    pin(
        "tcp_user_timeout",
        "0",
        "a tiny value drops admin connections on the first delayed packet",
    ),
    pin("tcp_keepalives_idle", "0", "as tcp_user_timeout"),
    pin("tcp_keepalives_interval", "0", "as tcp_user_timeout"),
    pin("tcp_keepalives_count", "0", "as tcp_user_timeout"),
    pin(
        "debug_print_parse",
        "off",
        "writes every admin statement's parse tree to the server log",
    ),
    pin("debug_print_rewritten", "off", "as debug_print_parse"),
    pin("debug_print_plan", "off", "as debug_print_parse"),
];

/// Settings the driver itself sends in the startup packet of every
/// session, with the values it sends: pinned as surely as [`PINNED`].
pub const SET_BY_THE_DRIVER: &[(&str, &str)] = &[
    ("DateStyle", "ISO, MDY"),
    ("client_encoding", "UTF8"),
    ("TimeZone", "UTC"),
    ("extra_float_digits", "2"),
    ("application_name", "tenantdb"),
];

/// Settings a database owner can set that are left to the database, and
/// why they cannot steer tenantdb's work: each only changes plans, costs or
/// logging, or affects work done for that tenant alone (which the tenant
/// could slow in its own sessions just as well). A name ending in `*` is a
/// family.
pub const LEFT_ALONE: &[(&str, &str)] = &[
    ("enable_*", "planner switches: change plans, not results"),
    ("geqo*", "planner: changes plans, not results"),
    (
        "jit*",
        "planner: may make a tenant's admin statements slower, never different",
    ),
    ("cpu_index_tuple_cost", "planner cost"),
    ("cpu_operator_cost", "planner cost"),
    ("cpu_tuple_cost", "planner cost"),
    ("random_page_cost", "planner cost"),
    ("seq_page_cost", "planner cost"),
    ("parallel_setup_cost", "planner cost"),
    ("parallel_tuple_cost", "planner cost"),
    ("parallel_leader_participation", "planner"),
    ("min_parallel_index_scan_size", "planner"),
    ("min_parallel_table_scan_size", "planner"),
    (
        "max_parallel_workers",
        "planner: bounded by the server's own limit",
    ),
    ("max_parallel_workers_per_gather", "planner"),
    (
        "force_parallel_mode",
        "planner: forces parallel plans with the same results",
    ),
    (
        "debug_parallel_query",
        "planner: forces parallel plans with the same results",
    ),
    ("constraint_exclusion", "planner"),
    ("cursor_tuple_fraction", "planner"),
    (
        "default_statistics_target",
        "ANALYZE detail; tenantdb runs no ANALYZE",
    ),
    ("effective_cache_size", "planner"),
    (
        "effective_io_concurrency",
        "prefetching for the tenant's own tables",
    ),
    (
        "maintenance_io_concurrency",
        "prefetching for the tenant's own tables",
    ),
    ("from_collapse_limit", "planner"),
    ("join_collapse_limit", "planner"),
    ("plan_cache_mode", "planner"),
    ("recursive_worktable_factor", "planner"),
    ("hash_mem_multiplier", "memory for the tenant's own work"),
    ("work_mem", "memory for the tenant's own work"),
    ("temp_buffers", "memory for the tenant's own work"),
    (
        "maintenance_work_mem",
        "memory for building the tenant's own indexes; the tenant can do the same in its own sessions",
    ),
    (
        "max_parallel_maintenance_workers",
        "parallelism of the tenant's own index builds, bounded by the server's limits",
    ),
    (
        "gin_pending_list_limit",
        "behaviour of the tenant's own GIN indexes",
    ),
    (
        "gin_fuzzy_search_limit",
        "behaviour of the tenant's own GIN indexes",
    ),
    (
        "logical_decoding_work_mem",
        "logical decoding; tenantdb decodes nothing",
    ),
    ("backend_flush_after", "I/O pacing"),
    ("wal_skip_threshold", "I/O strategy for new relations"),
    ("commit_siblings", "commit grouping"),
    (
        "synchronous_commit",
        "durability of tenantdb's commits in the tenant database: a lost commit is redone by the next reconcile",
    ),
    ("synchronize_seqscans", "scan order of the tenant's own tables"),
    ("vacuum_*", "VACUUM tuning; tenantdb runs no VACUUM"),
    (
        "default_toast_compression",
        "compression of the probe's empty table",
    ),
    (
        "stats_fetch_consistency",
        "consistency of statistics views within a transaction",
    ),
    (
        "password_encryption",
        "tenantdb sends SCRAM verifiers it computed, and never sets a password in a tenant database",
    ),
    (
        "log_parameter_max_length_on_error",
        "log detail; tenantdb sends no secret in a tenant database",
    ),
    ("debug_pretty_print", "log formatting"),
    ("trace_notify", "log detail"),
    ("trace_sort", "log detail"),
    (
        "client_connection_check_interval",
        "checks whether the client is still there",
    ),
    ("wal_sender_timeout", "replication connections only"),
    (
        "restrict_nonsystem_relation_kind",
        "refuses tenant views and foreign tables; tenantdb reads neither",
    ),
    ("plpgsql.*", "PL/pgSQL behaviour; tenantdb runs no PL/pgSQL"),
    (
        "session_authorization",
        "PostgreSQL refuses it at login for a role that is not a superuser",
    ),
];

/// What this module says about a setting.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Treatment {
    Pinned(&'static str),
    SetByTheDriver(&'static str),
    LeftAlone(&'static str),
}

/// How `name` is treated in admin sessions, if this module knows it.
pub fn treatment(name: &str) -> Option<Treatment> {
    if let Some(pin) = PINNED.iter().find(|p| p.name.eq_ignore_ascii_case(name)) {
        return Some(Treatment::Pinned(pin.value));
    }
    if let Some((_, value)) = SET_BY_THE_DRIVER
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
    {
        return Some(Treatment::SetByTheDriver(value));
    }
    LEFT_ALONE
        .iter()
        .find(|(pattern, _)| match pattern.strip_suffix('*') {
            Some(prefix) => name.starts_with(prefix),
            None => pattern.eq_ignore_ascii_case(name),
        })
        .map(|(_, why)| Treatment::LeftAlone(why))
}

fn pins(options: PgConnectOptions, applies: impl Fn(&Pin) -> bool) -> PgConnectOptions {
    options.options(PINNED.iter().filter(|p| applies(p)).map(|p| (p.name, p.value)))
}

/// Pins a session to the maintenance database (or any database tenantdb
/// connects to before it knows the server's version): every pin that
/// every supported PostgreSQL knows.
pub fn pinned(options: PgConnectOptions) -> PgConnectOptions {
    pins(options, |p| p.since == 0).application_name("tenantdb")
}

/// The admin options `admin` (already [`pinned`]) moved into a tenant's
/// database on a server of `server_version_num`: the version-specific pins
/// are added as well.
pub fn in_tenant_database(
    admin: &PgConnectOptions,
    database: &str,
    server_version_num: u32,
) -> PgConnectOptions {
    pins(admin.clone().database(database), |p| {
        p.since != 0 && server_version_num >= p.since
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    #[test]
    fn every_setting_is_named_once() {
        let mut seen = BTreeSet::new();
        let names = PINNED
            .iter()
            .map(|p| p.name)
            .chain(SET_BY_THE_DRIVER.iter().map(|(n, _)| *n))
            .chain(LEFT_ALONE.iter().map(|(n, _)| *n));
        for name in names {
            assert!(seen.insert(name.to_ascii_lowercase()), "{name} is listed twice");
        }
        for pin in PINNED {
            assert!(
                !matches!(treatment(pin.name), Some(Treatment::LeftAlone(_))),
                "{} is pinned and left alone",
                pin.name
            );
        }
    }

    #[test]
    fn the_options_carry_every_pin_in_the_startup_packet() {
        let maintenance = pinned(PgConnectOptions::new_without_pgpass());
        let text = maintenance.get_options().unwrap_or_default().to_owned();
        assert!(text.contains("-c search_path=pg_catalog,pg_temp"), "{text}");
        assert!(text.contains("-c role=none"), "{text}");
        assert!(
            text.contains("-c default_transaction_isolation=read\\ committed"),
            "{text}"
        );
        assert!(!text.contains("transaction_timeout=0 "), "{text}");
        let old = in_tenant_database(&maintenance, "t", 150_018);
        assert_eq!(old.get_options(), maintenance.get_options());
        let new = in_tenant_database(&maintenance, "t", 170_002);
        assert!(
            new.get_options()
                .unwrap_or_default()
                .ends_with("-c transaction_timeout=0"),
            "{:?}",
            new.get_options()
        );
        assert_eq!(new.get_database(), Some("t"));
    }
}
