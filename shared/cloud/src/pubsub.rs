//! Alerts published to a Pub/Sub topic.

use async_trait::async_trait;

use backstop_core::alerts::{Alert, AlertError, AlertSink, LogAlerts};
use backstop_core::config::{ConfigError, Env};

use crate::timeouts::{Timeouts, within};

/// Where the production publisher sends requests.
const PRODUCTION_ENDPOINT: &str = "https://pubsub.googleapis.com";

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
    /// The publisher has no timeout of its own (it batches and retries in
    /// the background); a publish waits at most connect + request.
    timeouts: Timeouts,
}

impl PubSubAlerts {
    /// A sink for `topic`, with the emulator and [`Timeouts`] of `env`. A bad
    /// timeout setting falls back to the defaults here; [`from_env`], what
    /// the functions use, refuses it.
    pub fn new(env: &Env, topic: String) -> Self {
        let timeouts = Timeouts::from_env(env).unwrap_or_else(|e| {
            tracing::warn!(error = %e, "alert publisher uses the default timeouts");
            Timeouts::default()
        });
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
            timeouts,
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
        let publish = async {
            let publisher = self.publisher().await?;
            publisher.publish(msg).await.map_err(|e| e.to_string())
        };
        match within(self.timeouts.answer(), publish).await {
            Some(result) => result.map(|_| ()).map_err(failed),
            None => {
                let endpoint = self.emulator.as_deref().unwrap_or(PRODUCTION_ENDPOINT);
                Err(failed(self.timeouts.no_answer(endpoint)))
            }
        }
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
            Timeouts::from_env(env)?;
            Ok(Box::new(PubSubAlerts::new(env, topic)))
        }
        None => Ok(Box::new(LogAlerts)),
    }
}
