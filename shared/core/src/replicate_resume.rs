//! The resumable copy: the data object goes to the replica as a multipart
//! upload with one part per signed chunk, so a copy too large for one
//! invocation stops at a part boundary before its deadline and the next
//! delivery continues where the parts end (found with `ListParts`: nothing
//! is re-read or re-uploaded). Each chunk is authenticated against the
//! signed chunk digests before its part is uploaded; the completed object's
//! size and full-object CRC32C (computed by the store) are checked against
//! the manifest before the manifest is copied.
//!
//! One copier at a time: a delivery takes a lease first, a create-only
//! object `_replication/<backup id>/lease-<n>` in the replica. Only one
//! create of a given `n` succeeds; a lease ends at its holder's deadline
//! (capped at [`MAX_LEASE`] after the store wrote it, so a forged lease
//! cannot block forever), and the next delivery takes the next `n`.

use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use chrono::{DateTime, Utc};
use futures::{StreamExt, TryStreamExt};

use super::{ReplicateError, Replicator, retry};
use crate::crypto::chunks::authenticated_from;
use crate::crypto::{CryptoError, Digests, PacketInspector};
use crate::manifest::{CiphertextInfo, Manifest};
use crate::naming::BackupId;
use crate::store::{ObjectStoreExt, PartUploads, PutMode, PutOptions, StoreError, UploadedPart};

/// Key prefix of the replication leases in the replica bucket.
pub const REPLICATION_PREFIX: &str = "_replication/";

/// The longest a lease counts, from when the store wrote it.
pub const MAX_LEASE: Duration = Duration::from_secs(20 * 60);

/// S3's smallest part (except the last): chunks must be at least this big
/// for one part per chunk.
const MIN_PART: u64 = 5 << 20;

/// S3's most parts in one upload.
const MAX_PARTS: u64 = 10_000;

/// Part bytes in flight at once (so memory stays bounded whatever the size).
const BYTES_IN_FLIGHT: u64 = 32 << 20;

/// How the object is cut into parts: whole chunks each, as few as fit in
/// [`MAX_PARTS`] (one chunk per part up to 10,000 chunks: 78 GiB with the
/// 8 MiB chunks; two per part beyond that, and so on).
#[derive(Debug, Clone, Copy)]
struct Layout {
    size: u64,
    chunks_per_part: usize,
    part_size: u64,
    parts: usize,
}

impl Layout {
    fn of(expected: &CiphertextInfo) -> Self {
        let chunks = expected.chunks.len() as u64;
        let per_part = chunks.div_ceil(MAX_PARTS).max(1);
        let part_size = per_part * expected.chunk_size;
        Layout {
            size: expected.size,
            chunks_per_part: per_part as usize,
            part_size,
            parts: expected.size.div_ceil(part_size).max(1) as usize,
        }
    }

    /// Bytes of part `index` (0-based): whole chunks, the last one short.
    fn part_len(&self, index: usize) -> u64 {
        let start = index as u64 * self.part_size;
        self.size.saturating_sub(start).min(self.part_size)
    }

    /// Parts uploaded at once: four of one chunk, fewer of larger ones.
    fn in_flight(&self) -> usize {
        (BYTES_IN_FLIGHT / self.part_size).clamp(1, 4) as usize
    }
}

/// How long this delivery may work on a copy.
#[derive(Debug, Clone, Copy)]
pub struct Deadline {
    /// When the invocation ends (the Lambda context's deadline, or
    /// `BACKSTOP_REPLICATE_DEADLINE` after the start locally).
    pub at: Instant,
    /// No new part is started with less than this left.
    pub margin: Duration,
    /// The whole window (from the start of the delivery to `at`).
    pub window: Duration,
}

impl Deadline {
    /// A deadline `window` from now, with a margin of a quarter of it
    /// (between 1 and 10 s): room for the parts in flight to finish.
    pub fn after(window: Duration) -> Self {
        let margin = (window / 4).clamp(Duration::from_secs(1), Duration::from_secs(10));
        Deadline {
            at: Instant::now() + window,
            margin,
            window,
        }
    }

    /// Whether completing the upload, a step of unknown length (the store
    /// assembles the parts: seconds per GiB on some), should wait for a
    /// fresh delivery: less than three quarters of the window is left.
    fn too_late_for_completion(&self) -> bool {
        self.running_short(self.window * 3 / 4)
    }

    /// Whether work that takes `next` more would end within the margin.
    fn running_short(&self, next: Duration) -> bool {
        Instant::now() + self.margin + next >= self.at
    }

    fn remaining(&self) -> Duration {
        self.at.saturating_duration_since(Instant::now())
    }
}

/// Where a paused copy stands, recorded in the lease that ends it: the
/// parts' CRC32Cs, which some stores (moto) do not list. Never trusted for
/// more than completing: S3 checks the combined CRC32C against the parts it
/// holds, and the result is checked against the signed manifest.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
struct Progress {
    upload_id: String,
    /// `(part number, size, CRC32C)`.
    parts: Vec<(u32, u64, u32)>,
}

impl Progress {
    fn of(upload_id: &str, parts: &[UploadedPart]) -> Self {
        Progress {
            upload_id: upload_id.to_string(),
            parts: parts
                .iter()
                .filter_map(|p| Some((p.number, p.size, p.crc32c?)))
                .collect(),
        }
    }

    /// Fills in the CRC32C of listed parts that the store did not report.
    fn fill(&self, upload_id: &str, parts: &mut [UploadedPart]) {
        if self.upload_id != upload_id {
            return;
        }
        for p in parts.iter_mut().filter(|p| p.crc32c.is_none()) {
            p.crc32c = self
                .parts
                .iter()
                .find(|(n, size, _)| *n == p.number && *size == p.size)
                .map(|(_, _, crc)| *crc);
        }
    }
}

/// Whether `expected` can be copied in parts of whole chunks.
pub(super) fn resumable(expected: &CiphertextInfo) -> bool {
    !expected.chunks.is_empty()
        && expected.chunk_size >= MIN_PART
        && Layout::of(expected).part_size <= 5 << 30
}

/// The parts of an open upload that continue the object from its start:
/// numbers 1..=k, each of its layout's size, with a known CRC32C.
fn usable_prefix(parts: &[UploadedPart], layout: &Layout) -> Option<Vec<UploadedPart>> {
    let mut out = Vec::new();
    for (i, p) in parts.iter().enumerate() {
        let fits = p.number as usize == i + 1 && i < layout.parts && p.size == layout.part_len(i);
        if !fits || p.crc32c.is_none() {
            return None;
        }
        out.push(p.clone());
    }
    Some(out)
}

impl Replicator {
    /// Takes the copy lease of `id` in the replica (returns its number), or
    /// says until when another delivery holds it.
    async fn take_lease(
        &self,
        id: &BackupId,
        deadline: Option<Deadline>,
    ) -> Result<(u64, Option<Progress>), ReplicateError> {
        let backup_id = id.to_string();
        let prefix = format!("{REPLICATION_PREFIX}{id}/");
        let leases = self
            .target
            .list_all(&prefix)
            .await
            .map_err(|e| retry(&backup_id, e))?;
        let newest = leases
            .iter()
            .filter_map(|m| lease_number(&m.key, &prefix).map(|n| (n, m)))
            .max_by_key(|(n, _)| *n);
        let (next, progress) = match newest {
            Some((n, meta)) => {
                let (until, progress) = self.read_lease(&meta.key, meta.updated).await?;
                if let Some(until) = until.filter(|u| *u > Utc::now()) {
                    return Err(ReplicateError::Busy { backup_id, until });
                }
                (n + 1, progress)
            }
            None => (1, None),
        };
        let expires = Utc::now()
            + chrono::TimeDelta::from_std(
                deadline.map_or(MAX_LEASE, |d| d.remaining().min(MAX_LEASE)),
            )
            .unwrap_or_default();
        let body = serde_json::json!({ "backup_id": backup_id, "expires_at": expires }).to_string();
        let key = format!("{prefix}lease-{next:06}");
        match self
            .target
            .put_bytes(
                &key,
                Bytes::from(body),
                PutOptions::create().with_content_type("application/json"),
            )
            .await
        {
            Ok(_) => Ok((next, progress)),
            Err(StoreError::PreconditionFailed { .. }) => Err(ReplicateError::Busy {
                backup_id,
                until: expires,
            }),
            Err(e) => Err(retry(&backup_id, e)),
        }
    }

    /// Ends lease `n` of `id` early (a pause, a finished or failed copy):
    /// the next lease, already expired, so the next delivery need not wait
    /// for this one's deadline. Best effort: an unreleased lease expires.
    async fn release_lease(&self, id: &BackupId, n: u64, progress: Option<Progress>) {
        let key = format!("{REPLICATION_PREFIX}{id}/lease-{:06}", n + 1);
        let body = serde_json::json!({ "backup_id": id.to_string(), "expires_at": Utc::now(), "released": n, "progress": progress });
        let opts = PutOptions::create().with_content_type("application/json");
        if let Err(e) = self
            .target
            .put_bytes(&key, Bytes::from(body.to_string()), opts)
            .await
        {
            tracing::debug!(backup_id = %id, error = %e, "lease not released; it expires at its deadline");
        }
    }

    /// When the lease at `key` ends (its `expires_at`, but never later than
    /// [`MAX_LEASE`] after the store wrote it), and the progress it records.
    async fn read_lease(
        &self,
        key: &str,
        written: Option<DateTime<Utc>>,
    ) -> Result<(Option<DateTime<Utc>>, Option<Progress>), ReplicateError> {
        let bytes = match self.target.get_bytes(key, 1 << 20).await {
            Ok(b) => b,
            Err(StoreError::NotFound { .. }) => return Ok((None, None)),
            Err(e) => return Err(retry(key, e)),
        };
        let value = serde_json::from_slice::<serde_json::Value>(&bytes).unwrap_or_default();
        let claimed = value["expires_at"]
            .as_str()
            .and_then(|t| t.parse::<DateTime<Utc>>().ok());
        let progress = serde_json::from_value(value["progress"].clone()).ok();
        let cap = written.map(|w| w + chrono::TimeDelta::from_std(MAX_LEASE).unwrap_or_default());
        let end = match (claimed, cap) {
            (Some(c), Some(cap)) => Some(c.min(cap)),
            (c, cap) => c.or(cap),
        };
        Ok((end, progress))
    }

    /// The resumable copy of the data object (see the module docs). The
    /// outer error means "retry later" (a pause at the deadline is one); the
    /// inner one is a verification failure.
    pub(super) async fn copy_resumable(
        &self,
        id: &BackupId,
        manifest: &Manifest,
        parts_api: &dyn PartUploads,
        deadline: Option<Deadline>,
    ) -> Result<Result<Digests, String>, ReplicateError> {
        let (lease, known) = self.take_lease(id, deadline).await?;
        let mut progress = None;
        let result = self
            .copy_holding_lease(id, manifest, parts_api, deadline, known, &mut progress)
            .await;
        self.release_lease(id, lease, progress).await;
        result
    }

    async fn copy_holding_lease(
        &self,
        id: &BackupId,
        manifest: &Manifest,
        parts_api: &dyn PartUploads,
        deadline: Option<Deadline>,
        known: Option<Progress>,
        progress: &mut Option<Progress>,
    ) -> Result<Result<Digests, String>, ReplicateError> {
        let backup_id = id.to_string();
        let key = id.data_key();
        let expected = &manifest.ciphertext;
        let layout = Layout::of(expected);
        let (upload_id, mut done) = self
            .open_upload(
                &backup_id,
                &key,
                expected,
                &layout,
                parts_api,
                known.as_ref(),
            )
            .await?;
        let first = done.len();
        let total = layout.parts;
        let mut uploaded_now = 0usize;
        if first < total {
            let body = match self
                .source
                .read_from(&key, first as u64 * layout.part_size)
                .await
            {
                Ok(b) => b,
                Err(StoreError::NotFound { .. }) => {
                    let _ = parts_api.abort_upload(&key, &upload_id).await;
                    return Ok(Err(format!(
                        "data object {key} is missing from {}",
                        self.source.url()
                    )));
                }
                Err(e) => return Err(retry(&backup_id, e)),
            };
            let chunks = match authenticated_from(body, expected, first * layout.chunks_per_part) {
                Ok(s) => whole_parts(s, layout, first),
                Err(e) => return Ok(Err(e.to_string())),
            };
            let step = self
                .upload_parts(
                    chunks, parts_api, &key, &upload_id, &layout, first, deadline,
                )
                .await;
            let (new_parts, failure) = step;
            uploaded_now = new_parts.len();
            done.extend(new_parts);
            done.sort_by_key(|p| p.number);
            *progress = Some(Progress::of(&upload_id, &done));
            match failure {
                Some(Failure::Verification(reason)) => {
                    // Nothing of a backup that failed may stay, not even invisibly.
                    let _ = parts_api.abort_upload(&key, &upload_id).await;
                    return Ok(Err(reason));
                }
                Some(Failure::Store(e)) => return Err(retry(&backup_id, e)),
                None => {}
            }
            // Completing and copying the manifest need a moment too.
            let complete_later =
                uploaded_now > 0 && deadline.is_some_and(|d| d.too_late_for_completion());
            if done.len() < total || complete_later {
                tracing::info!(backup_id = %id, parts_done = done.len(), parts_total = total, uploaded_now, "copy paused before the deadline; it resumes on redelivery");
                return Err(ReplicateError::Paused {
                    backup_id,
                    parts_done: done.len(),
                    parts_total: total,
                    uploaded_now,
                });
            }
        }
        self.complete(
            &backup_id,
            &key,
            &upload_id,
            &done,
            expected,
            parts_api,
            uploaded_now,
        )
        .await
    }

    /// The open upload of `key` to continue, with its usable parts, or a new
    /// one. Older or unusable uploads are aborted.
    async fn open_upload(
        &self,
        backup_id: &str,
        key: &str,
        expected: &CiphertextInfo,
        layout: &Layout,
        parts_api: &dyn PartUploads,
        known: Option<&Progress>,
    ) -> Result<(String, Vec<UploadedPart>), ReplicateError> {
        let mut open = parts_api
            .open_uploads(key)
            .await
            .map_err(|e| retry(backup_id, e))?;
        while let Some(upload) = open.pop() {
            let mut parts = parts_api
                .uploaded_parts(key, &upload.upload_id)
                .await
                .map_err(|e| retry(backup_id, e))?;
            if let Some(known) = known {
                known.fill(&upload.upload_id, &mut parts);
            }
            if let Some(usable) = usable_prefix(&parts, layout) {
                for older in open.drain(..) {
                    let _ = parts_api.abort_upload(key, &older.upload_id).await;
                }
                tracing::info!(backup_id, upload_id = %upload.upload_id, parts = usable.len(), "resuming the copy");
                return Ok((upload.upload_id, usable));
            }
            tracing::warn!(backup_id, upload_id = %upload.upload_id, "an open upload does not continue the object; aborting it");
            let _ = parts_api.abort_upload(key, &upload.upload_id).await;
        }
        let opts = PutOptions::create()
            .with_content_type("application/pgp-encrypted")
            .with_metadata(super::META_SHA256, expected.sha256.clone())
            .with_metadata(super::META_BACKUP_ID, backup_id.to_string());
        let upload_id = parts_api
            .start_upload(key, &opts)
            .await
            .map_err(|e| retry(backup_id, e))?;
        Ok((upload_id, Vec::new()))
    }

    /// Uploads authenticated parts, a few at a time, until they run out,
    /// one fails, or the deadline comes near.
    #[allow(clippy::too_many_arguments)]
    async fn upload_parts(
        &self,
        chunks: futures::stream::BoxStream<'static, Result<(usize, Bytes), Failure>>,
        parts_api: &dyn PartUploads,
        key: &str,
        upload_id: &str,
        layout: &Layout,
        first: usize,
        deadline: Option<Deadline>,
    ) -> (Vec<UploadedPart>, Option<Failure>) {
        let mut inspector = (first == 0).then(|| PacketInspector::new(self.recipients.clone()));
        // A new part starts only if it, and the parts in flight, can finish
        // before the margin: the slowest part so far is the estimate. The
        // first part needs only the margin, so every delivery that starts
        // with more than the margin left makes progress.
        let slowest = std::sync::Mutex::new(Duration::ZERO);
        let in_flight = layout.in_flight();
        let estimate = || *slowest.lock().expect("part timing") * (in_flight as u32 / 2 + 1);
        let until_deadline = chunks.take_while(|_| {
            let short = deadline.is_some_and(|d| d.running_short(estimate()));
            futures::future::ready(!short)
        });
        let mut uploads = until_deadline
            .map(|item| {
                let inspected = match (&item, inspector.as_mut()) {
                    (Ok((0, data)), Some(i)) => i
                        .feed(data)
                        .map_err(|e| Failure::Verification(e.to_string())),
                    _ => Ok(()),
                };
                let slowest = &slowest;
                async move {
                    inspected?;
                    let (index, data) = item?;
                    let started = Instant::now();
                    let part = parts_api
                        .upload_part(key, upload_id, index as u32 + 1, data)
                        .await
                        .map_err(Failure::Store)?;
                    let mut s = slowest.lock().expect("part timing");
                    *s = (*s).max(started.elapsed());
                    Ok(part)
                }
            })
            .buffered(in_flight);
        let mut done = Vec::new();
        while let Some(result) = uploads.next().await {
            match result {
                Ok(part) => done.push(part),
                Err(f) => return (done, Some(f)),
            }
        }
        (done, None)
    }

    /// Completes the upload and checks what the store made of it against
    /// the signed manifest.
    #[allow(clippy::too_many_arguments)]
    async fn complete(
        &self,
        backup_id: &str,
        key: &str,
        upload_id: &str,
        parts: &[UploadedPart],
        expected: &CiphertextInfo,
        parts_api: &dyn PartUploads,
        uploaded_now: usize,
    ) -> Result<Result<Digests, String>, ReplicateError> {
        match parts_api
            .complete_upload(key, upload_id, parts, PutMode::Create)
            .await
        {
            Ok(_) => {}
            Err(StoreError::PreconditionFailed { .. }) => {
                let _ = parts_api.abort_upload(key, upload_id).await;
            }
            Err(e) => return Err(retry(backup_id, e)),
        }
        let meta = self
            .target
            .head(key)
            .await
            .map_err(|e| retry(backup_id, e))?;
        if meta.size != expected.size || meta.crc32c != Some(expected.crc32c) {
            return Ok(Err(format!(
                "the copy in {} is {} bytes with CRC32C {}, the signed manifest says {} bytes, {:08x}",
                self.target.url(),
                meta.size,
                meta.crc32c.map_or("none".into(), |c| format!("{c:08x}")),
                expected.size,
                expected.crc32c
            )));
        }
        tracing::info!(
            backup_id,
            parts = parts.len(),
            uploaded_now,
            "copy complete; size and CRC32C match the manifest"
        );
        Ok(Ok(super::expected_digests(expected)))
    }
}

/// Why the upload of parts stopped.
enum Failure {
    Verification(String),
    Store(StoreError),
}

fn lease_number(key: &str, prefix: &str) -> Option<u64> {
    key.strip_prefix(prefix)?
        .strip_prefix("lease-")?
        .parse()
        .ok()
}

/// The authenticated slices of `body` (which starts at part `first`),
/// joined into whole parts with their indices. A verification failure
/// becomes [`Failure::Verification`], a read failure [`Failure::Store`].
fn whole_parts(
    body: crate::store::ByteStream,
    layout: Layout,
    first: usize,
) -> futures::stream::BoxStream<'static, Result<(usize, Bytes), Failure>> {
    let state = (body, first, BytesMut::new());
    futures::stream::try_unfold(state, move |(mut body, index, mut buf)| {
        let want = layout.part_len(index) as usize;
        async move {
            if want == 0 {
                return Ok(None);
            }
            while buf.len() < want {
                match body.try_next().await {
                    Ok(Some(slice)) => buf.extend_from_slice(&slice),
                    Ok(None) => break,
                    Err(e) => return Err(io_failure(e)),
                }
            }
            if buf.len() < want {
                return Err(Failure::Verification(format!(
                    "the data object ended inside part {index}"
                )));
            }
            let chunk = buf.split_to(want).freeze();
            Ok(Some(((index, chunk), (body, index + 1, buf))))
        }
    })
    .boxed()
}

/// A failure inside the authenticated stream: a chunk that did not match
/// (or any other crypto check) is a verification failure; anything else is
/// the source store's, worth a retry.
fn io_failure(e: std::io::Error) -> Failure {
    match e.get_ref().and_then(|r| r.downcast_ref::<CryptoError>()) {
        Some(c) => Failure::Verification(c.to_string()),
        None => Failure::Store(StoreError::Transient {
            store: "the source".into(),
            op: "read",
            key: String::new(),
            message: e.to_string(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(size: u64) -> CiphertextInfo {
        let chunk_size = crate::crypto::chunks::CHUNK_SIZE;
        CiphertextInfo {
            object: "data".into(),
            size,
            sha256: String::new(),
            crc32c: 0,
            chunk_size,
            chunks: vec!["00".repeat(32); size.div_ceil(chunk_size) as usize],
        }
    }

    #[test]
    fn parts_are_whole_chunks_and_never_more_than_ten_thousand() {
        let mib = 1u64 << 20;
        let small = Layout::of(&info(20 * mib + 5));
        assert_eq!((small.chunks_per_part, small.parts), (1, 3));
        assert_eq!(small.part_len(2), 4 * mib + 5);
        assert_eq!(small.in_flight(), 4);
        let at_limit = Layout::of(&info(10_000 * 8 * mib));
        assert_eq!((at_limit.chunks_per_part, at_limit.parts), (1, 10_000));
        let beyond = Layout::of(&info(10_001 * 8 * mib));
        assert_eq!(beyond.chunks_per_part, 2);
        assert!(beyond.parts as u64 <= MAX_PARTS);
        let huge = Layout::of(&info(4 << 40));
        assert!(huge.parts as u64 <= MAX_PARTS && huge.part_size <= 5 << 30);
        assert_eq!(huge.in_flight(), 1);
        assert!(resumable(&info(4 << 40)));
    }

    #[test]
    fn a_gap_or_a_wrong_size_makes_an_upload_unusable() {
        let layout = Layout::of(&info(20 << 20));
        let part = |number, size| UploadedPart {
            number,
            size,
            crc32c: Some(1),
            etag: None,
        };
        let eight = 8 << 20;
        assert_eq!(
            usable_prefix(&[part(1, eight), part(2, eight)], &layout)
                .unwrap()
                .len(),
            2
        );
        assert!(usable_prefix(&[part(1, eight), part(3, eight)], &layout).is_none());
        assert!(usable_prefix(&[part(1, eight - 1)], &layout).is_none());
        let unknown_crc = UploadedPart {
            crc32c: None,
            ..part(1, eight)
        };
        assert!(usable_prefix(&[unknown_crc], &layout).is_none());
    }
}
