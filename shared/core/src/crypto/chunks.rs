//! Chunk digests: the signed manifest commits to the SHA-256 of every
//! [`CHUNK_SIZE`] piece of the ciphertext, so a reader authenticates each
//! piece **before** anything downstream of it (decryption, `pg_restore`, an
//! S3 part) sees a byte of it.
//!
//! The whole-object SHA-256 and CRC32C cannot do that: they are known only
//! after the last byte, and `pg_restore` has run the archive's SQL (and may
//! have committed) long before. The OpenPGP MDC cannot either: anyone with
//! the backup *public* key can produce a message with a valid MDC.
//!
//! ```text
//! object ──▶ ChunkGate (buffer one chunk, SHA-256, compare) ──▶ verified chunks
//! ```
//!
//! Memory: one chunk (8 MiB) buffered per reader, whatever the size.

use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use sha2::{Digest, Sha256};

use super::CryptoError;
use crate::manifest::CiphertextInfo;
use crate::store::{ByteStream, byte_stream};

/// Size of a digested chunk of ciphertext (the last one may be shorter).
/// 8 MiB: large enough for an S3 multipart part (at least 5 MiB), small
/// enough that a reader buffers little.
pub const CHUNK_SIZE: u64 = 8 << 20;

/// The size of the slices a chunk is held and handed on in.
const OUT_SLICE: usize = 1 << 20;

/// Chunk sizes a manifest may name: a reader buffers one chunk, so a huge
/// size would defeat bounded memory; a tiny one bloats the manifest.
pub const CHUNK_SIZE_RANGE: std::ops::RangeInclusive<u64> = (64 << 10)..=(64 << 20);

/// Computes chunk digests incrementally (the dump side).
#[derive(Debug, Clone)]
pub struct ChunkHasher {
    chunk_size: u64,
    current: Sha256,
    in_current: u64,
    done: Vec<String>,
}

impl ChunkHasher {
    /// A hasher for chunks of `chunk_size` bytes.
    pub fn new(chunk_size: u64) -> Self {
        assert!(chunk_size > 0, "chunk size is positive");
        ChunkHasher {
            chunk_size,
            current: Sha256::new(),
            in_current: 0,
            done: Vec::new(),
        }
    }

    /// Adds the next bytes.
    pub fn update(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            let room = (self.chunk_size - self.in_current) as usize;
            let n = room.min(data.len());
            self.current.update(&data[..n]);
            self.in_current += n as u64;
            data = &data[n..];
            if self.in_current == self.chunk_size {
                self.close_chunk();
            }
        }
    }

    fn close_chunk(&mut self) {
        let digest = std::mem::take(&mut self.current).finalize();
        self.done.push(hex::encode(digest));
        self.in_current = 0;
    }

    /// The digests of every chunk, the last (short) one included.
    pub fn finish(mut self) -> Vec<String> {
        if self.in_current > 0 {
            self.close_chunk();
        }
        self.done
    }
}

/// How many chunks an object of `size` bytes has.
pub fn chunk_count(size: u64, chunk_size: u64) -> u64 {
    size.div_ceil(chunk_size)
}

/// Checks that a manifest's chunk list is usable: a sane chunk size, one
/// well-formed digest per chunk of `size` bytes.
pub fn check_chunk_list(info: &CiphertextInfo) -> Result<(), String> {
    if !CHUNK_SIZE_RANGE.contains(&info.chunk_size) {
        return Err(format!(
            "chunk size {} is outside {}..={} bytes",
            info.chunk_size,
            CHUNK_SIZE_RANGE.start(),
            CHUNK_SIZE_RANGE.end()
        ));
    }
    let want = chunk_count(info.size, info.chunk_size);
    if info.chunks.len() as u64 != want {
        return Err(format!(
            "{} chunk digests for {} bytes in chunks of {} (expected {want})",
            info.chunks.len(),
            info.size,
            info.chunk_size
        ));
    }
    if let Some(i) = info
        .chunks
        .iter()
        .position(|d| d.len() != 64 || !d.bytes().all(|b| b.is_ascii_hexdigit()))
    {
        return Err(format!("chunk digest {i} is not 64 hex digits"));
    }
    Ok(())
}

/// Compares a stream's chunks with the manifest's chunk digests as it
/// passes, without holding any of it: fails at the end of the first chunk
/// that differs.
#[derive(Debug, Clone)]
pub struct ChunkChecker {
    hasher: ChunkHasher,
    expected: Vec<String>,
    size: u64,
    seen: u64,
    checked: usize,
}

impl ChunkChecker {
    /// A checker for the object `expected` describes. Fails when the
    /// manifest has no (usable) chunk digests.
    pub fn new(expected: &CiphertextInfo) -> Result<Self, CryptoError> {
        if expected.chunks.is_empty() {
            return Err(CryptoError::NoChunkDigests);
        }
        check_chunk_list(expected).map_err(CryptoError::ChunkList)?;
        Ok(ChunkChecker {
            hasher: ChunkHasher::new(expected.chunk_size),
            expected: expected.chunks.clone(),
            size: expected.size,
            seen: 0,
            checked: 0,
        })
    }

    /// A checker for the rest of the object from chunk `first` on: the
    /// bytes fed start at offset `first * chunk_size` (a resumed copy, whose
    /// earlier chunks were authenticated before).
    pub fn resume_at(expected: &CiphertextInfo, first: usize) -> Result<Self, CryptoError> {
        let mut c = Self::new(expected)?;
        let first = first.min(c.expected.len());
        c.hasher.done = c.expected[..first].to_vec();
        c.checked = first;
        c.seen = (first as u64 * expected.chunk_size).min(expected.size);
        Ok(c)
    }

    /// The next bytes. Every chunk they complete is compared (the last,
    /// short one as soon as the object's size is reached).
    pub fn feed(&mut self, data: &[u8]) -> Result<(), CryptoError> {
        self.seen += data.len() as u64;
        if self.seen > self.size {
            return Err(CryptoError::SizeMismatch {
                expected: self.size,
                actual: self.seen,
            });
        }
        self.hasher.update(data);
        if self.seen == self.size && self.hasher.in_current > 0 {
            self.hasher.close_chunk();
        }
        while self.checked < self.hasher.done.len() {
            let i = self.checked;
            if !self.hasher.done[i].eq_ignore_ascii_case(&self.expected[i]) {
                return Err(CryptoError::ChunkMismatch {
                    index: i,
                    offset: i as u64 * self.hasher.chunk_size,
                    count: self.expected.len(),
                });
            }
            self.checked += 1;
        }
        Ok(())
    }

    /// Chunks compared and found equal so far.
    pub fn verified(&self) -> usize {
        self.checked
    }

    /// The end of the object: fails when it is shorter than the manifest
    /// says.
    pub fn finish(self) -> Result<usize, CryptoError> {
        if self.seen != self.size {
            return Err(CryptoError::SizeMismatch {
                expected: self.size,
                actual: self.seen,
            });
        }
        Ok(self.checked)
    }
}

/// Buffers one chunk at a time and hands it on only once its digest
/// matched (a [`ChunkChecker`] with a buffer). The chunk is held as 1 MiB
/// slices, not one 8 MiB block: queues downstream count items, and large
/// blocks would push the allocator's mmap threshold up and the resident
/// memory with it.
#[derive(Debug)]
pub struct ChunkGate {
    checker: ChunkChecker,
    chunk_size: u64,
    size: u64,
    /// Full slices of the chunk being checked.
    held: Vec<Bytes>,
    /// The slice being filled.
    slice: BytesMut,
}

impl ChunkGate {
    /// A gate for the object `expected` describes (see [`ChunkChecker::new`]).
    pub fn new(expected: &CiphertextInfo) -> Result<Self, CryptoError> {
        Self::resume_at(expected, 0)
    }

    /// A gate for the object from chunk `first` on (see
    /// [`ChunkChecker::resume_at`]).
    pub fn resume_at(expected: &CiphertextInfo, first: usize) -> Result<Self, CryptoError> {
        Ok(ChunkGate {
            checker: ChunkChecker::resume_at(expected, first)?,
            chunk_size: expected.chunk_size,
            size: expected.size,
            held: Vec::new(),
            slice: BytesMut::new(),
        })
    }

    /// Takes the next bytes; adds the slices of the chunks they completed,
    /// each chunk authenticated, to `out`. An error is final: nothing of
    /// the failing chunk (or after it) is ever added.
    pub fn push(&mut self, mut data: &[u8], out: &mut Vec<Bytes>) -> Result<(), CryptoError> {
        while !data.is_empty() {
            let start = self.checker.seen;
            let chunk_end = ((start / self.chunk_size) + 1) * self.chunk_size;
            let want = chunk_end.min(self.size).saturating_sub(start);
            if want == 0 {
                // Past the end: the checker reports the size.
                return self.checker.feed(data);
            }
            let room = OUT_SLICE - self.slice.len();
            let n = (want as usize).min(data.len()).min(room);
            if self.slice.capacity() == 0 {
                self.slice.reserve(OUT_SLICE);
            }
            self.checker.feed(&data[..n])?;
            self.slice.extend_from_slice(&data[..n]);
            data = &data[n..];
            if self.slice.len() == OUT_SLICE || n as u64 == want {
                self.held.push(self.slice.split().freeze());
            }
            if n as u64 == want {
                out.append(&mut self.held);
            }
        }
        Ok(())
    }

    /// The end of the object: fails when it is shorter than the manifest
    /// says (every chunk already handed on was authenticated).
    pub fn finish(self) -> Result<(), CryptoError> {
        self.checker.finish().map(|_| ())
    }
}

/// Verified slices queued ahead of the reader: enough that the next chunk
/// downloads and hashes while the reader works, few enough to keep memory
/// low (the chunk being checked is held besides).
const AHEAD_SLICES: usize = 4;

/// `body`, passed on one authenticated chunk at a time (see the module
/// documentation), read ahead by one chunk on a task of its own. Fails
/// with [`CryptoError::NoChunkDigests`] when the manifest has none. Errors
/// travel as [`CryptoError`]s inside the stream's `io::Error`s; a body
/// error is passed on as it is. Chunks verified before a failure still
/// flow; the failure comes right after them, and nothing follows it. Must
/// be called within a Tokio runtime.
pub fn authenticated(
    body: ByteStream,
    expected: &CiphertextInfo,
) -> Result<ByteStream, CryptoError> {
    authenticated_from(body, expected, 0)
}

/// [`authenticated`] for a `body` that starts at chunk `first` (a ranged
/// read from offset `first * chunk_size`: a resumed copy).
pub fn authenticated_from(
    mut body: ByteStream,
    expected: &CiphertextInfo,
    first: usize,
) -> Result<ByteStream, CryptoError> {
    let mut gate = ChunkGate::resume_at(expected, first)?;
    let (tx, mut rx) = tokio::sync::mpsc::channel::<std::io::Result<Bytes>>(AHEAD_SLICES);
    tokio::spawn(async move {
        let failure = loop {
            match body.next().await {
                Some(Ok(data)) => {
                    let mut out = Vec::new();
                    let result = gate.push(&data, &mut out);
                    for slice in out {
                        if tx.send(Ok(slice)).await.is_err() {
                            return; // the reader is gone
                        }
                    }
                    if let Err(e) = result {
                        break e.into_io();
                    }
                }
                Some(Err(e)) => break e,
                None => match gate.finish() {
                    Ok(()) => return,
                    Err(e) => break e.into_io(),
                },
            }
        };
        let _ = tx.send(Err(failure)).await;
    });
    Ok(byte_stream(futures::stream::poll_fn(move |cx| {
        rx.poll_recv(cx)
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info_for(data: &[u8], chunk_size: u64) -> CiphertextInfo {
        let mut h = ChunkHasher::new(chunk_size);
        h.update(data);
        CiphertextInfo {
            object: "data".into(),
            size: data.len() as u64,
            chunk_size,
            chunks: h.finish(),
            ..CiphertextInfo::default()
        }
    }

    fn run(body: Vec<&'static [u8]>, info: &CiphertextInfo) -> (Vec<u8>, Option<CryptoError>) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async {
            let body = byte_stream(futures::stream::iter(
                body.into_iter().map(|b| Ok(Bytes::from_static(b))),
            ));
            let mut s = authenticated(body, info).unwrap();
            let mut got = Vec::new();
            while let Some(item) = s.next().await {
                match item {
                    Ok(b) => got.extend_from_slice(&b),
                    Err(e) => return (got, Some(CryptoError::from_io(e))),
                }
            }
            (got, None)
        })
    }

    const DATA: &[u8] = &[7u8; 200 << 10];

    #[test]
    fn hashes_split_at_chunk_boundaries_whatever_the_pieces() {
        let whole = info_for(DATA, 64 << 10);
        assert_eq!(whole.chunks.len(), 4);
        let mut h = ChunkHasher::new(64 << 10);
        for piece in DATA.chunks(1000) {
            h.update(piece);
        }
        assert_eq!(h.finish(), whole.chunks);
        assert_eq!(chunk_count(0, 8), 0);
        assert_eq!(chunk_count(16, 8), 2);
        assert_eq!(chunk_count(17, 8), 3);
    }

    #[test]
    fn intact_data_passes_whole() {
        let info = info_for(DATA, 64 << 10);
        let (got, err) = run(vec![&DATA[..1], &DATA[1..100_000], &DATA[100_000..]], &info);
        assert!(err.is_none(), "{err:?}");
        assert_eq!(got, DATA);
    }

    #[test]
    fn nothing_of_a_bad_chunk_flows_on() {
        let info = info_for(DATA, 64 << 10);
        let mut bad = DATA.to_vec();
        bad[70_000] ^= 1; // in chunk 1
        let bad: &'static [u8] = Box::leak(bad.into_boxed_slice());
        let (got, err) = run(vec![bad], &info);
        assert_eq!(got.len(), 64 << 10, "only chunk 0 flowed on");
        assert!(
            matches!(
                err,
                Some(CryptoError::ChunkMismatch {
                    index: 1,
                    offset: 65536,
                    count: 4
                })
            ),
            "{err:?}"
        );
    }

    #[test]
    fn truncated_and_extended_objects_fail() {
        let info = info_for(DATA, 64 << 10);
        let (got, err) = run(vec![&DATA[..DATA.len() - 1]], &info);
        assert_eq!(
            got.len(),
            3 * (64 << 10),
            "the short last chunk never flowed"
        );
        assert!(
            matches!(err, Some(CryptoError::SizeMismatch { .. })),
            "{err:?}"
        );
        // Every byte of the object flowed (all of it authenticated), the
        // extra byte did not.
        let (got, err) = run(vec![DATA, b"x"], &info);
        assert_eq!(got, DATA);
        assert!(
            matches!(err, Some(CryptoError::SizeMismatch { .. })),
            "{err:?}"
        );
    }

    #[test]
    fn manifests_without_or_with_broken_chunk_lists_are_refused() {
        let mut info = info_for(DATA, 64 << 10);
        assert!(matches!(
            ChunkGate::new(&CiphertextInfo::default()),
            Err(CryptoError::NoChunkDigests)
        ));
        info.chunks.pop();
        assert!(matches!(
            ChunkGate::new(&info),
            Err(CryptoError::ChunkList(_))
        ));
        let mut info = info_for(DATA, 64 << 10);
        info.chunk_size = 1 << 40;
        assert!(matches!(
            ChunkGate::new(&info),
            Err(CryptoError::ChunkList(_))
        ));
        let mut info = info_for(DATA, 64 << 10);
        info.chunks[2] = "zz".repeat(32);
        assert!(matches!(
            ChunkGate::new(&info),
            Err(CryptoError::ChunkList(_))
        ));
    }
}
