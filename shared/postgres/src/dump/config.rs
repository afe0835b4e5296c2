//! What a dump is given, checked before a snapshot is taken: the database
//! URL (any name PostgreSQL keeps; object keys carry it encoded, see
//! `naming::database_segment`), the namespace, the public
//! keys to encrypt to (a secret key is refused: the dump job must never be
//! able to decrypt) and the signing key.

use std::path::PathBuf;
use std::time::Duration;

use chrono::Utc;

use backstop_core::config::{ConfigError, Env, hint};
use backstop_core::crypto::{
    Compression, CryptoError, KeySource, KeyUnwrap, RecipientKey, SigningKey,
};
use backstop_core::naming::{BackupId, Namespace};

use crate::pg::{self, PgTools};
use crate::{invalid, missing, shown_key_setting};

/// The database to dump.
pub const DATABASE_URL_VAR: &str = "BACKSTOP_DATABASE_URL";
pub(crate) const NAMESPACE_VAR: &str = "BACKSTOP_NAMESPACE";
pub(crate) const RECIPIENTS_VAR: &str = "BACKSTOP_RECIPIENTS";
pub(crate) const SIGNING_KEY_VAR: &str = "BACKSTOP_SIGNING_KEY";
pub(crate) const PG_BINDIR_VAR: &str = "BACKSTOP_PG_BINDIR";
/// The namespace when none is given.
pub const DEFAULT_NAMESPACE: &str = "production";

/// Backoff for the signature and manifest uploads (small, replayable).
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Attempts in total (1 = no retry).
    pub attempts: u32,
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            attempts: 5,
            initial_backoff: Duration::from_millis(250),
            max_backoff: Duration::from_secs(8),
        }
    }
}

/// Everything one dump needs. Built by [`DumpConfig::load`] from settings
/// (command line / environment) or directly by tests. Its `Debug` shows
/// the database URL with the password redacted.
#[derive(Clone)]
pub struct DumpConfig {
    /// `postgres://user[:password]@host:port/dbname` (never logged unredacted).
    pub database_url: String,
    pub namespace: Namespace,
    pub tools: PgTools,
    /// Public keys the data is encrypted to (at least one).
    pub recipients: Vec<RecipientKey>,
    /// Signs the manifest; the job's only secret.
    pub signing_key: SigningKey,
    pub retry: RetryPolicy,
    /// Deflate level inside the encryption (`BACKSTOP_COMPRESSION_LEVEL`):
    /// 0 none, 1 fastest to 9 smallest.
    pub compression: Compression,
}

impl std::fmt::Debug for DumpConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DumpConfig")
            .field("database_url", &pg::redact_url(&self.database_url))
            .field("namespace", &self.namespace)
            .field("tools", &self.tools)
            .field("recipients", &self.recipients)
            .field("signing_key", &self.signing_key)
            .field("retry", &self.retry)
            .field("compression", &self.compression)
            .finish()
    }
}

/// The deflate level of the dump: 0 (none) to 9.
pub const COMPRESSION_LEVEL_VAR: &str = "BACKSTOP_COMPRESSION_LEVEL";

/// Raw settings, as given on the command line or in the environment.
/// [`DumpConfig::load`] validates them; errors name the variable. Its
/// `Debug` shows the database URL with the password redacted.
#[derive(Clone, Default)]
pub struct DumpSettings {
    /// `BACKSTOP_DATABASE_URL`
    pub database_url: Option<String>,
    /// `BACKSTOP_NAMESPACE` (default `production`)
    pub namespace: Option<String>,
    /// `BACKSTOP_RECIPIENTS`: one or more key settings, comma-separated
    /// (`file:/path/backup.pub.asc`, or armored public key text).
    pub recipients: Option<String>,
    /// `BACKSTOP_SIGNING_KEY`: a key setting (`file:`, `gcpkms:`, armored).
    pub signing_key: Option<String>,
    /// `BACKSTOP_PG_BINDIR` (else `PG_BINDIR`, else `PATH`).
    pub pg_bindir: Option<PathBuf>,
    /// `BACKSTOP_COMPRESSION_LEVEL` (default [`Compression::DEFAULT_LEVEL`]).
    pub compression_level: Option<String>,
}

impl std::fmt::Debug for DumpSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let key = |s: &Option<String>| s.as_deref().map(shown_key_setting);
        f.debug_struct("DumpSettings")
            .field(
                "database_url",
                &self.database_url.as_deref().map(pg::redact_url),
            )
            .field("namespace", &self.namespace)
            .field("recipients", &key(&self.recipients))
            .field("signing_key", &key(&self.signing_key))
            .field("pg_bindir", &self.pg_bindir)
            .field("compression_level", &self.compression_level)
            .finish()
    }
}

impl DumpSettings {
    /// The settings from environment variables.
    pub fn from_env(env: &Env) -> Self {
        Self {
            database_url: env.optional(DATABASE_URL_VAR),
            namespace: env.optional(NAMESPACE_VAR),
            recipients: env.optional(RECIPIENTS_VAR),
            signing_key: env.optional(SIGNING_KEY_VAR),
            pg_bindir: env
                .optional(PG_BINDIR_VAR)
                .or_else(|| env.optional("PG_BINDIR"))
                .map(PathBuf::from),
            compression_level: env.optional(COMPRESSION_LEVEL_VAR),
        }
    }
}

/// Splits a comma-separated list of key settings. Armored key text may
/// itself contain commas (in `Comment:` headers), so an armored block is
/// taken whole, up to its `-----END PGP ...-----` line.
pub(crate) fn split_key_settings(list: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = list.trim_start_matches(|c: char| c == ',' || c.is_whitespace());
    while !rest.is_empty() {
        let end = if rest.starts_with("-----BEGIN PGP") {
            rest.find("-----END PGP")
                .and_then(|i| rest[i + 5..].find("-----").map(|j| i + 5 + j + 5))
                .unwrap_or(rest.len())
        } else {
            rest.find(',').unwrap_or(rest.len())
        };
        let item = rest[..end].trim();
        if !item.is_empty() {
            out.push(item.to_string());
        }
        rest = rest[end..].trim_start_matches(|c: char| c == ',' || c.is_whitespace());
    }
    out
}

impl DumpConfig {
    /// Validates settings and loads the keys. Errors name the variable.
    pub async fn load(settings: DumpSettings, kms: &dyn KeyUnwrap) -> Result<Self, ConfigError> {
        let database_url = settings
            .database_url
            .filter(|s| !s.trim().is_empty())
            .ok_or_else(|| missing(DATABASE_URL_VAR, hint::DATABASE_URL))?;
        check_database_url(&database_url)?;
        let namespace = namespace_setting(settings.namespace)?;

        let (recipients, signing_key) =
            load_job_keys(settings.recipients, settings.signing_key, kms).await?;

        Ok(Self {
            database_url,
            namespace,
            tools: PgTools {
                bindir: settings.pg_bindir,
            },
            recipients,
            signing_key,
            retry: RetryPolicy::default(),
            compression: compression_from(settings.compression_level.as_deref())?,
        })
    }
}

/// `BACKSTOP_NAMESPACE` of a job: the namespace given, or
/// [`DEFAULT_NAMESPACE`]; errors name the variable.
pub(crate) fn namespace_setting(text: Option<String>) -> Result<Namespace, ConfigError> {
    let text = text
        .filter(|s| !s.trim().is_empty())
        .unwrap_or_else(|| DEFAULT_NAMESPACE.to_string());
    Namespace::new(text.trim()).map_err(|e| invalid(NAMESPACE_VAR, &text, e.to_string()))
}

/// The keys of a job that writes backups (dump, base backup, WAL push):
/// `BACKSTOP_RECIPIENTS` (public keys to encrypt to, at least one) and
/// `BACKSTOP_SIGNING_KEY` (the job's one secret). Errors name the variable.
pub(crate) async fn load_job_keys(
    recipients: Option<String>,
    signing_key: Option<String>,
    kms: &dyn KeyUnwrap,
) -> Result<(Vec<RecipientKey>, SigningKey), ConfigError> {
    let recipients_text = recipients.filter(|s| !s.trim().is_empty()).ok_or_else(|| {
            missing(
                RECIPIENTS_VAR,
                "the backup public key(s) to encrypt to: file:/path/backup.pub.asc or armored key text, comma-separated",
            )
        })?;
    let signing_text = signing_key.filter(|s| !s.trim().is_empty()).ok_or_else(|| {
            missing(
                SIGNING_KEY_VAR,
                "the manifest signing secret key: file:/path/signing.sec.asc or gcpkms:projects/P/locations/L/keyRings/R/cryptoKeys/K:/path/signing.sec.asc.kms",
            )
        })?;
    let recipients = load_recipients(&recipients_text, kms).await?;
    let bad = |e: CryptoError| {
        invalid(
            SIGNING_KEY_VAR,
            &shown_key_setting(&signing_text),
            e.to_string(),
        )
    };
    let source: KeySource = signing_text.parse().map_err(bad)?;
    let signing_key = SigningKey::load(&source, kms).await.map_err(bad)?;

    Ok((recipients, signing_key))
}

/// `BACKSTOP_COMPRESSION_LEVEL`: 0 (none) to 9, default
/// [`Compression::DEFAULT_LEVEL`].
pub(crate) fn compression_from(text: Option<&str>) -> Result<Compression, ConfigError> {
    compression_setting(text, COMPRESSION_LEVEL_VAR, Compression::DEFAULT_LEVEL)
}

/// A deflate level setting `var`: 0 (none) to 9, `default` when unset.
pub(crate) fn compression_setting(
    text: Option<&str>,
    var: &str,
    default: u32,
) -> Result<Compression, ConfigError> {
    let Some(t) = text.map(str::trim).filter(|t| !t.is_empty()) else {
        return Ok(Compression::level(default).expect("a valid default level"));
    };
    let bad = || {
        invalid(
            var,
            t,
            "give 0 (no compression) or a deflate level from 1 (fastest) to 9 (smallest)",
        )
    };
    let level: u32 = t.parse().map_err(|_| bad())?;
    Compression::level(level).ok_or_else(bad)
}

/// The database name (percent-decoded from the URL path, as libpq reads
/// it: `.../a%252Fb` is `a%2Fb`) must make a backup id: checked now, not
/// after a snapshot was taken.
fn check_database_url(database_url: &str) -> Result<(), ConfigError> {
    let bad = |reason: String| invalid(DATABASE_URL_VAR, &pg::redact_url(database_url), reason);
    let database = pg::database_name(database_url).map_err(|e| bad(e.to_string()))?;
    let namespace = Namespace::new(DEFAULT_NAMESPACE).expect("valid");
    BackupId::new(namespace, &database, Utc::now()).map_err(|e| bad(e.to_string()))?;
    Ok(())
}

/// `BACKSTOP_RECIPIENTS`: the public keys to encrypt to, at least one, and
/// never a secret key.
async fn load_recipients(
    recipients_text: &str,
    kms: &dyn KeyUnwrap,
) -> Result<Vec<RecipientKey>, ConfigError> {
    let mut recipients = Vec::new();
    for setting in split_key_settings(recipients_text) {
        let shown = shown_key_setting(&setting);
        let bad = |e: CryptoError| invalid(RECIPIENTS_VAR, &shown, e.to_string());
        let source: KeySource = setting.parse().map_err(bad)?;
        let bytes = source.read(kms).await.map_err(bad)?;
        // The dump job must never be given a decryption secret.
        if backstop_core::crypto::keys::holds_secret_key_material(&bytes) {
            return Err(invalid(
                RECIPIENTS_VAR,
                &shown,
                "this is a SECRET key; the dump job encrypts to public keys only and must not hold a decryption key (use the *.pub.asc file)",
            ));
        }
        recipients.push(RecipientKey::from_bytes(&source.to_string(), &bytes).map_err(bad)?);
    }
    if recipients.is_empty() {
        return Err(invalid(
            RECIPIENTS_VAR,
            recipients_text,
            "no key settings found",
        ));
    }
    Ok(recipients)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_settings_split_on_commas_but_keep_armor_whole() {
        let armored = "-----BEGIN PGP PUBLIC KEY BLOCK-----\nComment: a, b\n\nxjMEZ\n=abcd\n-----END PGP PUBLIC KEY BLOCK-----";
        let list = format!(" file:/a.asc ,{armored}, file:/b.asc,,");
        assert_eq!(
            split_key_settings(&list),
            vec![
                "file:/a.asc".to_string(),
                armored.to_string(),
                "file:/b.asc".to_string()
            ]
        );
        assert_eq!(split_key_settings("file:/only.asc"), vec!["file:/only.asc"]);
        assert!(split_key_settings(" , ").is_empty());
    }

    #[test]
    fn compression_levels_are_0_to_9() {
        assert_eq!(
            compression_from(None).unwrap(),
            Compression::Zip(Compression::DEFAULT_LEVEL)
        );
        assert_eq!(compression_from(Some("0")).unwrap(), Compression::None);
        assert_eq!(compression_from(Some(" 1 ")).unwrap(), Compression::Zip(1));
        for bad in ["10", "-1", "fast"] {
            let err = compression_from(Some(bad)).unwrap_err().to_string();
            assert!(err.contains(COMPRESSION_LEVEL_VAR), "{err}");
        }
    }

    #[tokio::test]
    async fn missing_settings_name_the_variable() {
        let kms = backstop_core::crypto::NoKms;
        let err = DumpConfig::load(DumpSettings::default(), &kms)
            .await
            .unwrap_err();
        assert!(err.to_string().contains(DATABASE_URL_VAR), "{err}");
        let s = DumpSettings {
            database_url: Some("postgres://u@h:5432/app".into()),
            ..Default::default()
        };
        let err = DumpConfig::load(s.clone(), &kms).await.unwrap_err();
        assert!(err.to_string().contains(RECIPIENTS_VAR), "{err}");
        let err = DumpConfig::load(
            DumpSettings {
                namespace: Some("Bad Name".into()),
                ..s.clone()
            },
            &kms,
        )
        .await
        .unwrap_err();
        assert!(err.to_string().contains(NAMESPACE_VAR), "{err}");
        let err = DumpConfig::load(
            DumpSettings {
                recipients: Some("file:/nonexistent/backup.pub.asc".into()),
                ..s.clone()
            },
            &kms,
        )
        .await
        .unwrap_err();
        assert!(err.to_string().contains(SIGNING_KEY_VAR), "{err}");
        let err = DumpConfig::load(
            DumpSettings {
                recipients: Some("file:/nonexistent/backup.pub.asc".into()),
                signing_key: Some("file:/nonexistent/signing.sec.asc".into()),
                ..s
            },
            &kms,
        )
        .await
        .unwrap_err();
        assert!(err.to_string().contains(RECIPIENTS_VAR), "{err}");
        assert!(
            err.to_string().contains("/nonexistent/backup.pub.asc"),
            "{err}"
        );
    }
}
