//! Google-style OIDC ID tokens for tests: an RSA key of our own (made with
//! `openssl genrsa`), RS256 tokens signed with it, and a local JWKS endpoint
//! serving its public half, so the replicator's verifier
//! (`BACKSTOP_OIDC_JWKS_URL`) checks real signatures without Google.

use std::net::SocketAddr;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The issuer Google puts in ID tokens.
pub const GOOGLE_ISSUER: &str = "https://accounts.google.com";

/// An RSA-2048 signing key with a key id.
pub struct RsaKey {
    pub kid: String,
    /// PKCS#1 DER of the private key.
    der: Vec<u8>,
    /// Modulus, big-endian.
    modulus: Vec<u8>,
}

fn openssl(args: &[&str], input: Option<&[u8]>) -> Vec<u8> {
    use std::io::Write;
    let mut child = Command::new("openssl")
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("openssl is installed (it generates the test's RSA keys)");
    {
        let mut stdin = child.stdin.take().unwrap();
        if let Some(input) = input {
            stdin.write_all(input).unwrap();
        }
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

impl RsaKey {
    pub fn generate(kid: &str) -> Self {
        // `-traditional`: PKCS#1 ("BEGIN RSA PRIVATE KEY"), what ring/aws-lc
        // `RsaKeyPair::from_der` (behind jsonwebtoken's RS256) reads.
        let pem = openssl(&["genrsa", "-traditional", "2048"], None);
        let pem = String::from_utf8(pem).unwrap();
        let b64: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
        let der = STANDARD.decode(b64).expect("PEM body is base64");
        let modulus = openssl(&["rsa", "-noout", "-modulus"], Some(pem.as_bytes()));
        let modulus = String::from_utf8(modulus).unwrap();
        let hex_n = modulus
            .trim()
            .strip_prefix("Modulus=")
            .expect("openssl rsa -modulus prints Modulus=HEX");
        Self {
            kid: kid.to_string(),
            der,
            modulus: hex::decode(hex_n).expect("modulus is hex"),
        }
    }

    /// The public key as a JWK, as Google publishes its keys.
    pub fn jwk(&self) -> Value {
        json!({
            "kty": "RSA",
            "alg": "RS256",
            "use": "sig",
            "kid": self.kid,
            "n": URL_SAFE_NO_PAD.encode(&self.modulus),
            // `openssl genrsa` uses F4 = 65537 unless told otherwise.
            "e": URL_SAFE_NO_PAD.encode([1u8, 0, 1]),
        })
    }

    /// An RS256 JWT over `claims` with this key's `kid` in the header.
    pub fn sign(&self, claims: &Value) -> String {
        self.sign_as(&self.kid, claims)
    }

    /// An RS256 JWT signed by this key but naming another `kid`.
    pub fn sign_as(&self, kid: &str, claims: &Value) -> String {
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some(kid.to_string());
        jsonwebtoken::encode(&header, claims, &EncodingKey::from_rsa_der(&self.der))
            .expect("RS256 signing")
    }

    /// The classic algorithm-confusion forgery: HS256 keyed with the public
    /// modulus, naming this key's `kid`.
    pub fn forge_hs256(&self, claims: &Value) -> String {
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &EncodingKey::from_secret(&self.modulus))
            .expect("HS256 signing")
    }
}

pub fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// The claims of a Google-signed ID token for a service account, as a Pub/Sub
/// push subscription sends them, valid for an hour.
pub fn google_claims(audience: &str, email: &str) -> Value {
    let now = now();
    json!({
        "iss": GOOGLE_ISSUER,
        "aud": audience,
        "azp": "112233445566778899000",
        "sub": "112233445566778899000",
        "email": email,
        "email_verified": true,
        "iat": now,
        "exp": now + 3600,
    })
}

/// A local JWKS endpoint: answers any GET with `{"keys": [...]}`.
pub struct JwksServer {
    pub url: String,
    hits: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl JwksServer {
    pub async fn start(keys: Vec<Value>) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr: SocketAddr = listener.local_addr().unwrap();
        let body = json!({ "keys": keys }).to_string();
        let hits = Arc::new(AtomicUsize::new(0));
        let counter = hits.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut stream, _)) = listener.accept().await else {
                    return;
                };
                let body = body.clone();
                let counter = counter.clone();
                tokio::spawn(async move {
                    // Read the request head; GETs have no body.
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                        match stream.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                        if buf.len() > 64 * 1024 {
                            return;
                        }
                    }
                    counter.fetch_add(1, Ordering::SeqCst);
                    let response = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncache-control: public, max-age=3600\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = stream.write_all(response.as_bytes()).await;
                    let _ = stream.shutdown().await;
                });
            }
        });
        Self {
            url: format!("http://{addr}/oauth2/v3/certs"),
            hits,
            task,
        }
    }

    /// How many times the keys were fetched.
    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

impl Drop for JwksServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Rewrites a Function URL request (payload format 2.0): sets or removes the
/// `authorization` header and, if given, replaces the body (base64).
pub fn function_url_request(template: &Value, token: Option<&str>, body: Option<&[u8]>) -> Value {
    let mut event = template.clone();
    let headers = event["headers"]
        .as_object_mut()
        .expect("a Function URL request has headers");
    headers.remove("authorization");
    if let Some(token) = token {
        headers.insert("authorization".into(), json!(format!("Bearer {token}")));
    }
    if let Some(body) = body {
        event["body"] = json!(STANDARD.encode(body));
        event["isBase64Encoded"] = json!(true);
    }
    event
}

/// The decoded body of a Function URL request.
pub fn function_url_body(event: &Value) -> Vec<u8> {
    let raw = event["body"].as_str().unwrap_or_default();
    if event["isBase64Encoded"].as_bool().unwrap_or(false) {
        STANDARD.decode(raw).expect("body is base64")
    } else {
        raw.as_bytes().to_vec()
    }
}
