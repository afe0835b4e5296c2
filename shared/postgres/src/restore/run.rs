//! The restore from start to finish: resolve the target, select a backup,
//! restore it (falling back to the replica when the download fails), run
//! the drill, record it and report. Each step lives in its own module; this
//! one only decides the order, what is retried and what is logged.

use std::collections::BTreeMap;
use std::time::Instant;

use chrono::{DateTime, Utc};

use backstop_core::drill::TableMismatch;
use backstop_core::store::ObjectStore;

use super::config::{Clouds, Progress, RestoreConfig};
use super::drill::{self, Recorded, compare_counts, count_restored};
use super::error::RestoreError;
use super::report::{RestoreReport, SkippedBackup, Timings};
use super::select::{Candidate, select, verify_candidate};
use super::source::SourceGuard;
use super::stream::restore_data;
use super::target::{ResolvedTarget, prepare, resolve};
use crate::pg::redact_url;

/// Restores a backup (see the module documentation). `Ok` with
/// `success == false` means the restore completed but the drill found
/// row-count mismatches; callers should exit non-zero.
pub async fn restore(
    cfg: &RestoreConfig,
    clouds: Clouds<'_>,
    progress: &dyn Progress,
) -> Result<RestoreReport, RestoreError> {
    restore_reporting(cfg, clouds, progress)
        .await
        .map_err(|f| f.error)
}

/// A failed restore: the error, and the backup it tried when one had been
/// chosen (for the JSON result).
#[derive(Debug)]
pub struct FailedRestore {
    pub error: RestoreError,
    /// The backup the restore tried, if it got that far.
    pub backup_id: Option<String>,
    /// The cloud it was read from last.
    pub cloud: Option<String>,
    /// Why an earlier cloud was not (or no longer) used.
    pub fallback_reason: Option<String>,
}

impl From<RestoreError> for FailedRestore {
    fn from(error: RestoreError) -> Self {
        FailedRestore {
            error,
            backup_id: None,
            cloud: None,
            fallback_reason: None,
        }
    }
}

/// [`restore`], with what a failed restore had tried.
pub async fn restore_reporting(
    cfg: &RestoreConfig,
    clouds: Clouds<'_>,
    progress: &dyn Progress,
) -> Result<RestoreReport, FailedRestore> {
    let result = restore_inner(cfg, &clouds, progress).await;
    if let Err(f) = &result {
        let e = &f.error;
        tracing::error!(event = "restore_failed", namespace = %cfg.namespace, backup = f.backup_id.as_deref().unwrap_or(""), kind = e.kind(), error = %e, "restore failed");
    }
    result
}

async fn restore_inner(
    cfg: &RestoreConfig,
    clouds: &Clouds<'_>,
    progress: &dyn Progress,
) -> Result<RestoreReport, FailedRestore> {
    let clock = Instant::now();
    let started_at: DateTime<Utc> = Utc::now();
    let t = resolve(&cfg.target)?;
    SourceGuard::of(cfg).refuse_source_database(&t)?;

    progress.phase("selecting a backup");
    let mut sel = select_backup(cfg, clouds, &t, clock).await?;
    if let Err(error) = check_backup_key(cfg, &sel.cand) {
        return Err(sel.failed(error));
    }
    let result = restore_with_fallback(cfg, clouds, &mut sel, &t, progress).await;

    let drill = drill::new_record(&sel.cand, &t.name, started_at);
    let restored = match result {
        Ok(r) => r,
        Err(e) => {
            drill::record_failure(cfg, clouds, sel.cand.cloud, &sel.unavailable, drill, &e).await;
            return Err(sel.failed(e));
        }
    };
    let (used, mismatches) = (sel.cand.cloud, &restored.mismatches);
    let recorded =
        drill::record_result(cfg, clouds, used, &sel.unavailable, drill, mismatches).await;
    if let (true, Some(reason)) = (cfg.write_drill, &recorded.error) {
        let error = RestoreError::DrillNotRecorded {
            database: t.name.clone(),
            passed: recorded.drill.success,
            reason: reason.clone(),
        };
        return Err(sel.failed(error));
    }
    let total_secs = clock.elapsed().as_secs_f64();
    let report = assemble_report(cfg, clouds, sel, &t, restored, recorded, total_secs);
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

/// A wrong backup key is a configuration error, found from the signed
/// manifest before anything is touched: not a drill of the backup.
fn check_backup_key(cfg: &RestoreConfig, cand: &Candidate) -> Result<(), RestoreError> {
    let recipients = &cand.manifest.recipients;
    let held = cfg.secret_key.decryption_fingerprints();
    if recipients.is_empty()
        || recipients
            .iter()
            .any(|r| held.iter().any(|h| h.eq_ignore_ascii_case(r)))
    {
        return Ok(());
    }
    Err(RestoreError::WrongKey {
        backup_id: cand.id.to_string(),
        recipients: recipients.join(", "),
        held: held.join(", "),
    })
}

/// The backup being restored and how it was found; a fallback to the
/// replica updates it.
struct Selection {
    cand: Candidate,
    /// Why the primary cloud was not (or no longer) used.
    fallback_reason: Option<String>,
    /// Newer backups passed over.
    skipped: Vec<SkippedBackup>,
    /// Clouds that did not answer or deliver: no drill record goes there.
    unavailable: Vec<&'static str>,
    select_secs: f64,
}

impl Selection {
    /// The failure of a restore of this selection, for the JSON result.
    fn failed(self, error: RestoreError) -> FailedRestore {
        FailedRestore {
            error,
            backup_id: Some(self.cand.id.to_string()),
            cloud: Some(self.cand.cloud.to_string()),
            fallback_reason: self.fallback_reason,
        }
    }
}

async fn select_backup(
    cfg: &RestoreConfig,
    clouds: &Clouds<'_>,
    t: &ResolvedTarget,
    clock: Instant,
) -> Result<Selection, RestoreError> {
    let mut skipped = Vec::new();
    let mut unavailable = Vec::new();
    let (cand, fallback_reason) = select(cfg, clouds, &mut skipped, &mut unavailable).await?;
    let select_secs = clock.elapsed().as_secs_f64();
    tracing::info!(event = "restore_selected", backup = %cand.id, cloud = cand.cloud, target = %t.name, "restoring");
    Ok(Selection {
        cand,
        fallback_reason,
        skipped,
        unavailable,
        select_secs,
    })
}

/// Restores the selected backup; a download that fails, or data that fails
/// authentication (a modified or substituted object in one cloud), is
/// retried from the next cloud that holds the same backup (nothing was
/// committed, the target is as it was). Other failures are final.
async fn restore_with_fallback(
    cfg: &RestoreConfig,
    clouds: &Clouds<'_>,
    sel: &mut Selection,
    t: &ResolvedTarget,
    progress: &dyn Progress,
) -> Result<Restored, RestoreError> {
    loop {
        let store = clouds
            .store(sel.cand.cloud)
            .expect("the candidate's cloud is configured");
        let result = restore_into(cfg, store, &sel.cand, t, progress).await;
        let cause = match &result {
            Err(RestoreError::Download { source, .. }) => source.to_string(),
            Err(e @ RestoreError::Data { .. }) => e.to_string(),
            _ => return result,
        };
        let Some((next, next_url)) = next_copy(cfg, clouds, &sel.cand).await else {
            return result;
        };
        let why = format!(
            "reading {} from {} failed ({cause}); retrying from {} ({next_url})",
            sel.cand.id, sel.cand.cloud, next.cloud
        );
        tracing::warn!(event = "restore_fallback", reason = %why, "retrying from the replica");
        sel.fallback_reason = Some(match sel.fallback_reason.take() {
            Some(r) => format!("{r}; {why}"),
            None => why,
        });
        if matches!(result, Err(RestoreError::Download { .. })) {
            sel.unavailable.push(sel.cand.cloud);
        }
        sel.cand = next;
    }
}

/// The same backup in the cloud after `cand`'s, if it verifies there, and
/// that cloud's URL.
async fn next_copy(
    cfg: &RestoreConfig,
    clouds: &Clouds<'_>,
    cand: &Candidate,
) -> Option<(Candidate, String)> {
    let ordered = clouds.ordered();
    let (next_cloud, next_store) = ordered
        .iter()
        .skip_while(|(c, _)| *c != cand.cloud)
        .nth(1)?;
    match verify_candidate(*next_store, next_cloud, &cand.id, &cfg.signing_keys, None).await {
        Ok(Ok(next)) => Some((next, next_store.url())),
        _ => None,
    }
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

/// Restores the chosen backup from one cloud into the target, counts the
/// rows, and swaps a staging database in when the counts match. Whatever
/// the restore created is dropped again when a step fails.
async fn restore_into(
    cfg: &RestoreConfig,
    store: &dyn ObjectStore,
    cand: &Candidate,
    t: &ResolvedTarget,
    progress: &dyn Progress,
) -> Result<Restored, RestoreError> {
    progress.phase("preparing the target database");
    let prepared = prepare(cfg, t, &cand.manifest).await?;

    progress.phase("restoring");
    let clock = Instant::now();
    let plaintext = match restore_data(cfg, store, cand, &prepared.db_url, progress).await {
        Ok(n) => n,
        Err(e) => {
            prepared.discard("restore failed").await;
            return Err(prepared.with_cleanup_note(e));
        }
    };
    let restore_secs = clock.elapsed().as_secs_f64();

    progress.phase("checking row counts");
    let clock = Instant::now();
    let counts = match count_restored(&prepared.db_url).await {
        Ok(c) => c,
        Err(e) => {
            prepared.discard("row counts failed").await;
            return Err(e);
        }
    };
    let mismatches = compare_counts(&cand.manifest.tables, &counts);
    let verify_secs = clock.elapsed().as_secs_f64();

    let replaced = prepared.finish(mismatches.is_empty(), progress).await?;
    Ok(Restored {
        created: prepared.created(),
        replaced,
        plaintext,
        counts,
        mismatches,
        restore_secs,
        verify_secs,
    })
}

/// The report of a completed restore.
fn assemble_report(
    cfg: &RestoreConfig,
    clouds: &Clouds<'_>,
    sel: Selection,
    t: &ResolvedTarget,
    restored: Restored,
    recorded: Recorded,
    total_secs: f64,
) -> RestoreReport {
    let cand = sel.cand;
    let ciphertext_bytes = cand.manifest.ciphertext.size;
    RestoreReport {
        success: recorded.drill.success,
        backup_id: cand.id.to_string(),
        namespace: cfg.namespace.to_string(),
        cloud: cand.cloud.to_string(),
        store: clouds
            .store(cand.cloud)
            .map(|s| s.url())
            .unwrap_or_default(),
        fallback_reason: sel.fallback_reason,
        skipped: sel.skipped,
        target_database: t.name.clone(),
        target: redact_url(&t.url),
        created_database: restored.created,
        replaced: restored.replaced,
        ciphertext_bytes,
        plaintext_bytes: restored.plaintext,
        tables: restored.counts.len(),
        rows: restored.counts.values().sum(),
        timings: Timings {
            select_secs: sel.select_secs,
            restore_secs: restored.restore_secs,
            verify_secs: restored.verify_secs,
            total_secs,
        },
        throughput_mb_s: if restored.restore_secs > 0.0 {
            ciphertext_bytes as f64 / 1e6 / restored.restore_secs
        } else {
            0.0
        },
        drill: recorded.drill,
        drill_record: recorded.at,
        drill_record_error: recorded.error,
    }
}
