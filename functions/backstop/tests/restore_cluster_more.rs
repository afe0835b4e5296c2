//! `backstop restore-cluster --start` on the local stack, continued from
//! `restore_cluster.rs`: a restored cluster that archives (`--archive`)
//! continues on timeline 2 and both timelines restore; with GCS unreachable
//! the base backup and every WAL file come from the S3 replica; a tampered
//! archived segment stops recovery before the server promotes; a tampered
//! base backup stops extraction, exits 7 (integrity) and leaves nothing.
//!
//!   tests/stack/stack.sh run -- cargo test -p backstop-cli --test restore_cluster_more

mod common;

use std::sync::Arc;
use std::time::Duration;

use backstop_core::events::{ObjectRef, StorageEvent};
use backstop_core::manifest::MAX_MANIFEST_BYTES;
use backstop_core::naming::BackupId;
use backstop_core::replicate::Outcome;
use backstop_core::store::{ObjectStore, ObjectStoreExt, PutOptions};
use backstop_core::wal::{WalFile, WalKey, WalManifest};
use backstop_tests::wal::{AlertLog, replicator};
use backstop_tests::{gcs, s3};
use bytes::Bytes;
use common::{
    Cluster, World, base_backup, between, free_port, ids, restore, restore_with,
    switch_and_archive, try_restore, var, write_row,
};

const CREATE_TABLE: &str =
    "CREATE TABLE t (id int PRIMARY KEY, at timestamptz DEFAULT clock_timestamp())";

/// `STORAGE_EMULATOR_HOST` pointing where nothing listens, with short
/// timeouts: GCS is unreachable for `restore-cluster` and for the
/// `wal-fetch` the restored server runs (it inherits the environment).
fn gcs_unreachable() -> Vec<(String, String)> {
    vec![
        (
            "STORAGE_EMULATOR_HOST".into(),
            format!("http://127.0.0.1:{}", free_port()),
        ),
        ("BACKSTOP_CONNECT_TIMEOUT".into(), "1s".into()),
        ("BACKSTOP_REQUEST_TIMEOUT".into(), "5s".into()),
    ]
}

/// Replicates the namespace to S3 as production does: the replicator
/// handles a finalize notification for every object in GCS (it verifies and
/// copies on the manifests'), and S3 then holds the same keys.
async fn replicate(world: &World) {
    let rep = replicator(&world.keys, &world.namespace, Arc::new(AlertLog::default())).await;
    let bucket = var("BACKSTOP_GCS_BUCKET");
    let prefix = format!("{}/", world.namespace);
    let source = gcs().await.list_all(&prefix).await.unwrap();
    for meta in &source {
        let event = StorageEvent::Finalized(ObjectRef {
            bucket: bucket.clone(),
            name: meta.key.clone(),
            generation: None,
            size: None,
        });
        let outcome = rep
            .handle(&event)
            .await
            .unwrap_or_else(|e| panic!("replicating {}: {e}", meta.key));
        assert!(
            !matches!(outcome, Outcome::Rejected { .. }),
            "{}: {outcome:?}",
            meta.key
        );
    }
    let mut copied: Vec<String> = s3()
        .await
        .list_all(&prefix)
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.key)
        .collect();
    let mut keys: Vec<String> = source.into_iter().map(|m| m.key).collect();
    copied.sort();
    keys.sort();
    assert_eq!(copied, keys, "S3 holds every object of the namespace");
}

/// Flips one byte in the middle of the data object of `key` in `store`
/// (same size; its manifest, signature and listing are unchanged).
async fn tamper(world: &World, store: &dyn ObjectStore, key: &WalKey) {
    let sealed = store
        .get_bytes(&key.manifest_key(), MAX_MANIFEST_BYTES)
        .await
        .unwrap();
    let m = WalManifest::open(&sealed, &[world.keys.signer().verifying_key()], key).unwrap();
    let data_key = m.data_key(key);
    let mut bytes = store.get_bytes(&data_key, 64 << 20).await.unwrap().to_vec();
    let size = bytes.len();
    bytes[size / 2] ^= 0x5a;
    store
        .put_bytes(&data_key, Bytes::from(bytes), PutOptions::default())
        .await
        .unwrap();
    assert_eq!(store.head(&data_key).await.unwrap().size, size as u64);
}

/// The drill records of the namespace in GCS, as JSON.
async fn drill_records(world: &World) -> Vec<serde_json::Value> {
    let store = gcs().await;
    let prefix = format!("_drills/{}/", world.namespace);
    let mut out = Vec::new();
    for meta in store.list_all(&prefix).await.unwrap() {
        let bytes = store.get_bytes(&meta.key, 1 << 20).await.unwrap();
        out.push(serde_json::from_slice(&bytes).unwrap());
    }
    out
}

/// The JSON lines `wal-fetch` printed into the server log (one per call).
fn fetch_reports(log: &str) -> Vec<serde_json::Value> {
    log.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l.trim()).ok())
        .filter(|v| v.get("outcome").is_some() && v.get("ahead").is_some())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_replacement_cluster_archives_timeline_2_and_both_timelines_restore() {
    let world = World::new("tli");
    let source = Cluster::start(&world, &world.env());
    source.psql(CREATE_TABLE);
    let backup = base_backup(&world, &source);
    let mut at = Vec::new();
    for group in [1..=3, 4..=6] {
        for i in group {
            at.push(write_row(&source, i).0);
        }
        switch_and_archive(&source);
    }
    let t = between(&source, &at[3], &at[4]);
    let system_identifier = source.system_identifier();
    // The replacement keeps the source's system identifier: only one of the
    // two may archive into the namespace.
    source.stop();

    let (r1, json) = restore(&world, "replacement", &["--latest", "--archive"]);
    assert_eq!(ids(&r1), "1,2,3,4,5,6", "{json}");
    assert_eq!(json["timeline"], 1, "{json}");
    assert_eq!(json["new_timeline"], 2, "{json}");
    assert_eq!(r1.psql("SHOW archive_mode"), "on", "--archive keeps it");
    assert_eq!(r1.system_identifier(), system_identifier);
    for i in 101..=103 {
        write_row(&r1, i);
    }
    let seg2 = switch_and_archive(&r1);
    assert!(seg2.starts_with("00000002"), "{seg2}");
    r1.wait_archived("00000002.history", Duration::from_secs(120));
    let objects = world.objects().await;
    for file in ["00000002.history", seg2.as_str()] {
        assert!(
            objects
                .iter()
                .any(|k| k.ends_with(&format!("/{file}.json"))),
            "{file} archived by the replacement: {objects:?}"
        );
    }
    r1.stop();
    drop(r1);

    let (r2, json) = restore(&world, "follows-2", &["--latest", "--timeline", "latest"]);
    assert_eq!(ids(&r2), "1,2,3,4,5,6,101,102,103", "{json}");
    assert_eq!(json["backup_id"], backup.as_str(), "{json}");
    assert_eq!(json["timeline"], 2, "{json}");
    assert_eq!(json["wal_through"], seg2.as_str(), "{json}");
    assert_eq!(json["new_timeline"], 3, "{json}");
    assert_eq!(json["success"], true, "{json}");
    assert_eq!(r2.psql("SHOW archive_mode"), "off");
    drop(r2);

    let (r3, json) = restore(&world, "stays-1", &["--to-time", &t, "--timeline", "1"]);
    assert_eq!(ids(&r3), "1,2,3,4", "restored to {t} on timeline 1: {json}");
    assert_eq!(json["timeline"], 1, "{json}");
    assert_eq!(json["success"], true, "{json}");
    let reached = json["target_reached"].as_str().unwrap_or_default();
    assert!(
        reached.starts_with("recovery stopping before commit"),
        "{json}"
    );
    assert_eq!(
        json["new_timeline"], 3,
        "timeline 2 is taken in the archive: {json}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn with_gcs_unreachable_the_base_backup_and_the_wal_come_from_s3() {
    let world = World::new("s3pitr");
    let cluster = Cluster::start(&world, &world.env());
    cluster.psql(CREATE_TABLE);
    write_row(&cluster, 1);
    let backup = base_backup(&world, &cluster);
    let at: Vec<String> = (2..=5).map(|i| write_row(&cluster, i).0).collect();
    switch_and_archive(&cluster);
    let t = between(&cluster, &at[1], &at[2]);
    cluster.stop();
    replicate(&world).await;

    let (r, json) = restore_with(&world, "from-s3", &["--to-time", &t], &gcs_unreachable());
    assert_eq!(ids(&r), "1,2,3", "restored to {t}: {json}");
    assert_eq!(json["backup_id"], backup.as_str(), "{json}");
    assert_eq!(json["cloud"], "s3", "{json}");
    assert_eq!(json["success"], true, "{json}");
    let reached = json["target_reached"].as_str().unwrap_or_default();
    assert!(
        reached.starts_with("recovery stopping before commit"),
        "{json}"
    );
    let record = json["drill_record"].as_str().unwrap_or_default();
    assert!(record.starts_with("s3://"), "{json}");

    let log = r.log_text();
    let reports = fetch_reports(&log);
    let from_s3: Vec<_> = reports.iter().filter(|f| f["cloud"] == "s3").collect();
    assert!(
        !from_s3.is_empty(),
        "no wal-fetch call fetched from S3:\n{log}"
    );
    for f in &from_s3 {
        let reason = f["fallback_reason"].as_str().unwrap_or_default();
        assert!(reason.contains("gcs: unreachable"), "{f}");
    }
    for f in &reports {
        assert!(f["cloud"] == "s3" || f["cloud"] == "local", "{f}");
        for ahead in f["ahead"].as_array().unwrap() {
            let outcome = ahead["outcome"].as_str().unwrap_or_default();
            assert!(!outcome.contains("from gcs"), "{f}");
        }
    }
    let restored = json["wal_segments_fetched"].as_u64().unwrap_or_default();
    assert!(restored >= 1, "{json}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tampered_segment_stops_recovery_before_the_server_promotes() {
    let world = World::new("tampered");
    let cluster = Cluster::start(&world, &world.env());
    cluster.psql(CREATE_TABLE);
    write_row(&cluster, 1);
    let backup: BackupId = base_backup(&world, &cluster).parse().unwrap();
    write_row(&cluster, 2);
    write_row(&cluster, 3);
    let tampered = switch_and_archive(&cluster);
    write_row(&cluster, 4);
    switch_and_archive(&cluster);
    cluster.stop();
    replicate(&world).await;
    let key = WalKey::new(
        world.namespace(),
        backup.system_identifier().unwrap(),
        WalFile::parse(&tampered).unwrap(),
    );
    let (gcs, s3) = (gcs().await, s3().await);
    tamper(&world, &gcs, &key).await;
    tamper(&world, &s3, &key).await;

    let (r, (out, json)) = try_restore(&world, "tampered", &["--latest"], &[]);
    let log = r.log_text();
    assert!(!out.status.success(), "{json}");
    assert!(
        !log.contains("selected new timeline ID") && !log.contains("archive recovery complete"),
        "the server promoted past the tampered {tampered}:\n{log}"
    );
    assert!(
        !log.contains("database system is ready to accept connections"),
        "{log}"
    );
    let t0 = std::time::Instant::now();
    while r.pgdata.join("postmaster.pid").exists() {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "the server still runs"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(r.control_state(), "in archive recovery", "never promoted");
    assert_eq!(json["kind"], "recovery", "{json}");
    // PostgreSQL words restore_command's exit status 126 "command not
    // executable" (15+) or "exit code 126"; either way a FATAL naming the file.
    let error = json["error"].as_str().unwrap_or_default();
    assert!(
        error.contains(&tampered)
            && (error.contains("command not executable") || error.contains("exit code 126")),
        "{error}"
    );
    assert!(
        log.contains(&format!("could not fetch {tampered}")) && log.contains("fails verification"),
        "wal-fetch's reason is in the server log:\n{log}"
    );
    let records = drill_records(&world).await;
    assert!(!records.is_empty(), "the failed drill is recorded");
    for record in &records {
        assert_eq!(record["success"], false, "{record}");
    }
    assert!(
        records
            .iter()
            .any(|r| r["error"].as_str().unwrap_or_default().contains(&tampered)),
        "{records:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tampered_base_backup_exits_with_the_integrity_code_and_leaves_nothing() {
    let world = World::new("tampered-base");
    let cluster = Cluster::start(&world, &world.env());
    cluster.psql(CREATE_TABLE);
    write_row(&cluster, 1);
    let backup: BackupId = base_backup(&world, &cluster).parse().unwrap();
    write_row(&cluster, 2);
    switch_and_archive(&cluster);
    cluster.stop();
    // One byte of the data object in GCS, the cloud extraction reads first:
    // its signed manifest still verifies, so the backup is chosen and the
    // chunk gate must stop it.
    let gcs = gcs().await;
    let data_key = backup.data_key();
    let mut bytes = gcs.get_bytes(&data_key, 1 << 30).await.unwrap().to_vec();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x5a;
    gcs.put_bytes(&data_key, Bytes::from(bytes), PutOptions::default())
        .await
        .unwrap();

    let (r, (out, json)) = try_restore(&world, "tampered-base", &["--latest"], &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(7),
        "integrity, README's exit table: {json}\n{stderr}"
    );
    assert_eq!(json["kind"], "extract", "{json}");
    assert!(
        json["error"]
            .as_str()
            .unwrap_or_default()
            .contains(&data_key),
        "{json}"
    );
    let left = std::fs::read_dir(&r.pgdata).map_or(0, |d| d.count());
    assert_eq!(left, 0, "the data directory is emptied again");
}
