//! `backstop restore-cluster`: point-in-time recovery of a whole cluster
//! from a verified base backup and the WAL archive into a new data
//! directory; with `--start`, the server recovers, is checked at the
//! target, and a drill is recorded. Prints the result as JSON on stdout;
//! logs go to stderr.

use std::path::PathBuf;

use backstop_cloud::gcs::GCS_BUCKET_VAR;
use backstop_cloud::s3::S3_BUCKET_VAR;
use backstop_core::config::Env;
use backstop_core::store::ObjectStore;
use backstop_postgres::pitr::{PitrConfig, PitrSettings, restore_cluster};
use backstop_postgres::restore::Clouds;

use crate::typed::{Typed, as_typed};

/// Restores the newest verified base backup finished before the target
/// into --pgdata (missing or empty), verified chunk by chunk before any
/// file is written, and configures recovery with `backstop wal-fetch` as
/// restore_command. With --start --port P, starts PostgreSQL, waits until
/// it reached the target (promoted, or paused with --pause), checks it
/// stopped there and records a PITR drill. Exit status: 0 restored (and,
/// with --start, recovered and drilled); 8 the PITR drill failed; else the
/// table in `backstop --help`.
#[derive(clap::Args, Debug)]
pub struct RestoreClusterArgs {
    /// Namespace of the base backups and the WAL archive (default `production`).
    #[arg(long, env = "BACKSTOP_NAMESPACE")]
    pub namespace: Option<String>,
    /// Only base backups of this cluster (decimal system identifier).
    #[arg(long)]
    pub system_identifier: Option<String>,
    /// Recover to this time (RFC 3339, e.g. 2026-11-27T14:03:00Z).
    #[arg(long, group = "target")]
    pub to_time: Option<String>,
    /// Recover to this WAL position (X/Y).
    #[arg(long, group = "target")]
    pub to_lsn: Option<String>,
    /// Recover to the commit of this transaction.
    #[arg(long, group = "target")]
    pub to_xid: Option<String>,
    /// Recover to the end of the archived WAL.
    #[arg(long, group = "target")]
    pub latest: bool,
    /// Timeline to follow: a number or `latest` (default).
    #[arg(long)]
    pub timeline: Option<String>,
    /// The new data directory (must not exist, or be empty).
    #[arg(long)]
    pub pgdata: Option<PathBuf>,
    /// Promote at the target (the default).
    #[arg(long, conflicts_with = "pause")]
    pub promote: bool,
    /// Pause at the target instead of promoting (inspect, then pg_wal_replay_resume()).
    #[arg(long)]
    pub pause: bool,
    /// Start PostgreSQL on --port and wait until it reached the target.
    #[arg(long)]
    pub start: bool,
    /// Port for --start.
    #[arg(long)]
    pub port: Option<u16>,
    /// Role the progress checks connect as over 127.0.0.1 (default postgres;
    /// a password comes from PGPASSWORD, never the command line).
    #[arg(long)]
    pub user: Option<String>,
    /// Keep archive_mode as the backup had it (default: off, so the restored
    /// cluster never archives into the source's WAL).
    #[arg(long)]
    pub archive: bool,
    /// Seconds recovery may take after the server started (default 21600).
    #[arg(long)]
    pub recovery_timeout: Option<u64>,
    /// GCS backups bucket (the primary).
    #[arg(long, env = GCS_BUCKET_VAR)]
    pub gcs_bucket: Option<String>,
    /// S3 replica bucket.
    #[arg(long, env = S3_BUCKET_VAR)]
    pub s3_bucket: Option<String>,
    /// Backup secret key: file:/path/backup.sec.asc or gcpkms:<key name>:/path/backup.sec.asc.kms.
    #[arg(long, env = "BACKSTOP_BACKUP_KEY", hide_env_values = true)]
    pub backup_key: Option<String>,
    /// Public key(s) manifests must be signed with: file:/path/signing.pub.asc.
    #[arg(long, env = "BACKSTOP_SIGNING_PUBLIC_KEY", hide_env_values = true)]
    pub signing_public_key: Option<String>,
    /// Directory of pg_ctl and pg_verifybackup; else PG_BINDIR, else PATH.
    #[arg(long, env = "BACKSTOP_PG_BINDIR")]
    pub pg_bindir: Option<PathBuf>,
    /// Do not write a drill record.
    #[arg(long)]
    pub no_drill_record: bool,
}

pub async fn run(args: RestoreClusterArgs) -> anyhow::Result<()> {
    let env = Env::from_process();
    let typed = [
        Typed::new(
            "BACKSTOP_BACKUP_KEY",
            "--backup-key",
            args.backup_key.as_deref(),
        ),
        Typed::new(
            "BACKSTOP_SIGNING_PUBLIC_KEY",
            "--signing-public-key",
            args.signing_public_key.as_deref(),
        ),
    ];
    let nonempty = |b: Option<String>| b.filter(|b| !b.trim().is_empty());
    let (gcs_bucket, s3_bucket) = (nonempty(args.gcs_bucket), nonempty(args.s3_bucket));
    let settings = PitrSettings {
        namespace: args.namespace,
        system_identifier: args.system_identifier,
        to_time: args.to_time,
        to_lsn: args.to_lsn,
        to_xid: args.to_xid,
        latest: args.latest,
        timeline: args.timeline,
        pgdata: args.pgdata,
        pause: args.pause,
        start_port: args.port,
        start: args.start,
        user: args.user,
        archive: args.archive,
        backup_key: args.backup_key,
        signing_public_key: args.signing_public_key,
        gcs_bucket: gcs_bucket.clone(),
        s3_bucket: s3_bucket.clone(),
        pg_bindir: args
            .pg_bindir
            .filter(|p| !p.as_os_str().is_empty())
            .or_else(|| env.optional("PG_BINDIR").map(PathBuf::from)),
        max_clock_skew: env.optional(backstop_core::retention::MAX_CLOCK_SKEW_ENV),
        recovery_timeout_secs: args.recovery_timeout,
        write_drill: !args.no_drill_record,
    };
    let kms = backstop_cloud::kms::CloudKms::from_env(&env)?;
    let config = PitrConfig::load(settings, &kms)
        .await
        .map_err(|e| as_typed(e, &typed))?;
    let (gcs, s3) = crate::restore_cmd::stores(&env, gcs_bucket.clone(), s3_bucket.clone()).await?;
    let clouds = Clouds {
        primary: gcs.as_ref().map(|s| s as &dyn ObjectStore),
        replica: s3.as_ref().map(|s| s as &dyn ObjectStore),
    };
    match restore_cluster(&config, clouds).await {
        Ok(report) => {
            println!("{}", serde_json::to_string_pretty(&report)?);
            match report.drill_error {
                Some(reason) if !report.success => Err(backstop_postgres::restore::DrillFailed {
                    what: "PITR drill",
                    reason,
                }
                .into()),
                _ => Ok(()),
            }
        }
        Err(e) => {
            let json =
                serde_json::json!({ "success": false, "kind": e.kind(), "error": e.to_string() });
            println!("{}", serde_json::to_string_pretty(&json)?);
            Err(e.into())
        }
    }
}
