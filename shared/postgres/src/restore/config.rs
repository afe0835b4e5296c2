//! What a restore is given, checked before anything is read or created:
//! the settings (command line and environment) turned into a
//! [`RestoreConfig`] with loaded keys, the clouds to read from, and where
//! progress goes. Also the URL parsing the target checks rely on.
//!
//! Everything that can be rejected without a network round trip is
//! rejected here, so a mistyped option fails at once and names the option
//! or variable at fault.

use std::str::FromStr;

use backstop_core::config::{ConfigError, Env, hint};
use backstop_core::crypto::{BackupSecretKey, CryptoError, KeySource, KeyUnwrap, VerifyingKey};
use backstop_core::naming::{BackupId, MAX_NAME_BYTES, NameError, Namespace};
use backstop_core::store::ObjectStore;

use crate::pg::{self, PgTools, redact_url};
use crate::{invalid, missing, shown_key_setting};

/// The backup secret key setting (`file:...` or `gcpkms:...:path`).
pub(crate) const BACKUP_KEY_VAR: &str = "BACKSTOP_BACKUP_KEY";
/// The signing public key(s) manifests must be signed with.
pub(crate) const SIGNING_PUBLIC_KEY_VAR: &str = "BACKSTOP_SIGNING_PUBLIC_KEY";
/// The database the backups are taken from: its server and name are never
/// a restore target.
pub(crate) const SOURCE_DATABASE_URL_VAR: &str = "BACKSTOP_SOURCE_DATABASE_URL";

/// Where a backup is restored to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// `postgres://user@host:port/dbname`: the database in the URL.
    Url(String),
    /// A database named `database` on the server of `server_url` (a URL the
    /// restore can create and drop databases with, e.g. `.../postgres`).
    OnServer {
        server_url: String,
        database: String,
    },
    /// The database of a branch on the server of `server_url`: named by
    /// [`database_for_branch`], marked with the branch name when created,
    /// and replaced only when marked for the same branch.
    Branch { server_url: String, branch: String },
}

impl Target {
    /// The database for a branch (`feature/Fix-Login` →
    /// `br_feature_fix_login_<hash>`), see [`database_for_branch`].
    pub fn branch(server_url: &str, branch: &str) -> Self {
        Target::Branch {
            server_url: server_url.to_string(),
            branch: branch.to_string(),
        }
    }
}

/// The prefix every branch database name has: reserved, so that no branch
/// name can spell an existing database (`postgres`, the source, another
/// branch's mapped name).
pub const BRANCH_DATABASE_PREFIX: &str = "br_";

/// Hex digits of the branch name's SHA-256 in its database name: 48 bits,
/// and a collision would still be refused by the branch marking.
const BRANCH_HASH_HEX: usize = 12;

/// The deterministic database name of a branch, **always**
/// `br_<readable part>_<hash>`: the readable part is the branch lower-cased
/// to `a-z0-9_` (runs of anything else become one `_`), cut so the name
/// fits 63 bytes; the hash is of the exact branch name, so two different
/// branch names never share a database and no branch name maps to a
/// database that is not a branch's.
pub fn database_for_branch(branch: &str) -> String {
    let mut slug = String::new();
    for c in branch.chars() {
        let c = c.to_ascii_lowercase();
        if c.is_ascii_lowercase() || c.is_ascii_digit() {
            slug.push(c);
        } else if !slug.ends_with('_') {
            slug.push('_');
        }
    }
    let hash = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(branch.as_bytes()))
    };
    let room = MAX_NAME_BYTES - BRANCH_DATABASE_PREFIX.len() - 1 - BRANCH_HASH_HEX;
    let head: String = slug.trim_matches('_').chars().take(room).collect();
    let head = head.trim_end_matches('_');
    let hash = &hash[..BRANCH_HASH_HEX];
    if head.is_empty() {
        format!("{BRANCH_DATABASE_PREFIX}{hash}")
    } else {
        format!("{BRANCH_DATABASE_PREFIX}{head}_{hash}")
    }
}

/// The comment Backstop puts on a database it created for `branch`.
pub fn branch_marking(branch: &str) -> String {
    format!("backstop:branch={branch}")
}

/// Checks an explicit database name (it is always quoted, so any character
/// is safe; only length and NUL matter).
pub(crate) fn check_database_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("the database name is empty".into());
    }
    if name.len() > MAX_NAME_BYTES {
        return Err(format!(
            "database name {name:?} is {} bytes long; PostgreSQL allows {MAX_NAME_BYTES} (use --branch to derive a short name)",
            name.len()
        ));
    }
    if name.contains('\0') {
        return Err("the database name contains a NUL character".into());
    }
    if ["template0", "template1"].contains(&name) {
        return Err(format!(
            "{name} is a template database and never a restore target"
        ));
    }
    Ok(())
}

/// Everything one restore needs.
#[derive(Debug, Clone)]
pub struct RestoreConfig {
    /// The source namespace whose backups are restored (`production`).
    pub namespace: Namespace,
    /// Only backups of this database within the namespace (default: any).
    pub database: Option<String>,
    /// A chosen backup instead of the newest verified one.
    pub backup: Option<BackupId>,
    pub target: Target,
    /// Replace a non-empty target (restored into a staging database, swapped
    /// in after the drill passed).
    pub replace: bool,
    /// `BACKSTOP_SOURCE_DATABASE_URL`: the database backups are taken from.
    pub source_database_url: Option<String>,
    pub tools: PgTools,
    pub secret_key: BackupSecretKey,
    pub signing_keys: Vec<VerifyingKey>,
    /// Write a drill record (default true).
    pub write_drill: bool,
    /// `pg_restore` jobs: 1 streams into one transaction (the default);
    /// more spool the verified archive to [`Self::spool_dir`] and restore
    /// it with `pg_restore -j` into a new or staging database.
    pub jobs: u32,
    /// Where verified data is spooled (older backups without chunk digests,
    /// and `--jobs`): `BACKSTOP_SPOOL_DIR`, else the system's temporary
    /// directory.
    pub spool_dir: std::path::PathBuf,
    /// How far in the future a backup's time may be (dump hosts' clocks
    /// drift); later backups are never the newest. `BACKSTOP_MAX_CLOCK_SKEW`.
    pub max_clock_skew: chrono::TimeDelta,
}

/// The most `pg_restore` jobs `--jobs` accepts.
pub const MAX_JOBS: u32 = 64;

/// Raw settings, from the command line and the environment.
#[derive(Debug, Clone, Default)]
pub struct RestoreSettings {
    pub namespace: Option<String>,
    pub database: Option<String>,
    pub backup: Option<String>,
    pub target_url: Option<String>,
    pub server_url: Option<String>,
    pub branch: Option<String>,
    pub target_db: Option<String>,
    pub replace: bool,
    pub source_database_url: Option<String>,
    /// `BACKSTOP_BACKUP_KEY`
    pub backup_key: Option<String>,
    /// `BACKSTOP_SIGNING_PUBLIC_KEY`
    pub signing_public_key: Option<String>,
    /// `BACKSTOP_PG_BINDIR` (else `PG_BINDIR`, else `PATH`).
    pub pg_bindir: Option<std::path::PathBuf>,
    /// `--jobs` (default 1).
    pub jobs: Option<u32>,
    /// `BACKSTOP_SPOOL_DIR` (default: the system's temporary directory).
    pub spool_dir: Option<std::path::PathBuf>,
    /// `BACKSTOP_MAX_CLOCK_SKEW` (default 10 min).
    pub max_clock_skew: Option<String>,
}

impl RestoreConfig {
    /// Validates settings and loads the keys (`kms` unwraps a `gcpkms:`
    /// backup key). Errors name the option or variable at fault.
    pub async fn load(s: RestoreSettings, kms: &dyn KeyUnwrap) -> Result<Self, ConfigError> {
        let (namespace, backup) = namespace_and_backup(s.namespace, s.backup.as_deref())?;
        let target = target_from(s.target_url, s.server_url, s.branch, s.target_db)?;
        let secret_key = load_secret_key(s.backup_key, kms).await?;
        let signing_keys = load_signing_keys(s.signing_public_key).await?;
        Ok(Self {
            namespace,
            database: s.database.filter(|d| !d.trim().is_empty()),
            backup,
            target,
            replace: s.replace,
            source_database_url: s.source_database_url.filter(|u| !u.trim().is_empty()),
            tools: PgTools {
                bindir: s.pg_bindir,
            },
            secret_key,
            signing_keys,
            write_drill: true,
            jobs: check_jobs(s.jobs)?,
            spool_dir: s
                .spool_dir
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or_else(std::env::temp_dir),
            max_clock_skew: max_clock_skew(s.max_clock_skew.as_deref())?,
        })
    }
}

/// `BACKSTOP_MAX_CLOCK_SKEW`: a duration (`10min`, `1h`), default 10 min.
fn max_clock_skew(text: Option<&str>) -> Result<chrono::TimeDelta, ConfigError> {
    match text.map(str::trim).filter(|t| !t.is_empty()) {
        None => Ok(chrono::TimeDelta::seconds(
            backstop_core::retention::DEFAULT_MAX_CLOCK_SKEW_SECS,
        )),
        Some(t) => backstop_core::retention::parse_duration(t)
            .map_err(|e| invalid(backstop_core::retention::MAX_CLOCK_SKEW_ENV, t, e)),
    }
}

/// `--jobs`: 1 (the default) to [`MAX_JOBS`].
fn check_jobs(jobs: Option<u32>) -> Result<u32, ConfigError> {
    match jobs.unwrap_or(1) {
        n @ 1..=MAX_JOBS => Ok(n),
        n => Err(invalid(
            "--jobs",
            &n.to_string(),
            format!("give 1 (stream into one transaction) to {MAX_JOBS} parallel pg_restore jobs"),
        )),
    }
}

/// `--namespace` and `--backup`. A backup id names its namespace, so
/// `--backup` alone restores from it; a `--namespace` given as well must be
/// the same. Without either, `production`.
fn namespace_and_backup(
    namespace: Option<String>,
    backup: Option<&str>,
) -> Result<(Namespace, Option<BackupId>), ConfigError> {
    let namespace = match namespace
        .as_deref()
        .map(str::trim)
        .filter(|n| !n.is_empty())
    {
        Some(n) => Some(Namespace::new(n).map_err(|e| invalid("--namespace", n, e.to_string()))?),
        None => None,
    };
    let Some(b) = backup.map(str::trim).filter(|b| !b.is_empty()) else {
        let ns = namespace.unwrap_or_else(|| Namespace::new("production").expect("valid"));
        return Ok((ns, None));
    };
    let id: BackupId = b
        .parse()
        .map_err(|e: NameError| invalid("--backup", b, e.to_string()))?;
    match namespace {
        Some(ns) if ns != id.namespace => Err(invalid(
            "--backup",
            b,
            format!(
                "the backup belongs to namespace {}, but --namespace says {ns}; drop --namespace (the backup id names it) or give the matching one",
                id.namespace
            ),
        )),
        _ => Ok((id.namespace.clone(), Some(id))),
    }
}

/// Exactly one way of naming the target, with its database name checked.
fn target_from(
    target_url: Option<String>,
    server_url: Option<String>,
    branch: Option<String>,
    target_db: Option<String>,
) -> Result<Target, ConfigError> {
    match (target_url, server_url, branch, target_db) {
        (Some(url), None, None, None) => {
            let name = pg::database_name(&url)
                .map_err(|e| invalid("--target-url", &redact_url(&url), e.to_string()))?;
            check_database_name(&name)
                .map_err(|r| invalid("--target-url", &redact_url(&url), r))?;
            Ok(Target::Url(url))
        }
        (None, Some(server_url), Some(branch), None) => {
            if branch.trim().is_empty() {
                return Err(invalid("--branch", &branch, "the branch name is empty"));
            }
            Ok(Target::branch(&server_url, &branch))
        }
        (None, Some(server_url), None, Some(db)) => {
            check_database_name(&db).map_err(|r| invalid("--target-db", &db, r))?;
            Ok(Target::OnServer {
                server_url,
                database: db,
            })
        }
        _ => Err(invalid(
            "--target-url",
            "",
            "give exactly one target: --target-url URL, or --server-url URL with --branch NAME or --target-db NAME",
        )),
    }
}

/// `BACKSTOP_BACKUP_KEY`, read (and unwrapped by `kms` when wrapped).
async fn load_secret_key(
    setting: Option<String>,
    kms: &dyn KeyUnwrap,
) -> Result<BackupSecretKey, ConfigError> {
    let key_text = setting
        .filter(|k| !k.trim().is_empty())
        .ok_or_else(|| missing(BACKUP_KEY_VAR, hint::BACKUP_KEY))?;
    let shown = shown_key_setting(&key_text);
    let bad = |e: CryptoError| invalid(BACKUP_KEY_VAR, &shown, e.to_string());
    let source = KeySource::from_str(&key_text).map_err(bad)?;
    BackupSecretKey::load(&source, kms).await.map_err(bad)
}

/// `BACKSTOP_SIGNING_PUBLIC_KEY`: the keys a manifest must be signed with.
async fn load_signing_keys(setting: Option<String>) -> Result<Vec<VerifyingKey>, ConfigError> {
    let signing = setting
        .filter(|k| !k.trim().is_empty())
        .ok_or_else(|| missing(SIGNING_PUBLIC_KEY_VAR, hint::SIGNING_PUBLIC_KEY))?;
    let pairs = [(SIGNING_PUBLIC_KEY_VAR, signing)];
    backstop_core::trust::signing_keys_from_env(&Env::from_pairs(pairs)).await
}

/// The clouds to read from, in order of preference.
#[derive(Clone, Copy)]
pub struct Clouds<'a> {
    /// The backups bucket (GCS).
    pub primary: Option<&'a dyn ObjectStore>,
    /// The replica (S3), used when the primary is unreachable or has no
    /// usable backup.
    pub replica: Option<&'a dyn ObjectStore>,
}

impl<'a> Clouds<'a> {
    /// The configured clouds, named, primary first.
    pub(super) fn ordered(&self) -> Vec<(&'static str, &'a dyn ObjectStore)> {
        let mut out = Vec::new();
        if let Some(p) = self.primary {
            out.push(("gcs", p));
        }
        if let Some(r) = self.replica {
            out.push(("s3", r));
        }
        out
    }

    /// The store of a cloud named by [`Self::ordered`].
    pub(super) fn store(&self, cloud: &str) -> Option<&'a dyn ObjectStore> {
        self.ordered()
            .into_iter()
            .find(|(c, _)| *c == cloud)
            .map(|(_, s)| s)
    }
}

/// Receives progress; every method has a no-op default.
pub trait Progress: Send + Sync {
    /// A phase begins (`selecting`, `restoring`, `verifying`, ...).
    fn phase(&self, _phase: &str) {}
    /// The download starts; `total` ciphertext bytes are expected.
    fn start(&self, _backup: &str, _total: u64) {}
    /// `done` ciphertext bytes were read so far.
    fn advance(&self, _done: u64) {}
    /// The download ended (successfully or not).
    fn finish(&self) {}
}

/// Reports nothing.
pub struct NoProgress;
impl Progress for NoProgress {}

/// A server identity for "same server" checks: host (local names folded to
/// `localhost`) and port.
pub(super) fn server_of(url: &str) -> Option<(String, u16)> {
    let config = tokio_postgres::Config::from_str(url).ok()?;
    let host = match config.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(h)) => h.to_ascii_lowercase(),
        #[cfg(unix)]
        Some(tokio_postgres::config::Host::Unix(_)) => "localhost".into(),
        None => "localhost".into(),
    };
    let host = match host.trim_matches(|c| c == '[' || c == ']') {
        "127.0.0.1" | "::1" | "localhost" | "" => "localhost".to_string(),
        h => h.to_string(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    Some((host, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn branch_databases_are_valid_and_deterministic() {
        let hostile = format!(
            "feature/x'; DROP DATABASE postgres; --\"é{}",
            "a".repeat(100)
        );
        let a = database_for_branch(&hostile);
        assert_eq!(a, database_for_branch(&hostile));
        assert!(a.len() <= MAX_NAME_BYTES, "{a}");
        assert!(
            a.starts_with(BRANCH_DATABASE_PREFIX)
                && a.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'),
            "{a}"
        );
        assert!(database_for_branch("feature/Fix-Login").starts_with("br_feature_fix_login_"));
        // Names that already are valid, or spell another branch's mapped
        // name, still get the prefix and their own hash.
        for name in ["postgres", "production", "template1", "app"] {
            let db = database_for_branch(name);
            assert!(db.starts_with(&format!("br_{name}_")), "{db}");
        }
        let mapped = database_for_branch("feature/Fix-Login");
        assert_ne!(database_for_branch(&mapped), mapped);
        assert!(database_for_branch("ü/é").starts_with("br_"));
        assert_eq!(database_for_branch("").len(), 3 + 12);
        let long = database_for_branch(&"x".repeat(300));
        assert!(long.len() <= MAX_NAME_BYTES, "{long}");
        assert_ne!(long, database_for_branch(&"x".repeat(301)));
        assert_ne!(
            database_for_branch("feature/Fix-Login"),
            database_for_branch("feature/fix-login")
        );
        check_database_name(&a).unwrap();
    }

    #[test]
    fn explicit_names_are_checked() {
        assert!(check_database_name("").is_err());
        assert!(check_database_name(&"x".repeat(64)).is_err());
        assert!(check_database_name("template1").is_err());
        check_database_name("a\"b; DROP").unwrap();
    }

    #[test]
    fn servers_compare_by_host_and_port() {
        assert_eq!(
            server_of("postgres://u@127.0.0.1/db"),
            server_of("postgres://x:y@localhost:5432/other")
        );
        assert_ne!(
            server_of("postgres://u@db1:5432/db"),
            server_of("postgres://u@db1:5433/db")
        );
        assert_ne!(
            server_of("postgres://u@db1/db"),
            server_of("postgres://u@db2/db")
        );
    }

    #[test]
    fn exactly_one_target() {
        let s = |x: &str| Some(x.to_string());
        assert_eq!(
            target_from(s("postgres://u@h/app"), None, None, None),
            Ok(Target::Url("postgres://u@h/app".into()))
        );
        assert_eq!(
            target_from(None, s("postgres://u@h/postgres"), None, s("app")),
            Ok(Target::OnServer {
                server_url: "postgres://u@h/postgres".into(),
                database: "app".into()
            })
        );
        for (url, server, branch, db) in [
            (None, None, None, None),
            (
                s("postgres://u@h/app"),
                s("postgres://u@h/postgres"),
                None,
                None,
            ),
            (None, s("postgres://u@h/postgres"), s("b"), s("app")),
            (None, s("postgres://u@h/postgres"), s("  "), None),
            (None, s("postgres://u@h/postgres"), None, s("template0")),
        ] {
            assert!(target_from(url, server, branch, db).is_err());
        }
    }

    #[test]
    fn a_chosen_backup_names_its_namespace() {
        let none = namespace_and_backup(None, Some("  ")).unwrap();
        assert_eq!((none.0.as_str(), none.1), ("production", None));
        assert!(namespace_and_backup(None, Some("not a backup")).is_err());
        let staging = Namespace::new("staging").unwrap();
        let id = BackupId::new(staging.clone(), "app", chrono::Utc::now()).unwrap();
        let text = format!(" {id} ");
        // --backup alone: its namespace, no --namespace needed.
        assert_eq!(
            namespace_and_backup(None, Some(&text)).unwrap(),
            (staging.clone(), Some(id.clone()))
        );
        assert_eq!(
            namespace_and_backup(Some("staging".into()), Some(&text)).unwrap(),
            (staging, Some(id.clone()))
        );
        let err = namespace_and_backup(Some("production".into()), Some(&text)).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("--namespace says production"), "{msg}");
        assert!(msg.starts_with("option --backup"), "{msg}");
    }
}
