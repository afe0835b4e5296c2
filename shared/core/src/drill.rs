//! Restore drill records: written by the restore job, read by the audit
//! (`retention::load_drills`).
//!
//! A record lives at [`BackupId::drill_key`] of the backup that was restored
//! (`_drills/<namespace>/<database>-<stamp>.json`), so the namespace in the
//! path is the *source* namespace whose backups the drill proved.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::naming::{BackupId, Namespace};

/// Drill records are small; anything larger is not one.
pub const MAX_DRILL_BYTES: usize = 1024 * 1024;

/// A table whose restored row count differs from the manifest's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableMismatch {
    /// `schema.table`
    pub table: String,
    /// Row count the manifest records.
    pub expected: u64,
    /// `None`: the table is missing from the restored database.
    pub actual: Option<u64>,
}

/// The outcome of one restore drill, stored as JSON at [`Self::key`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DrillRecord {
    /// `<namespace>/<database>/<stamp>` of the restored backup.
    pub backup_id: String,
    /// The backup's (source) namespace.
    pub namespace: Namespace,
    /// Database the backup was restored into.
    pub target_database: String,
    /// When the restore started.
    pub started_at: DateTime<Utc>,
    /// When the drill ended, whatever its outcome.
    pub finished_at: DateTime<Utc>,
    /// Restored, and every table's row count matched the manifest.
    pub success: bool,
    /// How many tables' row counts were compared.
    pub tables_checked: u64,
    /// Tables whose row count differs from the manifest's or that are missing.
    #[serde(default)]
    pub mismatches: Vec<TableMismatch>,
    /// Why the drill failed, when it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The cloud the backup was read from (`gcs` or `s3`): a drill that had
    /// to fall back to the replica also proves the replica restores.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restored_from: Option<String>,
}

impl DrillRecord {
    /// Where this record is stored, derived from the backup id.
    pub fn key(&self) -> Result<String, crate::naming::NameError> {
        Ok(self.backup_id.parse::<BackupId>()?.drill_key())
    }

    /// Pretty-printed JSON with a final newline, as stored.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = serde_json::to_vec_pretty(self).expect("drill record serializes");
        out.push(b'\n');
        out
    }

    /// Parses a stored record.
    pub fn parse(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn record_round_trips_and_knows_its_key() {
        let r = DrillRecord {
            backup_id: "production/app/20261127T030000Z-00000a".into(),
            namespace: Namespace::new("production").unwrap(),
            target_database: "app_drill".into(),
            started_at: Utc.with_ymd_and_hms(2026, 11, 27, 4, 0, 0).unwrap(),
            finished_at: Utc.with_ymd_and_hms(2026, 11, 27, 4, 5, 0).unwrap(),
            success: false,
            tables_checked: 2,
            mismatches: vec![TableMismatch {
                table: "public.users".into(),
                expected: 3,
                actual: Some(2),
            }],
            error: None,
            restored_from: Some("s3".into()),
        };
        assert_eq!(DrillRecord::parse(&r.to_bytes()).unwrap(), r);
        assert_eq!(
            r.key().unwrap(),
            "_drills/production/app-20261127T030000Z-00000a.json"
        );
    }
}
