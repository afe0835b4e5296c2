//! The drill: every restore is also a test of the backup. The restored
//! row counts are compared with the manifest's, and the outcome (success,
//! mismatches, or the error) is written as a [`DrillRecord`] under
//! `_drills/` in the primary cloud, where the audit looks for recent proof
//! that backups restore.
//!
//! Each run writes a record of its own (create-only, keyed by a run id), so
//! a later drill never replaces an earlier one. A record that cannot be
//! written fails the restore loudly (the restored database stays, the
//! error says so): an audit that never hears of a failed drill would claim
//! more than is true.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};

use backstop_core::drill::{DrillRecord, TableMismatch};
use backstop_core::store::{ObjectStore, ObjectStoreExt, PutOptions};

use super::config::{Clouds, RestoreConfig};
use super::error::{RestoreError, pg_err};
use super::select::Candidate;
use crate::pg;

/// How long writing a drill record may take per cloud.
const DRILL_WRITE_TIMEOUT: Duration = Duration::from_secs(60);

/// Compares restored row counts with the manifest's, both ways: a table
/// missing from the restored database, and one the manifest does not list,
/// are mismatches too.
pub(crate) fn compare_counts(
    expected: &BTreeMap<String, u64>,
    actual: &BTreeMap<String, u64>,
) -> Vec<TableMismatch> {
    let missing_or_different = expected
        .iter()
        .filter_map(|(table, &n)| match actual.get(table) {
            Some(&a) if a == n => None,
            a => Some(TableMismatch {
                table: table.clone(),
                expected: Some(n),
                actual: a.copied(),
            }),
        });
    let unlisted = actual
        .iter()
        .filter(|(table, _)| !expected.contains_key(*table))
        .map(|(table, &a)| TableMismatch {
            table: table.clone(),
            expected: None,
            actual: Some(a),
        });
    let mut all: Vec<_> = missing_or_different.chain(unlisted).collect();
    all.sort_by(|a, b| a.table.cmp(&b.table));
    all
}

/// Exact row counts of the restored database.
pub(super) async fn count_restored(db_url: &str) -> Result<BTreeMap<String, u64>, RestoreError> {
    let client = pg::connect(db_url)
        .await
        .map_err(pg_err("connect to the restored database"))?;
    pg::row_counts(&client)
        .await
        .map_err(pg_err("count rows of the restored database"))
}

/// The record of restoring `cand` into `target`, not (yet) successful.
pub(super) fn new_record(cand: &Candidate, target: &str, started_at: DateTime<Utc>) -> DrillRecord {
    DrillRecord {
        backup_id: cand.id.to_string(),
        run_id: backstop_core::drill::new_run_id(started_at),
        namespace: cand.id.namespace.clone(),
        target_database: target.to_string(),
        started_at,
        finished_at: Utc::now(),
        success: false,
        tables_checked: cand.manifest.tables.len() as u64,
        mismatches: Vec::new(),
        error: None,
        restored_from: Some(cand.cloud.to_string()),
    }
}

/// Records a restore from the cloud `used` that failed. Refusals and
/// configuration errors (a wrong backup key among them) are not drills:
/// they say nothing about the backup, and are not recorded.
pub(super) async fn record_failure(
    cfg: &RestoreConfig,
    clouds: &Clouds<'_>,
    used: &'static str,
    unavailable: &[&'static str],
    mut drill: DrillRecord,
    e: &RestoreError,
) {
    if cfg.write_drill && !e.is_configuration() {
        drill.error = Some(e.to_string());
        write_drill(clouds, used, unavailable, &drill).await;
    }
}

/// A written (or not) drill record.
pub(super) struct Recorded {
    pub drill: DrillRecord,
    /// Where the record was written (`gs://bucket/_drills/...`).
    pub at: Option<String>,
    /// Why it could not be written.
    pub error: Option<String>,
}

/// Records a completed restore from the cloud `used`: the drill passed
/// when no table's row count differs from the manifest.
pub(super) async fn record_result(
    cfg: &RestoreConfig,
    clouds: &Clouds<'_>,
    used: &'static str,
    unavailable: &[&'static str],
    mut drill: DrillRecord,
    mismatches: &[TableMismatch],
) -> Recorded {
    drill.success = mismatches.is_empty() && drill.tables_checked > 0;
    drill.mismatches = mismatches.to_vec();
    if drill.tables_checked == 0 {
        drill.error = Some(format!(
            "the manifest of {} lists no tables, so restoring it proves nothing about the data; a database with no tables cannot pass a drill",
            drill.backup_id
        ));
        tracing::error!(event = "restore_drill_empty", backup = %drill.backup_id, "the backup lists no tables");
    } else if !drill.success {
        drill.error = Some(format!(
            "{} of {} tables have row counts different from the manifest",
            drill.mismatches.len(),
            drill.tables_checked
        ));
        tracing::error!(event = "restore_drill_mismatch", backup = %drill.backup_id, mismatches = ?drill.mismatches, "restored row counts differ from the manifest");
    }
    let (at, error) = if cfg.write_drill {
        write_drill(clouds, used, unavailable, &drill).await
    } else {
        (None, None)
    };
    Recorded { drill, at, error }
}

/// Writes the drill record: to the primary cloud (where the audit reads
/// it), else (primary unavailable, or the write fails) to the cloud the
/// backup came from. Returns where it landed, or why it did not.
async fn write_drill(
    clouds: &Clouds<'_>,
    used: &'static str,
    unavailable: &[&'static str],
    record: &DrillRecord,
) -> (Option<String>, Option<String>) {
    let key = match record.key() {
        Ok(k) => k,
        Err(e) => return (None, Some(e.to_string())),
    };
    let mut errors = Vec::new();
    let mut targets: Vec<(&'static str, &dyn ObjectStore)> = Vec::new();
    for (i, (cloud, store)) in clouds.ordered().into_iter().enumerate() {
        if (i == 0 || cloud == used) && !unavailable.contains(&cloud) {
            targets.push((cloud, store));
        }
    }
    for (cloud, store) in targets {
        // Create-only: the run id makes the key new, and the restore job's
        // grant may not overwrite.
        let opts = PutOptions::create().with_content_type("application/json");
        let put = store.put_bytes(&key, Bytes::from(record.to_bytes()), opts);
        let result = match tokio::time::timeout(DRILL_WRITE_TIMEOUT, put).await {
            Ok(r) => r.map_err(|e| e.to_string()),
            Err(_) => Err(format!(
                "no answer from {} within {}s",
                store.url(),
                DRILL_WRITE_TIMEOUT.as_secs()
            )),
        };
        match result {
            Ok(_) => {
                let at = format!("{}/{key}", store.url());
                tracing::info!(event = "drill_recorded", cloud, at = %at, success = record.success, "drill record written");
                return (Some(at), None);
            }
            Err(e) => {
                tracing::error!(event = "drill_record_failed", cloud, error = %e, "could not write the drill record");
                errors.push(format!("{cloud}: {e}"));
            }
        }
    }
    if errors.is_empty() {
        errors.push("no reachable cloud to write it to".into());
    }
    (None, Some(errors.join("; ")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_compare() {
        let expected: BTreeMap<String, u64> =
            [("public.a".to_string(), 3), ("public.b".to_string(), 0)].into();
        let same = expected.clone();
        assert!(compare_counts(&expected, &same).is_empty());
        let mut other = expected.clone();
        other.remove("public.b");
        other.insert("public.a".into(), 2);
        other.insert("public.extra".into(), 7);
        let m = compare_counts(&expected, &other);
        assert_eq!(m.len(), 3, "{m:?}");
        assert_eq!((m[0].expected, m[0].actual), (Some(3), Some(2)));
        assert_eq!((m[1].expected, m[1].actual), (Some(0), None));
        assert_eq!(m[2].table, "public.extra");
        assert_eq!((m[2].expected, m[2].actual), (None, Some(7)));
    }
}
