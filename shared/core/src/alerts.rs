//! Alerts: findings someone must act on (a tampered backup, a stale
//! namespace) go to a Pub/Sub topic as JSON, in addition to the error log.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

/// How urgent an alert is; ordered, `Critical` highest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Worth knowing; nothing to do.
    Info,
    /// Something looks wrong and needs a look; the backups may still be fine.
    Warning,
    /// A backup is missing, tampered with or unproven, or a check could not
    /// run: act now.
    Critical,
}

/// One alert, published as JSON (the Pub/Sub message attributes repeat `code`,
/// `source` and `severity`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    /// How urgent it is.
    pub severity: Severity,
    /// `replicator`, `retention`, `restore`, ...
    pub source: String,
    /// A stable machine-readable code, e.g. `verification_failed`.
    pub code: String,
    /// What happened, for a human.
    pub message: String,
    /// The backup concerned, when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup_id: Option<String>,
    /// Machine-readable context (stores, findings); omitted when null.
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    pub details: serde_json::Value,
}

/// Publishing an alert failed. Classified transient: the triggering event is
/// retried, and the alert with it.
#[derive(Debug, thiserror::Error)]
#[error("could not publish alert {code} to {topic}: {message}; the alert is in the error log")]
pub struct AlertError {
    /// The Pub/Sub topic, `projects/P/topics/T`.
    pub topic: String,
    /// The alert's [`Alert::code`].
    pub code: String,
    /// The publisher's error.
    pub message: String,
}

/// Where alerts go: Pub/Sub when `BACKSTOP_ALERT_TOPIC` is set, otherwise
/// [`LogAlerts`].
#[async_trait]
pub trait AlertSink: Send + Sync + std::fmt::Debug {
    /// Sends one alert; an error means it was not delivered.
    async fn publish(&self, alert: &Alert) -> Result<(), AlertError>;
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

/// A failed publish: the topic may be back later (and the alert is in the
/// error log meanwhile).
impl crate::error::Classify for AlertError {
    fn retry(&self) -> crate::error::Retry {
        crate::error::Retry::Transient
    }
}
