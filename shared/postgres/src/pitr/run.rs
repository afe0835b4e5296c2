//! The point-in-time restore from start to finish: choose the base backup,
//! check the archive reaches the target, extract and verify, write the
//! recovery settings, and (with `--start`) recover, drill and record. This
//! module holds the order of the steps; each lives in its own module.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Instant;

use chrono::Utc;
use serde::Serialize;

use backstop_core::crypto::{chunks, decrypt_stream_sized};
use backstop_core::drill::PitrDrill;
use backstop_core::error::{Failure, FailureKind};
use backstop_core::manifest::BASE_BACKUP_ZSTD_FORMAT;

use super::config::PitrConfig;
use super::drill;
use super::error::PitrError;
use super::extract::{BACKUP_MANIFEST, Extracted, empty_dir, extract};
use super::recovery::{self, LogFacts};
use super::select::{BaseCandidate, check_backup_key, ordered, select};
use super::timeline::{Archive, Plan, plan};
use super::unzstd::decompress;
use crate::restore::{Clouds, SkippedBackup};

/// How long each step took.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PitrTimings {
    /// Listing, manifests, the WAL archive's listing.
    pub select_secs: f64,
    /// Download, authentication, decryption, extraction, pg_verifybackup.
    pub verify_extract_secs: f64,
    /// From `pg_ctl start` to the target reached (with `--start`).
    pub recovery_secs: Option<f64>,
    pub total_secs: f64,
}

/// The result of a point-in-time restore (the CLI prints it as JSON).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PitrReport {
    /// Restored and, with `--start`, recovered to the target and drilled.
    pub success: bool,
    pub backup_id: String,
    pub cloud: String,
    pub system_identifier: String,
    pub skipped: Vec<SkippedBackup>,
    pub target: String,
    pub timeline: u32,
    pub pgdata: String,
    /// The first WAL segment recovery reads (the backup's `start_wal`).
    pub wal_from: String,
    /// The last segment the target needs, checked in the archive.
    pub wal_through: String,
    pub wal_segments_checked: u64,
    pub files: u64,
    pub bytes: u64,
    /// `passed`, or why it was skipped.
    pub pg_verifybackup: String,
    pub started: bool,
    /// `restored log file` lines in the server log.
    pub wal_segments_fetched: Option<u64>,
    /// The server's `recovery stopping ...` (or `redo done at ...`) line.
    pub target_reached: Option<String>,
    /// The timeline the promoted server chose.
    pub new_timeline: Option<u32>,
    pub server_log: Option<String>,
    pub drill: Option<PitrDrill>,
    pub drill_error: Option<String>,
    pub drill_record: Option<String>,
    pub timings: PitrTimings,
}

/// Restores the cluster (see the module documentation). `Ok` with
/// `success == false`: recovered, but the drill failed or could not be
/// recorded; callers exit non-zero.
pub async fn restore_cluster(
    cfg: &PitrConfig,
    clouds: Clouds<'_>,
) -> Result<PitrReport, PitrError> {
    let clock = Instant::now();
    let started_at = Utc::now();
    let mut skipped = Vec::new();
    let (base, plan) = choose(cfg, &clouds, &mut skipped).await?;
    check_backup_key(cfg, &base)?;
    let select_secs = clock.elapsed().as_secs_f64();
    tracing::info!(event = "pitr_selected", backup = %base.id, cloud = base.cloud, timeline = plan.timeline, "restoring base backup");

    let t = Instant::now();
    let (extracted, verifybackup) = match restore_files(cfg, &clouds, &base).await {
        Ok(x) => x,
        Err(e) => {
            record_failure(cfg, &clouds, &base, &plan, started_at, &e).await;
            return Err(e);
        }
    };
    let verify_extract_secs = t.elapsed().as_secs_f64();
    recovery::write_settings(cfg, &base, &plan)?;

    let mut report = PitrReport {
        success: true,
        backup_id: base.id.to_string(),
        cloud: base.cloud.to_string(),
        system_identifier: base.system_identifier.to_string(),
        skipped,
        target: cfg.target.describe(),
        timeline: plan.timeline,
        pgdata: cfg.pgdata.display().to_string(),
        wal_from: base.info.start_wal.clone(),
        wal_through: plan.last_needed.clone(),
        wal_segments_checked: plan.segments,
        files: extracted.files,
        bytes: extracted.bytes,
        pg_verifybackup: verifybackup,
        started: false,
        wal_segments_fetched: None,
        target_reached: None,
        new_timeline: None,
        server_log: None,
        drill: None,
        drill_error: None,
        drill_record: None,
        timings: PitrTimings {
            select_secs,
            verify_extract_secs,
            recovery_secs: None,
            total_secs: 0.0,
        },
    };
    if cfg.start_port.is_some() {
        let t = Instant::now();
        let facts = match recover(cfg).await {
            Ok(f) => f,
            Err(e) => {
                record_failure(cfg, &clouds, &base, &plan, started_at, &e).await;
                return Err(e);
            }
        };
        report.timings.recovery_secs = Some(t.elapsed().as_secs_f64());
        drill_and_record(cfg, &clouds, &base, &plan, started_at, &facts, &mut report).await;
    }
    report.timings.total_secs = clock.elapsed().as_secs_f64();
    tracing::info!(event = "pitr_finished", backup = %report.backup_id, success = report.success, secs = report.timings.total_secs, "restore-cluster finished");
    Ok(report)
}

/// The newest fitting base backup whose timeline leads to the target, and
/// the archive's plan for it.
async fn choose(
    cfg: &PitrConfig,
    clouds: &Clouds<'_>,
    skipped: &mut Vec<SkippedBackup>,
) -> Result<(BaseCandidate, Plan), PitrError> {
    let candidates = select(cfg, clouds, skipped).await?;
    let stores = ordered(clouds);
    let mut last = None;
    for c in candidates {
        let archive = Archive::list(&stores, &cfg.namespace, c.system_identifier).await?;
        match plan(cfg, &c, &archive).await {
            Ok(p) => return Ok((c, p)),
            Err(e @ PitrError::Timeline { .. }) => {
                skipped.push(SkippedBackup {
                    cloud: c.cloud.into(),
                    backup_id: c.id.to_string(),
                    reason: e.to_string(),
                });
                last = Some(e);
            }
            Err(e) => return Err(e),
        }
    }
    Err(last.expect("select returns at least one candidate"))
}

/// Creates (or takes the empty) data directory, mode 0700.
fn prepare_dir(dir: &Path) -> Result<bool, String> {
    let created = !dir.exists();
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .map_err(|e| format!("cannot set the mode of {}: {e}", dir.display()))?;
    Ok(created)
}

/// Downloads, authenticates, decrypts and extracts the base backup, then
/// checks `backup_manifest` and runs `pg_verifybackup`; on failure the
/// directory is emptied again.
async fn restore_files(
    cfg: &PitrConfig,
    clouds: &Clouds<'_>,
    base: &BaseCandidate,
) -> Result<(Extracted, String), PitrError> {
    let fail = |(reason, kind): Failed, cleanup: String| PitrError::Extract {
        backup_id: base.id.to_string(),
        pgdata: cfg.pgdata.display().to_string(),
        reason,
        cleanup,
        kind,
    };
    let created = prepare_dir(&cfg.pgdata)
        .map_err(|r| fail((r, FailureKind::Other), "nothing was written".into()))?;
    match extract_and_verify(cfg, clouds, base).await {
        Ok(x) => Ok(x),
        Err(failed) => Err(fail(failed, empty_dir(&cfg.pgdata, created))),
    }
}

/// Why extraction failed, and what that means for the exit status.
type Failed = (String, FailureKind);

/// A failure of the backup's data itself: it does not authenticate,
/// decrypt or match its signed manifest.
fn integrity(reason: String) -> Failed {
    (reason, FailureKind::Integrity)
}

async fn extract_and_verify(
    cfg: &PitrConfig,
    clouds: &Clouds<'_>,
    base: &BaseCandidate,
) -> Result<(Extracted, String), Failed> {
    let store = ordered(clouds)
        .into_iter()
        .find(|(c, _)| *c == base.cloud)
        .map(|(_, s)| s)
        .expect("the candidate's cloud is configured");
    let object = format!("{}/{}", store.url().trim_end_matches('/'), base.data_key);
    let body = store
        .read(&base.data_key)
        .await
        .map_err(|e| (format!("reading {object} failed: {e}"), e.failure_kind()))?;
    let gated = chunks::authenticated(body, &base.manifest.ciphertext)
        .map_err(|e| (format!("{object}: {e}"), e.failure_kind()))?;
    let mut plain =
        decrypt_stream_sized(gated, &cfg.secret_key, Some(base.manifest.plaintext_size));
    if base.manifest.dump_format == BASE_BACKUP_ZSTD_FORMAT {
        plain = decompress(plain);
    }
    let out = extract(plain, &cfg.pgdata)
        .await
        .map_err(|e| (format!("{object}: {e}"), e.failure_kind()))?;
    let signed = &base.info.backup_manifest_sha256;
    match &out.backup_manifest_sha256 {
        Some(sha) if sha.eq_ignore_ascii_case(signed) => {}
        Some(sha) => {
            return Err(integrity(format!(
                "{BACKUP_MANIFEST} has SHA-256 {sha}, the signed manifest says {signed}"
            )));
        }
        None => return Err(integrity(format!("the tar has no {BACKUP_MANIFEST}"))),
    }
    if out.files != base.info.files {
        return Err(integrity(format!(
            "the tar holds {} files, the signed manifest says {}",
            out.files, base.info.files
        )));
    }
    let verified = pg_verifybackup(cfg).await?;
    Ok((out, verified))
}

/// `pg_verifybackup -n` on the extracted directory: `passed`, or why it
/// was skipped (the program is missing); `Err` when it fails.
async fn pg_verifybackup(cfg: &PitrConfig) -> Result<String, Failed> {
    let program = cfg.tools.program("pg_verifybackup");
    let out = tokio::process::Command::new(&program)
        .arg("-n")
        .arg(&cfg.pgdata)
        .output()
        .await;
    match out {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let why = format!(
                "skipped: {} not found (set --pg-bindir or PG_BINDIR to check the files against backup_manifest)",
                program.display()
            );
            eprintln!("pg_verifybackup {why}");
            Ok(why)
        }
        Err(e) => Err((
            format!("cannot run {}: {e}", program.display()),
            FailureKind::Other,
        )),
        Ok(o) if o.status.success() => Ok("passed".into()),
        // The files do not match the backup's own manifest.
        Ok(o) => Err(integrity(format!(
            "pg_verifybackup -n failed ({}): {}",
            o.status,
            String::from_utf8_lossy(&o.stderr).trim()
        ))),
    }
}

/// Starts the server and waits for the target.
async fn recover(cfg: &PitrConfig) -> Result<LogFacts, PitrError> {
    recovery::start(cfg)?;
    recovery::wait_for_target(cfg).await
}

async fn drill_and_record(
    cfg: &PitrConfig,
    clouds: &Clouds<'_>,
    base: &BaseCandidate,
    plan: &Plan,
    started_at: chrono::DateTime<Utc>,
    facts: &LogFacts,
    report: &mut PitrReport,
) {
    let (pitr, verdict) = drill::check(cfg, plan, facts).await;
    report.started = true;
    report.wal_segments_fetched = Some(facts.restored);
    report.target_reached = facts.stopping.clone().or_else(|| facts.redo_done.clone());
    report.new_timeline = facts.new_timeline;
    report.server_log = Some(recovery::log_path(cfg).display().to_string());
    report.drill = Some(pitr.clone());
    report.drill_error = verdict.clone().err();
    report.success = verdict.is_ok();
    if cfg.write_drill {
        let record = drill::record(cfg, base, started_at, pitr, &verdict);
        match drill::write(clouds, base.cloud, &record).await {
            Ok(at) => report.drill_record = Some(at),
            Err(e) => {
                report.success = false;
                report.drill_error = Some(format!(
                    "the drill record could not be written ({e}); the recovered server keeps running"
                ));
            }
        }
    }
}

/// Records a failed restore of the backup (extraction, verification or
/// recovery), unless the failure says nothing about the backup.
async fn record_failure(
    cfg: &PitrConfig,
    clouds: &Clouds<'_>,
    base: &BaseCandidate,
    plan: &Plan,
    started_at: chrono::DateTime<Utc>,
    e: &PitrError,
) {
    if !cfg.write_drill || !e.is_drill_failure() {
        return;
    }
    let pitr = PitrDrill {
        target: cfg.target.describe(),
        timeline: plan.timeline,
        stopped: None,
        last_replayed_commit: None,
        last_replayed_lsn: None,
        wal_segments_fetched: 0,
    };
    let record = drill::record(cfg, base, started_at, pitr, &Err(e.to_string()));
    if let Err(w) = drill::write(clouds, base.cloud, &record).await {
        tracing::error!(event = "drill_record_failed", error = %w, "could not record the failed PITR drill");
    }
}
