//! How a restore fails, worded for the operator who has to act on it.
//!
//! Each message says what failed and in what state the target was left.
//! Where a message already quotes its cause, the cause is deliberately not
//! also returned by [`std::error::Error::source`]: `{e:#}` (how the CLI
//! prints errors) would show it twice. That is why the `Display` and
//! `Error` impls are written out instead of derived: `thiserror` treats any
//! field named `source` as the source, and the field names are matched on
//! by callers.

use std::fmt;

use backstop_core::config::ConfigError;
use backstop_core::crypto::CryptoError;
use backstop_core::store::StoreError;

use super::report::SkippedBackup;
use crate::pg::PgError;

#[derive(Debug)]
pub enum RestoreError {
    /// Shown as the setting's own message.
    Config(ConfigError),
    NoBackup {
        namespace: String,
        details: String,
        skipped: Vec<SkippedBackup>,
    },
    BadBackup {
        backup_id: String,
        reason: String,
    },
    Store(StoreError),
    Refused {
        database: String,
        reason: String,
    },
    Pg {
        what: String,
        source: PgError,
    },
    /// The backup's data failed authentication or decryption; nothing of
    /// it was used. `object`: the cloud object it was read from.
    Data {
        object: String,
        source: CryptoError,
    },
    /// `pg_restore` failed. `committed`: it was not one transaction
    /// (`--jobs`), so what it wrote stays until the database is dropped.
    PgRestore {
        status: String,
        stderr: String,
        committed: bool,
    },
    /// Verified data could not be spooled to local disk.
    Spool {
        path: String,
        message: String,
    },
    Download {
        store: String,
        source: StoreError,
    },
    CommittedUnverified {
        database: String,
        reason: String,
        cleanup: String,
    },
    /// The backup key given cannot decrypt the chosen backup: a
    /// configuration error, not a drill (it says nothing of the backup).
    WrongKey {
        backup_id: String,
        /// Fingerprints the backup is encrypted to.
        recipients: String,
        /// Fingerprints of the decryption (sub)keys given.
        held: String,
    },
    /// The restore and its drill ran, but the drill's record could not be
    /// written: the audit would never hear of this drill.
    DrillNotRecorded {
        database: String,
        passed: bool,
        reason: String,
    },
}

impl fmt::Display for RestoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RestoreError::Config(e) => fmt::Display::fmt(e, f),
            RestoreError::NoBackup {
                namespace, details, ..
            } => write!(
                f,
                "no restorable backup of namespace {namespace}: {details}"
            ),
            RestoreError::BadBackup { backup_id, reason } => {
                write!(f, "backup {backup_id} cannot be restored: {reason}")
            }
            RestoreError::Store(e) => write!(f, "{e}"),
            RestoreError::Refused { database, reason } => {
                write!(f, "refusing to restore into {database}: {reason}")
            }
            RestoreError::Pg { what, source } => write!(f, "{what}: {source}"),
            RestoreError::Data { object, source } => write!(
                f,
                "the backup data {object} failed verification: {source}. Nothing was committed: pg_restore never received the unverified bytes, so the target is as it was"
            ),
            RestoreError::PgRestore {
                status,
                stderr,
                committed: false,
            } => write!(
                f,
                "pg_restore failed ({status}): {stderr}. Its single transaction was rolled back, so the target is as it was"
            ),
            RestoreError::PgRestore {
                status,
                stderr,
                committed: true,
            } => write!(
                f,
                "pg_restore failed ({status}): {stderr}. It ran with parallel jobs (not one transaction) into a database created for this restore, which is dropped again"
            ),
            RestoreError::Spool { path, message } => write!(
                f,
                "cannot spool the verified backup to {path}: {message}. Set BACKSTOP_SPOOL_DIR (--spool-dir) to a directory with enough free space, or restore without --jobs"
            ),
            RestoreError::Download { store, source } => write!(
                f,
                "reading the backup from {store} failed: {source}. Nothing was committed (pg_restore was stopped before the end of its input)"
            ),
            RestoreError::CommittedUnverified {
                database,
                reason,
                cleanup,
            } => write!(
                f,
                "pg_restore committed, but the restore is not complete and verified ({reason}); the database {database} must not be used{cleanup}"
            ),
            RestoreError::WrongKey {
                backup_id,
                recipients,
                held,
            } => write!(
                f,
                "the backup key (BACKSTOP_BACKUP_KEY / --backup-key) cannot decrypt backup {backup_id}: it is encrypted to {recipients}, the key given decrypts for {held}. Give the backup secret key whose public half the dump job encrypts to (BACKSTOP_RECIPIENTS). Nothing was restored and no drill was recorded: a wrong key says nothing about the backup"
            ),
            RestoreError::DrillNotRecorded {
                database,
                passed,
                reason,
            } => write!(
                f,
                "the backup was restored into {database} and the drill {}, but its record could not be written ({reason}), so the audit will not see this drill. Let the restore job create objects under _drills/ in the backups bucket (or pass --no-drill-record for a restore that is not a drill)",
                if *passed { "passed" } else { "failed" }
            ),
        }
    }
}

impl std::error::Error for RestoreError {
    /// Only a configuration error passes on a source (its own, as a
    /// transparent wrapper would); every other message quotes its cause.
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            RestoreError::Config(e) => std::error::Error::source(e),
            _ => None,
        }
    }
}

impl From<ConfigError> for RestoreError {
    fn from(e: ConfigError) -> Self {
        RestoreError::Config(e)
    }
}

/// A failed statement (from the crate's `server` module), named by what it
/// was for: `count user tables: PostgreSQL query failed (count user tables):
/// ...`. Connecting and other steps name their context with `pg_err`.
impl From<PgError> for RestoreError {
    fn from(source: PgError) -> Self {
        let what = match &source {
            PgError::Query { what, .. } => what.clone(),
            _ => "PostgreSQL".to_string(),
        };
        RestoreError::Pg { what, source }
    }
}

impl backstop_core::error::Classify for RestoreError {
    /// Unreachable clouds or servers may pass; a bad backup, a refused
    /// target, a failed `pg_restore` or a verification failure need a person.
    fn retry(&self) -> backstop_core::error::Retry {
        use backstop_core::error::Retry;
        match self {
            RestoreError::Store(e) | RestoreError::Download { source: e, .. } => e.retry(),
            RestoreError::Pg { source, .. } => source.retry(),
            _ => Retry::Permanent,
        }
    }
}

/// A backup that fails its checks, or is not encrypted to the key given,
/// is an integrity failure; unreachable clouds and servers follow their
/// cause; a refused target is configuration.
impl backstop_core::error::Failure for RestoreError {
    fn failure_kind(&self) -> backstop_core::error::FailureKind {
        use backstop_core::error::FailureKind;
        match self {
            RestoreError::Config(_) | RestoreError::Refused { .. } => FailureKind::Config,
            RestoreError::BadBackup { .. } | RestoreError::WrongKey { .. } => {
                FailureKind::Integrity
            }
            RestoreError::Data { source, .. } => source.failure_kind(),
            RestoreError::Store(e) | RestoreError::Download { source: e, .. } => e.failure_kind(),
            RestoreError::Pg { source, .. } => source.failure_kind(),
            RestoreError::NoBackup { .. }
            | RestoreError::PgRestore { .. }
            | RestoreError::Spool { .. }
            | RestoreError::CommittedUnverified { .. }
            | RestoreError::DrillNotRecorded { .. } => FailureKind::Other,
        }
    }
}

impl RestoreError {
    /// A short name of what failed (logs and the JSON result).
    pub fn kind(&self) -> &'static str {
        match self {
            RestoreError::Config(_) => "config",
            RestoreError::NoBackup { .. } => "no_backup",
            RestoreError::BadBackup { .. } => "bad_backup",
            RestoreError::Store(_) => "store",
            RestoreError::Refused { .. } => "refused",
            RestoreError::Pg { .. } => "postgres",
            RestoreError::Data { .. } => "verification",
            RestoreError::PgRestore { .. } => "pg_restore",
            RestoreError::Spool { .. } => "spool",
            RestoreError::Download { .. } => "download",
            RestoreError::CommittedUnverified { .. } => "committed_unverified",
            RestoreError::WrongKey { .. } => "wrong_key",
            RestoreError::DrillNotRecorded { .. } => "drill_not_recorded",
        }
    }

    /// A refusal or a configuration error: nothing about the backup was
    /// learned, so it is not a drill.
    pub fn is_configuration(&self) -> bool {
        matches!(
            self,
            RestoreError::Config(_)
                | RestoreError::Refused { .. }
                | RestoreError::WrongKey { .. }
                | RestoreError::Data {
                    source: CryptoError::NoMatchingSecretKey { .. },
                    ..
                }
        )
    }
}

/// A failed PostgreSQL step, with what the restore was doing.
pub(super) fn pg_err(what: impl Into<String>) -> impl FnOnce(PgError) -> RestoreError {
    let what = what.into();
    move |source| RestoreError::Pg { what, source }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every variant, with its message as `{e}` prints it.
    fn every_error() -> Vec<(RestoreError, String)> {
        let store = || StoreError::Transient {
            store: "gs://b".into(),
            op: "read",
            key: "k".into(),
            message: "503".into(),
        };
        let pg = || PgError::Query {
            what: "count user tables".into(),
            message: "42P01: nope".into(),
        };
        let config = ConfigError::invalid("--target-db", "x", "bad");
        vec![
            (RestoreError::Config(config.clone()), config.to_string()),
            (
                RestoreError::NoBackup {
                    namespace: "production".into(),
                    details: "gcs (gs://b) has no complete, verified backup".into(),
                    skipped: Vec::new(),
                },
                "no restorable backup of namespace production: gcs (gs://b) has no complete, verified backup".into(),
            ),
            (
                RestoreError::BadBackup {
                    backup_id: "production/app/x".into(),
                    reason: "why".into(),
                },
                "backup production/app/x cannot be restored: why".into(),
            ),
            (RestoreError::Store(store()), store().to_string()),
            (
                RestoreError::Refused {
                    database: "app".into(),
                    reason: "why".into(),
                },
                "refusing to restore into app: why".into(),
            ),
            (
                RestoreError::Pg {
                    what: "count user tables".into(),
                    source: pg(),
                },
                format!("count user tables: {}", pg()),
            ),
            (
                RestoreError::Data {
                    object: "gs://b/k".into(),
                    source: CryptoError::IntegrityCheckFailed,
                },
                format!(
                    "the backup data gs://b/k failed verification: {}. Nothing was committed: pg_restore never received the unverified bytes, so the target is as it was",
                    CryptoError::IntegrityCheckFailed
                ),
            ),
            (
                RestoreError::PgRestore {
                    status: "exit status: 1".into(),
                    stderr: "boom".into(),
                    committed: false,
                },
                "pg_restore failed (exit status: 1): boom. Its single transaction was rolled back, so the target is as it was".into(),
            ),
            (
                RestoreError::PgRestore {
                    status: "exit status: 1".into(),
                    stderr: "boom".into(),
                    committed: true,
                },
                "pg_restore failed (exit status: 1): boom. It ran with parallel jobs (not one transaction) into a database created for this restore, which is dropped again".into(),
            ),
            (
                RestoreError::Spool {
                    path: "/tmp".into(),
                    message: "full".into(),
                },
                "cannot spool the verified backup to /tmp: full. Set BACKSTOP_SPOOL_DIR (--spool-dir) to a directory with enough free space, or restore without --jobs".into(),
            ),
            (
                RestoreError::Download {
                    store: "gs://b".into(),
                    source: store(),
                },
                format!(
                    "reading the backup from gs://b failed: {}. Nothing was committed (pg_restore was stopped before the end of its input)",
                    store()
                ),
            ),
            (
                RestoreError::CommittedUnverified {
                    database: "app".into(),
                    reason: "why".into(),
                    cleanup: ": DROP IT".into(),
                },
                "pg_restore committed, but the restore is not complete and verified (why); the database app must not be used: DROP IT".into(),
            ),
        ]
    }

    #[test]
    fn messages_are_unchanged() {
        for (e, want) in every_error() {
            assert_eq!(e.to_string(), want, "{}", e.kind());
        }
    }

    #[test]
    fn causes_are_printed_once() {
        for (e, _) in every_error() {
            assert!(
                std::error::Error::source(&e).is_none(),
                "{}: the message quotes the cause, so it is not chained as well: {e}",
                e.kind()
            );
        }
        // Config is transparent: its source would be ConfigError's own.
        let e = RestoreError::from(ConfigError::invalid("--x", "v", "bad"));
        assert!(matches!(e, RestoreError::Config(_)));
    }

    #[test]
    fn failed_statements_are_named_by_their_purpose() {
        let query = PgError::Query {
            what: "look up the target database".into(),
            message: "57P01: terminating connection".into(),
        };
        let e = RestoreError::from(query);
        assert!(
            matches!(&e, RestoreError::Pg { what, .. } if what == "look up the target database")
        );
        assert_eq!(
            e.to_string(),
            "look up the target database: PostgreSQL query failed (look up the target database): 57P01: terminating connection"
        );
        let e = pg_err("connect to the target database")(PgError::Url("x".into()));
        assert!(
            e.to_string()
                .starts_with("connect to the target database: "),
            "{e}"
        );
        assert_eq!(e.kind(), "postgres");
    }
}
