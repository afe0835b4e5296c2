//! The one retry classification: every error of the library answers
//! "would the same call succeed later?" through [`Classify`], and the
//! callers that decide on a retry (the replicator's 503/200 reply, the
//! retention executor, the Lambda edge) ask only this.

/// Whether a failed call is worth repeating unchanged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Retry {
    /// The network, a server's 5xx, a timeout: the same call may succeed
    /// later (a Pub/Sub push answered 503 is redelivered).
    Transient,
    /// Bad input, bad data, a refused precondition, a configuration error:
    /// repeating changes nothing; someone must act.
    Permanent,
}

/// Maps an error to its [`Retry`] class.
pub trait Classify {
    /// The class of this error.
    fn retry(&self) -> Retry;

    /// Shorthand for `self.retry() == Retry::Transient`.
    fn is_transient(&self) -> bool {
        self.retry() == Retry::Transient
    }
}

/// Implements [`Classify`] as [`Retry::Permanent`] for errors that no retry
/// can fix (bad input, bad configuration, bad data).
macro_rules! permanent {
    ($($t:ty),* $(,)?) => {
        $(impl $crate::error::Classify for $t {
            fn retry(&self) -> $crate::error::Retry {
                $crate::error::Retry::Permanent
            }
        })*
    };
}
pub(crate) use permanent;

/// What a failure means for the operator who reads the exit status: the CLI
/// maps each kind to one exit code (`functions/backstop/src/exit.rs`), so
/// that a script can tell "fix the settings" from "try later" from "a
/// backup is bad" without reading messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureKind {
    /// A setting is missing or invalid, or a request was refused before
    /// anything happened: fix the configuration or the command line.
    Config,
    /// A cloud, KMS or server did not answer in time: [`Retry::Transient`].
    Unreachable,
    /// A backup (or WAL file) failed verification: tampered, truncated,
    /// signed by an unknown key, or not encrypted to the key given.
    Integrity,
    /// A restore ran, but its drill did not match the manifest.
    DrillMismatch,
    /// Anything else.
    Other,
}

impl FailureKind {
    /// The kind of an error known only by its retry class: a transient
    /// failure is an unreachable service, a permanent one says nothing more.
    pub fn of_retry(retry: Retry) -> Self {
        match retry {
            Retry::Transient => FailureKind::Unreachable,
            Retry::Permanent => FailureKind::Other,
        }
    }
}

/// Maps an error to its [`FailureKind`]; implemented next to each error type
/// (wrappers ask the error they wrap), as [`Classify`] is.
pub trait Failure {
    /// What kind of failure this is.
    fn failure_kind(&self) -> FailureKind;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_transient_failure_is_an_unreachable_service() {
        assert_eq!(
            FailureKind::of_retry(Retry::Transient),
            FailureKind::Unreachable
        );
        assert_eq!(FailureKind::of_retry(Retry::Permanent), FailureKind::Other);
    }
}
