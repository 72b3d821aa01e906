//! The operator's reconcile errors: what failed, typed, with a bounded
//! [`Category`] for the `result` label of `tenantdb_reconcile_total` and
//! the logs. Every variant is retried with the controller's backoff; the
//! failures that wait for a change instead are reported in status and end
//! the reconcile without an error. No I/O.

use std::time::Duration;

/// A reconcile that failed and will be retried with backoff.
#[derive(Debug, thiserror::Error)]
pub enum OperatorError {
    /// A Kubernetes API call failed.
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// A call did not answer within its deadline.
    #[error("{action} did not answer within {after:?}")]
    Timeout { action: String, after: Duration },
    /// A transient failure already written to the tenant's status (the
    /// server is down, a lock was held…).
    #[error("{reason}: {message}")]
    Reported { reason: &'static str, message: String },
    /// A deletion that cannot proceed yet; status and an Event say why.
    #[error("{0}")]
    DeletionBlocked(String),
    /// The finalizer could not be added or removed, or the object has no
    /// name (never sent by an API server).
    #[error("finalizer: {0}")]
    Finalizer(String),
}

/// The bounded kinds of [`OperatorError`], as metric labels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Category {
    /// The API server refused or failed a call (also: it was unreachable).
    KubeApi,
    /// A write lost an optimistic-concurrency race (HTTP 409): someone else
    /// changed the object; the retry reads it again.
    KubeConflict,
    /// A call ran past its deadline.
    Timeout,
    /// A reported transient failure of the tenant's server.
    Transient,
    /// A deletion waiting on its server.
    DeletionBlocked,
}

impl Category {
    pub fn as_str(self) -> &'static str {
        match self {
            Category::KubeApi => "kube_api",
            Category::KubeConflict => "kube_conflict",
            Category::Timeout => "timeout",
            Category::Transient => "transient",
            Category::DeletionBlocked => "deletion_blocked",
        }
    }

    /// Every category, for metrics that should show zeros.
    pub const ALL: [Category; 5] = [
        Category::KubeApi,
        Category::KubeConflict,
        Category::Timeout,
        Category::Transient,
        Category::DeletionBlocked,
    ];
}

impl OperatorError {
    pub fn category(&self) -> Category {
        match self {
            OperatorError::Kube(kube::Error::Api(status)) if status.code == 409 => Category::KubeConflict,
            OperatorError::Kube(_) | OperatorError::Finalizer(_) => Category::KubeApi,
            OperatorError::Timeout { .. } => Category::Timeout,
            OperatorError::Reported { .. } => Category::Transient,
            OperatorError::DeletionBlocked(_) => Category::DeletionBlocked,
        }
    }

    /// A `finalizer` helper's error, unwrapped to the reconcile's own.
    pub fn from_finalizer(error: kube::runtime::finalizer::Error<OperatorError>) -> Self {
        use kube::runtime::finalizer::Error;
        match error {
            Error::ApplyFailed(error) | Error::CleanupFailed(error) => error,
            Error::AddFinalizer(error) | Error::RemoveFinalizer(error) => {
                OperatorError::Finalizer(error.to_string())
            }
            other => OperatorError::Finalizer(other.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api_error(code: u16) -> OperatorError {
        OperatorError::Kube(kube::Error::Api(
            kube::core::Status::failure("refused", "Refused")
                .with_code(code)
                .boxed(),
        ))
    }

    #[test]
    fn each_error_has_its_category() {
        assert_eq!(api_error(409).category(), Category::KubeConflict);
        assert_eq!(api_error(500).category(), Category::KubeApi);
        assert_eq!(api_error(403).category(), Category::KubeApi);
        let timeout = OperatorError::Timeout {
            action: "recording the placement".into(),
            after: Duration::from_secs(15),
        };
        assert_eq!(timeout.category(), Category::Timeout);
        assert_eq!(
            timeout.to_string(),
            "recording the placement did not answer within 15s"
        );
        let reported = OperatorError::Reported {
            reason: "ServerUnreachable",
            message: "connection refused".into(),
        };
        assert_eq!(reported.category(), Category::Transient);
        assert_eq!(
            OperatorError::DeletionBlocked("server gone".into()).category(),
            Category::DeletionBlocked
        );
        let labels: std::collections::BTreeSet<&str> = Category::ALL.iter().map(|c| c.as_str()).collect();
        assert_eq!(labels.len(), Category::ALL.len(), "labels are distinct");
    }
}
