//! One small object-store contract used by every part of Backstop.
//!
//! Backups move as streams of [`Bytes`]; no adapter buffers a whole object.
//! Adapters map their SDK's errors onto [`StoreError`], whose kinds let the
//! callers decide: not found, precondition failed (conditional create refused),
//! transient (retry / let the event be redelivered) or permanent.

use std::collections::BTreeMap;
use std::io;
use std::pin::Pin;

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::{Stream, StreamExt, TryStreamExt};

#[cfg(any(test, feature = "testing"))]
pub mod contract;
#[cfg(any(test, feature = "testing"))]
mod memory;
mod parts;
#[cfg(any(test, feature = "testing"))]
pub use memory::MemStore;
pub use parts::{OpenUpload, PartUploads, UploadedPart, combined_crc32c};

/// A stream of object bytes. Errors are `io::Error` so that streams compose
/// with `AsyncRead` adapters; a [`StoreError`] travelling inside one keeps
/// its class ([`StoreError::io_is_transient`]).
pub type ByteStream = Pin<Box<dyn Stream<Item = io::Result<Bytes>> + Send>>;

/// Wraps any byte stream as a [`ByteStream`].
pub fn byte_stream<S>(s: S) -> ByteStream
where
    S: Stream<Item = io::Result<Bytes>> + Send + 'static,
{
    Box::pin(s)
}

/// A stream over in-memory bytes, in chunks (tests, manifests).
pub fn bytes_stream(data: impl Into<Bytes>) -> ByteStream {
    let data = data.into();
    byte_stream(futures::stream::iter(if data.is_empty() {
        vec![]
    } else {
        vec![Ok(data)]
    }))
}

/// What a store reports about one object (put, head, listing).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ObjectMeta {
    /// The full object key in the bucket.
    pub key: String,
    /// Object size in bytes.
    pub size: u64,
    /// User metadata (GCS `metadata`, S3 `x-amz-meta-*`). Keys are lower-case.
    pub metadata: BTreeMap<String, String>,
    /// CRC32C of the whole object when the store reports one.
    pub crc32c: Option<u32>,
    /// GCS generation or S3 version id / ETag: identifies this write.
    pub version: Option<String>,
    /// Last write time, when the store reports one (S3 puts do not).
    pub updated: Option<DateTime<Utc>>,
}

/// Whether a put may replace an existing object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PutMode {
    /// Replace whatever is there.
    #[default]
    Overwrite,
    /// Only create: an existing object makes the put fail with
    /// [`StoreError::PreconditionFailed`] and leaves the object untouched.
    Create,
}

/// How [`ObjectStore::put`] writes an object.
#[derive(Debug, Clone, Default)]
pub struct PutOptions {
    /// Overwrite or create-only.
    pub mode: PutMode,
    /// User metadata stored with the object; [`Self::with_metadata`]
    /// lower-cases the keys.
    pub metadata: BTreeMap<String, String>,
    /// The object's `Content-Type`; the store's default when `None`.
    pub content_type: Option<String>,
    /// The exact body size when known up front (small objects): lets GCS
    /// use a single-request upload.
    pub size_hint: Option<u64>,
}

impl PutOptions {
    /// Create-only options ([`PutMode::Create`]), otherwise default.
    pub fn create() -> Self {
        Self {
            mode: PutMode::Create,
            ..Self::default()
        }
    }

    /// Sets the object's `Content-Type`.
    pub fn with_content_type(mut self, content_type: &str) -> Self {
        self.content_type = Some(content_type.to_string());
        self
    }

    /// Adds one user-metadata entry, its key lower-cased.
    pub fn with_metadata(mut self, key: &str, value: impl Into<String>) -> Self {
        self.metadata.insert(key.to_ascii_lowercase(), value.into());
        self
    }
}

/// What [`ObjectStore::get`] returns: metadata and a body stream.
pub struct GetResult {
    /// The object's metadata, read before the body.
    pub meta: ObjectMeta,
    /// The object's bytes, streamed.
    pub body: ByteStream,
}

/// One page of [`ObjectStore::list_page`].
#[derive(Debug, Clone, Default)]
pub struct ListPage {
    /// The objects of this page, in key order.
    pub objects: Vec<ObjectMeta>,
    /// Pass to the next `list_page` call; `None` or empty on the last page.
    pub next_page_token: Option<String>,
}

/// An object-store failure, in the kinds the callers act on.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The object does not exist (HTTP 404).
    #[error("{store}: object {key:?} not found")]
    NotFound {
        /// The store's URL (`gs://bucket`, `s3://bucket`).
        store: String,
        /// The object key.
        key: String,
    },
    /// A create-only put found the object already there, or it changed under
    /// a conditional write (HTTP 412).
    #[error("{store}: object {key:?} already exists or changed (conditional write refused)")]
    PreconditionFailed {
        /// The store's URL (`gs://bucket`, `s3://bucket`).
        store: String,
        /// The object key.
        key: String,
    },
    /// A failure a later retry should get past: timeouts, connection errors,
    /// HTTP 408, 429 and 5xx, a stream dying mid-read.
    #[error("{store}: {op} {key:?} failed temporarily ({message}); retrying later should succeed")]
    Transient {
        /// The store's URL (`gs://bucket`, `s3://bucket`).
        store: String,
        /// The operation that failed (`put`, `get`, `read`, `list`, ...).
        op: &'static str,
        /// The object key, or the prefix of a listing.
        key: String,
        /// What went wrong, usually the SDK's error text.
        message: String,
    },
    /// A failure retrying will not fix: wrong bucket, permissions or
    /// credentials, an object larger than expected.
    #[error(
        "{store}: {op} {key:?} failed ({message}); check the bucket name, permissions and credentials"
    )]
    Permanent {
        /// The store's URL (`gs://bucket`, `s3://bucket`).
        store: String,
        /// The operation that failed (`put`, `get`, `read`, `list`, ...).
        op: &'static str,
        /// The object key, or the prefix of a listing.
        key: String,
        /// What went wrong, usually the SDK's error text.
        message: String,
    },
    /// The body stream of a put failed, so the upload was abandoned and
    /// nothing was written.
    #[error("{store}: upload of {key:?} aborted because its source failed: {source}")]
    Source {
        /// The store's URL (`gs://bucket`, `s3://bucket`).
        store: String,
        /// The key that was being written.
        key: String,
        /// The body stream's error.
        #[source]
        source: io::Error,
    },
}

impl StoreError {
    /// Carries a store error through an `io::Error` (inside a byte stream).
    pub fn into_io(self) -> io::Error {
        io::Error::other(self)
    }

    fn inner(err: &io::Error) -> Option<&StoreError> {
        err.get_ref().and_then(|e| e.downcast_ref::<StoreError>())
    }

    /// Whether an I/O error read from a [`ByteStream`] is a transient store
    /// failure (for example a GCS read dying mid-stream).
    pub fn io_is_transient(err: &io::Error) -> bool {
        match Self::inner(err) {
            Some(e) => crate::error::Classify::is_transient(e),
            None => matches!(
                err.kind(),
                io::ErrorKind::TimedOut
                    | io::ErrorKind::ConnectionReset
                    | io::ErrorKind::ConnectionAborted
                    | io::ErrorKind::BrokenPipe
                    | io::ErrorKind::UnexpectedEof
            ),
        }
    }
}

/// The result of every store operation.
pub type StoreResult<T> = Result<T, StoreError>;

/// The contract every storage backend implements.
#[async_trait]
pub trait ObjectStore: Send + Sync + std::fmt::Debug {
    /// `gs://bucket` or `s3://bucket`, for messages and reports.
    fn url(&self) -> String;

    /// Streams `body` into `key`. The object becomes visible only when the
    /// whole body was written; a failed put leaves nothing new behind.
    async fn put(&self, key: &str, body: ByteStream, opts: PutOptions) -> StoreResult<ObjectMeta>;

    /// Streams the object's bytes, with its metadata.
    async fn get(&self, key: &str) -> StoreResult<GetResult>;

    /// Streams the object's bytes only, in one request on every store (a
    /// GCS `get` reads the metadata first, to pin the generation it streams).
    async fn read(&self, key: &str) -> StoreResult<ByteStream> {
        Ok(self.get(key).await?.body)
    }

    /// The object's metadata without its body; a missing object is
    /// [`StoreError::NotFound`].
    async fn head(&self, key: &str) -> StoreResult<ObjectMeta>;

    /// One page of objects whose key starts with `prefix`, in key order.
    async fn list_page(&self, prefix: &str, page_token: Option<String>) -> StoreResult<ListPage>;

    /// Deletes `key`; deleting a missing object is [`StoreError::NotFound`].
    async fn delete(&self, key: &str) -> StoreResult<()>;

    /// Streams the object's bytes from `offset` on (a resumed copy). The
    /// default reads from the start and drops the first `offset` bytes;
    /// stores that can ask for a range override it.
    async fn read_from(&self, key: &str, offset: u64) -> StoreResult<ByteStream> {
        let body = self.read(key).await?;
        Ok(skip_bytes(body, offset))
    }

    /// The store's uploads in parts, if it has them (S3).
    fn part_uploads(&self) -> Option<&dyn PartUploads> {
        None
    }
}

/// `body` without its first `n` bytes.
pub fn skip_bytes(body: ByteStream, n: u64) -> ByteStream {
    let mut left = n;
    byte_stream(body.filter_map(move |item| {
        let out = match item {
            Ok(mut b) if left > 0 => {
                let cut = left.min(b.len() as u64) as usize;
                left -= cut as u64;
                let rest = b.split_off(cut);
                (!rest.is_empty()).then_some(Ok(rest))
            }
            other => Some(other),
        };
        futures::future::ready(out)
    }))
}

/// Conveniences built only from [`ObjectStore`]'s methods.
#[async_trait]
pub trait ObjectStoreExt: ObjectStore {
    /// Every object under `prefix`, following all pages. Any failed page fails
    /// the whole listing, so callers never act on a partial view.
    async fn list_all(&self, prefix: &str) -> StoreResult<Vec<ObjectMeta>> {
        let mut all = Vec::new();
        let mut token = None;
        loop {
            let page = self.list_page(prefix, token).await?;
            all.extend(page.objects);
            match page.next_page_token {
                Some(t) if !t.is_empty() => token = Some(t),
                _ => return Ok(all),
            }
        }
    }

    /// Puts a small in-memory object, with its exact size as the size hint.
    async fn put_bytes(
        &self,
        key: &str,
        data: Bytes,
        mut opts: PutOptions,
    ) -> StoreResult<ObjectMeta> {
        opts.size_hint = Some(data.len() as u64);
        self.put(key, bytes_stream(data), opts).await
    }

    /// Reads a small object whole (manifests, signatures, drill records),
    /// refusing anything larger than `limit` bytes.
    async fn get_bytes(&self, key: &str, limit: usize) -> StoreResult<Bytes> {
        let body = self.read(key).await?;
        collect_small(body, &self.url(), key, limit).await
    }

    /// [`ObjectStoreExt::get_bytes`] with the metadata of the generation read
    /// (its version, time and checksum), from the same response.
    async fn get_bytes_with_meta(
        &self,
        key: &str,
        limit: usize,
    ) -> StoreResult<(ObjectMeta, Bytes)> {
        let got = self.get(key).await?;
        let bytes = collect_small(got.body, &self.url(), key, limit).await?;
        Ok((got.meta, bytes))
    }
}

async fn collect_small(
    mut body: ByteStream,
    url: &str,
    key: &str,
    limit: usize,
) -> StoreResult<Bytes> {
    let mut buf = Vec::new();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| match e.into_inner() {
            Some(inner) => match inner.downcast::<StoreError>() {
                Ok(store) => *store,
                Err(other) => StoreError::Transient {
                    store: url.to_string(),
                    op: "read",
                    key: key.to_string(),
                    message: other.to_string(),
                },
            },
            None => StoreError::Transient {
                store: url.to_string(),
                op: "read",
                key: key.to_string(),
                message: "stream failed".into(),
            },
        })?;
        if buf.len() + chunk.len() > limit {
            return Err(StoreError::Permanent {
                store: url.to_string(),
                op: "read",
                key: key.to_string(),
                message: format!("object is larger than the {limit} bytes expected here"),
            });
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(Bytes::from(buf))
}

impl<T: ObjectStore + ?Sized> ObjectStoreExt for T {}

/// Collects a byte stream into chunks of exactly `size` bytes (the last may be
/// shorter): S3 multipart parts need fixed sizes.
pub fn rechunk(body: ByteStream, size: usize) -> impl Stream<Item = io::Result<Bytes>> + Send {
    futures::stream::try_unfold(
        (body, bytes::BytesMut::with_capacity(size), false),
        move |(mut body, mut buf, done)| async move {
            if done {
                return Ok(None);
            }
            while buf.len() < size {
                match body.try_next().await? {
                    Some(chunk) => buf.extend_from_slice(&chunk),
                    None => {
                        if buf.is_empty() {
                            return Ok(None);
                        }
                        let last = buf.split().freeze();
                        return Ok(Some((last, (body, buf, true))));
                    }
                }
            }
            let part = buf.split_to(size).freeze();
            buf.reserve(size.saturating_sub(buf.len()));
            Ok(Some((part, (body, buf, false))))
        },
    )
}

impl crate::error::Classify for StoreError {
    fn retry(&self) -> crate::error::Retry {
        match self {
            StoreError::Transient { .. } => crate::error::Retry::Transient,
            StoreError::Source { source, .. } if StoreError::io_is_transient(source) => {
                crate::error::Retry::Transient
            }
            _ => crate::error::Retry::Permanent,
        }
    }
}

/// A transient failure is an unreachable cloud; a permanent one (wrong
/// bucket, permissions, a missing object) says nothing more by itself.
impl crate::error::Failure for StoreError {
    fn failure_kind(&self) -> crate::error::FailureKind {
        crate::error::FailureKind::of_retry(crate::error::Classify::retry(self))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::{Classify, Retry};

    #[tokio::test]
    async fn rechunk_makes_fixed_parts() {
        let pieces: Vec<io::Result<Bytes>> =
            (0..10).map(|i| Ok(Bytes::from(vec![i as u8; 7]))).collect();
        let parts: Vec<Bytes> = rechunk(byte_stream(futures::stream::iter(pieces)), 16)
            .try_collect()
            .await
            .unwrap();
        let sizes: Vec<usize> = parts.iter().map(|p| p.len()).collect();
        assert_eq!(sizes, vec![16, 16, 16, 16, 6]);
        let flat: Vec<u8> = parts.concat();
        assert_eq!(flat[15], 2);
        assert_eq!(flat.len(), 70);
    }

    #[tokio::test]
    async fn rechunk_of_empty_stream_is_empty() {
        let parts: Vec<Bytes> = rechunk(bytes_stream(Bytes::new()), 16)
            .try_collect()
            .await
            .unwrap();
        assert!(parts.is_empty());
    }

    #[test]
    fn transient_errors_survive_io_wrapping() {
        let err = StoreError::Transient {
            store: "gs://b".into(),
            op: "read",
            key: "k".into(),
            message: "503".into(),
        }
        .into_io();
        assert!(StoreError::io_is_transient(&err));
        let permanent = StoreError::NotFound {
            store: "gs://b".into(),
            key: "k".into(),
        }
        .into_io();
        assert!(!StoreError::io_is_transient(&permanent));
    }

    #[test]
    fn store_errors_inside_io_keep_their_class() {
        let transient = StoreError::Transient {
            store: "mem://".into(),
            op: "get",
            key: "k".into(),
            message: "503".into(),
        };
        let wrapped = StoreError::Source {
            store: "mem://".into(),
            key: "k".into(),
            source: transient.into_io(),
        };
        assert_eq!(wrapped.retry(), Retry::Transient);
        let missing = StoreError::NotFound {
            store: "mem://".into(),
            key: "k".into(),
        };
        assert_eq!(missing.retry(), Retry::Permanent);
        assert!(!missing.is_transient());
    }
}
