//! The base backup job: a physical backup of the whole cluster, taken
//! over a replication connection of our own with the server compressing
//! its archive (zstd), streamed through encryption into the backups
//! bucket, then the signed manifest (the commit marker), as a dump is.
//!
//! ```text
//! SQL: system identifier, version, wal_segment_size; REPLICATION? archive_mode?
//!   ──▶ IDENTIFY_SYSTEM; BASE_BACKUP (CHECKPOINT 'fast', MANIFEST 'yes', COMPRESSION 'zstd')
//!   ──▶ the archive as sent + backup_manifest and the end blocks (stream, inject)
//!   ──▶ encrypt_stream (recipients' public keys) ──▶ put data.pgdump.pgp (create-only)
//!   ──▶ sign manifest (base_backup: positions, WAL files) ──▶ put manifest.json.sig ──▶ put manifest.json
//! ```
//!
//! The plaintext inside the encryption decompresses (format `tar.zst`; a
//! plain tar, `tar`, at level 0) to the tar `pg_basebackup -D - -Ft -X
//! none` writes, `backup_manifest` last. The server compresses on threads
//! of its own, so the backup costs the job little CPU and the network
//! carries the compressed bytes; and `pg_basebackup` could not give that:
//! it does not write a server-compressed tar with its manifest to stdout.
//!
//! Filed as the cluster's series, `<namespace>/.cluster-<system id>/<stamp>`
//! (`BackupId::base_backup`), with the same three objects as a dump. The
//! job only creates objects, and memory stays bounded whatever the cluster
//! size: the archive passes in pieces, and the backup manifest (about 150
//! bytes a file) is spooled to an unnamed temporary file past 8 MiB.
//!
//! WAL is not in the backup: a restore needs the archive's WAL from
//! `start_wal` to `stop_wal`, so a server without `archive_mode` is
//! refused unless `allow_no_archive`. The server must be PostgreSQL 15 or
//! newer (server-side compression and this protocol; 13 and 14 are out of
//! support), have a single tablespace and let the role connect for
//! replication.
//!
//! Failures: when the preconditions fail, nothing is written. When the
//! connection fails or the server errs during the backup (the stream then
//! ends in an error, so the upload is abandoned), or its answers disagree,
//! no signature and no manifest are written.

mod error;
mod inject;
mod run;
mod server_manifest;
mod stream;

pub use error::BaseBackupError;
pub use run::{
    ALLOW_NO_ARCHIVE_VAR, BaseBackupConfig, BaseBackupSummary, DEFAULT_SERVER_WORKERS,
    run_base_backup,
};
pub use stream::ArchiveCompression;
