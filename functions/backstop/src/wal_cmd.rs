//! `backstop wal-push %p`: PostgreSQL's `archive_command`. Prints one JSON
//! line (the call's report) on stdout; exits non-zero when the file asked
//! for is not archived, so PostgreSQL keeps it and calls again.

use std::path::PathBuf;

use backstop_cloud::gcs::{GCS_BUCKET_VAR, GcsStore};
use backstop_cloud::kms::CloudKms;
use backstop_core::config::{ConfigError, Env};
use backstop_postgres::wal::{WalPushConfig, WalPushSettings, archive_call};

/// Archives one WAL file (and pushes the next waiting ones alongside) into
/// the GCS backups bucket, encrypted and signed. Use as
/// `archive_command = 'backstop wal-push %p'`; settings come from the
/// environment (see README, "WAL archiving").
#[derive(clap::Args, Debug)]
pub struct WalPushArgs {
    /// The file, as PostgreSQL's %p gives it (pg_wal/<name>, relative to the data directory).
    pub path: PathBuf,
    /// Namespace of the archive (default `production`).
    #[arg(long, env = "BACKSTOP_NAMESPACE")]
    pub namespace: Option<String>,
    /// GCS bucket that receives the WAL.
    #[arg(long, env = "BACKSTOP_GCS_BUCKET")]
    pub bucket: Option<String>,
    /// The data directory (default: the working directory, where PostgreSQL runs archive_command).
    #[arg(long, env = "BACKSTOP_PGDATA")]
    pub pgdata: Option<PathBuf>,
}

pub async fn run(args: WalPushArgs) -> anyhow::Result<()> {
    let env = Env::from_process();
    let bucket = args
        .bucket
        .filter(|b| !b.trim().is_empty())
        .ok_or_else(|| {
            ConfigError::missing(
                GCS_BUCKET_VAR,
                "the GCS bucket that receives backups and WAL (or pass --bucket)",
            )
        })?;
    let settings = WalPushSettings {
        namespace: args.namespace,
        pgdata: args.pgdata,
        ..WalPushSettings::from_env(&env)
    };
    let config = WalPushConfig::load(settings, &CloudKms::from_env(&env)?).await?;
    let store = GcsStore::builder().env(&env).bucket(bucket).build().await?;
    let report = archive_call(&store, &config, &args.path).await?;
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}
