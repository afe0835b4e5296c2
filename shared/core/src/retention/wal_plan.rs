//! The WAL part of the plan: per cluster, which archived files to keep.
//!
//! Pure, like [`super::plan()`], and made after the backups' plan, since what
//! WAL is needed follows from which base backups are kept. The rules:
//!
//! 1. WAL is kept from the `start_wal` segment of the oldest kept verified
//!    base backup onward: a segment, partial or backup history file whose
//!    segment number is below the lowest `start_wal` of every kept base
//!    backup is deleted (manifest first, then its data objects). Recovery
//!    from a base backup never reads a segment below its `start_wal`, on
//!    any timeline, so this never deletes WAL a kept base backup needs. WAL
//!    above it is kept on every timeline (when in doubt, keep).
//! 2. Timeline history files (`.history`) are always kept: tiny, and
//!    needed to follow timelines.
//! 3. A cluster without a kept verified base backup keeps all its WAL; so
//!    does one whose kept base backups' positions do not parse or disagree
//!    on the segment size, and one with a base backup in progress (it needs
//!    WAL from a position not yet known).
//! 4. A file whose manifest failed verification is held (evidence) and
//!    reported, like an invalid backup.
//! 5. Data objects no manifest commits (a push killed or retried) are
//!    deleted once older than `wal_orphan_grace` by the listing's time (an
//!    object without a time is kept).
//! 6. In an abandoned (branch) namespace all WAL is deleted; a namespace no
//!    rule matches is never touched.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::inventory::{Inventory, SeriesKey};
use super::plan::{Decision, HoldReason, SeriesPlan};
use super::policy::PolicySet;
use super::wal_inventory::{BaseNeed, ClusterKey, ClusterWal, WalEntry, WalVerification};
use crate::naming::cluster_database;
use crate::wal::{WalFile, WalFileKind};

/// Why WAL objects are deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WalDeleteReason {
    /// Below the oldest kept base backup's `start_wal`: no kept base backup
    /// needs it.
    BeforeOldestBaseBackup,
    /// A data object no manifest commits, older than `wal_orphan_grace`.
    Uncommitted,
    /// The namespace was abandoned.
    Abandoned,
}

/// What the plan does with one archived file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum WalDecision {
    /// Kept.
    Keep {
        /// Why.
        reason: String,
    },
    /// All its objects are deleted.
    Delete {
        /// Why.
        reason: WalDeleteReason,
    },
    /// Left alone and reported (`invalid`, `no_rule`).
    Hold {
        /// Why.
        reason: HoldReason,
    },
}

/// One archived file's decision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WalFilePlan {
    /// `<namespace>/.wal/<system id>/<timeline>/<file>`.
    pub file: String,
    /// Segment, partial, backup or timeline history.
    pub kind: WalFileKind,
    /// What happens to it.
    pub decision: WalDecision,
    /// Its uncommitted data objects deleted this run (rule 5).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub uncommitted: Vec<String>,
}

/// One cluster's WAL plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WalPlan {
    /// Namespace and cluster.
    pub cluster: ClusterKey,
    /// The matching rule's pattern; `None`: nothing touched.
    pub rule: Option<String>,
    /// The namespace was abandoned: all its WAL goes.
    pub abandoned: bool,
    /// The oldest kept verified base backup, if any.
    pub oldest_kept_base_backup: Option<String>,
    /// The first segment kept (its `start_wal`), when WAL is pruned.
    pub keep_from: Option<String>,
    /// Every file, by timeline and position.
    pub files: Vec<WalFilePlan>,
}

impl WalPlan {
    /// The plan for one file, by name.
    pub fn file(&self, name: &str) -> Option<&WalFilePlan> {
        self.files
            .iter()
            .find(|f| f.file.ends_with(&format!("/{name}")))
    }

    /// How many files have a decision matching `pred`.
    pub fn count(&self, pred: impl Fn(&WalDecision) -> bool) -> usize {
        self.files.iter().filter(|f| pred(&f.decision)).count()
    }
}

/// The objects of one WAL file to delete, in order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WalDeleteOp {
    /// The cluster (the executor skips a cluster whose base backup deletes
    /// failed).
    pub cluster: ClusterKey,
    /// `<namespace>/.wal/<system id>/<timeline>/<file>`.
    pub file: String,
    /// Why.
    pub reason: WalDeleteReason,
    /// Manifest first, then data objects.
    pub keys: Vec<String>,
}

/// From where a cluster's WAL is needed, or why all of it is kept.
enum Need {
    /// Keep segments from `start` (of `size`), for `from`'s sake.
    From {
        start: u64,
        size: u64,
        first: String,
        oldest: String,
    },
    /// Keep everything, for this reason.
    All(&'static str, Option<String>),
}

/// What the kept base backups of `series` need.
fn need(inv: &Inventory, series: Option<&SeriesPlan>) -> Need {
    let Some(series) = series else {
        return Need::All("no base backup", None);
    };
    let mut needs = Vec::new();
    for b in &series.backups {
        match &b.decision {
            Decision::Hold {
                reason: HoldReason::InProgress,
            } => return Need::All("a base backup is in progress", None),
            Decision::Keep { .. } => {
                let m = inv.get(&b.id).and_then(|e| e.manifest());
                match m.and_then(|m| BaseNeed::of(&b.id, m)) {
                    Some(n) => needs.push(n),
                    None => {
                        return Need::All("a kept base backup's WAL positions are unknown", None);
                    }
                }
            }
            _ => {}
        }
    }
    let oldest = series
        .backups
        .iter()
        .rev()
        .find(|b| matches!(b.decision, Decision::Keep { .. }))
        .map(|b| b.id.to_string());
    let Some(low) = needs.iter().min_by_key(|n| n.start) else {
        return Need::All("no kept verified base backup", None);
    };
    if needs.iter().any(|n| n.segment_size != low.segment_size) {
        return Need::All("kept base backups disagree on the WAL segment size", oldest);
    }
    Need::From {
        start: low.start,
        size: low.segment_size,
        first: WalFile::segment(low.timeline, low.start, low.segment_size).to_string(),
        oldest: oldest.unwrap_or_default(),
    }
}

/// The decision for one file (rules 1 to 4).
fn decide(entry: &WalEntry, need: &Need) -> WalDecision {
    if matches!(entry.verification, WalVerification::Invalid { .. }) {
        return WalDecision::Hold {
            reason: HoldReason::Invalid,
        };
    }
    let keep = |reason: String| WalDecision::Keep { reason };
    if entry.key.file.kind() == WalFileKind::TimelineHistory {
        return keep("timeline history: always kept".into());
    }
    match need {
        Need::All(why, _) => keep(format!("{why}: all WAL kept")),
        Need::From {
            start,
            size,
            first,
            oldest,
        } => match entry.key.file.segment_number(*size) {
            Some(s) if s < *start => WalDecision::Delete {
                reason: WalDeleteReason::BeforeOldestBaseBackup,
            },
            _ => keep(format!("at or after {first}, the start of {oldest}")),
        },
    }
}

/// Data objects of `entry` that no manifest commits, older than the grace
/// (rule 5). Only for a file whose manifest verified, or that has none.
fn uncommitted(entry: &WalEntry, policies: &PolicySet, now: DateTime<Utc>) -> Vec<String> {
    let committed = match (&entry.manifest, entry.committed_key()) {
        (None, _) => None,
        (Some(_), Some(key)) => Some(key),
        (Some(_), None) => return Vec::new(),
    };
    let cutoff = now - policies.wal_orphan_grace;
    entry
        .data
        .values()
        .filter(|m| Some(&m.key) != committed.as_ref())
        .filter(|m| m.updated.is_some_and(|t| t < cutoff))
        .map(|m| m.key.clone())
        .collect()
}

/// Plans one cluster: its file plans and delete operations.
fn plan_cluster(
    inv: &Inventory,
    cluster: &ClusterWal,
    series: &[SeriesPlan],
    policies: &PolicySet,
    now: DateTime<Utc>,
) -> (WalPlan, Vec<WalDeleteOp>) {
    let ns = &cluster.cluster.namespace;
    let rule = policies.rule_for(ns.as_str());
    let key = SeriesKey {
        namespace: ns.clone(),
        database: cluster_database(cluster.cluster.system_identifier),
    };
    let abandoned = series
        .iter()
        .any(|s| &s.series.namespace == ns && s.abandoned);
    let need = need(inv, series.iter().find(|s| s.series == key));
    let (mut files, mut deletes) = (Vec::new(), Vec::new());
    for entry in cluster.files.values() {
        let decision = match (rule, abandoned) {
            (None, _) => WalDecision::Hold {
                reason: HoldReason::NoRule,
            },
            (Some(_), true) => WalDecision::Delete {
                reason: WalDeleteReason::Abandoned,
            },
            (Some(_), false) => decide(entry, &need),
        };
        let mut op = |reason, keys: Vec<String>| {
            deletes.push(WalDeleteOp {
                cluster: cluster.cluster.clone(),
                file: entry.key.to_string(),
                reason,
                keys,
            })
        };
        let mut gone = Vec::new();
        match &decision {
            WalDecision::Delete { reason } => op(*reason, entry.deletion_order()),
            WalDecision::Keep { .. } => {
                gone = uncommitted(entry, policies, now);
                if !gone.is_empty() {
                    op(WalDeleteReason::Uncommitted, gone.clone());
                }
            }
            WalDecision::Hold { .. } => {}
        }
        files.push(WalFilePlan {
            file: entry.key.to_string(),
            kind: entry.key.file.kind(),
            decision,
            uncommitted: gone,
        });
    }
    let (oldest, keep_from) = match need {
        Need::From { first, oldest, .. } => (Some(oldest), Some(first)),
        Need::All(_, oldest) => (oldest, None),
    };
    let plan = WalPlan {
        cluster: cluster.cluster.clone(),
        rule: rule.map(|r| r.pattern.to_string()),
        abandoned: rule.is_some() && abandoned,
        oldest_kept_base_backup: oldest,
        keep_from: keep_from.filter(|_| rule.is_some() && !abandoned),
        files,
    };
    (plan, deletes)
}

/// Plans every cluster's WAL of `inv`, given the backups' series plans.
pub(super) fn plan_wal(
    inv: &Inventory,
    series: &[SeriesPlan],
    policies: &PolicySet,
    now: DateTime<Utc>,
) -> (Vec<WalPlan>, Vec<WalDeleteOp>) {
    let mut plans = Vec::new();
    let mut deletes = Vec::new();
    for cluster in inv.wal.values() {
        let (p, d) = plan_cluster(inv, cluster, series, policies, now);
        plans.push(p);
        deletes.extend(d);
    }
    (plans, deletes)
}

impl fmt::Display for WalPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let from = match (&self.keep_from, &self.rule, self.abandoned) {
            (_, None, _) => "no rule: nothing touched".to_string(),
            (_, Some(_), true) => "ABANDONED: all WAL deleted".to_string(),
            (Some(first), Some(_), false) => format!("kept from {first}"),
            (None, Some(_), false) => "all kept".to_string(),
        };
        writeln!(
            f,
            "WAL {} ({from}): keep {}, delete {}, hold {}",
            self.cluster,
            self.count(|d| matches!(d, WalDecision::Keep { .. })),
            self.count(|d| matches!(d, WalDecision::Delete { .. })),
            self.count(|d| matches!(d, WalDecision::Hold { .. })),
        )?;
        for file in &self.files {
            let name = file.file.rsplit('/').next().unwrap_or_default();
            match &file.decision {
                WalDecision::Keep { .. } => {}
                WalDecision::Delete { reason } => writeln!(f, "  delete {name}: {reason:?}")?,
                WalDecision::Hold { reason } => writeln!(f, "  hold   {name}: {reason:?}")?,
            }
            for key in &file.uncommitted {
                writeln!(f, "  delete {key}: uncommitted")?;
            }
        }
        Ok(())
    }
}
