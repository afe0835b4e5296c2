//! Parallel compression for encryption: the literal data packet deflated
//! into an OpenPGP compressed data packet (algorithm 1, ZIP: raw deflate),
//! which gpg and every OpenPGP implementation read.
//!
//! ```text
//! plaintext ──▶ literal (literal data packet, cut in 1 MiB blocks)
//!   ──▶ zip-0 .. zip-N-1 (block i on worker i mod N, deflate at the configured level)
//!   ──▶ zip-join (in order; compressed data packet) ──▶ framer
//! ```
//!
//! `pg_dump -Fc` compresses with zlib on one core, and that one core sets
//! the pace of a dump; here the same work spreads over every core. Each
//! block is deflated on its own, primed with the previous block's last
//! 32 KiB as the dictionary (what one deflate stream would have seen), and
//! ended with a sync flush, so the blocks concatenate into one valid deflate
//! stream (the last one carries the final bit) of about the size a single
//! stream gives, as pigz does. Round-robin dispatch and collection keep the
//! order without a reordering buffer; memory stays at a few blocks per
//! worker.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};

use bytes::{Bytes, BytesMut};
use flate2::{Compress, Compression, FlushCompress, Status};

use super::CryptoError;
use super::packet::tag;
use super::pipeline::{self, Item};
use super::seipd::PartialPacket;

/// Input bytes per deflate block.
const BLOCK: usize = 1 << 20;
/// Deflate's window: the dictionary handed to the next block.
const WINDOW: usize = 32 * 1024;
/// OpenPGP compression algorithm 1: ZIP (RFC 1951 raw deflate).
const ZIP: u8 = 1;

/// One block of literal packet bytes for a worker.
struct Job {
    data: Bytes,
    /// The previous block's tail (empty for the first block).
    dictionary: Bytes,
    last: bool,
}

/// Workers: one per core, at least two (one would only add a hop).
fn workers() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get().clamp(2, 8))
}

/// Starts the compression stages on `input` (plaintext); returns the
/// compressed data packet's bytes, counted into `compressed` as they leave.
/// The clean end passes on `input`'s.
pub(crate) fn spawn(
    input: tokio::sync::mpsc::Receiver<Item<Bytes>>,
    level: u32,
    compressed: Arc<AtomicU64>,
) -> Result<tokio::sync::mpsc::Receiver<Item<Bytes>>, CryptoError> {
    let n = workers();
    let mut job_txs: Vec<SyncSender<Item<Job>>> = Vec::with_capacity(n);
    let mut done_rxs: Vec<Receiver<Item<Bytes>>> = Vec::with_capacity(n);
    for i in 0..n {
        // A hand-over, no queue: a worker holds one block at a time.
        let (job_tx, job_rx) = sync_channel::<Item<Job>>(0);
        let (done_tx, done_rx) = sync_channel::<Item<Bytes>>(1);
        pipeline::spawn(&format!("backstop-zip-{i}"), move || {
            deflate_worker(job_rx, done_tx, level)
        })?;
        job_txs.push(job_tx);
        done_rxs.push(done_rx);
    }

    // Literal packet framing, cut into blocks dealt round-robin.
    pipeline::spawn("backstop-literal", move || literal_stage(input, job_txs))?;

    // In order: worker 0, 1, .., N-1, 0, ... Control items (end, failure)
    // were dealt in turn too, so they arrive in sequence.
    let (out_tx, out_rx) = tokio::sync::mpsc::channel::<Item<Bytes>>(pipeline::DEPTH);
    pipeline::spawn("backstop-zip-join", move || {
        join_stage(done_rxs, out_tx, compressed)
    })?;
    Ok(out_rx)
}

/// Thread `backstop-literal`: the literal data packet around `input`, cut
/// into blocks dealt round-robin to the workers' `job_txs`.
fn literal_stage(
    mut input: tokio::sync::mpsc::Receiver<Item<Bytes>>,
    job_txs: Vec<SyncSender<Item<Job>>>,
) {
    let mut lit = PartialPacket::literal();
    let mut dealer = Dealer {
        txs: job_txs,
        turn: 0,
        block: BytesMut::with_capacity(BLOCK),
        dictionary: Bytes::new(),
        alive: true,
    };
    let control = loop {
        match input.blocking_recv() {
            Some(Item::Data(b)) => {
                lit.push(&b, &mut |piece| dealer.fill(piece));
                if !dealer.alive {
                    return;
                }
            }
            Some(Item::End(plaintext)) => {
                lit.finish(&mut |piece| dealer.block.extend_from_slice(piece));
                dealer.cut(true);
                break Item::End(plaintext);
            }
            Some(Item::Fail(e)) => break Item::Fail(e),
            None => break Item::Fail(pipeline::vanished("input")),
        }
    };
    dealer.deal(control);
}

/// Thread `backstop-zip-join`: collects the deflated blocks from the
/// workers' `done_rxs` in turn and frames them as the compressed data
/// packet, counting its bytes into `compressed`.
fn join_stage(
    done_rxs: Vec<Receiver<Item<Bytes>>>,
    out_tx: tokio::sync::mpsc::Sender<Item<Bytes>>,
    compressed: Arc<AtomicU64>,
) {
    let n = done_rxs.len();
    let mut packet = PartialPacket::new(tag::COMPRESSED, &[ZIP]);
    let mut buf = BytesMut::with_capacity(2 * BLOCK);
    let send = |buf: &mut BytesMut| {
        compressed.fetch_add(buf.len() as u64, Ordering::Relaxed);
        out_tx
            .blocking_send(Item::Data(buf.split().freeze()))
            .is_ok()
    };
    for turn in 0.. {
        match done_rxs[turn % n].recv() {
            Ok(Item::Data(d)) => {
                packet.push(&d, &mut |p| buf.extend_from_slice(p));
                if buf.len() >= BLOCK && !send(&mut buf) {
                    return;
                }
            }
            Ok(Item::End(plaintext)) => {
                packet.finish(&mut |p| buf.extend_from_slice(p));
                if send(&mut buf) {
                    let _ = out_tx.blocking_send(Item::End(plaintext));
                }
                return;
            }
            Ok(Item::Fail(e)) => {
                let _ = out_tx.blocking_send(Item::Fail(e));
                return;
            }
            Err(_) => {
                let _ = out_tx.blocking_send(Item::Fail(pipeline::vanished("compression")));
                return;
            }
        }
    }
}

/// Cuts the literal packet's bytes into blocks and deals them out.
struct Dealer {
    txs: Vec<SyncSender<Item<Job>>>,
    turn: usize,
    block: BytesMut,
    /// The tail of the block dealt last.
    dictionary: Bytes,
    /// False once a worker has gone (the output was dropped).
    alive: bool,
}

impl Dealer {
    fn deal(&mut self, item: Item<Job>) {
        let n = self.txs.len();
        self.alive &= self.txs[self.turn % n].send(item).is_ok();
        self.turn += 1;
    }

    fn fill(&mut self, mut piece: &[u8]) {
        while self.alive && !piece.is_empty() {
            let k = (BLOCK - self.block.len()).min(piece.len());
            self.block.extend_from_slice(&piece[..k]);
            piece = &piece[k..];
            if self.block.len() == BLOCK {
                self.cut(false);
            }
        }
    }

    fn cut(&mut self, last: bool) {
        let data = self.block.split().freeze();
        self.block.reserve(BLOCK);
        // A copy: a slice would keep the whole block alive.
        let tail = Bytes::copy_from_slice(&data[data.len().saturating_sub(WINDOW)..]);
        let dictionary = std::mem::replace(&mut self.dictionary, tail);
        self.deal(Item::Data(Job {
            data,
            dictionary,
            last,
        }));
    }
}

fn deflate_worker(jobs: Receiver<Item<Job>>, done: SyncSender<Item<Bytes>>, level: u32) {
    let mut z = Compress::new(Compression::new(level), false);
    for item in jobs.iter() {
        let out = match item {
            Item::Data(job) => match deflate_block(&mut z, &job) {
                Ok(b) => Item::Data(b),
                Err(e) => Item::Fail(e),
            },
            Item::End(n) => Item::End(n),
            Item::Fail(e) => Item::Fail(e),
        };
        if done.send(out).is_err() {
            return;
        }
    }
}

/// Deflates one block on a fresh state: sync-flushed (byte-aligned, not
/// final) unless it is the last block, which ends the deflate stream.
fn deflate_block(z: &mut Compress, job: &Job) -> Result<Bytes, CryptoError> {
    let fail = |e: flate2::CompressError| CryptoError::Pipeline(format!("deflate failed: {e}"));
    z.reset();
    if !job.dictionary.is_empty() {
        z.set_dictionary(&job.dictionary).map_err(fail)?;
    }
    let flush = if job.last {
        FlushCompress::Finish
    } else {
        FlushCompress::Sync
    };
    let mut out = Vec::with_capacity(job.data.len() / 2 + 1024);
    let mut input = &job.data[..];
    loop {
        if out.capacity() - out.len() < 1024 {
            out.reserve(out.capacity() / 2 + 1024);
        }
        let before = z.total_in();
        let status = z.compress_vec(input, &mut out, flush).map_err(fail)?;
        input = &input[(z.total_in() - before) as usize..];
        let room_left = out.capacity() > out.len();
        match status {
            Status::StreamEnd => break,
            // A sync flush is complete once deflate leaves output room.
            Status::Ok | Status::BufError if !job.last && input.is_empty() && room_left => break,
            Status::Ok | Status::BufError => {}
        }
    }
    Ok(Bytes::from(out))
}
