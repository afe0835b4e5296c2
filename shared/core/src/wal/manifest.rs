//! The signed manifest of one archived WAL file, and its sealed form.
//!
//! Where a dump has `manifest.json` and `manifest.json.sig`, an archived WAL
//! file has one small object holding both (`<file>.json`): a JSON envelope
//! with the manifest's exact bytes (base64) and an armored detached
//! signature over them ([`crate::crypto::seal`]). One object, so one
//! create-only write commits the file: a segment costs two writes, data
//! then manifest, on `archive_command`'s critical path. `gpg --verify`
//! still checks it: decode `payload` into a file and verify `signature`
//! against it.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{WalFile, WalFileKind, WalKey};
use crate::crypto::{CryptoError, SigningKey, VerifyingKey, seal, unseal};
use crate::manifest::{CiphertextInfo, ManifestError};
use crate::naming::Namespace;

/// The WAL manifest's `kind`.
pub const WAL_MANIFEST_KIND: &str = "backstop.wal";
/// The newest WAL manifest version this build writes and reads.
pub const WAL_MANIFEST_VERSION: u32 = 1;

/// Errors of a WAL manifest are those of a dump's manifest
/// ([`ManifestError`]): malformed, wrong kind or version, or found where
/// another file belongs (`WrongBackup`).
pub type WalManifestError = ManifestError;

/// What `wal-push` signs for one archived file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WalManifest {
    /// Always [`WAL_MANIFEST_KIND`].
    pub kind: String,
    /// Format version, 1 to [`WAL_MANIFEST_VERSION`].
    pub version: u32,
    /// The namespace it was archived into.
    pub namespace: Namespace,
    /// The cluster's `system_identifier`, decimal.
    pub system_identifier: String,
    /// The file's name as PostgreSQL gave it.
    pub file: String,
    /// Segment, partial segment, backup or timeline history file.
    pub file_kind: WalFileKind,
    /// The file's timeline.
    pub timeline: u32,
    /// Size of the file as PostgreSQL wrote it.
    pub plaintext_size: u64,
    /// SHA-256 (lower-case hex) of the file as PostgreSQL wrote it: how a
    /// retried push tells the same file (success) from a different one of
    /// the same name (refused), and how `wal-fetch` checks what it
    /// decrypted. It lets someone who can read the bucket confirm a guess
    /// of a whole file's content, as pgBackRest's archive names (SHA-1 in
    /// the name) do; it reveals nothing else.
    pub plaintext_sha256: String,
    /// The encrypted object (its name relative to the manifest's directory),
    /// size and digests, chunked like a dump's.
    pub ciphertext: CiphertextInfo,
    /// Fingerprints of the keys the session key is encrypted to.
    pub recipients: Vec<String>,
    /// Fingerprint of the key that signs this manifest.
    pub signer: String,
    /// When the push stored the encrypted file, just before signing.
    pub archived_at: DateTime<Utc>,
    /// `backstop <version>`.
    pub tool: String,
}

impl WalManifest {
    /// The key this manifest describes (its own place).
    pub fn key(&self) -> Result<WalKey, ManifestError> {
        let bad = |what: String| ManifestError::Malformed(what);
        let file = WalFile::parse(&self.file).map_err(|e| bad(e.to_string()))?;
        let system_identifier = self.system_identifier.parse::<u64>().map_err(|_| {
            bad(format!(
                "system_identifier {:?} is not a number",
                self.system_identifier
            ))
        })?;
        if file.kind() != self.file_kind || file.timeline() != self.timeline {
            return Err(bad(format!(
                "file {:?} is not a {:?} of timeline {}",
                self.file, self.file_kind, self.timeline
            )));
        }
        Ok(WalKey::new(self.namespace.clone(), system_identifier, file))
    }

    /// Canonical bytes: what is signed and sealed.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = serde_json::to_vec_pretty(self).expect("WAL manifest serializes");
        out.push(b'\n');
        out
    }

    /// Parses and checks kind, version, names and the chunk list, trusting
    /// nothing yet (the seal is checked by [`Self::open`]).
    pub fn parse(bytes: &[u8]) -> Result<Self, ManifestError> {
        crate::manifest::check_header(bytes, WAL_MANIFEST_KIND, WAL_MANIFEST_VERSION)?;
        let malformed = |e: serde_json::Error| ManifestError::Malformed(e.to_string());
        let m: WalManifest = serde_json::from_slice(bytes).map_err(malformed)?;
        m.key()?;
        crate::crypto::chunks::check_chunk_list(&m.ciphertext)
            .map_err(|e| ManifestError::Malformed(format!("ciphertext.chunks: {e}")))?;
        Ok(m)
    }

    /// Signs and seals this manifest: the bytes of the `<file>.json` object.
    pub fn seal(&self, key: &SigningKey) -> Result<Vec<u8>, CryptoError> {
        if !self.signer.eq_ignore_ascii_case(&key.fingerprint()) {
            return Err(CryptoError::SignerMismatch {
                claimed: self.signer.clone(),
                actual: key.fingerprint(),
            });
        }
        seal(&self.to_bytes(), key)
    }

    /// Opens the sealed object read from `at`: the signature first (with
    /// one of `keys`), then the manifest, its signer, and that it describes
    /// the file stored at `at` (not a manifest copied from another file).
    pub fn open(bytes: &[u8], keys: &[VerifyingKey], at: &WalKey) -> Result<Self, CryptoError> {
        let (payload, signer) = unseal(bytes, keys)?;
        let m = Self::parse(&payload)?;
        if !m.signer.eq_ignore_ascii_case(&signer) {
            return Err(CryptoError::SignerMismatch {
                claimed: m.signer,
                actual: signer,
            });
        }
        let described = m.key()?;
        if &described != at {
            return Err(ManifestError::WrongBackup {
                expected: at.to_string(),
                found: described.to_string(),
            }
            .into());
        }
        Ok(m)
    }

    /// The data object's key (next to the manifest).
    pub fn data_key(&self, at: &WalKey) -> String {
        format!("{}{}", at.dir(), self.ciphertext.object)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::keys::tests::test_keys;

    fn sample(signer: &str) -> WalManifest {
        WalManifest {
            kind: WAL_MANIFEST_KIND.into(),
            version: WAL_MANIFEST_VERSION,
            namespace: Namespace::new("production").unwrap(),
            system_identifier: "7312345678901234567".into(),
            file: "000000010000000000000003".into(),
            file_kind: WalFileKind::Segment,
            timeline: 1,
            plaintext_size: 16 << 20,
            plaintext_sha256: "11".repeat(32),
            ciphertext: CiphertextInfo {
                object: "000000010000000000000003.0a0b0c0d.pgp".into(),
                size: 100,
                sha256: "22".repeat(32),
                crc32c: 1,
                chunk_size: crate::crypto::chunks::CHUNK_SIZE,
                chunks: vec!["33".repeat(32)],
            },
            recipients: vec!["AB".repeat(20)],
            signer: signer.into(),
            archived_at: Utc::now(),
            tool: "backstop test".into(),
        }
    }

    #[test]
    fn sealed_manifests_open_only_where_they_belong_and_with_the_right_key() {
        let k = test_keys();
        let key = SigningKey::from_armored(&k.signing.secret_armored).unwrap();
        let m = sample(&k.signing.fingerprint);
        let sealed = m.seal(&key).unwrap();
        let at = m.key().unwrap();
        assert_eq!(
            WalManifest::open(&sealed, &[key.verifying_key()], &at).unwrap(),
            m
        );
        assert!(
            at.manifest_key()
                .ends_with("/00000001/000000010000000000000003.json")
        );
        assert_eq!(
            m.data_key(&at),
            format!("{}000000010000000000000003.0a0b0c0d.pgp", at.dir())
        );

        // Another file's place: refused, named.
        let elsewhere = WalKey::new(
            at.namespace.clone(),
            at.system_identifier,
            WalFile::parse("000000010000000000000004").unwrap(),
        );
        assert!(matches!(
            WalManifest::open(&sealed, &[key.verifying_key()], &elsewhere),
            Err(CryptoError::Manifest(ManifestError::WrongBackup { .. }))
        ));
        // Another signing key: unknown signer.
        let other = SigningKey::from_armored(&k.signing2.secret_armored).unwrap();
        assert!(matches!(
            WalManifest::open(&sealed, &[other.verifying_key()], &at),
            Err(CryptoError::UnknownSigner { .. })
        ));
        // A payload changed after sealing: the signature fails.
        let mut env: serde_json::Value = serde_json::from_slice(&sealed).unwrap();
        let mut forged = m.clone();
        forged.plaintext_sha256 = "44".repeat(32);
        env["payload"] = base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD,
            forged.to_bytes(),
        )
        .into();
        assert!(matches!(
            WalManifest::open(
                &serde_json::to_vec(&env).unwrap(),
                &[key.verifying_key()],
                &at
            ),
            Err(CryptoError::BadSignature { .. })
        ));
        // A signer field that is not the key that sealed it.
        let liar = sample(&k.signing2.fingerprint);
        assert!(matches!(
            liar.seal(&key),
            Err(CryptoError::SignerMismatch { .. })
        ));
    }

    #[test]
    fn a_file_name_that_contradicts_its_kind_or_timeline_is_malformed() {
        let mut m = sample("AB");
        m.timeline = 2;
        assert!(matches!(
            WalManifest::parse(&m.to_bytes()),
            Err(ManifestError::Malformed(_))
        ));
        let mut m = sample("AB");
        m.file_kind = WalFileKind::Partial;
        assert!(matches!(
            WalManifest::parse(&m.to_bytes()),
            Err(ManifestError::Malformed(_))
        ));
        let mut m = sample("AB");
        m.kind = "backstop.manifest".into();
        assert!(matches!(
            WalManifest::parse(&m.to_bytes()),
            Err(ManifestError::WrongKind(_))
        ));
        let m = sample("AB");
        assert_eq!(WalManifest::parse(&m.to_bytes()).unwrap(), m);
    }
}
