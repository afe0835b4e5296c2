//! Under the Lambda runtime the replicator prints its metric record on
//! stdout (Lambda ships stdout to CloudWatch Logs, where EMF is extracted):
//! the real binary, served by the local stand-in of the Runtime API, on the
//! local stack. The lines pass the EMF schema check.
//!
//!   tests/stack/stack.sh run -- cargo test -p replicator --test emf_lambda

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use backstop_tests::backups::{TestKeys, backup_id, unique_namespace, write_backup};
use backstop_tests::lambda_api::{Completion, LambdaApi};
use backstop_tests::{gcs, stack_env};
use chrono::Utc;
use serde_json::{Value, json};

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("functions/replicator is two levels below the repository root")
        .to_path_buf()
}

#[tokio::test]
async fn under_lambda_the_metric_record_is_a_line_of_stdout() {
    let keys = TestKeys::generate();
    let namespace = unique_namespace("emf-lambda");
    let id = backup_id(&namespace, Utc::now());
    let manifest = write_backup(&gcs().await, &id, &keys, 200 << 10).await;
    let bucket = stack_env().required("BACKSTOP_GCS_BUCKET", "").unwrap();

    let api = LambdaApi::start().await;
    let stdout = tempfile::NamedTempFile::new().unwrap();
    let stderr = tempfile::NamedTempFile::new().unwrap();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_replicator"))
        .env_remove("BACKSTOP_ALERT_TOPIC")
        .envs(keys.env_pairs())
        .envs(api.env("replicator"))
        .env("BACKSTOP_REPLICATE_NAMESPACES", &namespace)
        .env("BACKSTOP_OIDC_AUDIENCE", "https://replicator.invalid/")
        .env("BACKSTOP_OIDC_SERVICE_ACCOUNT", "push@backstop.invalid")
        .env("BACKSTOP_LOG_FORMAT", "json")
        .stdin(Stdio::null())
        .stdout(stdout.reopen().unwrap())
        .stderr(stderr.reopen().unwrap())
        .kill_on_drop(true)
        .spawn()
        .expect("replicator starts");
    let logs = || std::fs::read_to_string(stderr.path()).unwrap_or_default();
    let name = id.manifest_key();
    let event = json!({
        "specversion": "1.0",
        "id": "1",
        "source": format!("//storage.googleapis.com/projects/_/buckets/{bucket}"),
        "type": "google.cloud.storage.object.v1.finalized",
        "subject": format!("objects/{name}"),
        "data": {"kind": "storage#object", "bucket": bucket, "name": name, "generation": "1"},
    });
    let reply = api
        .invoke(event, Duration::from_secs(120))
        .await
        .unwrap_or_else(|e| panic!("{e}\nlogs:\n{}", logs()));
    let Completion::Response(outcome) = &reply else {
        panic!("expected a response, got {reply:?}\nlogs:\n{}", logs())
    };
    assert_eq!(outcome["outcome"], "replicated", "{outcome:#}");
    child.kill().await.unwrap();

    // Everything on stdout is EMF: the logs stay on stderr.
    let printed = std::fs::read_to_string(stdout.path()).unwrap();
    let lines: Vec<Value> = printed
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?}")))
        .collect();
    assert_eq!(lines.len(), 1, "stdout: {printed:?}\nlogs:\n{}", logs());
    let line = &lines[0];
    assert_eq!(line["Function"], "replicator");
    assert_eq!(line["Namespace"], namespace);
    assert_eq!(line["BackupsReplicated"], json!(1.0));
    assert_eq!(
        line["ReplicatedBytes"],
        json!(manifest.ciphertext.size as f64)
    );
    assert!(
        !logs().contains("\"_aws\""),
        "the record is not also on stderr"
    );

    let out = std::process::Command::new(repo_root().join("shared/functions/tests/emf/check"))
        .arg(stdout.path())
        .output()
        .expect("the EMF check runs");
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{report}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        report.contains("1 EMF line(s) checked, 0 problem(s)"),
        "{report}"
    );
}
