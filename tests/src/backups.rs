//! Test keys and synthetic backups: real encryption and real signatures over
//! pseudo-random plaintext, stored exactly as the dump job stores them.

use std::path::PathBuf;

use backstop_core::crypto::{
    GeneratedKey, KeyAlgorithm, RecipientKey, SigningKey, encrypt_stream, generate_backup_key,
    generate_signing_key, sign_manifest,
};
use backstop_core::manifest::{CiphertextInfo, Manifest};
use backstop_core::naming::{BackupId, DATA_FILE, Namespace};
use backstop_core::store::{ObjectStore, ObjectStoreExt, PutOptions};
use bytes::Bytes;
use chrono::{DateTime, Utc};

use crate::pseudo_random_stream;

/// A backup key pair and a signing key pair, also written as armored files
/// (for configuration variables such as `BACKSTOP_RECIPIENTS=file:...`).
pub struct TestKeys {
    pub backup: GeneratedKey,
    pub signing: GeneratedKey,
    pub dir: tempfile::TempDir,
}

impl TestKeys {
    pub fn generate() -> Self {
        let backup = generate_backup_key(
            "Test backup <backup@example.invalid>",
            KeyAlgorithm::Curve25519,
        )
        .expect("backup key");
        let signing = generate_signing_key(
            "Test signing <signing@example.invalid>",
            KeyAlgorithm::Curve25519,
        )
        .expect("signing key");
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join("backup.pub.asc"), &backup.public_armored).unwrap();
        std::fs::write(
            dir.path().join("backup.sec.asc"),
            backup.secret_armored.as_bytes(),
        )
        .unwrap();
        std::fs::write(dir.path().join("signing.pub.asc"), &signing.public_armored).unwrap();
        std::fs::write(
            dir.path().join("signing.sec.asc"),
            signing.secret_armored.as_bytes(),
        )
        .unwrap();
        Self {
            backup,
            signing,
            dir,
        }
    }

    pub fn path(&self, file: &str) -> PathBuf {
        self.dir.path().join(file)
    }

    /// `file:` settings for the public-key variables.
    pub fn env_pairs(&self) -> Vec<(String, String)> {
        vec![
            (
                "BACKSTOP_RECIPIENTS".into(),
                format!("file:{}", self.path("backup.pub.asc").display()),
            ),
            (
                "BACKSTOP_SIGNING_PUBLIC_KEY".into(),
                format!("file:{}", self.path("signing.pub.asc").display()),
            ),
        ]
    }

    pub fn recipient(&self) -> RecipientKey {
        RecipientKey::from_armored(&self.backup.public_armored).unwrap()
    }

    pub fn signer(&self) -> SigningKey {
        SigningKey::from_armored(&self.signing.secret_armored).unwrap()
    }
}

/// A fresh backup id in a namespace of its own.
pub fn backup_id(namespace: &str, taken_at: DateTime<Utc>) -> BackupId {
    BackupId::new(Namespace::new(namespace).unwrap(), "app", taken_at).unwrap()
}

/// A unique namespace per test run.
pub fn unique_namespace(test: &str) -> String {
    format!("{test}-{:08x}", rand::random::<u32>())
}

/// The manifest the dump job would write for `id` over `ciphertext`: one
/// synthetic table of `plaintext_size / 100` rows, signed by `keys`.
pub fn synthetic_manifest(
    id: &BackupId,
    keys: &TestKeys,
    plaintext_size: u64,
    ciphertext: CiphertextInfo,
    recipients: Vec<String>,
) -> Manifest {
    Manifest {
        server_version: "15.18".into(),
        plaintext_size,
        ciphertext,
        recipients,
        signer: keys.signing.fingerprint.clone(),
        tables: [("public.synthetic".to_string(), plaintext_size / 100)].into(),
        tool: "backstop-tests".into(),
        base_backup: None,
        ..Manifest::of_backup(id)
    }
}

/// Writes a complete backup of `plaintext_len` pseudo-random bytes at `id`:
/// data, signature, then manifest (the commit marker). Returns the manifest.
pub async fn write_backup(
    store: &dyn ObjectStore,
    id: &BackupId,
    keys: &TestKeys,
    plaintext_len: u64,
) -> Manifest {
    let (plain, _) = pseudo_random_stream(plaintext_len, 1 << 20, plaintext_len ^ 0x5eed);
    let encrypted = encrypt_stream(plain, &[keys.recipient()]).expect("encrypt");
    store
        .put(&id.data_key(), encrypted.stream, PutOptions::create())
        .await
        .expect("upload data");
    let summary = encrypted
        .summary
        .get()
        .expect("summary after the stream ended");
    let manifest = synthetic_manifest(
        id,
        keys,
        summary.plaintext_size,
        summary.ciphertext_info(DATA_FILE),
        summary.recipients.clone(),
    );
    let (bytes, signature) = sign_manifest(&manifest, &keys.signer()).expect("sign");
    store
        .put_bytes(
            &id.signature_key(),
            Bytes::from(signature),
            PutOptions::create(),
        )
        .await
        .expect("upload signature");
    store
        .put_bytes(&id.manifest_key(), Bytes::from(bytes), PutOptions::create())
        .await
        .expect("upload manifest");
    manifest
}

/// A drill record of `id`, as `backstop restore` writes one: a minute's run
/// ending at `finished`, failed with `error` if given, restored from
/// `restored_from` (`gcs` or `s3`). Callers change other fields with
/// `..drill_record(..)`.
pub fn drill_record(
    id: &BackupId,
    finished: DateTime<Utc>,
    error: Option<&str>,
    restored_from: &str,
) -> backstop_core::drill::DrillRecord {
    backstop_core::drill::DrillRecord {
        backup_id: id.to_string(),
        run_id: backstop_core::drill::new_run_id(finished),
        namespace: id.namespace.clone(),
        target_database: "drill_target".into(),
        started_at: finished - chrono::Duration::minutes(1),
        finished_at: finished,
        success: error.is_none(),
        tables_checked: 1,
        mismatches: Vec::new(),
        error: error.map(String::from),
        restored_from: Some(restored_from.into()),
    }
}

/// Writes `record` where `backstop restore` writes it, create-only.
pub async fn put_drill(store: &dyn ObjectStore, record: &backstop_core::drill::DrillRecord) {
    let key = record.key().expect("a drill record's key");
    store
        .put_bytes(&key, Bytes::from(record.to_bytes()), PutOptions::create())
        .await
        .expect("write the drill record");
}
