//! Retention end to end on the local stack: a seeded history in both
//! emulators is pruned to exactly the policy in both clouds, and the audit
//! flags what was planted. Backup times come from object names, so history
//! is seeded with backdated names.

use std::sync::Arc;

use backstop_core::crypto::sign_manifest;
use backstop_core::drill::DrillRecord;
use backstop_core::manifest::{CiphertextInfo, MANIFEST_KIND, MANIFEST_VERSION, Manifest};
use backstop_core::naming::BackupId;
use backstop_core::retention::SignatureVerifier;
use backstop_core::retention::{BucketConfig, PolicySet};
use backstop_core::store::{ObjectStore, ObjectStoreExt, PutOptions};
use backstop_functions::retention::{RetentionFunction, RunResult};
use backstop_tests::backups::{
    TestKeys, backup_id, drill_record, put_drill, unique_namespace, write_backup,
};
use backstop_tests::{gcs, s3};
use bytes::Bytes;
use chrono::{Duration, Utc};

/// Copies a backup's three objects byte for byte (what the replicator does).
async fn copy(from: &dyn ObjectStore, to: &dyn ObjectStore, id: &BackupId) {
    for key in [id.data_key(), id.signature_key(), id.manifest_key()] {
        let bytes = from.get_bytes(&key, 64 << 20).await.unwrap();
        to.put_bytes(&key, bytes, PutOptions::default())
            .await
            .unwrap();
    }
}

async fn function(
    keys: &TestKeys,
    policy: serde_json::Value,
    bucket: Option<BucketConfig>,
) -> RetentionFunction {
    let env = backstop_core::config::Env::from_pairs(keys.env_pairs());
    RetentionFunction {
        primary: Arc::new(gcs().await),
        replica: Some(Arc::new(s3().await)),
        verifier: SignatureVerifier {
            keys: backstop_core::trust::TrustedKeys::from_env(&env)
                .await
                .unwrap(),
        },
        policies: PolicySet::from_json(&policy.to_string()).unwrap(),
        dry_run: false,
        bucket_config: bucket,
        alerts: Arc::new(backstop_core::alerts::LogAlerts),
        oidc: None,
        concurrency: backstop_core::retention::DEFAULT_VERIFY_CONCURRENCY,
    }
}

/// Other tests share the buckets and may delete objects while we list; a
/// run that saw such a change deletes nothing and reports a listing
/// failure, so retry a few times.
async fn run(f: &RetentionFunction, dry_run: bool) -> RunResult {
    for _ in 0..5 {
        let r = f
            .run(&backstop_core::events::ScheduleRequest {
                dry_run: Some(dry_run),
            })
            .await;
        if !r.report.findings.iter().any(|x| x.code == "listing_failed") {
            return r;
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
    panic!("listing kept failing");
}

async fn keys_in(store: &dyn ObjectStore, namespace: &str) -> Vec<String> {
    store
        .list_all(&format!("{namespace}/"))
        .await
        .unwrap()
        .into_iter()
        .map(|o| o.key)
        .collect()
}

#[tokio::test]
async fn history_is_pruned_to_exactly_the_policy_in_both_clouds() {
    let keys = TestKeys::generate();
    let ns = unique_namespace("prune");
    let (g, s) = (gcs().await, s3().await);
    let now = Utc::now();
    let mut ids = Vec::new();
    for day in 0..10 {
        let id = backup_id(&ns, now - Duration::days(day) - Duration::minutes(5));
        write_backup(&g, &id, &keys, 2000).await;
        copy(&g, &s, &id).await;
        ids.push(id);
    }
    let policy = serde_json::json!({"version": 1, "rules": [
        {"match": ns, "protected": true, "replicated": true, "keep_daily": 3, "stale_after": "26h", "drill_max_age": "400d"}
    ]});
    let f = function(&keys, policy, None).await;

    let dry = run(&f, true).await;
    assert_eq!(
        dry.deleted.iter().filter(|k| k.starts_with(&ns)).count(),
        7 * 3 * 2,
        "dry run plans 7 backups x 3 objects x 2 clouds"
    );
    assert_eq!(keys_in(&g, &ns).await.len(), 30, "dry run deleted nothing");

    let done = run(&f, false).await;
    assert_eq!(
        done.deleted.iter().filter(|k| k.starts_with(&ns)).count(),
        42
    );
    let mut expected: Vec<String> = ids[..3]
        .iter()
        .flat_map(|id| [id.data_key(), id.manifest_key(), id.signature_key()])
        .collect();
    expected.sort();
    assert_eq!(
        keys_in(&g, &ns).await,
        expected,
        "GCS holds exactly the 3 newest dailies"
    );
    assert_eq!(
        keys_in(&s, &ns).await,
        expected,
        "S3 holds exactly the 3 newest dailies"
    );

    // A second run has nothing left to do.
    let again = run(&f, false).await;
    assert_eq!(
        again.deleted.iter().filter(|k| k.starts_with(&ns)).count(),
        0
    );
}

#[tokio::test]
async fn audit_flags_what_was_planted() {
    let keys = TestKeys::generate();
    let ns = unique_namespace("audit");
    let stale_ns = unique_namespace("stale");
    let (g, s) = (gcs().await, s3().await);
    let now = Utc::now();

    // Present in GCS only, three days old (its own day, so the daily policy keeps it): the replica is missing.
    let lonely = backup_id(&ns, now - Duration::days(3));
    write_backup(&g, &lonely, &keys, 1000).await;
    // Present in both clouds, but the S3 copy is another backup (digests differ).
    let mismatched = backup_id(&ns, now - Duration::hours(20));
    write_backup(&g, &mismatched, &keys, 1000).await;
    write_backup(&s, &mismatched, &keys, 1000).await;
    // A validly signed manifest over a plaintext dump.
    let plain = backup_id(&ns, now - Duration::hours(10));
    let dump = Bytes::from_static(b"PGDMP\x01\x0e\x00 a plaintext pg_dump archive, not encrypted");
    g.put_bytes(&plain.data_key(), dump.clone(), PutOptions::create())
        .await
        .unwrap();
    let manifest = Manifest {
        kind: MANIFEST_KIND.into(),
        version: MANIFEST_VERSION,
        namespace: plain.namespace.clone(),
        database: plain.database.clone(),
        backup_id: plain.to_string(),
        server_version: "15".into(),
        dump_format: "custom".into(),
        started_at: plain.taken_at,
        finished_at: plain.taken_at,
        plaintext_size: dump.len() as u64,
        ciphertext: CiphertextInfo {
            object: "data.pgdump.pgp".into(),
            size: dump.len() as u64,
            sha256: "00".repeat(32),
            crc32c: 0,
            chunk_size: backstop_core::crypto::chunks::CHUNK_SIZE,
            chunks: vec![
                "00".repeat(32);
                backstop_core::crypto::chunks::chunk_count(
                    dump.len() as u64,
                    backstop_core::crypto::chunks::CHUNK_SIZE
                ) as usize
            ],
        },
        recipients: vec![keys.backup.working_fingerprint.clone()],
        signer: keys.signing.fingerprint.clone(),
        tables: Default::default(),
        tool: "test".into(),
        base_backup: None,
    };
    let (bytes, sig) = sign_manifest(&manifest, &keys.signer()).unwrap();
    g.put_bytes(
        &plain.signature_key(),
        Bytes::from(sig),
        PutOptions::create(),
    )
    .await
    .unwrap();
    g.put_bytes(
        &plain.manifest_key(),
        Bytes::from(bytes),
        PutOptions::create(),
    )
    .await
    .unwrap();
    // A data object without manifest, older than the grace period.
    let orphan = backup_id(&ns, now - Duration::days(2));
    g.put_bytes(
        &orphan.data_key(),
        Bytes::from_static(b"\xc1partial"),
        PutOptions::create(),
    )
    .await
    .unwrap();
    // A namespace whose newest backup is three days old.
    let old = backup_id(&stale_ns, now - Duration::days(3));
    write_backup(&g, &old, &keys, 1000).await;

    let bucket =
        BucketConfig::from_gcs_json(include_str!("../fixtures/bucket-seed-lifecycle.json"))
            .unwrap();
    let policy = serde_json::json!({"version": 1, "rules": [
        {"match": ns, "protected": true, "replicated": true, "keep_daily": 30, "stale_after": "26h", "drill_max_age": "400d"},
        {"match": stale_ns, "protected": true, "replicated": false, "keep_daily": 30, "stale_after": "26h", "drill_max_age": "400d"}
    ]});
    let f = function(&keys, policy, Some(bucket)).await;
    let report = run(&f, true).await.report;
    let has = |code: &str, namespace: &str, subject: Option<&BackupId>| {
        report.findings.iter().any(|x| {
            x.code == code
                && x.namespace.as_deref() == Some(namespace)
                && subject.is_none_or(|id| {
                    x.subject
                        .as_deref()
                        .is_some_and(|s| s.contains(&id.to_string()))
                })
        })
    };
    let summary = report.to_string();
    assert!(
        has("missing_replica", &ns, Some(&lonely)),
        "missing replica:\n{summary}"
    );
    assert!(
        has("replica_mismatch", &ns, Some(&mismatched)),
        "digest mismatch:\n{summary}"
    );
    assert!(
        has("plaintext_backup", &ns, Some(&plain)),
        "plaintext:\n{summary}"
    );
    assert!(
        has("orphaned_backup", &ns, Some(&orphan)),
        "orphan:\n{summary}"
    );
    assert!(
        has("stale_backup", &stale_ns, None),
        "stale namespace:\n{summary}"
    );
    assert!(
        report
            .findings
            .iter()
            .any(|x| x.code == "lifecycle_rule_cannot_fire"),
        "lifecycle rule that cannot fire:\n{summary}"
    );
    assert!(report.has_critical());
}

#[tokio::test]
async fn a_drill_recorded_on_the_replica_counts_for_the_audit() {
    let keys = TestKeys::generate();
    let ns = unique_namespace("drill");
    let (g, s) = (gcs().await, s3().await);
    let id = backup_id(&ns, Utc::now() - Duration::hours(2));
    write_backup(&g, &id, &keys, 1000).await;
    copy(&g, &s, &id).await;
    let policy = serde_json::json!({"version": 1, "rules": [
        {"match": ns, "protected": true, "replicated": true, "keep_daily": 7, "stale_after": "26h", "drill_max_age": "2d"}
    ]});
    let f = function(&keys, policy, None).await;
    let drill_findings = |r: &RunResult| -> Vec<String> {
        r.report
            .findings
            .iter()
            .filter(|x| x.namespace.as_deref() == Some(ns.as_str()) && x.code.contains("drill"))
            .map(|x| x.code.clone())
            .collect()
    };
    assert_eq!(
        drill_findings(&run(&f, true).await),
        ["no_restore_drill"],
        "never drilled"
    );

    // The restore ran while GCS was down, so its record went to S3 only.
    let record = DrillRecord {
        started_at: Utc::now() - Duration::minutes(10),
        ..drill_record(&id, Utc::now() - Duration::minutes(5), None, "s3")
    };
    put_drill(&s, &record).await;
    assert!(
        drill_findings(&run(&f, true).await).is_empty(),
        "the drill recorded on S3 is seen"
    );
}

/// Flips one byte of an object in place: same size, new generation.
async fn flip_one_byte(store: &dyn ObjectStore, key: &str) {
    let mut bytes = store.get_bytes(key, 64 << 20).await.unwrap().to_vec();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x01;
    store
        .put_bytes(key, Bytes::from(bytes), PutOptions::default())
        .await
        .unwrap();
}

#[tokio::test]
async fn same_size_tampering_is_a_digest_mismatch_in_both_clouds() {
    let keys = TestKeys::generate();
    let ns = unique_namespace("tamper");
    let (g, s) = (gcs().await, s3().await);
    let now = Utc::now();
    let in_gcs = backup_id(&ns, now - Duration::hours(30));
    let in_s3 = backup_id(&ns, now - Duration::hours(2));
    for id in [&in_gcs, &in_s3] {
        write_backup(&g, id, &keys, 4000).await;
        copy(&g, &s, id).await;
    }
    flip_one_byte(&g, &in_gcs.data_key()).await;
    flip_one_byte(&s, &in_s3.data_key()).await;

    let policy = serde_json::json!({"version": 1, "rules": [
        {"match": ns, "protected": true, "replicated": true, "keep_daily": 30, "stale_after": "26h", "drill_max_age": "400d"}
    ]});
    let f = function(&keys, policy, None).await;
    let report = run(&f, true).await.report;
    let summary = report.to_string();
    let mismatch = |cloud: &str, id: &BackupId| {
        report.findings.iter().find(|x| {
            x.code == "digest_mismatch"
                && x.cloud.as_deref() == Some(cloud)
                && x.namespace.as_deref() == Some(ns.as_str())
                && x.subject.as_deref() == Some(&*id.to_string())
        })
    };
    for (cloud, id) in [("gcs", &in_gcs), ("s3", &in_s3)] {
        let found = mismatch(cloud, id).unwrap_or_else(|| panic!("{cloud} {id}:\n{summary}"));
        assert_eq!(
            found.severity,
            backstop_core::retention::Severity::Critical,
            "{summary}"
        );
        assert!(found.message.contains(&id.data_key()), "{}", found.message);
    }
    // The untouched copies still count: each cloud has one verified backup.
    for (cloud, id) in [("gcs", &in_s3), ("s3", &in_gcs)] {
        assert!(mismatch(cloud, id).is_none(), "{cloud} {id}:\n{summary}");
    }
}
