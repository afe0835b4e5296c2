//! Namespaces that went quiet: only branch namespaces are ever abandoned;
//! every other namespace keeps its newest verified backup whatever its age,
//! and every namespace gets a staleness check by default.

use chrono::{DateTime, TimeDelta, TimeZone, Utc};

use super::audit::Severity;
use super::plan::Decision;
use super::plan_and_audit;
use super::policy::PolicySet;
use super::testutil::{Kind, bid, inventory};
use crate::naming::BackupId;

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 27, 4, 0, 0).unwrap()
}

fn dailies_until(namespace: &str, last: DateTime<Utc>, n: i64) -> Vec<(BackupId, Kind)> {
    (0..n)
        .map(|i| {
            let t = last - TimeDelta::days(n - 1 - i);
            (bid(namespace, "app", t, i as u32), Kind::ok())
        })
        .collect()
}

#[test]
fn a_quiet_second_production_database_keeps_its_newest_backup() {
    let now = now();
    // `billing` is a production database that is not called `production`;
    // its dump job broke 198 days ago.
    let history = dailies_until("billing", now - TimeDelta::days(198), 30);
    let newest = history.last().unwrap().0.clone();
    let inv = inventory("gs://p", &history, &[]);
    let (p, _, report) = plan_and_audit(&PolicySet::default(), now, ("gcs", &inv), None, &[]);

    let series = &p.series[0];
    assert!(!series.abandoned, "billing abandoned:\n{p}");
    match &p.decision(&newest).unwrap().decision {
        Decision::Keep { .. } => {}
        other => panic!("billing's newest backup: {other:?}\n{p}"),
    }
    let stale: Vec<_> = report.with_code("stale_backup").collect();
    assert_eq!(stale.len(), 1, "{report}");
    assert_eq!(stale[0].severity, Severity::Critical, "{report}");
    assert_eq!(stale[0].subject.as_deref(), Some(&*newest.to_string()));
}

#[test]
fn a_quiet_branch_namespace_is_abandoned() {
    let now = now();
    let branch = crate::naming::namespace_for_branch("feature/Fix-Login");
    let history = dailies_until(branch.as_str(), now - TimeDelta::days(20), 3);
    let inv = inventory("gs://p", &history, &[]);
    let (p, _, report) = plan_and_audit(&PolicySet::default(), now, ("gcs", &inv), None, &[]);
    assert!(p.series[0].abandoned, "{p}");
    assert!(p.series[0].backups.iter().all(|b| b.decision.is_delete()));
    assert_eq!(report.with_code("namespace_abandoned").count(), 1);
    // Quiet is what a branch does: its staleness is not critical.
    assert!(
        report
            .with_code("stale_backup")
            .all(|f| f.severity != Severity::Critical),
        "{report}"
    );
}

#[test]
fn a_pattern_the_policy_marks_as_branches_is_abandoned_too() {
    let now = now();
    let mut history = dailies_until("preview-42", now - TimeDelta::days(20), 3);
    history.extend(dailies_until("billing", now - TimeDelta::days(20), 3));
    let inv = inventory("gs://p", &history, &[]);
    let policies = PolicySet::from_json(r#"{"branch_namespaces": ["preview-*"]}"#).unwrap();
    let (p, _, _) = plan_and_audit(&policies, now, ("gcs", &inv), None, &[]);
    let abandoned = |ns: &str| {
        p.series
            .iter()
            .find(|s| s.series.namespace.as_str() == ns)
            .unwrap()
            .abandoned
    };
    assert!(abandoned("preview-42"), "{p}");
    assert!(!abandoned("billing"), "{p}");
}

#[test]
fn a_branch_pattern_may_not_cover_production() {
    let err = PolicySet::from_json(r#"{"branch_namespaces": ["prod*"]}"#).unwrap_err();
    assert!(err.to_string().contains("branch_namespaces"), "{err}");
}
