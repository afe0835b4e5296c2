//! Backstop core: everything about a backup that needs no cloud SDK, no
//! PostgreSQL client and no Lambda runtime.
//!
//! - [`naming`]: namespaces, database names, backup ids, object keys, globs.
//! - [`manifest`]: the signed manifest, the commit marker of a backup.
//! - [`crypto`]: the backup format (OpenPGP encryption, signatures,
//!   verification with public keys only).
//! - [`store`]: the object-store contract every adapter implements, an
//!   in-memory store and the contract suite (feature `testing`).
//! - [`retention`]: policy, plan, execution and audit.
//! - [`drill`]: restore drill records.
//! - [`catalog`]: every backup of both clouds, for `backstop list` / `show`.
//! - [`wal`]: the WAL archive's names, positions and signed manifests.
//! - [`replicate`]: verify-then-copy from the backups bucket to the replica.
//! - [`error`]: the one retry classification every error maps to.
//! - [`config`], [`trust`], [`events`], [`alerts`], [`telemetry`]: the
//!   environment, public keys, trigger events, alert sinks and logs.
//!
//! `shared/ARCHITECTURE.md` says which crate may depend on which.

#![warn(missing_docs)]

pub mod alerts;
pub mod catalog;
pub mod config;
pub mod crypto;
pub mod drill;
pub mod error;
pub mod events;
pub mod manifest;
pub mod naming;
pub mod replicate;
pub mod retention;
pub mod store;
pub mod telemetry;
pub mod trust;
pub mod wal;
