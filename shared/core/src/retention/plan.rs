//! The plan: for every backup of one bucket, keep, delete or hold, and why.
//!
//! Pure and deterministic: same inventory, policies and clock, same plan.
//! The safety rules, each covered by a property test:
//!
//! 1. Only complete, signature-verified backups count toward keep rules.
//!    Junk (invalid, unverified or incomplete backups) can never push out
//!    good ones. A verified backup that shrank sharply against the previous
//!    one is marked *suspect* for the audit but still counts: excluding it
//!    would be unstable (once its predecessor is pruned the next small backup
//!    becomes suspect in turn, and after a legitimate purge only the newest
//!    backup would survive), while the older full-size backups stay kept by
//!    the weekly and monthly rules anyway.
//! 2. The newest verified backup of each series (namespace + database) is
//!    always kept, even when suspect, even when the policy would drop it.
//!    The one exception is an *abandoned* namespace: a *branch* namespace
//!    ([`PolicySet::is_branch`]) whose rule is not protected, has
//!    `abandon_after`, and whose newest live backup (complete in any
//!    verification state, or possibly in progress) is older than that. An
//!    abandoned namespace is removed entirely, as configured, since branch
//!    namespaces that stopped producing backups are exactly what has to go;
//!    any other namespace that went quiet keeps its newest verified backup
//!    whatever its age (a broken dump job must not end in no backup). Protected rules, and
//!    whatever rule applies to `production`, can never have `abandon_after`.
//! 3. Invalid backups (failed verification) are never deleted automatically,
//!    not even in an abandoned namespace: they are evidence (tampering, a
//!    plaintext leak, a broken signer) and the audit reports them until a
//!    person acts. Complete backups that were not checked are never deleted.
//! 4. Incomplete backups younger than `incomplete_grace` are left alone (a
//!    dump may be in progress); older ones are deleted as orphans.
//! 5. A namespace that no rule matches is never touched.
//! 6. Each backup's objects are deleted manifest first, then signature, then
//!    data, so that a half-deleted backup never looks complete.
//! 7. A verified backup dated (id or manifest `started_at`) more than
//!    [`PolicySet::max_clock_skew`] after the clock is *future-dated* (a dump
//!    host's clock is wrong): it does not count toward keep rules, is never
//!    the newest verified backup (so it neither takes the place of an honest
//!    one nor silences the staleness check), and is held, never deleted
//!    automatically, and reported. Being complete, it does keep its
//!    namespace from being abandoned (rule 2), which only ever deletes less.
//!
//! 8. Archived WAL follows the base backups this plan keeps (the rules are
//!    in [`super::wal_plan`]); recent WAL keeps a namespace from being
//!    abandoned, as a recent backup does.
//!
//! "Nothing is deleted when a listing failed" is enforced by construction: a
//! plan is made from an [`Inventory`], and [`super::collect`] returns none
//! when any page of the listing failed.

use std::collections::HashMap;
use std::fmt;

use chrono::{DateTime, TimeDelta, Utc};
use serde::Serialize;

use super::inventory::{BackupEntry, InvalidKind, Inventory, SeriesKey, Verification};
use super::policy::{NamespaceRule, PolicySet, RetentionPolicy, format_age};
use super::wal_plan::{WalDeleteOp, WalPlan, plan_wal};
use crate::manifest::Manifest;
use crate::naming::{BackupId, Namespace};

/// What is known about one backup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum BackupStatus {
    /// Complete, and its signed manifest verified.
    Verified,
    /// Verified, but much smaller than the previous verified backup.
    Suspect {
        /// What shrank, by how much, against which previous size.
        detail: String,
    },
    /// Complete, but failed verification: held as evidence.
    Invalid {
        /// Which check failed.
        kind: InvalidKind,
        /// The verifier's message.
        reason: String,
    },
    /// Validly signed, but dated (by its id or its manifest's `started_at`)
    /// more than the allowed clock skew after the plan's clock: a dump host's
    /// clock is wrong. Held, reported, and never the newest backup.
    Future {
        /// How far ahead of the clock it is dated, in seconds.
        ahead_seconds: i64,
    },
    /// Complete but not verified (no verifier ran).
    NotChecked,
    /// One or more of data, signature and manifest is missing.
    Incomplete {
        /// File names of the missing objects.
        missing: Vec<String>,
    },
}

impl BackupStatus {
    fn label(&self) -> String {
        match self {
            BackupStatus::Verified => "verified".into(),
            BackupStatus::Suspect { .. } => "suspect".into(),
            BackupStatus::Invalid { kind, .. } => format!("invalid ({kind})"),
            BackupStatus::Future { ahead_seconds } => format!(
                "future-dated (ahead by {})",
                format_age(TimeDelta::seconds(*ahead_seconds))
            ),
            BackupStatus::NotChecked => "not checked".into(),
            BackupStatus::Incomplete { missing } => {
                format!("incomplete (no {})", missing.join(", "))
            }
        }
    }

    /// Verified, suspect or not: the backup counts (future-dated ones do not).
    pub fn is_verified(&self) -> bool {
        matches!(self, BackupStatus::Verified | BackupStatus::Suspect { .. })
    }
}

/// Why a backup is deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DeleteReason {
    /// Not kept by any keep rule.
    Expired,
    /// The namespace was abandoned (see module docs).
    Abandoned,
    /// Incomplete and older than the grace period.
    Orphan,
}

/// Why a backup is neither kept by policy nor deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HoldReason {
    /// Incomplete but young: a dump may still be being written.
    InProgress,
    /// Failed verification: kept as evidence, reported.
    Invalid,
    /// Dated in the future beyond the allowed clock skew: reported.
    Future,
    /// Complete but not verified.
    NotVerified,
    /// No policy rule matches the namespace.
    NoRule,
}

/// What the plan does with one backup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Decision {
    /// Kept by policy.
    Keep {
        /// Every rule that keeps it (`newest verified`, `daily 2026-11-20`,
        /// ...).
        reasons: Vec<String>,
    },
    /// Deleted by [`super::apply`].
    Delete {
        /// Why it goes.
        reason: DeleteReason,
    },
    /// Left alone, and reported by the audit where it matters.
    Hold {
        /// Why it is left alone.
        reason: HoldReason,
    },
}

impl Decision {
    /// Whether the backup is to be deleted.
    pub fn is_delete(&self) -> bool {
        matches!(self, Decision::Delete { .. })
    }
}

fn id_string<S: serde::Serializer>(id: &BackupId, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(id)
}

/// One backup's status and decision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BackupPlan {
    /// The backup.
    #[serde(serialize_with = "id_string")]
    pub id: BackupId,
    /// What is known about it.
    #[serde(flatten)]
    pub status: BackupStatus,
    /// What the plan does with it.
    pub decision: Decision,
}

/// The plan for one series (namespace + database).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SeriesPlan {
    /// Namespace and database.
    pub series: SeriesKey,
    /// The matching rule's pattern; `None`: no rule, nothing touched.
    pub rule: Option<String>,
    /// Whether the matching rule is `protected`.
    pub protected: bool,
    /// Removed entirely (see module docs).
    pub abandoned: bool,
    /// Newest first.
    pub backups: Vec<BackupPlan>,
}

impl SeriesPlan {
    /// The newest backup that can be restored from, if any.
    pub fn newest_verified(&self) -> Option<&BackupPlan> {
        self.backups.iter().find(|b| b.status.is_verified())
    }
}

/// The objects of one backup to delete, in order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeleteOp {
    /// The backup whose objects these are.
    #[serde(serialize_with = "id_string")]
    pub backup: BackupId,
    /// Why it is deleted.
    pub reason: DeleteReason,
    /// Manifest, then signature, then data (only those that exist).
    pub keys: Vec<String>,
}

/// The plan for one bucket: a decision for every backup, and the deletes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Plan {
    /// The store the inventory was listed from; the executor refuses to
    /// apply the plan anywhere else.
    pub store: String,
    /// The clock the plan was made at (grace periods count from it).
    pub now: DateTime<Utc>,
    /// Every series of the bucket.
    pub series: Vec<SeriesPlan>,
    /// Oldest backup first.
    pub deletes: Vec<DeleteOp>,
    /// Every cluster's archived WAL.
    pub wal: Vec<WalPlan>,
    /// The WAL deletes, by cluster and position (applied after `deletes`).
    pub wal_deletes: Vec<WalDeleteOp>,
}

impl Plan {
    /// How many backups have a decision matching `pred`.
    pub fn count(&self, pred: impl Fn(&Decision) -> bool) -> usize {
        self.series
            .iter()
            .flat_map(|s| &s.backups)
            .filter(|b| pred(&b.decision))
            .count()
    }

    /// The decision for one backup.
    pub fn decision(&self, id: &BackupId) -> Option<&BackupPlan> {
        self.series
            .iter()
            .find(|s| s.series == SeriesKey::of(id))
            .and_then(|s| s.backups.iter().find(|b| &b.id == id))
    }
}

/// Plans one bucket. Plan each bucket of each cloud separately, with the same
/// policies: a replica may hold only some namespaces.
pub fn plan(inventory: &Inventory, policies: &PolicySet, now: DateTime<Utc>) -> Plan {
    let mut series_plans = Vec::new();
    let mut deletes = Vec::new();
    let all_series = inventory.series();
    let newest_live = newest_live(inventory, policies, now);
    for (key, entries) in &all_series {
        let rule = policies.rule_for(key.namespace.as_str());
        let abandoned = rule.is_some_and(|r| {
            is_abandoned(
                r,
                &key.namespace,
                newest_live.get(&key.namespace),
                policies,
                now,
            )
        });
        let policy = rule.map(|r| r.policy_for(&key.database));
        let backups = plan_series(entries, policy, abandoned, policies, now);
        for (b, entry) in backups.iter().zip(entries) {
            if let Decision::Delete { reason } = b.decision {
                deletes.push(DeleteOp {
                    backup: b.id.clone(),
                    reason,
                    keys: entry.objects.deletion_order(),
                });
            }
        }
        series_plans.push(SeriesPlan {
            series: key.clone(),
            rule: rule.map(|r| r.pattern.to_string()),
            protected: rule.is_some_and(|r| r.protected),
            abandoned,
            backups,
        });
    }
    deletes.sort_by(|a, b| a.backup.cmp(&b.backup));
    let (wal, wal_deletes) = plan_wal(inventory, &series_plans, policies, now);
    Plan {
        store: inventory.store.clone(),
        now,
        series: series_plans,
        deletes,
        wal,
        wal_deletes,
    }
}

/// The newest *live* backup time of each namespace (any database): complete
/// in any verification state, or incomplete but young enough to be in
/// progress. Anything recent, even an invalid backup, means the namespace is
/// alive; an orphan does not (it is deleted this run, and a later run must
/// reach the same verdict). One pass over the inventory for every
/// namespace, so that many branch namespaces do not make planning quadratic.
fn newest_live<'a>(
    inv: &'a Inventory,
    policies: &PolicySet,
    now: DateTime<Utc>,
) -> HashMap<&'a Namespace, DateTime<Utc>> {
    let grace_cutoff = now - policies.incomplete_grace;
    let mut newest = HashMap::new();
    for e in inv.backups.values() {
        if e.is_complete() || e.id.taken_at >= grace_cutoff {
            // Oldest first: a later entry of a namespace is never older.
            newest.insert(&e.id.namespace, e.id.taken_at);
        }
    }
    for (cluster, wal) in &inv.wal {
        let t = wal.files.values().filter_map(|f| f.time()).max();
        if let Some(t) = t {
            let slot = newest.entry(&cluster.namespace).or_insert(t);
            *slot = (*slot).max(t);
        }
    }
    newest
}

/// Whether a namespace is abandoned, from its newest live backup
/// ([`newest_live`]).
fn is_abandoned(
    rule: &NamespaceRule,
    ns: &Namespace,
    newest_live: Option<&DateTime<Utc>>,
    policies: &PolicySet,
    now: DateTime<Utc>,
) -> bool {
    let Some(after) = rule.abandon_after else {
        return false;
    };
    // Only a branch is ever abandoned: any other namespace that went quiet
    // (a broken dump job) keeps its newest verified backup.
    if rule.protected || !policies.is_branch(ns.as_str()) {
        return false;
    }
    newest_live.is_some_and(|&t| now - t > after)
}

fn total_rows(entry: &BackupEntry) -> u64 {
    entry.manifest().map_or(0, |m| m.tables.values().sum())
}

/// What a verified backup's status is against the previous verified backup
/// (chronologically): suspect when much smaller, verified otherwise.
fn verified_status(
    entry: &BackupEntry,
    manifest: &Manifest,
    previous: Option<&BackupEntry>,
    ratio: f64,
) -> BackupStatus {
    let Some((prev_entry, prev)) = previous.and_then(|p| p.manifest().map(|m| (p, m))) else {
        return BackupStatus::Verified;
    };
    if ratio <= 0.0 {
        return BackupStatus::Verified;
    }
    let shrunk = |now: u64, before: u64| before > 0 && (now as f64) < ratio * before as f64;
    let (rows, prev_rows) = (total_rows(entry), total_rows(prev_entry));
    if shrunk(manifest.plaintext_size, prev.plaintext_size) {
        BackupStatus::Suspect {
            detail: format!(
                "plaintext size {} bytes is under {:.0}% of the previous backup's {} bytes",
                manifest.plaintext_size,
                ratio * 100.0,
                prev.plaintext_size
            ),
        }
    } else if shrunk(rows, prev_rows) {
        BackupStatus::Suspect {
            detail: format!(
                "{rows} rows in total is under {:.0}% of the previous backup's {prev_rows}",
                ratio * 100.0
            ),
        }
    } else {
        BackupStatus::Verified
    }
}

/// The latest time a verified backup claims: its id's or its manifest's
/// start, whichever is later.
fn dated_at(entry: &BackupEntry, manifest: &Manifest) -> DateTime<Utc> {
    entry.id.taken_at.max(manifest.started_at)
}

/// Statuses, newest first, with suspects marked against the previous
/// verified backup (chronologically) and future-dated backups (beyond
/// `policies.max_clock_skew` after `now`) set apart: they neither count nor
/// serve as "previous".
fn statuses(
    entries: &[&BackupEntry],
    policies: &PolicySet,
    now: DateTime<Utc>,
) -> Vec<BackupStatus> {
    let mut out = vec![BackupStatus::NotChecked; entries.len()];
    let mut previous: Option<&BackupEntry> = None;
    let latest_honest = now + policies.max_clock_skew;
    for (i, entry) in entries.iter().enumerate().rev() {
        out[i] = if !entry.is_complete() {
            BackupStatus::Incomplete {
                missing: entry
                    .objects
                    .missing()
                    .into_iter()
                    .map(String::from)
                    .collect(),
            }
        } else {
            match &entry.verification {
                Verification::NotChecked => BackupStatus::NotChecked,
                Verification::Invalid { kind, reason } => BackupStatus::Invalid {
                    kind: *kind,
                    reason: reason.clone(),
                },
                Verification::Verified { manifest }
                    if dated_at(entry, manifest) > latest_honest =>
                {
                    BackupStatus::Future {
                        ahead_seconds: (dated_at(entry, manifest) - now).num_seconds(),
                    }
                }
                Verification::Verified { manifest } => {
                    let status =
                        verified_status(entry, manifest, previous, policies.shrink_alert_ratio);
                    previous = Some(entry);
                    status
                }
            }
        };
    }
    out
}

/// One backup's decision from its status and the keep reasons it earned.
fn decide(
    entry: &BackupEntry,
    status: &BackupStatus,
    reasons: Vec<String>,
    abandoned: bool,
    grace_cutoff: DateTime<Utc>,
) -> Decision {
    match status {
        BackupStatus::Invalid { .. } => Decision::Hold {
            reason: HoldReason::Invalid,
        },
        BackupStatus::Future { .. } => Decision::Hold {
            reason: HoldReason::Future,
        },
        BackupStatus::NotChecked => Decision::Hold {
            reason: HoldReason::NotVerified,
        },
        // In-progress wins over abandonment: a dump being written
        // right now means the namespace is not abandoned after all.
        BackupStatus::Incomplete { .. } if entry.id.taken_at >= grace_cutoff => Decision::Hold {
            reason: HoldReason::InProgress,
        },
        BackupStatus::Incomplete { .. } => Decision::Delete {
            reason: if abandoned {
                DeleteReason::Abandoned
            } else {
                DeleteReason::Orphan
            },
        },
        BackupStatus::Verified | BackupStatus::Suspect { .. } if abandoned => Decision::Delete {
            reason: DeleteReason::Abandoned,
        },
        BackupStatus::Verified | BackupStatus::Suspect { .. } if !reasons.is_empty() => {
            Decision::Keep { reasons }
        }
        BackupStatus::Verified | BackupStatus::Suspect { .. } => Decision::Delete {
            reason: DeleteReason::Expired,
        },
    }
}

fn plan_series(
    entries: &[&BackupEntry],
    policy: Option<&RetentionPolicy>,
    abandoned: bool,
    policies: &PolicySet,
    now: DateTime<Utc>,
) -> Vec<BackupPlan> {
    let statuses = statuses(entries, policies, now);
    let Some(policy) = policy else {
        return entries
            .iter()
            .zip(statuses)
            .map(|(e, status)| BackupPlan {
                id: e.id.clone(),
                status,
                decision: Decision::Hold {
                    reason: HoldReason::NoRule,
                },
            })
            .collect();
    };
    let counted: Vec<usize> = (0..entries.len())
        .filter(|&i| statuses[i].is_verified())
        .collect();
    let times: Vec<DateTime<Utc>> = counted.iter().map(|&i| entries[i].id.taken_at).collect();
    let mut reasons: Vec<Vec<String>> = vec![Vec::new(); entries.len()];
    for (&i, r) in counted.iter().zip(policy.apply(&times)) {
        reasons[i] = r.iter().map(ToString::to_string).collect();
    }
    let newest_verified = statuses.iter().position(BackupStatus::is_verified);
    if let Some(i) = newest_verified {
        reasons[i].insert(0, "newest verified".into());
    }
    let grace_cutoff = now - policies.incomplete_grace;
    entries
        .iter()
        .zip(statuses)
        .zip(reasons)
        .map(|((entry, status), reasons)| {
            let decision = decide(entry, &status, reasons, abandoned, grace_cutoff);
            BackupPlan {
                id: entry.id.clone(),
                status,
                decision,
            }
        })
        .collect()
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let keys: usize = self.deletes.iter().map(|d| d.keys.len()).sum();
        writeln!(
            f,
            "retention plan for {} at {}: keep {}, delete {} ({} objects), hold {}",
            self.store,
            self.now.format("%Y-%m-%dT%H:%M:%SZ"),
            self.count(|d| matches!(d, Decision::Keep { .. })),
            self.count(Decision::is_delete),
            keys,
            self.count(|d| matches!(d, Decision::Hold { .. })),
        )?;
        for s in &self.series {
            let rule = match &s.rule {
                Some(r) => format!("rule {r:?}"),
                None => "no rule: nothing touched".into(),
            };
            let flags = [(s.protected, ", protected"), (s.abandoned, ", ABANDONED")]
                .iter()
                .filter(|(on, _)| *on)
                .map(|(_, t)| *t)
                .collect::<String>();
            writeln!(f, "{} ({rule}{flags})", s.series)?;
            for b in &s.backups {
                let (action, why) = match &b.decision {
                    Decision::Keep { reasons } => ("keep", reasons.join(", ")),
                    Decision::Delete { reason } => (
                        "delete",
                        match reason {
                            DeleteReason::Expired => "not kept by policy".to_string(),
                            DeleteReason::Abandoned => "namespace abandoned".to_string(),
                            DeleteReason::Orphan => "orphaned: incomplete past grace".to_string(),
                        },
                    ),
                    Decision::Hold { reason } => (
                        "hold",
                        match reason {
                            HoldReason::InProgress => "may be in progress".to_string(),
                            HoldReason::Invalid => {
                                "evidence: not deleted automatically".to_string()
                            }
                            HoldReason::Future => {
                                "future-dated: not deleted automatically".to_string()
                            }
                            HoldReason::NotVerified => "not verified".to_string(),
                            HoldReason::NoRule => "no rule".to_string(),
                        },
                    ),
                };
                writeln!(
                    f,
                    "  {action:<6} {}  {}: {why}",
                    b.id.stamp(),
                    b.status.label()
                )?;
            }
        }
        for w in &self.wal {
            write!(f, "{w}")?;
        }
        Ok(())
    }
}
