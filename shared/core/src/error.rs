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

/// Errors that no retry can fix: bad input, bad configuration, bad data.
macro_rules! permanent {
    ($($t:ty),* $(,)?) => {
        $(impl Classify for $t {
            fn retry(&self) -> Retry {
                Retry::Permanent
            }
        })*
    };
}

permanent!(
    crate::config::ConfigError,
    crate::naming::NameError,
    crate::manifest::ManifestError,
    crate::events::EventError,
    crate::retention::PolicyError,
    crate::retention::BucketConfigError,
);

/// A failed publish: the topic may be back later (and the alert is in the
/// error log meanwhile).
impl Classify for crate::alerts::AlertError {
    fn retry(&self) -> Retry {
        Retry::Transient
    }
}

impl Classify for crate::store::StoreError {
    fn retry(&self) -> Retry {
        use crate::store::StoreError;
        match self {
            StoreError::Transient { .. } => Retry::Transient,
            StoreError::Source { source, .. } if StoreError::io_is_transient(source) => {
                Retry::Transient
            }
            _ => Retry::Permanent,
        }
    }
}

impl Classify for crate::crypto::CryptoError {
    /// Data errors (a bad backup, a wrong key) are permanent; failures of the
    /// environment around the data (reading, writing, KMS, a key file, the
    /// pipeline's threads) may pass.
    fn retry(&self) -> Retry {
        use crate::crypto::CryptoError;
        match self {
            CryptoError::Input(_)
            | CryptoError::Output(_)
            | CryptoError::Pipeline(_)
            | CryptoError::Kms { .. }
            | CryptoError::KeyFile { .. } => Retry::Transient,
            _ => Retry::Permanent,
        }
    }
}

impl Classify for crate::replicate::ReplicateError {
    fn retry(&self) -> Retry {
        use crate::replicate::ReplicateError;
        match self {
            ReplicateError::UnknownBucket { .. } => Retry::Permanent,
            ReplicateError::Retry { .. } => Retry::Transient,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::StoreError;

    #[test]
    fn store_errors_inside_io_keep_their_class() {
        let transient = StoreError::Transient {
            store: "mem://".into(),
            op: "get",
            key: "k".into(),
            message: "503".into(),
        };
        let wrapped = StoreError::Source {
            store: "mem://".into(),
            key: "k".into(),
            source: transient.into_io(),
        };
        assert_eq!(wrapped.retry(), Retry::Transient);
        let missing = StoreError::NotFound {
            store: "mem://".into(),
            key: "k".into(),
        };
        assert_eq!(missing.retry(), Retry::Permanent);
        assert!(!missing.is_transient());
    }
}
