//! The functions' metrics as printed: `backstop invoke replicator|retention`
//! on the local stack prints CloudWatch Embedded Metric Format lines (on
//! stderr: stdout holds the result), which hold the numbers of the result
//! itself and pass the EMF schema check (`shared/functions/tests/emf/check`:
//! JSON Schema of the specification's structure plus the references).
//!
//!   tests/stack/stack.sh run -- cargo test -p backstop-cli --test emf

use std::path::{Path, PathBuf};
use std::process::Command;

use backstop_core::drill::DrillRecord;
use backstop_core::naming::BackupId;
use backstop_tests::backups::{
    TestKeys, backup_id, drill_record, put_drill, unique_namespace, write_backup,
};
use backstop_tests::{gcs, stack_env};
use chrono::{DateTime, Duration, Utc};
use serde_json::{Value, json};

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("functions/backstop is two levels below the repository root")
        .to_path_buf()
}

#[derive(Debug)]
struct Invocation {
    /// `{"status": N, "result": ...}` from stdout.
    output: Value,
    /// The EMF documents among the stderr lines.
    emf: Vec<Value>,
    stderr: String,
}

/// `backstop invoke FUNCTION --event FILE` with the stack's variables and `env`.
fn invoke(function: &str, event: &Value, env: &[(String, String)]) -> Invocation {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("event.json");
    std::fs::write(&path, event.to_string()).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_backstop"))
        .args(["invoke", function, "--event"])
        .arg(&path)
        // Alerts are logged, not published.
        .env_remove("BACKSTOP_ALERT_TOPIC")
        .envs(env.iter().map(|(k, v)| (k, v)))
        .env("BACKSTOP_LOG_FORMAT", "json")
        .env("RUST_LOG", "info")
        .output()
        .expect("backstop runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let output: Value = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
        panic!("stdout is not one JSON result ({e}): {stdout:?}\nstderr:\n{stderr}")
    });
    assert!(out.status.success(), "{output:#}\n{stderr}");
    let emf = stderr
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v.get("_aws").is_some())
        .collect();
    Invocation {
        output,
        emf,
        stderr,
    }
}

/// A CloudEvent for the finalize of `id`'s manifest.
fn finalize(id: &BackupId) -> Value {
    let bucket = stack_env().required("BACKSTOP_GCS_BUCKET", "").unwrap();
    let name = id.manifest_key();
    json!({
        "specversion": "1.0",
        "id": format!("{:016x}", rand::random::<u64>()),
        "source": format!("//storage.googleapis.com/projects/_/buckets/{bucket}"),
        "type": "google.cloud.storage.object.v1.finalized",
        "subject": format!("objects/{name}"),
        "data": {"kind": "storage#object", "bucket": bucket, "name": name,
                 "generation": "1", "id": format!("{bucket}/{name}/1")},
    })
}

/// Runs the EMF check over `lines`; (passed, what it printed).
fn check(lines: &[Value]) -> (bool, String) {
    let file = tempfile::NamedTempFile::new().unwrap();
    let text: Vec<String> = lines.iter().map(Value::to_string).collect();
    std::fs::write(file.path(), text.join("\n") + "\n").unwrap();
    let out = Command::new(repo_root().join("shared/functions/tests/emf/check"))
        .arg(file.path())
        .output()
        .expect("the EMF check runs");
    assert!(
        matches!(out.status.code(), Some(0 | 1)),
        "the EMF check could not run: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed = String::from_utf8_lossy(&out.stdout).into_owned();
    (out.status.success(), printed)
}

/// The EMF documents of `emf` whose members equal `fields`.
fn matching<'a>(emf: &'a [Value], fields: &[(&str, &str)]) -> Vec<&'a Value> {
    emf.iter()
        .filter(|v| fields.iter().all(|(k, want)| v[*k] == *want))
        .collect()
}

fn replicator_env(keys: &TestKeys, namespace: &str) -> Vec<(String, String)> {
    let mut env = keys.env_pairs();
    for (k, v) in [
        ("BACKSTOP_REPLICATE_NAMESPACES", namespace),
        // Required by the function; direct invocations carry no token.
        ("BACKSTOP_OIDC_AUDIENCE", "https://replicator.invalid/"),
        ("BACKSTOP_OIDC_SERVICE_ACCOUNT", "push@backstop.invalid"),
    ] {
        env.push((k.into(), v.into()));
    }
    env
}

/// Replicates a good backup, a redelivery and a backup signed by a key the
/// replicator does not trust; returns the EMF lines printed.
async fn replicate(keys: &TestKeys, namespace: &str, good: &BackupId) -> Vec<Value> {
    let source = gcs().await;
    let manifest = write_backup(&source, good, keys, 300 << 10).await;
    let forged = backup_id(namespace, Utc::now() - Duration::hours(1));
    write_backup(&source, &forged, &TestKeys::generate(), 100 << 10).await;
    let env = replicator_env(keys, namespace);

    let copied = invoke("replicator", &finalize(good), &env);
    assert_eq!(
        copied.output["result"]["outcome"], "replicated",
        "{copied:#?}"
    );
    assert_eq!(
        copied.emf.len(),
        1,
        "one record per copy: {}",
        copied.stderr
    );
    let line = &copied.emf[0];
    assert_eq!(line["Function"], "replicator");
    assert_eq!(line["Namespace"], namespace);
    assert_eq!(line["BackupId"], good.to_string());
    assert_eq!(line["BackupsReplicated"], json!(1.0));
    assert_eq!(
        line["ReplicatedBytes"],
        json!(manifest.ciphertext.size as f64)
    );
    assert_eq!(
        line["ReplicatedBytes"],
        copied.output["result"]["bytes"].as_f64().unwrap()
    );
    assert_eq!(
        line["ReplicationSeconds"],
        copied.output["result"]["seconds"]
    );
    assert_eq!(line["Rejections"], json!(0.0));

    let again = invoke("replicator", &finalize(good), &env);
    assert_eq!(again.output["result"]["outcome"], "already_replicated");
    assert!(
        again.emf.is_empty(),
        "a redelivery is no copy: {:?}",
        again.emf
    );

    let rejected = invoke("replicator", &finalize(&forged), &env);
    assert_eq!(
        rejected.output["result"]["outcome"], "rejected",
        "{rejected:#?}"
    );
    assert_eq!(rejected.emf.len(), 1, "{}", rejected.stderr);
    let line = &rejected.emf[0];
    assert_eq!(line["Rejections"], json!(1.0));
    assert_eq!(line["Namespace"], namespace);
    assert!(line.get("BackupsReplicated").is_none(), "{line}");
    [copied.emf, rejected.emf].concat()
}

/// A successful drill of `id` that finished 5 minutes ago, in GCS.
async fn record_drill(id: &BackupId) -> DrillRecord {
    let record = DrillRecord {
        started_at: Utc::now() - Duration::minutes(10),
        ..drill_record(id, Utc::now() - Duration::minutes(5), None, "gcs")
    };
    put_drill(&gcs().await, &record).await;
    record
}

/// A dry run of retention whose listings were complete (other tests may
/// delete objects while it lists: such a run is retried).
fn retention(keys: &TestKeys) -> Invocation {
    let dry_run = json!({"dry_run": true});
    let mut last = None;
    for _ in 0..5 {
        let run = invoke("retention", &dry_run, &keys.env_pairs());
        let findings = run.output["result"]["report"]["findings"]
            .as_array()
            .unwrap();
        if !findings.iter().any(|f| f["code"] == "listing_failed") {
            return run;
        }
        last = Some(run);
    }
    panic!("every listing failed: {:#?}", last.unwrap().output)
}

fn check_retention_lines(run: &Invocation, namespace: &str, drill: &DrillRecord) {
    let report = &run.output["result"]["report"];
    let generated: DateTime<Utc> = serde_json::from_value(report["generated_at"].clone()).unwrap();
    for line in &run.emf {
        assert_eq!(line["Function"], "retention");
        assert_eq!(line["_aws"]["Timestamp"], generated.timestamp_millis());
    }
    let totals = matching(&run.emf, &[]);
    let totals: Vec<_> = totals
        .iter()
        .filter(|v| v.get("CriticalFindings").is_some())
        .collect();
    assert_eq!(totals.len(), 1, "{:#?}", run.emf);
    assert_eq!(
        totals[0]["CriticalFindings"],
        report["critical"].as_f64().unwrap()
    );
    assert_eq!(
        totals[0]["WarningFindings"],
        report["warning"].as_f64().unwrap()
    );
    assert_eq!(totals[0]["ObjectsDeleted"], json!(0.0), "a dry run");

    // One Findings count per code, equal to the report's.
    let findings = report["findings"].as_array().unwrap();
    let mut codes: Vec<&str> = findings
        .iter()
        .map(|f| f["code"].as_str().unwrap())
        .collect();
    codes.sort();
    codes.dedup();
    assert!(!codes.is_empty(), "the forged backup is a finding");
    for code in &codes {
        let lines = matching(&run.emf, &[("Code", code)]);
        assert_eq!(lines.len(), 1, "{code}: {lines:?}");
        let count = findings.iter().filter(|f| f["code"] == *code).count();
        assert_eq!(lines[0]["Findings"], json!(count as f64), "{code}");
    }
    let code_lines = run.emf.iter().filter(|v| v.get("Code").is_some()).count();
    assert_eq!(code_lines, codes.len());

    // The newest verified backup's age per cloud, as the report says.
    for cloud in ["gcs", "s3"] {
        let series = report["series"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["namespace"] == namespace && s["cloud"] == cloud && s["database"] == "app")
            .unwrap_or_else(|| panic!("no {cloud} series of {namespace}: {report:#}"));
        let lines = matching(
            &run.emf,
            &[
                ("Namespace", namespace),
                ("Database", "app"),
                ("Cloud", cloud),
            ],
        );
        assert_eq!(lines.len(), 1, "{cloud}: {lines:?}");
        let age = series["newest_verified_age_seconds"].as_f64().unwrap();
        assert_eq!(lines[0]["NewestBackupAgeSeconds"], json!(age), "{cloud}");
        assert_eq!(lines[0]["BackupId"], series["newest_verified"]);
    }

    let drills: Vec<_> = matching(&run.emf, &[("Namespace", namespace)])
        .into_iter()
        .filter(|v| v.get("NewestDrillAgeSeconds").is_some())
        .collect();
    assert_eq!(drills.len(), 1, "{drills:?}");
    let age = (generated - drill.finished_at).num_seconds() as f64;
    assert_eq!(drills[0]["NewestDrillAgeSeconds"], json!(age));
    assert!(age >= 300.0, "{age}");
}

#[tokio::test]
async fn the_functions_print_emf_lines_that_hold_their_results_and_pass_the_schema() {
    let keys = TestKeys::generate();
    let namespace = unique_namespace("emf");
    let good = backup_id(&namespace, Utc::now());
    let mut lines = replicate(&keys, &namespace, &good).await;
    let drill = record_drill(&good).await;

    let run = retention(&keys);
    check_retention_lines(&run, &namespace, &drill);
    lines.extend(run.emf.iter().cloned());

    let (passed, printed) = check(&lines);
    assert!(passed, "the EMF check failed:\n{printed}");
    assert!(
        printed.contains(&format!(
            "{} EMF line(s) checked, 0 problem(s)",
            lines.len()
        )),
        "{printed}"
    );

    // The check is not vacuous: a line without a member it references fails.
    let mut broken = lines[0].clone();
    broken.as_object_mut().unwrap().remove("Namespace");
    let (passed, printed) = check(&[broken]);
    assert!(!passed, "{printed}");
    assert!(
        printed.contains("dimension 'Namespace' is not a member of the root"),
        "{printed}"
    );
}
