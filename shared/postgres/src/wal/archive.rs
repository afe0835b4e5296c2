//! One call of `archive_command`: the file PostgreSQL asks for, and the
//! next files waiting in `archive_status/*.ready` pushed alongside it.
//!
//! PostgreSQL archives one file per command, one command at a time, so a
//! busy server would pay a process start, key loading and a connection per
//! 16 MiB segment, one after the other. Instead each call pushes the file
//! it is given together with up to `parallel - 1` of the oldest other
//! `.ready` files, concurrently, and leaves a marker for each of those in
//! `pg_wal/backstop_status/`; when PostgreSQL then asks for one of them,
//! the call finds its marker and returns at once, without the network. A
//! marker records the file's size and modification time and only counts
//! for the same file; the push it stands for had committed (manifest
//! written) before it was written. Only the file asked for decides the
//! exit status: PostgreSQL keeps every file it has not been told is
//! archived, so a failed look-ahead push costs nothing but a retry.

use std::path::{Path, PathBuf};
use std::time::{Instant, UNIX_EPOCH};

use serde::Serialize;

use backstop_core::store::ObjectStore;
use backstop_core::wal::{WalFile, WalKey};

use super::config::WalPushConfig;
use super::push::{Pushed, push_file};
use super::{WalPushError, system_identifier};

/// Markers of files pushed ahead, inside `pg_wal` (PostgreSQL ignores
/// directories there it does not know; `pg_basebackup` copies none of
/// `pg_wal`'s contents).
pub const MARKER_DIR: &str = "backstop_status";

/// What one call did (printed as JSON, one line).
#[derive(Debug, Clone, Serialize)]
pub struct ArchiveReport {
    /// The file PostgreSQL asked for.
    pub file: String,
    /// How its push ended; `pushed_ahead` when an earlier call had pushed it.
    pub outcome: String,
    /// Files pushed ahead in this call, and how each ended.
    pub ahead: Vec<AheadResult>,
    /// `.ready` files when the call started (the archiver's backlog).
    pub backlog: usize,
    /// Wall time of the call.
    pub seconds: f64,
}

/// One look-ahead push.
#[derive(Debug, Clone, Serialize)]
pub struct AheadResult {
    /// The file.
    pub file: String,
    /// `stored`, `already_archived`, or the error.
    pub outcome: String,
}

fn outcome_name(p: &Pushed) -> &'static str {
    match p {
        Pushed::Stored { .. } => "stored",
        Pushed::AlreadyArchived => "already_archived",
    }
}

/// Archives `wal_path` (`%p`, relative to the data directory or absolute).
pub async fn archive_call(
    store: &dyn ObjectStore,
    config: &WalPushConfig,
    wal_path: &Path,
) -> Result<ArchiveReport, WalPushError> {
    let started = Instant::now();
    let name = wal_path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    let file = WalFile::parse(name).map_err(|e| WalPushError::NotAWalFile(e.to_string()))?;
    let path = if wal_path.is_absolute() {
        wal_path.to_path_buf()
    } else {
        config.pgdata.join(wal_path)
    };
    let pg_wal = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let markers = pg_wal.join(MARKER_DIR);
    let report = |outcome: &str, ahead, backlog| ArchiveReport {
        file: name.to_string(),
        outcome: outcome.to_string(),
        ahead,
        backlog,
        seconds: started.elapsed().as_secs_f64(),
    };
    if take_marker(&markers, name, &path) {
        return Ok(report("pushed_ahead", Vec::new(), 0));
    }
    let sysid = system_identifier(&config.pgdata)?;
    let ready = ready_files(&pg_wal.join("archive_status"));
    let backlog = ready.len();
    log_backlog(&ready, config.backlog_warn);
    let ahead: Vec<WalFile> = ready
        .iter()
        .filter(|r| r.as_str() != name && !markers.join(r.as_str()).exists())
        .filter_map(|r| WalFile::parse(r).ok())
        .take(config.parallel.saturating_sub(1))
        .collect();
    let push = |f: WalFile| {
        let key = WalKey::new(config.namespace.clone(), sysid, f.clone());
        let path = pg_wal.join(f.name());
        async move {
            let result = push_file(store, &key, &path, &config.push).await;
            (f, path, result)
        }
    };
    let (mine, others) = tokio::join!(
        push(file),
        futures::future::join_all(ahead.into_iter().map(push))
    );
    let ahead = others
        .into_iter()
        .map(|(f, p, r)| pushed_ahead(&markers, f, &p, r))
        .collect();
    let outcome = mine.2?;
    Ok(report(outcome_name(&outcome), ahead, backlog))
}

/// Records a look-ahead push: a marker if it committed, a warning if not.
fn pushed_ahead(
    markers: &Path,
    file: WalFile,
    path: &Path,
    result: Result<Pushed, WalPushError>,
) -> AheadResult {
    let outcome = match result {
        Ok(p) => match write_marker(markers, file.name(), path) {
            Ok(()) => outcome_name(&p).to_string(),
            Err(e) => {
                tracing::warn!(file = %file, error = %e, "pushed ahead, but the marker could not be written: the file is pushed again when PostgreSQL asks for it");
                format!("{} (no marker: {e})", outcome_name(&p))
            }
        },
        Err(e) => {
            tracing::warn!(file = %file, error = %e, "a look-ahead push failed; the file is pushed when PostgreSQL asks for it");
            format!("failed: {e}")
        }
    };
    AheadResult {
        file: file.name().to_string(),
        outcome,
    }
}

/// `size mtime_ns` of the file: what a marker must match.
fn fingerprint(path: &Path) -> Option<String> {
    let meta = std::fs::metadata(path).ok()?;
    let mtime = meta
        .modified()
        .ok()?
        .duration_since(UNIX_EPOCH)
        .ok()?
        .as_nanos();
    Some(format!("{} {mtime}\n", meta.len()))
}

fn write_marker(markers: &Path, name: &str, path: &Path) -> std::io::Result<()> {
    let print =
        fingerprint(path).ok_or_else(|| std::io::Error::other("the file cannot be read"))?;
    std::fs::create_dir_all(markers)?;
    let tmp: PathBuf = markers.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, print)?;
    std::fs::rename(&tmp, markers.join(name))
}

/// Whether an earlier call pushed this very file ahead; the marker is
/// removed either way (a stale one, for another file of the name, never
/// counts).
fn take_marker(markers: &Path, name: &str, path: &Path) -> bool {
    let marker = markers.join(name);
    let Ok(recorded) = std::fs::read_to_string(&marker) else {
        return false;
    };
    let _ = std::fs::remove_file(&marker);
    fingerprint(path).is_some_and(|now| now == recorded)
}

/// The `.ready` files' names, oldest first (WAL names sort by position;
/// PostgreSQL archives timeline history files first, and so do we: `0…`
/// history names of a timeline sort before its segments' names only by
/// chance, so they are put first explicitly).
fn ready_files(status: &Path) -> Vec<String> {
    let Ok(dir) = std::fs::read_dir(status) else {
        return Vec::new();
    };
    let mut names: Vec<String> = dir
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter_map(|n| n.strip_suffix(".ready").map(str::to_string))
        .collect();
    names.sort_by_key(|n| (!n.ends_with(".history"), n.clone()));
    names
}

fn log_backlog(ready: &[String], warn_at: usize) {
    if ready.len() >= warn_at {
        tracing::warn!(
            event = "wal_backlog",
            ready = ready.len(),
            oldest = ready.first().map(String::as_str).unwrap_or(""),
            "WAL archiving is behind: {} files wait in archive_status; PostgreSQL keeps them until they are archived (watch pg_wal's disk space; raise BACKSTOP_WAL_PUSH_PARALLEL or check the bucket's reachability)",
            ready.len()
        );
    }
}
