//! The catalog over in-memory buckets: each fact of a row from the
//! inventories, plans, audit and drill records retention works with.

use chrono::{DateTime, TimeDelta, TimeZone, Utc};

use super::*;
use crate::drill::DrillRecord;
use crate::naming::BackupId;
use crate::retention::testutil::{
    Kind, MarkerVerifier, MemStore, SEG, base_id, bid, data_size, populate, populate_wal,
};
use crate::retention::{InvalidKind, PolicySet};
use crate::store::ObjectStore;
use crate::wal::WalFile;

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 27, 12, 0, 0).unwrap()
}

/// `app` in namespace `a` keeps its newest backup and is replicated; `b`
/// keeps two and is not.
fn policies() -> PolicySet {
    PolicySet::from_json(
        r#"{"rules": [
            {"match": "a", "keep_last": 1, "replicated": true},
            {"match": "*", "keep_last": 2}
        ]}"#,
    )
    .unwrap()
}

fn drill(id: &BackupId, run_at: DateTime<Utc>, success: bool) -> DrillRecord {
    DrillRecord {
        backup_id: id.to_string(),
        run_id: format!("{}-0000aa", run_at.format("%Y%m%dT%H%M%SZ")),
        namespace: id.namespace.clone(),
        target_database: "app_drill".into(),
        started_at: run_at,
        finished_at: run_at + TimeDelta::minutes(2),
        success,
        tables_checked: 1,
        mismatches: Vec::new(),
        error: (!success).then(|| "restore failed: injected".to_string()),
        restored_from: Some("gcs".into()),
    }
}

fn put_drill(store: &MemStore, record: &DrillRecord) {
    store.insert(&record.key().unwrap(), record.to_bytes());
}

struct World {
    gcs: MemStore,
    s3: MemStore,
    policies: PolicySet,
    a1: BackupId,
    a2: BackupId,
    b1: BackupId,
}

/// `a`: two backups, the newer copied to S3 and drilled; the older drilled
/// twice (passed, then failed). `b`: one backup, in GCS only.
fn world() -> World {
    let (gcs, s3) = (MemStore::new("gs://p"), MemStore::new("s3://r"));
    let a1 = bid("a", "app", now() - TimeDelta::days(2), 1);
    let a2 = bid("a", "app", now() - TimeDelta::days(1), 2);
    let b1 = bid("b", "shop", now() - TimeDelta::hours(3), 3);
    let ok = |plaintext, rows| Kind::Verified { plaintext, rows };
    populate(
        &gcs,
        &[
            (a1.clone(), ok(1000, 10)),
            (a2.clone(), ok(2000, 20)),
            (b1.clone(), ok(3000, 30)),
        ],
    );
    populate(&s3, &[(a2.clone(), ok(2000, 20))]);
    put_drill(&gcs, &drill(&a2, now() - TimeDelta::hours(20), true));
    put_drill(&gcs, &drill(&a1, now() - TimeDelta::hours(40), true));
    put_drill(&gcs, &drill(&a1, now() - TimeDelta::hours(30), false));
    World {
        gcs,
        s3,
        policies: policies(),
        a1,
        a2,
        b1,
    }
}

impl World {
    fn sources(&self) -> Sources<'_> {
        Sources {
            primary: &self.gcs,
            replica: Some(&self.s3 as &dyn ObjectStore),
            verifier: &MarkerVerifier,
            policies: &self.policies,
            concurrency: 4,
        }
    }

    async fn list(&self, filter: &Filter) -> Listing {
        list(&self.sources(), now(), filter).await.unwrap()
    }
}

fn row<'a>(l: &'a Listing, id: &BackupId) -> &'a BackupRow {
    let id = id.to_string();
    l.backups.iter().find(|r| r.id == id).unwrap()
}

#[tokio::test]
async fn each_row_says_what_retention_and_the_drills_know() {
    let w = world();
    let l = w.list(&Filter::default()).await;
    assert_eq!(l.schema, "backstop.list/v1");
    let ids: Vec<&str> = l.backups.iter().map(|r| r.id.as_str()).collect();
    let want = [&w.a2, &w.a1, &w.b1].map(|id| id.to_string());
    assert_eq!(ids, want, "by namespace and database, newest first");

    let a2 = row(&l, &w.a2);
    assert_eq!(
        (a2.namespace.as_str(), a2.database.as_str(), a2.kind),
        ("a", "app", BackupKind::Dump)
    );
    assert_eq!(a2.size, Some(data_size(2000)));
    assert_eq!(
        (a2.tables, a2.rows, a2.plaintext_size),
        (Some(1), Some(20), Some(2000))
    );
    assert!(a2.verified, "{a2:?}");
    assert_eq!(a2.digests.as_ref().unwrap().chunks, 1);
    assert_eq!(
        (a2.in_gcs, a2.in_s3, a2.parity),
        (Some(true), Some(true), Parity::InSync)
    );
    assert_eq!(a2.retention.action, Action::Keep);
    assert_eq!(a2.retention.rule.as_deref(), Some("a"));
    assert_eq!(a2.retention.reasons, ["newest verified", "last #1"]);
    let drill = a2.last_drill.as_ref().unwrap();
    assert_eq!(drill.result, DrillResult::Passed);
    assert_eq!(
        drill.finished_at,
        Some(now() - TimeDelta::hours(20) + TimeDelta::minutes(2))
    );
    assert_eq!(drill.target_database.as_deref(), Some("app_drill"));
    assert!(
        drill.record.starts_with("gs://p/_drills/a/app/"),
        "{}",
        drill.record
    );
    assert_eq!(a2.copies.len(), 2);

    // Not kept by keep_last 1, not in the replica past its grace period.
    let a1 = row(&l, &w.a1);
    assert_eq!(
        (a1.in_gcs, a1.in_s3, a1.parity),
        (Some(true), Some(false), Parity::Missing)
    );
    assert_eq!(a1.retention.action, Action::Delete);
    assert_eq!(a1.retention.reasons, ["expired"]);
    let last = a1.last_drill.as_ref().unwrap();
    assert_eq!(
        last.result,
        DrillResult::Failed,
        "the newer of its two drills"
    );
    assert_eq!(last.error.as_deref(), Some("restore failed: injected"));

    let b1 = row(&l, &w.b1);
    assert_eq!((b1.in_s3, b1.parity), (Some(false), Parity::NotReplicated));
    assert_eq!(b1.retention.rule.as_deref(), Some("*"));
    assert_eq!(b1.retention.action, Action::Keep);
    assert!(b1.last_drill.is_none());
    assert_eq!(b1.rows, Some(30));

    let clouds: Vec<_> = l
        .clouds
        .iter()
        .map(|c| (c.cloud.as_str(), c.listed, c.backups))
        .collect();
    assert_eq!(clouds, [("gcs", true, 3), ("s3", true, 1)]);
}

#[tokio::test]
async fn invalid_copies_differing_copies_and_young_missing_ones() {
    let w = world();
    // The replica's copy of a2 is another backup's bytes.
    let a2_other = Kind::Verified {
        plaintext: 5000,
        rows: 20,
    };
    let s3 = MemStore::new("s3://r");
    populate(&s3, &[(w.a2.clone(), a2_other)]);
    // A bad signature in GCS, and a backup an hour old not copied yet.
    let bad = bid("a", "app", now() - TimeDelta::hours(2), 4);
    let young = bid("a", "other", now() - TimeDelta::hours(1), 5);
    populate(
        &w.gcs,
        &[
            (bad.clone(), Kind::Invalid(InvalidKind::BadSignature)),
            (young.clone(), Kind::ok()),
        ],
    );
    let src = Sources {
        replica: Some(&s3 as &dyn ObjectStore),
        ..w.sources()
    };
    let l = list(&src, now(), &Filter::default()).await.unwrap();
    assert_eq!(row(&l, &w.a2).parity, Parity::Mismatch);
    let bad = row(&l, &bad);
    assert!(!bad.verified);
    assert_eq!(bad.status, "invalid");
    assert!(
        bad.status_detail
            .as_deref()
            .unwrap()
            .starts_with("bad_signature"),
        "{bad:?}"
    );
    assert_eq!(
        (bad.retention.action, bad.retention.reasons.as_slice()),
        (Action::Hold, &["invalid".to_string()][..])
    );
    assert_eq!((bad.rows, bad.tables), (None, None), "no trusted manifest");
    assert_eq!(row(&l, &young).parity, Parity::Pending);
}

#[tokio::test]
async fn an_unlisted_replica_is_unknown_and_no_listing_is_an_error() {
    let w = world();
    w.s3.fail_list_page(Some(0));
    let l = w.list(&Filter::default()).await;
    let s3 = &l.clouds[1];
    assert!(!s3.listed && s3.error.is_some(), "{s3:?}");
    let a2 = row(&l, &w.a2);
    assert_eq!(
        (a2.in_gcs, a2.in_s3, a2.parity),
        (Some(true), None, Parity::Unknown)
    );
    assert!(
        l.table().contains("s3://r (s3) was not listed"),
        "{}",
        l.table()
    );

    w.gcs.fail_list_page(Some(0));
    let err = list(&w.sources(), now(), &Filter::default())
        .await
        .unwrap_err();
    assert!(matches!(err, CatalogError::Unlisted { .. }), "{err}");
    assert!(
        std::error::Error::source(&err).is_some(),
        "the store's error is its source"
    );
    assert!(err.to_string().contains("backstop ping"), "{err}");
}

#[tokio::test]
async fn filters_select_namespaces_times_and_the_newest_per_series() {
    let w = world();
    let ids = |l: &Listing| l.backups.iter().map(|r| r.id.clone()).collect::<Vec<_>>();
    let only_a = w
        .list(&Filter {
            namespace: Some("a".into()),
            ..Filter::default()
        })
        .await;
    assert_eq!(ids(&only_a), [w.a2.to_string(), w.a1.to_string()]);
    let glob = w
        .list(&Filter {
            namespace: Some("*b".into()),
            ..Filter::default()
        })
        .await;
    assert_eq!(ids(&glob), [w.b1.to_string()]);
    let since = parse_since("36h", now()).unwrap();
    let recent = w
        .list(&Filter {
            since: Some(since),
            ..Filter::default()
        })
        .await;
    assert_eq!(ids(&recent), [w.a2.to_string(), w.b1.to_string()]);
    let newest = w
        .list(&Filter {
            limit: Some(1),
            ..Filter::default()
        })
        .await;
    assert_eq!(ids(&newest), [w.a2.to_string(), w.b1.to_string()]);
}

#[test]
fn since_takes_a_time_a_date_or_an_age() {
    let at = |s: &str| parse_since(s, now());
    assert_eq!(
        at("2026-11-20T03:00:00Z"),
        Ok(Utc.with_ymd_and_hms(2026, 11, 20, 3, 0, 0).unwrap())
    );
    assert_eq!(
        at("2026-11-20"),
        Ok(Utc.with_ymd_and_hms(2026, 11, 20, 0, 0, 0).unwrap())
    );
    assert_eq!(at("1d12h"), Ok(now() - TimeDelta::hours(36)));
    let err = at("last week").unwrap_err();
    assert!(err.contains("7d"), "{err}");
}

#[tokio::test]
async fn base_backups_and_the_wal_range_of_each_cluster() {
    let w = world();
    let base = base_id("a", now() - TimeDelta::hours(5), 3);
    populate(&w.gcs, &[(base.clone(), Kind::ok())]);
    let seg = |n| WalFile::segment(1, n, SEG).to_string();
    let at = now() - TimeDelta::hours(4);
    let files: Vec<String> = (1..=5).map(seg).collect();
    let specs: Vec<_> = files
        .iter()
        .map(|f| {
            (
                "a",
                f.as_str(),
                at,
                crate::retention::testutil::WalState::Committed,
            )
        })
        .collect();
    populate_wal(&w.gcs, &specs);
    let l = w.list(&Filter::default()).await;
    let r = row(&l, &base);
    assert_eq!(r.kind, BackupKind::BaseBackup);
    assert_eq!(
        r.system_identifier,
        Some(crate::retention::testutil::SYSID.to_string())
    );
    assert_eq!(l.wal.len(), 1);
    let wal = &l.wal[0];
    assert_eq!(
        (wal.namespace.as_str(), wal.timelines.as_slice()),
        ("a", &[1][..])
    );
    assert_eq!(
        (wal.first.as_deref(), wal.last.as_deref()),
        (Some(seg(1).as_str()), Some(seg(5).as_str()))
    );
    assert_eq!((wal.files, wal.in_gcs, wal.in_s3), (5, Some(5), Some(0)));
    // Kept from the base backup's start_wal; the two segments before it go.
    assert_eq!(wal.keep_from.as_deref(), Some(seg(3).as_str()));
    assert_eq!(wal.to_delete, 2);
    assert_eq!(
        wal.verified, 3,
        "segments below every base backup are not read"
    );
    assert!(l.table().contains("\nWAL archive\n"), "{}", l.table());
    let other = w
        .list(&Filter {
            namespace: Some("b".into()),
            ..Filter::default()
        })
        .await;
    assert!(other.wal.is_empty());
}

#[tokio::test]
async fn show_has_the_tables_and_every_drill_newest_first() {
    let w = world();
    let shown = show(&w.sources(), now(), &w.a1).await.unwrap();
    assert_eq!(shown.schema, "backstop.show/v1");
    assert_eq!(shown.backup.id, w.a1.to_string());
    assert_eq!(shown.tables.get("public.rows"), Some(&10));
    let results: Vec<_> = shown.drills.iter().map(|d| d.result).collect();
    assert_eq!(results, [DrillResult::Failed, DrillResult::Passed]);
    assert_eq!(shown.backup.last_drill.as_ref(), shown.drills.first());
    let text = shown.to_string();
    assert!(text.contains("public.rows  10"), "{text}");
    assert!(text.contains("FAILED into app_drill from gcs"), "{text}");

    let gone = bid("a", "app", now(), 9);
    let err = show(&w.sources(), now(), &gone).await.unwrap_err();
    assert!(err.to_string().contains("gs://p or s3://r"), "{err}");
}

#[tokio::test]
async fn a_broken_drill_record_is_shown_as_unreadable() {
    let w = world();
    let record = drill(&w.b1, now() - TimeDelta::hours(1), true);
    w.gcs.insert(&record.key().unwrap(), "not json");
    let l = w.list(&Filter::default()).await;
    let d = row(&l, &w.b1).last_drill.clone().unwrap();
    assert_eq!(d.result, DrillResult::Unreadable);
    assert_eq!(d.run_id.as_deref(), Some(record.run_id.as_str()));
    assert!(d.error.unwrap().contains("is not a drill record"));
}

#[tokio::test]
async fn the_table_has_a_header_and_a_row_per_backup() {
    let w = world();
    let table = w.list(&Filter::default()).await.table();
    let lines: Vec<&str> = table.lines().collect();
    let header: Vec<&str> = lines[0]
        .split("  ")
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .collect();
    assert_eq!(header, super::render::HEADER);
    assert_eq!(lines.len(), 4, "{table}");
    let a2 = lines[1];
    for cell in [
        &w.a2.stamp(),
        "2.1 KiB",
        "1/20",
        "yes",
        "passed",
        "keep (newest verified, last #1)",
    ] {
        assert!(a2.contains(cell), "{cell:?} not in {a2:?}");
    }
    assert!(
        lines[2].contains("MISSING") && lines[2].contains("delete (expired)"),
        "{}",
        lines[2]
    );
    assert!(
        lines[3].contains("no (not replicated)") && lines[3].contains("never"),
        "{}",
        lines[3]
    );
    assert_eq!(lines[1].split_whitespace().next(), Some("a"));
    assert_eq!(format_bytes(1536), "1.5 KiB");
    assert_eq!(format_bytes(12), "12 B");
}

#[tokio::test]
async fn the_json_has_the_documented_fields() {
    let w = world();
    let v: serde_json::Value =
        serde_json::from_str(&w.list(&Filter::default()).await.to_json()).unwrap();
    assert_eq!(v["schema"], "backstop.list/v1");
    let r = &v["backups"][0];
    for field in [
        "id",
        "namespace",
        "database",
        "kind",
        "system_identifier",
        "taken_at",
        "finished_at",
        "size",
        "plaintext_size",
        "tables",
        "rows",
        "verified",
        "status",
        "status_detail",
        "digests",
        "in_gcs",
        "in_s3",
        "parity",
        "last_drill",
        "retention",
        "copies",
    ] {
        assert!(r.get(field).is_some(), "{field} missing from {r}");
    }
    assert_eq!(r["kind"], "dump");
    assert_eq!(r["parity"], "in_sync");
    assert_eq!(r["retention"]["action"], "keep");
    assert_eq!(r["last_drill"]["result"], "passed");
    let back: Listing = serde_json::from_value(v).unwrap();
    assert_eq!(back.backups.len(), 3);
}
