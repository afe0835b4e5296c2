//! Public keys from configuration: who may sign manifests and which backup
//! keys data may be encrypted to. Used by every part that verifies.

use crate::config::{ConfigError, Env};
use crate::crypto::keys::holds_secret_key_material;
use crate::crypto::{KeySource, NoKms, RecipientKey, RecipientSet, VerifyingKey};

/// A refused key setting. The value is shown only when it names files: an
/// inline key (which might be a secret key pasted by mistake) is never
/// echoed into an error or a log.
fn invalid(env: &Env, name: &str, reason: impl Into<String>) -> ConfigError {
    let value = env.optional(name).unwrap_or_default();
    let shown = if value.contains("-----BEGIN") || value.contains("-----END") {
        "(inline key)".to_string()
    } else {
        value
    };
    ConfigError::invalid(name, &shown, reason)
}

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
                .map_err(|e| invalid(env, name, e.to_string()))
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
            .map_err(|e| invalid(env, name, e.to_string()))?;
        if holds_secret_key_material(&bytes) {
            return Err(invalid(
                env,
                name,
                format!(
                    "{source} holds SECRET key material, but this setting takes public keys only (this process must never hold a secret key); configure the *.pub.asc file from `backstop keygen` or `gpg --export --armor FINGERPRINT`, and treat the secret key as exposed wherever this setting was stored"
                ),
            ));
        }
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
        .map(|b| RecipientKey::from_bytes(NAME, b).map_err(|e| invalid(env, NAME, e.to_string())))
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
        .map(|b| VerifyingKey::from_bytes(NAME, b).map_err(|e| invalid(env, NAME, e.to_string())))
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::keys::tests::test_keys;
    use pgp::composed::{Deserializable, SignedSecretKey};
    use pgp::ser::Serialize;

    const SIGNING: &str = "BACKSTOP_SIGNING_PUBLIC_KEY";
    const RECIPIENTS: &str = "BACKSTOP_RECIPIENTS";

    async fn load(env: &Env, name: &str) -> Result<usize, ConfigError> {
        if name == SIGNING {
            signing_keys_from_env(env).await.map(|k| k.len())
        } else {
            recipients_from_env(env).await.map(|k| k.len())
        }
    }

    /// The forms a secret key can take in a public-key setting.
    fn secret_forms(armored: &str, dir: &std::path::Path) -> Vec<(&'static str, String)> {
        let (key, _) = SignedSecretKey::from_string(armored).unwrap();
        let binary = dir.join("secret.gpg");
        std::fs::write(&binary, key.to_bytes().unwrap()).unwrap();
        let relabelled = dir.join("secret-labelled-public.asc");
        std::fs::write(
            &relabelled,
            armored.replace("PRIVATE KEY BLOCK", "PUBLIC KEY BLOCK"),
        )
        .unwrap();
        let file = dir.join("secret.asc");
        std::fs::write(&file, armored).unwrap();
        vec![
            ("inline", armored.to_string()),
            ("armored file", format!("file:{}", file.display())),
            ("binary file", format!("file:{}", binary.display())),
            ("relabelled", format!("file:{}", relabelled.display())),
        ]
    }

    #[tokio::test]
    async fn public_key_settings_refuse_secret_keys_without_echoing_them() {
        let k = test_keys();
        let dir = std::env::temp_dir().join(format!("bs-trust-{:x}", rand::random::<u64>()));
        std::fs::create_dir_all(&dir).unwrap();
        for (name, key) in [(SIGNING, &k.signing), (RECIPIENTS, &k.backup)] {
            // The public half is fine.
            let env = Env::from_pairs([(name, key.public_armored.as_str())]);
            assert_eq!(load(&env, name).await.unwrap(), 1);
            let body_line = key.secret_armored.lines().nth(3).unwrap().to_string();
            for (form, value) in secret_forms(&key.secret_armored, &dir) {
                let env = Env::from_pairs([(name, value.as_str())]);
                let err = load(&env, name)
                    .await
                    .expect_err(&format!("{name} accepted a secret key ({form})"));
                let text = format!("{err} {err:?}");
                assert!(text.contains("SECRET key material"), "{form}: {text}");
                assert!(!text.contains(&body_line), "{form}: the key is echoed");
            }
        }
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[tokio::test]
    async fn a_broken_inline_key_is_not_echoed() {
        let value = "-----BEGIN PGP PUBLIC KEY BLOCK-----\n\nbm90IGEga2V5IGJ1dCBzZWNyZXQ=\n-----END PGP PUBLIC KEY BLOCK-----";
        let env = Env::from_pairs([(SIGNING, value)]);
        let err = load(&env, SIGNING).await.unwrap_err();
        let text = format!("{err} {err:?}");
        assert!(!text.contains("bm90IGEga2V5"), "{text}");
        assert!(text.contains(SIGNING), "{text}");
    }
}
