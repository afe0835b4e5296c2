//! Restore drill records: written by the restore job, read by the audit
//! (`retention::load_drills`).
//!
//! A record lives at [`BackupId::drill_key`] of the backup that was restored
//! and the drill's run id (`_drills/<namespace>/<database>/<stamp>/<run>.json`),
//! one record per run, written create-only: a later drill never replaces an
//! earlier one's record. The namespace in the path is the *source*
//! namespace whose backups the drill proved; the audit checks that a
//! record's `namespace` and `backup_id` are the ones its key names.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::naming::{BackupId, Namespace};

/// Drill records are small; anything larger is not one.
pub const MAX_DRILL_BYTES: usize = 1024 * 1024;

/// A table whose restored row count differs from the manifest's, or that
/// only one of the two has.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableMismatch {
    /// `schema.table`
    pub table: String,
    /// Row count the manifest records; `None`: the table is not in the
    /// manifest (the restored database has a table the dump did not count).
    pub expected: Option<u64>,
    /// `None`: the table is missing from the restored database.
    pub actual: Option<u64>,
}

/// The outcome of one restore drill, stored as JSON at [`Self::key`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DrillRecord {
    /// `<namespace>/<database>/<stamp>` of the restored backup.
    pub backup_id: String,
    /// This drill run (`yyyymmddThhmmssZ-xxxxxx`, see [`new_run_id`]); empty
    /// in records written before runs had ids.
    #[serde(default)]
    pub run_id: String,
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
    /// Where this record is stored, derived from the backup id and the run.
    pub fn key(&self) -> Result<String, crate::naming::NameError> {
        let id = self.backup_id.parse::<BackupId>()?;
        Ok(if self.run_id.is_empty() {
            id.legacy_drill_key()
        } else {
            id.drill_key(&self.run_id)
        })
    }

    /// Why this record may not be trusted as stored at `key`: the key names
    /// another backup, namespace or run than the record says. `None` if it
    /// is where it belongs.
    pub fn misplaced(&self, key: &str) -> Option<String> {
        let Some((id, run)) = BackupId::parse_drill_key(key) else {
            return Some("the key is not a drill record key".into());
        };
        if id.to_string() != self.backup_id {
            return Some(format!("the record is of backup {:?}", self.backup_id));
        }
        if id.namespace != self.namespace {
            return Some(format!(
                "the record is of namespace {:?}",
                self.namespace.as_str()
            ));
        }
        match run {
            Some(run) if run != self.run_id => {
                Some(format!("the record is of run {:?}", self.run_id))
            }
            _ => None,
        }
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

/// What a point-in-time recovery drill (`backstop restore-cluster
/// --start`) checked: the target, and where the recovered server stopped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PitrDrill {
    /// `time <RFC 3339>`, `lsn X/Y`, `xid N` or `latest`.
    pub target: String,
    /// The timeline recovery followed.
    pub timeline: u32,
    /// The server's `recovery stopping ...` (or `redo done at ...`) line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stopped: Option<String>,
    /// `pg_last_xact_replay_timestamp()` after recovery (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_replayed_commit: Option<String>,
    /// `pg_last_wal_replay_lsn()` after recovery.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_replayed_lsn: Option<String>,
    /// WAL segments `restore_command` fetched (the server log's count).
    #[serde(default)]
    pub wal_segments_fetched: u64,
}

/// The drill record of a point-in-time recovery: a [`DrillRecord`] (of a
/// base backup) with a `pitr` field. Stored at the same key; readers of
/// plain [`DrillRecord`]s (older audits) read it and ignore `pitr`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PitrDrillRecord {
    /// The record every drill has (`tables_checked` 0 for a base backup).
    #[serde(flatten)]
    pub drill: DrillRecord,
    /// What the recovery reached.
    pub pitr: PitrDrill,
}

impl PitrDrillRecord {
    /// Pretty-printed JSON with a final newline, as stored.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = serde_json::to_vec_pretty(self).expect("drill record serializes");
        out.push(b'\n');
        out
    }
}

/// A new run id: when the drill ran (UTC, whole seconds) and 6 random hex
/// digits, the layout of a backup stamp, so records sort by time.
pub fn new_run_id(at: DateTime<Utc>) -> String {
    format!(
        "{}-{:06x}",
        at.format("%Y%m%dT%H%M%SZ"),
        rand::random::<u32>() & 0xff_ffff
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn record_round_trips_and_knows_its_key() {
        let r = DrillRecord {
            backup_id: "production/app/20261127T030000Z-00000a".into(),
            run_id: "20261127T040500Z-0000ff".into(),
            namespace: Namespace::new("production").unwrap(),
            target_database: "app_drill".into(),
            started_at: Utc.with_ymd_and_hms(2026, 11, 27, 4, 0, 0).unwrap(),
            finished_at: Utc.with_ymd_and_hms(2026, 11, 27, 4, 5, 0).unwrap(),
            success: false,
            tables_checked: 2,
            mismatches: vec![TableMismatch {
                table: "public.users".into(),
                expected: Some(3),
                actual: Some(2),
            }],
            error: None,
            restored_from: Some("s3".into()),
        };
        assert_eq!(DrillRecord::parse(&r.to_bytes()).unwrap(), r);
        let key = r.key().unwrap();
        assert_eq!(
            key,
            "_drills/production/app/20261127T030000Z-00000a/20261127T040500Z-0000ff.json"
        );
        assert_eq!(r.misplaced(&key), None);
        let legacy = DrillRecord {
            run_id: String::new(),
            ..r.clone()
        };
        assert_eq!(
            legacy.key().unwrap(),
            "_drills/production/app-20261127T030000Z-00000a.json"
        );
        assert_eq!(legacy.misplaced(&legacy.key().unwrap()), None);
        // A record copied under another backup's key, or another run's.
        let elsewhere =
            "_drills/production/app/20261128T030000Z-00000b/20261127T040500Z-0000ff.json";
        assert!(r.misplaced(elsewhere).unwrap().contains("backup"));
        let other_run =
            "_drills/production/app/20261127T030000Z-00000a/20261127T040500Z-0000fe.json";
        assert!(r.misplaced(other_run).unwrap().contains("run"));
        assert!(r.misplaced("_drills/production/x.json").is_some());
    }

    #[test]
    fn pitr_records_read_as_drill_records() {
        let drill = DrillRecord {
            backup_id: "production/.cluster-7312345678901234567/20261127T030000Z-00000a".into(),
            run_id: "20261127T040500Z-0000ff".into(),
            namespace: Namespace::new("production").unwrap(),
            target_database: "/srv/pitr".into(),
            started_at: Utc.with_ymd_and_hms(2026, 11, 27, 4, 0, 0).unwrap(),
            finished_at: Utc.with_ymd_and_hms(2026, 11, 27, 4, 5, 0).unwrap(),
            success: true,
            tables_checked: 0,
            mismatches: Vec::new(),
            error: None,
            restored_from: Some("gcs".into()),
        };
        let pitr = PitrDrillRecord {
            drill: drill.clone(),
            pitr: PitrDrill {
                target: "lsn 0/3000060".into(),
                timeline: 1,
                stopped: Some("recovery stopping after WAL location (LSN) \"0/3000060\"".into()),
                last_replayed_commit: None,
                last_replayed_lsn: Some("0/3000060".into()),
                wal_segments_fetched: 3,
            },
        };
        let bytes = pitr.to_bytes();
        assert_eq!(DrillRecord::parse(&bytes).unwrap(), drill);
        let back: PitrDrillRecord = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(back, pitr);
        assert_eq!(drill.misplaced(&drill.key().unwrap()), None);
    }

    #[test]
    fn run_ids_sort_by_time() {
        let a = new_run_id(Utc.with_ymd_and_hms(2026, 11, 27, 4, 0, 0).unwrap());
        let b = new_run_id(Utc.with_ymd_and_hms(2026, 11, 27, 4, 0, 1).unwrap());
        assert_eq!(a.len(), 23);
        assert!(a < b);
    }
}
