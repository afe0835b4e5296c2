//! Interoperability of the backup format with stock GnuPG (`/usr/bin/gpg`,
//! 2.2): gpg decrypts our backups with our exported secret key, we decrypt
//! gpg's messages (uncompressed, ZIP, ZLIB, signed), `gpg --verify` accepts
//! our manifest signatures and we accept gpg's detached signatures. Keys made
//! by gpg itself (Curve25519 and RSA) work with Backstop too.
//!
//! Each test uses its own throwaway GNUPGHOME; nothing needs the local stack.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use backstop_core::crypto::{
    self, BackupSecretKey, CryptoError, GeneratedKey, KeyAlgorithm, RecipientKey, SigningKey,
    VerifyingKey,
};
use backstop_core::manifest::{CiphertextInfo, MANIFEST_KIND, MANIFEST_VERSION, Manifest};
use backstop_core::naming::BackupId;
use backstop_core::store::{ByteStream, byte_stream};
use bytes::Bytes;
use futures::TryStreamExt;

const GPG: &str = "gpg";

/// A throwaway GnuPG home; its agent is stopped on drop.
struct Gpg {
    home: PathBuf,
}

impl Gpg {
    fn new() -> Self {
        let home = std::env::temp_dir().join(format!("bs-gpg-{:016x}", rand::random::<u64>()));
        std::fs::create_dir_all(&home).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&home, std::fs::Permissions::from_mode(0o700)).unwrap();
        }
        Gpg { home }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.home.join(name)
    }

    /// Runs gpg in batch mode; returns the output (asserting success unless
    /// `may_fail`).
    fn run_with(&self, args: &[&str], stdin: Option<&[u8]>, may_fail: bool) -> Output {
        let mut cmd = Command::new(GPG);
        cmd.env("GNUPGHOME", &self.home)
            .args([
                "--batch",
                "--yes",
                "--no-tty",
                "--pinentry-mode",
                "loopback",
                "--passphrase",
                "",
            ])
            .args(args)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("gpg must be installed (/usr/bin/gpg)");
        if let Some(data) = stdin {
            let mut s = child.stdin.take().unwrap();
            let data = data.to_vec();
            std::thread::spawn(move || {
                let _ = s.write_all(&data);
            });
        }
        let out = child.wait_with_output().unwrap();
        if !may_fail {
            assert!(
                out.status.success(),
                "gpg {args:?} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        out
    }

    fn run(&self, args: &[&str]) -> Output {
        self.run_with(args, None, false)
    }

    fn import(&self, armored: &str) {
        let p = self.path(&format!("import-{:x}.asc", rand::random::<u32>()));
        std::fs::write(&p, armored).unwrap();
        self.run(&["--import", p.to_str().unwrap()]);
    }

    fn export(&self, fpr: &str, secret: bool) -> String {
        let out = self.run(&[
            "--armor",
            if secret {
                "--export-secret-keys"
            } else {
                "--export"
            },
            fpr,
        ]);
        String::from_utf8(out.stdout).unwrap()
    }

    /// Generates a key with gpg's quick commands; returns its fingerprint.
    fn quick_key(&self, uid: &str, primary: &str, sub: Option<(&str, &str)>) -> String {
        self.run(&["--quick-gen-key", uid, primary, "cert,sign", "never"]);
        let out = self.run(&["--with-colons", "--list-keys", uid]);
        let text = String::from_utf8(out.stdout).unwrap();
        let fpr = text
            .lines()
            .find(|l| l.starts_with("fpr:"))
            .and_then(|l| l.split(':').nth(9))
            .unwrap()
            .to_string();
        if let Some((algo, usage)) = sub {
            self.run(&["--quick-add-key", &fpr, algo, usage, "never"]);
        }
        fpr
    }
}

impl Drop for Gpg {
    fn drop(&mut self) {
        let _ = Command::new("gpgconf")
            .env("GNUPGHOME", &self.home)
            .args(["--kill", "gpg-agent"])
            .output();
        let _ = std::fs::remove_dir_all(&self.home);
    }
}

fn data(len: usize) -> Vec<u8> {
    let mut x: u64 = 0xdead_beef_cafe_f00d;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

fn chunked(bytes: &[u8], chunk: usize) -> ByteStream {
    let pieces: Vec<std::io::Result<Bytes>> = bytes
        .chunks(chunk)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    byte_stream(futures::stream::iter(pieces))
}

async fn encrypt(plain: &[u8], to: &[RecipientKey]) -> (Vec<u8>, crypto::EncryptSummary) {
    let enc = crypto::encrypt_stream(chunked(plain, 300_000), to).unwrap();
    let out: Vec<Bytes> = enc.stream.try_collect().await.unwrap();
    (out.concat(), enc.summary.get().unwrap())
}

async fn decrypt(ct: &[u8], key: &BackupSecretKey) -> Result<Vec<u8>, CryptoError> {
    let out: Result<Vec<Bytes>, std::io::Error> = crypto::decrypt_stream(chunked(ct, 65_536), key)
        .try_collect()
        .await;
    out.map(|v| v.concat()).map_err(CryptoError::from_io)
}

fn backup_key() -> GeneratedKey {
    crypto::generate_backup_key(
        "Backstop test <backup@example.invalid>",
        KeyAlgorithm::Curve25519,
    )
    .unwrap()
}

fn signing_key() -> GeneratedKey {
    crypto::generate_signing_key(
        "Backstop signer <sign@example.invalid>",
        KeyAlgorithm::Curve25519,
    )
    .unwrap()
}

fn write(path: &Path, bytes: &[u8]) {
    std::fs::write(path, bytes).unwrap();
}

/// `gpg --decrypt` of `ct` from a file: the file, the plaintext and gpg's
/// status lines.
fn gpg_decrypt(gpg: &Gpg, ct: &[u8]) -> (PathBuf, Vec<u8>, String) {
    let ct_path = gpg.path("data.pgdump.pgp");
    write(&ct_path, ct);
    let out_path = gpg.path("plain");
    let out = gpg.run(&[
        "--status-fd",
        "2",
        "--output",
        out_path.to_str().unwrap(),
        "--decrypt",
        ct_path.to_str().unwrap(),
    ]);
    let status = String::from_utf8_lossy(&out.stderr).to_string();
    (ct_path, std::fs::read(&out_path).unwrap(), status)
}

#[tokio::test]
async fn gpg_decrypts_our_backup_with_our_exported_secret_key() {
    let gpg = Gpg::new();
    let key = backup_key();
    gpg.import(&key.secret_armored);
    let plain = data(3 * 1024 * 1024 + 4321); // several partial chunks
    let recipient = RecipientKey::from_armored(&key.public_armored).unwrap();
    let (ct, _) = encrypt(&plain, &[recipient]).await;
    let (ct_path, gpg_plain, status) = gpg_decrypt(&gpg, &ct);
    assert_eq!(gpg_plain, plain, "gpg's plaintext differs");
    // SEIPD v1 with SHA-1 MDC (method 2) and AES-256 (9); integrity checked.
    assert!(status.contains("[GNUPG:] DECRYPTION_INFO 2 9"), "{status}");
    assert!(status.contains("[GNUPG:] DECRYPTION_OKAY"), "{status}");
    assert!(status.contains("[GNUPG:] GOODMDC"), "{status}");
    assert!(!status.contains("WARNING"), "gpg warned: {status}");
    assert!(!status.contains("not integrity protected"), "{status}");

    // No compression layer: the encrypted data holds a literal packet directly.
    let listed = gpg.run(&["--list-packets", ct_path.to_str().unwrap()]);
    let packets = String::from_utf8_lossy(&listed.stdout).to_string();
    assert!(
        packets.contains(":pubkey enc packet: version 3"),
        "{packets}"
    );
    assert!(packets.contains(":encrypted data packet:"), "{packets}");
    assert!(packets.contains("mdc_method: 2"), "{packets}");
    assert!(packets.contains(":literal data packet:"), "{packets}");
    assert!(!packets.contains(":compressed packet:"), "{packets}");
}

#[tokio::test]
async fn gpg_decrypts_our_compressed_backup() {
    let gpg = Gpg::new();
    let key = backup_key();
    gpg.import(&key.secret_armored);
    // Text-like and several deflate blocks long (blocks are deflated apart
    // and joined; gpg must read them as one stream).
    let mut plain = Vec::new();
    let mut i = 0u64;
    while plain.len() < 5 * 1024 * 1024 + 777 {
        plain.extend_from_slice(format!("{i}\tcustomer {}\t{}\n", i % 1013, i * 7).as_bytes());
        i += 1;
    }
    let recipient = RecipientKey::from_armored(&key.public_armored).unwrap();
    let enc = crypto::encrypt_stream_with(
        chunked(&plain, 300_000),
        &[recipient],
        crypto::Compression::Zip(6),
    )
    .unwrap();
    let ct = enc
        .stream
        .try_collect::<Vec<Bytes>>()
        .await
        .unwrap()
        .concat();
    assert!(ct.len() * 2 < plain.len(), "compressed: {} bytes", ct.len());
    let (ct_path, gpg_plain, status) = gpg_decrypt(&gpg, &ct);
    assert!(gpg_plain == plain, "gpg's plaintext differs");
    assert!(status.contains("[GNUPG:] GOODMDC"), "{status}");
    assert!(!status.contains("WARNING"), "gpg warned: {status}");
    let listed = gpg.run(&["--list-packets", ct_path.to_str().unwrap()]);
    let packets = String::from_utf8_lossy(&listed.stdout).to_string();
    assert!(packets.contains(":compressed packet: algo=1"), "{packets}");
    assert!(packets.contains(":literal data packet:"), "{packets}");
}

#[tokio::test]
async fn gpg_decrypts_a_message_to_two_recipients() {
    let gpg = Gpg::new();
    let (a, b) = (backup_key(), backup_key());
    gpg.import(&b.secret_armored);
    let plain = data(10_000);
    let to = [
        RecipientKey::from_armored(&a.public_armored).unwrap(),
        RecipientKey::from_armored(&b.public_armored).unwrap(),
    ];
    let (ct, summary) = encrypt(&plain, &to).await;
    assert_eq!(summary.recipients.len(), 2);
    let out = gpg.run_with(&["--decrypt"], Some(&ct), false);
    assert_eq!(out.stdout, plain);
}

#[tokio::test]
async fn we_decrypt_gpg_messages_uncompressed_compressed_and_signed() {
    let gpg = Gpg::new();
    let key = backup_key();
    let signer = signing_key();
    gpg.import(&key.secret_armored);
    gpg.import(&signer.secret_armored);
    let secret = BackupSecretKey::from_armored(&key.secret_armored).unwrap();
    let plain = data(2 * 1024 * 1024 + 17);
    let input = gpg.path("input");
    write(&input, &plain);
    for (case, extra) in [
        ("uncompressed", vec!["--compress-algo", "none"]),
        ("zlib", vec!["--compress-algo", "zlib"]),
        ("zip", vec!["--compress-algo", "zip"]),
        ("default compression", vec![]),
        (
            "signed and compressed",
            vec!["--sign", "--local-user", &signer.fingerprint],
        ),
    ] {
        let out_path = gpg.path("gpg.pgp");
        let mut args = vec!["--trust-model", "always", "--recipient", &key.fingerprint];
        args.extend(extra.iter().copied());
        args.extend([
            "--output",
            out_path.to_str().unwrap(),
            "--encrypt",
            input.to_str().unwrap(),
        ]);
        gpg.run(&args);
        let ct = std::fs::read(&out_path).unwrap();
        let back = decrypt(&ct, &secret)
            .await
            .unwrap_or_else(|e| panic!("{case}: {e}"));
        assert!(back == plain, "{case}: plaintext differs");
    }
    // A tiny message (no partial lengths) and an empty one.
    for len in [0usize, 1, 100] {
        let small = data(len);
        let out = gpg.run_with(
            &[
                "--trust-model",
                "always",
                "--recipient",
                &key.fingerprint,
                "--compress-algo",
                "none",
                "--encrypt",
            ],
            Some(&small),
            false,
        );
        assert_eq!(
            decrypt(&out.stdout, &secret).await.unwrap(),
            small,
            "{len} bytes"
        );
    }
}

#[tokio::test]
async fn gpg_tampered_message_fails_integrity() {
    let gpg = Gpg::new();
    let key = backup_key();
    gpg.import(&key.public_armored);
    let secret = BackupSecretKey::from_armored(&key.secret_armored).unwrap();
    let out = gpg.run_with(
        &[
            "--trust-model",
            "always",
            "--recipient",
            &key.fingerprint,
            "--compress-algo",
            "none",
            "--encrypt",
        ],
        Some(&data(100_000)),
        false,
    );
    let mut ct = out.stdout;
    let n = ct.len();
    ct[n - 10] ^= 0x20;
    let err = decrypt(&ct, &secret).await.unwrap_err();
    assert!(matches!(err, CryptoError::IntegrityCheckFailed), "{err}");
}

fn manifest_signed_by(signer: &str) -> Manifest {
    let id: BackupId = "production/app/20261127T030000Z-abcdef".parse().unwrap();
    Manifest {
        kind: MANIFEST_KIND.into(),
        version: MANIFEST_VERSION,
        namespace: id.namespace.clone(),
        database: "app".into(),
        backup_id: id.to_string(),
        server_version: "15.18".into(),
        dump_format: "custom".into(),
        started_at: id.taken_at,
        finished_at: id.taken_at,
        plaintext_size: 10,
        ciphertext: CiphertextInfo {
            object: "data.pgdump.pgp".into(),
            size: 100,
            sha256: "00".repeat(32),
            crc32c: 1,
            chunk_size: backstop_core::crypto::chunks::CHUNK_SIZE,
            chunks: vec!["00".repeat(32)],
        },
        recipients: vec!["AB".repeat(20)],
        signer: signer.to_string(),
        tables: [("public.users".to_string(), 3u64)].into(),
        tool: "backstop test".into(),
        base_backup: None,
    }
}

#[tokio::test]
async fn gpg_verifies_our_manifest_signature() {
    let gpg = Gpg::new();
    let signer = signing_key();
    gpg.import(&signer.public_armored);
    let key = SigningKey::from_armored(&signer.secret_armored).unwrap();
    let (bytes, sig) =
        crypto::sign_manifest(&manifest_signed_by(&signer.fingerprint), &key).unwrap();
    let (m, s) = (gpg.path("manifest.json"), gpg.path("manifest.json.sig"));
    write(&m, &bytes);
    write(&s, sig.as_bytes());
    let out = gpg.run(&[
        "--status-fd",
        "2",
        "--verify",
        s.to_str().unwrap(),
        m.to_str().unwrap(),
    ]);
    let status = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(status.contains("[GNUPG:] GOODSIG"), "{status}");
    assert!(
        status.contains(&format!("[GNUPG:] VALIDSIG {}", signer.fingerprint)),
        "{status}"
    );

    // A modified manifest fails gpg's check too.
    let mut bad = bytes.clone();
    bad[10] ^= 1;
    write(&m, &bad);
    let out = gpg.run_with(
        &[
            "--status-fd",
            "2",
            "--verify",
            s.to_str().unwrap(),
            m.to_str().unwrap(),
        ],
        None,
        true,
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("BADSIG"));
}

#[tokio::test]
async fn we_accept_gpgs_detached_signatures() {
    let gpg = Gpg::new();
    let signer = signing_key();
    gpg.import(&signer.secret_armored);
    let keys = [VerifyingKey::from_armored(&signer.public_armored).unwrap()];
    let bytes = manifest_signed_by(&signer.fingerprint).to_bytes();
    let m = gpg.path("manifest.json");
    write(&m, &bytes);
    for armor in [true, false] {
        let s = gpg.path("manifest.json.sig");
        let mut args = vec![
            "--local-user",
            &signer.fingerprint,
            "--output",
            s.to_str().unwrap(),
        ];
        if armor {
            args.push("--armor");
        }
        args.extend(["--detach-sign", m.to_str().unwrap()]);
        gpg.run(&args);
        let sig = std::fs::read(&s).unwrap();
        let parsed = crypto::verify_manifest(&bytes, &sig, &keys)
            .unwrap_or_else(|e| panic!("armor={armor}: {e}"));
        assert_eq!(parsed.signer, signer.fingerprint);
        // And over other bytes it is refused.
        let err = crypto::verify_manifest(&bytes[1..], &sig, &keys).unwrap_err();
        assert!(matches!(err, CryptoError::BadSignature { .. }), "{err}");
    }
}

#[tokio::test]
async fn keys_made_by_gpg_work_with_backstop() {
    let gpg = Gpg::new();
    for (uid, primary, sub) in [
        (
            "cv25519 <cv@example.invalid>",
            "ed25519",
            ("cv25519", "encr"),
        ),
        ("rsa <rsa@example.invalid>", "rsa3072", ("rsa3072", "encr")),
    ] {
        let fpr = gpg.quick_key(uid, primary, Some(sub));
        let public = gpg.export(&fpr, false);
        let secret = gpg.export(&fpr, true);
        let recipient = RecipientKey::from_armored(&public).unwrap();
        assert_eq!(recipient.fingerprint(), fpr);
        let plain = data(50_000);
        // We encrypt, gpg decrypts.
        let (ct, _) = encrypt(&plain, std::slice::from_ref(&recipient)).await;
        let out = gpg.run_with(&["--decrypt"], Some(&ct), false);
        assert!(out.stdout == plain, "{uid}: gpg could not decrypt ours");
        // gpg encrypts, we decrypt with the exported secret key.
        let key = BackupSecretKey::from_armored(&secret).unwrap();
        let out = gpg.run_with(
            &["--trust-model", "always", "--recipient", &fpr, "--encrypt"],
            Some(&plain),
            false,
        );
        assert!(
            decrypt(&out.stdout, &key).await.unwrap() == plain,
            "{uid}: we could not decrypt gpg's"
        );
        // gpg signs (primary key signs), we verify.
        let verifying = VerifyingKey::from_armored(&public).unwrap();
        let sig = gpg.run_with(
            &["--local-user", &fpr, "--armor", "--detach-sign"],
            Some(b"manifest"),
            false,
        );
        assert_eq!(
            crypto::verify_bytes(b"manifest", &sig.stdout, &[verifying]).unwrap(),
            fpr
        );
    }
}

#[test]
fn gpg_reads_our_exported_keys() {
    let gpg = Gpg::new();
    let key = backup_key();
    gpg.import(&key.secret_armored);
    let out = gpg.run(&["--with-colons", "--list-secret-keys", &key.fingerprint]);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    // Primary: EdDSA (22) that certifies; subkey: ECDH (18) on Curve25519 that encrypts.
    assert!(
        text.lines()
            .any(|l| l.starts_with("sec:") && l.split(':').nth(3) == Some("22")),
        "{text}"
    );
    assert!(
        text.lines().any(|l| l.starts_with("ssb:")
            && l.split(':').nth(3) == Some("18")
            && l.contains(":e:")),
        "{text}"
    );
    assert!(text.contains(&key.working_fingerprint), "{text}");
}

/// gpg writes to several recipients (ours last, first, or in between), from a
/// file (its size known) and from a pipe (partial lengths), with and without
/// compression: each message decrypts with ours.
#[tokio::test]
async fn we_decrypt_gpg_messages_to_several_recipients() {
    let gpg = Gpg::new();
    let keys = [backup_key(), backup_key(), backup_key()];
    for k in &keys {
        gpg.import(&k.public_armored);
    }
    let plain = data(700_001);
    let input = gpg.path("input");
    write(&input, &plain);
    for (i, ours) in keys.iter().enumerate() {
        let secret = BackupSecretKey::from_armored(&ours.secret_armored).unwrap();
        for compress in ["none", "zlib"] {
            let mut args = vec!["--trust-model", "always", "--compress-algo", compress];
            for k in &keys {
                args.extend(["--recipient", k.fingerprint.as_str()]);
            }
            let from_pipe =
                gpg.run_with(&[&args[..], &["--encrypt"]].concat(), Some(&plain), false);
            let out_path = gpg.path("multi.pgp");
            let file_args = [
                &args[..],
                &[
                    "--output",
                    out_path.to_str().unwrap(),
                    "--encrypt",
                    input.to_str().unwrap(),
                ],
            ]
            .concat();
            gpg.run(&file_args);
            let from_file = std::fs::read(&out_path).unwrap();
            for (how, ct) in [("pipe", from_pipe.stdout), ("file", from_file)] {
                let back = decrypt(&ct, &secret)
                    .await
                    .unwrap_or_else(|e| panic!("recipient {i}, {compress}, {how}: {e}"));
                assert!(
                    back == plain,
                    "recipient {i}, {compress}, {how}: plaintext differs"
                );
            }
        }
    }
}
