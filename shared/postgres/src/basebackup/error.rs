//! How a base backup fails. Before the server begins sending, nothing is
//! written; after, a failure leaves at most a partial data object and never
//! a manifest (retention cleans it up). Encryption, upload, signature and
//! commit fail as a dump's do ([`DumpError`]).
//!
//! As with [`DumpError`], causes are quoted in the messages and not chained
//! as [`std::error::Error::source`].

use backstop_core::config::ConfigError;
use backstop_core::error::{Classify, Retry};

use crate::dump::DumpError;
use crate::pg::PgError;

#[derive(Debug, thiserror::Error)]
pub enum BaseBackupError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(
        "could not read the cluster's identity and settings from {url}: {error}; nothing was written"
    )]
    Server { url: String, error: PgError },
    #[error(
        "PostgreSQL {version} cannot compress a base backup on the server nor send it in one stream with its manifest (both came with 15); a base backup needs PostgreSQL 15 or newer (13 and 14 are out of support); nothing was written"
    )]
    TooOld { version: String },
    #[error(
        "role {role:?} may not take a base backup: it has no REPLICATION attribute; run `ALTER ROLE {role} REPLICATION` (and allow it a `replication` line in pg_hba.conf), or use a role that has it; nothing was written"
    )]
    NoReplication { role: String },
    #[error(
        "archive_mode is off on the server: a base backup without archived WAL cannot be restored to any point in time; set archive_mode and archive_command (or the WAL archiver) and restart the server, or pass --allow-no-archive (BACKSTOP_ALLOW_NO_ARCHIVE=1) for a backup whose WAL you keep by other means; nothing was written"
    )]
    NoArchive,
    #[error("could not start the base backup: {error}; nothing was written")]
    Connect { error: PgError },
    #[error(
        "the base backup {backup_id} of cluster {system_identifier} failed: {message}; it is incomplete: no manifest was written (a partial data object, if any, is left for retention)"
    )]
    Stream {
        system_identifier: u64,
        backup_id: String,
        message: String,
    },
    #[error(
        "the base backup {backup_id} disagrees with the server: {reason}; no manifest was written (its data object is left for retention)"
    )]
    Mismatch { backup_id: String, reason: String },
    #[error(transparent)]
    Publish(Box<DumpError>),
}

impl From<DumpError> for BaseBackupError {
    fn from(e: DumpError) -> Self {
        BaseBackupError::Publish(Box::new(e))
    }
}

impl Classify for BaseBackupError {
    /// Whether running the job again may succeed without a change of
    /// configuration.
    fn retry(&self) -> Retry {
        match self {
            BaseBackupError::Server { error, .. } | BaseBackupError::Connect { error } => {
                error.retry()
            }
            BaseBackupError::Stream { .. } => Retry::Transient,
            BaseBackupError::Publish(e) => e.retry(),
            _ => Retry::Permanent,
        }
    }
}

/// The server's refusals (too old, no REPLICATION, no archive) are fixed
/// in its settings.
impl backstop_core::error::Failure for BaseBackupError {
    fn failure_kind(&self) -> backstop_core::error::FailureKind {
        use backstop_core::error::FailureKind;
        match self {
            BaseBackupError::Config(_)
            | BaseBackupError::TooOld { .. }
            | BaseBackupError::NoReplication { .. }
            | BaseBackupError::NoArchive => FailureKind::Config,
            BaseBackupError::Server { error, .. } | BaseBackupError::Connect { error } => {
                error.failure_kind()
            }
            BaseBackupError::Publish(e) => e.failure_kind(),
            BaseBackupError::Stream { .. } | BaseBackupError::Mismatch { .. } => FailureKind::Other,
        }
    }
}

impl BaseBackupError {
    /// A short name of what failed, for the failure log line.
    pub(crate) fn stage(&self) -> &'static str {
        match self {
            BaseBackupError::Config(_) => "config",
            BaseBackupError::Server { .. }
            | BaseBackupError::TooOld { .. }
            | BaseBackupError::NoReplication { .. }
            | BaseBackupError::NoArchive => "preconditions",
            BaseBackupError::Connect { .. } | BaseBackupError::Stream { .. } => "stream",
            BaseBackupError::Mismatch { .. } => "check",
            BaseBackupError::Publish(e) => e.stage(),
        }
    }
}
