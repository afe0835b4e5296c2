//! `backstop`: the operator CLI. Thin over the library crates (core, cloud,
//! postgres, functions; see shared/ARCHITECTURE.md): every
//! subcommand reads its configuration, builds clients and calls one library
//! function.

use clap::{Parser, Subcommand};

mod basebackup_cmd;
mod dump_cmd;
mod exit;
mod keys_cmd;
mod list_cmd;
mod progress;
mod restore_cluster_cmd;
mod restore_cmd;
mod stack_cmd;
mod status_cmd;
mod typed;
mod wal_cmd;
mod wal_fetch_cmd;

pub use exit::Exit;

#[derive(Parser)]
#[command(
    name = "backstop",
    version,
    about = "Encrypted, verified, cross-cloud PostgreSQL backups",
    after_help = exit::EXIT_CODES_HELP
)]
struct Cli {
    /// A failure as one JSON object on stderr ({"error", "exit_code",
    /// "message", "hint"}); for retention, list, show and status also the
    /// result as JSON.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Key management, encryption, decryption and verification of backups.
    #[command(flatten)]
    Keys(keys_cmd::KeysCommand),
    /// Checks that the configured clouds answer (the local demo's first step).
    Ping(stack_cmd::PingArgs),
    /// Runs a function locally on one event file and prints its JSON result.
    Invoke(stack_cmd::InvokeArgs),
    /// Serves a function on a loopback HTTP port for the local Pub/Sub emulator's push subscription.
    Serve(stack_cmd::ServeArgs),
    /// Prunes both clouds by policy and prints the audit report.
    Retention(stack_cmd::RetentionArgs),
    /// Health check for cron, CI and monitoring: the audit (a dry run) summarized, and its exit code.
    Status(status_cmd::StatusArgs),
    /// Every backup of both clouds: size, rows, verified, replicated, last drill, what retention would do.
    List(list_cmd::ListArgs),
    /// One backup in detail: its tables, copies and every drill.
    Show(list_cmd::ShowArgs),
    /// Restores the newest verified backup into a new database and records a drill.
    Restore(Box<restore_cmd::RestoreArgs>),
    /// Point-in-time recovery: a verified base backup and the WAL archive into a new data directory.
    RestoreCluster(Box<restore_cluster_cmd::RestoreClusterArgs>),
    /// Dumps a database, encrypted and signed, into the GCS backups bucket.
    Dump(dump_cmd::DumpArgs),
    /// Takes a physical base backup of the cluster, encrypted and signed, into the GCS backups bucket.
    #[command(name = "basebackup")]
    BaseBackup(basebackup_cmd::BaseBackupArgs),
    /// Archives a WAL file: PostgreSQL's archive_command ('backstop wal-push %p').
    WalPush(wal_cmd::WalPushArgs),
    /// Fetches an archived WAL file, verified: PostgreSQL's restore_command ('backstop wal-fetch %f %p').
    WalFetch(wal_fetch_cmd::WalFetchArgs),
}

/// Whether a command loads an unwrapped secret key into memory: the backup
/// secret key (`restore`, `decrypt`), the signing key (`dump`, `basebackup`), or a key it
/// generates or wraps (the other key commands).
fn holds_secret_keys(command: &Command) -> bool {
    matches!(
        command,
        Command::Keys(_)
            | Command::Restore(_)
            | Command::RestoreCluster(_)
            | Command::Dump(_)
            | Command::BaseBackup(_)
            | Command::WalPush(_)
            | Command::WalFetch(_)
    )
}

/// Keeps secret keys out of core files: no core file size (inherited by
/// `pg_dump` / `pg_restore` too) and, on Linux, not dumpable (no core, and
/// no ptrace or /proc/PID/mem by other processes of the same user).
fn disable_core_dumps() -> std::io::Result<()> {
    #[cfg(unix)]
    {
        let none = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: setrlimit reads a valid, initialised rlimit.
        if unsafe { libc::setrlimit(libc::RLIMIT_CORE, &none) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    #[cfg(target_os = "linux")]
    {
        // SAFETY: PR_SET_DUMPABLE takes integer arguments only.
        if unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    backstop_core::telemetry::init(backstop_core::telemetry::LogFormat::detect());
    let args: Vec<String> = std::env::args().collect();
    let cli = match Cli::try_parse_from(&args) {
        Ok(cli) => cli,
        Err(e) => return std::process::ExitCode::from(exit::report_usage(&e, &args)),
    };
    let json = cli.json
        || matches!(&cli.command, Command::Status(a) if a.format(false) == status_cmd::Format::Json);
    if holds_secret_keys(&cli.command)
        && let Err(e) = disable_core_dumps()
    {
        eprintln!(
            "error: cannot disable core dumps ({e}); refusing to load secret keys into a process that could write them to a core file"
        );
        return std::process::ExitCode::FAILURE;
    }
    let result = match cli.command {
        Command::Keys(cmd) => keys_cmd::run(cmd).await,
        Command::Ping(args) => stack_cmd::ping(args).await,
        Command::Invoke(args) => stack_cmd::invoke(args).await,
        Command::Serve(args) => stack_cmd::serve(args).await,
        Command::Retention(args) => stack_cmd::retention(args, cli.json).await,
        Command::Status(args) => status_cmd::run(args, cli.json).await,
        Command::List(args) => list_cmd::list(args, cli.json).await,
        Command::Show(args) => list_cmd::show(args, cli.json).await,
        Command::Restore(args) => restore_cmd::run(*args).await,
        Command::RestoreCluster(args) => restore_cluster_cmd::run(*args).await,
        Command::Dump(args) => dump_cmd::run(args).await,
        Command::BaseBackup(args) => basebackup_cmd::run(args).await,
        Command::WalPush(args) => wal_cmd::run(args).await,
        Command::WalFetch(args) => wal_fetch_cmd::run(args).await,
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => std::process::ExitCode::from(exit::report(&e, json)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn command(args: &[&str]) -> Command {
        Cli::try_parse_from(std::iter::once("backstop").chain(args.iter().copied()))
            .unwrap()
            .command
    }

    #[test]
    fn commands_holding_secret_keys_are_the_ones_hardened() {
        for args in [
            &["restore"][..],
            &["decrypt", "--key", "file:/k.asc", "in.pgp", "out"],
            &["dump"],
            &["basebackup", "--allow-no-archive"],
            &[
                "wal-fetch",
                "000000010000000000000001",
                "pg_wal/RECOVERYXLOG",
            ],
        ] {
            assert!(holds_secret_keys(&command(args)), "{args:?}");
        }
        assert!(!holds_secret_keys(&command(&["ping"])));
    }

    #[test]
    fn an_exit_error_sets_the_status_and_a_mistyped_wal_fetch_stops_recovery() {
        let plain = anyhow::anyhow!("failed");
        assert_eq!(exit::classify(&plain).1, 1);
        let exit: anyhow::Error = Exit::new(126, anyhow::anyhow!("outer")).into();
        assert_eq!(
            (exit::classify(&exit).1, exit.to_string()),
            (126, "outer".into())
        );
        let args = |a: &[&str]| -> Vec<String> {
            std::iter::once("backstop")
                .chain(a.iter().copied())
                .map(String::from)
                .collect()
        };
        let usage = |a: &[&str]| {
            let a = args(a);
            exit::usage_exit_code(&Cli::try_parse_from(&a).err().unwrap(), &a)
        };
        assert_eq!(usage(&["wal-fetch", "000000010000000000000001"]), 126);
        assert_eq!(usage(&["wal-fetch", "--help"]), 0);
        assert_eq!(usage(&["dump", "--no-such-option"]), 2);
    }

    #[test]
    #[cfg(target_os = "linux")]
    fn after_the_call_the_process_is_not_dumpable_and_has_no_core_limit() {
        disable_core_dumps().unwrap();
        // SAFETY: PR_GET_DUMPABLE takes no pointer arguments.
        assert_eq!(unsafe { libc::prctl(libc::PR_GET_DUMPABLE, 0, 0, 0, 0) }, 0);
        let mut limit = libc::rlimit {
            rlim_cur: 1,
            rlim_max: 1,
        };
        // SAFETY: getrlimit writes into a valid rlimit.
        assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_CORE, &mut limit) }, 0);
        assert_eq!((limit.rlim_cur, limit.rlim_max), (0, 0));
        let status = std::fs::read_to_string("/proc/self/limits").unwrap();
        assert!(
            status
                .lines()
                .any(|l| l.starts_with("Max core file size")
                    && l.split_whitespace().nth(4) == Some("0")),
            "{status}"
        );
    }
}
