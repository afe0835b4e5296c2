//! Streams one large object through each storage adapter, put then get, and
//! reports throughput and the process's peak RSS for each step (the Foundation
//! issue's memory budget: under 100 MiB whatever the object size).
//!
//!   bench-store [SIZE_MIB] [gcs|s3|both]      (defaults: 1024 both)
//!
//! Run inside the local stack: `tests/stack/stack.sh run -- tests/bench/store.sh`.
//! Peak RSS is the kernel's high-water mark (`VmHWM`), reset between steps
//! through `/proc/self/clear_refs`, so each step is measured on its own in
//! one process. Prints one JSON line per step on stdout.

use std::time::Instant;

use backstop_core::store::{ObjectStore, PutOptions};
use backstop_tests::{drain_sha256, pseudo_random_stream};
use serde_json::json;

/// The process's peak resident set size since the last reset, in KiB.
fn peak_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/self/status")
}

/// Resets the peak RSS to the current RSS (Linux >= 4.0).
fn reset_peak_rss() {
    std::fs::write("/proc/self/clear_refs", "5").expect("reset VmHWM via /proc/self/clear_refs");
}

async fn bench(adapter: &str, store: &dyn ObjectStore, size: u64) {
    let key = format!("bench-store/{:016x}/object.bin", rand::random::<u64>());
    let (body, expected) = pseudo_random_stream(size, 1 << 20, size ^ 0xbe7c);
    let mib = size as f64 / f64::from(1 << 20);

    reset_peak_rss();
    let baseline = peak_rss_kib();
    let started = Instant::now();
    store
        .put(&key, body, PutOptions::create())
        .await
        .unwrap_or_else(|e| panic!("{adapter} put failed: {e}"));
    let put_s = started.elapsed().as_secs_f64();
    println!(
        "{}",
        json!({"adapter": adapter, "op": "put", "mib": mib, "seconds": put_s,
               "mib_per_s": mib / put_s, "baseline_rss_kib": baseline,
               "peak_rss_kib": peak_rss_kib()})
    );

    reset_peak_rss();
    let baseline = peak_rss_kib();
    let started = Instant::now();
    let got = store
        .get(&key)
        .await
        .unwrap_or_else(|e| panic!("{adapter} get failed: {e}"));
    let (n, sha) = drain_sha256(got.body)
        .await
        .unwrap_or_else(|e| panic!("{adapter} read failed: {e}"));
    let get_s = started.elapsed().as_secs_f64();
    assert_eq!(
        (n, sha.as_str()),
        (size, expected.as_str()),
        "{adapter}: the object read back differs from what was written"
    );
    println!(
        "{}",
        json!({"adapter": adapter, "op": "get", "mib": mib, "seconds": get_s,
               "mib_per_s": mib / get_s, "baseline_rss_kib": baseline,
               "peak_rss_kib": peak_rss_kib(), "sha256_equal": true})
    );
    store
        .delete(&key)
        .await
        .unwrap_or_else(|e| panic!("{adapter} delete failed: {e}"));
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let size_mib: u64 = match args.first() {
        Some(s) => s.parse().expect("SIZE_MIB is a number of MiB"),
        None => 1024,
    };
    let which = args.get(1).map(String::as_str).unwrap_or("both");
    if !matches!(which, "gcs" | "s3" | "both") {
        eprintln!("usage: bench-store [SIZE_MIB] [gcs|s3|both]");
        std::process::exit(2);
    }
    let size = size_mib << 20;
    if which != "s3" {
        bench("gcs", &backstop_tests::gcs().await, size).await;
    }
    if which != "gcs" {
        bench("s3", &backstop_tests::s3().await, size).await;
    }
}
