//! The store contract suite: every check written once, generic over
//! [`ObjectStore`], run on every adapter: on [`MemStore`](super::MemStore)
//! in this crate's unit tests, on GCS (fake-gcs-server) and S3 (moto) in
//! `tests/tests/store_contract.rs`, as arrow-rs `object_store` does with its
//! `integration` module. Behind the `testing` feature.
//!
//! Each check panics (it is a test) when the store breaks the contract.

use std::io;

use bytes::Bytes;
use sha2::{Digest, Sha256};

use super::{ByteStream, ObjectStore, ObjectStoreExt, PutOptions, StoreError, byte_stream};
use crate::error::Classify;

/// A fresh key prefix, so that checks never see each other's objects.
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
            buf.extend_from_slice(&self.state.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes());
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
        chunk: chunk.max(1),
    }
}

/// `len` pseudo-random bytes in `chunk`-sized pieces, and their SHA-256 (hex).
pub fn pseudo_random_stream(len: u64, chunk: usize, seed: u64) -> (ByteStream, String) {
    let mut hasher = Sha256::new();
    for c in filler(len, chunk, seed) {
        hasher.update(&c);
    }
    let stream = futures::stream::iter(filler(len, chunk, seed).map(Ok::<_, io::Error>));
    (byte_stream(stream), hex::encode(hasher.finalize()))
}

/// Reads a stream to the end, returning its size and SHA-256 (hex).
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

const MIB: u64 = 1024 * 1024;

/// A 100 MiB streamed put reads back byte for byte.
pub async fn streaming_put_then_get_100mib(store: &dyn ObjectStore) {
    let key = format!("{}big.bin", unique_prefix("big"));
    let (body, expected) = pseudo_random_stream(100 * MIB, 256 * 1024, 42);
    let meta = store.put(&key, body, PutOptions::default()).await.unwrap();
    assert_eq!(meta.size, 100 * MIB);
    let got = store.get(&key).await.unwrap();
    assert_eq!(got.meta.size, 100 * MIB);
    let (size, sha) = drain_sha256(got.body).await.unwrap();
    assert_eq!(size, 100 * MIB);
    assert_eq!(sha, expected, "bytes read back differ from bytes written");
    store.delete(&key).await.unwrap();
}

/// Content type and user metadata survive a put; keys come back lower-case.
pub async fn metadata_round_trips(store: &dyn ObjectStore) {
    let key = format!("{}meta.json", unique_prefix("meta"));
    let opts = PutOptions::default()
        .with_content_type("application/json")
        .with_metadata("backstop-sha256", "abc123")
        .with_metadata("Backstop-Kind", "manifest");
    store
        .put_bytes(&key, Bytes::from_static(b"{}"), opts)
        .await
        .unwrap();
    let head = store.head(&key).await.unwrap();
    assert_eq!(head.size, 2);
    assert_eq!(
        head.metadata.get("backstop-sha256").map(String::as_str),
        Some("abc123")
    );
    assert_eq!(
        head.metadata.get("backstop-kind").map(String::as_str),
        Some("manifest")
    );
    assert_eq!(
        store.get_bytes(&key, 1024).await.unwrap(),
        Bytes::from_static(b"{}")
    );
}

/// A create-only put of an existing key fails with `PreconditionFailed` and leaves the object as it was; a plain put replaces it.
pub async fn conditional_create_refuses_existing(store: &dyn ObjectStore) {
    let key = format!("{}once", unique_prefix("create"));
    store
        .put_bytes(&key, Bytes::from_static(b"first"), PutOptions::create())
        .await
        .unwrap();
    let second = store
        .put_bytes(&key, Bytes::from_static(b"second"), PutOptions::create())
        .await;
    assert!(
        matches!(second, Err(StoreError::PreconditionFailed { .. })),
        "expected PreconditionFailed, got {second:?}"
    );
    assert_eq!(
        store.get_bytes(&key, 64).await.unwrap(),
        Bytes::from_static(b"first")
    );
    // An unconditional put still replaces it.
    store
        .put_bytes(&key, Bytes::from_static(b"third"), PutOptions::default())
        .await
        .unwrap();
    assert_eq!(
        store.get_bytes(&key, 64).await.unwrap(),
        Bytes::from_static(b"third")
    );
}

/// As [`conditional_create_refuses_existing`], for an object large enough for a multipart (S3) or resumable (GCS) upload.
pub async fn conditional_create_of_multipart_object_refuses_existing(store: &dyn ObjectStore) {
    let key = format!("{}big-once", unique_prefix("create-big"));
    let (body, _) = pseudo_random_stream(20 * MIB, MIB as usize, 7);
    store.put(&key, body, PutOptions::create()).await.unwrap();
    let (body, _) = pseudo_random_stream(20 * MIB, MIB as usize, 8);
    let second = store.put(&key, body, PutOptions::create()).await;
    assert!(
        matches!(second, Err(StoreError::PreconditionFailed { .. })),
        "expected PreconditionFailed, got {second:?}"
    );
}

/// `head` reports the CRC32C of the whole object, as the store computed
/// it on upload, for a one-request object and for one large enough for a
/// multipart (S3) or resumable (GCS) upload: the replicator decides
/// "already copied" from it, never from user metadata.
pub async fn whole_object_crc32c_is_reported(store: &dyn ObjectStore) {
    use futures::StreamExt;
    for (name, len) in [("small", 1000u64), ("large", 20 * MIB)] {
        let key = format!("{}crc-{name}", unique_prefix("crc"));
        let (body, _) = pseudo_random_stream(len, MIB as usize, len);
        store.put(&key, body, PutOptions::create()).await.unwrap();
        let mut crc = 0u32;
        let mut body = store.get(&key).await.unwrap().body;
        while let Some(chunk) = body.next().await {
            crc = crc32c::crc32c_append(crc, &chunk.unwrap());
        }
        let head = store.head(&key).await.unwrap();
        assert_eq!(head.size, len, "{name}");
        assert_eq!(
            head.crc32c,
            Some(crc),
            "{name} object ({len} bytes): head must report the whole object's CRC32C"
        );
    }
}

/// Listing follows pages and stays within its prefix. The store must list three objects per page.
pub async fn list_follows_pages_within_prefix(store: &dyn ObjectStore) {
    let prefix = unique_prefix("list");
    let mut expected = Vec::new();
    for i in 0..7 {
        let key = format!("{prefix}obj-{i:02}");
        store
            .put_bytes(&key, Bytes::from(vec![b'x'; i]), PutOptions::default())
            .await
            .unwrap();
        expected.push(key);
    }
    // A sibling that shares the prefix's stem but not the prefix.
    store
        .put_bytes(
            &format!("{}x", prefix.trim_end_matches('/')),
            Bytes::new(),
            PutOptions::default(),
        )
        .await
        .unwrap();
    let first = store.list_page(&prefix, None).await.unwrap();
    assert!(
        first.next_page_token.is_some(),
        "page size 3 must yield several pages"
    );
    assert_eq!(first.objects.len(), 3);
    let all = store.list_all(&prefix).await.unwrap();
    let keys: Vec<String> = all.iter().map(|o| o.key.clone()).collect();
    assert_eq!(keys, expected);
    assert_eq!(all[6].size, 6);
}

/// A deleted object is gone for head, get, delete and list.
pub async fn delete_then_not_found(store: &dyn ObjectStore) {
    let key = format!("{}gone", unique_prefix("delete"));
    store
        .put_bytes(&key, Bytes::from_static(b"bye"), PutOptions::default())
        .await
        .unwrap();
    store.delete(&key).await.unwrap();
    assert!(matches!(
        store.head(&key).await,
        Err(StoreError::NotFound { .. })
    ));
    assert!(matches!(
        store.get(&key).await,
        Err(StoreError::NotFound { .. })
    ));
    assert!(matches!(
        store.delete(&key).await,
        Err(StoreError::NotFound { .. })
    ));
    assert!(store.list_all(&key).await.unwrap().is_empty());
}

/// A missing object is `NotFound`, permanent, and the error names it.
pub async fn missing_objects_map_to_not_found(store: &dyn ObjectStore) {
    let key = format!("{}never-written", unique_prefix("missing"));
    let err = store
        .get(&key)
        .await
        .err()
        .expect("get of a missing object fails");
    assert!(matches!(err, StoreError::NotFound { .. }), "{err:?}");
    assert!(!err.is_transient());
    assert!(
        err.to_string().contains(&key),
        "error names the object: {err}"
    );
}

#[cfg(test)]
mod on_memory {
    //! The suite on the in-memory store, which must honour the contract as
    //! the cloud adapters do (create-only puts included).
    use super::super::MemStore;

    fn store() -> MemStore {
        MemStore::new("mem://contract")
    }

    #[tokio::test]
    async fn streaming_put_then_get_100mib() {
        super::streaming_put_then_get_100mib(&store()).await;
    }
    #[tokio::test]
    async fn metadata_round_trips() {
        super::metadata_round_trips(&store()).await;
    }
    #[tokio::test]
    async fn conditional_create_refuses_existing() {
        super::conditional_create_refuses_existing(&store()).await;
    }
    #[tokio::test]
    async fn conditional_create_of_multipart_object_refuses_existing() {
        super::conditional_create_of_multipart_object_refuses_existing(&store()).await;
    }
    #[tokio::test]
    async fn list_follows_pages_within_prefix() {
        let store = store();
        store.set_page_size(3);
        super::list_follows_pages_within_prefix(&store).await;
    }
    #[tokio::test]
    async fn delete_then_not_found() {
        super::delete_then_not_found(&store()).await;
    }
    #[tokio::test]
    async fn whole_object_crc32c_is_reported() {
        super::whole_object_crc32c_is_reported(&store()).await;
    }
    #[tokio::test]
    async fn missing_objects_map_to_not_found() {
        super::missing_objects_map_to_not_found(&store()).await;
    }
}
