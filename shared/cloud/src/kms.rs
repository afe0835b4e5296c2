//! Cloud KMS envelope for secret keys: the armored secret key is encrypted
//! ("wrapped") with a symmetric Cloud KMS key, and the raw KMS ciphertext is
//! stored in the repository. See `backstop_core::crypto::KeySource` for the setting.
//!
//! Production wrapping, once per key:
//!
//! ```text
//! gcloud kms encrypt --project P --location L --keyring R --key K \
//!     --plaintext-file backup.sec.asc --ciphertext-file backup.sec.asc.kms
//! shred -u backup.sec.asc      # keep an offline break-glass copy if policy says so
//! ```
//!
//! `backstop keys wrap --kms-key projects/P/locations/L/keyRings/R/cryptoKeys/K IN OUT`
//! does the same through [`wrap`] (the `Encrypt` API of the official client).
//! Both calls send CRC32C checksums and check the ones KMS returns, as
//! Google recommends.

use google_cloud_kms_v1::client::KeyManagementService;
use zeroize::Zeroizing;

use backstop_core::config::{ConfigError, Env};
use backstop_core::crypto::{CryptoError, KeyUnwrap, check_kms_key_name as check_key_name};

use crate::timeouts::{Timeouts, within};

/// Where the production client sends requests.
const PRODUCTION_ENDPOINT: &str = "https://cloudkms.googleapis.com";

/// How to reach Cloud KMS.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CloudKms {
    /// Overrides the endpoint (e.g. `http://127.0.0.1:8085` for a local
    /// stand-in); requests are then sent without credentials. `None`: the
    /// production endpoint with Application Default Credentials.
    pub endpoint: Option<String>,
    /// How long a call may wait for its answer (connect + request).
    pub timeouts: Timeouts,
}

impl CloudKms {
    /// `BACKSTOP_KMS_ENDPOINT` (unset in production) and the
    /// [`crate::timeouts`] variables.
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        Ok(CloudKms {
            endpoint: env.optional("BACKSTOP_KMS_ENDPOINT"),
            timeouts: Timeouts::from_env(env)?,
        })
    }

    fn endpoint_name(&self) -> &str {
        self.endpoint.as_deref().unwrap_or(PRODUCTION_ENDPOINT)
    }

    /// Awaits one KMS call for at most [`Timeouts::answer`]: the client
    /// builds its own HTTP transport, with no connect or read timeout (its
    /// per-attempt timeout is set too, in [`client`]; this bounds the
    /// credentials and retries around it as well).
    async fn call<T>(
        &self,
        op: &'static str,
        key: &str,
        call: impl std::future::Future<Output = Result<T, google_cloud_gax::error::Error>>,
    ) -> Result<T, CryptoError> {
        let failed = |message: String| CryptoError::Kms {
            op,
            key: key.to_string(),
            message,
        };
        let endpoint = self.endpoint_name();
        match within(self.timeouts.answer(), call).await {
            Some(Ok(answer)) => Ok(answer),
            // The client's own attempt timeout, racing ours.
            Some(Err(e)) if e.is_timeout() => {
                Err(failed(format!("{} ({e})", self.timeouts.late(endpoint))))
            }
            Some(Err(e)) => Err(failed(e.to_string())),
            None => Err(failed(self.timeouts.no_answer(endpoint))),
        }
    }
}

async fn client(
    opts: &CloudKms,
    key: &str,
    op: &'static str,
) -> Result<KeyManagementService, CryptoError> {
    let mut builder = KeyManagementService::builder().with_attempt_timeout(opts.timeouts.answer());
    if let Some(endpoint) = &opts.endpoint {
        builder = builder
            .with_endpoint(endpoint.clone())
            .with_credentials(google_cloud_auth::credentials::anonymous::Builder::new().build());
    }
    builder.build().await.map_err(|e| CryptoError::Kms {
        op,
        key: key.to_string(),
        message: format!("could not build the KMS client: {e}"),
    })
}

fn crc32c_i64(data: &[u8]) -> i64 {
    crc32c::crc32c(data) as i64
}

#[async_trait::async_trait]
impl KeyUnwrap for CloudKms {
    async fn unwrap(
        &self,
        key_name: &str,
        wrapped: Vec<u8>,
    ) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
        unwrap(key_name, wrapped, self).await
    }
}

/// Decrypts a wrapped secret key with Cloud KMS.
async fn unwrap(
    key_name: &str,
    wrapped: Vec<u8>,
    opts: &CloudKms,
) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
    check_key_name(key_name).map_err(|message| CryptoError::Kms {
        op: "decrypt",
        key: key_name.to_string(),
        message,
    })?;
    let kms = client(opts, key_name, "decrypt").await?;
    let crc = crc32c_i64(&wrapped);
    let request = kms
        .decrypt()
        .set_name(key_name)
        .set_ciphertext(bytes::Bytes::from(wrapped))
        .set_ciphertext_crc32c(crc)
        .send();
    let resp = opts.call("decrypt", key_name, request).await?;
    let plaintext = Zeroizing::new(resp.plaintext.to_vec());
    if let Some(expected) = resp.plaintext_crc32c
        && expected != crc32c_i64(&plaintext)
    {
        return Err(CryptoError::Kms {
            op: "decrypt",
            key: key_name.to_string(),
            message: "the plaintext's CRC32C does not match the one KMS sent (corrupted in transit); retry".into(),
        });
    }
    Ok(plaintext)
}

/// Encrypts a secret key with Cloud KMS (what `gcloud kms encrypt` does).
pub async fn wrap(
    key_name: &str,
    plaintext: &[u8],
    opts: &CloudKms,
) -> Result<Vec<u8>, CryptoError> {
    check_key_name(key_name).map_err(|message| CryptoError::Kms {
        op: "encrypt",
        key: key_name.to_string(),
        message,
    })?;
    let kms = client(opts, key_name, "encrypt").await?;
    let request = kms
        .encrypt()
        .set_name(key_name)
        .set_plaintext(bytes::Bytes::copy_from_slice(plaintext))
        .set_plaintext_crc32c(crc32c_i64(plaintext))
        .send();
    let resp = opts.call("encrypt", key_name, request).await?;
    if !resp.verified_plaintext_crc32c {
        return Err(CryptoError::Kms {
            op: "encrypt",
            key: key_name.to_string(),
            message: "KMS did not confirm the plaintext checksum; retry".into(),
        });
    }
    if let Some(expected) = resp.ciphertext_crc32c
        && expected != crc32c_i64(&resp.ciphertext)
    {
        return Err(CryptoError::Kms {
            op: "encrypt",
            key: key_name.to_string(),
            message: "the ciphertext's CRC32C does not match the one KMS sent; retry".into(),
        });
    }
    Ok(resp.ciphertext.to_vec())
}

#[cfg(test)]
pub(crate) mod tests {
    //! The KMS path is tested against a local HTTP stand-in for the Cloud KMS
    //! REST endpoints `POST /v1/{name}:encrypt` and `:decrypt` — the one
    //! allowed fake: no KMS emulator exists. The stand-in "encrypts" by
    //! XOR-ing with a keystream derived from the key name and prefixing a
    //! marker, which is enough to prove that the official client sends the
    //! right request to the right key and that Backstop uses the answer.

    use super::*;
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD as B64;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    const MARKER: &[u8] = b"FAKEKMS1";

    fn keystream(name: &str, len: usize) -> Vec<u8> {
        use sha2::Digest;
        let mut out = Vec::with_capacity(len + 32);
        let mut i = 0u64;
        while out.len() < len {
            let mut h = sha2::Sha256::new();
            h.update(name.as_bytes());
            h.update(i.to_be_bytes());
            out.extend_from_slice(&h.finalize());
            i += 1;
        }
        out.truncate(len);
        out
    }

    pub(crate) fn fake_encrypt(name: &str, plain: &[u8]) -> Vec<u8> {
        let ks = keystream(name, plain.len());
        let mut out = MARKER.to_vec();
        out.extend(plain.iter().zip(ks).map(|(a, b)| a ^ b));
        out
    }

    fn fake_decrypt(name: &str, wrapped: &[u8]) -> Option<Vec<u8>> {
        let body = wrapped.strip_prefix(MARKER)?;
        let ks = keystream(name, body.len());
        Some(body.iter().zip(ks).map(|(a, b)| a ^ b).collect())
    }

    /// Starts the stand-in; returns its endpoint and a log of request paths.
    pub(crate) async fn start_kms_stand_in()
    -> (String, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let log2 = log.clone();
        tokio::spawn(async move {
            loop {
                let Ok((mut sock, _)) = listener.accept().await else {
                    return;
                };
                let log = log2.clone();
                tokio::spawn(async move {
                    loop {
                        // Read one request (headers, then Content-Length body).
                        let mut buf = Vec::new();
                        let head_end = loop {
                            let mut chunk = [0u8; 4096];
                            let n = match sock.read(&mut chunk).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => n,
                            };
                            buf.extend_from_slice(&chunk[..n]);
                            if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                                break p + 4;
                            }
                        };
                        let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
                        let len: usize = head
                            .lines()
                            .find_map(|l| {
                                let (k, v) = l.split_once(':')?;
                                k.eq_ignore_ascii_case("content-length")
                                    .then(|| v.trim().parse().ok())?
                            })
                            .unwrap_or(0);
                        while buf.len() < head_end + len {
                            let mut chunk = [0u8; 4096];
                            let n = match sock.read(&mut chunk).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => n,
                            };
                            buf.extend_from_slice(&chunk[..n]);
                        }
                        let body: serde_json::Value =
                            serde_json::from_slice(&buf[head_end..head_end + len])
                                .unwrap_or_default();
                        let target = head.split_whitespace().nth(1).unwrap_or("");
                        // The client adds `?$alt=json...`; the route is the path.
                        let path = target.split('?').next().unwrap_or("").to_string();
                        log.lock().unwrap().push(path.clone());
                        let (status, reply) = handle(&path, &body);
                        let reply = reply.to_string();
                        let resp = format!(
                            "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{reply}",
                            reply.len()
                        );
                        if sock.write_all(resp.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        (format!("http://{addr}"), log)
    }

    fn handle(path: &str, body: &serde_json::Value) -> (&'static str, serde_json::Value) {
        let not_found = || {
            (
                "404 Not Found",
                serde_json::json!({"error": {"code": 404, "message": "no such key", "status": "NOT_FOUND"}}),
            )
        };
        let Some(rest) = path.strip_prefix("/v1/") else {
            return not_found();
        };
        let (name, op) = match rest.rsplit_once(':') {
            Some(x) => x,
            None => return not_found(),
        };
        if !name.ends_with("/cryptoKeys/backstop") {
            return (
                "403 Forbidden",
                serde_json::json!({"error": {"code": 403, "message": format!("Permission 'cloudkms.cryptoKeyVersions.useToDecrypt' denied on resource '{name}'"), "status": "PERMISSION_DENIED"}}),
            );
        }
        match op {
            "encrypt" => {
                let plain = B64
                    .decode(body["plaintext"].as_str().unwrap_or(""))
                    .unwrap_or_default();
                let ct = fake_encrypt(name, &plain);
                (
                    "200 OK",
                    serde_json::json!({
                        "name": format!("{name}/cryptoKeyVersions/1"),
                        "ciphertext": B64.encode(&ct),
                        "ciphertextCrc32c": crc32c::crc32c(&ct).to_string(),
                        "verifiedPlaintextCrc32c": true,
                    }),
                )
            }
            "decrypt" => {
                let ct = B64
                    .decode(body["ciphertext"].as_str().unwrap_or(""))
                    .unwrap_or_default();
                if let Some(crc) = body["ciphertextCrc32c"].as_str()
                    && crc != crc32c::crc32c(&ct).to_string()
                {
                    return (
                        "400 Bad Request",
                        serde_json::json!({"error": {"code": 400, "message": "checksum mismatch", "status": "INVALID_ARGUMENT"}}),
                    );
                }
                match fake_decrypt(name, &ct) {
                    Some(plain) => (
                        "200 OK",
                        serde_json::json!({
                            "plaintext": B64.encode(&plain),
                            "plaintextCrc32c": crc32c::crc32c(&plain).to_string(),
                        }),
                    ),
                    None => (
                        "400 Bad Request",
                        serde_json::json!({"error": {"code": 400, "message": "Decryption failed: the ciphertext is invalid.", "status": "INVALID_ARGUMENT"}}),
                    ),
                }
            }
            _ => not_found(),
        }
    }

    const KEY: &str = "projects/p/locations/global/keyRings/r/cryptoKeys/backstop";

    #[tokio::test]
    async fn wrap_and_unwrap_through_the_official_client() {
        let (endpoint, log) = start_kms_stand_in().await;
        let opts = CloudKms {
            endpoint: Some(endpoint),
            ..CloudKms::default()
        };
        let secret = b"-----BEGIN PGP PRIVATE KEY BLOCK-----\nsecret\n";
        let wrapped = wrap(KEY, secret, &opts).await.unwrap();
        assert_ne!(&wrapped[MARKER.len()..], secret);
        let plain = unwrap(KEY, wrapped.clone(), &opts).await.unwrap();
        assert_eq!(plain.as_slice(), secret);
        let paths = log.lock().unwrap().clone();
        assert_eq!(
            paths,
            vec![format!("/v1/{KEY}:encrypt"), format!("/v1/{KEY}:decrypt")]
        );

        // Another key is refused by "KMS", and the error says so.
        let other = "projects/p/locations/global/keyRings/r/cryptoKeys/other";
        let err = unwrap(other, wrapped, &opts).await.unwrap_err();
        assert!(
            matches!(err, CryptoError::Kms { op: "decrypt", .. }),
            "{err}"
        );
        // Garbage is refused.
        let err = unwrap(KEY, b"junk".to_vec(), &opts).await.unwrap_err();
        assert!(matches!(err, CryptoError::Kms { .. }), "{err}");
    }

    #[tokio::test]
    async fn a_kms_that_never_answers_is_a_prompt_transient_error_naming_it() {
        use backstop_core::error::Classify;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        // Accepts, then holds every connection without a word.
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((sock, _)) = listener.accept().await {
                held.push(sock);
            }
        });
        let opts = CloudKms {
            endpoint: Some(endpoint.clone()),
            timeouts: Timeouts {
                connect: std::time::Duration::from_millis(200),
                request: std::time::Duration::from_millis(300),
            },
        };
        let started = std::time::Instant::now();
        let err = tokio::time::timeout(
            std::time::Duration::from_secs(20),
            unwrap(KEY, b"wrapped".to_vec(), &opts),
        )
        .await
        .expect("the call returns instead of hanging")
        .unwrap_err();
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
        assert!(err.is_transient(), "{err}");
        let text = err.to_string();
        assert!(
            text.contains(&endpoint) && text.contains("BACKSTOP_REQUEST_TIMEOUT"),
            "{text}"
        );
    }

    #[tokio::test]
    async fn gcpkms_key_source_loads_the_backup_key() {
        use backstop_core::crypto::{
            BackupSecretKey, KeyAlgorithm, KeySource, generate_backup_key,
        };
        let (endpoint, _log) = start_kms_stand_in().await;
        let opts = CloudKms {
            endpoint: Some(endpoint),
            ..CloudKms::default()
        };
        let backup =
            generate_backup_key("KMS test <kms@example.invalid>", KeyAlgorithm::Curve25519)
                .unwrap();
        let dir = std::env::temp_dir().join(format!("backstop-kms-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("backup.sec.asc.kms");
        std::fs::write(&path, fake_encrypt(KEY, backup.secret_armored.as_bytes())).unwrap();
        let src: KeySource = format!("gcpkms:{KEY}:{}", path.display()).parse().unwrap();
        let key = BackupSecretKey::load(&src, &opts).await.unwrap();
        assert_eq!(key.fingerprint(), backup.fingerprint);
        std::fs::remove_dir_all(dir).unwrap();
    }
}
