//! S3 multipart uploads that outlive one process ([`PartUploads`]): the
//! replicator's resumable copy starts one, adds parts over several
//! invocations, finds them again with `ListParts`, and completes it with a
//! full-object CRC32C that S3 checks.

use async_trait::async_trait;
use aws_sdk_s3::types::{ChecksumAlgorithm, ChecksumType, CompletedMultipartUpload, CompletedPart};
use bytes::Bytes;

use backstop_core::store::{
    ObjectMeta, ObjectStore, OpenUpload, PartUploads, PutMode, PutOptions, StoreResult,
    UploadedPart, combined_crc32c,
};

use super::{S3Store, completed_but_unparsed, crc_b64, crc_from_b64, to_chrono};

#[async_trait]
impl PartUploads for S3Store {
    async fn open_uploads(&self, key: &str) -> StoreResult<Vec<OpenUpload>> {
        let all = self.open_uploads_under(key).await?;
        Ok(all.into_iter().filter(|u| u.key == key).collect())
    }

    async fn open_uploads_under(&self, prefix: &str) -> StoreResult<Vec<OpenUpload>> {
        let mut out = Vec::new();
        let (mut key_marker, mut id_marker) = (None, None);
        loop {
            let page = self
                .client
                .list_multipart_uploads()
                .bucket(&self.bucket)
                .prefix(prefix)
                .set_key_marker(key_marker.take())
                .set_upload_id_marker(id_marker.take())
                .send()
                .await
                .map_err(|e| self.map_err("list multipart uploads", prefix, e))?;
            out.extend(page.uploads().iter().map(|u| OpenUpload {
                key: u.key().unwrap_or_default().to_string(),
                upload_id: u.upload_id().unwrap_or_default().to_string(),
                initiated: u.initiated().and_then(to_chrono),
            }));
            if !page.is_truncated().unwrap_or(false) {
                break;
            }
            key_marker = page.next_key_marker().map(str::to_string);
            id_marker = page.next_upload_id_marker().map(str::to_string);
            if key_marker.is_none() && id_marker.is_none() {
                break;
            }
        }
        out.sort_by_key(|u| u.initiated);
        Ok(out)
    }

    async fn start_upload(&self, key: &str, opts: &PutOptions) -> StoreResult<String> {
        let created = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .checksum_algorithm(ChecksumAlgorithm::Crc32C)
            .checksum_type(ChecksumType::FullObject)
            .set_metadata(Some(opts.metadata.clone().into_iter().collect()))
            .set_content_type(opts.content_type.clone())
            .send()
            .await
            .map_err(|e| self.map_err("create multipart upload", key, e))?;
        Ok(created.upload_id().unwrap_or_default().to_string())
    }

    async fn uploaded_parts(&self, key: &str, upload_id: &str) -> StoreResult<Vec<UploadedPart>> {
        let mut out = Vec::new();
        let mut marker = None;
        loop {
            let sent = self
                .client
                .list_parts()
                .bucket(&self.bucket)
                .key(key)
                .upload_id(upload_id)
                .set_part_number_marker(marker.take())
                .send()
                .await;
            let page = match sent {
                Ok(page) => page,
                // moto names the root `ListPartsResponse`, which the SDK
                // refuses; the answer is complete, so read it ourselves.
                Err(e) if completed_but_unparsed(&e) => {
                    let body = e
                        .raw_response()
                        .and_then(|r| r.body().bytes())
                        .unwrap_or_default();
                    out.extend(parts_from_xml(&String::from_utf8_lossy(body)));
                    break;
                }
                Err(e) => return Err(self.map_err("list parts", key, e)),
            };
            out.extend(page.parts().iter().map(|p| UploadedPart {
                number: p.part_number().unwrap_or_default().max(0) as u32,
                size: p.size().unwrap_or_default().max(0) as u64,
                crc32c: p.checksum_crc32_c().and_then(crc_from_b64),
                etag: p.e_tag().map(str::to_string),
            }));
            if !page.is_truncated().unwrap_or(false) {
                break;
            }
            marker = page.next_part_number_marker().map(str::to_string);
            if marker.is_none() {
                break;
            }
        }
        out.sort_by_key(|p| p.number);
        Ok(out)
    }

    async fn upload_part(
        &self,
        key: &str,
        upload_id: &str,
        number: u32,
        data: Bytes,
    ) -> StoreResult<UploadedPart> {
        let (part, size, crc) = self.put_part(key, upload_id, number as i32, data).await?;
        Ok(UploadedPart {
            number,
            size,
            crc32c: Some(crc),
            etag: part.e_tag().map(str::to_string),
        })
    }

    async fn complete_upload(
        &self,
        key: &str,
        upload_id: &str,
        parts: &[UploadedPart],
        mode: PutMode,
    ) -> StoreResult<ObjectMeta> {
        let size: u64 = parts.iter().map(|p| p.size).sum();
        let crc = combined_crc32c(parts);
        let completed = CompletedMultipartUpload::builder()
            .set_parts(Some(
                parts
                    .iter()
                    .map(|p| {
                        CompletedPart::builder()
                            .part_number(p.number as i32)
                            .set_e_tag(p.etag.clone())
                            .set_checksum_crc32_c(p.crc32c.map(crc_b64))
                            .build()
                    })
                    .collect(),
            ))
            .build();
        let mut req = self
            .client
            .complete_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(upload_id)
            .checksum_type(ChecksumType::FullObject)
            .set_checksum_crc32_c(crc.map(crc_b64))
            .mpu_object_size(size as i64)
            .multipart_upload(completed);
        if mode == PutMode::Create {
            req = req.if_none_match("*");
        }
        let unparsed = match req.send().await {
            Ok(_) => None,
            // moto answers 200 with a body the SDK cannot parse: the upload
            // did complete if the object has the size of its parts.
            Err(e) if completed_but_unparsed(&e) => Some(e),
            Err(e) => return Err(self.map_err("complete multipart upload", key, e)),
        };
        let meta = self.head(key).await?;
        match unparsed {
            Some(e) if meta.size != size => Err(self.map_err("complete multipart upload", key, e)),
            _ => Ok(meta),
        }
    }

    async fn abort_upload(&self, key: &str, upload_id: &str) -> StoreResult<()> {
        self.client
            .abort_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(upload_id)
            .send()
            .await
            .map_err(|e| self.map_err("abort multipart upload", key, e))?;
        Ok(())
    }
}

/// The `<Part>` entries of a `ListParts` answer the SDK could not parse
/// (one page: the stack's uploads have far fewer than 1,000 parts).
fn parts_from_xml(xml: &str) -> Vec<UploadedPart> {
    let field = |part: &str, name: &str| -> Option<String> {
        let open = format!("<{name}>");
        let start = part.find(&open)? + open.len();
        let end = part[start..].find(&format!("</{name}>"))? + start;
        Some(part[start..end].replace("&quot;", "\""))
    };
    xml.split("<Part>")
        .skip(1)
        .filter_map(|part| {
            Some(UploadedPart {
                number: field(part, "PartNumber")?.parse().ok()?,
                size: field(part, "Size")?.parse().ok()?,
                crc32c: field(part, "ChecksumCRC32C").and_then(|c| crc_from_b64(&c)),
                etag: field(part, "ETag"),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn parts_of_an_unparsed_list_parts_answer() {
        let xml = r#"<ListPartsResponse><Part><PartNumber>1</PartNumber><ETag>&quot;7d85&quot;</ETag><Size>8388608</Size></Part><Part><PartNumber>2</PartNumber><ETag>"aa"</ETag><Size>5</Size><ChecksumCRC32C>yZRlqg==</ChecksumCRC32C></Part></ListPartsResponse>"#;
        let parts = super::parts_from_xml(xml);
        assert_eq!(parts.len(), 2);
        assert_eq!((parts[0].number, parts[0].size), (1, 8388608));
        assert_eq!(parts[0].etag.as_deref(), Some("\"7d85\""));
        assert_eq!(parts[0].crc32c, None);
        assert_eq!(parts[1].crc32c, super::crc_from_b64("yZRlqg=="));
    }
}
