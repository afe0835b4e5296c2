//! Keys: generation, the four roles, and where secret keys come from.
//!
//! Backstop uses two OpenPGP v4 key pairs, both readable by stock GnuPG 2.2:
//!
//! - the **backup key**: an Ed25519 (legacy EdDSA) primary key that only
//!   certifies, with a Curve25519 (legacy ECDH) encryption subkey; or
//!   RSA-4096 primary + RSA-4096 encryption subkey. Its public half
//!   ([`RecipientKey`]) is configuration for the dump job; its secret half
//!   ([`BackupSecretKey`]) is needed only to restore.
//! - the **signing key**: an Ed25519 (legacy EdDSA) primary key that
//!   certifies and signs (or RSA-4096). The dump job holds the secret half
//!   ([`SigningKey`]); everything else holds the public half
//!   ([`VerifyingKey`]).
//!
//! Generated keys have no passphrase: secret keys are protected by Cloud KMS
//! instead (see [`KeySource`]).

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use pgp::composed::{
    ArmorOptions, Deserializable, EncryptionCaps, KeyType, SecretKeyParamsBuilder, SignedPublicKey,
    SignedPublicSubKey, SignedSecretKey, SubkeyParamsBuilder,
};
use pgp::crypto::ecc_curve::ECCCurve;
use pgp::crypto::hash::HashAlgorithm;
use pgp::crypto::sym::SymmetricKeyAlgorithm;
use pgp::packet::{Signature, SignatureType};
use pgp::types::{CompressionAlgorithm, KeyDetails, Timestamp};
use smallvec_compat::smallvec;
use zeroize::Zeroizing;

use super::{CryptoError, hex_upper};

mod smallvec_compat {
    /// rpgp takes `SmallVec`s for preferences; build them from arrays.
    macro_rules! smallvec {
        ($($x:expr),* $(,)?) => {
            [$($x),*].into_iter().collect()
        };
    }
    pub(crate) use smallvec;
}

/// Key algorithm for [`generate_backup_key`] / [`generate_signing_key`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KeyAlgorithm {
    /// Ed25519 (legacy EdDSA) + Curve25519 (legacy ECDH): small and fast.
    #[default]
    Curve25519,
    /// RSA-4096 (slow to generate; for policies that demand RSA).
    Rsa4096,
}

impl FromStr for KeyAlgorithm {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "curve25519" | "cv25519" | "ed25519" | "25519" => Ok(KeyAlgorithm::Curve25519),
            "rsa4096" | "rsa-4096" | "rsa" => Ok(KeyAlgorithm::Rsa4096),
            other => Err(format!(
                "unknown key algorithm {other:?}: use curve25519 or rsa4096"
            )),
        }
    }
}

/// A freshly generated key pair, armored.
pub struct GeneratedKey {
    /// Primary key fingerprint, upper-case hex.
    pub fingerprint: String,
    /// Fingerprint of the subkey that session keys are encrypted to (backup
    /// keys) or of the key that signs (signing keys).
    pub working_fingerprint: String,
    /// The armored public key (`*.pub.asc`), safe to share.
    pub public_armored: String,
    /// The armored, unprotected secret key (`*.sec.asc`); wrap it with KMS and
    /// delete the plaintext. Zeroed on drop.
    pub secret_armored: Zeroizing<String>,
}

impl fmt::Debug for GeneratedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GeneratedKey")
            .field("fingerprint", &self.fingerprint)
            .finish_non_exhaustive()
    }
}

fn rng() -> rand08::rngs::OsRng {
    rand08::rngs::OsRng
}

fn keygen_err(e: impl fmt::Display) -> CryptoError {
    CryptoError::KeyGeneration(e.to_string())
}

fn armor_opts() -> ArmorOptions<'static> {
    ArmorOptions::default()
}

fn finish_generated(secret: SignedSecretKey, working: String) -> Result<GeneratedKey, CryptoError> {
    let public = secret.to_public_key();
    Ok(GeneratedKey {
        fingerprint: hex_upper(secret.fingerprint().as_bytes()),
        working_fingerprint: working,
        public_armored: public.to_armored_string(armor_opts()).map_err(keygen_err)?,
        secret_armored: Zeroizing::new(secret.to_armored_string(armor_opts()).map_err(keygen_err)?),
    })
}

/// Generates a backup (encryption) key pair.
pub fn generate_backup_key(
    user_id: &str,
    algorithm: KeyAlgorithm,
) -> Result<GeneratedKey, CryptoError> {
    let (primary, sub) = match algorithm {
        KeyAlgorithm::Curve25519 => (
            KeyType::Ed25519Legacy,
            KeyType::ECDH(ECCCurve::Curve25519Legacy),
        ),
        KeyAlgorithm::Rsa4096 => (KeyType::Rsa(4096), KeyType::Rsa(4096)),
    };
    let subkey = SubkeyParamsBuilder::default()
        .key_type(sub)
        .can_sign(false)
        .can_encrypt(EncryptionCaps::All)
        .can_authenticate(false)
        .build()
        .map_err(keygen_err)?;
    let params = SecretKeyParamsBuilder::default()
        .key_type(primary)
        .can_certify(true)
        .can_sign(false)
        .can_encrypt(EncryptionCaps::None)
        .primary_user_id(user_id.to_string())
        .preferred_symmetric_algorithms(smallvec![
            SymmetricKeyAlgorithm::AES256,
            SymmetricKeyAlgorithm::AES192,
            SymmetricKeyAlgorithm::AES128
        ])
        .preferred_hash_algorithms(smallvec![HashAlgorithm::Sha512, HashAlgorithm::Sha256])
        .preferred_compression_algorithms(smallvec![
            CompressionAlgorithm::Uncompressed,
            CompressionAlgorithm::ZLIB,
            CompressionAlgorithm::ZIP
        ])
        .subkeys(vec![subkey])
        .build()
        .map_err(keygen_err)?;
    let secret = params.generate(rng()).map_err(keygen_err)?;
    let working = hex_upper(secret.secret_subkeys[0].key.fingerprint().as_bytes());
    finish_generated(secret, working)
}

/// Generates a signing key pair (the primary key signs).
pub fn generate_signing_key(
    user_id: &str,
    algorithm: KeyAlgorithm,
) -> Result<GeneratedKey, CryptoError> {
    let primary = match algorithm {
        KeyAlgorithm::Curve25519 => KeyType::Ed25519Legacy,
        KeyAlgorithm::Rsa4096 => KeyType::Rsa(4096),
    };
    let params = SecretKeyParamsBuilder::default()
        .key_type(primary)
        .can_certify(true)
        .can_sign(true)
        .can_encrypt(EncryptionCaps::None)
        .primary_user_id(user_id.to_string())
        .preferred_symmetric_algorithms(smallvec![SymmetricKeyAlgorithm::AES256])
        .preferred_hash_algorithms(smallvec![HashAlgorithm::Sha512, HashAlgorithm::Sha256])
        .preferred_compression_algorithms(smallvec![CompressionAlgorithm::Uncompressed])
        .build()
        .map_err(keygen_err)?;
    let secret = params.generate(rng()).map_err(keygen_err)?;
    let working = hex_upper(secret.fingerprint().as_bytes());
    finish_generated(secret, working)
}

// ---- parsing ------------------------------------------------------------

fn parse_public(what: &str, bytes: &[u8]) -> Result<SignedPublicKey, CryptoError> {
    let err = |reason: String| CryptoError::KeyParse {
        what: what.to_string(),
        reason,
    };
    if looks_like_secret(bytes) {
        // A secret key block also carries the public key.
        return Ok(parse_secret(what, bytes)?.to_public_key());
    }
    let (key, _) = SignedPublicKey::from_reader_single(bytes).map_err(|e| err(e.to_string()))?;
    key.verify_bindings()
        .map_err(|e| err(format!("its self-signatures do not verify: {e}")))?;
    Ok(key)
}

fn looks_like_secret(bytes: &[u8]) -> bool {
    let head = &bytes[..bytes.len().min(256)];
    String::from_utf8_lossy(head).contains("PRIVATE KEY BLOCK")
}

fn parse_secret(what: &str, bytes: &[u8]) -> Result<SignedSecretKey, CryptoError> {
    let text = String::from_utf8_lossy(&bytes[..bytes.len().min(256)]);
    if text.contains("PUBLIC KEY BLOCK") {
        return Err(CryptoError::NotASecretKey {
            what: what.to_string(),
        });
    }
    let (key, _) =
        SignedSecretKey::from_reader_single(bytes).map_err(|e| CryptoError::KeyParse {
            what: what.to_string(),
            reason: e.to_string(),
        })?;
    key.verify_bindings().map_err(|e| CryptoError::KeyParse {
        what: what.to_string(),
        reason: format!("its self-signatures do not verify: {e}"),
    })?;
    Ok(key)
}

/// Whether `bytes` hold secret key material in any form: an armored
/// `PRIVATE KEY BLOCK`, or secret-key / secret-subkey packets (binary, or
/// inside armor of any label). For settings that must hold public keys only;
/// it never says which bytes it found, so nothing of a key reaches a log.
pub fn holds_secret_key_material(bytes: &[u8]) -> bool {
    if String::from_utf8_lossy(bytes).contains("PRIVATE KEY BLOCK") {
        return true;
    }
    let binary: Vec<u8> =
        if bytes.starts_with(b"-----") || bytes.trim_ascii_start().starts_with(b"-----") {
            let mut out = Vec::new();
            let mut dearmor = pgp::armor::Dearmor::new(bytes.trim_ascii_start());
            // A broken armor is checked as far as it decodes.
            let _ = std::io::Read::read_to_end(&mut dearmor, &mut out);
            out
        } else {
            bytes.to_vec()
        };
    pgp::packet::PacketParser::new(&binary[..]).any(|p| {
        matches!(
            p,
            Ok(pgp::packet::Packet::SecretKey(_) | pgp::packet::Packet::SecretSubkey(_))
        )
    })
}

/// Latest self-signature among `sigs` of the given types.
fn latest<'a>(sigs: impl Iterator<Item = &'a Signature>) -> Option<&'a Signature> {
    sigs.max_by_key(|s| s.created().map(|t| t.as_secs()).unwrap_or(0))
}

fn is_revoked_subkey(sigs: &[Signature]) -> bool {
    sigs.iter()
        .any(|s| s.typ() == Some(SignatureType::SubkeyRevocation))
}

fn subkey_binding(sigs: &[Signature]) -> Option<&Signature> {
    latest(
        sigs.iter()
            .filter(|s| s.typ() == Some(SignatureType::SubkeyBinding)),
    )
}

fn expired(created: Timestamp, sig: &Signature) -> bool {
    match sig.key_expiration_time() {
        Some(d) if d.as_secs() > 0 => {
            (created.as_secs() as u64 + d.as_secs() as u64) < Timestamp::now().as_secs() as u64
        }
        _ => false,
    }
}

/// The primary key's current self-signature (user id certifications and
/// direct-key signatures).
fn primary_self_sig(details: &pgp::composed::SignedKeyDetails) -> Option<&Signature> {
    latest(
        details
            .users
            .iter()
            .flat_map(|u| u.signatures.iter())
            .chain(details.direct_signatures.iter()),
    )
}

fn fpr_hex(k: &impl KeyDetails) -> String {
    hex_upper(k.fingerprint().as_bytes())
}

/// Encryption-capable subkeys of a certificate: `(subkey, expired)`.
fn encryption_subkeys(cert: &SignedPublicKey) -> Vec<(&SignedPublicSubKey, bool)> {
    cert.public_subkeys
        .iter()
        .filter(|sk| sk.key.algorithm().can_encrypt() && !is_revoked_subkey(&sk.signatures))
        .filter_map(|sk| {
            let sig = subkey_binding(&sk.signatures)?;
            let flags = sig.key_flags();
            (flags.encrypt_comms() || flags.encrypt_storage())
                .then(|| (sk, expired(sk.key.created_at(), sig)))
        })
        .collect()
}

// ---- roles -------------------------------------------------------------

/// A backup recipient: a public key with an encryption subkey.
#[derive(Clone, Debug)]
pub struct RecipientKey {
    cert: SignedPublicKey,
}

impl RecipientKey {
    /// Parses an armored (or binary) public key. A secret key block is
    /// accepted too (its public half is used).
    pub fn from_bytes(what: &str, bytes: &[u8]) -> Result<Self, CryptoError> {
        let cert = parse_public(what, bytes)?;
        let k = RecipientKey { cert };
        k.encryption_subkey()?;
        Ok(k)
    }

    /// Parses armored key text (as given inline in a setting).
    pub fn from_armored(text: &str) -> Result<Self, CryptoError> {
        Self::from_bytes("the recipient key", text.as_bytes())
    }

    /// Reads and parses a key file; errors name the file.
    pub fn from_file(path: impl AsRef<std::path::Path>) -> Result<Self, CryptoError> {
        let path = path.as_ref();
        let bytes = read_file(path)?;
        Self::from_bytes(&path.display().to_string(), &bytes)
    }

    /// Primary key fingerprint.
    pub fn fingerprint(&self) -> String {
        fpr_hex(&self.cert)
    }

    /// The subkey that new backups are encrypted to: the newest valid,
    /// unexpired encryption subkey (as GnuPG chooses).
    pub(crate) fn encryption_subkey(&self) -> Result<&SignedPublicSubKey, CryptoError> {
        encryption_subkeys(&self.cert)
            .into_iter()
            .filter(|(_, expired)| !expired)
            .map(|(sk, _)| sk)
            .max_by_key(|sk| sk.key.created_at().as_secs())
            .ok_or_else(|| CryptoError::NoEncryptionKey {
                fingerprint: self.fingerprint(),
            })
    }

    /// Fingerprint of the encryption subkey: what a manifest lists.
    pub fn encryption_fingerprint(&self) -> Result<String, CryptoError> {
        Ok(fpr_hex(&self.encryption_subkey()?.key))
    }

    /// The public key, ASCII-armored.
    pub fn to_armored(&self) -> String {
        self.cert
            .to_armored_string(armor_opts())
            .expect("serializing a parsed key cannot fail")
    }
}

/// The set of (sub)keys a backup may be encrypted to, for verification
/// without secrets. Holds every encryption subkey of every configured
/// recipient, expired ones included (old backups stay verifiable).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecipientSet {
    /// key id → (subkey fingerprint, primary fingerprint)
    by_id: BTreeMap<[u8; 8], (String, String)>,
}

impl RecipientSet {
    /// Every encryption subkey of every recipient in `recipients`.
    pub fn new(recipients: &[RecipientKey]) -> Self {
        let mut by_id = BTreeMap::new();
        for r in recipients {
            for (sk, _) in encryption_subkeys(&r.cert) {
                let fpr = sk.key.fingerprint();
                let bytes = fpr.as_bytes();
                let mut id = [0u8; 8];
                id.copy_from_slice(&bytes[bytes.len() - 8..]);
                by_id.insert(id, (hex_upper(bytes), r.fingerprint()));
            }
        }
        RecipientSet { by_id }
    }

    /// Whether no encryption subkey is configured (no recipient).
    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    /// Whether a PKESK packet's 8-byte key id is one of the subkeys.
    pub fn contains_key_id(&self, id: &[u8; 8]) -> bool {
        self.by_id.contains_key(id)
    }

    /// Whether `fpr` (upper or lower hex) is one of the encryption subkeys
    /// or the primary key of a configured recipient.
    pub fn contains_fingerprint(&self, fpr: &str) -> bool {
        self.by_id.values().any(|(sub, primary)| {
            sub.eq_ignore_ascii_case(fpr) || primary.eq_ignore_ascii_case(fpr)
        })
    }

    /// For error messages.
    pub fn describe(&self) -> String {
        if self.by_id.is_empty() {
            return "none configured".into();
        }
        self.by_id
            .iter()
            .map(|(id, (_, primary))| format!("{} (key {primary})", hex_upper(id)))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// The backup secret key: decrypts backups (restore only).
#[derive(Clone)]
pub struct BackupSecretKey {
    key: SignedSecretKey,
}

impl fmt::Debug for BackupSecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BackupSecretKey({})", self.fingerprint())
    }
}

impl BackupSecretKey {
    /// Parses an armored (or binary) secret key, which must hold a key that can
    /// decrypt; `what` names it in errors.
    pub fn from_bytes(what: &str, bytes: &[u8]) -> Result<Self, CryptoError> {
        let key = parse_secret(what, bytes)?;
        let k = BackupSecretKey { key };
        if k.decryption_keys().is_empty() {
            return Err(CryptoError::NoEncryptionKey {
                fingerprint: k.fingerprint(),
            });
        }
        Ok(k)
    }

    /// Parses armored key text (as given inline in a setting).
    pub fn from_armored(text: &str) -> Result<Self, CryptoError> {
        Self::from_bytes("the backup secret key", text.as_bytes())
    }

    /// Reads the key from a [`KeySource`] (file, inline, or KMS-wrapped).
    pub async fn load(source: &KeySource, kms: &dyn KeyUnwrap) -> Result<Self, CryptoError> {
        let bytes = source.read(kms).await?;
        Self::from_bytes(&source.to_string(), &bytes)
    }

    /// Primary key fingerprint, upper-case hex.
    pub fn fingerprint(&self) -> String {
        fpr_hex(&self.key.primary_key)
    }

    /// Its public half (for encryption and verification).
    pub fn recipient(&self) -> RecipientKey {
        RecipientKey {
            cert: self.key.to_public_key(),
        }
    }

    /// Fingerprints (upper-case hex) of every secret (sub)key that can
    /// decrypt: what a manifest's `recipients` lists when this key can read
    /// the backup.
    pub fn decryption_fingerprints(&self) -> Vec<String> {
        self.decryption_keys()
            .into_iter()
            .map(|(_, fpr, _)| fpr)
            .collect()
    }

    /// `(key id, fingerprint, key)` of every secret (sub)key that can decrypt.
    pub(crate) fn decryption_keys(&self) -> Vec<([u8; 8], String, DecryptKeyRef<'_>)> {
        let mut out = Vec::new();
        let id_of = |fpr: &pgp::types::Fingerprint| {
            let b = fpr.as_bytes();
            let mut id = [0u8; 8];
            id.copy_from_slice(&b[b.len() - 8..]);
            id
        };
        for sk in &self.key.secret_subkeys {
            if sk.key.algorithm().can_encrypt() {
                let fpr = sk.key.fingerprint();
                out.push((
                    id_of(&fpr),
                    hex_upper(fpr.as_bytes()),
                    DecryptKeyRef::Sub(&sk.key),
                ));
            }
        }
        let p = &self.key.primary_key;
        if p.algorithm().can_encrypt() {
            let fpr = p.fingerprint();
            out.push((
                id_of(&fpr),
                hex_upper(fpr.as_bytes()),
                DecryptKeyRef::Primary(p),
            ));
        }
        out
    }
}

pub(crate) enum DecryptKeyRef<'a> {
    Primary(&'a pgp::packet::SecretKey),
    Sub(&'a pgp::packet::SecretSubkey),
}

impl DecryptKeyRef<'_> {
    pub(crate) fn is_locked(&self) -> bool {
        match self {
            DecryptKeyRef::Primary(k) => k.secret_params().is_encrypted(),
            DecryptKeyRef::Sub(k) => k.secret_params().is_encrypted(),
        }
    }

    pub(crate) fn decrypt(
        &self,
        values: &pgp::types::PkeskBytes,
    ) -> pgp::errors::Result<pgp::errors::Result<pgp::composed::PlainSessionKey>> {
        use pgp::types::{DecryptionKey, EskType, Password};
        match self {
            DecryptKeyRef::Primary(k) => k.decrypt(&Password::empty(), values, EskType::V3_4),
            DecryptKeyRef::Sub(k) => k.decrypt(&Password::empty(), values, EskType::V3_4),
        }
    }
}

/// The signing secret key (the dump job signs manifests with it).
#[derive(Clone)]
pub struct SigningKey {
    key: SignedSecretKey,
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SigningKey({})", self.fingerprint())
    }
}

pub(crate) enum SignKeyRef<'a> {
    Primary(&'a pgp::packet::SecretKey),
    Sub(&'a pgp::packet::SecretSubkey),
}

impl SigningKey {
    /// Parses an armored (or binary) secret key that can sign and has no
    /// passphrase; `what` names it in errors.
    pub fn from_bytes(what: &str, bytes: &[u8]) -> Result<Self, CryptoError> {
        let key = parse_secret(what, bytes)?;
        let k = SigningKey { key };
        k.signer()?;
        Ok(k)
    }

    /// Parses armored key text (as given inline in a setting).
    pub fn from_armored(text: &str) -> Result<Self, CryptoError> {
        Self::from_bytes("the signing key", text.as_bytes())
    }

    /// Reads the key from a [`KeySource`] (file, inline, or KMS-wrapped).
    pub async fn load(source: &KeySource, kms: &dyn KeyUnwrap) -> Result<Self, CryptoError> {
        let bytes = source.read(kms).await?;
        Self::from_bytes(&source.to_string(), &bytes)
    }

    /// Primary key fingerprint (what a manifest's `signer` holds).
    pub fn fingerprint(&self) -> String {
        fpr_hex(&self.key.primary_key)
    }

    /// Its public half, which verifies its signatures.
    pub fn verifying_key(&self) -> VerifyingKey {
        VerifyingKey {
            cert: self.key.to_public_key(),
        }
    }

    /// The key that makes signatures: the primary if it may sign, otherwise
    /// the newest signing subkey. Revoked and expired keys are passed over
    /// (their signatures would be refused); when no key is left, the error
    /// says why.
    pub(crate) fn signer(&self) -> Result<SignKeyRef<'_>, CryptoError> {
        let now = Timestamp::now();
        let primary = SignerKey {
            primary_fpr: self.fingerprint(),
            details: &self.key.details,
            primary_created: self.key.primary_key.created_at(),
            subkey: None,
        };
        let primary_flagged = self.key.primary_key.algorithm().can_sign()
            && primary_self_sig(&self.key.details).is_some_and(|s| s.key_flags().sign());
        let mut refusal = None;
        if primary_flagged {
            match check_may_sign(&primary, now) {
                Ok(()) => return self.unlocked(SignKeyRef::Primary(&self.key.primary_key)),
                Err(e) => refusal = Some(e),
            }
        }
        let flagged = self.key.secret_subkeys.iter().filter(|sk| {
            sk.key.algorithm().can_sign()
                && subkey_binding(&sk.signatures).is_some_and(|s| s.key_flags().sign())
        });
        let mut usable = Vec::new();
        for sk in flagged {
            let key = SignerKey {
                subkey: Some((fpr_hex(&sk.key), sk.key.created_at(), &sk.signatures[..])),
                ..primary.clone()
            };
            match check_may_sign(&key, now) {
                Ok(()) => usable.push(sk),
                Err(e) => refusal = refusal.or(Some(e)),
            }
        }
        match usable
            .into_iter()
            .max_by_key(|sk| sk.key.created_at().as_secs())
        {
            Some(sk) => self.unlocked(SignKeyRef::Sub(&sk.key)),
            None => Err(refusal.unwrap_or_else(|| CryptoError::NoSigningCapability {
                fingerprint: self.fingerprint(),
            })),
        }
    }

    fn unlocked<'a>(&self, r: SignKeyRef<'a>) -> Result<SignKeyRef<'a>, CryptoError> {
        let locked = match &r {
            SignKeyRef::Primary(k) => k.secret_params().is_encrypted(),
            SignKeyRef::Sub(k) => k.secret_params().is_encrypted(),
        };
        if locked {
            return Err(CryptoError::SecretKeyLocked {
                fingerprint: self.fingerprint(),
            });
        }
        Ok(r)
    }
}

/// A signing public key: verifies manifest signatures.
#[derive(Clone, Debug)]
pub struct VerifyingKey {
    pub(crate) cert: SignedPublicKey,
}

impl VerifyingKey {
    /// Parses an armored (or binary) public key; a secret key block gives its
    /// public half. `what` names it in errors.
    pub fn from_bytes(what: &str, bytes: &[u8]) -> Result<Self, CryptoError> {
        Ok(VerifyingKey {
            cert: parse_public(what, bytes)?,
        })
    }

    /// Parses armored key text (as given inline in a setting).
    pub fn from_armored(text: &str) -> Result<Self, CryptoError> {
        Self::from_bytes("the signing public key", text.as_bytes())
    }

    /// Reads and parses a key file; errors name the file.
    pub fn from_file(path: impl AsRef<std::path::Path>) -> Result<Self, CryptoError> {
        let path = path.as_ref();
        let bytes = read_file(path)?;
        Self::from_bytes(&path.display().to_string(), &bytes)
    }

    /// Primary key fingerprint, upper-case hex (a manifest's `signer`).
    pub fn fingerprint(&self) -> String {
        fpr_hex(&self.cert)
    }

    /// What [`check_may_sign`] needs about the primary key (`None`) or one
    /// of this certificate's subkeys.
    pub(crate) fn signer_key<'a>(&'a self, sub: Option<&'a SignedPublicSubKey>) -> SignerKey<'a> {
        SignerKey {
            primary_fpr: self.fingerprint(),
            details: &self.cert.details,
            primary_created: self.cert.primary_key.created_at(),
            subkey: sub.map(|s| (fpr_hex(&s.key), s.key.created_at(), &s.signatures[..])),
        }
    }

    /// The public key, ASCII-armored.
    pub fn to_armored(&self) -> String {
        self.cert
            .to_armored_string(armor_opts())
            .expect("serializing a parsed key cannot fail")
    }
}

fn read_file(path: &std::path::Path) -> Result<Vec<u8>, CryptoError> {
    std::fs::read(path).map_err(|source| CryptoError::KeyFile {
        path: path.display().to_string(),
        source,
    })
}

// ---- key sources ---------------------------------------------------------

#[path = "key_source.rs"]
mod source;
pub use source::{KeySource, KeyUnwrap, NoKms, check_kms_key_name};

#[path = "key_validity.rs"]
mod validity;
pub(crate) use validity::{SignerKey, check_may_sign};

#[cfg(test)]
#[path = "keys_tests.rs"]
pub(crate) mod tests;
