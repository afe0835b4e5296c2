//! The dump job: `pg_dump -Fc` streamed through encryption into the backups
//! bucket, then the signed manifest (the commit marker).
//!
//! ```text
//! snapshot (repeatable read, exported, row counts) ──▶ pg_dump -Fc --snapshot
//!   ──▶ encrypt_stream (recipients' public keys) ──▶ put data.pgdump.pgp (create-only)
//!   ──▶ sign manifest ──▶ put manifest.json.sig ──▶ put manifest.json (commit marker)
//! ```
//!
//! Dump, encryption and upload overlap; memory stays bounded whatever the
//! database size. The job only ever calls
//! [`ObjectStore::put`](backstop_core::store::ObjectStore::put): it never
//! reads, lists or deletes backups, touches no S3 and holds no decryption
//! secret (recipients are public keys; the signing key is its only secret).
//!
//! Failures: when `pg_dump` exits non-zero, the database goes away mid-dump,
//! encryption fails or the data upload fails for good, no signature and no
//! manifest are written and the error says what failed. Whatever partial
//! object may exist is left for retention to clean up (a backup without a
//! manifest is incomplete and is never replicated or restored).
//!
//! Retries: the data goes up as one streaming resumable upload; when its
//! request fails, the GCS client resumes it from the bytes the server kept,
//! replaying up to the last 16 MiB sent (the data stream comes from a running
//! `pg_dump` and cannot be rewound further). A data upload that still fails
//! fails the job, and the scheduler runs it again. The small signature and
//! manifest uploads are retried here with backoff on transient errors
//! ([`RetryPolicy`]).
//!
//! The submodules are private; what callers use is re-exported here, so
//! paths stay `backstop_postgres::dump::X`. `run` holds the order of the
//! steps.

mod config;
mod error;
mod progress;
mod run;
mod upload;

pub use config::{DATABASE_URL_VAR, DEFAULT_NAMESPACE, DumpConfig, DumpSettings, RetryPolicy};
pub(crate) use config::{NAMESPACE_VAR, compression_setting, load_job_keys, namespace_setting};
pub use error::DumpError;
pub use progress::{DumpBytes, DumpCounters, DumpProgress, NoDumpProgress};
pub use run::{DumpSummary, run_dump, run_dump_with_progress};
pub(crate) use upload::{Publisher, pace};
