//! Future-dated backups (a dump host with a skewed clock): reported, never
//! the newest for keep rules or staleness, never deleted automatically.

use chrono::{DateTime, TimeDelta, TimeZone, Utc};

use super::audit::Severity;
use super::plan::{Decision, plan};
use super::plan_and_audit;
use super::policy::PolicySet;
use super::testutil::{Kind, bid, inventory};
use crate::naming::BackupId;

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 27, 4, 0, 0).unwrap()
}

fn ok(namespace: &str, t: DateTime<Utc>, nonce: u32) -> (BackupId, Kind) {
    (bid(namespace, "app", t, nonce), Kind::ok())
}

fn is_hold(d: &Decision) -> bool {
    matches!(d, Decision::Hold { .. })
}

#[test]
fn future_backup_is_reported_and_the_stale_check_still_fires() {
    let now = now();
    // Ten dailies that stopped three days ago (stale: more than 26h), and
    // one validly signed backup stamped two days ahead.
    let mut history: Vec<_> = (0..10)
        .map(|i| ok("production", now - TimeDelta::days(12 - i), i as u32))
        .collect();
    let honest_newest = history.last().unwrap().0.clone();
    let future = ok("production", now + TimeDelta::days(2), 99);
    history.push(future.clone());
    let inv = inventory("gs://p", &history, &[]);
    let (p, _, report) = plan_and_audit(&PolicySet::default(), now, ("gcs", &inv), None, &[]);

    let found: Vec<_> = report.with_code("future_backup").collect();
    assert_eq!(found.len(), 1, "{report}");
    assert_eq!(found[0].severity, Severity::Critical);
    assert_eq!(found[0].subject.as_deref(), Some(&*future.0.to_string()));
    let stale: Vec<_> = report.with_code("stale_backup").collect();
    assert_eq!(stale.len(), 1, "{report}");
    assert_eq!(
        stale[0].subject.as_deref(),
        Some(&*honest_newest.to_string())
    );

    let held = &p.decision(&future.0).unwrap().decision;
    assert!(is_hold(held), "future backup: {held:?}");
    match &p.decision(&honest_newest).unwrap().decision {
        Decision::Keep { reasons } => assert_eq!(reasons[0], "newest verified"),
        other => panic!("honest newest: {other:?}"),
    }
    let summary = &report.series[0];
    assert_eq!(
        summary.newest_verified.as_deref(),
        Some(&*honest_newest.to_string())
    );
}

#[test]
fn future_backups_push_out_no_honest_backup() {
    let now = now();
    // `*` keeps the last 2: two future backups must not take both places.
    let honest: Vec<_> = (1..=3)
        .map(|h| ok("feat-x", now - TimeDelta::hours(h), h as u32))
        .collect();
    let future: Vec<_> = (1..=2)
        .map(|d| ok("feat-x", now + TimeDelta::days(d), 10 + d as u32))
        .collect();
    let history: Vec<_> = honest.iter().chain(&future).cloned().collect();
    let inv = inventory("gs://p", &history, &[]);
    let p = plan(&inv, &PolicySet::default(), now);
    let deleted: Vec<_> = p.deletes.iter().map(|op| op.backup.clone()).collect();
    // Only the oldest honest backup goes; the future ones are held.
    assert_eq!(deleted, vec![honest[2].0.clone()], "{p}");
    for (id, _) in &future {
        assert!(is_hold(&p.decision(id).unwrap().decision), "{p}");
    }
}

#[test]
fn future_only_series_has_no_verified_backup() {
    let now = now();
    let history = vec![ok("production", now + TimeDelta::hours(3), 1)];
    let inv = inventory("gs://p", &history, &[]);
    let (p, _, report) = plan_and_audit(&PolicySet::default(), now, ("gcs", &inv), None, &[]);
    assert_eq!(
        report.with_code("no_verified_backup").count(),
        1,
        "{report}"
    );
    assert_eq!(report.with_code("future_backup").count(), 1, "{report}");
    assert!(p.deletes.is_empty());
    assert!(p.series[0].newest_verified().is_none());
}

#[test]
fn a_backup_within_the_skew_is_an_ordinary_backup() {
    let now = now();
    let history = vec![
        ok("production", now - TimeDelta::hours(20), 1),
        ok("production", now + TimeDelta::minutes(5), 2),
    ];
    let inv = inventory("gs://p", &history, &[]);
    let (p, _, report) = plan_and_audit(&PolicySet::default(), now, ("gcs", &inv), None, &[]);
    assert_eq!(report.with_code("future_backup").count(), 0, "{report}");
    assert_eq!(
        p.series[0].newest_verified().map(|b| &b.id),
        Some(&history[1].0)
    );
}

#[test]
fn the_allowed_skew_is_configurable() {
    let now = now();
    let history = vec![ok("production", now + TimeDelta::minutes(30), 1)];
    let inv = inventory("gs://p", &history, &[]);
    let future_count = |policies: &PolicySet| {
        let (_, _, report) = plan_and_audit(policies, now, ("gcs", &inv), None, &[]);
        report.with_code("future_backup").count()
    };
    let default = PolicySet::default().with_clock_skew_setting(None).unwrap();
    assert_eq!(default.max_clock_skew, TimeDelta::minutes(10));
    assert_eq!(future_count(&default), 1);
    let hour = PolicySet::default()
        .with_clock_skew_setting(Some("1h"))
        .unwrap();
    assert_eq!(future_count(&hour), 0);
    let err = PolicySet::default()
        .with_clock_skew_setting(Some("10m"))
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("BACKSTOP_MAX_CLOCK_SKEW is invalid"),
        "{err}"
    );
    assert!(err.contains("min"), "{err}");
}

#[test]
fn a_manifest_started_in_the_future_is_future_dated_too() {
    let now = now();
    let id = bid("production", "app", now - TimeDelta::hours(1), 1);
    let mut inv = inventory("gs://p", &[(id.clone(), Kind::ok())], &[]);
    let mut manifest = super::testutil::manifest_for(&id, 1000, 100);
    manifest.started_at = now + TimeDelta::days(1);
    inv.set_verification(
        &id,
        super::inventory::Verification::Verified {
            manifest: Box::new(manifest),
        },
    );
    let (p, _, report) = plan_and_audit(&PolicySet::default(), now, ("gcs", &inv), None, &[]);
    assert_eq!(report.with_code("future_backup").count(), 1, "{report}");
    assert!(p.series[0].newest_verified().is_none());
    assert!(p.to_string().contains("future-dated"), "{p}");
}
