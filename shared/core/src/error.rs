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
