//! Synthetic archived WAL files: real encryption and a real sealed (signed)
//! manifest, stored as `backstop wal-push` stores them: the encrypted copy
//! under a fresh nonce, then the manifest (the commit marker), create-only.

use std::sync::Arc;

use backstop_core::alerts::{Alert, AlertError, AlertSink};
use backstop_core::config::Env;
use backstop_core::crypto::{Compression, SigningKey, encrypt_stream_with};
use backstop_core::naming::Namespace;
use backstop_core::replicate::Replicator;
use backstop_core::store::{ObjectStore, ObjectStoreExt, PutOptions, byte_stream};
use backstop_core::wal::{WAL_MANIFEST_KIND, WAL_MANIFEST_VERSION, WalFile, WalKey, WalManifest};
use backstop_functions::replicator::ReplicatorFunction;
use bytes::Bytes;
use sha2::{Digest, Sha256};

use crate::backups::TestKeys;
use crate::stack_env;

/// The test cluster's `system_identifier`.
pub const SYSTEM_IDENTIFIER: u64 = 7_312_345_678_901_234_567;

/// Where `file` of the test cluster is archived in `namespace`.
pub fn wal_key(namespace: &str, file: &str) -> WalKey {
    WalKey::new(
        Namespace::new(namespace).expect("a valid namespace"),
        SYSTEM_IDENTIFIER,
        WalFile::parse(file).expect("a WAL file name"),
    )
}

/// `len` pseudo-random bytes (a segment's content; they do not compress).
pub fn wal_bytes(len: usize, seed: u64) -> Bytes {
    let mut state = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        out.extend_from_slice(&state.to_le_bytes());
    }
    out.truncate(len);
    Bytes::from(out)
}

/// Encrypts `plaintext` to the test backup key and stores it as an
/// encrypted copy of `key` under a fresh nonce; returns the manifest that
/// would commit it (not written: see [`commit_wal`]).
pub async fn put_wal_data(
    store: &dyn ObjectStore,
    key: &WalKey,
    keys: &TestKeys,
    plaintext: Bytes,
) -> WalManifest {
    let plaintext_sha256 = hex::encode(Sha256::digest(&plaintext));
    let input = byte_stream(futures::stream::iter([Ok(plaintext)]));
    let encrypted =
        encrypt_stream_with(input, &[keys.recipient()], Compression::None).expect("encrypt");
    let object = key.data_name(&WalKey::new_nonce());
    store
        .put(
            &format!("{}{object}", key.dir()),
            encrypted.stream,
            PutOptions::create(),
        )
        .await
        .expect("upload the encrypted WAL file");
    let summary = encrypted.summary.get().expect("summary after the stream");
    WalManifest {
        kind: WAL_MANIFEST_KIND.into(),
        version: WAL_MANIFEST_VERSION,
        namespace: key.namespace.clone(),
        system_identifier: key.system_identifier.to_string(),
        file: key.file.name().to_string(),
        file_kind: key.file.kind(),
        timeline: key.file.timeline(),
        plaintext_size: summary.plaintext_size,
        plaintext_sha256,
        ciphertext: summary.ciphertext_info(&object),
        recipients: summary.recipients.clone(),
        signer: keys.signing.fingerprint.clone(),
        archived_at: chrono::Utc::now(),
        tool: "backstop-tests".into(),
    }
}

/// Seals `manifest` with `signer` and writes it, create-only, as the
/// manifest of `at` (normally `manifest.key()`; another key to test a
/// misplaced one). Returns the sealed bytes.
pub async fn commit_wal(
    store: &dyn ObjectStore,
    at: &WalKey,
    manifest: &WalManifest,
    signer: &SigningKey,
) -> Bytes {
    let sealed = Bytes::from(manifest.seal(signer).expect("seal the WAL manifest"));
    store
        .put_bytes(&at.manifest_key(), sealed.clone(), PutOptions::create())
        .await
        .expect("upload the WAL manifest");
    sealed
}

/// One archived WAL file, committed: [`put_wal_data`] then [`commit_wal`].
pub async fn write_wal_file(
    store: &dyn ObjectStore,
    key: &WalKey,
    keys: &TestKeys,
    plaintext: Bytes,
) -> WalManifest {
    let manifest = put_wal_data(store, key, keys, plaintext).await;
    commit_wal(store, key, &manifest, &keys.signer()).await;
    manifest
}

/// The replicator as the function wires it from its environment (the
/// stack's, the test keys, `namespace` only), publishing to `alerts`.
pub async fn replicator(
    keys: &TestKeys,
    namespace: &str,
    alerts: Arc<dyn AlertSink>,
) -> Replicator {
    stack_env();
    let mut pairs: Vec<(String, String)> = std::env::vars().collect();
    pairs.extend(keys.env_pairs());
    pairs.extend(
        [
            ("BACKSTOP_REPLICATE_NAMESPACES", namespace),
            ("BACKSTOP_ALERT_TOPIC", ""),
            (
                "BACKSTOP_OIDC_AUDIENCE",
                "https://replicator.example.invalid/",
            ),
            ("BACKSTOP_OIDC_SERVICE_ACCOUNT", "push@example.invalid"),
        ]
        .map(|(k, v)| (k.to_string(), v.to_string())),
    );
    let function = ReplicatorFunction::from_env(&Env::from_pairs(pairs))
        .await
        .expect("the replicator from the stack's environment");
    Replicator {
        alerts,
        ..function.replicator
    }
}

/// Keeps every alert published, for tests that check which were raised.
#[derive(Debug, Default)]
pub struct AlertLog(std::sync::Mutex<Vec<Alert>>);

impl AlertLog {
    /// The codes of the alerts raised so far, in order.
    pub fn codes(&self) -> Vec<String> {
        let alerts = self.0.lock().expect("alert log");
        alerts.iter().map(|a| a.code.clone()).collect()
    }

    /// The alerts raised so far.
    pub fn all(&self) -> Vec<Alert> {
        self.0.lock().expect("alert log").clone()
    }
}

#[async_trait::async_trait]
impl AlertSink for AlertLog {
    async fn publish(&self, alert: &Alert) -> Result<(), AlertError> {
        self.0.lock().expect("alert log").push(alert.clone());
        Ok(())
    }
}
