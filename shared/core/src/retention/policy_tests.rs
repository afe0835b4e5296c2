//! Tests of the policy document: parsing, validation, rule matching and
//! the duration formats. Kept out of `policy.rs` so that the policy code
//! stays short enough to read in one go.

use super::*;
use chrono::TimeZone;

fn t(y: i32, m: u32, d: u32, h: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(y, m, d, h, 0, 0).unwrap()
}

#[test]
fn default_policy_round_trips_through_json() {
    let def = PolicySet::default();
    let json = def.to_json().to_string();
    assert_eq!(PolicySet::from_json(&json).unwrap(), def);
    assert_eq!(PolicySet::from_json("{}").unwrap(), def);
    assert_eq!(PolicySet::from_env_value(None).unwrap(), def);
    assert_eq!(PolicySet::from_env_value(Some("  ")).unwrap(), def);
    let doc_example = r#"{
          "version": 1, "incomplete_grace": "6h", "replica_grace": "6h", "shrink_alert_ratio": 0.5,
          "branch_namespaces": [],
          "rules": [
            { "match": "production", "protected": true, "replicated": true,
              "keep_daily": 7, "keep_weekly": 4, "keep_monthly": 12,
              "stale_after": "26h", "drill_max_age": "14d" },
            { "match": "*", "keep_last": 2, "abandon_after": "14d", "stale_after": "8d" } ] }"#;
    assert_eq!(PolicySet::from_json(doc_example).unwrap(), def);
}

#[test]
fn errors_name_the_field() {
    let cases = [
        (
            r#"{"rules":[{"match":"*","keep_dialy":3}]}"#,
            "rules[0].keep_dialy",
        ),
        (
            r#"{"rules":[{"match":"*","keep_last":-1}]}"#,
            "rules[0].keep_last",
        ),
        (
            r#"{"rules":[{"match":"*","keep_last":"2"}]}"#,
            "rules[0].keep_last",
        ),
        (r#"{"rules":[{"keep_last":2}]}"#, "rules[0].match"),
        (
            r#"{"rules":[{"match":"Prod!","keep_last":2}]}"#,
            "rules[0].match",
        ),
        (r#"{"rules":[{"match":"*"}]}"#, "rules[0]"),
        (
            r#"{"rules":[{"match":"x","keep_last":1,"stale_after":"30m"}]}"#,
            "rules[0].stale_after",
        ),
        (
            r#"{"rules":[{"match":"x","keep_last":1,"stale_after":26}]}"#,
            "rules[0].stale_after",
        ),
        (
            r#"{"rules":[{"match":"production","protected":true,"keep_last":1,"abandon_after":"1d"}]}"#,
            "rules[0].abandon_after",
        ),
        (
            r#"{"rules":[{"match":"*","keep_last":1,"abandon_after":"1d"}]}"#,
            "rules[0].abandon_after",
        ),
        (
            r#"{"rules":[{"match":"prod*","keep_last":1,"abandon_after":"1d"}]}"#,
            "rules[0].abandon_after",
        ),
        (
            r#"{"rules":[{"match":"*","keep_last":1},{"match":"production","keep_last":1}]}"#,
            "rules[1].match",
        ),
        (
            r#"{"rules":[{"match":"a","keep_last":1},{"match":"a","keep_last":1}]}"#,
            "rules[1].match",
        ),
        (r#"{"rules":[]}"#, "rules"),
        (r#"{"incomplete_grace":"0h"}"#, "incomplete_grace"),
        (r#"{"shrink_alert_ratio":1.5}"#, "shrink_alert_ratio"),
        (r#"{"version":2}"#, "version"),
        (r#"{"rule":[]}"#, "rule"),
        (r#"[]"#, "(top level)"),
    ];
    for (json, field) in cases {
        match PolicySet::from_json(json) {
            Err(PolicyError::Field { field: f, reason }) => {
                assert_eq!(f, field, "{json}: {reason}");
                let msg = PolicyError::Field { field: f, reason }.to_string();
                assert!(msg.contains(field), "{msg}");
            }
            other => panic!("{json}: expected a field error, got {other:?}"),
        }
    }
    assert!(matches!(
        PolicySet::from_json("{"),
        Err(PolicyError::Json(_))
    ));
}

#[test]
fn production_behind_a_protected_rule_lets_branches_be_abandoned() {
    let set = PolicySet::from_json(
        r#"{"rules":[{"match":"production","protected":true,"keep_daily":3},
                      {"match":"feature-*","keep_last":1,"abandon_after":"3d"},
                      {"match":"*","keep_last":5}]}"#,
    )
    .unwrap();
    assert_eq!(
        set.rule_for("production").unwrap().pattern.as_str(),
        "production"
    );
    assert_eq!(
        set.rule_for("feature-x").unwrap().abandon_after,
        Some(TimeDelta::days(3))
    );
    assert_eq!(set.rule_for("staging").unwrap().pattern.as_str(), "*");
    assert_eq!(set.max_horizon(), Some(TimeDelta::days(3)));
}

#[test]
fn durations_parse_and_format() {
    assert_eq!(parse_duration("26h"), Ok(TimeDelta::hours(26)));
    assert_eq!(parse_duration("1d12h"), Ok(TimeDelta::hours(36)));
    assert_eq!(parse_duration("2w"), Ok(TimeDelta::days(14)));
    assert_eq!(parse_duration("30min"), Ok(TimeDelta::minutes(30)));
    assert_eq!(parse_duration("90s"), Ok(TimeDelta::seconds(90)));
    for bad in [
        "",
        "h",
        "5",
        "5m",
        "5y",
        "-5d",
        "0s",
        "99999999999999999999d",
    ] {
        assert!(parse_duration(bad).is_err(), "{bad}");
    }
    for d in [
        TimeDelta::hours(26),
        TimeDelta::days(14),
        TimeDelta::minutes(90),
        TimeDelta::seconds(61),
    ] {
        assert_eq!(parse_duration(&format_duration(d)), Ok(d));
    }
    assert_eq!(format_duration(TimeDelta::hours(26)), "26h");
    assert_eq!(format_age(TimeDelta::hours(50)), "2d 2h");
}

#[test]
fn globs_match_like_shell_stars() {
    let p = |s| NamespacePattern::new(s).unwrap();
    assert!(p("*").matches("anything"));
    assert!(p("feature-*").matches("feature-x"));
    assert!(!p("feature-*").matches("production"));
    assert!(p("*-preview").matches("a-preview"));
    assert!(p("a*b*c").matches("aXbYbc"));
    assert!(!p("a*b*c").matches("aXbY"));
    assert!(p("production").matches("production"));
    assert!(!p("production").matches("production2"));
    assert!(p("production").is_literal() && !p("p*").is_literal());
}

#[test]
fn restic_buckets_keep_newest_per_period() {
    // Two backups a day for 10 days, newest first.
    let times: Vec<_> = (0..20)
        .map(|i| t(2026, 11, 20, 12) - TimeDelta::hours(12 * i))
        .collect();
    let policy = RetentionPolicy {
        keep_last: 1,
        keep_daily: 3,
        ..RetentionPolicy::default()
    };
    let r = policy.apply(&times);
    let kept: Vec<usize> = (0..times.len()).filter(|&i| !r[i].is_empty()).collect();
    // 12:00 on the 20th (last + daily), then 12:00 on the 19th and 18th.
    assert_eq!(kept, vec![0, 2, 4]);
    assert_eq!(
        r[0].iter().map(|x| x.to_string()).collect::<Vec<_>>(),
        ["last #1", "daily 2026-11-20"]
    );
}

#[test]
fn iso_weeks_cross_years_and_within_is_relative_to_newest() {
    let policy = RetentionPolicy {
        keep_weekly: 2,
        keep_within: Some(TimeDelta::days(2)),
        ..RetentionPolicy::default()
    };
    // 2027-01-01 is a Friday in ISO week 2026-W53.
    let times = vec![
        t(2027, 1, 4, 0),
        t(2027, 1, 1, 0),
        t(2026, 12, 28, 0),
        t(2026, 12, 27, 0),
    ];
    let r = policy.apply(&times);
    assert_eq!(
        r[0],
        vec![
            KeepReason::Weekly("2027-W01".into()),
            KeepReason::Within(TimeDelta::days(2))
        ]
    );
    assert_eq!(r[1], vec![KeepReason::Weekly("2026-W53".into())]);
    assert!(r[2].is_empty() && r[3].is_empty());
}

#[test]
fn base_backups_and_wal_settings_parse_round_trip_and_name_their_fields() {
    let set = PolicySet::from_json(
        r#"{"wal_stale_after": "30min", "wal_orphan_grace": "2d", "rules": [
            {"match": "production", "protected": true, "keep_daily": 7,
             "base_backups": {"keep_last": 2, "keep_within": "3d"}},
            {"match": "*", "keep_last": 2}]}"#,
    )
    .unwrap();
    assert_eq!(set.wal_stale_after, TimeDelta::minutes(30));
    assert_eq!(set.wal_orphan_grace, TimeDelta::days(2));
    let rule = set.rule_for("production").unwrap();
    let cluster = crate::naming::cluster_database(42);
    assert_eq!(rule.policy_for(&cluster).keep_last, 2);
    assert_eq!(rule.policy_for("app").keep_daily, 7);
    assert_eq!(set.rule_for("x").unwrap().policy_for(&cluster).keep_last, 2);
    assert_eq!(PolicySet::from_value(&set.to_json()).unwrap(), set);
    for (json, field) in [
        (
            r#"{"rules":[{"match":"*","keep_last":1,"base_backups":{"keep_dialy":1}}]}"#,
            "rules[0].base_backups.keep_dialy",
        ),
        (
            r#"{"rules":[{"match":"*","keep_last":1,"base_backups":{}}]}"#,
            "rules[0].base_backups",
        ),
        (
            r#"{"rules":[{"match":"*","keep_last":1,"base_backups":2}]}"#,
            "rules[0].base_backups",
        ),
        (r#"{"wal_stale_after":"1m"}"#, "wal_stale_after"),
    ] {
        match PolicySet::from_json(json) {
            Err(PolicyError::Field { field: f, .. }) => assert_eq!(f, field, "{json}"),
            other => panic!("{json}: {other:?}"),
        }
    }
}
