//! What a restore tells its caller: the JSON the CLI prints and the
//! automation reads. Its field names are an interface; they change only
//! together with whatever consumes the JSON.

use serde::Serialize;

use backstop_core::drill::DrillRecord;

/// A backup that was passed over, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SkippedBackup {
    pub cloud: String,
    pub backup_id: String,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Timings {
    /// Listing and manifest verification.
    pub select_secs: f64,
    /// Download, decryption and `pg_restore`.
    pub restore_secs: f64,
    /// Row counts (the drill).
    pub verify_secs: f64,
    pub total_secs: f64,
}

/// The result of a restore (the CLI prints it as JSON).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RestoreReport {
    /// Restored, and the drill passed.
    pub success: bool,
    pub backup_id: String,
    pub namespace: String,
    /// `gcs` or `s3`.
    pub cloud: String,
    /// `gs://bucket` or `s3://bucket`.
    pub store: String,
    /// Why the primary cloud was not used, when it was not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fallback_reason: Option<String>,
    /// Newer backups passed over (incomplete, unverifiable, ...).
    pub skipped: Vec<SkippedBackup>,
    pub target_database: String,
    /// The target URL, password redacted.
    pub target: String,
    pub created_database: bool,
    /// A non-empty target was replaced.
    pub replaced: bool,
    pub ciphertext_bytes: u64,
    pub plaintext_bytes: u64,
    pub tables: usize,
    pub rows: u64,
    pub timings: Timings,
    /// Ciphertext megabytes (10^6 bytes) per second of download + restore.
    pub throughput_mb_s: f64,
    pub drill: DrillRecord,
    /// Where the drill record was written (`gs://bucket/_drills/...`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub drill_record: Option<String>,
    /// Why the drill record could not be written, when it could not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub drill_record_error: Option<String>,
}

/// A restore (or point-in-time recovery) that ran to the end, but whose
/// drill failed: the backup did not come back as its manifest says.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what} failed: {reason}")]
pub struct DrillFailed {
    /// `restore drill` or `PITR drill`.
    pub what: &'static str,
    /// Why: the drill's error, or the row counts that differ.
    pub reason: String,
}

impl backstop_core::error::Failure for DrillFailed {
    fn failure_kind(&self) -> backstop_core::error::FailureKind {
        backstop_core::error::FailureKind::DrillMismatch
    }
}

impl RestoreReport {
    /// The drill's failure, when the restore completed but the drill did
    /// not pass.
    pub fn drill_failure(&self) -> Option<DrillFailed> {
        (!self.success).then(|| DrillFailed {
            what: "restore drill",
            reason: self
                .drill
                .error
                .clone()
                .unwrap_or_else(|| "row counts differ from the manifest".into()),
        })
    }
}
