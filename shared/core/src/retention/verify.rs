//! The retention verifier: each complete backup checked with public keys only.

use async_trait::async_trait;
use futures::StreamExt;

use super::inventory::{BackupObjects, InvalidKind, ManifestVerifier, Verification};
use super::wal_inventory::{WalEntry, WalInvalidKind, WalVerification};
use crate::crypto::{CryptoError, PacketInspector, verify_manifest_at};
use crate::manifest::MAX_MANIFEST_BYTES;
use crate::naming::BackupId;
use crate::store::{ObjectStore, ObjectStoreExt, StoreError};
use crate::trust::TrustedKeys;
use crate::wal::WalManifest;

/// Verifies each complete backup with public keys only: the manifest's
/// signature, that it describes this backup, that the data object's size
/// matches, that the data starts as an encrypted OpenPGP message, and that
/// the CRC32C the store computed over the stored bytes (in the listing, and
/// in the response to the read of the first chunk) is the signed one — so
/// a rewritten data object is seen every run without reading it whole.
#[derive(Debug, Clone)]
pub struct SignatureVerifier {
    /// The trusted signing keys and backup recipients.
    pub keys: TrustedKeys,
}

fn invalid(kind: InvalidKind, reason: impl ToString) -> Verification {
    Verification::Invalid {
        kind,
        reason: reason.to_string(),
    }
}

fn kind_of(err: &CryptoError) -> InvalidKind {
    match err {
        CryptoError::SignatureMalformed(_) => InvalidKind::Unsigned,
        CryptoError::UnknownSigner { .. }
        | CryptoError::BadSignature { .. }
        | CryptoError::SignerMismatch { .. } => InvalidKind::BadSignature,
        CryptoError::Manifest(_) => InvalidKind::BadManifest,
        CryptoError::PlaintextPacket { .. }
        | CryptoError::CompressedPlaintext { .. }
        | CryptoError::NotOpenPgp { .. } => InvalidKind::Plaintext,
        _ => InvalidKind::Other,
    }
}

#[async_trait]
impl ManifestVerifier for SignatureVerifier {
    async fn verify(
        &self,
        store: &dyn ObjectStore,
        id: &BackupId,
        objects: &BackupObjects,
    ) -> Result<Verification, StoreError> {
        // The three reads go out together. Of the data object only the first
        // chunk is read: enough to tell an encrypted message from a plaintext
        // dump, even one a buggy writer signed (the full digests are checked
        // by the replicator and restore).
        let (manifest_key, signature_key, data_key) =
            (id.manifest_key(), id.signature_key(), id.data_key());
        let first_chunk = async {
            let mut got = store.get(&data_key).await?;
            let first = got
                .body
                .next()
                .await
                .transpose()
                .map_err(|e| StoreError::Transient {
                    store: store.url(),
                    op: "read",
                    key: data_key.clone(),
                    message: e.to_string(),
                })?;
            Ok::<_, StoreError>((got.meta.crc32c, first))
        };
        let (manifest, signature, (read_crc, first)) = tokio::try_join!(
            store.get_bytes(&manifest_key, MAX_MANIFEST_BYTES),
            store.get_bytes(&signature_key, MAX_MANIFEST_BYTES),
            first_chunk,
        )?;
        if signature.is_empty() {
            return Ok(invalid(
                InvalidKind::Unsigned,
                "the signature object is empty",
            ));
        }
        let manifest = match verify_manifest_at(&manifest, &signature, &self.keys.signing, id) {
            Ok(m) => m,
            Err(e) => return Ok(invalid(kind_of(&e), e)),
        };
        if let Some(data) = &objects.data
            && data.size != manifest.ciphertext.size
        {
            return Ok(invalid(
                InvalidKind::Mismatch,
                format!(
                    "data object is {} bytes, the manifest says {}",
                    data.size, manifest.ciphertext.size
                ),
            ));
        }
        if let Some(first) = first {
            let mut inspector = PacketInspector::new(self.keys.recipients.clone());
            if let Err(e) = inspector.feed(&first) {
                return Ok(invalid(kind_of(&e), e));
            }
        }
        let listed_crc = objects.data.as_ref().and_then(|d| d.crc32c);
        if let Some(bad) = [listed_crc, read_crc]
            .into_iter()
            .flatten()
            .find(|crc| *crc != manifest.ciphertext.crc32c)
        {
            return Ok(invalid(
                InvalidKind::DigestMismatch,
                format!(
                    "{} in {} has CRC32C {bad:08x} (computed by the store), the signed manifest says {:08x}: the object was rewritten after the dump. Restore from the other cloud's copy",
                    data_key,
                    store.url(),
                    manifest.ciphertext.crc32c
                ),
            ));
        }
        Ok(Verification::Verified {
            manifest: Box::new(manifest),
        })
    }

    /// One read: the sealed manifest, opened with the trusted signing keys
    /// (the signature first), then checked against the listing (the data
    /// object's size and the store's CRC32C). The data object is not read.
    async fn verify_wal(
        &self,
        store: &dyn ObjectStore,
        entry: &WalEntry,
    ) -> Result<WalVerification, StoreError> {
        let bytes = store
            .get_bytes(&entry.key.manifest_key(), MAX_MANIFEST_BYTES)
            .await?;
        Ok(
            match WalManifest::open(&bytes, &self.keys.signing, &entry.key) {
                Ok(m) => entry.check(m),
                Err(e) => WalVerification::Invalid {
                    kind: WalInvalidKind::Invalid,
                    reason: format!("the sealed manifest does not verify: {e}"),
                },
            },
        )
    }
}
