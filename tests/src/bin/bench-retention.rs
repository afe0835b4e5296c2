//! Retention at scale: seeds BACKUPS signed, encrypted backups into both
//! emulators (the same bytes in GCS and S3, as the replicator leaves them),
//! then times one dry run of the retention function (list, verify every
//! manifest, plan, audit) and counts the API calls it made per cloud.
//!
//!   bench-retention [BACKUPS] [NAMESPACES]      (defaults: 10000 10)
//!
//! Run inside a fresh local stack (retention lists whole buckets):
//! `tests/stack/stack.sh run -- cargo run --release -p backstop-tests --bin bench-retention`.
//! Prints a readable summary on stderr and one JSON line on stdout.

use std::sync::Arc;
use std::time::Instant;

use backstop_core::crypto::{encrypt_stream, sign_manifest};
use backstop_core::events::ScheduleRequest;
use backstop_core::manifest::CiphertextInfo;
use backstop_core::naming::{BackupId, DATA_FILE};
use backstop_core::retention::PolicySet;
use backstop_core::retention::SignatureVerifier;
use backstop_core::store::{ObjectStore, ObjectStoreExt, PutOptions};
use backstop_functions::retention::{RetentionFunction, RunResult};
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

    let keys = TestKeys::generate();
    let env = backstop_core::config::Env::from_pairs(keys.env_pairs());
    let gcs = Arc::new(CountingStore::new(backstop_tests::gcs().await));
    let s3 = Arc::new(CountingStore::new(backstop_tests::s3().await));
    if !gcs.list_page("", None).await?.objects.is_empty() {
        anyhow::bail!("the GCS bucket is not empty: run the benchmark in a fresh stack");
    }

    let (data, ciphertext, recipients) = one_ciphertext(&keys).await?;

    let now = Utc::now();
    let per_ns = backups.div_ceil(namespaces);
    let ids = backup_ids(backups, namespaces, now);
    eprintln!(
        "[bench-retention] seeding {backups} backups ({namespaces} namespaces, ~{per_ns} each) into both clouds ..."
    );
    let seeded = Instant::now();
    let stores: [Arc<dyn ObjectStore>; 2] = [gcs.clone(), s3.clone()];
    futures::stream::iter(ids.iter().flat_map(|id| {
        let objects = backup_objects(id, &keys, &data, &ciphertext, &recipients);
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
    };
    let started = Instant::now();
    let result = function
        .run(&ScheduleRequest {
            dry_run: Some(true),
        })
        .await;
    let wall = started.elapsed().as_secs_f64();
    let listing_failed = result
        .report
        .findings
        .iter()
        .any(|f| f.code == "listing_failed");
    if listing_failed {
        anyhow::bail!("a listing failed; the report:\n{}", result.report);
    }

    report(
        &result,
        backups,
        namespaces,
        wall,
        [
            ("gcs", gcs.counts(), before.0),
            ("s3", s3.counts(), before.1),
        ],
    );
    Ok(())
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

/// The readable summary on stderr and the JSON line on stdout.
fn report(
    result: &RunResult,
    backups: usize,
    namespaces: usize,
    wall: f64,
    counts: [(&str, CallCounts, CallCounts); 2],
) {
    let objects = 3 * backups as u64;
    let expected_lists = objects.div_ceil(PAGE_SIZE);
    let mut clouds = Vec::new();
    for (cloud, after, before) in counts {
        let calls = json!({
            "list": after.list - before.list,
            "get": after.get - before.get,
            "head": after.head - before.head,
            "put": after.put - before.put,
            "delete": after.delete - before.delete,
        });
        eprintln!(
            "[bench-retention] {cloud}: {objects} objects, list calls {} (objects / page size {PAGE_SIZE} = {expected_lists}), get {}, head {}, put {}, delete {}",
            calls["list"], calls["get"], calls["head"], calls["put"], calls["delete"]
        );
        clouds.push(json!({"cloud": cloud, "objects": objects, "calls": calls}));
    }
    eprintln!(
        "[bench-retention] dry run over {backups} backups per cloud: {wall:.2} s wall; would delete {} objects; findings: {} critical, {} warning, {} info",
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
            "wall_seconds": wall,
            "page_size": PAGE_SIZE,
            "expected_list_calls_per_cloud": expected_lists,
            "clouds": clouds,
            "would_delete": result.deleted.len(),
            "critical": result.report.critical,
            "warning": result.report.warning,
        })
    );
}
