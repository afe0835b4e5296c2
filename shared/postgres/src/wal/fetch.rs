//! `backstop wal-fetch %f %p`: PostgreSQL's `restore_command`.
//!
//! One archived file, from GCS (S3 when GCS is unreachable or its copy
//! fails verification), verified before any byte is trusted: the sealed
//! manifest's signature and place first ([`WalManifest::open`]), then the
//! data through the chunk gate (each chunk authenticated against the signed
//! digests before it is decrypted), decryption capped at the manifest's
//! plaintext size, and the plaintext's size and SHA-256 against the
//! manifest. The plaintext goes into a 0600 temporary file next to `%p`,
//! is synced, and only then renamed onto `%p`, so `%p` appears complete or
//! not at all.
//!
//! The exit status is what PostgreSQL acts on ([`WalFetchError::exit_code`]):
//! 1 only when the archive answered that the file does not exist (recovery
//! ends there or tries another timeline); every other failure is 126, which
//! makes recovery stop with FATAL instead of promoting early with WAL
//! missing.
//!
//! The next segments are fetched alongside into `pg_wal/backstop_prefetch/`
//! (`super::prefetch`).

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use futures::StreamExt;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use backstop_core::config::{ConfigError, Env, hint};
use backstop_core::crypto::{
    BackupSecretKey, CryptoError, KeySource, KeyUnwrap, VerifyingKey, chunks, decrypt_stream_sized,
};
use backstop_core::error::Classify as _;
use backstop_core::manifest::MAX_MANIFEST_BYTES;
use backstop_core::naming::Namespace;
use backstop_core::store::{ObjectStore, ObjectStoreExt as _, StoreError};
use backstop_core::wal::{WalFile, WalKey, WalManifest};

use super::prefetch::{self, AheadResult, TempFile};
use super::{WalPushError, system_identifier};
use crate::dump::NAMESPACE_VAR;
use crate::restore::Clouds;
use crate::{invalid, missing, shown_key_setting};

/// Exit status: the archive does not have the file (recovery ends there,
/// or tries another timeline).
pub const EXIT_NOT_ARCHIVED: u8 = 1;
/// Exit status: anything else. Above 125, so PostgreSQL stops recovery
/// (FATAL) rather than take the file for missing and promote early.
pub const EXIT_STOP_RECOVERY: u8 = 126;

/// The backup secret key setting.
pub const BACKUP_KEY_VAR: &str = "BACKSTOP_BACKUP_KEY";
/// The public key(s) manifests must be signed with.
pub const SIGNING_PUBLIC_KEY_VAR: &str = "BACKSTOP_SIGNING_PUBLIC_KEY";
/// Segments fetched ahead of the one asked for.
pub const WAL_FETCH_PREFETCH_VAR: &str = "BACKSTOP_WAL_FETCH_PREFETCH";
const DEFAULT_PREFETCH: usize = 8;
const MAX_PREFETCH: usize = 64;

/// Why `wal-fetch` did not deliver the file; [`Self::exit_code`] is what
/// PostgreSQL reads.
#[derive(Debug, thiserror::Error)]
pub enum WalFetchError {
    /// The archive answered that the file does not exist.
    #[error(
        "{file} is not in the archive ({tried}); normal at the end of the archived WAL: recovery ends here or tries another timeline"
    )]
    NotArchived {
        /// The file asked for.
        file: String,
        /// What each cloud answered.
        tried: String,
    },
    /// The settings are unusable.
    #[error("{0}; recovery stops (exit 126) until restore_command's settings are fixed")]
    Config(ConfigError),
    /// `%f` is not a WAL file name.
    #[error("{0}; restore_command must be 'backstop wal-fetch %f %p'")]
    NotAWalFile(String),
    /// The backup key is not one the file is encrypted to.
    #[error(
        "cannot decrypt {file}: the backup key does not match the recipients of its signed manifest (encrypted to {recipients}; the key configured holds {held}); set backup_key (BACKSTOP_BACKUP_KEY) to this archive's backup secret key. Recovery stops (exit 126)"
    )]
    WrongKey {
        /// The file asked for.
        file: String,
        /// The manifest's recipients.
        recipients: String,
        /// What the configured key can decrypt.
        held: String,
    },
    /// No cloud delivered a copy that verified.
    #[error(
        "could not fetch {file} from the archive ({tried}); recovery stops (exit 126) rather than end without it. {advice}"
    )]
    Unavailable {
        /// The file asked for.
        file: String,
        /// What each cloud answered.
        tried: String,
        /// What to do.
        advice: &'static str,
    },
    /// The file could not be written locally.
    #[error(
        "could not write {path}: {error}; check pg_wal's free space and permissions. Recovery stops (exit 126)"
    )]
    Local {
        /// The file being written.
        path: String,
        /// What the system said.
        error: String,
    },
}

/// Not `#[from]`: the message holds the setting's error already, and a
/// source would repeat it in the chain.
impl From<ConfigError> for WalFetchError {
    fn from(e: ConfigError) -> Self {
        WalFetchError::Config(e)
    }
}

impl WalFetchError {
    /// The exit status PostgreSQL acts on: [`EXIT_NOT_ARCHIVED`] for a file
    /// the archive does not have, [`EXIT_STOP_RECOVERY`] for anything else.
    pub fn exit_code(&self) -> u8 {
        match self {
            WalFetchError::NotArchived { .. } => EXIT_NOT_ARCHIVED,
            _ => EXIT_STOP_RECOVERY,
        }
    }

    fn local(path: &Path, error: impl fmt::Display) -> Self {
        WalFetchError::Local {
            path: path.display().to_string(),
            error: error.to_string(),
        }
    }
}

/// For the JSON failure only: wal-fetch's status stays
/// [`WalFetchError::exit_code`], PostgreSQL's contract.
impl backstop_core::error::Failure for WalFetchError {
    fn failure_kind(&self) -> backstop_core::error::FailureKind {
        use backstop_core::error::FailureKind;
        match self {
            WalFetchError::Config(_) | WalFetchError::NotAWalFile(_) => FailureKind::Config,
            WalFetchError::WrongKey { .. } => FailureKind::Integrity,
            WalFetchError::NotArchived { .. }
            | WalFetchError::Unavailable { .. }
            | WalFetchError::Local { .. } => FailureKind::Other,
        }
    }
}

// ---- settings ------------------------------------------------------------

/// What `wal-fetch` was given (`None`: not set): the `--config` file's
/// keys, or their variables.
#[derive(Debug, Default, Clone, Deserialize)]
pub struct WalFetchSettings {
    /// `namespace` / `BACKSTOP_NAMESPACE`.
    pub namespace: Option<String>,
    /// `gcs_bucket` / `BACKSTOP_GCS_BUCKET`.
    pub gcs_bucket: Option<String>,
    /// `s3_bucket` / `BACKSTOP_S3_BUCKET`.
    pub s3_bucket: Option<String>,
    /// `backup_key` / `BACKSTOP_BACKUP_KEY`.
    pub backup_key: Option<String>,
    /// `signing_public_key` / `BACKSTOP_SIGNING_PUBLIC_KEY`.
    pub signing_public_key: Option<String>,
    /// `system_identifier` (file only; default: `global/pg_control`).
    #[serde(default, deserialize_with = "text_or_number")]
    pub system_identifier: Option<String>,
    /// `prefetch` / `BACKSTOP_WAL_FETCH_PREFETCH`.
    #[serde(default, deserialize_with = "text_or_number")]
    pub prefetch: Option<String>,
    /// `BACKSTOP_PGDATA` (default: the working directory).
    #[serde(skip)]
    pub pgdata: Option<PathBuf>,
}

fn text_or_number<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    match serde_json::Value::deserialize(d)? {
        serde_json::Value::Null => Ok(None),
        serde_json::Value::String(s) => Ok(Some(s)),
        serde_json::Value::Number(n) => Ok(Some(n.to_string())),
        other => Err(serde::de::Error::custom(format!(
            "expected a string or a number, found {other}"
        ))),
    }
}

impl WalFetchSettings {
    /// The settings from the environment.
    pub fn from_env(env: &Env) -> Self {
        Self {
            namespace: env.optional(NAMESPACE_VAR),
            gcs_bucket: env.optional("BACKSTOP_GCS_BUCKET"),
            s3_bucket: env.optional("BACKSTOP_S3_BUCKET"),
            backup_key: env.optional(BACKUP_KEY_VAR),
            signing_public_key: env.optional(SIGNING_PUBLIC_KEY_VAR),
            system_identifier: None,
            prefetch: env.optional(WAL_FETCH_PREFETCH_VAR),
            pgdata: env.optional(super::config::PGDATA_VAR).map(PathBuf::from),
        }
    }

    /// These settings, with what they lack taken from `fallback`.
    pub fn or(self, fallback: Self) -> Self {
        Self {
            namespace: self.namespace.or(fallback.namespace),
            gcs_bucket: self.gcs_bucket.or(fallback.gcs_bucket),
            s3_bucket: self.s3_bucket.or(fallback.s3_bucket),
            backup_key: self.backup_key.or(fallback.backup_key),
            signing_public_key: self.signing_public_key.or(fallback.signing_public_key),
            system_identifier: self.system_identifier.or(fallback.system_identifier),
            prefetch: self.prefetch.or(fallback.prefetch),
            pgdata: self.pgdata.or(fallback.pgdata),
        }
    }
}

/// Everything one call needs.
#[derive(Debug, Clone)]
pub struct WalFetchConfig {
    /// The archive's namespace.
    pub namespace: Namespace,
    /// The cluster whose WAL is fetched.
    pub system_identifier: u64,
    /// Decrypts the files.
    pub secret_key: BackupSecretKey,
    /// Keys a manifest must be sealed with.
    pub signing_keys: Vec<VerifyingKey>,
    /// Segments fetched ahead (0: none).
    pub prefetch: usize,
    /// The data directory.
    pub pgdata: PathBuf,
}

impl WalFetchConfig {
    /// Checks the settings and loads the keys (`kms` unwraps a `gcpkms:`
    /// backup key); errors name the variable.
    pub async fn load(s: WalFetchSettings, kms: &dyn KeyUnwrap) -> Result<Self, ConfigError> {
        let namespace = crate::dump::namespace_setting(s.namespace)?;
        let pgdata = super::config::pgdata_setting(s.pgdata)?;
        Ok(Self {
            namespace,
            system_identifier: cluster_id(s.system_identifier.as_deref(), &pgdata)?,
            secret_key: backup_key(s.backup_key, kms).await?,
            signing_keys: signing_keys(s.signing_public_key).await?,
            prefetch: prefetch_count(s.prefetch.as_deref())?,
            pgdata,
        })
    }
}

/// The backup secret key, loaded as `backstop restore` loads it.
async fn backup_key(
    setting: Option<String>,
    kms: &dyn KeyUnwrap,
) -> Result<BackupSecretKey, ConfigError> {
    let text = setting
        .filter(|k| !k.trim().is_empty())
        .ok_or_else(|| missing(BACKUP_KEY_VAR, hint::BACKUP_KEY))?;
    let bad = |e: CryptoError| invalid(BACKUP_KEY_VAR, &shown_key_setting(&text), e.to_string());
    let source: KeySource = text.parse().map_err(bad)?;
    BackupSecretKey::load(&source, kms).await.map_err(bad)
}

/// The signing public keys, read by the core's loader of the variable.
async fn signing_keys(setting: Option<String>) -> Result<Vec<VerifyingKey>, ConfigError> {
    let Some(text) = setting.filter(|k| !k.trim().is_empty()) else {
        return Err(missing(SIGNING_PUBLIC_KEY_VAR, hint::SIGNING_PUBLIC_KEY));
    };
    let env = Env::from_pairs([(SIGNING_PUBLIC_KEY_VAR, text)]);
    backstop_core::trust::signing_keys_from_env(&env).await
}

/// `system_identifier` as given, else the one in `global/pg_control`.
fn cluster_id(given: Option<&str>, pgdata: &Path) -> Result<u64, ConfigError> {
    if let Some(t) = given.map(str::trim).filter(|t| !t.is_empty()) {
        return t.parse().map_err(|_| {
            invalid(
                "system_identifier",
                t,
                "give the cluster's system identifier, a decimal number (pg_controldata prints it)",
            )
        });
    }
    system_identifier(pgdata).map_err(|e| {
        let reason = match e {
            WalPushError::Read { error, .. } => error,
            other => other.to_string(),
        };
        invalid(
            super::config::PGDATA_VAR,
            &pgdata.display().to_string(),
            format!(
                "its global/pg_control cannot be read ({reason}); restore_command runs in the data directory: set {} to it, or give system_identifier in the --config file",
                super::config::PGDATA_VAR
            ),
        )
    })
}

/// `prefetch`: 0 (off) to [`MAX_PREFETCH`], default [`DEFAULT_PREFETCH`].
fn prefetch_count(text: Option<&str>) -> Result<usize, ConfigError> {
    let Some(t) = text.map(str::trim).filter(|t| !t.is_empty()) else {
        return Ok(DEFAULT_PREFETCH);
    };
    match t.parse::<usize>() {
        Ok(n) if n <= MAX_PREFETCH => Ok(n),
        _ => Err(invalid(
            WAL_FETCH_PREFETCH_VAR,
            t,
            format!("give a whole number from 0 (no prefetch) to {MAX_PREFETCH}"),
        )),
    }
}

// ---- one file ------------------------------------------------------------

/// What one cloud answered for one file.
#[derive(Debug, Clone)]
enum Miss {
    /// The sealed manifest does not exist there.
    NotFound,
    /// The store did not answer (network, timeout, 5xx).
    Unreachable(String),
    /// The store refused (permissions, credentials, bucket).
    Failed(String),
    /// Its copy fails verification (manifest or data).
    Refused(String),
}

impl fmt::Display for Miss {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Miss::NotFound => f.write_str("not found"),
            Miss::Unreachable(e) => write!(f, "unreachable: {e}"),
            Miss::Failed(e) => write!(f, "failed: {e}"),
            Miss::Refused(e) => write!(f, "its copy fails verification: {e}"),
        }
    }
}

impl Miss {
    fn from_store(e: StoreError) -> Self {
        match e {
            StoreError::NotFound { .. } => Miss::NotFound,
            e if e.is_transient() => Miss::Unreachable(e.to_string()),
            e => Miss::Failed(e.to_string()),
        }
    }

    /// An error from the data stream: a store failure, or verification.
    fn from_stream(e: std::io::Error) -> Self {
        if StoreError::io_is_transient(&e) {
            Miss::Unreachable(e.to_string())
        } else {
            Miss::Refused(CryptoError::from_io(e).to_string())
        }
    }
}

/// Why one cloud's attempt ended: that cloud's miss, or a failure no other
/// cloud can mend.
enum Failure {
    Miss(Miss),
    Fatal(WalFetchError),
}

impl From<Miss> for Failure {
    fn from(m: Miss) -> Self {
        Failure::Miss(m)
    }
}

/// A file verified and decrypted into a temporary file, not yet in place.
pub(crate) struct Verified {
    pub(crate) tmp: TempFile,
    pub(crate) manifest: WalManifest,
    pub(crate) cloud: &'static str,
    /// Why the primary was not used.
    pub(crate) fallback_reason: Option<String>,
}

/// Fetches files for one call: the clouds, the settings, and what this
/// call learned about the primary (unreachable: later files skip it).
pub(crate) struct Fetcher<'a> {
    pub(crate) clouds: Clouds<'a>,
    pub(crate) config: &'a WalFetchConfig,
    primary_down: AtomicBool,
}

impl<'a> Fetcher<'a> {
    pub(crate) fn new(clouds: Clouds<'a>, config: &'a WalFetchConfig) -> Self {
        Self {
            clouds,
            config,
            primary_down: AtomicBool::new(false),
        }
    }

    /// The key of `file` in this archive.
    pub(crate) fn key(&self, file: WalFile) -> WalKey {
        let c = self.config;
        WalKey::new(c.namespace.clone(), c.system_identifier, file)
    }

    /// `key`'s file, verified, in a temporary file in `dir`: GCS first,
    /// then S3. `manifest_seen` gets the plaintext size of the first
    /// manifest that opens (the segment size, for the prefetch).
    pub(crate) async fn fetch(
        &self,
        key: &WalKey,
        dir: &Path,
        mut manifest_seen: Option<tokio::sync::oneshot::Sender<u64>>,
    ) -> Result<Verified, WalFetchError> {
        let mut tried: Vec<(&'static str, Miss)> = Vec::new();
        let clouds = [("gcs", self.clouds.primary), ("s3", self.clouds.replica)];
        for (cloud, store) in clouds {
            let Some(store) = store else { continue };
            if cloud == "gcs" && self.primary_down.load(Ordering::Relaxed) {
                tried.push((cloud, Miss::Unreachable("earlier in this call".into())));
                continue;
            }
            match self.try_cloud(store, key, dir, &mut manifest_seen).await {
                Ok((tmp, manifest)) => {
                    let fallback_reason = (!tried.is_empty()).then(|| describe(&tried));
                    if let Some(reason) = &fallback_reason {
                        tracing::warn!(file = %key.file, cloud, reason = %reason, "fetched from the replica");
                    }
                    return Ok(Verified {
                        tmp,
                        manifest,
                        cloud,
                        fallback_reason,
                    });
                }
                Err(Failure::Fatal(e)) => return Err(e),
                Err(Failure::Miss(miss)) => {
                    tracing::warn!(file = %key.file, cloud, error = %miss, "this cloud did not deliver the file");
                    let stop = cloud == "gcs" && matches!(miss, Miss::NotFound);
                    if cloud == "gcs" && matches!(miss, Miss::Unreachable(_)) {
                        self.primary_down.store(true, Ordering::Relaxed);
                    }
                    tried.push((cloud, miss));
                    if stop {
                        break; // GCS, the primary, answered: not archived
                    }
                }
            }
        }
        Err(conclude(key, tried))
    }

    /// One cloud's copy: manifest, key check, data, digests.
    async fn try_cloud(
        &self,
        store: &dyn ObjectStore,
        key: &WalKey,
        dir: &Path,
        manifest_seen: &mut Option<tokio::sync::oneshot::Sender<u64>>,
    ) -> Result<(TempFile, WalManifest), Failure> {
        let sealed = store
            .get_bytes(&key.manifest_key(), MAX_MANIFEST_BYTES)
            .await
            .map_err(Miss::from_store)?;
        let m = WalManifest::open(&sealed, &self.config.signing_keys, key).map_err(|e| {
            Miss::Refused(format!("the sealed manifest {}: {e}", key.manifest_key()))
        })?;
        check_key(&self.config.secret_key, key, &m)?;
        if let Some(tx) = manifest_seen.take() {
            let _ = tx.send(m.plaintext_size);
        }
        let mut tmp = TempFile::create(dir, key.file.name())
            .map_err(|e| Failure::Fatal(WalFetchError::local(dir, e)))?;
        self.download(store, key, &m, &mut tmp).await?;
        Ok((tmp, m))
    }

    /// Streams the data object through the chunk gate and decryption into
    /// `tmp`, then checks the plaintext against the manifest.
    async fn download(
        &self,
        store: &dyn ObjectStore,
        key: &WalKey,
        m: &WalManifest,
        tmp: &mut TempFile,
    ) -> Result<(), Failure> {
        let data_key = m.data_key(key);
        let body = store.read(&data_key).await.map_err(|e| match e {
            StoreError::NotFound { .. } => Miss::Refused(format!(
                "its manifest names {data_key}, which does not exist"
            )),
            e => Miss::from_store(e),
        })?;
        let gated = chunks::authenticated(body, &m.ciphertext)
            .map_err(|e| Miss::Refused(format!("{data_key}: {e}")))?;
        let mut plain =
            decrypt_stream_sized(gated, &self.config.secret_key, Some(m.plaintext_size));
        let (mut hasher, mut size) = (Sha256::new(), 0u64);
        let path = tmp.path().to_path_buf();
        let local = |e: std::io::Error| Failure::Fatal(WalFetchError::local(&path, e));
        let mut file = tmp.writer().map_err(local)?;
        while let Some(item) = plain.next().await {
            let chunk = item.map_err(|e| match Miss::from_stream(e) {
                Miss::Refused(r) => Miss::Refused(format!("{data_key}: {r}")),
                other => other,
            })?;
            hasher.update(&chunk);
            size += chunk.len() as u64;
            file.write_all(&chunk).await.map_err(local)?;
        }
        let sha256 = hex::encode(hasher.finalize());
        if size != m.plaintext_size || !sha256.eq_ignore_ascii_case(&m.plaintext_sha256) {
            return Err(Miss::Refused(format!(
                "{data_key} decrypted to {size} bytes with SHA-256 {sha256}; the signed manifest records {} bytes with SHA-256 {}",
                m.plaintext_size, m.plaintext_sha256
            ))
            .into());
        }
        file.flush().await.map_err(local)?;
        file.sync_all().await.map_err(local)?;
        Ok(())
    }
}

/// A backup key that is none of the manifest's recipients: no cloud's
/// copy can help.
fn check_key(secret: &BackupSecretKey, key: &WalKey, m: &WalManifest) -> Result<(), Failure> {
    let held = secret.decryption_fingerprints();
    let matches = |r: &String| held.iter().any(|h| h.eq_ignore_ascii_case(r));
    if m.recipients.is_empty() || m.recipients.iter().any(matches) {
        return Ok(());
    }
    Err(Failure::Fatal(WalFetchError::WrongKey {
        file: key.file.to_string(),
        recipients: m.recipients.join(", "),
        held: held.join(", "),
    }))
}

fn describe(tried: &[(&'static str, Miss)]) -> String {
    let parts: Vec<String> = tried.iter().map(|(c, m)| format!("{c}: {m}")).collect();
    parts.join("; ")
}

/// The error once no cloud delivered: not archived only when the primary
/// said so, or was unreachable (or not configured) and the replica said so.
fn conclude(key: &WalKey, tried: Vec<(&'static str, Miss)>) -> WalFetchError {
    let file = key.file.to_string();
    let not_found = |c: &str| {
        tried
            .iter()
            .any(|(t, m)| *t == c && matches!(m, Miss::NotFound))
    };
    let gcs_silent = tried
        .iter()
        .all(|(t, m)| *t != "gcs" || matches!(m, Miss::Unreachable(_)));
    if not_found("gcs") || (gcs_silent && not_found("s3")) {
        return WalFetchError::NotArchived {
            file,
            tried: describe(&tried),
        };
    }
    let advice = if tried.iter().any(|(_, m)| matches!(m, Miss::Refused(_))) {
        "A copy that fails verification was modified, corrupted or misplaced: do not skip it; find out what changed it (the retention audit's wal_invalid) and restore the object from an intact copy before recovering past it"
    } else if tried.is_empty() {
        "No cloud is configured: set gcs_bucket and/or s3_bucket (BACKSTOP_GCS_BUCKET, BACKSTOP_S3_BUCKET)"
    } else {
        "Check the network, credentials and buckets of both clouds (BACKSTOP_CONNECT_TIMEOUT / BACKSTOP_REQUEST_TIMEOUT for slow links), then start the server again: recovery continues where it stopped"
    };
    WalFetchError::Unavailable {
        file,
        tried: describe(&tried),
        advice,
    }
}

// ---- the call --------------------------------------------------------------

/// What one call did (printed as JSON, one line).
#[derive(Debug, Clone, Serialize)]
pub struct FetchReport {
    /// The file PostgreSQL asked for.
    pub file: String,
    /// `fetched`, or `prefetched` when an earlier call had fetched it.
    pub outcome: String,
    /// The cloud it came from (`local` when prefetched).
    pub cloud: String,
    /// Why the primary was not used.
    pub fallback_reason: Option<String>,
    /// Its size.
    pub bytes: u64,
    /// Segments fetched ahead in this call.
    pub ahead: Vec<AheadResult>,
    /// Wall time of the call.
    pub seconds: f64,
}

/// Fetches `name` (`%f`) into `dest` (`%p`, relative to the working
/// directory), and the next segments into the prefetch directory.
pub async fn fetch_call(
    clouds: Clouds<'_>,
    config: &WalFetchConfig,
    name: &str,
    dest: &Path,
) -> Result<FetchReport, WalFetchError> {
    let started = Instant::now();
    let file = WalFile::parse(name).map_err(|e| WalFetchError::NotAWalFile(e.to_string()))?;
    let fetcher = Fetcher::new(clouds, config);
    let key = fetcher.key(file.clone());
    let dest_dir = match dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let ahead_dir = (file.is_segment() && config.prefetch > 0)
        .then(|| prefetch::dir_for(&dest_dir, &config.pgdata))
        .flatten();
    let report = |outcome: &str, cloud: &str, reason, bytes, ahead| FetchReport {
        file: name.to_string(),
        outcome: outcome.into(),
        cloud: cloud.into(),
        fallback_reason: reason,
        bytes,
        ahead,
        seconds: started.elapsed().as_secs_f64(),
    };
    if let Some(dir) = &ahead_dir {
        prefetch::remove_stale(dir, &dest_dir, &file);
        if let Some(bytes) = prefetch::take(dir, &key, config, dest)? {
            return Ok(report("prefetched", "local", None, bytes, Vec::new()));
        }
    }
    let (seen_tx, seen_rx) = tokio::sync::oneshot::channel();
    let mine = async {
        let v = fetcher.fetch(&key, &dest_dir, Some(seen_tx)).await?;
        let done = (v.cloud, v.fallback_reason, v.manifest.plaintext_size);
        v.tmp
            .persist(dest)
            .map_err(|e| WalFetchError::local(dest, e))?;
        Ok::<_, WalFetchError>(done)
    };
    let ahead = async {
        match (&ahead_dir, seen_rx.await) {
            (Some(dir), Ok(segment_size)) => {
                prefetch::fetch_ahead(&fetcher, &file, segment_size, dir).await
            }
            _ => Vec::new(),
        }
    };
    let (mine, ahead) = tokio::join!(mine, ahead);
    let (cloud, reason, bytes) = mine?;
    Ok(report("fetched", cloud, reason, bytes, ahead))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_tell_not_archived_from_everything_else() {
        let not = WalFetchError::NotArchived {
            file: "f".into(),
            tried: "gcs: not found".into(),
        };
        assert_eq!(not.exit_code(), 1);
        let local = WalFetchError::Local {
            path: "p".into(),
            error: "disk full".into(),
        };
        assert_eq!(local.exit_code(), 126);
        let cfg: WalFetchError = ConfigError::missing(BACKUP_KEY_VAR, "x").into();
        assert_eq!(cfg.exit_code(), 126);
    }

    #[test]
    fn only_the_primary_or_a_replica_behind_a_silent_primary_decides_not_archived() {
        let key = WalKey::new(
            Namespace::new("production").unwrap(),
            1,
            WalFile::parse("000000010000000000000001").unwrap(),
        );
        let down = || Miss::Unreachable("refused".into());
        let refused = || Miss::Refused("chunk 0".into());
        let code = |tried: Vec<(&'static str, Miss)>| conclude(&key, tried).exit_code();
        assert_eq!(code(vec![("gcs", Miss::NotFound)]), 1);
        assert_eq!(code(vec![("gcs", down()), ("s3", Miss::NotFound)]), 1);
        assert_eq!(code(vec![("s3", Miss::NotFound)]), 1);
        assert_eq!(code(vec![("gcs", down()), ("s3", down())]), 126);
        assert_eq!(code(vec![("gcs", refused()), ("s3", Miss::NotFound)]), 126);
        assert_eq!(
            code(vec![
                ("gcs", Miss::Failed("403".into())),
                ("s3", Miss::NotFound)
            ]),
            126
        );
        assert_eq!(code(vec![]), 126);
    }

    #[test]
    fn the_file_wins_over_the_environment() {
        let text =
            r#"{"namespace":"staging","system_identifier":7312345678901234567,"prefetch":3}"#;
        let file: WalFetchSettings = serde_json::from_str(text).unwrap();
        let env = Env::from_pairs([
            (NAMESPACE_VAR, "production"),
            (BACKUP_KEY_VAR, "file:/k.asc"),
            (WAL_FETCH_PREFETCH_VAR, "9"),
        ]);
        let merged = file.or(WalFetchSettings::from_env(&env));
        assert_eq!(merged.namespace.as_deref(), Some("staging"));
        assert_eq!(merged.prefetch.as_deref(), Some("3"));
        assert_eq!(merged.backup_key.as_deref(), Some("file:/k.asc"));
        let sysid = merged.system_identifier.as_deref();
        assert_eq!(sysid, Some("7312345678901234567"));
        assert!(prefetch_count(Some("65")).is_err());
        assert_eq!(prefetch_count(None).unwrap(), DEFAULT_PREFETCH);
        assert_eq!(prefetch_count(Some("0")).unwrap(), 0);
    }
}
