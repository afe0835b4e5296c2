//! Restore drills tell the truth, on the local stack (real PostgreSQL,
//! fake-gcs-server, `pg_dump`/`pg_restore`): every drill run keeps a record
//! of its own, a record that cannot be written fails the restore, tables are
//! compared both ways, a backup with no tables is not a pass, and a wrong
//! backup key is a configuration error, not a drill.
//!
//!   tests/stack/stack.sh run -- cargo test -p backstop-tests --test drills

use std::sync::Arc;

use async_trait::async_trait;
use backstop_core::config::Env;
use backstop_core::crypto::{BackupSecretKey, KeyAlgorithm, generate_backup_key};
use backstop_core::drill::{DrillRecord, MAX_DRILL_BYTES};
use backstop_core::naming::{BackupId, DRILLS_PREFIX};
use backstop_core::retention::{PolicySet, SignatureVerifier};
use backstop_core::store::{
    ByteStream, GetResult, ListPage, ObjectMeta, ObjectStore, ObjectStoreExt, PutOptions,
    StoreError, StoreResult,
};
use backstop_functions::retention::RetentionFunction;
use backstop_postgres::restore::RestoreError;
use backstop_tests::gcs;
use backstop_tests::restore_fixture::{Fixture, restore_from, unique};

/// Every drill record of backup `id` in `store`, oldest run first.
async fn drills_of(store: &dyn ObjectStore, id: &BackupId) -> Vec<DrillRecord> {
    let mut keys: Vec<String> = store
        .list_all(&format!("{DRILLS_PREFIX}{id}/"))
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.key)
        .collect();
    keys.sort();
    let mut out = Vec::new();
    for key in keys {
        let bytes = store.get_bytes(&key, MAX_DRILL_BYTES).await.unwrap();
        out.push(DrillRecord::parse(&bytes).unwrap());
    }
    out
}

/// The codes of the audit's drill findings for the fixture's namespace.
async fn drill_findings(fx: &Fixture) -> Vec<String> {
    let file = |name: &str| format!("file:{}", fx.dir.path().join(name).display());
    let env = Env::from_pairs([
        ("BACKSTOP_SIGNING_PUBLIC_KEY", file("signing.pub.asc")),
        ("BACKSTOP_RECIPIENTS", file("backup.pub.asc")),
    ]);
    let policy = serde_json::json!({"version": 1, "rules": [
        {"match": fx.namespace.as_str(), "protected": true, "keep_last": 5, "drill_max_age": "1d"}
    ]});
    let f = RetentionFunction {
        primary: Arc::new(gcs().await),
        replica: None,
        verifier: SignatureVerifier {
            keys: backstop_core::trust::TrustedKeys::from_env(&env)
                .await
                .unwrap(),
        },
        policies: PolicySet::from_json(&policy.to_string()).unwrap(),
        dry_run: true,
        bucket_config: None,
        alerts: Arc::new(backstop_core::alerts::LogAlerts),
        oidc: None,
        concurrency: backstop_core::retention::DEFAULT_VERIFY_CONCURRENCY,
    };
    let r = f
        .run(&backstop_core::events::ScheduleRequest {
            dry_run: Some(true),
        })
        .await;
    r.report
        .findings
        .iter()
        .filter(|x| x.namespace.as_deref() == Some(fx.namespace.as_str()))
        .filter(|x| x.code.contains("drill"))
        .map(|x| x.code.clone())
        .collect()
}

#[tokio::test]
async fn every_drill_run_keeps_its_record_and_a_later_failure_reaches_the_audit() {
    let fx = Fixture::new("runs").await;
    let store = gcs().await;
    let first = unique("drill_first");
    let report = restore_from(&fx.config(fx.fresh(&first)), &store)
        .await
        .unwrap();
    assert!(report.success, "{report:?}");

    // The same backup, re-signed with one table's count off: the second
    // drill of it fails.
    let mut manifest = fx.manifest(&store).await;
    let (table, n) = manifest.tables.iter_mut().next().unwrap();
    let table = table.clone();
    *n += 1;
    fx.publish(&store, &manifest).await;
    let second = unique("drill_second");
    let report = restore_from(&fx.config(fx.fresh(&second)), &store)
        .await
        .unwrap();
    assert!(!report.success, "a count off by one passed");
    assert_eq!(report.drill.mismatches.len(), 1, "{:?}", report.drill);
    assert_eq!(report.drill.mismatches[0].table, table);

    // Run ids have whole seconds: two drills in one second sort by time.
    let mut records = drills_of(&store, &fx.id).await;
    records.sort_by_key(|r| r.started_at);
    assert_eq!(
        records.iter().map(|r| r.success).collect::<Vec<_>>(),
        [true, false],
        "one record per run: {records:?}"
    );
    assert_ne!(records[0].run_id, records[1].run_id);
    let findings = drill_findings(&fx).await;
    assert!(
        !findings.contains(&"no_restore_drill".to_string()),
        "the first, successful drill is on record: {findings:?}"
    );
    assert!(
        findings.contains(&"restore_drill_failed".to_string()),
        "the later failed drill reaches the audit: {findings:?}"
    );
    fx.cleanup(&[&first, &second]).await;
}

#[tokio::test]
async fn a_record_copied_under_another_backup_is_not_a_drill() {
    let fx = Fixture::new("misplaced").await;
    let store = gcs().await;
    let target = unique("drill_misplaced");
    let report = restore_from(&fx.config(fx.fresh(&target)), &store)
        .await
        .unwrap();
    assert!(report.success);
    // A successful record, moved under a backup id that was never drilled.
    let record = drills_of(&store, &fx.id).await.remove(0);
    let other = BackupId::new(fx.id.namespace.clone(), "other", chrono::Utc::now()).unwrap();
    let forged_key = other.drill_key(&record.run_id);
    store
        .put_bytes(&forged_key, record.to_bytes().into(), PutOptions::create())
        .await
        .unwrap();
    let findings = drill_findings(&fx).await;
    assert!(
        findings.contains(&"misplaced_drill_record".to_string()),
        "{findings:?}"
    );
    store.delete(&forged_key).await.unwrap();
    fx.cleanup(&[&target]).await;
}

/// GCS, except that drill records cannot be written (a restore job without
/// the create grant on `_drills/`).
#[derive(Debug)]
struct NoDrillWrites(backstop_cloud::gcs::GcsStore);

#[async_trait]
impl ObjectStore for NoDrillWrites {
    fn url(&self) -> String {
        self.0.url()
    }
    async fn put(&self, key: &str, body: ByteStream, opts: PutOptions) -> StoreResult<ObjectMeta> {
        if key.starts_with(DRILLS_PREFIX) {
            return Err(StoreError::Permanent {
                store: self.url(),
                op: "put",
                key: key.to_string(),
                message: "403 Forbidden: the caller may not create this object".into(),
            });
        }
        self.0.put(key, body, opts).await
    }
    async fn get(&self, key: &str) -> StoreResult<GetResult> {
        self.0.get(key).await
    }
    async fn head(&self, key: &str) -> StoreResult<ObjectMeta> {
        self.0.head(key).await
    }
    async fn list_page(&self, prefix: &str, token: Option<String>) -> StoreResult<ListPage> {
        self.0.list_page(prefix, token).await
    }
    async fn delete(&self, key: &str) -> StoreResult<()> {
        self.0.delete(key).await
    }
}

#[tokio::test]
async fn a_drill_record_that_cannot_be_written_fails_the_restore() {
    let fx = Fixture::new("unwritable").await;
    let store = NoDrillWrites(gcs().await);
    let target = unique("drill_unwritable");
    let err = restore_from(&fx.config(fx.fresh(&target)), &store)
        .await
        .unwrap_err();
    match &err {
        RestoreError::DrillNotRecorded {
            database, passed, ..
        } => {
            assert_eq!(database, &target);
            assert!(passed);
        }
        other => panic!("expected DrillNotRecorded, got {other:?}"),
    }
    let message = err.to_string();
    assert!(message.contains("403"), "{message}");
    assert!(message.contains("audit will not see"), "{message}");
    fx.cleanup(&[&target]).await;
}

#[tokio::test]
async fn a_backup_with_no_tables_is_not_a_pass() {
    let drop_all = r#"
        DO $$ DECLARE r record; BEGIN
          FOR r IN SELECT schemaname, tablename FROM pg_tables
                   WHERE schemaname NOT IN ('pg_catalog', 'information_schema') LOOP
            EXECUTE format('DROP TABLE IF EXISTS %I.%I CASCADE', r.schemaname, r.tablename);
          END LOOP;
        END $$;"#;
    let fx = Fixture::with_sql("notables", drop_all).await;
    let store = gcs().await;
    assert!(fx.manifest(&store).await.tables.is_empty());
    let target = unique("drill_notables");
    let report = restore_from(&fx.config(fx.fresh(&target)), &store)
        .await
        .unwrap();
    assert!(!report.success, "an empty backup passed its drill");
    let error = report.drill.error.as_deref().unwrap_or_default();
    assert!(error.contains("no tables"), "{error}");
    fx.cleanup(&[&target]).await;
}

#[tokio::test]
async fn a_table_the_manifest_does_not_list_is_a_mismatch() {
    let fx = Fixture::new("unlisted").await;
    let store = gcs().await;
    let mut manifest = fx.manifest(&store).await;
    let dropped = manifest.tables.keys().next().unwrap().clone();
    manifest.tables.remove(&dropped);
    fx.publish(&store, &manifest).await;
    let target = unique("drill_unlisted");
    let report = restore_from(&fx.config(fx.fresh(&target)), &store)
        .await
        .unwrap();
    assert!(!report.success, "a table missing from the manifest passed");
    let m = &report.drill.mismatches;
    assert_eq!(m.len(), 1, "{m:?}");
    assert_eq!(
        (m[0].table.as_str(), m[0].expected),
        (dropped.as_str(), None)
    );
    fx.cleanup(&[&target]).await;
}

#[tokio::test]
async fn a_wrong_backup_key_is_not_a_drill() {
    let fx = Fixture::new("wrongkey").await;
    let store = gcs().await;
    let other =
        generate_backup_key("Other <other@example.invalid>", KeyAlgorithm::Curve25519).unwrap();
    let mut cfg = fx.config(fx.fresh(&unique("drill_wrongkey")));
    cfg.secret_key = BackupSecretKey::from_armored(&other.secret_armored).unwrap();
    let err = restore_from(&cfg, &store).await.unwrap_err();
    assert!(
        matches!(err, RestoreError::WrongKey { .. }),
        "expected WrongKey, got {err:?}"
    );
    assert!(err.to_string().contains("BACKSTOP_BACKUP_KEY"), "{err}");
    assert!(
        drills_of(&store, &fx.id).await.is_empty(),
        "a wrong key wrote a drill record"
    );
    let legacy = fx.id.legacy_drill_key();
    assert!(store.head(&legacy).await.is_err(), "{legacy} written");
    fx.cleanup(&[]).await;
}
