//! Public keys from configuration: who may sign manifests and which backup
//! keys data may be encrypted to. Used by every part that verifies.

use crate::config::{ConfigError, Env};
use crate::crypto::{KeySource, NoKms, RecipientKey, RecipientSet, VerifyingKey};

/// Key settings in one variable: either one inline armored key, or a
/// comma-separated list of `file:`/`gcpkms:` settings.
pub fn key_settings(env: &Env, name: &str, hint: &str) -> Result<Vec<KeySource>, ConfigError> {
    let raw = env.required(name, hint)?;
    let items: Vec<String> = if raw.trim_start().starts_with("-----BEGIN") {
        vec![raw]
    } else {
        env.list(name)
    };
    items
        .iter()
        .map(|s| {
            s.parse::<KeySource>()
                .map_err(|e| env.invalid(name, e.to_string()))
        })
        .collect()
}

async fn read_all(
    env: &Env,
    name: &str,
    sources: &[KeySource],
) -> Result<Vec<Vec<u8>>, ConfigError> {
    let mut out = Vec::new();
    for source in sources {
        let bytes = source
            .read(&NoKms)
            .await
            .map_err(|e| env.invalid(name, e.to_string()))?;
        out.push(bytes.to_vec());
    }
    Ok(out)
}

/// `BACKSTOP_RECIPIENTS`: the backup public key(s) data is encrypted to.
pub async fn recipients_from_env(env: &Env) -> Result<Vec<RecipientKey>, ConfigError> {
    const NAME: &str = "BACKSTOP_RECIPIENTS";
    let sources = key_settings(env, NAME, crate::config::hint::RECIPIENTS)?;
    read_all(env, NAME, &sources)
        .await?
        .iter()
        .map(|b| RecipientKey::from_bytes(NAME, b).map_err(|e| env.invalid(NAME, e.to_string())))
        .collect()
}

/// `BACKSTOP_SIGNING_PUBLIC_KEY`: the key(s) allowed to sign manifests
/// (several during a rotation).
pub async fn signing_keys_from_env(env: &Env) -> Result<Vec<VerifyingKey>, ConfigError> {
    const NAME: &str = "BACKSTOP_SIGNING_PUBLIC_KEY";
    let sources = key_settings(env, NAME, crate::config::hint::SIGNING_PUBLIC_KEY)?;
    read_all(env, NAME, &sources)
        .await?
        .iter()
        .map(|b| VerifyingKey::from_bytes(NAME, b).map_err(|e| env.invalid(NAME, e.to_string())))
        .collect()
}

/// Everything a verifier needs, with public keys only.
#[derive(Debug, Clone)]
pub struct TrustedKeys {
    /// Keys allowed to sign manifests (`BACKSTOP_SIGNING_PUBLIC_KEY`).
    pub signing: Vec<VerifyingKey>,
    /// Subkeys backups may be encrypted to (`BACKSTOP_RECIPIENTS`).
    pub recipients: RecipientSet,
}

impl TrustedKeys {
    /// Reads both settings; `gcpkms:` is refused, public keys are never
    /// wrapped.
    pub async fn from_env(env: &Env) -> Result<Self, ConfigError> {
        Ok(Self {
            signing: signing_keys_from_env(env).await?,
            recipients: RecipientSet::new(&recipients_from_env(env).await?),
        })
    }
}
