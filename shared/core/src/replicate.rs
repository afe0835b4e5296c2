//! The replicator: a GCS finalize notification in, a verified copy in S3 out.
//!
//! It acts on the manifest's event only (the manifest is the commit marker):
//! verify the manifest's signature, stream the data object from GCS once
//! while checking its OpenPGP structure, size, SHA-256 and CRC32C, stream it
//! into S3 with a create-only write, then copy signature and manifest (the
//! manifest last, so S3 has the same commit order). Anything that fails
//! verification never becomes visible in S3; it is logged, alerted and
//! acknowledged (a bad backup does not improve on retry). Transient failures
//! are returned as errors so that the notification is redelivered.
//!
//! Nothing legitimate rewrites an object of a committed backup, so a
//! notification for a data or signature generation written after the
//! manifest, or for another generation of a manifest already copied, is a
//! tamper signal: a critical alert (`rewritten_after_commit`), nothing copied.

use std::fmt::Display;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::Bytes;
use futures::StreamExt;
use serde::Serialize;

use crate::alerts::{Alert, AlertSink, Severity};
use crate::crypto::{
    BackupVerifier, CryptoError, Digests, RecipientSet, VerifyingKey, verify_manifest_at,
};
use crate::events::{ObjectRef, StorageEvent};
use crate::manifest::{CiphertextInfo, MAX_MANIFEST_BYTES, Manifest};
use crate::naming::{BackupId, MANIFEST_FILE, Namespace, pattern_matches};
use crate::store::{
    ByteStream, ObjectMeta, ObjectStore, ObjectStoreExt, PutOptions, StoreError, byte_stream,
};
use sha2::{Digest, Sha256};

#[path = "replicate_resume.rs"]
mod resume;
pub use resume::{Deadline, MAX_LEASE, REPLICATION_PREFIX};
#[path = "replicate_wal.rs"]
mod wal;

const NOT_CONFIGURED: &str =
    "namespace is not configured for replication (BACKSTOP_REPLICATE_NAMESPACES)";

/// User metadata written on replicated data objects, for people reading the
/// bucket. Never trusted: anyone who may create objects can set it, so a
/// copy is judged by the CRC32C the store computed (see `same_data`).
pub const META_SHA256: &str = "backstop-sha256";
/// User metadata holding the backup id, on every object the replicator writes
/// (`backstop-sha256` is on the data object only).
pub const META_BACKUP_ID: &str = "backstop-backup-id";
/// User metadata on the replicated manifest: the source manifest's
/// generation that was copied. A later notification for another generation
/// of a committed manifest is a rewrite, which nothing legitimate does.
pub const META_SOURCE_GENERATION: &str = "backstop-source-generation";

/// What happened to one notification; serialized as the function's result.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Outcome {
    /// The backup verified and was copied: data, signature, then manifest.
    Replicated {
        /// `<namespace>/<database>/<stamp>`.
        backup_id: String,
        /// Size of the data object in bytes.
        bytes: u64,
        /// The data object's SHA-256, lower-case hex.
        sha256: String,
        /// Wall time of the whole replication, in seconds.
        seconds: f64,
    },
    /// The target already holds this exact manifest (a redelivery).
    AlreadyReplicated {
        /// `<namespace>/<database>/<stamp>`.
        backup_id: String,
    },
    /// Nothing to replicate: not a manifest, a namespace not configured, not a
    /// finalize event, or a manifest deleted since.
    Ignored {
        /// The object the notification named.
        object: String,
        /// Why it needs no replication.
        reason: String,
    },
    /// Verification failed: nothing was copied, an alert was published.
    Rejected {
        /// `<namespace>/<database>/<stamp>`.
        backup_id: String,
        /// What failed verification.
        reason: String,
    },
}

/// A notification the replicator could not finish.
#[derive(Debug, thiserror::Error)]
pub enum ReplicateError {
    /// The notification names a bucket other than the one served. Permanent:
    /// fix the notification config.
    #[error(
        "notification is for bucket {got:?} but this replicator serves {expected:?}; fix the notification config or BACKSTOP_GCS_BUCKET"
    )]
    UnknownBucket {
        /// The bucket this replicator serves.
        expected: String,
        /// The notification's bucket.
        got: String,
    },
    /// The copy stopped at a part boundary before the invocation's
    /// deadline; the next delivery continues it. Transient.
    #[error(
        "replication of {backup_id} paused before the deadline with {parts_done} of {parts_total} parts copied ({uploaded_now} in this delivery); it resumes on redelivery"
    )]
    Paused {
        /// `<namespace>/<database>/<stamp>`.
        backup_id: String,
        /// Parts in the replica's open upload.
        parts_done: usize,
        /// Parts of the whole object (one per chunk).
        parts_total: usize,
        /// Parts this delivery uploaded.
        uploaded_now: usize,
    },
    /// Another delivery holds the copy lease. Transient.
    #[error(
        "replication of {backup_id} is in progress in another delivery (its lease runs until {until}); this one will be redelivered"
    )]
    Busy {
        /// `<namespace>/<database>/<stamp>`.
        backup_id: String,
        /// When the other delivery's lease ends.
        until: chrono::DateTime<chrono::Utc>,
    },
    /// A store failed, a publish failed, or a concurrent copy left other
    /// content: transient, the notification should be redelivered.
    #[error("replication of {backup_id} failed and should be retried: {message}")]
    Retry {
        /// `<namespace>/<database>/<stamp>`.
        backup_id: String,
        /// The underlying error.
        message: String,
    },
}

/// A failure found while the data streamed past; travels inside the byte
/// stream as an `io::Error` and is told apart from store failures by type.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct VerificationFailed(CryptoError);

/// Copies verified backups from `source` to `target` (see the module docs).
pub struct Replicator {
    /// The backups bucket the notifications come from.
    pub source: Arc<dyn ObjectStore>,
    /// The replica bucket; written with create-only puts.
    pub target: Arc<dyn ObjectStore>,
    /// The GCS bucket whose notifications are accepted.
    pub source_bucket: String,
    /// Keys a manifest must be signed by.
    pub signing_keys: Vec<VerifyingKey>,
    /// Subkeys the data may be encrypted to; every recipient the manifest lists
    /// must be one of them.
    pub recipients: RecipientSet,
    /// Namespace patterns to replicate (`*` globs); default `production`.
    pub namespaces: Vec<String>,
    /// Where rejections are published; a failed publish gets the notification
    /// retried.
    pub alerts: Arc<dyn AlertSink>,
}

impl std::fmt::Debug for Replicator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replicator")
            .field("source", &self.source.url())
            .field("target", &self.target.url())
            .field("namespaces", &self.namespaces)
            .finish()
    }
}

fn retry(backup_id: &str, err: impl std::fmt::Display) -> ReplicateError {
    ReplicateError::Retry {
        backup_id: backup_id.to_string(),
        message: err.to_string(),
    }
}

impl Replicator {
    /// Handles one storage notification, with no deadline.
    pub async fn handle(&self, event: &StorageEvent) -> Result<Outcome, ReplicateError> {
        self.handle_by(event, None).await
    }

    /// Handles one storage notification; a copy that would run past
    /// `deadline` pauses ([`ReplicateError::Paused`]) and resumes on the
    /// next delivery.
    pub async fn handle_by(
        &self,
        event: &StorageEvent,
        deadline: Option<Deadline>,
    ) -> Result<Outcome, ReplicateError> {
        match event {
            StorageEvent::Finalized(object) => self.handle_finalized(object, deadline).await,
            StorageEvent::Other { event_type, object } => Ok(Outcome::Ignored {
                object: object.clone().unwrap_or_default(),
                reason: format!("{event_type} notifications need no replication"),
            }),
        }
    }

    async fn handle_finalized(
        &self,
        object: &ObjectRef,
        deadline: Option<Deadline>,
    ) -> Result<Outcome, ReplicateError> {
        if object.bucket != self.source_bucket {
            return Err(ReplicateError::UnknownBucket {
                expected: self.source_bucket.clone(),
                got: object.bucket.clone(),
            });
        }
        let ignored = |reason: &str| {
            Ok(Outcome::Ignored {
                object: object.name.clone(),
                reason: reason.to_string(),
            })
        };
        if let Some((key, what)) = crate::wal::WalKey::parse_key(&object.name) {
            return self.wal_finalized(object, &key, what).await;
        }
        let Ok((id, file)) = BackupId::parse_key(&object.name) else {
            return ignored("not a backup object");
        };
        if !self.replicates(&id.namespace) {
            return ignored(NOT_CONFIGURED);
        }
        if file != MANIFEST_FILE {
            return self.part_finalized(&id, object).await;
        }
        self.replicate_by(&id, deadline).await
    }

    /// Whether `namespace` matches one of the configured patterns.
    fn replicates(&self, namespace: &Namespace) -> bool {
        self.namespaces
            .iter()
            .any(|p| pattern_matches(p, namespace.as_str()))
    }

    /// A data or signature object was written. The dump writes both before
    /// the manifest, so a generation newer than the manifest is a rewrite
    /// of a committed backup: a tamper signal, alerted, nothing copied.
    async fn part_finalized(
        &self,
        id: &BackupId,
        object: &ObjectRef,
    ) -> Result<Outcome, ReplicateError> {
        let manifest = match self.source.head(&id.manifest_key()).await {
            Ok(m) => m,
            Err(StoreError::NotFound { .. }) => {
                return Ok(Outcome::Ignored {
                    object: object.name.clone(),
                    reason: "part of a backup; replication starts when its manifest is written"
                        .into(),
                });
            }
            Err(e) => return Err(retry(&id.to_string(), e)),
        };
        let (backup_id, parts) = (id.to_string(), [id.data_key(), id.signature_key()]);
        let rewritten = self.rewritten_after_commit(&backup_id, &manifest, &parts);
        if let Some(reason) = rewritten.await? {
            return self.reject(id, "rewritten_after_commit", reason).await;
        }
        Ok(Outcome::Ignored {
            object: object.name.clone(),
            reason: "part of a backup written before its manifest; the manifest's notification replicates it".into(),
        })
    }

    /// Whether one of the source's `parts` (keys: a backup's data and
    /// signature objects, a WAL file's data object) is a generation written
    /// after the manifest (`manifest` from its head or read): `Some(why)`.
    async fn rewritten_after_commit(
        &self,
        backup_id: &str,
        manifest: &ObjectMeta,
        parts: &[String],
    ) -> Result<Option<String>, ReplicateError> {
        let Some(committed) = manifest.updated else {
            return Ok(None);
        };
        let heads = futures::future::join_all(parts.iter().map(|k| self.source.head(k))).await;
        for part in heads {
            let part = match part {
                Ok(p) => p,
                Err(StoreError::NotFound { .. }) => continue,
                Err(e) => return Err(retry(backup_id, e)),
            };
            if let Some(written) = part.updated.filter(|t| *t > committed) {
                return Ok(Some(format!(
                    "{}/{} (generation {}) was written at {written}, after the backup's manifest ({committed}): nothing legitimate rewrites an object of a committed backup, so treat it as tampering; the replica in {} keeps the copy that was verified",
                    self.source.url(),
                    part.key,
                    part.version.as_deref().unwrap_or("?"),
                    self.target.url()
                )));
            }
        }
        Ok(None)
    }

    /// Copies one backup, verified, if it is not in the target already.
    pub async fn replicate(&self, id: &BackupId) -> Result<Outcome, ReplicateError> {
        self.replicate_by(id, None).await
    }

    /// [`Self::replicate`] within `deadline` (see [`Self::handle_by`]).
    pub async fn replicate_by(
        &self,
        id: &BackupId,
        deadline: Option<Deadline>,
    ) -> Result<Outcome, ReplicateError> {
        let started = Instant::now();
        let backup_id = id.to_string();
        // The three small reads go out together (a redelivered event needs
        // nothing else); the target's copy is only looked at once the
        // source's manifest has verified.
        let (manifest_key, signature_key) = (id.manifest_key(), id.signature_key());
        let (source_manifest, source_signature, target_manifest) = tokio::join!(
            self.source
                .get_bytes_with_meta(&manifest_key, MAX_MANIFEST_BYTES),
            self.source.get_bytes(&signature_key, MAX_MANIFEST_BYTES),
            self.target.get_bytes(&manifest_key, MAX_MANIFEST_BYTES),
        );
        let (manifest_meta, manifest_bytes) = match source_manifest {
            Ok(got) => got,
            Err(StoreError::NotFound { .. }) => return Ok(gone(manifest_key)),
            Err(e) => return Err(retry(&backup_id, e)),
        };
        let signature = match source_signature {
            Ok(s) => s,
            Err(StoreError::NotFound { .. }) => {
                return self
                    .reject(
                        id,
                        "manifest_unsigned",
                        "manifest has no signature object".into(),
                    )
                    .await;
            }
            Err(e) => return Err(retry(&backup_id, e)),
        };
        let manifest = match verify_manifest_at(&manifest_bytes, &signature, &self.signing_keys, id)
        {
            Ok(m) => m,
            Err(e) => return self.reject(id, "manifest_invalid", e.to_string()).await,
        };
        let parts = [id.data_key(), id.signature_key()];
        let rewritten = self.committed_rewritten(&backup_id, &manifest_key, &manifest_meta, &parts);
        if let Some(done) = self
            .check_target(
                id,
                &parts[0],
                &manifest_bytes,
                &manifest.ciphertext,
                target_manifest,
                rewritten,
            )
            .await?
        {
            return Ok(done);
        }

        let digests = match self.copy_data(id, &manifest, deadline).await? {
            Ok(d) => d,
            Err(reason) => return self.reject(id, "verification_failed", reason).await,
        };
        self.put_once(id, &id.signature_key(), signature, None)
            .await?;
        self.put_once(
            id,
            &id.manifest_key(),
            manifest_bytes,
            manifest_meta.version,
        )
        .await?;
        Ok(self.replicated(id, digests, started))
    }

    /// Looks at the target's manifest (read alongside the source's) once the
    /// source's has verified. `Some`: nothing more to do, either because the
    /// target holds this exact manifest over the data it describes (a
    /// redelivery) or because it holds something else (rejected). A copied
    /// manifest proves nothing about the data (at `data_key`) beside it.
    /// `rewritten`: [`Self::committed_rewritten`], awaited only then.
    async fn check_target(
        &self,
        id: &impl Display,
        data_key: &str,
        manifest_bytes: &Bytes,
        expected: &CiphertextInfo,
        target_manifest: Result<Bytes, StoreError>,
        rewritten: impl Future<Output = Result<Option<String>, ReplicateError>>,
    ) -> Result<Option<Outcome>, ReplicateError> {
        let backup_id = id.to_string();
        match target_manifest {
            Ok(existing) if existing == *manifest_bytes => {
                if let Some(reason) = rewritten.await? {
                    return self
                        .reject(id, "rewritten_after_commit", reason)
                        .await
                        .map(Some);
                }
                let reason = match self.existing_data(&backup_id, data_key, expected).await? {
                    Some(Ok(_)) => return Ok(Some(Outcome::AlreadyReplicated { backup_id })),
                    Some(Err(reason)) => reason,
                    None => format!(
                        "{} holds this backup's manifest but no data object",
                        self.target.url()
                    ),
                };
                self.reject(id, "replica_conflict", reason).await.map(Some)
            }
            Ok(_) => self
                .reject(
                    id,
                    "replica_conflict",
                    format!(
                        "{} already holds a different manifest for this backup",
                        self.target.url()
                    ),
                )
                .await
                .map(Some),
            Err(StoreError::NotFound { .. }) => Ok(None),
            Err(e) => Err(retry(&id.to_string(), e)),
        }
    }

    /// For a backup or WAL file the target holds already: whether the
    /// source's manifest is another generation than the one copied
    /// (recorded on the copy), or one of its `parts` was written after it.
    async fn committed_rewritten(
        &self,
        backup_id: &str,
        manifest_key: &str,
        source_meta: &ObjectMeta,
        parts: &[String],
    ) -> Result<Option<String>, ReplicateError> {
        let copied = self
            .target
            .head(manifest_key)
            .await
            .map_err(|e| retry(backup_id, e))?;
        if let (Some(copied), Some(now)) = (
            copied.metadata.get(META_SOURCE_GENERATION),
            source_meta.version.as_ref(),
        ) && copied != now
        {
            return Ok(Some(format!(
                "{}/{} is generation {now}, but generation {copied} is the one replicated to {}: nothing legitimate rewrites a committed manifest, so treat it as tampering",
                self.source.url(),
                manifest_key,
                self.target.url()
            )));
        }
        self.rewritten_after_commit(backup_id, source_meta, parts)
            .await
    }

    /// Logs a finished replication and makes its outcome.
    fn replicated(&self, id: &impl Display, digests: Digests, started: Instant) -> Outcome {
        let seconds = started.elapsed().as_secs_f64();
        tracing::info!(
            backup_id = %id,
            bytes = digests.size,
            sha256 = %digests.sha256,
            seconds,
            mb_per_s = digests.size as f64 / 1e6 / seconds.max(1e-9),
            target = %self.target.url(),
            "backup replicated"
        );
        Outcome::Replicated {
            backup_id: id.to_string(),
            bytes: digests.size,
            sha256: digests.sha256,
            seconds,
        }
    }

    /// Streams the data object into the target while verifying it. The outer
    /// error means "retry later"; the inner one is a verification failure.
    async fn copy_data(
        &self,
        id: &BackupId,
        manifest: &Manifest,
        deadline: Option<Deadline>,
    ) -> Result<Result<Digests, String>, ReplicateError> {
        let backup_id = id.to_string();
        let key = id.data_key();
        let expected = &manifest.ciphertext;
        // A previous delivery may have copied the data already.
        if let Some(done) = self.existing_data(&backup_id, &key, expected).await? {
            return Ok(done);
        }
        if let Some(parts_api) = self.target.part_uploads()
            && resume::resumable(expected)
        {
            return self.copy_resumable(id, manifest, parts_api, deadline).await;
        }
        self.copy_streamed(&backup_id, &key, expected, &manifest.recipients)
            .await
    }

    /// [`Self::copy_data`] in one create-only put, never held whole: the
    /// object at `key` as `expected` describes it, its signed description
    /// listing `listed` as recipients.
    async fn copy_streamed(
        &self,
        backup_id: &str,
        key: &str,
        expected: &CiphertextInfo,
        listed: &[String],
    ) -> Result<Result<Digests, String>, ReplicateError> {
        let verifier =
            match BackupVerifier::for_ciphertext(expected, listed, self.recipients.clone()) {
                Ok(v) => v,
                Err(e) => return Ok(Err(e.to_string())),
            };
        let source = match self.source.read(key).await {
            Ok(body) => body,
            Err(StoreError::NotFound { .. }) => {
                return Ok(Err(format!(
                    "data object {key} is missing from {}",
                    self.source.url()
                )));
            }
            Err(e) => return Err(retry(backup_id, e)),
        };
        // Each chunk is authenticated before any byte of it reaches the
        // upload, so a bad chunk never becomes a part; the whole-object
        // checks (structure, recipients, digests) run beside it.
        let (source, verifier) = if expected.chunks.is_empty() {
            (source, verifier)
        } else {
            match crate::crypto::chunks::authenticated(source, expected) {
                Ok(s) => (
                    as_verification_failures(s),
                    verifier.chunks_checked_by_caller(),
                ),
                Err(e) => return Ok(Err(e.to_string())),
            }
        };
        let verified = Arc::new(Mutex::new(None));
        let body = verify_while_streaming(source, verifier, verified.clone());
        if let Err(reason) = self.upload_data(backup_id, key, body, expected).await? {
            return Ok(Err(reason));
        }
        let digests = verified
            .lock()
            .expect("digest slot")
            .take()
            .unwrap_or_else(|| expected_digests(expected));
        Ok(Ok(digests))
    }

    /// The target's data object from a previous delivery, if there is one:
    /// `Some(Ok)` when it is this backup's, `Some(Err)` when it is not.
    async fn existing_data(
        &self,
        backup_id: &str,
        key: &str,
        expected: &CiphertextInfo,
    ) -> Result<Option<Result<Digests, String>>, ReplicateError> {
        match self.target.head(key).await {
            Ok(meta) => {
                let same = self
                    .same_data(key, &meta, expected)
                    .await
                    .map_err(|e| retry(backup_id, e))?;
                Ok(Some(if same {
                    Ok(expected_digests(expected))
                } else {
                    Err(format!(
                        "{} already holds a different data object for this backup",
                        self.target.url()
                    ))
                }))
            }
            Err(StoreError::NotFound { .. }) => Ok(None),
            Err(e) => Err(retry(backup_id, e)),
        }
    }

    /// Whether the target's object at `key` (`meta` from its `head`) holds
    /// the data the signed manifest describes: its size, and the CRC32C the
    /// store computed over the stored bytes (S3: the full-object checksum
    /// read back with `ChecksumMode`). User metadata is never consulted.
    /// A store that reports no whole-object CRC32C (a copy made before
    /// checksums were requested), or another one, is read back and its
    /// SHA-256 compared instead: a rejection is always decided on the bytes.
    async fn same_data(
        &self,
        key: &str,
        meta: &ObjectMeta,
        expected: &CiphertextInfo,
    ) -> Result<bool, StoreError> {
        if meta.size != expected.size {
            return Ok(false);
        }
        if meta.crc32c == Some(expected.crc32c) {
            return Ok(true);
        }
        let mut body = self.target.read(key).await?;
        let (mut size, mut hasher) = (0u64, Sha256::new());
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|source| StoreError::Source {
                store: self.target.url(),
                key: key.to_string(),
                source,
            })?;
            size += chunk.len() as u64;
            hasher.update(&chunk);
        }
        Ok(size == expected.size && hex::encode(hasher.finalize()) == expected.sha256)
    }

    /// The create-only upload of the verifying `body`. The inner error is a
    /// verification failure, or a concurrent copy of another backup.
    async fn upload_data(
        &self,
        backup_id: &str,
        key: &str,
        body: ByteStream,
        expected: &CiphertextInfo,
    ) -> Result<Result<(), String>, ReplicateError> {
        let opts = PutOptions::create()
            .with_content_type("application/pgp-encrypted")
            .with_metadata(META_SHA256, expected.sha256.clone())
            .with_metadata(META_BACKUP_ID, backup_id.to_string());
        match self.target.put(key, body, opts).await {
            Ok(_) => Ok(Ok(())),
            Err(StoreError::PreconditionFailed { .. }) => {
                // A concurrent delivery won the race: accept its copy only if
                // it is the same backup.
                let meta = self
                    .target
                    .head(key)
                    .await
                    .map_err(|e| retry(backup_id, e))?;
                let same = self
                    .same_data(key, &meta, expected)
                    .await
                    .map_err(|e| retry(backup_id, e))?;
                if !same {
                    return Ok(Err(format!(
                        "{} holds a different data object for this backup",
                        self.target.url()
                    )));
                }
                Ok(Ok(()))
            }
            Err(StoreError::Source { source, .. }) => {
                if let Some(v) = source
                    .get_ref()
                    .and_then(|e| e.downcast_ref::<VerificationFailed>())
                {
                    return Ok(Err(v.0.to_string()));
                }
                Err(retry(backup_id, source))
            }
            Err(e) => Err(retry(backup_id, e)),
        }
    }

    /// Create-only put that treats an identical existing object as success;
    /// `generation`: the source generation copied, recorded on the copy.
    async fn put_once(
        &self,
        id: &impl Display,
        key: &str,
        data: Bytes,
        generation: Option<String>,
    ) -> Result<(), ReplicateError> {
        let backup_id = id.to_string();
        let mut opts = PutOptions::create().with_metadata(META_BACKUP_ID, backup_id.clone());
        if let Some(generation) = generation {
            opts = opts.with_metadata(META_SOURCE_GENERATION, generation);
        }
        match self.target.put_bytes(key, data.clone(), opts).await {
            Ok(_) => Ok(()),
            Err(StoreError::PreconditionFailed { .. }) => {
                let existing = self
                    .target
                    .get_bytes(key, MAX_MANIFEST_BYTES)
                    .await
                    .map_err(|e| retry(&backup_id, e))?;
                if existing == data {
                    Ok(())
                } else {
                    Err(retry(
                        &backup_id,
                        format!("{key} exists in {} with other content", self.target.url()),
                    ))
                }
            }
            Err(e) => Err(retry(&backup_id, e)),
        }
    }

    async fn reject(
        &self,
        id: &impl Display,
        code: &str,
        reason: String,
    ) -> Result<Outcome, ReplicateError> {
        tracing::error!(backup_id = %id, code, reason = %reason, "backup failed verification; not replicated");
        let alert = Alert {
            severity: Severity::Critical,
            source: "replicator".into(),
            code: code.to_string(),
            message: format!("backup {id} was not replicated: {reason}"),
            backup_id: Some(id.to_string()),
            details: serde_json::json!({"source": self.source.url(), "target": self.target.url()}),
        };
        // An alert that cannot be published must not be lost: fail so that
        // the notification is redelivered and the alert retried.
        self.alerts
            .publish(&alert)
            .await
            .map_err(|e| retry(&id.to_string(), e))?;
        Ok(Outcome::Rejected {
            backup_id: id.to_string(),
            reason,
        })
    }
}

/// A manifest deleted after the notification was sent: nothing to copy.
fn gone(manifest_key: String) -> Outcome {
    Outcome::Ignored {
        object: manifest_key,
        reason: "manifest no longer exists (deleted after the notification was sent)".into(),
    }
}

/// The digests the signed manifest promises for the data object.
fn expected_digests(expected: &CiphertextInfo) -> Digests {
    Digests {
        size: expected.size,
        sha256: expected.sha256.clone(),
        crc32c: expected.crc32c,
    }
}

/// Marks the authentication failures in `body` (a [`CryptoError`] inside
/// the `io::Error`) as verification failures, told apart from store errors.
fn as_verification_failures(body: ByteStream) -> ByteStream {
    byte_stream(body.map(|item| {
        item.map_err(|e| {
            if e.get_ref().is_some_and(|x| x.is::<CryptoError>()) {
                std::io::Error::other(VerificationFailed(CryptoError::from_io(e)))
            } else {
                e
            }
        })
    }))
}

/// Passes `body` through while feeding the verifier; ends with an error
/// instead of a clean end if anything fails, so the upload is abandoned.
fn verify_while_streaming(
    body: ByteStream,
    verifier: BackupVerifier,
    verified: Arc<Mutex<Option<Digests>>>,
) -> ByteStream {
    let stream = futures::stream::unfold(Some((body, verifier)), move |state| {
        let verified = verified.clone();
        async move {
            let (mut body, mut verifier) = state?;
            match body.next().await {
                Some(Ok(chunk)) => match verifier.feed(&chunk) {
                    Ok(()) => Some((Ok(chunk), Some((body, verifier)))),
                    Err(e) => Some((Err(std::io::Error::other(VerificationFailed(e))), None)),
                },
                Some(Err(e)) => Some((Err(e), None)),
                None => match verifier.finish() {
                    Ok(d) => {
                        *verified.lock().expect("digest slot") = Some(d);
                        None
                    }
                    Err(e) => Some((Err(std::io::Error::other(VerificationFailed(e))), None)),
                },
            }
        }
    });
    byte_stream(stream)
}

impl crate::error::Classify for ReplicateError {
    fn retry(&self) -> crate::error::Retry {
        match self {
            ReplicateError::UnknownBucket { .. } => crate::error::Retry::Permanent,
            ReplicateError::Retry { .. }
            | ReplicateError::Paused { .. }
            | ReplicateError::Busy { .. } => crate::error::Retry::Transient,
        }
    }
}
