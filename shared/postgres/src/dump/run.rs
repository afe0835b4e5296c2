//! One dump from start to finish: snapshot, `pg_dump` through encryption
//! into the data object, checks, manifest, signature, commit. Each step is
//! a method of [`Job`], which also names the step's failures, so the order
//! of the steps reads in one short function.

use std::collections::BTreeMap;
use std::time::Instant;

use chrono::{DateTime, Utc};
use serde::Serialize;

use backstop_core::crypto::EncryptSummary;
use backstop_core::manifest::Manifest;
use backstop_core::naming::BackupId;
use backstop_core::store::ObjectStore;

use super::config::{DATABASE_URL_VAR, DumpConfig};
use super::error::DumpError;
use super::progress::{DumpProgress, NoDumpProgress};
use super::upload::{Publisher, pace};
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
    run_dump_with_progress(config, store, &NoDumpProgress).await
}

/// [`run_dump`], telling `progress` how the data upload goes.
pub async fn run_dump_with_progress(
    config: &DumpConfig,
    store: &dyn ObjectStore,
    progress: &dyn DumpProgress,
) -> Result<DumpSummary, DumpError> {
    let database = pg::database_name(&config.database_url).map_err(|e| {
        invalid(
            DATABASE_URL_VAR,
            &pg::redact_url(&config.database_url),
            e.to_string(),
        )
    })?;
    let result = dump_inner(config, store, &database, progress).await;
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
    progress: &dyn DumpProgress,
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
        database,
        publish: Publisher::new(config, store, id),
    };
    let snapshot = job.take_snapshot().await?;
    let data = job.upload_data(snapshot, progress).await?;
    let manifest = job.manifest(started_at, &data);
    let (signature_key, manifest_key) = job.publish.commit(&manifest).await?;
    let result = job.summary(clock, &manifest, data.summary, signature_key, manifest_key);
    log_complete(&result);
    Ok(result)
}

/// One dump in progress: what every step needs, and names its failures
/// with.
struct Job<'a> {
    config: &'a DumpConfig,
    database: &'a str,
    publish: Publisher<'a>,
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
    async fn upload_data(
        &self,
        snapshot: ExportedSnapshot,
        progress: &dyn DumpProgress,
    ) -> Result<UploadedData, DumpError> {
        let config = self.config;
        let dump = pg::pg_dump_stream(&config.tools, &config.database_url, Some(&snapshot.id))
            .map_err(|error| DumpError::PgDumpStart { error })?;
        let (put, watched) = self.publish.upload(dump)?;
        let backup_id = self.publish.id.to_string();
        progress.start(&backup_id, snapshot.size_estimate, watched.counters.clone());
        // Counting rows in the snapshot overlaps with the dump instead of
        // delaying its start.
        let (put, tables) = tokio::join!(put, snapshot.row_counts());
        progress.finish();
        // pg_dump has finished (or was killed with the upload): the snapshot
        // is no longer needed.
        let server_version = snapshot.server_version.clone();
        if let Err(e) = snapshot.release().await {
            tracing::warn!(error = %e, "could not end the snapshot transaction (the dump is not affected)");
        }
        let summary =
            self.publish
                .stored("pg_dump", watched, put, |message| DumpError::PgDump {
                    database: self.database.to_string(),
                    backup_id: backup_id.clone(),
                    message,
                })?;
        let tables = tables.map_err(|error| DumpError::RowCounts {
            database: self.database.to_string(),
            backup_id,
            error,
        })?;
        Ok(UploadedData {
            summary,
            tables,
            server_version,
        })
    }

    fn manifest(&self, started_at: DateTime<Utc>, data: &UploadedData) -> Manifest {
        Manifest {
            tables: data.tables.clone(),
            ..self
                .publish
                .manifest(started_at, &data.summary, data.server_version.clone())
        }
    }

    fn summary(
        &self,
        clock: Instant,
        manifest: &Manifest,
        summary: EncryptSummary,
        signature_object: String,
        manifest_object: String,
    ) -> DumpSummary {
        let (duration_secs, throughput_mb_s) = pace(clock, summary.ciphertext.size);
        DumpSummary {
            backup_id: self.publish.id.to_string(),
            namespace: self.config.namespace.to_string(),
            database: self.database.to_string(),
            store: self.publish.store.url(),
            data_object: self.publish.data_key.clone(),
            signature_object,
            manifest_object,
            server_version: manifest.server_version.clone(),
            started_at: manifest.started_at,
            finished_at: Utc::now(),
            duration_secs,
            plaintext_bytes: summary.plaintext_size,
            ciphertext_bytes: summary.ciphertext.size,
            ciphertext_sha256: summary.ciphertext.sha256,
            ciphertext_crc32c: summary.ciphertext.crc32c,
            throughput_mb_s,
            tables: manifest.tables.len(),
            rows: manifest.tables.values().sum(),
            recipients: manifest.recipients.clone(),
            signer: manifest.signer.clone(),
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
