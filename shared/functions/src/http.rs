//! Replies to Function URL requests, and the local HTTP front that stands
//! in for a Function URL on a developer's machine (`backstop serve`).
//!
//! The local front has no authentication (the Pub/Sub emulator cannot mint
//! Google-signed tokens), so it must not be reachable from a web page the
//! developer happens to visit: a page can make the browser POST to
//! `127.0.0.1`, or rebind a name of its own to `127.0.0.1`. A request is
//! served only when its `Host` is a loopback name or address and it carries
//! no `Origin` (nor `Sec-Fetch-*`) header, which browsers always add to
//! cross-site and scripted POSTs; only POST with a `Content-Length` is
//! accepted, and the head's size and the read times are bounded.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

use backstop_core::events::{EventError, Invocation, MAX_EVENT_BYTES};

use crate::lambda::{Function, reply_bad_event, reply_error};

/// A response to a Function URL request.
#[derive(Debug, Clone, PartialEq)]
pub struct HttpResponse {
    pub status: u16,
    pub body: serde_json::Value,
}

impl HttpResponse {
    pub fn new(status: u16, body: serde_json::Value) -> Self {
        Self { status, body }
    }

    /// The Function URL response payload (format 2.0).
    pub fn to_lambda(&self) -> serde_json::Value {
        serde_json::json!({
            "statusCode": self.status,
            "headers": {"content-type": "application/json"},
            "body": self.body.to_string(),
        })
    }
}

/// What the local front accepts of one request.
#[derive(Debug, Clone, Copy)]
pub struct FrontLimits {
    /// Most bytes of request line and headers together.
    pub max_head_bytes: usize,
    /// Most header lines.
    pub max_headers: usize,
    /// Time for the request line and headers to arrive.
    pub head_timeout: Duration,
    /// Time for the body to arrive.
    pub body_timeout: Duration,
}

impl Default for FrontLimits {
    fn default() -> Self {
        Self {
            max_head_bytes: 16 * 1024,
            max_headers: 64,
            head_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
        }
    }
}

/// Why the local front refused a request (answered with [`Self::status`]).
#[derive(Debug, thiserror::Error)]
pub enum Refused {
    #[error(
        "the request head is over {bytes} bytes or {headers} header lines; the local front takes small Pub/Sub pushes only"
    )]
    HeadTooLarge { bytes: usize, headers: usize },
    #[error("the request head did not arrive within {0:?}; send the whole request at once")]
    SlowHead(Duration),
    #[error("the body did not arrive within {0:?}; send the whole request at once")]
    SlowBody(Duration),
    #[error("malformed request line {0:?}; expected `POST /path HTTP/1.1`")]
    RequestLine(String),
    #[error("method {0:?} is not allowed: the local front takes POST only")]
    Method(String),
    #[error("the request has {0} Host headers; send exactly one (localhost, 127.0.0.1 or [::1])")]
    HostCount(usize),
    #[error(
        "Host {0:?} is not a loopback name or address: the local front serves localhost, 127.0.0.1 and [::1] only"
    )]
    ForeignHost(String),
    #[error(
        "requests from web pages ({0} header) are refused: the local front is for the Pub/Sub emulator, not for browsers"
    )]
    Browser(String),
    #[error("no Content-Length (chunked bodies are not accepted); send the body with its length")]
    NoLength,
    #[error("Content-Length {0:?} is not a number of bytes")]
    BadLength(String),
    #[error(transparent)]
    Event(#[from] EventError),
}

impl Refused {
    /// The HTTP status of the refusal.
    pub fn status(&self) -> u16 {
        match self {
            Refused::HeadTooLarge { .. } => 431,
            Refused::SlowHead(_) | Refused::SlowBody(_) => 408,
            Refused::Method(_) => 405,
            Refused::ForeignHost(_) | Refused::Browser(_) => 403,
            Refused::NoLength => 411,
            Refused::Event(EventError::TooLarge(_)) => 413,
            _ => 400,
        }
    }
}

/// Whether `host` (a `Host` header: name or address, optional port) names
/// this machine's loopback: `localhost`, `127.0.0.0/8` or `[::1]`.
pub fn is_loopback_host(host: &str) -> bool {
    let port_ok = |p: &str| (1..=5).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_digit());
    let name = if let Some(rest) = host.strip_prefix('[') {
        match rest.split_once(']') {
            Some((inner, "")) => inner,
            Some((inner, after)) if after.strip_prefix(':').is_some_and(port_ok) => inner,
            _ => return false,
        }
    } else {
        match host.split_once(':') {
            Some((name, port)) if port_ok(port) => name,
            Some(_) => return false,
            None => host,
        }
    };
    name.eq_ignore_ascii_case("localhost")
        || name.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// A request's method and headers (names lower-case).
struct Head {
    method: String,
    headers: Vec<(String, String)>,
}

impl Head {
    fn all(&self, name: &str) -> impl Iterator<Item = &str> {
        self.headers
            .iter()
            .filter(move |(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body length of a request the front may serve, or why not.
    fn check(&self) -> Result<usize, Refused> {
        if self.method != "POST" {
            return Err(Refused::Method(self.method.clone()));
        }
        let hosts: Vec<&str> = self.all("host").collect();
        match hosts.as_slice() {
            [host] if is_loopback_host(host) => {}
            [host] => return Err(Refused::ForeignHost(host.to_string())),
            _ => return Err(Refused::HostCount(hosts.len())),
        }
        if let Some((name, _)) = self
            .headers
            .iter()
            .find(|(k, _)| k == "origin" || k.starts_with("sec-fetch-"))
        {
            return Err(Refused::Browser(name.clone()));
        }
        if self.all("transfer-encoding").next().is_some() {
            return Err(Refused::NoLength);
        }
        let lengths: Vec<&str> = self.all("content-length").collect();
        let [length] = lengths.as_slice() else {
            return Err(Refused::NoLength);
        };
        let len: usize = length
            .parse()
            .map_err(|_| Refused::BadLength(length.to_string()))?;
        if len > MAX_EVENT_BYTES {
            return Err(EventError::TooLarge(len).into());
        }
        Ok(len)
    }
}

/// Reads the request line and headers, at most `limits.max_head_bytes` of
/// them. `Ok(None)`: the client closed the connection before a whole head.
async fn read_head<R: AsyncBufRead + Unpin>(
    reader: &mut R,
    limits: &FrontLimits,
) -> std::io::Result<Result<Option<Head>, Refused>> {
    let too_large = Refused::HeadTooLarge {
        bytes: limits.max_head_bytes,
        headers: limits.max_headers,
    };
    let mut lines: Vec<String> = Vec::new();
    let mut used = 0usize;
    loop {
        let mut line = Vec::new();
        let budget = (limits.max_head_bytes - used) as u64 + 1;
        let n = (&mut *reader)
            .take(budget)
            .read_until(b'\n', &mut line)
            .await?;
        used += n;
        if used > limits.max_head_bytes || lines.len() > limits.max_headers {
            return Ok(Err(too_large));
        }
        if n == 0 || !line.ends_with(b"\n") {
            return Ok(Ok(None));
        }
        let text = String::from_utf8_lossy(&line).trim_end().to_string();
        if text.is_empty() {
            break;
        }
        lines.push(text);
    }
    let mut lines = lines.into_iter();
    let request_line = lines.next().unwrap_or_default();
    let mut parts = request_line.split(' ');
    let (Some(method), Some(_path), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Ok(Err(Refused::RequestLine(request_line)));
    };
    if !version.starts_with("HTTP/1.") {
        return Ok(Err(Refused::RequestLine(request_line)));
    }
    let method = method.to_string();
    let mut headers = Vec::new();
    for line in lines {
        let Some((k, v)) = line.split_once(':') else {
            return Ok(Err(Refused::RequestLine(line)));
        };
        headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
    }
    Ok(Ok(Some(Head { method, headers })))
}

/// Serves `function` on `listener` with the default [`FrontLimits`] (see
/// [`serve_local_with`]).
pub async fn serve_local(
    function: Arc<dyn Function>,
    listener: tokio::net::TcpListener,
) -> std::io::Result<()> {
    serve_local_with(function, listener, FrontLimits::default()).await
}

/// A minimal local HTTP front for a function, standing in for its Function
/// URL in the local stack: the Pub/Sub emulator's push subscription posts
/// here. Requests are handled as direct (trusted) invocations, so the
/// listener must be a loopback address and each request passes the checks
/// of the module docs.
pub async fn serve_local_with(
    function: Arc<dyn Function>,
    listener: tokio::net::TcpListener,
    limits: FrontLimits,
) -> std::io::Result<()> {
    let addr = listener.local_addr()?;
    if !addr.ip().is_loopback() {
        return Err(std::io::Error::other(format!(
            "refusing to serve {} on {addr}: the local front has no authentication and only binds loopback",
            function.name()
        )));
    }
    tracing::info!(function = function.name(), %addr, "serving local push endpoint");
    loop {
        let (stream, _) = listener.accept().await?;
        let function = function.clone();
        tokio::spawn(async move {
            if let Err(e) = serve_connection(function.as_ref(), stream, limits).await {
                tracing::warn!(error = %e, "local push connection failed");
            }
        });
    }
}

/// One request on one connection, answered and closed.
async fn serve_connection(
    function: &dyn Function,
    stream: tokio::net::TcpStream,
    limits: FrontLimits,
) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream);
    let head =
        match tokio::time::timeout(limits.head_timeout, read_head(&mut reader, &limits)).await {
            Err(_) => Err(Refused::SlowHead(limits.head_timeout)),
            Ok(read) => match read? {
                Ok(None) => return Ok(()),
                Ok(Some(head)) => Ok(head),
                Err(refused) => Err(refused),
            },
        };
    let body = match head.and_then(|h| h.check()) {
        Ok(len) => {
            let mut body = vec![0u8; len];
            match tokio::time::timeout(limits.body_timeout, reader.read_exact(&mut body)).await {
                Ok(read) => read.map(|_| Ok(body))?,
                Err(_) => Err(Refused::SlowBody(limits.body_timeout)),
            }
        }
        Err(refused) => Err(refused),
    };
    let reply = match body {
        Ok(body) => match backstop_core::events::parse_json(&body) {
            Ok(value) => function.invoke(Invocation::Direct(value)).await,
            Err(e) => reply_bad_event(&e),
        },
        Err(refused) => {
            tracing::warn!(function = function.name(), status = refused.status(), reason = %refused, "local push refused");
            reply_error(refused.status(), "refused", &refused)
        }
    };
    tracing::info!(
        function = function.name(),
        status = reply.status,
        "local push handled"
    );
    write_reply(reader.into_inner(), &reply).await
}

async fn write_reply(
    mut stream: tokio::net::TcpStream,
    reply: &HttpResponse,
) -> std::io::Result<()> {
    let body = reply.body.to_string();
    let allow = if reply.status == 405 {
        "allow: POST\r\n"
    } else {
        ""
    };
    let response = format!(
        "HTTP/1.1 {} {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n{allow}connection: close\r\n\r\n{}",
        reply.status,
        reason(reply.status),
        body.len(),
        body
    );
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await?;
    // A lingering close: closing with unread input (a refused request's
    // rest) would reset the connection and could lose the answer.
    let mut sink = [0u8; 8192];
    let drain = async {
        let mut left = 1usize << 20;
        while left > 0 {
            match stream.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(n) => left = left.saturating_sub(n),
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), drain).await;
    Ok(())
}

fn reason(status: u16) -> &'static str {
    match status {
        200..=299 => "OK",
        400 => "Bad Request",
        403 => "Forbidden",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        411 => "Length Required",
        413 => "Content Too Large",
        431 => "Request Header Fields Too Large",
        500..=599 => "Server Error",
        _ => "Error",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts() {
        for ok in [
            "localhost",
            "LOCALHOST:8088",
            "127.0.0.1",
            "127.0.0.1:8088",
            "127.1.2.3:1",
            "[::1]",
            "[::1]:8088",
        ] {
            assert!(is_loopback_host(ok), "{ok}");
        }
        for bad in [
            "",
            "evil.example",
            "localhost.evil.example",
            "127.0.0.1.evil.example",
            "127.0.0.1:8088@evil.example",
            "127.0.0.1:",
            "127.0.0.1:123456",
            "::1",
            "[::1]x",
            "[::2]:80",
            "10.0.0.1",
            "0.0.0.0",
            "localhost:80:80",
        ] {
            assert!(!is_loopback_host(bad), "{bad}");
        }
    }
}
