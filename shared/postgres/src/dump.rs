//! The dump job: `pg_dump -Fc` streamed through encryption into the backups
//! bucket, then the signed manifest (the commit marker).
//!
//! ```text
//! snapshot (repeatable read, exported, row counts) ──▶ pg_dump -Fc --snapshot
//!   ──▶ encrypt_stream (recipients' public keys) ──▶ put data.pgdump.pgp (create-only)
//!   ──▶ sign manifest ──▶ put manifest.json.sig ──▶ put manifest.json (commit marker)
//! ```
//!
//! Dump, encryption and upload overlap; memory stays bounded whatever the
//! database size. The job only ever calls [`ObjectStore::put`]: it never
//! reads, lists or deletes backups, touches no S3 and holds no decryption
//! secret (recipients are public keys; the signing key is its only secret).
//!
//! Failures: when `pg_dump` exits non-zero, the database goes away mid-dump,
//! encryption fails or the data upload fails for good, no signature and no
//! manifest are written and the error says what failed. Whatever partial
//! object may exist is left for retention to clean up (a backup without a
//! manifest is incomplete and is never replicated or restored).
//!
//! Retries: the data goes up as one streaming resumable upload; when its
//! request fails, the GCS client resumes it from the bytes the server kept,
//! replaying up to the last 16 MiB sent (the data stream comes from a running
//! `pg_dump` and cannot be rewound further). A data upload that still fails
//! fails the job, and the scheduler runs it again. The small signature and manifest uploads are retried here with
//! backoff on transient errors ([`RetryPolicy`]).

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use futures::StreamExt;
use serde::Serialize;

use crate::pg::{self, ExportedSnapshot, PgError, PgTools};
use backstop_core::config::{ConfigError, Env};
use backstop_core::crypto::{
    Compression, CryptoError, KeySource, KeyUnwrap, RecipientKey, SigningKey, encrypt_stream_with,
    sign_manifest,
};
use backstop_core::manifest::{CiphertextInfo, Manifest};
use backstop_core::naming::{BackupId, DATA_FILE, NameError, Namespace};
use backstop_core::store::{ByteStream, ObjectStore, PutOptions, StoreError, byte_stream};

pub const DATABASE_URL_VAR: &str = "BACKSTOP_DATABASE_URL";
pub const NAMESPACE_VAR: &str = "BACKSTOP_NAMESPACE";
pub const RECIPIENTS_VAR: &str = "BACKSTOP_RECIPIENTS";
pub const SIGNING_KEY_VAR: &str = "BACKSTOP_SIGNING_KEY";
pub const PG_BINDIR_VAR: &str = "BACKSTOP_PG_BINDIR";
pub const DEFAULT_NAMESPACE: &str = "production";

/// Backoff for the signature and manifest uploads (small, replayable).
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Attempts in total (1 = no retry).
    pub attempts: u32,
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            attempts: 5,
            initial_backoff: Duration::from_millis(250),
            max_backoff: Duration::from_secs(8),
        }
    }
}

/// Everything one dump needs. Built by [`DumpConfig::load`] from settings
/// (command line / environment) or directly by tests.
#[derive(Debug, Clone)]
pub struct DumpConfig {
    /// `postgres://user[:password]@host:port/dbname` (never logged unredacted).
    pub database_url: String,
    pub namespace: Namespace,
    pub tools: PgTools,
    /// Public keys the data is encrypted to (at least one).
    pub recipients: Vec<RecipientKey>,
    /// Signs the manifest; the job's only secret.
    pub signing_key: SigningKey,
    pub retry: RetryPolicy,
}

/// Raw settings, as given on the command line or in the environment.
/// [`DumpConfig::load`] validates them; errors name the variable.
#[derive(Debug, Clone, Default)]
pub struct DumpSettings {
    /// `BACKSTOP_DATABASE_URL`
    pub database_url: Option<String>,
    /// `BACKSTOP_NAMESPACE` (default `production`)
    pub namespace: Option<String>,
    /// `BACKSTOP_RECIPIENTS`: one or more key settings, comma-separated
    /// (`file:/path/backup.pub.asc`, or armored public key text).
    pub recipients: Option<String>,
    /// `BACKSTOP_SIGNING_KEY`: a key setting (`file:`, `gcpkms:`, armored).
    pub signing_key: Option<String>,
    /// `BACKSTOP_PG_BINDIR` (else `PG_BINDIR`, else `PATH`).
    pub pg_bindir: Option<PathBuf>,
}

impl DumpSettings {
    /// The settings from environment variables.
    pub fn from_env(env: &Env) -> Self {
        Self {
            database_url: env.optional(DATABASE_URL_VAR),
            namespace: env.optional(NAMESPACE_VAR),
            recipients: env.optional(RECIPIENTS_VAR),
            signing_key: env.optional(SIGNING_KEY_VAR),
            pg_bindir: env
                .optional(PG_BINDIR_VAR)
                .or_else(|| env.optional("PG_BINDIR"))
                .map(PathBuf::from),
        }
    }
}

fn missing(name: &str, hint: &str) -> ConfigError {
    ConfigError::Missing {
        name: name.into(),
        hint: hint.into(),
    }
}

fn invalid(name: &str, value: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError::invalid(name, value, reason)
}

/// Splits a comma-separated list of key settings. Armored key text may
/// itself contain commas (in `Comment:` headers), so an armored block is
/// taken whole, up to its `-----END PGP ...-----` line.
pub fn split_key_settings(list: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = list.trim_start_matches(|c: char| c == ',' || c.is_whitespace());
    while !rest.is_empty() {
        let end = if rest.starts_with("-----BEGIN PGP") {
            rest.find("-----END PGP")
                .and_then(|i| rest[i + 5..].find("-----").map(|j| i + 5 + j + 5))
                .unwrap_or(rest.len())
        } else {
            rest.find(',').unwrap_or(rest.len())
        };
        let item = rest[..end].trim();
        if !item.is_empty() {
            out.push(item.to_string());
        }
        rest = rest[end..].trim_start_matches(|c: char| c == ',' || c.is_whitespace());
    }
    out
}

/// Whether `bytes` hold secret key material (armored or binary): the dump
/// job must never be given a decryption secret.
fn holds_secret_key(bytes: &[u8]) -> bool {
    let armored =
        String::from_utf8_lossy(&bytes[..bytes.len().min(64 * 1024)]).contains("PRIVATE KEY BLOCK");
    // Binary: first packet tag 5 (secret key), old or new packet format.
    let binary = match bytes.first() {
        Some(&b) if b & 0xC0 == 0xC0 => b & 0x3F == 5,
        Some(&b) if b & 0xC0 == 0x80 => (b >> 2) & 0x0F == 5,
        _ => false,
    };
    armored || binary
}

impl DumpConfig {
    /// Validates settings and loads the keys. Errors name the variable.
    pub async fn load(settings: DumpSettings, kms: &dyn KeyUnwrap) -> Result<Self, ConfigError> {
        let database_url = settings.database_url.filter(|s| !s.trim().is_empty()).ok_or_else(|| {
            missing(
                DATABASE_URL_VAR,
                "the database to dump, postgres://user@host:port/dbname (or pass --database-url)",
            )
        })?;
        let database = pg::database_name(&database_url).map_err(|e| {
            invalid(
                DATABASE_URL_VAR,
                &pg::redact_url(&database_url),
                e.to_string(),
            )
        })?;
        // The name must be usable in object names: check it now, not after a
        // snapshot was taken.
        BackupId::new(
            Namespace::new(DEFAULT_NAMESPACE).expect("valid"),
            &database,
            Utc::now(),
        )
        .map_err(|e| {
            invalid(
                DATABASE_URL_VAR,
                &pg::redact_url(&database_url),
                e.to_string(),
            )
        })?;

        let ns = settings.namespace.filter(|s| !s.trim().is_empty());
        let ns_text = ns
            .as_deref()
            .unwrap_or(DEFAULT_NAMESPACE)
            .trim()
            .to_string();
        let namespace = Namespace::new(&ns_text)
            .map_err(|e| invalid(NAMESPACE_VAR, &ns_text, e.to_string()))?;

        let recipients_text = settings.recipients.filter(|s| !s.trim().is_empty()).ok_or_else(|| {
            missing(
                RECIPIENTS_VAR,
                "the backup public key(s) to encrypt to: file:/path/backup.pub.asc or armored key text, comma-separated",
            )
        })?;
        let signing_text = settings.signing_key.filter(|s| !s.trim().is_empty()).ok_or_else(|| {
            missing(
                SIGNING_KEY_VAR,
                "the manifest signing secret key: file:/path/signing.sec.asc or gcpkms:projects/P/locations/L/keyRings/R/cryptoKeys/K:/path/signing.sec.asc.kms",
            )
        })?;

        let mut recipients = Vec::new();
        for setting in split_key_settings(&recipients_text) {
            let shown = if setting.starts_with("-----") {
                "(inline key)".to_string()
            } else {
                setting.clone()
            };
            let bad = |e: CryptoError| invalid(RECIPIENTS_VAR, &shown, e.to_string());
            let source: KeySource = setting.parse().map_err(bad)?;
            let bytes = source.read(kms).await.map_err(bad)?;
            if holds_secret_key(&bytes) {
                return Err(invalid(
                    RECIPIENTS_VAR,
                    &shown,
                    "this is a SECRET key; the dump job encrypts to public keys only and must not hold a decryption key (use the *.pub.asc file)",
                ));
            }
            recipients.push(RecipientKey::from_bytes(&source.to_string(), &bytes).map_err(bad)?);
        }
        if recipients.is_empty() {
            return Err(invalid(
                RECIPIENTS_VAR,
                &recipients_text,
                "no key settings found",
            ));
        }

        let signing_shown = if signing_text.trim_start().starts_with("-----") {
            "(inline key)".to_string()
        } else {
            signing_text.clone()
        };
        let bad = |e: CryptoError| invalid(SIGNING_KEY_VAR, &signing_shown, e.to_string());
        let source: KeySource = signing_text.parse().map_err(bad)?;
        let signing_key = SigningKey::load(&source, kms).await.map_err(bad)?;

        Ok(Self {
            database_url,
            namespace,
            tools: PgTools {
                bindir: settings.pg_bindir,
            },
            recipients,
            signing_key,
            retry: RetryPolicy::default(),
        })
    }
}

/// The result of a successful dump (the CLI prints it as JSON).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DumpSummary {
    pub backup_id: String,
    pub namespace: String,
    pub database: String,
    pub store: String,
    pub data_object: String,
    pub signature_object: String,
    pub manifest_object: String,
    pub server_version: String,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    pub duration_secs: f64,
    pub plaintext_bytes: u64,
    pub ciphertext_bytes: u64,
    pub ciphertext_sha256: String,
    pub ciphertext_crc32c: u32,
    /// Ciphertext megabytes (10^6 bytes) uploaded per second of the whole job.
    pub throughput_mb_s: f64,
    pub tables: usize,
    pub rows: u64,
    pub recipients: Vec<String>,
    pub signer: String,
}

#[derive(Debug, thiserror::Error)]
pub enum DumpError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("cannot name a backup of database {database:?}: {error}")]
    Name { database: String, error: NameError },
    #[error(
        "could not take a snapshot of database {database} ({url}): {error}; nothing was written"
    )]
    Snapshot {
        database: String,
        url: String,
        error: PgError,
    },
    #[error(
        "could not count the rows of database {database} in the dump's snapshot: {error}; the backup {backup_id} is incomplete: no manifest was written (its data object is left for retention)"
    )]
    RowCounts {
        database: String,
        backup_id: String,
        error: PgError,
    },
    #[error("could not start pg_dump: {error}; nothing was written")]
    PgDumpStart { error: PgError },
    #[error(
        "pg_dump of database {database} failed: {message}; the backup {backup_id} is incomplete: no manifest was written (a partial data object, if any, is left for retention)"
    )]
    PgDump {
        database: String,
        backup_id: String,
        message: String,
    },
    #[error("encrypting the dump failed: {error}; no manifest was written for {backup_id}")]
    Encrypt {
        backup_id: String,
        error: CryptoError,
    },
    #[error(
        "upload of the data object {key} failed: {error}; no manifest was written (a partial data object, if any, is left for retention). The dump stream cannot be replayed, so the job fails; run it again"
    )]
    Upload { key: String, error: StoreError },
    #[error("the data object {key} is inconsistent: {reason}; no manifest was written")]
    Inconsistent { key: String, reason: String },
    #[error("signing the manifest of {backup_id} failed: {error}; no manifest was written")]
    Sign {
        backup_id: String,
        error: CryptoError,
    },
    #[error(
        "writing {key} failed: {error}; the data object is complete but the backup has no manifest, so it stays incomplete (run the job again)"
    )]
    Commit { key: String, error: StoreError },
}

impl DumpError {
    /// Whether running the job again may succeed without a change of
    /// configuration (a scheduler's retry decision).
    pub fn is_transient(&self) -> bool {
        match self {
            DumpError::Upload { error, .. } | DumpError::Commit { error, .. } => {
                error.is_transient()
            }
            DumpError::Snapshot { error, .. } => matches!(error, PgError::Connect { .. }),
            DumpError::PgDump { .. } | DumpError::RowCounts { .. } => true,
            _ => false,
        }
    }

    /// A short name of what failed, for the failure log line.
    pub fn stage(&self) -> &'static str {
        match self {
            DumpError::Config(_) | DumpError::Name { .. } => "config",
            DumpError::Snapshot { .. } | DumpError::RowCounts { .. } => "snapshot",
            DumpError::PgDumpStart { .. } | DumpError::PgDump { .. } => "pg_dump",
            DumpError::Encrypt { .. } => "encrypt",
            DumpError::Upload { .. } | DumpError::Inconsistent { .. } => "upload",
            DumpError::Sign { .. } => "sign",
            DumpError::Commit { .. } => "commit",
        }
    }
}

/// What became of the `pg_dump` output stream, seen from inside it.
#[derive(Debug, Clone, Default)]
enum SourceState {
    #[default]
    Running,
    Ended,
    Failed(String),
}

/// Passes `input` through, recording whether it ended cleanly or failed, so
/// that a failed upload can be blamed on the right party and no upload is
/// ever committed unless the dump itself ended cleanly.
fn watch(input: ByteStream) -> (ByteStream, Arc<Mutex<SourceState>>) {
    let state = Arc::new(Mutex::new(SourceState::Running));
    let on_item = state.clone();
    let on_end = state.clone();
    let body = input.map(move |item| {
        if let Err(e) = &item {
            *on_item.lock().expect("source state") = SourceState::Failed(e.to_string());
        }
        item
    });
    let end = futures::stream::once(async move {
        let mut s = on_end.lock().expect("source state");
        if matches!(*s, SourceState::Running) {
            *s = SourceState::Ended;
        }
        None
    });
    let stream = body.map(Some).chain(end).filter_map(|x| async move { x });
    (byte_stream(stream), state)
}

/// Puts a small object, retrying transient failures with backoff. A
/// create-only put that is refused after a transient failure means that an
/// earlier attempt landed (backup names are unique), so it counts as done.
async fn put_small(
    store: &dyn ObjectStore,
    key: &str,
    body: &[u8],
    content_type: &str,
    retry: RetryPolicy,
) -> Result<(), StoreError> {
    let body = bytes::Bytes::copy_from_slice(body);
    let mut backoff = retry.initial_backoff;
    let mut attempt = 1;
    loop {
        let opts = PutOptions::create().with_content_type(content_type);
        match store
            .put(key, backstop_core::store::bytes_stream(body.clone()), opts)
            .await
        {
            Ok(_) => return Ok(()),
            Err(StoreError::PreconditionFailed { .. }) if attempt > 1 => {
                tracing::warn!(
                    object = key,
                    attempt,
                    "object exists after a failed attempt: an earlier attempt landed"
                );
                return Ok(());
            }
            Err(e) if e.is_transient() && attempt < retry.attempts.max(1) => {
                tracing::warn!(object = key, attempt, error = %e, backoff_ms = backoff.as_millis() as u64, "transient upload failure, retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(retry.max_backoff);
                attempt += 1;
            }
            Err(e) => return Err(e),
        }
    }
}

/// Runs one dump into `store`: data, then signature, then manifest.
pub async fn run_dump(
    config: &DumpConfig,
    store: &dyn ObjectStore,
) -> Result<DumpSummary, DumpError> {
    let database = pg::database_name(&config.database_url).map_err(|e| ConfigError::Invalid {
        name: DATABASE_URL_VAR.into(),
        value: pg::redact_url(&config.database_url),
        reason: e.to_string(),
    })?;
    let result = dump_inner(config, store, &database).await;
    if let Err(e) = &result {
        tracing::error!(
            event = "dump_failed",
            namespace = %config.namespace,
            database = %database,
            store = %store.url(),
            stage = e.stage(),
            error = %e,
            "dump failed"
        );
    }
    result
}

async fn dump_inner(
    config: &DumpConfig,
    store: &dyn ObjectStore,
    database: &str,
) -> Result<DumpSummary, DumpError> {
    let clock = Instant::now();
    let started_at = Utc::now();
    let id = BackupId::new(config.namespace.clone(), database, started_at).map_err(|source| {
        DumpError::Name {
            database: database.to_string(),
            error: source,
        }
    })?;
    let data_key = id.data_key();

    let snapshot = ExportedSnapshot::take(&config.database_url)
        .await
        .map_err(|source| DumpError::Snapshot {
            database: database.to_string(),
            url: pg::redact_url(&config.database_url),
            error: source,
        })?;
    tracing::debug!(snapshot = %snapshot.id, "snapshot exported");

    let dump = pg::pg_dump_stream(&config.tools, &config.database_url, Some(&snapshot.id))
        .map_err(|source| DumpError::PgDumpStart { error: source })?;
    let (dump, source_state) = watch(dump);
    let encrypted =
        encrypt_stream_with(dump, &config.recipients, Compression::Zip).map_err(|source| {
            DumpError::Encrypt {
                backup_id: id.to_string(),
                error: source,
            }
        })?;
    // Counting rows in the snapshot overlaps with the dump instead of
    // delaying its start.
    let (put, tables) = tokio::join!(
        store.put(
            &data_key,
            encrypted.stream,
            PutOptions::create().with_content_type("application/octet-stream"),
        ),
        snapshot.row_counts(),
    );
    // pg_dump has finished (or was killed with the upload): the snapshot is
    // no longer needed.
    let pg_state = source_state.lock().expect("source state").clone();
    let server_version = snapshot.server_version.clone();
    if let Err(e) = snapshot.release().await {
        tracing::warn!(error = %e, "could not end the snapshot transaction (the dump is not affected)");
    }
    if let SourceState::Failed(message) = pg_state {
        return Err(DumpError::PgDump {
            database: database.to_string(),
            backup_id: id.to_string(),
            message,
        });
    }
    let meta = match put {
        Ok(meta) => meta,
        Err(StoreError::Source { source, .. }) => {
            return Err(DumpError::Encrypt {
                backup_id: id.to_string(),
                error: CryptoError::from_io(source),
            });
        }
        Err(source) => {
            return Err(DumpError::Upload {
                key: data_key,
                error: source,
            });
        }
    };
    let tables = tables.map_err(|source| DumpError::RowCounts {
        database: database.to_string(),
        backup_id: id.to_string(),
        error: source,
    })?;
    let inconsistent = |reason: String| DumpError::Inconsistent {
        key: data_key.clone(),
        reason,
    };
    if !matches!(pg_state, SourceState::Ended) {
        return Err(inconsistent(
            "the upload finished before pg_dump's output ended".into(),
        ));
    }
    let summary = encrypted
        .summary
        .get()
        .ok_or_else(|| inconsistent("the encryption did not report its digests".into()))?;
    if meta.size != summary.ciphertext.size {
        return Err(inconsistent(format!(
            "the store holds {} bytes, {} were encrypted",
            meta.size, summary.ciphertext.size
        )));
    }
    if let Some(crc) = meta.crc32c.filter(|&c| c != summary.ciphertext.crc32c) {
        return Err(inconsistent(format!(
            "the store reports CRC32C {crc:#010x}, the encrypted bytes have {:#010x}",
            summary.ciphertext.crc32c
        )));
    }

    let finished_at = Utc::now();
    let manifest = Manifest {
        server_version: server_version.clone(),
        started_at,
        finished_at,
        plaintext_size: summary.plaintext_size,
        ciphertext: CiphertextInfo {
            object: DATA_FILE.into(),
            size: summary.ciphertext.size,
            sha256: summary.ciphertext.sha256.clone(),
            crc32c: summary.ciphertext.crc32c,
        },
        recipients: summary.recipients.clone(),
        signer: config.signing_key.fingerprint(),
        tables,
        tool: format!("backstop {}", env!("CARGO_PKG_VERSION")),
        ..Manifest::of_backup(&id)
    };
    let (manifest_bytes, signature) =
        sign_manifest(&manifest, &config.signing_key).map_err(|source| DumpError::Sign {
            backup_id: id.to_string(),
            error: source,
        })?;
    let signature_key = id.signature_key();
    let manifest_key = id.manifest_key();
    put_small(
        store,
        &signature_key,
        signature.as_bytes(),
        "application/pgp-signature",
        config.retry,
    )
    .await
    .map_err(|source| DumpError::Commit {
        key: signature_key.clone(),
        error: source,
    })?;
    put_small(
        store,
        &manifest_key,
        &manifest_bytes,
        "application/json",
        config.retry,
    )
    .await
    .map_err(|source| DumpError::Commit {
        key: manifest_key.clone(),
        error: source,
    })?;

    let duration = clock.elapsed().as_secs_f64();
    let throughput = if duration > 0.0 {
        summary.ciphertext.size as f64 / 1e6 / duration
    } else {
        0.0
    };
    let result = DumpSummary {
        backup_id: id.to_string(),
        namespace: config.namespace.to_string(),
        database: database.to_string(),
        store: store.url(),
        data_object: data_key,
        signature_object: signature_key,
        manifest_object: manifest_key,
        server_version,
        started_at,
        finished_at: Utc::now(),
        duration_secs: (duration * 1000.0).round() / 1000.0,
        plaintext_bytes: summary.plaintext_size,
        ciphertext_bytes: summary.ciphertext.size,
        ciphertext_sha256: summary.ciphertext.sha256,
        ciphertext_crc32c: summary.ciphertext.crc32c,
        throughput_mb_s: (throughput * 100.0).round() / 100.0,
        tables: manifest.tables.len(),
        rows: manifest.tables.values().sum(),
        recipients: manifest.recipients,
        signer: manifest.signer,
    };
    tracing::info!(
        event = "dump_complete",
        namespace = %result.namespace,
        database = %result.database,
        backup_id = %result.backup_id,
        store = %result.store,
        plaintext_bytes = result.plaintext_bytes,
        ciphertext_bytes = result.ciphertext_bytes,
        duration_secs = result.duration_secs,
        throughput_mb_s = result.throughput_mb_s,
        tables = result.tables,
        rows = result.rows,
        data_object = %result.data_object,
        signature_object = %result.signature_object,
        manifest_object = %result.manifest_object,
        "dump complete"
    );
    Ok(result)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_settings_split_on_commas_but_keep_armor_whole() {
        let armored = "-----BEGIN PGP PUBLIC KEY BLOCK-----\nComment: a, b\n\nxjMEZ\n=abcd\n-----END PGP PUBLIC KEY BLOCK-----";
        let list = format!(" file:/a.asc ,{armored}, file:/b.asc,,");
        assert_eq!(
            split_key_settings(&list),
            vec![
                "file:/a.asc".to_string(),
                armored.to_string(),
                "file:/b.asc".to_string()
            ]
        );
        assert_eq!(split_key_settings("file:/only.asc"), vec!["file:/only.asc"]);
        assert!(split_key_settings(" , ").is_empty());
    }

    #[test]
    fn secret_keys_are_recognised() {
        assert!(holds_secret_key(b"-----BEGIN PGP PRIVATE KEY BLOCK-----\n"));
        assert!(!holds_secret_key(b"-----BEGIN PGP PUBLIC KEY BLOCK-----\n"));
        assert!(holds_secret_key(&[0xC5, 0x00]));
        assert!(holds_secret_key(&[0x95, 0x00]));
        assert!(!holds_secret_key(&[0xC6, 0x00]));
        assert!(!holds_secret_key(&[0x99, 0x00]));
    }

    #[tokio::test]
    async fn missing_settings_name_the_variable() {
        let kms = backstop_core::crypto::NoKms;
        let err = DumpConfig::load(DumpSettings::default(), &kms)
            .await
            .unwrap_err();
        assert!(err.to_string().contains(DATABASE_URL_VAR), "{err}");
        let s = DumpSettings {
            database_url: Some("postgres://u@h:5432/app".into()),
            ..Default::default()
        };
        let err = DumpConfig::load(s.clone(), &kms).await.unwrap_err();
        assert!(err.to_string().contains(RECIPIENTS_VAR), "{err}");
        let err = DumpConfig::load(
            DumpSettings {
                namespace: Some("Bad Name".into()),
                ..s.clone()
            },
            &kms,
        )
        .await
        .unwrap_err();
        assert!(err.to_string().contains(NAMESPACE_VAR), "{err}");
        let err = DumpConfig::load(
            DumpSettings {
                recipients: Some("file:/nonexistent/backup.pub.asc".into()),
                ..s.clone()
            },
            &kms,
        )
        .await
        .unwrap_err();
        assert!(err.to_string().contains(SIGNING_KEY_VAR), "{err}");
        let err = DumpConfig::load(
            DumpSettings {
                recipients: Some("file:/nonexistent/backup.pub.asc".into()),
                signing_key: Some("file:/nonexistent/signing.sec.asc".into()),
                ..s
            },
            &kms,
        )
        .await
        .unwrap_err();
        assert!(err.to_string().contains(RECIPIENTS_VAR), "{err}");
        assert!(
            err.to_string().contains("/nonexistent/backup.pub.asc"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn watch_records_clean_end_and_failure() {
        use futures::TryStreamExt;
        let (s, state) = watch(backstop_core::store::bytes_stream(vec![1u8; 10]));
        let v: Vec<bytes::Bytes> = s.try_collect().await.unwrap();
        assert_eq!(v.concat().len(), 10);
        assert!(matches!(*state.lock().unwrap(), SourceState::Ended));

        let failing = byte_stream(futures::stream::iter(vec![
            Ok(bytes::Bytes::from_static(b"abc")),
            Err(std::io::Error::other("pg_dump failed (exit status: 1)")),
        ]));
        let (s, state) = watch(failing);
        let r: Result<Vec<bytes::Bytes>, _> = s.try_collect().await;
        assert!(r.is_err());
        assert!(
            matches!(&*state.lock().unwrap(), SourceState::Failed(m) if m.contains("exit status: 1"))
        );
    }

    /// Fails the first `fail` puts with `error`, then succeeds or refuses.
    #[derive(Debug)]
    struct Flaky {
        fail: u32,
        transient: bool,
        then_exists: bool,
        calls: Mutex<u32>,
    }

    #[async_trait::async_trait]
    impl ObjectStore for Flaky {
        fn url(&self) -> String {
            "mem://flaky".into()
        }
        async fn put(
            &self,
            key: &str,
            _body: ByteStream,
            opts: PutOptions,
        ) -> backstop_core::store::StoreResult<backstop_core::store::ObjectMeta> {
            assert_eq!(opts.mode, backstop_core::store::PutMode::Create);
            let n = {
                let mut c = self.calls.lock().unwrap();
                *c += 1;
                *c
            };
            let (store, key) = ("mem://flaky".to_string(), key.to_string());
            if n <= self.fail {
                return Err(if self.transient {
                    StoreError::Transient {
                        store,
                        op: "put",
                        key,
                        message: "503".into(),
                    }
                } else {
                    StoreError::Permanent {
                        store,
                        op: "put",
                        key,
                        message: "403".into(),
                    }
                });
            }
            if self.then_exists {
                return Err(StoreError::PreconditionFailed { store, key });
            }
            Ok(Default::default())
        }
        async fn get(
            &self,
            _: &str,
        ) -> backstop_core::store::StoreResult<backstop_core::store::GetResult> {
            unreachable!("the dump job never reads")
        }
        async fn head(
            &self,
            _: &str,
        ) -> backstop_core::store::StoreResult<backstop_core::store::ObjectMeta> {
            unreachable!("the dump job never reads")
        }
        async fn list_page(
            &self,
            _: &str,
            _: Option<String>,
        ) -> backstop_core::store::StoreResult<backstop_core::store::ListPage> {
            unreachable!("the dump job never lists")
        }
        async fn delete(&self, _: &str) -> backstop_core::store::StoreResult<()> {
            unreachable!("the dump job never deletes")
        }
    }

    fn flaky(fail: u32, transient: bool, then_exists: bool) -> Flaky {
        Flaky {
            fail,
            transient,
            then_exists,
            calls: Mutex::new(0),
        }
    }

    const FAST: RetryPolicy = RetryPolicy {
        attempts: 4,
        initial_backoff: Duration::from_millis(1),
        max_backoff: Duration::from_millis(4),
    };

    #[tokio::test]
    async fn small_puts_retry_transient_errors_with_backoff() {
        let s = flaky(3, true, false);
        put_small(&s, "k", b"x", "application/json", FAST)
            .await
            .unwrap();
        assert_eq!(*s.calls.lock().unwrap(), 4);

        let s = flaky(4, true, false);
        let e = put_small(&s, "k", b"x", "application/json", FAST)
            .await
            .unwrap_err();
        assert!(e.is_transient());
        assert_eq!(
            *s.calls.lock().unwrap(),
            4,
            "gives up after the policy's attempts"
        );
    }

    #[tokio::test]
    async fn permanent_errors_are_not_retried() {
        let s = flaky(1, false, false);
        assert!(
            put_small(&s, "k", b"x", "application/json", FAST)
                .await
                .is_err()
        );
        assert_eq!(*s.calls.lock().unwrap(), 1);
    }

    #[tokio::test]
    async fn existing_object_after_a_lost_response_counts_as_written() {
        // First attempt "failed" (but landed), the retry finds the object.
        let s = flaky(1, true, true);
        put_small(&s, "k", b"x", "application/json", FAST)
            .await
            .unwrap();
        // On the first attempt, an existing object is a real collision.
        let s = flaky(0, true, true);
        assert!(matches!(
            put_small(&s, "k", b"x", "application/json", FAST).await,
            Err(StoreError::PreconditionFailed { .. })
        ));
    }
}
