//! `wal-push`'s settings, from the command line or the environment.

use std::path::PathBuf;

use backstop_core::config::{ConfigError, Env};
use backstop_core::crypto::KeyUnwrap;
use backstop_core::naming::Namespace;

use super::push::PushSettings;
use crate::dump::{
    NAMESPACE_VAR, RetryPolicy, compression_setting, load_job_keys, namespace_setting,
};
use crate::invalid;

/// Deflate level inside the encryption of WAL files.
pub const WAL_COMPRESSION_LEVEL_VAR: &str = "BACKSTOP_WAL_COMPRESSION_LEVEL";
/// Files pushed at once by one call (the file asked for and the next
/// `.ready` ones).
pub const WAL_PUSH_PARALLEL_VAR: &str = "BACKSTOP_WAL_PUSH_PARALLEL";
/// The data directory, when the command does not run in it.
pub const PGDATA_VAR: &str = "BACKSTOP_PGDATA";
/// `.ready` files at which the backlog is logged as a warning.
pub const WAL_BACKLOG_WARN_VAR: &str = "BACKSTOP_WAL_BACKLOG_WARN";

/// Level 1: WAL is written all day on the database host, where CPU is
/// the database's; level 1 keeps most of the saving of 3 on WAL's
/// repetitive records at about half the CPU (README, "WAL archiving").
const DEFAULT_LEVEL: u32 = 1;
/// Two: each push holds its encryption pipeline's buffers (~15 MiB), and
/// two at once already drain a backlog several times faster than
/// PostgreSQL hands one file at a time to a single push (README, "WAL
/// archiving"); raise it on a host with memory and cores to spare.
const DEFAULT_PARALLEL: usize = 2;
const MAX_PARALLEL: usize = 32;
const DEFAULT_BACKLOG_WARN: usize = 32;

/// What `wal-push` was given (`None`: not set).
#[derive(Debug, Default, Clone)]
pub struct WalPushSettings {
    /// `BACKSTOP_NAMESPACE`.
    pub namespace: Option<String>,
    /// `BACKSTOP_RECIPIENTS`.
    pub recipients: Option<String>,
    /// `BACKSTOP_SIGNING_KEY`.
    pub signing_key: Option<String>,
    /// `BACKSTOP_WAL_COMPRESSION_LEVEL`.
    pub compression_level: Option<String>,
    /// `BACKSTOP_WAL_PUSH_PARALLEL`.
    pub parallel: Option<String>,
    /// `BACKSTOP_PGDATA`.
    pub pgdata: Option<PathBuf>,
    /// `BACKSTOP_WAL_BACKLOG_WARN`.
    pub backlog_warn: Option<String>,
}

impl WalPushSettings {
    /// The settings from the environment.
    pub fn from_env(env: &Env) -> Self {
        Self {
            namespace: env.optional(NAMESPACE_VAR),
            recipients: env.optional("BACKSTOP_RECIPIENTS"),
            signing_key: env.optional("BACKSTOP_SIGNING_KEY"),
            compression_level: env.optional(WAL_COMPRESSION_LEVEL_VAR),
            parallel: env.optional(WAL_PUSH_PARALLEL_VAR),
            pgdata: env.optional(PGDATA_VAR).map(PathBuf::from),
            backlog_warn: env.optional(WAL_BACKLOG_WARN_VAR),
        }
    }
}

/// Everything one call needs.
#[derive(Clone)]
pub struct WalPushConfig {
    /// Where the WAL goes.
    pub namespace: Namespace,
    /// Keys, compression, retries.
    pub push: PushSettings,
    /// Files pushed at once.
    pub parallel: usize,
    /// The data directory (`global/pg_control`).
    pub pgdata: PathBuf,
    /// Backlog warning threshold, in `.ready` files.
    pub backlog_warn: usize,
}

impl WalPushConfig {
    /// Checks the settings and loads the keys; errors name the variable.
    pub async fn load(settings: WalPushSettings, kms: &dyn KeyUnwrap) -> Result<Self, ConfigError> {
        let namespace = namespace_setting(settings.namespace)?;
        let (recipients, signing_key) =
            load_job_keys(settings.recipients, settings.signing_key, kms).await?;
        let compression = compression_setting(
            settings.compression_level.as_deref(),
            WAL_COMPRESSION_LEVEL_VAR,
            DEFAULT_LEVEL,
        )?;
        let parallel = count(
            settings.parallel.as_deref(),
            WAL_PUSH_PARALLEL_VAR,
            DEFAULT_PARALLEL,
            MAX_PARALLEL,
        )?;
        let backlog_warn = count(
            settings.backlog_warn.as_deref(),
            WAL_BACKLOG_WARN_VAR,
            DEFAULT_BACKLOG_WARN,
            usize::MAX,
        )?;
        let pgdata = pgdata_setting(settings.pgdata)?;
        Ok(Self {
            namespace,
            push: PushSettings {
                recipients,
                signing_key,
                compression,
                retry: RetryPolicy::default(),
            },
            parallel,
            pgdata,
            backlog_warn,
        })
    }
}

/// `BACKSTOP_PGDATA`: the data directory given, or the working directory
/// (where PostgreSQL runs `archive_command` and `restore_command`).
pub(crate) fn pgdata_setting(given: Option<PathBuf>) -> Result<PathBuf, ConfigError> {
    match given.filter(|p| !p.as_os_str().is_empty()) {
        Some(p) => Ok(p),
        None => std::env::current_dir().map_err(|e| {
            invalid(
                PGDATA_VAR,
                "",
                format!("the working directory cannot be read ({e}); set it to the data directory"),
            )
        }),
    }
}

/// A whole number from 1 to `max`, `default` when unset.
fn count(text: Option<&str>, var: &str, default: usize, max: usize) -> Result<usize, ConfigError> {
    let Some(t) = text.map(str::trim).filter(|t| !t.is_empty()) else {
        return Ok(default);
    };
    match t.parse::<usize>() {
        Ok(n) if (1..=max).contains(&n) => Ok(n),
        _ => Err(invalid(
            var,
            t,
            format!("give a whole number from 1 to {max}"),
        )),
    }
}
