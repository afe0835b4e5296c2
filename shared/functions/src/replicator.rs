//! The replicator as a deployable Lambda function.

use std::sync::Arc;

use backstop_core::alerts::AlertSink;
use backstop_core::error::Classify;
use backstop_core::events::StorageEvent;
use backstop_core::replicate::{Deadline, ReplicateError, Replicator};

/// The replicator as a deployable function: OIDC-checked Function URL
/// requests and direct invocations in, [`Outcome`]s out.
#[derive(Debug)]
pub struct ReplicatorFunction {
    pub replicator: Replicator,
    pub oidc: backstop_cloud::oidc::OidcVerifier,
    /// How long one invocation may copy when no Lambda deadline applies
    /// (`BACKSTOP_REPLICATE_DEADLINE`); `None`: no limit.
    pub deadline_window: Option<std::time::Duration>,
}

/// The variable bounding one local invocation's copy (a duration).
pub const REPLICATE_DEADLINE_VAR: &str = "BACKSTOP_REPLICATE_DEADLINE";

/// The deadline window from `BACKSTOP_REPLICATE_DEADLINE`: unset means none.
fn deadline_window(
    env: &backstop_core::config::Env,
) -> Result<Option<std::time::Duration>, backstop_core::config::ConfigError> {
    let Some(text) = env.optional(REPLICATE_DEADLINE_VAR) else {
        return Ok(None);
    };
    backstop_core::retention::parse_duration(&text)
        .ok()
        .and_then(|d| d.to_std().ok())
        .map(Some)
        .ok_or_else(|| {
            env.invalid(
                REPLICATE_DEADLINE_VAR,
                "expected a duration such as \"60s\" or \"14min\" (how long one invocation may copy)",
            )
        })
}

impl ReplicatorFunction {
    /// Builds clients and keys from the environment (see README for the
    /// variables); every missing or invalid variable is named.
    pub async fn from_env(
        env: &backstop_core::config::Env,
    ) -> Result<Self, backstop_core::config::ConfigError> {
        use backstop_cloud::gcs::GcsStore;
        use backstop_cloud::s3::S3Store;
        // The GCS client loads the CA certificates on a task of its own; the
        // first event's S3 read does not wait for it.
        let source = GcsStore::builder().env(env).start()?;
        let (target, keys) = tokio::try_join!(
            env.spawn(|env| async move { S3Store::from_env(&env).await }),
            env.spawn(|env| async move { backstop_core::trust::TrustedKeys::from_env(&env).await }),
        )?;
        let source_bucket = source.bucket().to_string();
        let mut namespaces = env.list("BACKSTOP_REPLICATE_NAMESPACES");
        if namespaces.is_empty() {
            namespaces.push("production".into());
        }
        let alerts: Arc<dyn AlertSink> = Arc::from(backstop_cloud::pubsub::from_env(env)?);
        let oidc = backstop_cloud::oidc::OidcVerifier::new(
            &backstop_cloud::oidc::OidcConfig::from_env(env)?,
        )
        .with_timeouts(backstop_cloud::timeouts::Timeouts::from_env(env)?);
        Ok(Self {
            replicator: Replicator {
                source: Arc::new(source),
                target: Arc::new(target),
                source_bucket,
                signing_keys: keys.signing,
                recipients: keys.recipients,
                namespaces,
                alerts,
            },
            oidc,
            deadline_window: deadline_window(env)?,
        })
    }

    /// This invocation's deadline: the Lambda context's, else the window
    /// from `BACKSTOP_REPLICATE_DEADLINE`, else none.
    fn deadline(&self) -> Option<Deadline> {
        if let Some(at) = crate::lambda::invocation_deadline() {
            let window = at.saturating_duration_since(std::time::Instant::now());
            return Some(Deadline {
                at,
                ..Deadline::after(window)
            });
        }
        self.deadline_window.map(Deadline::after)
    }

    async fn run(
        &self,
        event: Result<StorageEvent, backstop_core::events::EventError>,
    ) -> crate::lambda::Reply {
        use crate::lambda::{reply_bad_event, reply_failure};
        let event = match event {
            Ok(e) => e,
            Err(e) => return reply_bad_event(&e),
        };
        match self.replicator.handle_by(&event, self.deadline()).await {
            Ok(outcome) => {
                let records = crate::metrics::replicator_record(&outcome);
                crate::metrics::emit(records.as_slice(), chrono::Utc::now());
                crate::http::HttpResponse::new(
                    200,
                    serde_json::to_value(&outcome).expect("outcome serializes"),
                )
            }
            Err(e) => {
                let code = match e {
                    ReplicateError::UnknownBucket { .. } => "unknown_bucket",
                    ReplicateError::Retry { .. } => "retry",
                    ReplicateError::Paused { .. } => "paused",
                    ReplicateError::Busy { .. } => "busy",
                };
                if e.is_transient() {
                    tracing::warn!(error = %e, "replication will be retried");
                }
                reply_failure(code, 400, &e)
            }
        }
    }
}

#[async_trait::async_trait]
impl crate::lambda::Function for ReplicatorFunction {
    fn name(&self) -> &'static str {
        "replicator"
    }

    async fn invoke(&self, invocation: backstop_core::events::Invocation) -> crate::lambda::Reply {
        use backstop_core::events::{Invocation, parse_storage_event, storage_event_from_value};
        match invocation {
            Invocation::Http(req) => {
                if let Err(reply) = crate::lambda::authenticate(&self.oidc, &req).await {
                    return reply;
                }
                self.run(parse_storage_event(&req.headers, &req.body)).await
            }
            Invocation::Direct(value) => self.run(storage_event_from_value(&value)).await,
        }
    }
}
