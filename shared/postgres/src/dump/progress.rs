//! What a dump tells a progress display: byte counters moved by the
//! pipeline's stages themselves (one relaxed atomic add per chunk, no
//! copy), and the two moments the display needs, start and end.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// Bytes that passed each stage of the data upload so far.
#[derive(Debug, Clone, Default)]
pub struct DumpCounters {
    /// `pg_dump`'s output read (the plaintext).
    pub read: Arc<AtomicU64>,
    /// Out of the compression (0 when the job does not compress).
    pub compressed: Arc<AtomicU64>,
    /// Ciphertext taken by the upload. The store's client sends what it
    /// takes, keeping the unacknowledged part to resend, so this runs ahead
    /// of what the store has confirmed by at most that part.
    pub uploaded: Arc<AtomicU64>,
}

/// The counters' values at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DumpBytes {
    pub read: u64,
    pub compressed: u64,
    pub uploaded: u64,
}

impl DumpCounters {
    pub fn get(&self) -> DumpBytes {
        DumpBytes {
            read: self.read.load(Ordering::Relaxed),
            compressed: self.compressed.load(Ordering::Relaxed),
            uploaded: self.uploaded.load(Ordering::Relaxed),
        }
    }
}

/// Receives a dump's progress; every method has a no-op default.
pub trait DumpProgress: Send + Sync {
    /// The data upload of `backup_id` starts; `counters` move from now on.
    /// `estimate` is the expected size of `pg_dump`'s output (the user
    /// tables' on-disk size, large objects included), when it could be read.
    fn start(&self, _backup_id: &str, _estimate: Option<u64>, _counters: DumpCounters) {}
    /// The data upload ended, successfully or not; called before the job
    /// logs its outcome, so a display can end its line first.
    fn finish(&self) {}
}

/// Reports nothing.
pub struct NoDumpProgress;
impl DumpProgress for NoDumpProgress {}
