//! The replicator as deployed: the real `replicator` binary, run on every
//! sample event with `--event FILE`, behind OIDC-checked Function URL
//! requests signed by a local key, and under a local stand-in of the AWS
//! Lambda Runtime API.
//!
//! They live in the `replicator` package so that cargo builds the binary
//! they run (`CARGO_BIN_EXE_replicator`). Inside the local stack:
//!
//!   tests/stack/stack.sh run -- cargo test -p replicator --test runtime

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use backstop_core::naming::{BackupId, Namespace};
use backstop_core::store::{ObjectStore, ObjectStoreExt};
use backstop_tests::backups::{TestKeys, backup_id, unique_namespace, write_backup};
use backstop_tests::lambda_api::{Completion, LambdaApi};
use backstop_tests::oidc::{
    JwksServer, RsaKey, function_url_body, function_url_request, google_claims,
};
use backstop_tests::{drain_sha256, gcs, s3, stack_env};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use chrono::{TimeZone, Utc};
use serde_json::{Value, json};

/// The Function URL (the OIDC audience) and the push subscription's service
/// account, as configured in production.
const AUDIENCE: &str = "https://abcdefghijklmnop.lambda-url.eu-west-1.on.aws/";
const PUSH_SA: &str = "gcs-push@backstop-prod.iam.gserviceaccount.com";
const KID: &str = "backstop-test-key-1";

const SAMPLES: [&str; 3] = [
    "gcs-finalize-pubsub-push.json",
    "gcs-finalize-cloudevent.json",
    "gcs-finalize-function-url.json",
];

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("functions/replicator is two levels below the repository root")
        .to_path_buf()
}

fn sample_path(name: &str) -> PathBuf {
    repo_root().join("samples").join(name)
}

fn load_sample(name: &str) -> Value {
    serde_json::from_slice(&std::fs::read(sample_path(name)).unwrap()).unwrap()
}

fn replicator_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_replicator"))
}

/// The backup every sample names: production/app/20261127T030000Z-5a3c01.
fn sample_backup_id() -> BackupId {
    BackupId::with_nonce(
        Namespace::new("production").unwrap(),
        "app",
        Utc.with_ymd_and_hms(2026, 11, 27, 3, 0, 0).unwrap(),
        "5a3c01",
    )
    .unwrap()
}

fn gcs_bucket() -> String {
    stack_env().required("BACKSTOP_GCS_BUCKET", "").unwrap()
}

/// The replicator's configuration on the local stack (the stack's own
/// variables are inherited from this process).
fn replicator_env(keys: &TestKeys, namespaces: &str, jwks: &JwksServer) -> Vec<(String, String)> {
    let mut env = keys.env_pairs();
    env.extend(
        [
            ("BACKSTOP_REPLICATE_NAMESPACES", namespaces),
            ("BACKSTOP_OIDC_AUDIENCE", AUDIENCE),
            ("BACKSTOP_OIDC_SERVICE_ACCOUNT", PUSH_SA),
            ("BACKSTOP_OIDC_JWKS_URL", jwks.url.as_str()),
            ("BACKSTOP_LOG_FORMAT", "json"),
            ("RUST_LOG", "info"),
        ]
        .map(|(k, v)| (k.to_string(), v.to_string())),
    );
    env
}

fn command(env: &[(String, String)]) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(replicator_bin());
    cmd.current_dir(repo_root())
        // Alerts are logged, not published, unless a test asks otherwise.
        .env_remove("BACKSTOP_ALERT_TOPIC")
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .kill_on_drop(true);
    cmd
}

#[derive(Debug)]
struct Run {
    code: Option<i32>,
    /// `{"status": N, "result": ...}` as printed on stdout.
    output: Value,
    stderr: String,
}

impl Run {
    fn status(&self) -> u64 {
        self.output["status"]
            .as_u64()
            .unwrap_or_else(|| panic!("no status in {self:#?}"))
    }
    fn result(&self) -> &Value {
        &self.output["result"]
    }
}

/// `replicator --event FILE`, asynchronously (the JWKS server of this test
/// runs on the same runtime).
async fn run_event(env: &[(String, String)], event_file: &Path) -> Run {
    let out = tokio::time::timeout(
        Duration::from_secs(120),
        command(env)
            .arg("--event")
            .arg(event_file)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .output(),
    )
    .await
    .expect("replicator finished within 120 s")
    .expect("replicator started");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let output: Value = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
        panic!("stdout is not one JSON result ({e}): {stdout:?}\nstderr:\n{stderr}")
    });
    Run {
        code: out.status.code(),
        output,
        stderr,
    }
}

/// Writes `event` to a file of `dir` and runs it.
async fn run_value(env: &[(String, String)], dir: &Path, event: &Value) -> Run {
    let path = dir.join(format!("event-{:08x}.json", rand::random::<u32>()));
    std::fs::write(&path, serde_json::to_vec_pretty(event).unwrap()).unwrap();
    run_event(env, &path).await
}

/// Deletes every object of a backup from both clouds (earlier runs on the
/// same stack leave the sample backup behind).
async fn remove_backup(id: &BackupId) {
    let stores: [Box<dyn ObjectStore>; 2] = [Box::new(gcs().await), Box::new(s3().await)];
    for store in stores {
        for meta in store.list_all(&id.prefix()).await.unwrap() {
            store.delete(&meta.key).await.unwrap();
        }
        assert!(store.list_all(&id.prefix()).await.unwrap().is_empty());
    }
}

/// Checks that S3 holds the whole backup, byte for byte as in GCS.
async fn assert_replicated(id: &BackupId, sha256: &str, size: u64) {
    let target = s3().await;
    let source = gcs().await;
    let data = target
        .get(&id.data_key())
        .await
        .unwrap_or_else(|e| panic!("{} is not in S3: {e}", id.data_key()));
    let (got_size, got_sha) = drain_sha256(data.body).await.unwrap();
    assert_eq!(
        (got_size, got_sha.as_str()),
        (size, sha256),
        "S3 data object"
    );
    for key in [id.manifest_key(), id.signature_key()] {
        assert_eq!(
            target.get_bytes(&key, 1 << 20).await.unwrap(),
            source.get_bytes(&key, 1 << 20).await.unwrap(),
            "{key} equal in both clouds"
        );
    }
    assert_eq!(target.list_all(&id.prefix()).await.unwrap().len(), 3);
}

async fn assert_nothing_in_s3(id: &BackupId, context: &str) {
    let objects = s3().await.list_all(&id.prefix()).await.unwrap();
    assert!(objects.is_empty(), "{context}: S3 holds {objects:?}");
}

// ---- retargeting the samples at other backups -------------------------------

/// The object resource of a notification, for `name` in `bucket`.
fn retarget_object(object: &mut Value, bucket: &str, name: &str) {
    let generation = object["generation"].as_str().unwrap_or("1").to_string();
    object["bucket"] = json!(bucket);
    object["name"] = json!(name);
    object["id"] = json!(format!("{bucket}/{name}/{generation}"));
}

/// A Pub/Sub push envelope like the sample's, naming another object.
fn retarget_push(push: &Value, bucket: &str, name: &str) -> Value {
    let mut push = push.clone();
    let message = &mut push["message"];
    message["attributes"]["bucketId"] = json!(bucket);
    message["attributes"]["objectId"] = json!(name);
    let mut object: Value =
        serde_json::from_slice(&STANDARD.decode(message["data"].as_str().unwrap()).unwrap())
            .unwrap();
    retarget_object(&mut object, bucket, name);
    message["data"] = json!(STANDARD.encode(object.to_string()));
    push
}

/// A structured-mode CloudEvent like the sample's, naming another object.
fn retarget_cloudevent(ce: &Value, bucket: &str, name: &str) -> Value {
    let mut ce = ce.clone();
    retarget_object(&mut ce["data"], bucket, name);
    ce["source"] = json!(format!(
        "//storage.googleapis.com/projects/_/buckets/{bucket}"
    ));
    ce["subject"] = json!(format!("objects/{name}"));
    ce
}

/// The Function URL sample, carrying a push for `name` and `token`.
fn function_url_for(bucket: &str, name: &str, token: Option<&str>) -> Value {
    let template = load_sample("gcs-finalize-function-url.json");
    let push: Value = serde_json::from_slice(&function_url_body(&template)).unwrap();
    let body = retarget_push(&push, bucket, name).to_string();
    function_url_request(&template, token, Some(body.as_bytes()))
}

struct Oidc {
    key: RsaKey,
    jwks: JwksServer,
}

impl Oidc {
    async fn start() -> Self {
        let key = RsaKey::generate(KID);
        let jwks = JwksServer::start(vec![key.jwk()]).await;
        Self { key, jwks }
    }

    fn valid_token(&self) -> String {
        self.key.sign(&google_claims(AUDIENCE, PUSH_SA))
    }
}

// ---- 1. every sample, through the binary ------------------------------------

#[tokio::test]
async fn every_sample_event_replicates_through_the_binary() {
    let keys = TestKeys::generate();
    let oidc = Oidc::start().await;
    let env = replicator_env(&keys, "production", &oidc.jwks);
    let dir = tempfile::tempdir().unwrap();
    let id = sample_backup_id();
    let source = gcs().await;
    // The samples name the configured bucket: they are the real thing.
    for name in SAMPLES {
        assert!(
            std::fs::read_to_string(sample_path(name))
                .unwrap()
                .contains("backstop-backups")
                || name.ends_with("function-url.json")
        );
    }
    assert_eq!(gcs_bucket(), "backstop-backups");

    for name in SAMPLES {
        remove_backup(&id).await;
        let manifest = write_backup(&source, &id, &keys, 300 << 10).await;
        let event_file = if name.ends_with("function-url.json") {
            // The sample's push body, with a real token instead of the placeholder.
            let sample = load_sample(name);
            assert!(
                sample["headers"]["authorization"]
                    .as_str()
                    .unwrap()
                    .contains("REPLACE_WITH")
            );
            let event = function_url_request(&sample, Some(&oidc.valid_token()), None);
            assert_eq!(event["body"], sample["body"], "the sample's own body");
            let path = dir.path().join(name);
            std::fs::write(&path, serde_json::to_vec_pretty(&event).unwrap()).unwrap();
            path
        } else {
            sample_path(name)
        };

        let run = run_event(&env, &event_file).await;
        assert_eq!(run.code, Some(0), "{name}: {run:#?}");
        assert_eq!(run.status(), 200, "{name}: {run:#?}");
        let result = run.result();
        assert_eq!(result["outcome"], "replicated", "{name}: {run:#?}");
        assert_eq!(result["backup_id"], id.to_string());
        assert_eq!(result["bytes"], manifest.ciphertext.size);
        assert_eq!(result["sha256"], manifest.ciphertext.sha256);
        assert!(
            run.stderr.contains("\"elapsed_ms\""),
            "the handled event is logged with its time: {}",
            run.stderr
        );
        assert_replicated(&id, &manifest.ciphertext.sha256, manifest.ciphertext.size).await;

        // Pub/Sub redelivers: the same event again is a successful no-op.
        let again = run_event(&env, &event_file).await;
        assert_eq!(again.code, Some(0), "{name}: {again:#?}");
        assert_eq!(
            again.result()["outcome"],
            "already_replicated",
            "{again:#?}"
        );
        assert_replicated(&id, &manifest.ciphertext.sha256, manifest.ciphertext.size).await;
    }
    remove_backup(&id).await;
}

// ---- 2. OIDC on Function URL requests ---------------------------------------

#[tokio::test]
async fn function_url_requests_need_a_valid_google_token() {
    let keys = TestKeys::generate();
    let oidc = Oidc::start().await;
    let impostor = RsaKey::generate(KID); // same kid, another key
    let namespace = unique_namespace("oidc");
    let env = replicator_env(&keys, &namespace, &oidc.jwks);
    let dir = tempfile::tempdir().unwrap();
    let bucket = gcs_bucket();
    let id = backup_id(&namespace, Utc::now());
    let manifest = write_backup(&gcs().await, &id, &keys, 200 << 10).await;
    let event = |token: Option<&str>| function_url_for(&bucket, &id.manifest_key(), token);

    let claims = google_claims(AUDIENCE, PUSH_SA);
    let with = |field: &str, value: Value| {
        let mut c = claims.clone();
        c[field] = value;
        c
    };
    let now = Utc::now().timestamp();
    let rejected: Vec<(&str, Option<String>)> = vec![
        ("no Authorization header", None),
        ("empty bearer token", Some(String::new())),
        ("not a JWT", Some("not-a-jwt".into())),
        (
            "signed by another key (same kid)",
            Some(impostor.sign(&claims)),
        ),
        (
            "signed by another key (unknown kid)",
            Some(impostor.sign_as("someone-elses-key", &claims)),
        ),
        (
            "HS256 keyed with the public key",
            Some(oidc.key.forge_hs256(&claims)),
        ),
        (
            "wrong audience",
            Some(
                oidc.key
                    .sign(&with("aud", json!("https://elsewhere.example/"))),
            ),
        ),
        (
            "wrong service account",
            Some(oidc.key.sign(&with(
                "email",
                json!("intruder@evil.iam.gserviceaccount.com"),
            ))),
        ),
        (
            "email not verified",
            Some(oidc.key.sign(&with("email_verified", json!(false)))),
        ),
        (
            "wrong issuer",
            Some(oidc.key.sign(&with("iss", json!("https://evil.example")))),
        ),
        (
            "expired",
            Some(oidc.key.sign(&{
                let mut c = with("exp", json!(now - 600));
                c["iat"] = json!(now - 4200);
                c
            })),
        ),
    ];
    for (case, token) in &rejected {
        let run = run_value(&env, dir.path(), &event(token.as_deref())).await;
        assert_eq!(run.status(), 401, "{case}: {run:#?}");
        assert_eq!(run.code, Some(1), "{case}: a failed invocation");
        assert_eq!(run.result()["error"], "unauthenticated", "{case}: {run:#?}");
        assert!(
            !run.stderr.contains("backup replicated"),
            "{case}: nothing was read: {}",
            run.stderr
        );
        assert_nothing_in_s3(&id, case).await;
    }

    let valid = oidc.valid_token();
    // Google's keys out of reach: 503, the caller (Pub/Sub) retries later.
    let unreachable = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}/oauth2/v3/certs", listener.local_addr().unwrap())
    }; // closed again here: connections are refused
    let mut env_no_keys = env.clone();
    env_no_keys.retain(|(k, _)| k != "BACKSTOP_OIDC_JWKS_URL");
    env_no_keys.push(("BACKSTOP_OIDC_JWKS_URL".into(), unreachable));
    let run = run_value(&env_no_keys, dir.path(), &event(Some(&valid))).await;
    assert_eq!(run.status(), 503, "{run:#?}");
    assert_eq!(run.result()["error"], "auth_unavailable", "{run:#?}");
    assert_nothing_in_s3(&id, "JWKS unreachable").await;

    // A huge body is refused before it is decoded or parsed.
    let huge = vec![b' '; 300 << 10];
    let run = run_value(
        &env,
        dir.path(),
        &function_url_request(&event(None), Some(&valid), Some(&huge)),
    )
    .await;
    assert_eq!(run.status(), 400, "{run:#?}");
    assert!(
        run.result()["message"].as_str().unwrap().contains("bytes"),
        "{run:#?}"
    );
    // An event file far beyond any notification is not even read.
    let path = dir.path().join("enormous.json");
    std::fs::write(&path, vec![b' '; 4 << 20]).unwrap();
    let run = run_event(&env, &path).await;
    assert_eq!((run.code, run.status()), (Some(1), 400), "{run:#?}");
    // Binary and malformed bodies with a valid token: 400 with the reason.
    let binary: Vec<u8> = (0..4096u32).map(|i| (i * 7919 % 251) as u8).collect();
    for (case, body, needle) in [
        ("binary body", binary, "not JSON"),
        (
            "push without eventType",
            json!({"message": {"attributes": {"bucketId": bucket, "objectId": id.manifest_key()}}, "subscription": "s"})
                .to_string()
                .into_bytes(),
            "eventType",
        ),
        (
            "push with broken data",
            json!({"message": {"attributes": {"eventType": "OBJECT_FINALIZE"}, "data": "%%%"}})
                .to_string()
                .into_bytes(),
            "base64",
        ),
        ("neither push nor CloudEvent", b"{\"hello\": 1}".to_vec(), "expected a Pub/Sub push"),
    ] {
        let run = run_value(
            &env,
            dir.path(),
            &function_url_request(&event(None), Some(&valid), Some(&body)),
        )
        .await;
        assert_eq!(run.status(), 400, "{case}: {run:#?}");
        assert_eq!(run.result()["error"], "bad_event", "{case}: {run:#?}");
        let message = run.result()["message"].as_str().unwrap();
        assert!(message.contains(needle), "{case}: {message}");
    }
    // Another bucket's notification: 400, acknowledged, never retried.
    let run = run_value(
        &env,
        dir.path(),
        &function_url_for("someone-elses-bucket", &id.manifest_key(), Some(&valid)),
    )
    .await;
    assert_eq!(run.status(), 400, "{run:#?}");
    assert_eq!(run.result()["error"], "unknown_bucket");
    assert_nothing_in_s3(&id, "after the refused requests").await;

    // The valid token: replicated.
    let run = run_value(&env, dir.path(), &event(Some(&valid))).await;
    assert_eq!((run.code, run.status()), (Some(0), 200), "{run:#?}");
    assert_eq!(run.result()["outcome"], "replicated", "{run:#?}");
    assert_replicated(&id, &manifest.ciphertext.sha256, manifest.ciphertext.size).await;
    assert!(oidc.jwks.hits() >= 1, "the verifier fetched the local JWKS");
}

// ---- 3. under the Lambda Runtime API ----------------------------------------

#[tokio::test]
async fn serves_events_under_the_lambda_runtime_api() {
    let keys = TestKeys::generate();
    let oidc = Oidc::start().await;
    let namespace = unique_namespace("lambda");
    let bucket = gcs_bucket();
    let source = gcs().await;
    let first = backup_id(&namespace, Utc::now());
    let second = backup_id(&namespace, Utc::now());
    let m1 = write_backup(&source, &first, &keys, 200 << 10).await;
    let m2 = write_backup(&source, &second, &keys, 100 << 10).await;

    let api = LambdaApi::start().await;
    let logs = tempfile::NamedTempFile::new().unwrap();
    let mut env = replicator_env(&keys, &namespace, &oidc.jwks);
    env.extend(api.env("replicator"));
    let mut child = command(&env)
        .stdout(Stdio::null())
        .stderr(logs.reopen().unwrap())
        .spawn()
        .expect("replicator starts");
    let logs_text = || std::fs::read_to_string(logs.path()).unwrap_or_default();
    assert!(
        api.wait_for_polls(1, Duration::from_secs(30)).await,
        "the runtime never asked for an event; logs:\n{}",
        logs_text()
    );
    let timeout = Duration::from_secs(120);
    let invoke = |event: Value| {
        let api = &api;
        async move {
            api.invoke(event, timeout)
                .await
                .unwrap_or_else(|e| panic!("{e}\nlogs:\n{}", logs_text()))
        }
    };

    // (a) A Function URL request with a valid token: an HTTP response.
    let reply = invoke(function_url_for(
        &bucket,
        &first.manifest_key(),
        Some(&oidc.valid_token()),
    ))
    .await;
    let Completion::Response(response) = &reply else {
        panic!("expected a response, got {reply:?}")
    };
    assert_eq!(response["statusCode"], 200, "{response:#}");
    assert_eq!(response["headers"]["content-type"], "application/json");
    let body: Value = serde_json::from_str(response["body"].as_str().unwrap()).unwrap();
    assert_eq!(body["outcome"], "replicated", "{body:#}");
    assert_eq!(body["backup_id"], first.to_string());
    assert_replicated(&first, &m1.ciphertext.sha256, m1.ciphertext.size).await;

    // (b) A direct invocation with a push envelope: the outcome itself.
    let push = load_sample("gcs-finalize-pubsub-push.json");
    let reply = invoke(retarget_push(&push, &bucket, &second.manifest_key())).await;
    let Completion::Response(outcome) = &reply else {
        panic!("expected a response, got {reply:?}")
    };
    assert_eq!(outcome["outcome"], "replicated", "{outcome:#}");
    assert_eq!(outcome["bytes"], m2.ciphertext.size);
    assert_replicated(&second, &m2.ciphertext.sha256, m2.ciphertext.size).await;
    // ... and a CloudEvent for the first backup: already there.
    let ce = load_sample("gcs-finalize-cloudevent.json");
    let reply = invoke(retarget_cloudevent(&ce, &bucket, &first.manifest_key())).await;
    assert_eq!(
        reply,
        Completion::Response(
            json!({"outcome": "already_replicated", "backup_id": first.to_string()})
        )
    );

    // (c) Another bucket: a 400 HTTP response for the Function URL form
    // (acknowledged), a failed invocation for the direct form.
    let reply = invoke(function_url_for(
        "someone-elses-bucket",
        &first.manifest_key(),
        Some(&oidc.valid_token()),
    ))
    .await;
    let Completion::Response(response) = &reply else {
        panic!("expected a response, got {reply:?}")
    };
    assert_eq!(response["statusCode"], 400, "{response:#}");
    let body: Value = serde_json::from_str(response["body"].as_str().unwrap()).unwrap();
    assert_eq!(body["error"], "unknown_bucket", "{body:#}");
    let reply = invoke(retarget_push(
        &push,
        "someone-elses-bucket",
        &first.manifest_key(),
    ))
    .await;
    assert!(
        matches!(&reply, Completion::Error { body, .. } if body.to_string().contains("unknown_bucket")),
        "{reply:?}"
    );

    // (d) No token: 401, and the process carries on.
    let reply = invoke(function_url_for(&bucket, &first.manifest_key(), None)).await;
    let Completion::Response(response) = &reply else {
        panic!("expected a response, got {reply:?}")
    };
    assert_eq!(response["statusCode"], 401, "{response:#}");

    assert!(api.init_errors().is_empty(), "{:?}", api.init_errors());
    assert!(
        child.try_wait().unwrap().is_none(),
        "the function keeps polling; logs:\n{}",
        logs_text()
    );
    child.kill().await.unwrap();
    let logs = logs_text();
    assert!(logs.contains("backup replicated"), "{logs}");
}

#[tokio::test]
async fn a_copy_killed_midway_resumes_on_the_next_delivery() {
    use backstop_core::store::PartUploads;
    let keys = TestKeys::generate();
    let oidc = Oidc::start().await;
    let namespace = unique_namespace("killed");
    let mut env = replicator_env(&keys, &namespace, &oidc.jwks);
    env.push(("BACKSTOP_REPLICATE_DEADLINE".into(), "8s".into()));
    let dir = tempfile::tempdir().unwrap();
    let id = backup_id(&namespace, Utc::now());
    let manifest = write_backup(&gcs().await, &id, &keys, 240 << 20).await;
    let event = retarget_cloudevent(
        &load_sample("gcs-finalize-cloudevent.json"),
        &gcs_bucket(),
        &id.manifest_key(),
    );
    let path = dir.path().join("event.json");
    std::fs::write(&path, serde_json::to_vec_pretty(&event).unwrap()).unwrap();

    // The first delivery is killed (SIGKILL) once a few parts are in.
    let started = std::time::Instant::now();
    let mut child = command(&env)
        .arg("--event")
        .arg(&path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let replica = s3().await;
    let parts_before = loop {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no parts appeared"
        );
        let uploads = replica.open_uploads(&id.data_key()).await.unwrap();
        if let Some(u) = uploads.last() {
            let parts = replica
                .uploaded_parts(&id.data_key(), &u.upload_id)
                .await
                .unwrap();
            if parts.len() >= 3 {
                break parts.len();
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    child.kill().await.unwrap();
    assert!(
        replica.head(&id.data_key()).await.is_err(),
        "killed before the end"
    );

    // Its lease ends at its deadline; after that, deliveries resume.
    tokio::time::sleep(Duration::from_secs(9).saturating_sub(started.elapsed())).await;
    let mut resumed_from = None;
    for _ in 0..40 {
        let run = run_event(&env, &path).await;
        if resumed_from.is_none() {
            resumed_from = run
                .stderr
                .lines()
                .find(|l| l.contains("resuming the copy"))
                .map(str::to_string);
        }
        if run.status() == 200 {
            assert_eq!(run.result()["outcome"], "replicated", "{run:#?}");
            break;
        }
        assert_eq!(run.status(), 503, "{run:#?}");
    }
    let resumed = resumed_from.expect("the next delivery resumed the killed one's upload");
    let parts: usize = serde_json::from_str::<Value>(&resumed).unwrap()["parts"]
        .as_u64()
        .unwrap() as usize;
    assert!(
        parts >= parts_before,
        "resumed at {parts} parts, {parts_before} were in"
    );
    assert_replicated(&id, &manifest.ciphertext.sha256, manifest.ciphertext.size).await;
}
