//! The replicator's WAL half: an archived WAL file (see [`crate::wal`]) is
//! copied when its sealed manifest is written, as a backup is when its
//! manifest is.
//!
//! The sealed manifest is opened first (signature, then that it describes
//! the very key it was read from, so a valid manifest copied to another
//! file's name is refused: `wal_invalid`). The data object it names streams
//! from the source through the chunk gate and the structure, recipient and
//! digest checks in one create-only put ([`Replicator::copy_streamed`], as a
//! small backup's), then the sealed manifest is put, create-only: the replica
//! commits in the source's order. A file is at most one segment (16 MiB by
//! default, 1 GiB at most), so there is no resumable copy and no lease: two
//! concurrent deliveries race on create-only puts and the loser accepts the
//! winner's copy only if its bytes are the same.
//!
//! An encrypted copy's own notification starts nothing. If it is the copy a
//! committed manifest names and was written after that manifest, it is a
//! tamper signal (`rewritten_after_commit`); a copy the manifest does not
//! name (a push retried after its commit) is never replicated or trusted,
//! so it is ignored.

use std::time::Instant;

use super::{NOT_CONFIGURED, Outcome, ReplicateError, Replicator, gone, retry};
use crate::events::ObjectRef;
use crate::manifest::MAX_MANIFEST_BYTES;
use crate::store::{ObjectMeta, ObjectStoreExt, StoreError};
use crate::wal::{WalKey, WalManifest, WalObject};

impl Replicator {
    /// A finalize of one of an archived WAL file's objects (`what`, at `key`).
    pub(super) async fn wal_finalized(
        &self,
        object: &ObjectRef,
        key: &WalKey,
        what: WalObject,
    ) -> Result<Outcome, ReplicateError> {
        if !self.replicates(&key.namespace) {
            return Ok(ignored(object, NOT_CONFIGURED));
        }
        match what {
            WalObject::Manifest => self.replicate_wal(key).await,
            WalObject::Data { .. } => self.wal_data_finalized(object, key).await,
        }
    }

    /// Copies the archived WAL file `key`, verified, if the target does not
    /// hold it already (see the module docs).
    pub async fn replicate_wal(&self, key: &WalKey) -> Result<Outcome, ReplicateError> {
        let started = Instant::now();
        let label = key.to_string();
        let manifest_key = key.manifest_key();
        let (source, target) = tokio::join!(
            self.source
                .get_bytes_with_meta(&manifest_key, MAX_MANIFEST_BYTES),
            self.target.get_bytes(&manifest_key, MAX_MANIFEST_BYTES),
        );
        let (meta, sealed) = match source {
            Ok(got) => got,
            Err(StoreError::NotFound { .. }) => return Ok(gone(manifest_key)),
            Err(e) => return Err(retry(&label, e)),
        };
        let manifest = match self.open_wal(key, &sealed) {
            Ok(m) => m,
            Err(reason) => return self.reject(key, "wal_invalid", reason).await,
        };
        let (expected, data_key) = (&manifest.ciphertext, manifest.data_key(key));
        let parts = [data_key.clone()];
        let rewritten = self.committed_rewritten(&label, &manifest_key, &meta, &parts);
        if let Some(done) = self
            .check_target(key, &data_key, &sealed, expected, target, rewritten)
            .await?
        {
            return Ok(done);
        }
        // A previous delivery may have copied the data, not the manifest.
        let copied = match self.existing_data(&label, &data_key, expected).await? {
            Some(Err(reason)) => return self.reject(key, "replica_conflict", reason).await,
            Some(done) => done,
            None => {
                self.copy_streamed(&label, &data_key, expected, &manifest.recipients)
                    .await?
            }
        };
        let digests = match copied {
            Ok(d) => d,
            Err(reason) => return self.reject(key, "verification_failed", reason).await,
        };
        self.put_once(key, &manifest_key, sealed, meta.version)
            .await?;
        Ok(self.replicated(key, digests, started))
    }

    /// Opens the sealed manifest read from `key`'s manifest object: signed
    /// by a trusted key, describing `key`, naming an encrypted copy of that
    /// file beside it. `Err`: why not.
    fn open_wal(&self, key: &WalKey, sealed: &[u8]) -> Result<WalManifest, String> {
        let manifest = WalManifest::open(sealed, &self.signing_keys, key).map_err(|e| {
            format!(
                "the WAL manifest {}/{} does not verify: {e}",
                self.source.url(),
                key.manifest_key()
            )
        })?;
        match WalKey::parse_key(&manifest.data_key(key)) {
            Some((named, WalObject::Data { .. })) if named == *key => Ok(manifest),
            _ => Err(format!(
                "the signed WAL manifest {}/{} names {:?} as its encrypted file, which is not a copy of {} beside it (<file>.<nonce>.pgp); it was not written by backstop wal-push, so treat it as tampering",
                self.source.url(),
                key.manifest_key(),
                manifest.ciphertext.object,
                key.file
            )),
        }
    }

    /// An encrypted copy was written (see the module docs).
    async fn wal_data_finalized(
        &self,
        object: &ObjectRef,
        key: &WalKey,
    ) -> Result<Outcome, ReplicateError> {
        let label = key.to_string();
        let (meta, sealed) = match self
            .source
            .get_bytes_with_meta(&key.manifest_key(), MAX_MANIFEST_BYTES)
            .await
        {
            Ok(got) => got,
            Err(StoreError::NotFound { .. }) => {
                return Ok(ignored(
                    object,
                    "an archived WAL file's encrypted copy; replication starts when its manifest is written",
                ));
            }
            Err(e) => return Err(retry(&label, e)),
        };
        match self.open_wal(key, &sealed) {
            Ok(m) if m.data_key(key) == object.name => {}
            Ok(_) => {
                return Ok(ignored(
                    object,
                    "an encrypted copy its WAL file's manifest does not name (left by a push retried after the commit); it is never replicated",
                ));
            }
            Err(_) => {
                return Ok(ignored(
                    object,
                    "its WAL file's manifest does not verify; the manifest's own notification rejects it",
                ));
            }
        }
        self.data_written_after(key, &meta, object).await
    }

    /// The committed copy `object` was written: after its manifest (`meta`)
    /// is a rewrite, alerted; before it, the manifest's notification copies it.
    async fn data_written_after(
        &self,
        key: &WalKey,
        meta: &ObjectMeta,
        object: &ObjectRef,
    ) -> Result<Outcome, ReplicateError> {
        let (label, parts) = (key.to_string(), [object.name.clone()]);
        let rewritten = self.rewritten_after_commit(&label, meta, &parts);
        if let Some(reason) = rewritten.await? {
            return self.reject(key, "rewritten_after_commit", reason).await;
        }
        Ok(ignored(
            object,
            "an archived WAL file's encrypted copy written before its manifest; the manifest's notification replicates it",
        ))
    }
}

/// Nothing to do for `object`, and why.
fn ignored(object: &ObjectRef, reason: &str) -> Outcome {
    Outcome::Ignored {
        object: object.name.clone(),
        reason: reason.to_string(),
    }
}
