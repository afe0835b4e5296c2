//! Segments fetched ahead of the one recovery asks for.
//!
//! PostgreSQL runs `restore_command` for one file at a time and waits for
//! it, so a fetch per 16 MiB segment caps replay at one round trip, key
//! load and download per segment (the top complaint about WAL-G's and
//! Barman's restore speed). A call that fetches segment N from the archive
//! also fetches N+1 .. N+`prefetch` of the same timeline, concurrently (at
//! most [`CONCURRENCY`] downloads at once), each verified exactly as N is,
//! into `pg_wal/backstop_prefetch/<file>`, with `<file>.sha256` beside it
//! recording the sealed manifest's plaintext digest and size, the namespace
//! and the cluster. When PostgreSQL then asks for one of them, the call
//! checks the file against that record (hashing 16 MiB locally costs a few
//! milliseconds) and renames it onto `%p`, without the network. Every file
//! lands by an atomic rename after an fsync; the record is written before
//! the file it describes, so a file with no record is never used.
//!
//! A prefetch that finds a file not archived stops (the end of the archive)
//! and failures are logged only: the call's result is the file asked for.
//! Prefetched segments before the one asked for are deleted (recovery has
//! passed them), as are temporary files older than [`TMP_MAX_AGE`] left
//! by a killed call.

use std::ffi::OsStr;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::StreamExt;
use serde::Serialize;
use sha2::{Digest, Sha256};

use backstop_core::wal::{WalFile, WalKey};

use super::fetch::{Fetcher, Verified, WalFetchConfig, WalFetchError};

/// The prefetch directory's name inside `pg_wal` (PostgreSQL ignores
/// directories there it does not know).
pub const PREFETCH_DIR: &str = "backstop_prefetch";
/// Downloads in flight at once, the asked-for file's besides (each holds
/// about two 8 MiB chunks in memory).
pub const CONCURRENCY: usize = 4;
const RECORD_SUFFIX: &str = ".sha256";
const TMP_SUFFIX: &str = ".backstop-tmp";
/// Temporary files older than this belong to no running call.
const TMP_MAX_AGE: Duration = Duration::from_secs(600);

/// One segment fetched ahead.
#[derive(Debug, Clone, Serialize)]
pub struct AheadResult {
    /// The file.
    pub file: String,
    /// `fetched from gcs`, `not archived`, or the failure.
    pub outcome: String,
}

/// A 0600 file that is removed unless [`Self::persist`]ed.
pub(crate) struct TempFile {
    path: PathBuf,
    file: Option<std::fs::File>,
}

impl TempFile {
    /// A new temporary file for `name` in `dir`.
    pub(crate) fn create(dir: &Path, name: &str) -> std::io::Result<Self> {
        let path = dir.join(format!(".{name}.{:08x}{TMP_SUFFIX}", rand::random::<u32>()));
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let file = options.open(&path)?;
        Ok(Self {
            path,
            file: Some(file),
        })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// The file to write (once).
    pub(crate) fn writer(&mut self) -> std::io::Result<tokio::fs::File> {
        self.file
            .take()
            .map(tokio::fs::File::from_std)
            .ok_or_else(|| std::io::Error::other("the temporary file was written already"))
    }

    /// Renames the (synced) file onto `to` and syncs the directory.
    pub(crate) fn persist(mut self, to: &Path) -> std::io::Result<()> {
        std::fs::rename(&self.path, to)?;
        self.path = PathBuf::new();
        sync_dir(to)
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if !self.path.as_os_str().is_empty() {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Makes a rename onto `path` durable.
fn sync_dir(path: &Path) -> std::io::Result<()> {
    match path.parent().filter(|p| !p.as_os_str().is_empty()) {
        Some(dir) => std::fs::File::open(dir)?.sync_all(),
        None => std::fs::File::open(".")?.sync_all(),
    }
}

/// The prefetch directory: in `%p`'s directory when that is `pg_wal`
/// (where PostgreSQL asks for files), else in the data directory's
/// `pg_wal`; `None` when neither exists.
pub(crate) fn dir_for(dest_dir: &Path, pgdata: &Path) -> Option<PathBuf> {
    if dest_dir.file_name() == Some(OsStr::new("pg_wal")) {
        return Some(dest_dir.join(PREFETCH_DIR));
    }
    let pg_wal = pgdata.join("pg_wal");
    pg_wal.is_dir().then(|| pg_wal.join(PREFETCH_DIR))
}

/// The segment's position in its name (`<log><seg>`, fixed-width hex, so
/// positions compare as text whatever the segment size).
fn position(name: &str) -> Option<&str> {
    name.get(8..24)
}

/// Deletes prefetched segments before `asked` (recovery is past them) and
/// stale temporary files there and in `dest_dir`.
pub(crate) fn remove_stale(dir: &Path, dest_dir: &Path, asked: &WalFile) {
    let here = position(asked.name());
    for scanned in [dir, dest_dir] {
        let Ok(entries) = std::fs::read_dir(scanned) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let stale = if name.ends_with(TMP_SUFFIX) {
                entry
                    .metadata()
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| t.elapsed().ok())
                    .is_some_and(|age| age > TMP_MAX_AGE)
            } else {
                let base = name.strip_suffix(RECORD_SUFFIX).unwrap_or(&name);
                scanned == dir
                    && WalFile::parse(base).is_ok_and(|f| f.is_segment())
                    && position(base) < here
            };
            if stale && std::fs::remove_file(entry.path()).is_ok() {
                tracing::debug!(file = %entry.path().display(), "removed a stale prefetched or temporary file");
            }
        }
    }
}

/// SHA-256 (hex) and size of a local file.
fn hash_file(path: &Path) -> std::io::Result<(String, u64)> {
    let mut file = std::fs::File::open(path)?;
    let (mut hasher, mut size, mut buf) = (Sha256::new(), 0u64, vec![0u8; 1 << 20]);
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            return Ok((hex::encode(hasher.finalize()), size));
        }
        hasher.update(&buf[..n]);
        size += n as u64;
    }
}

/// Moves the prefetched `key` onto `dest` when its record is this
/// archive's and its content matches the recorded digest; `None` (and the
/// network) otherwise. Returns its size.
pub(crate) fn take(
    dir: &Path,
    key: &WalKey,
    config: &WalFetchConfig,
    dest: &Path,
) -> Result<Option<u64>, WalFetchError> {
    let name = key.file.name();
    let (data, record) = (dir.join(name), dir.join(format!("{name}{RECORD_SUFFIX}")));
    if !data.exists() {
        return Ok(None);
    }
    let discard = |why: String| {
        tracing::warn!(file = %data.display(), "not using a prefetched file: {why}; fetching it from the archive");
        let _ = std::fs::remove_file(&data);
        let _ = std::fs::remove_file(&record);
        Ok(None)
    };
    let recorded = match std::fs::read_to_string(&record) {
        Ok(r) => r,
        Err(e) => {
            return discard(format!(
                "its record {} cannot be read ({e})",
                record.display()
            ));
        }
    };
    let (actual, size) = match hash_file(&data) {
        Ok((sha256, size)) => (record_text(&sha256, size, config), size),
        Err(e) => return discard(format!("it cannot be read ({e})")),
    };
    if recorded != actual {
        return discard(format!(
            "it does not match its record (recorded {:?}, found {actual:?})",
            recorded.trim()
        ));
    }
    if let Err(e) = std::fs::rename(&data, dest).and_then(|()| sync_dir(dest)) {
        return discard(format!("it cannot be moved onto {} ({e})", dest.display()));
    }
    let _ = std::fs::remove_file(&record);
    Ok(Some(size))
}

/// A prefetched file's record: the plaintext's SHA-256 and size from the
/// sealed manifest, and the archive it was verified for.
fn record_text(sha256: &str, size: u64, config: &WalFetchConfig) -> String {
    format!(
        "{} {size} {} {}\n",
        sha256.to_ascii_lowercase(),
        config.namespace,
        config.system_identifier
    )
}

/// Whether `size` is a segment size `initdb --wal-segsize` allows.
fn is_segment_size(size: u64) -> bool {
    size.is_power_of_two() && ((1 << 20)..=(1 << 30)).contains(&size)
}

/// Fetches the `prefetch` segments after `asked` (of `segment_size`, as
/// the asked-for segment's manifest records) into `dir`.
pub(crate) async fn fetch_ahead(
    fetcher: &Fetcher<'_>,
    asked: &WalFile,
    segment_size: u64,
    dir: &Path,
) -> Vec<AheadResult> {
    let Some(segno) = asked
        .segment_number(segment_size)
        .filter(|_| is_segment_size(segment_size))
    else {
        tracing::warn!(file = %asked, segment_size, "not prefetching: the archived segment's size is not a WAL segment size");
        return Vec::new();
    };
    if let Err(e) = create_dir(dir) {
        tracing::warn!(dir = %dir.display(), error = %e, "not prefetching: the prefetch directory cannot be created");
        return Vec::new();
    }
    let wanted = (1..=fetcher.config.prefetch as u64)
        .map(|i| WalFile::segment(asked.timeline(), segno + i, segment_size))
        .filter(|f| !dir.join(f.name()).exists());
    let end = AtomicBool::new(false);
    let mut results: Vec<AheadResult> = futures::stream::iter(wanted)
        .map(|f| ahead_one(fetcher, f, dir, &end))
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await;
    results.sort_by(|a, b| a.file.cmp(&b.file));
    results
}

fn create_dir(dir: &Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)
}

async fn ahead_one(
    fetcher: &Fetcher<'_>,
    file: WalFile,
    dir: &Path,
    end: &AtomicBool,
) -> AheadResult {
    let result = |outcome: String| AheadResult {
        file: file.name().to_string(),
        outcome,
    };
    if end.load(Ordering::Relaxed) {
        return result("skipped: past the end of the archive".into());
    }
    let key = fetcher.key(file.clone());
    match fetcher.fetch(&key, dir, None).await {
        Ok(v) => {
            let cloud = v.cloud;
            match keep(dir, fetcher.config, v) {
                Ok(()) => result(format!("fetched from {cloud}")),
                Err(e) => {
                    tracing::warn!(file = %file, error = %e, "a prefetched file could not be stored; it is fetched when PostgreSQL asks for it");
                    result(format!("failed: {e}"))
                }
            }
        }
        Err(WalFetchError::NotArchived { .. }) => {
            end.store(true, Ordering::Relaxed);
            result("not archived".into())
        }
        Err(e) => {
            tracing::warn!(file = %file, error = %e, "a prefetch failed; the file is fetched when PostgreSQL asks for it");
            result(format!("failed: {e}"))
        }
    }
}

/// Writes the record, then renames the verified file into place.
fn keep(dir: &Path, config: &WalFetchConfig, v: Verified) -> std::io::Result<()> {
    let name = v.manifest.file.clone();
    let record = TempFile::create(dir, &format!("{name}{RECORD_SUFFIX}"))?;
    let mut out = record
        .file
        .as_ref()
        .ok_or_else(|| std::io::Error::other("record file"))?;
    let m = &v.manifest;
    let text = record_text(&m.plaintext_sha256, m.plaintext_size, config);
    std::io::Write::write_all(&mut out, text.as_bytes())?;
    out.sync_all()?;
    record.persist(&dir.join(format!("{name}{RECORD_SUFFIX}")))?;
    v.tmp.persist(&dir.join(name))
}
