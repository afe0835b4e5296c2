//! What every function binary shares: one `Function` trait, and the two ways
//! to run it — under the AWS Lambda runtime, or locally with `--event FILE`
//! (the result is printed as JSON on stdout; the exit code tells success).

use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use serde_json::{Value, json};

use backstop_cloud::oidc::{AuthError, OidcVerifier};
use backstop_core::events::{EventError, HttpRequest, Invocation, MAX_EVENT_BYTES};

use backstop_core::error::{Classify, Retry};

use crate::http::HttpResponse;
/// The local HTTP front (`backstop serve`) lives in [`crate::http`].
pub use crate::http::{FrontLimits, serve_local, serve_local_with};

/// A function's answer: an HTTP status (used as is for Function URL requests;
/// for direct invocations anything >= 300 is an invocation error) and a body.
pub type Reply = HttpResponse;

pub fn reply_error(status: u16, code: &str, message: impl std::fmt::Display) -> Reply {
    HttpResponse::new(
        status,
        json!({"error": code, "message": message.to_string()}),
    )
}

/// Maps a malformed event to a 400 that names the problem.
pub fn reply_bad_event(err: &EventError) -> Reply {
    reply_error(400, "bad_event", err)
}

/// Checks the OIDC token of a Function URL request: 401 when it is missing
/// or invalid, 503 when Google's keys could not be fetched (retryable).
pub async fn authenticate(oidc: &OidcVerifier, req: &HttpRequest) -> Result<String, Reply> {
    oidc.verify(req)
        .await
        .map_err(|e: AuthError| match e.retry() {
            Retry::Transient => reply_error(503, "auth_unavailable", &e),
            Retry::Permanent => reply_error(401, "unauthenticated", &e),
        })
}

/// The status a failed request gets from its error's [`Retry`] class: 503
/// makes Pub/Sub redeliver; `permanent` (4xx) acknowledges, since a
/// redelivery would fail the same way.
pub fn reply_failure<E: Classify + std::fmt::Display>(code: &str, permanent: u16, e: &E) -> Reply {
    match e.retry() {
        Retry::Transient => reply_error(503, code, e),
        Retry::Permanent => reply_error(permanent, code, e),
    }
}

/// A failed direct invocation as lambda_runtime reports it: the error type
/// is the retry class and the reply's code (`Transient.retry`,
/// `Permanent.bad_event`), so that a CloudWatch metric filter or an async
/// retry policy can tell them apart without parsing the message.
fn diagnostic(reply: &Reply) -> lambda_runtime::Diagnostic {
    let class = if reply.status >= 500 {
        "Transient"
    } else {
        "Permanent"
    };
    let code = reply.body["error"].as_str().unwrap_or("error");
    let message = match reply.body["message"].as_str() {
        Some(m) => m.to_string(),
        None => reply.body.to_string(),
    };
    lambda_runtime::Diagnostic {
        error_type: format!("{class}.{code}"),
        error_message: message,
    }
}

#[async_trait]
pub trait Function: Send + Sync {
    fn name(&self) -> &'static str;
    async fn invoke(&self, invocation: Invocation) -> Reply;
}

/// Reads a local event file, refusing huge files before reading them.
fn read_event_file(path: &Path) -> Result<Value, String> {
    let meta = std::fs::metadata(path)
        .map_err(|e| format!("cannot read event file {}: {e}", path.display()))?;
    // Function URL requests carry the body base64-encoded: allow for that.
    if meta.len() as usize > MAX_EVENT_BYTES * 2 {
        return Err(format!(
            "event file {} is {} bytes; events are at most {} bytes",
            path.display(),
            meta.len(),
            MAX_EVENT_BYTES * 2
        ));
    }
    let raw = std::fs::read(path)
        .map_err(|e| format!("cannot read event file {}: {e}", path.display()))?;
    serde_json::from_slice(&raw)
        .map_err(|e| format!("event file {} is not JSON: {e}", path.display()))
}

/// Runs one event through the function and prints the reply.
pub async fn run_local(function: &dyn Function, path: &Path) -> std::process::ExitCode {
    let started = std::time::Instant::now();
    let reply = match read_event_file(path).map(Invocation::classify) {
        Ok(Ok(invocation)) => function.invoke(invocation).await,
        Ok(Err(e)) => reply_bad_event(&e),
        Err(message) => reply_error(400, "bad_event_file", message),
    };
    tracing::info!(
        function = function.name(),
        status = reply.status,
        elapsed_ms = started.elapsed().as_secs_f64() * 1e3,
        "event handled"
    );
    println!("{}", json!({"status": reply.status, "result": reply.body}));
    if reply.status < 300 {
        std::process::ExitCode::SUCCESS
    } else {
        std::process::ExitCode::FAILURE
    }
}

tokio::task_local! {
    /// The running invocation's deadline (the Lambda context's).
    static DEADLINE: std::time::Instant;
}

/// The running invocation's deadline, under the Lambda runtime.
pub fn invocation_deadline() -> Option<std::time::Instant> {
    DEADLINE.try_with(|d| *d).ok()
}

/// The Lambda context's deadline (milliseconds since the epoch) as an
/// instant of this process's clock.
fn deadline_instant(deadline_ms: u64) -> std::time::Instant {
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    std::time::Instant::now() + std::time::Duration::from_millis(deadline_ms.saturating_sub(now_ms))
}

/// Set once the Lambda runtime serves this process: metric records then go
/// to stdout, which Lambda ships to CloudWatch Logs (see [`crate::metrics`]).
static UNDER_LAMBDA: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Whether this process serves the Lambda Runtime API (not a local run).
pub fn under_lambda_runtime() -> bool {
    UNDER_LAMBDA.load(std::sync::atomic::Ordering::Relaxed)
}

/// Serves events from the Lambda Runtime API until the runtime stops us.
/// Function URL requests get an HTTP response (status included, so Pub/Sub
/// sees 2xx = ack, 4xx/5xx = redeliver); direct invocations fail the
/// invocation on an error status so that async retries apply.
async fn run_lambda(function: Arc<dyn Function>) -> Result<(), lambda_runtime::Error> {
    UNDER_LAMBDA.store(true, std::sync::atomic::Ordering::Relaxed);
    let handler = lambda_runtime::service_fn(move |event: lambda_runtime::LambdaEvent<Value>| {
        let function = function.clone();
        let deadline = deadline_instant(event.context.deadline);
        DEADLINE.scope(deadline, async move {
            match Invocation::classify(event.payload) {
                Ok(inv @ Invocation::Http(_)) => {
                    Ok::<Value, lambda_runtime::Diagnostic>(function.invoke(inv).await.to_lambda())
                }
                Ok(inv @ Invocation::Direct(_)) => {
                    let reply = function.invoke(inv).await;
                    if reply.status < 300 {
                        Ok(reply.body)
                    } else {
                        Err(diagnostic(&reply))
                    }
                }
                Err(e) => Ok(reply_bad_event(&e).to_lambda()),
            }
        })
    });
    lambda_runtime::run(handler).await
}

/// The `main` of a function binary: `--event FILE` runs locally, otherwise
/// the Lambda runtime is expected (`AWS_LAMBDA_RUNTIME_API`).
pub async fn main(function: Arc<dyn Function>) -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.as_slice() {
        [flag, path] if flag == "--event" => run_local(function.as_ref(), Path::new(path)).await,
        [] if std::env::var_os("AWS_LAMBDA_RUNTIME_API").is_some() => {
            match run_lambda(function).await {
                Ok(()) => std::process::ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: Lambda runtime stopped: {e}");
                    std::process::ExitCode::FAILURE
                }
            }
        }
        _ => {
            eprintln!(
                "usage: {0} --event FILE   (run one event locally)\n       {0}                (under AWS Lambda: needs AWS_LAMBDA_RUNTIME_API)",
                function.name()
            );
            std::process::ExitCode::from(2)
        }
    }
}
