//! Point-in-time recovery (`backstop restore-cluster`): a verified base
//! backup extracted into a new data directory, recovery settings that fetch
//! the archived WAL with `backstop wal-fetch`, and (with `--start`) the
//! server started, watched until it reached the target, and drilled.
//!
//! ```text
//! config:   settings ──▶ PitrConfig (one target, keys loaded, data directory checked)
//! select:   <ns>/.cluster-<id>/ (GCS, then S3) ──▶ newest verified base backup before the target
//!           <ns>/.wal/<id>/ listed ──▶ timeline chain, no gap from start_wal to the target
//! extract:  data ──▶ chunk gate ──▶ decrypt (plaintext size cap) ──▶ tar reader ──▶ files
//!           backup_manifest's SHA-256 vs the signed one; pg_verifybackup -n
//! recovery: recovery.signal, postgresql.auto.conf (restore_command = backstop wal-fetch ...)
//!           --start: pg_ctl start, poll until promoted / paused, FATAL lines reported
//! drill:    the target reached and no further ──▶ DrillRecord (pitr) at _drills/...
//! ```
//!
//! **No unauthenticated byte reaches the disk**: the tar is read from the
//! decrypted stream of authenticated chunks only, and a failure empties
//! the data directory again.

mod config;
mod drill;
mod error;
mod extract;
mod recovery;
mod run;
mod select;
mod timeline;
mod unzstd;

pub use config::{PitrConfig, PitrSettings, RecoveryAction, RecoveryTarget, TimelineChoice};
pub use error::PitrError;
pub use run::{PitrReport, restore_cluster};
