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
//! - [`chunks`]: chunk digests and the [`chunks::ChunkGate`] that hands on
//!   only authenticated ciphertext.
//! - [`sign`]: [`sign_manifest`] / [`verify_manifest`] (detached armored
//!   OpenPGP signatures that `gpg --verify` accepts).
//! - [`KeyUnwrap`]: the seam for KMS-wrapped secret keys (Cloud KMS is the
//!   cloud crate's `CloudKms`).

pub mod chunks;
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

pub use decrypt::{decrypt_stream, decrypt_stream_sized, decrypt_to_writer};
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
pub use pipeline::{counted, reader_stream, stream_to_writer};
pub use sign::{seal, sign_bytes, unseal, verify_bytes};
pub use sign::{sign_manifest, verify_manifest, verify_manifest_at};

use crate::manifest::ManifestError;

/// Everything that can go wrong with keys, encryption, decryption and
/// verification. Each variant names one failure; its message says what is
/// wrong and what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    // ---- keys -------------------------------------------------------------
    /// A key file or setting does not parse as an OpenPGP key, or its
    /// self-signatures do not verify.
    #[error(
        "{what} is not a usable OpenPGP key ({reason}); expected an ASCII-armored key block as written by `backstop keygen` or `gpg --export --armor`"
    )]
    KeyParse {
        /// The key's file, setting or role, for the message.
        what: String,
        /// The parser's complaint.
        reason: String,
    },
    /// A public key block was given where a secret key is needed.
    #[error(
        "{what} holds a public key, but a secret key is needed here; use the *.sec.asc file (or its KMS-wrapped form)"
    )]
    NotASecretKey {
        /// The key's file, setting or role, for the message.
        what: String,
    },
    /// A recipient or backup secret key has no usable encryption subkey.
    #[error(
        "key {fingerprint} has no valid encryption subkey; backups can only be encrypted to a key with an encryption-capable (sub)key"
    )]
    NoEncryptionKey {
        /// The key's fingerprint, upper-case hex.
        fingerprint: String,
    },
    /// A signing key has neither a signing-capable primary key nor subkey.
    #[error(
        "key {fingerprint} cannot sign (no signing-capable primary key or subkey); use the signing key from `backstop keygen`"
    )]
    NoSigningCapability {
        /// The key's fingerprint, upper-case hex.
        fingerprint: String,
    },
    /// A secret key is passphrase-protected; Backstop needs unprotected keys
    /// (KMS-wrapped at rest).
    #[error(
        "secret key {fingerprint} is protected by a passphrase; Backstop expects unprotected keys that are wrapped by KMS instead (remove it with `gpg --edit-key {fingerprint} passwd`)"
    )]
    SecretKeyLocked {
        /// The key's fingerprint, upper-case hex.
        fingerprint: String,
    },
    /// A key setting is not `file:`, `gcpkms:` or armored key text, or is
    /// incomplete or malformed.
    #[error(
        "key setting {setting:?} is invalid: {reason}. Use file:/path/to/key.asc, gcpkms:projects/P/locations/L/keyRings/R/cryptoKeys/K:/path/to/key.asc.kms, or the armored key text itself"
    )]
    KeySource {
        /// The setting as given; `(inline key)` for armored text, never the key
        /// itself.
        setting: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A key file cannot be read.
    #[error("cannot read key file {path}: {source}")]
    KeyFile {
        /// The file's path.
        path: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// Cloud KMS could not wrap or unwrap a key file, or a public-key setting
    /// names `gcpkms:`.
    #[error(
        "Cloud KMS could not {op} with key {key}: {message}; check the key name, that the caller has roles/cloudkms.cryptoKeyDecrypter (or Encrypter) on it, and that the file was wrapped with this key"
    )]
    Kms {
        /// `encrypt` or `decrypt`.
        op: &'static str,
        /// The KMS key name (`projects/P/.../cryptoKeys/K`).
        key: String,
        /// The KMS client's error, or what was wrong.
        message: String,
    },
    /// rpgp failed to generate a key (`backstop keygen`).
    #[error("key generation failed: {0}")]
    KeyGeneration(String),

    // ---- encryption ---------------------------------------------------------
    /// Encryption was asked for with no backup public key configured.
    #[error("no recipients: a backup must be encrypted to at least one backup public key")]
    NoRecipientsConfigured,
    /// Wrapping the session key to one recipient failed.
    #[error("encrypting the session key to {fingerprint} failed: {reason}")]
    SessionKeyEncrypt {
        /// The recipient key's fingerprint.
        fingerprint: String,
        /// rpgp's error.
        reason: String,
    },
    /// Reading the plaintext (encrypting) or ciphertext (decrypting) failed;
    /// also any I/O error [`CryptoError::from_io`] cannot map back.
    #[error("reading the input failed: {0}")]
    Input(#[source] std::io::Error),
    /// Writing or syncing the output failed (disk full, closed pipe).
    #[error("writing the output failed: {0}")]
    Output(#[source] std::io::Error),
    /// A pipeline thread could not start or a stage stopped without finishing,
    /// or a stage was used after it failed; never caused by the data.
    #[error("the encryption pipeline stopped unexpectedly: {0}")]
    Pipeline(String),

    // ---- structure (verification without secrets) -------------------------
    /// The data has no bytes at all.
    #[error("the data is empty: a backup is never empty, the upload or the dump failed")]
    Empty,
    /// The data is ASCII-armored OpenPGP, which Backstop never writes.
    #[error(
        "the data is ASCII-armored (-----BEGIN PGP ...): Backstop backups are binary OpenPGP messages; this object was not written by Backstop"
    )]
    Armored,
    /// The first byte is not an OpenPGP packet header: likely a plaintext dump.
    #[error(
        "the data is not OpenPGP (first byte {first_byte:#04x}): it is probably an unencrypted dump and must never be replicated or restored as a backup"
    )]
    NotOpenPgp {
        /// The data's first byte.
        first_byte: u8,
    },
    /// A literal data packet sits outside any encryption: a plaintext OpenPGP
    /// message.
    #[error(
        "the data holds a literal data packet at offset {offset}: it is an UNENCRYPTED OpenPGP message (plaintext dump); delete it and check the dump job's configuration"
    )]
    PlaintextPacket {
        /// Byte offset of the packet in the data.
        offset: u64,
    },
    /// A compressed data packet sits outside any encryption: a plaintext
    /// OpenPGP message.
    #[error(
        "the data holds a compressed data packet at offset {offset} outside any encryption: it is an UNENCRYPTED OpenPGP message; delete it and check the dump job"
    )]
    CompressedPlaintext {
        /// Byte offset of the packet in the data.
        offset: u64,
    },
    /// The message carries a passphrase-encrypted session key (SKESK).
    #[error(
        "the message has a password-encrypted session key (SKESK) at offset {offset}: backups must be encrypted to public keys only, never to a passphrase"
    )]
    SymmetricSessionKey {
        /// Byte offset of the packet in the data.
        offset: u64,
    },
    /// The message uses the legacy encrypted data packet (tag 9) without an
    /// MDC.
    #[error(
        "the message uses symmetrically encrypted data without integrity protection (packet tag 9, no MDC) at offset {offset}: it can be modified undetectably and is refused"
    )]
    NoIntegrityProtection {
        /// Byte offset of the packet in the data.
        offset: u64,
    },
    /// A packet other than PKESK or SEIPD appears at the top level of the
    /// message.
    #[error(
        "unexpected OpenPGP packet {name} (tag {tag}) at offset {offset}: a backup holds only public-key session keys followed by one SEIPD packet"
    )]
    UnexpectedPacket {
        /// The OpenPGP packet tag.
        tag: u8,
        /// The packet type's name.
        name: &'static str,
        /// Byte offset of the packet in the data.
        offset: u64,
    },
    /// The encrypted data is not preceded by any PKESK packet.
    #[error(
        "the message has no public-key session key packet before its encrypted data: nobody could decrypt it"
    )]
    NoRecipientsInMessage,
    /// A PKESK packet is not version 3.
    #[error(
        "session key packet version {version} at offset {offset} is not supported (expected v3, as GnuPG 2.2 writes and reads)"
    )]
    UnsupportedPkeskVersion {
        /// The packet's version byte.
        version: u8,
        /// Byte offset of the packet in the data.
        offset: u64,
    },
    /// The SEIPD packet is not version 1 (for example v2, AEAD).
    #[error(
        "encrypted data packet version {version} is not supported (expected SEIPD v1, AES with MDC, which GnuPG 2.2 reads)"
    )]
    UnsupportedSeipdVersion {
        /// The packet's version byte.
        version: u8,
    },
    /// The message is encrypted to a key that is not an expected backup
    /// recipient.
    #[error(
        "the message is encrypted to key {key_id}, which is not one of the expected backup recipients ({expected}); refusing it"
    )]
    UnknownRecipient {
        /// The unexpected key id or fingerprint (all zeros: an anonymous
        /// recipient).
        key_id: String,
        /// The expected recipients, for the message.
        expected: String,
    },
    /// A recipient listed in the manifest has no PKESK packet in the data.
    #[error(
        "the manifest lists recipient {fingerprint}, but the data has no session key for it: data and manifest do not belong together"
    )]
    MissingRecipient {
        /// The missing recipient's fingerprint.
        fingerprint: String,
    },
    /// A packet header or body does not follow the OpenPGP format.
    #[error("malformed OpenPGP packet at offset {offset}: {reason}")]
    MalformedPacket {
        /// Byte offset of the packet in the data.
        offset: u64,
        /// What is wrong with it.
        reason: String,
    },
    /// The data ends in the middle of a packet or of the encrypted data.
    #[error(
        "the data is truncated: it ends at byte {offset} inside {context}; the upload was cut short"
    )]
    Truncated {
        /// Total bytes seen when the data ended.
        offset: u64,
        /// What was being read, for the message.
        context: String,
    },
    /// Bytes follow the end of the OpenPGP message.
    #[error(
        "{extra} unexpected byte(s) after the end of the OpenPGP message at offset {offset}: something was appended to the backup"
    )]
    TrailingData {
        /// Where the message ended.
        offset: u64,
        /// How many bytes follow it.
        extra: u64,
    },

    // ---- digests ---------------------------------------------------------
    /// The ciphertext's size differs from the manifest's.
    #[error(
        "ciphertext size is {actual} bytes, the manifest says {expected}: data and manifest do not match (truncated, extended or another backup's manifest)"
    )]
    SizeMismatch {
        /// Size in bytes the manifest records.
        expected: u64,
        /// Size in bytes of the data.
        actual: u64,
    },
    /// The ciphertext's SHA-256 differs from the manifest's.
    #[error(
        "ciphertext SHA-256 is {actual}, the manifest says {expected}: the data was modified or belongs to another backup"
    )]
    Sha256Mismatch {
        /// Hex digest the manifest records.
        expected: String,
        /// Lower-case hex digest of the data.
        actual: String,
    },
    /// The ciphertext's CRC32C differs from the manifest's.
    #[error(
        "ciphertext CRC32C is {actual:#010x}, the manifest says {expected:#010x}: the data was modified or belongs to another backup"
    )]
    Crc32cMismatch {
        /// CRC32C the manifest records.
        expected: u32,
        /// CRC32C of the data.
        actual: u32,
    },
    /// A chunk of the ciphertext differs from its digest in the signed
    /// manifest. Nothing of this chunk (or after it) was handed on.
    #[error(
        "ciphertext chunk {index} of {count} (from byte {offset}) does not match its digest in the signed manifest: the object was modified or replaced; nothing of it was used"
    )]
    ChunkMismatch {
        /// Zero-based chunk number.
        index: usize,
        /// The chunk's first byte in the object.
        offset: u64,
        /// How many chunks the manifest lists.
        count: usize,
    },
    /// The manifest has no chunk digests (written before they existed), so
    /// the data can only be authenticated whole.
    #[error(
        "the manifest has no chunk digests (an older backup): the data must be verified whole before use"
    )]
    NoChunkDigests,
    /// The manifest's chunk list does not fit its ciphertext size.
    #[error("the manifest's chunk digests are unusable: {0}")]
    ChunkList(String),
    /// Decryption produced more plaintext than the signed manifest says the
    /// dump had (a decompression bomb, or another backup's data).
    #[error(
        "decryption produced more than the {limit} bytes of plaintext the signed manifest records: refusing the rest (decompression bomb or substituted data)"
    )]
    PlaintextTooLarge {
        /// The manifest's `plaintext_size`.
        limit: u64,
    },
    /// Decryption ended with less plaintext than the signed manifest says.
    #[error(
        "decryption produced {actual} bytes of plaintext, the signed manifest records {expected}: the data does not belong to this manifest"
    )]
    PlaintextSizeMismatch {
        /// The manifest's `plaintext_size`.
        expected: u64,
        /// Bytes produced.
        actual: u64,
    },

    // ---- signatures ------------------------------------------------------
    /// A manifest signature is empty, oversized, not OpenPGP or not a data
    /// signature.
    #[error(
        "the manifest signature is not a valid OpenPGP signature ({0}); expected an armored detached signature (manifest.json.sig)"
    )]
    SignatureMalformed(String),
    /// A manifest is signed by a key that is not a configured verifying key.
    #[error(
        "the manifest is signed by key {issuer}, which is not a configured signing key; refusing it (configure the signer's public key if it is legitimate)"
    )]
    UnknownSigner {
        /// The signature's issuer key id or fingerprint.
        issuer: String,
    },
    /// A manifest signature by a configured key does not verify over the
    /// manifest bytes.
    #[error(
        "the manifest signature by {fingerprint} does not verify: the manifest was modified after signing or the signature belongs to another manifest"
    )]
    BadSignature {
        /// The fingerprint of the (sub)key that made the signature.
        fingerprint: String,
    },
    /// The manifest's `signer` is not the key that signs or signed it.
    #[error("the manifest names signer {claimed}, but it is signed by {actual}")]
    SignerMismatch {
        /// The fingerprint the manifest names.
        claimed: String,
        /// The fingerprint of the actual signing key.
        actual: String,
    },
    /// Verification was asked for with no signing public key configured.
    #[error("no signing public keys configured: cannot verify any manifest")]
    NoVerifyingKeys,
    /// rpgp failed to make a signature.
    #[error("signing failed: {0}")]
    Sign(String),
    /// The signature verified but the manifest itself is invalid.
    #[error(transparent)]
    Manifest(#[from] ManifestError),

    // ---- decryption ------------------------------------------------------
    /// None of the configured backup secret keys is a recipient of the message.
    #[error(
        "none of our secret keys can decrypt this message: it is encrypted to {recipients}, we hold {held}; use the matching backup secret key"
    )]
    NoMatchingSecretKey {
        /// Key ids the message is encrypted to.
        recipients: String,
        /// Key ids (and fingerprints) of the keys held.
        held: String,
    },
    /// Unwrapping the session key with a matching secret key failed.
    #[error(
        "decrypting the session key with {fingerprint} failed ({reason}): wrong key or corrupted session key packet"
    )]
    SessionKeyDecrypt {
        /// The secret key's fingerprint.
        fingerprint: String,
        /// rpgp's error.
        reason: String,
    },
    /// The session key names a cipher other than AES-128/192/256.
    #[error("symmetric cipher {0} is not supported (AES-128/192/256 are)")]
    UnsupportedCipher(String),
    /// The decrypted prefix's check bytes do not repeat: wrong session key or
    /// corrupted data.
    #[error(
        "the encrypted data does not start as the session key says (quick check failed): the data is corrupted or the session key is wrong"
    )]
    QuickCheckFailed,
    /// The MDC (SHA-1) does not match: the ciphertext was modified or
    /// corrupted.
    #[error(
        "INTEGRITY CHECK FAILED (MDC mismatch): the encrypted data was modified or corrupted; discard everything decrypted from it"
    )]
    IntegrityCheckFailed,
    /// The decrypted data does not end with an MDC packet.
    #[error(
        "the decrypted data does not end with a modification detection code (MDC); discard everything decrypted from it"
    )]
    MissingMdc,
    /// The decrypted content is not exactly one literal data packet (possibly
    /// compressed once), or a packet in it is malformed.
    #[error("unexpected content inside the encrypted message: {0}")]
    InnerPacket(String),
    /// A compressed packet inside the message uses an algorithm other than ZIP
    /// or ZLIB.
    #[error("compression algorithm {0} inside the message is not supported (only ZIP and ZLIB)")]
    UnsupportedCompression(u8),
    /// Decompressing the message's content failed or it ended early.
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

/// Key and setting problems are configuration; failures around the data
/// (reading, writing, KMS, threads) follow their cause; everything else is
/// the data failing its checks, or not being encrypted to the key given.
impl crate::error::Failure for CryptoError {
    fn failure_kind(&self) -> crate::error::FailureKind {
        use crate::error::FailureKind;
        match self {
            CryptoError::KeyParse { .. }
            | CryptoError::NotASecretKey { .. }
            | CryptoError::NoEncryptionKey { .. }
            | CryptoError::NoSigningCapability { .. }
            | CryptoError::SecretKeyLocked { .. }
            | CryptoError::KeySource { .. }
            | CryptoError::KeyFile { .. }
            | CryptoError::NoRecipientsConfigured
            | CryptoError::NoVerifyingKeys => FailureKind::Config,
            CryptoError::Kms { .. } => FailureKind::Unreachable,
            CryptoError::Input(e) | CryptoError::Output(e) => e
                .get_ref()
                .and_then(|inner| inner.downcast_ref::<crate::store::StoreError>())
                .map_or(FailureKind::Other, crate::error::Failure::failure_kind),
            CryptoError::Pipeline(_)
            | CryptoError::KeyGeneration(_)
            | CryptoError::SessionKeyEncrypt { .. }
            | CryptoError::Sign(_) => FailureKind::Other,
            CryptoError::Manifest(e) => crate::error::Failure::failure_kind(e),
            _ => FailureKind::Integrity,
        }
    }
}

impl crate::error::Classify for CryptoError {
    /// Data errors (a bad backup, a wrong key) are permanent; failures of the
    /// environment around the data (reading, writing, KMS, a key file, the
    /// pipeline's threads) may pass.
    fn retry(&self) -> crate::error::Retry {
        match self {
            CryptoError::Input(_)
            | CryptoError::Output(_)
            | CryptoError::Pipeline(_)
            | CryptoError::Kms { .. }
            | CryptoError::KeyFile { .. } => crate::error::Retry::Transient,
            _ => crate::error::Retry::Permanent,
        }
    }
}
