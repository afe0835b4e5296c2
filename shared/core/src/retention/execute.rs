//! Talking to a store: collecting an inventory and applying a plan.

use std::fmt;

use chrono::{DateTime, Utc};

use crate::error::Classify;
use futures::{StreamExt, TryStreamExt};
use serde::Serialize;

use super::inventory::{InvalidKind, Inventory, ManifestVerifier, Verification};
use super::plan::{Plan, plan};
use super::policy::PolicySet;
use super::wal_inventory::ClusterKey;
use crate::store::{ObjectStore, ObjectStoreExt, StoreError};
use std::collections::HashSet;

/// Backups verified at once unless configured (`BACKSTOP_RETENTION_CONCURRENCY`
/// in the retention function). Each verification is three small reads sent
/// together, so 16 keeps 48 requests in flight: enough to hide a cloud's
/// per-request latency, and bounded so that a bucket of any size costs the
/// same sockets and the same memory for reads in progress.
pub const DEFAULT_VERIFY_CONCURRENCY: usize = 16;
/// Backups deleted in parallel; a backup's own objects are always deleted one
/// after the other, in order.
const DELETE_CONCURRENCY: usize = 8;

/// What a store error while verifying one backup means for the run. A
/// transient failure, or an object gone since the listing (the bucket changed
/// under the run), fails the whole collection: the backup could not be
/// checked, and must not be mistaken for a bad one. Any other (permanent)
/// failure, such as a manifest larger than any manifest can be, will fail on
/// every run: the backup is reported invalid, and the run goes on.
fn verdict_on_error(err: StoreError) -> Result<Verification, StoreError> {
    if aborts_collection(&err) {
        return Err(err);
    }
    Ok(Verification::Invalid {
        kind: InvalidKind::Unreadable,
        reason: err.to_string(),
    })
}

/// Whether a store error while verifying (a backup or a WAL file) fails
/// the whole collection (see `verdict_on_error`).
pub(super) fn aborts_collection(err: &StoreError) -> bool {
    err.is_transient() || matches!(err, StoreError::NotFound { .. })
}

/// Lists the whole bucket and verifies every complete backup, then the
/// WAL manifests (after the backups: which WAL is read depends on the
/// verified base backups, see `super::wal_inventory`).
///
/// Any failed list page, or any transient store error while verifying (see
/// `verdict_on_error`), fails the whole collection: no inventory, so no
/// plan, so nothing deleted. A backup whose objects cannot be read for good
/// (oversized, refused) is recorded as invalid ([`InvalidKind::Unreadable`])
/// and the others are collected. At most `concurrency` backups (at least
/// one) are verified at a time.
pub async fn collect(
    store: &dyn ObjectStore,
    verifier: &dyn ManifestVerifier,
    concurrency: usize,
) -> Result<Inventory, StoreError> {
    let objects = store.list_all("").await?;
    let mut inventory = Inventory::from_listing(store.url(), objects);
    let complete: Vec<_> = inventory
        .backups
        .values()
        .filter(|e| e.is_complete())
        .map(|e| (e.id.clone(), e.objects.clone()))
        .collect();
    let verdicts: Vec<_> = futures::stream::iter(complete)
        .map(|(id, objects)| async move {
            let verdict = match verifier.verify(store, &id, &objects).await {
                Ok(verdict) => verdict,
                Err(e) => verdict_on_error(e)?,
            };
            Ok::<_, StoreError>((id, verdict))
        })
        .buffer_unordered(concurrency.max(1))
        .try_collect()
        .await?;
    for (id, verdict) in verdicts {
        inventory.set_verification(&id, verdict);
    }
    super::wal_inventory::verify_wal(store, verifier, &mut inventory, concurrency).await?;
    Ok(inventory)
}

/// A delete that failed; the backup's later objects were not attempted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeleteFailure {
    /// The backup id.
    pub backup: String,
    /// The object whose delete failed.
    pub key: String,
    /// The store's error message.
    pub error: String,
    /// Whether a later run may succeed ([`StoreError::is_transient`]).
    pub transient: bool,
    /// This backup's objects left in place because an earlier one failed.
    pub not_attempted: Vec<String>,
}

/// What [`apply`] did to one store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ApplyReport {
    /// The store's URL.
    pub store: String,
    /// Whether this was a dry run (nothing deleted).
    pub dry_run: bool,
    /// Set when nothing was attempted, and why.
    pub refused: Option<String>,
    /// Keys deleted, in plan order.
    pub deleted: Vec<String>,
    /// Already missing when deleted (an earlier run got there): counts as done.
    pub already_gone: Vec<String>,
    /// Dry run only: what would have been deleted, in order.
    pub would_delete: Vec<String>,
    /// One entry per backup whose deletion stopped at a failed delete.
    pub failures: Vec<DeleteFailure>,
}

impl ApplyReport {
    /// Every planned delete is done (or was already done); false for dry runs.
    pub fn is_complete(&self) -> bool {
        !self.dry_run && self.refused.is_none() && self.failures.is_empty()
    }

    /// Whether `backup` (as `BackupId::to_string`) was entirely removed.
    pub fn removed(&self, plan: &Plan, backup: &str) -> bool {
        if self.dry_run || self.refused.is_some() {
            return false;
        }
        plan.deletes
            .iter()
            .any(|op| op.backup.to_string() == backup)
            && !self.failures.iter().any(|f| f.backup == backup)
    }
}

impl fmt::Display for ApplyReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(why) = &self.refused {
            return writeln!(f, "{}: nothing deleted: {why}", self.store);
        }
        if self.dry_run {
            writeln!(
                f,
                "{}: dry run, would delete {} objects:",
                self.store,
                self.would_delete.len()
            )?;
            for key in &self.would_delete {
                writeln!(f, "  {key}")?;
            }
            return Ok(());
        }
        writeln!(
            f,
            "{}: deleted {} objects, {} already gone, {} failures",
            self.store,
            self.deleted.len(),
            self.already_gone.len(),
            self.failures.len()
        )?;
        for fail in &self.failures {
            writeln!(
                f,
                "  FAILED {}: {} (left in place: {})",
                fail.key,
                fail.error,
                if fail.not_attempted.is_empty() {
                    "nothing else".to_string()
                } else {
                    fail.not_attempted.join(", ")
                }
            )?;
        }
        Ok(())
    }
}

#[derive(Default)]
struct Outcome {
    deleted: Vec<String>,
    already_gone: Vec<String>,
    failure: Option<DeleteFailure>,
}

/// Deletes `keys` in order, stopping at the first failure; `label` names
/// the backup (or WAL file) in the failure.
async fn delete_in_order(store: &dyn ObjectStore, label: &str, keys: &[String]) -> Outcome {
    let mut out = Outcome::default();
    for (i, key) in keys.iter().enumerate() {
        match store.delete(key).await {
            Ok(()) => out.deleted.push(key.clone()),
            Err(StoreError::NotFound { .. }) => out.already_gone.push(key.clone()),
            Err(e) => {
                // Stop here: deleting the data while the manifest (or its
                // signature) remains would leave a backup that looks complete
                // but cannot be restored.
                out.failure = Some(DeleteFailure {
                    backup: label.to_string(),
                    key: key.clone(),
                    transient: e.is_transient(),
                    error: e.to_string(),
                    not_attempted: keys[i + 1..].to_vec(),
                });
                break;
            }
        }
    }
    out
}

/// Performs the plan's deletes against `store` (nothing at all in a dry run,
/// or when the plan was made from another store's listing).
pub async fn apply(store: &dyn ObjectStore, plan: &Plan, dry_run: bool) -> ApplyReport {
    let url = store.url();
    let mut report = ApplyReport {
        store: url.clone(),
        dry_run,
        refused: None,
        deleted: Vec::new(),
        already_gone: Vec::new(),
        would_delete: Vec::new(),
        failures: Vec::new(),
    };
    if plan.store != url {
        report.refused = Some(format!(
            "the plan was made from a listing of {}, not of this store",
            plan.store
        ));
        return report;
    }
    if dry_run {
        report.would_delete = plan.deletes.iter().flat_map(|op| op.keys.clone()).collect();
        let wal = plan.wal_deletes.iter().flat_map(|op| op.keys.clone());
        report.would_delete.extend(wal);
        return report;
    }
    let ops = plan
        .deletes
        .iter()
        .map(|op| (op.backup.to_string(), op.keys.clone()));
    delete_all(store, ops.collect(), &mut report).await;
    // WAL after the base backups, and none of a cluster one of whose base
    // backup deletes failed: that base backup is still complete, and the
    // next run must find its WAL.
    let failed: HashSet<ClusterKey> = plan
        .deletes
        .iter()
        .filter(|op| {
            report
                .failures
                .iter()
                .any(|f| f.backup == op.backup.to_string())
        })
        .filter_map(|op| ClusterKey::of_backup(&op.backup))
        .collect();
    let wal = plan
        .wal_deletes
        .iter()
        .filter(|op| !failed.contains(&op.cluster));
    let wal = wal.map(|op| (op.file.clone(), op.keys.clone()));
    delete_all(store, wal.collect(), &mut report).await;
    report
}

/// Runs `ops` (label, keys in order), several at a time, into `report` in
/// the order given.
async fn delete_all(
    store: &dyn ObjectStore,
    ops: Vec<(String, Vec<String>)>,
    report: &mut ApplyReport,
) {
    // Owned items: a closure taking borrowed ops makes this future not
    // provably `Send` for every lifetime, which `#[async_trait]` callers
    // (the Lambda handler) require.
    let ops: Vec<(usize, (String, Vec<String>))> = ops.into_iter().enumerate().collect();
    let mut outcomes: Vec<(usize, Outcome)> = futures::stream::iter(ops)
        .map(|(i, (label, keys))| async move { (i, delete_in_order(store, &label, &keys).await) })
        .buffer_unordered(DELETE_CONCURRENCY)
        .collect()
        .await;
    // Report in plan order, whatever order the deletes finished in.
    outcomes.sort_by_key(|(i, _)| *i);
    for (_, o) in outcomes {
        report.deleted.extend(o.deleted);
        report.already_gone.extend(o.already_gone);
        report.failures.extend(o.failure);
    }
}

/// Everything one pruning run produced.
#[derive(Debug, Clone)]
pub struct Pruned {
    /// What the store held.
    pub inventory: Inventory,
    /// The plan made from it.
    pub plan: Plan,
    /// What applying the plan did.
    pub applied: ApplyReport,
}

/// Collect (verifying `concurrency` backups at a time), plan and apply for
/// one store. An `Err` means the listing or a verification failed, and
/// nothing was deleted.
pub async fn prune(
    store: &dyn ObjectStore,
    verifier: &dyn ManifestVerifier,
    policies: &PolicySet,
    now: DateTime<Utc>,
    dry_run: bool,
    concurrency: usize,
) -> Result<Pruned, StoreError> {
    let inventory = collect(store, verifier, concurrency).await?;
    let plan = plan(&inventory, policies, now);
    let applied = apply(store, &plan, dry_run).await;
    Ok(Pruned {
        inventory,
        plan,
        applied,
    })
}

#[cfg(test)]
mod tests {
    use chrono::{TimeDelta, TimeZone, Utc};

    use super::*;
    use crate::retention::testutil::{Kind, MarkerVerifier, MemStore, bid, populate};

    #[tokio::test]
    async fn an_oversized_manifest_is_reported_and_the_rest_is_collected() {
        let now = Utc.with_ymd_and_hms(2026, 11, 27, 4, 0, 0).unwrap();
        let history: Vec<_> = (0..4)
            .map(|i| {
                (
                    bid("feat-x", "app", now - TimeDelta::days(4 - i), i as u32),
                    Kind::ok(),
                )
            })
            .collect();
        let store = MemStore::new("gs://p");
        populate(&store, &history);
        let bad = &history[1].0;
        store.insert(&bad.manifest_key(), vec![b' '; 17 << 20]);
        let inv = collect(&store, &MarkerVerifier, DEFAULT_VERIFY_CONCURRENCY)
            .await
            .expect("one oversized manifest must not abort the collection");
        let entry = inv.get(bad).unwrap();
        assert!(
            matches!(entry.verification, Verification::Invalid { .. }),
            "{:?}",
            entry.verification
        );
        let verified = inv.backups.values().filter(|e| e.is_verified()).count();
        assert_eq!(verified, 3);
        // Invalid backups are evidence: the plan holds it, the audit says so.
        let policies = PolicySet::default();
        let (p, _, report) =
            crate::retention::plan_and_audit(&policies, now, ("gcs", &inv), None, &[]);
        assert!(!p.decision(bad).unwrap().decision.is_delete(), "{p}");
        let found: Vec<_> = report.with_code("unreadable_backup").collect();
        assert_eq!(found.len(), 1, "{report}");
        assert_eq!(found[0].severity, crate::retention::Severity::Critical);
        assert!(
            found[0].message.contains("larger than"),
            "{}",
            found[0].message
        );
    }

    #[tokio::test]
    async fn the_inventory_does_not_depend_on_the_concurrency() {
        let now = Utc.with_ymd_and_hms(2026, 11, 27, 4, 0, 0).unwrap();
        let history: Vec<_> = (0..40)
            .map(|i| {
                let kind = if i % 7 == 3 {
                    Kind::Invalid(InvalidKind::BadSignature)
                } else {
                    Kind::ok()
                };
                (
                    bid("feat-x", "app", now - TimeDelta::hours(i), i as u32),
                    kind,
                )
            })
            .collect();
        let store = MemStore::new("gs://p");
        populate(&store, &history);
        let one = collect(&store, &MarkerVerifier, 1).await.unwrap();
        // 0 is taken as 1, never as "no verification at all".
        for n in [0, 3, DEFAULT_VERIFY_CONCURRENCY, 256] {
            assert_eq!(
                collect(&store, &MarkerVerifier, n).await.unwrap(),
                one,
                "{n}"
            );
        }
        assert_eq!(one.backups.values().filter(|e| e.is_verified()).count(), 34);
    }

    #[tokio::test]
    async fn a_transient_read_failure_still_aborts() {
        let now = Utc.with_ymd_and_hms(2026, 11, 27, 4, 0, 0).unwrap();
        let id = bid("feat-x", "app", now, 1);
        let store = MemStore::new("gs://p");
        populate(&store, &[(id.clone(), Kind::ok())]);
        store.fail_gets([id.manifest_key()]);
        let err = collect(&store, &MarkerVerifier, DEFAULT_VERIFY_CONCURRENCY)
            .await
            .unwrap_err();
        assert!(err.is_transient(), "{err}");
    }
}
