//! What a point-in-time restore is given, checked before anything is read:
//! one recovery target, the timeline, the data directory (missing or
//! empty), and the keys, loaded from the same settings `backstop restore`
//! takes (`file:` or `gcpkms:`; never key text, since `wal-fetch` reads the
//! same settings from a file in the data directory).

use std::path::PathBuf;
use std::str::FromStr;

use chrono::{DateTime, Utc};

use backstop_core::config::{ConfigError, Env, hint};
use backstop_core::crypto::{BackupSecretKey, KeySource, KeyUnwrap, VerifyingKey};
use backstop_core::naming::Namespace;
use backstop_core::wal::Lsn;

use crate::pg::PgTools;
use crate::{invalid, missing, shown_key_setting};

const BACKUP_KEY_VAR: &str = "BACKSTOP_BACKUP_KEY";
const SIGNING_PUBLIC_KEY_VAR: &str = "BACKSTOP_SIGNING_PUBLIC_KEY";

/// Where recovery stops.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecoveryTarget {
    /// `--to-time`: the last transaction committed at or before it.
    Time(DateTime<Utc>),
    /// `--to-lsn`: this WAL position.
    Lsn(Lsn),
    /// `--to-xid`: this transaction (committed, included).
    Xid(u64),
    /// `--latest`: the end of the archived WAL.
    Latest,
}

impl RecoveryTarget {
    /// How the target reads in reports (`time 2026-...`, `lsn 0/3000060`).
    pub fn describe(&self) -> String {
        match self {
            RecoveryTarget::Time(t) => format!("time {}", t.to_rfc3339()),
            RecoveryTarget::Lsn(l) => format!("lsn {l}"),
            RecoveryTarget::Xid(x) => format!("xid {x}"),
            RecoveryTarget::Latest => "latest".into(),
        }
    }
}

/// `--timeline`: the timeline recovery follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimelineChoice {
    /// The newest timeline in the archive that descends from the backup's.
    Latest,
    Id(u32),
}

/// `recovery_target_action`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecoveryAction {
    Promote,
    Pause,
}

impl RecoveryAction {
    pub fn as_str(self) -> &'static str {
        match self {
            RecoveryAction::Promote => "promote",
            RecoveryAction::Pause => "pause",
        }
    }
}

/// Raw settings, from the command line and the environment.
#[derive(Debug, Clone, Default)]
pub struct PitrSettings {
    pub namespace: Option<String>,
    pub system_identifier: Option<String>,
    pub to_time: Option<String>,
    pub to_lsn: Option<String>,
    pub to_xid: Option<String>,
    pub latest: bool,
    pub timeline: Option<String>,
    pub pgdata: Option<PathBuf>,
    pub pause: bool,
    /// `--start --port P`.
    pub start_port: Option<u16>,
    pub start: bool,
    /// The role the progress checks connect as (`--user`, default `postgres`).
    pub user: Option<String>,
    pub archive: bool,
    pub backup_key: Option<String>,
    pub signing_public_key: Option<String>,
    pub gcs_bucket: Option<String>,
    pub s3_bucket: Option<String>,
    pub pg_bindir: Option<PathBuf>,
    pub max_clock_skew: Option<String>,
    /// Seconds recovery may take after the server started (default 6 h).
    pub recovery_timeout_secs: Option<u64>,
    pub write_drill: bool,
}

/// Everything one point-in-time restore needs.
#[derive(Debug, Clone)]
pub struct PitrConfig {
    pub namespace: Namespace,
    pub system_identifier: Option<u64>,
    pub target: RecoveryTarget,
    pub timeline: TimelineChoice,
    pub pgdata: PathBuf,
    pub action: RecoveryAction,
    /// Start the server on this port and wait for the target.
    pub start_port: Option<u16>,
    pub user: String,
    /// Keep `archive_mode` as the backup had it (default: off).
    pub archive: bool,
    pub tools: PgTools,
    pub secret_key: BackupSecretKey,
    pub signing_keys: Vec<VerifyingKey>,
    /// The settings as given (`file:` / `gcpkms:`), for `wal-fetch`'s file.
    pub backup_key_setting: String,
    pub signing_key_setting: String,
    pub gcs_bucket: Option<String>,
    pub s3_bucket: Option<String>,
    pub max_clock_skew: chrono::TimeDelta,
    pub recovery_timeout: std::time::Duration,
    pub write_drill: bool,
}

impl PitrConfig {
    /// Validates the settings and loads the keys. Errors name the option
    /// or variable at fault.
    pub async fn load(s: PitrSettings, kms: &dyn KeyUnwrap) -> Result<Self, ConfigError> {
        let namespace = namespace(s.namespace.as_deref())?;
        let target = target_from(&s)?;
        if s.pause && target == RecoveryTarget::Latest {
            return Err(invalid(
                "--pause",
                "",
                "--latest recovers to the end of the archive and has nothing to pause at; give --to-time, --to-lsn or --to-xid, or drop --pause",
            ));
        }
        let pgdata = check_pgdata(s.pgdata)?;
        let start_port = match (s.start, s.start_port) {
            (true, None) => {
                return Err(missing(
                    "--port",
                    "the port to start PostgreSQL on (with --start)",
                ));
            }
            (false, Some(_)) => {
                return Err(invalid(
                    "--port",
                    "",
                    "--port is used with --start; add --start",
                ));
            }
            (_, p) => p,
        };
        let (secret_key, backup_key_setting) = load_secret_key(s.backup_key, kms).await?;
        let (signing_keys, signing_key_setting) = load_signing_keys(s.signing_public_key).await?;
        Ok(Self {
            namespace,
            system_identifier: system_identifier(s.system_identifier.as_deref())?,
            target,
            timeline: timeline(s.timeline.as_deref())?,
            pgdata,
            action: if s.pause {
                RecoveryAction::Pause
            } else {
                RecoveryAction::Promote
            },
            start_port,
            user: s
                .user
                .filter(|u| !u.trim().is_empty())
                .unwrap_or_else(|| "postgres".into()),
            archive: s.archive,
            tools: PgTools {
                bindir: s.pg_bindir,
            },
            secret_key,
            signing_keys,
            backup_key_setting,
            signing_key_setting,
            gcs_bucket: s.gcs_bucket.filter(|b| !b.trim().is_empty()),
            s3_bucket: s.s3_bucket.filter(|b| !b.trim().is_empty()),
            max_clock_skew: max_clock_skew(s.max_clock_skew.as_deref())?,
            recovery_timeout: std::time::Duration::from_secs(
                s.recovery_timeout_secs.unwrap_or(6 * 3600),
            ),
            write_drill: s.write_drill,
        })
    }
}

fn namespace(text: Option<&str>) -> Result<Namespace, ConfigError> {
    let n = text
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .unwrap_or("production");
    Namespace::new(n).map_err(|e| invalid("--namespace", n, e.to_string()))
}

fn system_identifier(text: Option<&str>) -> Result<Option<u64>, ConfigError> {
    match text.map(str::trim).filter(|t| !t.is_empty()) {
        None => Ok(None),
        Some(t) => t.parse().map(Some).map_err(|_| {
            invalid("--system-identifier", t, "give the cluster's system identifier in decimal (SELECT system_identifier FROM pg_control_system())")
        }),
    }
}

/// Exactly one of `--to-time`, `--to-lsn`, `--to-xid`, `--latest`.
fn target_from(s: &PitrSettings) -> Result<RecoveryTarget, ConfigError> {
    let given = [
        s.to_time.is_some(),
        s.to_lsn.is_some(),
        s.to_xid.is_some(),
        s.latest,
    ];
    if given.iter().filter(|g| **g).count() != 1 {
        return Err(invalid(
            "--to-time",
            "",
            "give exactly one recovery target: --to-time RFC3339, --to-lsn X/Y, --to-xid N or --latest",
        ));
    }
    if let Some(t) = s.to_time.as_deref().map(str::trim) {
        let at = DateTime::parse_from_rfc3339(t).map_err(|e| {
            invalid(
                "--to-time",
                t,
                format!("{e}; give an RFC 3339 time with its offset, e.g. 2026-11-27T14:03:00Z"),
            )
        })?;
        return Ok(RecoveryTarget::Time(at.with_timezone(&Utc)));
    }
    if let Some(l) = s.to_lsn.as_deref().map(str::trim) {
        let lsn = Lsn::from_str(l).map_err(|e| invalid("--to-lsn", l, e.to_string()))?;
        return Ok(RecoveryTarget::Lsn(lsn));
    }
    if let Some(x) = s.to_xid.as_deref().map(str::trim) {
        let xid = x.parse::<u64>().ok().filter(|x| *x >= 3).ok_or_else(|| {
            invalid(
                "--to-xid",
                x,
                "give a transaction id (a number >= 3, as txid_current() returned it)",
            )
        })?;
        return Ok(RecoveryTarget::Xid(xid));
    }
    Ok(RecoveryTarget::Latest)
}

fn timeline(text: Option<&str>) -> Result<TimelineChoice, ConfigError> {
    match text.map(str::trim).filter(|t| !t.is_empty()) {
        None | Some("latest") => Ok(TimelineChoice::Latest),
        Some(t) => t
            .parse::<u32>()
            .ok()
            .filter(|n| *n >= 1)
            .map(TimelineChoice::Id)
            .ok_or_else(|| {
                invalid(
                    "--timeline",
                    t,
                    "give a timeline number (1, 2, ...) or latest",
                )
            }),
    }
}

/// `--pgdata`: required; a directory that does not exist or is empty.
fn check_pgdata(dir: Option<PathBuf>) -> Result<PathBuf, ConfigError> {
    let dir = dir
        .filter(|d| !d.as_os_str().is_empty())
        .ok_or_else(|| missing("--pgdata", "the new data directory (missing or empty)"))?;
    let shown = dir.display().to_string();
    if shown.contains(['\'', '\n', '\\']) {
        return Err(invalid(
            "--pgdata",
            &shown,
            "the path may not contain quotes, backslashes or newlines (it is written into postgresql.auto.conf)",
        ));
    }
    match std::fs::read_dir(&dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(dir),
        Err(e) => Err(invalid("--pgdata", &shown, format!("cannot read it: {e}"))),
        Ok(mut entries) => match entries.next() {
            None => Ok(dir),
            Some(_) => Err(not_empty(&shown)),
        },
    }
}

fn not_empty(shown: &str) -> ConfigError {
    invalid(
        "--pgdata",
        shown,
        "the directory is not empty; a point-in-time restore writes a whole data directory: give a new or empty directory (nothing was changed)",
    )
}

fn max_clock_skew(text: Option<&str>) -> Result<chrono::TimeDelta, ConfigError> {
    use backstop_core::retention::{
        DEFAULT_MAX_CLOCK_SKEW_SECS, MAX_CLOCK_SKEW_ENV, parse_duration,
    };
    match text.map(str::trim).filter(|t| !t.is_empty()) {
        None => Ok(chrono::TimeDelta::seconds(DEFAULT_MAX_CLOCK_SKEW_SECS)),
        Some(t) => parse_duration(t).map_err(|e| invalid(MAX_CLOCK_SKEW_ENV, t, e)),
    }
}

/// The backup secret key: `file:` or `gcpkms:` only, since the same
/// setting goes into `wal-fetch`'s file (key text never does).
async fn load_secret_key(
    setting: Option<String>,
    kms: &dyn KeyUnwrap,
) -> Result<(BackupSecretKey, String), ConfigError> {
    let text = setting
        .map(|k| k.trim().to_string())
        .filter(|k| !k.is_empty())
        .ok_or_else(|| missing(BACKUP_KEY_VAR, hint::BACKUP_KEY))?;
    let shown = shown_key_setting(&text);
    let bad = |e: String| invalid(BACKUP_KEY_VAR, &shown, e);
    let source = KeySource::from_str(&text).map_err(|e| bad(e.to_string()))?;
    if matches!(source, KeySource::Inline(_)) {
        return Err(bad("restore-cluster hands the key setting to wal-fetch in a file; give file:/path or gcpkms:<key>:/path, never the key text".into()));
    }
    let key = BackupSecretKey::load(&source, kms)
        .await
        .map_err(|e| bad(e.to_string()))?;
    Ok((key, text))
}

/// The signing public key(s) manifests must be signed with.
async fn load_signing_keys(
    setting: Option<String>,
) -> Result<(Vec<VerifyingKey>, String), ConfigError> {
    let text = setting
        .filter(|k| !k.trim().is_empty())
        .ok_or_else(|| missing(SIGNING_PUBLIC_KEY_VAR, hint::SIGNING_PUBLIC_KEY))?;
    let env = Env::from_pairs([(SIGNING_PUBLIC_KEY_VAR, text.clone())]);
    let keys = backstop_core::trust::signing_keys_from_env(&env).await?;
    Ok((keys, text))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> PitrSettings {
        PitrSettings {
            latest: true,
            ..PitrSettings::default()
        }
    }

    #[test]
    fn exactly_one_target() {
        assert_eq!(target_from(&settings()).unwrap(), RecoveryTarget::Latest);
        let mut s = settings();
        s.to_lsn = Some("0/3000060".into());
        assert!(target_from(&s).is_err(), "two targets");
        s.latest = false;
        assert_eq!(
            target_from(&s).unwrap(),
            RecoveryTarget::Lsn(Lsn(0x3000060))
        );
        s.to_lsn = None;
        s.to_time = Some("2026-11-27T14:03:00+01:00".into());
        let RecoveryTarget::Time(t) = target_from(&s).unwrap() else {
            panic!()
        };
        assert_eq!(t.to_rfc3339(), "2026-11-27T13:03:00+00:00");
        s.to_time = Some("yesterday".into());
        assert!(
            target_from(&s)
                .unwrap_err()
                .to_string()
                .contains("RFC 3339")
        );
        assert!(target_from(&PitrSettings::default()).is_err(), "no target");
    }

    #[test]
    fn timelines_and_data_directories() {
        assert_eq!(timeline(None).unwrap(), TimelineChoice::Latest);
        assert_eq!(timeline(Some("2")).unwrap(), TimelineChoice::Id(2));
        assert!(timeline(Some("0")).is_err());
        let dir = tempfile_dir();
        assert!(check_pgdata(Some(dir.clone())).is_ok(), "empty");
        std::fs::write(dir.join("PG_VERSION"), "15").unwrap();
        let err = check_pgdata(Some(dir.clone())).unwrap_err().to_string();
        assert!(err.contains("not empty"), "{err}");
        assert!(check_pgdata(Some(dir.join("new"))).is_ok(), "missing");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn tempfile_dir() -> PathBuf {
        let d = std::env::temp_dir().join(format!("pitr-cfg-{:08x}", rand::random::<u32>()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }
}
