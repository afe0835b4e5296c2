//! The replicator on the local stack: fake-gcs-server's finalize
//! notifications travel through the Pub/Sub emulator to the replicator, which
//! verifies each backup and copies it into moto S3.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use backstop_cloud::pubsub::PubSubAlerts;
use backstop_core::alerts::{AlertSink, LogAlerts};
use backstop_core::config::Env;
use backstop_core::events::{ObjectRef, StorageEvent};
use backstop_core::naming::BackupId;
use backstop_core::replicate::{Outcome, Replicator};
use backstop_core::store::{
    ByteStream, GetResult, ListPage, ObjectMeta, ObjectStore, ObjectStoreExt, PutOptions,
    StoreError, StoreResult,
};
use backstop_functions::replicator::ReplicatorFunction;
use backstop_tests::backups::{TestKeys, backup_id, unique_namespace, write_backup};
use backstop_tests::{drain_sha256, gcs, pubsub, s3, stack_env};
use bytes::Bytes;
use chrono::Utc;
use futures::StreamExt;

async fn replicator(
    keys: &TestKeys,
    namespace: &str,
    alerts: Arc<dyn AlertSink>,
    source: Arc<dyn ObjectStore>,
) -> Replicator {
    let env = Env::from_pairs(keys.env_pairs());
    let trusted = backstop_core::trust::TrustedKeys::from_env(&env)
        .await
        .unwrap();
    Replicator {
        source,
        target: Arc::new(s3().await),
        source_bucket: stack_env().required("BACKSTOP_GCS_BUCKET", "").unwrap(),
        signing_keys: trusted.signing,
        recipients: trusted.recipients,
        namespaces: vec![namespace.to_string()],
        alerts,
    }
}

fn finalize(id: &BackupId) -> StorageEvent {
    StorageEvent::Finalized(ObjectRef {
        bucket: stack_env().required("BACKSTOP_GCS_BUCKET", "").unwrap(),
        name: id.manifest_key(),
        generation: None,
        size: None,
    })
}

async fn wait_for(store: &dyn ObjectStore, key: &str) -> ObjectMeta {
    for _ in 0..240 {
        if let Ok(meta) = store.head(key).await {
            return meta;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    panic!("{key} did not appear in {} within 60 s", store.url());
}

#[tokio::test]
async fn finalize_notification_reaches_replicator_through_pubsub() {
    let keys = TestKeys::generate();
    let namespace = unique_namespace("e2e");
    let source: Arc<dyn ObjectStore> = Arc::new(gcs().await);
    let function = Arc::new(ReplicatorFunction {
        replicator: replicator(&keys, &namespace, Arc::new(LogAlerts), source.clone()).await,
        oidc: backstop_cloud::oidc::OidcVerifier::new(&backstop_cloud::oidc::OidcConfig {
            audience: "unused-for-direct-invocations".into(),
            service_account: "push@example.invalid".into(),
            jwks_url: None,
        }),
        deadline_window: None,
    });
    // The local stand-in for the Function URL: the emulator pushes here.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}/", listener.local_addr().unwrap());
    tokio::spawn(backstop_functions::lambda::serve_local(function, listener));
    let subscription = format!("push-{namespace}");
    pubsub::create_push_subscription("gcs-notifications", &subscription, &endpoint).await;

    let id = backup_id(&namespace, Utc::now());
    let manifest = write_backup(source.as_ref(), &id, &keys, 3 << 20).await;

    let target = s3().await;
    wait_for(&target, &id.manifest_key()).await;
    let data = target.get(&id.data_key()).await.unwrap();
    let (size, sha) = drain_sha256(data.body).await.unwrap();
    assert_eq!(size, manifest.ciphertext.size);
    assert_eq!(
        sha, manifest.ciphertext.sha256,
        "S3 copy has the manifest's SHA-256"
    );
    let (_, gcs_sha) = drain_sha256(source.get(&id.data_key()).await.unwrap().body)
        .await
        .unwrap();
    assert_eq!(sha, gcs_sha, "equal SHA-256 in both clouds");
    assert_eq!(
        target
            .get_bytes(&id.signature_key(), 1 << 20)
            .await
            .unwrap(),
        source
            .get_bytes(&id.signature_key(), 1 << 20)
            .await
            .unwrap()
    );
    pubsub::delete_subscription(&subscription).await;
}

#[tokio::test]
async fn duplicate_deliveries_make_one_copy_and_no_error() {
    let keys = TestKeys::generate();
    let namespace = unique_namespace("dup");
    let source: Arc<dyn ObjectStore> = Arc::new(gcs().await);
    let rep = Arc::new(replicator(&keys, &namespace, Arc::new(LogAlerts), source.clone()).await);
    let id = backup_id(&namespace, Utc::now());
    write_backup(source.as_ref(), &id, &keys, 12 << 20).await;
    let event = finalize(&id);
    let outcomes = futures::future::join_all((0..5).map(|_| {
        let rep = rep.clone();
        let event = event.clone();
        async move { rep.handle(&event).await }
    }))
    .await;
    let mut replicated = 0;
    for o in outcomes {
        match o {
            Ok(Outcome::Replicated { .. }) => replicated += 1,
            Ok(Outcome::AlreadyReplicated { .. }) => {}
            // Another delivery holds the copy lease: redelivered later.
            Err(backstop_core::replicate::ReplicateError::Busy { .. }) => {}
            other => panic!("unexpected outcome {other:?}"),
        }
    }
    assert_eq!(replicated, 1, "one delivery copies");
    let objects = s3().await.list_all(&id.prefix()).await.unwrap();
    assert_eq!(
        objects.len(),
        3,
        "data, signature and manifest exactly once: {objects:?}"
    );
    // A late sixth delivery is a no-op.
    assert!(matches!(
        rep.handle(&event).await.unwrap(),
        Outcome::AlreadyReplicated { .. }
    ));
}

#[tokio::test]
async fn tampered_backup_is_not_replicated_and_alerts() {
    let keys = TestKeys::generate();
    let namespace = unique_namespace("tamper");
    let alert_topic = format!("alerts-{namespace}");
    pubsub::create_topic(&alert_topic).await;
    pubsub::create_pull_subscription(&alert_topic, &alert_topic).await;
    let alerts = PubSubAlerts::new(&stack_env(), pubsub::topic_path(&alert_topic));
    let source: Arc<dyn ObjectStore> = Arc::new(gcs().await);
    let rep = replicator(&keys, &namespace, Arc::new(alerts), source.clone()).await;

    let id = backup_id(&namespace, Utc::now());
    write_backup(source.as_ref(), &id, &keys, 1 << 20).await;
    // Flip one byte in the middle of the stored data object.
    let mut data = source
        .get_bytes(&id.data_key(), 8 << 20)
        .await
        .unwrap()
        .to_vec();
    let mid = data.len() / 2;
    data[mid] ^= 0x01;
    source
        .put_bytes(&id.data_key(), Bytes::from(data), PutOptions::default())
        .await
        .unwrap();

    let outcome = rep
        .handle(&finalize(&id))
        .await
        .expect("a bad backup is acknowledged");
    let Outcome::Rejected { reason, .. } = outcome else {
        panic!("expected Rejected, got {outcome:?}")
    };
    assert!(
        reason.contains("SHA-256") || reason.contains("sha256") || reason.contains("digest"),
        "{reason}"
    );
    let target = s3().await;
    assert!(
        target.list_all(&id.prefix()).await.unwrap().is_empty(),
        "nothing of it is visible in S3"
    );
    let mut messages = Vec::new();
    for _ in 0..40 {
        messages.extend(pubsub::pull(&alert_topic).await);
        if !messages.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(messages.len(), 1, "one alert: {messages:?}");
    assert_eq!(messages[0]["code"], "verification_failed");
    assert_eq!(messages[0]["backup_id"], id.to_string());
}

/// A GCS store whose reads of data objects die after `fail_after` bytes.
#[derive(Debug)]
struct FlakyReads {
    inner: Arc<dyn ObjectStore>,
    fail_after: u64,
}

#[async_trait]
impl ObjectStore for FlakyReads {
    fn url(&self) -> String {
        self.inner.url()
    }
    async fn put(&self, key: &str, body: ByteStream, opts: PutOptions) -> StoreResult<ObjectMeta> {
        self.inner.put(key, body, opts).await
    }
    async fn get(&self, key: &str) -> StoreResult<GetResult> {
        let got = self.inner.get(key).await?;
        if !key.ends_with("data.pgdump.pgp") {
            return Ok(got);
        }
        let limit = self.fail_after;
        let url = self.url();
        let key = key.to_string();
        let mut seen = 0u64;
        let body = got.body.map(move |chunk| {
            let chunk = chunk?;
            seen += chunk.len() as u64;
            if seen > limit {
                return Err(StoreError::Transient {
                    store: url.clone(),
                    op: "read",
                    key: key.clone(),
                    message: "connection reset (injected)".into(),
                }
                .into_io());
            }
            Ok(chunk)
        });
        Ok(GetResult {
            meta: got.meta,
            body: Box::pin(body),
        })
    }
    async fn head(&self, key: &str) -> StoreResult<ObjectMeta> {
        self.inner.head(key).await
    }
    async fn list_page(&self, prefix: &str, token: Option<String>) -> StoreResult<ListPage> {
        self.inner.list_page(prefix, token).await
    }
    async fn delete(&self, key: &str) -> StoreResult<()> {
        self.inner.delete(key).await
    }
}

#[tokio::test]
async fn read_failing_mid_stream_leaves_nothing_and_redelivery_completes() {
    let keys = TestKeys::generate();
    let namespace = unique_namespace("flaky");
    let real: Arc<dyn ObjectStore> = Arc::new(gcs().await);
    let id = backup_id(&namespace, Utc::now());
    let manifest = write_backup(real.as_ref(), &id, &keys, 20 << 20).await;

    let flaky = Arc::new(FlakyReads {
        inner: real.clone(),
        fail_after: 9 << 20,
    });
    let rep = replicator(&keys, &namespace, Arc::new(LogAlerts), flaky).await;
    let err = rep
        .handle(&finalize(&id))
        .await
        .expect_err("a transient failure asks for redelivery");
    assert!(err.to_string().contains("retried"), "{err}");
    let target = s3().await;
    assert!(
        target.list_all(&id.prefix()).await.unwrap().is_empty(),
        "no visible S3 object after the failure"
    );

    let rep = replicator(&keys, &namespace, Arc::new(LogAlerts), real).await;
    let outcome = rep.handle(&finalize(&id)).await.unwrap();
    assert!(
        matches!(outcome, Outcome::Replicated { bytes, .. } if bytes == manifest.ciphertext.size),
        "{outcome:?}"
    );
}

#[tokio::test]
async fn unsigned_foreign_and_filtered_objects() {
    let keys = TestKeys::generate();
    let other_keys = TestKeys::generate();
    let namespace = unique_namespace("foreign");
    let source: Arc<dyn ObjectStore> = Arc::new(gcs().await);
    let rep = replicator(&keys, &namespace, Arc::new(LogAlerts), source.clone()).await;

    // Signed by a key we do not trust.
    let id = backup_id(&namespace, Utc::now());
    write_backup(source.as_ref(), &id, &other_keys, 1000).await;
    let outcome = rep.handle(&finalize(&id)).await.unwrap();
    assert!(matches!(outcome, Outcome::Rejected { .. }), "{outcome:?}");

    // Data-object events wait for the manifest.
    let data_event = StorageEvent::Finalized(ObjectRef {
        bucket: stack_env().required("BACKSTOP_GCS_BUCKET", "").unwrap(),
        name: id.data_key(),
        generation: None,
        size: None,
    });
    assert!(matches!(
        rep.handle(&data_event).await.unwrap(),
        Outcome::Ignored { .. }
    ));

    // Another namespace is not replicated.
    let other = backup_id(&unique_namespace("branch"), Utc::now());
    assert!(matches!(
        rep.handle(&finalize(&other)).await.unwrap(),
        Outcome::Ignored { .. }
    ));

    // A notification from another bucket is refused.
    let wrong_bucket = StorageEvent::Finalized(ObjectRef {
        bucket: "someone-elses-bucket".into(),
        name: id.manifest_key(),
        generation: None,
        size: None,
    });
    assert!(rep.handle(&wrong_bucket).await.is_err());
    assert!(s3().await.list_all(&id.prefix()).await.unwrap().is_empty());
}

/// An S3 store that records how many bytes of each data upload reached it.
#[derive(Debug)]
struct RecordingPuts {
    inner: Arc<dyn ObjectStore>,
    received: Arc<std::sync::atomic::AtomicU64>,
}

#[async_trait]
impl ObjectStore for RecordingPuts {
    fn url(&self) -> String {
        self.inner.url()
    }
    async fn put(&self, key: &str, body: ByteStream, opts: PutOptions) -> StoreResult<ObjectMeta> {
        let received = self.received.clone();
        let body = body.map(move |chunk| {
            if let Ok(c) = &chunk {
                received.fetch_add(c.len() as u64, std::sync::atomic::Ordering::SeqCst);
            }
            chunk
        });
        self.inner.put(key, Box::pin(body), opts).await
    }
    async fn get(&self, key: &str) -> StoreResult<GetResult> {
        self.inner.get(key).await
    }
    async fn head(&self, key: &str) -> StoreResult<ObjectMeta> {
        self.inner.head(key).await
    }
    async fn list_page(&self, prefix: &str, token: Option<String>) -> StoreResult<ListPage> {
        self.inner.list_page(prefix, token).await
    }
    async fn delete(&self, key: &str) -> StoreResult<()> {
        self.inner.delete(key).await
    }
}

/// A byte changed in the second 8 MiB chunk: the upload receives the
/// authenticated first chunk and not one byte of the bad one, and nothing
/// becomes visible in S3.
#[tokio::test]
async fn a_bad_chunk_never_reaches_the_upload() {
    use backstop_core::crypto::chunks::CHUNK_SIZE;
    let keys = TestKeys::generate();
    let namespace = unique_namespace("chunk");
    let source: Arc<dyn ObjectStore> = Arc::new(gcs().await);
    let mut rep = replicator(&keys, &namespace, Arc::new(LogAlerts), source.clone()).await;
    let received = Arc::new(std::sync::atomic::AtomicU64::new(0));
    rep.target = Arc::new(RecordingPuts {
        inner: Arc::new(s3().await),
        received: received.clone(),
    });

    let id = backup_id(&namespace, Utc::now());
    write_backup(source.as_ref(), &id, &keys, 20 << 20).await;
    let mut data = source
        .get_bytes(&id.data_key(), 64 << 20)
        .await
        .unwrap()
        .to_vec();
    assert!(data.len() as u64 > 2 * CHUNK_SIZE, "three chunks");
    data[CHUNK_SIZE as usize + 1000] ^= 0x01;
    source
        .put_bytes(&id.data_key(), Bytes::from(data), PutOptions::default())
        .await
        .unwrap();

    let outcome = rep.handle(&finalize(&id)).await.expect("acknowledged");
    let Outcome::Rejected { reason, .. } = outcome else {
        panic!("expected Rejected, got {outcome:?}")
    };
    assert!(reason.contains("chunk 1 of 3"), "{reason}");
    let got = received.load(std::sync::atomic::Ordering::SeqCst);
    assert!(
        got <= CHUNK_SIZE,
        "{got} bytes reached the upload: more than the authenticated first chunk"
    );
    let target = s3().await;
    assert!(target.list_all(&id.prefix()).await.unwrap().is_empty());
}

/// Anyone who may create objects in the replica bucket can write a data
/// object of the right size with the manifest's SHA-256 in its
/// `backstop-sha256` user metadata, and copy the manifest beside it. Neither
/// makes the backup "already replicated": that is decided from the CRC32C
/// S3 computed over the stored bytes, compared with the signed manifest.
#[tokio::test]
async fn forged_replica_metadata_is_not_already_replicated() {
    use backstop_core::replicate::META_SHA256;
    let keys = TestKeys::generate();
    let namespace = unique_namespace("forged");
    let source: Arc<dyn ObjectStore> = Arc::new(gcs().await);
    let rep = replicator(&keys, &namespace, Arc::new(LogAlerts), source.clone()).await;
    let target = s3().await;

    for (case, size, with_manifest) in [("data", 12u64 << 20, false), ("all", 1 << 20, true)] {
        let id = backup_id(
            &namespace,
            Utc::now() - chrono::Duration::minutes(size as i64 >> 20),
        );
        let manifest = write_backup(source.as_ref(), &id, &keys, size).await;
        let forged = Bytes::from(vec![0x5a; manifest.ciphertext.size as usize]);
        let opts =
            PutOptions::create().with_metadata(META_SHA256, manifest.ciphertext.sha256.clone());
        target
            .put_bytes(&id.data_key(), forged, opts)
            .await
            .unwrap();
        if with_manifest {
            for key in [id.signature_key(), id.manifest_key()] {
                let bytes = source.get_bytes(&key, 1 << 20).await.unwrap();
                target
                    .put_bytes(&key, bytes, PutOptions::create())
                    .await
                    .unwrap();
            }
        }
        let outcome = rep.handle(&finalize(&id)).await.expect("acknowledged");
        let Outcome::Rejected { reason, .. } = &outcome else {
            panic!("{case}: a forged replica counted as a copy: {outcome:?}")
        };
        assert!(reason.contains("different data object"), "{case}: {reason}");
        if !with_manifest {
            assert!(
                target.head(&id.manifest_key()).await.is_err(),
                "{case}: no manifest was committed over forged data"
            );
        }
    }

    // An honest copy is still recognised on redelivery.
    let id = backup_id(&namespace, Utc::now());
    write_backup(source.as_ref(), &id, &keys, 12 << 20).await;
    let first = rep.handle(&finalize(&id)).await.unwrap();
    assert!(matches!(first, Outcome::Replicated { .. }), "{first:?}");
    let again = rep.handle(&finalize(&id)).await.unwrap();
    assert!(
        matches!(again, Outcome::AlreadyReplicated { .. }),
        "{again:?}"
    );
}

/// Keeps every alert, for tests that check one was raised.
#[derive(Debug, Default)]
struct RecordedAlerts(std::sync::Mutex<Vec<backstop_core::alerts::Alert>>);

#[async_trait]
impl AlertSink for RecordedAlerts {
    async fn publish(
        &self,
        alert: &backstop_core::alerts::Alert,
    ) -> Result<(), backstop_core::alerts::AlertError> {
        self.0.lock().unwrap().push(alert.clone());
        Ok(())
    }
}

fn finalize_of(key: String) -> StorageEvent {
    StorageEvent::Finalized(ObjectRef {
        bucket: stack_env().required("BACKSTOP_GCS_BUCKET", "").unwrap(),
        name: key,
        generation: None,
        size: None,
    })
}

#[tokio::test]
async fn a_new_generation_of_a_committed_backup_is_a_tamper_alert() {
    let keys = TestKeys::generate();
    let namespace = unique_namespace("regen");
    let alerts = Arc::new(RecordedAlerts::default());
    let source: Arc<dyn ObjectStore> = Arc::new(gcs().await);
    let rep = replicator(&keys, &namespace, alerts.clone(), source.clone()).await;
    let id = backup_id(&namespace, Utc::now());
    write_backup(source.as_ref(), &id, &keys, 1 << 20).await;
    assert!(matches!(
        rep.handle(&finalize(&id)).await.unwrap(),
        Outcome::Replicated { .. }
    ));
    let replica_before = s3().await.get_bytes(&id.data_key(), 4 << 20).await.unwrap();

    // The data object rewritten in GCS with one byte changed (same size).
    let mut data = source
        .get_bytes(&id.data_key(), 4 << 20)
        .await
        .unwrap()
        .to_vec();
    data[1000] ^= 0x01;
    tokio::time::sleep(Duration::from_millis(20)).await;
    source
        .put_bytes(&id.data_key(), Bytes::from(data), PutOptions::default())
        .await
        .unwrap();
    for event in [finalize_of(id.data_key()), finalize(&id)] {
        match rep.handle(&event).await.unwrap() {
            Outcome::Rejected { reason, .. } => {
                assert!(reason.contains(&id.data_key()), "{reason}")
            }
            other => panic!("a rewritten data object: {other:?}"),
        }
    }
    let raised: Vec<_> = alerts.0.lock().unwrap().drain(..).collect();
    assert_eq!(raised.len(), 2, "{raised:?}");
    assert!(raised.iter().all(|a| a.code == "rewritten_after_commit"
        && a.severity == backstop_core::alerts::Severity::Critical));
    assert_eq!(
        s3().await.get_bytes(&id.data_key(), 4 << 20).await.unwrap(),
        replica_before,
        "nothing copied over the verified replica"
    );

    // The manifest rewritten with its own bytes: a new generation all the same.
    let other = backup_id(&namespace, Utc::now() + chrono::Duration::seconds(1));
    write_backup(source.as_ref(), &other, &keys, 1 << 20).await;
    assert!(matches!(
        rep.handle(&finalize(&other)).await.unwrap(),
        Outcome::Replicated { .. }
    ));
    let manifest = source
        .get_bytes(&other.manifest_key(), 1 << 20)
        .await
        .unwrap();
    source
        .put_bytes(&other.manifest_key(), manifest, PutOptions::default())
        .await
        .unwrap();
    match rep.handle(&finalize(&other)).await.unwrap() {
        Outcome::Rejected { reason, .. } => assert!(reason.contains("generation"), "{reason}"),
        other => panic!("a rewritten manifest: {other:?}"),
    }
    assert_eq!(alerts.0.lock().unwrap().len(), 1);
}
