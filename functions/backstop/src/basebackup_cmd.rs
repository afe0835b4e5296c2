//! `backstop basebackup`: one encrypted, signed physical base backup of a
//! whole cluster into the GCS backups bucket. Takes the options of
//! `backstop dump` (parsed by the same code) and `--allow-no-archive`.
//! Prints the result as JSON on stdout; logs go to stderr.

use backstop_postgres::basebackup::{BaseBackupConfig, run_base_backup};

use crate::dump_cmd::{self, JobArgs};

/// Takes a physical base backup of the cluster with `pg_basebackup` (one
/// tar, WAL left to the archive), encrypts it to the backup public key(s)
/// and uploads it to the GCS bucket, then writes the signed manifest. The
/// role needs REPLICATION, and the server archive_mode (or
/// --allow-no-archive). The job only creates objects.
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
}

/// The deflate level of a base backup unless `--compression-level` /
/// `BACKSTOP_COMPRESSION_LEVEL` says otherwise: 1, not the dump's 3. A base
/// backup reads the whole cluster at disk speed, and on the database host's
/// cores level 3 tripled the time of `pg_basebackup` alone (README,
/// "Benchmarks"); WAL is pushed at level 1 too.
const BASE_BACKUP_COMPRESSION_LEVEL: &str = "1";

pub async fn run(args: BaseBackupArgs) -> anyhow::Result<()> {
    let mut job = args.job;
    job.compression_level
        .get_or_insert_with(|| BASE_BACKUP_COMPRESSION_LEVEL.to_string());
    let (job, store) = dump_cmd::load(job).await?;
    let config = BaseBackupConfig {
        job,
        allow_no_archive: args.allow_no_archive,
    };
    let summary = run_base_backup(&config, &store).await?;
    println!("{}", serde_json::to_string_pretty(&summary)?);
    Ok(())
}
