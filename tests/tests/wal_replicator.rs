//! The replicator and the WAL archive on the local stack: archived WAL files
//! (an encrypted copy and its sealed manifest in fake-gcs-server) are
//! verified and copied into moto S3 through the production `GcsStore` and
//! `S3Store`; base backups, filed as ordinary backups, travel the backup path.

use std::sync::Arc;
use std::time::Duration;

use backstop_core::alerts::Severity;
use backstop_core::crypto::{SigningKey, sign_manifest};
use backstop_core::events::{ObjectRef, StorageEvent};
use backstop_core::manifest::{BASE_BACKUP_FORMAT, BaseBackupInfo};
use backstop_core::naming::{BackupId, Namespace};
use backstop_core::replicate::{Outcome, Replicator};
use backstop_core::store::{ObjectStore, ObjectStoreExt, PutOptions};
use backstop_core::wal::{DEFAULT_SEGMENT_SIZE, WalKey, WalManifest};
use backstop_tests::backups::{TestKeys, unique_namespace, write_backup};
use backstop_tests::wal::{
    AlertLog, SYSTEM_IDENTIFIER, commit_wal, put_wal_data, replicator, wal_bytes, wal_key,
    write_wal_file,
};
use backstop_tests::{drain_sha256, s3, stack_env};
use bytes::Bytes;
use chrono::Utc;

fn finalize(key: String) -> StorageEvent {
    StorageEvent::Finalized(ObjectRef {
        bucket: stack_env().required("BACKSTOP_GCS_BUCKET", "").unwrap(),
        name: key,
        generation: None,
        size: None,
    })
}

/// A fresh namespace, its replicator (recording alerts) and the source.
async fn setup(test: &str, keys: &TestKeys) -> (String, Replicator, Arc<AlertLog>) {
    let namespace = unique_namespace(test);
    let alerts = Arc::new(AlertLog::default());
    let rep = replicator(keys, &namespace, alerts.clone()).await;
    (namespace, rep, alerts)
}

/// The replica's copy of `key` (data object and sealed manifest) equals the
/// source's, byte for byte.
async fn assert_copied(rep: &Replicator, key: &WalKey, manifest: &WalManifest) {
    let data_key = manifest.data_key(key);
    let target = s3().await;
    let (size, sha) = drain_sha256(target.get(&data_key).await.unwrap().body)
        .await
        .unwrap();
    assert_eq!(size, manifest.ciphertext.size);
    assert_eq!(sha, manifest.ciphertext.sha256, "S3 holds the signed bytes");
    let (_, source_sha) = drain_sha256(rep.source.get(&data_key).await.unwrap().body)
        .await
        .unwrap();
    assert_eq!(sha, source_sha, "equal in both clouds");
    assert_eq!(
        target
            .get_bytes(&key.manifest_key(), 1 << 20)
            .await
            .unwrap(),
        rep.source
            .get_bytes(&key.manifest_key(), 1 << 20)
            .await
            .unwrap(),
        "the same sealed manifest"
    );
    let listed = target.list_all(&key.dir()).await.unwrap();
    assert_eq!(listed.len(), 2, "data and manifest, once: {listed:?}");
}

/// Nothing of `key`'s file is in S3.
async fn assert_nothing_copied(key: &WalKey) {
    let listed = s3().await.list_all(&key.dir()).await.unwrap();
    assert!(listed.is_empty(), "visible in S3: {listed:?}");
}

/// A rejection, acknowledged, with one critical alert of `code`.
fn assert_rejected(outcome: Outcome, alerts: &AlertLog, code: &str) -> String {
    let Outcome::Rejected { reason, backup_id } = outcome else {
        panic!("expected a rejection ({code}), got {outcome:?}")
    };
    assert_eq!(alerts.codes(), [code], "{reason}");
    let alert = &alerts.all()[0];
    assert_eq!(alert.severity, Severity::Critical);
    assert_eq!(alert.backup_id.as_deref(), Some(backup_id.as_str()));
    reason
}

#[tokio::test]
async fn a_segment_replicates_and_a_redelivery_is_already_replicated() {
    let keys = TestKeys::generate();
    let (namespace, rep, alerts) = setup("wal-seg", &keys).await;
    let key = wal_key(&namespace, "000000010000000A000000FF");
    let segment = wal_bytes(DEFAULT_SEGMENT_SIZE as usize, 1);
    let manifest = write_wal_file(rep.source.as_ref(), &key, &keys, segment).await;

    let outcome = rep.handle(&finalize(key.manifest_key())).await.unwrap();
    let Outcome::Replicated {
        backup_id, bytes, ..
    } = &outcome
    else {
        panic!("expected Replicated, got {outcome:?}")
    };
    assert_eq!(backup_id, &key.to_string());
    assert_eq!(*bytes, manifest.ciphertext.size);
    assert!(backup_id.ends_with("/.wal/7312345678901234567/00000001/000000010000000A000000FF"));
    assert_copied(&rep, &key, &manifest).await;

    // A redelivery, and the data object's late notification.
    let again = rep.handle(&finalize(key.manifest_key())).await.unwrap();
    assert_eq!(
        again,
        Outcome::AlreadyReplicated {
            backup_id: key.to_string()
        }
    );
    match rep
        .handle(&finalize(manifest.data_key(&key)))
        .await
        .unwrap()
    {
        Outcome::Ignored { reason, .. } => {
            assert!(reason.contains("before its manifest"), "{reason}")
        }
        other => panic!("the data object's notification: {other:?}"),
    }
    assert!(alerts.codes().is_empty());
    assert_copied(&rep, &key, &manifest).await;
}

#[tokio::test]
async fn concurrent_duplicate_deliveries_make_one_copy() {
    let keys = TestKeys::generate();
    let (namespace, rep, alerts) = setup("wal-dup", &keys).await;
    let rep = Arc::new(rep);
    let key = wal_key(&namespace, "000000010000000000000007");
    let manifest = write_wal_file(rep.source.as_ref(), &key, &keys, wal_bytes(3 << 20, 7)).await;
    let outcomes = futures::future::join_all((0..4).map(|_| {
        let (rep, event) = (rep.clone(), finalize(key.manifest_key()));
        async move { rep.handle(&event).await }
    }))
    .await;
    for outcome in outcomes {
        assert!(
            matches!(
                outcome,
                Ok(Outcome::Replicated { .. } | Outcome::AlreadyReplicated { .. })
            ),
            "{outcome:?}"
        );
    }
    assert!(matches!(
        rep.handle(&finalize(key.manifest_key())).await.unwrap(),
        Outcome::AlreadyReplicated { .. }
    ));
    assert!(alerts.codes().is_empty(), "{:?}", alerts.all());
    assert_copied(&rep, &key, &manifest).await;
}

#[tokio::test]
async fn the_data_objects_notification_waits_for_the_manifest() {
    let keys = TestKeys::generate();
    let (namespace, rep, alerts) = setup("wal-order", &keys).await;
    let key = wal_key(&namespace, "000000010000000000000002");
    let manifest = put_wal_data(rep.source.as_ref(), &key, &keys, wal_bytes(1 << 20, 2)).await;
    let data_event = finalize(manifest.data_key(&key));
    match rep.handle(&data_event).await.unwrap() {
        Outcome::Ignored { reason, .. } => {
            assert!(reason.contains("its manifest is written"), "{reason}")
        }
        other => panic!("the data object alone: {other:?}"),
    }
    assert_nothing_copied(&key).await;

    commit_wal(rep.source.as_ref(), &key, &manifest, &keys.signer()).await;
    // Delivered late, after the commit: still nothing to do on its own.
    assert!(matches!(
        rep.handle(&data_event).await.unwrap(),
        Outcome::Ignored { .. }
    ));
    let outcome = rep.handle(&finalize(key.manifest_key())).await.unwrap();
    assert!(matches!(outcome, Outcome::Replicated { .. }), "{outcome:?}");

    // A push retried after the commit leaves another encrypted copy: not
    // the committed one, so neither copied nor a rewrite.
    let retried = put_wal_data(rep.source.as_ref(), &key, &keys, wal_bytes(1 << 20, 2)).await;
    match rep.handle(&finalize(retried.data_key(&key))).await.unwrap() {
        Outcome::Ignored { reason, .. } => assert!(reason.contains("does not name"), "{reason}"),
        other => panic!("an uncommitted copy: {other:?}"),
    }
    assert!(alerts.codes().is_empty());
    assert_copied(&rep, &key, &manifest).await;
}

/// The replica holds something else under a file's name, or the source's
/// committed manifest is written again: rejected, alerted, nothing copied.
#[tokio::test]
async fn replica_conflicts_and_a_rewritten_manifest_are_rejected() {
    let keys = TestKeys::generate();
    let (namespace, rep, alerts) = setup("wal-conflict", &keys).await;
    let target = s3().await;

    // Another sealed manifest of the same file already in S3.
    let key = wal_key(&namespace, "000000010000000000000008");
    let mut manifest =
        write_wal_file(rep.source.as_ref(), &key, &keys, wal_bytes(1 << 20, 8)).await;
    manifest.archived_at += chrono::Duration::seconds(1);
    let other = Bytes::from(manifest.seal(&keys.signer()).unwrap());
    target
        .put_bytes(&key.manifest_key(), other.clone(), PutOptions::create())
        .await
        .unwrap();
    let outcome = rep.handle(&finalize(key.manifest_key())).await.unwrap();
    let reason = assert_rejected(outcome, &alerts, "replica_conflict");
    assert!(reason.contains("different manifest"), "{reason}");
    let kept = target
        .get_bytes(&key.manifest_key(), 1 << 20)
        .await
        .unwrap();
    assert_eq!(kept, other, "the replica's object is left alone");
    assert!(target.head(&manifest.data_key(&key)).await.is_err());

    // A replicated file's manifest rewritten in GCS with its own bytes: a
    // new generation all the same.
    let key = wal_key(&namespace, "000000010000000000000009");
    write_wal_file(rep.source.as_ref(), &key, &keys, wal_bytes(1 << 20, 9)).await;
    let outcome = rep.handle(&finalize(key.manifest_key())).await.unwrap();
    assert!(matches!(outcome, Outcome::Replicated { .. }), "{outcome:?}");
    let sealed = rep
        .source
        .get_bytes(&key.manifest_key(), 1 << 20)
        .await
        .unwrap();
    rep.source
        .put_bytes(&key.manifest_key(), sealed, PutOptions::default())
        .await
        .unwrap();
    match rep.handle(&finalize(key.manifest_key())).await.unwrap() {
        Outcome::Rejected { reason, .. } => assert!(reason.contains("generation"), "{reason}"),
        other => panic!("a rewritten manifest: {other:?}"),
    }
    assert_eq!(
        alerts.codes(),
        ["replica_conflict", "rewritten_after_commit"]
    );
}

#[tokio::test]
async fn a_tampered_data_object_is_rejected_and_nothing_is_copied() {
    let keys = TestKeys::generate();
    let (namespace, rep, alerts) = setup("wal-tamper", &keys).await;
    let key = wal_key(&namespace, "000000010000000000000003");
    let manifest = write_wal_file(rep.source.as_ref(), &key, &keys, wal_bytes(2 << 20, 3)).await;
    let data_key = manifest.data_key(&key);
    let mut data = rep
        .source
        .get_bytes(&data_key, 8 << 20)
        .await
        .unwrap()
        .to_vec();
    let mid = data.len() / 2;
    data[mid] ^= 0x01;
    tokio::time::sleep(Duration::from_millis(20)).await;
    rep.source
        .put_bytes(&data_key, Bytes::from(data), PutOptions::default())
        .await
        .unwrap();

    let outcome = rep.handle(&finalize(key.manifest_key())).await.unwrap();
    let reason = assert_rejected(outcome, &alerts, "verification_failed");
    assert!(reason.contains("chunk"), "{reason}");
    assert_nothing_copied(&key).await;

    // The rewrite's own notification: a committed copy written again.
    let outcome = rep.handle(&finalize(data_key.clone())).await.unwrap();
    let Outcome::Rejected { reason, .. } = outcome else {
        panic!("a rewritten data object: {outcome:?}")
    };
    assert!(reason.contains(&data_key), "{reason}");
    assert_eq!(
        alerts.codes(),
        ["verification_failed", "rewritten_after_commit"]
    );
    assert_nothing_copied(&key).await;
}

#[tokio::test]
async fn a_manifest_copied_to_another_files_key_is_rejected() {
    let keys = TestKeys::generate();
    let (namespace, rep, alerts) = setup("wal-moved", &keys).await;
    let three = wal_key(&namespace, "000000010000000000000003");
    let four = wal_key(&namespace, "000000010000000000000004");
    write_wal_file(rep.source.as_ref(), &three, &keys, wal_bytes(1 << 20, 3)).await;
    let sealed = rep
        .source
        .get_bytes(&three.manifest_key(), 1 << 20)
        .await
        .unwrap();
    rep.source
        .put_bytes(&four.manifest_key(), sealed, PutOptions::create())
        .await
        .unwrap();

    let outcome = rep.handle(&finalize(four.manifest_key())).await.unwrap();
    let reason = assert_rejected(outcome, &alerts, "wal_invalid");
    assert!(reason.contains("000000010000000000000003"), "{reason}");
    let listed = s3().await.list_all(&four.dir()).await.unwrap();
    assert!(listed.is_empty(), "{listed:?}");
}

#[tokio::test]
async fn a_manifest_signed_by_an_unknown_key_is_rejected() {
    let keys = TestKeys::generate();
    let stranger = TestKeys::generate();
    let (namespace, rep, alerts) = setup("wal-signer", &keys).await;
    let key = wal_key(&namespace, "000000010000000000000005");
    let mut manifest = put_wal_data(rep.source.as_ref(), &key, &keys, wal_bytes(1 << 20, 5)).await;
    manifest.signer = stranger.signing.fingerprint.clone();
    let signer: SigningKey = stranger.signer();
    commit_wal(rep.source.as_ref(), &key, &manifest, &signer).await;

    let outcome = rep.handle(&finalize(key.manifest_key())).await.unwrap();
    let reason = assert_rejected(outcome, &alerts, "wal_invalid");
    assert!(reason.contains("does not verify"), "{reason}");
    assert_nothing_copied(&key).await;
}

#[tokio::test]
async fn a_namespace_not_configured_is_ignored() {
    let keys = TestKeys::generate();
    let (_, rep, alerts) = setup("wal-mine", &keys).await;
    let key = wal_key(&unique_namespace("wal-other"), "000000010000000000000006");
    let manifest = write_wal_file(rep.source.as_ref(), &key, &keys, wal_bytes(64 << 10, 6)).await;
    for event in [
        finalize(key.manifest_key()),
        finalize(manifest.data_key(&key)),
    ] {
        match rep.handle(&event).await.unwrap() {
            Outcome::Ignored { reason, .. } => {
                assert!(reason.contains("BACKSTOP_REPLICATE_NAMESPACES"), "{reason}")
            }
            other => panic!("another namespace: {other:?}"),
        }
    }
    assert!(alerts.codes().is_empty());
    assert_nothing_copied(&key).await;
}

#[tokio::test]
async fn a_timeline_history_file_replicates() {
    let keys = TestKeys::generate();
    let (namespace, rep, alerts) = setup("wal-history", &keys).await;
    let key = wal_key(&namespace, "00000002.history");
    let history = Bytes::from_static(b"1\t0/3000090\tno recovery target specified\n");
    let manifest = write_wal_file(rep.source.as_ref(), &key, &keys, history).await;
    let outcome = rep.handle(&finalize(key.manifest_key())).await.unwrap();
    assert!(matches!(outcome, Outcome::Replicated { .. }), "{outcome:?}");
    assert!(
        key.manifest_key()
            .ends_with("/00000002/00000002.history.json")
    );
    assert!(alerts.codes().is_empty());
    assert_copied(&rep, &key, &manifest).await;
}

/// A base backup is an ordinary backup under the cluster's series
/// (`<ns>/.cluster-<system id>/<stamp>/`): the backup path copies it.
#[tokio::test]
async fn a_base_backup_replicates_as_a_backup() {
    let keys = TestKeys::generate();
    let (namespace, rep, alerts) = setup("wal-base", &keys).await;
    let id = BackupId::base_backup(
        Namespace::new(&namespace).unwrap(),
        SYSTEM_IDENTIFIER,
        Utc::now(),
    );
    let source = rep.source.as_ref();
    // The data as a dump's; then the manifest a base backup signs, in place
    // of the dump's (which does not fit a cluster's id).
    let mut manifest = write_backup(source, &id, &keys, 3 << 20).await;
    manifest.dump_format = BASE_BACKUP_FORMAT.into();
    manifest.tables.clear();
    manifest.base_backup = Some(BaseBackupInfo {
        system_identifier: SYSTEM_IDENTIFIER.to_string(),
        server_version_num: 170_002,
        timeline: 1,
        start_lsn: "0/2000028".into(),
        stop_lsn: "0/2000100".into(),
        start_wal: "000000010000000000000002".into(),
        stop_wal: "000000010000000000000002".into(),
        wal_segment_size: DEFAULT_SEGMENT_SIZE,
        backup_manifest_sha256: "00".repeat(32),
        files: 1000,
    });
    let (bytes, signature) = sign_manifest(&manifest, &keys.signer()).unwrap();
    for (key, body) in [
        (id.signature_key(), Bytes::from(signature)),
        (id.manifest_key(), Bytes::from(bytes)),
    ] {
        source
            .put_bytes(&key, body, PutOptions::default())
            .await
            .unwrap();
    }

    let outcome = rep.handle(&finalize(id.manifest_key())).await.unwrap();
    let Outcome::Replicated { backup_id, .. } = &outcome else {
        panic!("a base backup: {outcome:?}")
    };
    assert_eq!(backup_id, &id.to_string());
    assert!(backup_id.contains(&format!("/.cluster-{SYSTEM_IDENTIFIER}/")));
    assert!(alerts.codes().is_empty());
    let target = s3().await;
    for key in [id.data_key(), id.signature_key(), id.manifest_key()] {
        let (copy, original) = (
            drain_sha256(target.get(&key).await.unwrap().body).await,
            drain_sha256(source.get(&key).await.unwrap().body).await,
        );
        assert_eq!(copy.unwrap(), original.unwrap(), "{key}");
    }
}
