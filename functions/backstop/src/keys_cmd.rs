//! Key and backup-format subcommands: generate keys, encrypt, decrypt,
//! verify and wrap keys with KMS. Clap arguments and calls into
//! `backstop_core::crypto` (the file protocols are in its `files` module);
//! the benchmark against `gpg` is `tests/bench/crypto.sh`.

use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use anyhow::Context;
use backstop_core::config::Env;
use backstop_core::crypto::{
    self, BackupSecretKey, KeyAlgorithm, RecipientKey, RecipientSet, VerifyingKey, files,
};
use backstop_core::store::ByteStream;
use clap::{Args, Subcommand};

#[derive(Subcommand)]
pub enum KeysCommand {
    /// Generates the backup key pair and the signing key pair into DIR
    /// (backup.pub.asc, backup.sec.asc, signing.pub.asc, signing.sec.asc).
    /// Refuses to overwrite existing files. Wrap the secret keys with KMS
    /// (`backstop keys wrap`) and keep no plaintext copy.
    Keygen(KeygenArgs),
    /// Encrypts a file (or `-` for stdin) to one or more backup public keys:
    /// a binary OpenPGP message (SEIPD v1, AES-256, MDC) that `gpg` decrypts.
    /// Prints size, SHA-256 and CRC32C of the output as JSON.
    Encrypt(EncryptArgs),
    /// Decrypts a backup with the backup secret key. The output file is
    /// written as OUT.partial (mode 0600, synced) and renamed only after the
    /// integrity check passed; on any error it is deleted.
    Decrypt(DecryptArgs),
    /// Verifies a backup without secrets: the manifest's signature, the data
    /// object's OpenPGP structure and recipients, its size and digests, and
    /// (version 2 manifests) the digest of every 8 MiB chunk.
    Verify(VerifyArgs),
    /// Key utilities (KMS wrapping, fingerprints).
    Keys {
        #[command(subcommand)]
        command: KeysUtil,
    },
}

#[derive(Subcommand)]
pub enum KeysUtil {
    /// Encrypts a secret key file with a Cloud KMS key (the `Encrypt` API, as
    /// `gcloud kms encrypt --plaintext-file IN --ciphertext-file OUT` does).
    /// The result is used as `gcpkms:KMS_KEY:OUT`. `BACKSTOP_KMS_ENDPOINT`
    /// points it at a local stand-in.
    Wrap {
        /// projects/P/locations/L/keyRings/R/cryptoKeys/K
        #[arg(long)]
        kms_key: String,
        input: PathBuf,
        output: PathBuf,
    },
    /// Prints a key's fingerprints (primary, encryption subkey).
    Show { key: PathBuf },
}

#[derive(Args)]
pub struct KeygenArgs {
    #[arg(long)]
    out: PathBuf,
    /// curve25519 (Ed25519 + Curve25519 ECDH) or rsa4096.
    #[arg(long, default_value = "curve25519")]
    algorithm: KeyAlgorithm,
    /// User id for the backup key.
    #[arg(long, default_value = "Backstop backup key")]
    backup_name: String,
    /// User id for the signing key.
    #[arg(long, default_value = "Backstop signing key")]
    signing_name: String,
}

#[derive(Args)]
pub struct EncryptArgs {
    /// Backup public key file(s); repeat for several recipients.
    #[arg(long = "recipient", short = 'r', required = true)]
    recipients: Vec<PathBuf>,
    /// Input file, or `-` for stdin.
    input: PathBuf,
    /// Output file, or `-` for stdout.
    output: PathBuf,
}

#[derive(Args)]
pub struct DecryptArgs {
    /// The backup secret key: file:/path, gcpkms:NAME:/path, or a plain path.
    #[arg(long, env = "BACKSTOP_BACKUP_SECRET_KEY")]
    key: String,
    /// The backup's manifest.json: every 8 MiB chunk of the input is then
    /// authenticated against it before it is decrypted, and the output is
    /// capped at its plaintext size. Without it, the output is only
    /// checked by the OpenPGP MDC, which anyone with the public key can
    /// forge.
    #[arg(long, requires_all = ["signature", "signing_keys"])]
    manifest: Option<PathBuf>,
    /// The manifest's detached signature (manifest.json.sig).
    #[arg(long, requires = "manifest")]
    signature: Option<PathBuf>,
    /// Signing public key file(s) the manifest must be signed with.
    #[arg(long = "signing-key", requires = "manifest")]
    signing_keys: Vec<PathBuf>,
    /// Input file, or `-` for stdin.
    input: PathBuf,
    /// Output file (`-` for stdout: then nothing can be retracted on error).
    output: PathBuf,
}

#[derive(Args)]
pub struct VerifyArgs {
    #[arg(long)]
    manifest: PathBuf,
    #[arg(long)]
    signature: PathBuf,
    #[arg(long)]
    data: PathBuf,
    /// Signing public key file(s).
    #[arg(long = "signing-key", required = true)]
    signing_keys: Vec<PathBuf>,
    /// Backup public key file(s) the data may be encrypted to.
    #[arg(long = "recipient", required = true)]
    recipients: Vec<PathBuf>,
}

pub async fn run(cmd: KeysCommand) -> anyhow::Result<()> {
    match cmd {
        KeysCommand::Keygen(a) => keygen(a),
        KeysCommand::Encrypt(a) => encrypt(a).await,
        KeysCommand::Decrypt(a) => decrypt(a).await,
        KeysCommand::Verify(a) => verify(a).await,
        KeysCommand::Keys { command } => keys_util(command).await,
    }
}

fn keygen(a: KeygenArgs) -> anyhow::Result<()> {
    let keys = files::generate_key_dir(&a.out, a.algorithm, &a.backup_name, &a.signing_name)?;
    println!(
        "{}",
        serde_json::json!({
            "backup_key": keys.backup.fingerprint,
            "backup_encryption_subkey": keys.backup.working_fingerprint,
            "signing_key": keys.signing.fingerprint,
            "dir": a.out,
            "next": "wrap the *.sec.asc files with `backstop keys wrap --kms-key ...` (or gcloud kms encrypt) and delete the plaintext copies",
        })
    );
    Ok(())
}

fn open_input(path: &Path) -> anyhow::Result<Box<dyn Read + Send>> {
    if path.as_os_str() == "-" {
        Ok(Box::new(io::stdin()))
    } else {
        Ok(Box::new(File::open(path).with_context(|| {
            format!("cannot open {}", path.display())
        })?))
    }
}

fn load_recipients(paths: &[PathBuf]) -> anyhow::Result<Vec<RecipientKey>> {
    paths
        .iter()
        .map(|p| RecipientKey::from_file(p).map_err(anyhow::Error::from))
        .collect()
}

async fn encrypt(a: EncryptArgs) -> anyhow::Result<()> {
    let recipients = load_recipients(&a.recipients)?;
    let input = crypto::reader_stream(open_input(&a.input)?, 1 << 20);
    let enc = crypto::encrypt_stream(input, &recipients)?;
    let to_stdout = a.output.as_os_str() == "-";
    let written = if to_stdout {
        crypto::stream_to_writer(enc.stream, io::stdout()).await
    } else {
        let f = File::create(&a.output)
            .with_context(|| format!("cannot create {}", a.output.display()))?;
        crypto::stream_to_writer(enc.stream, f).await
    };
    if let Err(e) = written {
        if !to_stdout {
            let _ = std::fs::remove_file(&a.output);
        }
        return Err(crypto::CryptoError::from_io(e).into());
    }
    let s = enc
        .summary
        .get()
        .context("encryption ended without a summary")?;
    let report = serde_json::json!({
        "plaintext_size": s.plaintext_size,
        "ciphertext_size": s.ciphertext.size,
        "ciphertext_sha256": s.ciphertext.sha256,
        "ciphertext_crc32c": s.ciphertext.crc32c,
        "recipients": s.recipients,
    });
    if to_stdout {
        eprintln!("{report}");
    } else {
        println!("{report}");
    }
    Ok(())
}

async fn decrypt(a: DecryptArgs) -> anyhow::Result<()> {
    let kms = backstop_cloud::kms::CloudKms::from_env(&Env::from_process())?;
    let key = BackupSecretKey::load(&files::key_source_or_path(&a.key)?, &kms).await?;
    let input = crypto::reader_stream(open_input(&a.input)?, 1 << 20);
    let (input, plaintext_size) = authenticated_input(&a, input)?;
    if a.output.as_os_str() == "-" {
        let n = crypto::decrypt_to_writer(input, &key, plaintext_size, io::stdout())
            .await
            .map_err(|e| {
                anyhow::Error::from(e)
                    .context("decryption FAILED: discard everything written to stdout")
            })?;
        eprintln!(
            "{}",
            serde_json::json!({ "plaintext_size": n, "integrity": "ok" })
        );
        return Ok(());
    }
    let n = files::decrypt_to_file(input, &key, plaintext_size, &a.output).await?;
    println!(
        "{}",
        serde_json::json!({ "plaintext_size": n, "integrity": "ok", "output": a.output })
    );
    Ok(())
}

/// With `--manifest`: the input authenticated chunk by chunk against the
/// signed manifest, and the plaintext size to cap decryption at. Without:
/// the input as it is, and a warning.
fn authenticated_input(
    a: &DecryptArgs,
    input: ByteStream,
) -> anyhow::Result<(ByteStream, Option<u64>)> {
    let Some(manifest_path) = &a.manifest else {
        eprintln!(
            "warning: decrypting without --manifest: the output is checked only by the OpenPGP MDC, which anyone with the backup public key can produce; pass --manifest, --signature and --signing-key to authenticate it"
        );
        return Ok((input, None));
    };
    let signing: Vec<VerifyingKey> = a
        .signing_keys
        .iter()
        .map(|p| VerifyingKey::from_file(p).map_err(anyhow::Error::from))
        .collect::<anyhow::Result<_>>()?;
    let read =
        |p: &PathBuf| std::fs::read(p).with_context(|| format!("cannot read {}", p.display()));
    let signature = a.signature.as_ref().expect("clap requires --signature");
    let manifest = crypto::verify_manifest(&read(manifest_path)?, &read(signature)?, &signing)?;
    if manifest.ciphertext.chunks.is_empty() {
        anyhow::bail!(
            "manifest {} has no chunk digests (a backup written before manifest version 2): check the data file whole first with `backstop verify`, then decrypt it without --manifest",
            manifest_path.display()
        );
    }
    let input = crypto::chunks::authenticated(input, &manifest.ciphertext)?;
    Ok((input, Some(manifest.plaintext_size)))
}

async fn verify(a: VerifyArgs) -> anyhow::Result<()> {
    let signing: Vec<VerifyingKey> = a
        .signing_keys
        .iter()
        .map(|p| VerifyingKey::from_file(p).map_err(anyhow::Error::from))
        .collect::<anyhow::Result<_>>()?;
    let recipients = RecipientSet::new(&load_recipients(&a.recipients)?);
    let files::VerifiedBackup { manifest, digests } =
        files::verify_backup_files(&a.manifest, &a.signature, &a.data, &signing, recipients)
            .await?;
    println!(
        "{}",
        serde_json::json!({
            "verified": true,
            "backup_id": manifest.backup_id,
            "signer": manifest.signer,
            "recipients": manifest.recipients,
            "ciphertext_size": digests.size,
            "ciphertext_sha256": digests.sha256,
            "ciphertext_crc32c": digests.crc32c,
            "chunk_digests_verified": manifest.ciphertext.chunks.len(),
        })
    );
    Ok(())
}

async fn keys_util(cmd: KeysUtil) -> anyhow::Result<()> {
    match cmd {
        KeysUtil::Wrap {
            kms_key,
            input,
            output,
        } => {
            let kms = backstop_cloud::kms::CloudKms::from_env(&Env::from_process())?;
            let plain = zeroize::Zeroizing::new(
                std::fs::read(&input)
                    .with_context(|| format!("cannot read {}", input.display()))?,
            );
            let wrapped = backstop_cloud::kms::wrap(&kms_key, &plain, &kms).await?;
            files::write_new_file(&output, &wrapped, false)?;
            println!(
                "{}",
                serde_json::json!({
                    "wrapped": output,
                    "setting": format!("gcpkms:{kms_key}:{}", output.display()),
                })
            );
            Ok(())
        }
        KeysUtil::Show { key } => {
            let bytes =
                std::fs::read(&key).with_context(|| format!("cannot read {}", key.display()))?;
            let what = key.display().to_string();
            let mut out = serde_json::Map::new();
            if let Ok(r) = RecipientKey::from_bytes(&what, &bytes) {
                out.insert("fingerprint".into(), r.fingerprint().into());
                out.insert(
                    "encryption_subkey".into(),
                    r.encryption_fingerprint()?.into(),
                );
            } else {
                let v = VerifyingKey::from_bytes(&what, &bytes)?;
                out.insert("fingerprint".into(), v.fingerprint().into());
            }
            println!("{}", serde_json::Value::Object(out));
            Ok(())
        }
    }
}
