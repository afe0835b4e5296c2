//! One WAL file into the archive: encrypted to the backup recipients, its
//! data object written, then its sealed manifest (the commit marker), both
//! create-only. A file already archived with the same content is success;
//! a different file under the same name is refused and never overwritten.

use std::path::Path;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use chrono::Utc;
use futures::StreamExt;
use sha2::{Digest, Sha256};

use backstop_core::crypto::{
    Compression, RecipientKey, SigningKey, encrypt_stream_with, reader_stream,
};
use backstop_core::error::Classify as _;
use backstop_core::manifest::MAX_MANIFEST_BYTES;
use backstop_core::store::{ObjectStore, ObjectStoreExt, PutOptions, StoreError, byte_stream};
use backstop_core::wal::{WAL_MANIFEST_KIND, WAL_MANIFEST_VERSION, WalKey, WalManifest};

use super::WalPushError;
use crate::dump::RetryPolicy;

/// Pieces the file is read in: small, because several pushes run at once
/// and each holds a few pieces in its pipeline (a segment is 16 MiB).
const READ_CHUNK: usize = 256 << 10;

/// What every push of one call shares.
#[derive(Clone)]
pub struct PushSettings {
    /// Public keys the file is encrypted to.
    pub recipients: Vec<RecipientKey>,
    /// Seals the manifest.
    pub signing_key: SigningKey,
    /// Deflate inside the encryption.
    pub compression: Compression,
    /// Backoff for the manifest write.
    pub retry: RetryPolicy,
}

/// How a push ended.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Pushed {
    /// Stored now.
    Stored {
        /// The file's size.
        bytes: u64,
        /// The encrypted object's size.
        ciphertext_bytes: u64,
    },
    /// The archive already held this exact file (PostgreSQL retried a
    /// push that had landed): nothing written but a spare data object.
    AlreadyArchived,
}

/// Reads the file, encrypts it into a new data object, then seals and
/// writes its manifest.
pub async fn push_file(
    store: &dyn ObjectStore,
    key: &WalKey,
    path: &Path,
    settings: &PushSettings,
) -> Result<Pushed, WalPushError> {
    let read_failed = |e: std::io::Error| WalPushError::Read {
        path: path.display().to_string(),
        error: e.to_string(),
    };
    let file = std::fs::File::open(path).map_err(read_failed)?;
    let size = file.metadata().map_err(read_failed)?.len();
    let nonce = WalKey::new_nonce();
    let data_name = key.data_name(&nonce);
    let data_key = format!("{}{data_name}", key.dir());

    let hasher = Arc::new(Mutex::new((Sha256::new(), 0u64)));
    let plaintext = hashed(reader_stream(file, READ_CHUNK), hasher.clone());
    let encrypted = encrypt_stream_with(plaintext, &settings.recipients, settings.compression)
        .map_err(|e| WalPushError::Encrypt {
            key: key.to_string(),
            error: e.to_string(),
        })?;
    let opts = PutOptions::create().with_content_type("application/pgp-encrypted");
    let meta = store
        .put(&data_key, encrypted.stream, opts)
        .await
        .map_err(|error| upload_failed(&data_key, error, path))?;
    let summary = encrypted
        .summary
        .get()
        .ok_or_else(|| WalPushError::Inconsistent {
            key: data_key.clone(),
            reason: "the encryption did not report its digests".into(),
        })?;
    let (digest, read) = {
        let h = hasher.lock().expect("hasher");
        (hex::encode(h.0.clone().finalize()), h.1)
    };
    if read != size || meta.size != summary.ciphertext.size {
        return Err(WalPushError::Inconsistent {
            key: data_key,
            reason: format!(
                "read {read} of {size} bytes of the file; the store holds {} bytes of {} encrypted",
                meta.size, summary.ciphertext.size
            ),
        });
    }
    let manifest = WalManifest {
        kind: WAL_MANIFEST_KIND.into(),
        version: WAL_MANIFEST_VERSION,
        namespace: key.namespace.clone(),
        system_identifier: key.system_identifier.to_string(),
        file: key.file.name().to_string(),
        file_kind: key.file.kind(),
        timeline: key.file.timeline(),
        plaintext_size: size,
        plaintext_sha256: digest,
        ciphertext: summary.ciphertext_info(&data_name),
        recipients: summary.recipients.clone(),
        signer: settings.signing_key.fingerprint(),
        archived_at: Utc::now(),
        tool: format!("backstop {}", env!("CARGO_PKG_VERSION")),
    };
    if commit(store, key, &manifest, settings).await? {
        Ok(Pushed::Stored {
            bytes: size,
            ciphertext_bytes: summary.ciphertext.size,
        })
    } else {
        Ok(Pushed::AlreadyArchived)
    }
}

/// Passes `body` on while hashing it and counting its bytes.
fn hashed(
    body: backstop_core::store::ByteStream,
    into: Arc<Mutex<(Sha256, u64)>>,
) -> backstop_core::store::ByteStream {
    byte_stream(body.map(move |item| {
        if let Ok(chunk) = &item {
            let mut h = into.lock().expect("hasher");
            h.0.update(chunk);
            h.1 += chunk.len() as u64;
        }
        item
    }))
}

fn upload_failed(key: &str, error: StoreError, path: &Path) -> WalPushError {
    match error {
        StoreError::Source { source, .. } => WalPushError::Read {
            path: path.display().to_string(),
            error: source.to_string(),
        },
        error => WalPushError::Upload {
            key: key.to_string(),
            error,
        },
    }
}

/// Writes the sealed manifest, create-only, retrying transient failures.
/// An existing manifest decides: the same file (by its plaintext digest
/// and size) is success (`false`: committed before), another one is a
/// conflict.
async fn commit(
    store: &dyn ObjectStore,
    key: &WalKey,
    manifest: &WalManifest,
    settings: &PushSettings,
) -> Result<bool, WalPushError> {
    let sealed =
        Bytes::from(
            manifest
                .seal(&settings.signing_key)
                .map_err(|e| WalPushError::Sign {
                    key: key.to_string(),
                    error: e.to_string(),
                })?,
        );
    let manifest_key = key.manifest_key();
    let mut backoff = settings.retry.initial_backoff;
    for attempt in 1.. {
        let opts = PutOptions::create().with_content_type("application/json");
        match store.put_bytes(&manifest_key, sealed.clone(), opts).await {
            Ok(_) => return Ok(true),
            Err(StoreError::PreconditionFailed { .. }) => {
                return compare_existing(store, key, manifest, settings).await;
            }
            Err(e) if e.is_transient() && attempt < settings.retry.attempts.max(1) => {
                tracing::warn!(object = %manifest_key, attempt, error = %e, "transient failure writing the WAL manifest, retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(settings.retry.max_backoff);
            }
            Err(error) => {
                return Err(WalPushError::Upload {
                    key: manifest_key,
                    error,
                });
            }
        }
    }
    unreachable!("the loop returns")
}

/// The archive holds a manifest for this file already: is it this file?
async fn compare_existing(
    store: &dyn ObjectStore,
    key: &WalKey,
    ours: &WalManifest,
    settings: &PushSettings,
) -> Result<bool, WalPushError> {
    let manifest_key = key.manifest_key();
    let bytes = store
        .get_bytes(&manifest_key, MAX_MANIFEST_BYTES)
        .await
        .map_err(|error| WalPushError::Upload {
            key: manifest_key.clone(),
            error,
        })?;
    let theirs =
        WalManifest::open(&bytes, &[settings.signing_key.verifying_key()], key).map_err(|e| {
            WalPushError::Conflict {
                key: key.to_string(),
                reason: format!(
                    "the archived manifest does not verify with this job's signing key ({e})"
                ),
            }
        })?;
    if theirs.plaintext_sha256 == ours.plaintext_sha256
        && theirs.plaintext_size == ours.plaintext_size
    {
        tracing::info!(file = %key, "already archived with the same content (a retried push)");
        return Ok(false);
    }
    Err(WalPushError::Conflict {
        key: key.to_string(),
        reason: format!(
            "the archive holds a different file of this name ({} bytes, SHA-256 {}, archived {}) than this one ({} bytes, SHA-256 {})",
            theirs.plaintext_size,
            theirs.plaintext_sha256,
            theirs.archived_at,
            ours.plaintext_size,
            ours.plaintext_sha256
        ),
    })
}
