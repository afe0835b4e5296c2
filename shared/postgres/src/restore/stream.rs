//! Download, verification, decryption and `pg_restore`, as one stream.
//!
//! This is where the restore's central promise is kept: **no unverified
//! data is ever committed.** The digests and the MDC can only be checked
//! after the last byte, while `pg_restore --single-transaction` commits as
//! soon as it reads the end of its input. So the last plaintext chunk is
//! held back until the decryption stream (which carries the digest check of
//! the ciphertext) has ended cleanly; on any failure `pg_restore` is killed
//! while it still waits for that chunk, its connection drops and the server
//! rolls the transaction back. (A custom-format archive's last bytes always
//! belong to something `pg_restore` must read, the TOC or the end of the
//! last data block, so it cannot finish without them.)

use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use futures::StreamExt;
use tokio::io::AsyncWriteExt;
use tokio::process::{Child, ChildStdin, Command};
use tokio::task::JoinHandle;

use backstop_core::crypto::{CryptoError, DigestChecker};
use backstop_core::manifest::CiphertextInfo;
use backstop_core::store::{ByteStream, ObjectStore, StoreError, byte_stream};

use super::config::{Progress, RestoreConfig, split_password};
use super::error::RestoreError;
use super::select::Candidate;
use crate::pg::{self, PgError, PgTools, collect_stderr};

/// Passes the ciphertext through, counting bytes and checking size and
/// digests against the manifest; a mismatch ends the stream with an error
/// instead of a clean end (so decryption, and pg_restore after it, never see
/// a clean end of unverified data).
fn checked(body: ByteStream, expected: &CiphertextInfo, counter: Arc<AtomicU64>) -> ByteStream {
    let checker = DigestChecker::new(expected);
    byte_stream(futures::stream::unfold(
        (body, Some(checker)),
        move |(mut body, checker)| {
            let counter = counter.clone();
            async move {
                let mut checker = checker?;
                match body.next().await {
                    Some(Ok(chunk)) => match checker.feed(&chunk) {
                        Ok(()) => {
                            counter.fetch_add(chunk.len() as u64, Ordering::Relaxed);
                            Some((Ok(chunk), (body, Some(checker))))
                        }
                        Err(e) => Some((Err(e.into_io()), (body, None))),
                    },
                    Some(Err(e)) => Some((Err(e), (body, None))),
                    None => match checker.finish() {
                        Ok(_) => None,
                        Err(e) => Some((Err(e.into_io()), (body, None))),
                    },
                }
            }
        },
    ))
}

/// Turns an error from the decryption stream into the restore's error.
fn stream_error(e: std::io::Error, store: &str) -> RestoreError {
    match CryptoError::from_io(e) {
        CryptoError::Input(inner) => {
            if inner.get_ref().is_some_and(|x| x.is::<StoreError>()) {
                let store_err = *inner
                    .into_inner()
                    .expect("checked")
                    .downcast::<StoreError>()
                    .expect("checked");
                RestoreError::Download {
                    store: store.to_string(),
                    source: store_err,
                }
            } else if inner.get_ref().is_some_and(|x| x.is::<CryptoError>()) {
                RestoreError::Data {
                    source: CryptoError::from_io(inner),
                }
            } else {
                RestoreError::Download {
                    store: store.to_string(),
                    source: StoreError::Transient {
                        store: store.to_string(),
                        op: "read",
                        key: String::new(),
                        message: inner.to_string(),
                    },
                }
            }
        }
        other => RestoreError::Data { source: other },
    }
}

/// Downloads, verifies, decrypts and feeds `pg_restore`. Returns the
/// plaintext size. See the module documentation for the hold-back rule.
pub(super) async fn stream_into_pg_restore(
    cfg: &RestoreConfig,
    store: &dyn ObjectStore,
    cand: &Candidate,
    db_url: &str,
    progress: &dyn Progress,
) -> Result<u64, RestoreError> {
    let body = store
        .read(&cand.data_key)
        .await
        .map_err(|source| RestoreError::Download {
            store: store.url(),
            source,
        })?;
    let counter = Arc::new(AtomicU64::new(0));
    let ciphertext = checked(body, &cand.manifest.ciphertext, counter.clone());
    let plain = backstop_core::crypto::decrypt_stream(ciphertext, &cfg.secret_key);
    progress.start(&cand.id.to_string(), cand.manifest.ciphertext.size);
    let result = feed_pg_restore(&cfg.tools, db_url, plain, &store.url(), || {
        progress.advance(counter.load(Ordering::Relaxed))
    })
    .await;
    progress.finish();
    result
}

/// Runs `pg_restore --single-transaction` into `db_url`, fed by `plain`.
///
/// The last chunk is held back until `plain` has ended cleanly: a stream
/// that fails (digest, MDC, download) leaves `pg_restore` waiting for the
/// rest of its input, and it is killed there, so it never commits. Returns
/// the bytes written.
async fn feed_pg_restore(
    tools: &PgTools,
    db_url: &str,
    plain: ByteStream,
    store_url: &str,
    on_chunk: impl FnMut(),
) -> Result<u64, RestoreError> {
    let mut child = spawn_pg_restore(tools, db_url)?;
    let stderr = collect_stderr(&mut child);
    let mut stdin = child.stdin.take().expect("stdin is piped");
    match feed_all_but_last(&mut stdin, plain, store_url, on_chunk).await {
        Ok(fed) => finish_input(child, stdin, stderr, fed).await,
        Err(err) => Err(stop_unverified(child, stdin, stderr, db_url, err).await),
    }
}

/// `pg_restore` reading stdin, with the password (if any) in its
/// environment rather than on its command line.
fn spawn_pg_restore(tools: &PgTools, db_url: &str) -> Result<Child, RestoreError> {
    let program = tools.program("pg_restore");
    let (dbname, password) = split_password(db_url);
    let mut cmd = Command::new(&program);
    cmd.args([
        "--single-transaction",
        "--no-owner",
        "--no-acl",
        "--exit-on-error",
        "--no-password",
    ])
    .arg(format!("--dbname={dbname}"))
    .stdin(Stdio::piped())
    .stdout(Stdio::null())
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

/// The input, all of it written except the last chunk (held back).
struct Fed {
    held: Option<Bytes>,
    written: u64,
    /// `pg_restore` stopped reading: it failed, and its status and stderr
    /// say why.
    write_failed: bool,
}

/// Writes `plain` into `stdin` one chunk behind, so the last chunk is still
/// held when `plain` ends. `Err`: `plain` failed (verification or download).
async fn feed_all_but_last(
    stdin: &mut ChildStdin,
    mut plain: ByteStream,
    store_url: &str,
    mut on_chunk: impl FnMut(),
) -> Result<Fed, RestoreError> {
    let mut fed = Fed {
        held: None,
        written: 0,
        write_failed: false,
    };
    loop {
        match plain.next().await {
            Some(Ok(chunk)) => {
                if let Some(prev) = fed.held.replace(chunk) {
                    if stdin.write_all(&prev).await.is_err() {
                        fed.write_failed = true;
                        return Ok(fed);
                    }
                    fed.written += prev.len() as u64;
                }
                on_chunk();
            }
            Some(Err(e)) => return Err(stream_error(e, store_url)),
            None => return Ok(fed),
        }
    }
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

/// The input verified: writes the held-back last chunk, closes stdin and
/// waits for `pg_restore` to commit. Returns the bytes written.
async fn finish_input(
    mut child: Child,
    mut stdin: ChildStdin,
    stderr: JoinHandle<String>,
    mut fed: Fed,
) -> Result<u64, RestoreError> {
    if !fed.write_failed {
        if let Some(last) = fed.held.take() {
            if stdin.write_all(&last).await.is_err() {
                fed.write_failed = true;
            } else {
                fed.written += last.len() as u64;
            }
        }
        if !fed.write_failed {
            let _ = stdin.shutdown().await;
        }
    }
    drop(stdin);
    let status = child.wait().await.map_err(|e| RestoreError::PgRestore {
        status: "unknown".into(),
        stderr: e.to_string(),
    })?;
    let tail = stderr.await.unwrap_or_default();
    if status.success() && !fed.write_failed {
        Ok(fed.written)
    } else {
        Err(RestoreError::PgRestore {
            status: status.to_string(),
            stderr: tail,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

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
        let (dir, tools) = fake_pg_restore(RECORDER);
        let plain = chunks(
            vec![Ok(b"first "), Ok(b"second "), Ok(b"last")],
            Duration::ZERO,
        );
        let n = feed_pg_restore(&tools, "postgres://u@h/db", plain, "gs://b", || {})
            .await
            .unwrap();
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
        let (dir, tools) = fake_pg_restore(RECORDER);
        // The failure arrives well after the last data chunk: a restore that
        // passed every chunk on at once would have handed pg_restore the
        // whole archive by then.
        let plain = chunks(
            vec![
                Ok(b"first "),
                Ok(b"last"),
                Err(CryptoError::IntegrityCheckFailed.into_io()),
            ],
            Duration::from_millis(500),
        );
        let err = feed_pg_restore(&tools, "postgres://u@h/db", plain, "gs://b", || {})
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                RestoreError::Data {
                    source: CryptoError::IntegrityCheckFailed
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
        let (dir, tools) = fake_pg_restore("echo 'pg_restore: error: relation exists' >&2; exit 1");
        let plain = chunks(vec![Ok(b"data"), Ok(b"more")], Duration::ZERO);
        let err = feed_pg_restore(&tools, "postgres://u@h/db", plain, "gs://b", || {})
            .await
            .unwrap_err();
        assert!(
            matches!(&err, RestoreError::PgRestore { stderr, .. } if stderr.contains("relation exists")),
            "{err}"
        );
        std::fs::remove_dir_all(dir).unwrap();
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
                source: CryptoError::IntegrityCheckFailed
            }
        ));
    }
}
