//! The WAL section of an inventory: each cluster's archived files
//! (`<namespace>/.wal/<system id>/<timeline>/…`, see [`crate::wal`]), with
//! their manifest, their data objects and the verifier's verdict.
//!
//! A file is *committed* when its sealed manifest (`<file>.json`) exists
//! and names one of its data objects (`ciphertext.object`); any other data
//! object of the same file is a leftover of a killed or retried push.
//!
//! Verification reads one manifest per file (one GET: about $0.004 per
//! 10,000 files in GCS, $0.004 in S3, and at 16 at a time about 1 s per
//! 1,000 files on a 15 ms link). To bound that, [`verify_wal`] does not
//! read the manifests of segments older than every verified base backup's
//! `start_wal`: no base backup can need them and the plan deletes them
//! without looking (they were read on earlier runs while they were in the
//! window). Everything from the oldest base backup on, and every file of a
//! cluster without one, is read on every run.

use std::collections::BTreeMap;
use std::fmt;

use futures::{StreamExt, TryStreamExt};
use serde::Serialize;

use super::inventory::{Inventory, ManifestVerifier};
use crate::manifest::Manifest;
use crate::naming::{BackupId, Namespace};
use crate::store::{ObjectMeta, ObjectStore, StoreError};
use crate::wal::{Lsn, WalFile, WalKey, WalManifest, WalObject};

/// One cluster's archive in one namespace.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct ClusterKey {
    /// The namespace the WAL was archived into.
    pub namespace: Namespace,
    /// The cluster's `system_identifier`.
    pub system_identifier: u64,
}

impl ClusterKey {
    /// The cluster of a base backup's id (`None` for a dump's).
    pub fn of_backup(id: &BackupId) -> Option<Self> {
        id.system_identifier().map(|system_identifier| Self {
            namespace: id.namespace.clone(),
            system_identifier,
        })
    }
}

impl fmt::Display for ClusterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/cluster {}", self.namespace, self.system_identifier)
    }
}

/// Why a WAL file failed verification; each is a finding code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WalInvalidKind {
    /// The manifest does not open: bad or unknown signature, malformed,
    /// describes another file, or cannot be read for good.
    Invalid,
    /// The committed data object's size or CRC32C (the store's) is not
    /// the signed one.
    DigestMismatch,
    /// The manifest names a data object that is not in the bucket.
    DataMissing,
}

impl WalInvalidKind {
    /// The audit finding code.
    pub fn code(self) -> &'static str {
        match self {
            WalInvalidKind::Invalid => "wal_invalid",
            WalInvalidKind::DigestMismatch => "wal_digest_mismatch",
            WalInvalidKind::DataMissing => "wal_data_missing",
        }
    }
}

/// The verdict on one WAL file's manifest.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum WalVerification {
    /// The manifest opened with a trusted key, and the committed data object
    /// matches it.
    Verified {
        /// The opened manifest.
        manifest: Box<WalManifest>,
    },
    /// Verification failed: held as evidence, reported.
    Invalid {
        /// Which check failed.
        kind: WalInvalidKind,
        /// What failed, for the finding.
        reason: String,
    },
    /// Not read: no manifest, no verifier, or older than every base backup.
    #[default]
    NotChecked,
}

/// One archived WAL file: its manifest and data objects as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalEntry {
    /// Namespace, cluster and file.
    pub key: WalKey,
    /// `<file>.json`, the commit marker, if listed.
    pub manifest: Option<ObjectMeta>,
    /// `<file>.<nonce>.pgp` objects by nonce.
    pub data: BTreeMap<String, ObjectMeta>,
    /// The verifier's verdict.
    pub verification: WalVerification,
}

impl WalEntry {
    /// The opened manifest, when verified.
    pub fn manifest(&self) -> Option<&WalManifest> {
        match &self.verification {
            WalVerification::Verified { manifest } => Some(manifest),
            _ => None,
        }
    }

    /// The committed data object's key, when verified.
    pub fn committed_key(&self) -> Option<String> {
        self.manifest().map(|m| m.data_key(&self.key))
    }

    /// Keys in safe deletion order: the manifest (commit marker) first.
    pub fn deletion_order(&self) -> Vec<String> {
        self.manifest
            .iter()
            .chain(self.data.values())
            .map(|m| m.key.clone())
            .collect()
    }

    /// The newest write time known: the manifest's `archived_at`, else the
    /// listing's times.
    pub fn time(&self) -> Option<chrono::DateTime<chrono::Utc>> {
        let listed = self.manifest.iter().chain(self.data.values());
        let listed = listed.filter_map(|m| m.updated).max();
        self.manifest().map(|m| m.archived_at).max(listed)
    }

    /// Checks the listed objects against an opened manifest: the committed
    /// data object must exist with the signed size and (when the store
    /// reports one) CRC32C.
    pub fn check(&self, manifest: WalManifest) -> WalVerification {
        let invalid = |kind, reason: String| WalVerification::Invalid { kind, reason };
        let committed = manifest.data_key(&self.key);
        let Some(data) = self.data.values().find(|m| m.key == committed) else {
            return invalid(
                WalInvalidKind::DataMissing,
                format!(
                    "the manifest commits {committed}, which is not in the bucket: this WAL file cannot be restored from here; restore it from the other cloud's copy"
                ),
            );
        };
        if data.size != manifest.ciphertext.size {
            return invalid(
                WalInvalidKind::DigestMismatch,
                format!(
                    "{committed} is {} bytes, the signed manifest says {}: the object was rewritten after the push; restore it from the other cloud's copy",
                    data.size, manifest.ciphertext.size
                ),
            );
        }
        if let Some(crc) = data.crc32c.filter(|c| *c != manifest.ciphertext.crc32c) {
            return invalid(
                WalInvalidKind::DigestMismatch,
                format!(
                    "{committed} has CRC32C {crc:08x} (computed by the store), the signed manifest says {:08x}: the object was rewritten after the push; restore it from the other cloud's copy",
                    manifest.ciphertext.crc32c
                ),
            );
        }
        WalVerification::Verified {
            manifest: Box::new(manifest),
        }
    }
}

/// One cluster's archived files, by timeline, then name (position).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterWal {
    /// Namespace and cluster.
    pub cluster: ClusterKey,
    /// Files by (timeline, name).
    pub files: BTreeMap<(u32, String), WalEntry>,
}

impl ClusterWal {
    /// The newest `archived_at` of any verified file.
    pub fn newest_archived(&self) -> Option<&WalEntry> {
        self.files
            .values()
            .filter(|e| e.manifest().is_some())
            .max_by_key(|e| e.manifest().map(|m| m.archived_at))
    }
}

/// Where a key under `<namespace>/.wal/` goes: `Some` only for a canonical
/// WAL key (one that parses and is spelled as this build spells it), so a
/// lookalike stays a foreign object and is never deleted under another name.
pub(super) fn parse_canonical(key: &str) -> Option<(WalKey, WalObject)> {
    let (wal_key, object) = WalKey::parse_key(key)?;
    let canonical = match &object {
        WalObject::Manifest => wal_key.manifest_key(),
        WalObject::Data { nonce } => format!("{}{}", wal_key.dir(), wal_key.data_name(nonce)),
    };
    (canonical == key).then_some((wal_key, object))
}

/// Files a WAL object under its cluster and file.
pub(super) fn add(inv: &mut Inventory, key: WalKey, object: WalObject, meta: ObjectMeta) {
    let cluster = ClusterKey {
        namespace: key.namespace.clone(),
        system_identifier: key.system_identifier,
    };
    let files = &mut inv
        .wal
        .entry(cluster.clone())
        .or_insert_with(|| ClusterWal {
            cluster,
            files: BTreeMap::new(),
        })
        .files;
    let entry = files
        .entry((key.file.timeline(), key.file.name().to_string()))
        .or_insert_with(|| WalEntry {
            key,
            manifest: None,
            data: BTreeMap::new(),
            verification: WalVerification::NotChecked,
        });
    match object {
        WalObject::Manifest => entry.manifest = Some(meta),
        WalObject::Data { nonce } => {
            entry.data.insert(nonce, meta);
        }
    }
}

/// What a verified base backup needs from the archive: its timeline, and
/// the segments from `start_wal` to `stop_wal`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseNeed {
    /// The base backup.
    pub id: BackupId,
    /// The timeline it started on.
    pub timeline: u32,
    /// `wal_segment_size`.
    pub segment_size: u64,
    /// The segment number of `start_wal` (the first WAL recovery reads).
    pub start: u64,
    /// The segment number of `stop_wal`.
    pub stop: u64,
}

impl BaseNeed {
    /// What `manifest` (a verified base backup's) needs; `None` when it is
    /// not a base backup or its positions do not parse (the plan then keeps
    /// all of the cluster's WAL).
    pub fn of(id: &BackupId, manifest: &Manifest) -> Option<Self> {
        let b = manifest.base_backup.as_ref()?;
        let size = b.wal_segment_size;
        if !size.is_power_of_two() || !((1 << 20)..=(1 << 30)).contains(&size) {
            return None;
        }
        let (start, stop) = (
            WalFile::parse(&b.start_wal).ok()?,
            WalFile::parse(&b.stop_wal).ok()?,
        );
        let start_lsn: Lsn = b.start_lsn.parse().ok()?;
        let start_seg = start.segment_number(size)?;
        // The name and the position must agree, or neither is trusted.
        if start_lsn.segment(size) != start_seg || start.timeline() != b.timeline {
            return None;
        }
        Some(Self {
            id: id.clone(),
            timeline: b.timeline,
            segment_size: size,
            start: start_seg,
            stop: stop.segment_number(size)?.max(start_seg),
        })
    }
}

/// Per cluster, the lowest `start_wal` segment of any verified base backup:
/// manifests of segments below it are not read (see the module docs).
/// `None` for a cluster with a base backup whose needs are unknown.
fn read_from(inv: &Inventory) -> BTreeMap<ClusterKey, Option<u64>> {
    let mut out: BTreeMap<ClusterKey, Option<u64>> = BTreeMap::new();
    for entry in inv.backups.values() {
        let (Some(cluster), Some(m)) = (ClusterKey::of_backup(&entry.id), entry.manifest()) else {
            continue;
        };
        let start = BaseNeed::of(&entry.id, m).map(|n| n.start);
        let slot = out.entry(cluster).or_insert(start);
        *slot = match (*slot, start) {
            (Some(a), Some(b)) => Some(a.min(b)),
            _ => None,
        };
    }
    out
}

/// Whether the manifest of `entry` is read: it exists, and the file is not
/// a segment (or partial, or backup history) below `read_from`.
fn worth_reading(entry: &WalEntry, read_from: Option<&Option<u64>>, size: Option<u64>) -> bool {
    if entry.manifest.is_none() {
        return false;
    }
    match (read_from, size) {
        (Some(Some(from)), Some(size)) => entry
            .key
            .file
            .segment_number(size)
            .is_none_or(|s| s >= *from),
        _ => true,
    }
}

/// The segment size of a cluster's verified base backups (the first's).
fn segment_sizes(inv: &Inventory) -> BTreeMap<ClusterKey, u64> {
    let mut out = BTreeMap::new();
    for entry in inv.backups.values() {
        if let (Some(cluster), Some(need)) = (
            ClusterKey::of_backup(&entry.id),
            entry.manifest().and_then(|m| BaseNeed::of(&entry.id, m)),
        ) {
            out.entry(cluster).or_insert(need.segment_size);
        }
    }
    out
}

/// Verifies the WAL manifests worth reading (see the module docs), at most
/// `concurrency` at a time. Errors as for backups: a transient one (or an
/// object gone since the listing) fails the collection, a permanent one
/// makes the file [`WalInvalidKind::Invalid`].
pub(super) async fn verify_wal(
    store: &dyn ObjectStore,
    verifier: &dyn ManifestVerifier,
    inv: &mut Inventory,
    concurrency: usize,
) -> Result<(), StoreError> {
    let (from, sizes) = (read_from(inv), segment_sizes(inv));
    let todo: Vec<WalEntry> = inv
        .wal
        .values()
        .flat_map(|c| {
            let (f, s) = (from.get(&c.cluster), sizes.get(&c.cluster).copied());
            c.files.values().filter(move |e| worth_reading(e, f, s))
        })
        .cloned()
        .collect();
    let verdicts: Vec<(WalKey, WalVerification)> = futures::stream::iter(todo)
        .map(|entry| async move {
            let verdict = match verifier.verify_wal(store, &entry).await {
                Ok(v) => v,
                Err(e) if super::execute::aborts_collection(&e) => return Err(e),
                Err(e) => WalVerification::Invalid {
                    kind: WalInvalidKind::Invalid,
                    reason: format!("the manifest cannot be read: {e}"),
                },
            };
            Ok((entry.key, verdict))
        })
        .buffer_unordered(concurrency.max(1))
        .try_collect()
        .await?;
    for (key, verdict) in verdicts {
        inv.set_wal_verification(&key, verdict);
    }
    Ok(())
}
