//! Encryption and decryption by the `backstop` CLI, side by side with `gpg`,
//! on the same generated input, with the same key.
//!
//!   bench-gpg [--sizes 64M,1G] [--runs N] [--dir DIR] [--gpg gpg] [--backstop PATH]
//!
//! Run `tests/bench/crypto.sh --sizes 64M,1G,4G` (builds both release
//! binaries, then runs this; no local stack needed). Each side runs as a
//! child under `/usr/bin/time`; prints MB/s, the ratio to gpg, CPU time and
//! the peak RSS of each side. The plaintext streams in from a generator on
//! the child's stdin and the decrypted output goes to /dev/null, so only one
//! ciphertext is on disk at a time. Keys: a fresh Backstop key, imported
//! into a throwaway GNUPGHOME, so that both sides encrypt to and decrypt
//! with the same key.

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::Instant;

use anyhow::{Context, bail};
use backstop_core::crypto::{self, KeyAlgorithm};
use clap::Parser;

#[derive(Parser)]
#[command(
    name = "bench-gpg",
    about = "Benchmarks backstop encrypt/decrypt side by side with gpg"
)]
struct Args {
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
    /// The backstop binary (default: `backstop` next to this binary, i.e.
    /// target/release/backstop for a release build).
    #[arg(long, env = "BACKSTOP_BIN")]
    backstop: Option<PathBuf>,
}

fn main() -> ExitCode {
    match run(Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(a: Args) -> anyhow::Result<()> {
    let sizes: Vec<u64> = a
        .sizes
        .iter()
        .map(|s| parse_size(s))
        .collect::<anyhow::Result<_>>()?;
    let backstop = backstop_binary(a.backstop.as_deref())?;
    let own_dir = a.dir.is_none();
    let dir = a.dir.clone().unwrap_or_else(|| {
        std::env::temp_dir().join(format!("backstop-bench-{}", std::process::id()))
    });
    std::fs::create_dir_all(&dir)?;
    let result = bench_in(&a, &backstop, &sizes, &dir);
    // Stop the gpg-agent that the throwaway GNUPGHOME started.
    let _ = Command::new("gpgconf")
        .env("GNUPGHOME", dir.join("gnupg"))
        .args(["--kill", "gpg-agent"])
        .output();
    if own_dir {
        let _ = std::fs::remove_dir_all(&dir);
    }
    result
}

/// The `backstop` binary to measure, as a UTF-8 string for the argument list.
fn backstop_binary(given: Option<&Path>) -> anyhow::Result<String> {
    let path = match given {
        Some(p) => p.to_path_buf(),
        None => std::env::current_exe()?
            .parent()
            .context("this binary has no parent directory")?
            .join(format!("backstop{}", std::env::consts::EXE_SUFFIX)),
    };
    if !path.is_file() {
        bail!(
            "no backstop binary at {}: build it first (cargo build --release -p backstop-cli) or pass --backstop",
            path.display()
        );
    }
    if cfg!(debug_assertions) || path.components().any(|c| c.as_os_str() == "debug") {
        eprintln!(
            "warning: this is a debug build; benchmark a release build (tests/bench/crypto.sh)"
        );
    }
    Ok(path
        .to_str()
        .context("backstop path is not UTF-8")?
        .to_string())
}

// ---- sizes -----------------------------------------------------------------

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

// ---- measuring a child -----------------------------------------------------

struct Measured {
    seconds: f64,
    /// User + system CPU seconds.
    cpu: f64,
    max_rss_kib: u64,
    stderr: String,
}

/// `(peak RSS KiB, user + system CPU seconds)` from the last line of
/// `/usr/bin/time -f "%e %M %U %S"` output.
fn parse_time_output(t: &str) -> Option<(u64, f64)> {
    let fields: Vec<f64> = t
        .lines()
        .last()
        .unwrap_or("")
        .split_whitespace()
        .filter_map(|v| v.parse().ok())
        .collect();
    match fields[..] {
        [_, rss, user, sys] => Some((rss as u64, user + sys)),
        _ => None,
    }
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
    let mut cmd = Command::new("/usr/bin/time");
    cmd.arg("-f")
        .arg("%e %M %U %S")
        .arg("-o")
        .arg(&time_out)
        .arg(program)
        .args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.stdout(Stdio::null())
        .stderr(Stdio::piped())
        .stdin(if input_size.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
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
    let (max_rss_kib, cpu) = parse_time_output(&t)
        .with_context(|| format!("cannot parse /usr/bin/time output {t:?}"))?;
    Ok(Measured {
        seconds,
        cpu,
        max_rss_kib,
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

// ---- the throwaway keyring -------------------------------------------------

/// A Backstop backup key, as files and imported into a throwaway GNUPGHOME.
struct Keyring {
    gnupg: PathBuf,
    public_key: String,
    secret_setting: String,
    fingerprint: String,
}

impl Keyring {
    fn create(dir: &Path, gpg: &str) -> anyhow::Result<Self> {
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
        let import = Command::new(gpg)
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
        Ok(Keyring {
            gnupg,
            public_key: utf8(&pub_path)?,
            secret_setting: format!("file:{}", sec_path.display()),
            fingerprint: backup.fingerprint,
        })
    }
}

fn utf8(p: &Path) -> anyhow::Result<String> {
    Ok(p.to_str().context("temp path is not UTF-8")?.to_string())
}

/// The first line of `program --version`, or `fallback`.
fn version(program: &str, fallback: &str) -> String {
    Command::new(program)
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .map(str::to_string)
        })
        .unwrap_or_else(|| fallback.to_string())
}

// ---- the comparison --------------------------------------------------------

fn print_header(backstop: &str, gpg: &str) {
    println!(
        "# {} vs {}; {} CPU(s)",
        version(backstop, "backstop"),
        version(gpg, "gpg"),
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
}

fn bench_in(a: &Args, backstop: &str, sizes: &[u64], dir: &Path) -> anyhow::Result<()> {
    let keys = Keyring::create(dir, &a.gpg)?;
    print_header(backstop, &a.gpg);
    for &size in sizes {
        let runs = a
            .runs
            .unwrap_or(if size <= 256 << 20 { 3 } else { 1 })
            .max(1);
        let [enc_ours, dec_ours, enc_gpg, dec_gpg] =
            bench_size(backstop, &a.gpg, &keys, dir, size, runs)?;
        for (op, ours, gpg) in [
            ("encrypt", &enc_ours, &enc_gpg),
            ("decrypt", &dec_ours, &dec_gpg),
        ] {
            print_row(size, op, ours, gpg);
        }
    }
    Ok(())
}

/// Best of `runs` runs of each side for one size: `[backstop encrypt,
/// backstop decrypt, gpg encrypt, gpg decrypt]`. Runs alternate between the
/// sides so that both see the same background load.
fn bench_size(
    backstop: &str,
    gpg: &str,
    keys: &Keyring,
    dir: &Path,
    size: u64,
    runs: u32,
) -> anyhow::Result<[Measured; 4]> {
    let ct = dir.join("ciphertext.pgp");
    let ct_s = utf8(&ct)?;
    let env = [("GNUPGHOME", keys.gnupg.as_path())];
    let enc_ours_args = ["encrypt", "--recipient", &keys.public_key, "-", &ct_s];
    let dec_ours_args = ["decrypt", "--key", &keys.secret_setting, &ct_s, "-"];
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
        &keys.fingerprint,
        "-o",
        &ct_s,
        "--encrypt",
    ];
    let dec_gpg_args = ["--batch", "--yes", "--quiet", "-o", "-", "--decrypt", &ct_s];
    let mut all: [Vec<Measured>; 4] = Default::default();
    for _ in 0..runs {
        let _ = std::fs::remove_file(&ct);
        all[0].push(measure(backstop, &enc_ours_args, &[], dir, Some(size))?);
        let d = measure(backstop, &dec_ours_args, &[], dir, None)?;
        check_decrypted_size(&d, size)?;
        all[1].push(d);
        std::fs::remove_file(&ct)?;
        all[2].push(measure(gpg, &enc_gpg_args, &env, dir, Some(size))?);
        all[3].push(measure(gpg, &dec_gpg_args, &env, dir, None)?);
        std::fs::remove_file(&ct)?;
    }
    Ok(all.map(best))
}

/// `backstop decrypt ... -` reports the plaintext size as JSON on stderr.
fn check_decrypted_size(d: &Measured, size: u64) -> anyhow::Result<()> {
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
    Ok(())
}

fn print_row(size: u64, op: &str, ours: &Measured, gpg: &Measured) {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_binary_suffixes() {
        assert_eq!(parse_size("64M").unwrap(), 64 << 20);
        assert_eq!(parse_size(" 1g ").unwrap(), 1 << 30);
        assert_eq!(parse_size("4k").unwrap(), 4096);
        assert_eq!(parse_size("123").unwrap(), 123);
        assert!(parse_size("12X").is_err());
        assert!(parse_size("M").is_err());
        assert_eq!(human(1 << 30), "1GiB");
        assert_eq!(human(64 << 20), "64MiB");
        assert_eq!(human(1536 << 20), "1536MiB");
        assert_eq!(human(100), "100B");
    }

    #[test]
    fn time_output_is_the_last_line() {
        let t = "Command exited with non-zero status 1\n1.25 40960 0.75 0.25\n";
        assert_eq!(parse_time_output(t), Some((40960, 1.0)));
        assert_eq!(parse_time_output("0.01 2048 0.00 0.00"), Some((2048, 0.0)));
        assert_eq!(parse_time_output("garbage"), None);
        assert_eq!(parse_time_output(""), None);
    }

    #[test]
    fn generated_input_is_deterministic_and_sized() {
        let (mut a, mut b) = (Vec::new(), Vec::new());
        generate_input(&mut a, (1 << 20) + 5).unwrap();
        generate_input(&mut b, (1 << 20) + 5).unwrap();
        assert_eq!(a.len(), (1 << 20) + 5);
        assert_eq!(a, b);
        assert_ne!(a[..8], a[8..16]);
    }

    #[test]
    fn best_is_the_fastest_run_with_the_highest_rss() {
        let m = |seconds, max_rss_kib| Measured {
            seconds,
            cpu: seconds,
            max_rss_kib,
            stderr: String::new(),
        };
        let b = best(vec![m(2.0, 10), m(1.0, 5), m(3.0, 7)]);
        assert_eq!(b.seconds, 1.0);
        assert_eq!(b.max_rss_kib, 10);
    }
}
