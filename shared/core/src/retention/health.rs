//! A run's health at a glance, for health checks (`backstop status`) and
//! metrics: the audit's [`Report`] and the drill records summarized into one
//! [`Condition`], counts by severity and by code, the worst namespace, and
//! the ages of the newest backup and of the newest successful drill.
//!
//! Pure: the caller ran the audit and read the drill records; the only
//! other input is which clouds did not answer (a listing failure the caller
//! classified as transient through [`crate::error::Classify`]).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::audit::{Report, Severity};
use crate::drill::DrillRecord;

/// The finding codes of a latest drill that failed.
const DRILL_FAILED_CODES: [&str; 2] = ["restore_drill_failed", "pitr_drill_failed"];

/// The one verdict of a health check, in increasing precedence: when
/// several apply, the highest is reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Condition {
    /// No warning or critical finding (info findings are healthy).
    Healthy,
    /// At least one warning finding.
    Warning,
    /// The latest restore drill (or PITR drill) of a namespace failed.
    DrillFailed,
    /// At least one critical finding: act now.
    Critical,
    /// A cloud did not answer, so its backups could not be judged.
    Unreachable,
}

/// Findings per severity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct SeverityCounts {
    /// Critical findings.
    pub critical: usize,
    /// Warning findings.
    pub warning: usize,
    /// Info findings.
    pub info: usize,
}

/// How many findings of one code (all of one severity per code and run).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CodeCount {
    /// The finding code, e.g. `stale_backup`.
    pub code: String,
    /// The most severe of the code's findings.
    pub severity: Severity,
    /// Findings of the code.
    pub count: usize,
}

/// The namespace with the most severe findings (most findings of that
/// severity on a tie, then the first by name).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NamespaceHealth {
    /// The namespace.
    pub namespace: String,
    /// Its most severe finding's severity.
    pub severity: Severity,
    /// Its findings of any severity.
    pub findings: usize,
    /// Their codes, sorted, once each.
    pub codes: Vec<String>,
}

/// The newest of something (a verified backup, a successful drill).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Newest {
    /// The backup id (of the drilled backup, for a drill).
    pub backup_id: String,
    /// `gcs` / `s3`: where the backup is, or the drill restored from.
    pub cloud: Option<String>,
    /// When it was taken (a backup) or finished (a drill).
    pub at: DateTime<Utc>,
    /// Seconds from `at` to the audit's clock.
    pub age_seconds: i64,
}

/// One series' newest verified backup, per cloud.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SeriesAge {
    /// `gcs` / `s3`.
    pub cloud: String,
    /// The series' namespace.
    pub namespace: String,
    /// The series' database.
    pub database: String,
    /// `None`: no verified backup.
    pub newest_verified_age_seconds: Option<i64>,
}

/// The summary of one audit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Health {
    /// The audit's clock.
    pub generated_at: DateTime<Utc>,
    /// The verdict.
    pub condition: Condition,
    /// Findings per severity.
    pub findings: SeverityCounts,
    /// Most severe first, then by code.
    pub by_code: Vec<CodeCount>,
    /// `None` when no finding names a namespace.
    pub worst_namespace: Option<NamespaceHealth>,
    /// The newest verified backup in any cloud.
    pub newest_backup: Option<Newest>,
    /// The newest successful restore or PITR drill.
    pub newest_drill: Option<Newest>,
    /// Clouds whose listing failed because they did not answer.
    pub unreachable: Vec<String>,
    /// Each series' newest verified backup, per cloud.
    pub series: Vec<SeriesAge>,
}

/// Summarizes `report` with the drill records it was made from;
/// `unreachable` names the clouds that did not answer.
pub fn summarize(report: &Report, drills: &[DrillRecord], unreachable: &[String]) -> Health {
    let now = report.generated_at;
    let mut by_code: BTreeMap<&str, CodeCount> = BTreeMap::new();
    let mut by_ns: BTreeMap<&str, Vec<(Severity, &str)>> = BTreeMap::new();
    for f in &report.findings {
        let entry = by_code.entry(&f.code).or_insert_with(|| CodeCount {
            code: f.code.clone(),
            severity: f.severity,
            count: 0,
        });
        entry.count += 1;
        entry.severity = entry.severity.max(f.severity);
        if let Some(ns) = &f.namespace {
            by_ns.entry(ns).or_default().push((f.severity, &f.code));
        }
    }
    let mut by_code: Vec<CodeCount> = by_code.into_values().collect();
    by_code.sort_by(|a, b| b.severity.cmp(&a.severity).then(a.code.cmp(&b.code)));
    Health {
        generated_at: now,
        condition: condition(report, unreachable),
        findings: SeverityCounts {
            critical: report.critical,
            warning: report.warning,
            info: report.info,
        },
        by_code,
        worst_namespace: worst_namespace(by_ns),
        newest_backup: report
            .series
            .iter()
            .filter_map(|s| {
                Some(Newest {
                    backup_id: s.newest_verified.clone()?,
                    cloud: Some(s.cloud.clone()),
                    at: s.newest_verified_at?,
                    age_seconds: s.newest_verified_age_seconds?,
                })
            })
            .min_by_key(|n| n.age_seconds),
        newest_drill: drills
            .iter()
            .filter(|d| d.success)
            .max_by_key(|d| d.finished_at)
            .map(|d| Newest {
                backup_id: d.backup_id.clone(),
                cloud: d.restored_from.clone(),
                at: d.finished_at,
                age_seconds: (now - d.finished_at).num_seconds(),
            }),
        unreachable: unreachable.to_vec(),
        series: report
            .series
            .iter()
            .map(|s| SeriesAge {
                cloud: s.cloud.clone(),
                namespace: s.namespace.clone(),
                database: s.database.clone(),
                newest_verified_age_seconds: s.newest_verified_age_seconds,
            })
            .collect(),
    }
}

fn condition(report: &Report, unreachable: &[String]) -> Condition {
    if !unreachable.is_empty() {
        Condition::Unreachable
    } else if report.critical > 0 {
        Condition::Critical
    } else if DRILL_FAILED_CODES
        .iter()
        .any(|code| report.with_code(code).next().is_some())
    {
        Condition::DrillFailed
    } else if report.warning > 0 {
        Condition::Warning
    } else {
        Condition::Healthy
    }
}

fn worst_namespace(by_ns: BTreeMap<&str, Vec<(Severity, &str)>>) -> Option<NamespaceHealth> {
    let rank = |findings: &[(Severity, &str)]| {
        let worst = findings.iter().map(|f| f.0).max().expect("non-empty");
        (worst, findings.iter().filter(|f| f.0 == worst).count())
    };
    // Ties go to the first name: `max_by_key` keeps the last maximum, so
    // the names are walked backwards.
    let (ns, findings) = by_ns
        .into_iter()
        .rev()
        .max_by_key(|(_, findings)| rank(findings))?;
    let mut codes: Vec<String> = findings.iter().map(|f| f.1.to_string()).collect();
    codes.sort();
    codes.dedup();
    Some(NamespaceHealth {
        namespace: ns.to_string(),
        severity: rank(&findings).0,
        findings: findings.len(),
        codes,
    })
}

#[cfg(test)]
mod tests {
    use chrono::TimeDelta;

    use super::*;
    use crate::naming::Namespace;
    use crate::retention::audit::{Finding, SeriesSummary};

    fn finding(severity: Severity, code: &str, ns: Option<&str>) -> Finding {
        Finding {
            severity,
            code: code.into(),
            namespace: ns.map(str::to_string),
            cloud: None,
            subject: None,
            message: String::new(),
        }
    }

    fn report(findings: Vec<Finding>, ages: &[(&str, i64)]) -> Report {
        let now = DateTime::parse_from_rfc3339("2026-12-01T12:00:00Z")
            .unwrap()
            .to_utc();
        let count = |s| findings.iter().filter(|f| f.severity == s).count();
        Report {
            generated_at: now,
            critical: count(Severity::Critical),
            warning: count(Severity::Warning),
            info: count(Severity::Info),
            clouds: Vec::new(),
            series: ages
                .iter()
                .map(|(id, age)| SeriesSummary {
                    cloud: "gcs".into(),
                    namespace: id.split('/').next().unwrap().into(),
                    database: "app".into(),
                    rule: None,
                    backups: 1,
                    verified: 1,
                    newest_verified: Some(id.to_string()),
                    newest_verified_at: Some(now - TimeDelta::seconds(*age)),
                    newest_verified_age_seconds: Some(*age),
                    keep: 1,
                    delete: 0,
                    hold: 0,
                })
                .collect(),
            findings,
        }
    }

    fn drill(success: bool, age: i64, now: DateTime<Utc>) -> DrillRecord {
        DrillRecord {
            backup_id: "prod/app/20261201T000000Z-000001".into(),
            run_id: String::new(),
            namespace: Namespace::new("prod").unwrap(),
            target_database: "t".into(),
            started_at: now - TimeDelta::seconds(age + 5),
            finished_at: now - TimeDelta::seconds(age),
            success,
            tables_checked: 1,
            mismatches: Vec::new(),
            error: None,
            restored_from: Some("gcs".into()),
        }
    }

    #[test]
    fn the_condition_is_the_highest_that_applies() {
        let w = || finding(Severity::Warning, "no_retention_rule", Some("a"));
        let d = || finding(Severity::Warning, "restore_drill_failed", Some("a"));
        let c = || finding(Severity::Critical, "stale_backup", Some("a"));
        let i = || finding(Severity::Info, "replica_pending", Some("a"));
        let cond = |f: Vec<Finding>, down: &[&str]| {
            let down: Vec<String> = down.iter().map(|s| s.to_string()).collect();
            summarize(&report(f, &[]), &[], &down).condition
        };
        assert_eq!(cond(vec![i()], &[]), Condition::Healthy);
        assert_eq!(cond(vec![i(), w()], &[]), Condition::Warning);
        assert_eq!(cond(vec![w(), d()], &[]), Condition::DrillFailed);
        assert_eq!(cond(vec![d(), c()], &[]), Condition::Critical);
        assert_eq!(cond(vec![c()], &["s3"]), Condition::Unreachable);
    }

    #[test]
    fn counts_worst_namespace_and_ages() {
        let findings = vec![
            finding(Severity::Critical, "stale_backup", Some("b")),
            finding(Severity::Warning, "no_restore_drill", Some("b")),
            finding(Severity::Critical, "missing_replica", Some("c")),
            finding(Severity::Critical, "stale_backup", Some("c")),
            finding(Severity::Warning, "no_retention_rule", Some("a")),
            finding(Severity::Warning, "no_retention_rule", Some("a")),
            finding(Severity::Info, "replica_pending", None),
        ];
        let r = report(findings, &[("b/app/x", 7200), ("c/app/y", 60)]);
        let now = r.generated_at;
        let drills = [
            drill(true, 500, now),
            drill(false, 10, now),
            drill(true, 90, now),
        ];
        let h = summarize(&r, &drills, &[]);
        assert_eq!(
            (h.findings.critical, h.findings.warning, h.findings.info),
            (3, 3, 1)
        );
        let codes: Vec<(&str, usize)> = h
            .by_code
            .iter()
            .map(|c| (c.code.as_str(), c.count))
            .collect();
        assert_eq!(
            codes,
            [
                ("missing_replica", 1),
                ("stale_backup", 2),
                ("no_restore_drill", 1),
                ("no_retention_rule", 2),
                ("replica_pending", 1)
            ]
        );
        let worst = h.worst_namespace.unwrap();
        assert_eq!(
            (worst.namespace.as_str(), worst.severity, worst.findings),
            ("c", Severity::Critical, 2)
        );
        assert_eq!(worst.codes, ["missing_replica", "stale_backup"]);
        let newest = h.newest_backup.unwrap();
        assert_eq!(
            (newest.backup_id.as_str(), newest.age_seconds),
            ("c/app/y", 60)
        );
        assert_eq!(
            h.newest_drill.unwrap().age_seconds,
            90,
            "the newest successful drill"
        );
        assert_eq!(h.series.len(), 2);
    }

    #[test]
    fn a_tie_goes_to_the_first_namespace_and_nothing_is_none() {
        let f = |ns| finding(Severity::Warning, "no_retention_rule", Some(ns));
        let h = summarize(&report(vec![f("b"), f("a")], &[]), &[], &[]);
        assert_eq!(h.worst_namespace.unwrap().namespace, "a");
        let h = summarize(&report(Vec::new(), &[]), &[], &[]);
        assert_eq!(
            (h.worst_namespace, h.newest_backup, h.newest_drill),
            (None, None, None)
        );
    }
}
