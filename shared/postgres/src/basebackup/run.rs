//! One base backup from start to finish: the server's facts and
//! preconditions, the walsender's archive (server-compressed) into the
//! encryption and the data object, the checks of what the server said,
//! the manifest, signature and commit (shared with the dump: [`Publisher`]).

use std::time::Instant;

use chrono::{DateTime, Utc};
use serde::Serialize;

use backstop_core::crypto::{Compression, EncryptSummary};
use backstop_core::manifest::{
    BASE_BACKUP_FORMAT, BASE_BACKUP_ZSTD_FORMAT, BaseBackupInfo, Manifest,
};
use backstop_core::naming::BackupId;
use backstop_core::store::ObjectStore;
use backstop_core::wal::{Lsn, WalFile};

use super::error::BaseBackupError;
use super::stream::{self, ArchiveCompression, Request, Streamed};
use crate::dump::{DumpConfig, Publisher, pace};
use crate::pg;
use crate::server::{ClusterFacts, cluster_facts};

/// Set to `1` (or `true`) to take a base backup of a server whose
/// `archive_mode` is off (`--allow-no-archive`).
pub const ALLOW_NO_ARCHIVE_VAR: &str = "BACKSTOP_ALLOW_NO_ARCHIVE";

/// Everything one base backup needs: what a dump needs (the URL names the
/// server and the role; its database is only where the checks connect),
/// and whether a server without WAL archiving is accepted.
#[derive(Debug, Clone)]
pub struct BaseBackupConfig {
    pub job: DumpConfig,
    /// Take the backup although `archive_mode` is off: it then restores
    /// only with WAL kept by other means, and to no other point in time.
    pub allow_no_archive: bool,
    /// zstd threads on the server (`COMPRESSION_DETAIL workers`); 0
    /// compresses on the walsender itself.
    pub server_workers: u32,
    /// The server's read rate, kB/s (`MAX_RATE`); none by default.
    pub max_rate_kb: Option<u32>,
}

/// zstd threads of the server's, unless `BACKSTOP_BASEBACKUP_WORKERS` says.
pub const DEFAULT_SERVER_WORKERS: u32 = 2;

/// The result of a successful base backup (the CLI prints it as JSON).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BaseBackupSummary {
    /// `<namespace>/.cluster-<system identifier>/<stamp>`.
    pub backup_id: String,
    pub namespace: String,
    /// The bucket, as a URL.
    pub store: String,
    /// The encrypted tar.
    pub data_object: String,
    /// The commit marker.
    pub manifest_object: String,
    /// `SHOW server_version`.
    pub server_version: String,
    /// What the manifest records about the cluster and its WAL.
    #[serde(flatten)]
    pub base_backup: BaseBackupInfo,
    pub started_at: DateTime<Utc>,
    pub duration_secs: f64,
    /// The archive's size as stored inside the encryption (compressed by
    /// the server unless the level was 0).
    pub plaintext_bytes: u64,
    pub ciphertext_bytes: u64,
    /// Ciphertext megabytes (10^6 bytes) uploaded per second of the whole job.
    pub throughput_mb_s: f64,
}

/// Runs one base backup into `store`: data, then signature, then manifest.
pub async fn run_base_backup(
    config: &BaseBackupConfig,
    store: &dyn ObjectStore,
) -> Result<BaseBackupSummary, BaseBackupError> {
    base_backup_inner(config, store).await.inspect_err(|e| {
        let (server, stage) = (pg::redact_url(&config.job.database_url), e.stage());
        tracing::error!(event = "base_backup_failed", namespace = %config.job.namespace, %server, store = %store.url(), stage, error = %e, "base backup failed");
    })
}

async fn base_backup_inner(
    config: &BaseBackupConfig,
    store: &dyn ObjectStore,
) -> Result<BaseBackupSummary, BaseBackupError> {
    let clock = Instant::now();
    let cluster = preconditions(config).await?;
    let started_at = Utc::now();
    let id = BackupId::base_backup(
        config.job.namespace.clone(),
        cluster.system_identifier,
        started_at,
    );
    // The server compresses; the encryption only encrypts.
    let archive = archive_compression(config);
    let publish_config = DumpConfig {
        compression: Compression::None,
        ..config.job.clone()
    };
    let job = Job {
        cluster,
        publish: Publisher::new(&publish_config, store, id),
        archive,
        max_rate_kb: config.max_rate_kb,
    };
    let (summary, streamed) = job.upload_data().await?;
    let info = job.describe(&streamed)?;
    let format = match job.archive {
        ArchiveCompression::None => BASE_BACKUP_FORMAT,
        ArchiveCompression::Zstd { .. } => BASE_BACKUP_ZSTD_FORMAT,
    };
    let manifest = Manifest {
        dump_format: format.into(),
        base_backup: Some(info),
        ..job
            .publish
            .manifest(started_at, &summary, job.cluster.server_version.clone())
    };
    let (_, manifest_object) = job.publish.commit(&manifest).await?;
    let result = job.summary(clock, manifest, summary, manifest_object);
    log_complete(&result);
    Ok(result)
}

/// Reads the server's [`ClusterFacts`] and refuses what cannot give a
/// usable base backup: a server without backup manifests (before 13), a
/// role without REPLICATION, no WAL archiving (unless allowed).
async fn preconditions(config: &BaseBackupConfig) -> Result<ClusterFacts, BaseBackupError> {
    let url = &config.job.database_url;
    let server = |error| BaseBackupError::Server {
        url: pg::redact_url(url),
        error,
    };
    let client = pg::connect(url).await.map_err(server)?;
    let cluster = cluster_facts(&client).await.map_err(server)?;
    if cluster.server_version_num < 150_000 {
        return Err(BaseBackupError::TooOld {
            version: cluster.server_version,
        });
    }
    if !cluster.may_replicate {
        return Err(BaseBackupError::NoReplication { role: cluster.role });
    }
    if cluster.archive_mode == "off" {
        if !config.allow_no_archive {
            return Err(BaseBackupError::NoArchive);
        }
        tracing::warn!(
            event = "base_backup_without_archive",
            "archive_mode is off: this base backup restores only with WAL kept by other means (allowed by --allow-no-archive)"
        );
    }
    Ok(cluster)
}

/// One base backup in progress.
struct Job<'a> {
    cluster: ClusterFacts,
    publish: Publisher<'a>,
    archive: ArchiveCompression,
    max_rate_kb: Option<u32>,
}

/// The server's own compression of the archive: the job's level as a zstd
/// level (0: none).
fn archive_compression(config: &BaseBackupConfig) -> ArchiveCompression {
    match config.job.compression {
        Compression::None => ArchiveCompression::None,
        Compression::Zip(level) => ArchiveCompression::Zstd {
            level,
            workers: config.server_workers,
        },
    }
}

impl Job<'_> {
    /// The walsender's archive, compressed on the server, then the
    /// archive of the server's backup manifest
    /// ([`stream`]), on its way to the encryption.
    async fn upload_data(&self) -> Result<(EncryptSummary, Streamed), BaseBackupError> {
        let config = self.publish.config;
        let request = Request {
            label: format!("backstop {}", self.publish.id),
            compression: self.archive,
            max_rate_kb: self.max_rate_kb,
        };
        let (archive, outcome) = stream::start(&config.database_url, &request)
            .await
            .map_err(|error| BaseBackupError::Connect { error })?;
        let (put, watched) = self.publish.upload(archive)?;
        let put = put.await;
        let summary = self
            .publish
            .stored("the walsender", watched, put, |message| {
                BaseBackupError::Stream {
                    system_identifier: self.cluster.system_identifier,
                    backup_id: self.publish.id.to_string(),
                    message,
                }
            })?;
        let streamed = outcome.lock().expect("outcome").take();
        let streamed =
            streamed.ok_or_else(|| self.mismatch("the archive was not read to its end".into()))?;
        Ok((summary, streamed))
    }

    /// The manifest's `base_backup`, once the server's answers agree: the
    /// replication connection's cluster is the one the checks read, the
    /// backup's start is its backup manifest's. The positions are the
    /// backup manifest's (inside the signed data, where `pg_verifybackup`
    /// reads them).
    fn describe(&self, streamed: &Streamed) -> Result<BaseBackupInfo, BaseBackupError> {
        let cluster = &self.cluster;
        if streamed.system_identifier != cluster.system_identifier {
            return Err(self.mismatch(format!(
                "the replication connection reached cluster {}, the checks cluster {} (does the URL name several hosts?)",
                streamed.system_identifier, cluster.system_identifier
            )));
        }
        let ranges = &streamed.manifest.wal_ranges;
        let (first, last) = match (ranges.first(), ranges.last()) {
            (Some(first), Some(last)) => (first, last),
            _ => return Err(self.mismatch("the backup manifest has no WAL range".into())),
        };
        if (first.timeline, first.start) != (streamed.start_timeline, streamed.start_lsn)
            || last.end < first.start
            || last.end != streamed.end_lsn
        {
            return Err(self.mismatch(format!(
                "the server started the backup at {} on timeline {} and ended it at {}, its backup manifest's WAL ranges start at {} on timeline {} and end at {}",
                streamed.start_lsn, streamed.start_timeline, streamed.end_lsn, first.start, first.timeline, last.end
            )));
        }
        let size = cluster.wal_segment_size;
        if !size.is_power_of_two() {
            return Err(self.mismatch(format!("wal_segment_size {size} is not a power of two")));
        }
        Ok(BaseBackupInfo {
            system_identifier: cluster.system_identifier.to_string(),
            server_version_num: cluster.server_version_num,
            timeline: streamed.start_timeline,
            start_lsn: first.start.to_string(),
            stop_lsn: last.end.to_string(),
            start_wal: wal_file(first.timeline, first.start, size),
            stop_wal: wal_file(last.timeline, last_byte(first.start, last.end), size),
            wal_segment_size: size,
            backup_manifest_sha256: streamed.manifest.sha256.clone(),
            // The tar's regular files: those the manifest lists, and itself.
            files: streamed.manifest.files + 1,
        })
    }

    fn mismatch(&self, reason: String) -> BaseBackupError {
        BaseBackupError::Mismatch {
            backup_id: self.publish.id.to_string(),
            reason,
        }
    }

    fn summary(
        &self,
        clock: Instant,
        manifest: Manifest,
        summary: EncryptSummary,
        manifest_object: String,
    ) -> BaseBackupSummary {
        let (duration_secs, throughput_mb_s) = pace(clock, summary.ciphertext.size);
        BaseBackupSummary {
            backup_id: self.publish.id.to_string(),
            namespace: manifest.namespace.to_string(),
            store: self.publish.store.url(),
            data_object: self.publish.data_key.clone(),
            manifest_object,
            server_version: manifest.server_version,
            base_backup: manifest.base_backup.expect("a base backup's manifest"),
            started_at: manifest.started_at,
            duration_secs,
            plaintext_bytes: summary.plaintext_size,
            ciphertext_bytes: summary.ciphertext.size,
            throughput_mb_s,
        }
    }
}

/// The WAL file holding `lsn`.
fn wal_file(timeline: u32, lsn: Lsn, segment_size: u64) -> String {
    WalFile::segment(timeline, lsn.segment(segment_size), segment_size)
        .name()
        .to_string()
}

/// The position of the last WAL byte recovery needs: the one before the
/// stop position (a stop at a segment's first byte needs none of that
/// segment, as PostgreSQL's `XLByteToPrevSeg` has it), never before the start.
fn last_byte(start: Lsn, stop: Lsn) -> Lsn {
    Lsn(stop.0.saturating_sub(1).max(start.0))
}

/// The summary as one JSON field (what the CLI prints).
fn log_complete(result: &BaseBackupSummary) {
    let summary = serde_json::to_string(result).unwrap_or_default();
    tracing::info!(event = "base_backup_complete", backup_id = %result.backup_id, %summary, "base backup complete");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stop_file_is_the_one_holding_the_last_byte() {
        let seg = 16 << 20;
        let start: Lsn = "0/2000028".parse().unwrap();
        assert_eq!(wal_file(1, start, seg), "000000010000000000000002");
        let inside: Lsn = "0/2000100".parse().unwrap();
        assert_eq!(
            wal_file(1, last_byte(start, inside), seg),
            "000000010000000000000002"
        );
        // A stop at the first byte of segment 3 needs segment 2 only.
        let boundary: Lsn = "0/3000000".parse().unwrap();
        assert_eq!(
            wal_file(1, last_byte(start, boundary), seg),
            "000000010000000000000002"
        );
        let high: Lsn = "1/0".parse().unwrap();
        assert_eq!(
            wal_file(2, last_byte(high, high), seg),
            "000000020000000100000000"
        );
    }
}
