//! Reading restore drill records for the audit (the records themselves
//! are [`crate::drill`]).

use std::collections::BTreeMap;

use super::audit::{Finding, Severity};
use super::inventory::Inventory;
use crate::drill::{DrillRecord, MAX_DRILL_BYTES};
use crate::naming::DRILLS_PREFIX;
use crate::store::{ObjectStore, ObjectStoreExt};

/// The stamp at the end of a drill key: the run id
/// (`.../<run>.json`), or the backup stamp of a record written before runs
/// had ids (`...-<stamp>.json`); both `yyyymmddThhmmssZ-xxxxxx`. Used to
/// read the newest records first.
fn key_stamp(key: &str) -> &str {
    let name = key.strip_suffix(".json").unwrap_or(key);
    // The stamp has a fixed length: 16 for the time, 1 dash, 6 hex digits.
    name.get(name.len().saturating_sub(23)..).unwrap_or(name)
}

/// Reads up to `per_namespace` of the newest drill records of each namespace.
/// Unreadable records, and records whose key names another backup,
/// namespace or run than they do (copied or forged), become warnings and
/// do not count: a broken drill record must not stop pruning or the rest of
/// the audit, nor stand in for a drill of another backup.
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
            let (code, problem) = match store.get_bytes(key, MAX_DRILL_BYTES).await {
                Ok(bytes) => match DrillRecord::parse(&bytes) {
                    Ok(record) => match record.misplaced(key) {
                        None => {
                            records.push(record);
                            continue;
                        }
                        Some(why) => (
                            "misplaced_drill_record",
                            format!(
                                "does not belong where it is stored ({why}); it does not count as a drill. Remove it, and find out who wrote it"
                            ),
                        ),
                    },
                    Err(e) => (
                        "unreadable_drill_record",
                        format!("is not a drill record: {e}"),
                    ),
                },
                Err(e) => ("unreadable_drill_record", format!("could not be read: {e}")),
            };
            findings.push(Finding {
                severity: Severity::Warning,
                code: code.into(),
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

    #[test]
    fn key_stamp_is_the_run_or_the_backup_stamp() {
        assert_eq!(
            key_stamp("_drills/production/app-20261127T030000Z-00000a.json"),
            "20261127T030000Z-00000a"
        );
        assert_eq!(
            key_stamp(
                "_drills/production/app/20261127T030000Z-00000a/20261128T040000Z-0000ff.json"
            ),
            "20261128T040000Z-0000ff"
        );
    }
}
