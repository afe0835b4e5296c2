use backstop_core::naming::{BackupId, Namespace};
use chrono::{TimeDelta, TimeZone};

use super::*;

fn at() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 27, 3, 0, 0).unwrap()
}

fn one_metric() -> Record {
    Record::new("replicator")
        .dimension("Namespace", "production")
        .dimension_set(&["Function"])
        .dimension_set(&["Function", "Namespace"])
        .metric("BackupsReplicated", 1.0, Unit::Count)
        .metric("ReplicatedBytes", 2048.0, Unit::Bytes)
        .property("BackupId", json!("production/app/x"))
}

#[test]
fn a_record_is_an_emf_document_with_every_referenced_member_on_the_root() {
    let v = one_metric().to_json(at()).unwrap();
    let aws = &v["_aws"];
    assert_eq!(aws["Timestamp"], json!(at().timestamp_millis()));
    let directives = aws["CloudWatchMetrics"].as_array().unwrap();
    assert_eq!(directives.len(), 1);
    let d = &directives[0];
    assert_eq!(d["Namespace"], "Backstop");
    assert_eq!(
        d["Dimensions"],
        json!([["Function"], ["Function", "Namespace"]])
    );
    assert_eq!(
        d["Metrics"],
        json!([
            {"Name": "BackupsReplicated", "Unit": "Count"},
            {"Name": "ReplicatedBytes", "Unit": "Bytes"},
        ])
    );
    assert_eq!(v["Function"], "replicator");
    assert_eq!(v["Namespace"], "production");
    assert_eq!(v["BackupsReplicated"], json!(1.0));
    assert_eq!(v["ReplicatedBytes"], json!(2048.0));
    assert_eq!(v["BackupId"], "production/app/x");
    assert_eq!(v.as_object().unwrap().len(), 6, "{v}");
}

#[test]
fn the_limits_of_emf_are_checked_at_their_boundaries() {
    let mut hundred = Record::new("f").dimension_set(&["Function"]);
    for i in 0..MAX_METRICS {
        hundred = hundred.metric(&format!("M{i}"), i as f64, Unit::Count);
    }
    assert!(hundred.to_json(at()).is_ok());
    let over = hundred.metric("One too many", 0.0, Unit::Count);
    assert_eq!(over.to_json(at()), Err(EmfError::TooManyMetrics(101)));

    let names: Vec<String> = (0..MAX_DIMENSIONS).map(|i| format!("D{i}")).collect();
    let mut thirty = Record::new("f").metric("M", 1.0, Unit::Count);
    for n in names.iter().skip(1) {
        thirty = thirty.dimension(n, "v");
    }
    let mut set: Vec<&str> = vec!["Function"];
    set.extend(names.iter().skip(1).map(String::as_str));
    assert_eq!(set.len(), MAX_DIMENSIONS);
    assert!(thirty.clone().dimension_set(&set).to_json(at()).is_ok());
    set.push("D30");
    let over = thirty.dimension("D30", "v").dimension_set(&set);
    assert!(matches!(
        over.to_json(at()),
        Err(EmfError::TooManyDimensions(s)) if s.len() == 31
    ));
}

#[test]
fn records_emf_would_reject_or_misread_are_refused() {
    let undefined = one_metric().dimension_set(&["Function", "Cloud"]);
    assert_eq!(
        undefined.to_json(at()),
        Err(EmfError::UndefinedDimension("Cloud".into()))
    );
    let twice = one_metric().property("Namespace", json!("other"));
    assert_eq!(
        twice.to_json(at()),
        Err(EmfError::Duplicate("Namespace".into()))
    );
    let reserved = one_metric().property("_aws", json!({}));
    assert_eq!(
        reserved.to_json(at()),
        Err(EmfError::Duplicate("_aws".into()))
    );
    let nan = one_metric().metric("Seconds", f64::NAN, Unit::Seconds);
    assert!(
        matches!(nan.to_json(at()), Err(EmfError::NotFinite { name, .. }) if name == "Seconds")
    );
    let infinite = one_metric().metric("Seconds", f64::INFINITY, Unit::Seconds);
    assert!(infinite.to_json(at()).is_err());
    let non_ascii = one_metric().dimension("Database", "bücher");
    assert!(matches!(
        non_ascii.to_json(at()),
        Err(EmfError::BadDimensionValue { name, .. }) if name == "Database"
    ));
    let empty_value = Record::new("")
        .dimension_set(&["Function"])
        .metric("M", 1.0, Unit::Count);
    assert!(matches!(
        empty_value.to_json(at()),
        Err(EmfError::BadDimensionValue { .. })
    ));
    let long_name = one_metric().metric(&"x".repeat(256), 1.0, Unit::Count);
    assert!(matches!(long_name.to_json(at()), Err(EmfError::BadName(_))));
    let no_metric = Record::new("f").dimension_set(&["Function"]);
    assert_eq!(no_metric.to_json(at()), Err(EmfError::Empty));
    let no_set = Record::new("f").metric("M", 1.0, Unit::Count);
    assert_eq!(no_set.to_json(at()), Err(EmfError::Empty));
}

fn backup(ns: &str, db: &str) -> BackupId {
    BackupId::with_nonce(Namespace::new(ns).unwrap(), db, at(), "5a3c01").unwrap()
}

fn base_backup(ns: &str) -> BackupId {
    BackupId::base_backup(Namespace::new(ns).unwrap(), 7_311_111_111_111_111_111, at())
}

#[test]
fn a_copied_backup_counts_once_with_its_bytes_and_seconds() {
    let r = replicator_record(&Outcome::Replicated {
        backup_id: backup("production", "app").to_string(),
        bytes: 307_200,
        sha256: "00".repeat(32),
        seconds: 1.5,
    })
    .unwrap();
    assert_eq!(r.dimension_value("Function"), Some("replicator"));
    assert_eq!(r.dimension_value("Namespace"), Some("production"));
    assert_eq!(r.value(BACKUPS_REPLICATED), Some(1.0));
    assert_eq!(r.value(WAL_FILES_REPLICATED), None);
    assert_eq!(r.value(REPLICATED_BYTES), Some(307_200.0));
    assert_eq!(r.value(REPLICATION_SECONDS), Some(1.5));
    assert_eq!(r.value(REJECTIONS), Some(0.0));
    r.to_json(at()).unwrap();

    let base = replicator_record(&Outcome::Replicated {
        backup_id: base_backup("production").to_string(),
        bytes: 1,
        sha256: String::new(),
        seconds: 0.1,
    })
    .unwrap();
    assert_eq!(
        base.value(BACKUPS_REPLICATED),
        Some(1.0),
        "a base backup is a backup"
    );
}

#[test]
fn an_archived_wal_file_is_not_counted_as_a_backup() {
    let label = "production/.wal/7311111111111111111/00000001/000000010000000000000003";
    assert!(label.parse::<BackupId>().is_err());
    let r = replicator_record(&Outcome::Replicated {
        backup_id: label.into(),
        bytes: 16 << 20,
        sha256: String::new(),
        seconds: 0.2,
    })
    .unwrap();
    assert_eq!(r.value(BACKUPS_REPLICATED), None);
    assert_eq!(r.value(WAL_FILES_REPLICATED), Some(1.0));
    assert_eq!(r.dimension_value("Namespace"), Some("production"));
}

#[test]
fn a_rejection_counts_and_a_redelivery_or_ignored_object_publishes_nothing() {
    let r = replicator_record(&Outcome::Rejected {
        backup_id: backup("staging", "app").to_string(),
        reason: "rewritten_after_commit".into(),
    })
    .unwrap();
    assert_eq!(r.value(REJECTIONS), Some(1.0));
    assert_eq!(r.value(BACKUPS_REPLICATED), None);
    assert_eq!(r.dimension_value("Namespace"), Some("staging"));
    let again = Outcome::AlreadyReplicated {
        backup_id: backup("staging", "app").to_string(),
    };
    assert_eq!(replicator_record(&again), None);
    let ignored = Outcome::Ignored {
        object: "x".into(),
        reason: "y".into(),
    };
    assert_eq!(replicator_record(&ignored), None);
}

fn finding(severity: &str, code: &str, ns: Option<&str>) -> Value {
    json!({"severity": severity, "code": code, "namespace": ns, "cloud": null,
           "subject": null, "message": "m"})
}

fn series(cloud: &str, id: &BackupId, age: Option<i64>) -> Value {
    json!({"cloud": cloud, "namespace": id.namespace.as_str(), "database": id.database,
           "rule": null, "backups": 1, "verified": 1,
           "newest_verified": age.map(|_| id.to_string()),
           "newest_verified_at": age.map(|_| id.taken_at),
           "newest_verified_age_seconds": age,
           "keep": 1, "delete": 0, "hold": 0})
}

fn report() -> Report {
    let (app, odd, base) = (
        backup("production", "app"),
        backup("production", "bücher"),
        base_backup("production"),
    );
    serde_json::from_value(json!({
        "generated_at": at(),
        "critical": 2, "warning": 1, "info": 0, "clouds": [],
        "series": [
            series("gcs", &app, Some(3600)),
            series("s3", &app, Some(7200)),
            series("gcs", &odd, Some(60)),
            series("gcs", &base, Some(86_400)),
            series("gcs", &backup("staging", "app"), None),
        ],
        "findings": [
            finding("critical", "missing_replica", Some("production")),
            finding("critical", "missing_replica", Some("staging")),
            finding("warning", "restore_drill_failed", Some("production")),
        ],
    }))
    .unwrap()
}

fn drill(id: &BackupId, finished_ago: i64, success: bool) -> DrillRecord {
    DrillRecord {
        backup_id: id.to_string(),
        run_id: String::new(),
        namespace: id.namespace.clone(),
        target_database: "drill".into(),
        started_at: at() - TimeDelta::seconds(finished_ago + 60),
        finished_at: at() - TimeDelta::seconds(finished_ago),
        success,
        tables_checked: 1,
        mismatches: Vec::new(),
        error: None,
        restored_from: None,
    }
}

fn find<'a>(records: &'a [Record], metric: &str, dims: &[(&str, &str)]) -> Vec<&'a Record> {
    records
        .iter()
        .filter(|r| r.value(metric).is_some())
        .filter(|r| dims.iter().all(|(k, v)| r.dimension_value(k) == Some(*v)))
        .collect()
}

#[test]
fn a_retention_run_publishes_findings_by_code_and_the_ages_of_backups_and_drills() {
    let app = backup("production", "app");
    let drills = [
        drill(&app, 500, true),
        drill(&app, 100, false),
        drill(&app, 9000, true),
        drill(&base_backup("production"), 40, true),
        drill(&backup("staging", "app"), 10, false),
    ];
    let records = retention_records(&report(), &drills, 4, false);
    for r in &records {
        r.to_json(at()).unwrap_or_else(|e| panic!("{r:?}: {e}"));
    }
    let totals = find(&records, CRITICAL_FINDINGS, &[]);
    assert_eq!(totals.len(), 1);
    assert_eq!(totals[0].value(WARNING_FINDINGS), Some(1.0));
    assert_eq!(totals[0].value(CRITICAL_FINDINGS), Some(2.0));
    assert_eq!(totals[0].value(OBJECTS_DELETED), Some(4.0));

    let codes: Vec<(&str, f64)> = find(&records, FINDINGS, &[])
        .iter()
        .map(|r| {
            (
                r.dimension_value("Code").unwrap(),
                r.value(FINDINGS).unwrap(),
            )
        })
        .collect();
    assert_eq!(
        codes,
        [("missing_replica", 2.0), ("restore_drill_failed", 1.0)]
    );

    let age = |metric, db: &str, cloud| {
        let found = find(
            &records,
            metric,
            &[
                ("Namespace", "production"),
                ("Database", db),
                ("Cloud", cloud),
            ],
        );
        assert!(found.len() <= 1, "{found:?}");
        found.first().and_then(|r| r.value(metric))
    };
    assert_eq!(age(NEWEST_BACKUP_AGE, "app", "gcs"), Some(3600.0));
    assert_eq!(age(NEWEST_BACKUP_AGE, "app", "s3"), Some(7200.0));
    // The dimension value is the key segment: ASCII, as CloudWatch needs.
    assert_eq!(age(NEWEST_BACKUP_AGE, "b%C3%BCcher", "gcs"), Some(60.0));
    let cluster = database_segment(&base_backup("production").database);
    assert!(cluster.starts_with(".cluster-"), "{cluster}");
    assert_eq!(age(NEWEST_BACKUP_AGE, &cluster, "gcs"), None);
    assert_eq!(age(NEWEST_BASE_BACKUP_AGE, &cluster, "gcs"), Some(86_400.0));
    assert!(
        find(&records, NEWEST_BACKUP_AGE, &[("Namespace", "staging")]).is_empty(),
        "no verified backup: no age (the findings say so)"
    );

    let drill_age = |metric, ns| -> Vec<f64> {
        find(&records, metric, &[("Namespace", ns)])
            .iter()
            .map(|r| r.value(metric).unwrap())
            .collect()
    };
    assert_eq!(drill_age(NEWEST_DRILL_AGE, "production"), [500.0]);
    assert_eq!(drill_age(NEWEST_PITR_DRILL_AGE, "production"), [40.0]);
    assert!(drill_age(NEWEST_DRILL_AGE, "staging").is_empty());
}

#[test]
fn a_dry_run_deletes_nothing_and_says_so() {
    let records = retention_records(&report(), &[], 4, true);
    let totals = find(&records, OBJECTS_DELETED, &[]);
    assert_eq!(totals[0].value(OBJECTS_DELETED), Some(0.0));
    let v = totals[0].to_json(at()).unwrap();
    assert_eq!(v["DryRun"], json!(true));
}
