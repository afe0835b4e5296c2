//! One dump from start to finish: snapshot, `pg_dump` through encryption
//! into the data object, checks, manifest, signature, commit. Each step is
//! a method of [`Job`], which also names the step's failures, so the order
//! of the steps reads in one short function.

use std::collections::BTreeMap;
use std::time::Instant;

use chrono::{DateTime, Utc};
use serde::Serialize;

use backstop_core::crypto::{
    CryptoError, EncryptSummary, SummaryHandle, encrypt_stream_with, sign_manifest,
};
use backstop_core::manifest::Manifest;
use backstop_core::naming::{BackupId, DATA_FILE};
use backstop_core::store::{ObjectMeta, ObjectStore, PutOptions, StoreError};

use super::config::{DATABASE_URL_VAR, DumpConfig};
use super::error::DumpError;
use super::upload::{SourceState, put_small, watch};
use crate::invalid;
use crate::pg;
use crate::server::ExportedSnapshot;

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

/// Runs one dump into `store`: data, then signature, then manifest.
pub async fn run_dump(
    config: &DumpConfig,
    store: &dyn ObjectStore,
) -> Result<DumpSummary, DumpError> {
    let database = pg::database_name(&config.database_url).map_err(|e| {
        invalid(
            DATABASE_URL_VAR,
            &pg::redact_url(&config.database_url),
            e.to_string(),
        )
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
    let id = BackupId::new(config.namespace.clone(), database, started_at).map_err(|error| {
        DumpError::Name {
            database: database.to_string(),
            error,
        }
    })?;
    let job = Job {
        config,
        store,
        database,
        data_key: id.data_key(),
        id,
    };
    let snapshot = job.take_snapshot().await?;
    let data = job.upload_data(snapshot).await?;
    let manifest = job.manifest(started_at, &data);
    let (signature_key, manifest_key) = job.commit(&manifest).await?;
    let result = job.summary(clock, &manifest, data.summary, signature_key, manifest_key);
    log_complete(&result);
    Ok(result)
}

/// One dump in progress: what every step needs, and names its failures
/// with.
struct Job<'a> {
    config: &'a DumpConfig,
    store: &'a dyn ObjectStore,
    database: &'a str,
    id: BackupId,
    data_key: String,
}

/// The data object, uploaded and checked, and what was read in the
/// snapshot alongside.
struct UploadedData {
    summary: EncryptSummary,
    tables: BTreeMap<String, u64>,
    server_version: String,
}

impl Job<'_> {
    async fn take_snapshot(&self) -> Result<ExportedSnapshot, DumpError> {
        let snapshot = ExportedSnapshot::take(&self.config.database_url)
            .await
            .map_err(|error| DumpError::Snapshot {
                database: self.database.to_string(),
                url: pg::redact_url(&self.config.database_url),
                error,
            })?;
        tracing::debug!(snapshot = %snapshot.id, "snapshot exported");
        Ok(snapshot)
    }

    /// `pg_dump` in `snapshot`, encrypted, into the data object; the row
    /// counts are read in the same snapshot meanwhile. The snapshot is
    /// released when `pg_dump` is done with it.
    async fn upload_data(&self, snapshot: ExportedSnapshot) -> Result<UploadedData, DumpError> {
        let config = self.config;
        let dump = pg::pg_dump_stream(&config.tools, &config.database_url, Some(&snapshot.id))
            .map_err(|error| DumpError::PgDumpStart { error })?;
        let (dump, source_state) = watch(dump);
        let encrypted = encrypt_stream_with(dump, &config.recipients, config.compression)
            .map_err(|error| self.encrypt_failed(error))?;
        // Counting rows in the snapshot overlaps with the dump instead of
        // delaying its start.
        let (put, tables) = tokio::join!(
            self.store.put(
                &self.data_key,
                encrypted.stream,
                PutOptions::create().with_content_type("application/octet-stream"),
            ),
            snapshot.row_counts(),
        );
        // pg_dump has finished (or was killed with the upload): the snapshot
        // is no longer needed.
        let pg_state = source_state.lock().expect("source state").clone();
        let server_version = snapshot.server_version.clone();
        if let Err(e) = snapshot.release().await {
            tracing::warn!(error = %e, "could not end the snapshot transaction (the dump is not affected)");
        }
        if let SourceState::Failed(message) = pg_state {
            return Err(DumpError::PgDump {
                database: self.database.to_string(),
                backup_id: self.id.to_string(),
                message,
            });
        }
        let meta = put.map_err(|e| self.upload_failed(e))?;
        let tables = tables.map_err(|error| DumpError::RowCounts {
            database: self.database.to_string(),
            backup_id: self.id.to_string(),
            error,
        })?;
        let summary = self.check_upload(&pg_state, &encrypted.summary, &meta)?;
        Ok(UploadedData {
            summary,
            tables,
            server_version,
        })
    }

    /// The upload is only as good as the dump behind it: `pg_dump` must have
    /// ended cleanly, and the store must hold exactly the encrypted bytes.
    fn check_upload(
        &self,
        pg_state: &SourceState,
        summary: &SummaryHandle,
        meta: &ObjectMeta,
    ) -> Result<EncryptSummary, DumpError> {
        let inconsistent = |reason: String| DumpError::Inconsistent {
            key: self.data_key.clone(),
            reason,
        };
        if !matches!(pg_state, SourceState::Ended) {
            return Err(inconsistent(
                "the upload finished before pg_dump's output ended".into(),
            ));
        }
        let summary = summary
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
        Ok(summary)
    }

    fn manifest(&self, started_at: DateTime<Utc>, data: &UploadedData) -> Manifest {
        let summary = &data.summary;
        Manifest {
            server_version: data.server_version.clone(),
            started_at,
            finished_at: Utc::now(),
            plaintext_size: summary.plaintext_size,
            ciphertext: summary.ciphertext_info(DATA_FILE),
            recipients: summary.recipients.clone(),
            signer: self.config.signing_key.fingerprint(),
            tables: data.tables.clone(),
            tool: format!("backstop {}", env!("CARGO_PKG_VERSION")),
            ..Manifest::of_backup(&self.id)
        }
    }

    /// Signs the manifest and writes the signature, then the manifest (the
    /// commit marker). Returns their keys.
    async fn commit(&self, manifest: &Manifest) -> Result<(String, String), DumpError> {
        let (manifest_bytes, signature) = sign_manifest(manifest, &self.config.signing_key)
            .map_err(|error| DumpError::Sign {
                backup_id: self.id.to_string(),
                error,
            })?;
        let signature_key = self.id.signature_key();
        let manifest_key = self.id.manifest_key();
        let signature = signature.as_bytes();
        self.put_commit(&signature_key, signature, "application/pgp-signature")
            .await?;
        self.put_commit(&manifest_key, &manifest_bytes, "application/json")
            .await?;
        Ok((signature_key, manifest_key))
    }

    async fn put_commit(
        &self,
        key: &str,
        body: &[u8],
        content_type: &str,
    ) -> Result<(), DumpError> {
        put_small(self.store, key, body, content_type, self.config.retry)
            .await
            .map_err(|error| DumpError::Commit {
                key: key.to_string(),
                error,
            })
    }

    fn summary(
        &self,
        clock: Instant,
        manifest: &Manifest,
        summary: EncryptSummary,
        signature_object: String,
        manifest_object: String,
    ) -> DumpSummary {
        let duration = clock.elapsed().as_secs_f64();
        let throughput = if duration > 0.0 {
            summary.ciphertext.size as f64 / 1e6 / duration
        } else {
            0.0
        };
        DumpSummary {
            backup_id: self.id.to_string(),
            namespace: self.config.namespace.to_string(),
            database: self.database.to_string(),
            store: self.store.url(),
            data_object: self.data_key.clone(),
            signature_object,
            manifest_object,
            server_version: manifest.server_version.clone(),
            started_at: manifest.started_at,
            finished_at: Utc::now(),
            duration_secs: (duration * 1000.0).round() / 1000.0,
            plaintext_bytes: summary.plaintext_size,
            ciphertext_bytes: summary.ciphertext.size,
            ciphertext_sha256: summary.ciphertext.sha256,
            ciphertext_crc32c: summary.ciphertext.crc32c,
            throughput_mb_s: (throughput * 100.0).round() / 100.0,
            tables: manifest.tables.len(),
            rows: manifest.tables.values().sum(),
            recipients: manifest.recipients.clone(),
            signer: manifest.signer.clone(),
        }
    }

    fn encrypt_failed(&self, error: CryptoError) -> DumpError {
        DumpError::Encrypt {
            backup_id: self.id.to_string(),
            error,
        }
    }

    /// A failed data upload: the encryption's failure when the stream broke
    /// on its side, the store's otherwise.
    fn upload_failed(&self, e: StoreError) -> DumpError {
        match e {
            StoreError::Source { source, .. } => self.encrypt_failed(CryptoError::from_io(source)),
            error => DumpError::Upload {
                key: self.data_key.clone(),
                error,
            },
        }
    }
}

fn log_complete(result: &DumpSummary) {
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
}
