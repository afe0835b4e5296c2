//! An in-memory [`ObjectStore`] for tests, with injectable failures. It
//! honours the same contract as the cloud adapters (create-only puts
//! included): [`super::contract`] runs on it in the unit tests.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;

use async_trait::async_trait;
use bytes::Bytes;

use super::{
    ByteStream, GetResult, ListPage, ObjectMeta, ObjectStore, PutMode, PutOptions, StoreError,
    StoreResult, bytes_stream,
};

#[derive(Debug, Default)]
struct State {
    objects: BTreeMap<String, Bytes>,
    /// User metadata of the objects put with some (keys lower-cased, as
    /// both clouds return them).
    metadata: BTreeMap<String, BTreeMap<String, String>>,
    page_size: usize,
    /// Listing page index (0-based) that fails.
    fail_list_page: Option<usize>,
    fail_delete: BTreeSet<String>,
    fail_get: BTreeSet<String>,
    /// Every delete attempt, in order: (key, succeeded).
    delete_log: Vec<(String, bool)>,
    list_calls: usize,
}

/// The in-memory store. Every object lives in one locked map; failures are
/// injected per key or per listing page.
#[derive(Debug)]
pub struct MemStore {
    url: String,
    state: Mutex<State>,
}

impl MemStore {
    /// An empty store whose [`ObjectStore::url`] is `url`, listing 1000
    /// objects a page.
    pub fn new(url: &str) -> Self {
        Self {
            url: url.into(),
            state: Mutex::new(State {
                page_size: 1000,
                ..State::default()
            }),
        }
    }

    fn with<R>(&self, f: impl FnOnce(&mut State) -> R) -> R {
        f(&mut self.state.lock().unwrap())
    }

    /// Writes an object's bytes directly, bypassing `put` and its metadata.
    pub fn insert(&self, key: &str, data: impl Into<Bytes>) {
        let data = data.into();
        self.with(|s| s.objects.insert(key.to_string(), data));
    }

    /// Every object, by key.
    pub fn snapshot(&self) -> BTreeMap<String, Bytes> {
        self.with(|s| s.objects.clone())
    }

    /// Whether `key` exists.
    pub fn contains(&self, key: &str) -> bool {
        self.with(|s| s.objects.contains_key(key))
    }

    /// Sets the listing page size (at least 1), to test paging.
    pub fn set_page_size(&self, n: usize) {
        self.with(|s| s.page_size = n.max(1));
    }

    /// Makes the listing page with this 0-based index fail transiently; `None`
    /// clears it.
    pub fn fail_list_page(&self, page: Option<usize>) {
        self.with(|s| s.fail_list_page = page);
    }

    /// Makes deletes of these keys fail permanently (replaces the previous set).
    pub fn fail_deletes(&self, keys: impl IntoIterator<Item = String>) {
        self.with(|s| s.fail_delete = keys.into_iter().collect());
    }

    /// Makes gets of these keys fail transiently (replaces the previous set).
    pub fn fail_gets(&self, keys: impl IntoIterator<Item = String>) {
        self.with(|s| s.fail_get = keys.into_iter().collect());
    }

    /// Every delete attempt so far, in order: (key, succeeded).
    pub fn delete_log(&self) -> Vec<(String, bool)> {
        self.with(|s| s.delete_log.clone())
    }

    /// How many `list_page` calls were made.
    pub fn list_calls(&self) -> usize {
        self.with(|s| s.list_calls)
    }

    fn meta(s: &State, key: &str, data: &Bytes) -> ObjectMeta {
        ObjectMeta {
            key: key.to_string(),
            size: data.len() as u64,
            metadata: s.metadata.get(key).cloned().unwrap_or_default(),
            // As GCS and S3 do: the store's own checksum of the bytes.
            crc32c: Some(crc32c::crc32c(data)),
            ..ObjectMeta::default()
        }
    }

    fn lookup(&self, key: &str) -> StoreResult<ObjectMeta> {
        self.with(|s| s.objects.get(key).map(|data| Self::meta(s, key, data)))
            .ok_or_else(|| StoreError::NotFound {
                store: self.url.clone(),
                key: key.into(),
            })
    }

    fn transient(&self, op: &'static str, key: &str) -> StoreError {
        StoreError::Transient {
            store: self.url.clone(),
            op,
            key: key.to_string(),
            message: "injected failure".into(),
        }
    }
}

#[async_trait]
impl ObjectStore for MemStore {
    fn url(&self) -> String {
        self.url.clone()
    }

    async fn put(&self, key: &str, body: ByteStream, opts: PutOptions) -> StoreResult<ObjectMeta> {
        use futures::TryStreamExt;
        let chunks: Vec<Bytes> = body.try_collect().await.map_err(|e| StoreError::Source {
            store: self.url.clone(),
            key: key.into(),
            source: e,
        })?;
        let data = Bytes::from(chunks.concat());
        // Create-only puts are checked and applied under one lock, as a
        // server's precondition is: two racing creates cannot both win.
        self.with(|s| {
            if opts.mode == PutMode::Create && s.objects.contains_key(key) {
                return Err(StoreError::PreconditionFailed {
                    store: self.url.clone(),
                    key: key.to_string(),
                });
            }
            s.objects.insert(key.to_string(), data.clone());
            let metadata = opts
                .metadata
                .iter()
                .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
                .collect();
            s.metadata.insert(key.to_string(), metadata);
            Ok(Self::meta(s, key, &data))
        })
    }

    async fn get(&self, key: &str) -> StoreResult<GetResult> {
        if self.with(|s| s.fail_get.contains(key)) {
            return Err(self.transient("get", key));
        }
        let meta = self.lookup(key)?;
        let data = self.with(|s| s.objects.get(key).cloned().unwrap_or_default());
        Ok(GetResult {
            meta,
            body: bytes_stream(data),
        })
    }

    async fn head(&self, key: &str) -> StoreResult<ObjectMeta> {
        self.lookup(key)
    }

    async fn list_page(&self, prefix: &str, page_token: Option<String>) -> StoreResult<ListPage> {
        let start: usize = page_token.as_deref().unwrap_or("0").parse().unwrap();
        self.with(|s| {
            s.list_calls += 1;
            let page_no = start / s.page_size;
            if s.fail_list_page == Some(page_no) {
                return Err(self.transient("list", prefix));
            }
            let matching: Vec<_> = s
                .objects
                .iter()
                .filter(|(k, _)| k.starts_with(prefix))
                .collect();
            let end = (start + s.page_size).min(matching.len());
            Ok(ListPage {
                objects: matching[start.min(end)..end]
                    .iter()
                    .map(|(k, v)| Self::meta(s, k, v))
                    .collect(),
                next_page_token: (end < matching.len()).then(|| end.to_string()),
            })
        })
    }

    async fn delete(&self, key: &str) -> StoreResult<()> {
        self.with(|s| {
            if s.fail_delete.contains(key) {
                s.delete_log.push((key.to_string(), false));
                return Err(StoreError::Permanent {
                    store: self.url.clone(),
                    op: "delete",
                    key: key.to_string(),
                    message: "injected failure".into(),
                });
            }
            s.delete_log.push((key.to_string(), true));
            s.metadata.remove(key);
            match s.objects.remove(key) {
                Some(_) => Ok(()),
                None => Err(StoreError::NotFound {
                    store: self.url.clone(),
                    key: key.to_string(),
                }),
            }
        })
    }
}
