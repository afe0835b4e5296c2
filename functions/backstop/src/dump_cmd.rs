//! `backstop dump`: one encrypted, signed backup of a database into the GCS
//! backups bucket. Prints the result as JSON on stdout; logs and the
//! progress line go to stderr.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use backstop_cloud::gcs::GcsStore;
use backstop_cloud::kms::CloudKms;
use backstop_core::config::{ConfigError, Env, hint};
use backstop_postgres::dump::{
    DATABASE_URL_VAR, DumpBytes, DumpConfig, DumpCounters, DumpProgress, DumpSettings,
    NoDumpProgress, run_dump_with_progress,
};

use backstop_cloud::gcs::GCS_BUCKET_VAR as BUCKET_VAR;

use crate::progress::{Line, Total, human};
use crate::typed::{Typed, as_typed};

/// Dumps a database with `pg_dump -Fc`, encrypts it to the backup public
/// key(s) and uploads it to the GCS bucket, then writes the signed manifest.
/// The job only creates objects: it never reads or deletes backups.
///
/// On a terminal, a progress line on stderr shows the bytes read from
/// pg_dump, compressed and uploaded, the rate, the time elapsed and an ETA
/// from the tables' size on disk.
#[derive(clap::Args, Debug)]
pub struct DumpArgs {
    #[command(flatten)]
    pub job: JobArgs,
    /// No progress line even on a terminal.
    #[arg(long)]
    pub no_progress: bool,
}

/// The options of every job that writes a backup (`dump`, `basebackup`).
#[derive(clap::Args, Debug)]
pub struct JobArgs {
    /// Database to dump: postgres://user[:password]@host:port/dbname.
    #[arg(long, env = "BACKSTOP_DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
    /// Namespace of the backup (default `production`). Retention never
    /// prunes a namespace given this way to nothing.
    #[arg(long, env = "BACKSTOP_NAMESPACE")]
    pub namespace: Option<String>,
    /// Back up into the branch namespace of this branch (`br-<branch>`),
    /// which retention abandons 14 days after its last backup by default.
    #[arg(long, env = "BACKSTOP_BRANCH")]
    pub branch: Option<String>,
    /// GCS bucket that receives the backup.
    #[arg(long, env = "BACKSTOP_GCS_BUCKET")]
    pub bucket: Option<String>,
    /// Backup public key(s), comma-separated: file:/path/backup.pub.asc or armored text.
    #[arg(long, env = "BACKSTOP_RECIPIENTS", hide_env_values = true)]
    pub recipients: Option<String>,
    /// Manifest signing secret key: file:/path/key.asc or gcpkms:<key name>:/path/key.asc.kms.
    #[arg(long, env = "BACKSTOP_SIGNING_KEY", hide_env_values = true)]
    pub signing_key: Option<String>,
    /// Directory of pg_dump (its major version >= the server's); else PG_BINDIR, else PATH.
    #[arg(long, env = "BACKSTOP_PG_BINDIR")]
    pub pg_bindir: Option<PathBuf>,
    /// Deflate level inside the encryption: 0 none, 1 fastest .. 9 smallest
    /// (default 3; see README, "Compression level").
    #[arg(long, env = "BACKSTOP_COMPRESSION_LEVEL")]
    pub compression_level: Option<String>,
}

pub async fn run(args: DumpArgs) -> anyhow::Result<()> {
    let (config, store) = load(args.job).await?;
    let progress: Box<dyn DumpProgress> = if crate::progress::wanted(args.no_progress) {
        Box::new(DumpLine::default())
    } else {
        Box::new(NoDumpProgress)
    };
    let summary = run_dump_with_progress(&config, &store, progress.as_ref()).await?;
    println!("{}", serde_json::to_string_pretty(&summary)?);
    Ok(())
}

/// How often the line is redrawn: the dump's stages count bytes, and this
/// reads them (a stalled dump still shows its elapsed time).
const TICK: Duration = Duration::from_millis(250);

/// The dump's progress on the shared line: pg_dump's output read (against
/// the size estimate), compressed and uploaded, redrawn by a ticker task.
#[derive(Default)]
struct DumpLine {
    line: Arc<Line>,
    counters: Mutex<DumpCounters>,
    ticker: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

/// The compressed and uploaded bytes (the line's extra).
fn dump_extra(b: DumpBytes) -> String {
    let compressed = if b.compressed > 0 {
        format!(", {} compressed", human(b.compressed as f64))
    } else {
        String::new()
    };
    format!("{compressed}, {} uploaded", human(b.uploaded as f64))
}

impl DumpProgress for DumpLine {
    fn start(&self, backup_id: &str, estimate: Option<u64>, counters: DumpCounters) {
        let total = estimate.map_or(Total::Unknown, Total::About);
        let extra = dump_extra(counters.get());
        self.line
            .begin(format!("dumping {backup_id}"), total, "read", &extra);
        *self.counters.lock().expect("progress") = counters.clone();
        let line = self.line.clone();
        let ticker = tokio::spawn(async move {
            let mut tick = tokio::time::interval(TICK);
            loop {
                tick.tick().await;
                let b = counters.get();
                line.draw(b.read, &dump_extra(b));
            }
        });
        *self.ticker.lock().expect("progress") = Some(ticker);
    }

    fn finish(&self) {
        if let Some(ticker) = self.ticker.lock().expect("progress").take() {
            ticker.abort();
        }
        let b = self.counters.lock().expect("progress").get();
        // The exact count of uploaded bytes matches the result's
        // `ciphertext_bytes` (what scripts and the tests compare).
        self.line.end(&format!(
            "{} read{} ({} bytes)",
            human(b.read as f64),
            dump_extra(b),
            b.uploaded
        ));
    }
}

/// The job's configuration and the bucket it writes to, from the options
/// (or their variables): shared by every job that writes backups (`dump`,
/// `basebackup`). Errors name what the user typed.
pub(crate) async fn load(args: JobArgs) -> anyhow::Result<(DumpConfig, GcsStore)> {
    let env = Env::from_process();
    // Checked in the order an operator sets them up, before any key is read,
    // so a misconfigured job fails fast and names the variable.
    if args
        .database_url
        .as_deref()
        .is_none_or(|u| u.trim().is_empty())
    {
        return Err(ConfigError::missing(DATABASE_URL_VAR, hint::DATABASE_URL).into());
    }
    let bucket = args
        .bucket
        .filter(|b| !b.trim().is_empty())
        .ok_or_else(|| {
            ConfigError::missing(
                BUCKET_VAR,
                "the GCS bucket that receives backups (or pass --bucket)",
            )
        })?;
    let typed = [
        Typed::new(
            DATABASE_URL_VAR,
            "--database-url",
            args.database_url.as_deref(),
        ),
        Typed::new(
            "BACKSTOP_NAMESPACE",
            "--namespace",
            args.namespace.as_deref(),
        ),
        Typed::new(
            "BACKSTOP_RECIPIENTS",
            "--recipients",
            args.recipients.as_deref(),
        ),
        Typed::new(
            "BACKSTOP_SIGNING_KEY",
            "--signing-key",
            args.signing_key.as_deref(),
        ),
        Typed::new(
            "BACKSTOP_COMPRESSION_LEVEL",
            "--compression-level",
            args.compression_level.as_deref(),
        ),
    ];
    let typed_err = |e: ConfigError| as_typed(e, &typed);
    let namespace = dump_namespace(args.namespace, args.branch)?;
    let settings = DumpSettings {
        database_url: args.database_url,
        namespace: Some(namespace),
        recipients: args.recipients,
        signing_key: args.signing_key,
        pg_bindir: args
            .pg_bindir
            .filter(|p| !p.as_os_str().is_empty())
            .or_else(|| env.optional("PG_BINDIR").map(PathBuf::from)),
        compression_level: args.compression_level,
    };
    let config = DumpConfig::load(settings, &CloudKms::from_env(&env)?)
        .await
        .map_err(typed_err)?;
    let store = GcsStore::builder().env(&env).bucket(bucket).build().await?;
    Ok((config, store))
}

/// `--namespace`, or the branch namespace of `--branch`, or `production`.
fn dump_namespace(
    namespace: Option<String>,
    branch: Option<String>,
) -> Result<String, ConfigError> {
    let namespace = namespace.filter(|n| !n.trim().is_empty());
    match (namespace, branch.filter(|b| !b.trim().is_empty())) {
        (Some(ns), Some(branch)) => Err(ConfigError::invalid(
            "--branch",
            &branch,
            format!(
                "--namespace / BACKSTOP_NAMESPACE ({ns:?}) is set as well; give one: --branch for a branch namespace that retention may abandon, --namespace for one it never prunes to nothing"
            ),
        )),
        (None, Some(branch)) => {
            Ok(backstop_core::naming::namespace_for_branch(&branch).to_string())
        }
        (Some(ns), None) => Ok(ns),
        (None, None) => Ok(backstop_postgres::dump::DEFAULT_NAMESPACE.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::dump_namespace;

    #[test]
    fn branch_dumps_go_to_the_branch_namespace() {
        let ns = dump_namespace(None, Some("feature/Fix-Login".into())).unwrap();
        assert!(
            ns.starts_with(backstop_core::naming::BRANCH_NAMESPACE_PREFIX),
            "{ns}"
        );
        assert_eq!(dump_namespace(None, None).unwrap(), "production");
        assert_eq!(
            dump_namespace(Some("billing".into()), None).unwrap(),
            "billing"
        );
        let err = dump_namespace(Some("billing".into()), Some("x".into())).unwrap_err();
        assert!(err.to_string().contains("--branch"), "{err}");
    }
}
