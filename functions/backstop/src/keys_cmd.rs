//! Key and backup-format subcommands: generate keys, encrypt, decrypt,
//! verify, wrap keys with KMS, and the crypto benchmark against `gpg`.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command as Process;
use std::time::Instant;

use anyhow::{Context, bail};
use backstop_core::config::Env;
use backstop_core::crypto::{
    self, BackupSecretKey, BackupVerifier, KeyAlgorithm, KeySource, RecipientKey, RecipientSet,
    VerifyingKey,
};
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
    /// written as OUT.partial and renamed only after the integrity check
    /// passed; on any error it is deleted.
    Decrypt(DecryptArgs),
    /// Verifies a backup without secrets: the manifest's signature, the data
    /// object's OpenPGP structure and recipients, and its size and digests.
    Verify(VerifyArgs),
    /// Key utilities (KMS wrapping, fingerprints).
    Keys {
        #[command(subcommand)]
        command: KeysUtil,
    },
    /// Benchmarks encryption and decryption side by side with `gpg`
    /// (run a release build: `cargo run --release -p backstop-cli --
    /// bench-crypto --sizes 64M,1G,4G`). Prints MB/s, the ratio to gpg and
    /// the peak RSS of each side (each runs as a child under /usr/bin/time).
    BenchCrypto(BenchArgs),
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

#[derive(Args)]
pub struct BenchArgs {
    /// Input sizes (K, M, G suffixes are binary: 64M = 64 MiB).
    #[arg(long, default_value = "64M,1G", value_delimiter = ',')]
    sizes: Vec<String>,
    /// Working directory for the temporary files (default: a new directory
    /// under the system temp dir). Needs the largest size free (one
    /// ciphertext at a time; input is generated, output discarded).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Runs per size and side (the best is reported). Default: 3 for inputs
    /// up to 256 MiB, 1 above.
    #[arg(long)]
    runs: Option<u32>,
    /// The gpg binary.
    #[arg(long, default_value = "gpg")]
    gpg: String,
}

pub async fn run(cmd: KeysCommand) -> anyhow::Result<()> {
    match cmd {
        KeysCommand::Keygen(a) => keygen(a),
        KeysCommand::Encrypt(a) => encrypt(a).await,
        KeysCommand::Decrypt(a) => decrypt(a).await,
        KeysCommand::Verify(a) => verify(a).await,
        KeysCommand::Keys { command } => keys_util(command).await,
        KeysCommand::BenchCrypto(a) => bench(a).await,
    }
}

fn write_new(path: &Path, data: &[u8], secret: bool) -> anyhow::Result<()> {
    let mut opts = OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(if secret { 0o600 } else { 0o644 });
    }
    let mut f = opts.open(path).with_context(|| {
        format!(
            "cannot create {} (keygen never overwrites a key file)",
            path.display()
        )
    })?;
    f.write_all(data)?;
    f.sync_all()?;
    Ok(())
}

fn keygen(a: KeygenArgs) -> anyhow::Result<()> {
    std::fs::create_dir_all(&a.out)
        .with_context(|| format!("cannot create {}", a.out.display()))?;
    let names = [
        "backup.pub.asc",
        "backup.sec.asc",
        "signing.pub.asc",
        "signing.sec.asc",
    ];
    for n in names {
        let p = a.out.join(n);
        if p.exists() {
            bail!(
                "{} already exists: keygen never overwrites keys (move the old ones away first)",
                p.display()
            );
        }
    }
    let backup = crypto::generate_backup_key(&a.backup_name, a.algorithm)?;
    let signing = crypto::generate_signing_key(&a.signing_name, a.algorithm)?;
    write_new(
        &a.out.join(names[0]),
        backup.public_armored.as_bytes(),
        false,
    )?;
    write_new(
        &a.out.join(names[1]),
        backup.secret_armored.as_bytes(),
        true,
    )?;
    write_new(
        &a.out.join(names[2]),
        signing.public_armored.as_bytes(),
        false,
    )?;
    write_new(
        &a.out.join(names[3]),
        signing.secret_armored.as_bytes(),
        true,
    )?;
    println!(
        "{}",
        serde_json::json!({
            "backup_key": backup.fingerprint,
            "backup_encryption_subkey": backup.working_fingerprint,
            "signing_key": signing.fingerprint,
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

/// A key setting, or a plain path (taken as `file:`).
fn key_source(setting: &str) -> anyhow::Result<KeySource> {
    match setting.parse::<KeySource>() {
        Ok(s) => Ok(s),
        Err(e) => {
            if Path::new(setting).exists() {
                Ok(KeySource::File(PathBuf::from(setting)))
            } else {
                Err(e.into())
            }
        }
    }
}

async fn decrypt(a: DecryptArgs) -> anyhow::Result<()> {
    let kms = backstop_cloud::kms::CloudKms::from_env(&Env::from_process());
    let key = BackupSecretKey::load(&key_source(&a.key)?, &kms).await?;
    let input = crypto::reader_stream(open_input(&a.input)?, 1 << 20);
    if a.output.as_os_str() == "-" {
        let n = crypto::decrypt_to_writer(input, &key, io::stdout())
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
    let mut partial = a.output.clone().into_os_string();
    partial.push(".partial");
    let partial = PathBuf::from(partial);
    let f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&partial)
        .with_context(|| {
            format!(
                "cannot create {} (left over from a failed run? delete it)",
                partial.display()
            )
        })?;
    match crypto::decrypt_to_writer(input, &key, f).await {
        Ok(n) => {
            std::fs::rename(&partial, &a.output).with_context(|| {
                format!(
                    "cannot rename {} to {}",
                    partial.display(),
                    a.output.display()
                )
            })?;
            println!(
                "{}",
                serde_json::json!({ "plaintext_size": n, "integrity": "ok", "output": a.output })
            );
            Ok(())
        }
        Err(e) => {
            let _ = std::fs::remove_file(&partial);
            Err(anyhow::Error::from(e).context("decryption failed; the partial output was deleted"))
        }
    }
}

async fn verify(a: VerifyArgs) -> anyhow::Result<()> {
    let signing: Vec<VerifyingKey> = a
        .signing_keys
        .iter()
        .map(|p| VerifyingKey::from_file(p).map_err(anyhow::Error::from))
        .collect::<anyhow::Result<_>>()?;
    let recipients = RecipientSet::new(&load_recipients(&a.recipients)?);
    let manifest_bytes = std::fs::read(&a.manifest)
        .with_context(|| format!("cannot read {}", a.manifest.display()))?;
    let sig = std::fs::read(&a.signature)
        .with_context(|| format!("cannot read {}", a.signature.display()))?;
    let manifest = crypto::verify_manifest(&manifest_bytes, &sig, &signing)?;
    let data = a.data.clone();
    let m = manifest.clone();
    let digests = tokio::task::spawn_blocking(move || -> anyhow::Result<crypto::Digests> {
        let mut v = BackupVerifier::new(&m, recipients)?;
        let mut f = File::open(&data).with_context(|| format!("cannot open {}", data.display()))?;
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = f.read(&mut buf)?;
            if n == 0 {
                break;
            }
            v.feed(&buf[..n])?;
        }
        Ok(v.finish()?)
    })
    .await??;
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
            let kms = backstop_cloud::kms::CloudKms::from_env(&Env::from_process());
            let plain = zeroize::Zeroizing::new(
                std::fs::read(&input)
                    .with_context(|| format!("cannot read {}", input.display()))?,
            );
            let wrapped = backstop_cloud::kms::wrap(&kms_key, &plain, &kms).await?;
            write_new(&output, &wrapped, false)?;
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

// ---- benchmark -----------------------------------------------------------

fn parse_size(s: &str) -> anyhow::Result<u64> {
    let s = s.trim();
    let (num, mult) = match s.chars().last() {
        Some('K' | 'k') => (&s[..s.len() - 1], 1u64 << 10),
        Some('M' | 'm') => (&s[..s.len() - 1], 1 << 20),
        Some('G' | 'g') => (&s[..s.len() - 1], 1 << 30),
        _ => (s, 1),
    };
    let n: u64 = num
        .parse()
        .with_context(|| format!("invalid size {s:?} (use e.g. 64M, 1G)"))?;
    Ok(n * mult)
}

fn human(n: u64) -> String {
    if n >= 1 << 30 && n.is_multiple_of(1 << 30) {
        format!("{}GiB", n >> 30)
    } else if n >= 1 << 20 {
        format!("{}MiB", n >> 20)
    } else {
        format!("{n}B")
    }
}

/// Writes `size` pseudo-random bytes (xorshift64*, incompressible, the
/// same sequence every time) to `out`, 1 MiB at a time: the input is never
/// held in memory or stored on disk.
fn generate_input(out: &mut dyn Write, size: u64) -> io::Result<()> {
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut buf = vec![0u8; 1 << 20];
    let mut left = size;
    while left > 0 {
        for w in buf.chunks_exact_mut(8) {
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            w.copy_from_slice(&state.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
        }
        let n = left.min(buf.len() as u64) as usize;
        out.write_all(&buf[..n])?;
        left -= n as u64;
    }
    out.flush()
}

struct Measured {
    seconds: f64,
    /// User + system CPU seconds.
    cpu: f64,
    max_rss_kib: u64,
    stderr: String,
}

/// Runs a child under `/usr/bin/time` and returns wall time, CPU time and
/// peak RSS. With `input_size`, the child's stdin is fed that many
/// generated bytes (by a thread of this process, for both sides alike);
/// its stdout is discarded.
fn measure(
    program: &str,
    args: &[&str],
    env: &[(&str, &Path)],
    dir: &Path,
    input_size: Option<u64>,
) -> anyhow::Result<Measured> {
    let time_out = dir.join("time.out");
    let mut cmd = Process::new("/usr/bin/time");
    cmd.arg("-f")
        .arg("%e %M %U %S")
        .arg("-o")
        .arg(&time_out)
        .arg(program)
        .args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .stdin(if input_size.is_some() {
            std::process::Stdio::piped()
        } else {
            std::process::Stdio::null()
        });
    let start = Instant::now();
    let mut child = cmd
        .spawn()
        .with_context(|| format!("cannot run /usr/bin/time {program}"))?;
    let feeder = match (input_size, child.stdin.take()) {
        (Some(size), Some(mut stdin)) => {
            Some(std::thread::spawn(move || generate_input(&mut stdin, size)))
        }
        _ => None,
    };
    let out = child.wait_with_output()?;
    let seconds = start.elapsed().as_secs_f64();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    if let Some(f) = feeder {
        f.join()
            .map_err(|_| anyhow::anyhow!("input generator panicked"))?
            .with_context(|| format!("feeding {program} failed: {stderr}"))?;
    }
    if !out.status.success() {
        bail!("{program} {} failed: {stderr}", args.join(" "));
    }
    let t = std::fs::read_to_string(&time_out)?;
    let fields: Vec<f64> = t
        .lines()
        .last()
        .unwrap_or("")
        .split_whitespace()
        .filter_map(|v| v.parse().ok())
        .collect();
    if fields.len() != 4 {
        bail!("cannot parse /usr/bin/time output {t:?}");
    }
    Ok(Measured {
        seconds,
        cpu: fields[2] + fields[3],
        max_rss_kib: fields[1] as u64,
        stderr,
    })
}

/// The fastest run, with the highest peak RSS of all runs.
fn best(runs: Vec<Measured>) -> Measured {
    let max_rss_kib = runs.iter().map(|m| m.max_rss_kib).max().unwrap_or(0);
    let fastest = runs
        .into_iter()
        .min_by(|a, b| a.seconds.total_cmp(&b.seconds))
        .expect("at least one run");
    Measured {
        max_rss_kib,
        ..fastest
    }
}

async fn bench(a: BenchArgs) -> anyhow::Result<()> {
    let sizes: Vec<u64> = a
        .sizes
        .iter()
        .map(|s| parse_size(s))
        .collect::<anyhow::Result<_>>()?;
    let own_dir = a.dir.is_none();
    let dir = a.dir.clone().unwrap_or_else(|| {
        std::env::temp_dir().join(format!("backstop-bench-{}", std::process::id()))
    });
    std::fs::create_dir_all(&dir)?;
    let result = bench_in(&a, &sizes, &dir).await;
    // Stop the gpg-agent that the throwaway GNUPGHOME started.
    let _ = Process::new("gpgconf")
        .env("GNUPGHOME", dir.join("gnupg"))
        .args(["--kill", "gpg-agent"])
        .output();
    if own_dir {
        let _ = std::fs::remove_dir_all(&dir);
    }
    result
}

async fn bench_in(a: &BenchArgs, sizes: &[u64], dir: &Path) -> anyhow::Result<()> {
    let exe = std::env::current_exe()?;
    let exe = exe
        .to_str()
        .context("executable path is not UTF-8")?
        .to_string();
    if cfg!(debug_assertions) {
        eprintln!(
            "warning: this is a debug build; benchmark a release build (cargo run --release ...)"
        );
    }
    // Keys: ours, imported into a throwaway GNUPGHOME so that both sides
    // encrypt to and decrypt with the same key.
    let backup = crypto::generate_backup_key(
        "Backstop bench <bench@example.invalid>",
        KeyAlgorithm::Curve25519,
    )?;
    let pub_path = dir.join("backup.pub.asc");
    let sec_path = dir.join("backup.sec.asc");
    std::fs::write(&pub_path, backup.public_armored.as_bytes())?;
    std::fs::write(&sec_path, backup.secret_armored.as_bytes())?;
    let gnupg = dir.join("gnupg");
    std::fs::create_dir_all(&gnupg)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&gnupg, std::fs::Permissions::from_mode(0o700))?;
    }
    let import = Process::new(&a.gpg)
        .env("GNUPGHOME", &gnupg)
        .args(["--batch", "--quiet", "--import"])
        .arg(&sec_path)
        .output()
        .context("cannot run gpg")?;
    if !import.status.success() {
        bail!(
            "gpg --import failed: {}",
            String::from_utf8_lossy(&import.stderr)
        );
    }
    let gpg_version = Process::new(&a.gpg).arg("--version").output()?;
    let gpg_version = String::from_utf8_lossy(&gpg_version.stdout)
        .lines()
        .next()
        .unwrap_or("gpg")
        .to_string();
    println!(
        "# backstop {} vs {gpg_version}; {} CPU(s)",
        env!("CARGO_PKG_VERSION"),
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    );
    println!(
        "# MB/s: 10^6 bytes of plaintext per second of wall time (best run); CPU: user+system seconds; RSS: peak resident set"
    );
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "# load average at start: {} (other processes skew wall-clock ratios; compare CPU too)",
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    println!(
        "{:>7}  {:<7}  {:>13}  {:>8}  {:>6}  {:>11}  {:>9}  {:>12}  {:>9}",
        "size",
        "op",
        "backstop MB/s",
        "gpg MB/s",
        "ratio",
        "backstop CPU",
        "gpg CPU",
        "backstop RSS",
        "gpg RSS"
    );
    let env = [("GNUPGHOME", gnupg.as_path())];
    let sec_setting = format!("file:{}", sec_path.display());
    let fpr = backup.fingerprint.clone();
    for &size in sizes {
        let runs = a
            .runs
            .unwrap_or(if size <= 256 << 20 { 3 } else { 1 })
            .max(1);
        let ct = dir.join("ciphertext.pgp");
        let ct_s = ct.to_str().context("temp path is not UTF-8")?.to_string();
        let pub_s = pub_path
            .to_str()
            .context("temp path is not UTF-8")?
            .to_string();
        // The plaintext streams in from a generator (stdin) and the
        // decrypted output goes to /dev/null (stdout), for both sides: only
        // one ciphertext is on disk at a time. Runs alternate between the
        // sides so that both see the same background load.
        let enc_ours_args = ["encrypt", "--recipient", &pub_s, "-", &ct_s];
        let dec_ours_args = ["decrypt", "--key", &sec_setting, &ct_s, "-"];
        let enc_gpg_args = [
            "--batch",
            "--yes",
            "--quiet",
            "--trust-model",
            "always",
            "--compress-algo",
            "none",
            "--cipher-algo",
            "AES256",
            "-r",
            &fpr,
            "-o",
            &ct_s,
            "--encrypt",
        ];
        let dec_gpg_args = ["--batch", "--yes", "--quiet", "-o", "-", "--decrypt", &ct_s];
        let (mut enc_ours, mut dec_ours, mut enc_gpg, mut dec_gpg) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for _ in 0..runs {
            let _ = std::fs::remove_file(&ct);
            enc_ours.push(measure(&exe, &enc_ours_args, &[], dir, Some(size))?);
            let d = measure(&exe, &dec_ours_args, &[], dir, None)?;
            let decrypted = d
                .stderr
                .lines()
                .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                .find_map(|v| v["plaintext_size"].as_u64());
            if decrypted != Some(size) {
                bail!(
                    "backstop decrypted {decrypted:?} bytes, expected {size}: {}",
                    d.stderr
                );
            }
            dec_ours.push(d);
            std::fs::remove_file(&ct)?;
            enc_gpg.push(measure(&a.gpg, &enc_gpg_args, &env, dir, Some(size))?);
            dec_gpg.push(measure(&a.gpg, &dec_gpg_args, &env, dir, None)?);
            std::fs::remove_file(&ct)?;
        }
        let (enc_ours, enc_gpg, dec_ours, dec_gpg) =
            (best(enc_ours), best(enc_gpg), best(dec_ours), best(dec_gpg));
        for (op, ours, gpg) in [
            ("encrypt", &enc_ours, &enc_gpg),
            ("decrypt", &dec_ours, &dec_gpg),
        ] {
            let mbps = |m: &Measured| size as f64 / 1e6 / m.seconds;
            println!(
                "{:>7}  {:<7}  {:>13.0}  {:>8.0}  {:>5.2}x  {:>10.2}s  {:>8.2}s  {:>9.1}MiB  {:>6.1}MiB",
                human(size),
                op,
                mbps(ours),
                mbps(gpg),
                mbps(ours) / mbps(gpg),
                ours.cpu,
                gpg.cpu,
                ours.max_rss_kib as f64 / 1024.0,
                gpg.max_rss_kib as f64 / 1024.0,
            );
        }
    }
    Ok(())
}
