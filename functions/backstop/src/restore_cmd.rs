//! `backstop restore`: the newest verified backup of a namespace into a new
//! (or empty) database, then the row-count drill. Prints the result as JSON
//! on stdout; logs and the progress line go to stderr.

use std::path::PathBuf;

use backstop_cloud::gcs::GcsStore;
use backstop_cloud::s3::S3Store;
use backstop_core::config::Env;

use crate::progress::{Line, Total, human};
use crate::typed::{Typed, as_typed};
use backstop_core::store::ObjectStore;
use backstop_postgres::restore::{
    Clouds, NoProgress, Progress, RestoreConfig, RestoreSettings, restore_reporting,
};

use backstop_cloud::gcs::GCS_BUCKET_VAR;
use backstop_cloud::s3::S3_BUCKET_VAR;

/// Restores the newest complete, signature-verified backup of a namespace
/// (GCS first, S3 when GCS is unreachable) into a new database, then checks
/// per-table row counts against the manifest and records the drill.
///
/// Target: --target-url URL, or --server-url URL with --branch NAME (a
/// deterministic, safe database name derived from the branch) or
/// --target-db NAME. Exit status: 0 restored and drill passed; 8 the drill
/// did not match; else the table in `backstop --help` (the JSON result
/// says what).
#[derive(clap::Args, Debug)]
pub struct RestoreArgs {
    /// Source namespace whose backups are restored (default `production`,
    /// or the namespace of --backup).
    #[arg(long)]
    pub namespace: Option<String>,
    /// Only backups of this database within the namespace.
    #[arg(long)]
    pub database: Option<String>,
    /// A chosen backup (<namespace>/<database>/<stamp>, its `backup_id`)
    /// instead of the newest; it names the namespace too.
    #[arg(long)]
    pub backup: Option<String>,
    /// Target database URL: postgres://user[:password]@host:port/dbname.
    #[arg(long, env = "BACKSTOP_TARGET_DATABASE_URL", hide_env_values = true)]
    pub target_url: Option<String>,
    /// URL of the target server for creating databases (e.g. .../postgres).
    #[arg(long, env = "BACKSTOP_TARGET_SERVER_URL", hide_env_values = true)]
    pub server_url: Option<String>,
    /// Branch name; the database name is derived from it (with --server-url).
    #[arg(long, conflicts_with = "target_db")]
    pub branch: Option<String>,
    /// Database name on --server-url.
    #[arg(long)]
    pub target_db: Option<String>,
    /// Replace a target that already holds tables (swapped in only after a
    /// successful restore and drill).
    #[arg(long)]
    pub replace: bool,
    /// GCS backups bucket (the primary).
    #[arg(long, env = GCS_BUCKET_VAR)]
    pub gcs_bucket: Option<String>,
    /// S3 replica bucket (used when GCS is unreachable).
    #[arg(long, env = S3_BUCKET_VAR)]
    pub s3_bucket: Option<String>,
    /// Backup secret key: file:/path/backup.sec.asc or gcpkms:<key name>:/path/backup.sec.asc.kms.
    #[arg(long, env = "BACKSTOP_BACKUP_KEY", hide_env_values = true)]
    pub backup_key: Option<String>,
    /// Public key(s) manifests must be signed with: file:/path/signing.pub.asc or armored text.
    #[arg(long, env = "BACKSTOP_SIGNING_PUBLIC_KEY", hide_env_values = true)]
    pub signing_public_key: Option<String>,
    /// The database backups are taken from; never used as a target.
    #[arg(long, env = "BACKSTOP_SOURCE_DATABASE_URL", hide_env_values = true)]
    pub source_database_url: Option<String>,
    /// Directory of pg_restore (its major version >= the dump's); else PG_BINDIR, else PATH.
    #[arg(long, env = "BACKSTOP_PG_BINDIR")]
    pub pg_bindir: Option<PathBuf>,
    /// Parallel pg_restore jobs. 1 (the default) streams the authenticated
    /// archive into one transaction; more spool the decrypted archive to
    /// --spool-dir (0600, removed afterwards; free space checked first) and
    /// run pg_restore -j N into a new or staging database.
    #[arg(long, default_value_t = 1)]
    pub jobs: u32,
    /// Directory for spooled data (--jobs, and backups written before chunk
    /// digests, which are verified whole before use).
    #[arg(long, env = "BACKSTOP_SPOOL_DIR")]
    pub spool_dir: Option<PathBuf>,
    /// Do not write a drill record.
    #[arg(long)]
    pub no_drill_record: bool,
    /// No progress line even on a terminal.
    #[arg(long)]
    pub no_progress: bool,
}

/// Restore's progress on the shared line: the download of a known size.
impl Progress for Line {
    fn phase(&self, phase: &str) {
        self.note_phase(phase);
    }

    fn start(&self, backup: &str, total: u64) {
        self.begin(format!("restoring {backup}"), Total::Exact(total), "", "");
    }

    fn advance(&self, done: u64) {
        self.draw(done, "");
    }

    fn finish(&self) {
        if let Total::Exact(total) = self.expected() {
            self.end(&human(total as f64));
        }
    }
}

/// The stores named on the command line (or by their variables). A GCS
/// client that cannot be built leaves the S3 replica to try. Used by
/// `restore` and `restore-cluster`.
pub(crate) async fn stores(
    env: &Env,
    gcs_bucket: Option<String>,
    s3_bucket: Option<String>,
) -> anyhow::Result<(Option<GcsStore>, Option<S3Store>)> {
    let gcs = match gcs_bucket.filter(|b| !b.trim().is_empty()) {
        Some(bucket) => match GcsStore::builder().env(env).bucket(bucket).build().await {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!(error = %e, "cannot build the GCS client; trying the S3 replica only");
                None
            }
        },
        None => None,
    };
    let s3 = match s3_bucket.filter(|b| !b.trim().is_empty()) {
        Some(bucket) => Some(S3Store::builder().env(env).bucket(bucket).build().await?),
        None => None,
    };
    if gcs.is_none() && s3.is_none() {
        anyhow::bail!(
            "no backup store: set {GCS_BUCKET_VAR} (or --gcs-bucket) and/or {S3_BUCKET_VAR} (or --s3-bucket)"
        );
    }
    Ok((gcs, s3))
}

/// The options of `args` that can come from a variable, for errors that
/// name what the user gave.
fn typed_settings(args: &RestoreArgs) -> [Typed; 5] {
    [
        Typed::new(
            "BACKSTOP_TARGET_DATABASE_URL",
            "--target-url",
            args.target_url.as_deref(),
        ),
        Typed::new(
            "BACKSTOP_TARGET_SERVER_URL",
            "--server-url",
            args.server_url.as_deref(),
        ),
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
        Typed::new(
            "BACKSTOP_SOURCE_DATABASE_URL",
            "--source-database-url",
            args.source_database_url.as_deref(),
        ),
    ]
}

pub async fn run(args: RestoreArgs) -> anyhow::Result<()> {
    let env = Env::from_process();
    let typed = typed_settings(&args);
    let settings = RestoreSettings {
        namespace: args.namespace,
        database: args.database,
        backup: args.backup,
        target_url: args.target_url.filter(|u| !u.trim().is_empty()),
        server_url: args.server_url.filter(|u| !u.trim().is_empty()),
        branch: args.branch,
        target_db: args.target_db,
        replace: args.replace,
        source_database_url: args.source_database_url,
        backup_key: args.backup_key,
        signing_public_key: args.signing_public_key,
        pg_bindir: args
            .pg_bindir
            .filter(|p| !p.as_os_str().is_empty())
            .or_else(|| env.optional("PG_BINDIR").map(PathBuf::from)),
        jobs: Some(args.jobs),
        spool_dir: args.spool_dir,
        max_clock_skew: env.optional(backstop_core::retention::MAX_CLOCK_SKEW_ENV),
    };
    let mut config = RestoreConfig::load(settings, &backstop_cloud::kms::CloudKms::from_env(&env)?)
        .await
        .map_err(|e| as_typed(e, &typed))?;
    config.write_drill = !args.no_drill_record;

    let (gcs, s3) = stores(&env, args.gcs_bucket, args.s3_bucket).await?;
    let clouds = Clouds {
        primary: gcs.as_ref().map(|s| s as &dyn ObjectStore),
        replica: s3.as_ref().map(|s| s as &dyn ObjectStore),
    };
    let progress: Box<dyn Progress> = if crate::progress::wanted(args.no_progress) {
        Box::new(Line::new())
    } else {
        Box::new(NoProgress)
    };
    match restore_reporting(&config, clouds, progress.as_ref()).await {
        Ok(report) => {
            println!("{}", serde_json::to_string_pretty(&report)?);
            match report.drill_failure() {
                None => Ok(()),
                Some(failed) => Err(failed.into()),
            }
        }
        Err(failed) => {
            let e = failed.error;
            let json = serde_json::json!({
                "success": false,
                "kind": e.kind(),
                "error": e.to_string(),
                "backup_id": failed.backup_id,
                "cloud": failed.cloud,
                "fallback_reason": failed.fallback_reason,
            });
            println!("{}", serde_json::to_string_pretty(&json)?);
            Err(e.into())
        }
    }
}
