//! Backstop: encrypted, verified, cross-cloud PostgreSQL backups.
//!
//! The library holds every behaviour; the binaries under `functions/` only read
//! configuration, build clients and call into it. Cloud SDK types stay at the
//! edges (`store::gcs`, `store::s3`, ...) behind small traits.

pub mod alerts;
pub mod auth;
pub mod config;
pub mod crypto;
pub mod dump;
pub mod events;
pub mod function;
pub mod manifest;
pub mod naming;
pub mod pg;
pub mod replicate;
pub mod restore;
pub mod retention;
pub mod store;
pub mod telemetry;
pub mod trust;
