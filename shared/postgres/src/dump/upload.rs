//! The uploads of a job that writes a backup (the dump, the base backup):
//! the data object, streamed from a running `pg_dump` or the walsender
//! and so never replayable (its stream is watched, so a failure is blamed on
//! the right party), and the small signature and manifest objects, which
//! are retried with backoff. [`Publisher`] holds the steps both jobs share.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use chrono::{DateTime, Utc};
use futures::StreamExt;
use futures::future::BoxFuture;

use backstop_core::crypto::{
    CryptoError, EncryptSummary, SummaryHandle, counted, encrypt_stream_with, sign_manifest,
};
use backstop_core::error::Classify;
use backstop_core::manifest::Manifest;
use backstop_core::naming::{BackupId, DATA_FILE};
use backstop_core::store::{
    ByteStream, ObjectMeta, ObjectStore, PutOptions, StoreError, StoreResult, byte_stream,
};

use super::config::{DumpConfig, RetryPolicy};
use super::error::DumpError;
use super::progress::DumpCounters;

/// Where one backup goes and what encrypts and signs it: the steps from a
/// data stream to a committed backup that the dump and the base backup
/// share. Their failures are [`DumpError`]s (encrypt, upload, sign, commit).
pub(crate) struct Publisher<'a> {
    pub config: &'a DumpConfig,
    pub store: &'a dyn ObjectStore,
    pub id: BackupId,
    pub data_key: String,
}

/// A data upload under way: what [`Publisher::stored`] checks once the
/// put has returned.
pub(crate) struct Watched {
    summary: SummaryHandle,
    source: Arc<Mutex<SourceState>>,
    /// The bytes read from the source, compressed and taken by the upload.
    pub counters: DumpCounters,
}

impl<'a> Publisher<'a> {
    pub fn new(config: &'a DumpConfig, store: &'a dyn ObjectStore, id: BackupId) -> Self {
        let data_key = id.data_key();
        Self {
            config,
            store,
            id,
            data_key,
        }
    }

    /// Encrypts `source` (watched) to the recipients and starts its
    /// create-only upload into the data object; await the put, then hand its
    /// result to [`Self::stored`]. The bytes are counted on their way
    /// through ([`Watched::counters`]).
    pub fn upload(
        &self,
        source: ByteStream,
    ) -> Result<(BoxFuture<'_, StoreResult<ObjectMeta>>, Watched), DumpError> {
        let read: Arc<std::sync::atomic::AtomicU64> = Default::default();
        let (source, state) = watch(counted(source, read.clone()));
        let encrypted =
            encrypt_stream_with(source, &self.config.recipients, self.config.compression)
                .map_err(|error| self.encrypt_failed(error))?;
        let counters = DumpCounters {
            read,
            compressed: encrypted.compressed,
            uploaded: Default::default(),
        };
        let put = self.store.put(
            &self.data_key,
            counted(encrypted.stream, counters.uploaded.clone()),
            PutOptions::create().with_content_type("application/octet-stream"),
        );
        let watched = Watched {
            summary: encrypted.summary,
            source: state,
            counters,
        };
        Ok((put, watched))
    }

    /// What the upload came to, blamed on the right party: the source
    /// (`program`, its failure named by `source_failed`) first, then the
    /// store or the encryption; then [`Self::check_upload`].
    pub fn stored<E: From<DumpError>>(
        &self,
        program: &str,
        watched: Watched,
        put: StoreResult<ObjectMeta>,
        source_failed: impl FnOnce(String) -> E,
    ) -> Result<EncryptSummary, E> {
        let state = watched.source.lock().expect("source state").clone();
        if let SourceState::Failed(message) = state {
            return Err(source_failed(message));
        }
        let meta = put.map_err(|e| self.upload_failed(e))?;
        Ok(self.check_upload(program, &state, &watched.summary, &meta)?)
    }

    /// The upload is only as good as the output behind it: `program` must
    /// have ended cleanly, and the store must hold exactly the encrypted bytes.
    fn check_upload(
        &self,
        program: &str,
        state: &SourceState,
        summary: &SummaryHandle,
        meta: &ObjectMeta,
    ) -> Result<EncryptSummary, DumpError> {
        let inconsistent = |reason: String| DumpError::Inconsistent {
            key: self.data_key.clone(),
            reason,
        };
        if !matches!(state, SourceState::Ended) {
            return Err(inconsistent(format!(
                "the upload finished before {program}'s output ended"
            )));
        }
        let summary = summary
            .get()
            .ok_or_else(|| inconsistent("the encryption did not report its digests".into()))?;
        if meta.size != summary.ciphertext.size {
            return Err(inconsistent(format!(
                "the store holds {} bytes, {} were encrypted",
                meta.size, summary.ciphertext.size
            )));
        }
        if let Some(crc) = meta.crc32c.filter(|&c| c != summary.ciphertext.crc32c) {
            return Err(inconsistent(format!(
                "the store reports CRC32C {crc:#010x}, the encrypted bytes have {:#010x}",
                summary.ciphertext.crc32c
            )));
        }
        Ok(summary)
    }

    /// The manifest of the stored data: what every backup records; the job
    /// adds its own fields.
    pub fn manifest(
        &self,
        started_at: DateTime<Utc>,
        summary: &EncryptSummary,
        server_version: String,
    ) -> Manifest {
        Manifest {
            server_version,
            started_at,
            finished_at: Utc::now(),
            plaintext_size: summary.plaintext_size,
            ciphertext: summary.ciphertext_info(DATA_FILE),
            recipients: summary.recipients.clone(),
            signer: self.config.signing_key.fingerprint(),
            tool: format!("backstop {}", env!("CARGO_PKG_VERSION")),
            ..Manifest::of_backup(&self.id)
        }
    }

    /// Signs the manifest and writes the signature, then the manifest (the
    /// commit marker). Returns their keys.
    pub async fn commit(&self, manifest: &Manifest) -> Result<(String, String), DumpError> {
        let (manifest_bytes, signature) = sign_manifest(manifest, &self.config.signing_key)
            .map_err(|error| DumpError::Sign {
                backup_id: self.id.to_string(),
                error,
            })?;
        let signature_key = self.id.signature_key();
        let manifest_key = self.id.manifest_key();
        let signature = signature.as_bytes();
        self.put_commit(&signature_key, signature, "application/pgp-signature")
            .await?;
        self.put_commit(&manifest_key, &manifest_bytes, "application/json")
            .await?;
        Ok((signature_key, manifest_key))
    }

    async fn put_commit(
        &self,
        key: &str,
        body: &[u8],
        content_type: &str,
    ) -> Result<(), DumpError> {
        put_small(self.store, key, body, content_type, self.config.retry)
            .await
            .map_err(|error| DumpError::Commit {
                key: key.to_string(),
                error,
            })
    }

    fn encrypt_failed(&self, error: CryptoError) -> DumpError {
        DumpError::Encrypt {
            backup_id: self.id.to_string(),
            error,
        }
    }

    /// A failed data upload: the encryption's failure when the stream broke
    /// on its side, the store's otherwise.
    fn upload_failed(&self, e: StoreError) -> DumpError {
        match e {
            StoreError::Source { source, .. } => self.encrypt_failed(CryptoError::from_io(source)),
            error => DumpError::Upload {
                key: self.data_key.clone(),
                error,
            },
        }
    }
}

/// The job's duration in seconds (to the millisecond) and its ciphertext
/// megabytes (10^6 bytes) per second (to the hundredth), since `clock`.
pub(crate) fn pace(clock: Instant, ciphertext_bytes: u64) -> (f64, f64) {
    let duration = clock.elapsed().as_secs_f64();
    let throughput = if duration > 0.0 {
        ciphertext_bytes as f64 / 1e6 / duration
    } else {
        0.0
    };
    (
        (duration * 1000.0).round() / 1000.0,
        (throughput * 100.0).round() / 100.0,
    )
}

/// What became of the `pg_dump` output stream, seen from inside it.
#[derive(Debug, Clone, Default)]
pub(super) enum SourceState {
    #[default]
    Running,
    Ended,
    Failed(String),
}

/// Passes `input` through, recording whether it ended cleanly or failed, so
/// that a failed upload can be blamed on the right party and no upload is
/// ever committed unless the dump itself ended cleanly.
fn watch(input: ByteStream) -> (ByteStream, Arc<Mutex<SourceState>>) {
    let state = Arc::new(Mutex::new(SourceState::Running));
    let on_item = state.clone();
    let on_end = state.clone();
    let body = input.map(move |item| {
        if let Err(e) = &item {
            *on_item.lock().expect("source state") = SourceState::Failed(e.to_string());
        }
        item
    });
    let end = futures::stream::once(async move {
        let mut s = on_end.lock().expect("source state");
        if matches!(*s, SourceState::Running) {
            *s = SourceState::Ended;
        }
        None
    });
    let stream = body.map(Some).chain(end).filter_map(|x| async move { x });
    (byte_stream(stream), state)
}

/// Puts a small object, retrying transient failures with backoff. A
/// create-only put that is refused after a transient failure means that an
/// earlier attempt landed (backup names are unique), so it counts as done.
pub(super) async fn put_small(
    store: &dyn ObjectStore,
    key: &str,
    body: &[u8],
    content_type: &str,
    retry: RetryPolicy,
) -> Result<(), StoreError> {
    let body = bytes::Bytes::copy_from_slice(body);
    let mut backoff = retry.initial_backoff;
    let mut attempt = 1;
    loop {
        let opts = PutOptions::create().with_content_type(content_type);
        match store
            .put(key, backstop_core::store::bytes_stream(body.clone()), opts)
            .await
        {
            Ok(_) => return Ok(()),
            Err(StoreError::PreconditionFailed { .. }) if attempt > 1 => {
                tracing::warn!(
                    object = key,
                    attempt,
                    "object exists after a failed attempt: an earlier attempt landed"
                );
                return Ok(());
            }
            Err(e) if e.is_transient() && attempt < retry.attempts.max(1) => {
                tracing::warn!(object = key, attempt, error = %e, backoff_ms = backoff.as_millis() as u64, "transient upload failure, retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(retry.max_backoff);
                attempt += 1;
            }
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn watch_records_clean_end_and_failure() {
        use futures::TryStreamExt;
        let (s, state) = watch(backstop_core::store::bytes_stream(vec![1u8; 10]));
        let v: Vec<bytes::Bytes> = s.try_collect().await.unwrap();
        assert_eq!(v.concat().len(), 10);
        assert!(matches!(*state.lock().unwrap(), SourceState::Ended));

        let failing = byte_stream(futures::stream::iter(vec![
            Ok(bytes::Bytes::from_static(b"abc")),
            Err(std::io::Error::other("pg_dump failed (exit status: 1)")),
        ]));
        let (s, state) = watch(failing);
        let r: Result<Vec<bytes::Bytes>, _> = s.try_collect().await;
        assert!(r.is_err());
        assert!(
            matches!(&*state.lock().unwrap(), SourceState::Failed(m) if m.contains("exit status: 1"))
        );
    }

    /// Fails the first `fail` puts with `error`, then succeeds or refuses.
    #[derive(Debug)]
    struct Flaky {
        fail: u32,
        transient: bool,
        then_exists: bool,
        calls: Mutex<u32>,
    }

    #[async_trait::async_trait]
    impl ObjectStore for Flaky {
        fn url(&self) -> String {
            "mem://flaky".into()
        }
        async fn put(
            &self,
            key: &str,
            _body: ByteStream,
            opts: PutOptions,
        ) -> backstop_core::store::StoreResult<backstop_core::store::ObjectMeta> {
            assert_eq!(opts.mode, backstop_core::store::PutMode::Create);
            let n = {
                let mut c = self.calls.lock().unwrap();
                *c += 1;
                *c
            };
            let (store, key) = ("mem://flaky".to_string(), key.to_string());
            if n <= self.fail {
                return Err(if self.transient {
                    StoreError::Transient {
                        store,
                        op: "put",
                        key,
                        message: "503".into(),
                    }
                } else {
                    StoreError::Permanent {
                        store,
                        op: "put",
                        key,
                        message: "403".into(),
                    }
                });
            }
            if self.then_exists {
                return Err(StoreError::PreconditionFailed { store, key });
            }
            Ok(Default::default())
        }
        async fn get(
            &self,
            _: &str,
        ) -> backstop_core::store::StoreResult<backstop_core::store::GetResult> {
            unreachable!("the dump job never reads")
        }
        async fn head(
            &self,
            _: &str,
        ) -> backstop_core::store::StoreResult<backstop_core::store::ObjectMeta> {
            unreachable!("the dump job never reads")
        }
        async fn list_page(
            &self,
            _: &str,
            _: Option<String>,
        ) -> backstop_core::store::StoreResult<backstop_core::store::ListPage> {
            unreachable!("the dump job never lists")
        }
        async fn delete(&self, _: &str) -> backstop_core::store::StoreResult<()> {
            unreachable!("the dump job never deletes")
        }
    }

    fn flaky(fail: u32, transient: bool, then_exists: bool) -> Flaky {
        Flaky {
            fail,
            transient,
            then_exists,
            calls: Mutex::new(0),
        }
    }

    const FAST: RetryPolicy = RetryPolicy {
        attempts: 4,
        initial_backoff: Duration::from_millis(1),
        max_backoff: Duration::from_millis(4),
    };

    #[tokio::test]
    async fn small_puts_retry_transient_errors_with_backoff() {
        let s = flaky(3, true, false);
        put_small(&s, "k", b"x", "application/json", FAST)
            .await
            .unwrap();
        assert_eq!(*s.calls.lock().unwrap(), 4);

        let s = flaky(4, true, false);
        let e = put_small(&s, "k", b"x", "application/json", FAST)
            .await
            .unwrap_err();
        assert!(e.is_transient());
        assert_eq!(
            *s.calls.lock().unwrap(),
            4,
            "gives up after the policy's attempts"
        );
    }

    #[tokio::test]
    async fn permanent_errors_are_not_retried() {
        let s = flaky(1, false, false);
        assert!(
            put_small(&s, "k", b"x", "application/json", FAST)
                .await
                .is_err()
        );
        assert_eq!(*s.calls.lock().unwrap(), 1);
    }

    #[tokio::test]
    async fn existing_object_after_a_lost_response_counts_as_written() {
        // First attempt "failed" (but landed), the retry finds the object.
        let s = flaky(1, true, true);
        put_small(&s, "k", b"x", "application/json", FAST)
            .await
            .unwrap();
        // On the first attempt, an existing object is a real collision.
        let s = flaky(0, true, true);
        assert!(matches!(
            put_small(&s, "k", b"x", "application/json", FAST).await,
            Err(StoreError::PreconditionFailed { .. })
        ));
    }
}
