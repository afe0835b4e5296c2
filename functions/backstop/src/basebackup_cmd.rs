//! `backstop basebackup`: one encrypted, signed physical base backup of a
//! whole cluster into the GCS backups bucket. Takes the options of
//! `backstop dump` (parsed by the same code) and `--allow-no-archive`.
//! Prints the result as JSON on stdout; logs go to stderr.

use backstop_postgres::basebackup::{BaseBackupConfig, DEFAULT_SERVER_WORKERS, run_base_backup};

use crate::dump_cmd::{self, JobArgs};

/// Takes a physical base backup of the cluster over a replication
/// connection (one tar, compressed with zstd by the server, WAL left to
/// the archive), encrypts it to the backup public key(s) and uploads it to
/// the GCS bucket, then writes the signed manifest. The server must be
/// PostgreSQL 15 or newer, the role needs REPLICATION, and the server
/// archive_mode (or --allow-no-archive). The job only creates objects.
#[derive(clap::Args, Debug)]
pub struct BaseBackupArgs {
    #[command(flatten)]
    pub job: JobArgs,
    /// Take the backup although the server's archive_mode is off: it then
    /// restores only with WAL kept by other means, to no other point in time.
    #[arg(
        long,
        env = "BACKSTOP_ALLOW_NO_ARCHIVE",
        action = clap::ArgAction::SetTrue,
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    pub allow_no_archive: bool,
    /// zstd threads the server compresses the backup on (0: on the
    /// walsender process itself).
    #[arg(long, env = "BACKSTOP_BASEBACKUP_WORKERS", default_value_t = DEFAULT_SERVER_WORKERS)]
    pub server_workers: u32,
    /// Limit the server's read rate to this many kB/s (32 to 1048576), to
    /// spare the database's disks; unlimited by default.
    #[arg(long, env = "BACKSTOP_BASEBACKUP_MAX_RATE", value_parser = clap::value_parser!(u32).range(32..=1_048_576))]
    pub max_rate: Option<u32>,
}

/// The server's zstd level for a base backup unless `--compression-level`
/// / `BACKSTOP_COMPRESSION_LEVEL` says otherwise (0: none, a plain tar):
/// 1, not the dump's 3. A base backup reads the whole cluster at disk
/// speed, and level 3 added 11 % to the time for 1 % less size (README,
/// "Benchmarks").
const BASE_BACKUP_COMPRESSION_LEVEL: &str = "1";

pub async fn run(args: BaseBackupArgs) -> anyhow::Result<()> {
    let mut job = args.job;
    job.compression_level
        .get_or_insert_with(|| BASE_BACKUP_COMPRESSION_LEVEL.to_string());
    let (job, store) = dump_cmd::load(job).await?;
    let config = BaseBackupConfig {
        job,
        allow_no_archive: args.allow_no_archive,
        server_workers: args.server_workers,
        max_rate_kb: args.max_rate,
    };
    let summary = run_base_backup(&config, &store).await?;
    println!("{}", serde_json::to_string_pretty(&summary)?);
    Ok(())
}
