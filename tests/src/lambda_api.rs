//! A local stand-in of the AWS Lambda Runtime API (the interface a custom
//! runtime such as `lambda_runtime` polls), in the manner of lambda_runtime's
//! own tests: the test queues events, the function process fetches them with
//! `GET /2018-06-01/runtime/invocation/next` and posts its answer back to
//! `.../invocation/{id}/response` or `.../invocation/{id}/error`.
//!
//! Start it, run the function binary with `AWS_LAMBDA_RUNTIME_API` set to
//! [`LambdaApi::runtime_api`] plus the variables of [`LambdaApi::env`], and
//! call [`LambdaApi::invoke`].

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};

const PREFIX: &str = "/2018-06-01/runtime";
pub const FUNCTION_ARN: &str = "arn:aws:lambda:us-east-1:000000000000:function:replicator";

/// What the function posted back for one invocation.
#[derive(Debug, Clone, PartialEq)]
pub enum Completion {
    /// `POST /invocation/{id}/response`: the handler's result.
    Response(Value),
    /// `POST /invocation/{id}/error`: the handler failed.
    Error {
        error_type: Option<String>,
        body: Value,
    },
}

struct Queued {
    request_id: String,
    event: Value,
}

struct State {
    queue: tokio::sync::Mutex<mpsc::UnboundedReceiver<Queued>>,
    waiting: Mutex<HashMap<String, oneshot::Sender<Completion>>>,
    init_errors: Mutex<Vec<Value>>,
    polls: AtomicUsize,
}

pub struct LambdaApi {
    addr: std::net::SocketAddr,
    state: Arc<State>,
    queue: mpsc::UnboundedSender<Queued>,
    task: tokio::task::JoinHandle<()>,
}

fn json_response(status: StatusCode, body: Value) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap()
}

fn parse_body(raw: &[u8]) -> Value {
    serde_json::from_slice(raw)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(raw).into_owned()))
}

async fn handle(state: Arc<State>, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let error_type = req
        .headers()
        .get("lambda-runtime-function-error-type")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => return json_response(StatusCode::BAD_REQUEST, json!({"error": e.to_string()})),
    };
    let Some(route) = path.strip_prefix(PREFIX) else {
        return json_response(StatusCode::NOT_FOUND, json!({"error": path}));
    };
    match (&method, route) {
        (&Method::GET, "/invocation/next") => {
            state.polls.fetch_add(1, Ordering::SeqCst);
            let next = state.queue.lock().await.recv().await;
            let Some(Queued { request_id, event }) = next else {
                return json_response(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    json!({"error": "stand-in shutting down"}),
                );
            };
            let deadline = chrono::Utc::now().timestamp_millis() + 300_000;
            Response::builder()
                .status(StatusCode::OK)
                .header("content-type", "application/json")
                .header("Lambda-Runtime-Aws-Request-Id", &request_id)
                .header("Lambda-Runtime-Deadline-Ms", deadline.to_string())
                .header("Lambda-Runtime-Invoked-Function-Arn", FUNCTION_ARN)
                .header(
                    "Lambda-Runtime-Trace-Id",
                    format!(
                        "Root=1-{:08x}-{:024x};Parent={:016x};Sampled=0",
                        chrono::Utc::now().timestamp(),
                        rand::random::<u128>() >> 32,
                        rand::random::<u64>()
                    ),
                )
                .body(Full::new(Bytes::from(event.to_string())))
                .unwrap()
        }
        (&Method::POST, "/init/error") => {
            let mut err = parse_body(&body);
            if let Some(t) = error_type {
                err = json!({"error_type": t, "body": err});
            }
            state.init_errors.lock().unwrap().push(err);
            json_response(StatusCode::ACCEPTED, json!({"status": "OK"}))
        }
        (&Method::POST, route) if route.starts_with("/invocation/") => {
            let rest = &route["/invocation/".len()..];
            let (id, kind) = rest.rsplit_once('/').unwrap_or((rest, ""));
            let completion = match kind {
                "response" => Completion::Response(parse_body(&body)),
                "error" => Completion::Error {
                    error_type,
                    body: parse_body(&body),
                },
                _ => return json_response(StatusCode::NOT_FOUND, json!({"error": path})),
            };
            match state.waiting.lock().unwrap().remove(id) {
                Some(tx) => {
                    let _ = tx.send(completion);
                    json_response(StatusCode::ACCEPTED, json!({"status": "OK"}))
                }
                // The real API answers a second answer or an unknown id with 400.
                None => json_response(
                    StatusCode::BAD_REQUEST,
                    json!({"errorMessage": format!("unknown or finished request id {id}"), "errorType": "InvalidRequestID"}),
                ),
            }
        }
        _ => json_response(StatusCode::NOT_FOUND, json!({"error": path})),
    }
}

impl LambdaApi {
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = mpsc::unbounded_channel();
        let state = Arc::new(State {
            queue: tokio::sync::Mutex::new(rx),
            waiting: Mutex::new(HashMap::new()),
            init_errors: Mutex::new(Vec::new()),
            polls: AtomicUsize::new(0),
        });
        let shared = state.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let state = shared.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        let state = state.clone();
                        async move { Ok::<_, Infallible>(handle(state, req).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self {
            addr,
            state,
            queue: tx,
            task,
        }
    }

    /// The value for `AWS_LAMBDA_RUNTIME_API` (host:port, no scheme).
    pub fn runtime_api(&self) -> String {
        self.addr.to_string()
    }

    /// The variables the Lambda service sets for a function (lambda_runtime
    /// panics without the first three), with `AWS_LAMBDA_RUNTIME_API`.
    pub fn env(&self, function_name: &str) -> Vec<(String, String)> {
        [
            ("AWS_LAMBDA_RUNTIME_API", self.runtime_api()),
            ("AWS_LAMBDA_FUNCTION_NAME", function_name.to_string()),
            ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "512".to_string()),
            ("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST".to_string()),
            (
                "AWS_LAMBDA_LOG_STREAM_NAME",
                "2026/11/27/[$LATEST]0123456789abcdef".to_string(),
            ),
            (
                "AWS_LAMBDA_LOG_GROUP_NAME",
                format!("/aws/lambda/{function_name}"),
            ),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }

    /// Queues `event`, waits for the function's answer.
    pub async fn invoke(&self, event: Value, timeout: Duration) -> Result<Completion, String> {
        let request_id = format!(
            "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
            rand::random::<u32>(),
            rand::random::<u16>(),
            rand::random::<u16>() & 0xfff,
            rand::random::<u16>() & 0xfff,
            rand::random::<u64>() & 0xffff_ffff_ffff
        );
        let (tx, rx) = oneshot::channel();
        self.state
            .waiting
            .lock()
            .unwrap()
            .insert(request_id.clone(), tx);
        self.queue
            .send(Queued {
                request_id: request_id.clone(),
                event,
            })
            .map_err(|_| "stand-in stopped".to_string())?;
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(c)) => Ok(c),
            _ => {
                self.state.waiting.lock().unwrap().remove(&request_id);
                Err(format!(
                    "no answer for request {request_id} within {timeout:?} ({} polls of /invocation/next; init errors: {:?})",
                    self.polls(),
                    self.init_errors()
                ))
            }
        }
    }

    /// Errors posted to `/init/error`.
    pub fn init_errors(&self) -> Vec<Value> {
        self.state.init_errors.lock().unwrap().clone()
    }

    /// How many times `/invocation/next` was called.
    pub fn polls(&self) -> usize {
        self.state.polls.load(Ordering::SeqCst)
    }

    /// Waits until the function polls `/invocation/next` at least `n` times.
    pub async fn wait_for_polls(&self, n: usize, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        while self.polls() < n {
            if tokio::time::Instant::now() > deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        true
    }
}

impl Drop for LambdaApi {
    fn drop(&mut self) {
        self.task.abort();
    }
}
