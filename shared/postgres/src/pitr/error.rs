//! How a point-in-time restore fails, worded for the operator who has to
//! act on it: what failed, in what state the data directory was left, and
//! what to do.

use backstop_core::config::ConfigError;
use backstop_core::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum PitrError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(
        "no verified base backup of namespace {namespace} to restore from: {details}; take one with `backstop basebackup`"
    )]
    NoBaseBackup { namespace: String, details: String },
    #[error(
        "no base backup finished before the target {target}: the oldest verified one is {oldest} ({oldest_at}); choose a later target, or restore an older copy of the archive"
    )]
    NoneBeforeTarget {
        target: String,
        oldest: String,
        oldest_at: String,
    },
    #[error(
        "the backup key is not a recipient of base backup {backup_id} (it is encrypted to {recipients}; the key given holds {held}); give the backup key of this namespace (nothing was written)"
    )]
    WrongKey {
        backup_id: String,
        recipients: String,
        held: String,
    },
    #[error(
        "WAL segment {segment} (timeline {timeline}) is missing from the archive ({clouds}): base backup {backup_id} needs every segment from {start_wal} to the target {target}, so recovery cannot get there (nothing was written). Choose a target before {segment} (--to-lsn/--to-time), or a newer base backup, and take a new base backup so later targets are covered"
    )]
    WalGap {
        segment: String,
        timeline: u32,
        clouds: String,
        backup_id: String,
        start_wal: String,
        target: String,
    },
    #[error(
        "the target {target} lies beyond the newest archived WAL ({newest}, archived at {archived_at}): recovery would end before reaching it (nothing was written). Wait for the archive to catch up (SELECT pg_switch_wal() on the source closes the current segment), or use --latest"
    )]
    BeyondArchive {
        target: String,
        newest: String,
        archived_at: String,
    },
    #[error(
        "timeline {timeline} does not lead to the target from base backup {backup_id} (timeline {backup_timeline}): {reason}; choose another --timeline (or latest)"
    )]
    Timeline {
        timeline: u32,
        backup_id: String,
        backup_timeline: u32,
        reason: String,
    },
    #[error("{0}; nothing was written")]
    Store(StoreError),
    /// Extraction or verification failed; `cleanup` says what became of the
    /// data directory.
    #[error("restoring base backup {backup_id} into {pgdata} failed: {reason}; {cleanup}")]
    Extract {
        backup_id: String,
        pgdata: String,
        reason: String,
        cleanup: String,
        /// What the failure means (integrity for data that does not
        /// authenticate, decrypt or match its signed manifest).
        kind: backstop_core::error::FailureKind,
    },
    #[error("writing the recovery settings into {pgdata} failed: {reason}")]
    Settings { pgdata: String, reason: String },
    #[error(
        "recovery of {pgdata} failed: {reason}. The server log is {log}; fix the cause (a missing WAL file: check the archive in both clouds) and restore again into an empty directory"
    )]
    Recovery {
        pgdata: String,
        reason: String,
        log: String,
    },
}

impl backstop_core::error::Failure for PitrError {
    fn failure_kind(&self) -> backstop_core::error::FailureKind {
        use backstop_core::error::FailureKind;
        match self {
            PitrError::Config(_) | PitrError::Timeline { .. } => FailureKind::Config,
            PitrError::WrongKey { .. } => FailureKind::Integrity,
            PitrError::Store(e) => e.failure_kind(),
            PitrError::Extract { kind, .. } => *kind,
            PitrError::NoBaseBackup { .. }
            | PitrError::NoneBeforeTarget { .. }
            | PitrError::WalGap { .. }
            | PitrError::BeyondArchive { .. }
            | PitrError::Settings { .. }
            | PitrError::Recovery { .. } => FailureKind::Other,
        }
    }
}

impl PitrError {
    /// A short machine-readable kind, for the JSON result.
    pub fn kind(&self) -> &'static str {
        match self {
            PitrError::Config(_) => "config",
            PitrError::NoBaseBackup { .. } => "no_base_backup",
            PitrError::NoneBeforeTarget { .. } => "no_base_backup_before_target",
            PitrError::WrongKey { .. } => "wrong_key",
            PitrError::WalGap { .. } => "wal_gap",
            PitrError::BeyondArchive { .. } => "target_beyond_archive",
            PitrError::Timeline { .. } => "timeline",
            PitrError::Store(_) => "store",
            PitrError::Extract { .. } => "extract",
            PitrError::Settings { .. } => "settings",
            PitrError::Recovery { .. } => "recovery",
        }
    }

    /// Whether a failure says something about the backup (a drill): the
    /// data did not extract or verify, or recovery failed.
    pub fn is_drill_failure(&self) -> bool {
        matches!(self, PitrError::Extract { .. } | PitrError::Recovery { .. })
    }
}
