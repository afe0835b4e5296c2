//! Test doubles: an in-memory store with injectable failures, a verifier
//! that trusts a marker in the signature object, and history builders.

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, TimeDelta, Utc};

use super::inventory::{BackupObjects, InvalidKind, Inventory, ManifestVerifier, Verification};
use super::wal_inventory::{WalEntry, WalInvalidKind, WalVerification};
use crate::manifest::{BaseBackupInfo, CiphertextInfo, Manifest};
use crate::naming::{BackupId, DATA_FILE, Namespace};
pub use crate::store::MemStore;
use crate::store::{ObjectMeta, ObjectStore, ObjectStoreExt, StoreError};
use crate::wal::{WalFile, WalKey, WalManifest};

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

    /// Trusts a WAL manifest unless it is [`WAL_BAD`].
    async fn verify_wal(
        &self,
        store: &dyn ObjectStore,
        entry: &WalEntry,
    ) -> Result<WalVerification, StoreError> {
        let bytes = store.get_bytes(&entry.key.manifest_key(), 1 << 20).await?;
        let parsed = WalManifest::parse(&bytes).ok();
        Ok(
            match parsed.filter(|m| m.key().ok().as_ref() == Some(&entry.key)) {
                Some(m) => entry.check(m),
                None => WalVerification::Invalid {
                    kind: WalInvalidKind::Invalid,
                    reason: "the sealed manifest does not verify".into(),
                },
            },
        )
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
        base_backup: id.system_identifier().map(|sysid| {
            // A base backup's start segment is its nonce (tests choose it).
            let start = u64::from_str_radix(&id.nonce, 16).unwrap();
            base_info(sysid, 1, start, start + 1)
        }),
        dump_format: if id.system_identifier().is_some() {
            crate::manifest::BASE_BACKUP_FORMAT.into()
        } else {
            crate::manifest::DUMP_FORMAT.into()
        },
        ..Manifest::of_backup(id)
    }
}

/// The cluster every WAL test archives (a made-up system identifier).
pub const SYSID: u64 = 7_312_345_678_901_234_567;
/// The segment size of every WAL test (PostgreSQL's default).
pub const SEG: u64 = crate::wal::DEFAULT_SEGMENT_SIZE;

/// A base backup of [`SYSID`] in `namespace` whose `start_wal` is segment
/// `start` of timeline 1 (stop: the next segment), taken at `t`.
pub fn base_id(namespace: &str, t: DateTime<Utc>, start: u32) -> BackupId {
    bid(namespace, &crate::naming::cluster_database(SYSID), t, start)
}

/// Base backup positions: from segment `start` to `stop` of `timeline`.
pub fn base_info(sysid: u64, timeline: u32, start: u64, stop: u64) -> BaseBackupInfo {
    let lsn = |seg: u64| crate::wal::Lsn(seg * SEG + 0x28).to_string();
    BaseBackupInfo {
        system_identifier: sysid.to_string(),
        server_version_num: 170_000,
        timeline,
        start_lsn: lsn(start),
        stop_lsn: lsn(stop),
        start_wal: WalFile::segment(timeline, start, SEG).to_string(),
        stop_wal: WalFile::segment(timeline, stop, SEG).to_string(),
        wal_segment_size: SEG,
        backup_manifest_sha256: "00".repeat(32),
        files: 1000,
    }
}

/// How a generated WAL file looks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WalState {
    /// Manifest and its committed data object; verified.
    Committed,
    /// Committed, plus an uncommitted data object of a retried push.
    Retried,
    /// A data object only (a push killed before its manifest).
    DataOnly,
    /// Manifest and data, but the manifest does not verify.
    Invalid,
}

/// The data object's nonce of a generated WAL file (retries use `…b`).
const WAL_NONCE: &str = "0000000a";
/// The marker [`MarkerVerifier`] reads as a WAL manifest that does not verify.
pub const WAL_BAD: &str = "bad-wal-signature";

/// `name` archived into `namespace` from [`SYSID`].
pub fn wal_key(namespace: &str, name: &str) -> WalKey {
    WalKey::new(ns(namespace), SYSID, WalFile::parse(name).unwrap())
}

/// The manifest of a WAL file whose data object is `data`.
pub fn wal_manifest(key: &WalKey, data: &[u8], archived_at: DateTime<Utc>) -> WalManifest {
    WalManifest {
        kind: crate::wal::WAL_MANIFEST_KIND.into(),
        version: crate::wal::WAL_MANIFEST_VERSION,
        namespace: key.namespace.clone(),
        system_identifier: key.system_identifier.to_string(),
        file: key.file.name().into(),
        file_kind: key.file.kind(),
        timeline: key.file.timeline(),
        plaintext_size: SEG,
        plaintext_sha256: "11".repeat(32),
        ciphertext: CiphertextInfo {
            object: key.data_name(WAL_NONCE),
            size: data.len() as u64,
            sha256: "22".repeat(32),
            crc32c: crc32c::crc32c(data),
            chunk_size: crate::crypto::chunks::CHUNK_SIZE,
            chunks: placeholder_chunks(data.len() as u64),
        },
        recipients: vec!["AB".repeat(20)],
        signer: "CD".repeat(20),
        archived_at,
        tool: "backstop test".into(),
    }
}

/// The objects (key, bytes, write time) of one WAL file.
pub fn wal_objects(
    namespace: &str,
    name: &str,
    archived_at: DateTime<Utc>,
    state: WalState,
) -> Vec<(String, Bytes, DateTime<Utc>)> {
    let key = wal_key(namespace, name);
    let data = Bytes::from(vec![7u8; 64]);
    let manifest = match state {
        WalState::Invalid => Bytes::from(WAL_BAD),
        _ => Bytes::from(wal_manifest(&key, &data, archived_at).to_bytes()),
    };
    let data_key = |nonce: &str| format!("{}{}", key.dir(), key.data_name(nonce));
    let mut out = vec![(data_key(WAL_NONCE), data.clone(), archived_at)];
    if state == WalState::Retried {
        out.push((data_key("0000000b"), data, archived_at));
    }
    if state != WalState::DataOnly {
        out.push((key.manifest_key(), manifest, archived_at));
    }
    out
}

/// One generated WAL file: namespace, name, archive time, state.
pub type WalSpec<'a> = (&'a str, &'a str, DateTime<Utc>, WalState);

/// An inventory of backups and WAL as [`super::collect`] with
/// [`MarkerVerifier`] would build it (listing times set), without a store.
pub fn inventory_with_wal(store: &str, items: &[(BackupId, Kind)], wal: &[WalSpec]) -> Inventory {
    let mut inv = inventory(store, items, &[]);
    let mut listing: Vec<ObjectMeta> = Vec::new();
    for (namespace, name, at, state) in wal {
        for (key, data, t) in wal_objects(namespace, name, *at, *state) {
            listing.push(ObjectMeta {
                key,
                size: data.len() as u64,
                crc32c: Some(crc32c::crc32c(&data)),
                updated: Some(t),
                ..ObjectMeta::default()
            });
        }
    }
    let wal_only = Inventory::from_listing(store, listing);
    inv.object_count += wal_only.object_count;
    inv.wal = wal_only.wal;
    for (namespace, name, at, state) in wal {
        let key = wal_key(namespace, name);
        let entry = &inv
            .wal
            .values()
            .flat_map(|c| c.files.values())
            .find(|e| e.key == key);
        let verdict = match (state, entry) {
            (WalState::Invalid, _) => WalVerification::Invalid {
                kind: WalInvalidKind::Invalid,
                reason: "injected: bad signature".into(),
            },
            (WalState::DataOnly, _) | (_, None) => continue,
            (_, Some(e)) => e.check(wal_manifest(&key, &[7u8; 64], *at)),
        };
        inv.set_wal_verification(&key, verdict);
    }
    inv
}

/// Writes WAL files into a store.
pub fn populate_wal(store: &MemStore, wal: &[WalSpec]) {
    for (namespace, name, at, state) in wal {
        for (key, data, _) in wal_objects(namespace, name, *at, *state) {
            store.insert(&key, data);
        }
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
