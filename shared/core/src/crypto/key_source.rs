//! Where keys come from: [`KeySource`] settings (`file:`, inline armor,
//! `gcpkms:`) and the [`KeyUnwrap`] seam for KMS-wrapped secret keys.
//! Re-exported by [`super`] (the `keys` module).

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use zeroize::Zeroizing;

use super::read_file;
use crate::crypto::CryptoError;

/// Where a key comes from, chosen by a URI-like setting:
///
/// | setting | meaning |
/// |---|---|
/// | `file:/path/key.asc` (or `file:relative/key.asc`) | an armored key file |
/// | `-----BEGIN PGP ...` | the armored key itself (for environment variables) |
/// | `gcpkms:projects/P/locations/L/keyRings/R/cryptoKeys/K:/path/key.asc.kms` | an armored secret key encrypted with Cloud KMS key `K`; the file holds the raw KMS ciphertext |
///
/// The KMS-wrapped file is what `gcloud` writes:
///
/// ```text
/// gcloud kms encrypt --location L --keyring R --key K \
///     --plaintext-file backup.sec.asc --ciphertext-file backup.sec.asc.kms
/// ```
///
/// (or `backstop keys wrap --kms-key projects/P/.../cryptoKeys/K IN OUT`,
/// which calls the same `Encrypt` API). Only the KMS key name and the wrapped
/// file live in the repository; the plaintext key never does. Unwrapping uses
/// Cloud KMS `Decrypt` through a [`KeyUnwrap`] (the cloud crate's
/// `CloudKms`: the official `google-cloud-kms-v1` client with Application
/// Default Credentials, or the endpoint of `BACKSTOP_KMS_ENDPOINT`).
#[derive(Clone, PartialEq, Eq)]
pub enum KeySource {
    /// `file:`: an armored key file.
    File(PathBuf),
    /// The armored key text itself; zeroed on drop, never printed.
    Inline(Zeroizing<String>),
    /// `gcpkms:`: a secret key file wrapped with Cloud KMS.
    GcpKms {
        /// The KMS key that wrapped it,
        /// `projects/P/locations/L/keyRings/R/cryptoKeys/K`.
        key_name: String,
        /// The file holding the raw KMS ciphertext of the armored key.
        path: PathBuf,
    },
}

impl fmt::Debug for KeySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Never prints inline key material.
impl fmt::Display for KeySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeySource::File(p) => write!(f, "file:{}", p.display()),
            KeySource::Inline(_) => f.write_str("inline key"),
            KeySource::GcpKms { key_name, path } => {
                write!(f, "gcpkms:{key_name}:{}", path.display())
            }
        }
    }
}

impl FromStr for KeySource {
    type Err = CryptoError;

    fn from_str(s: &str) -> Result<Self, CryptoError> {
        let setting = s.trim();
        let err = |reason: &str| CryptoError::KeySource {
            setting: if setting.starts_with("-----") {
                "(inline key)".into()
            } else {
                setting.to_string()
            },
            reason: reason.to_string(),
        };
        if setting.starts_with("-----BEGIN PGP") {
            return Ok(KeySource::Inline(Zeroizing::new(setting.to_string())));
        }
        if let Some(rest) = setting.strip_prefix("file:") {
            let path = rest.strip_prefix("//").unwrap_or(rest);
            if path.is_empty() {
                return Err(err("file: needs a path"));
            }
            return Ok(KeySource::File(PathBuf::from(path)));
        }
        if let Some(rest) = setting.strip_prefix("gcpkms:") {
            let Some((key_name, path)) = rest.split_once(':') else {
                return Err(err(
                    "gcpkms: needs the KMS key name and the wrapped file, separated by ':'",
                ));
            };
            check_kms_key_name(key_name).map_err(|r| err(&r))?;
            if path.is_empty() {
                return Err(err(
                    "gcpkms: needs the path of the wrapped key file after the key name",
                ));
            }
            return Ok(KeySource::GcpKms {
                key_name: key_name.to_string(),
                path: PathBuf::from(path),
            });
        }
        if setting.is_empty() {
            return Err(err("the setting is empty"));
        }
        Err(err("unknown scheme"))
    }
}

/// Unwraps a secret key that Cloud KMS encrypted (`gcpkms:` settings). The
/// cloud crate's `CloudKms` is the production implementation; the core
/// crate holds only this seam, so that it builds without the KMS client.
#[async_trait::async_trait]
pub trait KeyUnwrap: Send + Sync + std::fmt::Debug {
    /// The plaintext armored key held in `wrapped`, decrypted with `key_name`.
    async fn unwrap(
        &self,
        key_name: &str,
        wrapped: Vec<u8>,
    ) -> Result<Zeroizing<Vec<u8>>, CryptoError>;
}

/// For settings that never name a KMS-wrapped key (public keys): a
/// `gcpkms:` setting fails with a message that says so.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoKms;

#[async_trait::async_trait]
impl KeyUnwrap for NoKms {
    async fn unwrap(
        &self,
        key_name: &str,
        _wrapped: Vec<u8>,
    ) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
        Err(CryptoError::Kms {
            op: "decrypt",
            key: key_name.to_string(),
            message: "this setting takes a public key, which is never KMS-wrapped; use file:/path/key.asc".into(),
        })
    }
}

/// Checks `projects/P/locations/L/keyRings/R/cryptoKeys/K`.
pub fn check_kms_key_name(name: &str) -> Result<(), String> {
    let parts: Vec<&str> = name.split('/').collect();
    let ok = parts.len() == 8
        && parts[0] == "projects"
        && parts[2] == "locations"
        && parts[4] == "keyRings"
        && parts[6] == "cryptoKeys"
        && [1, 3, 5, 7].iter().all(|&i| !parts[i].is_empty());
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{name:?} is not a KMS key name (expected projects/P/locations/L/keyRings/R/cryptoKeys/K)"
        ))
    }
}

impl KeySource {
    /// The key bytes (armored text). Secret material: zeroized on drop.
    pub async fn read(&self, kms: &dyn KeyUnwrap) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
        match self {
            KeySource::File(path) => Ok(Zeroizing::new(read_file(path)?)),
            KeySource::Inline(text) => Ok(Zeroizing::new(text.as_bytes().to_vec())),
            KeySource::GcpKms { key_name, path } => {
                let wrapped = read_file(path)?;
                kms.unwrap(key_name, wrapped).await
            }
        }
    }
}
