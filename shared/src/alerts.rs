//! Alerts: findings someone must act on (a tampered backup, a stale
//! namespace) go to a Pub/Sub topic as JSON, in addition to the error log.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::config::{ConfigError, Env};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Warning,
    Critical,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    pub severity: Severity,
    /// `replicator`, `retention`, `restore`, ...
    pub source: String,
    /// A stable machine-readable code, e.g. `verification_failed`.
    pub code: String,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup_id: Option<String>,
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    pub details: serde_json::Value,
}

#[derive(Debug, thiserror::Error)]
#[error("could not publish alert {code} to {topic}: {message}; the alert is in the error log")]
pub struct AlertError {
    pub topic: String,
    pub code: String,
    pub message: String,
}

#[async_trait]
pub trait AlertSink: Send + Sync + std::fmt::Debug {
    async fn publish(&self, alert: &Alert) -> Result<(), AlertError>;
}

/// Publishes to Pub/Sub with the official client (the emulator when
/// `PUBSUB_EMULATOR_HOST` is set).
///
/// The publisher is built on the first alert, not at start-up: alerts are
/// rare, and building a gRPC client (credentials, TLS roots) would add to
/// every cold start of the functions that carry this sink.
#[derive(Debug)]
pub struct PubSubAlerts {
    topic: String,
    emulator: Option<String>,
    publisher: tokio::sync::OnceCell<google_cloud_pubsub::client::Publisher>,
}

impl PubSubAlerts {
    pub fn new(env: &Env, topic: String) -> Self {
        let emulator = env.optional("PUBSUB_EMULATOR_HOST").map(|host| {
            if host.starts_with("http") {
                host
            } else {
                format!("http://{host}")
            }
        });
        Self {
            topic,
            emulator,
            publisher: tokio::sync::OnceCell::new(),
        }
    }

    async fn publisher(&self) -> Result<&google_cloud_pubsub::client::Publisher, String> {
        self.publisher
            .get_or_try_init(|| async {
                let mut builder =
                    google_cloud_pubsub::client::Publisher::builder(self.topic.clone());
                if let Some(endpoint) = &self.emulator {
                    builder = builder.with_endpoint(endpoint.clone()).with_credentials(
                        google_cloud_auth::credentials::anonymous::Builder::new().build(),
                    );
                }
                builder
                    .build()
                    .await
                    .map_err(|e| format!("could not build the Pub/Sub publisher: {e}"))
            })
            .await
    }
}

#[async_trait]
impl AlertSink for PubSubAlerts {
    async fn publish(&self, alert: &Alert) -> Result<(), AlertError> {
        let data = serde_json::to_vec(alert).expect("alert serializes");
        let severity = serde_json::to_value(alert.severity).expect("severity serializes");
        let msg = google_cloud_pubsub::model::Message::new()
            .set_data(bytes::Bytes::from(data))
            .set_attributes([
                ("code".to_string(), alert.code.clone()),
                ("source".to_string(), alert.source.clone()),
                (
                    "severity".to_string(),
                    severity.as_str().unwrap_or_default().to_string(),
                ),
            ]);
        let failed = |message: String| AlertError {
            topic: self.topic.clone(),
            code: alert.code.clone(),
            message,
        };
        self.publisher()
            .await
            .map_err(failed)?
            .publish(msg)
            .await
            .map(|_| ())
            .map_err(|e| failed(e.to_string()))
    }
}

/// Used when no alert topic is configured: the error log is the only channel.
#[derive(Debug, Default)]
pub struct LogAlerts;

#[async_trait]
impl AlertSink for LogAlerts {
    async fn publish(&self, alert: &Alert) -> Result<(), AlertError> {
        tracing::error!(code = %alert.code, source = %alert.source, backup_id = ?alert.backup_id, "ALERT: {}", alert.message);
        Ok(())
    }
}

/// The configured sink: Pub/Sub when `BACKSTOP_ALERT_TOPIC` is set.
pub fn from_env(env: &Env) -> Result<Box<dyn AlertSink>, ConfigError> {
    match env.optional("BACKSTOP_ALERT_TOPIC") {
        Some(topic) => {
            if !topic.starts_with("projects/") || !topic.contains("/topics/") {
                return Err(env.invalid(
                    "BACKSTOP_ALERT_TOPIC",
                    "expected projects/PROJECT/topics/TOPIC",
                ));
            }
            Ok(Box::new(PubSubAlerts::new(env, topic)))
        }
        None => Ok(Box::new(LogAlerts)),
    }
}
