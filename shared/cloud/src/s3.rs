//! S3 adapter on `aws-sdk-s3`.
//!
//! Uploads stream as multipart uploads with several parts in flight (memory is
//! bounded by `part_size * (concurrency + 1)`), each part carrying a CRC32C
//! checksum; a conditional create uses `If-None-Match: *` on completion. A
//! failed upload is aborted so nothing partial stays behind.
//!
//! Every object is stored with a full-object CRC32C that S3 checks against
//! the bytes it received (single puts, and multipart uploads of checksum
//! type `FULL_OBJECT`), and `head`/`get` read it back (`ChecksumMode`):
//! [`ObjectMeta::crc32c`] is what S3 computed, not what a writer claimed in
//! user metadata.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use aws_sdk_s3::Client;
use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream as AwsBody;
use aws_sdk_s3::types::{ChecksumAlgorithm, ChecksumMode, ChecksumType, CompletedPart};
use base64::Engine;
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};

use backstop_core::config::{ConfigError, Env};
use backstop_core::store::{
    ByteStream, GetResult, ListPage, ObjectMeta, ObjectStore, PutMode, PutOptions, StoreError,
    StoreResult, byte_stream, rechunk,
};

use crate::timeouts::Timeouts;

#[path = "s3_parts.rs"]
mod parts;

/// S3's minimum part size is 5 MiB; 8 MiB keeps memory small and requests few.
pub const DEFAULT_PART_SIZE: usize = 8 * 1024 * 1024;
pub const DEFAULT_CONCURRENCY: usize = 4;

#[derive(Debug, Clone)]
pub struct S3Store {
    client: Client,
    bucket: String,
    part_size: usize,
    concurrency: usize,
    page_size: i32,
    /// Where requests go and the timeouts the client was built with, for
    /// the message of a timeout.
    endpoint: String,
    timeouts: Timeouts,
}

/// Whether requests to `endpoint` never use TLS (a local S3 server).
fn is_plain_http(endpoint: &str) -> bool {
    endpoint
        .get(..7)
        .is_some_and(|scheme| scheme.eq_ignore_ascii_case("http://"))
}

/// An HTTP client for a plain-HTTP endpoint. The SDK's default client loads
/// and parses every system CA certificate when the S3 client is built (about
/// 5 ms of a cold start on a Debian host with `SSL_CERT_DIR` set), for TLS
/// that an `http://` endpoint never speaks; its trust store is left empty, so
/// an `https://` redirect would fail verification rather than go unchecked.
fn plain_http_client() -> aws_sdk_s3::config::SharedHttpClient {
    use aws_smithy_http_client::tls::{
        Provider, TlsContext, TrustStore, rustls_provider::CryptoMode,
    };
    aws_smithy_http_client::Builder::new()
        .tls_provider(Provider::Rustls(CryptoMode::AwsLc))
        .tls_context(
            TlsContext::builder()
                .with_trust_store(TrustStore::empty())
                .build()
                .expect("an empty trust store is a valid TLS context"),
        )
        .build_https()
}

/// The SDK's own knobs for [`Timeouts`]: connecting; the first byte of an
/// answer (`read_timeout`: per attempt, the SDK makes three); and a body
/// that stops flowing either way (stalled-stream protection, after a grace
/// period of the request timeout). No operation timeout: an upload of a
/// large part, or a long copy, may take as long as bytes keep flowing.
fn timeout_settings(
    t: &Timeouts,
) -> (
    aws_sdk_s3::config::timeout::TimeoutConfig,
    aws_sdk_s3::config::StalledStreamProtectionConfig,
) {
    (
        aws_sdk_s3::config::timeout::TimeoutConfig::builder()
            .connect_timeout(t.connect)
            .read_timeout(t.request)
            .build(),
        aws_sdk_s3::config::StalledStreamProtectionConfig::enabled()
            .grace_period(t.request)
            .build(),
    )
}

/// The variable that names the replica bucket.
pub const S3_BUCKET_VAR: &str = "BACKSTOP_S3_BUCKET";

/// Builds an [`S3Store`]: the bucket, and the client settings of an [`Env`]
/// (the AWS configuration chain, `AWS_ENDPOINT_URL_S3`, the
/// [`crate::timeouts`] variables).
#[derive(Debug, Clone, Default)]
pub struct S3StoreBuilder {
    bucket: Option<String>,
    env: Env,
}

impl S3StoreBuilder {
    /// The bucket; without it, [`S3_BUCKET_VAR`] from the environment.
    pub fn bucket(mut self, bucket: impl Into<String>) -> Self {
        self.bucket = Some(bucket.into());
        self
    }

    /// Where the client settings (and the default bucket) come from.
    pub fn env(mut self, env: &Env) -> Self {
        self.env = env.clone();
        self
    }

    /// Builds the client.
    pub async fn build(self) -> Result<S3Store, ConfigError> {
        let bucket = match self.bucket {
            Some(bucket) => bucket,
            None => self
                .env
                .required(S3_BUCKET_VAR, backstop_core::config::hint::S3_BUCKET)?,
        };
        S3Store::connect(&self.env, bucket).await
    }
}

impl S3Store {
    /// A store over a client built elsewhere (its timeouts are its own;
    /// messages assume the defaults and the global endpoint).
    pub fn new(client: Client, bucket: impl Into<String>) -> Self {
        Self {
            client,
            bucket: bucket.into(),
            part_size: DEFAULT_PART_SIZE,
            concurrency: DEFAULT_CONCURRENCY,
            page_size: 1000,
            endpoint: "https://s3.amazonaws.com".into(),
            timeouts: Timeouts::default(),
        }
    }

    /// A builder: `S3Store::builder().env(&env).bucket("b").build().await`.
    pub fn builder() -> S3StoreBuilder {
        S3StoreBuilder::default()
    }

    /// The store of [`S3_BUCKET_VAR`], client settings from `env`.
    pub async fn from_env(env: &Env) -> Result<Self, ConfigError> {
        Self::builder().env(env).build().await
    }

    /// Builds a client from the standard AWS configuration chain. With
    /// `AWS_ENDPOINT_URL_S3` set (local S3 servers) requests use path-style
    /// addressing. Checksums are computed and validated only where we ask for
    /// them: local servers get multipart full-object checksums wrong.
    /// Timeouts: see [`timeout_settings`].
    async fn connect(env: &Env, bucket: String) -> Result<Self, ConfigError> {
        let timeouts = Timeouts::from_env(env)?;
        let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest());
        if env.optional("AWS_ACCESS_KEY_ID").is_some() {
            // What the default chain would pick first anyway (and what Lambda
            // provides), without building the chain's STS, SSO and IMDS
            // clients: each parses the CA certificates, at every cold start.
            loader = loader.credentials_provider(
                aws_config::environment::EnvironmentVariableCredentialsProvider::new(),
            );
        }
        let endpoint = env.optional("AWS_ENDPOINT_URL_S3");
        if endpoint.as_deref().is_some_and(is_plain_http) {
            loader = loader.http_client(plain_http_client());
        }
        let shared = loader.load().await;
        let (timeout_config, stalled) = timeout_settings(&timeouts);
        let mut conf = aws_sdk_s3::config::Builder::from(&shared)
            .request_checksum_calculation(
                aws_sdk_s3::config::RequestChecksumCalculation::WhenRequired,
            )
            .response_checksum_validation(
                aws_sdk_s3::config::ResponseChecksumValidation::WhenRequired,
            )
            .timeout_config(timeout_config)
            .stalled_stream_protection(stalled);
        let region = match shared.region() {
            Some(region) => region.to_string(),
            None => {
                conf = conf.region(aws_sdk_s3::config::Region::new("us-east-1"));
                "us-east-1".to_string()
            }
        };
        let named = match &endpoint {
            Some(endpoint) => endpoint.clone(),
            None => format!("https://s3.{region}.amazonaws.com"),
        };
        if let Some(endpoint) = endpoint {
            conf = conf.endpoint_url(endpoint).force_path_style(true);
        }
        Ok(Self {
            endpoint: named,
            timeouts,
            ..Self::new(Client::from_conf(conf.build()), bucket)
        })
    }

    pub fn with_part_size(mut self, part_size: usize) -> Self {
        self.part_size = part_size.max(5 * 1024 * 1024);
        self
    }

    pub fn with_concurrency(mut self, concurrency: usize) -> Self {
        self.concurrency = concurrency.max(1);
        self
    }

    pub fn with_page_size(mut self, page_size: i32) -> Self {
        self.page_size = page_size.clamp(1, 1000);
        self
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    fn map_err<E>(&self, op: &'static str, key: &str, err: SdkError<E, HttpResponse>) -> StoreError
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        let status = err.raw_response().map(|r| r.status().as_u16());
        let code = err.code().map(str::to_string);
        let message = match (&code, err.message()) {
            (Some(c), Some(m)) => format!("{c}: {m}"),
            (Some(c), None) => c.clone(),
            _ => format!("{}", aws_sdk_s3::error::DisplayErrorContext(&err)),
        };
        let timed_out = match &err {
            SdkError::TimeoutError(_) => true,
            SdkError::DispatchFailure(d) => d.is_timeout(),
            _ => false,
        };
        let message = if timed_out {
            format!("{} ({message})", self.timeouts.late(&self.endpoint))
        } else {
            message
        };
        let store = self.url();
        let key = key.to_string();
        match (&err, status, code.as_deref()) {
            (_, Some(404), _) | (_, _, Some("NoSuchKey" | "NotFound")) => {
                StoreError::NotFound { store, key }
            }
            (_, Some(412), _)
            | (_, _, Some("PreconditionFailed" | "ConditionalRequestConflict")) => {
                StoreError::PreconditionFailed { store, key }
            }
            (SdkError::TimeoutError(_) | SdkError::DispatchFailure(_), _, _)
            | (_, Some(408 | 429 | 500..=599), _)
            | (_, _, Some("SlowDown" | "RequestTimeout" | "InternalError")) => {
                StoreError::Transient {
                    store,
                    op,
                    key,
                    message,
                }
            }
            _ => StoreError::Permanent {
                store,
                op,
                key,
                message,
            },
        }
    }

    async fn put_single(
        &self,
        key: &str,
        data: Bytes,
        opts: &PutOptions,
    ) -> StoreResult<ObjectMeta> {
        let size = data.len() as u64;
        let crc = crc32c::crc32c(&data);
        let mut req = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .checksum_algorithm(ChecksumAlgorithm::Crc32C)
            .checksum_crc32_c(crc_b64(crc))
            .set_metadata(Some(opts.metadata.clone().into_iter().collect()))
            .set_content_type(opts.content_type.clone())
            .body(AwsBody::from(data));
        if opts.mode == PutMode::Create {
            req = req.if_none_match("*");
        }
        let out = req.send().await.map_err(|e| self.map_err("put", key, e))?;
        Ok(ObjectMeta {
            key: key.to_string(),
            size,
            metadata: opts.metadata.clone(),
            crc32c: Some(crc),
            version: out.version_id().or(out.e_tag()).map(str::to_string),
            updated: None,
        })
    }

    async fn put_multipart(
        &self,
        key: &str,
        first: Bytes,
        parts: impl futures::Stream<Item = std::io::Result<Bytes>> + Send,
        opts: &PutOptions,
    ) -> StoreResult<ObjectMeta> {
        use backstop_core::store::PartUploads;
        let upload_id = self.start_upload(key, opts).await?;
        let result = self
            .upload_parts_and_complete(key, &upload_id, first, parts, opts)
            .await;
        if result.is_err() {
            // Nothing partial may stay visible or billable; a failed abort
            // leaves only invisible parts that the bucket lifecycle removes.
            if let Err(e) = self.abort_upload(key, &upload_id).await {
                tracing::warn!(key, upload_id, error = %e, "could not abort multipart upload");
            }
        }
        result
    }

    /// Uploads part `number` with its CRC32C; returns the completed part,
    /// its size and its CRC32C (combined into the object's checksum).
    async fn put_part(
        &self,
        key: &str,
        upload_id: &str,
        number: i32,
        part: Bytes,
    ) -> StoreResult<(CompletedPart, u64, u32)> {
        let size = part.len() as u64;
        let crc = crc32c::crc32c(&part);
        let out = self
            .client
            .upload_part()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(upload_id)
            .part_number(number)
            .checksum_crc32_c(crc_b64(crc))
            .body(AwsBody::from(part))
            .send()
            .await
            .map_err(|e| self.map_err("upload part", key, e))?;
        let completed = CompletedPart::builder()
            .part_number(number)
            .set_e_tag(out.e_tag().map(str::to_string))
            .checksum_crc32_c(crc_b64(crc))
            .build();
        Ok((completed, size, crc))
    }

    async fn upload_parts_and_complete(
        &self,
        key: &str,
        upload_id: &str,
        first: Bytes,
        parts: impl futures::Stream<Item = std::io::Result<Bytes>> + Send,
        opts: &PutOptions,
    ) -> StoreResult<ObjectMeta> {
        let all = futures::stream::once(async move { Ok(first) }).chain(parts);
        let this = Arc::new(self.clone());
        let store = self.url();
        let uploads = all
            .enumerate()
            .map(|(i, part)| {
                let this = this.clone();
                let (key, upload_id) = (key.to_string(), upload_id.to_string());
                let store = store.clone();
                async move {
                    let part = part.map_err(|source| StoreError::Source {
                        store,
                        key: key.clone(),
                        source,
                    })?;
                    this.put_part(&key, &upload_id, i as i32 + 1, part).await
                }
            })
            .buffered(self.concurrency);
        let done: Vec<(CompletedPart, u64, u32)> = uploads.try_collect().await?;
        let parts: Vec<backstop_core::store::UploadedPart> = done
            .into_iter()
            .map(|(p, size, crc)| backstop_core::store::UploadedPart {
                number: p.part_number().unwrap_or_default().max(0) as u32,
                size,
                crc32c: Some(crc),
                etag: p.e_tag().map(str::to_string),
            })
            .collect();
        // S3 checks the whole object against the parts' combined CRC32C and
        // the size, and stores the CRC32C as the object's checksum.
        let mut meta = backstop_core::store::PartUploads::complete_upload(
            self, key, upload_id, &parts, opts.mode,
        )
        .await?;
        meta.metadata = opts.metadata.clone();
        Ok(meta)
    }
}

fn crc_b64(crc: u32) -> String {
    base64::engine::general_purpose::STANDARD.encode(crc.to_be_bytes())
}

fn crc_from_b64(s: &str) -> Option<u32> {
    let raw = base64::engine::general_purpose::STANDARD.decode(s).ok()?;
    Some(u32::from_be_bytes(raw.try_into().ok()?))
}

fn to_chrono(t: &aws_sdk_s3::primitives::DateTime) -> Option<chrono::DateTime<chrono::Utc>> {
    chrono::DateTime::from_timestamp(t.secs(), t.subsec_nanos())
}

#[async_trait]
impl ObjectStore for S3Store {
    fn url(&self) -> String {
        format!("s3://{}", self.bucket)
    }

    async fn put(&self, key: &str, body: ByteStream, opts: PutOptions) -> StoreResult<ObjectMeta> {
        let mut parts = Box::pin(rechunk(body, self.part_size));
        let source_err = |source| StoreError::Source {
            store: self.url(),
            key: key.to_string(),
            source,
        };
        let first = parts
            .try_next()
            .await
            .map_err(source_err)?
            .unwrap_or_default();
        if first.len() < self.part_size {
            // Small objects (manifests, drill records) take one request.
            return self.put_single(key, first, &opts).await;
        }
        let second = parts.try_next().await.map_err(source_err)?;
        match second {
            None => self.put_single(key, first, &opts).await,
            Some(second) => {
                let rest = futures::stream::once(async move { Ok(second) }).chain(parts);
                self.put_multipart(key, first, rest, &opts).await
            }
        }
    }

    async fn get(&self, key: &str) -> StoreResult<GetResult> {
        let out = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            // The stored CRC32C comes back with the body, so a reader (the
            // retention verifier) compares it with the signed manifest
            // without another request.
            .checksum_mode(ChecksumMode::Enabled)
            .send()
            .await
            .map_err(|e| self.map_err("get", key, e))?;
        let meta = ObjectMeta {
            key: key.to_string(),
            size: out.content_length().unwrap_or_default().max(0) as u64,
            metadata: out
                .metadata()
                .map(|m| {
                    m.iter()
                        .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
                        .collect()
                })
                .unwrap_or_default(),
            crc32c: full_object_crc(out.checksum_crc32_c(), out.checksum_type()),
            version: out.version_id().or(out.e_tag()).map(str::to_string),
            updated: out.last_modified().and_then(to_chrono),
        };
        let store = self.url();
        let key_owned = key.to_string();
        // Mostly the stalled-stream protection: the body stopped flowing.
        let (endpoint, hint) = (self.endpoint.clone(), self.timeouts.hint());
        let body = out.body;
        let stream = futures::stream::try_unfold(body, |mut body| async move {
            match body.try_next().await {
                Ok(Some(chunk)) => Ok(Some((chunk, body))),
                Ok(None) => Ok(None),
                Err(e) => Err(e),
            }
        })
        .map_err(move |e| {
            StoreError::Transient {
                store: store.clone(),
                op: "read",
                key: key_owned.clone(),
                message: format!(
                    "reading from {endpoint} failed ({}); {hint}",
                    aws_sdk_s3::error::DisplayErrorContext(&e)
                ),
            }
            .into_io()
        });
        Ok(GetResult {
            meta,
            body: byte_stream(stream),
        })
    }

    async fn head(&self, key: &str) -> StoreResult<ObjectMeta> {
        let out = self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(key)
            .checksum_mode(ChecksumMode::Enabled)
            .send()
            .await
            .map_err(|e| self.map_err("head", key, e))?;
        Ok(ObjectMeta {
            key: key.to_string(),
            size: out.content_length().unwrap_or_default().max(0) as u64,
            metadata: out
                .metadata()
                .map(|m| {
                    m.iter()
                        .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
                        .collect()
                })
                .unwrap_or_default(),
            crc32c: full_object_crc(out.checksum_crc32_c(), out.checksum_type()),
            version: out.version_id().or(out.e_tag()).map(str::to_string),
            updated: out.last_modified().and_then(to_chrono),
        })
    }

    async fn list_page(&self, prefix: &str, page_token: Option<String>) -> StoreResult<ListPage> {
        let out = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(prefix)
            .max_keys(self.page_size)
            .set_continuation_token(page_token)
            .send()
            .await
            .map_err(|e| self.map_err("list", prefix, e))?;
        let objects = out
            .contents()
            .iter()
            .map(|o| ObjectMeta {
                key: o.key().unwrap_or_default().to_string(),
                size: o.size().unwrap_or_default().max(0) as u64,
                metadata: BTreeMap::new(),
                crc32c: None,
                version: o.e_tag().map(str::to_string),
                updated: o.last_modified().and_then(to_chrono),
            })
            .collect();
        let next_page_token = if out.is_truncated().unwrap_or(false) {
            out.next_continuation_token().map(str::to_string)
        } else {
            None
        };
        Ok(ListPage {
            objects,
            next_page_token,
        })
    }

    fn part_uploads(&self) -> Option<&dyn backstop_core::store::PartUploads> {
        Some(self)
    }

    async fn delete(&self, key: &str) -> StoreResult<()> {
        // S3 deletes are silent about missing keys; the contract says
        // NotFound, so look first.
        self.head(key).await?;
        self.client
            .delete_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| self.map_err("delete", key, e))?;
        Ok(())
    }
}

/// A 200 answer whose body did not parse: the operation happened.
fn completed_but_unparsed<E>(err: &SdkError<E, HttpResponse>) -> bool {
    matches!(err, SdkError::ServiceError(_))
        && err
            .raw_response()
            .is_some_and(|r| r.status().as_u16() == 200)
}

/// The object's own CRC32C, as S3 stored it. A composite checksum (older
/// multipart uploads: `xxxx-N`, a checksum of the parts' checksums) is not
/// the object's CRC32C and gives `None`.
fn full_object_crc(value: Option<&str>, kind: Option<&ChecksumType>) -> Option<u32> {
    let value = value?;
    if value.contains('-') || kind == Some(&ChecksumType::Composite) {
        None
    } else {
        crc_from_b64(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc_encoding_round_trips() {
        let crc = crc32c::crc32c(b"hello world");
        assert_eq!(crc_from_b64(&crc_b64(crc)), Some(crc));
        let b64 = crc_b64(crc);
        assert_eq!(full_object_crc(Some(&format!("{b64}-3")), None), None);
        assert_eq!(
            full_object_crc(Some(&b64), Some(&ChecksumType::Composite)),
            None
        );
        assert_eq!(
            full_object_crc(Some(&b64), Some(&ChecksumType::FullObject)),
            Some(crc)
        );
        assert_eq!(full_object_crc(Some(&b64), None), Some(crc));
    }
}
