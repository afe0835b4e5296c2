//! The catalog: every backup in both clouds, one row each, with what is
//! known about it — for `backstop list` and `backstop show`.
//!
//! Nothing here lists or verifies on its own: the rows are built from what
//! retention already collects ([`crate::retention::collect`]: the listing,
//! each signed manifest checked), plans ([`crate::retention::plan()`]: what
//! retention would do) and audits ([`crate::retention::audit()`]: replica
//! mismatches), plus the restore drill records
//! ([`crate::retention::load_drills`]). So `list` shows exactly what the
//! retention run would see.
//!
//! - `build`: pure, from the inventories, plans and report to rows; filters.
//! - `gather`: the reads (both clouds at once, then the drill records of the
//!   rows shown).
//! - `render`: the terminal table and the `show` text.
//!
//! The JSON (`--json`) is these types serialized. Its schema is versioned
//! ([`LIST_SCHEMA`], [`SHOW_SCHEMA`]): within a version, fields are only
//! ever added, never removed, renamed or given another type, and enum
//! values (`kind`, `status`, `parity`, `action`, `result`) may be added, so
//! readers must accept values they do not know. Anything else is a new
//! version.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::manifest::BaseBackupInfo;

mod build;
mod gather;
mod render;
#[cfg(test)]
mod tests;

pub use build::{CatalogInput, CloudSide, LoadedDrill, build, parse_since};
pub use gather::{CatalogError, Sources, list, show};
pub use render::format_bytes;

/// The `schema` of `backstop list --json`.
pub const LIST_SCHEMA: &str = "backstop.list/v1";
/// The `schema` of `backstop show --json`.
pub const SHOW_SCHEMA: &str = "backstop.show/v1";

/// `backstop list`: the backups (and archived WAL) that match a [`Filter`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Listing {
    /// Always [`LIST_SCHEMA`] for this layout.
    pub schema: String,
    /// The clock the plans were made at (ages and retention count from it).
    pub generated_at: DateTime<Utc>,
    /// Each configured cloud, listed or not.
    pub clouds: Vec<CloudState>,
    /// Grouped by namespace, then database; newest first within each.
    pub backups: Vec<BackupRow>,
    /// Each cluster's archived WAL, by namespace and cluster.
    pub wal: Vec<WalRange>,
}

/// One cloud's bucket as the listing found it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CloudState {
    /// `gcs` (primary) or `s3` (replica).
    pub cloud: String,
    /// `gs://bucket` / `s3://bucket`.
    pub store: String,
    /// Whether the whole bucket was listed and checked.
    pub listed: bool,
    /// Why not, when it was not: its columns are unknown (`null`).
    pub error: Option<String>,
    /// Backups (complete or not) in the whole bucket, before filters.
    pub backups: usize,
}

/// A logical dump or a physical base backup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BackupKind {
    /// `backstop dump` (`pg_dump -Fc`), one database.
    Dump,
    /// `backstop basebackup`, the whole cluster (series `.cluster-<id>`).
    BaseBackup,
}

/// Whether the replica holds a backup as the policy wants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Parity {
    /// Complete in both clouds, and the copies agree.
    InSync,
    /// In both, but the copies differ (the audit's `replica_mismatch`).
    Mismatch,
    /// Should be in the replica and is not, past the replica grace period.
    Missing,
    /// Not in the replica yet, within the grace period.
    Pending,
    /// Its namespace's rule does not replicate it (and it is not in the replica).
    NotReplicated,
    /// Complete in the replica only.
    OnlyInReplica,
    /// A cloud was not listed (or is not configured), or neither copy is complete.
    Unknown,
}

/// What retention would do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Kept by the rule (`reasons` says which keep rules).
    Keep,
    /// Deleted on the next run (`reasons`: `expired`, `abandoned`, `orphan`).
    Delete,
    /// Left alone and reported (`reasons`: `invalid`, `in_progress`, `future`,
    /// `not_verified`, `no_rule`).
    Hold,
}

/// Retention's decision for one copy, as its plan made it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Retention {
    /// Keep, delete or hold.
    pub action: Action,
    /// The pattern of the rule that applies; `null`: no rule, never touched.
    pub rule: Option<String>,
    /// Keep: every keep rule that keeps it (`newest verified`, `last #1`,
    /// `daily 2026-11-27`, ...). Delete and hold: the one reason code.
    pub reasons: Vec<String>,
}

/// One cloud's copy of a backup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CopyState {
    /// `gcs` or `s3`.
    pub cloud: String,
    /// `verified`, `suspect`, `invalid`, `future`, `not_checked` or `incomplete`.
    pub status: String,
    /// What is wrong, when something is (the verifier's message, the missing files).
    pub detail: Option<String>,
    /// What retention would do to this copy.
    pub retention: Retention,
}

/// The digests the signed manifest lists for the encrypted data object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Digests {
    /// SHA-256 of the whole object, lower-case hex.
    pub sha256: String,
    /// CRC32C as 8 lower-case hex digits (the store's checksum, checked
    /// against the listing every run).
    pub crc32c: String,
    /// How many chunk digests (0 in version 1 manifests).
    pub chunks: u64,
    /// The chunk size in bytes (0 without chunk digests).
    pub chunk_size: u64,
}

/// How a drill ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DrillResult {
    /// Restored, and every table's rows matched the manifest.
    Passed,
    /// The restore or the comparison failed (`error`, `mismatches`).
    Failed,
    /// The record cannot be read or is not where it belongs (`error` says
    /// which): it does not count as a drill.
    Unreadable,
}

/// One restore drill record of a backup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DrillState {
    /// Passed, failed or unreadable.
    pub result: DrillResult,
    /// When it ended (`null` when unreadable).
    pub finished_at: Option<DateTime<Utc>>,
    /// When it started.
    pub started_at: Option<DateTime<Utc>>,
    /// The drill run (`yyyymmddThhmmssZ-xxxxxx`; `null` for records written
    /// before runs had ids).
    pub run_id: Option<String>,
    /// The database (or, for a point-in-time recovery, the data directory)
    /// it was restored into.
    pub target_database: Option<String>,
    /// The cloud the backup was read from.
    pub restored_from: Option<String>,
    /// Tables whose rows were compared.
    pub tables_checked: Option<u64>,
    /// Tables whose rows differed or were missing.
    pub mismatches: u64,
    /// Why it failed, or why the record does not count.
    pub error: Option<String>,
    /// `gs://bucket/_drills/...`: the record.
    pub record: String,
}

/// One backup, over both clouds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupRow {
    /// `<namespace>/<database segment>/<stamp>`, as `--backup` takes it.
    pub id: String,
    /// Its namespace.
    pub namespace: String,
    /// The database's real name (`.cluster-<system id>` for a base backup).
    pub database: String,
    /// Dump or base backup.
    pub kind: BackupKind,
    /// The cluster's system identifier (decimal string), base backups only.
    pub system_identifier: Option<String>,
    /// When the dump started (the id's time).
    pub taken_at: DateTime<Utc>,
    /// When its data was stored (signed manifest; `null` without one).
    pub finished_at: Option<DateTime<Utc>>,
    /// Bytes of the encrypted data object: the signed manifest's
    /// `ciphertext.size`, else the listed object's size, else `null`.
    pub size: Option<u64>,
    /// Bytes before compression and encryption (signed manifest).
    pub plaintext_size: Option<u64>,
    /// Tables whose rows the manifest counts (`null` without a trusted one).
    pub tables: Option<u64>,
    /// Their rows in total.
    pub rows: Option<u64>,
    /// Every complete copy listed has a manifest whose signature verified
    /// with a trusted key and whose digests matched the stored object (at
    /// least one such copy).
    pub verified: bool,
    /// The status of the copy retention goes by (GCS's when it has one): as
    /// in [`CopyState::status`].
    pub status: String,
    /// Its detail.
    pub status_detail: Option<String>,
    /// The signed digests, from a verified manifest.
    pub digests: Option<Digests>,
    /// Complete in GCS; `null` when GCS was not listed.
    pub in_gcs: Option<bool>,
    /// Complete in S3; `null` when S3 was not listed or is not configured.
    pub in_s3: Option<bool>,
    /// The replica against the policy.
    pub parity: Parity,
    /// The newest drill record of this backup, if any.
    pub last_drill: Option<DrillState>,
    /// What retention would do (to the GCS copy when there is one).
    pub retention: Retention,
    /// Each cloud's copy.
    pub copies: Vec<CopyState>,
}

/// One cluster's archived WAL in one namespace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WalRange {
    /// The namespace it was archived into.
    pub namespace: String,
    /// The cluster's system identifier (decimal string).
    pub system_identifier: String,
    /// Timelines with archived files.
    pub timelines: Vec<u32>,
    /// The first and last committed file (by timeline, then position).
    pub first: Option<String>,
    /// See `first`.
    pub last: Option<String>,
    /// Files with a manifest (committed or not verified).
    pub files: usize,
    /// Files whose sealed manifest verified (older segments no base backup
    /// needs are not read, see `retention::wal_inventory`).
    pub verified: usize,
    /// The newest verified file's `archived_at`.
    pub newest_archived_at: Option<DateTime<Utc>>,
    /// Committed files in GCS; `null` when not listed.
    pub in_gcs: Option<usize>,
    /// Committed files in S3; `null` when not listed or not configured.
    pub in_s3: Option<usize>,
    /// Retention keeps WAL from this segment on (the oldest kept base
    /// backup's `start_wal`); `null`: it keeps all of it.
    pub keep_from: Option<String>,
    /// Files retention would delete in GCS.
    pub to_delete: usize,
}

/// What the signed manifest says beyond the row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestFacts {
    /// `SHOW server_version` at dump time.
    pub server_version: String,
    /// `custom` (dump) or `tar` (base backup).
    pub dump_format: String,
    /// The Backstop that wrote it.
    pub tool: String,
    /// Fingerprint of the signing key.
    pub signer: String,
    /// Fingerprints of the keys that can decrypt it.
    pub recipients: Vec<String>,
    /// Base backups: the WAL range and positions.
    pub base_backup: Option<BaseBackupInfo>,
}

/// `backstop show BACKUP_ID`: one row with its tables and every drill.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shown {
    /// Always [`SHOW_SCHEMA`] for this layout.
    pub schema: String,
    /// As in [`Listing`].
    pub generated_at: DateTime<Utc>,
    /// As in [`Listing`].
    pub clouds: Vec<CloudState>,
    /// The row `list` shows.
    pub backup: BackupRow,
    /// Rows per `schema.table`, from the trusted manifest.
    pub tables: BTreeMap<String, u64>,
    /// The trusted manifest's other facts; `null` without one.
    pub manifest: Option<ManifestFacts>,
    /// Every drill record of this backup, newest first.
    pub drills: Vec<DrillState>,
}

/// Which rows `list` shows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    /// A namespace name or glob (`br-*`): [`crate::naming::pattern_matches`].
    pub namespace: Option<String>,
    /// Only backups taken at or after this.
    pub since: Option<DateTime<Utc>>,
    /// At most this many per namespace and database, the newest.
    pub limit: Option<usize>,
}
