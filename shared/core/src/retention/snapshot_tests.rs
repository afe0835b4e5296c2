//! Snapshot tests of plans and reports for fixed histories, and scenario
//! tests of the audit checks.

use chrono::{DateTime, TimeDelta, TimeZone, Utc};

use super::audit::{AuditInput, BucketConfig, CloudInput, Severity, audit, lifecycle_findings};
use super::execute::{DEFAULT_VERIFY_CONCURRENCY, apply, collect};
use super::inventory::InvalidKind;
use super::plan::plan;
use super::plan_and_audit;
use super::policy::{NamespacePattern, NamespaceRule, PolicySet, RetentionPolicy};
use super::testutil::{Kind, MarkerVerifier, MemStore, bid, inventory, ns, populate};
use crate::drill::DrillRecord;
use crate::naming::BackupId;

fn at(y: i32, m: u32, d: u32, h: u32, min: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(y, m, d, h, min, 0).unwrap()
}

fn dailies(namespace: &str, db: &str, first: DateTime<Utc>, days: i64) -> Vec<(BackupId, Kind)> {
    (0..days)
        .map(|i| {
            (
                bid(namespace, db, first + TimeDelta::days(i), i as u32),
                Kind::ok(),
            )
        })
        .collect()
}

fn drill(namespace: &str, finished: DateTime<Utc>, success: bool) -> DrillRecord {
    DrillRecord {
        backup_id: format!("{namespace}/app/20261101T030000Z-000001"),
        run_id: crate::drill::new_run_id(finished),
        namespace: ns(namespace),
        target_database: "drill_app".into(),
        started_at: finished - TimeDelta::minutes(5),
        finished_at: finished,
        success,
        tables_checked: 12,
        mismatches: Vec::new(),
        error: (!success).then(|| "pg_restore exited with status 1".into()),
        restored_from: Some("gcs".into()),
    }
}

#[test]
fn year_of_dailies() {
    let now = at(2026, 11, 27, 4, 0);
    let mut history = dailies("production", "app", at(2025, 11, 28, 3, 0), 365);
    // A live branch with a few backups, and one that went quiet 20 days ago.
    history.extend((0..5).map(|i| {
        (
            bid(
                "br-feat-login",
                "app",
                now - TimeDelta::hours(10 * i + 2),
                500 + i as u32,
            ),
            Kind::ok(),
        )
    }));
    history.extend(dailies("br-feat-old", "app", now - TimeDelta::days(25), 5));
    let inv = inventory("gs://backstop-prod", &history, &[]);
    let p = plan(&inv, &PolicySet::default(), now);
    // 7 dailies; 2 more weeklies (the two newest weeks' are dailies); 11
    // more monthlies (this month's is a daily).
    let prod = &p
        .series
        .iter()
        .find(|s| s.series.namespace.as_str() == "production")
        .unwrap();
    assert_eq!(
        prod.backups
            .iter()
            .filter(|b| !b.decision.is_delete())
            .count(),
        20
    );
    insta::assert_snapshot!(p.to_string());
}

#[test]
fn stalled_production_keeps_its_newest_and_is_flagged() {
    let now = at(2026, 11, 27, 4, 0);
    // A year of dailies that stopped 90 days ago.
    let last = now - TimeDelta::days(90);
    let history = dailies("production", "app", last - TimeDelta::days(200), 201);
    let inv = inventory("gs://backstop-prod", &history, &[]);
    let policies = PolicySet::default();
    let drills = [drill("production", now - TimeDelta::days(95), true)];
    let (p, _, report) = plan_and_audit(&policies, now, ("gcs", &inv), None, &drills);
    let newest = &prod_newest(&history);
    assert!(matches!(
        p.decision(newest).unwrap().decision,
        super::Decision::Keep { .. }
    ));
    // Relative to the newest backup, not the clock: 7 dailies, 2 more
    // weeklies, 6 more monthlies (February to July).
    assert_eq!(p.count(|d| !d.is_delete()), 7 + 2 + 6);
    let stale: Vec<_> = report.with_code("stale_backup").collect();
    assert_eq!(stale.len(), 1);
    assert_eq!(stale[0].severity, Severity::Critical);
    assert_eq!(report.with_code("restore_drill_stale").count(), 1);
    insta::assert_snapshot!("stalled_production_plan", p.to_string());
    insta::assert_snapshot!("stalled_production_report", report.to_string());
}

fn prod_newest(history: &[(BackupId, Kind)]) -> BackupId {
    history.iter().map(|(id, _)| id).max().unwrap().clone()
}

#[test]
fn burst_of_junk_backups() {
    let now = at(2026, 11, 27, 12, 0);
    let mut history = dailies("production", "app", at(2026, 11, 17, 3, 0), 10);
    let kinds = [
        Kind::Invalid(InvalidKind::BadSignature),
        Kind::Invalid(InvalidKind::Plaintext),
        Kind::Invalid(InvalidKind::Unsigned),
        Kind::NotChecked,
        Kind::data_only(),
        Kind::Incomplete {
            data: true,
            sig: true,
            manifest: false,
        },
    ];
    // Thirty junk backups in the last day, all newer than the good ones.
    for i in 0..30u32 {
        let t = at(2026, 11, 26, 12, 0) + TimeDelta::minutes(47 * i as i64);
        history.push((
            bid("production", "app", t, 0x100 + i),
            kinds[i as usize % kinds.len()].clone(),
        ));
    }
    let inv = inventory(
        "gs://backstop-prod",
        &history,
        &[
            "production/app/dump.sql",
            "README.txt",
            "production/app/20261126T120000Z-000100/extra.bin",
        ],
    );
    let policies = PolicySet::default();
    let drills = [drill("production", now - TimeDelta::days(2), true)];
    let (p, _, report) = plan_and_audit(&policies, now, ("gcs", &inv), None, &drills);
    // The ten good dailies: 7 kept as dailies, the older 3 by the weekly and
    // monthly rules or deleted; the junk pushed none of them out.
    let good_kept = history[..10]
        .iter()
        .filter(|(id, _)| !p.decision(id).unwrap().decision.is_delete())
        .count();
    let clean = inventory("gs://backstop-prod", &history[..10], &[]);
    assert_eq!(
        good_kept,
        plan(&clean, &policies, now).count(|d| !d.is_delete())
    );
    assert!(report.has_critical());
    assert_eq!(report.with_code("plaintext_backup").count(), 5);
    insta::assert_snapshot!("junk_burst_plan", p.to_string());
    insta::assert_snapshot!("junk_burst_report", report.to_string());
    insta::assert_snapshot!("junk_burst_report_json", report.to_json());
}

#[test]
fn month_boundary_leap_day_and_new_year() {
    let policies = PolicySet {
        rules: vec![NamespaceRule {
            pattern: NamespacePattern::new("production").unwrap(),
            policy: RetentionPolicy {
                keep_hourly: 3,
                keep_daily: 4,
                keep_weekly: 2,
                keep_monthly: 3,
                keep_yearly: 2,
                ..RetentionPolicy::default()
            },
            protected: true,
            replicated: false,
            abandon_after: None,
            stale_after: Some(TimeDelta::hours(26)),
            drill_max_age: None,
            base_backups: None,
        }],
        ..PolicySet::default()
    };
    // Every 6 hours across 2028-02-29 into March, and across New Year
    // 2027/2028 (2028-01-01 is a Saturday of ISO week 2027-W52).
    let mut history: Vec<_> = (0..20)
        .map(|i| {
            (
                bid(
                    "production",
                    "app",
                    at(2028, 2, 27, 1, 30) + TimeDelta::hours(6 * i),
                    i as u32,
                ),
                Kind::ok(),
            )
        })
        .collect();
    history.extend((0..16).map(|i| {
        (
            bid(
                "production",
                "auth",
                at(2027, 12, 30, 23, 59) + TimeDelta::hours(6 * i),
                100 + i as u32,
            ),
            Kind::ok(),
        )
    }));
    let inv = inventory("gs://backstop-prod", &history, &[]);
    let p = plan(&inv, &policies, at(2028, 3, 3, 0, 0));
    insta::assert_snapshot!(p.to_string());
}

#[test]
fn seed_lifecycle_rule_can_never_fire() {
    // What Terraform produced in the seed: age 60 plus isLive false, on a
    // bucket without versioning.
    let seed = r#"{
      "kind": "storage#bucket", "name": "ufincs-backups",
      "versioning": {"enabled": false},
      "lifecycle": {"rule": [{"action": {"type": "Delete"}, "condition": {"age": 60, "isLive": false}}]}
    }"#;
    let bucket = BucketConfig::from_gcs_json(seed).unwrap();
    assert!(!bucket.versioning_enabled);
    assert_eq!(bucket.lifecycle_rules[0].age_days, Some(60));
    assert_eq!(bucket.lifecycle_rules[0].is_live, Some(false));
    let findings = lifecycle_findings("gcs", &bucket, &PolicySet::default());
    assert_eq!(findings.len(), 1, "{findings:#?}");
    assert_eq!(findings[0].code, "lifecycle_rule_cannot_fire");
    assert_eq!(findings[0].severity, Severity::Critical);
    insta::assert_snapshot!(findings[0].to_string());

    // The same through gcloud's output shape and Terraform's spelling.
    for doc in [
        r#"{"name":"b","versioning_enabled":false,"lifecycle_config":{"rule":[{"action":{"type":"Delete"},"condition":{"age":60,"isLive":false}}]}}"#,
        r#"{"name":"b","lifecycle":{"rule":[{"action":{"type":"Delete"},"condition":{"age":"60","withState":"ARCHIVED"}}]}}"#,
        r#"{"name":"b","lifecycle":{"rule":[{"action":{"type":"Delete"},"condition":{"daysSinceNoncurrentTime":7}}]}}"#,
        r#"{"name":"b","lifecycle":{"rule":[{"action":{"type":"Delete"},"condition":{"numNewerVersions":3}}]}}"#,
    ] {
        let b = BucketConfig::from_gcs_json(doc).unwrap();
        let f = lifecycle_findings("gcs", &b, &PolicySet::default());
        assert_eq!(f.len(), 1, "{doc}: {f:#?}");
        assert_eq!(
            (f[0].code.as_str(), f[0].severity),
            ("lifecycle_rule_cannot_fire", Severity::Critical),
            "{doc}"
        );
    }
}

#[test]
fn corrected_lifecycle_rule_fires_but_fights_the_policy() {
    let fixed = r#"{"name":"ufincs-backups","versioning":{"enabled":false},
      "lifecycle":{"rule":[{"action":{"type":"Delete"},"condition":{"age":60,"isLive":true}}]}}"#;
    let bucket = BucketConfig::from_gcs_json(fixed).unwrap();
    let findings = lifecycle_findings("gcs", &bucket, &PolicySet::default());
    assert_eq!(findings.len(), 1, "{findings:#?}");
    // 60 days is shorter than 12 monthly backups reach.
    assert_eq!(findings[0].code, "lifecycle_shorter_than_policy");
    assert_eq!(findings[0].severity, Severity::Warning);
    // Long enough: only the reminder that it could delete a stalled
    // namespace's newest backup.
    let long = r#"{"lifecycle":{"rule":[{"action":{"type":"Delete"},"condition":{"age":400,"withState":"LIVE"}}]}}"#;
    let f = lifecycle_findings(
        "gcs",
        &BucketConfig::from_gcs_json(long).unwrap(),
        &PolicySet::default(),
    );
    assert_eq!(
        f.iter()
            .map(|f| (f.code.as_str(), f.severity))
            .collect::<Vec<_>>(),
        [("lifecycle_deletes_backups", Severity::Info)]
    );
    // With versioning, noncurrent rules are fine; without one, say so.
    let versioned = r#"{"versioning":{"enabled":true},"lifecycle":{"rule":[{"action":{"type":"Delete"},"condition":{"age":60,"isLive":false}}]}}"#;
    assert!(
        lifecycle_findings(
            "gcs",
            &BucketConfig::from_gcs_json(versioned).unwrap(),
            &PolicySet::default()
        )
        .is_empty()
    );
    let bare = r#"{"versioning":{"enabled":true}}"#;
    let f = lifecycle_findings(
        "gcs",
        &BucketConfig::from_gcs_json(bare).unwrap(),
        &PolicySet::default(),
    );
    assert_eq!(f[0].code, "noncurrent_versions_kept");
    // Field errors name the field.
    let err = BucketConfig::from_gcs_json(r#"{"lifecycle":{"rule":[{"condition":{"age":1}}]}}"#)
        .unwrap_err();
    assert_eq!(err.field, "lifecycle.rule[0].action.type");
    let err = BucketConfig::from_gcs_json(
        r#"{"lifecycle":{"rule":[{"action":{"type":"Delete"},"condition":{"age":-1}}]}}"#,
    )
    .unwrap_err();
    assert_eq!(err.field, "lifecycle.rule[0].condition.age");
}

#[test]
fn parity_between_clouds() {
    let now = at(2026, 11, 27, 5, 0);
    let policies = PolicySet::default();
    let history = dailies("production", "app", at(2026, 11, 20, 3, 0), 8);
    let mut replica_history: Vec<_> = history.clone();
    // The newest is not replicated yet (within grace), one older is missing.
    replica_history.retain(|(id, _)| id != &history[7].0 && id != &history[5].0);
    // One copy differs (another dump under the same name).
    replica_history[2].1 = Kind::Verified {
        plaintext: 999,
        rows: 100,
    };
    // Branch namespaces are not replicated: no parity findings for them.
    let mut primary = history.clone();
    primary.push((
        bid("feat-a", "app", now - TimeDelta::days(1), 9),
        Kind::ok(),
    ));
    // A backup only the replica still has.
    replica_history.push((
        bid("production", "app", at(2026, 11, 26, 15, 0), 77),
        Kind::ok(),
    ));
    let gcs = inventory("gs://p", &primary, &[]);
    let s3 = inventory("s3://r", &replica_history, &[]);
    let drills = [drill("production", now - TimeDelta::days(1), true)];
    let (_, _, report) = plan_and_audit(&policies, now, ("gcs", &gcs), Some(("s3", &s3)), &drills);
    let codes: Vec<(&str, Severity, Option<&str>)> = report
        .findings
        .iter()
        .map(|f| (f.code.as_str(), f.severity, f.subject.as_deref()))
        .collect();
    let id = |i: usize| history[i].0.to_string();
    assert!(
        codes.contains(&("missing_replica", Severity::Critical, Some(&id(5)))),
        "{report}"
    );
    assert!(
        codes.contains(&("replica_pending", Severity::Info, Some(&id(7)))),
        "{report}"
    );
    assert!(
        codes.contains(&("replica_mismatch", Severity::Critical, Some(&id(2)))),
        "{report}"
    );
    assert_eq!(report.with_code("only_in_replica").count(), 1, "{report}");
    assert!(
        report
            .findings
            .iter()
            .all(|f| f.namespace.as_deref() != Some("feat-a")),
        "{report}"
    );
    insta::assert_snapshot!(report.to_string());
}

#[test]
fn audit_flags_drills_shrinks_listing_failures_and_missing_namespaces() {
    let now = at(2026, 11, 27, 12, 0);
    let policies = PolicySet::default();
    let mut history = dailies("production", "app", at(2026, 11, 20, 3, 0), 8);
    history[6].1 = Kind::Verified {
        plaintext: 300,
        rows: 100,
    };
    history[7].1 = Kind::Verified {
        plaintext: 310,
        rows: 20,
    };
    let gcs = inventory("gs://p", &history, &[]);
    let p = plan(&gcs, &policies, now);
    let drills = [
        drill("production", now - TimeDelta::days(30), true),
        drill("production", now - TimeDelta::days(1), false),
    ];
    let report = audit(&AuditInput {
        now,
        policies: &policies,
        primary: CloudInput::listed("gcs", &gcs).with_plan(&p),
        replica: Some(CloudInput::listing_failed(
            "s3",
            "s3://r: list \"\" failed temporarily (503)",
        )),
        drills: &drills,
        extra_findings: Vec::new(),
    });
    let code_sev = |code: &str| {
        report
            .with_code(code)
            .map(|f| f.severity)
            .collect::<Vec<_>>()
    };
    assert_eq!(
        code_sev("backup_shrank"),
        [Severity::Warning, Severity::Warning]
    );
    assert_eq!(code_sev("restore_drill_stale"), [Severity::Critical]);
    assert_eq!(code_sev("restore_drill_failed"), [Severity::Warning]);
    assert_eq!(code_sev("listing_failed"), [Severity::Critical]);
    // Suspects are flagged, and still count toward the policy.
    let newest = &history[7].0;
    assert!(!p.decision(newest).unwrap().decision.is_delete());
    // No production at all: critical; no drill ever: critical.
    let empty = inventory("gs://p", &[], &[]);
    let r = plan_and_audit(&policies, now, ("gcs", &empty), None, &[]).2;
    assert_eq!(
        r.with_code("no_backups").next().unwrap().severity,
        Severity::Critical
    );
    assert_eq!(
        r.with_code("no_restore_drill").next().unwrap().severity,
        Severity::Critical
    );
    insta::assert_snapshot!(report.to_string());
}

#[tokio::test]
async fn dry_run_then_apply_then_audit_reports_nothing_past_policy() {
    let now = at(2026, 11, 27, 12, 0);
    let policies = PolicySet::default();
    let store = MemStore::new("gs://p");
    let mut history = dailies("feat-x", "app", now - TimeDelta::days(6), 5);
    history.push((
        bid("feat-x", "app", now - TimeDelta::days(3), 99),
        Kind::data_only(),
    ));
    populate(&store, &history);
    let inv = collect(&store, &MarkerVerifier, DEFAULT_VERIFY_CONCURRENCY)
        .await
        .unwrap();
    let p = plan(&inv, &policies, now);
    assert_eq!(p.deletes.len(), 4, "{p}");
    let dry = apply(&store, &p, true).await;
    assert_eq!(dry.would_delete.len(), 3 * 3 + 1);
    let dry_report = audit(&AuditInput {
        now,
        policies: &policies,
        primary: CloudInput::listed("gcs", &inv)
            .with_plan(&p)
            .with_applied(&dry),
        replica: None,
        drills: &[],
        extra_findings: Vec::new(),
    });
    assert_eq!(dry_report.with_code("kept_past_policy").count(), 3);
    store.fail_deletes([history[0].0.signature_key()]);
    let applied = apply(&store, &p, false).await;
    assert_eq!(applied.failures.len(), 1);
    assert_eq!(
        applied.failures[0].not_attempted,
        vec![history[0].0.data_key()]
    );
    assert!(
        !store.contains(&history[0].0.manifest_key()) && store.contains(&history[0].0.data_key())
    );
    let report = audit(&AuditInput {
        now,
        policies: &policies,
        primary: CloudInput::listed("gcs", &inv)
            .with_plan(&p)
            .with_applied(&applied),
        replica: None,
        drills: &[],
        extra_findings: Vec::new(),
    });
    let past: Vec<_> = report.with_code("kept_past_policy").collect();
    assert_eq!(past.len(), 1);
    assert!(past[0].message.contains("failed"), "{}", past[0].message);
    // The next run sees the half-deleted backup as an orphan (no manifest)
    // and finishes it.
    store.fail_deletes([]);
    let inv = collect(&store, &MarkerVerifier, DEFAULT_VERIFY_CONCURRENCY)
        .await
        .unwrap();
    let p = plan(&inv, &policies, now);
    assert_eq!(p.deletes.len(), 1);
    assert_eq!(p.deletes[0].reason, super::DeleteReason::Orphan);
    assert!(apply(&store, &p, false).await.is_complete());
    assert_eq!(store.snapshot().len(), 6);
}
