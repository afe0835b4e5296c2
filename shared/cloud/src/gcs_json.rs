//! A `StorageControl` stub over the GCS JSON API, for local emulators.
//!
//! The official `StorageControl` client speaks gRPC only, and no local GCS
//! emulator serves that API. `GcsStore` therefore builds the very same
//! `StorageControl` client with `StorageControl::from_stub(JsonApiControl)`
//! when `STORAGE_EMULATOR_HOST` is set. This is the one place where tests and
//! the local demo do not use the production transport; everything above the
//! client is shared.

use std::collections::HashMap;

use google_cloud_gax::error::Error;
use google_cloud_gax::options::RequestOptions;
use google_cloud_gax::response::Response;
use google_cloud_storage::model::{
    DeleteObjectRequest, GetObjectRequest, ListObjectsRequest, ListObjectsResponse, Object,
    ObjectChecksums,
};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde::Deserialize;

/// Characters left alone in a path segment; everything else is escaped, `/`
/// included, as the JSON API expects for object names.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

#[derive(Debug, Clone)]
pub struct JsonApiControl {
    endpoint: String,
    http: reqwest::Client,
}

impl JsonApiControl {
    /// A stub for `endpoint`, with reqwest's own connect and read (first
    /// byte, then between reads) timeouts; `GcsStore` also bounds each call.
    pub fn new(endpoint: &str, timeouts: &crate::timeouts::Timeouts) -> Self {
        let http = reqwest::Client::builder()
            .connect_timeout(timeouts.connect)
            .read_timeout(timeouts.request)
            .build()
            // What `reqwest::Client::new()` does on the same failure.
            .expect("the HTTP client for the storage emulator could not be built (TLS backend)");
        Self {
            endpoint: endpoint.trim_end_matches('/').to_string(),
            http,
        }
    }

    fn bucket_id(name: &str) -> &str {
        name.strip_prefix("projects/_/buckets/").unwrap_or(name)
    }

    fn object_url(&self, bucket: &str, object: &str) -> String {
        format!(
            "{}/storage/v1/b/{}/o/{}",
            self.endpoint,
            utf8_percent_encode(Self::bucket_id(bucket), SEGMENT),
            utf8_percent_encode(object, SEGMENT)
        )
    }

    async fn call(&self, req: reqwest::RequestBuilder) -> Result<bytes::Bytes, Error> {
        let resp = req.send().await.map_err(|e| {
            if e.is_timeout() {
                Error::timeout(e)
            } else if e.is_connect() {
                Error::connect(e)
            } else {
                Error::io(e)
            }
        })?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = resp.bytes().await.map_err(Error::io)?;
        if (200..300).contains(&status) {
            Ok(body)
        } else {
            Err(Error::http(status, headers, body))
        }
    }
}

/// The JSON API's object resource (only the fields Backstop reads).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct JsonObject {
    name: String,
    #[serde(default)]
    size: Option<String>,
    #[serde(default)]
    generation: Option<String>,
    #[serde(default)]
    crc32c: Option<String>,
    #[serde(default)]
    metadata: HashMap<String, String>,
    #[serde(default)]
    updated: Option<String>,
    #[serde(default)]
    time_created: Option<String>,
    #[serde(default)]
    content_type: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct JsonList {
    #[serde(default)]
    items: Vec<JsonObject>,
    #[serde(default)]
    next_page_token: Option<String>,
}

fn timestamp(s: &Option<String>) -> Option<google_cloud_wkt::Timestamp> {
    let t = chrono::DateTime::parse_from_rfc3339(s.as_deref()?).ok()?;
    google_cloud_wkt::Timestamp::new(t.timestamp(), t.timestamp_subsec_nanos() as i32).ok()
}

fn into_object(bucket: &str, o: JsonObject) -> Object {
    use base64::Engine;
    let crc = o
        .crc32c
        .as_deref()
        .and_then(|c| base64::engine::general_purpose::STANDARD.decode(c).ok())
        .and_then(|raw| <[u8; 4]>::try_from(raw).ok())
        .map(u32::from_be_bytes);
    let mut obj = Object::new()
        .set_name(o.name)
        .set_bucket(format!(
            "projects/_/buckets/{}",
            JsonApiControl::bucket_id(bucket)
        ))
        .set_size(o.size.and_then(|s| s.parse().ok()).unwrap_or(0i64))
        .set_generation(o.generation.and_then(|g| g.parse().ok()).unwrap_or(0i64))
        .set_metadata(o.metadata)
        .set_content_type(o.content_type.unwrap_or_default());
    if let Some(crc) = crc {
        obj = obj.set_checksums(ObjectChecksums::new().set_crc32c(crc));
    }
    if let Some(t) = timestamp(&o.updated) {
        obj = obj.set_update_time(t);
    }
    if let Some(t) = timestamp(&o.time_created) {
        obj = obj.set_create_time(t);
    }
    obj
}

fn decode<T: for<'de> Deserialize<'de>>(body: &[u8]) -> Result<T, Error> {
    serde_json::from_slice(body).map_err(Error::deser)
}

impl google_cloud_storage::stub::StorageControl for JsonApiControl {
    async fn get_object(
        &self,
        req: GetObjectRequest,
        _options: RequestOptions,
    ) -> google_cloud_storage::Result<Response<Object>> {
        let body = self
            .call(self.http.get(self.object_url(&req.bucket, &req.object)))
            .await?;
        Ok(Response::from(into_object(&req.bucket, decode(&body)?)))
    }

    async fn delete_object(
        &self,
        req: DeleteObjectRequest,
        _options: RequestOptions,
    ) -> google_cloud_storage::Result<Response<()>> {
        let mut http = self.http.delete(self.object_url(&req.bucket, &req.object));
        if let Some(g) = req.if_generation_match {
            http = http.query(&[("ifGenerationMatch", g.to_string())]);
        }
        self.call(http).await?;
        Ok(Response::from(()))
    }

    async fn list_objects(
        &self,
        req: ListObjectsRequest,
        _options: RequestOptions,
    ) -> google_cloud_storage::Result<Response<ListObjectsResponse>> {
        let url = format!(
            "{}/storage/v1/b/{}/o",
            self.endpoint,
            utf8_percent_encode(Self::bucket_id(&req.parent), SEGMENT)
        );
        let mut query: Vec<(&str, String)> = vec![("prefix", req.prefix.clone())];
        if req.page_size > 0 {
            query.push(("maxResults", req.page_size.to_string()));
        }
        if !req.page_token.is_empty() {
            query.push(("pageToken", req.page_token.clone()));
        }
        let body = self.call(self.http.get(url).query(&query)).await?;
        let list: JsonList = decode(&body)?;
        let objects: Vec<Object> = list
            .items
            .into_iter()
            .map(|o| into_object(&req.parent, o))
            .collect();
        Ok(Response::from(
            ListObjectsResponse::new()
                .set_objects(objects)
                .set_next_page_token(list.next_page_token.unwrap_or_default()),
        ))
    }
}
