//! The dump's two kinds of upload: the data object, streamed from a
//! running `pg_dump` and so never replayable (its stream is watched, so a
//! failure is blamed on the right party), and the small signature and
//! manifest objects, which are retried with backoff.

use std::sync::{Arc, Mutex};

use futures::StreamExt;

use backstop_core::error::Classify;
use backstop_core::store::{ByteStream, ObjectStore, PutOptions, StoreError, byte_stream};

use super::config::RetryPolicy;

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
pub(super) fn watch(input: ByteStream) -> (ByteStream, Arc<Mutex<SourceState>>) {
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
