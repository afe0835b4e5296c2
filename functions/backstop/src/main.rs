//! `backstop`: the operator CLI. Thin over the `backstop` library: every
//! subcommand reads its configuration, builds clients and calls one library
//! function.

use clap::{Parser, Subcommand};

mod keys_cmd;
mod stack_cmd;

#[derive(Parser)]
#[command(name = "backstop", version, about = "Encrypted, verified, cross-cloud PostgreSQL backups")]
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
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    backstop::telemetry::init(backstop::telemetry::LogFormat::detect());
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Keys(cmd) => keys_cmd::run(cmd).await,
        Command::Ping(args) => stack_cmd::ping(args).await,
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
