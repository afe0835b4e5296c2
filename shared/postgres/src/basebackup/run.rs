//! One base backup from start to finish: the server's facts and
//! preconditions, `pg_basebackup` through the tar observer and the
//! encryption into the data object, the checks of what the tar said, the
//! manifest, signature and commit (shared with the dump: [`Publisher`]).

use std::time::Instant;

use chrono::{DateTime, Utc};
use serde::Serialize;

use backstop_core::crypto::EncryptSummary;
use backstop_core::manifest::{BASE_BACKUP_FORMAT, BaseBackupInfo, Manifest};
use backstop_core::naming::BackupId;
use backstop_core::store::ObjectStore;
use backstop_core::wal::{Lsn, WalFile};

use super::error::BaseBackupError;
use super::members::Facts;
use super::tar::observe;
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
}

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
    /// The tar's size.
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
    let job = Job {
        cluster,
        publish: Publisher::new(&config.job, store, id),
    };
    let (summary, tar) = job.upload_data().await?;
    let info = job.describe(&tar)?;
    let manifest = Manifest {
        dump_format: BASE_BACKUP_FORMAT.into(),
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
    if cluster.server_version_num < 130_000 {
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
}

impl Job<'_> {
    /// `pg_basebackup` of the whole cluster as one tar on stdout (WAL is
    /// the archive's job, `-X none`; the server's backup manifest is its
    /// last member), read by the tar observer on its way to the encryption.
    async fn upload_data(&self) -> Result<(EncryptSummary, Facts), BaseBackupError> {
        let config = self.publish.config;
        let args = [
            "--pgdata=-".to_string(),
            "--format=tar".to_string(),
            "--wal-method=none".to_string(),
            "--checkpoint=fast".to_string(),
            "--no-password".to_string(),
            "--verbose".to_string(),
            format!("--label=backstop {}", self.publish.id),
        ];
        let tar = pg::program_stream(&config.tools, "pg_basebackup", &config.database_url, &args)
            .map_err(|error| BaseBackupError::Start { error })?;
        let (tar, facts) = observe(tar);
        let (put, watched) = self.publish.upload(tar)?;
        let put = put.await;
        let summary = self
            .publish
            .stored("pg_basebackup", watched, put, |message| {
                BaseBackupError::PgBasebackup {
                    system_identifier: self.cluster.system_identifier,
                    backup_id: self.publish.id.to_string(),
                    message,
                }
            })?;
        let facts = facts.lock().expect("tar facts").take();
        let facts = facts.ok_or_else(|| self.mismatch("the tar was not read to its end".into()))?;
        Ok((summary, facts))
    }

    /// The manifest's `base_backup`, once the tar agrees with the server:
    /// its `pg_control` is the cluster's, its label's start is its backup
    /// manifest's. The positions are the backup manifest's (inside the
    /// signed data, where `pg_verifybackup` reads them).
    fn describe(&self, tar: &Facts) -> Result<BaseBackupInfo, BaseBackupError> {
        let cluster = &self.cluster;
        if !tar.is_cluster(cluster.system_identifier) {
            return Err(self.mismatch(format!(
                "the tar's global/pg_control is not of cluster {} (the one pg_control_system() named)",
                cluster.system_identifier
            )));
        }
        let (first, last) = match (tar.wal_ranges.first(), tar.wal_ranges.last()) {
            (Some(first), Some(last)) => (first, last),
            _ => return Err(self.mismatch("the backup manifest has no WAL range".into())),
        };
        let label = &tar.label;
        if (first.timeline, first.start) != (label.timeline, label.start_lsn)
            || last.end < first.start
        {
            return Err(self.mismatch(format!(
                "backup_label starts at {} on timeline {}, the backup manifest's WAL ranges at {} on timeline {} and end at {}",
                label.start_lsn, label.timeline, first.start, first.timeline, last.end
            )));
        }
        let size = cluster.wal_segment_size;
        if !size.is_power_of_two() {
            return Err(self.mismatch(format!("wal_segment_size {size} is not a power of two")));
        }
        Ok(BaseBackupInfo {
            system_identifier: cluster.system_identifier.to_string(),
            server_version_num: cluster.server_version_num,
            timeline: label.timeline,
            start_lsn: first.start.to_string(),
            stop_lsn: last.end.to_string(),
            start_wal: wal_file(first.timeline, first.start, size),
            stop_wal: wal_file(last.timeline, last_byte(first.start, last.end), size),
            wal_segment_size: size,
            backup_manifest_sha256: tar.manifest_sha256.clone(),
            files: tar.files,
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
