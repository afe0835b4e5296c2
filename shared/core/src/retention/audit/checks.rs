//! The audit's checks: the methods of [`Audit`] that turn an inventory, its
//! plan and what applying it did into findings.
//!
//! One method per concern, each pushing findings in a fixed order (the sort
//! in [`super::audit()`] is stable, so that order is part of the report): per
//! cloud ([`Audit::cloud`], which drives the per-series and per-backup
//! checks), staleness, single backups, parity between the two clouds, and
//! restore drills. Kept apart from the report's types so that the types can be
//! read without wading through the checks.

use std::collections::{BTreeSet, HashSet};

use chrono::{DateTime, TimeDelta, Utc};

use super::{
    Audit, CloudInput, CloudSummary, Finding, SeriesSummary, Severity, lifecycle_findings,
};
use crate::drill::DrillRecord;
use crate::naming::BackupId;
use crate::retention::execute::ApplyReport;
use crate::retention::inventory::{BackupEntry, Inventory, SeriesKey};
use crate::retention::plan::{
    BackupPlan, BackupStatus, Decision, DeleteReason, HoldReason, Plan, SeriesPlan, plan,
};
use crate::retention::policy::{NamespaceRule, PolicySet, format_age, format_duration};

/// The finding codes of one kind of drill.
struct DrillCodes {
    /// Drills of base backups (point-in-time recovery).
    pitr: bool,
    none: &'static str,
    stale: &'static str,
    failed: &'static str,
    what: &'static str,
}

const DUMP_DRILLS: DrillCodes = DrillCodes {
    pitr: false,
    none: "no_restore_drill",
    stale: "restore_drill_stale",
    failed: "restore_drill_failed",
    what: "restore drill",
};

/// A cluster series never drilled is as stale as one drilled long ago.
const PITR_DRILLS: DrillCodes = DrillCodes {
    pitr: true,
    none: "pitr_drill_stale",
    stale: "pitr_drill_stale",
    failed: "pitr_drill_failed",
    what: "point-in-time recovery drill",
};

/// Whether a drill record is of a base backup (`restore-cluster`).
fn is_pitr(d: &DrillRecord) -> bool {
    d.backup_id
        .parse::<BackupId>()
        .is_ok_and(|id| id.system_identifier().is_some())
}

pub(super) enum Removal {
    Removed,
    DryRun,
    NotApplied,
    Failed(String),
}

fn removal(applied: Option<&ApplyReport>, id: &BackupId) -> Removal {
    removal_of(applied, &id.to_string())
}

/// What became of the deletes labelled `key` (a backup id, or a WAL file
/// as `WalKey` prints it) in `applied`.
pub(super) fn removal_of(applied: Option<&ApplyReport>, key: &str) -> Removal {
    let Some(a) = applied else {
        return Removal::NotApplied;
    };
    if a.dry_run {
        return Removal::DryRun;
    }
    if let Some(why) = &a.refused {
        return Removal::Failed(why.clone());
    }
    match a.failures.iter().find(|f| f.backup == key) {
        Some(f) => Removal::Failed(format!("deleting {} failed: {}", f.key, f.error)),
        None => Removal::Removed,
    }
}

/// What became of a backup the plan deletes, as the end of a message.
fn fate(applied: Option<&ApplyReport>, id: &BackupId, reason: DeleteReason) -> String {
    match removal(applied, id) {
        Removal::Removed => "deleted by this run".to_string(),
        Removal::DryRun => format!("would be deleted ({}; dry run)", reason_label(reason)),
        Removal::NotApplied => "to be deleted (plan not applied)".to_string(),
        Removal::Failed(e) => format!("still present: {e}"),
    }
}

fn reason_label(reason: DeleteReason) -> &'static str {
    match reason {
        DeleteReason::Expired => "expired",
        DeleteReason::Abandoned => "namespace abandoned",
        DeleteReason::Orphan => "orphan",
    }
}

fn protected_severity(rule: Option<&NamespaceRule>) -> Severity {
    if rule.is_some_and(|r| r.protected) {
        Severity::Critical
    } else {
        Severity::Warning
    }
}

/// How bad a namespace without a fresh backup is: critical unless it is a
/// branch namespace (quiet is what a finished branch does). A protected
/// namespace is critical even if a branch pattern matches it.
pub(super) fn quiet_severity(policies: &PolicySet, rule: &NamespaceRule, ns: &str) -> Severity {
    if rule.protected || !policies.is_branch(ns) {
        Severity::Critical
    } else {
        Severity::Warning
    }
}

pub(super) fn ts(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// Scopes a finding to one backup: its namespace, the cloud, the backup id.
fn about_backup(f: Finding, cloud: &str, id: &BackupId) -> Finding {
    f.ns(id.namespace.as_str()).cloud(cloud).subject(id)
}

/// The backups `plan` deletes, for lookups by id: searching the plan's
/// series for each backup ([`Plan::decision`]) made the parity checks
/// quadratic in the size of a series.
fn deleted_by(plan: &Plan) -> HashSet<&BackupId> {
    plan.series
        .iter()
        .flat_map(|s| &s.backups)
        .filter(|b| b.decision.is_delete())
        .map(|b| &b.id)
        .collect()
}

/// How the primary's copy of a backup differs from the replica's, if at all.
fn copy_differences(entry: &BackupEntry, r: &BackupEntry, pc: &str, rc: &str) -> Vec<String> {
    let mut diffs = Vec::new();
    let size = |m: &Option<crate::store::ObjectMeta>| m.as_ref().map(|m| m.size);
    if size(&entry.objects.data) != size(&r.objects.data) {
        diffs.push(format!(
            "data is {:?} bytes in {pc} but {:?} in {rc}",
            size(&entry.objects.data).unwrap_or(0),
            size(&r.objects.data).unwrap_or(0)
        ));
    }
    if size(&entry.objects.manifest) != size(&r.objects.manifest) {
        diffs.push("the manifests differ in size".to_string());
    }
    if let (Some(a), Some(b)) = (entry.manifest(), r.manifest())
        && a.ciphertext.sha256 != b.ciphertext.sha256
    {
        diffs.push(format!(
            "ciphertext sha256 is {} in {pc} but {} in {rc}",
            a.ciphertext.sha256, b.ciphertext.sha256
        ));
    }
    diffs
}

impl Audit<'_> {
    fn push(&mut self, f: Finding) {
        self.findings.push(f);
    }

    /// Per-cloud checks; returns the plan (with its inventory) for parity.
    pub(super) fn cloud<'b>(
        &mut self,
        input: &CloudInput<'b>,
        is_replica: bool,
    ) -> Option<(Plan, &'b Inventory)> {
        let cloud = input.cloud;
        if let Some(bucket) = input.bucket {
            let found = lifecycle_findings(cloud, bucket, self.policies);
            self.findings.extend(found);
        }
        let inv = match input.inventory {
            Ok(inv) => inv,
            Err(e) => {
                self.listing_failed(cloud, e);
                return None;
            }
        };
        self.clouds.push(CloudSummary {
            cloud: cloud.into(),
            store: Some(inv.store.clone()),
            objects: inv.object_count,
            backups: inv.backups.len(),
            listing_error: None,
        });
        let plan = match input.plan {
            Some(p) => p.clone(),
            None => plan(inv, self.policies, self.now),
        };
        let seen_ns = self.series_checks(cloud, inv, input.applied, &plan, is_replica);
        self.no_backups(cloud, is_replica, &seen_ns);
        self.foreign_objects(cloud, inv);
        self.wal(cloud, inv, &plan, input.applied, is_replica);
        Some((plan, inv))
    }

    /// A cloud whose listing failed: its summary says so, and one critical
    /// finding.
    fn listing_failed(&mut self, cloud: &str, e: &str) {
        self.clouds.push(CloudSummary {
            cloud: cloud.into(),
            store: None,
            objects: 0,
            backups: 0,
            listing_error: Some(e.into()),
        });
        self.push(
            Finding::new(
                Severity::Critical,
                "listing_failed",
                format!("listing the {cloud} bucket failed, so nothing there was checked or deleted: {e}"),
            )
            .cloud(cloud),
        );
    }

    /// Summary, rule and backup checks of every series in one cloud's plan;
    /// returns the namespaces seen.
    fn series_checks(
        &mut self,
        cloud: &str,
        inv: &Inventory,
        applied: Option<&ApplyReport>,
        plan: &Plan,
        is_replica: bool,
    ) -> BTreeSet<String> {
        let mut no_rule = BTreeSet::new();
        let mut seen_ns = BTreeSet::new();
        for s in &plan.series {
            let ns = s.series.namespace.as_str();
            seen_ns.insert(ns.to_string());
            let rule = self.policies.rule_for(ns);
            self.summarize(cloud, s);
            if rule.is_none() && no_rule.insert(ns.to_string()) {
                self.push(
                    Finding::new(
                        Severity::Warning,
                        "no_retention_rule",
                        format!("no retention rule matches namespace {ns:?}: its backups are kept forever and never pruned; add a rule (e.g. a final \"*\")"),
                    )
                    .ns(ns)
                    .cloud(cloud),
                );
            }
            if let Some(rule) = rule {
                self.rule_checks(cloud, s, rule, is_replica);
            }
            for b in &s.backups {
                self.backup(cloud, inv, applied, b);
            }
        }
        seen_ns
    }

    /// What the series' retention rule asks for: fresh backups (in the
    /// replica only where the rule replicates), and a note when abandoned.
    fn rule_checks(&mut self, cloud: &str, s: &SeriesPlan, rule: &NamespaceRule, is_replica: bool) {
        let ns = s.series.namespace.as_str();
        if !is_replica || rule.replicated {
            self.stale(cloud, &s.series, rule, s.newest_verified().map(|b| &b.id));
        }
        if s.abandoned {
            self.push(
                Finding::new(
                    Severity::Info,
                    "namespace_abandoned",
                    format!(
                        "{}: no backup for more than {}: all its backups are removed (invalid ones excepted)",
                        s.series,
                        rule.abandon_after.map(format_duration).unwrap_or_default()
                    ),
                )
                .ns(ns)
                .cloud(cloud),
            );
        }
    }

    /// Expected namespaces that have no backups at all.
    fn no_backups(&mut self, cloud: &str, is_replica: bool, seen_ns: &BTreeSet<String>) {
        for rule in &self.policies.rules {
            if rule.pattern.is_literal()
                && rule.stale_after.is_some()
                && (!is_replica || rule.replicated)
                && !seen_ns.contains(rule.pattern.as_str())
            {
                let ns = rule.pattern.as_str();
                self.findings.push(
                    Finding::new(
                        quiet_severity(self.policies, rule, ns),
                        "no_backups",
                        format!("namespace {ns:?} has no backups at all in {cloud}"),
                    )
                    .ns(ns)
                    .cloud(cloud),
                );
            }
        }
    }

    /// Objects in the bucket that belong to no backup.
    fn foreign_objects(&mut self, cloud: &str, inv: &Inventory) {
        for meta in &inv.foreign {
            let ns = meta.key.split('/').next().unwrap_or_default();
            let mut f = Finding::new(
                Severity::Warning,
                "unknown_object",
                format!(
                    "{} ({} bytes) is not part of any backup: it is never pruned; remove it or find out who wrote it",
                    meta.key, meta.size
                ),
            )
            .cloud(cloud)
            .subject(&meta.key);
            if crate::naming::Namespace::new(ns).is_ok() && meta.key.contains('/') {
                f = f.ns(ns);
            }
            self.push(f);
        }
    }

    fn summarize(&mut self, cloud: &str, s: &SeriesPlan) {
        let newest = s.newest_verified();
        let count =
            |pred: fn(&Decision) -> bool| s.backups.iter().filter(|b| pred(&b.decision)).count();
        self.series.push(SeriesSummary {
            cloud: cloud.into(),
            namespace: s.series.namespace.to_string(),
            database: s.series.database.clone(),
            rule: s.rule.clone(),
            backups: s.backups.len(),
            verified: s.backups.iter().filter(|b| b.status.is_verified()).count(),
            newest_verified: newest.map(|b| b.id.to_string()),
            newest_verified_at: newest.map(|b| b.id.taken_at),
            newest_verified_age_seconds: newest.map(|b| (self.now - b.id.taken_at).num_seconds()),
            keep: count(|d| matches!(d, Decision::Keep { .. })),
            delete: count(Decision::is_delete),
            hold: count(|d| matches!(d, Decision::Hold { .. })),
        });
    }

    fn stale(
        &mut self,
        cloud: &str,
        series: &SeriesKey,
        rule: &NamespaceRule,
        newest: Option<&BackupId>,
    ) {
        let Some(limit) = rule.stale_after else {
            return;
        };
        let ns = series.namespace.as_str();
        let sev = quiet_severity(self.policies, rule, ns);
        match newest {
            None => self.push(
                Finding::new(
                    sev,
                    "no_verified_backup",
                    format!("{series} has no complete, signature-verified backup in {cloud}"),
                )
                .ns(ns)
                .cloud(cloud),
            ),
            Some(id) if self.now - id.taken_at > limit => self.push(
                Finding::new(
                    sev,
                    "stale_backup",
                    format!(
                        "{series}: the newest verified backup in {cloud} is {} old ({}), more than the {} allowed; check the backup schedule",
                        format_age(self.now - id.taken_at),
                        ts(id.taken_at),
                        format_duration(limit)
                    ),
                )
                .ns(ns)
                .cloud(cloud)
                .subject(id),
            ),
            Some(_) => {}
        }
    }

    /// Checks of one backup, by its status.
    fn backup(
        &mut self,
        cloud: &str,
        inv: &Inventory,
        applied: Option<&ApplyReport>,
        b: &BackupPlan,
    ) {
        match (&b.status, &b.decision) {
            (BackupStatus::Incomplete { missing }, decision) => {
                self.incomplete(cloud, applied, b, missing, decision)
            }
            (BackupStatus::Invalid { kind, reason }, _) => self.push(about_backup(
                Finding::new(
                    Severity::Critical,
                    kind.code(),
                    format!(
                        "{} failed verification ({kind}): {reason}. It is not used for restores and not deleted automatically; investigate, then delete it by hand",
                        b.id
                    ),
                ),
                cloud,
                &b.id,
            )),
            (BackupStatus::Future { ahead_seconds }, _) => {
                self.future(cloud, b, *ahead_seconds)
            }
            (BackupStatus::NotChecked, _) => self.push(about_backup(
                Finding::new(
                    Severity::Warning,
                    "not_verified",
                    format!("{} was not verified: it neither counts toward retention nor is deleted", b.id),
                ),
                cloud,
                &b.id,
            )),
            (status, decision) => self.usable(cloud, inv, applied, b, status, decision),
        }
    }

    /// A validly signed backup dated beyond the allowed clock skew.
    fn future(&mut self, cloud: &str, b: &BackupPlan, ahead_seconds: i64) {
        self.push(about_backup(
            Finding::new(
                Severity::Critical,
                "future_backup",
                format!(
                    "{} is validly signed but dated {} ahead of this run's clock, more than the {} allowed ({}): the dump host's clock is probably wrong. It is not the newest backup for retention, restore or the staleness check, and is not deleted automatically; fix that host's clock (NTP), then delete it by hand",
                    b.id,
                    format_age(TimeDelta::seconds(ahead_seconds)),
                    format_duration(self.policies.max_clock_skew),
                    crate::retention::policy::MAX_CLOCK_SKEW_ENV,
                ),
            ),
            cloud,
            &b.id,
        ));
    }

    /// An incomplete backup: still being written while within the grace
    /// period, orphaned after it.
    fn incomplete(
        &mut self,
        cloud: &str,
        applied: Option<&ApplyReport>,
        b: &BackupPlan,
        missing: &[String],
        decision: &Decision,
    ) {
        if let Decision::Hold {
            reason: HoldReason::InProgress,
        } = decision
        {
            self.push(about_backup(
                Finding::new(
                    Severity::Info,
                    "backup_in_progress",
                    format!(
                        "{} is incomplete (no {}) but younger than {}: probably still being written",
                        b.id,
                        missing.join(", "),
                        format_duration(self.policies.incomplete_grace)
                    ),
                ),
                cloud,
                &b.id,
            ));
            return;
        }
        let what = match decision {
            Decision::Delete { reason } => fate(applied, &b.id, *reason),
            _ => "kept: no retention rule".to_string(),
        };
        self.push(about_backup(
            Finding::new(
                Severity::Warning,
                "orphaned_backup",
                format!(
                    "{} is incomplete (no {}) and older than {}: {what}",
                    b.id,
                    missing.join(", "),
                    format_duration(self.policies.incomplete_grace)
                ),
            ),
            cloud,
            &b.id,
        ));
    }

    /// A complete, verified (or suspect) backup: the suspicion, a data object
    /// whose size disagrees with its manifest, and a deletion that did not
    /// happen.
    fn usable(
        &mut self,
        cloud: &str,
        inv: &Inventory,
        applied: Option<&ApplyReport>,
        b: &BackupPlan,
        status: &BackupStatus,
        decision: &Decision,
    ) {
        if let BackupStatus::Suspect { detail } = status {
            self.push(about_backup(
                Finding::new(
                    Severity::Warning,
                    "backup_shrank",
                    format!(
                        "{} is suspect: {detail}. Check that the database was not emptied before its backups replace the good ones",
                        b.id
                    ),
                ),
                cloud,
                &b.id,
            ));
        }
        if let Some(entry) = inv.get(&b.id)
            && let (Some(m), Some(data)) = (entry.manifest(), &entry.objects.data)
            && m.ciphertext.size != data.size
        {
            self.push(about_backup(
                Finding::new(
                    Severity::Critical,
                    "size_mismatch",
                    format!(
                        "{}: the data object is {} bytes but the signed manifest says {}",
                        b.id, data.size, m.ciphertext.size
                    ),
                ),
                cloud,
                &b.id,
            ));
        }
        if let Decision::Delete { reason } = decision
            && !matches!(removal(applied, &b.id), Removal::Removed)
        {
            self.push(about_backup(
                Finding::new(
                    Severity::Warning,
                    "kept_past_policy",
                    format!("{} is past policy: {}", b.id, fate(applied, &b.id, *reason)),
                ),
                cloud,
                &b.id,
            ));
        }
    }

    /// The two clouds against each other, for replicated namespaces.
    pub(super) fn parity(
        &mut self,
        (primary, pinv): &(Plan, &Inventory),
        (replica, rinv): &(Plan, &Inventory),
        pin: &CloudInput<'_>,
        rin: &CloudInput<'_>,
    ) {
        let (pc, rc) = (pin.cloud, rin.cloud);
        let mut found = self.replica_copies(primary, pinv, rinv, pc, rc);
        found.extend(self.replica_only(replica, pinv, rinv, pc, rc));
        self.findings.extend(found);
    }

    /// Whether the backup's namespace is replicated by its rule.
    fn replicated(&self, id: &BackupId) -> bool {
        self.policies
            .rule_for(id.namespace.as_str())
            .is_some_and(|r| r.replicated)
    }

    /// Each complete primary backup that should be replicated, against its
    /// copy in the replica: missing (or pending), or different.
    fn replica_copies(
        &self,
        primary: &Plan,
        pinv: &Inventory,
        rinv: &Inventory,
        pc: &str,
        rc: &str,
    ) -> Vec<Finding> {
        let mut found = Vec::new();
        let deleted = deleted_by(primary);
        for (id, entry) in &pinv.backups {
            if !self.replicated(id) || !entry.is_complete() || deleted.contains(id) {
                continue;
            }
            match rinv.get(id).filter(|r| r.is_complete()) {
                None => found.push(self.missing_replica(id, pc, rc)),
                Some(r) => {
                    let diffs = copy_differences(entry, r, pc, rc);
                    if !diffs.is_empty() {
                        found.push(
                            Finding::new(
                                Severity::Critical,
                                "replica_mismatch",
                                format!("{id}: the copies differ: {}", diffs.join("; ")),
                            )
                            .ns(id.namespace.as_str())
                            .cloud(rc)
                            .subject(id),
                        );
                    }
                }
            }
        }
        found
    }

    /// A backup not (completely) in the replica: critical once the replica
    /// grace period is over, pending before.
    fn missing_replica(&self, id: &BackupId, pc: &str, rc: &str) -> Finding {
        let codes = ("missing_replica", "replica_pending", "taken");
        self.replica_lag(&id.to_string(), id.taken_at, codes, (pc, rc))
            .ns(id.namespace.as_str())
    }

    /// `what` (written at `at`) is not (completely) in the replica:
    /// critical once the replica grace is over (`codes.0`), pending before
    /// (`codes.1`); `codes.2` says how it was written ("taken").
    pub(super) fn replica_lag(
        &self,
        what: &str,
        at: DateTime<Utc>,
        codes: (&str, &str, &str),
        (pc, rc): (&str, &str),
    ) -> Finding {
        let (missing, pending, written) = codes;
        let age = self.now - at;
        let (sev, code, msg) = if age > self.policies.replica_grace {
            (
                Severity::Critical,
                missing,
                format!(
                    "{what} exists in {pc} but not (completely) in {rc}, {} after it was {written}: replication failed; re-run the replicator for it",
                    format_age(age)
                ),
            )
        } else {
            (
                Severity::Info,
                pending,
                format!(
                    "{what} is not in {rc} yet ({written} {} ago)",
                    format_age(age)
                ),
            )
        };
        Finding::new(sev, code, msg).cloud(rc).subject(what)
    }

    /// Complete replica backups the replica's plan keeps but the primary
    /// does not have.
    fn replica_only(
        &self,
        replica: &Plan,
        pinv: &Inventory,
        rinv: &Inventory,
        pc: &str,
        rc: &str,
    ) -> Vec<Finding> {
        let mut found = Vec::new();
        let deleted = deleted_by(replica);
        for (id, entry) in &rinv.backups {
            if !self.replicated(id)
                || !entry.is_complete()
                || deleted.contains(id)
                || pinv.get(id).is_some()
            {
                continue;
            }
            found.push(
                Finding::new(
                    Severity::Warning,
                    "only_in_replica",
                    format!("{id} exists in {rc} but not in {pc}: the primary copy was lost or deleted outside Backstop"),
                )
                .ns(id.namespace.as_str())
                .cloud(rc)
                .subject(id),
            );
        }
        found
    }

    /// Restore drills: recent, successful, and the latest one not failed;
    /// dumps' drills (`restore`) and base backups' (`restore-cluster`: the
    /// `pitr_drill_*` codes) apart, each for the namespaces with such
    /// backups.
    pub(super) fn drills(&mut self, inv: &Inventory, drills: &[DrillRecord]) {
        for codes in [&DUMP_DRILLS, &PITR_DRILLS] {
            let mut namespaces: BTreeSet<String> = inv
                .backups
                .keys()
                .filter(|id| id.system_identifier().is_some() == codes.pitr)
                .map(|id| id.namespace.to_string())
                .collect();
            for rule in self.policies.rules.iter().filter(|_| !codes.pitr) {
                if rule.pattern.is_literal() {
                    namespaces.insert(rule.pattern.to_string());
                }
            }
            for ns in namespaces {
                let mine: Vec<&DrillRecord> = drills
                    .iter()
                    .filter(|d| d.namespace.as_str() == ns && is_pitr(d) == codes.pitr)
                    .collect();
                self.drill_findings(&ns, codes, &mine);
            }
        }
    }

    /// The drill findings of one namespace from its records of one kind.
    fn drill_findings(&mut self, ns: &str, codes: &DrillCodes, mine: &[&DrillRecord]) {
        let Some(rule) = self.policies.rule_for(ns) else {
            return;
        };
        let Some(max_age) = rule.drill_max_age else {
            return;
        };
        let sev = protected_severity(Some(rule));
        let what = codes.what;
        let last_ok = mine
            .iter()
            .filter(|d| d.success)
            .max_by_key(|d| d.finished_at);
        let latest = mine.iter().max_by_key(|d| d.finished_at);
        match last_ok {
            None => self.push(
                Finding::new(
                    sev,
                    codes.none,
                    format!("no successful {what} of {ns:?} backups was ever recorded: an untested backup is not a backup"),
                )
                .ns(ns),
            ),
            Some(ok) if self.now - ok.finished_at > max_age => self.push(
                Finding::new(
                    sev,
                    codes.stale,
                    format!(
                        "the last successful {what} of {ns:?} was {} ago ({}), more than the {} allowed",
                        format_age(self.now - ok.finished_at),
                        ok.backup_id,
                        format_duration(max_age)
                    ),
                )
                .ns(ns)
                .subject(&ok.backup_id),
            ),
            Some(_) => {}
        }
        if let Some(last) = latest.filter(|l| !l.success) {
            let why = match (&last.error, last.mismatches.len()) {
                (Some(e), _) => e.clone(),
                (None, n) => format!("{n} tables had row counts different from the manifest"),
            };
            self.push(
                Finding::new(
                    Severity::Warning,
                    codes.failed,
                    format!(
                        "the latest {what} of {ns:?} ({}, into {}) failed: {why}",
                        last.backup_id, last.target_database
                    ),
                )
                .ns(ns)
                .subject(&last.backup_id),
            );
        }
    }
}
