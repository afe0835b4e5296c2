//! How a dump fails: each message says what failed and what was (not)
//! written, so an operator knows whether anything needs cleaning up (it
//! never does: a backup without a manifest is left for retention).
//!
//! The causes are quoted in the messages and deliberately not returned by
//! [`std::error::Error::source`], so that `{e:#}` (how the CLI prints
//! errors) shows each cause once.

use backstop_core::config::ConfigError;
use backstop_core::crypto::CryptoError;
use backstop_core::error::{Classify, Retry};
use backstop_core::naming::NameError;
use backstop_core::store::StoreError;

use crate::pg::PgError;

#[derive(Debug, thiserror::Error)]
pub enum DumpError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("cannot name a backup of database {database:?}: {error}")]
    Name { database: String, error: NameError },
    #[error(
        "could not take a snapshot of database {database} ({url}): {error}; nothing was written"
    )]
    Snapshot {
        database: String,
        url: String,
        error: PgError,
    },
    #[error(
        "could not count the rows of database {database} in the dump's snapshot: {error}; the backup {backup_id} is incomplete: no manifest was written (its data object is left for retention)"
    )]
    RowCounts {
        database: String,
        backup_id: String,
        error: PgError,
    },
    #[error("could not start pg_dump: {error}; nothing was written")]
    PgDumpStart { error: PgError },
    #[error(
        "pg_dump of database {database} failed: {message}; the backup {backup_id} is incomplete: no manifest was written (a partial data object, if any, is left for retention)"
    )]
    PgDump {
        database: String,
        backup_id: String,
        message: String,
    },
    #[error("encrypting the dump failed: {error}; no manifest was written for {backup_id}")]
    Encrypt {
        backup_id: String,
        error: CryptoError,
    },
    #[error(
        "upload of the data object {key} failed: {error}; no manifest was written (a partial data object, if any, is left for retention). The dump stream cannot be replayed, so the job fails; run it again"
    )]
    Upload { key: String, error: StoreError },
    #[error("the data object {key} is inconsistent: {reason}; no manifest was written")]
    Inconsistent { key: String, reason: String },
    #[error("signing the manifest of {backup_id} failed: {error}; no manifest was written")]
    Sign {
        backup_id: String,
        error: CryptoError,
    },
    #[error(
        "writing {key} failed: {error}; the data object is complete but the backup has no manifest, so it stays incomplete (run the job again)"
    )]
    Commit { key: String, error: StoreError },
}

impl Classify for DumpError {
    /// Whether running the job again may succeed without a change of
    /// configuration (a scheduler's retry decision).
    fn retry(&self) -> Retry {
        match self {
            DumpError::Upload { error, .. } | DumpError::Commit { error, .. } => error.retry(),
            DumpError::Snapshot { error, .. } => error.retry(),
            DumpError::PgDump { .. } | DumpError::RowCounts { .. } => Retry::Transient,
            _ => Retry::Permanent,
        }
    }
}

impl backstop_core::error::Failure for DumpError {
    fn failure_kind(&self) -> backstop_core::error::FailureKind {
        use backstop_core::error::FailureKind;
        match self {
            DumpError::Config(_) | DumpError::Name { .. } => FailureKind::Config,
            DumpError::Snapshot { error, .. } | DumpError::PgDumpStart { error } => {
                error.failure_kind()
            }
            DumpError::Encrypt { error, .. } | DumpError::Sign { error, .. } => {
                error.failure_kind()
            }
            DumpError::Upload { error, .. } | DumpError::Commit { error, .. } => {
                error.failure_kind()
            }
            DumpError::RowCounts { .. }
            | DumpError::PgDump { .. }
            | DumpError::Inconsistent { .. } => FailureKind::Other,
        }
    }
}

impl DumpError {
    /// A short name of what failed, for the failure log line.
    pub(crate) fn stage(&self) -> &'static str {
        match self {
            DumpError::Config(_) | DumpError::Name { .. } => "config",
            DumpError::Snapshot { .. } | DumpError::RowCounts { .. } => "snapshot",
            DumpError::PgDumpStart { .. } | DumpError::PgDump { .. } => "pg_dump",
            DumpError::Encrypt { .. } => "encrypt",
            DumpError::Upload { .. } | DumpError::Inconsistent { .. } => "upload",
            DumpError::Sign { .. } => "sign",
            DumpError::Commit { .. } => "commit",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn causes_are_quoted_once_and_not_chained() {
        let lost = || StoreError::Transient {
            store: "gs://b".into(),
            op: "put",
            key: "k".into(),
            message: "503".into(),
        };
        let refused = || PgError::Connect {
            target: "postgres://u@h/app".into(),
            message: "connection refused".into(),
        };
        let errors = [
            DumpError::Snapshot {
                database: "app".into(),
                url: "postgres://u@h/app".into(),
                error: refused(),
            },
            DumpError::Upload {
                key: "k".into(),
                error: lost(),
            },
            DumpError::Commit {
                key: "k".into(),
                error: lost(),
            },
            DumpError::Encrypt {
                backup_id: "b".into(),
                error: CryptoError::IntegrityCheckFailed,
            },
        ];
        let causes = [
            refused().to_string(),
            lost().to_string(),
            lost().to_string(),
            CryptoError::IntegrityCheckFailed.to_string(),
        ];
        for (e, cause) in errors.iter().zip(causes) {
            let shown = e.to_string();
            assert_eq!(shown.matches(&cause).count(), 1, "{shown}");
            assert!(std::error::Error::source(e).is_none(), "{shown}");
        }
        assert_eq!(
            errors.each_ref().map(|e| e.is_transient()),
            [true, true, true, false]
        );
        assert_eq!(
            errors.map(|e| e.stage()),
            ["snapshot", "upload", "commit", "encrypt"]
        );
    }
}
