//! Typed configuration from environment variables.
//!
//! Every binary reads its settings through [`Env`], so that a missing or
//! invalid variable is reported by name, with what was expected.

use std::collections::BTreeMap;
use std::str::FromStr;

/// A configuration problem, always naming the variable at fault.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    /// A required setting is unset or empty.
    #[error("{} is not set: {hint}", setting(name))]
    Missing {
        /// The variable's name.
        name: String,
        /// What to set it to.
        hint: String,
    },
    /// A setting's value does not parse or is not allowed.
    #[error("{} is invalid: {reason}", setting_value(name, value))]
    Invalid {
        /// The variable's (or command-line option's) name.
        name: String,
        /// The value as given, trimmed.
        value: String,
        /// Why it is refused, and what is expected.
        reason: String,
    },
}

/// What to set, for each setting more than one place asks for: one text
/// each, so that every command's error says the same.
pub mod hint {
    /// `BACKSTOP_DATABASE_URL` / `--database-url`.
    pub const DATABASE_URL: &str =
        "the database to dump, postgres://user@host:port/dbname (or pass --database-url)";
    /// `BACKSTOP_SIGNING_PUBLIC_KEY`.
    pub const SIGNING_PUBLIC_KEY: &str =
        "the dump job's public signing key: file:/path/signing.pub.asc, or the armored key";
    /// `BACKSTOP_RECIPIENTS`.
    pub const RECIPIENTS: &str =
        "the backup public key(s): file:/path/backup.pub.asc, or the armored key";
    /// `BACKSTOP_BACKUP_KEY`.
    pub const BACKUP_KEY: &str = "the backup secret key: file:/path/backup.sec.asc or gcpkms:projects/P/locations/L/keyRings/R/cryptoKeys/K:/path/backup.sec.asc.kms";
    /// `BACKSTOP_GCS_BUCKET`.
    pub const GCS_BUCKET: &str = "the GCS bucket that holds backups";
    /// `BACKSTOP_S3_BUCKET`.
    pub const S3_BUCKET: &str = "the S3 bucket that holds backup replicas";
}

/// How a message names a setting: what the user typed, `option --backup`
/// or `environment variable BACKSTOP_BACKUP_KEY`.
fn setting(name: &str) -> String {
    if name.starts_with("--") {
        format!("option {name}")
    } else {
        format!("environment variable {name}")
    }
}

/// A setting and its value, as typed: `option --backup "x"`, or
/// `environment variable NAME="x"`.
fn setting_value(name: &str, value: &str) -> String {
    if name.starts_with("--") {
        format!("option {name} {value:?}")
    } else {
        format!("environment variable {name}={value:?}")
    }
}

impl ConfigError {
    /// The same error, naming the setting `to` where it names `from`: a
    /// library names the variable it reads (or the option), the command
    /// line knows which of the two the user actually gave.
    pub fn renamed(self, from: &str, to: &str) -> Self {
        match self {
            ConfigError::Missing { name, hint } if name == from => ConfigError::Missing {
                name: to.into(),
                hint,
            },
            ConfigError::Invalid {
                name,
                value,
                reason,
            } if name == from => ConfigError::Invalid {
                name: to.into(),
                value,
                reason,
            },
            other => other,
        }
    }

    /// A required setting that is absent, with what to give.
    pub fn missing(name: &str, hint: &str) -> Self {
        ConfigError::Missing {
            name: name.into(),
            hint: hint.into(),
        }
    }

    /// An invalid setting (a variable or a command-line option) and its value.
    pub fn invalid(name: &str, value: &str, reason: impl Into<String>) -> Self {
        ConfigError::Invalid {
            name: name.into(),
            value: value.into(),
            reason: reason.into(),
        }
    }
}

/// A source of configuration values: the process environment in binaries, a
/// map in tests (so tests never mutate the global environment).
#[derive(Debug, Clone, Default)]
pub struct Env {
    vars: BTreeMap<String, String>,
}

impl Env {
    /// Runs one configuration step (typically building a cloud client) on a
    /// task of its own, so that independent steps started together run on
    /// every core: each SDK client parses the system's CA certificates when
    /// it is built, which is most of a function's cold start.
    pub async fn spawn<T, F, Fut>(&self, step: F) -> Result<T, ConfigError>
    where
        F: FnOnce(Env) -> Fut,
        Fut: std::future::Future<Output = Result<T, ConfigError>> + Send + 'static,
        T: Send + 'static,
    {
        match tokio::spawn(step(self.clone())).await {
            Ok(result) => result,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(e) => panic!("configuration task cancelled: {e}"),
        }
    }

    /// Snapshot of the process environment.
    pub fn from_process() -> Self {
        Self {
            vars: std::env::vars().collect(),
        }
    }

    /// An environment holding exactly `pairs` (tests).
    pub fn from_pairs<I, K, V>(pairs: I) -> Self
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        Self {
            vars: pairs
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        }
    }

    /// The value, treating an empty string as unset.
    pub fn optional(&self, name: &str) -> Option<String> {
        self.vars
            .get(name)
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
    }

    /// The value, or [`ConfigError::Missing`] with `hint` when unset or empty.
    pub fn required(&self, name: &str, hint: &str) -> Result<String, ConfigError> {
        self.optional(name).ok_or_else(|| ConfigError::Missing {
            name: name.to_string(),
            hint: hint.to_string(),
        })
    }

    /// Parses an optional variable, falling back to `default` when unset.
    pub fn parsed_or<T>(&self, name: &str, default: T) -> Result<T, ConfigError>
    where
        T: FromStr,
        T::Err: std::fmt::Display,
    {
        match self.optional(name) {
            None => Ok(default),
            Some(value) => value.parse().map_err(|e: T::Err| ConfigError::Invalid {
                name: name.to_string(),
                value: value.clone(),
                reason: e.to_string(),
            }),
        }
    }

    /// A boolean flag: `1/true/yes/on` or `0/false/no/off`.
    pub fn flag(&self, name: &str, default: bool) -> Result<bool, ConfigError> {
        match self.optional(name).map(|v| v.to_ascii_lowercase()) {
            None => Ok(default),
            Some(v) if ["1", "true", "yes", "on"].contains(&v.as_str()) => Ok(true),
            Some(v) if ["0", "false", "no", "off"].contains(&v.as_str()) => Ok(false),
            Some(v) => Err(ConfigError::Invalid {
                name: name.to_string(),
                value: v,
                reason: "expected one of 1/true/yes/on or 0/false/no/off".into(),
            }),
        }
    }

    /// A comma-separated list; empty items are dropped.
    pub fn list(&self, name: &str) -> Vec<String> {
        self.optional(name)
            .map(|v| {
                v.split(',')
                    .map(|s| s.trim().to_string())
                    .filter(|s| !s.is_empty())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// A [`ConfigError::Invalid`] for `name`, quoting its current value.
    pub fn invalid(&self, name: &str, reason: impl Into<String>) -> ConfigError {
        ConfigError::invalid(name, &self.optional(name).unwrap_or_default(), reason)
    }
}

crate::error::permanent!(ConfigError);

impl crate::error::Failure for ConfigError {
    fn failure_kind(&self) -> crate::error::FailureKind {
        crate::error::FailureKind::Config
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_variable_is_named() {
        let env = Env::from_pairs([("OTHER", "x")]);
        let err = env
            .required("BACKSTOP_GCS_BUCKET", "the backups bucket")
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "environment variable BACKSTOP_GCS_BUCKET is not set: the backups bucket"
        );
    }

    #[test]
    fn invalid_number_is_named_with_value() {
        let env = Env::from_pairs([("N", "ten")]);
        let err = env.parsed_or::<u32>("N", 3).unwrap_err();
        assert!(
            matches!(err, ConfigError::Invalid { ref name, ref value, .. } if name == "N" && value == "ten")
        );
        assert_eq!(env.parsed_or::<u32>("UNSET", 3).unwrap(), 3);
    }

    #[test]
    fn flags_and_lists() {
        let env = Env::from_pairs([("F", "Yes"), ("B", "maybe"), ("L", " a, ,b ")]);
        assert!(env.flag("F", false).unwrap());
        assert!(!env.flag("UNSET", false).unwrap());
        assert!(env.flag("B", false).is_err());
        assert_eq!(env.list("L"), vec!["a", "b"]);
        assert!(env.list("UNSET").is_empty());
    }
}
