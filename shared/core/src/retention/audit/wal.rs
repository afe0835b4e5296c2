//! The audit of the WAL archive, per cloud and cluster: files that do not
//! verify, gaps in the WAL a kept base backup needs, base backups whose own
//! WAL is missing, a stale archive, the point-in-time recovery window,
//! uncommitted data objects, and the two clouds against each other.
//!
//! Timelines are followed without reading the (encrypted) `.history`
//! files: from a base backup on timeline T, a segment counts as archived
//! when it is on T or on any later timeline whose history file is in the
//! archive. A promotion at segment N leaves T's segments up to N-1 (and
//! N as a `.partial`) and the new timeline's from N on, so a switch is
//! not a gap; a later timeline whose history file is missing is not
//! followed (recovery could not follow it either).

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};

use super::checks::{Removal, quiet_severity, removal_of, ts};
use super::{Audit, Finding, Severity};
use crate::naming::cluster_database;
use crate::retention::execute::ApplyReport;
use crate::retention::inventory::{Inventory, SeriesKey};
use crate::retention::plan::{Decision, Plan};
use crate::retention::policy::{format_age, format_duration};
use crate::retention::wal_inventory::{BaseNeed, ClusterKey, ClusterWal, WalVerification};
use crate::retention::wal_plan::{WalDecision, WalPlan};
use crate::wal::{WalFile, WalFileKind};

/// Usable segments by number: the timeline they are on, and when archived.
type Covered = BTreeMap<u64, (u32, DateTime<Utc>)>;

/// The segments that recovery from timeline `timeline` can use: verified
/// segments on it and on later timelines with a verified `.history` file.
fn covered(cw: &ClusterWal, timeline: u32, size: u64) -> Covered {
    let verified = || cw.files.values().filter(|e| e.manifest().is_some());
    let followed: BTreeSet<u32> = verified()
        .filter(|e| e.key.file.kind() == WalFileKind::TimelineHistory)
        .map(|e| e.key.file.timeline())
        .filter(|t| *t > timeline)
        .chain([timeline])
        .collect();
    let mut out = Covered::new();
    for e in verified().filter(|e| e.key.file.is_segment()) {
        let (tli, at) = (e.key.file.timeline(), e.manifest().map(|m| m.archived_at));
        if let (true, Some(seg), Some(at)) =
            (followed.contains(&tli), e.key.file.segment_number(size), at)
        {
            let slot = out.entry(seg).or_insert((tli, at));
            *slot = (*slot).max((tli, at));
        }
    }
    out
}

/// The first segment number from `from` to `to` (inclusive) not in `c`.
fn first_missing(c: &Covered, from: u64, to: u64) -> Option<u64> {
    let mut expected = from;
    for &seg in c.range(from..=to).map(|(s, _)| s) {
        if seg != expected {
            return Some(expected);
        }
        expected = seg + 1;
    }
    (expected <= to).then_some(expected)
}

/// The name of segment `seg` on the timeline in effect there: the latest
/// one with a segment at or below it.
fn segment_name(c: &Covered, need: &BaseNeed, seg: u64) -> String {
    let tli = c
        .range(..seg)
        .next_back()
        .map_or(need.timeline, |(_, (t, _))| *t);
    WalFile::segment(tli, seg, need.segment_size).to_string()
}

/// The cluster's kept base backups (oldest first) and what they need;
/// `Err` names a kept base backup whose positions do not parse.
fn kept_needs(inv: &Inventory, plan: &Plan, cluster: &ClusterKey) -> Vec<Result<BaseNeed, String>> {
    let key = SeriesKey {
        namespace: cluster.namespace.clone(),
        database: cluster_database(cluster.system_identifier),
    };
    let Some(series) = plan.series.iter().find(|s| s.series == key) else {
        return Vec::new();
    };
    series
        .backups
        .iter()
        .rev()
        .filter(|b| matches!(b.decision, Decision::Keep { .. }))
        .map(|b| {
            let m = inv.get(&b.id).and_then(|e| e.manifest());
            m.and_then(|m| BaseNeed::of(&b.id, m))
                .ok_or_else(|| b.id.to_string())
        })
        .collect()
}

impl Audit<'_> {
    /// Every cluster's WAL in one cloud.
    pub(super) fn wal(
        &mut self,
        cloud: &str,
        inv: &Inventory,
        plan: &Plan,
        applied: Option<&ApplyReport>,
        is_replica: bool,
    ) {
        for wp in &plan.wal {
            let Some(cw) = inv.wal.get(&wp.cluster) else {
                continue;
            };
            let rule = self.policies.rule_for(wp.cluster.namespace.as_str());
            let expected_here = !is_replica || rule.is_some_and(|r| r.replicated);
            self.wal_files(cloud, cw, wp, applied);
            if wp.rule.is_none() || wp.abandoned || !expected_here {
                continue;
            }
            let needs = kept_needs(inv, plan, &wp.cluster);
            self.wal_needs(cloud, cw, &needs, is_replica);
            self.wal_stale(cloud, cw);
            self.pitr_window(cloud, inv, cw, &needs);
        }
    }

    /// Files that do not verify, and uncommitted data objects.
    fn wal_files(
        &mut self,
        cloud: &str,
        cw: &ClusterWal,
        wp: &WalPlan,
        applied: Option<&ApplyReport>,
    ) {
        let ns = cw.cluster.namespace.as_str();
        for (e, fp) in cw.files.values().zip(&wp.files) {
            if let WalVerification::Invalid { kind, reason } = &e.verification {
                self.findings.push(
                    Finding::new(
                        Severity::Critical,
                        kind.code(),
                        format!(
                            "{} failed verification: {reason}. It is not counted as archived and not deleted automatically; investigate, then delete it by hand",
                            e.key
                        ),
                    )
                    .ns(ns)
                    .cloud(cloud)
                    .subject(&e.key),
                );
            }
            let committed = e.committed_key();
            let pending = match &e.manifest {
                None => "no manifest commits it (a push still writing, or killed)",
                Some(_) if committed.is_some() => {
                    "the manifest commits another copy (a retried push)"
                }
                Some(_) => continue,
            };
            for m in e
                .data
                .values()
                .filter(|m| Some(&m.key) != committed.as_ref())
            {
                let fate = if fp.uncommitted.contains(&m.key) {
                    match removal_of(applied, &fp.file) {
                        Removal::Removed => "deleted by this run".to_string(),
                        Removal::DryRun => "would be deleted (dry run)".to_string(),
                        Removal::NotApplied => "to be deleted (plan not applied)".to_string(),
                        Removal::Failed(why) => format!("still present: {why}"),
                    }
                } else {
                    format!(
                        "left alone until older than {}",
                        format_duration(self.policies.wal_orphan_grace)
                    )
                };
                self.findings.push(
                    Finding::new(
                        Severity::Info,
                        "wal_uncommitted",
                        format!("{} ({} bytes): {pending}: {fate}", m.key, m.size),
                    )
                    .ns(ns)
                    .cloud(cloud)
                    .subject(&m.key),
                );
            }
        }
    }

    /// `wal_gap` and `base_backup_without_wal` for the kept base backups.
    fn wal_needs(
        &mut self,
        cloud: &str,
        cw: &ClusterWal,
        needs: &[Result<BaseNeed, String>],
        is_replica: bool,
    ) {
        let ns = cw.cluster.namespace.as_str();
        let mut gaps_checked = BTreeSet::new();
        for need in needs {
            let need = match need {
                Ok(n) => n,
                Err(id) => {
                    self.findings.push(
                        Finding::new(
                            Severity::Critical,
                            "base_backup_without_wal",
                            format!("{id}: its signed manifest's WAL positions (start_wal, start_lsn, wal_segment_size) do not parse or disagree, so the WAL it needs is unknown: all of the cluster's WAL is kept; check the base backup tool"),
                        )
                        .ns(ns)
                        .cloud(cloud)
                        .subject(id),
                    );
                    continue;
                }
            };
            let c = covered(cw, need.timeline, need.segment_size);
            self.own_wal(cloud, ns, &c, need, is_replica);
            // Base backups are oldest first: on one timeline, the first
            // one's range holds every later one's.
            if gaps_checked.insert((need.timeline, need.segment_size)) {
                self.gap(cloud, ns, &c, need, is_replica);
            }
        }
    }

    /// A base backup whose start_wal..stop_wal are not all archived.
    fn own_wal(&mut self, cloud: &str, ns: &str, c: &Covered, need: &BaseNeed, is_replica: bool) {
        let Some(missing) = first_missing(c, need.start, need.stop) else {
            return;
        };
        // In the replica, WAL may still be on its way.
        if is_replica && self.now - need.id.taken_at <= self.policies.replica_grace {
            return;
        }
        self.findings.push(
            Finding::new(
                Severity::Critical,
                "base_backup_without_wal",
                format!(
                    "{}: WAL segment {} (between its start_wal {} and stop_wal {}) is not archived in {cloud}: this base backup cannot be restored to a consistent state. Check archive_command (wal-push), and take a new base backup",
                    need.id,
                    segment_name(c, need, missing),
                    WalFile::segment(need.timeline, need.start, need.segment_size),
                    WalFile::segment(need.timeline, need.stop, need.segment_size),
                ),
            )
            .ns(ns)
            .cloud(cloud)
            .subject(&need.id),
        );
    }

    /// The first segment missing between a base backup's start and the
    /// newest archived segment of its timelines.
    fn gap(&mut self, cloud: &str, ns: &str, c: &Covered, need: &BaseNeed, is_replica: bool) {
        let Some((&newest, _)) = c.last_key_value() else {
            return;
        };
        let Some(missing) = first_missing(c, need.start, newest) else {
            return;
        };
        // The segment after the gap, archived recently: in the replica the
        // missing one may still be being copied.
        let after = c.range(missing..).next().map(|(_, (_, at))| *at);
        let recent = after.is_some_and(|at| self.now - at <= self.policies.replica_grace);
        let severity = if is_replica && recent {
            Severity::Warning
        } else {
            Severity::Critical
        };
        let holes = (need.start..=newest).filter(|s| !c.contains_key(s)).count();
        self.findings.push(
            Finding::new(
                severity,
                "wal_gap",
                format!(
                    "WAL segment {} is missing from {cloud} ({holes} segments missing between {} and {}): recovery from {} and older base backups stops before it. Check archive_command (wal-push) for that segment; if it is lost, take a new base backup now",
                    segment_name(c, need, missing),
                    WalFile::segment(need.timeline, need.start, need.segment_size),
                    segment_name(c, need, newest),
                    need.id,
                ),
            )
            .ns(ns)
            .cloud(cloud)
            .subject(segment_name(c, need, missing)),
        );
    }

    /// The newest verified WAL of a cluster older than `wal_stale_after`.
    fn wal_stale(&mut self, cloud: &str, cw: &ClusterWal) {
        let ns = cw.cluster.namespace.as_str();
        let checked = cw
            .files
            .values()
            .any(|e| !matches!(e.verification, WalVerification::NotChecked));
        let Some(rule) = self.policies.rule_for(ns).filter(|_| checked) else {
            return;
        };
        let limit = self.policies.wal_stale_after;
        let newest = cw.newest_archived().and_then(|e| e.manifest());
        let why = match newest {
            None => "has no verified archived WAL".to_string(),
            Some(m) if self.now - m.archived_at > limit => format!(
                "last archived WAL {} {} ago ({}), more than the {} allowed (wal_stale_after)",
                m.file,
                format_age(self.now - m.archived_at),
                ts(m.archived_at),
                format_duration(limit)
            ),
            Some(_) => return,
        };
        self.findings.push(
            Finding::new(
                quiet_severity(self.policies, rule, ns),
                "wal_archive_stale",
                format!(
                    "{} {why} in {cloud}: point-in-time recovery cannot reach past it. Check archive_command (wal-push) in the server's log, and archive_timeout",
                    cw.cluster
                ),
            )
            .ns(ns)
            .cloud(cloud),
        );
    }

    /// The recoverable window: from the oldest kept base backup's end to
    /// the newest archived WAL.
    fn pitr_window(
        &mut self,
        cloud: &str,
        inv: &Inventory,
        cw: &ClusterWal,
        needs: &[Result<BaseNeed, String>],
    ) {
        let ns = cw.cluster.namespace.as_str();
        let oldest = needs.iter().flatten().next();
        let earliest = oldest
            .and_then(|n| inv.get(&n.id))
            .and_then(|e| e.manifest())
            .map(|m| m.finished_at);
        let latest = cw
            .newest_archived()
            .and_then(|e| e.manifest())
            .map(|m| m.archived_at);
        let (severity, message) = match (oldest, earliest, latest) {
            (Some(n), Some(from), Some(to)) => (
                Severity::Info,
                format!(
                    "{} in {cloud}: point-in-time recovery from {} to {} (from {}, then archived WAL)",
                    cw.cluster,
                    ts(from),
                    ts(to),
                    n.id
                ),
            ),
            _ => (
                Severity::Warning,
                format!(
                    "{} in {cloud}: WAL is archived but there is no kept verified base backup with its WAL: no point-in-time recovery is possible; take a base backup",
                    cw.cluster
                ),
            ),
        };
        self.findings.push(
            Finding::new(severity, "pitr_window", message)
                .ns(ns)
                .cloud(cloud),
        );
    }

    /// Committed WAL files of replicated namespaces that the primary keeps,
    /// against the replica: missing (or pending) there, or different.
    pub(super) fn wal_parity(
        &mut self,
        (primary, pinv): &(Plan, &Inventory),
        (_, rinv): &(Plan, &Inventory),
        (pc, rc): (&str, &str),
    ) {
        let mut found = Vec::new();
        for (wp, cw) in primary
            .wal
            .iter()
            .filter_map(|wp| pinv.wal.get(&wp.cluster).map(|c| (wp, c)))
        {
            let replicated = self
                .policies
                .rule_for(cw.cluster.namespace.as_str())
                .is_some_and(|r| r.replicated);
            if !replicated {
                continue;
            }
            let theirs = rinv.wal.get(&cw.cluster);
            for (slot, e) in &cw.files {
                let (Some(m), Some(fp)) = (e.manifest(), wp.file(e.key.file.name())) else {
                    continue;
                };
                if matches!(fp.decision, WalDecision::Delete { .. }) {
                    continue;
                }
                let copy = theirs.and_then(|t| t.files.get(slot));
                let data = copy.and_then(|c| c.data.values().find(|d| d.key == m.data_key(&e.key)));
                let what = e.key.to_string();
                match (copy.and_then(|c| c.manifest.as_ref()), data) {
                    (Some(_), Some(d)) if d.size == m.ciphertext.size => {}
                    (Some(_), Some(d)) => found.push(
                        Finding::new(
                            Severity::Critical,
                            "wal_replica_mismatch",
                            format!("{what}: the data object is {} bytes in {rc} but the signed manifest (and {pc}) say {}", d.size, m.ciphertext.size),
                        )
                        .cloud(rc)
                        .subject(&what),
                    ),
                    _ => found.push(self.replica_lag(
                        &what,
                        m.archived_at,
                        ("wal_missing_replica", "wal_replica_pending", "archived"),
                        (pc, rc),
                    )),
                }
            }
            for f in found.iter_mut() {
                f.namespace
                    .get_or_insert_with(|| cw.cluster.namespace.to_string());
            }
        }
        self.findings.extend(found);
    }
}
