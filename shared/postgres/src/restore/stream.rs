//! Download, authentication, decryption and `pg_restore`, as one stream.
//!
//! This is where the restore's central promise is kept: **no byte reaches
//! `pg_restore` before it is authenticated against the signed manifest.**
//! The manifest commits to a SHA-256 of every 8 MiB chunk of the
//! ciphertext (`crypto::chunks`); each chunk is checked before it is
//! decrypted, so a substituted or modified object stops at its first bad
//! chunk and the archive's SQL never sees a byte of it. (The MDC proves
//! nothing here: anyone with the backup *public* key can make a message
//! with a valid one.) Backups written before chunk digests existed are
//! verified whole in a local spool first (`spool`).
//!
//! Decryption is capped at the manifest's plaintext size (a decompression
//! bomb stops there), and the last plaintext chunk is still held back until
//! decryption ended cleanly, so a failure at the very end leaves
//! `pg_restore` waiting for input: it is killed there and its transaction
//! rolls back. A `pg_restore` that exits with input left unread has not
//! restored the whole archive: that is a failure, and the error says
//! whether it committed.

use std::os::fd::AsRawFd;
use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use tokio::io::AsyncWriteExt;
use tokio::process::{Child, ChildStdin, Command};
use tokio::task::JoinHandle;

use backstop_core::crypto::{CryptoError, chunks, counted, decrypt_stream_sized};
use backstop_core::store::{ByteStream, ObjectStore, StoreError};

use super::config::{Progress, RestoreConfig};
use super::error::RestoreError;
use super::select::Candidate;
use super::spool;
use crate::pg::{self, PgError, PgTools, collect_stderr, split_password};

/// Turns an error from the download, authentication or decryption stream
/// into the restore's error; `object` names the cloud object read.
pub(super) fn stream_error(e: std::io::Error, object: &str) -> RestoreError {
    let download = |source: StoreError| RestoreError::Download {
        store: object.to_string(),
        source,
    };
    match CryptoError::from_io(e) {
        CryptoError::Input(inner) => {
            if inner.get_ref().is_some_and(|x| x.is::<StoreError>()) {
                let store_err = *inner
                    .into_inner()
                    .expect("checked")
                    .downcast::<StoreError>()
                    .expect("checked");
                download(store_err)
            } else if inner.get_ref().is_some_and(|x| x.is::<CryptoError>()) {
                RestoreError::Data {
                    object: object.to_string(),
                    source: CryptoError::from_io(inner),
                }
            } else {
                download(StoreError::Transient {
                    store: object.to_string(),
                    op: "read",
                    key: String::new(),
                    message: inner.to_string(),
                })
            }
        }
        other => RestoreError::Data {
            object: object.to_string(),
            source: other,
        },
    }
}

/// The full name of the data object `cand` is read from, for messages.
pub(super) fn object_url(store: &dyn ObjectStore, cand: &Candidate) -> String {
    format!("{}/{}", store.url().trim_end_matches('/'), cand.data_key)
}

/// The backup's ciphertext, authenticated: chunk by chunk as it downloads,
/// or (a backup without chunk digests) whole, in a spool, before the first
/// byte is handed on.
async fn authenticated_ciphertext(
    cfg: &RestoreConfig,
    store: &dyn ObjectStore,
    cand: &Candidate,
    counter: Arc<AtomicU64>,
) -> Result<ByteStream, RestoreError> {
    let object = object_url(store, cand);
    let info = &cand.manifest.ciphertext;
    if info.chunks.is_empty() {
        spool::check_free_space(&cfg.spool_dir, info.size, "the backup's ciphertext")?;
    }
    let body = store
        .read(&cand.data_key)
        .await
        .map_err(|source| RestoreError::Download {
            store: store.url(),
            source,
        })?;
    let body = counted(body, counter);
    if info.chunks.is_empty() {
        tracing::info!(event = "restore_spool_verify", backup = %cand.id, "backup has no chunk digests (older format): verifying it whole in a local spool first");
        return spool::verified_ciphertext(&cfg.spool_dir, body, info, &object).await;
    }
    chunks::authenticated(body, info).map_err(|source| RestoreError::Data { object, source })
}

/// Downloads, authenticates, decrypts and restores the backup into
/// `db_url`: streamed into one `pg_restore` transaction, or (with
/// `cfg.jobs` > 1) spooled and restored by `pg_restore -j`. Returns the
/// plaintext size.
pub(super) async fn restore_data(
    cfg: &RestoreConfig,
    store: &dyn ObjectStore,
    cand: &Candidate,
    db_url: &str,
    progress: &dyn Progress,
) -> Result<u64, RestoreError> {
    let counter = Arc::new(AtomicU64::new(0));
    let object = object_url(store, cand);
    progress.start(&cand.id.to_string(), cand.manifest.ciphertext.size);
    let on_chunk = || progress.advance(counter.load(Ordering::Relaxed));
    let result = async {
        let ciphertext = authenticated_ciphertext(cfg, store, cand, counter.clone()).await?;
        let size = cand.manifest.plaintext_size;
        let plain = decrypt_stream_sized(ciphertext, &cfg.secret_key, Some(size));
        if cfg.jobs > 1 {
            let archive = spool::plaintext(&cfg.spool_dir, plain, size, &object, on_chunk).await?;
            restore_file(&cfg.tools, db_url, archive.path(), cfg.jobs).await?;
            Ok(size)
        } else {
            feed_pg_restore(&cfg.tools, db_url, plain, &object, on_chunk).await
        }
    }
    .await;
    progress.finish();
    result
}

/// How `pg_restore` reads its archive.
enum Input<'a> {
    /// From stdin, in one transaction.
    Stdin,
    /// From a file, with parallel jobs.
    File { path: &'a Path, jobs: u32 },
}

/// `pg_restore` into `db_url`, with the password (if any) in its
/// environment rather than on its command line.
fn spawn_pg_restore(
    tools: &PgTools,
    db_url: &str,
    input: Input<'_>,
) -> Result<Child, RestoreError> {
    let program = tools.program("pg_restore");
    let (dbname, password) = split_password(db_url);
    let mut cmd = Command::new(&program);
    cmd.args(["--no-owner", "--no-acl", "--exit-on-error", "--no-password"])
        .arg(format!("--dbname={dbname}"));
    match input {
        Input::Stdin => {
            cmd.arg("--single-transaction").stdin(Stdio::piped());
        }
        Input::File { path, jobs } => {
            cmd.arg(format!("--jobs={jobs}"))
                .arg(path)
                .stdin(Stdio::null());
        }
    }
    cmd.stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    if let Some(pw) = password {
        cmd.env("PGPASSWORD", pw);
    }
    cmd.spawn().map_err(|e| RestoreError::Pg {
        what: "start pg_restore".into(),
        source: PgError::Spawn {
            program: program.display().to_string(),
            message: e.to_string(),
        },
    })
}

/// `pg_restore -j jobs` of the verified archive at `path`. Not one
/// transaction: the caller restores into a database it created (new or
/// staging) and drops it on failure.
async fn restore_file(
    tools: &PgTools,
    db_url: &str,
    path: &Path,
    jobs: u32,
) -> Result<(), RestoreError> {
    let mut child = spawn_pg_restore(tools, db_url, Input::File { path, jobs })?;
    let stderr = collect_stderr(&mut child);
    let status = child.wait().await.map_err(|e| RestoreError::PgRestore {
        status: "unknown".into(),
        stderr: e.to_string(),
        committed: false,
    })?;
    let tail = stderr.await.unwrap_or_default();
    if status.success() {
        return Ok(());
    }
    Err(RestoreError::PgRestore {
        status: status.to_string(),
        stderr: tail,
        committed: true,
    })
}

/// Runs `pg_restore --single-transaction` into `db_url`, fed by `plain`.
///
/// The last chunk is held back until `plain` has ended cleanly: a stream
/// that fails leaves `pg_restore` waiting for the rest of its input, and it
/// is killed there, so it never commits. Returns the bytes written.
async fn feed_pg_restore(
    tools: &PgTools,
    db_url: &str,
    plain: ByteStream,
    object: &str,
    on_chunk: impl FnMut(),
) -> Result<u64, RestoreError> {
    let mut child = spawn_pg_restore(tools, db_url, Input::Stdin)?;
    let stderr = collect_stderr(&mut child);
    let mut stdin = child.stdin.take().expect("stdin is piped");
    match feed_all_but_last(&mut stdin, plain, object, on_chunk).await {
        Ok(fed) => finish_input(child, stdin, stderr, fed, db_url).await,
        Err(err) => Err(stop_unverified(child, stdin, stderr, db_url, err).await),
    }
}

/// The input, all of it written except the last chunk (held back).
struct Fed {
    held: Option<Bytes>,
    written: u64,
    /// `pg_restore` stopped reading before the end of its input.
    write_failed: bool,
    /// Input never handed to `pg_restore` because it had stopped reading.
    left_over: bool,
}

/// Writes `plain` into `stdin` one chunk behind, so the last chunk is still
/// held when `plain` ends. `Err`: `plain` failed (authentication,
/// decryption or download).
async fn feed_all_but_last(
    stdin: &mut ChildStdin,
    mut plain: ByteStream,
    object: &str,
    mut on_chunk: impl FnMut(),
) -> Result<Fed, RestoreError> {
    let mut fed = Fed {
        held: None,
        written: 0,
        write_failed: false,
        left_over: false,
    };
    loop {
        match plain.next().await {
            Some(Ok(chunk)) => {
                if let Some(prev) = fed.held.replace(chunk) {
                    if stdin.write_all(&prev).await.is_err() {
                        fed.write_failed = true;
                        fed.left_over = true;
                        // pg_restore gave up on its input: if the data is
                        // at fault (a bomb, a size mismatch), say that.
                        if let Some(e) = error_ahead(&mut plain).await {
                            return Err(stream_error(e, object));
                        }
                        return Ok(fed);
                    }
                    fed.written += prev.len() as u64;
                }
                on_chunk();
            }
            Some(Err(e)) => return Err(stream_error(e, object)),
            None => return Ok(fed),
        }
    }
}

/// How far past the point where `pg_restore` stopped reading the input is
/// still decrypted, looking for a data error to report instead.
const LOOK_AHEAD_BYTES: u64 = 64 << 20;

/// The error, if any, in the next [`LOOK_AHEAD_BYTES`] of `plain`.
async fn error_ahead(plain: &mut ByteStream) -> Option<std::io::Error> {
    let mut seen = 0u64;
    while seen < LOOK_AHEAD_BYTES {
        match plain.next().await? {
            Ok(b) => seen += b.len() as u64,
            Err(e) => return Some(e),
        }
    }
    None
}

/// Verification failed: kills `pg_restore` before it sees the end of its
/// input, and returns the error to report.
async fn stop_unverified(
    mut child: Child,
    stdin: ChildStdin,
    stderr: JoinHandle<String>,
    db_url: &str,
    err: RestoreError,
) -> RestoreError {
    let _ = child.start_kill();
    let status = child.wait().await;
    drop(stdin);
    let tail = stderr.await.unwrap_or_default();
    // Killed, it cannot exit 0; a 0 means it had finished on its own.
    if status.as_ref().is_ok_and(|s| s.success()) {
        return RestoreError::CommittedUnverified {
            database: pg::database_name(db_url).unwrap_or_default(),
            reason: err.to_string(),
            cleanup: String::new(),
        };
    }
    tracing::error!(event = "restore_verification_failed", error = %err, pg_restore_stderr = %tail, "stopped pg_restore before the end of its input");
    err
}

/// Bytes written into the pipe that its reader has not taken yet.
fn unread_in_pipe(stdin: &ChildStdin) -> usize {
    let mut n: libc::c_int = 0;
    // SAFETY: FIONREAD writes one c_int through the pointer; the fd is open
    // for the lifetime of `stdin`.
    let rc = unsafe { libc::ioctl(stdin.as_raw_fd(), libc::FIONREAD, &mut n) };
    if rc == 0 { n.max(0) as usize } else { 0 }
}

/// Waits until `pg_restore` has taken everything written into its pipe, or
/// has exited; returns whether it exited with input still in the pipe.
async fn wait_drained(child: &mut Child, stdin: &ChildStdin) -> bool {
    loop {
        let unread = unread_in_pipe(stdin);
        if let Ok(Some(_)) = child.try_wait() {
            return unread > 0;
        }
        if unread == 0 {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The input verified: writes the held-back last chunk, waits until
/// `pg_restore` has read all of it, closes stdin and waits for it to
/// commit. Returns the bytes written.
async fn finish_input(
    mut child: Child,
    mut stdin: ChildStdin,
    stderr: JoinHandle<String>,
    mut fed: Fed,
    db_url: &str,
) -> Result<u64, RestoreError> {
    if !fed.write_failed {
        if let Some(last) = fed.held.take() {
            if stdin.write_all(&last).await.is_err() {
                fed.write_failed = true;
                fed.left_over = true;
            } else {
                fed.written += last.len() as u64;
            }
        }
        if !fed.write_failed {
            let _ = stdin.flush().await;
            fed.left_over = wait_drained(&mut child, &stdin).await;
            let _ = stdin.shutdown().await;
        }
    }
    drop(stdin);
    let status = child.wait().await.map_err(|e| RestoreError::PgRestore {
        status: "unknown".into(),
        stderr: e.to_string(),
        committed: false,
    })?;
    let tail = stderr.await.unwrap_or_default();
    match (status.success(), fed.left_over) {
        (true, false) => Ok(fed.written),
        (true, true) => Err(RestoreError::CommittedUnverified {
            database: pg::database_name(db_url).unwrap_or_default(),
            reason: "pg_restore exited before it had read all of the authenticated archive, so the restore is incomplete".into(),
            cleanup: String::new(),
        }),
        (false, _) => Err(RestoreError::PgRestore {
            status: status.to_string(),
            stderr: tail,
            committed: false,
        }),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use backstop_core::store::byte_stream;

    use super::*;

    /// A stand-in for `pg_restore` that records what it received and whether
    /// it saw the end of its input (where the real one commits).
    fn fake_pg_restore(script: &str) -> (std::path::PathBuf, PgTools) {
        let dir = std::env::temp_dir().join(format!("bs-fake-pgr-{:016x}", rand::random::<u64>()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("pg_restore");
        std::fs::write(&path, format!("#!/bin/sh\n{script}\n")).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        (dir.clone(), PgTools { bindir: Some(dir) })
    }

    /// Feeds `items` to a fake `pg_restore` running `script`; returns its
    /// directory (remove it when done) and the result.
    async fn feed_fake(
        script: &str,
        items: Vec<std::io::Result<&'static [u8]>>,
        pause_before_last: Duration,
    ) -> (std::path::PathBuf, Result<u64, RestoreError>) {
        let (dir, tools) = fake_pg_restore(script);
        let plain = chunks(items, pause_before_last);
        let result = feed_pg_restore(&tools, "postgres://u@h/db", plain, "gs://b/k", || {}).await;
        (dir, result)
    }

    const RECORDER: &str = r#"d="$(dirname "$0")"; cat > "$d/received" && echo eof > "$d/saw_eof""#;

    fn chunks(
        items: Vec<std::io::Result<&'static [u8]>>,
        pause_before_last: Duration,
    ) -> ByteStream {
        let n = items.len();
        byte_stream(futures::stream::iter(items.into_iter().enumerate()).then(
            move |(i, item)| async move {
                if i + 1 == n {
                    tokio::time::sleep(pause_before_last).await;
                }
                item.map(Bytes::from_static)
            },
        ))
    }

    #[tokio::test]
    async fn pg_restore_gets_everything_and_the_end_of_a_clean_stream() {
        let (dir, result) = feed_fake(
            RECORDER,
            vec![Ok(b"first "), Ok(b"second "), Ok(b"last")],
            Duration::ZERO,
        )
        .await;
        let n = result.unwrap();
        assert_eq!(n, 17);
        assert_eq!(
            std::fs::read(dir.join("received")).unwrap(),
            b"first second last"
        );
        assert!(dir.join("saw_eof").exists());
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[tokio::test]
    async fn a_failing_stream_never_lets_pg_restore_see_its_last_chunk_or_the_end() {
        // The failure arrives well after the last data chunk: a restore that
        // passed every chunk on at once would have handed pg_restore the
        // whole archive by then.
        let (dir, result) = feed_fake(
            RECORDER,
            vec![
                Ok(b"first "),
                Ok(b"last"),
                Err(CryptoError::IntegrityCheckFailed.into_io()),
            ],
            Duration::from_millis(500),
        )
        .await;
        let err = result.unwrap_err();
        assert!(
            matches!(
                err,
                RestoreError::Data {
                    source: CryptoError::IntegrityCheckFailed,
                    ..
                }
            ),
            "{err}"
        );
        assert_eq!(
            std::fs::read(dir.join("received")).unwrap_or_default(),
            b"first "
        );
        assert!(
            !dir.join("saw_eof").exists(),
            "pg_restore saw the end of its input"
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[tokio::test]
    async fn pg_restore_failures_are_reported_with_its_stderr() {
        let (dir, result) = feed_fake(
            "echo 'pg_restore: error: relation exists' >&2; exit 1",
            vec![Ok(b"data"), Ok(b"more")],
            Duration::ZERO,
        )
        .await;
        let err = result.unwrap_err();
        assert!(
            matches!(&err, RestoreError::PgRestore { stderr, .. } if stderr.contains("relation exists")),
            "{err}"
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[tokio::test]
    async fn a_pg_restore_that_stops_reading_and_exits_0_is_a_failure_that_says_it_committed() {
        // Reads 10 bytes, then "commits" and exits 0 with input left.
        let (dir, result) = feed_fake(
            "head -c 10 > /dev/null; exit 0",
            vec![Ok(b"0123456789"), Ok(b"abcdefg")],
            Duration::ZERO,
        )
        .await;
        let err = result.unwrap_err();
        assert!(
            matches!(&err, RestoreError::CommittedUnverified { database, .. } if database == "db"),
            "{err}"
        );
        assert!(!err.to_string().contains("rolled back"), "{err}");
        // Exiting non-zero early: nothing committed, and it says so.
        let (dir2, result) = feed_fake(
            "head -c 3 > /dev/null; exit 1",
            vec![Ok(b"0123456789"), Ok(b"abcdefg")],
            Duration::ZERO,
        )
        .await;
        let err = result.unwrap_err();
        assert!(
            matches!(
                &err,
                RestoreError::PgRestore {
                    committed: false,
                    ..
                }
            ),
            "{err}"
        );
        std::fs::remove_dir_all(dir).unwrap();
        std::fs::remove_dir_all(dir2).unwrap();
    }

    #[test]
    fn stream_errors_blame_the_right_party() {
        let lost = StoreError::Transient {
            store: "gs://b".into(),
            op: "read",
            key: "k".into(),
            message: "connection reset".into(),
        };
        assert!(matches!(
            stream_error(lost.into_io(), "gs://b"),
            RestoreError::Download { store, source: StoreError::Transient { message, .. } }
                if store == "gs://b" && message == "connection reset"
        ));
        assert!(matches!(
            stream_error(std::io::Error::other("eof"), "gs://b"),
            RestoreError::Download { source: StoreError::Transient { op: "read", message, .. }, .. }
                if message == "eof"
        ));
        assert!(matches!(
            stream_error(CryptoError::IntegrityCheckFailed.into_io(), "gs://b"),
            RestoreError::Data {
                source: CryptoError::IntegrityCheckFailed,
                ..
            }
        ));
    }
}
