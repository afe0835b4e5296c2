//! Shared helpers for the integration tests. The tests run inside the local
//! stack (`tests/stack/stack.sh run -- ...`), which exports the standard
//! endpoint variables; clients are built exactly as production builds them.

use std::io;

use backstop_cloud::gcs::GcsStore;
use backstop_cloud::s3::S3Store;
use backstop_core::config::Env;
use backstop_core::store::{ByteStream, byte_stream};
use bytes::Bytes;
use sha2::{Digest, Sha256};

/// The process environment, after checking that the local stack is up.
pub fn stack_env() -> Env {
    let env = Env::from_process();
    assert!(
        env.optional("BACKSTOP_STACK").is_some(),
        "integration tests need the local stack: run them with `tests/run-all` or `tests/stack/stack.sh run -- cargo test`"
    );
    env
}

pub async fn gcs() -> GcsStore {
    GcsStore::from_env(&stack_env(), "BACKSTOP_GCS_BUCKET")
        .await
        .expect("GCS client from the stack's environment")
}

pub async fn s3() -> S3Store {
    S3Store::from_env(&stack_env(), "BACKSTOP_S3_BUCKET")
        .await
        .expect("S3 client from the stack's environment")
}

/// A prefix no other test (or earlier run against the same stack) uses.
pub fn unique_prefix(test: &str) -> String {
    format!("it-{test}-{:016x}/", rand::random::<u64>())
}

/// Deterministic pseudo-random bytes in fixed-size chunks (xorshift64*):
/// fast, reproducible filler that does not compress.
struct Filler {
    state: u64,
    remaining: u64,
    chunk: usize,
}

impl Iterator for Filler {
    type Item = Bytes;

    fn next(&mut self) -> Option<Bytes> {
        if self.remaining == 0 {
            return None;
        }
        let n = self.remaining.min(self.chunk as u64) as usize;
        let mut buf = Vec::with_capacity(n + 8);
        while buf.len() < n {
            self.state ^= self.state >> 12;
            self.state ^= self.state << 25;
            self.state ^= self.state >> 27;
            buf.extend_from_slice(&self.state.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
        }
        buf.truncate(n);
        self.remaining -= n as u64;
        Some(Bytes::from(buf))
    }
}

fn filler(len: u64, chunk: usize, seed: u64) -> Filler {
    Filler {
        state: seed | 1,
        remaining: len,
        chunk,
    }
}

/// `len` pseudo-random bytes produced in `chunk`-sized pieces, so large
/// payloads never sit in memory, and the SHA-256 a consumer should see.
pub fn pseudo_random_stream(len: u64, chunk: usize, seed: u64) -> (ByteStream, String) {
    let mut hasher = Sha256::new();
    for c in filler(len, chunk, seed) {
        hasher.update(&c);
    }
    let stream = futures::stream::iter(filler(len, chunk, seed).map(Ok::<_, io::Error>));
    (byte_stream(stream), hex::encode(hasher.finalize()))
}

/// Reads a stream to the end, returning its size and SHA-256.
pub async fn drain_sha256(mut body: ByteStream) -> io::Result<(u64, String)> {
    use futures::StreamExt;
    let mut hasher = Sha256::new();
    let mut size = 0u64;
    while let Some(chunk) = body.next().await {
        let chunk = chunk?;
        size += chunk.len() as u64;
        hasher.update(&chunk);
    }
    Ok((size, hex::encode(hasher.finalize())))
}
pub mod backups;
pub mod counting;
pub mod lambda_api;
pub mod oidc;
pub mod pubsub;
