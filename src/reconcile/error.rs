//! Errors of the reconcile pipeline, each with the context a person needs
//! (server, database, role) and a bounded [`ErrorCategory`] that says whether
//! retrying can help. No variant carries a password.

use crate::sql::Ident;

/// A spec that cannot be acted on, naming the offending field.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct SpecError {
    pub field: String,
    pub reason: String,
}

impl SpecError {
    pub fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

/// Whether a failure is worth retrying, and the bounded label metrics use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorCategory {
    /// The spec is invalid: wait for it to change.
    InvalidSpec,
    /// The database or role belongs to someone else: wait for a change.
    Conflict,
    /// The admin role lacks a privilege: wait for a person to fix it.
    Permission,
    /// The server is unreachable, busy or a lock is held: retry with backoff.
    Transient,
}

impl ErrorCategory {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCategory::InvalidSpec => "invalid_spec",
            ErrorCategory::Conflict => "conflict",
            ErrorCategory::Permission => "permission",
            ErrorCategory::Transient => "transient",
        }
    }

    /// Permanent errors are not retried until something changes.
    pub fn is_permanent(self) -> bool {
        !matches!(self, ErrorCategory::Transient)
    }
}

/// A failure of one tenant's reconcile.
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error("invalid spec: {0}")]
    InvalidSpec(#[from] SpecError),

    #[error("{0}")]
    Conflict(String),

    #[error(transparent)]
    Database(Box<DatabaseFailure>),
}

/// A statement or connection that failed, with the tenant it was for. Its
/// message says the cause in one line ([`crate::db_error::describe`]); the
/// cause is not also chained as a `source`, so nothing prints it twice.
#[derive(Debug, thiserror::Error)]
#[error("server {server}: {operation} for database {database} / role {role}: {}", crate::db_error::describe(cause, &format!("server {server}")))]
pub struct DatabaseFailure {
    pub server: String,
    pub database: Ident,
    pub role: Ident,
    pub operation: &'static str,
    pub cause: sqlx::Error,
}

impl ReconcileError {
    pub fn category(&self) -> ErrorCategory {
        match self {
            ReconcileError::InvalidSpec(_) => ErrorCategory::InvalidSpec,
            ReconcileError::Conflict(_) => ErrorCategory::Conflict,
            ReconcileError::Database(failure) => classify(&failure.cause),
        }
    }
}

/// SQLSTATE classes that a retry will not fix are permanent; everything
/// else (connection failures, lock and statement timeouts, too many
/// connections, serialization failures, shutdowns) is transient.
fn classify(error: &sqlx::Error) -> ErrorCategory {
    let Some(code) = error.as_database_error().and_then(|e| e.code()) else {
        return ErrorCategory::Transient;
    };
    match code.as_ref() {
        // insufficient_privilege, invalid_authorization_specification, invalid_password
        "42501" | "28000" | "28P01" => ErrorCategory::Permission,
        // feature_not_supported, undefined_file (extension not installed), invalid_parameter_value
        "0A000" | "58P01" | "22023" => ErrorCategory::InvalidSpec,
        _ => ErrorCategory::Transient,
    }
}
