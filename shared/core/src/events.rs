//! Parsing of the triggers that reach the functions.
//!
//! * Lambda Function URL requests (HTTP), which carry Pub/Sub push deliveries
//!   and Cloud Scheduler calls, each with a Google-signed OIDC token;
//! * direct invocations (local `--event FILE`, `lambda invoke`, EventBridge);
//! * inside either: a Pub/Sub push envelope of a GCS notification, a
//!   CloudEvent `google.cloud.storage.object.v1.finalized` (structured or
//!   binary mode), an EventBridge scheduled event, or a scheduler body.

use std::collections::BTreeMap;

use base64::Engine;
use bytes::Bytes;
use serde::Deserialize;
use serde_json::Value;

/// Bodies larger than this are refused before parsing: no legitimate
/// notification comes close (Lambda itself caps requests at 6 MB).
pub const MAX_EVENT_BYTES: usize = 256 * 1024;

/// The CloudEvent type of a completed GCS object write; other types are
/// [`StorageEvent::Other`].
pub const CLOUDEVENT_FINALIZED: &str = "google.cloud.storage.object.v1.finalized";

/// A trigger that cannot be parsed. Permanent: redelivering it cannot help.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EventError {
    /// The body, or its base64 form, is over the [`MAX_EVENT_BYTES`] limit;
    /// holds its length.
    #[error(
        "event body is {0} bytes, more than the {MAX_EVENT_BYTES} accepted; this is not a storage notification"
    )]
    TooLarge(usize),
    /// The body is not JSON (nor base64 of JSON, for a schedule).
    #[error("event body is not JSON: {0}")]
    NotJson(String),
    /// The JSON is not any trigger this function accepts, or is inconsistent.
    #[error("malformed event: {0}")]
    Malformed(String),
}

/// An HTTP request as delivered by a Lambda Function URL.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HttpRequest {
    /// HTTP method, `POST` when the request does not say.
    pub method: String,
    /// The raw request path.
    pub path: String,
    /// Lower-case names.
    pub headers: BTreeMap<String, String>,
    /// The request body, base64-decoded when the URL delivered it encoded.
    pub body: Bytes,
}

impl HttpRequest {
    /// A header's value, by case-insensitive name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(&name.to_ascii_lowercase())
            .map(String::as_str)
    }
}

/// How a function was invoked.
#[derive(Debug, Clone, PartialEq)]
pub enum Invocation {
    /// Through a Function URL: the caller must prove who it is (OIDC).
    Http(HttpRequest),
    /// Directly (IAM-authorized `Invoke`, EventBridge, local `--event`).
    Direct(Value),
}

impl Invocation {
    /// Tells a Function URL request (payload format 2.0) from a direct event.
    pub fn classify(event: Value) -> Result<Self, EventError> {
        let is_http = event.get("requestContext").is_some()
            && event.get("headers").is_some()
            && event.get("version").and_then(Value::as_str) == Some("2.0");
        if !is_http {
            return Ok(Invocation::Direct(event));
        }
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct UrlRequest {
            #[serde(default)]
            raw_path: String,
            #[serde(default)]
            headers: BTreeMap<String, String>,
            #[serde(default)]
            body: Option<String>,
            #[serde(default)]
            is_base64_encoded: bool,
            request_context: Value,
        }
        let req: UrlRequest = serde_json::from_value(event)
            .map_err(|e| EventError::Malformed(format!("function URL request: {e}")))?;
        let raw = req.body.unwrap_or_default();
        if raw.len() > MAX_EVENT_BYTES * 4 / 3 + 4 {
            return Err(EventError::TooLarge(raw.len()));
        }
        let body = if req.is_base64_encoded {
            base64::engine::general_purpose::STANDARD
                .decode(raw.as_bytes())
                .map_err(|e| EventError::Malformed(format!("body is not valid base64: {e}")))?
        } else {
            raw.into_bytes()
        };
        let method = req
            .request_context
            .pointer("/http/method")
            .and_then(Value::as_str)
            .unwrap_or("POST")
            .to_string();
        Ok(Invocation::Http(HttpRequest {
            method,
            path: req.raw_path,
            headers: req
                .headers
                .into_iter()
                .map(|(k, v)| (k.to_ascii_lowercase(), v))
                .collect(),
            body: Bytes::from(body),
        }))
    }
}

/// Parses JSON with the size limit applied first.
pub fn parse_json(body: &[u8]) -> Result<Value, EventError> {
    if body.len() > MAX_EVENT_BYTES {
        return Err(EventError::TooLarge(body.len()));
    }
    serde_json::from_slice(body).map_err(|e| EventError::NotJson(e.to_string()))
}

/// A GCS object named by a notification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectRef {
    /// The bucket name.
    pub bucket: String,
    /// The object's key.
    pub name: String,
    /// The object generation written, when the notification carries it.
    pub generation: Option<i64>,
    /// Object size in bytes, when the notification carries it.
    pub size: Option<u64>,
}

/// What a storage notification reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StorageEvent {
    /// A new object (or a new generation of one) is complete.
    Finalized(ObjectRef),
    /// Any other notification (delete, archive, metadata update): nothing to do.
    Other {
        /// The notification's event type (`OBJECT_DELETE`, a CloudEvent type,
        /// ...).
        event_type: String,
        /// The object's key, when named.
        object: Option<String>,
    },
}

/// The JSON API object resource, as notifications carry it.
#[derive(Debug, Deserialize)]
struct ObjectResource {
    bucket: String,
    name: String,
    #[serde(default)]
    generation: Option<Value>,
    #[serde(default)]
    size: Option<Value>,
}

fn number(v: &Option<Value>) -> Option<i64> {
    match v {
        Some(Value::String(s)) => s.parse().ok(),
        Some(Value::Number(n)) => n.as_i64(),
        _ => None,
    }
}

impl ObjectResource {
    fn into_ref(self) -> ObjectRef {
        ObjectRef {
            generation: number(&self.generation),
            size: number(&self.size).map(|s| s.max(0) as u64),
            bucket: self.bucket,
            name: self.name,
        }
    }
}

/// Parses a storage notification from a request body (and, for binary-mode
/// CloudEvents, its headers).
pub fn parse_storage_event(
    headers: &BTreeMap<String, String>,
    body: &[u8],
) -> Result<StorageEvent, EventError> {
    if let Some(ce_type) = headers.get("ce-type") {
        return cloudevent(ce_type, &parse_json(body)?);
    }
    storage_event_from_value(&parse_json(body)?)
}

/// Parses a storage notification from an already-decoded JSON value.
pub fn storage_event_from_value(value: &Value) -> Result<StorageEvent, EventError> {
    if let Some(message) = value.get("message") {
        return pubsub_push(message);
    }
    if let Some(ce_type) = value.get("specversion").and(value.get("type")) {
        let ce_type = ce_type
            .as_str()
            .ok_or_else(|| EventError::Malformed("CloudEvent `type` is not a string".into()))?;
        let data = value
            .get("data")
            .ok_or_else(|| EventError::Malformed("CloudEvent has no `data`".into()))?;
        return cloudevent(ce_type, data);
    }
    Err(EventError::Malformed(
        "expected a Pub/Sub push envelope (`message`) or a CloudEvent (`specversion`)".into(),
    ))
}

fn cloudevent(ce_type: &str, data: &Value) -> Result<StorageEvent, EventError> {
    let object: ObjectResource = serde_json::from_value(data.clone()).map_err(|e| {
        EventError::Malformed(format!("CloudEvent data is not a storage object: {e}"))
    })?;
    if ce_type == CLOUDEVENT_FINALIZED {
        Ok(StorageEvent::Finalized(object.into_ref()))
    } else {
        Ok(StorageEvent::Other {
            event_type: ce_type.to_string(),
            object: Some(object.name),
        })
    }
}

fn pubsub_push(message: &Value) -> Result<StorageEvent, EventError> {
    #[derive(Deserialize)]
    struct Message {
        #[serde(default)]
        data: Option<String>,
        #[serde(default)]
        attributes: BTreeMap<String, String>,
    }
    let message: Message = serde_json::from_value(message.clone())
        .map_err(|e| EventError::Malformed(format!("Pub/Sub message: {e}")))?;
    let attr = |k: &str| message.attributes.get(k).cloned();
    let event_type = attr("eventType").ok_or_else(|| {
        EventError::Malformed(
            "Pub/Sub message has no `eventType` attribute: not a GCS notification".into(),
        )
    })?;
    let from_data = match message.data.as_deref().filter(|d| !d.is_empty()) {
        Some(data) => {
            let raw = base64::engine::general_purpose::STANDARD
                .decode(data)
                .map_err(|e| EventError::Malformed(format!("message.data is not base64: {e}")))?;
            let object: ObjectResource = serde_json::from_slice(&raw).map_err(|e| {
                EventError::Malformed(format!(
                    "message.data is not a storage object resource: {e}"
                ))
            })?;
            Some(object.into_ref())
        }
        None => None,
    };
    let object = match (from_data, attr("bucketId"), attr("objectId")) {
        (Some(o), bucket, name) => {
            // The attributes and the payload must describe the same object.
            if bucket.is_some_and(|b| b != o.bucket) || name.is_some_and(|n| n != o.name) {
                return Err(EventError::Malformed(
                    "attributes bucketId/objectId disagree with message.data".into(),
                ));
            }
            o
        }
        (None, Some(bucket), Some(name)) => ObjectRef {
            bucket,
            name,
            generation: attr("objectGeneration").and_then(|g| g.parse().ok()),
            size: None,
        },
        _ => {
            return Err(EventError::Malformed(
                "Pub/Sub message names no object (no data, no bucketId/objectId)".into(),
            ));
        }
    };
    if event_type == "OBJECT_FINALIZE" {
        Ok(StorageEvent::Finalized(object))
    } else {
        Ok(StorageEvent::Other {
            event_type,
            object: Some(object.name),
        })
    }
}

/// A scheduled invocation: what the caller asked for.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct ScheduleRequest {
    /// Plan and report only.
    #[serde(default)]
    pub dry_run: Option<bool>,
}

/// Parses a schedule trigger: an EventBridge scheduled event, a Cloud
/// Scheduler body (empty, JSON, or base64 of JSON), or a direct JSON request.
pub fn parse_schedule(body: &[u8]) -> Result<ScheduleRequest, EventError> {
    let trimmed = body.trim_ascii();
    if trimmed.is_empty() {
        return Ok(ScheduleRequest::default());
    }
    let value = match parse_json(trimmed) {
        Ok(v) => v,
        Err(EventError::NotJson(first)) => {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(trimmed)
                .map_err(|_| EventError::NotJson(first))?;
            parse_json(&decoded)?
        }
        Err(e) => return Err(e),
    };
    schedule_from_value(&value)
}

/// [`parse_schedule`] for an already-decoded JSON value (a direct invocation):
/// an EventBridge scheduled event, a request object or null.
pub fn schedule_from_value(value: &Value) -> Result<ScheduleRequest, EventError> {
    if value.get("detail-type").and_then(Value::as_str) == Some("Scheduled Event") {
        let detail = value.get("detail").cloned().unwrap_or(Value::Null);
        return match detail {
            Value::Object(ref m) if !m.is_empty() => serde_json::from_value(detail)
                .map_err(|e| EventError::Malformed(format!("EventBridge detail: {e}"))),
            _ => Ok(ScheduleRequest::default()),
        };
    }
    match value {
        Value::Object(_) => serde_json::from_value(value.clone())
            .map_err(|e| EventError::Malformed(format!("schedule request: {e}"))),
        Value::Null => Ok(ScheduleRequest::default()),
        _ => Err(EventError::Malformed(
            "schedule request must be a JSON object such as {\"dry_run\": true}".into(),
        )),
    }
}

crate::error::permanent!(EventError);

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn push(attributes: Value, data: Option<Value>) -> Value {
        let data = data.map(|d| base64::engine::general_purpose::STANDARD.encode(d.to_string()));
        json!({"message": {"attributes": attributes, "data": data, "messageId": "1"}, "subscription": "s"})
    }

    #[test]
    fn pubsub_finalize_with_payload() {
        let v = push(
            json!({"eventType": "OBJECT_FINALIZE", "bucketId": "b", "objectId": "o/manifest.json", "objectGeneration": "7", "payloadFormat": "JSON_API_V1"}),
            Some(
                json!({"bucket": "b", "name": "o/manifest.json", "generation": "7", "size": "12"}),
            ),
        );
        assert_eq!(
            storage_event_from_value(&v).unwrap(),
            StorageEvent::Finalized(ObjectRef {
                bucket: "b".into(),
                name: "o/manifest.json".into(),
                generation: Some(7),
                size: Some(12)
            })
        );
    }

    #[test]
    fn pubsub_without_payload_uses_attributes() {
        let v = push(
            json!({"eventType": "OBJECT_FINALIZE", "bucketId": "b", "objectId": "x", "objectGeneration": "3", "payloadFormat": "NONE"}),
            None,
        );
        assert!(
            matches!(storage_event_from_value(&v).unwrap(), StorageEvent::Finalized(o) if o.generation == Some(3))
        );
    }

    #[test]
    fn other_event_types_are_not_finalize() {
        let v = push(
            json!({"eventType": "OBJECT_DELETE", "bucketId": "b", "objectId": "x"}),
            None,
        );
        assert!(
            matches!(storage_event_from_value(&v).unwrap(), StorageEvent::Other { event_type, .. } if event_type == "OBJECT_DELETE")
        );
    }

    #[test]
    fn malformed_pubsub_messages_are_rejected_with_reasons() {
        for (v, needle) in [
            (
                push(json!({"bucketId": "b", "objectId": "x"}), None),
                "eventType",
            ),
            (
                push(json!({"eventType": "OBJECT_FINALIZE"}), None),
                "names no object",
            ),
            (
                push(
                    json!({"eventType": "OBJECT_FINALIZE", "bucketId": "other"}),
                    Some(json!({"bucket": "b", "name": "x"})),
                ),
                "disagree",
            ),
            (
                json!({"message": {"attributes": {"eventType": "OBJECT_FINALIZE"}, "data": "%%%"}}),
                "base64",
            ),
            (json!({"hello": 1}), "expected a Pub/Sub push"),
        ] {
            let err = storage_event_from_value(&v).unwrap_err();
            assert!(
                err.to_string().contains(needle),
                "{err} should mention {needle}"
            );
        }
    }

    #[test]
    fn cloudevents_structured_and_binary() {
        let v = json!({"specversion": "1.0", "type": CLOUDEVENT_FINALIZED, "source": "//storage.googleapis.com/projects/_/buckets/b", "id": "1", "data": {"bucket": "b", "name": "n", "generation": 5}});
        assert!(
            matches!(storage_event_from_value(&v).unwrap(), StorageEvent::Finalized(o) if o.generation == Some(5))
        );
        let headers: BTreeMap<String, String> =
            [("ce-type".to_string(), CLOUDEVENT_FINALIZED.to_string())].into();
        let body = json!({"bucket": "b", "name": "n"}).to_string();
        assert!(matches!(
            parse_storage_event(&headers, body.as_bytes()).unwrap(),
            StorageEvent::Finalized(_)
        ));
    }

    #[test]
    fn huge_or_binary_bodies_are_refused() {
        let big = vec![b' '; MAX_EVENT_BYTES + 1];
        assert_eq!(
            parse_storage_event(&BTreeMap::new(), &big),
            Err(EventError::TooLarge(MAX_EVENT_BYTES + 1))
        );
        assert!(matches!(
            parse_storage_event(&BTreeMap::new(), &[0xff, 0x00, 0x12]),
            Err(EventError::NotJson(_))
        ));
    }

    #[test]
    fn function_url_requests_are_unwrapped() {
        let inner = json!({"dry_run": true}).to_string();
        let ev = json!({
            "version": "2.0", "rawPath": "/", "headers": {"Authorization": "Bearer x"},
            "requestContext": {"http": {"method": "POST"}},
            "body": base64::engine::general_purpose::STANDARD.encode(&inner), "isBase64Encoded": true
        });
        let Invocation::Http(req) = Invocation::classify(ev).unwrap() else {
            panic!("not http")
        };
        assert_eq!(req.header("authorization"), Some("Bearer x"));
        assert_eq!(
            parse_schedule(&req.body).unwrap(),
            ScheduleRequest {
                dry_run: Some(true)
            }
        );
        assert!(matches!(
            Invocation::classify(json!({"a": 1})).unwrap(),
            Invocation::Direct(_)
        ));
    }

    #[test]
    fn schedule_triggers() {
        assert_eq!(parse_schedule(b"").unwrap(), ScheduleRequest::default());
        let eb = json!({"version": "0", "detail-type": "Scheduled Event", "source": "aws.events", "detail": {}});
        assert_eq!(
            schedule_from_value(&eb).unwrap(),
            ScheduleRequest::default()
        );
        let b64 = base64::engine::general_purpose::STANDARD.encode(br#"{"dry_run":false}"#);
        assert_eq!(
            parse_schedule(b64.as_bytes()).unwrap(),
            ScheduleRequest {
                dry_run: Some(false)
            }
        );
        assert!(parse_schedule(b"[1,2]").is_err());
        assert!(parse_schedule(br#"{"dry_run": "maybe"}"#).is_err());
    }
}
