//! The backup format: OpenPGP envelope encryption, signed manifests and
//! verification without secrets.
//!
//! A backup's data object is one binary OpenPGP message (RFC 4880 / RFC 9580
//! v1 packets, readable by stock GnuPG 2.2):
//!
//! ```text
//! PKESK v3 (to recipient 1) .. PKESK v3 (to recipient n)
//! SEIPD v1 (AES-256, CFB, MDC), partial body lengths
//!   └─ encrypted: 18-byte prefix, one literal data packet ('b', no name,
//!      partial body lengths), MDC packet (SHA-1)
//! ```
//!
//! No OpenPGP compression (`pg_dump -Fc` compresses already). The session
//! keys are wrapped with [`pgp`] (rpgp); the bulk encryption, decryption and
//! the packet framing are streamed here with bounded memory (a few MiB
//! whatever the size) and run as a small pipeline of threads, so that AES,
//! SHA-1 and the ciphertext digests use more than one core.
//!
//! - [`keys`]: key generation (Ed25519 + Curve25519 ECDH, or RSA-4096), key
//!   roles, and [`KeySource`] (`file:`, inline armor, `gcpkms:`).
//! - [`encrypt`]: [`encrypt_stream`] turns any byte stream into a backup and
//!   reports the ciphertext's size, SHA-256 and CRC32C when the stream ends.
//! - [`decrypt`]: [`decrypt_stream`]; output is untrusted until it ends cleanly.
//! - [`inspect`]: [`PacketInspector`], [`DigestChecker`] and
//!   [`BackupVerifier`]: checks a backup while it streams past, with public
//!   keys only.
//! - [`sign`]: [`sign_manifest`] / [`verify_manifest`] (detached armored
//!   OpenPGP signatures that `gpg --verify` accepts).
//! - [`KeyUnwrap`]: the seam for KMS-wrapped secret keys (Cloud KMS is the
//!   cloud crate's `CloudKms`).

mod compress;
pub mod decrypt;
pub mod encrypt;
pub mod files;
pub mod inspect;
pub mod keys;
pub(crate) mod packet;
mod pipeline;
pub(crate) mod seipd;
pub mod sign;
#[cfg(test)]
mod tests;

pub use decrypt::{decrypt_stream, decrypt_to_writer};
pub use encrypt::{
    Compression, EncryptSummary, EncryptedStream, SummaryHandle, encrypt_reader, encrypt_stream,
    encrypt_stream_with,
};
pub use inspect::{BackupVerifier, DigestChecker, Digests, InspectReport, PacketInspector};
pub use keys::{
    BackupSecretKey, GeneratedKey, KeyAlgorithm, KeySource, KeyUnwrap, NoKms, RecipientKey,
    RecipientSet, SigningKey, VerifyingKey, check_kms_key_name, generate_backup_key,
    generate_signing_key,
};
pub use pipeline::{reader_stream, stream_to_writer};
pub use sign::{sign_bytes, verify_bytes};
pub use sign::{sign_manifest, verify_manifest, verify_manifest_at};

use crate::manifest::ManifestError;

/// Everything that can go wrong with keys, encryption, decryption and
/// verification. Each variant names one failure; its message says what is
/// wrong and what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    // ---- keys -------------------------------------------------------------
    #[error(
        "{what} is not a usable OpenPGP key ({reason}); expected an ASCII-armored key block as written by `backstop keygen` or `gpg --export --armor`"
    )]
    KeyParse { what: String, reason: String },
    #[error(
        "{what} holds a public key, but a secret key is needed here; use the *.sec.asc file (or its KMS-wrapped form)"
    )]
    NotASecretKey { what: String },
    #[error(
        "key {fingerprint} has no valid encryption subkey; backups can only be encrypted to a key with an encryption-capable (sub)key"
    )]
    NoEncryptionKey { fingerprint: String },
    #[error(
        "key {fingerprint} cannot sign (no signing-capable primary key or subkey); use the signing key from `backstop keygen`"
    )]
    NoSigningCapability { fingerprint: String },
    #[error(
        "secret key {fingerprint} is protected by a passphrase; Backstop expects unprotected keys that are wrapped by KMS instead (remove it with `gpg --edit-key {fingerprint} passwd`)"
    )]
    SecretKeyLocked { fingerprint: String },
    #[error(
        "key setting {setting:?} is invalid: {reason}. Use file:/path/to/key.asc, gcpkms:projects/P/locations/L/keyRings/R/cryptoKeys/K:/path/to/key.asc.kms, or the armored key text itself"
    )]
    KeySource { setting: String, reason: String },
    #[error("cannot read key file {path}: {source}")]
    KeyFile {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "Cloud KMS could not {op} with key {key}: {message}; check the key name, that the caller has roles/cloudkms.cryptoKeyDecrypter (or Encrypter) on it, and that the file was wrapped with this key"
    )]
    Kms {
        op: &'static str,
        key: String,
        message: String,
    },
    #[error("key generation failed: {0}")]
    KeyGeneration(String),

    // ---- encryption ---------------------------------------------------------
    #[error("no recipients: a backup must be encrypted to at least one backup public key")]
    NoRecipientsConfigured,
    #[error("encrypting the session key to {fingerprint} failed: {reason}")]
    SessionKeyEncrypt { fingerprint: String, reason: String },
    #[error("reading the input failed: {0}")]
    Input(#[source] std::io::Error),
    #[error("writing the output failed: {0}")]
    Output(#[source] std::io::Error),
    #[error("the encryption pipeline stopped unexpectedly: {0}")]
    Pipeline(String),

    // ---- structure (verification without secrets) -------------------------
    #[error("the data is empty: a backup is never empty, the upload or the dump failed")]
    Empty,
    #[error(
        "the data is ASCII-armored (-----BEGIN PGP ...): Backstop backups are binary OpenPGP messages; this object was not written by Backstop"
    )]
    Armored,
    #[error(
        "the data is not OpenPGP (first byte {first_byte:#04x}): it is probably an unencrypted dump and must never be replicated or restored as a backup"
    )]
    NotOpenPgp { first_byte: u8 },
    #[error(
        "the data holds a literal data packet at offset {offset}: it is an UNENCRYPTED OpenPGP message (plaintext dump); delete it and check the dump job's configuration"
    )]
    PlaintextPacket { offset: u64 },
    #[error(
        "the data holds a compressed data packet at offset {offset} outside any encryption: it is an UNENCRYPTED OpenPGP message; delete it and check the dump job"
    )]
    CompressedPlaintext { offset: u64 },
    #[error(
        "the message has a password-encrypted session key (SKESK) at offset {offset}: backups must be encrypted to public keys only, never to a passphrase"
    )]
    SymmetricSessionKey { offset: u64 },
    #[error(
        "the message uses symmetrically encrypted data without integrity protection (packet tag 9, no MDC) at offset {offset}: it can be modified undetectably and is refused"
    )]
    NoIntegrityProtection { offset: u64 },
    #[error(
        "unexpected OpenPGP packet {name} (tag {tag}) at offset {offset}: a backup holds only public-key session keys followed by one SEIPD packet"
    )]
    UnexpectedPacket {
        tag: u8,
        name: &'static str,
        offset: u64,
    },
    #[error(
        "the message has no public-key session key packet before its encrypted data: nobody could decrypt it"
    )]
    NoRecipientsInMessage,
    #[error(
        "session key packet version {version} at offset {offset} is not supported (expected v3, as GnuPG 2.2 writes and reads)"
    )]
    UnsupportedPkeskVersion { version: u8, offset: u64 },
    #[error(
        "encrypted data packet version {version} is not supported (expected SEIPD v1, AES with MDC, which GnuPG 2.2 reads)"
    )]
    UnsupportedSeipdVersion { version: u8 },
    #[error(
        "the message is encrypted to key {key_id}, which is not one of the expected backup recipients ({expected}); refusing it"
    )]
    UnknownRecipient { key_id: String, expected: String },
    #[error(
        "the manifest lists recipient {fingerprint}, but the data has no session key for it: data and manifest do not belong together"
    )]
    MissingRecipient { fingerprint: String },
    #[error("malformed OpenPGP packet at offset {offset}: {reason}")]
    MalformedPacket { offset: u64, reason: String },
    #[error(
        "the data is truncated: it ends at byte {offset} inside {context}; the upload was cut short"
    )]
    Truncated { offset: u64, context: String },
    #[error(
        "{extra} unexpected byte(s) after the end of the OpenPGP message at offset {offset}: something was appended to the backup"
    )]
    TrailingData { offset: u64, extra: u64 },

    // ---- digests ---------------------------------------------------------
    #[error(
        "ciphertext size is {actual} bytes, the manifest says {expected}: data and manifest do not match (truncated, extended or another backup's manifest)"
    )]
    SizeMismatch { expected: u64, actual: u64 },
    #[error(
        "ciphertext SHA-256 is {actual}, the manifest says {expected}: the data was modified or belongs to another backup"
    )]
    Sha256Mismatch { expected: String, actual: String },
    #[error(
        "ciphertext CRC32C is {actual:#010x}, the manifest says {expected:#010x}: the data was modified or belongs to another backup"
    )]
    Crc32cMismatch { expected: u32, actual: u32 },

    // ---- signatures ------------------------------------------------------
    #[error(
        "the manifest signature is not a valid OpenPGP signature ({0}); expected an armored detached signature (manifest.json.sig)"
    )]
    SignatureMalformed(String),
    #[error(
        "the manifest is signed by key {issuer}, which is not a configured signing key; refusing it (configure the signer's public key if it is legitimate)"
    )]
    UnknownSigner { issuer: String },
    #[error(
        "the manifest signature by {fingerprint} does not verify: the manifest was modified after signing or the signature belongs to another manifest"
    )]
    BadSignature { fingerprint: String },
    #[error("the manifest names signer {claimed}, but it is signed by {actual}")]
    SignerMismatch { claimed: String, actual: String },
    #[error("no signing public keys configured: cannot verify any manifest")]
    NoVerifyingKeys,
    #[error("signing failed: {0}")]
    Sign(String),
    #[error(transparent)]
    Manifest(#[from] ManifestError),

    // ---- decryption ------------------------------------------------------
    #[error(
        "none of our secret keys can decrypt this message: it is encrypted to {recipients}, we hold {held}; use the matching backup secret key"
    )]
    NoMatchingSecretKey { recipients: String, held: String },
    #[error(
        "decrypting the session key with {fingerprint} failed ({reason}): wrong key or corrupted session key packet"
    )]
    SessionKeyDecrypt { fingerprint: String, reason: String },
    #[error("symmetric cipher {0} is not supported (AES-128/192/256 are)")]
    UnsupportedCipher(String),
    #[error(
        "the encrypted data does not start as the session key says (quick check failed): the data is corrupted or the session key is wrong"
    )]
    QuickCheckFailed,
    #[error(
        "INTEGRITY CHECK FAILED (MDC mismatch): the encrypted data was modified or corrupted; discard everything decrypted from it"
    )]
    IntegrityCheckFailed,
    #[error(
        "the decrypted data does not end with a modification detection code (MDC); discard everything decrypted from it"
    )]
    MissingMdc,
    #[error("unexpected content inside the encrypted message: {0}")]
    InnerPacket(String),
    #[error("compression algorithm {0} inside the message is not supported (only ZIP and ZLIB)")]
    UnsupportedCompression(u8),
    #[error("decompressing the message failed: {0}")]
    Decompress(String),
}

impl CryptoError {
    /// Carries this error through an `io::Error` (inside a byte stream).
    pub fn into_io(self) -> std::io::Error {
        std::io::Error::other(self)
    }

    /// Recovers a [`CryptoError`] that travelled inside an `io::Error`, or
    /// wraps any other I/O failure as [`CryptoError::Input`].
    pub fn from_io(err: std::io::Error) -> Self {
        if err
            .get_ref()
            .is_some_and(|e| e.downcast_ref::<CryptoError>().is_some())
        {
            match err.into_inner().map(|e| e.downcast::<CryptoError>()) {
                Some(Ok(e)) => *e,
                Some(Err(e)) => CryptoError::Input(std::io::Error::other(e)),
                None => unreachable!("checked above"),
            }
        } else {
            CryptoError::Input(err)
        }
    }
}

/// Upper-case hex, as GnuPG prints fingerprints and key ids.
pub(crate) fn hex_upper(bytes: &[u8]) -> String {
    hex::encode_upper(bytes)
}

/// Entry points for the fuzz targets in `fuzz/` (not part of the API).
#[doc(hidden)]
pub mod fuzzing {
    use bytes::Bytes;

    /// Runs the parser of decrypted content (literal data, compression,
    /// signatures) and the MDC/prefix logic over `data`, split at `split`.
    pub fn inner_packets(data: &[u8], split: usize) {
        let cut = split % (data.len() + 1);
        let (a, b) = data.split_at(cut);
        let mut sink = |_b: Bytes| {};
        let mut p = super::seipd::InnerParser::new(0);
        let r = p
            .push(Bytes::copy_from_slice(a), &mut sink)
            .and_then(|()| p.push(Bytes::copy_from_slice(b), &mut sink));
        if r.is_ok() {
            let _ = p.finish(&mut sink);
        }
        let mut u = super::seipd::Unwrapper::new();
        let r = u
            .push(Bytes::copy_from_slice(a), &mut sink)
            .and_then(|()| u.push(Bytes::copy_from_slice(b), &mut sink));
        if r.is_ok() {
            let _ = u.finish(&mut sink);
        }
    }
}
