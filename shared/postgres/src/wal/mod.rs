//! `backstop wal-push`: PostgreSQL's `archive_command`.
//!
//! - [`push`]: one file into the archive (encrypt, data object, sealed
//!   manifest; create-only; a retry of the same file succeeds, a different
//!   file of the same name is refused).
//! - [`archive`]: one call of the command: the file PostgreSQL asks for,
//!   plus the next `.ready` files pushed alongside (look-ahead), markers
//!   for those so the next calls return at once, and the backlog.
//! - [`fetch`]: `backstop wal-fetch %f %p`, the `restore_command`: one file
//!   verified (GCS, then S3) into place, the exit status PostgreSQL acts
//!   on, and (`prefetch`) the next segments fetched alongside.
//!
//! The cluster's system identifier comes from `global/pg_control` in the
//! data directory (the command's working directory), so the command needs
//! no database connection.

use std::path::Path;

use backstop_core::config::ConfigError;
use backstop_core::store::StoreError;

pub mod archive;
mod config;
pub mod fetch;
mod prefetch;
pub mod push;

pub use archive::{ArchiveReport, archive_call};
pub use config::{WalPushConfig, WalPushSettings};
pub use fetch::{
    EXIT_NOT_ARCHIVED, EXIT_STOP_RECOVERY, FetchReport, WalFetchConfig, WalFetchError,
    WalFetchSettings, fetch_call,
};
pub use prefetch::{AheadResult, PREFETCH_DIR};
pub use push::{PushSettings, Pushed, push_file};

/// A push that did not store the file. PostgreSQL keeps the file and calls
/// the command again; the message says what to fix.
#[derive(Debug, thiserror::Error)]
pub enum WalPushError {
    /// The settings are unusable.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The file (or the control file) could not be read.
    #[error(
        "could not read {path}: {error}; archive_command runs in the data directory and gets %p (pg_wal/<file>)"
    )]
    Read {
        /// The file.
        path: String,
        /// What the system said.
        error: String,
    },
    /// `%p` is not a WAL file PostgreSQL archives.
    #[error("{0}; archive_command must be 'backstop wal-push %p'")]
    NotAWalFile(String),
    /// The encryption could not start.
    #[error("could not encrypt {key}: {error}")]
    Encrypt {
        /// The WAL key.
        key: String,
        /// Why.
        error: String,
    },
    /// The manifest could not be sealed.
    #[error("could not sign the manifest of {key}: {error}")]
    Sign {
        /// The WAL key.
        key: String,
        /// Why.
        error: String,
    },
    /// A write to the bucket failed; PostgreSQL retries the command.
    #[error("could not store {key}: {error}")]
    Upload {
        /// The object key.
        key: String,
        /// The store's error (transient ones were retried).
        error: StoreError,
    },
    /// What was stored is not what was encrypted.
    #[error(
        "{key} is inconsistent after the upload: {reason}; the push is retried and the object left uncommitted"
    )]
    Inconsistent {
        /// The object key.
        key: String,
        /// What differs.
        reason: String,
    },
    /// Another file of this name is archived: never overwritten.
    #[error(
        "refusing to archive {key}: {reason}. Nothing was overwritten and PostgreSQL keeps the file. Two clusters with one system identifier archiving into one namespace (a copy of the data directory still running with archive_mode = on) cause this: stop the copy's archiving or give it another namespace (BACKSTOP_NAMESPACE)"
    )]
    Conflict {
        /// The WAL key.
        key: String,
        /// What the archive holds instead.
        reason: String,
    },
}

impl WalPushError {
    /// Whether the command should fail for good rather than be retried
    /// (PostgreSQL retries either way; this only changes the log level).
    pub fn is_conflict(&self) -> bool {
        matches!(self, WalPushError::Conflict { .. })
    }
}

/// For the JSON failure only: PostgreSQL reads wal-push's status as zero
/// or not, and every kind's code is non-zero (and below 126, which would
/// make the archiver restart).
impl backstop_core::error::Failure for WalPushError {
    fn failure_kind(&self) -> backstop_core::error::FailureKind {
        use backstop_core::error::FailureKind;
        match self {
            WalPushError::Config(_) | WalPushError::NotAWalFile(_) => FailureKind::Config,
            WalPushError::Upload { error, .. } => error.failure_kind(),
            WalPushError::Inconsistent { .. } => FailureKind::Integrity,
            WalPushError::Read { .. }
            | WalPushError::Encrypt { .. }
            | WalPushError::Sign { .. }
            | WalPushError::Conflict { .. } => FailureKind::Other,
        }
    }
}

/// The cluster's system identifier: the first field of `global/pg_control`
/// (a `uint64` in the server's byte order).
pub fn system_identifier(pgdata: &Path) -> Result<u64, WalPushError> {
    let path = pgdata.join("global").join("pg_control");
    let bytes = std::fs::read(&path).map_err(|e| WalPushError::Read {
        path: path.display().to_string(),
        error: e.to_string(),
    })?;
    let first: [u8; 8] = bytes
        .get(..8)
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| WalPushError::Read {
            path: path.display().to_string(),
            error: format!("{} bytes is too short for a control file", bytes.len()),
        })?;
    Ok(u64::from_ne_bytes(first))
}
