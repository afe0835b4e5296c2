//! Test doubles: an in-memory store with injectable failures, a verifier
//! that trusts a marker in the signature object, and history builders.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, TimeDelta, Utc};

use super::inventory::{BackupObjects, InvalidKind, Inventory, ManifestVerifier, Verification};
use crate::manifest::{CiphertextInfo, Manifest};
use crate::naming::{BackupId, DATA_FILE, Namespace};
use crate::store::{
    ByteStream, GetResult, ListPage, ObjectMeta, ObjectStore, ObjectStoreExt, PutOptions,
    StoreError, StoreResult, bytes_stream,
};

#[derive(Debug, Default)]
struct State {
    objects: BTreeMap<String, Bytes>,
    page_size: usize,
    /// Listing page index (0-based) that fails.
    fail_list_page: Option<usize>,
    fail_delete: BTreeSet<String>,
    fail_get: BTreeSet<String>,
    /// Every delete attempt, in order: (key, succeeded).
    delete_log: Vec<(String, bool)>,
    list_calls: usize,
}

#[derive(Debug)]
pub struct MemStore {
    url: String,
    state: Mutex<State>,
}

impl MemStore {
    pub fn new(url: &str) -> Self {
        Self {
            url: url.into(),
            state: Mutex::new(State {
                page_size: 1000,
                ..State::default()
            }),
        }
    }

    fn with<R>(&self, f: impl FnOnce(&mut State) -> R) -> R {
        f(&mut self.state.lock().unwrap())
    }

    pub fn insert(&self, key: &str, data: impl Into<Bytes>) {
        let data = data.into();
        self.with(|s| s.objects.insert(key.to_string(), data));
    }

    pub fn snapshot(&self) -> BTreeMap<String, Bytes> {
        self.with(|s| s.objects.clone())
    }

    pub fn contains(&self, key: &str) -> bool {
        self.with(|s| s.objects.contains_key(key))
    }

    pub fn set_page_size(&self, n: usize) {
        self.with(|s| s.page_size = n.max(1));
    }

    pub fn fail_list_page(&self, page: Option<usize>) {
        self.with(|s| s.fail_list_page = page);
    }

    pub fn fail_deletes(&self, keys: impl IntoIterator<Item = String>) {
        self.with(|s| s.fail_delete = keys.into_iter().collect());
    }

    pub fn fail_gets(&self, keys: impl IntoIterator<Item = String>) {
        self.with(|s| s.fail_get = keys.into_iter().collect());
    }

    pub fn delete_log(&self) -> Vec<(String, bool)> {
        self.with(|s| s.delete_log.clone())
    }

    pub fn list_calls(&self) -> usize {
        self.with(|s| s.list_calls)
    }

    fn meta(key: &str, data: &Bytes) -> ObjectMeta {
        ObjectMeta {
            key: key.to_string(),
            size: data.len() as u64,
            ..ObjectMeta::default()
        }
    }

    fn transient(&self, op: &'static str, key: &str) -> StoreError {
        StoreError::Transient {
            store: self.url.clone(),
            op,
            key: key.to_string(),
            message: "injected failure".into(),
        }
    }
}

#[async_trait]
impl ObjectStore for MemStore {
    fn url(&self) -> String {
        self.url.clone()
    }

    async fn put(&self, key: &str, body: ByteStream, _opts: PutOptions) -> StoreResult<ObjectMeta> {
        use futures::TryStreamExt;
        let chunks: Vec<Bytes> = body.try_collect().await.map_err(|e| StoreError::Source {
            store: self.url.clone(),
            key: key.into(),
            source: e,
        })?;
        let data = Bytes::from(chunks.concat());
        self.insert(key, data.clone());
        Ok(Self::meta(key, &data))
    }

    async fn get(&self, key: &str) -> StoreResult<GetResult> {
        if self.with(|s| s.fail_get.contains(key)) {
            return Err(self.transient("get", key));
        }
        let data =
            self.with(|s| s.objects.get(key).cloned())
                .ok_or_else(|| StoreError::NotFound {
                    store: self.url.clone(),
                    key: key.into(),
                })?;
        Ok(GetResult {
            meta: Self::meta(key, &data),
            body: bytes_stream(data),
        })
    }

    async fn head(&self, key: &str) -> StoreResult<ObjectMeta> {
        let data =
            self.with(|s| s.objects.get(key).cloned())
                .ok_or_else(|| StoreError::NotFound {
                    store: self.url.clone(),
                    key: key.into(),
                })?;
        Ok(Self::meta(key, &data))
    }

    async fn list_page(&self, prefix: &str, page_token: Option<String>) -> StoreResult<ListPage> {
        let start: usize = page_token.as_deref().unwrap_or("0").parse().unwrap();
        self.with(|s| {
            s.list_calls += 1;
            let page_no = start / s.page_size;
            if s.fail_list_page == Some(page_no) {
                return Err(self.transient("list", prefix));
            }
            let matching: Vec<_> = s
                .objects
                .iter()
                .filter(|(k, _)| k.starts_with(prefix))
                .collect();
            let end = (start + s.page_size).min(matching.len());
            Ok(ListPage {
                objects: matching[start.min(end)..end]
                    .iter()
                    .map(|(k, v)| Self::meta(k, v))
                    .collect(),
                next_page_token: (end < matching.len()).then(|| end.to_string()),
            })
        })
    }

    async fn delete(&self, key: &str) -> StoreResult<()> {
        self.with(|s| {
            if s.fail_delete.contains(key) {
                s.delete_log.push((key.to_string(), false));
                return Err(StoreError::Permanent {
                    store: self.url.clone(),
                    op: "delete",
                    key: key.to_string(),
                    message: "injected failure".into(),
                });
            }
            s.delete_log.push((key.to_string(), true));
            match s.objects.remove(key) {
                Some(_) => Ok(()),
                None => Err(StoreError::NotFound {
                    store: self.url.clone(),
                    key: key.to_string(),
                }),
            }
        })
    }
}

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
        },
        recipients: vec!["AB".repeat(20)],
        signer: "CD".repeat(20),
        tables: [("public.rows".to_string(), rows)].into(),
        tool: "backstop test".into(),
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
