//! GCS adapter on the official `google-cloud-storage` crate.
//!
//! Reads and writes go through `Storage` (streaming reads, streaming resumable
//! uploads). Listing, metadata and deletes go through `StorageControl`, which
//! only speaks gRPC in production. No local emulator serves that gRPC API, so
//! when `STORAGE_EMULATOR_HOST` is set the same `StorageControl` client is
//! built over [`crate::gcs_json::JsonApiControl`], a stub speaking the JSON
//! API: the one place where local runs and tests do not use the production
//! transport. The adapter code above the client is identical either way.

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use futures::FutureExt;
use futures::future::{BoxFuture, Shared};
use google_cloud_storage::client::{Storage, StorageControl};
use google_cloud_storage::model::Object;
use google_cloud_storage::streaming_source::Payload;

use backstop_core::config::{ConfigError, Env};
use backstop_core::store::{
    ByteStream, GetResult, ListPage, ObjectMeta, ObjectStore, PutMode, PutOptions, StoreError,
    StoreResult, byte_stream,
};

use crate::gcs_upload::StreamSource;
use crate::timeouts::{StallWatch, Timeouts, within};

/// Where the production clients send requests (JSON API and gRPC alike).
const PRODUCTION_ENDPOINT: &str = "https://storage.googleapis.com";

/// Attempts and time allowed to start a read (see [`GcsStore::read`]).
const READ_ATTEMPTS: u32 = 3;
const READ_RETRY_TIME: std::time::Duration = std::time::Duration::from_secs(20);

#[derive(Debug, Clone)]
pub struct GcsStore {
    storage: PendingStorage,
    control: LazyControl,
    bucket: String,
    page_size: i32,
    /// The Cloud Storage clients build their own HTTP and gRPC transports
    /// with no connect or read timeout, so every call is bounded here.
    timeouts: Timeouts,
    /// The endpoint requests go to, for error messages.
    endpoint: String,
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
    timeouts: Timeouts,
    client: Arc<tokio::sync::OnceCell<StorageControl>>,
}

impl LazyControl {
    async fn get(&self, store: &str, op: &'static str, key: &str) -> StoreResult<&StorageControl> {
        self.client
            .get_or_try_init(|| async {
                match &self.emulator {
                    Some(endpoint) => Ok(StorageControl::from_stub(
                        crate::gcs_json::JsonApiControl::new(endpoint, &self.timeouts),
                    )),
                    // Its own per-attempt knob, so that the server sees the
                    // deadline too; `GcsStore` bounds the whole call.
                    None => {
                        StorageControl::builder()
                            .with_attempt_timeout(self.timeouts.answer())
                            .build()
                            .await
                    }
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
/// (`STORAGE_EMULATOR_HOST`, `GOOGLE_APPLICATION_CREDENTIALS`, the
/// [`crate::timeouts`] variables).
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
        let timeouts = Timeouts::from_env(&env)?;
        let emulator = emulator_endpoint(&env);
        let endpoint = emulator
            .clone()
            .unwrap_or_else(|| PRODUCTION_ENDPOINT.to_string());
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
                timeouts,
                client: Arc::default(),
            },
            bucket,
            page_size: 1000,
            timeouts,
            endpoint,
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
    async fn stream(
        &self,
        key: &str,
        generation: Option<i64>,
        offset: u64,
    ) -> StoreResult<ByteStream> {
        use google_cloud_gax::retry_policy::RetryPolicyExt;
        // A few quick attempts, not the client's default of retrying for
        // minutes: an unreachable GCS must let restore fall back to S3, and
        // the replicator's event be redelivered, while there is time. The
        // retry policy only counts time between attempts; a silent server
        // holds one attempt forever, so the answer has a deadline too.
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
        if offset > 0 {
            read = read.set_read_range(google_cloud_storage::model_ext::ReadRange::offset(offset));
        }
        let resp = self.answered("get", key, read.send()).await?;
        let store = self.url();
        let key = key.to_string();
        let (timeouts, endpoint) = (self.timeouts, self.endpoint.clone());
        let body = futures::stream::unfold(Some(resp), move |state| {
            let store = store.clone();
            let key = key.clone();
            let endpoint = endpoint.clone();
            async move {
                let mut resp = state?;
                // Only while the consumer asks for bytes: a reader busy
                // elsewhere (pg_restore, an S3 upload) is no stall.
                match within(timeouts.request, resp.next()).await {
                    None => {
                        let message = timeouts.stalled(&endpoint, timeouts.request);
                        Some((
                            Err(transient(&store, "read", &key, message).into_io()),
                            None,
                        ))
                    }
                    Some(None) => None,
                    Some(Some(Ok(chunk))) => Some((Ok(chunk), Some(resp))),
                    Some(Some(Err(e))) => {
                        Some((Err(map_gcs_error(&store, "read", &key, e).into_io()), None))
                    }
                }
            }
        });
        Ok(byte_stream(body))
    }

    /// Awaits one call's answer, for at most [`Timeouts::answer`].
    async fn answered<T>(
        &self,
        op: &'static str,
        key: &str,
        call: impl std::future::Future<Output = Result<T, google_cloud_storage::Error>>,
    ) -> StoreResult<T> {
        match within(self.timeouts.answer(), call).await {
            // The control client's own attempt timeout, racing ours.
            Some(Err(e)) if e.is_timeout() => Err(transient(
                &self.url(),
                op,
                key,
                format!("{} ({e})", self.timeouts.late(&self.endpoint)),
            )),
            Some(result) => result.map_err(|e| self.map_err(op, key, e)),
            None => Err(transient(
                &self.url(),
                op,
                key,
                self.timeouts.no_answer(&self.endpoint),
            )),
        }
    }

    fn map_err(&self, op: &'static str, key: &str, err: google_cloud_storage::Error) -> StoreError {
        map_gcs_error(&self.url(), op, key, err)
    }
}

fn transient(store: &str, op: &'static str, key: &str, message: String) -> StoreError {
    StoreError::Transient {
        store: store.to_string(),
        op,
        key: key.to_string(),
        message,
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

#[async_trait]
impl ObjectStore for GcsStore {
    fn url(&self) -> String {
        format!("gs://{}", self.bucket)
    }

    async fn put(&self, key: &str, body: ByteStream, opts: PutOptions) -> StoreResult<ObjectMeta> {
        let storage = self.storage.get(&self.url(), "put", key).await?;
        let failure = Arc::new(Mutex::new(None));
        let watch = StallWatch::new();
        let source = StreamSource::new(body, opts.size_hint, failure.clone(), watch.clone());
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
        let send = async {
            if opts.size_hint.is_some() {
                // Bytes already in memory (manifests, signatures, records):
                // one multipart request. (The unbuffered single-request
                // upload adds a trailing checksum part that fake-gcs-server
                // stores as the object's content.)
                req.send_buffered().await
            } else {
                // No checksum precomputation: it reads the whole source
                // before the upload starts. The client still computes CRC32C
                // as the bytes flow and checks it against the server's object.
                req.with_checksum_precomputation(false)
                    .send_unbuffered()
                    .await
            }
        };
        // An upload may take hours; one that takes no bytes and gets no
        // answer for the answer deadline (it may reconnect) has stalled.
        let limit = self.timeouts.answer();
        let sent = tokio::select! {
            sent = send => sent,
            () = watch.stalled(limit) => {
                let message = self.timeouts.stalled(&self.endpoint, limit);
                return Err(transient(&self.url(), "put", key, message));
            }
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
            .stream(key, Some(generation).filter(|&g| g > 0), 0)
            .await?;
        Ok(GetResult { meta, body })
    }

    async fn read(&self, key: &str) -> StoreResult<ByteStream> {
        self.stream(key, None, 0).await
    }

    async fn read_from(&self, key: &str, offset: u64) -> StoreResult<ByteStream> {
        self.stream(key, None, offset).await
    }

    async fn head(&self, key: &str) -> StoreResult<ObjectMeta> {
        let control = self.control.get(&self.url(), "head", key).await?;
        let call = control
            .get_object()
            .set_bucket(self.bucket_path())
            .set_object(key)
            .send();
        let o = self.answered("head", key, call).await?;
        Ok(object_meta(&o))
    }

    async fn list_page(&self, prefix: &str, page_token: Option<String>) -> StoreResult<ListPage> {
        let control = self.control.get(&self.url(), "list", prefix).await?;
        let call = control
            .list_objects()
            .set_parent(self.bucket_path())
            .set_prefix(prefix)
            .set_page_size(self.page_size)
            .set_page_token(page_token.unwrap_or_default())
            .send();
        let resp = self.answered("list", prefix, call).await?;
        Ok(ListPage {
            objects: resp.objects.iter().map(object_meta).collect(),
            next_page_token: Some(resp.next_page_token).filter(|t| !t.is_empty()),
        })
    }

    async fn delete(&self, key: &str) -> StoreResult<()> {
        let control = self.control.get(&self.url(), "delete", key).await?;
        let call = control
            .delete_object()
            .set_bucket(self.bucket_path())
            .set_object(key)
            .send();
        self.answered("delete", key, call).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use backstop_core::store::ObjectStoreExt;
    use bytes::Bytes;

    fn store_building(
        build: impl std::future::Future<Output = Result<Storage, ConfigError>> + Send + 'static,
    ) -> GcsStore {
        GcsStore {
            storage: PendingStorage::spawn(build),
            control: LazyControl {
                emulator: None,
                timeouts: Timeouts::default(),
                client: Arc::default(),
            },
            bucket: "backups".into(),
            page_size: 1000,
            timeouts: Timeouts::default(),
            endpoint: PRODUCTION_ENDPOINT.into(),
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
}
