//! Plumbing for the encryption and decryption pipelines: stages run on their
//! own threads and talk through small bounded channels, so memory stays at
//! a few chunks whatever the size, and dropping the output stream stops
//! every stage (each `send` then fails and the thread exits).

use std::io::{self, Read};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};

use bytes::Bytes;
use futures::StreamExt;

use super::CryptoError;
use crate::store::{ByteStream, byte_stream};

/// Chunks in flight between two stages.
pub(crate) const DEPTH: usize = 4;

/// What travels between stages.
pub(crate) enum Item<T> {
    Data(T),
    /// Clean end of input; carries the plaintext size where known.
    End(u64),
    Fail(CryptoError),
}

pub(crate) fn channel<T>() -> (SyncSender<Item<T>>, Receiver<Item<T>>) {
    sync_channel(DEPTH)
}

/// Pumps an async byte stream into a stage's channel (a Tokio task). The
/// clean end carries the number of bytes pumped.
pub(crate) fn pump(mut input: ByteStream) -> tokio::sync::mpsc::Receiver<Item<Bytes>> {
    let (tx, rx) = tokio::sync::mpsc::channel(DEPTH);
    tokio::spawn(async move {
        let mut pumped = 0u64;
        loop {
            let item = match input.next().await {
                Some(Ok(b)) if b.is_empty() => continue,
                Some(Ok(b)) => {
                    pumped += b.len() as u64;
                    Item::Data(b)
                }
                Some(Err(e)) => Item::Fail(CryptoError::from_io(e)),
                None => Item::End(pumped),
            };
            let stop = !matches!(item, Item::Data(_));
            if tx.send(item).await.is_err() || stop {
                return;
            }
        }
    });
    rx
}

/// Spawns a named stage thread.
pub(crate) fn spawn(name: &str, f: impl FnOnce() + Send + 'static) -> Result<(), CryptoError> {
    std::thread::Builder::new()
        .name(name.to_string())
        .spawn(f)
        .map(|_| ())
        .map_err(|e| CryptoError::Pipeline(format!("cannot start thread {name}: {e}")))
}

/// The error reported when a stage vanished without saying why.
pub(crate) fn vanished(stage: &str) -> CryptoError {
    CryptoError::Pipeline(format!("the {stage} stage stopped without finishing"))
}

/// Turns the last stage's channel into a [`ByteStream`]. `on_end` runs once
/// on a clean end (to publish a summary).
pub(crate) fn output_stream(
    rx: tokio::sync::mpsc::Receiver<Item<Bytes>>,
    on_end: impl FnOnce(u64) + Send + 'static,
) -> ByteStream {
    let state = (rx, Some(on_end), false);
    byte_stream(futures::stream::unfold(
        state,
        |(mut rx, mut on_end, done)| async move {
            if done {
                return None;
            }
            match rx.recv().await {
                Some(Item::Data(b)) => Some((Ok(b), (rx, on_end, false))),
                Some(Item::End(n)) => {
                    if let Some(f) = on_end.take() {
                        f(n);
                    }
                    None
                }
                Some(Item::Fail(e)) => Some((Err(e.into_io()), (rx, on_end, true))),
                None => Some((Err(vanished("last").into_io()), (rx, on_end, true))),
            }
        },
    ))
}

/// Passes `body` through, adding the length of every chunk to `counter`
/// (for a progress display; one relaxed atomic add per chunk, no copy).
pub fn counted(body: ByteStream, counter: Arc<AtomicU64>) -> ByteStream {
    byte_stream(body.map(move |item| {
        if let Ok(b) = &item {
            counter.fetch_add(b.len() as u64, Ordering::Relaxed);
        }
        item
    }))
}

/// Writes a byte stream to a blocking writer (a file) on a blocking
/// thread, avoiding a thread hop per write. Returns the bytes written.
pub async fn stream_to_writer<W>(mut stream: ByteStream, mut writer: W) -> io::Result<u64>
where
    W: io::Write + Send + 'static,
{
    let handle = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || -> io::Result<u64> {
        let mut n = 0u64;
        while let Some(chunk) = handle.block_on(stream.next()) {
            let chunk = chunk?;
            writer.write_all(&chunk)?;
            n += chunk.len() as u64;
        }
        writer.flush()?;
        Ok(n)
    })
    .await
    .map_err(io::Error::other)?
}

/// Reads a blocking reader (a file) on a blocking thread as a [`ByteStream`]
/// of `chunk`-sized pieces.
pub fn reader_stream<R>(mut reader: R, chunk: usize) -> ByteStream
where
    R: io::Read + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel::<io::Result<Bytes>>(DEPTH);
    tokio::task::spawn_blocking(move || {
        loop {
            // `read_to_end` into spare capacity: no zeroing of the buffer.
            let mut buf = Vec::with_capacity(chunk);
            match io::Read::by_ref(&mut reader)
                .take(chunk as u64)
                .read_to_end(&mut buf)
            {
                Ok(0) => return,
                Ok(n) => {
                    if tx.blocking_send(Ok(Bytes::from(buf))).is_err() || n < chunk {
                        return;
                    }
                }
                Err(e) => {
                    let _ = tx.blocking_send(Err(e));
                    return;
                }
            }
        }
    });
    byte_stream(futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    }))
}
