//! Restore drill records: written by the restore job, read by the audit.
//!
//! A record lives at [`BackupId::drill_key`] of the backup that was restored
//! (`_drills/<namespace>/<database>-<stamp>.json`), so the namespace in the
//! path is the *source* namespace whose backups the drill proved.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::audit::{Finding, Severity};
use super::inventory::Inventory;
use crate::naming::{BackupId, DRILLS_PREFIX, Namespace};
use crate::store::{ObjectStore, ObjectStoreExt};

/// Drill records are small; anything larger is not one.
pub const MAX_DRILL_BYTES: usize = 1024 * 1024;

/// A table whose restored row count differs from the manifest's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableMismatch {
    /// `schema.table`
    pub table: String,
    pub expected: u64,
    /// `None`: the table is missing from the restored database.
    pub actual: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DrillRecord {
    /// `<namespace>/<database>/<stamp>` of the restored backup.
    pub backup_id: String,
    /// The backup's (source) namespace.
    pub namespace: Namespace,
    /// Database the backup was restored into.
    pub target_database: String,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    /// Restored, and every table's row count matched the manifest.
    pub success: bool,
    pub tables_checked: u64,
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

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = serde_json::to_vec_pretty(self).expect("drill record serializes");
        out.push(b'\n');
        out
    }

    pub fn parse(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(bytes)
    }
}

/// The stamp at the end of a drill key (`...-<yyyymmddThhmmssZ-xxxxxx>.json`),
/// used to read the newest records first.
fn key_stamp(key: &str) -> &str {
    let name = key.strip_suffix(".json").unwrap_or(key);
    // The stamp has a fixed length: 16 for the time, 1 dash, 6 hex digits.
    name.get(name.len().saturating_sub(23)..).unwrap_or(name)
}

/// Reads up to `per_namespace` of the newest drill records of each namespace.
/// Unreadable records become warnings rather than errors: a broken drill
/// record must not stop pruning or the rest of the audit.
pub async fn load_drills(
    store: &dyn ObjectStore,
    inventory: &Inventory,
    per_namespace: usize,
) -> (Vec<DrillRecord>, Vec<Finding>) {
    let mut by_ns: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for meta in &inventory.drills {
        let rest = &meta.key[DRILLS_PREFIX.len()..];
        if let Some((ns, _)) = rest.split_once('/') {
            by_ns.entry(ns).or_default().push(&meta.key);
        }
    }
    let mut records = Vec::new();
    let mut findings = Vec::new();
    for (ns, mut keys) in by_ns {
        keys.sort_by(|a, b| key_stamp(b).cmp(key_stamp(a)).then(b.cmp(a)));
        for key in keys.into_iter().take(per_namespace) {
            let problem = match store.get_bytes(key, MAX_DRILL_BYTES).await {
                Ok(bytes) => match DrillRecord::parse(&bytes) {
                    Ok(record) => {
                        records.push(record);
                        continue;
                    }
                    Err(e) => format!("is not a drill record: {e}"),
                },
                Err(e) => format!("could not be read: {e}"),
            };
            findings.push(Finding {
                severity: Severity::Warning,
                code: "unreadable_drill_record".into(),
                namespace: Some(ns.to_string()),
                cloud: None,
                subject: Some(key.to_string()),
                message: format!("restore drill record {key} {problem}"),
            });
        }
    }
    (records, findings)
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
        assert_eq!(key_stamp(&r.key().unwrap()), "20261127T030000Z-00000a");
    }
}
