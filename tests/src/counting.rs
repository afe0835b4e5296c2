//! An [`ObjectStore`] wrapper that counts the calls made through it: how the
//! benchmarks report API calls against the real adapters. It also notes when
//! the last list and the last read finished, so that a benchmark can tell a
//! run's phases apart (listing, then reads) without instrumenting the code
//! it measures.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

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
    list_done: Mutex<Option<Instant>>,
    read_done: Mutex<Option<Instant>>,
}

impl<S: ObjectStore> CountingStore<S> {
    pub fn new(inner: S) -> Self {
        Self {
            inner,
            counters: Counters::default(),
            list_done: Mutex::new(None),
            read_done: Mutex::new(None),
        }
    }

    /// When the last list call answered, if any did.
    pub fn last_list_done(&self) -> Option<Instant> {
        *self.list_done.lock().expect("not poisoned")
    }

    /// When the last get (or read) answered, if any did.
    pub fn last_read_done(&self) -> Option<Instant> {
        *self.read_done.lock().expect("not poisoned")
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

fn mark(done: &Mutex<Option<Instant>>) {
    *done.lock().expect("not poisoned") = Some(Instant::now());
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
        let got = self.inner.get(key).await;
        mark(&self.read_done);
        got
    }

    /// Counted as a get: one read request either way.
    async fn read(&self, key: &str) -> StoreResult<ByteStream> {
        bump(&self.counters.get);
        let got = self.inner.read(key).await;
        mark(&self.read_done);
        got
    }

    async fn head(&self, key: &str) -> StoreResult<ObjectMeta> {
        bump(&self.counters.head);
        self.inner.head(key).await
    }

    async fn list_page(&self, prefix: &str, page_token: Option<String>) -> StoreResult<ListPage> {
        bump(&self.counters.list);
        let page = self.inner.list_page(prefix, page_token).await;
        mark(&self.list_done);
        page
    }

    async fn delete(&self, key: &str) -> StoreResult<()> {
        bump(&self.counters.delete);
        self.inner.delete(key).await
    }
}
