//! Choosing what to restore: the newest backup that is complete (it has its
//! manifest, the commit marker), signed by a trusted key, and whose data
//! object is where and as large as the manifest says, from the first cloud
//! that answers and has one.
//!
//! Nothing here reads backup data: a backup is chosen on its signed
//! manifest alone, so a broken newer backup costs a few small reads, and
//! every backup passed over is reported with the reason.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

use backstop_core::crypto::VerifyingKey;
use backstop_core::manifest::{CiphertextInfo, MAX_MANIFEST_BYTES, Manifest};
use backstop_core::naming::{BackupId, MANIFEST_FILE, Namespace, SIGNATURE_FILE, database_segment};
use backstop_core::store::{ObjectMeta, ObjectStore, ObjectStoreExt, StoreError};

use super::config::{Clouds, RestoreConfig};
use super::error::RestoreError;
use super::report::SkippedBackup;

/// Detached signatures larger than this are not ours.
const MAX_SIGNATURE_BYTES: usize = 64 * 1024;

/// A backup chosen for restore: its verified manifest and where its data is.
#[derive(Debug, Clone)]
pub(crate) struct Candidate {
    pub id: BackupId,
    pub manifest: Manifest,
    pub data_key: String,
    pub cloud: &'static str,
}

/// Why a backup cannot be restored (`Err`), or what is needed next.
type Usable<T> = Result<T, String>;

fn data_key(id: &BackupId, info: &CiphertextInfo) -> Usable<String> {
    let name = info.object.as_str();
    if name.is_empty() || name.contains('/') || name == "." || name == ".." {
        return Err(format!(
            "the manifest names data object {name:?}, which is not a file of this backup"
        ));
    }
    Ok(format!("{}{name}", id.prefix()))
}

/// Reads a backup's manifest and signature and verifies one against the
/// other. `Ok(Err(reason))`: the backup is not usable; `Err`: the store
/// failed.
async fn read_signed_manifest(
    store: &dyn ObjectStore,
    id: &BackupId,
    keys: &[VerifyingKey],
) -> Result<Usable<Manifest>, StoreError> {
    let manifest_bytes = match store
        .get_bytes(&id.manifest_key(), MAX_MANIFEST_BYTES)
        .await
    {
        Ok(b) => b,
        Err(StoreError::NotFound { .. }) => {
            return Ok(Err("incomplete: no manifest (commit marker)".into()));
        }
        Err(e @ StoreError::Permanent { .. }) => {
            return Ok(Err(format!("manifest unreadable: {e}")));
        }
        Err(e) => return Err(e),
    };
    let sig = match store
        .get_bytes(&id.signature_key(), MAX_SIGNATURE_BYTES)
        .await
    {
        Ok(b) => b,
        Err(StoreError::NotFound { .. }) => {
            return Ok(Err("unsigned: no manifest.json.sig".into()));
        }
        Err(e @ StoreError::Permanent { .. }) => {
            return Ok(Err(format!("signature unreadable: {e}")));
        }
        Err(e) => return Err(e),
    };
    Ok(
        backstop_core::crypto::verify_manifest_at(&manifest_bytes, &sig, keys, id)
            .map_err(|e| format!("manifest does not verify: {e}")),
    )
}

/// Reads and verifies one backup's manifest, and checks that its data
/// object exists with the manifest's size (`listed_data`: its listing
/// entry, when the caller has one). `Ok(Err(reason))`: the backup is not
/// usable; `Err`: the store failed.
pub(super) async fn verify_candidate(
    store: &dyn ObjectStore,
    cloud: &'static str,
    id: &BackupId,
    keys: &[VerifyingKey],
    listed_data: Option<&ObjectMeta>,
) -> Result<Usable<Candidate>, StoreError> {
    let manifest = match read_signed_manifest(store, id, keys).await? {
        Ok(m) => m,
        Err(reason) => return Ok(Err(reason)),
    };
    if manifest.dump_format != backstop_core::manifest::DUMP_FORMAT {
        return Ok(Err(format!(
            "dump format {:?} is not {:?} (pg_restore reads custom-format archives)",
            manifest.dump_format,
            backstop_core::manifest::DUMP_FORMAT
        )));
    }
    let key = match data_key(id, &manifest.ciphertext) {
        Ok(k) => k,
        Err(r) => return Ok(Err(r)),
    };
    let meta = match listed_data {
        Some(m) if m.key == key => m.clone(),
        _ => match store.head(&key).await {
            Ok(m) => m,
            Err(StoreError::NotFound { .. }) => {
                return Ok(Err(format!("data object {key} is missing")));
            }
            Err(e) => return Err(e),
        },
    };
    if meta.size != manifest.ciphertext.size {
        return Ok(Err(format!(
            "data object is {} bytes, the manifest says {}",
            meta.size, manifest.ciphertext.size
        )));
    }
    Ok(Ok(Candidate {
        id: id.clone(),
        manifest,
        data_key: key,
        cloud,
    }))
}

/// The newest complete, verified backup of `namespace` (optionally of one
/// database) in `store`, or `None`. Passed-over backups are added to
/// `skipped` (newest first) and logged.
pub(crate) async fn newest_verified(
    store: &dyn ObjectStore,
    cloud: &'static str,
    namespace: &Namespace,
    database: Option<&str>,
    keys: &[VerifyingKey],
    not_after: DateTime<Utc>,
    skipped: &mut Vec<SkippedBackup>,
) -> Result<Option<Candidate>, StoreError> {
    // `database` is the real name (`--database`); its backups live under
    // its encoded key segment.
    let prefix = match database {
        Some(db) => format!("{namespace}/{}/", database_segment(db)),
        None => format!("{namespace}/"),
    };
    let listing = store.list_all(&prefix).await?;
    let mut backups: BTreeMap<BackupId, BTreeMap<String, ObjectMeta>> = BTreeMap::new();
    for meta in listing {
        if let Ok((id, file)) = BackupId::parse_key(&meta.key) {
            backups.entry(id).or_default().insert(file, meta);
        }
    }
    for (id, files) in backups.iter().rev() {
        let reason = if id.taken_at > not_after {
            // A dump host with a skewed clock (or a forged name): never
            // "newest", or it would win every restore from now on.
            format!(
                "dated {} in the future, beyond the allowed clock skew: check the dump host's clock; restore it explicitly with --backup if it is wanted",
                id.taken_at
            )
        } else if !files.contains_key(MANIFEST_FILE) {
            "incomplete: no manifest (commit marker)".to_string()
        } else if !files.contains_key(SIGNATURE_FILE) {
            "unsigned: no manifest.json.sig".to_string()
        } else {
            let data = files.get(backstop_core::naming::DATA_FILE);
            match verify_candidate(store, cloud, id, keys, data).await? {
                Ok(c) => return Ok(Some(c)),
                Err(r) => r,
            }
        };
        tracing::warn!(event = "restore_skip", cloud, backup = %id, %reason, "passing over backup");
        skipped.push(SkippedBackup {
            cloud: cloud.into(),
            backup_id: id.to_string(),
            reason,
        });
    }
    Ok(None)
}

/// The backup chosen with `--backup`, if `store` has it and it verifies.
/// `Ok(None)`: it is not usable there (recorded in `skipped` and `notes`).
async fn chosen_in(
    store: &dyn ObjectStore,
    cloud: &'static str,
    id: &BackupId,
    keys: &[VerifyingKey],
    skipped: &mut Vec<SkippedBackup>,
    notes: &mut Vec<String>,
) -> Result<Option<Candidate>, StoreError> {
    match verify_candidate(store, cloud, id, keys, None).await? {
        Ok(c) => Ok(Some(c)),
        Err(reason) => {
            skipped.push(SkippedBackup {
                cloud: cloud.into(),
                backup_id: id.to_string(),
                reason: reason.clone(),
            });
            notes.push(format!("{cloud} ({}): backup {id}: {reason}", store.url()));
            Ok(None)
        }
    }
}

/// Picks the backup: the chosen one, or the newest verified one, from the
/// first cloud that answers and has it. Returns the candidate and why
/// earlier clouds were not used; clouds that did not answer are added to
/// `unavailable`.
pub(super) async fn select(
    cfg: &RestoreConfig,
    clouds: &Clouds<'_>,
    skipped: &mut Vec<SkippedBackup>,
    unavailable: &mut Vec<&'static str>,
) -> Result<(Candidate, Option<String>), RestoreError> {
    let mut notes: Vec<String> = Vec::new();
    for (cloud, store) in clouds.ordered() {
        let keys = &cfg.signing_keys;
        let found = match &cfg.backup {
            Some(id) => match chosen_in(store, cloud, id, keys, skipped, &mut notes).await {
                Ok(None) => continue,
                found => found,
            },
            None => {
                let database = cfg.database.as_deref();
                let not_after = Utc::now() + cfg.max_clock_skew;
                newest_verified(
                    store,
                    cloud,
                    &cfg.namespace,
                    database,
                    keys,
                    not_after,
                    skipped,
                )
                .await
            }
        };
        match found {
            Ok(Some(c)) => {
                let reason = (!notes.is_empty()).then(|| {
                    format!(
                        "{}; restoring from {cloud} ({})",
                        notes.join("; "),
                        store.url()
                    )
                });
                if let Some(r) = &reason {
                    tracing::warn!(event = "restore_fallback", cloud, reason = %r, "using the replica");
                }
                return Ok((c, reason));
            }
            Ok(None) => notes.push(format!(
                "{cloud} ({}) has no complete, verified backup",
                store.url()
            )),
            Err(e) => {
                tracing::warn!(event = "restore_cloud_unavailable", cloud, error = %e, "cloud unavailable");
                notes.push(format!("{cloud} ({}) is unavailable: {e}", store.url()));
                unavailable.push(cloud);
            }
        }
    }
    if notes.is_empty() {
        notes.push("no cloud configured".into());
    }
    Err(RestoreError::NoBackup {
        namespace: cfg.namespace.to_string(),
        details: notes.join("; "),
        skipped: skipped.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_data_object_must_be_a_file_of_the_backup() {
        let ns = Namespace::new("production").unwrap();
        let id = BackupId::new(ns, "app", chrono::Utc::now()).unwrap();
        let info = |object: &str| CiphertextInfo {
            object: object.into(),
            size: 0,
            sha256: String::new(),
            crc32c: 0,
            ..CiphertextInfo::default()
        };
        assert_eq!(
            data_key(&id, &info("data.pgdump.pgp")).unwrap(),
            format!("{}data.pgdump.pgp", id.prefix())
        );
        for bad in ["", ".", "..", "../other/data", "a/b"] {
            assert!(data_key(&id, &info(bad)).is_err(), "{bad:?}");
        }
    }
}
