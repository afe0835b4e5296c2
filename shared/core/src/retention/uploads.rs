//! Open multipart uploads in the replica: copies in progress (the
//! replicator's resumable copy, see `crate::replicate`), reported when they
//! stay open longer than the replica grace, and aborted when their backup
//! is no longer a verified backup of the source (deleted there, or failed
//! verification: the replicator never completes those).

use chrono::{DateTime, Utc};

use super::audit::{Finding, Severity};
use super::inventory::Inventory;
use super::policy::{PolicySet, format_age};
use crate::naming::BackupId;
use crate::store::ObjectStore;

/// Reports, and (unless `dry_run`) aborts, the replica's open uploads
/// under `prefix` (`""`: all) older than the replica grace; `source` is the
/// primary's inventory of the same keys.
pub async fn check_open_uploads(
    replica: &dyn ObjectStore,
    prefix: &str,
    source: &Inventory,
    policies: &PolicySet,
    now: DateTime<Utc>,
    dry_run: bool,
) -> Vec<Finding> {
    let Some(parts) = replica.part_uploads() else {
        return Vec::new();
    };
    let finding = |severity, code: &str, subject: &str, message: String| Finding {
        severity,
        code: code.into(),
        namespace: BackupId::parse_key(subject)
            .ok()
            .map(|(id, _)| id.namespace.to_string()),
        cloud: Some("s3".into()),
        subject: Some(subject.to_string()),
        message,
    };
    let uploads = match parts.open_uploads_under(prefix).await {
        Ok(u) => u,
        Err(e) => {
            let message = format!(
                "the open multipart uploads of {} could not be listed: {e}",
                replica.url()
            );
            return vec![finding(Severity::Warning, "uploads_unlisted", "", message)];
        }
    };
    let cutoff = now - policies.replica_grace;
    let mut out = Vec::new();
    for u in uploads
        .iter()
        .filter(|u| u.initiated.is_some_and(|t| t < cutoff))
    {
        let age = format_age(now - u.initiated.unwrap_or(now));
        let wanted = BackupId::parse_key(&u.key)
            .ok()
            .and_then(|(id, _)| source.backups.get(&id))
            .is_some_and(|e| e.is_verified());
        if wanted {
            out.push(finding(Severity::Warning, "replication_in_progress", &u.key, format!(
                "the copy of {} to {} has been in progress for {age}: it resumes on each delivery of its finalize event; check the replicator's log and the dead-letter topic",
                u.key, replica.url()
            )));
            continue;
        }
        let (code, done) = if dry_run {
            ("abandoned_upload", "would be aborted (dry run)".to_string())
        } else {
            match parts.abort_upload(&u.key, &u.upload_id).await {
                Ok(()) => ("abandoned_upload_aborted", "was aborted".to_string()),
                Err(e) => ("abandoned_upload", format!("could not be aborted ({e})")),
            }
        };
        out.push(finding(Severity::Info, code, &u.key, format!(
            "an upload of {} to {}, open for {age}, belongs to no verified backup of the source (deleted there, or failed verification); it {done}",
            u.key, replica.url()
        )));
    }
    out
}
