//! An [`ObjectStore`] wrapper that counts the calls made through it: how the
//! benchmarks report API calls against the real adapters.

use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use backstop_core::store::{
    ByteStream, GetResult, ListPage, ObjectMeta, ObjectStore, PutOptions, StoreResult,
};
use serde::Serialize;

#[derive(Debug, Default)]
struct Counters {
    put: AtomicU64,
    get: AtomicU64,
    head: AtomicU64,
    list: AtomicU64,
    delete: AtomicU64,
}

/// Calls made through a [`CountingStore`] so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct CallCounts {
    pub put: u64,
    pub get: u64,
    pub head: u64,
    pub list: u64,
    pub delete: u64,
}

impl CallCounts {
    pub fn total(&self) -> u64 {
        self.put + self.get + self.head + self.list + self.delete
    }
}

#[derive(Debug)]
pub struct CountingStore<S> {
    inner: S,
    counters: Counters,
}

impl<S: ObjectStore> CountingStore<S> {
    pub fn new(inner: S) -> Self {
        Self {
            inner,
            counters: Counters::default(),
        }
    }

    pub fn counts(&self) -> CallCounts {
        let c = &self.counters;
        CallCounts {
            put: c.put.load(Ordering::Relaxed),
            get: c.get.load(Ordering::Relaxed),
            head: c.head.load(Ordering::Relaxed),
            list: c.list.load(Ordering::Relaxed),
            delete: c.delete.load(Ordering::Relaxed),
        }
    }
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

#[async_trait]
impl<S: ObjectStore> ObjectStore for CountingStore<S> {
    fn url(&self) -> String {
        self.inner.url()
    }

    async fn put(&self, key: &str, body: ByteStream, opts: PutOptions) -> StoreResult<ObjectMeta> {
        bump(&self.counters.put);
        self.inner.put(key, body, opts).await
    }

    async fn get(&self, key: &str) -> StoreResult<GetResult> {
        bump(&self.counters.get);
        self.inner.get(key).await
    }

    /// Counted as a get: one read request either way.
    async fn read(&self, key: &str) -> StoreResult<ByteStream> {
        bump(&self.counters.get);
        self.inner.read(key).await
    }

    async fn head(&self, key: &str) -> StoreResult<ObjectMeta> {
        bump(&self.counters.head);
        self.inner.head(key).await
    }

    async fn list_page(&self, prefix: &str, page_token: Option<String>) -> StoreResult<ListPage> {
        bump(&self.counters.list);
        self.inner.list_page(prefix, page_token).await
    }

    async fn delete(&self, key: &str) -> StoreResult<()> {
        bump(&self.counters.delete);
        self.inner.delete(key).await
    }
}
