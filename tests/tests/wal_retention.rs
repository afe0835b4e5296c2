//! Retention of the WAL archive on the local stack: two base backups and
//! archived WAL (really encrypted, sealed with the production code) in
//! both emulators; one retention run deletes the expired base backup and
//! the WAL only it needed, in both clouds, and the audit reports the gap,
//! the file that does not verify, the copy missing in S3, the recovery
//! window and the uncommitted data object (which it deletes).

use std::sync::Arc;

use backstop_core::crypto::{encrypt_stream, sign_manifest};
use backstop_core::manifest::{BASE_BACKUP_FORMAT, BaseBackupInfo, CiphertextInfo, Manifest};
use backstop_core::naming::{BackupId, DATA_FILE, Namespace};
use backstop_core::retention::{PolicySet, SignatureVerifier};
use backstop_core::store::{ObjectStore, ObjectStoreExt, PutOptions};
use backstop_core::wal::{
    DEFAULT_SEGMENT_SIZE, Lsn, WAL_MANIFEST_KIND, WAL_MANIFEST_VERSION, WalFile, WalKey,
    WalManifest,
};
use backstop_functions::retention::{RetentionFunction, RunResult};
use backstop_tests::backups::{TestKeys, synthetic_manifest, unique_namespace};
use backstop_tests::{gcs, pseudo_random_stream, s3};
use bytes::Bytes;
use chrono::{DateTime, Duration, Utc};

const SYSID: u64 = 7_000_000_000_000_000_018;

fn seg(tli: u32, n: u64) -> WalFile {
    WalFile::segment(tli, n, DEFAULT_SEGMENT_SIZE)
}

/// Encrypts `len` pseudo-random bytes to the test key and stores them at
/// `key` (create-only); returns (plaintext size, ciphertext, recipients).
async fn put_encrypted(
    store: &dyn ObjectStore,
    key: &str,
    object: &str,
    keys: &TestKeys,
    len: u64,
) -> (u64, CiphertextInfo, Vec<String>) {
    let (plain, _) = pseudo_random_stream(len, 1 << 16, len ^ 0x5a1);
    let encrypted = encrypt_stream(plain, &[keys.recipient()]).expect("encrypt");
    store
        .put(key, encrypted.stream, PutOptions::create())
        .await
        .expect("upload encrypted data");
    let s = encrypted.summary.get().expect("summary after the stream");
    (
        s.plaintext_size,
        s.ciphertext_info(object),
        s.recipients.clone(),
    )
}

/// A base backup of [`SYSID`] taken at `t`, from segment `start` to
/// `start + 1` of timeline 1: data, signature, manifest.
async fn write_base_backup(
    store: &dyn ObjectStore,
    ns: &str,
    t: DateTime<Utc>,
    start: u64,
    keys: &TestKeys,
) -> BackupId {
    let id = BackupId::base_backup(Namespace::new(ns).unwrap(), SYSID, t);
    let (size, ciphertext, recipients) =
        put_encrypted(store, &id.data_key(), DATA_FILE, keys, 4000).await;
    let lsn = |n: u64| Lsn(n * DEFAULT_SEGMENT_SIZE + 0x28).to_string();
    let manifest = Manifest {
        dump_format: BASE_BACKUP_FORMAT.into(),
        finished_at: t + Duration::seconds(30),
        tables: Default::default(),
        base_backup: Some(BaseBackupInfo {
            system_identifier: SYSID.to_string(),
            server_version_num: 170_000,
            timeline: 1,
            start_lsn: lsn(start),
            stop_lsn: lsn(start + 1),
            start_wal: seg(1, start).to_string(),
            stop_wal: seg(1, start + 1).to_string(),
            wal_segment_size: DEFAULT_SEGMENT_SIZE,
            backup_manifest_sha256: "00".repeat(32),
            files: 10,
        }),
        ..synthetic_manifest(&id, keys, size, ciphertext, recipients)
    };
    let (bytes, signature) = sign_manifest(&manifest, &keys.signer()).expect("sign");
    for (key, body) in [
        (id.signature_key(), Bytes::from(signature)),
        (id.manifest_key(), Bytes::from(bytes)),
    ] {
        store
            .put_bytes(&key, body, PutOptions::create())
            .await
            .unwrap();
    }
    id
}

/// Archives `file` as wal-push does (encrypted data under a nonce, then
/// the sealed manifest), archived at `at`, sealed by `sealer`'s key; with
/// `commit` false only the data object is written (a killed push).
async fn archive(
    store: &dyn ObjectStore,
    key: &WalKey,
    at: DateTime<Utc>,
    (keys, sealer): (&TestKeys, &TestKeys),
    commit: bool,
) {
    let object = key.data_name(&WalKey::new_nonce());
    let data_key = format!("{}{object}", key.dir());
    let (size, ciphertext, recipients) = put_encrypted(store, &data_key, &object, keys, 2048).await;
    if !commit {
        return;
    }
    let manifest = WalManifest {
        kind: WAL_MANIFEST_KIND.into(),
        version: WAL_MANIFEST_VERSION,
        namespace: key.namespace.clone(),
        system_identifier: SYSID.to_string(),
        file: key.file.name().into(),
        file_kind: key.file.kind(),
        timeline: key.file.timeline(),
        plaintext_size: size,
        plaintext_sha256: "11".repeat(32),
        ciphertext,
        recipients,
        signer: sealer.signing.fingerprint.clone(),
        archived_at: at,
        tool: "backstop-tests".into(),
    };
    let sealed = manifest.seal(&sealer.signer()).expect("seal");
    store
        .put_bytes(&key.manifest_key(), sealed.into(), PutOptions::create())
        .await
        .unwrap();
}

/// Copies every object under `prefix` except `skip` (what the replicator
/// does, byte for byte).
async fn copy_all(from: &dyn ObjectStore, to: &dyn ObjectStore, prefix: &str, skip: &[String]) {
    for meta in from.list_all(prefix).await.unwrap() {
        if skip.iter().any(|s| meta.key.starts_with(s)) {
            continue;
        }
        let bytes = from.get_bytes(&meta.key, 1 << 20).await.unwrap();
        to.put_bytes(&meta.key, bytes, PutOptions::default())
            .await
            .unwrap();
    }
}

async fn run(f: &RetentionFunction, dry_run: bool) -> RunResult {
    for _ in 0..5 {
        let request = backstop_core::events::ScheduleRequest {
            dry_run: Some(dry_run),
        };
        let r = f.run(&request).await;
        if !r.report.findings.iter().any(|x| x.code == "listing_failed") {
            return r;
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
    panic!("listing kept failing");
}

fn wal(ns: &str, file: &WalFile) -> WalKey {
    WalKey::new(Namespace::new(ns).unwrap(), SYSID, file.clone())
}

#[tokio::test]
async fn wal_only_the_expired_base_backup_needed_is_pruned_in_both_clouds_and_audited() {
    let (keys, stranger) = (TestKeys::generate(), TestKeys::generate());
    let ns = unique_namespace("walret");
    let (g, s) = (gcs().await, s3().await);
    let now = Utc::now();
    let old = write_base_backup(&g, &ns, now - Duration::days(2), 0x10, &keys).await;
    let new = write_base_backup(&g, &ns, now - Duration::hours(1), 0x14, &keys).await;
    // Segments 0x10..=0x19 archived, except 0x17 (a gap); 0x18 sealed by
    // an untrusted key; a backup history file; a timeline history file;
    // and a killed push of 0x1a (data only).
    for n in (0x10..=0x19).filter(|n| *n != 0x17) {
        let at = now - Duration::minutes(0x30 - n as i64);
        let sealer = if n == 0x18 { &stranger } else { &keys };
        archive(&g, &wal(&ns, &seg(1, n)), at, (&keys, sealer), true).await;
    }
    let history = WalFile::parse("000000010000000000000010.00000028.backup").unwrap();
    archive(&g, &wal(&ns, &history), now, (&keys, &keys), true).await;
    let tli = WalFile::parse("00000002.history").unwrap();
    archive(&g, &wal(&ns, &tli), now, (&keys, &keys), true).await;
    archive(&g, &wal(&ns, &seg(1, 0x1a)), now, (&keys, &keys), false).await;
    // S3 has everything but segment 0x16 (and the killed push).
    let skip = [
        wal(&ns, &seg(1, 0x16)).to_string(),
        wal(&ns, &seg(1, 0x1a)).to_string(),
    ];
    copy_all(&g, &s, &format!("{ns}/"), &skip).await;

    let policy = serde_json::json!({"version": 1, "replica_grace": "10min",
        "wal_orphan_grace": "1s", "wal_stale_after": "1h",
        "rules": [{"match": ns, "protected": true, "replicated": true, "keep_daily": 7,
                   "base_backups": {"keep_last": 1}, "stale_after": "26h",
                   "drill_max_age": "400d"}]});
    let env = backstop_core::config::Env::from_pairs(keys.env_pairs());
    let f = RetentionFunction {
        primary: Arc::new(gcs().await),
        replica: Some(Arc::new(s3().await)),
        verifier: SignatureVerifier {
            keys: backstop_core::trust::TrustedKeys::from_env(&env)
                .await
                .unwrap(),
        },
        policies: PolicySet::from_json(&policy.to_string()).unwrap(),
        dry_run: false,
        bucket_config: None,
        alerts: Arc::new(backstop_core::alerts::LogAlerts),
        oidc: None,
        concurrency: 4,
    };
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;

    // What goes: the old base backup (3 objects) and WAL below 0x14
    // (4 segments and the .backup file, manifest + data each) in both
    // clouds, and the killed push's data object in GCS.
    let dry = run(&f, true).await;
    let mine = |r: &RunResult| -> Vec<String> {
        let mut v: Vec<String> = r
            .deleted
            .iter()
            .filter(|k| k.starts_with(&ns))
            .cloned()
            .collect();
        v.sort();
        v
    };
    let planned = mine(&dry);
    assert_eq!(planned.len(), (3 + 5 * 2) * 2 + 1, "{planned:#?}");
    assert!(planned.contains(&old.manifest_key()));
    let killed = wal(&ns, &seg(1, 0x1a)).dir();
    assert!(
        planned
            .iter()
            .any(|k| k.starts_with(&format!("{killed}{}", seg(1, 0x1a))))
    );
    for n in 0x14..=0x19 {
        let key = wal(&ns, &seg(1, n)).manifest_key();
        assert!(!planned.contains(&key), "{key} is needed by {new}");
    }
    assert!(
        g.list_all(&format!("{ns}/"))
            .await
            .unwrap()
            .iter()
            .any(|m| m.key == old.manifest_key())
    );

    let done = run(&f, false).await;
    assert_eq!(mine(&done), planned);
    for store in [&g as &dyn ObjectStore, &s] {
        let left: Vec<String> = store
            .list_all(&format!("{ns}/"))
            .await
            .unwrap()
            .into_iter()
            .map(|m| m.key)
            .collect();
        assert!(left.contains(&new.manifest_key()), "{left:#?}");
        assert!(
            !left.iter().any(|k| k.starts_with(&old.prefix())),
            "{left:#?}"
        );
        assert!(left.contains(&wal(&ns, &tli).manifest_key()), "{left:#?}");
        assert!(
            left.contains(&wal(&ns, &seg(1, 0x14)).manifest_key()),
            "{left:#?}"
        );
        assert!(
            !left.contains(&wal(&ns, &seg(1, 0x13)).manifest_key()),
            "{left:#?}"
        );
    }

    let r = &done.report;
    let about = |code: &str, cloud: &str| {
        r.findings
            .iter()
            .filter(|x| x.code == code && x.cloud.as_deref() == Some(cloud))
            .filter(|x| x.namespace.as_deref() == Some(ns.as_str()))
            .collect::<Vec<_>>()
    };
    let gap = about("wal_gap", "gcs");
    assert_eq!(gap.len(), 1, "{r}");
    assert!(
        gap[0].message.contains(seg(1, 0x17).name()),
        "{}",
        gap[0].message
    );
    assert_eq!(about("wal_invalid", "gcs").len(), 1, "{r}");
    let missing = about("wal_missing_replica", "s3");
    assert_eq!(missing.len(), 1, "{r}");
    assert!(
        missing[0]
            .subject
            .as_deref()
            .unwrap()
            .ends_with(seg(1, 0x16).name())
    );
    assert_eq!(about("pitr_window", "gcs").len(), 1, "{r}");
    assert!(
        about("pitr_window", "gcs")[0]
            .message
            .contains(&new.to_string())
    );
    assert_eq!(about("wal_uncommitted", "gcs").len(), 1, "{r}");
    assert!(about("base_backup_without_wal", "gcs").is_empty(), "{r}");
    assert!(about("wal_archive_stale", "gcs").is_empty(), "{r}");
    assert!(about("unknown_object", "gcs").is_empty(), "{r}");

    let again = run(&f, false).await;
    assert!(mine(&again).is_empty(), "{:#?}", mine(&again));
}
