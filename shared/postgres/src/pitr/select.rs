//! Choosing the base backup: the base backups of the namespace's clusters
//! (`<ns>/.cluster-<id>/<stamp>/`), newest first, each verified on its
//! signed manifest alone (signature, `base_backup`, the data object's size),
//! from the first cloud that answers and has one that finished before the
//! target. Nothing here reads backup data.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

use backstop_core::crypto::{VerifyingKey, verify_manifest_at};
use backstop_core::manifest::{
    BaseBackupInfo, MAX_MANIFEST_BYTES, Manifest, is_base_backup_format,
};
use backstop_core::naming::{
    BackupId, CLUSTER_SEGMENT_PREFIX, MANIFEST_FILE, Namespace, cluster_database, database_segment,
};
use backstop_core::store::{ObjectMeta, ObjectStore, ObjectStoreExt, StoreError};
use backstop_core::wal::Lsn;

use super::config::{PitrConfig, RecoveryTarget};
use super::error::PitrError;
use crate::restore::{Clouds, SkippedBackup};

/// Detached signatures larger than this are not ours.
const MAX_SIGNATURE_BYTES: usize = 64 * 1024;

/// A verified base backup.
#[derive(Debug, Clone)]
pub(super) struct BaseCandidate {
    pub id: BackupId,
    pub manifest: Manifest,
    pub info: BaseBackupInfo,
    pub system_identifier: u64,
    pub data_key: String,
    pub cloud: &'static str,
}

impl BaseCandidate {
    pub fn start_lsn(&self) -> Lsn {
        self.info.start_lsn.parse().unwrap_or_default()
    }
    pub fn stop_lsn(&self) -> Lsn {
        self.info.stop_lsn.parse().unwrap_or_default()
    }
}

/// The configured clouds, primary first.
pub(super) fn ordered<'a>(clouds: &Clouds<'a>) -> Vec<(&'static str, &'a dyn ObjectStore)> {
    let primary = clouds.primary.map(|s| ("gcs", s));
    primary
        .into_iter()
        .chain(clouds.replica.map(|s| ("s3", s)))
        .collect()
}

/// The base backups found in one cloud, newest first, and how the search
/// went.
pub(super) struct Found {
    /// Verified base backups that fit the target, newest first.
    pub fitting: Vec<BaseCandidate>,
    /// The oldest verified one (for "none before the target").
    pub oldest: Option<BaseCandidate>,
}

/// Verifies one base backup's manifest and data object. `Ok(Err(reason))`:
/// not usable.
async fn verify_base(
    store: &dyn ObjectStore,
    cloud: &'static str,
    id: &BackupId,
    keys: &[VerifyingKey],
    files: &BTreeMap<String, ObjectMeta>,
) -> Result<Result<BaseCandidate, String>, StoreError> {
    if !files.contains_key(MANIFEST_FILE) {
        return Ok(Err("incomplete: no manifest (commit marker)".into()));
    }
    let bytes = store
        .get_bytes(&id.manifest_key(), MAX_MANIFEST_BYTES)
        .await?;
    let sig = match store
        .get_bytes(&id.signature_key(), MAX_SIGNATURE_BYTES)
        .await
    {
        Err(StoreError::NotFound { .. }) => {
            return Ok(Err("unsigned: no manifest.json.sig".into()));
        }
        other => other?,
    };
    let manifest = match verify_manifest_at(&bytes, &sig, keys, id) {
        Ok(m) => m,
        Err(e) => return Ok(Err(format!("manifest does not verify: {e}"))),
    };
    let (Some(info), true) = (
        manifest.base_backup.clone(),
        is_base_backup_format(&manifest.dump_format),
    ) else {
        return Ok(Err("the manifest describes no base backup".into()));
    };
    let object = manifest.ciphertext.object.as_str();
    if object.is_empty() || object.contains('/') || object.starts_with('.') {
        return Ok(Err(format!(
            "the manifest names data object {object:?}, not a file of this backup"
        )));
    }
    let data_key = format!("{}{object}", id.prefix());
    let size = match files.get(object) {
        Some(m) => m.size,
        None => return Ok(Err(format!("data object {data_key} is missing"))),
    };
    if size != manifest.ciphertext.size {
        return Ok(Err(format!(
            "data object is {size} bytes, the manifest says {}",
            manifest.ciphertext.size
        )));
    }
    let system_identifier = id.system_identifier().unwrap_or_default();
    if info.system_identifier != system_identifier.to_string() {
        return Ok(Err(format!(
            "the manifest is of cluster {}, its key of cluster {system_identifier}",
            info.system_identifier
        )));
    }
    Ok(Ok(BaseCandidate {
        id: id.clone(),
        manifest,
        info,
        system_identifier,
        data_key,
        cloud,
    }))
}

/// Whether a base backup can recover to `target`: it finished before it.
pub(super) fn fits(c: &BaseCandidate, target: &RecoveryTarget) -> bool {
    match target {
        RecoveryTarget::Time(t) => c.manifest.finished_at < *t,
        RecoveryTarget::Lsn(l) => c.stop_lsn() <= *l,
        RecoveryTarget::Xid(_) | RecoveryTarget::Latest => true,
    }
}

fn listing_prefix(ns: &Namespace, system_identifier: Option<u64>) -> String {
    match system_identifier {
        Some(s) => format!("{ns}/{}/", database_segment(&cluster_database(s))),
        None => format!("{ns}/{CLUSTER_SEGMENT_PREFIX}"),
    }
}

/// The verified base backups of one cloud.
async fn search(
    cfg: &PitrConfig,
    store: &dyn ObjectStore,
    cloud: &'static str,
    not_after: DateTime<Utc>,
    skipped: &mut Vec<SkippedBackup>,
) -> Result<Found, StoreError> {
    let listing = store
        .list_all(&listing_prefix(&cfg.namespace, cfg.system_identifier))
        .await?;
    let mut backups: BTreeMap<BackupId, BTreeMap<String, ObjectMeta>> = BTreeMap::new();
    for meta in listing {
        if let Ok((id, file)) = BackupId::parse_key(&meta.key)
            && id.system_identifier().is_some()
        {
            backups.entry(id).or_default().insert(file, meta);
        }
    }
    let mut found = Found {
        fitting: Vec::new(),
        oldest: None,
    };
    for (id, files) in backups.iter().rev() {
        let reason = if id.taken_at > not_after {
            format!(
                "dated {} in the future, beyond the allowed clock skew: check the backup host's clock",
                id.taken_at
            )
        } else {
            match verify_base(store, cloud, id, &cfg.signing_keys, files).await? {
                Ok(c) => {
                    if fits(&c, &cfg.target) {
                        found.fitting.push(c.clone());
                    }
                    found.oldest = Some(c);
                    continue;
                }
                Err(r) => r,
            }
        };
        tracing::warn!(event = "pitr_skip", cloud, backup = %id, %reason, "passing over base backup");
        skipped.push(SkippedBackup {
            cloud: cloud.into(),
            backup_id: id.to_string(),
            reason,
        });
    }
    Ok(found)
}

/// The verified base backups that fit the target, newest first, from the
/// first cloud that has one; the error names the oldest there is when none
/// is old enough.
pub(super) async fn select(
    cfg: &PitrConfig,
    clouds: &Clouds<'_>,
    skipped: &mut Vec<SkippedBackup>,
) -> Result<Vec<BaseCandidate>, PitrError> {
    let not_after = Utc::now() + cfg.max_clock_skew;
    let mut notes = Vec::new();
    let mut oldest: Option<BaseCandidate> = None;
    for (cloud, store) in ordered(clouds) {
        match search(cfg, store, cloud, not_after, skipped).await {
            Ok(found) if !found.fitting.is_empty() => return Ok(found.fitting),
            Ok(found) => {
                notes.push(format!("{cloud} ({}) has none that fits", store.url()));
                oldest = oldest.or(found.oldest);
            }
            Err(e) => {
                tracing::warn!(event = "pitr_cloud_unavailable", cloud, error = %e, "cloud unavailable");
                notes.push(format!("{cloud} ({}) is unavailable: {e}", store.url()));
            }
        }
    }
    match oldest {
        Some(o) => Err(PitrError::NoneBeforeTarget {
            target: cfg.target.describe(),
            oldest: o.id.to_string(),
            oldest_at: format!(
                "finished {}, stop LSN {}",
                o.manifest.finished_at.to_rfc3339(),
                o.info.stop_lsn
            ),
        }),
        None => Err(PitrError::NoBaseBackup {
            namespace: cfg.namespace.to_string(),
            details: if notes.is_empty() {
                "no cloud configured".into()
            } else {
                notes.join("; ")
            },
        }),
    }
}

/// A wrong backup key, found from the signed manifest before anything is
/// written.
pub(super) fn check_backup_key(cfg: &PitrConfig, c: &BaseCandidate) -> Result<(), PitrError> {
    let (recipients, held) = (
        &c.manifest.recipients,
        cfg.secret_key.decryption_fingerprints(),
    );
    let holds = |r: &String| held.iter().any(|h| h.eq_ignore_ascii_case(r));
    if recipients.is_empty() || recipients.iter().any(holds) {
        return Ok(());
    }
    Err(PitrError::WrongKey {
        backup_id: c.id.to_string(),
        recipients: recipients.join(", "),
        held: held.join(", "),
    })
}
