//! Uploads in parts that outlive the process that started them (S3
//! multipart uploads): a copy too large for one invocation stops at a part
//! boundary and the next invocation continues it. Only the replica store
//! offers them; [`ObjectStore::part_uploads`] says whether a store does.

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};

use super::{ObjectMeta, PutMode, PutOptions, StoreResult};

/// An upload that was started and neither completed nor aborted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenUpload {
    /// The object key it will create.
    pub key: String,
    /// The store's id of the upload.
    pub upload_id: String,
    /// When it was started, as the store reports it.
    pub initiated: Option<DateTime<Utc>>,
}

/// A part stored in an open upload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadedPart {
    /// 1-based part number.
    pub number: u32,
    /// Its size in bytes.
    pub size: u64,
    /// The CRC32C the store computed over it, when it reports one.
    pub crc32c: Option<u32>,
    /// The store's tag for the part (S3 `ETag`), needed to complete.
    pub etag: Option<String>,
}

/// Multipart uploads that survive the process (see the module docs).
#[async_trait]
pub trait PartUploads: Send + Sync {
    /// Open uploads of exactly `key`, oldest first.
    async fn open_uploads(&self, key: &str) -> StoreResult<Vec<OpenUpload>>;

    /// Open uploads of every key under `prefix` (the audit, the clean-up).
    async fn open_uploads_under(&self, prefix: &str) -> StoreResult<Vec<OpenUpload>>;

    /// Starts an upload of `key` with `opts`' metadata and content type;
    /// returns its id.
    async fn start_upload(&self, key: &str, opts: &PutOptions) -> StoreResult<String>;

    /// The parts stored so far, by part number.
    async fn uploaded_parts(&self, key: &str, upload_id: &str) -> StoreResult<Vec<UploadedPart>>;

    /// Stores part `number` (1-based) with its CRC32C.
    async fn upload_part(
        &self,
        key: &str,
        upload_id: &str,
        number: u32,
        data: Bytes,
    ) -> StoreResult<UploadedPart>;

    /// Completes the upload from `parts` (in order); the store checks the
    /// combined CRC32C. `PutMode::Create` refuses an existing object.
    async fn complete_upload(
        &self,
        key: &str,
        upload_id: &str,
        parts: &[UploadedPart],
        mode: PutMode,
    ) -> StoreResult<ObjectMeta>;

    /// Drops the upload and its parts.
    async fn abort_upload(&self, key: &str, upload_id: &str) -> StoreResult<()>;
}

/// The CRC32C of the whole object the parts make, from the parts' own.
pub fn combined_crc32c(parts: &[UploadedPart]) -> Option<u32> {
    parts.iter().try_fold(None, |acc: Option<u32>, p| {
        let crc = p.crc32c?;
        Some(Some(match acc {
            None => crc,
            Some(a) => crc32c::crc32c_combine(a, crc, p.size as usize),
        }))
    })?
}
