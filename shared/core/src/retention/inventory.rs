//! What one bucket holds: backups grouped from a complete listing, plus
//! everything that is not a backup.
//!
//! A backup's time is the one in its name ([`BackupId::taken_at`]), never an
//! object's creation time: emulators cannot backdate objects and copies to
//! the replica get new creation times.

use std::collections::BTreeMap;
use std::fmt;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::manifest::Manifest;
use crate::naming::{BackupId, DATA_FILE, DRILLS_PREFIX, MANIFEST_FILE, Namespace, SIGNATURE_FILE};
use crate::store::{ObjectMeta, ObjectStore, StoreError};
use crate::wal::WalKey;

use super::wal_inventory::{ClusterKey, ClusterWal, WalEntry, WalVerification};

/// The three objects that make up a backup; any may be missing.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BackupObjects {
    /// `data.pgdump.pgp`, the encrypted dump.
    pub data: Option<ObjectMeta>,
    /// `manifest.json.sig`, the manifest's detached signature.
    pub signature: Option<ObjectMeta>,
    /// `manifest.json`, the commit marker.
    pub manifest: Option<ObjectMeta>,
}

impl BackupObjects {
    /// Data, signature and manifest all exist.
    pub fn is_complete(&self) -> bool {
        self.data.is_some() && self.signature.is_some() && self.manifest.is_some()
    }

    /// Names of the missing files, for messages.
    pub fn missing(&self) -> Vec<&'static str> {
        let mut out = Vec::new();
        if self.data.is_none() {
            out.push(DATA_FILE);
        }
        if self.signature.is_none() {
            out.push(SIGNATURE_FILE);
        }
        if self.manifest.is_none() {
            out.push(MANIFEST_FILE);
        }
        out
    }

    /// Keys of the existing objects in safe deletion order: the manifest (the
    /// commit marker) first, so that a half-deleted backup never looks
    /// complete, then the signature, then the data.
    pub fn deletion_order(&self) -> Vec<String> {
        [&self.manifest, &self.signature, &self.data]
            .into_iter()
            .flatten()
            .map(|m| m.key.clone())
            .collect()
    }
}

/// Why a backup failed verification; the audit turns each into a finding code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InvalidKind {
    /// The signature object is empty or is not a signature.
    Unsigned,
    /// The signature does not verify against the trusted signer key.
    BadSignature,
    /// The data object is not encrypted.
    Plaintext,
    /// The manifest does not parse or describes another backup.
    BadManifest,
    /// Objects disagree with the signed manifest (size).
    Mismatch,
    /// The data object's CRC32C, as the store computed it, is not the one
    /// the signed manifest records: its bytes were rewritten (same size or
    /// not) since the dump.
    DigestMismatch,
    /// The manifest or signature cannot be read for good (larger than any
    /// manifest can be, access refused): it will fail on every run.
    Unreadable,
    /// Any other verification failure (truncated data, a wrong recipient, ...).
    Other,
}

impl InvalidKind {
    /// The audit finding code.
    pub fn code(self) -> &'static str {
        match self {
            InvalidKind::Unsigned => "unsigned_backup",
            InvalidKind::BadSignature => "bad_signature",
            InvalidKind::Plaintext => "plaintext_backup",
            InvalidKind::BadManifest => "invalid_manifest",
            InvalidKind::Mismatch => "manifest_mismatch",
            InvalidKind::DigestMismatch => "digest_mismatch",
            InvalidKind::Unreadable => "unreadable_backup",
            InvalidKind::Other => "invalid_backup",
        }
    }
}

impl fmt::Display for InvalidKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            InvalidKind::Unsigned => "unsigned",
            InvalidKind::BadSignature => "bad signature",
            InvalidKind::Plaintext => "plaintext",
            InvalidKind::BadManifest => "bad manifest",
            InvalidKind::Mismatch => "objects differ from manifest",
            InvalidKind::DigestMismatch => "data differs from the signed digest",
            InvalidKind::Unreadable => "unreadable",
            InvalidKind::Other => "invalid",
        })
    }
}

/// Outcome of checking a complete backup's signed manifest.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Verification {
    /// The manifest's signature verified; the manifest is trusted.
    Verified {
        /// The verified manifest.
        manifest: Box<Manifest>,
    },
    /// Verification failed: the backup is held as evidence and reported.
    Invalid {
        /// Which check failed.
        kind: InvalidKind,
        /// The verifier's message.
        reason: String,
    },
    /// Not checked (incomplete, or no verifier ran).
    #[default]
    NotChecked,
}

impl Verification {
    /// The trusted manifest, when verified.
    pub fn manifest(&self) -> Option<&Manifest> {
        match self {
            Verification::Verified { manifest } => Some(manifest),
            _ => None,
        }
    }
}

/// Checks a complete backup's manifest and signature. Implemented with the
/// crypto module; injected so that planning stays pure and testable.
///
/// Returning a transient `Err` (or [`StoreError::NotFound`]: the bucket
/// changed since the listing) aborts the whole run: a backup that could not
/// be checked must not be mistaken for a bad one, nor silently stop counting
/// toward the policy. A permanent `Err` (an oversized manifest, a refused
/// read) would fail every run, so [`super::collect`] records that backup as
/// [`InvalidKind::Unreadable`] and goes on.
#[async_trait]
pub trait ManifestVerifier: Send + Sync {
    /// Checks one complete backup; `Err` only when the store could not be read.
    async fn verify(
        &self,
        store: &dyn ObjectStore,
        id: &BackupId,
        objects: &BackupObjects,
    ) -> Result<Verification, StoreError>;

    /// Checks one archived WAL file that has a manifest (open the sealed
    /// manifest with the trusted keys, then [`WalEntry::check`]); `Err`
    /// as for [`Self::verify`]. The default reads nothing: the file stays
    /// [`WalVerification::NotChecked`] (kept, never counted as archived).
    async fn verify_wal(
        &self,
        _store: &dyn ObjectStore,
        _entry: &WalEntry,
    ) -> Result<WalVerification, StoreError> {
        Ok(WalVerification::NotChecked)
    }
}

/// Verifies nothing: every backup stays [`Verification::NotChecked`], so a
/// plan made with it deletes no complete backup.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoVerifier;

#[async_trait]
impl ManifestVerifier for NoVerifier {
    async fn verify(
        &self,
        _store: &dyn ObjectStore,
        _id: &BackupId,
        _objects: &BackupObjects,
    ) -> Result<Verification, StoreError> {
        Ok(Verification::NotChecked)
    }
}

/// One backup as found in a bucket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupEntry {
    /// The backup.
    pub id: BackupId,
    /// Which of its objects exist.
    pub objects: BackupObjects,
    /// The verifier's verdict; [`Verification::NotChecked`] until set.
    pub verification: Verification,
}

impl BackupEntry {
    /// Data, signature and manifest all exist.
    pub fn is_complete(&self) -> bool {
        self.objects.is_complete()
    }

    /// Complete and signature-verified: the only kind that counts.
    pub fn is_verified(&self) -> bool {
        self.is_complete() && matches!(self.verification, Verification::Verified { .. })
    }

    /// The trusted manifest, when verified.
    pub fn manifest(&self) -> Option<&Manifest> {
        self.verification.manifest()
    }
}

/// A namespace and database: the unit retention rules are applied to, so
/// that one database's backups never push out another's.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct SeriesKey {
    /// The backups' namespace.
    pub namespace: Namespace,
    /// The backups' database.
    pub database: String,
}

impl SeriesKey {
    /// The series `id` belongs to.
    pub fn of(id: &BackupId) -> Self {
        Self {
            namespace: id.namespace.clone(),
            database: id.database.clone(),
        }
    }
}

impl fmt::Display for SeriesKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.database)
    }
}

/// Everything in one bucket, from one complete listing.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Inventory {
    /// `gs://bucket` / `s3://bucket`: plans made from this inventory only
    /// apply to this store.
    pub store: String,
    /// Oldest first.
    pub backups: BTreeMap<BackupId, BackupEntry>,
    /// Objects that are not part of any backup, including unknown files
    /// inside a backup's prefix. Never deleted.
    pub foreign: Vec<ObjectMeta>,
    /// Restore drill records (`_drills/...`).
    pub drills: Vec<ObjectMeta>,
    /// The replicator's copy leases (`_replication/...`, replica only).
    pub leases: Vec<ObjectMeta>,
    /// Archived WAL (`<namespace>/.wal/...`), per namespace and cluster.
    pub wal: BTreeMap<ClusterKey, ClusterWal>,
    /// Number of objects listed.
    pub object_count: usize,
}

impl Inventory {
    /// Groups a listing. `objects` must be the *complete* listing of the
    /// bucket: plans from a partial one could delete backups whose newer
    /// siblings were simply not seen (use [`super::collect`], which refuses
    /// to return anything from a failed listing).
    pub fn from_listing(store: impl Into<String>, objects: Vec<ObjectMeta>) -> Self {
        let mut inv = Inventory {
            store: store.into(),
            object_count: objects.len(),
            ..Inventory::default()
        };
        for meta in objects {
            if meta.key.starts_with(DRILLS_PREFIX) {
                inv.drills.push(meta);
                continue;
            }
            if meta.key.starts_with(crate::replicate::REPLICATION_PREFIX) {
                inv.leases.push(meta);
                continue;
            }
            if let Some((key, object)) = super::wal_inventory::parse_canonical(&meta.key) {
                super::wal_inventory::add(&mut inv, key, object, meta);
                continue;
            }
            let Ok((id, file)) = BackupId::parse_key(&meta.key) else {
                inv.foreign.push(meta);
                continue;
            };
            // A key that parses but is not spelled canonically would be
            // deleted under a different name: leave it to a person.
            let canonical = match file.as_str() {
                DATA_FILE => id.data_key(),
                SIGNATURE_FILE => id.signature_key(),
                MANIFEST_FILE => id.manifest_key(),
                _ => String::new(),
            };
            if canonical != meta.key {
                inv.foreign.push(meta);
                continue;
            }
            let entry = inv
                .backups
                .entry(id.clone())
                .or_insert_with(|| BackupEntry {
                    id,
                    objects: BackupObjects::default(),
                    verification: Verification::NotChecked,
                });
            let slot = match file.as_str() {
                DATA_FILE => &mut entry.objects.data,
                SIGNATURE_FILE => &mut entry.objects.signature,
                _ => &mut entry.objects.manifest,
            };
            *slot = Some(meta);
        }
        inv.foreign.sort_by(|a, b| a.key.cmp(&b.key));
        inv.drills.sort_by(|a, b| a.key.cmp(&b.key));
        inv
    }

    /// Records a verifier's verdict. Verdicts on incomplete backups are
    /// ignored: only complete backups can be verified.
    pub fn set_verification(&mut self, id: &BackupId, verification: Verification) {
        if let Some(entry) = self.backups.get_mut(id)
            && entry.is_complete()
        {
            entry.verification = verification;
        }
    }

    /// Records a verifier's verdict on a WAL file that has a manifest.
    pub fn set_wal_verification(&mut self, key: &WalKey, verification: WalVerification) {
        let cluster = ClusterKey {
            namespace: key.namespace.clone(),
            system_identifier: key.system_identifier,
        };
        if let Some(entry) = self.wal.get_mut(&cluster).and_then(|c| {
            c.files
                .get_mut(&(key.file.timeline(), key.file.name().to_string()))
        }) && entry.manifest.is_some()
        {
            entry.verification = verification;
        }
    }

    /// Backups per series, newest first.
    pub fn series(&self) -> BTreeMap<SeriesKey, Vec<&BackupEntry>> {
        let mut out: BTreeMap<SeriesKey, Vec<&BackupEntry>> = BTreeMap::new();
        for entry in self.backups.values().rev() {
            out.entry(SeriesKey::of(&entry.id)).or_default().push(entry);
        }
        out
    }

    /// One backup's entry, if listed.
    pub fn get(&self, id: &BackupId) -> Option<&BackupEntry> {
        self.backups.get(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(key: &str) -> ObjectMeta {
        ObjectMeta {
            key: key.into(),
            size: 1,
            ..ObjectMeta::default()
        }
    }

    #[test]
    fn groups_backups_and_sets_aside_everything_else() {
        let stamp = "production/app/20261127T030000Z-00000a/";
        let half = "production/app/20261128T030000Z-00000b/";
        let inv = Inventory::from_listing(
            "gs://b",
            vec![
                meta(&format!("{stamp}{DATA_FILE}")),
                meta(&format!("{stamp}{SIGNATURE_FILE}")),
                meta(&format!("{stamp}{MANIFEST_FILE}")),
                meta(&format!("{stamp}notes.txt")),
                meta(&format!("{half}{DATA_FILE}")),
                meta("_drills/production/app-20261127T030000Z-00000a.json"),
                meta("random.txt"),
            ],
        );
        assert_eq!(inv.object_count, 7);
        assert_eq!(inv.backups.len(), 2);
        let entries: Vec<_> = inv.backups.values().collect();
        assert!(entries[0].is_complete());
        assert!(!entries[0].is_verified());
        assert!(!entries[1].is_complete());
        assert_eq!(
            entries[1].objects.missing(),
            vec![SIGNATURE_FILE, MANIFEST_FILE]
        );
        assert_eq!(
            entries[0].objects.deletion_order(),
            vec![
                format!("{stamp}{MANIFEST_FILE}"),
                format!("{stamp}{SIGNATURE_FILE}"),
                format!("{stamp}{DATA_FILE}")
            ]
        );
        let foreign: Vec<_> = inv.foreign.iter().map(|m| m.key.as_str()).collect();
        assert_eq!(
            foreign,
            vec![
                "production/app/20261127T030000Z-00000a/notes.txt",
                "random.txt"
            ]
        );
        assert_eq!(inv.drills.len(), 1);
        let series = inv.series();
        assert_eq!(series.len(), 1);
        let newest_first: Vec<_> = series
            .values()
            .next()
            .unwrap()
            .iter()
            .map(|e| e.id.nonce.as_str())
            .collect();
        assert_eq!(newest_first, vec!["00000b", "00000a"]);
    }
}
