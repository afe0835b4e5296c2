//! Alerts: findings someone must act on (a tampered backup, a stale
//! namespace) go to a Pub/Sub topic as JSON, in addition to the error log.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

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
