//! The base backup as the walsender sends it: `IDENTIFY_SYSTEM`, then
//! `BASE_BACKUP` with the server compressing its archive (zstd, on its own
//! threads) and its `backup_manifest` apart, on one replication
//! connection (PostgreSQL 15's protocol: one COPY OUT whose messages say
//! "new archive", "archive data", "manifest", "manifest data").
//!
//! ```text
//! IDENTIFY_SYSTEM ──▶ system identifier
//! BASE_BACKUP (LABEL, CHECKPOINT 'fast', MANIFEST 'yes', COMPRESSION 'zstd', ...)
//!   ──▶ start position and timeline; the tablespaces (one only)
//!   ──▶ COPY OUT: 'n' archive, 'd' data ... ──▶ the plaintext stream (as sent)
//!                 'm' manifest, 'd' data ... ──▶ spool + ManifestReader
//!   ──▶ end position ──▶ a second archive (inject): backup_manifest + end blocks
//! ```
//!
//! The stream is the archive exactly as the server compressed it, then
//! the one-member archive Backstop adds, so that it decompresses to the
//! files `pg_basebackup -D - -Ft -X none` would have written (as two
//! concatenated tars: `tar -i` reads them). What the server
//! said besides the archive is in the [`Outcome`] once the stream ended
//! cleanly; any failure ends the stream in an error, so the upload is
//! abandoned and nothing is committed.

use std::sync::{Arc, Mutex};

use bytes::{Bytes, BytesMut};
use postgres_protocol::message::backend::Message;
use tokio::sync::mpsc;

use backstop_core::store::{ByteStream, byte_stream};
use backstop_core::wal::Lsn;

use super::inject::{Spool, archive_end};
use super::server_manifest::{ManifestReader, ServerManifest};
use crate::pg::PgError;
use crate::replication::{Replication, Rows};

/// Archive bytes gathered into one piece before they go on.
const PIECE: usize = 256 * 1024;

/// How the server compresses the archive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArchiveCompression {
    /// A plain tar (format `tar`).
    None,
    /// zstd at `level` on `workers` threads of the server's (0: on the
    /// walsender itself); format `tar.zst`.
    Zstd { level: u32, workers: u32 },
}

/// What to ask the server for.
#[derive(Debug, Clone)]
pub(crate) struct Request {
    pub label: String,
    pub compression: ArchiveCompression,
    /// `MAX_RATE` in kB/s (32 to 1048576), the server's read rate.
    pub max_rate_kb: Option<u32>,
}

/// What the server said about the backup besides its archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Streamed {
    /// `IDENTIFY_SYSTEM`'s, on the connection that took the backup.
    pub system_identifier: u64,
    pub start_timeline: u32,
    pub start_lsn: Lsn,
    pub end_lsn: Lsn,
    pub manifest: ServerManifest,
    /// Archive bytes as the server sent them (compressed, if so).
    pub archive_bytes: u64,
}

/// Filled in when the stream ended cleanly.
pub(crate) type Outcome = Arc<Mutex<Option<Streamed>>>;

/// Starts the backup: once the server has checkpointed and begun sending,
/// the stream of the archive (then its end) and where the rest arrives.
pub(crate) async fn start(url: &str, request: &Request) -> Result<(ByteStream, Outcome), PgError> {
    let mut conn = Replication::connect(url).await?;
    let identity = conn.query("IDENTIFY_SYSTEM").await?;
    let system_identifier = single(&identity, 0, "IDENTIFY_SYSTEM")?;
    conn.command(&base_backup_command(request)).await?;
    let begun = conn
        .result_set("BASE_BACKUP's start position")
        .await
        .map_err(without_zstd)?;
    let start_lsn: Lsn = single(&begun, 0, "BASE_BACKUP's start position")?;
    let start_timeline = single(&begun, 1, "BASE_BACKUP's start timeline")?;
    let tablespaces = conn.result_set("BASE_BACKUP's tablespaces").await?;
    if tablespaces.len() != 1 {
        return Err(protocol(format!(
            "the cluster has {} tablespaces; a base backup takes a cluster with its data directory only (move the tables and drop the other tablespaces)",
            tablespaces.len()
        )));
    }
    match conn.next().await? {
        Message::CopyOutResponse(_) => {}
        other => return Err(conn.unexpected(&other, "BASE_BACKUP")),
    }
    let (tx, rx) = mpsc::channel::<std::io::Result<Bytes>>(8);
    let outcome = Outcome::default();
    let reader = Reader {
        conn,
        tx,
        zstd: matches!(request.compression, ArchiveCompression::Zstd { .. }),
        piece: BytesMut::with_capacity(PIECE),
        archives: 0,
        archive_bytes: 0,
        manifest: None,
    };
    let started = Started {
        system_identifier,
        start_timeline,
        start_lsn,
    };
    tokio::spawn(reader.run(started, outcome.clone()));
    let stream = byte_stream(futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    }));
    Ok((stream, outcome))
}

fn base_backup_command(request: &Request) -> String {
    let label = request.label.replace('\'', "''");
    let mut options = vec![
        format!("LABEL '{label}'"),
        "CHECKPOINT 'fast'".to_string(),
        "MANIFEST 'yes'".to_string(),
        "MANIFEST_CHECKSUMS 'CRC32C'".to_string(),
    ];
    if let ArchiveCompression::Zstd { level, workers } = request.compression {
        options.push("COMPRESSION 'zstd'".into());
        options.push(format!(
            "COMPRESSION_DETAIL 'level={level},workers={workers}'"
        ));
    }
    if let Some(rate) = request.max_rate_kb {
        options.push(format!("MAX_RATE {rate}"));
    }
    format!("BASE_BACKUP ({})", options.join(", "))
}

/// Column `column` of the only row, parsed.
fn single<T: std::str::FromStr>(rows: &Rows, column: usize, what: &str) -> Result<T, PgError> {
    let text = match rows.as_slice() {
        [row] => row.get(column).cloned().flatten(),
        _ => None,
    };
    text.as_deref()
        .and_then(|t| t.parse().ok())
        .ok_or_else(|| protocol(format!("{what} is not one readable value: {rows:?}")))
}

/// A server built without zstd says so ("zstd compression is not
/// supported by this build"): say what to do about it.
fn without_zstd(e: PgError) -> PgError {
    match e {
        PgError::Query { what, message } if message.contains("not supported by this build") => {
            PgError::Query {
                what,
                message: format!(
                    "{message}; take the base backup uncompressed with --compression-level 0 (BACKSTOP_COMPRESSION_LEVEL=0), or use a server built with zstd"
                ),
            }
        }
        other => other,
    }
}

fn protocol(message: String) -> PgError {
    PgError::Query {
        what: "BASE_BACKUP".into(),
        message,
    }
}

struct Started {
    system_identifier: u64,
    start_timeline: u32,
    start_lsn: Lsn,
}

/// Reads the COPY OUT into the stream.
struct Reader {
    conn: Replication,
    tx: mpsc::Sender<std::io::Result<Bytes>>,
    zstd: bool,
    piece: BytesMut,
    archives: u32,
    archive_bytes: u64,
    /// Once the manifest began.
    manifest: Option<(Spool, ManifestReader)>,
}

/// The reader's own failures, or a stream nobody reads any more.
enum Stop {
    Failed(String),
    Dropped,
}

impl From<PgError> for Stop {
    fn from(e: PgError) -> Self {
        Stop::Failed(e.to_string())
    }
}

impl Reader {
    async fn run(mut self, started: Started, outcome: Outcome) {
        match self.copy(started).await {
            Ok(streamed) => {
                *outcome.lock().expect("outcome") = Some(streamed);
            }
            Err(Stop::Failed(message)) => {
                let _ = self.tx.send(Err(std::io::Error::other(message))).await;
            }
            Err(Stop::Dropped) => {}
        }
    }

    async fn copy(&mut self, started: Started) -> Result<Streamed, Stop> {
        loop {
            match self.conn.next().await? {
                Message::CopyData(body) => self.data(body.into_bytes()).await?,
                Message::CopyDone => break,
                other => return Err(self.conn.unexpected(&other, "the backup's COPY").into()),
            }
        }
        self.flush().await?;
        let ended = self.conn.result_set("BASE_BACKUP's end position").await?;
        let end_lsn: Lsn = single(&ended, 0, "BASE_BACKUP's end position")?;
        loop {
            match self.conn.next().await? {
                Message::ReadyForQuery(_) => break,
                Message::CommandComplete(_) => {}
                other => return Err(self.conn.unexpected(&other, "BASE_BACKUP's end").into()),
            }
        }
        self.conn.close().await;
        let Some((spool, reader)) = self.manifest.take() else {
            return Err(Stop::Failed(
                "the server sent no backup manifest (MANIFEST 'yes' was asked)".into(),
            ));
        };
        let manifest = reader.finish().map_err(Stop::Failed)?;
        self.send_end(spool).await?;
        Ok(Streamed {
            system_identifier: started.system_identifier,
            start_timeline: started.start_timeline,
            start_lsn: started.start_lsn,
            end_lsn,
            manifest,
            archive_bytes: self.archive_bytes,
        })
    }

    /// One CopyData message: its type byte, then its content.
    async fn data(&mut self, message: Bytes) -> Result<(), Stop> {
        let Some((&kind, _)) = message.split_first() else {
            return Err(Stop::Failed(
                "the server sent an empty CopyData message".into(),
            ));
        };
        match kind {
            b'n' => {
                self.archives += 1;
                if self.archives > 1 || self.manifest.is_some() {
                    return Err(Stop::Failed(
                        "the server sent a second archive (a second tablespace appeared during the backup?)".into(),
                    ));
                }
            }
            b'd' if self.manifest.is_some() => {
                let (spool, reader) = self.manifest.as_mut().expect("the manifest began");
                reader.data(&message[1..]);
                spool.write(&message[1..]).map_err(|e| {
                    Stop::Failed(format!("spooling the backup manifest failed: {e}"))
                })?;
            }
            b'd' if self.archives == 1 => {
                self.archive_bytes += message.len() as u64 - 1;
                self.piece.extend_from_slice(&message[1..]);
                if self.piece.len() >= PIECE {
                    self.flush().await?;
                }
            }
            b'm' => {
                self.flush().await?;
                self.manifest = Some(Default::default());
            }
            b'p' => {}
            other => {
                return Err(Stop::Failed(format!(
                    "the server sent a CopyData message of type {:?}, which BASE_BACKUP does not send{}",
                    char::from(other),
                    if other == b'd' {
                        " before an archive began"
                    } else {
                        ""
                    }
                )));
            }
        }
        Ok(())
    }

    async fn flush(&mut self) -> Result<(), Stop> {
        if self.piece.is_empty() {
            return Ok(());
        }
        let piece = self.piece.split().freeze();
        self.tx.send(Ok(piece)).await.map_err(|_| Stop::Dropped)
    }

    /// The manifest's archive, after the server's last archive byte.
    async fn send_end(&mut self, spool: Spool) -> Result<(), Stop> {
        let mtime = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let zstd = self.zstd;
        // A spooled file is read on a blocking thread, its pieces sent as
        // they are read; once the reader is gone the rest is skipped.
        let tx = self.tx.clone();
        let sent = tokio::task::spawn_blocking(move || {
            let mut dropped = false;
            archive_end(spool, mtime, zstd, |piece| {
                dropped = dropped || tx.blocking_send(Ok(piece)).is_err();
            })
            .map(|()| !dropped)
        })
        .await
        .map_err(|e| Stop::Failed(format!("writing the manifest's archive failed: {e}")))?;
        match sent {
            Ok(true) => Ok(()),
            Ok(false) => Err(Stop::Dropped),
            Err(e) => Err(Stop::Failed(format!(
                "reading the spooled backup manifest failed: {e}"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_server_without_zstd_is_told_what_to_do() {
        let e = without_zstd(PgError::Query {
            what: "replication".into(),
            message: "0A000: zstd compression is not supported by this build".into(),
        });
        assert!(e.to_string().contains("--compression-level 0"), "{e}");
        let other = without_zstd(PgError::Query {
            what: "replication".into(),
            message: "42501: permission denied".into(),
        });
        assert!(
            !other.to_string().contains("--compression-level"),
            "{other}"
        );
    }

    #[test]
    fn the_command_asks_for_what_the_backup_needs() {
        let request = Request {
            label: "backstop it's".into(),
            compression: ArchiveCompression::Zstd {
                level: 3,
                workers: 2,
            },
            max_rate_kb: Some(1024),
        };
        assert_eq!(
            base_backup_command(&request),
            "BASE_BACKUP (LABEL 'backstop it''s', CHECKPOINT 'fast', MANIFEST 'yes', MANIFEST_CHECKSUMS 'CRC32C', COMPRESSION 'zstd', COMPRESSION_DETAIL 'level=3,workers=2', MAX_RATE 1024)"
        );
        let plain = Request {
            compression: ArchiveCompression::None,
            max_rate_kb: None,
            ..request
        };
        assert_eq!(
            base_backup_command(&plain),
            "BASE_BACKUP (LABEL 'backstop it''s', CHECKPOINT 'fast', MANIFEST 'yes', MANIFEST_CHECKSUMS 'CRC32C')"
        );
    }
}
