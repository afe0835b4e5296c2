//! Streaming decryption of a backup (restore, and the emergency path for
//! gpg-made messages).
//!
//! ```text
//! input ──pump──▶ opener (packet structure, session key, AES CFB)
//!       ──▶ unwrapper (prefix check, SHA-1/MDC, literal data) ──▶ plaintext
//! ```
//!
//! **The plaintext is untrusted until the stream ends cleanly.** The MDC
//! (integrity check) covers the whole message and can only be checked after
//! its last byte: a modified or truncated backup yields plaintext first and
//! then an error ([`CryptoError::IntegrityCheckFailed`], `Truncated`, ...).
//! Callers must stream into something they can discard (a new database that
//! is dropped on error, a temporary file that is deleted) and only use the
//! result when the stream returned `None` after its last chunk.

use std::sync::mpsc::{Receiver, SyncSender};

use bytes::{Bytes, BytesMut};
use pgp::composed::PlainSessionKey;
use pgp::packet::{PacketHeader, PublicKeyEncryptedSessionKey};
use pgp::types::Tag;
use zeroize::Zeroizing;

use super::inspect::{PacketInspector, PkeskInfo};
use super::keys::BackupSecretKey;
use super::pipeline::{self, Item};
use super::seipd::{CfbDecryptor, Opener, Unwrapper};
use super::{CryptoError, hex_upper};
use crate::store::ByteStream;

/// Decrypted chunks handed from the opener to the unwrapper.
const OPEN_CHUNK: usize = 1 << 20;

/// Finds our session key packet and decrypts the session key.
fn session_key(
    pkesks: &[PkeskInfo],
    key: &BackupSecretKey,
) -> Result<(u8, Zeroizing<Vec<u8>>), CryptoError> {
    let ours = key.decryption_keys();
    let mut last_err = None;
    for p in pkesks {
        for (id, fpr, k) in &ours {
            if p.key_id_bytes != *id && p.key_id_bytes != [0u8; 8] {
                continue;
            }
            if k.is_locked() {
                return Err(CryptoError::SecretKeyLocked {
                    fingerprint: key.fingerprint(),
                });
            }
            let fail = |reason: String| CryptoError::SessionKeyDecrypt {
                fingerprint: fpr.clone(),
                reason,
            };
            let header =
                PacketHeader::new_fixed(Tag::PublicKeyEncryptedSessionKey, p.body.len() as u32);
            let pkesk = PublicKeyEncryptedSessionKey::try_from_reader(header, &p.body[..])
                .map_err(|e| fail(e.to_string()))?;
            let values = pkesk.values().map_err(|e| fail(e.to_string()))?;
            match k.decrypt(values) {
                Ok(Ok(PlainSessionKey::V3_4 {
                    ref sym_alg,
                    ref key,
                })) => {
                    return Ok((u8::from(*sym_alg), Zeroizing::new(key.as_ref().to_vec())));
                }
                Ok(Ok(_)) => last_err = Some(fail("not a v3 session key".into())),
                Ok(Err(e)) | Err(e) => last_err = Some(fail(e.to_string())),
            }
        }
    }
    Err(
        last_err.unwrap_or_else(|| CryptoError::NoMatchingSecretKey {
            recipients: pkesks
                .iter()
                .map(|p| p.key_id.clone())
                .collect::<Vec<_>>()
                .join(", "),
            held: ours
                .iter()
                .map(|(id, _, _)| format!("{} (key {})", hex_upper(id), key.fingerprint()))
                .collect::<Vec<_>>()
                .join(", "),
        }),
    )
}

/// Decrypts a backup (or any SEIPD v1 message to `key`, possibly compressed
/// with ZIP/ZLIB) as a stream of plaintext.
///
/// Must be called within a Tokio runtime. Memory stays bounded whatever
/// the size. **Treat the output as untrusted until the stream has ended
/// without error**: integrity failures surface as the last item (see the
/// module documentation). Errors are [`CryptoError`]s inside `io::Error`
/// (recover them with [`CryptoError::from_io`]).
pub fn decrypt_stream(input: ByteStream, key: &BackupSecretKey) -> ByteStream {
    decrypt_stream_sized(input, key, None)
}

/// [`decrypt_stream`] of a backup whose signed manifest records its
/// plaintext size: more plaintext is refused before it is produced
/// ([`CryptoError::PlaintextTooLarge`], the decompression-bomb guard), less
/// fails at the end ([`CryptoError::PlaintextSizeMismatch`]).
pub fn decrypt_stream_sized(
    input: ByteStream,
    key: &BackupSecretKey,
    plaintext_size: Option<u64>,
) -> ByteStream {
    let key = key.clone();
    let input_rx = pipeline::pump(input);
    let (opened_tx, opened_rx) = pipeline::channel::<Bytes>();
    let (out_tx, out_rx) = tokio::sync::mpsc::channel::<Item<Bytes>>(pipeline::DEPTH);

    let open = move || open_stage(key, input_rx, opened_tx);
    let unwrap = move || unwrap_stage(opened_rx, out_tx, plaintext_size);

    let started = pipeline::spawn("backstop-open", open)
        .and_then(|()| pipeline::spawn("backstop-unwrap", unwrap));
    match started {
        Ok(()) => pipeline::output_stream(out_rx, |_| {}),
        Err(e) => crate::store::byte_stream(futures::stream::iter(vec![Err(e.into_io())])),
    }
}

/// Stage 1 (thread `backstop-open`): checks the packet structure, decrypts
/// the session key and CFB-decrypts the SEIPD body in [`OPEN_CHUNK`]s.
fn open_stage(
    key: BackupSecretKey,
    mut input_rx: tokio::sync::mpsc::Receiver<Item<Bytes>>,
    opened_tx: SyncSender<Item<Bytes>>,
) {
    let mut inspector = PacketInspector::any_recipient();
    let mut opener: Option<Opener> = None;
    let mut pending = BytesMut::new();
    let stopped = std::cell::Cell::new(false);
    let mut on_encrypted = |pkesks: &[PkeskInfo], mut data: &[u8]| -> Result<(), CryptoError> {
        let op = match opener.as_mut() {
            Some(op) => op,
            None => {
                let (alg, sk) = session_key(pkesks, &key)?;
                opener.insert(Opener::new(CfbDecryptor::new(alg, &sk)?))
            }
        };
        while !data.is_empty() {
            if pending.capacity() == 0 {
                pending.reserve(OPEN_CHUNK);
            }
            let n = (OPEN_CHUNK - pending.len()).min(data.len());
            let start = pending.len();
            pending.extend_from_slice(&data[..n]);
            op.open_in_place(&mut pending[start..]);
            data = &data[n..];
            if pending.len() == OPEN_CHUNK {
                let full = pending.split().freeze();
                if opened_tx.send(Item::Data(full)).is_err() {
                    stopped.set(true);
                    return Ok(());
                }
            }
        }
        Ok(())
    };
    let result = loop {
        match input_rx.blocking_recv() {
            Some(Item::Data(b)) => {
                if let Err(e) = inspector.feed_with(&b, &mut on_encrypted) {
                    break Err(e);
                }
                if stopped.get() {
                    return;
                }
            }
            Some(Item::End(_)) => break inspector.finish().map(|_| ()),
            Some(Item::Fail(e)) => break Err(e),
            None => break Err(pipeline::vanished("input")),
        }
    };
    let item = match result {
        Ok(()) => {
            if !pending.is_empty()
                && opened_tx
                    .send(Item::Data(pending.split().freeze()))
                    .is_err()
            {
                return;
            }
            Item::End(0)
        }
        Err(e) => Item::Fail(e),
    };
    let _ = opened_tx.send(item);
}

/// Stage 2 (thread `backstop-unwrap`): prefix check, SHA-1/MDC and the
/// inner packets; plaintext goes to `out_tx`.
fn unwrap_stage(
    opened_rx: Receiver<Item<Bytes>>,
    out_tx: tokio::sync::mpsc::Sender<Item<Bytes>>,
    plaintext_size: Option<u64>,
) {
    let mut unwrapper = Unwrapper::with_limit(plaintext_size.unwrap_or(u64::MAX));
    let gone = std::cell::Cell::new(false);
    let produced = std::cell::Cell::new(0u64);
    let mut out = |b: Bytes| {
        produced.set(produced.get() + b.len() as u64);
        if !gone.get() && out_tx.blocking_send(Item::Data(b)).is_err() {
            gone.set(true);
        }
    };
    let mut result = Err(pipeline::vanished("decryption"));
    for item in opened_rx.iter() {
        match item {
            Item::Data(b) => {
                if let Err(e) = unwrapper.push(b, &mut out) {
                    result = Err(e);
                    break;
                }
                if gone.get() {
                    return;
                }
            }
            Item::End(_) => {
                result = std::mem::take(&mut unwrapper).finish(&mut out).map(|_| ());
                if let (Ok(()), Some(expected)) = (&result, plaintext_size)
                    && produced.get() != expected
                {
                    result = Err(CryptoError::PlaintextSizeMismatch {
                        expected,
                        actual: produced.get(),
                    });
                }
                break;
            }
            Item::Fail(e) => {
                result = Err(e);
                break;
            }
        }
    }
    let _ = out_tx.blocking_send(match result {
        Ok(()) => Item::End(0),
        Err(e) => Item::Fail(e),
    });
}

/// Decrypts `input` into `writer` (on a blocking thread), capped at
/// `plaintext_size` when the manifest is known (see
/// [`decrypt_stream_sized`]). Returns the plaintext size. On error, whatever was written must be discarded.
pub async fn decrypt_to_writer<W>(
    input: ByteStream,
    key: &BackupSecretKey,
    plaintext_size: Option<u64>,
    writer: W,
) -> Result<u64, CryptoError>
where
    W: std::io::Write + Send + 'static,
{
    use futures::StreamExt;
    let mut stream = decrypt_stream_sized(input, key, plaintext_size);
    let mut writer = writer;
    let handle = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || -> Result<u64, CryptoError> {
        let mut n = 0u64;
        while let Some(chunk) = handle.block_on(stream.next()) {
            let chunk = chunk.map_err(CryptoError::from_io)?;
            writer.write_all(&chunk).map_err(CryptoError::Output)?;
            n += chunk.len() as u64;
        }
        writer.flush().map_err(CryptoError::Output)?;
        Ok(n)
    })
    .await
    .map_err(|e| CryptoError::Pipeline(e.to_string()))?
}
