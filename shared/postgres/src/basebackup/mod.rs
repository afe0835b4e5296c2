//! The base backup job: a physical backup of the whole cluster,
//! `pg_basebackup -Ft -X none` to stdout, streamed through encryption into
//! the backups bucket, then the signed manifest (the commit marker), as a
//! dump is.
//!
//! ```text
//! SQL: system identifier, version, wal_segment_size; REPLICATION? archive_mode?
//!   ──▶ pg_basebackup -D - -Ft -X none --checkpoint=fast (one tar, backup_manifest last)
//!   ──▶ tar observer (whole tar? files, backup_label, backup_manifest's SHA-256 and WAL range)
//!   ──▶ encrypt_stream (recipients' public keys) ──▶ put data.pgdump.pgp (create-only)
//!   ──▶ sign manifest (base_backup: positions, WAL files) ──▶ put manifest.json.sig ──▶ put manifest.json
//! ```
//!
//! Filed as the cluster's series, `<namespace>/.cluster-<system id>/<stamp>`
//! (`BackupId::base_backup`), with the same three objects as a dump. The
//! job only creates objects, and memory stays bounded whatever the cluster
//! size: the tar is never held, only what its observer keeps (a header, the
//! label, the end of the backup manifest).
//!
//! WAL is not in the tar (`-X none`): a restore needs the archive's WAL
//! from `start_wal` to `stop_wal`, so a server without `archive_mode` is
//! refused unless `allow_no_archive`. The server must be PostgreSQL 13 or
//! newer (backup manifests), have a single tablespace (`pg_basebackup`
//! writes only one to stdout) and let the role connect for replication.
//!
//! Failures: when the preconditions fail, nothing is written. When
//! `pg_basebackup` exits non-zero or its output is not one whole tar (the
//! stream then ends in an error, so the upload is abandoned), or the tar
//! disagrees with the server, no signature and no manifest are written.

mod error;
mod members;
mod run;
mod tar;

pub use error::BaseBackupError;
pub use run::{ALLOW_NO_ARCHIVE_VAR, BaseBackupConfig, BaseBackupSummary, run_base_backup};
