//! The restore job: the newest verified backup of a namespace into a fresh
//! database (per branch, per drill), then a drill that checks row counts.
//!
//! ```text
//! list <namespace>/ (GCS; S3 when GCS is unreachable or has no usable backup)
//!   └─ newest complete backup whose signed manifest verifies
//! get data ──▶ DigestChecker (size, SHA-256, CRC32C vs the manifest)
//!          ──▶ decrypt_stream (AES-256, MDC)
//!          ──▶ held back by one chunk ──▶ pg_restore --single-transaction stdin
//! row counts vs manifest.tables ──▶ DrillRecord at _drills/... (the audit reads it)
//! ```
//!
//! **No unverified data is ever committed.** The digests and the MDC can only
//! be checked after the last byte, while `pg_restore` would commit its single
//! transaction as soon as it reads the end of its input. So the last plaintext
//! chunk is held back until the decryption stream (which carries the digest
//! check of the ciphertext) has ended cleanly; on any failure `pg_restore` is
//! killed while it still waits for that chunk, its connection drops and the
//! server rolls the transaction back. (A custom-format archive's last bytes
//! always belong to something `pg_restore` must read — the TOC or the end of
//! the last data block — so it cannot finish without them.)
//!
//! Targets: a database URL, or a name (explicit, or derived from a branch
//! name) on the server of an admin URL. A missing database is created (and
//! dropped again if the restore fails); an existing one must hold no user
//! table unless `replace` is set. A replacement restores into a staging
//! database first and swaps it in only after the restore and the drill
//! succeeded, so a failed replacement also leaves the target as it was.
//!
//! The source database is never touched: a target named like the backup's
//! database on the server of `BACKSTOP_SOURCE_DATABASE_URL` is refused, and
//! without that variable a replacement of a database named like the backup's
//! database is refused (Backstop cannot tell that it is not the source).

use std::collections::BTreeMap;
use std::process::Stdio;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, Command};
use tokio_postgres::Client;

use crate::pg::{self, PgError, PgTools, quote_ident, redact_url};
use backstop_core::config::{ConfigError, Env};
use backstop_core::crypto::{
    BackupSecretKey, CryptoError, DigestChecker, KeySource, KeyUnwrap, VerifyingKey,
};
use backstop_core::drill::{DrillRecord, TableMismatch};
use backstop_core::manifest::{CiphertextInfo, MAX_MANIFEST_BYTES, Manifest};
use backstop_core::naming::{
    BackupId, MANIFEST_FILE, NameError, Namespace, SIGNATURE_FILE, namespace_for_branch,
};
use backstop_core::store::{
    ByteStream, ObjectMeta, ObjectStore, ObjectStoreExt, PutOptions, StoreError, byte_stream,
};

/// The backup secret key setting (`file:...` or `gcpkms:...:path`).
pub const BACKUP_KEY_VAR: &str = "BACKSTOP_BACKUP_KEY";
/// The signing public key(s) manifests must be signed with.
pub const SIGNING_PUBLIC_KEY_VAR: &str = "BACKSTOP_SIGNING_PUBLIC_KEY";
/// The database the backups are taken from: its server and name are never
/// a restore target.
pub const SOURCE_DATABASE_URL_VAR: &str = "BACKSTOP_SOURCE_DATABASE_URL";
/// Detached signatures larger than this are not ours.
const MAX_SIGNATURE_BYTES: usize = 64 * 1024;
/// PostgreSQL truncates longer identifiers (NAMEDATALEN - 1).
pub const MAX_DATABASE_NAME_BYTES: usize = 63;

/// Where a backup is restored to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// `postgres://user@host:port/dbname`: the database in the URL.
    Url(String),
    /// A database named `database` on the server of `server_url` (a URL the
    /// restore can create and drop databases with, e.g. `.../postgres`).
    OnServer {
        server_url: String,
        database: String,
    },
}

impl Target {
    /// The database for a branch (`feature/Fix-Login` →
    /// `feature-fix-login-<hash>`), see [`database_for_branch`].
    pub fn branch(server_url: &str, branch: &str) -> Self {
        Target::OnServer {
            server_url: server_url.to_string(),
            database: database_for_branch(branch),
        }
    }
}

/// A valid, deterministic database name for a branch name: lower-case
/// `a-z0-9-`, at most 63 bytes, with a short hash of the original appended
/// whenever the name had to change (so two branches never share a
/// database). The same rule as [`namespace_for_branch`].
pub fn database_for_branch(branch: &str) -> String {
    namespace_for_branch(branch).to_string()
}

/// Checks an explicit database name (it is always quoted, so any character
/// is safe; only length and NUL matter).
pub fn check_database_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("the database name is empty".into());
    }
    if name.len() > MAX_DATABASE_NAME_BYTES {
        return Err(format!(
            "database name {name:?} is {} bytes long; PostgreSQL allows {MAX_DATABASE_NAME_BYTES} (use --branch to derive a short name)",
            name.len()
        ));
    }
    if name.contains('\0') {
        return Err("the database name contains a NUL character".into());
    }
    if ["template0", "template1"].contains(&name) {
        return Err(format!(
            "{name} is a template database and never a restore target"
        ));
    }
    Ok(())
}

/// Everything one restore needs.
#[derive(Debug, Clone)]
pub struct RestoreConfig {
    /// The source namespace whose backups are restored (`production`).
    pub namespace: Namespace,
    /// Only backups of this database within the namespace (default: any).
    pub database: Option<String>,
    /// A chosen backup instead of the newest verified one.
    pub backup: Option<BackupId>,
    pub target: Target,
    /// Replace a non-empty target (restored into a staging database, swapped
    /// in after the drill passed).
    pub replace: bool,
    /// `BACKSTOP_SOURCE_DATABASE_URL`: the database backups are taken from.
    pub source_database_url: Option<String>,
    pub tools: PgTools,
    pub secret_key: BackupSecretKey,
    pub signing_keys: Vec<VerifyingKey>,
    /// Write a drill record (default true).
    pub write_drill: bool,
}

/// Raw settings, from the command line and the environment.
#[derive(Debug, Clone, Default)]
pub struct RestoreSettings {
    pub namespace: Option<String>,
    pub database: Option<String>,
    pub backup: Option<String>,
    pub target_url: Option<String>,
    pub server_url: Option<String>,
    pub branch: Option<String>,
    pub target_db: Option<String>,
    pub replace: bool,
    pub source_database_url: Option<String>,
    /// `BACKSTOP_BACKUP_KEY`
    pub backup_key: Option<String>,
    /// `BACKSTOP_SIGNING_PUBLIC_KEY`
    pub signing_public_key: Option<String>,
    /// `BACKSTOP_PG_BINDIR` (else `PG_BINDIR`, else `PATH`).
    pub pg_bindir: Option<std::path::PathBuf>,
}

fn invalid(name: &str, value: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError::invalid(name, value, reason)
}

impl RestoreConfig {
    /// Validates settings and loads the keys (`kms` unwraps a `gcpkms:`
    /// backup key). Errors name the option or variable at fault.
    pub async fn load(s: RestoreSettings, kms: &dyn KeyUnwrap) -> Result<Self, ConfigError> {
        let ns_text = s.namespace.unwrap_or_else(|| "production".into());
        let namespace = Namespace::new(ns_text.trim())
            .map_err(|e| invalid("--namespace", &ns_text, e.to_string()))?;
        let backup = match s.backup.as_deref().map(str::trim).filter(|b| !b.is_empty()) {
            None => None,
            Some(b) => {
                let id: BackupId = b
                    .parse()
                    .map_err(|e: NameError| invalid("--backup", b, e.to_string()))?;
                if id.namespace != namespace {
                    return Err(invalid(
                        "--backup",
                        b,
                        format!(
                            "the backup belongs to namespace {}, not {namespace}",
                            id.namespace
                        ),
                    ));
                }
                Some(id)
            }
        };
        let target = match (s.target_url, s.server_url, s.branch, s.target_db) {
            (Some(url), None, None, None) => {
                let name = pg::database_name(&url)
                    .map_err(|e| invalid("--target-url", &redact_url(&url), e.to_string()))?;
                check_database_name(&name)
                    .map_err(|r| invalid("--target-url", &redact_url(&url), r))?;
                Target::Url(url)
            }
            (None, Some(server_url), Some(branch), None) => {
                if branch.trim().is_empty() {
                    return Err(invalid("--branch", &branch, "the branch name is empty"));
                }
                Target::branch(&server_url, &branch)
            }
            (None, Some(server_url), None, Some(db)) => {
                check_database_name(&db).map_err(|r| invalid("--target-db", &db, r))?;
                Target::OnServer {
                    server_url,
                    database: db,
                }
            }
            _ => {
                return Err(invalid(
                    "--target-url",
                    "",
                    "give exactly one target: --target-url URL, or --server-url URL with --branch NAME or --target-db NAME",
                ));
            }
        };
        let key_text = s.backup_key.filter(|k| !k.trim().is_empty()).ok_or_else(|| ConfigError::Missing {
            name: BACKUP_KEY_VAR.into(),
            hint: "the backup secret key: file:/path/backup.sec.asc or gcpkms:projects/P/locations/L/keyRings/R/cryptoKeys/K:/path/backup.sec.asc.kms".into(),
        })?;
        let shown = if key_text.trim_start().starts_with("-----") {
            "(inline key)".to_string()
        } else {
            key_text.clone()
        };
        let bad = |e: CryptoError| invalid(BACKUP_KEY_VAR, &shown, e.to_string());
        let source = KeySource::from_str(&key_text).map_err(bad)?;
        let secret_key = BackupSecretKey::load(&source, kms).await.map_err(bad)?;

        let signing = s.signing_public_key.filter(|k| !k.trim().is_empty()).ok_or_else(|| ConfigError::Missing {
            name: SIGNING_PUBLIC_KEY_VAR.into(),
            hint: "the dump job's public signing key: file:/path/signing.pub.asc, or the armored key".into(),
        })?;
        let pairs = [(SIGNING_PUBLIC_KEY_VAR, signing)];
        let signing_keys =
            backstop_core::trust::signing_keys_from_env(&Env::from_pairs(pairs)).await?;
        Ok(Self {
            namespace,
            database: s.database.filter(|d| !d.trim().is_empty()),
            backup,
            target,
            replace: s.replace,
            source_database_url: s.source_database_url.filter(|u| !u.trim().is_empty()),
            tools: PgTools {
                bindir: s.pg_bindir,
            },
            secret_key,
            signing_keys,
            write_drill: true,
        })
    }
}

/// The clouds to read from, in order of preference.
#[derive(Clone, Copy)]
pub struct Clouds<'a> {
    /// The backups bucket (GCS).
    pub primary: Option<&'a dyn ObjectStore>,
    /// The replica (S3), used when the primary is unreachable or has no
    /// usable backup.
    pub replica: Option<&'a dyn ObjectStore>,
}

impl<'a> Clouds<'a> {
    fn ordered(&self) -> Vec<(&'static str, &'a dyn ObjectStore)> {
        let mut out = Vec::new();
        if let Some(p) = self.primary {
            out.push(("gcs", p));
        }
        if let Some(r) = self.replica {
            out.push(("s3", r));
        }
        out
    }
}

/// Receives progress; every method has a no-op default.
pub trait Progress: Send + Sync {
    /// A phase begins (`selecting`, `restoring`, `verifying`, ...).
    fn phase(&self, _phase: &str) {}
    /// The download starts; `total` ciphertext bytes are expected.
    fn start(&self, _backup: &str, _total: u64) {}
    /// `done` ciphertext bytes were read so far.
    fn advance(&self, _done: u64) {}
    /// The download ended (successfully or not).
    fn finish(&self) {}
}

/// Reports nothing.
pub struct NoProgress;
impl Progress for NoProgress {}

/// A backup that was passed over, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SkippedBackup {
    pub cloud: String,
    pub backup_id: String,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Timings {
    /// Listing and manifest verification.
    pub select_secs: f64,
    /// Download, decryption and `pg_restore`.
    pub restore_secs: f64,
    /// Row counts (the drill).
    pub verify_secs: f64,
    pub total_secs: f64,
}

/// The result of a restore (the CLI prints it as JSON).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RestoreReport {
    /// Restored, and the drill passed.
    pub success: bool,
    pub backup_id: String,
    pub namespace: String,
    /// `gcs` or `s3`.
    pub cloud: String,
    /// `gs://bucket` or `s3://bucket`.
    pub store: String,
    /// Why the primary cloud was not used, when it was not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fallback_reason: Option<String>,
    /// Newer backups passed over (incomplete, unverifiable, ...).
    pub skipped: Vec<SkippedBackup>,
    pub target_database: String,
    /// The target URL, password redacted.
    pub target: String,
    pub created_database: bool,
    /// A non-empty target was replaced.
    pub replaced: bool,
    pub ciphertext_bytes: u64,
    pub plaintext_bytes: u64,
    pub tables: usize,
    pub rows: u64,
    pub timings: Timings,
    /// Ciphertext megabytes (10^6 bytes) per second of download + restore.
    pub throughput_mb_s: f64,
    pub drill: DrillRecord,
    /// Where the drill record was written (`gs://bucket/_drills/...`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub drill_record: Option<String>,
    /// Why the drill record could not be written, when it could not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub drill_record_error: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("no restorable backup of namespace {namespace}: {details}")]
    NoBackup {
        namespace: String,
        details: String,
        skipped: Vec<SkippedBackup>,
    },
    #[error("backup {backup_id} cannot be restored: {reason}")]
    BadBackup { backup_id: String, reason: String },
    #[error("{0}")]
    Store(#[source] StoreError),
    #[error("refusing to restore into {database}: {reason}")]
    Refused { database: String, reason: String },
    #[error("{what}: {source}")]
    Pg {
        what: String,
        #[source]
        source: PgError,
    },
    #[error(
        "the backup data failed verification: {source}. Nothing was committed: pg_restore was stopped before the end of its input, so the target is as it was"
    )]
    Data {
        #[source]
        source: CryptoError,
    },
    #[error(
        "pg_restore failed ({status}): {stderr}. Its single transaction was rolled back, so the target is as it was"
    )]
    PgRestore { status: String, stderr: String },
    #[error(
        "reading the backup from {store} failed: {source}. Nothing was committed (pg_restore was stopped before the end of its input)"
    )]
    Download {
        store: String,
        #[source]
        source: StoreError,
    },
    #[error(
        "pg_restore committed before the backup finished its integrity check, and the check then failed ({reason}); the database {database} holds unverified data{cleanup}"
    )]
    CommittedUnverified {
        database: String,
        reason: String,
        cleanup: String,
    },
}

impl RestoreError {
    /// A short name of what failed (logs and the JSON result).
    pub fn kind(&self) -> &'static str {
        match self {
            RestoreError::Config(_) => "config",
            RestoreError::NoBackup { .. } => "no_backup",
            RestoreError::BadBackup { .. } => "bad_backup",
            RestoreError::Store(_) => "store",
            RestoreError::Refused { .. } => "refused",
            RestoreError::Pg { .. } => "postgres",
            RestoreError::Data { .. } => "verification",
            RestoreError::PgRestore { .. } => "pg_restore",
            RestoreError::Download { .. } => "download",
            RestoreError::CommittedUnverified { .. } => "committed_unverified",
        }
    }
}

fn pg_err(what: impl Into<String>) -> impl FnOnce(PgError) -> RestoreError {
    let what = what.into();
    move |source| RestoreError::Pg { what, source }
}

fn query_err(what: &str) -> impl Fn(tokio_postgres::Error) -> RestoreError + '_ {
    move |e| RestoreError::Pg {
        what: what.to_string(),
        source: PgError::Query {
            what: what.to_string(),
            message: match e.as_db_error() {
                Some(db) => format!("{}: {}", db.code().code(), db.message()),
                None => e.to_string(),
            },
        },
    }
}

// ---------------------------------------------------------------------------
// Selecting a backup
// ---------------------------------------------------------------------------

/// A backup chosen for restore: its verified manifest and where its data is.
#[derive(Debug, Clone)]
pub struct Candidate {
    pub id: BackupId,
    pub manifest: Manifest,
    pub data_key: String,
    pub cloud: &'static str,
}

fn data_key(id: &BackupId, info: &CiphertextInfo) -> Result<String, String> {
    let name = info.object.as_str();
    if name.is_empty() || name.contains('/') || name == "." || name == ".." {
        return Err(format!(
            "the manifest names data object {name:?}, which is not a file of this backup"
        ));
    }
    Ok(format!("{}{name}", id.prefix()))
}

/// Reads and verifies one backup's manifest. `Ok(Err(reason))`: the backup
/// is not usable; `Err`: the store failed.
async fn verify_candidate(
    store: &dyn ObjectStore,
    cloud: &'static str,
    id: &BackupId,
    keys: &[VerifyingKey],
    listed_data: Option<&ObjectMeta>,
) -> Result<Result<Candidate, String>, StoreError> {
    let manifest_bytes = match store
        .get_bytes(&id.manifest_key(), MAX_MANIFEST_BYTES)
        .await
    {
        Ok(b) => b,
        Err(StoreError::NotFound { .. }) => {
            return Ok(Err("incomplete: no manifest (commit marker)".into()));
        }
        Err(e @ StoreError::Permanent { .. }) => {
            return Ok(Err(format!("manifest unreadable: {e}")));
        }
        Err(e) => return Err(e),
    };
    let sig = match store
        .get_bytes(&id.signature_key(), MAX_SIGNATURE_BYTES)
        .await
    {
        Ok(b) => b,
        Err(StoreError::NotFound { .. }) => {
            return Ok(Err("unsigned: no manifest.json.sig".into()));
        }
        Err(e @ StoreError::Permanent { .. }) => {
            return Ok(Err(format!("signature unreadable: {e}")));
        }
        Err(e) => return Err(e),
    };
    let manifest = match backstop_core::crypto::verify_manifest_at(&manifest_bytes, &sig, keys, id)
    {
        Ok(m) => m,
        Err(e) => return Ok(Err(format!("manifest does not verify: {e}"))),
    };
    if manifest.dump_format != backstop_core::manifest::DUMP_FORMAT {
        return Ok(Err(format!(
            "dump format {:?} is not {:?} (pg_restore reads custom-format archives)",
            manifest.dump_format,
            backstop_core::manifest::DUMP_FORMAT
        )));
    }
    let key = match data_key(id, &manifest.ciphertext) {
        Ok(k) => k,
        Err(r) => return Ok(Err(r)),
    };
    let meta = match listed_data {
        Some(m) if m.key == key => m.clone(),
        _ => match store.head(&key).await {
            Ok(m) => m,
            Err(StoreError::NotFound { .. }) => {
                return Ok(Err(format!("data object {key} is missing")));
            }
            Err(e) => return Err(e),
        },
    };
    if meta.size != manifest.ciphertext.size {
        return Ok(Err(format!(
            "data object is {} bytes, the manifest says {}",
            meta.size, manifest.ciphertext.size
        )));
    }
    Ok(Ok(Candidate {
        id: id.clone(),
        manifest,
        data_key: key,
        cloud,
    }))
}

/// The newest complete, verified backup of `namespace` (optionally of one
/// database) in `store`, or `None`. Passed-over backups are added to
/// `skipped` (newest first) and logged.
pub async fn newest_verified(
    store: &dyn ObjectStore,
    cloud: &'static str,
    namespace: &Namespace,
    database: Option<&str>,
    keys: &[VerifyingKey],
    skipped: &mut Vec<SkippedBackup>,
) -> Result<Option<Candidate>, StoreError> {
    let prefix = match database {
        Some(db) => format!("{namespace}/{db}/"),
        None => format!("{namespace}/"),
    };
    let listing = store.list_all(&prefix).await?;
    let mut backups: BTreeMap<BackupId, BTreeMap<String, ObjectMeta>> = BTreeMap::new();
    for meta in listing {
        if let Ok((id, file)) = BackupId::parse_key(&meta.key) {
            backups.entry(id).or_default().insert(file, meta);
        }
    }
    for (id, files) in backups.iter().rev() {
        let reason = if !files.contains_key(MANIFEST_FILE) {
            Some("incomplete: no manifest (commit marker)".to_string())
        } else if !files.contains_key(SIGNATURE_FILE) {
            Some("unsigned: no manifest.json.sig".to_string())
        } else {
            let data = files.get(backstop_core::naming::DATA_FILE);
            match verify_candidate(store, cloud, id, keys, data).await? {
                Ok(c) => return Ok(Some(c)),
                Err(r) => Some(r),
            }
        };
        if let Some(reason) = reason {
            tracing::warn!(event = "restore_skip", cloud, backup = %id, %reason, "passing over backup");
            skipped.push(SkippedBackup {
                cloud: cloud.into(),
                backup_id: id.to_string(),
                reason,
            });
        }
    }
    Ok(None)
}

/// Picks the backup: the chosen one, or the newest verified one, from the
/// first cloud that answers and has it. Returns the candidate and why
/// earlier clouds were not used.
async fn select(
    cfg: &RestoreConfig,
    clouds: &Clouds<'_>,
    skipped: &mut Vec<SkippedBackup>,
    unavailable: &mut Vec<&'static str>,
) -> Result<(Candidate, Option<String>), RestoreError> {
    let mut notes: Vec<String> = Vec::new();
    for (cloud, store) in clouds.ordered() {
        let found = match &cfg.backup {
            Some(id) => match verify_candidate(store, cloud, id, &cfg.signing_keys, None).await {
                Ok(Ok(c)) => Ok(Some(c)),
                Ok(Err(reason)) => {
                    skipped.push(SkippedBackup {
                        cloud: cloud.into(),
                        backup_id: id.to_string(),
                        reason: reason.clone(),
                    });
                    notes.push(format!("{cloud} ({}): backup {id}: {reason}", store.url()));
                    continue;
                }
                Err(e) => Err(e),
            },
            None => {
                newest_verified(
                    store,
                    cloud,
                    &cfg.namespace,
                    cfg.database.as_deref(),
                    &cfg.signing_keys,
                    skipped,
                )
                .await
            }
        };
        match found {
            Ok(Some(c)) => {
                let reason = (!notes.is_empty()).then(|| {
                    format!(
                        "{}; restoring from {cloud} ({})",
                        notes.join("; "),
                        store.url()
                    )
                });
                if let Some(r) = &reason {
                    tracing::warn!(event = "restore_fallback", cloud, reason = %r, "using the replica");
                }
                return Ok((c, reason));
            }
            Ok(None) => notes.push(format!(
                "{cloud} ({}) has no complete, verified backup",
                store.url()
            )),
            Err(e) => {
                tracing::warn!(event = "restore_cloud_unavailable", cloud, error = %e, "cloud unavailable");
                notes.push(format!("{cloud} ({}) is unavailable: {e}", store.url()));
                unavailable.push(cloud);
            }
        }
    }
    if notes.is_empty() {
        notes.push("no cloud configured".into());
    }
    Err(RestoreError::NoBackup {
        namespace: cfg.namespace.to_string(),
        details: notes.join("; "),
        skipped: skipped.clone(),
    })
}

// ---------------------------------------------------------------------------
// Target preparation
// ---------------------------------------------------------------------------

/// A server identity for "same server" checks: host (local names folded to
/// `localhost`) and port.
fn server_of(url: &str) -> Option<(String, u16)> {
    let config = tokio_postgres::Config::from_str(url).ok()?;
    let host = match config.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(h)) => h.to_ascii_lowercase(),
        #[cfg(unix)]
        Some(tokio_postgres::config::Host::Unix(_)) => "localhost".into(),
        None => "localhost".into(),
    };
    let host = match host.trim_matches(|c| c == '[' || c == ']') {
        "127.0.0.1" | "::1" | "localhost" | "" => "localhost".to_string(),
        h => h.to_string(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    Some((host, port))
}

/// Splits the password out of a URL, for `PGPASSWORD` (never on a command
/// line, where `ps` shows it).
fn split_password(url: &str) -> (String, Option<String>) {
    let Some((scheme, rest)) = url.split_once("://") else {
        return (url.to_string(), None);
    };
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let Some(at) = authority.rfind('@') else {
        return (url.to_string(), None);
    };
    let (creds, host) = authority.split_at(at);
    match creds.split_once(':') {
        Some((user, pw)) => {
            let pw = percent_encoding::percent_decode_str(pw)
                .decode_utf8_lossy()
                .to_string();
            (format!("{scheme}://{user}{host}{tail}"), Some(pw))
        }
        None => (url.to_string(), None),
    }
}

struct ResolvedTarget {
    /// Connects to a maintenance database of the server (create, drop).
    admin_url: String,
    url: String,
    name: String,
}

fn resolve(target: &Target) -> Result<ResolvedTarget, RestoreError> {
    let bad = |what: &str, url: &str, e: PgError| {
        RestoreError::Config(invalid(what, &redact_url(url), e.to_string()))
    };
    match target {
        Target::Url(url) => {
            let name = pg::database_name(url).map_err(|e| bad("--target-url", url, e))?;
            Ok(ResolvedTarget {
                admin_url: pg::with_database(url, "postgres")
                    .map_err(|e| bad("--target-url", url, e))?,
                url: url.clone(),
                name,
            })
        }
        Target::OnServer {
            server_url,
            database,
        } => Ok(ResolvedTarget {
            admin_url: server_url.clone(),
            url: pg::with_database(server_url, database)
                .map_err(|e| bad("--server-url", server_url, e))?,
            name: database.clone(),
        }),
    }
    .and_then(|t| {
        check_database_name(&t.name).map_err(|reason| RestoreError::Refused {
            database: t.name.clone(),
            reason,
        })?;
        Ok(t)
    })
}

/// Refuses targets that are (or may be) the backup's source database.
fn check_not_source(
    cfg: &RestoreConfig,
    t: &ResolvedTarget,
    manifest: &Manifest,
    target_in_use: bool,
) -> Result<(), RestoreError> {
    let refuse = |reason: String| {
        Err(RestoreError::Refused {
            database: t.name.clone(),
            reason,
        })
    };
    match &cfg.source_database_url {
        Some(source) => {
            let source_name = pg::database_name(source).ok();
            let same_server = server_of(source).is_some() && server_of(source) == server_of(&t.url);
            if same_server && (Some(&t.name) == source_name.as_ref() || t.name == manifest.database)
            {
                return refuse(format!(
                    "it is the source database (same server as {SOURCE_DATABASE_URL_VAR}={} and the name of the backed-up database); restore into another database",
                    redact_url(source)
                ));
            }
        }
        None => {
            if cfg.replace && target_in_use && t.name == manifest.database {
                return refuse(format!(
                    "--replace would drop a database named like the backup's source database {:?}, and {SOURCE_DATABASE_URL_VAR} is not set, so Backstop cannot tell that this is not the source; set {SOURCE_DATABASE_URL_VAR} or restore into another name",
                    manifest.database
                ));
            }
        }
    }
    Ok(())
}

/// Counts user tables (excluding extension members) in a database.
async fn user_table_count(client: &Client) -> Result<i64, RestoreError> {
    let row = client
        .query_one(
            "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE c.relkind IN ('r', 'p')
               AND n.nspname NOT IN ('pg_catalog', 'information_schema')
               AND n.nspname NOT LIKE 'pg_toast%' AND n.nspname NOT LIKE 'pg_temp%'
               AND NOT EXISTS (SELECT 1 FROM pg_depend d
                               WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e')",
            &[],
        )
        .await
        .map_err(query_err("count user tables"))?;
    Ok(row.get(0))
}

async fn database_exists(admin: &Client, name: &str) -> Result<bool, RestoreError> {
    Ok(admin
        .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&name])
        .await
        .map_err(query_err("look up the target database"))?
        .is_some())
}

async fn create_database(admin: &Client, name: &str) -> Result<(), RestoreError> {
    admin
        .batch_execute(&format!(
            "CREATE DATABASE {} TEMPLATE template0",
            quote_ident(name)
        ))
        .await
        .map_err(query_err("create the target database"))
}

async fn drop_database(admin: &Client, name: &str) -> Result<(), RestoreError> {
    let version: i32 = admin
        .query_one("SELECT current_setting('server_version_num')::int", &[])
        .await
        .map_err(query_err("server version"))?
        .get(0);
    // FORCE (PostgreSQL 13+) ends other sessions, e.g. a pg_restore backend
    // that is still rolling back.
    let force = if version >= 130000 {
        " WITH (FORCE)"
    } else {
        ""
    };
    admin
        .batch_execute(&format!(
            "DROP DATABASE IF EXISTS {}{force}",
            quote_ident(name)
        ))
        .await
        .map_err(query_err("drop a database"))
}

async fn rename_database(admin: &Client, from: &str, to: &str) -> Result<(), RestoreError> {
    let sql = format!(
        "ALTER DATABASE {} RENAME TO {}",
        quote_ident(from),
        quote_ident(to)
    );
    let mut attempt = 0;
    loop {
        match admin.batch_execute(&sql).await {
            Ok(()) => return Ok(()),
            // 55006 object_in_use: our own drill connection may still be closing.
            Err(e)
                if attempt < 50
                    && e.code() == Some(&tokio_postgres::error::SqlState::OBJECT_IN_USE) =>
            {
                attempt += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => return Err(query_err("rename the staging database")(e)),
        }
    }
}

/// How the restore writes into the target.
enum Plan {
    /// Into the target itself (it is new or empty); `created`: we created it
    /// and drop it again on failure.
    Direct { created: bool },
    /// Into a staging database, swapped in after success.
    Staging { staging: String },
}

// ---------------------------------------------------------------------------
// Streaming into pg_restore
// ---------------------------------------------------------------------------

/// Passes the ciphertext through, counting bytes and checking size and
/// digests against the manifest; a mismatch ends the stream with an error
/// instead of a clean end (so decryption, and pg_restore after it, never see
/// a clean end of unverified data).
fn checked(body: ByteStream, expected: &CiphertextInfo, counter: Arc<AtomicU64>) -> ByteStream {
    let checker = DigestChecker::new(expected);
    byte_stream(futures::stream::unfold(
        (body, Some(checker)),
        move |(mut body, checker)| {
            let counter = counter.clone();
            async move {
                let mut checker = checker?;
                match body.next().await {
                    Some(Ok(chunk)) => match checker.feed(&chunk) {
                        Ok(()) => {
                            counter.fetch_add(chunk.len() as u64, Ordering::Relaxed);
                            Some((Ok(chunk), (body, Some(checker))))
                        }
                        Err(e) => Some((Err(e.into_io()), (body, None))),
                    },
                    Some(Err(e)) => Some((Err(e), (body, None))),
                    None => match checker.finish() {
                        Ok(_) => None,
                        Err(e) => Some((Err(e.into_io()), (body, None))),
                    },
                }
            }
        },
    ))
}

/// Keeps the last 16 KiB of a child's stderr for error messages.
fn collect_stderr(child: &mut Child) -> tokio::task::JoinHandle<String> {
    let stderr = child.stderr.take();
    tokio::spawn(async move {
        let Some(mut stderr) = stderr else {
            return String::new();
        };
        let mut buf = Vec::new();
        let mut chunk = [0u8; 8192];
        while let Ok(n) = stderr.read(&mut chunk).await {
            if n == 0 {
                break;
            }
            buf.extend_from_slice(&chunk[..n]);
            if buf.len() > 16 * 1024 {
                buf.drain(..buf.len() - 16 * 1024);
            }
        }
        String::from_utf8_lossy(&buf).trim().to_string()
    })
}

/// Turns an error from the decryption stream into the restore's error.
fn stream_error(e: std::io::Error, store: &str) -> RestoreError {
    match CryptoError::from_io(e) {
        CryptoError::Input(inner) => {
            if inner.get_ref().is_some_and(|x| x.is::<StoreError>()) {
                let store_err = *inner
                    .into_inner()
                    .expect("checked")
                    .downcast::<StoreError>()
                    .expect("checked");
                RestoreError::Download {
                    store: store.to_string(),
                    source: store_err,
                }
            } else if inner.get_ref().is_some_and(|x| x.is::<CryptoError>()) {
                RestoreError::Data {
                    source: CryptoError::from_io(inner),
                }
            } else {
                RestoreError::Download {
                    store: store.to_string(),
                    source: StoreError::Transient {
                        store: store.to_string(),
                        op: "read",
                        key: String::new(),
                        message: inner.to_string(),
                    },
                }
            }
        }
        other => RestoreError::Data { source: other },
    }
}

/// Downloads, verifies, decrypts and feeds `pg_restore`. Returns the
/// plaintext size. See the module documentation for the hold-back rule.
async fn stream_into_pg_restore(
    cfg: &RestoreConfig,
    store: &dyn ObjectStore,
    cand: &Candidate,
    db_url: &str,
    progress: &dyn Progress,
) -> Result<u64, RestoreError> {
    let body = store
        .read(&cand.data_key)
        .await
        .map_err(|source| RestoreError::Download {
            store: store.url(),
            source,
        })?;
    let counter = Arc::new(AtomicU64::new(0));
    let ciphertext = checked(body, &cand.manifest.ciphertext, counter.clone());
    let plain = backstop_core::crypto::decrypt_stream(ciphertext, &cfg.secret_key);
    progress.start(&cand.id.to_string(), cand.manifest.ciphertext.size);
    let result = feed_pg_restore(&cfg.tools, db_url, plain, &store.url(), || {
        progress.advance(counter.load(Ordering::Relaxed))
    })
    .await;
    progress.finish();
    result
}

/// Runs `pg_restore --single-transaction` into `db_url`, fed by `plain`.
///
/// The last chunk is held back until `plain` has ended cleanly: a stream
/// that fails (digest, MDC, download) leaves `pg_restore` waiting for the
/// rest of its input, and it is killed there, so it never commits. Returns
/// the bytes written.
async fn feed_pg_restore(
    tools: &PgTools,
    db_url: &str,
    mut plain: ByteStream,
    store_url: &str,
    mut on_chunk: impl FnMut(),
) -> Result<u64, RestoreError> {
    let program = tools.program("pg_restore");
    let (dbname, password) = split_password(db_url);
    let mut cmd = Command::new(&program);
    cmd.args([
        "--single-transaction",
        "--no-owner",
        "--no-acl",
        "--exit-on-error",
        "--no-password",
    ])
    .arg(format!("--dbname={dbname}"))
    .stdin(Stdio::piped())
    .stdout(Stdio::null())
    .stderr(Stdio::piped())
    .kill_on_drop(true);
    if let Some(pw) = password {
        cmd.env("PGPASSWORD", pw);
    }
    let mut child = cmd.spawn().map_err(|e| RestoreError::Pg {
        what: "start pg_restore".into(),
        source: PgError::Spawn {
            program: program.display().to_string(),
            message: e.to_string(),
        },
    })?;
    let stderr = collect_stderr(&mut child);
    let mut stdin = child.stdin.take().expect("stdin is piped");

    let mut held: Option<Bytes> = None;
    let mut written = 0u64;
    let mut write_failed = false;
    let failure: Option<RestoreError> = loop {
        match plain.next().await {
            Some(Ok(chunk)) => {
                if let Some(prev) = held.replace(chunk) {
                    if stdin.write_all(&prev).await.is_err() {
                        // pg_restore stopped reading: it failed; its status
                        // and stderr say why.
                        write_failed = true;
                        break None;
                    }
                    written += prev.len() as u64;
                }
                on_chunk();
            }
            Some(Err(e)) => break Some(stream_error(e, store_url)),
            None => break None,
        }
    };
    drop(plain);

    if let Some(err) = failure {
        // Verification failed: pg_restore must not see the end of its input.
        let _ = child.start_kill();
        let status = child.wait().await;
        drop(stdin);
        let tail = stderr.await.unwrap_or_default();
        // Killed, it cannot exit 0; a 0 means it had finished on its own.
        if status.as_ref().is_ok_and(|s| s.success()) {
            return Err(RestoreError::CommittedUnverified {
                database: pg::database_name(db_url).unwrap_or_default(),
                reason: err.to_string(),
                cleanup: String::new(),
            });
        }
        tracing::error!(event = "restore_verification_failed", error = %err, pg_restore_stderr = %tail, "stopped pg_restore before the end of its input");
        return Err(err);
    }
    if !write_failed {
        if let Some(last) = held.take() {
            if stdin.write_all(&last).await.is_err() {
                write_failed = true;
            } else {
                written += last.len() as u64;
            }
        }
        if !write_failed {
            let _ = stdin.shutdown().await;
        }
    }
    drop(stdin);
    let status = child.wait().await.map_err(|e| RestoreError::PgRestore {
        status: "unknown".into(),
        stderr: e.to_string(),
    })?;
    let tail = stderr.await.unwrap_or_default();
    if status.success() && !write_failed {
        Ok(written)
    } else {
        Err(RestoreError::PgRestore {
            status: status.to_string(),
            stderr: tail,
        })
    }
}

// ---------------------------------------------------------------------------
// The restore
// ---------------------------------------------------------------------------

/// Compares restored row counts with the manifest's.
pub fn compare_counts(
    expected: &BTreeMap<String, u64>,
    actual: &BTreeMap<String, u64>,
) -> Vec<TableMismatch> {
    expected
        .iter()
        .filter_map(|(table, &n)| match actual.get(table) {
            Some(&a) if a == n => None,
            a => Some(TableMismatch {
                table: table.clone(),
                expected: n,
                actual: a.copied(),
            }),
        })
        .collect()
}

/// How long writing a drill record may take per cloud.
const DRILL_WRITE_TIMEOUT: Duration = Duration::from_secs(60);

/// Writes the drill record: to the primary cloud (where the audit reads
/// it), else (primary unavailable, or the write fails) to the cloud the
/// backup came from. Returns where it landed, or why it did not.
async fn write_drill(
    clouds: &Clouds<'_>,
    used: &'static str,
    unavailable: &[&'static str],
    record: &DrillRecord,
) -> (Option<String>, Option<String>) {
    let key = match record.key() {
        Ok(k) => k,
        Err(e) => return (None, Some(e.to_string())),
    };
    let mut errors = Vec::new();
    let mut targets: Vec<(&'static str, &dyn ObjectStore)> = Vec::new();
    for (i, (cloud, store)) in clouds.ordered().into_iter().enumerate() {
        if (i == 0 || cloud == used) && !unavailable.contains(&cloud) {
            targets.push((cloud, store));
        }
    }
    for (cloud, store) in targets {
        let opts = PutOptions::default().with_content_type("application/json");
        let put = store.put_bytes(&key, Bytes::from(record.to_bytes()), opts);
        let result = match tokio::time::timeout(DRILL_WRITE_TIMEOUT, put).await {
            Ok(r) => r.map_err(|e| e.to_string()),
            Err(_) => Err(format!(
                "no answer from {} within {}s",
                store.url(),
                DRILL_WRITE_TIMEOUT.as_secs()
            )),
        };
        match result {
            Ok(_) => {
                let at = format!("{}/{key}", store.url());
                tracing::info!(event = "drill_recorded", cloud, at = %at, success = record.success, "drill record written");
                return (Some(at), None);
            }
            Err(e) => {
                tracing::error!(event = "drill_record_failed", cloud, error = %e, "could not write the drill record");
                errors.push(format!("{cloud}: {e}"));
            }
        }
    }
    if errors.is_empty() {
        errors.push("no reachable cloud to write it to".into());
    }
    (None, Some(errors.join("; ")))
}

/// What the restore into the database did, before the drill record.
struct Restored {
    created: bool,
    replaced: bool,
    plaintext: u64,
    counts: BTreeMap<String, u64>,
    mismatches: Vec<TableMismatch>,
    restore_secs: f64,
    verify_secs: f64,
}

/// Restores the chosen backup from one cloud into the target.
async fn restore_into(
    cfg: &RestoreConfig,
    store: &dyn ObjectStore,
    cand: &Candidate,
    t: &ResolvedTarget,
    progress: &dyn Progress,
) -> Result<Restored, RestoreError> {
    progress.phase("preparing the target database");
    let admin = pg::connect(&t.admin_url).await.map_err(pg_err(format!(
        "connect to the server of {} to create the target database",
        t.name
    )))?;
    let exists = database_exists(&admin, &t.name).await?;
    let in_use = if exists {
        let client = pg::connect(&t.url)
            .await
            .map_err(pg_err("connect to the target database"))?;
        user_table_count(&client).await? > 0
    } else {
        false
    };
    check_not_source(cfg, t, &cand.manifest, in_use)?;
    let plan = match (exists, in_use) {
        (false, _) => {
            create_database(&admin, &t.name).await?;
            tracing::info!(event = "restore_created_database", database = %t.name, "created the target database");
            Plan::Direct { created: true }
        }
        (true, false) => Plan::Direct { created: false },
        (true, true) if cfg.replace => {
            let staging = format!(
                "backstop_restore_{:012x}",
                rand::random::<u64>() & 0xffff_ffff_ffff
            );
            create_database(&admin, &staging).await?;
            Plan::Staging { staging }
        }
        (true, true) => {
            return Err(RestoreError::Refused {
                database: t.name.clone(),
                reason: "it already holds tables; pass --replace to replace it (it is swapped only after a successful restore and drill)".into(),
            });
        }
    };
    let db_url = match &plan {
        Plan::Direct { .. } => t.url.clone(),
        Plan::Staging { staging } => {
            pg::with_database(&t.url, staging).map_err(pg_err("staging database URL"))?
        }
    };
    let cleanup = async |admin: &Client, why: &str| {
        let drop_it = match &plan {
            Plan::Direct { created: true } => Some(t.name.as_str()),
            Plan::Staging { staging } => Some(staging.as_str()),
            Plan::Direct { created: false } => None,
        };
        if let Some(name) = drop_it
            && let Err(e) = drop_database(admin, name).await
        {
            tracing::error!(event = "restore_cleanup_failed", database = name, error = %e, why, "could not drop the database created for the restore");
        }
    };

    progress.phase("restoring");
    let clock = Instant::now();
    let plaintext = match stream_into_pg_restore(cfg, store, cand, &db_url, progress).await {
        Ok(n) => n,
        Err(e) => {
            cleanup(&admin, "restore failed").await;
            let e = match e {
                RestoreError::CommittedUnverified {
                    database, reason, ..
                } => {
                    let cleanup = if matches!(plan, Plan::Direct { created: false }) {
                        ": DROP IT or restore again with --replace".to_string()
                    } else {
                        " (it was created for this restore and has been dropped)".to_string()
                    };
                    RestoreError::CommittedUnverified {
                        database,
                        reason,
                        cleanup,
                    }
                }
                e => e,
            };
            return Err(e);
        }
    };
    let restore_secs = clock.elapsed().as_secs_f64();

    progress.phase("checking row counts");
    let clock = Instant::now();
    let counts = async {
        let client = pg::connect(&db_url)
            .await
            .map_err(pg_err("connect to the restored database"))?;
        pg::row_counts(&client)
            .await
            .map_err(pg_err("count rows of the restored database"))
    }
    .await;
    let counts = match counts {
        Ok(c) => c,
        Err(e) => {
            cleanup(&admin, "row counts failed").await;
            return Err(e);
        }
    };
    let mismatches = compare_counts(&cand.manifest.tables, &counts);
    let verify_secs = clock.elapsed().as_secs_f64();

    let replaced = match &plan {
        Plan::Staging { staging } if mismatches.is_empty() => {
            progress.phase("swapping in the restored database");
            drop_database(&admin, &t.name).await?;
            rename_database(&admin, staging, &t.name).await?;
            true
        }
        Plan::Staging { .. } => {
            // The drill failed: keep the old database.
            cleanup(&admin, "drill failed; the target keeps its old contents").await;
            false
        }
        Plan::Direct { .. } => false,
    };
    Ok(Restored {
        created: matches!(plan, Plan::Direct { created: true }),
        replaced,
        plaintext,
        counts,
        mismatches,
        restore_secs,
        verify_secs,
    })
}

/// Restores a backup (see the module documentation). `Ok` with
/// `success == false` means the restore completed but the drill found
/// row-count mismatches; callers should exit non-zero.
pub async fn restore(
    cfg: &RestoreConfig,
    clouds: Clouds<'_>,
    progress: &dyn Progress,
) -> Result<RestoreReport, RestoreError> {
    let result = restore_inner(cfg, &clouds, progress).await;
    if let Err(e) = &result {
        tracing::error!(event = "restore_failed", namespace = %cfg.namespace, kind = e.kind(), error = %e, "restore failed");
    }
    result
}

async fn restore_inner(
    cfg: &RestoreConfig,
    clouds: &Clouds<'_>,
    progress: &dyn Progress,
) -> Result<RestoreReport, RestoreError> {
    let clock = Instant::now();
    let started_at: DateTime<Utc> = Utc::now();
    let t = resolve(&cfg.target)?;
    if let Some(source) = &cfg.source_database_url
        && server_of(source).is_some()
        && server_of(source) == server_of(&t.url)
        && pg::database_name(source).ok().as_ref() == Some(&t.name)
    {
        return Err(RestoreError::Refused {
            database: t.name.clone(),
            reason: format!(
                "it is the source database {SOURCE_DATABASE_URL_VAR}={}",
                redact_url(source)
            ),
        });
    }

    progress.phase("selecting a backup");
    let mut skipped = Vec::new();
    let mut unavailable = Vec::new();
    let (mut cand, mut fallback_reason) =
        select(cfg, clouds, &mut skipped, &mut unavailable).await?;
    let select_secs = clock.elapsed().as_secs_f64();
    tracing::info!(event = "restore_selected", backup = %cand.id, cloud = cand.cloud, target = %t.name, "restoring");

    let ordered = clouds.ordered();
    let mut result;
    loop {
        let store = ordered
            .iter()
            .find(|(c, _)| *c == cand.cloud)
            .map(|(_, s)| *s)
            .expect("the candidate's cloud is configured");
        result = restore_into(cfg, store, &cand, &t, progress).await;
        // A download that failed on the primary is retried from the replica
        // (the transaction rolled back, the target is as it was).
        let Err(RestoreError::Download { source, .. }) = &result else {
            break;
        };
        let later: Vec<_> = ordered
            .iter()
            .skip_while(|(c, _)| *c != cand.cloud)
            .skip(1)
            .collect();
        let Some((next_cloud, next_store)) = later.first() else {
            break;
        };
        match verify_candidate(*next_store, next_cloud, &cand.id, &cfg.signing_keys, None).await {
            Ok(Ok(next)) => {
                let why = format!(
                    "reading {} from {} failed ({source}); retrying from {next_cloud} ({})",
                    cand.id,
                    cand.cloud,
                    next_store.url()
                );
                tracing::warn!(event = "restore_fallback", reason = %why, "retrying from the replica");
                fallback_reason = Some(match fallback_reason {
                    Some(r) => format!("{r}; {why}"),
                    None => why,
                });
                unavailable.push(cand.cloud);
                cand = next;
            }
            _ => break,
        }
    }

    let finished_at = Utc::now();
    let mut drill = DrillRecord {
        backup_id: cand.id.to_string(),
        namespace: cfg.namespace.clone(),
        target_database: t.name.clone(),
        started_at,
        finished_at,
        success: false,
        tables_checked: cand.manifest.tables.len() as u64,
        mismatches: Vec::new(),
        error: None,
        restored_from: Some(cand.cloud.to_string()),
    };
    let restored = match result {
        Ok(r) => r,
        Err(e) => {
            // Refusals are not drills: nothing was attempted.
            if cfg.write_drill
                && !matches!(e, RestoreError::Refused { .. } | RestoreError::Config(_))
            {
                drill.error = Some(e.to_string());
                write_drill(clouds, cand.cloud, &unavailable, &drill).await;
            }
            return Err(e);
        }
    };
    drill.success = restored.mismatches.is_empty();
    drill.mismatches = restored.mismatches.clone();
    if !drill.success {
        drill.error = Some(format!(
            "{} of {} tables have row counts different from the manifest",
            drill.mismatches.len(),
            drill.tables_checked
        ));
        tracing::error!(event = "restore_drill_mismatch", backup = %cand.id, mismatches = ?drill.mismatches, "restored row counts differ from the manifest");
    }
    let (drill_record, drill_record_error) = if cfg.write_drill {
        write_drill(clouds, cand.cloud, &unavailable, &drill).await
    } else {
        (None, None)
    };
    let store_url = ordered
        .iter()
        .find(|(c, _)| *c == cand.cloud)
        .map(|(_, s)| s.url())
        .unwrap_or_default();
    let total_secs = clock.elapsed().as_secs_f64();
    let report = RestoreReport {
        success: drill.success,
        backup_id: cand.id.to_string(),
        namespace: cfg.namespace.to_string(),
        cloud: cand.cloud.to_string(),
        store: store_url,
        fallback_reason,
        skipped,
        target_database: t.name.clone(),
        target: redact_url(&t.url),
        created_database: restored.created,
        replaced: restored.replaced,
        ciphertext_bytes: cand.manifest.ciphertext.size,
        plaintext_bytes: restored.plaintext,
        tables: restored.counts.len(),
        rows: restored.counts.values().sum(),
        timings: Timings {
            select_secs,
            restore_secs: restored.restore_secs,
            verify_secs: restored.verify_secs,
            total_secs,
        },
        throughput_mb_s: if restored.restore_secs > 0.0 {
            cand.manifest.ciphertext.size as f64 / 1e6 / restored.restore_secs
        } else {
            0.0
        },
        drill,
        drill_record,
        drill_record_error,
    };
    tracing::info!(
        event = "restore_finished",
        backup = %report.backup_id,
        cloud = %report.cloud,
        target = %report.target_database,
        success = report.success,
        secs = report.timings.total_secs,
        "restore finished"
    );
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn branch_databases_are_valid_and_deterministic() {
        let hostile = format!(
            "feature/x'; DROP DATABASE postgres; --\"é{}",
            "a".repeat(100)
        );
        let a = database_for_branch(&hostile);
        assert_eq!(a, database_for_branch(&hostile));
        assert!(a.len() <= MAX_DATABASE_NAME_BYTES, "{a}");
        assert!(
            a.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'),
            "{a}"
        );
        assert!(database_for_branch("feature/Fix-Login").starts_with("feature-fix-login-"));
        assert_ne!(
            database_for_branch("feature/Fix-Login"),
            database_for_branch("feature/fix-login")
        );
        check_database_name(&a).unwrap();
    }

    #[test]
    fn explicit_names_are_checked() {
        assert!(check_database_name("").is_err());
        assert!(check_database_name(&"x".repeat(64)).is_err());
        assert!(check_database_name("template1").is_err());
        check_database_name("a\"b; DROP").unwrap();
    }

    #[test]
    fn passwords_leave_the_url() {
        assert_eq!(
            split_password("postgres://u:p%40ss@h:5/db?sslmode=disable"),
            (
                "postgres://u@h:5/db?sslmode=disable".to_string(),
                Some("p@ss".to_string())
            )
        );
        assert_eq!(
            split_password("postgres://u@h/db"),
            ("postgres://u@h/db".to_string(), None)
        );
        assert_eq!(
            split_password("postgres://h/db"),
            ("postgres://h/db".to_string(), None)
        );
    }

    #[test]
    fn servers_compare_by_host_and_port() {
        assert_eq!(
            server_of("postgres://u@127.0.0.1/db"),
            server_of("postgres://x:y@localhost:5432/other")
        );
        assert_ne!(
            server_of("postgres://u@db1:5432/db"),
            server_of("postgres://u@db1:5433/db")
        );
        assert_ne!(
            server_of("postgres://u@db1/db"),
            server_of("postgres://u@db2/db")
        );
    }

    #[test]
    fn counts_compare() {
        let expected: BTreeMap<String, u64> =
            [("public.a".to_string(), 3), ("public.b".to_string(), 0)].into();
        let same = expected.clone();
        assert!(compare_counts(&expected, &same).is_empty());
        let mut other = expected.clone();
        other.remove("public.b");
        other.insert("public.a".into(), 2);
        let m = compare_counts(&expected, &other);
        assert_eq!(m.len(), 2);
        assert_eq!(m[0].actual, Some(2));
        assert_eq!(m[1].actual, None);
    }

    /// A stand-in for `pg_restore` that records what it received and whether
    /// it saw the end of its input (where the real one commits).
    fn fake_pg_restore(script: &str) -> (std::path::PathBuf, PgTools) {
        let dir = std::env::temp_dir().join(format!("bs-fake-pgr-{:016x}", rand::random::<u64>()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("pg_restore");
        std::fs::write(&path, format!("#!/bin/sh\n{script}\n")).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        (dir.clone(), PgTools { bindir: Some(dir) })
    }

    const RECORDER: &str = r#"d="$(dirname "$0")"; cat > "$d/received" && echo eof > "$d/saw_eof""#;

    fn chunks(
        items: Vec<std::io::Result<&'static [u8]>>,
        pause_before_last: Duration,
    ) -> ByteStream {
        let n = items.len();
        byte_stream(futures::stream::iter(items.into_iter().enumerate()).then(
            move |(i, item)| async move {
                if i + 1 == n {
                    tokio::time::sleep(pause_before_last).await;
                }
                item.map(Bytes::from_static)
            },
        ))
    }

    #[tokio::test]
    async fn pg_restore_gets_everything_and_the_end_of_a_clean_stream() {
        let (dir, tools) = fake_pg_restore(RECORDER);
        let plain = chunks(
            vec![Ok(b"first "), Ok(b"second "), Ok(b"last")],
            Duration::ZERO,
        );
        let n = feed_pg_restore(&tools, "postgres://u@h/db", plain, "gs://b", || {})
            .await
            .unwrap();
        assert_eq!(n, 17);
        assert_eq!(
            std::fs::read(dir.join("received")).unwrap(),
            b"first second last"
        );
        assert!(dir.join("saw_eof").exists());
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[tokio::test]
    async fn a_failing_stream_never_lets_pg_restore_see_its_last_chunk_or_the_end() {
        let (dir, tools) = fake_pg_restore(RECORDER);
        // The failure arrives well after the last data chunk: a restore that
        // passed every chunk on at once would have handed pg_restore the
        // whole archive by then.
        let plain = chunks(
            vec![
                Ok(b"first "),
                Ok(b"last"),
                Err(CryptoError::IntegrityCheckFailed.into_io()),
            ],
            Duration::from_millis(500),
        );
        let err = feed_pg_restore(&tools, "postgres://u@h/db", plain, "gs://b", || {})
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                RestoreError::Data {
                    source: CryptoError::IntegrityCheckFailed
                }
            ),
            "{err}"
        );
        assert_eq!(
            std::fs::read(dir.join("received")).unwrap_or_default(),
            b"first "
        );
        assert!(
            !dir.join("saw_eof").exists(),
            "pg_restore saw the end of its input"
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[tokio::test]
    async fn pg_restore_failures_are_reported_with_its_stderr() {
        let (dir, tools) = fake_pg_restore("echo 'pg_restore: error: relation exists' >&2; exit 1");
        let plain = chunks(vec![Ok(b"data"), Ok(b"more")], Duration::ZERO);
        let err = feed_pg_restore(&tools, "postgres://u@h/db", plain, "gs://b", || {})
            .await
            .unwrap_err();
        assert!(
            matches!(&err, RestoreError::PgRestore { stderr, .. } if stderr.contains("relation exists")),
            "{err}"
        );
        std::fs::remove_dir_all(dir).unwrap();
    }
}
