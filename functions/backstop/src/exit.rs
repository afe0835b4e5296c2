//! Exit statuses: one table ([`Code`]) for every command, and the one place
//! that maps an error to it ([`classify`]): the anyhow chain is walked and
//! each cause downcast to the library's error types, which say what they
//! mean through [`Failure`] (next to each type, as `Classify` is).
//!
//! Exceptions, both for PostgreSQL: `wal-fetch` keeps restore_command's
//! contract (1 = not archived, 126 = stop recovery, usage errors too;
//! [`Exit`]); `wal-push` uses the table, since the archiver only tells zero
//! from non-zero, and every code stays below 126 (above it the archiver
//! restarts). `status --format nagios` reports in the Nagios plugin
//! convention instead ([`Code::nagios`]).

use std::fmt;

use backstop_core::error::{Failure, FailureKind};
use backstop_core::retention::Condition;

/// The exit status of every command. The numbers are an interface: they
/// never change meaning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    /// Success; for `status`: healthy.
    Ok = 0,
    /// A failure of no other kind.
    Failure = 1,
    /// The command line does not parse (clap's status).
    Usage = 2,
    /// `status`: the audit has warning findings (`retention` succeeds).
    Warning = 3,
    /// `status`/`retention`: the audit has critical findings.
    Critical = 4,
    /// A setting is missing or invalid.
    Config = 5,
    /// A cloud (or KMS, or PostgreSQL) did not answer.
    Unreachable = 6,
    /// A backup failed verification: tampered, unverifiable, or not
    /// encrypted to the key given.
    Integrity = 7,
    /// A restore drill did not match its manifest (`restore`,
    /// `restore-cluster`), or a namespace's latest drill failed (`status`).
    DrillMismatch = 8,
}

impl Code {
    /// Every code, in the order of the table.
    #[cfg(test)]
    pub const ALL: [Code; 9] = [
        Code::Ok,
        Code::Failure,
        Code::Usage,
        Code::Warning,
        Code::Critical,
        Code::Config,
        Code::Unreachable,
        Code::Integrity,
        Code::DrillMismatch,
    ];

    /// The process exit status.
    pub fn status(self) -> u8 {
        self as u8
    }

    /// The stable name (the JSON failure's `error`).
    pub fn name(self) -> &'static str {
        match self {
            Code::Ok => "ok",
            Code::Failure => "failure",
            Code::Usage => "usage",
            Code::Warning => "warning",
            Code::Critical => "critical",
            Code::Config => "config",
            Code::Unreachable => "unreachable",
            Code::Integrity => "integrity",
            Code::DrillMismatch => "drill_mismatch",
        }
    }

    /// What to do about it (the JSON failure's `hint`).
    pub fn hint(self) -> &'static str {
        match self {
            Code::Ok => "nothing to do",
            Code::Failure => "read the message: it says what failed and what to do",
            Code::Usage => "see `backstop --help` and `backstop <command> --help`",
            Code::Warning => "look at the warning findings (`backstop status`) when convenient",
            Code::Critical => {
                "act now: a backup is missing, stale, unreplicated or invalid (`backstop status` lists the findings)"
            }
            Code::Config => "fix the setting or option the message names, then run again",
            Code::Unreachable => {
                "check the endpoint, network and credentials (`backstop ping`), then run again: nothing was changed"
            }
            Code::Integrity => {
                "do not use this backup: find out who changed it (or use the backup key it is encrypted to), and restore an older one"
            }
            Code::DrillMismatch => {
                "the backup did not restore as its manifest says: inspect the drill record, take a new backup and drill it"
            }
        }
    }

    /// The Nagios plugin status for `status --format nagios`: 0 OK,
    /// 1 WARNING, 2 CRITICAL, 3 UNKNOWN. A failed drill is a warning (as
    /// the audit rates it); an unreachable cloud is critical (the plugin
    /// guidelines keep UNKNOWN for the plugin's own failures, such as bad
    /// settings).
    pub fn nagios(self) -> u8 {
        match self {
            Code::Ok => 0,
            Code::Warning | Code::DrillMismatch => 1,
            Code::Critical | Code::Unreachable | Code::Integrity => 2,
            Code::Failure | Code::Usage | Code::Config => 3,
        }
    }

    /// The status of a health check's verdict.
    pub fn of_condition(condition: Condition) -> Code {
        match condition {
            Condition::Healthy => Code::Ok,
            Condition::Warning => Code::Warning,
            Condition::DrillFailed => Code::DrillMismatch,
            Condition::Critical => Code::Critical,
            Condition::Unreachable => Code::Unreachable,
        }
    }

    fn of_kind(kind: FailureKind) -> Code {
        match kind {
            FailureKind::Config => Code::Config,
            FailureKind::Unreachable => Code::Unreachable,
            FailureKind::Integrity => Code::Integrity,
            FailureKind::DrillMismatch => Code::DrillMismatch,
            FailureKind::Other => Code::Failure,
        }
    }
}

/// The table for `--help` (a test keeps it equal to [`Code`]).
pub const EXIT_CODES_HELP: &str = "\
Exit status (every command; stable):
  0  ok              success; status: healthy
  1  failure         any other failure
  2  usage           the command line does not parse
  3  warning         status: warning findings
  4  critical        status/retention: critical findings
  5  config          a setting is missing or invalid
  6  unreachable     a cloud (or KMS, PostgreSQL) did not answer
  7  integrity       a backup failed verification (tampered, unverifiable, wrong key)
  8  drill_mismatch  a restore drill did not match; status: a latest drill failed
wal-fetch keeps PostgreSQL's restore_command contract: 1 not archived, 126 stop recovery.
status --format nagios exits 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN.
With --json a failure is printed on stderr as
{\"error\": NAME, \"exit_code\": N, \"message\": ..., \"hint\": ...}.";

/// A failure with an exit status of its own, outside the table: for
/// callers that read the status by another contract (PostgreSQL running
/// `wal-fetch`, a Nagios check). `quiet`: the command already said
/// everything on stdout, so nothing is printed on stderr.
#[derive(Debug)]
pub struct Exit {
    status: u8,
    quiet: bool,
    error: anyhow::Error,
}

impl Exit {
    /// `error`, to end the process with `status`.
    pub fn new(status: u8, error: impl Into<anyhow::Error>) -> Self {
        Self {
            status,
            quiet: false,
            error: error.into(),
        }
    }

    /// `error`, to end the process with `status` and print nothing more.
    pub fn quiet(status: u8, error: impl Into<anyhow::Error>) -> Self {
        Self {
            quiet: true,
            ..Self::new(status, error)
        }
    }
}

impl fmt::Display for Exit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#}", self.error)
    }
}

impl std::error::Error for Exit {}

/// The audit found problems: the command worked, its verdict is the status.
#[derive(Debug)]
pub struct Unhealthy {
    /// The verdict.
    pub condition: Condition,
    /// What was found, in one line.
    pub message: String,
}

impl fmt::Display for Unhealthy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Unhealthy {}

/// The kind of one cause, if its type is one the library defines.
fn kind_of(cause: &(dyn std::error::Error + 'static)) -> Option<FailureKind> {
    macro_rules! first_of {
        ($($t:ty),* $(,)?) => {
            $(if let Some(e) = cause.downcast_ref::<$t>() {
                return Some(e.failure_kind());
            })*
        };
    }
    use backstop_core as core;
    use backstop_postgres as pg;
    first_of!(
        core::config::ConfigError,
        core::store::StoreError,
        core::crypto::CryptoError,
        core::crypto::files::FileError,
        core::manifest::ManifestError,
        core::naming::NameError,
        core::retention::PolicyError,
        pg::pg::PgError,
        pg::restore::RestoreError,
        pg::restore::DrillFailed,
        pg::dump::DumpError,
        pg::basebackup::BaseBackupError,
        pg::pitr::PitrError,
        pg::wal::WalPushError,
        pg::wal::WalFetchError,
    );
    None
}

/// The code of `error`, and the process status (the code's, unless an
/// [`Exit`] says otherwise). The outermost cause that says more than
/// [`FailureKind::Other`] decides: context added with anyhow says nothing.
pub fn classify(error: &anyhow::Error) -> (Code, u8) {
    let exit = error.downcast_ref::<Exit>();
    let inner = exit.map_or(error, |e| &e.error);
    let code = if let Some(u) = inner.downcast_ref::<Unhealthy>() {
        Code::of_condition(u.condition)
    } else {
        let kind = inner
            .chain()
            .filter_map(kind_of)
            .find(|k| *k != FailureKind::Other)
            .unwrap_or(FailureKind::Other);
        Code::of_kind(kind)
    };
    (code, exit.map_or(code.status(), |e| e.status))
}

/// The JSON failure: `{"error", "exit_code", "message", "hint"}`.
pub fn failure_json(code: Code, status: u8, message: &str) -> serde_json::Value {
    serde_json::json!({
        "error": code.name(),
        "exit_code": status,
        "message": message,
        "hint": code.hint(),
    })
}

/// Prints `error` on stderr (one JSON object with `json`, else one
/// `error: ...` line) and returns the process status.
pub fn report(error: &anyhow::Error, json: bool) -> u8 {
    let (code, status) = classify(error);
    if error.downcast_ref::<Exit>().is_some_and(|e| e.quiet) {
        return status;
    }
    let message = format!("{error:#}");
    if json {
        eprintln!("{}", failure_json(code, status, &message));
    } else {
        eprintln!("error: {message}");
    }
    status
}

/// The status of a command line that does not parse: clap's (2), except
/// for `wal-fetch`, where PostgreSQL would read 2 as "not archived" and end
/// recovery early; a mistyped restore_command stops it instead.
pub fn usage_exit_code(error: &clap::Error, args: &[String]) -> u8 {
    use clap::error::ErrorKind;
    let informational = matches!(
        error.kind(),
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion
    );
    if !informational && args.get(1).is_some_and(|a| a == "wal-fetch") {
        backstop_postgres::wal::EXIT_STOP_RECOVERY
    } else {
        error.exit_code() as u8
    }
}

/// Prints a command line that does not parse (as JSON when `--json` is
/// among the arguments) and returns its status.
pub fn report_usage(error: &clap::Error, args: &[String]) -> u8 {
    let status = usage_exit_code(error, args);
    let informational = status == 0;
    if !informational && args.iter().any(|a| a == "--json") {
        let message = error.kind().to_string();
        let detail = error.render().to_string();
        let line = detail.lines().next().unwrap_or(&message);
        let line = line.strip_prefix("error: ").unwrap_or(line);
        eprintln!("{}", failure_json(Code::Usage, status, line));
    } else {
        let _ = error.print();
    }
    status
}

#[cfg(test)]
mod tests {
    use backstop_core::config::ConfigError;
    use backstop_core::crypto::CryptoError;
    use backstop_core::store::StoreError;
    use backstop_postgres::pg::PgError;
    use backstop_postgres::restore::{DrillFailed, RestoreError};

    use super::*;

    fn code(e: impl Into<anyhow::Error>) -> (Code, u8) {
        classify(&e.into())
    }

    fn transient() -> StoreError {
        StoreError::Transient {
            store: "gs://b".into(),
            op: "list",
            key: String::new(),
            message: "connection refused".into(),
        }
    }

    #[test]
    fn library_errors_map_to_their_codes_through_context() {
        let missing = ConfigError::Missing {
            name: "BACKSTOP_GCS_BUCKET".into(),
            hint: "the bucket".into(),
        };
        assert_eq!(code(missing.clone()), (Code::Config, 5));
        let wrapped = anyhow::Error::from(missing).context("reading the settings");
        assert_eq!(classify(&wrapped), (Code::Config, 5));
        assert_eq!(code(transient()), (Code::Unreachable, 6));
        let permanent = StoreError::Permanent {
            store: "gs://b".into(),
            op: "get",
            key: "k".into(),
            message: "403".into(),
        };
        assert_eq!(code(permanent), (Code::Failure, 1));
        assert_eq!(
            code(CryptoError::IntegrityCheckFailed),
            (Code::Integrity, 7)
        );
        assert_eq!(code(CryptoError::NoVerifyingKeys), (Code::Config, 5));
        let drill = DrillFailed {
            what: "restore drill",
            reason: "1 table differs".into(),
        };
        assert_eq!(code(drill), (Code::DrillMismatch, 8));
        assert_eq!(code(anyhow::anyhow!("something else")), (Code::Failure, 1));
    }

    #[test]
    fn wrappers_say_what_their_cause_means() {
        let data = RestoreError::Data {
            object: "gs://b/k".into(),
            source: CryptoError::IntegrityCheckFailed,
        };
        assert_eq!(code(data), (Code::Integrity, 7));
        let download = RestoreError::Download {
            store: "s3://r".into(),
            source: transient(),
        };
        assert_eq!(code(download), (Code::Unreachable, 6));
        let wrong_key = RestoreError::WrongKey {
            backup_id: "p/app/x".into(),
            recipients: "A".into(),
            held: "B".into(),
        };
        assert_eq!(code(wrong_key), (Code::Integrity, 7));
        let pg = PgError::Connect {
            target: "h".into(),
            message: "refused".into(),
        };
        assert_eq!(code(RestoreError::from(pg)), (Code::Unreachable, 6));
        let file = backstop_core::crypto::files::FileError::Crypto(CryptoError::BadSignature {
            fingerprint: "F".into(),
        });
        assert_eq!(code(file), (Code::Integrity, 7));
        // A store error carried through a byte stream keeps its kind.
        let through_io = CryptoError::Input(transient().into_io());
        assert_eq!(code(through_io), (Code::Unreachable, 6));
    }

    #[test]
    fn an_exit_keeps_its_status_and_names_its_kind() {
        let missing = ConfigError::Missing {
            name: "BACKSTOP_NAMESPACE".into(),
            hint: "h".into(),
        };
        let exit: anyhow::Error = Exit::new(126, missing).into();
        assert_eq!(classify(&exit), (Code::Config, 126));
        assert_eq!(
            exit.to_string(),
            "environment variable BACKSTOP_NAMESPACE is not set: h"
        );
        let unhealthy = Unhealthy {
            condition: Condition::DrillFailed,
            message: "x".into(),
        };
        assert_eq!(code(unhealthy), (Code::DrillMismatch, 8));
        let nagios: anyhow::Error = Exit::quiet(
            Code::Critical.nagios(),
            Unhealthy {
                condition: Condition::Critical,
                message: "x".into(),
            },
        )
        .into();
        assert_eq!(classify(&nagios), (Code::Critical, 2));
    }

    #[test]
    fn codes_are_distinct_and_listed_in_the_help() {
        for (i, c) in Code::ALL.iter().enumerate() {
            assert_eq!(c.status() as usize, i, "{c:?}");
            let row = format!("  {}  {}", c.status(), c.name());
            assert!(
                EXIT_CODES_HELP.contains(&row),
                "{row:?} missing from the help"
            );
            assert!(c.status() < 126, "the archiver restarts above 125");
        }
        let nagios: Vec<u8> = Code::ALL.iter().map(|c| c.nagios()).collect();
        assert_eq!(nagios, [0, 3, 3, 1, 2, 3, 2, 2, 1]);
        let failure = failure_json(Code::Config, 5, "m");
        assert_eq!(failure["error"], "config");
        assert_eq!(failure["exit_code"], 5);
        assert_eq!(failure["hint"], Code::Config.hint());
    }
}
