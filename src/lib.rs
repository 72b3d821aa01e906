//! tenantdb: a Kubernetes operator for the database-per-tenant architecture
//! on PostgreSQL. The library holds everything; the `tenantdb` binary is a
//! thin command line over it.

pub mod admin_access;
pub mod admin_session;
pub mod api;
pub mod cache;
pub mod connection_secret;
pub mod db_error;
pub mod fault;
pub mod health;
pub mod local;
pub mod manifest;
pub mod operator;
pub mod password;
pub mod reconcile;
pub mod sql;
pub mod status;
pub mod throwaway;
pub mod throwaway_pki;
pub mod throwaway_redis;
