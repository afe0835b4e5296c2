//! The local push front (`backstop serve`) is no CSRF hole: a web page the
//! developer visits can reach 127.0.0.1 too, so only loopback `Host`s, no
//! `Origin`, only POST, bounded headers and read times.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use backstop_core::events::Invocation;
use backstop_functions::http::HttpResponse;
use backstop_functions::lambda::{Function, Reply};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Counts its invocations; each one would be a real run.
#[derive(Default)]
struct Counting(AtomicUsize);

#[async_trait]
impl Function for Counting {
    fn name(&self) -> &'static str {
        "counting"
    }

    async fn invoke(&self, _invocation: Invocation) -> Reply {
        self.0.fetch_add(1, Ordering::SeqCst);
        HttpResponse::new(200, serde_json::json!({"ok": true}))
    }
}

impl Counting {
    fn calls(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }
}

async fn start() -> (Arc<Counting>, SocketAddr) {
    let function = Arc::new(Counting::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(backstop_functions::lambda::serve_local(
        function.clone(),
        listener,
    ));
    (function, addr)
}

/// Sends `raw` and returns the status of the answer (0: closed without one).
async fn send(addr: SocketAddr, raw: &[u8]) -> u16 {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    // The server may answer and close before it has read everything.
    let _ = stream.write_all(raw).await;
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(20), stream.read_to_end(&mut answer));
    let _ = read.await.expect("the front answers or closes in time");
    let text = String::from_utf8_lossy(&answer);
    text.split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

fn post(host: &str, extra: &str) -> Vec<u8> {
    let body = "{}";
    format!(
        "POST / HTTP/1.1\r\nHost: {host}\r\n{extra}content-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

#[tokio::test]
async fn loopback_posts_without_origin_are_served() {
    let (function, addr) = start().await;
    let port = addr.port();
    for host in [
        format!("127.0.0.1:{port}"),
        format!("localhost:{port}"),
        "LocalHost".to_string(),
        format!("[::1]:{port}"),
        "127.0.0.1".to_string(),
    ] {
        assert_eq!(send(addr, &post(&host, "")).await, 200, "Host: {host}");
    }
    assert_eq!(function.calls(), 5);
}

#[tokio::test]
async fn foreign_hosts_are_refused() {
    let (function, addr) = start().await;
    let port = addr.port();
    for host in [
        format!("evil.example:{port}"),
        format!("127.0.0.1.evil.example:{port}"),
        format!("localhost.evil.example:{port}"),
        "192.168.1.10".to_string(),
        format!("127.0.0.1:{port}@evil.example"),
        String::new(),
    ] {
        assert_eq!(send(addr, &post(&host, "")).await, 403, "Host: {host:?}");
    }
    // No Host at all, and two of them.
    let no_host = b"POST / HTTP/1.1\r\ncontent-length: 2\r\n\r\n{}";
    assert_eq!(send(addr, no_host).await, 400);
    let two = post("127.0.0.1", "Host: evil.example\r\n");
    assert_eq!(send(addr, &two).await, 400);
    assert_eq!(
        function.calls(),
        0,
        "no refused request reached the function"
    );
}

#[tokio::test]
async fn requests_with_an_origin_are_refused() {
    let (function, addr) = start().await;
    let host = format!("127.0.0.1:{}", addr.port());
    for origin in ["http://evil.example", "null", &format!("http://{host}")] {
        let req = post(&host, &format!("Origin: {origin}\r\n"));
        assert_eq!(send(addr, &req).await, 403, "Origin: {origin}");
    }
    let fetch = post(&host, "Sec-Fetch-Site: cross-site\r\n");
    assert_eq!(send(addr, &fetch).await, 403, "a browser's fetch metadata");
    assert_eq!(function.calls(), 0);
}

#[tokio::test]
async fn only_post_is_served() {
    let (function, addr) = start().await;
    let host = format!("127.0.0.1:{}", addr.port());
    for method in ["GET", "PUT", "OPTIONS", "DELETE", "post"] {
        let req = format!("{method} / HTTP/1.1\r\nHost: {host}\r\ncontent-length: 2\r\n\r\n{{}}");
        assert_eq!(send(addr, req.as_bytes()).await, 405, "{method}");
    }
    assert_eq!(function.calls(), 0);
}

#[tokio::test]
async fn header_sizes_are_bounded() {
    let (function, addr) = start().await;
    let host = format!("127.0.0.1:{}", addr.port());
    let big = format!("X-Filler: {}\r\n", "a".repeat(64 * 1024));
    assert_eq!(send(addr, &post(&host, &big)).await, 431, "one huge header");
    let many: String = (0..200).map(|i| format!("X-H{i}: v\r\n")).collect();
    assert_eq!(send(addr, &post(&host, &many)).await, 431, "many headers");
    let chunked = format!(
        "POST / HTTP/1.1\r\nHost: {host}\r\ntransfer-encoding: chunked\r\n\r\n2\r\n{{}}\r\n0\r\n\r\n"
    );
    assert_eq!(send(addr, chunked.as_bytes()).await, 411, "no length");
    assert_eq!(function.calls(), 0);
}

#[tokio::test]
async fn slow_clients_are_cut_off() {
    use backstop_functions::lambda::{FrontLimits, serve_local_with};
    let function = Arc::new(Counting::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let limits = FrontLimits {
        head_timeout: Duration::from_millis(300),
        body_timeout: Duration::from_millis(300),
        ..FrontLimits::default()
    };
    tokio::spawn(serve_local_with(function.clone(), listener, limits));
    let host = format!("127.0.0.1:{}", addr.port());

    // A head that never ends, and a body shorter than its length.
    for raw in [
        format!("POST / HTTP/1.1\r\nHost: {host}\r\n"),
        format!("POST / HTTP/1.1\r\nHost: {host}\r\ncontent-length: 100\r\n\r\n{{}}"),
    ] {
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        stream.write_all(raw.as_bytes()).await.unwrap();
        let started = std::time::Instant::now();
        let mut answer = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer));
        read.await.expect("cut off in time").unwrap();
        assert!(started.elapsed() < Duration::from_secs(3));
        let text = String::from_utf8_lossy(&answer);
        assert!(text.starts_with("HTTP/1.1 408 "), "{text}");
    }
    assert_eq!(function.calls(), 0);
}
