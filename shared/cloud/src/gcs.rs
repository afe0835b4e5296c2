//! GCS adapter on the official `google-cloud-storage` crate.
//!
//! Reads and writes go through `Storage` (streaming reads, streaming resumable
//! uploads). Listing, metadata and deletes go through `StorageControl`, which
//! only speaks gRPC in production. No local emulator serves that gRPC API, so
//! when `STORAGE_EMULATOR_HOST` is set the same `StorageControl` client is
//! built over [`crate::gcs_json::JsonApiControl`], a stub speaking the JSON
//! API: the one place where local runs and tests do not use the production
//! transport. The adapter code above the client is identical either way.

use std::collections::VecDeque;
use std::io;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;
use futures::future::{BoxFuture, Shared};
use futures::{FutureExt, StreamExt};
use google_cloud_storage::client::{Storage, StorageControl};
use google_cloud_storage::model::Object;
use google_cloud_storage::streaming_source::{Payload, Seek, StreamingSource};

use backstop_core::config::{ConfigError, Env};
use backstop_core::store::{
    ByteStream, GetResult, ListPage, ObjectMeta, ObjectStore, PutMode, PutOptions, StoreError,
    StoreResult, byte_stream,
};

/// Attempts and time allowed to start a read (see [`GcsStore::read`]).
const READ_ATTEMPTS: u32 = 3;
const READ_RETRY_TIME: std::time::Duration = std::time::Duration::from_secs(20);

#[derive(Debug, Clone)]
pub struct GcsStore {
    storage: PendingStorage,
    control: LazyControl,
    bucket: String,
    page_size: i32,
}

/// The `Storage` client, built on a task of its own from the moment the
/// store is made (see [`GcsStoreBuilder::start`]): building it loads and
/// parses the system's CA certificates, the longest step of a cold start,
/// and whatever the caller does meanwhile (building other clients, reading
/// from S3) overlaps it. Every call waits for it; a failed build is reported
/// by every call.
#[derive(Clone)]
struct PendingStorage(Shared<BoxFuture<'static, Result<Storage, ConfigError>>>);

impl PendingStorage {
    fn spawn(
        build: impl std::future::Future<Output = Result<Storage, ConfigError>> + Send + 'static,
    ) -> Self {
        let task = tokio::spawn(build);
        PendingStorage(
            async move {
                task.await.unwrap_or_else(|e| {
                    Err(ConfigError::Invalid {
                        name: "GOOGLE_APPLICATION_CREDENTIALS".into(),
                        value: String::new(),
                        reason: format!(
                            "building the Cloud Storage client ended without a result ({e}); \
                             this is a bug in backstop, please report it"
                        ),
                    })
                })
            }
            .boxed()
            .shared(),
        )
    }

    async fn ready(&self) -> Result<Storage, ConfigError> {
        self.0.clone().await
    }

    async fn get(&self, store: &str, op: &'static str, key: &str) -> StoreResult<Storage> {
        self.ready().await.map_err(|e| StoreError::Permanent {
            store: store.to_string(),
            op,
            key: key.to_string(),
            message: e.to_string(),
        })
    }
}

impl std::fmt::Debug for PendingStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = match self.0.peek() {
            None => "building",
            Some(Ok(_)) => "ready",
            Some(Err(_)) => "failed",
        };
        f.debug_tuple("PendingStorage").field(&state).finish()
    }
}

/// The `StorageControl` client, built on first use: the replicator and the
/// dump job never list, stat or delete, and building another client (its
/// credentials, its TLS roots) would only add to their cold start.
#[derive(Debug, Clone)]
struct LazyControl {
    /// `None`: production (gRPC, Application Default Credentials).
    emulator: Option<String>,
    client: Arc<tokio::sync::OnceCell<StorageControl>>,
}

impl LazyControl {
    async fn get(&self, store: &str, op: &'static str, key: &str) -> StoreResult<&StorageControl> {
        self.client
            .get_or_try_init(|| async {
                match &self.emulator {
                    Some(endpoint) => Ok(StorageControl::from_stub(
                        crate::gcs_json::JsonApiControl::new(endpoint),
                    )),
                    None => StorageControl::builder().build().await,
                }
            })
            .await
            .map_err(|e| StoreError::Permanent {
                store: store.to_string(),
                op,
                key: key.to_string(),
                message: format!("could not build the Cloud Storage control client: {e}"),
            })
    }
}

/// The emulator endpoint from `STORAGE_EMULATOR_HOST`, with a scheme.
pub(crate) fn emulator_endpoint(env: &Env) -> Option<String> {
    env.optional("STORAGE_EMULATOR_HOST").map(|host| {
        let host = host.trim_end_matches('/');
        if host.starts_with("http://") || host.starts_with("https://") {
            host.to_string()
        } else {
            format!("http://{host}")
        }
    })
}

/// The variable that names the backups bucket.
pub const GCS_BUCKET_VAR: &str = "BACKSTOP_GCS_BUCKET";

/// Builds a [`GcsStore`]: the bucket, and the client settings of an [`Env`]
/// (`STORAGE_EMULATOR_HOST`, `GOOGLE_APPLICATION_CREDENTIALS`).
#[derive(Debug, Clone, Default)]
pub struct GcsStoreBuilder {
    bucket: Option<String>,
    env: Env,
}

impl GcsStoreBuilder {
    /// The bucket; without it, [`GCS_BUCKET_VAR`] from the environment.
    pub fn bucket(mut self, bucket: impl Into<String>) -> Self {
        self.bucket = Some(bucket.into());
        self
    }

    /// Where the client settings (and the default bucket) come from.
    pub fn env(mut self, env: &Env) -> Self {
        self.env = env.clone();
        self
    }

    /// Production clients with Application Default Credentials, or the local
    /// emulator (anonymous) when `STORAGE_EMULATOR_HOST` is set. Returns once
    /// the client is built, so that a bad credential fails here.
    pub async fn build(self) -> Result<GcsStore, ConfigError> {
        let store = self.start()?;
        store.storage.ready().await?;
        Ok(store)
    }

    /// As [`GcsStoreBuilder::build`], but returns as soon as the
    /// configuration is read, with the client still being built; the first
    /// call waits for it, and reports a failed build (say, a bad credential)
    /// as its error. For the replicator's cold start, where the S3 read of an
    /// event goes out while this client loads its CA certificates. Needs a
    /// Tokio runtime.
    pub fn start(self) -> Result<GcsStore, ConfigError> {
        let env = self.env;
        let bucket = match self.bucket {
            Some(bucket) => bucket,
            None => env.required(GCS_BUCKET_VAR, backstop_core::config::hint::GCS_BUCKET)?,
        };
        let credentials = env
            .optional("GOOGLE_APPLICATION_CREDENTIALS")
            .unwrap_or_default();
        let emulator = emulator_endpoint(&env);
        let builder = match &emulator {
            Some(endpoint) => Storage::builder()
                .with_endpoint(endpoint.clone())
                .with_credentials(
                    google_cloud_auth::credentials::anonymous::Builder::new().build(),
                ),
            None => Storage::builder(),
        };
        let storage = PendingStorage::spawn(async move {
            builder.build().await.map_err(|e| ConfigError::Invalid {
                name: "GOOGLE_APPLICATION_CREDENTIALS".into(),
                value: credentials,
                reason: format!(
                    "could not build the Cloud Storage client ({e}); configure Application Default Credentials or set STORAGE_EMULATOR_HOST for a local emulator"
                ),
            })
        });
        Ok(GcsStore {
            storage,
            control: LazyControl {
                emulator,
                client: Arc::default(),
            },
            bucket,
            page_size: 1000,
        })
    }
}

impl GcsStore {
    /// A builder: `GcsStore::builder().env(&env).bucket("b").build().await`.
    pub fn builder() -> GcsStoreBuilder {
        GcsStoreBuilder::default()
    }

    /// The store of [`GCS_BUCKET_VAR`], client settings from `env`.
    pub async fn from_env(env: &Env) -> Result<Self, ConfigError> {
        Self::builder().env(env).build().await
    }

    pub fn with_page_size(mut self, page_size: i32) -> Self {
        self.page_size = page_size.max(1);
        self
    }

    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    pub(crate) fn bucket_path(&self) -> String {
        format!("projects/_/buckets/{}", self.bucket)
    }

    /// Streams the object (that generation when given); read errors end the
    /// stream as [`StoreError`]s inside `io::Error`s.
    async fn stream(&self, key: &str, generation: Option<i64>) -> StoreResult<ByteStream> {
        use google_cloud_gax::retry_policy::RetryPolicyExt;
        // A few quick attempts, not the client's default of retrying for
        // minutes: an unreachable GCS must let restore fall back to S3, and
        // the replicator's event be redelivered, while there is time.
        let mut read = self
            .storage
            .get(&self.url(), "get", key)
            .await?
            .read_object(self.bucket_path(), key)
            .with_retry_policy(
                google_cloud_storage::retry_policy::RetryableErrors
                    .with_attempt_limit(READ_ATTEMPTS)
                    .with_time_limit(READ_RETRY_TIME),
            );
        if let Some(generation) = generation {
            read = read.set_generation(generation);
        }
        let resp = read.send().await.map_err(|e| self.map_err("get", key, e))?;
        let store = self.url();
        let key = key.to_string();
        let body = futures::stream::unfold(Some(resp), move |state| {
            let store = store.clone();
            let key = key.clone();
            async move {
                let mut resp = state?;
                match resp.next().await {
                    None => None,
                    Some(Ok(chunk)) => Some((Ok(chunk), Some(resp))),
                    Some(Err(e)) => {
                        Some((Err(map_gcs_error(&store, "read", &key, e).into_io()), None))
                    }
                }
            }
        });
        Ok(byte_stream(body))
    }

    fn map_err(&self, op: &'static str, key: &str, err: google_cloud_storage::Error) -> StoreError {
        map_gcs_error(&self.url(), op, key, err)
    }
}

/// Maps the client's error onto the store's kinds by HTTP status or gRPC code.
pub(crate) fn map_gcs_error(
    store: &str,
    op: &'static str,
    key: &str,
    err: google_cloud_storage::Error,
) -> StoreError {
    use google_cloud_gax::error::rpc::Code;
    let store = store.to_string();
    let key = key.to_string();
    let code = err.status().map(|s| s.code);
    let http = err.http_status_code();
    match (http, code) {
        (Some(404), _) | (_, Some(Code::NotFound)) => StoreError::NotFound { store, key },
        (Some(412), _) | (_, Some(Code::FailedPrecondition)) => {
            StoreError::PreconditionFailed { store, key }
        }
        (Some(408 | 429 | 500..=599), _)
        | (
            _,
            Some(
                Code::Unavailable
                | Code::DeadlineExceeded
                | Code::ResourceExhausted
                | Code::Internal
                | Code::Aborted,
            ),
        ) => StoreError::Transient {
            store,
            op,
            key,
            message: err.to_string(),
        },
        _ if err.is_timeout()
            || err.is_io()
            || err.is_connect()
            || err.is_transport()
            || err.is_exhausted() =>
        {
            StoreError::Transient {
                store,
                op,
                key,
                message: err.to_string(),
            }
        }
        _ => StoreError::Permanent {
            store,
            op,
            key,
            message: err.to_string(),
        },
    }
}

pub(crate) fn object_meta(o: &Object) -> ObjectMeta {
    ObjectMeta {
        key: o.name.clone(),
        size: o.size.max(0) as u64,
        metadata: o
            .metadata
            .iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
            .collect(),
        crc32c: o.checksums.as_ref().and_then(|c| c.crc32c),
        version: Some(o.generation.to_string()),
        updated: o
            .update_time
            .as_ref()
            .or(o.create_time.as_ref())
            .and_then(|t| chrono::DateTime::from_timestamp(t.seconds(), t.nanos().max(0) as u32)),
    }
}

/// Bytes of an upload kept after they were sent, so that an interrupted
/// upload can resume from wherever the server's copy ends (see
/// [`StreamSource`]).
const REPLAY_WINDOW: u64 = 16 << 20;

/// Feeds a [`ByteStream`] to the upload and remembers why it failed, so that
/// a source failure is reported as such and not as a storage failure.
///
/// The upload is one streaming request (`send_unbuffered`), not a series of
/// buffered chunk requests: no round trip per chunk between the data and
/// the server, and no server-side reassembly per chunk (fake-gcs-server
/// rehashes the whole object on every chunk: 8 MiB chunks of a 1 GiB backup
/// cost it 140 s of CPU, against 2–5 s for the same bytes in one request).
/// When that request fails, the client asks the server how many bytes it
/// kept and seeks there; the last [`REPLAY_WINDOW`] bytes are kept for that,
/// in whole chunks, so memory stays bounded. A resume point further back
/// fails the upload for good with a [`StreamSource::seek`] error.
struct StreamSource {
    // The upload requires a `Sync` source; the lock is never contended
    // (`next` takes `&mut self`).
    body: Mutex<ByteStream>,
    size: Option<u64>,
    failure: Arc<Mutex<Option<io::Error>>>,
    /// Chunks already taken from `body`, newest last, covering
    /// `kept_from..taken`.
    kept: VecDeque<Bytes>,
    kept_from: u64,
    taken: u64,
    /// Offset of the next byte to hand out (below `taken` after a seek).
    pos: u64,
}

impl StreamSource {
    fn new(body: ByteStream, size: Option<u64>, failure: Arc<Mutex<Option<io::Error>>>) -> Self {
        StreamSource {
            body: Mutex::new(body),
            size,
            failure,
            kept: VecDeque::new(),
            kept_from: 0,
            taken: 0,
            pos: 0,
        }
    }

    /// The rest of the kept chunk holding `pos`, for a replay after a seek.
    fn replay(&self) -> Bytes {
        let mut start = self.kept_from;
        for chunk in &self.kept {
            let end = start + chunk.len() as u64;
            if self.pos < end {
                return chunk.slice((self.pos - start) as usize..);
            }
            start = end;
        }
        unreachable!("pos {} is below taken {}", self.pos, self.taken)
    }

    fn keep(&mut self, chunk: Bytes) {
        self.taken += chunk.len() as u64;
        self.kept.push_back(chunk);
        while let Some(front) = self.kept.front() {
            if self.taken - self.kept_from - (front.len() as u64) < REPLAY_WINDOW {
                break;
            }
            self.kept_from += front.len() as u64;
            self.kept.pop_front();
        }
    }
}

impl StreamingSource for StreamSource {
    type Error = io::Error;

    async fn next(&mut self) -> Option<Result<Bytes, Self::Error>> {
        if self.pos < self.taken {
            let chunk = self.replay();
            self.pos += chunk.len() as u64;
            return Some(Ok(chunk));
        }
        let body = self.body.get_mut().expect("stream lock");
        match body.next().await {
            Some(Ok(chunk)) => {
                self.keep(chunk.clone());
                self.pos = self.taken;
                Some(Ok(chunk))
            }
            Some(Err(e)) => {
                let kind = e.kind();
                let message = e.to_string();
                *self.failure.lock().expect("source failure lock") = Some(e);
                Some(Err(io::Error::new(kind, message)))
            }
            None => None,
        }
    }

    async fn size_hint(
        &self,
    ) -> Result<google_cloud_storage::streaming_source::SizeHint, Self::Error> {
        Ok(match self.size {
            Some(n) => google_cloud_storage::streaming_source::SizeHint::with_exact(n),
            None => google_cloud_storage::streaming_source::SizeHint::new(),
        })
    }
}

impl Seek for StreamSource {
    type Error = io::Error;

    async fn seek(&mut self, offset: u64) -> Result<(), Self::Error> {
        if offset < self.kept_from || offset > self.taken {
            return Err(io::Error::other(format!(
                "cannot resume the upload at byte {offset}: the server kept fewer bytes than \
                 were sent, and only bytes {}..{} are still held (the last {} MiB); the upload \
                 has to start again",
                self.kept_from,
                self.taken,
                REPLAY_WINDOW >> 20
            )));
        }
        self.pos = offset;
        Ok(())
    }
}

#[async_trait]
impl ObjectStore for GcsStore {
    fn url(&self) -> String {
        format!("gs://{}", self.bucket)
    }

    async fn put(&self, key: &str, body: ByteStream, opts: PutOptions) -> StoreResult<ObjectMeta> {
        let storage = self.storage.get(&self.url(), "put", key).await?;
        let failure = Arc::new(Mutex::new(None));
        let source = StreamSource::new(body, opts.size_hint, failure.clone());
        let mut req = storage
            .write_object::<_, _, _, StreamSource>(
                self.bucket_path(),
                key,
                Payload::from_stream(source),
            )
            .set_metadata(opts.metadata.clone());
        if let Some(ct) = &opts.content_type {
            req = req.set_content_type(ct.clone());
        }
        if opts.mode == PutMode::Create {
            // Generation 0 means "only if no live object has this name".
            // (fake-gcs-server honours it on single-request uploads only, not
            // on resumable ones; GCS honours it on both.)
            req = req.set_if_generation_match(0);
        }
        let sent = if opts.size_hint.is_some() {
            // Bytes already in memory (manifests, signatures, records): one
            // multipart request. (The unbuffered single-request upload adds a
            // trailing checksum part that fake-gcs-server stores as the
            // object's content.)
            req.send_buffered().await
        } else {
            // No checksum precomputation: it reads the whole source before
            // the upload starts. The client still computes CRC32C as the
            // bytes flow and checks it against the server's object.
            req.with_checksum_precomputation(false)
                .send_unbuffered()
                .await
        };
        match sent {
            Ok(o) => Ok(object_meta(&o)),
            Err(e) => match failure.lock().expect("source failure lock").take() {
                Some(source) => Err(StoreError::Source {
                    store: self.url(),
                    key: key.to_string(),
                    source,
                }),
                None => Err(self.map_err("put", key, e)),
            },
        }
    }

    async fn get(&self, key: &str) -> StoreResult<GetResult> {
        // Metadata first, then exactly that generation: the bytes and the
        // metadata describe the same write even if the object is replaced.
        let meta = self.head(key).await?;
        let generation: i64 = meta
            .version
            .as_deref()
            .and_then(|g| g.parse().ok())
            .unwrap_or(0);
        let body = self
            .stream(key, Some(generation).filter(|&g| g > 0))
            .await?;
        Ok(GetResult { meta, body })
    }

    async fn read(&self, key: &str) -> StoreResult<ByteStream> {
        self.stream(key, None).await
    }

    async fn head(&self, key: &str) -> StoreResult<ObjectMeta> {
        let o = self
            .control
            .get(&self.url(), "head", key)
            .await?
            .get_object()
            .set_bucket(self.bucket_path())
            .set_object(key)
            .send()
            .await
            .map_err(|e| self.map_err("head", key, e))?;
        Ok(object_meta(&o))
    }

    async fn list_page(&self, prefix: &str, page_token: Option<String>) -> StoreResult<ListPage> {
        let resp = self
            .control
            .get(&self.url(), "list", prefix)
            .await?
            .list_objects()
            .set_parent(self.bucket_path())
            .set_prefix(prefix)
            .set_page_size(self.page_size)
            .set_page_token(page_token.unwrap_or_default())
            .send()
            .await
            .map_err(|e| self.map_err("list", prefix, e))?;
        Ok(ListPage {
            objects: resp.objects.iter().map(object_meta).collect(),
            next_page_token: Some(resp.next_page_token).filter(|t| !t.is_empty()),
        })
    }

    async fn delete(&self, key: &str) -> StoreResult<()> {
        self.control
            .get(&self.url(), "delete", key)
            .await?
            .delete_object()
            .set_bucket(self.bucket_path())
            .set_object(key)
            .send()
            .await
            .map_err(|e| self.map_err("delete", key, e))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use backstop_core::store::ObjectStoreExt;

    fn source(chunks: usize, chunk: usize) -> StreamSource {
        let body =
            futures::stream::iter((0..chunks).map(move |i| Ok(Bytes::from(vec![i as u8; chunk]))));
        StreamSource::new(byte_stream(body), None, Arc::default())
    }

    async fn drain(s: &mut StreamSource) -> Vec<u8> {
        let mut out = Vec::new();
        while let Some(chunk) = s.next().await {
            out.extend_from_slice(&chunk.unwrap());
        }
        out
    }

    #[tokio::test]
    async fn a_resume_inside_the_window_replays_the_same_bytes() {
        let chunk = 1 << 20;
        let mut s = source(40, chunk);
        let whole: Vec<u8> = (0..40u8).flat_map(|i| vec![i; chunk]).collect();
        for _ in 0..30 {
            s.next().await.unwrap().unwrap();
        }
        // The server kept 20.5 MiB of the 30 MiB sent: resume mid-chunk.
        let at = (20 << 20) + (chunk as u64 / 2);
        s.seek(at).await.unwrap();
        let rest = drain(&mut s).await;
        assert_eq!(&rest[..], &whole[at as usize..]);
        // Memory: whole chunks covering the window, no more.
        let kept: u64 = s.kept.iter().map(|c| c.len() as u64).sum();
        assert!(
            kept >= REPLAY_WINDOW && kept < REPLAY_WINDOW + chunk as u64,
            "{kept}"
        );
    }

    fn store_building(
        build: impl std::future::Future<Output = Result<Storage, ConfigError>> + Send + 'static,
    ) -> GcsStore {
        GcsStore {
            storage: PendingStorage::spawn(build),
            control: LazyControl {
                emulator: None,
                client: Arc::default(),
            },
            bucket: "backups".into(),
            page_size: 1000,
        }
    }

    #[tokio::test]
    async fn a_client_that_failed_to_build_fails_every_call_with_the_reason() {
        let bad = ConfigError::Invalid {
            name: "GOOGLE_APPLICATION_CREDENTIALS".into(),
            value: "/nowhere/key.json".into(),
            reason: "no such file".into(),
        };
        let (release, released) = tokio::sync::oneshot::channel::<()>();
        let store = store_building({
            let bad = bad.clone();
            async move {
                let _ = released.await;
                Err(bad)
            }
        });
        // Calls made while the client is still building wait for it.
        let early = tokio::spawn({
            let store = store.clone();
            async move { store.get_bytes("a/manifest.json", 1024).await }
        });
        tokio::task::yield_now().await;
        assert!(!early.is_finished());
        release.send(()).unwrap();
        assert_eq!(store.storage.ready().await.unwrap_err(), bad);
        let put = store
            .put_bytes(
                "a/manifest.json",
                Bytes::from_static(b"{}"),
                PutOptions::default(),
            )
            .await;
        for err in [early.await.unwrap().unwrap_err(), put.unwrap_err()] {
            assert!(matches!(err, StoreError::Permanent { .. }), "{err}");
            let text = err.to_string();
            assert!(
                text.contains("GOOGLE_APPLICATION_CREDENTIALS") && text.contains("no such file"),
                "{text}"
            );
        }
    }

    #[tokio::test]
    async fn a_resume_behind_the_window_fails_and_says_why() {
        let mut s = source(40, 1 << 20);
        for _ in 0..30 {
            s.next().await.unwrap().unwrap();
        }
        let err = s.seek(0).await.unwrap_err();
        assert!(
            err.to_string()
                .contains("cannot resume the upload at byte 0"),
            "{err}"
        );
        assert!(s.seek(31 << 20).await.is_err(), "beyond what was sent");
        // A failed seek changes nothing: the stream goes on where it was.
        assert_eq!(s.next().await.unwrap().unwrap()[0], 30);
    }
}
