//! `backstop`: the operator CLI. Thin over the library crates (core, cloud,
//! postgres, functions; see shared/ARCHITECTURE.md): every
//! subcommand reads its configuration, builds clients and calls one library
//! function.

use clap::{Parser, Subcommand};

mod dump_cmd;
mod keys_cmd;
mod restore_cmd;
mod stack_cmd;

#[derive(Parser)]
#[command(
    name = "backstop",
    version,
    about = "Encrypted, verified, cross-cloud PostgreSQL backups"
)]
struct Cli {
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
    /// Restores the newest verified backup into a new database and records a drill.
    Restore(Box<restore_cmd::RestoreArgs>),
    /// Dumps a database, encrypted and signed, into the GCS backups bucket.
    Dump(dump_cmd::DumpArgs),
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    backstop_core::telemetry::init(backstop_core::telemetry::LogFormat::detect());
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Keys(cmd) => keys_cmd::run(cmd).await,
        Command::Ping(args) => stack_cmd::ping(args).await,
        Command::Invoke(args) => stack_cmd::invoke(args).await,
        Command::Serve(args) => stack_cmd::serve(args).await,
        Command::Retention(args) => stack_cmd::retention(args).await,
        Command::Restore(args) => restore_cmd::run(*args).await,
        Command::Dump(args) => dump_cmd::run(args).await,
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
