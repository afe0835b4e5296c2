//! Test doubles: an in-memory store with injectable failures, a verifier
//! that trusts a marker in the signature object, and history builders.

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, TimeDelta, Utc};

use super::inventory::{BackupObjects, InvalidKind, Inventory, ManifestVerifier, Verification};
use crate::manifest::{CiphertextInfo, Manifest};
use crate::naming::{BackupId, DATA_FILE, Namespace};
pub use crate::store::MemStore;
use crate::store::{ObjectMeta, ObjectStore, ObjectStoreExt, StoreError};

/// Signature markers understood by [`MarkerVerifier`].
pub const SIG_VALID: &str = "valid-signature";
pub const SIG_BAD: &str = "bad-signature";
pub const SIG_PLAINTEXT: &str = "plaintext-data";
pub const SIG_SKIP: &str = "not-checked";

/// Trusts a marker written into the signature object instead of checking a
/// real OpenPGP signature (the crypto verifier is tested with the crypto).
#[derive(Debug, Default)]
pub struct MarkerVerifier;

#[async_trait]
impl ManifestVerifier for MarkerVerifier {
    async fn verify(
        &self,
        store: &dyn ObjectStore,
        id: &BackupId,
        _objects: &BackupObjects,
    ) -> Result<Verification, StoreError> {
        let sig = store.get_bytes(&id.signature_key(), 4096).await?;
        let manifest = store.get_bytes(&id.manifest_key(), 1 << 20).await?;
        Ok(match std::str::from_utf8(&sig).unwrap_or("") {
            SIG_VALID => match Manifest::parse(&manifest) {
                Ok(m) => Verification::Verified {
                    manifest: Box::new(m),
                },
                Err(e) => Verification::Invalid {
                    kind: InvalidKind::BadManifest,
                    reason: e.to_string(),
                },
            },
            SIG_BAD => Verification::Invalid {
                kind: InvalidKind::BadSignature,
                reason: "signature does not verify".into(),
            },
            SIG_PLAINTEXT => Verification::Invalid {
                kind: InvalidKind::Plaintext,
                reason: "data starts with PGDMP: not encrypted".into(),
            },
            SIG_SKIP => Verification::NotChecked,
            _ => Verification::Invalid {
                kind: InvalidKind::Unsigned,
                reason: "signature object is not a signature".into(),
            },
        })
    }
}

/// What a generated backup looks like.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    Verified {
        plaintext: u64,
        rows: u64,
    },
    Invalid(InvalidKind),
    NotChecked,
    /// Which of data, signature, manifest exist (not all three).
    Incomplete {
        data: bool,
        sig: bool,
        manifest: bool,
    },
}

impl Kind {
    pub fn ok() -> Self {
        Kind::Verified {
            plaintext: 1000,
            rows: 100,
        }
    }

    pub fn data_only() -> Self {
        Kind::Incomplete {
            data: true,
            sig: false,
            manifest: false,
        }
    }
}

pub fn ns(s: &str) -> Namespace {
    Namespace::new(s).unwrap()
}

pub fn bid(namespace: &str, db: &str, t: DateTime<Utc>, nonce: u32) -> BackupId {
    BackupId::with_nonce(ns(namespace), db, t, &format!("{:06x}", nonce & 0xff_ffff)).unwrap()
}

/// The data object's size for a backup: ciphertext a bit larger than
/// plaintext, as with real encryption.
pub fn data_size(plaintext: u64) -> u64 {
    plaintext + 100
}

/// Chunk digests that fit an object of `size` bytes (not its real ones:
/// these tests never read data).
fn placeholder_chunks(size: u64) -> Vec<String> {
    let n = crate::crypto::chunks::chunk_count(size, crate::crypto::chunks::CHUNK_SIZE);
    vec!["00".repeat(32); n as usize]
}

pub fn manifest_for(id: &BackupId, plaintext: u64, rows: u64) -> Manifest {
    Manifest {
        server_version: "16.4".into(),
        finished_at: id.taken_at + TimeDelta::seconds(30),
        plaintext_size: plaintext,
        ciphertext: CiphertextInfo {
            object: DATA_FILE.into(),
            size: data_size(plaintext),
            sha256: format!("{:064x}", plaintext),
            crc32c: 0,
            chunk_size: crate::crypto::chunks::CHUNK_SIZE,
            chunks: placeholder_chunks(data_size(plaintext)),
        },
        recipients: vec!["AB".repeat(20)],
        signer: "CD".repeat(20),
        tables: [("public.rows".to_string(), rows)].into(),
        tool: "backstop test".into(),
        base_backup: None,
        ..Manifest::of_backup(id)
    }
}

/// The objects (key, bytes) a backup of `kind` consists of.
pub fn objects_for(id: &BackupId, kind: &Kind) -> Vec<(String, Bytes)> {
    let (plaintext, rows) = match kind {
        Kind::Verified { plaintext, rows } => (*plaintext, *rows),
        _ => (1000, 100),
    };
    let manifest = Bytes::from(manifest_for(id, plaintext, rows).to_bytes());
    let data = Bytes::from(vec![0u8; data_size(plaintext) as usize]);
    let sig = |marker: &str| Bytes::from(marker.to_string());
    let (d, s, m, marker) = match kind {
        Kind::Verified { .. } => (true, true, true, SIG_VALID),
        Kind::Invalid(InvalidKind::Plaintext) => (true, true, true, SIG_PLAINTEXT),
        Kind::Invalid(InvalidKind::Unsigned) => (true, true, true, ""),
        Kind::Invalid(_) => (true, true, true, SIG_BAD),
        Kind::NotChecked => (true, true, true, SIG_SKIP),
        Kind::Incomplete {
            data,
            sig,
            manifest,
        } => (*data, *sig, *manifest, SIG_VALID),
    };
    let mut out = Vec::new();
    if d {
        out.push((id.data_key(), data));
    }
    if s {
        out.push((id.signature_key(), sig(marker)));
    }
    if m {
        out.push((id.manifest_key(), manifest));
    }
    out
}

pub fn verification_for(id: &BackupId, kind: &Kind) -> Verification {
    match kind {
        Kind::Verified { plaintext, rows } => Verification::Verified {
            manifest: Box::new(manifest_for(id, *plaintext, *rows)),
        },
        Kind::Invalid(k) => Verification::Invalid {
            kind: *k,
            reason: format!("injected: {k}"),
        },
        _ => Verification::NotChecked,
    }
}

/// An inventory as [`super::collect`] with [`MarkerVerifier`] would build it,
/// without a store.
pub fn inventory(store: &str, items: &[(BackupId, Kind)], foreign: &[&str]) -> Inventory {
    let mut listing: Vec<ObjectMeta> = items
        .iter()
        .flat_map(|(id, kind)| objects_for(id, kind))
        .map(|(key, data)| ObjectMeta {
            key,
            size: data.len() as u64,
            ..ObjectMeta::default()
        })
        .collect();
    listing.extend(foreign.iter().map(|k| ObjectMeta {
        key: k.to_string(),
        size: 10,
        ..ObjectMeta::default()
    }));
    listing.sort_by(|a, b| a.key.cmp(&b.key));
    let mut inv = Inventory::from_listing(store, listing);
    for (id, kind) in items {
        inv.set_verification(id, verification_for(id, kind));
    }
    inv
}

/// Writes a history into a store.
pub fn populate(store: &MemStore, items: &[(BackupId, Kind)]) {
    for (id, kind) in items {
        for (key, data) in objects_for(id, kind) {
            store.insert(&key, data);
        }
    }
}
