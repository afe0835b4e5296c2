//! The audit: one report per run over both clouds.
//!
//! Findings carry a severity, a stable `code` (what alerting and tests match
//! on), the namespace and cloud they concern, and a message that says what to
//! do. Critical findings are what gets published to the alert topic.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::execute::ApplyReport;
use super::inventory::{Inventory, SeriesKey};
use super::plan::{BackupStatus, Decision, DeleteReason, HoldReason, Plan, plan};
use super::policy::{NamespaceRule, PolicySet, format_age, format_duration};
use crate::drill::DrillRecord;
use crate::naming::BackupId;

/// How serious a finding is; ordered, `Critical` highest. Critical findings are
/// published to the alert topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Worth knowing; nothing to do.
    Info,
    /// Needs a look; the backups may still be fine.
    Warning,
    /// A backup is missing, stale, invalid or at risk, or a listing failed: act
    /// now.
    Critical,
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Severity::Info => "INFO",
            Severity::Warning => "WARNING",
            Severity::Critical => "CRITICAL",
        })
    }
}

/// One thing the audit found, with what to do about it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finding {
    /// How serious it is.
    pub severity: Severity,
    /// Stable identifier, e.g. `stale_backup`, `missing_replica`.
    pub code: String,
    /// The namespace concerned, if the finding is about one.
    pub namespace: Option<String>,
    /// `gcs` / `s3`; `None` when the finding is not about one cloud.
    pub cloud: Option<String>,
    /// The backup id or object key concerned, if any.
    pub subject: Option<String>,
    /// What is wrong and what to do, for a human.
    pub message: String,
}

impl Finding {
    fn new(severity: Severity, code: &str, message: String) -> Self {
        Self {
            severity,
            code: code.into(),
            namespace: None,
            cloud: None,
            subject: None,
            message,
        }
    }

    fn ns(mut self, ns: impl ToString) -> Self {
        self.namespace = Some(ns.to_string());
        self
    }

    fn cloud(mut self, cloud: &str) -> Self {
        self.cloud = Some(cloud.to_string());
        self
    }

    fn subject(mut self, subject: impl ToString) -> Self {
        self.subject = Some(subject.to_string());
        self
    }
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:<8} {}", self.severity.to_string(), self.code)?;
        let scope: Vec<&str> = [self.cloud.as_deref(), self.namespace.as_deref()]
            .into_iter()
            .flatten()
            .collect();
        if !scope.is_empty() {
            write!(f, " [{}]", scope.join(" "))?;
        }
        write!(f, ": {}", self.message)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CloudSummary {
    pub cloud: String,
    pub store: Option<String>,
    pub objects: usize,
    pub backups: usize,
    /// Set when the listing failed: nothing was planned or deleted there.
    pub listing_error: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeriesSummary {
    pub cloud: String,
    pub namespace: String,
    pub database: String,
    pub rule: Option<String>,
    pub backups: usize,
    pub verified: usize,
    pub newest_verified: Option<String>,
    pub newest_verified_at: Option<DateTime<Utc>>,
    pub newest_verified_age_seconds: Option<i64>,
    pub keep: usize,
    pub delete: usize,
    pub hold: usize,
}

/// The audit of one run over both clouds; `Display` is the readable summary,
/// [`Self::to_json`] the full report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    /// The clock the audit ran at.
    pub generated_at: DateTime<Utc>,
    /// Number of critical findings.
    pub critical: usize,
    /// Number of warning findings.
    pub warning: usize,
    /// Number of info findings.
    pub info: usize,
    /// One summary per cloud audited.
    pub clouds: Vec<CloudSummary>,
    /// One summary per series and cloud.
    pub series: Vec<SeriesSummary>,
    /// Most severe first.
    pub findings: Vec<Finding>,
}

impl Report {
    /// Whether any finding is critical (an alert is due).
    pub fn has_critical(&self) -> bool {
        self.critical > 0
    }

    /// The critical findings, in report order.
    pub fn critical_findings(&self) -> impl Iterator<Item = &Finding> {
        self.findings
            .iter()
            .filter(|f| f.severity == Severity::Critical)
    }

    /// The whole report as pretty-printed JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("report serializes")
    }

    /// The findings with this `code`.
    pub fn with_code<'a>(&'a self, code: &'a str) -> impl Iterator<Item = &'a Finding> + 'a {
        self.findings.iter().filter(move |f| f.code == code)
    }
}

/// Findings of one code shown in the readable summary before "... and N more".
const SHOWN_PER_CODE: usize = 10;

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "Backstop retention audit at {}: {} critical, {} warning, {} info",
            self.generated_at.format("%Y-%m-%dT%H:%M:%SZ"),
            self.critical,
            self.warning,
            self.info
        )?;
        for c in &self.clouds {
            match &c.listing_error {
                Some(e) => writeln!(
                    f,
                    "{}: LISTING FAILED, nothing planned or deleted: {e}",
                    c.cloud
                )?,
                None => writeln!(
                    f,
                    "{} {}: {} objects, {} backups",
                    c.cloud,
                    c.store.as_deref().unwrap_or("?"),
                    c.objects,
                    c.backups
                )?,
            }
        }
        for s in &self.series {
            let newest = match (&s.newest_verified_at, s.newest_verified_age_seconds) {
                (Some(at), Some(age)) => format!(
                    "newest verified {} ({} ago)",
                    at.format("%Y-%m-%dT%H:%M:%SZ"),
                    format_age(TimeDelta::seconds(age))
                ),
                _ => "no verified backup".into(),
            };
            writeln!(
                f,
                "  {} {}/{}: {} backups, {} verified, {newest}; keep {}, delete {}, hold {}",
                s.cloud, s.namespace, s.database, s.backups, s.verified, s.keep, s.delete, s.hold
            )?;
        }
        if self.findings.is_empty() {
            return writeln!(f, "no findings");
        }
        writeln!(f, "findings:")?;
        let mut shown: BTreeMap<&str, usize> = BTreeMap::new();
        for finding in &self.findings {
            let n = shown.entry(&finding.code).or_default();
            *n += 1;
            if *n <= SHOWN_PER_CODE {
                writeln!(f, "  {finding}")?;
            }
        }
        for (code, n) in shown {
            if n > SHOWN_PER_CODE {
                writeln!(
                    f,
                    "  ... and {} more {code} findings (see the JSON report)",
                    n - SHOWN_PER_CODE
                )?;
            }
        }
        Ok(())
    }
}

/// One cloud's view for the audit.
#[derive(Debug, Clone, Copy)]
pub struct CloudInput<'a> {
    /// `gcs` / `s3`.
    pub cloud: &'a str,
    /// `Err(message)`: the listing failed.
    pub inventory: Result<&'a Inventory, &'a str>,
    /// The plan made from `inventory`; computed when not given.
    pub plan: Option<&'a Plan>,
    /// What applying the plan did; `None`: not applied.
    pub applied: Option<&'a ApplyReport>,
    /// The bucket's configuration, to check its lifecycle rules.
    pub bucket: Option<&'a BucketConfig>,
}

impl<'a> CloudInput<'a> {
    /// A cloud whose listing succeeded.
    pub fn listed(cloud: &'a str, inventory: &'a Inventory) -> Self {
        Self {
            cloud,
            inventory: Ok(inventory),
            plan: None,
            applied: None,
            bucket: None,
        }
    }

    /// A cloud whose listing failed with `error`: audited as critical, nothing
    /// planned.
    pub fn listing_failed(cloud: &'a str, error: &'a str) -> Self {
        Self {
            cloud,
            inventory: Err(error),
            plan: None,
            applied: None,
            bucket: None,
        }
    }

    /// Uses `plan` instead of planning again.
    pub fn with_plan(mut self, plan: &'a Plan) -> Self {
        self.plan = Some(plan);
        self
    }

    /// Adds what applying the plan did.
    pub fn with_applied(mut self, applied: &'a ApplyReport) -> Self {
        self.applied = Some(applied);
        self
    }

    /// Adds the bucket's configuration, to check its lifecycle rules.
    pub fn with_bucket(mut self, bucket: &'a BucketConfig) -> Self {
        self.bucket = Some(bucket);
        self
    }
}

/// Everything [`audit`] looks at.
#[derive(Debug, Clone)]
pub struct AuditInput<'a> {
    /// The clock; ages and grace periods count from it.
    pub now: DateTime<Utc>,
    /// The retention policies the plans were made with.
    pub policies: &'a PolicySet,
    /// GCS: where backups are written.
    pub primary: CloudInput<'a>,
    /// S3: the copy of replicated namespaces.
    pub replica: Option<CloudInput<'a>>,
    /// Restore drill records (see [`super::load_drills`]).
    pub drills: &'a [DrillRecord],
    /// Findings produced elsewhere (e.g. unreadable drill records).
    pub extra_findings: Vec<Finding>,
}

enum Removal {
    Removed,
    DryRun,
    NotApplied,
    Failed(String),
}

fn removal(applied: Option<&ApplyReport>, id: &BackupId) -> Removal {
    let Some(a) = applied else {
        return Removal::NotApplied;
    };
    if a.dry_run {
        return Removal::DryRun;
    }
    if let Some(why) = &a.refused {
        return Removal::Failed(why.clone());
    }
    let key = id.to_string();
    match a.failures.iter().find(|f| f.backup == key) {
        Some(f) => Removal::Failed(format!("deleting {} failed: {}", f.key, f.error)),
        None => Removal::Removed,
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

fn ts(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

struct Audit<'a> {
    now: DateTime<Utc>,
    policies: &'a PolicySet,
    findings: Vec<Finding>,
    series: Vec<SeriesSummary>,
    clouds: Vec<CloudSummary>,
}

/// Runs every check. Pure: all I/O happened before (listing, verification,
/// drill records, bucket description).
pub fn audit(input: &AuditInput<'_>) -> Report {
    let mut a = Audit {
        now: input.now,
        policies: input.policies,
        findings: input.extra_findings.clone(),
        series: Vec::new(),
        clouds: Vec::new(),
    };
    let primary_plan = a.cloud(&input.primary, false);
    let replica_plan = input.replica.as_ref().and_then(|r| a.cloud(r, true));
    if let (Some(primary), Some(replica)) = (&primary_plan, &replica_plan) {
        a.parity(
            primary,
            replica,
            &input.primary,
            input.replica.as_ref().expect("replica"),
        );
    }
    if let Ok(inv) = input.primary.inventory {
        a.drills(inv, input.drills);
    }
    let mut findings = a.findings;
    findings.sort_by(|x, y| {
        y.severity
            .cmp(&x.severity)
            .then_with(|| x.code.cmp(&y.code))
            .then_with(|| x.cloud.cmp(&y.cloud))
            .then_with(|| x.namespace.cmp(&y.namespace))
            .then_with(|| x.subject.cmp(&y.subject))
    });
    findings.dedup();
    let count = |s| findings.iter().filter(|f| f.severity == s).count();
    Report {
        generated_at: input.now,
        critical: count(Severity::Critical),
        warning: count(Severity::Warning),
        info: count(Severity::Info),
        clouds: a.clouds,
        series: a.series,
        findings,
    }
}

impl Audit<'_> {
    fn push(&mut self, f: Finding) {
        self.findings.push(f);
    }

    /// Per-cloud checks; returns the plan (with its inventory) for parity.
    fn cloud<'b>(
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
            for b in &s.backups {
                self.backup(cloud, inv, input.applied, b);
            }
        }
        // Expected namespaces that have no backups at all.
        for rule in &self.policies.rules {
            if rule.pattern.is_literal()
                && rule.stale_after.is_some()
                && (!is_replica || rule.replicated)
                && !seen_ns.contains(rule.pattern.as_str())
            {
                let ns = rule.pattern.as_str();
                self.findings.push(
                    Finding::new(
                        protected_severity(Some(rule)),
                        "no_backups",
                        format!("namespace {ns:?} has no backups at all in {cloud}"),
                    )
                    .ns(ns)
                    .cloud(cloud),
                );
            }
        }
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
        Some((plan, inv))
    }

    fn summarize(&mut self, cloud: &str, s: &super::plan::SeriesPlan) {
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
        let sev = protected_severity(Some(rule));
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

    fn backup(
        &mut self,
        cloud: &str,
        inv: &Inventory,
        applied: Option<&ApplyReport>,
        b: &super::plan::BackupPlan,
    ) {
        let ns = b.id.namespace.as_str();
        let fate = |reason: DeleteReason| match removal(applied, &b.id) {
            Removal::Removed => "deleted by this run".to_string(),
            Removal::DryRun => format!("would be deleted ({}; dry run)", reason_label(reason)),
            Removal::NotApplied => "to be deleted (plan not applied)".to_string(),
            Removal::Failed(e) => format!("still present: {e}"),
        };
        match (&b.status, &b.decision) {
            (BackupStatus::Incomplete { missing }, Decision::Hold { reason: HoldReason::InProgress }) => self.push(
                Finding::new(
                    Severity::Info,
                    "backup_in_progress",
                    format!(
                        "{} is incomplete (no {}) but younger than {}: probably still being written",
                        b.id,
                        missing.join(", "),
                        format_duration(self.policies.incomplete_grace)
                    ),
                )
                .ns(ns)
                .cloud(cloud)
                .subject(&b.id),
            ),
            (BackupStatus::Incomplete { missing }, decision) => {
                let what = match decision {
                    Decision::Delete { reason } => fate(*reason),
                    _ => "kept: no retention rule".to_string(),
                };
                self.push(
                    Finding::new(
                        Severity::Warning,
                        "orphaned_backup",
                        format!(
                            "{} is incomplete (no {}) and older than {}: {what}",
                            b.id,
                            missing.join(", "),
                            format_duration(self.policies.incomplete_grace)
                        ),
                    )
                    .ns(ns)
                    .cloud(cloud)
                    .subject(&b.id),
                )
            }
            (BackupStatus::Invalid { kind, reason }, _) => self.push(
                Finding::new(
                    Severity::Critical,
                    kind.code(),
                    format!(
                        "{} failed verification ({kind}): {reason}. It is not used for restores and not deleted automatically; investigate, then delete it by hand",
                        b.id
                    ),
                )
                .ns(ns)
                .cloud(cloud)
                .subject(&b.id),
            ),
            (BackupStatus::NotChecked, _) => self.push(
                Finding::new(
                    Severity::Warning,
                    "not_verified",
                    format!("{} was not verified: it neither counts toward retention nor is deleted", b.id),
                )
                .ns(ns)
                .cloud(cloud)
                .subject(&b.id),
            ),
            (status, decision) => {
                if let BackupStatus::Suspect { detail } = status {
                    self.push(
                        Finding::new(
                            Severity::Warning,
                            "backup_shrank",
                            format!(
                                "{} is suspect: {detail}. Check that the database was not emptied before its backups replace the good ones",
                                b.id
                            ),
                        )
                        .ns(ns)
                        .cloud(cloud)
                        .subject(&b.id),
                    );
                }
                if let Some(entry) = inv.get(&b.id)
                    && let (Some(m), Some(data)) = (entry.manifest(), &entry.objects.data)
                    && m.ciphertext.size != data.size
                {
                    self.push(
                        Finding::new(
                            Severity::Critical,
                            "size_mismatch",
                            format!(
                                "{}: the data object is {} bytes but the signed manifest says {}",
                                b.id, data.size, m.ciphertext.size
                            ),
                        )
                        .ns(ns)
                        .cloud(cloud)
                        .subject(&b.id),
                    );
                }
                if let Decision::Delete { reason } = decision
                    && !matches!(removal(applied, &b.id), Removal::Removed)
                {
                    self.push(
                        Finding::new(
                            Severity::Warning,
                            "kept_past_policy",
                            format!("{} is past policy: {}", b.id, fate(*reason)),
                        )
                        .ns(ns)
                        .cloud(cloud)
                        .subject(&b.id),
                    );
                }
            }
        }
    }

    fn parity(
        &mut self,
        (primary, pinv): &(Plan, &Inventory),
        (replica, rinv): &(Plan, &Inventory),
        pin: &CloudInput<'_>,
        rin: &CloudInput<'_>,
    ) {
        let (pc, rc) = (pin.cloud, rin.cloud);
        let replicated = |id: &BackupId| {
            self.policies
                .rule_for(id.namespace.as_str())
                .is_some_and(|r| r.replicated)
        };
        let deleted_in =
            |plan: &Plan, id: &BackupId| plan.decision(id).is_some_and(|b| b.decision.is_delete());
        let mut found = Vec::new();
        for (id, entry) in &pinv.backups {
            if !replicated(id) || !entry.is_complete() || deleted_in(primary, id) {
                continue;
            }
            let ns = id.namespace.as_str();
            match rinv.get(id).filter(|r| r.is_complete()) {
                None => {
                    let age = self.now - id.taken_at;
                    let (sev, code, msg) = if age > self.policies.replica_grace {
                        (
                            Severity::Critical,
                            "missing_replica",
                            format!(
                                "{id} exists in {pc} but not (completely) in {rc}, {} after it was taken: replication failed; re-run the replicator for it",
                                format_age(age)
                            ),
                        )
                    } else {
                        (
                            Severity::Info,
                            "replica_pending",
                            format!("{id} is not in {rc} yet (taken {} ago)", format_age(age)),
                        )
                    };
                    found.push(Finding::new(sev, code, msg).ns(ns).cloud(rc).subject(id));
                }
                Some(r) => {
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
                    if !diffs.is_empty() {
                        found.push(
                            Finding::new(
                                Severity::Critical,
                                "replica_mismatch",
                                format!("{id}: the copies differ: {}", diffs.join("; ")),
                            )
                            .ns(ns)
                            .cloud(rc)
                            .subject(id),
                        );
                    }
                }
            }
        }
        for (id, entry) in &rinv.backups {
            if !replicated(id)
                || !entry.is_complete()
                || deleted_in(replica, id)
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
        self.findings.extend(found);
    }

    fn drills(&mut self, inv: &Inventory, drills: &[DrillRecord]) {
        let mut namespaces: BTreeSet<String> = inv
            .backups
            .keys()
            .map(|id| id.namespace.to_string())
            .collect();
        for rule in &self.policies.rules {
            if rule.pattern.is_literal() {
                namespaces.insert(rule.pattern.to_string());
            }
        }
        for ns in namespaces {
            let Some(rule) = self.policies.rule_for(&ns) else {
                continue;
            };
            let Some(max_age) = rule.drill_max_age else {
                continue;
            };
            let sev = protected_severity(Some(rule));
            let mine = || drills.iter().filter(|d| d.namespace.as_str() == ns);
            let last_ok = mine().filter(|d| d.success).max_by_key(|d| d.finished_at);
            let latest = mine().max_by_key(|d| d.finished_at);
            match last_ok {
                None => self.push(
                    Finding::new(
                        sev,
                        "no_restore_drill",
                        format!("no successful restore drill of {ns:?} backups was ever recorded: an untested backup is not a backup"),
                    )
                    .ns(&ns),
                ),
                Some(ok) if self.now - ok.finished_at > max_age => self.push(
                    Finding::new(
                        sev,
                        "restore_drill_stale",
                        format!(
                            "the last successful restore drill of {ns:?} was {} ago ({}), more than the {} allowed",
                            format_age(self.now - ok.finished_at),
                            ok.backup_id,
                            format_duration(max_age)
                        ),
                    )
                    .ns(&ns)
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
                        "restore_drill_failed",
                        format!(
                            "the latest restore drill of {ns:?} ({}, into {}) failed: {why}",
                            last.backup_id, last.target_database
                        ),
                    )
                    .ns(&ns)
                    .subject(&last.backup_id),
                );
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Bucket lifecycle rules

/// A bucket description that cannot be parsed. Permanent: fix the input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bucket description field `{field}`: {reason}")]
pub struct BucketConfigError {
    /// Path of the field at fault, e.g. `lifecycle.rule[0].action.type`.
    pub field: String,
    /// What is wrong with it.
    pub reason: String,
}

/// One object lifecycle rule, cloud-neutral.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct LifecycleRule {
    /// `Delete`, `SetStorageClass`, `AbortIncompleteMultipartUpload`, ...
    pub action: String,
    /// The storage class a `SetStorageClass` action moves objects to.
    pub storage_class: Option<String>,
    /// Condition: object age in days at least this.
    pub age_days: Option<u32>,
    /// `Some(false)`: only noncurrent (archived) versions.
    pub is_live: Option<bool>,
    /// Condition: at least this many newer versions exist.
    pub num_newer_versions: Option<u32>,
    /// Condition: days since the version became noncurrent.
    pub days_since_noncurrent_time: Option<u32>,
    /// Condition: became noncurrent before this date (`YYYY-MM-DD`).
    pub noncurrent_time_before: Option<String>,
    /// Condition: created before this date (`YYYY-MM-DD`).
    pub created_before: Option<String>,
    /// Condition: the key starts with one of these; empty matches all.
    pub matches_prefix: Vec<String>,
    /// Condition: the key ends with one of these; empty matches all.
    pub matches_suffix: Vec<String>,
}

impl LifecycleRule {
    /// Conditions that only noncurrent object versions can meet.
    pub fn noncurrent_only(&self) -> Vec<String> {
        let mut why = Vec::new();
        if self.is_live == Some(false) {
            why.push("isLive: false (Terraform with_state = \"ARCHIVED\")".to_string());
        }
        if let Some(n) = self.num_newer_versions.filter(|n| *n > 0) {
            why.push(format!("numNewerVersions: {n}"));
        }
        if let Some(d) = self.days_since_noncurrent_time {
            why.push(format!("daysSinceNoncurrentTime: {d}"));
        }
        if let Some(t) = &self.noncurrent_time_before {
            why.push(format!("noncurrentTimeBefore: {t}"));
        }
        why
    }

    fn describe(&self, index: usize) -> String {
        let mut parts = vec![self.action.clone()];
        if let Some(a) = self.age_days {
            parts.push(format!("age {a}d"));
        }
        if let Some(l) = self.is_live {
            parts.push(format!("isLive {l}"));
        }
        format!("lifecycle.rule[{index}] ({})", parts.join(", "))
    }
}

/// What the audit needs to know about a bucket.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct BucketConfig {
    /// The bucket name, when the description gives it.
    pub name: Option<String>,
    /// Whether object versioning is on (deleted backups linger as noncurrent
    /// versions).
    pub versioning_enabled: bool,
    /// The bucket's lifecycle rules, in order.
    pub lifecycle_rules: Vec<LifecycleRule>,
}

impl BucketConfig {
    /// Parses a GCS bucket resource, as returned by the JSON API
    /// (`GET /storage/v1/b/NAME`: `versioning.enabled`, `lifecycle.rule[]`)
    /// or by `gcloud storage buckets describe --format=json`
    /// (`versioning_enabled`, `lifecycle_config.rule[]`). Terraform's
    /// `with_state` spelling is understood too.
    pub fn from_gcs_json(json: &str) -> Result<Self, BucketConfigError> {
        let v: Value = serde_json::from_str(json).map_err(|e| BucketConfigError {
            field: "(document)".into(),
            reason: format!("not JSON: {e}"),
        })?;
        Self::from_gcs_value(&v)
    }

    /// [`Self::from_gcs_json`] for an already-decoded JSON value.
    pub fn from_gcs_value(v: &Value) -> Result<Self, BucketConfigError> {
        let err = |field: &str, reason: &str| BucketConfigError {
            field: field.into(),
            reason: reason.into(),
        };
        let obj = v
            .as_object()
            .ok_or_else(|| err("(document)", "expected a JSON object"))?;
        let versioning_enabled = match (obj.get("versioning"), obj.get("versioning_enabled")) {
            (Some(Value::Object(ver)), _) => {
                ver.get("enabled").and_then(Value::as_bool).unwrap_or(false)
            }
            (_, Some(Value::Bool(b))) => *b,
            _ => false,
        };
        let lifecycle = obj.get("lifecycle").or_else(|| obj.get("lifecycle_config"));
        let rules = match lifecycle.and_then(|l| l.get("rule")) {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(rules)) => rules.as_slice().to_vec(),
            Some(_) => return Err(err("lifecycle.rule", "expected an array")),
        };
        let mut lifecycle_rules = Vec::new();
        for (i, rule) in rules.iter().enumerate() {
            let at = format!("lifecycle.rule[{i}]");
            let action = rule.get("action").unwrap_or(&Value::Null);
            let action_type = action
                .get("type")
                .and_then(Value::as_str)
                .ok_or_else(|| err(&format!("{at}.action.type"), "missing"))?;
            let cond = rule.get("condition").cloned().unwrap_or(Value::Null);
            let get = |camel: &str, snake: &str| {
                cond.get(camel)
                    .or_else(|| cond.get(snake))
                    .filter(|v| !v.is_null())
            };
            let num = |camel: &str, snake: &str| -> Result<Option<u32>, BucketConfigError> {
                match get(camel, snake) {
                    None => Ok(None),
                    Some(v) => v
                        .as_u64()
                        .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
                        .and_then(|n| u32::try_from(n).ok())
                        .map(Some)
                        .ok_or_else(|| {
                            err(
                                &format!("{at}.condition.{camel}"),
                                "expected a whole number",
                            )
                        }),
                }
            };
            let text = |camel: &str, snake: &str| {
                get(camel, snake).and_then(Value::as_str).map(String::from)
            };
            let list = |camel: &str, snake: &str| -> Vec<String> {
                get(camel, snake)
                    .and_then(Value::as_array)
                    .map(|a| {
                        a.iter()
                            .filter_map(Value::as_str)
                            .map(String::from)
                            .collect()
                    })
                    .unwrap_or_default()
            };
            let mut is_live = match get("isLive", "is_live") {
                None => None,
                Some(Value::Bool(b)) => Some(*b),
                Some(_) => {
                    return Err(err(
                        &format!("{at}.condition.isLive"),
                        "expected true or false",
                    ));
                }
            };
            if let Some(state) = text("withState", "with_state") {
                is_live = match state.to_ascii_uppercase().as_str() {
                    "LIVE" => Some(true),
                    "ARCHIVED" => Some(false),
                    "ANY" | "" => is_live,
                    _ => {
                        return Err(err(
                            &format!("{at}.condition.withState"),
                            "expected LIVE, ARCHIVED or ANY",
                        ));
                    }
                };
            }
            lifecycle_rules.push(LifecycleRule {
                action: action_type.to_string(),
                storage_class: action
                    .get("storageClass")
                    .or_else(|| action.get("storage_class"))
                    .and_then(Value::as_str)
                    .map(String::from),
                age_days: num("age", "age")?,
                is_live,
                num_newer_versions: num("numNewerVersions", "num_newer_versions")?,
                days_since_noncurrent_time: num(
                    "daysSinceNoncurrentTime",
                    "days_since_noncurrent_time",
                )?,
                noncurrent_time_before: text("noncurrentTimeBefore", "noncurrent_time_before"),
                created_before: text("createdBefore", "created_before"),
                matches_prefix: list("matchesPrefix", "matches_prefix"),
                matches_suffix: list("matchesSuffix", "matches_suffix"),
            });
        }
        Ok(Self {
            name: obj.get("name").and_then(Value::as_str).map(String::from),
            versioning_enabled,
            lifecycle_rules,
        })
    }
}

/// Lifecycle rules that can never fire, or that fight the retention policy.
pub fn lifecycle_findings(
    cloud: &str,
    bucket: &BucketConfig,
    policies: &PolicySet,
) -> Vec<Finding> {
    let mut out = Vec::new();
    let name = bucket.name.as_deref().unwrap_or("the bucket");
    let horizon = policies.max_horizon();
    let mut cleans_noncurrent = false;
    for (i, rule) in bucket.lifecycle_rules.iter().enumerate() {
        let what = rule.describe(i);
        let noncurrent = rule.noncurrent_only();
        let is_delete = rule.action.eq_ignore_ascii_case("Delete");
        if is_delete && !noncurrent.is_empty() {
            cleans_noncurrent = true;
        }
        if !bucket.versioning_enabled && !noncurrent.is_empty() {
            out.push(
                Finding::new(
                    if is_delete { Severity::Critical } else { Severity::Warning },
                    "lifecycle_rule_cannot_fire",
                    format!(
                        "{what} on {name} can never fire: it only applies to noncurrent versions ({}) but object versioning is off, so every object stays live and nothing is ever {}. For live objects use isLive: true (Terraform with_state = \"LIVE\"), or leave pruning to Backstop's retention policy",
                        noncurrent.join(", "),
                        if is_delete { "deleted" } else { "changed" }
                    ),
                )
                .cloud(cloud)
                .subject(format!("lifecycle.rule[{i}]")),
            );
            continue;
        }
        if !is_delete || !noncurrent.is_empty() {
            continue;
        }
        let Some(age) = rule.age_days else {
            continue;
        };
        let age = TimeDelta::days(age as i64);
        match horizon {
            Some(h) if age < h => out.push(
                Finding::new(
                    Severity::Warning,
                    "lifecycle_shorter_than_policy",
                    format!(
                        "{what} on {name} deletes backups after {} but the retention policy keeps some for up to {}: it will silently remove backups the policy wants kept",
                        format_duration(age),
                        format_duration(h)
                    ),
                )
                .cloud(cloud)
                .subject(format!("lifecycle.rule[{i}]")),
            ),
            _ => out.push(
                Finding::new(
                    Severity::Info,
                    "lifecycle_deletes_backups",
                    format!(
                        "{what} on {name} deletes every object older than {}, including the newest backup of a namespace whose backups stopped; Backstop's retention never deletes that one",
                        format_duration(age)
                    ),
                )
                .cloud(cloud)
                .subject(format!("lifecycle.rule[{i}]")),
            ),
        }
    }
    if bucket.versioning_enabled && !cleans_noncurrent {
        out.push(
            Finding::new(
                Severity::Info,
                "noncurrent_versions_kept",
                format!(
                    "{name} has object versioning on and no lifecycle rule deletes noncurrent versions: pruned backups keep their storage (and their data) as noncurrent versions"
                ),
            )
            .cloud(cloud),
        );
    }
    out
}
