//! The Pub/Sub emulator's REST API: topics and subscriptions for tests.

use base64::Engine as _;
use serde_json::{Value, json};

fn base() -> String {
    let host = std::env::var("PUBSUB_EMULATOR_HOST")
        .expect("PUBSUB_EMULATOR_HOST (run inside the local stack)");
    format!("http://{host}/v1/projects/{}", project())
}

pub fn project() -> String {
    std::env::var("PUBSUB_PROJECT_ID").unwrap_or_else(|_| "backstop-local".into())
}

pub fn topic_path(topic: &str) -> String {
    format!("projects/{}/topics/{topic}", project())
}

async fn put(url: String, body: Value) {
    let resp = reqwest::Client::new()
        .put(&url)
        .json(&body)
        .send()
        .await
        .expect("emulator answers");
    let status = resp.status();
    assert!(
        status.is_success() || status.as_u16() == 409,
        "PUT {url}: {status} {}",
        resp.text().await.unwrap_or_default()
    );
}

pub async fn create_topic(topic: &str) {
    put(format!("{}/topics/{topic}", base()), json!({})).await;
}

pub async fn create_pull_subscription(topic: &str, subscription: &str) {
    put(
        format!("{}/subscriptions/{subscription}", base()),
        json!({"topic": topic_path(topic), "ackDeadlineSeconds": 30}),
    )
    .await;
}

/// A push subscription that the emulator delivers to `endpoint` over HTTP.
pub async fn create_push_subscription(topic: &str, subscription: &str, endpoint: &str) {
    put(
        format!("{}/subscriptions/{subscription}", base()),
        json!({"topic": topic_path(topic), "ackDeadlineSeconds": 60, "pushConfig": {"pushEndpoint": endpoint}}),
    )
    .await;
}

pub async fn delete_subscription(subscription: &str) {
    let _ = reqwest::Client::new()
        .delete(format!("{}/subscriptions/{subscription}", base()))
        .send()
        .await;
}

/// Pulls (and acknowledges) up to 100 messages; returns their decoded data.
pub async fn pull(subscription: &str) -> Vec<Value> {
    let url = format!("{}/subscriptions/{subscription}:pull", base());
    let resp: Value = reqwest::Client::new()
        .post(&url)
        .json(&json!({"maxMessages": 100, "returnImmediately": true}))
        .send()
        .await
        .expect("emulator answers")
        .json()
        .await
        .expect("pull response is JSON");
    let mut out = Vec::new();
    let mut ack_ids = Vec::new();
    for m in resp["receivedMessages"]
        .as_array()
        .cloned()
        .unwrap_or_default()
    {
        ack_ids.push(m["ackId"].clone());
        let data = m["message"]["data"].as_str().unwrap_or_default();
        let raw = base64::engine::general_purpose::STANDARD
            .decode(data)
            .unwrap_or_default();
        out.push(serde_json::from_slice(&raw).unwrap_or(Value::Null));
    }
    if !ack_ids.is_empty() {
        let _ = reqwest::Client::new()
            .post(format!(
                "{}/subscriptions/{subscription}:acknowledge",
                base()
            ))
            .json(&json!({"ackIds": ack_ids}))
            .send()
            .await;
    }
    out
}
