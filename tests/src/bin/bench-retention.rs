//! Retention at scale: seeds BACKUPS signed, encrypted backups into both
//! emulators (the same bytes in GCS and S3, as the replicator leaves them),
//! then times one dry run of the retention function (list, verify every
//! manifest, plan, audit) and counts the API calls it made per cloud.
//!
//!   bench-retention [BACKUPS] [NAMESPACES]      (defaults: 10000 10)
//!
//! `BACKSTOP_RETENTION_CONCURRENCY` sets the backups verified at a time per
//! cloud, as in the function. `BENCH_RETENTION_REUSE=1` times a dry run over
//! a bucket a previous run seeded (`stack.sh up`; seeding the emulators takes
//! far longer than the dry run), with the public keys it left in the
//! stack's directory.
//!
//! Run inside a fresh local stack (retention lists whole buckets):
//! `tests/stack/stack.sh run -- cargo run --release -p backstop-tests --bin bench-retention`.
//! Prints a readable summary on stderr and one JSON line on stdout.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use backstop_core::config::Env;
use backstop_core::crypto::{encrypt_stream, sign_manifest};
use backstop_core::events::ScheduleRequest;
use backstop_core::manifest::CiphertextInfo;
use backstop_core::naming::{BackupId, DATA_FILE};
use backstop_core::retention::PolicySet;
use backstop_core::retention::SignatureVerifier;
use backstop_core::store::{ObjectStore, ObjectStoreExt, PutOptions};
use backstop_functions::retention::{RetentionFunction, RunResult, concurrency_from_env};
use backstop_tests::backups::{TestKeys, backup_id, synthetic_manifest};
use backstop_tests::counting::{CallCounts, CountingStore};
use backstop_tests::pseudo_random_stream;
use bytes::Bytes;
use chrono::{TimeDelta, Utc};
use futures::{StreamExt, TryStreamExt};
use serde_json::json;

/// Objects per list page, as both adapters request by default.
const PAGE_SIZE: u64 = 1000;
const SEED_CONCURRENCY: usize = 32;
const PLAINTEXT_SIZE: u64 = 4096;

/// The three objects of one backup, ready to upload.
fn backup_objects(
    id: &BackupId,
    keys: &TestKeys,
    data: &Bytes,
    ciphertext: &CiphertextInfo,
    recipients: &[String],
) -> [(String, Bytes); 3] {
    let manifest = synthetic_manifest(
        id,
        keys,
        PLAINTEXT_SIZE,
        ciphertext.clone(),
        recipients.to_vec(),
    );
    let (manifest, signature) = sign_manifest(&manifest, &keys.signer()).expect("sign");
    [
        (id.data_key(), data.clone()),
        (id.signature_key(), Bytes::from(signature)),
        (id.manifest_key(), Bytes::from(manifest)),
    ]
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let backups: usize = args.first().map_or(Ok(10_000), |s| s.parse())?;
    let namespaces: usize = args.get(1).map_or(Ok(10), |s| s.parse())?.max(1);
    let reuse = std::env::var("BENCH_RETENTION_REUSE").is_ok_and(|v| v == "1");
    let concurrency = concurrency_from_env(&Env::from_process())?;

    let keys = TestKeys::generate();
    let gcs = Arc::new(CountingStore::new(backstop_tests::gcs().await));
    let s3 = Arc::new(CountingStore::new(backstop_tests::s3().await));
    let seeded = !gcs.list_page("", None).await?.objects.is_empty();
    if seeded && !reuse {
        anyhow::bail!(
            "the GCS bucket is not empty: run the benchmark in a fresh stack (or set BENCH_RETENTION_REUSE=1 to time a dry run over what a previous run seeded)"
        );
    }
    let env = if seeded {
        saved_keys()?
    } else {
        seed(&keys, [gcs.clone(), s3.clone()], backups, namespaces).await?;
        save_keys(&keys)?
    };

    let before = (gcs.counts(), s3.counts());
    let function = RetentionFunction {
        primary: gcs.clone(),
        replica: Some(s3.clone()),
        verifier: SignatureVerifier {
            keys: backstop_core::trust::TrustedKeys::from_env(&env).await?,
        },
        policies: PolicySet::default(),
        dry_run: true,
        bucket_config: None,
        alerts: Arc::new(backstop_core::alerts::LogAlerts),
        oidc: None,
        concurrency,
    };
    reset_peak_rss();
    let started = Instant::now();
    let result = function
        .run(&ScheduleRequest {
            dry_run: Some(true),
        })
        .await;
    let ended = Instant::now();
    if result
        .report
        .findings
        .iter()
        .any(|f| f.code == "listing_failed")
    {
        anyhow::bail!("a listing failed; the report:\n{}", result.report);
    }
    let done = [
        (gcs.last_list_done(), gcs.last_read_done()),
        (s3.last_list_done(), s3.last_read_done()),
    ];
    let phases = Phases::of(started, ended, done);
    report(
        &result,
        Setup {
            backups,
            namespaces,
            concurrency,
            peak_rss_kib: peak_rss_kib(),
        },
        &phases,
        [
            ("gcs", gcs.counts(), before.0),
            ("s3", s3.counts(), before.1),
        ],
    );
    Ok(())
}

/// Uploads every backup's three objects to both clouds, a bounded number of
/// puts at a time (the emulators' request rate is the limit, not the bench).
async fn seed(
    keys: &TestKeys,
    stores: [Arc<dyn ObjectStore>; 2],
    backups: usize,
    namespaces: usize,
) -> anyhow::Result<()> {
    let (data, ciphertext, recipients) = one_ciphertext(keys).await?;
    let ids = backup_ids(backups, namespaces, Utc::now());
    let per_ns = backups.div_ceil(namespaces);
    eprintln!(
        "[bench-retention] seeding {backups} backups ({namespaces} namespaces, ~{per_ns} each) into both clouds ..."
    );
    let seeded = Instant::now();
    futures::stream::iter(ids.iter().flat_map(|id| {
        let objects = backup_objects(id, keys, &data, &ciphertext, &recipients);
        stores
            .clone()
            .into_iter()
            .flat_map(move |store| objects.clone().map(|o| (store.clone(), o)))
    }))
    .map(|(store, (key, bytes))| async move {
        store.put_bytes(&key, bytes, PutOptions::create()).await
    })
    .buffer_unordered(SEED_CONCURRENCY)
    .try_collect::<Vec<_>>()
    .await?;
    eprintln!(
        "[bench-retention] seeded in {:.1} s",
        seeded.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Where a seeding run leaves its public keys for a later
/// `BENCH_RETENTION_REUSE=1` run: the stack's directory.
fn keys_dir() -> anyhow::Result<PathBuf> {
    let stack = std::env::var_os("BACKSTOP_STACK_DIR")
        .ok_or_else(|| anyhow::anyhow!("BACKSTOP_STACK_DIR is not set: run inside the stack"))?;
    Ok(PathBuf::from(stack).join("bench-retention-keys"))
}

/// Copies the public keys to [`keys_dir`]; the variables pointing there.
fn save_keys(keys: &TestKeys) -> anyhow::Result<Env> {
    let dir = keys_dir()?;
    std::fs::create_dir_all(&dir)?;
    for (name, setting) in keys.env_pairs() {
        let from = setting.strip_prefix("file:").unwrap_or(&setting);
        std::fs::copy(from, dir.join(&name))?;
    }
    saved_keys()
}

/// The variables for the public keys a seeding run saved.
fn saved_keys() -> anyhow::Result<Env> {
    let dir = keys_dir()?;
    let pairs = ["BACKSTOP_RECIPIENTS", "BACKSTOP_SIGNING_PUBLIC_KEY"]
        .map(|name| (name, format!("file:{}", dir.join(name).display())));
    Ok(Env::from_pairs(pairs))
}

/// The kernel's high-water mark of this process's resident memory.
fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// Restarts the high-water mark, so that seeding does not count.
fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// Where the dry run's time went, told apart by when each cloud's last list
/// and last read answered: the clouds are collected at the same time, each
/// listing, then verifying; planning and the audit come after both.
struct Phases {
    wall: f64,
    /// Per cloud: listing, then verification reads.
    clouds: [(f64, f64); 2],
    /// From the last read of either cloud to the end: plan, audit, report.
    plan_and_audit: f64,
}

impl Phases {
    /// `done`: when each cloud's last list and last read answered.
    fn of(started: Instant, ended: Instant, done: [(Option<Instant>, Option<Instant>); 2]) -> Self {
        let secs = |from: Instant, to: Instant| to.saturating_duration_since(from).as_secs_f64();
        let cloud = |(listed, read): (Option<Instant>, Option<Instant>)| {
            let listed = listed.unwrap_or(started);
            let read = read.unwrap_or(listed).max(listed);
            (secs(started, listed), secs(listed, read), read)
        };
        let (a, b) = (cloud(done[0]), cloud(done[1]));
        Phases {
            wall: secs(started, ended),
            clouds: [(a.0, a.1), (b.0, b.1)],
            plan_and_audit: secs(a.2.max(b.2), ended),
        }
    }
}

/// One small real ciphertext shared by every backup: what the verifier
/// checks (signature, size, the first packets) is all there.
async fn one_ciphertext(keys: &TestKeys) -> anyhow::Result<(Bytes, CiphertextInfo, Vec<String>)> {
    let (plain, _) = pseudo_random_stream(PLAINTEXT_SIZE, 4096, 7);
    let encrypted = encrypt_stream(plain, &[keys.recipient()])?;
    let data: Bytes = encrypted
        .stream
        .try_fold(Vec::new(), |mut acc, chunk| async move {
            acc.extend_from_slice(&chunk);
            Ok(acc)
        })
        .await?
        .into();
    let summary = encrypted.summary.get().expect("summary after the stream");
    let ciphertext = summary.ciphertext_info(DATA_FILE);

    Ok((data, ciphertext, summary.recipients.clone()))
}

/// Each namespace gets a backup every 6 hours going back from `now`, so the
/// policy keeps a handful and prunes the rest.
fn backup_ids(backups: usize, namespaces: usize, now: chrono::DateTime<Utc>) -> Vec<BackupId> {
    (0..backups)
        .map(|i| {
            let ns = if i % namespaces == 0 {
                "production".to_string()
            } else {
                format!("pr-{}", i % namespaces)
            };
            let age = TimeDelta::hours(6 * (i / namespaces) as i64 + 1);
            backup_id(&ns, now - age)
        })
        .collect()
}

/// What the run was asked to do, for the report.
struct Setup {
    backups: usize,
    namespaces: usize,
    concurrency: usize,
    peak_rss_kib: u64,
}

/// The readable summary on stderr and the JSON line on stdout. A GCS `get`
/// is two requests (the object's metadata, then its bytes: `GcsStore::get`),
/// so HTTP requests are reported next to the store calls.
fn report(
    result: &RunResult,
    setup: Setup,
    phases: &Phases,
    counts: [(&str, CallCounts, CallCounts); 2],
) {
    let Setup {
        backups,
        namespaces,
        concurrency,
        peak_rss_kib,
    } = setup;
    let objects = 3 * backups as u64;
    let expected_lists = objects.div_ceil(PAGE_SIZE);
    let mut clouds = Vec::new();
    for ((cloud, after, before), (listing, reads)) in counts.into_iter().zip(phases.clouds) {
        let d = |a: u64, b: u64| a - b;
        let get = d(after.get, before.get);
        let calls = json!({
            "list": d(after.list, before.list),
            "get": get,
            "head": d(after.head, before.head),
            "put": d(after.put, before.put),
            "delete": d(after.delete, before.delete),
        });
        let http = d(after.total(), before.total()) + if cloud == "gcs" { get } else { 0 };
        eprintln!(
            "[bench-retention] {cloud}: {objects} objects, list calls {} (objects / page size {PAGE_SIZE} = {expected_lists}), get {get}, head {}, put {}, delete {}; {http} HTTP requests; listing {listing:.2} s, then verification reads {reads:.2} s ({:.0} reads/s)",
            calls["list"],
            calls["head"],
            calls["put"],
            calls["delete"],
            get as f64 / reads.max(1e-9)
        );
        clouds.push(
            json!({"cloud": cloud, "objects": objects, "calls": calls, "http_requests": http,
            "listing_seconds": listing, "verify_seconds": reads}),
        );
    }
    eprintln!(
        "[bench-retention] dry run over {backups} backups per cloud, {concurrency} verified at a time per cloud: {:.2} s wall (plan + audit after the last read {:.2} s), peak RSS {:.1} MiB; would delete {} objects; findings: {} critical, {} warning, {} info",
        phases.wall,
        phases.plan_and_audit,
        peak_rss_kib as f64 / 1024.0,
        result.deleted.len(),
        result.report.critical,
        result.report.warning,
        result.report.info
    );
    let mut by_code = std::collections::BTreeMap::<&str, usize>::new();
    for f in &result.report.findings {
        *by_code.entry(f.code.as_str()).or_default() += 1;
    }
    eprintln!("[bench-retention] findings by code: {by_code:?}");
    println!(
        "{}",
        json!({
            "findings_by_code": by_code,
            "backups_per_cloud": backups,
            "namespaces": namespaces,
            "concurrency": concurrency,
            "wall_seconds": phases.wall,
            "plan_and_audit_seconds": phases.plan_and_audit,
            "peak_rss_kib": peak_rss_kib,
            "page_size": PAGE_SIZE,
            "expected_list_calls_per_cloud": expected_lists,
            "clouds": clouds,
            "would_delete": result.deleted.len(),
            "critical": result.report.critical,
            "warning": result.report.warning,
        })
    );
}
