//! Errors of the cache pipeline, naming the server and what was being done.
//! No variant carries a password: connections are built from parts, never
//! from a URL holding one, so the client's errors cannot echo it.

/// A cache operation that failed.
#[derive(Clone, Debug, thiserror::Error)]
pub enum CacheError {
    /// Redis refused or could not be reached.
    #[error("cache server {server}: {operation}: {cause}")]
    Redis {
        server: String,
        operation: String,
        cause: String,
        /// Whether retrying can help (the server down, a timeout).
        transient: bool,
        /// Whether the server refused the user name and password.
        rejected: bool,
    },
    /// The server cannot host tenants as tenantdb provisions them.
    #[error("cache server {server}: {reason}")]
    Unsupported { server: String, reason: String },
}

impl CacheError {
    pub fn redis(server: &str, operation: &str, cause: redis::RedisError) -> Self {
        let transient = cause.is_io_error() || cause.is_timeout() || cause.is_connection_refusal();
        CacheError::Redis {
            server: server.to_owned(),
            operation: operation.to_owned(),
            rejected: cause.kind() == redis::ErrorKind::AuthenticationFailed,
            cause: cause.to_string(),
            transient,
        }
    }

    /// Whether the server refused the credentials.
    pub fn is_rejected(&self) -> bool {
        matches!(self, CacheError::Redis { rejected: true, .. })
    }

    pub fn is_transient(&self) -> bool {
        matches!(self, CacheError::Redis { transient: true, .. })
    }
}
