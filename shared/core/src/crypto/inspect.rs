//! Verification without secrets, while the bytes stream past.
//!
//! - [`PacketInspector`]: the OpenPGP structure. A backup is one or more
//!   v3 public-key session key packets (PKESK), each to an
//!   expected recipient, followed by exactly one SEIPD v1 packet whose
//!   lengths (including partial body lengths) account for every byte, and
//!   nothing after it.
//! - [`DigestChecker`]: size, SHA-256 and CRC32C against the manifest.
//! - [`BackupVerifier`]: both, plus the manifest's recipient list.
//!
//! All three are fed chunks of any size and keep O(1) state (a PKESK body is
//! at most [`MAX_PKESK_BODY`] bytes), so the replicator can verify while it
//! copies. Structural errors surface from `feed` as soon as they are seen;
//! digest errors from `finish`.

use std::collections::BTreeSet;

use sha2::{Digest, Sha256};

use super::keys::RecipientSet;
use super::packet::{self, BodyLen, HeaderError, Parsed, tag};
use super::{CryptoError, hex_upper};
use crate::manifest::{CiphertextInfo, Manifest};

/// Largest PKESK body accepted (RSA-16384 would need ~2 KiB).
pub const MAX_PKESK_BODY: usize = 4096;
/// At most this many session key packets.
pub const MAX_PKESKS: usize = 64;
/// SEIPD v1 body: version, 18-byte prefix, at least an empty literal packet
/// header (2 + 6) and the 22-byte MDC packet.
const MIN_SEIPD_BODY: u64 = 1 + 18 + 22;

/// Receives the encrypted bytes (and the session key packets seen before).
pub(crate) type OnEncrypted<'a> = dyn FnMut(&[PkeskInfo], &[u8]) -> Result<(), CryptoError> + 'a;

/// A session key packet as seen by the inspector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PkeskInfo {
    /// Upper-case hex key id (the 8 low bytes of the subkey fingerprint).
    pub key_id: String,
    /// The same key id as raw bytes; all zeros for an anonymous recipient.
    pub key_id_bytes: [u8; 8],
    /// The public-key algorithm id (RFC 4880 §9.1: 1 RSA, 18 ECDH).
    pub algorithm: u8,
    /// The whole packet body (kept for decryption).
    pub body: Vec<u8>,
}

/// What the inspector saw, once the message is complete.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct InspectReport {
    /// Key ids of the session key packets, in order.
    pub recipients: Vec<String>,
    /// Total bytes inspected.
    pub total_len: u64,
    /// Length of the SEIPD body (version octet, prefix, data and MDC).
    pub encrypted_len: u64,
}

#[derive(Debug)]
enum State {
    /// Between packets; header bytes collected in `hdr`.
    Header,
    Pkesk {
        remaining: u64,
        start: u64,
    },
    /// Inside the SEIPD body. `partial`: another length follows this chunk.
    Seipd {
        remaining: u64,
        partial: bool,
        indeterminate: bool,
    },
    /// Between SEIPD partial chunks, collecting a length in `hdr`.
    SeipdLen,
    /// The message is complete.
    Done,
    /// A previous error; every further call fails.
    Failed,
}

/// Streaming OpenPGP structure check (no secrets needed).
#[derive(Debug)]
pub struct PacketInspector {
    allowed: Option<RecipientSet>,
    state: State,
    hdr: Vec<u8>,
    offset: u64,
    pkesks: Vec<PkeskInfo>,
    pkesk_body: Vec<u8>,
    seipd_len: u64,
    seipd_version_seen: bool,
}

impl PacketInspector {
    /// Checks structure and that every session key packet is to one of
    /// `allowed`.
    pub fn new(allowed: RecipientSet) -> Self {
        Self::with_optional(Some(allowed))
    }

    /// Checks structure only, accepting any recipient (decryption uses this:
    /// the secret key decides).
    pub fn any_recipient() -> Self {
        Self::with_optional(None)
    }

    fn with_optional(allowed: Option<RecipientSet>) -> Self {
        PacketInspector {
            allowed,
            state: State::Header,
            hdr: Vec::with_capacity(8),
            offset: 0,
            pkesks: Vec::new(),
            pkesk_body: Vec::new(),
            seipd_len: 0,
            seipd_version_seen: false,
        }
    }

    /// Session key packets seen so far.
    pub fn pkesks(&self) -> &[PkeskInfo] {
        &self.pkesks
    }

    /// Feeds the next chunk.
    pub fn feed(&mut self, chunk: &[u8]) -> Result<(), CryptoError> {
        self.feed_with(chunk, &mut |_, _| Ok(()))
    }

    /// Feeds the next chunk, handing the SEIPD body bytes (after the version
    /// octet) to `on_encrypted`. All PKESKs have been seen when it is first
    /// called.
    pub(crate) fn feed_with(
        &mut self,
        chunk: &[u8],
        on_encrypted: &mut OnEncrypted<'_>,
    ) -> Result<(), CryptoError> {
        let r = self.feed_inner(chunk, on_encrypted);
        if r.is_err() {
            self.state = State::Failed;
        }
        r
    }

    fn fail_header(&self, e: HeaderError) -> CryptoError {
        match e {
            HeaderError::NotAPacket(b) if self.offset == 0 => {
                if b == b'-' {
                    CryptoError::Armored
                } else {
                    CryptoError::NotOpenPgp { first_byte: b }
                }
            }
            HeaderError::NotAPacket(b) => CryptoError::MalformedPacket {
                offset: self.offset,
                reason: format!("byte {b:#04x} is not a packet header"),
            },
            HeaderError::Invalid(reason) => CryptoError::MalformedPacket {
                offset: self.offset,
                reason,
            },
        }
    }

    fn start_packet(&mut self, h: packet::Header) -> Result<(), CryptoError> {
        let offset = self.offset;
        match h.tag {
            tag::PKESK => {
                let BodyLen::Fixed(len) = h.len else {
                    unreachable!("parse_header refuses partial/indeterminate PKESK")
                };
                if len as usize > MAX_PKESK_BODY {
                    return Err(CryptoError::MalformedPacket {
                        offset,
                        reason: format!("session key packet of {len} bytes is implausibly large"),
                    });
                }
                if self.pkesks.len() >= MAX_PKESKS {
                    return Err(CryptoError::MalformedPacket {
                        offset,
                        reason: format!("more than {MAX_PKESKS} session key packets"),
                    });
                }
                self.pkesk_body.clear();
                self.state = State::Pkesk {
                    remaining: len,
                    start: offset,
                };
                if len == 0 {
                    self.end_pkesk(offset)?;
                }
                Ok(())
            }
            tag::SEIPD => {
                if self.pkesks.is_empty() {
                    return Err(CryptoError::NoRecipientsInMessage);
                }
                let (remaining, partial, indeterminate) = match h.len {
                    BodyLen::Fixed(n) => (n, false, false),
                    BodyLen::Partial(n) => (n, true, false),
                    BodyLen::Indeterminate => (u64::MAX, false, true),
                };
                self.state = State::Seipd {
                    remaining,
                    partial,
                    indeterminate,
                };
                if remaining == 0 && !partial {
                    self.end_seipd()?;
                }
                Ok(())
            }
            tag::LITERAL => Err(CryptoError::PlaintextPacket { offset }),
            tag::COMPRESSED => Err(CryptoError::CompressedPlaintext { offset }),
            tag::SKESK => Err(CryptoError::SymmetricSessionKey { offset }),
            tag::SED => Err(CryptoError::NoIntegrityProtection { offset }),
            t => Err(CryptoError::UnexpectedPacket {
                tag: t,
                name: packet::tag_name(t),
                offset,
            }),
        }
    }

    fn end_pkesk(&mut self, start: u64) -> Result<(), CryptoError> {
        let body = std::mem::take(&mut self.pkesk_body);
        let Some(&version) = body.first() else {
            return Err(CryptoError::MalformedPacket {
                offset: start,
                reason: "empty session key packet".into(),
            });
        };
        if version != 3 {
            return Err(CryptoError::UnsupportedPkeskVersion {
                version,
                offset: start,
            });
        }
        if body.len() < 10 {
            return Err(CryptoError::MalformedPacket {
                offset: start,
                reason: "session key packet too short".into(),
            });
        }
        let mut id = [0u8; 8];
        id.copy_from_slice(&body[1..9]);
        let key_id = hex_upper(&id);
        if let Some(allowed) = &self.allowed
            && !allowed.contains_key_id(&id)
        {
            return Err(CryptoError::UnknownRecipient {
                key_id: if id == [0; 8] {
                    "0000000000000000 (anonymous recipient)".into()
                } else {
                    key_id
                },
                expected: allowed.describe(),
            });
        }
        self.pkesks.push(PkeskInfo {
            key_id,
            key_id_bytes: id,
            algorithm: body[9],
            body,
        });
        self.state = State::Header;
        Ok(())
    }

    fn end_seipd(&mut self) -> Result<(), CryptoError> {
        if self.seipd_len < MIN_SEIPD_BODY {
            return Err(CryptoError::MalformedPacket {
                offset: self.offset,
                reason: format!(
                    "encrypted data packet of {} bytes is too short to hold a message",
                    self.seipd_len
                ),
            });
        }
        self.state = State::Done;
        Ok(())
    }

    fn seipd_bytes(
        &mut self,
        data: &[u8],
        on_encrypted: &mut OnEncrypted<'_>,
    ) -> Result<(), CryptoError> {
        if data.is_empty() {
            return Ok(());
        }
        self.seipd_len += data.len() as u64;
        let data = if !self.seipd_version_seen {
            self.seipd_version_seen = true;
            if data[0] != 1 {
                return Err(CryptoError::UnsupportedSeipdVersion { version: data[0] });
            }
            &data[1..]
        } else {
            data
        };
        if data.is_empty() {
            Ok(())
        } else {
            on_encrypted(&self.pkesks, data)
        }
    }

    fn feed_inner(
        &mut self,
        mut data: &[u8],
        on_encrypted: &mut OnEncrypted<'_>,
    ) -> Result<(), CryptoError> {
        while !data.is_empty() {
            let used = match self.state {
                State::Failed => {
                    return Err(CryptoError::Pipeline(
                        "inspector used after it reported an error".into(),
                    ));
                }
                State::Done => {
                    return Err(CryptoError::TrailingData {
                        offset: self.offset,
                        extra: data.len() as u64,
                    });
                }
                State::Header => self.feed_header(data)?,
                State::Pkesk { remaining, start } => self.feed_pkesk(data, remaining, start)?,
                State::Seipd {
                    remaining,
                    partial,
                    indeterminate,
                } => self.feed_seipd(data, remaining, partial, indeterminate, on_encrypted)?,
                State::SeipdLen => self.feed_seipd_len(data)?,
            };
            data = &data[used..];
        }
        Ok(())
    }

    /// Between packets: collects a packet header from the front of `data`.
    /// Returns the bytes used.
    fn feed_header(&mut self, data: &[u8]) -> Result<usize, CryptoError> {
        let start = self.hdr.len();
        let take = (6 - start).min(data.len());
        self.hdr.extend_from_slice(&data[..take]);
        match packet::parse_header(&self.hdr) {
            Err(e) => Err(self.fail_header(e)),
            Ok(Parsed::NeedMore) => {
                self.offset += take as u64;
                Ok(take)
            }
            Ok(Parsed::Done(h, used)) => {
                let n = used - start;
                self.hdr.clear();
                self.start_packet(h)?;
                self.offset += n as u64;
                Ok(n)
            }
        }
    }

    /// In a session key packet: collects its body. Returns the bytes used.
    fn feed_pkesk(
        &mut self,
        data: &[u8],
        remaining: u64,
        start: u64,
    ) -> Result<usize, CryptoError> {
        let n = remaining.min(data.len() as u64) as usize;
        self.pkesk_body.extend_from_slice(&data[..n]);
        self.offset += n as u64;
        if remaining == n as u64 {
            self.end_pkesk(start)?;
        } else {
            self.state = State::Pkesk {
                remaining: remaining - n as u64,
                start,
            };
        }
        Ok(n)
    }

    /// In the SEIPD body: hands its bytes on. Returns the bytes used.
    fn feed_seipd(
        &mut self,
        data: &[u8],
        remaining: u64,
        partial: bool,
        indeterminate: bool,
        on_encrypted: &mut OnEncrypted<'_>,
    ) -> Result<usize, CryptoError> {
        let n = if indeterminate {
            data.len()
        } else {
            remaining.min(data.len() as u64) as usize
        };
        self.seipd_bytes(&data[..n], on_encrypted)?;
        self.offset += n as u64;
        if indeterminate {
            return Ok(n);
        }
        let remaining = remaining - n as u64;
        if remaining > 0 {
            self.state = State::Seipd {
                remaining,
                partial,
                indeterminate,
            };
        } else if partial {
            self.state = State::SeipdLen;
        } else {
            self.end_seipd()?;
        }
        Ok(n)
    }

    /// Between SEIPD partial chunks: collects the next length from the
    /// front of `data`. Returns the bytes used.
    fn feed_seipd_len(&mut self, data: &[u8]) -> Result<usize, CryptoError> {
        let start = self.hdr.len();
        let take = (5 - start).min(data.len());
        self.hdr.extend_from_slice(&data[..take]);
        match packet::parse_new_len(&self.hdr) {
            Parsed::NeedMore => {
                self.offset += take as u64;
                Ok(take)
            }
            Parsed::Done(len, used) => {
                let n = used - start;
                self.offset += n as u64;
                self.hdr.clear();
                let (remaining, partial) = match len {
                    BodyLen::Fixed(n) => (n, false),
                    BodyLen::Partial(n) => (n, true),
                    BodyLen::Indeterminate => unreachable!(),
                };
                self.state = State::Seipd {
                    remaining,
                    partial,
                    indeterminate: false,
                };
                if remaining == 0 && !partial {
                    self.end_seipd()?;
                }
                Ok(n)
            }
        }
    }

    /// Ends the input: the message must be complete.
    pub fn finish(&mut self) -> Result<InspectReport, CryptoError> {
        let offset = self.offset;
        let r = match &self.state {
            State::Done => Ok(()),
            State::Seipd {
                indeterminate: true,
                ..
            } => self.end_seipd(),
            State::Failed => Err(CryptoError::Pipeline(
                "inspector used after it reported an error".into(),
            )),
            State::Header if offset == 0 && self.hdr.is_empty() => Err(CryptoError::Empty),
            State::Header if self.hdr.is_empty() => Err(CryptoError::Truncated {
                offset,
                context: if self.pkesks.is_empty() {
                    "the message header".into()
                } else {
                    format!(
                        "the message: {} session key packet(s) but no encrypted data",
                        self.pkesks.len()
                    )
                },
            }),
            State::Header => Err(CryptoError::Truncated {
                offset,
                context: "a packet header".into(),
            }),
            State::Pkesk { remaining, .. } => Err(CryptoError::Truncated {
                offset,
                context: format!("a session key packet ({remaining} bytes missing)"),
            }),
            State::Seipd {
                remaining, partial, ..
            } => Err(CryptoError::Truncated {
                offset,
                context: format!(
                    "the encrypted data ({remaining} bytes missing from the current {})",
                    if *partial {
                        "chunk, more chunks announced"
                    } else {
                        "last chunk"
                    }
                ),
            }),
            State::SeipdLen => Err(CryptoError::Truncated {
                offset,
                context: "the encrypted data (a chunk length)".into(),
            }),
        };
        if let Err(e) = r {
            self.state = State::Failed;
            return Err(e);
        }
        Ok(InspectReport {
            recipients: self.pkesks.iter().map(|p| p.key_id.clone()).collect(),
            total_len: self.offset,
            encrypted_len: self.seipd_len,
        })
    }
}

/// Size, SHA-256 and CRC32C of a byte stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Digests {
    /// Length in bytes.
    pub size: u64,
    /// Lower-case hex.
    pub sha256: String,
    /// CRC32C (Castagnoli) of the bytes.
    pub crc32c: u32,
}

/// Computes [`Digests`] incrementally.
#[derive(Debug, Clone, Default)]
pub struct DigestState {
    sha: Sha256,
    crc: u32,
    size: u64,
}

impl DigestState {
    /// Digests of no bytes yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds the next bytes.
    pub fn update(&mut self, data: &[u8]) {
        self.sha.update(data);
        self.crc = crc32c::crc32c_append(self.crc, data);
        self.size += data.len() as u64;
    }

    /// Bytes seen so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The digests of every byte passed to [`Self::update`].
    pub fn finish(self) -> Digests {
        Digests {
            size: self.size,
            sha256: hex::encode(self.sha.finalize()),
            crc32c: self.crc,
        }
    }
}

/// Compares a stream's size and digests with a manifest's `ciphertext`.
#[derive(Debug, Clone)]
pub struct DigestChecker {
    expected: CiphertextInfo,
    state: DigestState,
}

impl DigestChecker {
    /// A checker for a stream that must match `expected`.
    pub fn new(expected: &CiphertextInfo) -> Self {
        DigestChecker {
            expected: expected.clone(),
            state: DigestState::new(),
        }
    }

    /// Fails early once the data is longer than expected.
    pub fn feed(&mut self, chunk: &[u8]) -> Result<(), CryptoError> {
        self.state.update(chunk);
        if self.state.size() > self.expected.size {
            return Err(CryptoError::SizeMismatch {
                expected: self.expected.size,
                actual: self.state.size(),
            });
        }
        Ok(())
    }

    /// Ends the stream: fails on the first of size, SHA-256 and CRC32C that
    /// differs from the manifest's, else returns the digests.
    pub fn finish(self) -> Result<Digests, CryptoError> {
        let d = self.state.finish();
        if d.size != self.expected.size {
            return Err(CryptoError::SizeMismatch {
                expected: self.expected.size,
                actual: d.size,
            });
        }
        if !d.sha256.eq_ignore_ascii_case(&self.expected.sha256) {
            return Err(CryptoError::Sha256Mismatch {
                expected: self.expected.sha256.clone(),
                actual: d.sha256,
            });
        }
        if d.crc32c != self.expected.crc32c {
            return Err(CryptoError::Crc32cMismatch {
                expected: self.expected.crc32c,
                actual: d.crc32c,
            });
        }
        Ok(d)
    }
}

/// Checks a backup's data object against its (already signature-verified)
/// manifest and the configured recipients, with public keys only.
///
/// ```text
/// let mut v = BackupVerifier::new(&manifest, recipients)?;
/// while let Some(chunk) = body.next().await { v.feed(&chunk?)?; /* copy chunk */ }
/// let digests = v.finish()?;   // only now is the copy known good
/// ```
#[derive(Debug)]
pub struct BackupVerifier {
    inspector: PacketInspector,
    digests: DigestChecker,
    /// `None` for manifests without chunk digests (version 1).
    chunks: Option<super::chunks::ChunkChecker>,
    manifest_recipients: Vec<String>,
}

impl BackupVerifier {
    /// `recipients`: the backup public keys the data may be encrypted to.
    /// Every recipient the manifest lists must be one of them.
    pub fn new(manifest: &Manifest, recipients: RecipientSet) -> Result<Self, CryptoError> {
        Self::for_ciphertext(&manifest.ciphertext, &manifest.recipients, recipients)
    }

    /// The verifier of the object `ciphertext` describes, whose signed
    /// description lists `listed` (fingerprints) as its recipients: what
    /// [`Self::new`] takes from a dump's manifest, here from any signed
    /// description (an archived WAL file's manifest).
    pub fn for_ciphertext(
        ciphertext: &CiphertextInfo,
        listed: &[String],
        recipients: RecipientSet,
    ) -> Result<Self, CryptoError> {
        for fpr in listed {
            if !recipients.contains_fingerprint(fpr) {
                return Err(CryptoError::UnknownRecipient {
                    key_id: fpr.clone(),
                    expected: recipients.describe(),
                });
            }
        }
        let chunks = if ciphertext.chunks.is_empty() {
            None
        } else {
            Some(super::chunks::ChunkChecker::new(ciphertext)?)
        };
        Ok(BackupVerifier {
            inspector: PacketInspector::new(recipients),
            digests: DigestChecker::new(ciphertext),
            chunks,
            manifest_recipients: listed.to_vec(),
        })
    }

    /// Leaves the chunk digests to the caller, who authenticates chunks
    /// already (with [`super::chunks::authenticated`]) and need not hash
    /// them twice.
    pub fn chunks_checked_by_caller(mut self) -> Self {
        self.chunks = None;
        self
    }

    /// Checks the next chunk's structure, the chunk digests it completes,
    /// and adds it to the digests; fails as soon as any is wrong.
    pub fn feed(&mut self, chunk: &[u8]) -> Result<(), CryptoError> {
        self.inspector.feed(chunk)?;
        if let Some(c) = self.chunks.as_mut() {
            c.feed(chunk)?;
        }
        self.digests.feed(chunk)
    }

    /// Structure first (a truncated or extended object names the problem
    /// precisely), then the recipients, then the digests.
    pub fn finish(mut self) -> Result<Digests, CryptoError> {
        let report = self.inspector.finish()?;
        if let Some(c) = self.chunks.take() {
            c.finish()?;
        }
        let in_message: BTreeSet<String> = report.recipients.iter().cloned().collect();
        for fpr in &self.manifest_recipients {
            let id = key_id_of_fingerprint(fpr);
            if !in_message.contains(&id) {
                return Err(CryptoError::MissingRecipient {
                    fingerprint: fpr.clone(),
                });
            }
        }
        let listed: BTreeSet<String> = self
            .manifest_recipients
            .iter()
            .map(|f| key_id_of_fingerprint(f))
            .collect();
        for id in &report.recipients {
            if !listed.contains(id) {
                return Err(CryptoError::UnknownRecipient {
                    key_id: id.clone(),
                    expected: format!("the manifest's recipients {:?}", self.manifest_recipients),
                });
            }
        }
        self.digests.finish()
    }
}

/// The v4 key id: the last 8 bytes (16 hex digits) of the fingerprint.
pub(crate) fn key_id_of_fingerprint(fpr: &str) -> String {
    let f = fpr.to_ascii_uppercase();
    f[f.len().saturating_sub(16)..].to_string()
}
