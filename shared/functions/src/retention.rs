//! The retention function: on a schedule, prune both clouds by policy and
//! audit everything, then publish critical findings.
//!
//! Triggers: Cloud Scheduler through the Function URL (OIDC verified; empty,
//! JSON or base64 body), an EventBridge scheduled event, or a direct/local
//! invocation (`{"dry_run": true}`). An event can ask for a dry run but can
//! not cancel one that `BACKSTOP_DRY_RUN=true` imposes.

use std::sync::Arc;

use async_trait::async_trait;
use chrono::Utc;
use futures::future::OptionFuture;

use backstop_cloud::oidc::{OidcConfig, OidcVerifier};
use backstop_core::alerts::{Alert, AlertSink};
use backstop_core::config::{ConfigError, Env};
use backstop_core::drill::DrillRecord;
use backstop_core::events::{Invocation, ScheduleRequest, parse_schedule, schedule_from_value};
use backstop_core::retention::{
    AuditInput, BucketConfig, CloudInput, DEFAULT_VERIFY_CONCURRENCY, Finding, MAX_CLOCK_SKEW_ENV,
    PolicySet, Pruned, Report, SignatureVerifier, audit, load_drills, prune,
};
use backstop_core::store::{ObjectStore, StoreError};
use backstop_core::trust::TrustedKeys;

use crate::http::HttpResponse;
use crate::lambda::{Function, Reply, authenticate, reply_bad_event};

fn cloud_input<'a>(
    cloud: &'a str,
    result: &'a Result<Pruned, StoreError>,
    errors: &'a [String],
    error_index: usize,
) -> CloudInput<'a> {
    match result {
        Ok(p) => CloudInput::listed(cloud, &p.inventory)
            .with_plan(&p.plan)
            .with_applied(&p.applied),
        Err(_) => CloudInput::listing_failed(cloud, &errors[error_index]),
    }
}

/// One retention run's configuration and clients.
pub struct RetentionFunction {
    pub primary: Arc<dyn ObjectStore>,
    pub replica: Option<Arc<dyn ObjectStore>>,
    pub verifier: SignatureVerifier,
    pub policies: PolicySet,
    /// `BACKSTOP_DRY_RUN`: when set, every run is a dry run, whatever the
    /// event says (an event may only turn a dry run on).
    pub dry_run: bool,
    /// The GCS bucket's configuration (lifecycle rules, versioning), when known.
    pub bucket_config: Option<BucketConfig>,
    pub alerts: Arc<dyn AlertSink>,
    pub oidc: Option<OidcVerifier>,
    /// `BACKSTOP_RETENTION_CONCURRENCY`: backups verified at a time in each
    /// cloud (both clouds are collected at the same time).
    pub concurrency: usize,
}

/// The variable that bounds the verification reads.
pub const CONCURRENCY_ENV: &str = "BACKSTOP_RETENTION_CONCURRENCY";
/// More would only queue requests in the client: each verification already
/// sends three reads at once.
const MAX_CONCURRENCY: usize = 256;

/// `BACKSTOP_RETENTION_CONCURRENCY`: 1 to 256, default 16.
pub fn concurrency_from_env(env: &Env) -> Result<usize, ConfigError> {
    let n: usize = env.parsed_or(CONCURRENCY_ENV, DEFAULT_VERIFY_CONCURRENCY)?;
    if !(1..=MAX_CONCURRENCY).contains(&n) {
        return Err(env.invalid(
            CONCURRENCY_ENV,
            format!("expected 1 to {MAX_CONCURRENCY} backups verified at a time"),
        ));
    }
    Ok(n)
}

impl std::fmt::Debug for RetentionFunction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RetentionFunction")
            .field("primary", &self.primary.url())
            .field("replica", &self.replica.as_ref().map(|r| r.url()))
            .field("dry_run", &self.dry_run)
            .finish()
    }
}

/// The run's result: what was deleted (or would be) and the audit report.
#[derive(Debug, serde::Serialize)]
pub struct RunResult {
    pub dry_run: bool,
    /// Object keys deleted (or, in a dry run, that would be).
    pub deleted: Vec<String>,
    pub report: Report,
    /// The drill records the audit read (for the drill-age metrics; the
    /// report already judges them).
    #[serde(skip)]
    pub drills: Vec<DrillRecord>,
}

impl RetentionFunction {
    /// Variables: BACKSTOP_GCS_BUCKET, BACKSTOP_S3_BUCKET (optional),
    /// BACKSTOP_SIGNING_PUBLIC_KEY, BACKSTOP_RECIPIENTS,
    /// BACKSTOP_RETENTION_POLICY (JSON, optional), BACKSTOP_MAX_CLOCK_SKEW
    /// (optional, default 10min), BACKSTOP_DRY_RUN,
    /// BACKSTOP_GCS_BUCKET_CONFIG (file: with the bucket resource JSON, for
    /// the lifecycle audit), BACKSTOP_RETENTION_CONCURRENCY (optional,
    /// default 16), BACKSTOP_ALERT_TOPIC, the OIDC variables
    /// when invoked through a Function URL, and BACKSTOP_CONNECT_TIMEOUT /
    /// BACKSTOP_REQUEST_TIMEOUT (every client: `backstop_cloud::timeouts`).
    pub async fn from_env(env: &Env) -> Result<Self, ConfigError> {
        use backstop_cloud::gcs::GcsStore;
        use backstop_cloud::s3::S3Store;
        let primary: Arc<dyn ObjectStore> = Arc::new(GcsStore::from_env(env).await?);
        let replica: Option<Arc<dyn ObjectStore>> = match env.optional("BACKSTOP_S3_BUCKET") {
            Some(_) => Some(Arc::new(S3Store::from_env(env).await?)),
            None => None,
        };
        let policies = PolicySet::from_env_value(
            env.optional(backstop_core::retention::POLICY_ENV)
                .as_deref(),
        )
        .map_err(|e| env.invalid(backstop_core::retention::POLICY_ENV, e.to_string()))?
        .with_clock_skew_setting(env.optional(MAX_CLOCK_SKEW_ENV).as_deref())
        .map_err(|e| env.invalid(MAX_CLOCK_SKEW_ENV, e.to_string()))?;
        let bucket_config = match env.optional("BACKSTOP_GCS_BUCKET_CONFIG") {
            None => None,
            Some(setting) => {
                let path = setting.strip_prefix("file:").unwrap_or(&setting);
                let text = std::fs::read_to_string(path).map_err(|e| {
                    env.invalid(
                        "BACKSTOP_GCS_BUCKET_CONFIG",
                        format!("cannot read {path}: {e}"),
                    )
                })?;
                Some(
                    BucketConfig::from_gcs_json(&text)
                        .map_err(|e| env.invalid("BACKSTOP_GCS_BUCKET_CONFIG", e.to_string()))?,
                )
            }
        };
        let oidc = match env.optional("BACKSTOP_OIDC_AUDIENCE") {
            Some(_) => Some(
                OidcVerifier::new(&OidcConfig::from_env(env)?)
                    .with_timeouts(backstop_cloud::timeouts::Timeouts::from_env(env)?),
            ),
            None => None,
        };
        Ok(Self {
            primary,
            replica,
            verifier: SignatureVerifier {
                keys: TrustedKeys::from_env(env).await?,
            },
            policies,
            dry_run: env.flag("BACKSTOP_DRY_RUN", false)?,
            bucket_config,
            alerts: Arc::from(backstop_cloud::pubsub::from_env(env)?),
            oidc,
            concurrency: concurrency_from_env(env)?,
        })
    }

    async fn prune_store(
        &self,
        store: &dyn ObjectStore,
        now: chrono::DateTime<Utc>,
        dry_run: bool,
    ) -> Result<Pruned, StoreError> {
        let (verifier, policies) = (&self.verifier, &self.policies);
        prune(store, verifier, policies, now, dry_run, self.concurrency).await
    }

    /// The drill records of both clouds (a restore that fell back to the
    /// replica wrote its record there), and the findings about open uploads
    /// of the replica.
    async fn drills_and_uploads(
        &self,
        primary: &Result<Pruned, StoreError>,
        replica: Option<&Result<Pruned, StoreError>>,
        now: chrono::DateTime<Utc>,
        dry_run: bool,
    ) -> (Vec<DrillRecord>, Vec<Finding>) {
        // A restore that fell back to the replica wrote its drill record
        // there (the primary was unreachable), so drills are read from both.
        let mut drills = Vec::new();
        let mut extra_findings = Vec::new();
        let listed = [(self.primary.as_ref(), primary)]
            .into_iter()
            .chain(self.replica.as_deref().zip(replica));
        for (store, pruned) in listed {
            if let Ok(p) = pruned {
                let (records, findings) = load_drills(store, &p.inventory, 5).await;
                drills.extend(records);
                extra_findings.extend(findings);
            }
        }
        // Copies in progress, and uploads of backups the source no longer
        // has as verified ones (judged only from a complete source listing).
        if let (Some(store), Ok(source)) = (self.replica.as_deref(), primary) {
            let found = backstop_core::retention::check_open_uploads(
                store,
                "",
                &source.inventory,
                &self.policies,
                now,
                dry_run,
            )
            .await;
            extra_findings.extend(found);
        }
        drills.sort_by(|a, b| {
            (&a.backup_id, a.started_at, &a.target_database).cmp(&(
                &b.backup_id,
                b.started_at,
                &b.target_database,
            ))
        });
        drills.dedup();
        (drills, extra_findings)
    }

    /// Prunes both clouds (each only from a complete listing) and audits.
    pub async fn run(&self, request: &ScheduleRequest) -> RunResult {
        // An event may turn a dry run on, never off: `BACKSTOP_DRY_RUN=true`
        // is the operator's decision, and whoever can send an event is not.
        let dry_run = self.dry_run || request.dry_run.unwrap_or(false);
        let now = Utc::now();
        // The clouds are independent, so both are collected at once: the
        // run takes as long as the slower cloud, not as long as both.
        let (primary, replica) = tokio::join!(
            self.prune_store(self.primary.as_ref(), now, dry_run),
            OptionFuture::from(
                self.replica
                    .as_deref()
                    .map(|store| self.prune_store(store, now, dry_run))
            ),
        );
        let (drills, extra_findings) = self
            .drills_and_uploads(&primary, replica.as_ref(), now, dry_run)
            .await;
        let errors: Vec<String> = [Some(&primary), replica.as_ref()]
            .into_iter()
            .flatten()
            .filter_map(|r| r.as_ref().err().map(|e| e.to_string()))
            .collect();
        let mut primary_input = cloud_input("gcs", &primary, &errors, 0);
        if let Some(cfg) = &self.bucket_config {
            primary_input = primary_input.with_bucket(cfg);
        }
        let replica_error_index = usize::from(primary.is_err());
        let report = audit(&AuditInput {
            now,
            policies: &self.policies,
            primary: primary_input,
            replica: replica
                .as_ref()
                .map(|r| cloud_input("s3", r, &errors, replica_error_index)),
            drills: &drills,
            extra_findings,
        });
        let deleted = [Some(&primary), replica.as_ref()]
            .into_iter()
            .flatten()
            .filter_map(|r| r.as_ref().ok())
            .flat_map(|p| {
                if dry_run {
                    p.applied.would_delete.clone()
                } else {
                    p.applied.deleted.clone()
                }
            })
            .collect();
        RunResult {
            dry_run,
            deleted,
            report,
            drills,
        }
    }

    async fn handle(&self, request: ScheduleRequest) -> Reply {
        let result = self.run(&request).await;
        tracing::info!(
            dry_run = result.dry_run,
            deleted = result.deleted.len(),
            critical = result.report.critical,
            warning = result.report.warning,
            "retention run finished\n{}",
            result.report
        );
        // Before the alert: a run whose alert fails still reports its numbers.
        let records = crate::metrics::retention_records(
            &result.report,
            &result.drills,
            result.deleted.len(),
            result.dry_run,
        );
        crate::metrics::emit(&records, result.report.generated_at);
        if result.report.has_critical() {
            let alert = Alert {
                severity: backstop_core::alerts::Severity::Critical,
                source: "retention".into(),
                code: "audit_critical".into(),
                message: format!("{} critical audit finding(s)", result.report.critical),
                backup_id: None,
                details: serde_json::to_value(
                    result.report.critical_findings().collect::<Vec<_>>(),
                )
                .unwrap_or_default(),
            };
            if let Err(e) = self.alerts.publish(&alert).await {
                tracing::error!(error = %e, "could not publish the audit alert");
                return HttpResponse::new(
                    503,
                    serde_json::json!({"error": "alert_failed", "message": e.to_string(), "result": result}),
                );
            }
        }
        HttpResponse::new(
            200,
            serde_json::to_value(&result).expect("result serializes"),
        )
    }
}

#[async_trait]
impl Function for RetentionFunction {
    fn name(&self) -> &'static str {
        "retention"
    }

    async fn invoke(&self, invocation: Invocation) -> Reply {
        match invocation {
            Invocation::Http(req) => {
                let Some(oidc) = &self.oidc else {
                    return crate::lambda::reply_error(
                        401,
                        "unauthenticated",
                        "this function has no BACKSTOP_OIDC_AUDIENCE configured, so it refuses HTTP requests",
                    );
                };
                if let Err(reply) = authenticate(oidc, &req).await {
                    return reply;
                }
                match parse_schedule(&req.body) {
                    Ok(request) => self.handle(request).await,
                    Err(e) => reply_bad_event(&e),
                }
            }
            Invocation::Direct(value) => match schedule_from_value(&value) {
                Ok(request) => self.handle(request).await,
                Err(e) => reply_bad_event(&e),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use backstop_core::alerts::LogAlerts;
    use backstop_core::crypto::RecipientSet;
    use backstop_core::naming::{BackupId, Namespace};
    use backstop_core::store::MemStore;
    use chrono::TimeDelta;

    use super::*;

    /// A function over one in-memory bucket holding one orphan (a data
    /// object without manifest, two days old): a real run deletes it.
    fn function(dry_run: bool) -> (RetentionFunction, Arc<MemStore>, String) {
        let store = Arc::new(MemStore::new("gs://p"));
        let id = BackupId::with_nonce(
            Namespace::new("feat-x").unwrap(),
            "app",
            Utc::now() - TimeDelta::days(2),
            "000001",
        )
        .unwrap();
        store.insert(&id.data_key(), vec![1u8; 10]);
        let f = RetentionFunction {
            primary: store.clone(),
            replica: None,
            verifier: SignatureVerifier {
                keys: TrustedKeys {
                    signing: Vec::new(),
                    recipients: RecipientSet::new(&[]),
                },
            },
            policies: PolicySet::default(),
            dry_run,
            bucket_config: None,
            alerts: Arc::new(LogAlerts),
            oidc: None,
            concurrency: DEFAULT_VERIFY_CONCURRENCY,
        };
        (f, store, id.data_key())
    }

    #[tokio::test]
    async fn an_event_cannot_turn_the_environments_dry_run_off() {
        let (f, store, key) = function(true);
        let r = f
            .run(&ScheduleRequest {
                dry_run: Some(false),
            })
            .await;
        assert!(
            r.dry_run,
            "BACKSTOP_DRY_RUN=true was overridden by the event"
        );
        assert!(store.contains(&key), "the orphan was deleted in a dry run");
        assert_eq!(r.deleted, vec![key]);
    }

    #[tokio::test]
    async fn an_event_can_turn_a_dry_run_on() {
        let (f, store, key) = function(false);
        let r = f
            .run(&ScheduleRequest {
                dry_run: Some(true),
            })
            .await;
        assert!(r.dry_run && store.contains(&key));
        let r = f.run(&ScheduleRequest { dry_run: None }).await;
        assert!(!r.dry_run && !store.contains(&key));
    }
}
