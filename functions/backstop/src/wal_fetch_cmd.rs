//! `backstop wal-fetch %f %p`: PostgreSQL's `restore_command`. Prints one
//! JSON line (the call's report) on stdout; the exit status is what
//! PostgreSQL acts on (see [`EXIT_STATUS_HELP`]).

use std::path::{Path, PathBuf};

use backstop_cloud::gcs::GcsStore;
use backstop_cloud::kms::CloudKms;
use backstop_cloud::s3::S3Store;
use backstop_core::config::{ConfigError, Env};
use backstop_core::store::ObjectStore;
use backstop_postgres::restore::Clouds;
use backstop_postgres::wal::fetch::{
    BACKUP_KEY_VAR, SIGNING_PUBLIC_KEY_VAR, WAL_FETCH_PREFETCH_VAR,
};
use backstop_postgres::wal::{
    EXIT_STOP_RECOVERY, WalFetchConfig, WalFetchError, WalFetchSettings, fetch_call,
};

/// What each exit status tells PostgreSQL (`--help`, README).
pub const EXIT_STATUS_HELP: &str = "\
Exit status (what PostgreSQL does with it):
  0    DEST holds the file, complete and verified
  1    the archive does not have the file (GCS answered not found; or GCS was
       unreachable and S3 answered not found): recovery ends there or tries
       another timeline
  126  anything else: both clouds unreachable, a copy that fails verification
       in every cloud, a wrong backup key, a settings or local I/O error.
       Recovery stops (FATAL) rather than promote early with WAL missing; fix
       what the message names and start the server again

Settings: the --config file's keys, else the environment: namespace
(BACKSTOP_NAMESPACE, default production), gcs_bucket (BACKSTOP_GCS_BUCKET),
s3_bucket (BACKSTOP_S3_BUCKET), backup_key (BACKSTOP_BACKUP_KEY),
signing_public_key (BACKSTOP_SIGNING_PUBLIC_KEY), system_identifier (default:
global/pg_control of the data directory, BACKSTOP_PGDATA or the working
directory), prefetch (BACKSTOP_WAL_FETCH_PREFETCH, default 8, 0 = off).";

/// Fetches one archived WAL file, verified, onto DEST, and the next
/// segments into pg_wal/backstop_prefetch/. Use as
/// `restore_command = 'backstop wal-fetch %f %p'` (or with --config).
#[derive(clap::Args, Debug)]
#[command(after_help = EXIT_STATUS_HELP)]
pub struct WalFetchArgs {
    /// The file PostgreSQL asks for (%f), e.g. 000000010000000000000005.
    pub file: String,
    /// Where it goes (%p, e.g. pg_wal/RECOVERYXLOG, relative to the data directory).
    pub dest: PathBuf,
    /// Settings file (JSON, as `backstop restore-cluster` writes it, mode 0600); the environment fills in only keys it lacks.
    #[arg(long, value_name = "PATH")]
    pub config: Option<PathBuf>,
}

/// The settings a `--config` file may hold, with the variable each stands
/// for in the library's errors.
const FILE_KEYS: [(&str, &str); 7] = [
    ("namespace", "BACKSTOP_NAMESPACE"),
    ("gcs_bucket", "BACKSTOP_GCS_BUCKET"),
    ("s3_bucket", "BACKSTOP_S3_BUCKET"),
    ("backup_key", BACKUP_KEY_VAR),
    ("signing_public_key", SIGNING_PUBLIC_KEY_VAR),
    ("system_identifier", "system_identifier"),
    ("prefetch", WAL_FETCH_PREFETCH_VAR),
];

pub async fn run(args: WalFetchArgs) -> anyhow::Result<()> {
    // A panic is a bug, not a missing file: exit 126 so recovery stops
    // (Rust's 101 would read as "not archived" and end it early).
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        default_hook(info);
        std::process::exit(EXIT_STOP_RECOVERY.into());
    }));
    fetch(args).await.map_err(|e| {
        let code = e
            .downcast_ref::<WalFetchError>()
            .map_or(EXIT_STOP_RECOVERY, WalFetchError::exit_code);
        crate::Exit::new(code, e).into()
    })
}

async fn fetch(args: WalFetchArgs) -> anyhow::Result<()> {
    let env = Env::from_process();
    let from_file = match &args.config {
        Some(path) => Some(settings_file(path).map_err(WalFetchError::Config)?),
        None => None,
    };
    let settings = from_file
        .clone()
        .unwrap_or_default()
        .or(WalFetchSettings::from_env(&env));
    let (gcs_bucket, s3_bucket) = (settings.gcs_bucket.clone(), settings.s3_bucket.clone());
    let kms = CloudKms::from_env(&env).map_err(WalFetchError::Config)?;
    let config = WalFetchConfig::load(settings, &kms).await.map_err(|e| {
        WalFetchError::Config(match (&from_file, &args.config) {
            (Some(file), Some(path)) => name_file_keys(e, file, path),
            _ => e,
        })
    })?;
    let (gcs, s3) = stores(&env, gcs_bucket, s3_bucket).await?;
    let clouds = Clouds {
        primary: gcs.as_ref().map(|s| s as &dyn ObjectStore),
        replica: s3.as_ref().map(|s| s as &dyn ObjectStore),
    };
    let report = fetch_call(clouds, &config, &args.file, &args.dest).await?;
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}

/// The `--config` file. Keys it does not know are logged and ignored.
fn settings_file(path: &Path) -> Result<WalFetchSettings, ConfigError> {
    let shown = path.display().to_string();
    let bad = |reason: String| ConfigError::invalid("--config", &shown, reason);
    let bytes = std::fs::read(path).map_err(|e| {
        bad(format!(
            "cannot be read ({e}); give the settings file backstop restore-cluster wrote"
        ))
    })?;
    warn_if_readable_by_others(path);
    let map: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&bytes).map_err(|e| bad(format!("is not a JSON object ({e})")))?;
    let unknown: Vec<&String> = map
        .keys()
        .filter(|k| !FILE_KEYS.iter().any(|(known, _)| known == k))
        .collect();
    if !unknown.is_empty() {
        tracing::warn!(config = %shown, ?unknown, "ignoring settings wal-fetch does not know (check their spelling)");
    }
    serde_json::from_value(serde_json::Value::Object(map))
        .map_err(|e| bad(format!("holds an unusable value ({e})")))
}

fn warn_if_readable_by_others(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = std::fs::metadata(path)
        && meta.permissions().mode() & 0o077 != 0
    {
        tracing::warn!(config = %path.display(), "the wal-fetch settings file is readable by other users: chmod 600 it (it names the backup secret key)");
    }
}

/// `e`, naming the file's key instead of the variable for each setting
/// the file gave.
fn name_file_keys(mut e: ConfigError, file: &WalFetchSettings, path: &Path) -> ConfigError {
    let given = [
        file.namespace.is_some(),
        file.gcs_bucket.is_some(),
        file.s3_bucket.is_some(),
        file.backup_key.is_some(),
        file.signing_public_key.is_some(),
        file.system_identifier.is_some(),
        file.prefetch.is_some(),
    ];
    for ((key, var), given) in FILE_KEYS.iter().zip(given) {
        if given {
            e = e.renamed(var, &format!("--config {} ({key})", path.display()));
        }
    }
    e
}

/// The clouds configured. A GCS client that cannot be built counts as an
/// unreachable GCS: the S3 replica is tried.
async fn stores(
    env: &Env,
    gcs_bucket: Option<String>,
    s3_bucket: Option<String>,
) -> Result<(Option<GcsStore>, Option<S3Store>), WalFetchError> {
    let named = |b: Option<String>| b.filter(|b| !b.trim().is_empty());
    let gcs = match named(gcs_bucket) {
        Some(b) => GcsStore::builder()
            .env(env)
            .bucket(b)
            .build()
            .await
            .inspect_err(|e| tracing::warn!(error = %e, "cannot build the GCS client; trying S3"))
            .ok(),
        None => None,
    };
    let s3 = match named(s3_bucket) {
        Some(b) => Some(S3Store::builder().env(env).bucket(b).build().await?),
        None => None,
    };
    Ok((gcs, s3))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_file_is_read_and_its_keys_are_named_in_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wal-fetch.json");
        let text = r#"{"namespace":"staging","prefetch":3,"later":true}"#;
        std::fs::write(&path, text).unwrap();
        let file = settings_file(&path).unwrap();
        assert_eq!(file.namespace.as_deref(), Some("staging"));
        let e = ConfigError::invalid(WAL_FETCH_PREFETCH_VAR, "3", "bad");
        let msg = name_file_keys(e, &file, &path).to_string();
        assert!(msg.contains("wal-fetch.json (prefetch)"), "{msg}");
        let e = ConfigError::missing(BACKUP_KEY_VAR, "the key");
        let msg = name_file_keys(e, &file, &path).to_string();
        assert!(msg.contains(BACKUP_KEY_VAR), "{msg}");
        std::fs::write(&path, "[1]").unwrap();
        assert!(settings_file(&path).is_err());
    }
}
