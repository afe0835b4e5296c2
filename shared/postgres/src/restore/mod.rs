//! The restore job: the newest verified backup of a namespace into a fresh
//! database (per branch, per drill), then a drill that checks row counts.
//!
//! ```text
//! config:  settings ──▶ RestoreConfig (target named exactly once, keys loaded)
//! target:  resolve the target; refuse the source database
//! select:  list <namespace>/ (GCS; S3 when GCS is unreachable or has no usable backup)
//!            └─ newest complete backup whose signed manifest verifies
//! target:  create the database (or a staging one for --replace)
//! stream:  get data ──▶ DigestChecker (size, SHA-256, CRC32C vs the manifest)
//!                   ──▶ decrypt_stream (AES-256, MDC)
//!                   ──▶ held back by one chunk ──▶ pg_restore --single-transaction stdin
//!          (a failed download is retried from the replica: run)
//! drill:   row counts vs manifest.tables ──▶ DrillRecord at _drills/... (the audit reads it)
//! target:  swap the staging database in, or drop what was created on failure
//! report:  RestoreReport (the CLI prints it as JSON), or a RestoreError
//! ```
//!
//! **No unverified data is ever committed**: `pg_restore` never sees the
//! end of its input before the data verified (see `stream`). A failed
//! restore leaves the target as it was, and the source database is never
//! touched (see `target`).
//!
//! The submodules are private; everything callers use is re-exported here,
//! so paths stay `backstop_postgres::restore::X`. `run` holds the order of
//! the steps and nothing else.

mod config;
mod drill;
mod error;
mod report;
mod run;
mod select;
mod source;
mod spool;
mod stream;
mod target;

pub use config::{
    Clouds, NoProgress, Progress, RestoreConfig, RestoreSettings, Target, database_for_branch,
};
pub use error::RestoreError;
pub use report::{DrillFailed, RestoreReport, SkippedBackup, Timings};
pub use run::{FailedRestore, restore, restore_reporting};
