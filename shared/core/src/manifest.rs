//! The manifest: a backup's description and commit marker.
//!
//! Versioned JSON, written after the data object and signed (detached
//! OpenPGP signature, see `crypto::sign`). Readers refuse versions newer than
//! they understand rather than guess.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::naming::{BackupId, Namespace};

/// `pg_dump`'s output format, as recorded in the manifest; the one format
/// restore reads (custom-format archives).
pub const DUMP_FORMAT: &str = "custom";

/// The format of a physical base backup's data object: one tar of the
/// whole cluster, as `pg_basebackup -Ft` writes to stdout (`base_backup`
/// says which cluster). Written at compression level 0, and by Backstop
/// before 2026-12-02.
pub const BASE_BACKUP_FORMAT: &str = "tar";

/// The same tar compressed with zstd (by the server; concatenated frames):
/// what `backstop basebackup` writes by default.
pub const BASE_BACKUP_ZSTD_FORMAT: &str = "tar.zst";

/// Whether `dump_format` is one of a base backup's.
pub fn is_base_backup_format(dump_format: &str) -> bool {
    dump_format == BASE_BACKUP_FORMAT || dump_format == BASE_BACKUP_ZSTD_FORMAT
}

/// The manifest's `kind`: tells a Backstop manifest from any other JSON.
pub const MANIFEST_KIND: &str = "backstop.manifest";
/// The newest manifest `version` this build writes and reads. Version 2
/// adds chunk digests (`ciphertext.chunk_size`, `ciphertext.chunks`);
/// version 1 manifests stay readable.
pub const MANIFEST_VERSION: u32 = 2;
/// The first version whose manifests must carry chunk digests.
pub const CHUNKED_VERSION: u32 = 2;
/// Manifests are small (a chunk digest costs 67 bytes per 8 MiB of backup,
/// so 16 MiB holds the list of a backup of almost 2 TiB); anything larger
/// is not one of ours.
pub const MAX_MANIFEST_BYTES: usize = 16 * 1024 * 1024;

/// The encrypted data object, as the dump job wrote it: what a verifier checks
/// the stored object against.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CiphertextInfo {
    /// Name of the data object, relative to the backup's prefix.
    pub object: String,
    /// Ciphertext size in bytes.
    pub size: u64,
    /// Lower-case hex.
    pub sha256: String,
    /// The CRC32C as GCS reports it: big-endian, base64 of 4 bytes, and as a
    /// number here for humans.
    pub crc32c: u32,
    /// Size of the digested chunks (`crypto::chunks`); 0 in version 1
    /// manifests, which have none.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub chunk_size: u64,
    /// SHA-256 (lower-case hex) of every `chunk_size` piece of the
    /// ciphertext, in order; the last piece may be shorter. Empty in
    /// version 1 manifests.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub chunks: Vec<String>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// What a physical base backup's manifest adds: where in the WAL it
/// starts and stops, so that a restore knows which WAL it needs and the
/// audit can tell whether that WAL was archived.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BaseBackupInfo {
    /// `pg_control_system().system_identifier`, decimal (a JSON number
    /// would lose digits in many readers).
    pub system_identifier: String,
    /// `server_version_num`.
    pub server_version_num: u32,
    /// The timeline the backup started on.
    pub timeline: u32,
    /// The backup's start and stop positions, `X/Y` as PostgreSQL prints them.
    pub start_lsn: String,
    /// See `start_lsn`: recovery is consistent once it has replayed to here.
    pub stop_lsn: String,
    /// The first and last WAL files recovery needs from the archive.
    pub start_wal: String,
    /// See `start_wal`.
    pub stop_wal: String,
    /// WAL segment size in bytes (`wal_segment_size`).
    pub wal_segment_size: u64,
    /// SHA-256 (lower-case hex) of the server's `backup_manifest` inside
    /// the tar, so `pg_verifybackup` can check a restore against a file
    /// this signature covers.
    pub backup_manifest_sha256: String,
    /// Files in the tar (regular files only).
    pub files: u64,
}

/// A backup's manifest (`manifest.json`), stored with its detached signature.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// Always [`MANIFEST_KIND`].
    pub kind: String,
    /// Format version, 1 to [`MANIFEST_VERSION`].
    pub version: u32,
    /// The namespace the backup belongs to.
    pub namespace: Namespace,
    /// The database that was dumped.
    pub database: String,
    /// `<namespace>/<database>/<stamp>`; must match where the manifest lives.
    pub backup_id: String,
    /// The server's `SHOW server_version` at dump time.
    pub server_version: String,
    /// `pg_dump` output format (`custom`).
    pub dump_format: String,
    /// When the dump started: the backup id's time.
    pub started_at: DateTime<Utc>,
    /// When the data object was stored, just before the manifest was signed.
    pub finished_at: DateTime<Utc>,
    /// Size in bytes of the `pg_dump` output before encryption.
    pub plaintext_size: u64,
    /// The data object's name, size and digests.
    pub ciphertext: CiphertextInfo,
    /// Fingerprints (upper-case hex) of the keys the session key is encrypted to.
    pub recipients: Vec<String>,
    /// Fingerprint of the key that signs this manifest.
    pub signer: String,
    /// Exact row counts per `schema.table`, taken in the dump's snapshot.
    pub tables: BTreeMap<String, u64>,
    /// `backstop <version>`.
    pub tool: String,
    /// Set on a physical base backup (`dump_format` [`BASE_BACKUP_FORMAT`],
    /// filed under the cluster's series, `naming::cluster_database`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_backup: Option<BaseBackupInfo>,
}

/// A manifest that cannot be accepted. Permanent: the object will not change.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ManifestError {
    /// Not JSON, a field missing or mistyped, or an invalid `backup_id`.
    #[error("manifest is not valid JSON or misses a field: {0}")]
    Malformed(String),
    /// The `kind` is not [`MANIFEST_KIND`].
    #[error("manifest kind {0:?} is not {MANIFEST_KIND:?}: this object is not a Backstop manifest")]
    WrongKind(String),
    /// The `version` is 0 or newer than [`MANIFEST_VERSION`]: upgrade Backstop.
    #[error(
        "manifest version {0} is newer than this Backstop understands (max {MANIFEST_VERSION}); upgrade Backstop"
    )]
    UnsupportedVersion(u32),
    /// The manifest's `backup_id` is not the backup it is stored under (copied
    /// or swapped).
    #[error(
        "manifest describes backup {found} but was found at {expected}: it belongs to another backup"
    )]
    WrongBackup {
        /// The backup id of the location it was read from.
        expected: String,
        /// The backup id the manifest names.
        found: String,
    },
    /// The object is larger than [`MAX_MANIFEST_BYTES`].
    #[error("manifest is larger than {MAX_MANIFEST_BYTES} bytes")]
    TooLarge,
}

impl Manifest {
    /// A manifest of the custom-format backup `id`: what the id determines
    /// (kind, version, names, its time as start and finish) filled in, the
    /// rest empty, for `Manifest { field: .., ..Manifest::of_backup(&id) }`.
    pub fn of_backup(id: &BackupId) -> Self {
        Self {
            kind: MANIFEST_KIND.into(),
            version: MANIFEST_VERSION,
            namespace: id.namespace.clone(),
            database: id.database.clone(),
            backup_id: id.to_string(),
            server_version: String::new(),
            dump_format: DUMP_FORMAT.into(),
            started_at: id.taken_at,
            finished_at: id.taken_at,
            plaintext_size: 0,
            ciphertext: CiphertextInfo::default(),
            recipients: Vec::new(),
            signer: String::new(),
            tables: BTreeMap::new(),
            tool: String::new(),
            base_backup: None,
        }
    }

    /// The backup id, parsed from `backup_id`.
    pub fn id(&self) -> Result<BackupId, ManifestError> {
        self.backup_id
            .parse()
            .map_err(|e: crate::naming::NameError| ManifestError::Malformed(e.to_string()))
    }

    /// Canonical bytes: what is stored and signed.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = serde_json::to_vec_pretty(self).expect("manifest serializes");
        out.push(b'\n');
        out
    }

    /// Parses and checks kind and version, without trusting anything yet (the
    /// signature is checked separately, over the same bytes).
    pub fn parse(bytes: &[u8]) -> Result<Self, ManifestError> {
        check_header(bytes, MANIFEST_KIND, MANIFEST_VERSION)?;
        let m: Manifest =
            serde_json::from_slice(bytes).map_err(|e| ManifestError::Malformed(e.to_string()))?;
        m.check_names(&m.id()?)?;
        if m.version >= CHUNKED_VERSION || !m.ciphertext.chunks.is_empty() {
            crate::crypto::chunks::check_chunk_list(&m.ciphertext)
                .map_err(|e| ManifestError::Malformed(format!("ciphertext.chunks: {e}")))?;
        }
        Ok(m)
    }

    /// `namespace` and `database` (the real name) must be the ones the
    /// `backup_id` spells (the database encoded): readers name the database
    /// by the field and find the backup by the id.
    fn check_names(&self, id: &BackupId) -> Result<(), ManifestError> {
        if self.namespace != id.namespace || self.database != id.database {
            return Err(ManifestError::Malformed(format!(
                "namespace {:?} and database {:?} are not those of backup_id {:?} ({:?}, {:?}): the manifest contradicts itself and was not written by backstop dump",
                self.namespace.as_str(),
                self.database,
                self.backup_id,
                id.namespace.as_str(),
                id.database
            )));
        }
        let cluster = id.system_identifier().map(|n| n.to_string());
        let described = self
            .base_backup
            .as_ref()
            .map(|b| b.system_identifier.clone());
        if cluster != described || (described.is_some() != is_base_backup_format(&self.dump_format))
        {
            return Err(ManifestError::Malformed(format!(
                "backup_id {:?}, dump_format {:?} and base_backup ({}) disagree: a base backup is a {BASE_BACKUP_FORMAT:?} or {BASE_BACKUP_ZSTD_FORMAT:?} filed under its own cluster, a dump is neither",
                self.backup_id,
                self.dump_format,
                described.as_deref().unwrap_or("none")
            )));
        }
        Ok(())
    }

    /// Checks that this manifest describes the backup stored at `id`.
    pub fn check_location(&self, id: &BackupId) -> Result<(), ManifestError> {
        if self.backup_id != id.to_string() {
            return Err(ManifestError::WrongBackup {
                expected: id.to_string(),
                found: self.backup_id.clone(),
            });
        }
        Ok(())
    }
}

/// The checks every signed description makes before it is parsed whole:
/// its size, its `kind` and a `version` from 1 to `max_version`.
pub(crate) fn check_header(
    bytes: &[u8],
    kind: &str,
    max_version: u32,
) -> Result<(), ManifestError> {
    if bytes.len() > MAX_MANIFEST_BYTES {
        return Err(ManifestError::TooLarge);
    }
    #[derive(Deserialize)]
    struct Header {
        kind: String,
        version: u32,
    }
    let header: Header =
        serde_json::from_slice(bytes).map_err(|e| ManifestError::Malformed(e.to_string()))?;
    if header.kind != kind {
        return Err(ManifestError::WrongKind(header.kind));
    }
    if header.version > max_version || header.version == 0 {
        return Err(ManifestError::UnsupportedVersion(header.version));
    }
    Ok(())
}

crate::error::permanent!(ManifestError);

/// A manifest that cannot be accepted is a backup that cannot be trusted.
impl crate::error::Failure for ManifestError {
    fn failure_kind(&self) -> crate::error::FailureKind {
        crate::error::FailureKind::Integrity
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use chrono::TimeZone;

    pub(crate) fn sample() -> Manifest {
        let id = BackupId::with_nonce(
            Namespace::new("production").unwrap(),
            "app",
            Utc.with_ymd_and_hms(2026, 11, 27, 3, 0, 0).unwrap(),
            "abcdef",
        )
        .unwrap();
        Manifest {
            kind: MANIFEST_KIND.into(),
            version: MANIFEST_VERSION,
            namespace: id.namespace.clone(),
            database: "app".into(),
            backup_id: id.to_string(),
            server_version: "15.18".into(),
            dump_format: "custom".into(),
            started_at: id.taken_at,
            finished_at: id.taken_at + chrono::Duration::seconds(5),
            plaintext_size: 1000,
            ciphertext: CiphertextInfo {
                object: crate::naming::DATA_FILE.into(),
                size: 1100,
                sha256: "00".repeat(32),
                crc32c: 7,
                chunk_size: crate::crypto::chunks::CHUNK_SIZE,
                chunks: vec!["00".repeat(32)],
            },
            recipients: vec!["AB".repeat(20)],
            signer: "CD".repeat(20),
            tables: [("public.users".to_string(), 3u64)].into(),
            tool: format!("backstop {}", env!("CARGO_PKG_VERSION")),
            base_backup: None,
        }
    }

    #[test]
    fn round_trips() {
        let m = sample();
        assert_eq!(Manifest::parse(&m.to_bytes()).unwrap(), m);
        m.check_location(&m.id().unwrap()).unwrap();
    }

    #[test]
    fn rejects_future_versions_other_kinds_and_junk() {
        let mut v: serde_json::Value = serde_json::from_slice(&sample().to_bytes()).unwrap();
        v["version"] = (MANIFEST_VERSION + 1).into();
        assert_eq!(
            Manifest::parse(&serde_json::to_vec(&v).unwrap()),
            Err(ManifestError::UnsupportedVersion(MANIFEST_VERSION + 1))
        );
        v["version"] = 1.into();
        v["kind"] = "other".into();
        assert!(matches!(
            Manifest::parse(&serde_json::to_vec(&v).unwrap()),
            Err(ManifestError::WrongKind(_))
        ));
        assert!(matches!(
            Manifest::parse(b"{not json"),
            Err(ManifestError::Malformed(_))
        ));
        assert!(matches!(
            Manifest::parse(b""),
            Err(ManifestError::Malformed(_))
        ));
        v["kind"] = MANIFEST_KIND.into();
        v.as_object_mut().unwrap().remove("ciphertext");
        assert!(matches!(
            Manifest::parse(&serde_json::to_vec(&v).unwrap()),
            Err(ManifestError::Malformed(_))
        ));
    }

    #[test]
    fn version_1_manifests_without_chunks_stay_readable_and_version_2_needs_them() {
        let mut v: serde_json::Value = serde_json::from_slice(&sample().to_bytes()).unwrap();
        let ct = v["ciphertext"].as_object_mut().unwrap();
        ct.remove("chunks");
        ct.remove("chunk_size");
        assert!(matches!(
            Manifest::parse(&serde_json::to_vec(&v).unwrap()),
            Err(ManifestError::Malformed(m)) if m.contains("chunk")
        ));
        v["version"] = 1.into();
        let m = Manifest::parse(&serde_json::to_vec(&v).unwrap()).unwrap();
        assert!(m.ciphertext.chunks.is_empty() && m.ciphertext.chunk_size == 0);
        assert!(
            !String::from_utf8(m.to_bytes()).unwrap().contains("chunk"),
            "a version 1 manifest keeps its shape"
        );
    }

    #[test]
    fn carries_the_real_database_name_and_the_encoded_id() {
        let id = BackupId::with_nonce(
            Namespace::new("production").unwrap(),
            "Ünï app",
            Utc.with_ymd_and_hms(2026, 11, 27, 3, 0, 0).unwrap(),
            "abcdef",
        )
        .unwrap();
        let m = Manifest {
            ciphertext: sample().ciphertext,
            ..Manifest::of_backup(&id)
        };
        assert_eq!(m.database, "Ünï app");
        assert_eq!(
            m.backup_id,
            "production/%C3%9Cn%C3%AF%20app/20261127T030000Z-abcdef"
        );
        let parsed = Manifest::parse(&m.to_bytes()).unwrap();
        assert_eq!(parsed.id().unwrap(), id);
        let (at, _) = BackupId::parse_key(&id.manifest_key()).unwrap();
        parsed.check_location(&at).unwrap();

        for (field, value) in [("database", "Ünï_app"), ("namespace", "staging")] {
            let mut v: serde_json::Value = serde_json::from_slice(&m.to_bytes()).unwrap();
            v[field] = value.into();
            let err = Manifest::parse(&serde_json::to_vec(&v).unwrap()).unwrap_err();
            assert!(
                matches!(&err, ManifestError::Malformed(e) if e.contains("contradicts")),
                "{err}"
            );
        }
    }

    #[test]
    fn detects_manifest_of_another_backup() {
        let m = sample();
        let other: BackupId = "production/app/20261127T030001Z-000001".parse().unwrap();
        assert!(matches!(
            m.check_location(&other),
            Err(ManifestError::WrongBackup { .. })
        ));
    }
}
