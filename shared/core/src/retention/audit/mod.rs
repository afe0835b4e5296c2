//! The audit: one report per run over both clouds.
//!
//! Findings carry a severity, a stable `code` (what alerting and tests match
//! on), the namespace and cloud they concern, and a message that says what to
//! do. Critical findings are what gets published to the alert topic.
//!
//! This module holds the report's types ([`Severity`], [`Finding`],
//! [`Report`] and its readable `Display`), the inputs ([`CloudInput`],
//! [`AuditInput`]) and [`audit()`], which runs the checks and orders the
//! findings. The checks themselves are in `checks` (one method per concern:
//! per cloud, staleness, per backup, parity between clouds, restore drills);
//! the bucket lifecycle rules, which are parsed from a bucket description
//! rather than derived from an inventory, are in `lifecycle`.

use std::collections::BTreeMap;
use std::fmt;

use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};

use crate::drill::DrillRecord;
use crate::retention::execute::ApplyReport;
use crate::retention::inventory::Inventory;
use crate::retention::plan::Plan;
use crate::retention::policy::{PolicySet, format_age};

mod checks;
mod lifecycle;
mod wal;

pub use lifecycle::{BucketConfig, BucketConfigError, LifecycleRule, lifecycle_findings};

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
    /// Restore drill records (see [`crate::retention::load_drills`]).
    pub drills: &'a [DrillRecord],
    /// Findings produced elsewhere (e.g. unreadable drill records).
    pub extra_findings: Vec<Finding>,
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
        let clouds = (
            input.primary.cloud,
            input.replica.as_ref().expect("replica").cloud,
        );
        a.wal_parity(primary, replica, clouds);
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
