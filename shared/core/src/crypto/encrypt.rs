//! Streaming encryption of a backup.
//!
//! ```text
//! input ──pump──▶ framer (literal packet, SHA-1/MDC) ──▶ sealer (AES-256 CFB)
//!       ──▶ digester (SHA-256, CRC32C, size) ──▶ output ByteStream
//! ```
//!
//! With [`Compression::Zip`], the literal packet is deflated on every core
//! first (the `compress` module) and the framer takes the compressed packet.
//!
//! Each stage runs on its own thread with `pipeline::DEPTH` chunks
//! of 1 MiB in flight, so memory is bounded (about 20 MiB at most) whatever
//! the input size, and the work spreads over the available cores.

use std::sync::atomic::AtomicU64;
use std::sync::mpsc::{Receiver, SyncSender};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use pgp::composed::RawSessionKey;
use pgp::crypto::sym::SymmetricKeyAlgorithm;
use pgp::packet::{PacketTrait, PublicKeyEncryptedSessionKey};
use pgp::types::KeyDetails;
use rand08::RngCore;
use tokio::io::AsyncRead;
use zeroize::Zeroizing;

use super::chunks::{CHUNK_SIZE, ChunkHasher};
use super::inspect::{DigestState, Digests};
use super::keys::RecipientKey;
use super::pipeline::{self, Item};
use super::seipd::{BodyChunk, Framer, Sealer};
use super::{CryptoError, hex_upper};
use crate::manifest::CiphertextInfo;
use crate::store::ByteStream;

/// What the dump job records in the manifest, known when the stream ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncryptSummary {
    /// Size, SHA-256 and CRC32C of the ciphertext (exactly the bytes the
    /// output stream yielded).
    pub ciphertext: Digests,
    /// Bytes of input encrypted (before any compression): the dump's size.
    pub plaintext_size: u64,
    /// Fingerprints of the encryption subkeys the session key was encrypted
    /// to (the manifest's `recipients`).
    pub recipients: Vec<String>,
    /// SHA-256 of every [`CHUNK_SIZE`] piece of the ciphertext.
    pub chunks: Vec<String>,
}

impl EncryptSummary {
    /// The manifest's description of the data object `object` holding this
    /// ciphertext: size, digests and chunk digests.
    pub fn ciphertext_info(&self, object: &str) -> CiphertextInfo {
        CiphertextInfo {
            object: object.to_string(),
            size: self.ciphertext.size,
            sha256: self.ciphertext.sha256.clone(),
            crc32c: self.ciphertext.crc32c,
            chunk_size: CHUNK_SIZE,
            chunks: self.chunks.clone(),
        }
    }
}

/// Filled in when the output stream has yielded its last byte.
#[derive(Debug, Clone, Default)]
pub struct SummaryHandle(Arc<Mutex<Option<EncryptSummary>>>);

impl SummaryHandle {
    /// `None` until the output stream ended cleanly (and forever if it
    /// failed or was dropped early).
    pub fn get(&self) -> Option<EncryptSummary> {
        self.0.lock().expect("summary lock").clone()
    }

    fn set(&self, s: EncryptSummary) {
        *self.0.lock().expect("summary lock") = Some(s);
    }
}

/// An encrypted backup as a stream, and its summary once it has ended.
pub struct EncryptedStream {
    /// Binary OpenPGP message; hand it to `ObjectStore::put`. An input error
    /// ends it with an error (the upload must then fail).
    pub stream: ByteStream,
    /// Yields the [`EncryptSummary`] once `stream` has ended cleanly.
    pub summary: SummaryHandle,
    /// Bytes out of the compression so far (the compressed data packet;
    /// stays 0 with [`Compression::None`]), for a progress display.
    pub compressed: Arc<AtomicU64>,
}

impl std::fmt::Debug for EncryptedStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EncryptedStream")
            .field("summary", &self.summary)
            .finish_non_exhaustive()
    }
}

/// The session key packets (one per recipient) and their fingerprints.
fn session_key_packets(
    recipients: &[RecipientKey],
    session_key: &[u8; 32],
) -> Result<(Vec<u8>, Vec<String>), CryptoError> {
    if recipients.is_empty() {
        return Err(CryptoError::NoRecipientsConfigured);
    }
    let raw = RawSessionKey::from(&session_key[..]);
    let mut out = Vec::new();
    let mut fprs: Vec<String> = Vec::new();
    for r in recipients {
        let sub = r.encryption_subkey()?;
        let fpr = hex_upper(sub.key.fingerprint().as_bytes());
        if fprs.contains(&fpr) {
            continue;
        }
        let err = |e: pgp::errors::Error| CryptoError::SessionKeyEncrypt {
            fingerprint: fpr.clone(),
            reason: e.to_string(),
        };
        let pkesk = PublicKeyEncryptedSessionKey::from_session_key_v3(
            rand08::rngs::OsRng,
            &raw,
            SymmetricKeyAlgorithm::AES256,
            sub,
        )
        .map_err(err)?;
        pkesk.to_writer_with_header(&mut out).map_err(err)?;
        fprs.push(fpr);
    }
    Ok((out, fprs))
}

/// What is inside the encryption.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// A literal data packet: for input that is compressed already.
    None,
    /// A ZIP compressed data packet around it, deflated on every core at
    /// this level (1 fastest to 9 smallest; see the `compress` module).
    Zip(u32),
}

impl Compression {
    /// The default deflate level of the dump (see README, "Compression
    /// level", for the measurements behind it).
    pub const DEFAULT_LEVEL: u32 = 3;

    /// `level` 0 is no compression, 1 to 9 a ZIP packet at that level;
    /// `None` for anything else.
    pub fn level(level: u32) -> Option<Self> {
        match level {
            0 => Some(Compression::None),
            1..=9 => Some(Compression::Zip(level)),
            _ => None,
        }
    }
}

/// Encrypts `input` to `recipients` (SEIPD v1, AES-256, MDC, no compression).
///
/// Must be called within a Tokio runtime. The output is produced as the
/// input is consumed; memory stays bounded whatever the size. When the
/// output stream has ended, `summary.get()` returns the ciphertext digests
/// and the plaintext size.
pub fn encrypt_stream(
    input: ByteStream,
    recipients: &[RecipientKey],
) -> Result<EncryptedStream, CryptoError> {
    encrypt_stream_with(input, recipients, Compression::None)
}

/// [`encrypt_stream`], compressing first when asked.
pub fn encrypt_stream_with(
    input: ByteStream,
    recipients: &[RecipientKey],
    compression: Compression,
) -> Result<EncryptedStream, CryptoError> {
    let mut session_key = Zeroizing::new([0u8; 32]);
    rand08::rngs::OsRng.fill_bytes(&mut session_key[..]);
    let mut prefix = [0u8; 16];
    rand08::rngs::OsRng.fill_bytes(&mut prefix);
    let (header, fprs) = session_key_packets(recipients, &session_key)?;

    // The framer's input: plaintext to wrap in a literal packet, or the
    // compressed packet around it. Either ends with the plaintext size.
    let compressed = Arc::new(AtomicU64::new(0));
    let (input_rx, framer) = match compression {
        Compression::None => (pipeline::pump(input), Framer::new(prefix)),
        Compression::Zip(level) => (
            super::compress::spawn(pipeline::pump(input), level, compressed.clone())?,
            Framer::for_packets(prefix),
        ),
    };
    let (framed_tx, framed_rx) = pipeline::channel::<BodyChunk>();
    let (sealed_tx, sealed_rx) = pipeline::channel::<Bytes>();
    let (out_tx, out_rx) = tokio::sync::mpsc::channel::<Item<Bytes>>(pipeline::DEPTH);

    // Stage 1: framing and SHA-1.
    pipeline::spawn("backstop-frame", move || {
        frame_stage(input_rx, framer, framed_tx)
    })?;

    // Stage 2: AES-256 CFB.
    let key = session_key.clone();
    pipeline::spawn("backstop-seal", move || {
        seal_stage(key, header, framed_rx, sealed_tx)
    })?;

    // Stage 3: ciphertext digests.
    let summary = SummaryHandle::default();
    let (digest_tx, digest_rx) = std::sync::mpsc::sync_channel::<(Digests, Vec<String>)>(1);
    pipeline::spawn("backstop-digest", move || {
        digest_stage(sealed_rx, digest_tx, out_tx)
    })?;

    let handle = summary.clone();
    let stream = pipeline::output_stream(out_rx, move |plaintext_size| {
        if let Ok((ciphertext, chunks)) = digest_rx.try_recv() {
            handle.set(EncryptSummary {
                ciphertext,
                plaintext_size,
                recipients: fprs,
                chunks,
            });
        }
    });
    Ok(EncryptedStream {
        stream,
        summary,
        compressed,
    })
}

/// Stage 1 (thread `backstop-frame`): SEIPD framing and SHA-1.
fn frame_stage(
    mut input_rx: tokio::sync::mpsc::Receiver<Item<Bytes>>,
    mut framer: Framer,
    framed_tx: SyncSender<Item<BodyChunk>>,
) {
    let stopped = std::cell::Cell::new(false);
    let mut emit = |c: BodyChunk| {
        if !stopped.get() && framed_tx.send(Item::Data(c)).is_err() {
            stopped.set(true);
        }
    };
    loop {
        match input_rx.blocking_recv() {
            Some(Item::Data(b)) => framer.push(&b, &mut emit),
            Some(Item::End(plaintext)) => {
                framer.finish(&mut emit);
                let _ = framed_tx.send(Item::End(plaintext));
                return;
            }
            Some(Item::Fail(e)) => {
                let _ = framed_tx.send(Item::Fail(e));
                return;
            }
            None => {
                let _ = framed_tx.send(Item::Fail(pipeline::vanished("input")));
                return;
            }
        }
        if stopped.get() {
            return;
        }
    }
}

/// Stage 2 (thread `backstop-seal`): the session key packets (`header`),
/// then the SEIPD body encrypted with AES-256 CFB.
fn seal_stage(
    key: Zeroizing<[u8; 32]>,
    header: Vec<u8>,
    framed_rx: Receiver<Item<BodyChunk>>,
    sealed_tx: SyncSender<Item<Bytes>>,
) {
    let mut sealer = Sealer::new(&key);
    drop(key);
    if sealed_tx.send(Item::Data(Bytes::from(header))).is_err() {
        return;
    }
    for item in framed_rx.iter() {
        let out = match item {
            Item::Data(c) => Item::Data(sealer.seal(c)),
            Item::End(n) => Item::End(n),
            Item::Fail(e) => Item::Fail(e),
        };
        let stop = !matches!(out, Item::Data(_));
        if sealed_tx.send(out).is_err() || stop {
            return;
        }
    }
    let _ = sealed_tx.send(Item::Fail(pipeline::vanished("framing")));
}

/// Stage 3 (thread `backstop-digest`): size, SHA-256, CRC32C and chunk
/// digests of the ciphertext on its way out; they go to `digest_tx` at the
/// end.
fn digest_stage(
    sealed_rx: Receiver<Item<Bytes>>,
    digest_tx: SyncSender<(Digests, Vec<String>)>,
    out_tx: tokio::sync::mpsc::Sender<Item<Bytes>>,
) {
    let mut d = DigestState::new();
    let mut chunks = ChunkHasher::new(CHUNK_SIZE);
    for item in sealed_rx.iter() {
        let stop = !matches!(item, Item::Data(_));
        match &item {
            Item::Data(b) => {
                d.update(b);
                chunks.update(b);
            }
            Item::End(_) => {
                let digests = std::mem::take(&mut d).finish();
                let chunks = std::mem::replace(&mut chunks, ChunkHasher::new(CHUNK_SIZE));
                let _ = digest_tx.send((digests, chunks.finish()));
            }
            Item::Fail(_) => {}
        }
        if out_tx.blocking_send(item).is_err() || stop {
            return;
        }
    }
    let _ = out_tx.blocking_send(Item::Fail(pipeline::vanished("encryption")));
}

/// [`encrypt_stream`] over an `AsyncRead` (read in 1 MiB pieces).
pub fn encrypt_reader<R>(
    input: R,
    recipients: &[RecipientKey],
) -> Result<EncryptedStream, CryptoError>
where
    R: AsyncRead + Send + 'static,
{
    let stream = tokio_util::io::ReaderStream::with_capacity(input, 1 << 20);
    encrypt_stream(crate::store::byte_stream(stream), recipients)
}

#[cfg(test)]
mod tests {
    use futures::TryStreamExt;

    use super::*;
    use crate::crypto::keys::tests::test_keys;
    use crate::store::{byte_stream, bytes_stream};

    fn recipient(k: &crate::crypto::GeneratedKey) -> RecipientKey {
        RecipientKey::from_armored(&k.public_armored).unwrap()
    }

    #[tokio::test]
    async fn summary_matches_the_bytes_yielded() {
        let k = test_keys();
        let enc =
            encrypt_stream(bytes_stream(vec![5u8; 100_000]), &[recipient(&k.backup)]).unwrap();
        assert!(enc.summary.get().is_none());
        let out: Vec<Bytes> = enc.stream.try_collect().await.unwrap();
        let all = out.concat();
        let s = enc.summary.get().expect("summary after the end");
        assert_eq!(s.plaintext_size, 100_000);
        assert_eq!(s.ciphertext.size, all.len() as u64);
        let mut d = DigestState::new();
        d.update(&all);
        assert_eq!(d.finish(), s.ciphertext);
        assert_eq!(
            s.recipients,
            vec![recipient(&k.backup).encryption_fingerprint().unwrap()]
        );
    }

    #[tokio::test]
    async fn the_compressed_counter_counts_the_compressed_packet() {
        let k = test_keys();
        let plain = bytes_stream(vec![7u8; 3 << 20]);
        let enc = encrypt_stream_with(plain, &[recipient(&k.backup)], Compression::Zip(1)).unwrap();
        let counter = enc.compressed.clone();
        let out: Vec<Bytes> = enc.stream.try_collect().await.unwrap();
        let ciphertext = out.concat().len() as u64;
        let compressed = counter.load(std::sync::atomic::Ordering::Relaxed);
        // The compressed packet is all the framer encrypts: the ciphertext
        // adds only the session key packet and the SEIPD framing and MDC.
        assert!(
            compressed > 0 && compressed < ciphertext,
            "{compressed} {ciphertext}"
        );
        assert!(ciphertext - compressed < 1024, "{compressed} {ciphertext}");

        let plain = bytes_stream(vec![7u8; 1000]);
        let enc = encrypt_stream(plain, &[recipient(&k.backup)]).unwrap();
        let _: Vec<Bytes> = enc.stream.try_collect().await.unwrap();
        assert_eq!(enc.compressed.load(std::sync::atomic::Ordering::Relaxed), 0);
    }

    #[tokio::test]
    async fn input_errors_end_the_output_with_an_error() {
        let k = test_keys();
        let input = byte_stream(futures::stream::iter(vec![
            Ok(Bytes::from(vec![1u8; 10])),
            Err(std::io::Error::new(
                std::io::ErrorKind::ConnectionReset,
                "pg_dump died",
            )),
        ]));
        let enc = encrypt_stream(input, &[recipient(&k.backup)]).unwrap();
        let r: Result<Vec<Bytes>, _> = enc.stream.try_collect().await;
        let e = r.unwrap_err();
        assert!(matches!(CryptoError::from_io(e), CryptoError::Input(_)));
        assert!(enc.summary.get().is_none());
    }

    #[tokio::test]
    async fn no_recipients_is_refused() {
        assert!(matches!(
            encrypt_stream(bytes_stream(vec![1u8]), &[]),
            Err(CryptoError::NoRecipientsConfigured)
        ));
    }
}
