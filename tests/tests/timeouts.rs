//! Every network call has a deadline: each production client, pointed at an
//! endpoint that accepts connections and never answers, returns an error
//! promptly — transient, naming the endpoint and the setting to raise — and
//! the functions built on them answer as a caller needs (the replicator 503,
//! so Pub/Sub redelivers; restore falls back to S3).
//!
//! A closed port fails at once; a silent peer is the case that used to hang
//! (issue 17, item 4). Every call below runs under an outer 30 s limit so
//! that a hang shows as a failure, not a stuck test; the bound asserted is
//! far above the 1 s timeouts configured, and far below "forever".
//!
//!   tests/stack/stack.sh run -- cargo test -p backstop-tests --test timeouts

use std::future::Future;
use std::time::{Duration, Instant};

use backstop_cloud::gcs::GcsStore;
use backstop_cloud::s3::S3Store;
use backstop_core::alerts::{Alert, AlertSink, Severity};
use backstop_core::config::Env;
use backstop_core::crypto::KeyUnwrap;
use backstop_core::error::Classify;
use backstop_core::events::Invocation;
use backstop_core::store::{ObjectStore, ObjectStoreExt, PutOptions};
use backstop_functions::lambda::Function;
use backstop_functions::replicator::ReplicatorFunction;
use backstop_postgres::restore::{Clouds, NoProgress, restore};
use backstop_tests::backups::{TestKeys, backup_id, unique_namespace, write_backup};
use backstop_tests::oidc::{RsaKey, function_url_request, google_claims};
use backstop_tests::restore_fixture::{Fixture, unique};
use backstop_tests::{gcs, s3, stack_env};
use bytes::Bytes;
use chrono::Utc;
use serde_json::{Value, json};

/// The outer limit: a call still running after this has hung.
const HANG: Duration = Duration::from_secs(30);
/// What "promptly" means with 1 s timeouts (S3 makes 3 attempts).
const PROMPT: Duration = Duration::from_secs(12);

/// A TCP endpoint that accepts every connection and never reads or writes:
/// what a firewalled or wedged server looks like from the client. Returns
/// `127.0.0.1:PORT`; the sockets stay open until the test ends.
async fn silent_endpoint() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    addr
}

/// The 1 s timeouts every test configures.
fn short_timeouts() -> Vec<(String, String)> {
    [
        ("BACKSTOP_CONNECT_TIMEOUT", "1s"),
        ("BACKSTOP_REQUEST_TIMEOUT", "1s"),
    ]
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .to_vec()
}

/// Runs `call`, failing the test if it hangs; returns its result and how
/// long it took.
async fn timed<T>(what: &str, call: impl Future<Output = T>) -> (T, Duration) {
    let started = Instant::now();
    match tokio::time::timeout(HANG, call).await {
        Ok(out) => (out, started.elapsed()),
        Err(_) => panic!("{what}: still waiting after {HANG:?} on an endpoint that never answers"),
    }
}

/// The error must come promptly, be worth a retry and say who did not answer.
fn assert_prompt_transient<E: Classify + std::fmt::Display>(
    what: &str,
    result: Result<impl std::fmt::Debug, E>,
    took: Duration,
    endpoint: &str,
) {
    let err = match result {
        Ok(v) => panic!("{what}: succeeded against a silent endpoint: {v:?}"),
        Err(e) => e,
    };
    let text = err.to_string();
    eprintln!("{what}: {took:?}: {text}");
    assert!(took < PROMPT, "{what}: took {took:?}: {text}");
    assert!(err.is_transient(), "{what}: not transient: {text}");
    assert!(
        text.contains(endpoint),
        "{what}: the error does not name {endpoint}: {text}"
    );
    assert!(
        text.contains("BACKSTOP_REQUEST_TIMEOUT"),
        "{what}: the error does not say what to raise: {text}"
    );
}

fn stack_var(name: &str) -> String {
    stack_env().required(name, "from the local stack").unwrap()
}

/// The variables of the stack's S3 (credentials, region), with the endpoint
/// replaced.
fn s3_pairs(endpoint: &str) -> Vec<(String, String)> {
    let mut pairs: Vec<(String, String)> = [
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_REGION",
        "BACKSTOP_S3_BUCKET",
    ]
    .iter()
    .map(|n| (n.to_string(), stack_var(n)))
    .collect();
    pairs.push(("AWS_ENDPOINT_URL_S3".into(), format!("http://{endpoint}")));
    pairs
}

async fn exercise_store(store: &dyn ObjectStore, endpoint: &str) {
    let what = |op: &str| format!("{} {op}", store.url());
    let (r, took) = timed(&what("head"), store.head("ns/db/x/manifest.json")).await;
    assert_prompt_transient(&what("head"), r, took, endpoint);
    let (r, took) = timed(
        &what("read"),
        store.get_bytes("ns/db/x/manifest.json", 1024),
    )
    .await;
    assert_prompt_transient(&what("read"), r, took, endpoint);
    let (r, took) = timed(&what("list"), store.list_page("ns/", None)).await;
    assert_prompt_transient(&what("list"), r.map(|p| p.objects.len()), took, endpoint);
    let body = Bytes::from_static(b"{}");
    let (r, took) = timed(
        &what("put"),
        store.put_bytes("ns/db/x/manifest.json", body, PutOptions::create()),
    )
    .await;
    assert_prompt_transient(&what("put"), r, took, endpoint);
}

#[tokio::test]
async fn gcs_that_never_answers_fails_promptly_naming_it() {
    let endpoint = silent_endpoint().await;
    let mut pairs = short_timeouts();
    pairs.push(("STORAGE_EMULATOR_HOST".into(), format!("http://{endpoint}")));
    let env = Env::from_pairs(pairs);
    let store = GcsStore::builder()
        .env(&env)
        .bucket("backups")
        .build()
        .await
        .unwrap();
    exercise_store(&store, &endpoint).await;
}

#[tokio::test]
async fn s3_that_never_answers_fails_promptly_naming_it() {
    let endpoint = silent_endpoint().await;
    let mut pairs = short_timeouts();
    pairs.extend(s3_pairs(&endpoint));
    let store = S3Store::from_env(&Env::from_pairs(pairs)).await.unwrap();
    exercise_store(&store, &endpoint).await;
}

/// The replicator's configuration on the stack, with `replace` applied.
fn replicator_pairs(keys: &TestKeys, namespace: &str) -> Vec<(String, String)> {
    let mut pairs = keys.env_pairs();
    pairs.extend(short_timeouts());
    for name in [
        "STORAGE_EMULATOR_HOST",
        "BACKSTOP_GCS_BUCKET",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_REGION",
        "AWS_ENDPOINT_URL_S3",
        "BACKSTOP_S3_BUCKET",
    ] {
        pairs.push((name.to_string(), stack_var(name)));
    }
    pairs.extend(
        [
            ("BACKSTOP_REPLICATE_NAMESPACES", namespace),
            (
                "BACKSTOP_OIDC_AUDIENCE",
                "https://replicator.example.invalid/",
            ),
            ("BACKSTOP_OIDC_SERVICE_ACCOUNT", "push@example.invalid"),
        ]
        .map(|(k, v)| (k.to_string(), v.to_string())),
    );
    pairs
}

fn with(mut pairs: Vec<(String, String)>, name: &str, value: String) -> Vec<(String, String)> {
    pairs.retain(|(k, _)| k != name);
    pairs.push((name.to_string(), value));
    pairs
}

/// A finalize CloudEvent for the manifest of `id`, as a direct invocation.
fn finalize_event(manifest_key: &str) -> Value {
    json!({
        "specversion": "1.0",
        "type": "google.cloud.storage.object.v1.finalized",
        "source": "//storage.googleapis.com/projects/_/buckets/b",
        "data": {"bucket": stack_var("BACKSTOP_GCS_BUCKET"), "name": manifest_key},
    })
}

/// Writes a backup to the stack's GCS and has the replicator built from
/// `pairs` handle its finalize event; asserts a prompt 503 naming `endpoint`.
async fn replicator_answers_503(
    keys: &TestKeys,
    namespace: &str,
    pairs: Vec<(String, String)>,
    endpoint: &str,
) {
    let id = backup_id(namespace, Utc::now());
    write_backup(&gcs().await, &id, keys, 64 << 10).await;
    let function = ReplicatorFunction::from_env(&Env::from_pairs(pairs))
        .await
        .unwrap();
    let event = Invocation::Direct(finalize_event(&id.manifest_key()));
    let (reply, took) = timed("replicator", function.invoke(event)).await;
    let text = reply.body.to_string();
    eprintln!("replicator: {took:?}: {} {text}", reply.status);
    assert_eq!(reply.status, 503, "{text}");
    assert!(took < PROMPT, "took {took:?}: {text}");
    assert!(text.contains(endpoint), "does not name {endpoint}: {text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicator_answers_503_promptly_when_s3_never_answers() {
    let keys = TestKeys::generate();
    let namespace = unique_namespace("to-s3");
    let endpoint = silent_endpoint().await;
    let pairs = with(
        replicator_pairs(&keys, &namespace),
        "AWS_ENDPOINT_URL_S3",
        format!("http://{endpoint}"),
    );
    replicator_answers_503(&keys, &namespace, pairs, &endpoint).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicator_answers_503_promptly_when_gcs_never_answers() {
    let keys = TestKeys::generate();
    let namespace = unique_namespace("to-gcs");
    let endpoint = silent_endpoint().await;
    let pairs = with(
        replicator_pairs(&keys, &namespace),
        "STORAGE_EMULATOR_HOST",
        format!("http://{endpoint}"),
    );
    replicator_answers_503(&keys, &namespace, pairs, &endpoint).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicator_answers_503_promptly_when_google_keys_never_arrive() {
    let keys = TestKeys::generate();
    let namespace = unique_namespace("to-jwks");
    let endpoint = silent_endpoint().await;
    let pairs = with(
        replicator_pairs(&keys, &namespace),
        "BACKSTOP_OIDC_JWKS_URL",
        format!("http://{endpoint}/certs"),
    );
    let function = ReplicatorFunction::from_env(&Env::from_pairs(pairs))
        .await
        .unwrap();
    let template: Value =
        serde_json::from_str(include_str!("../../samples/gcs-finalize-function-url.json")).unwrap();
    let token = RsaKey::generate("kid-1").sign(&google_claims(
        "https://replicator.example.invalid/",
        "push@example.invalid",
    ));
    let request = function_url_request(&template, Some(&token), None);
    let invocation = Invocation::classify(request).unwrap();
    let (reply, took) = timed("oidc", function.invoke(invocation)).await;
    let text = reply.body.to_string();
    assert_eq!(reply.status, 503, "{text}");
    assert_eq!(reply.body["error"], "auth_unavailable", "{text}");
    assert!(took < PROMPT, "took {took:?}: {text}");
    assert!(text.contains(&endpoint), "does not name {endpoint}: {text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_falls_back_to_s3_promptly_when_gcs_never_answers() {
    let fx = Fixture::new("hang").await;
    let (gcs, s3) = (gcs().await, s3().await);
    // The replicator's job, done by hand: copy the backup to S3 (manifest last).
    for key in [
        fx.id.data_key(),
        fx.id.signature_key(),
        fx.id.manifest_key(),
    ] {
        let got = gcs.get(&key).await.unwrap();
        s3.put(&key, got.body, PutOptions::default()).await.unwrap();
    }
    let endpoint = silent_endpoint().await;
    let mut pairs = short_timeouts();
    pairs.push(("STORAGE_EMULATOR_HOST".into(), format!("http://{endpoint}")));
    let silent = GcsStore::builder()
        .env(&Env::from_pairs(pairs))
        .bucket(gcs.bucket())
        .build()
        .await
        .unwrap();
    let target = unique("rs_dst_hang");
    let clouds = Clouds {
        primary: Some(&silent),
        replica: Some(&s3),
    };
    let config = fx.config(fx.fresh(&target));
    let (report, took) = timed("restore", restore(&config, clouds, &NoProgress)).await;
    let report = report.expect("restore from S3");
    assert!(report.success, "{report:?}");
    assert_eq!(report.cloud, "s3");
    let reason = report.fallback_reason.as_deref().unwrap_or_default();
    eprintln!("restore: {took:?}: {reason}");
    assert!(reason.contains(&endpoint), "{reason}");
    // Listing GCS, then the drill record going to S3: no wait on GCS beyond
    // its timeouts (the restore itself takes a few seconds).
    assert!(took < Duration::from_secs(25), "took {took:?}");
    fx.cleanup(&[&target]).await;
}

#[tokio::test]
async fn kms_that_never_answers_fails_promptly_naming_it() {
    let endpoint = silent_endpoint().await;
    let mut pairs = short_timeouts();
    pairs.push(("BACKSTOP_KMS_ENDPOINT".into(), format!("http://{endpoint}")));
    let kms = backstop_cloud::kms::CloudKms::from_env(&Env::from_pairs(pairs)).unwrap();
    let key = "projects/p/locations/global/keyRings/r/cryptoKeys/k";
    let (r, took) = timed("kms", kms.unwrap(key, b"wrapped".to_vec())).await;
    assert_prompt_transient("kms decrypt", r.map(|_| ()), took, &endpoint);
}

#[tokio::test]
async fn alert_to_a_pubsub_that_never_answers_fails_promptly_naming_it() {
    let endpoint = silent_endpoint().await;
    let mut pairs = short_timeouts();
    pairs.push(("PUBSUB_EMULATOR_HOST".into(), endpoint.clone()));
    let sink = backstop_cloud::pubsub::PubSubAlerts::new(
        &Env::from_pairs(pairs),
        "projects/p/topics/alerts".into(),
    );
    let alert = Alert {
        severity: Severity::Critical,
        source: "timeouts-test".into(),
        code: "test".into(),
        message: "a test alert".into(),
        backup_id: None,
        details: Value::Null,
    };
    let (r, took) = timed("pubsub", sink.publish(&alert)).await;
    let err = r.expect_err("publish to a silent endpoint");
    let text = err.to_string();
    assert!(took < PROMPT, "took {took:?}: {text}");
    assert!(text.contains(&endpoint), "{text}");
    assert!(text.contains("BACKSTOP_REQUEST_TIMEOUT"), "{text}");
}
