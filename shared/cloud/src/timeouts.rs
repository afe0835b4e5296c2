//! The deadlines of every network call, from two variables shared by all
//! clients (GCS, S3, Cloud KMS, Pub/Sub, Google's OIDC keys):
//!
//! - [`CONNECT_TIMEOUT_VAR`] (default 5 s): opening a connection;
//! - [`REQUEST_TIMEOUT_VAR`] (default 10 s): how long a request may wait for
//!   the server's first byte, and how long a streaming transfer may go
//!   without progress.
//!
//! Neither limits how long a transfer takes: a copy of many gigabytes runs
//! as long as bytes keep flowing. A server that accepts the connection and
//! never answers is what they are for: without them the replicator sat on a
//! silent S3 past its push deadline and restore never fell back to S3.
//!
//! Where a client has the knob (S3's connect, read and stalled-stream
//! settings; reqwest's connect and read timeouts) it is set; where it has
//! none (the Cloud Storage, KMS and Pub/Sub clients build their own HTTP and
//! gRPC transports; the OIDC key fetch uses a bare `reqwest::Client`), the
//! adapter puts the same deadline around the call. Either way the error is
//! transient, names the endpoint, and says which variable to raise.

use std::time::Duration;

use backstop_core::config::{ConfigError, Env};

/// Time allowed to open a connection (TCP, and TLS where used).
pub const CONNECT_TIMEOUT_VAR: &str = "BACKSTOP_CONNECT_TIMEOUT";
/// Time allowed for an answer to start, and for a transfer to stall.
pub const REQUEST_TIMEOUT_VAR: &str = "BACKSTOP_REQUEST_TIMEOUT";

/// Cloud endpoints connect in milliseconds; 5 s is a dead or blackholed
/// address, not a slow one.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Cloud Storage, S3, KMS and Pub/Sub answer small requests in well under a
/// second; 10 s lets restore fall back to S3 within seconds and the
/// replicator answer 503 well inside its push deadline (S3's three
/// attempts included), while tolerating a slow moment.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// The deadlines of network calls; see the module documentation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// Opening a connection.
    pub connect: Duration,
    /// Waiting for the first byte of an answer; the longest stall of a
    /// streaming transfer.
    pub request: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: DEFAULT_CONNECT_TIMEOUT,
            request: DEFAULT_REQUEST_TIMEOUT,
        }
    }
}

impl Timeouts {
    /// [`CONNECT_TIMEOUT_VAR`] and [`REQUEST_TIMEOUT_VAR`]: durations such
    /// as `5s`, `1500ms`, `2min`; unset means the defaults.
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        Ok(Timeouts {
            connect: duration(env, CONNECT_TIMEOUT_VAR, DEFAULT_CONNECT_TIMEOUT)?,
            request: duration(env, REQUEST_TIMEOUT_VAR, DEFAULT_REQUEST_TIMEOUT)?,
        })
    }

    /// The deadline for a call whose client cannot time its connection
    /// apart from its request: connect + request.
    pub fn answer(&self) -> Duration {
        self.connect + self.request
    }

    /// What to do about a timeout: the variables, with their values.
    pub fn hint(&self) -> String {
        format!(
            "if it is only slow, raise {REQUEST_TIMEOUT_VAR} (now {}) or {CONNECT_TIMEOUT_VAR} \
             (now {}); otherwise check that it is up and reachable from here",
            show(self.request),
            show(self.connect)
        )
    }

    /// The message for a call to `endpoint` that got no answer within
    /// [`Timeouts::answer`].
    pub fn no_answer(&self, endpoint: &str) -> String {
        format!(
            "{endpoint} did not answer within {} ({CONNECT_TIMEOUT_VAR} + {REQUEST_TIMEOUT_VAR}); {}",
            show(self.answer()),
            self.hint()
        )
    }

    /// The message for a call to `endpoint` that the client itself gave up
    /// on (its own connect, read or attempt timeout, set from these).
    pub fn late(&self, endpoint: &str) -> String {
        format!("{endpoint} did not answer in time; {}", self.hint())
    }

    /// The message for a transfer from or to `endpoint` that made no
    /// progress for `waited`.
    pub fn stalled(&self, endpoint: &str, waited: Duration) -> String {
        format!(
            "the transfer with {endpoint} stalled: nothing for {}; {}",
            show(waited),
            self.hint()
        )
    }
}

/// Runs `call`, or gives up after `limit` (`None`): for clients that offer
/// no timeout of their own.
pub(crate) async fn within<T>(
    limit: Duration,
    call: impl std::future::Future<Output = T>,
) -> Option<T> {
    tokio::time::timeout(limit, call).await.ok()
}

/// Watches an upload whose client has no stall timeout of its own. The
/// upload's source reports when it waits for its own input (a slow
/// `pg_dump` is no network stall) and when it has handed bytes over;
/// [`StallWatch::stalled`] resolves once the client has been waiting on the
/// network — taking no bytes and getting no answer — for `limit`.
#[derive(Debug, Clone)]
pub(crate) struct StallWatch {
    /// Since when the client waits on the network; `None` while the source
    /// is producing.
    since: std::sync::Arc<std::sync::Mutex<Option<tokio::time::Instant>>>,
}

impl StallWatch {
    /// A watch that starts waiting on the network now.
    pub(crate) fn new() -> Self {
        StallWatch {
            since: std::sync::Arc::new(std::sync::Mutex::new(Some(tokio::time::Instant::now()))),
        }
    }

    /// The source is producing: the clock stops.
    pub(crate) fn source_busy(&self) {
        *self.since.lock().expect("stall watch lock") = None;
    }

    /// Bytes went to the client (or the source ended): the client waits on
    /// the network from now.
    pub(crate) fn progressed(&self) {
        *self.since.lock().expect("stall watch lock") = Some(tokio::time::Instant::now());
    }

    /// Resolves when the network wait has lasted `limit`.
    pub(crate) async fn stalled(&self, limit: Duration) {
        loop {
            let since = *self.since.lock().expect("stall watch lock");
            let left = match since {
                None => limit,
                Some(t) => match limit.checked_sub(t.elapsed()) {
                    Some(left) if !left.is_zero() => left,
                    _ => return,
                },
            };
            tokio::time::sleep(left).await;
        }
    }
}

/// A duration in the form it is configured in (`5s`, `1500ms`).
fn show(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}

/// One duration variable: `NNNms`, or what the retention policy accepts
/// (`5s`, `2min`, `1h`); zero is refused (no deadline is not an option).
fn duration(env: &Env, name: &str, default: Duration) -> Result<Duration, ConfigError> {
    let Some(value) = env.optional(name) else {
        return Ok(default);
    };
    let expected = "expected a duration such as 5s, 1500ms or 2min (more than zero)";
    let parsed = match value.strip_suffix("ms") {
        Some(ms) => ms
            .trim()
            .parse::<u64>()
            .map(Duration::from_millis)
            .map_err(|_| expected.to_string()),
        None => backstop_core::retention::parse_duration(&value)
            .map_err(|e| format!("{e}; {expected}"))
            .and_then(|d| d.to_std().map_err(|_| expected.to_string())),
    };
    match parsed {
        Ok(d) if !d.is_zero() => Ok(d),
        Ok(_) => Err(env.invalid(name, expected)),
        Err(reason) => Err(env.invalid(name, reason)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Env {
        Env::from_pairs(pairs.iter().copied())
    }

    #[test]
    fn unset_means_the_defaults() {
        let t = Timeouts::from_env(&env(&[])).unwrap();
        assert_eq!(t, Timeouts::default());
        assert_eq!(t.connect, Duration::from_secs(5));
        assert_eq!(t.request, Duration::from_secs(10));
        assert_eq!(t.answer(), Duration::from_secs(15));
    }

    #[test]
    fn seconds_minutes_and_milliseconds_parse() {
        let t = Timeouts::from_env(&env(&[
            (CONNECT_TIMEOUT_VAR, "1500ms"),
            (REQUEST_TIMEOUT_VAR, "2min"),
        ]))
        .unwrap();
        assert_eq!(t.connect, Duration::from_millis(1500));
        assert_eq!(t.request, Duration::from_secs(120));
        let t = Timeouts::from_env(&env(&[(REQUEST_TIMEOUT_VAR, " 30s ")])).unwrap();
        assert_eq!(t.request, Duration::from_secs(30));
        assert_eq!(t.connect, DEFAULT_CONNECT_TIMEOUT);
    }

    #[test]
    fn a_bad_value_is_refused_naming_the_variable() {
        for (name, value) in [
            (CONNECT_TIMEOUT_VAR, "5"),
            (CONNECT_TIMEOUT_VAR, "0s"),
            (REQUEST_TIMEOUT_VAR, "0ms"),
            (REQUEST_TIMEOUT_VAR, "ten seconds"),
            (REQUEST_TIMEOUT_VAR, "-3s"),
            (REQUEST_TIMEOUT_VAR, "1.5s"),
            (REQUEST_TIMEOUT_VAR, "xms"),
        ] {
            let err = Timeouts::from_env(&env(&[(name, value)])).unwrap_err();
            assert!(
                matches!(&err, ConfigError::Invalid { name: n, .. } if n == name),
                "{value}: {err:?}"
            );
            let text = err.to_string();
            assert!(
                text.contains(name) && text.contains("5s, 1500ms or 2min"),
                "{text}"
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_stall_counts_network_waits_only() {
        let limit = Duration::from_secs(10);
        let watch = StallWatch::new();
        let stalled = tokio::spawn({
            let watch = watch.clone();
            async move { watch.stalled(limit).await }
        });
        tokio::time::sleep(Duration::from_secs(8)).await;
        watch.progressed();
        tokio::time::sleep(Duration::from_secs(8)).await;
        // A slow source: however long, not a stall.
        watch.source_busy();
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert!(!stalled.is_finished());
        watch.progressed();
        tokio::time::sleep(Duration::from_secs(9)).await;
        assert!(!stalled.is_finished());
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert!(stalled.is_finished());
    }

    #[test]
    fn messages_name_the_endpoint_and_what_to_raise() {
        let t = Timeouts {
            connect: Duration::from_millis(500),
            request: Duration::from_secs(2),
        };
        let text = t.no_answer("http://127.0.0.1:9");
        assert!(
            text.starts_with("http://127.0.0.1:9 did not answer within 2500ms"),
            "{text}"
        );
        assert!(
            text.contains(
                "raise BACKSTOP_REQUEST_TIMEOUT (now 2s) or BACKSTOP_CONNECT_TIMEOUT (now 500ms)"
            ),
            "{text}"
        );
        let text = t.late("https://s3.eu-west-1.amazonaws.com");
        assert!(
            text.starts_with(
                "https://s3.eu-west-1.amazonaws.com did not answer in time; if it is only slow"
            ),
            "{text}"
        );
        let text = t.stalled("https://storage.googleapis.com", t.request);
        assert!(
            text.contains("storage.googleapis.com stalled: nothing for 2s"),
            "{text}"
        );
    }
}
