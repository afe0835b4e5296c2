//! `backstop status` and the exit codes on the local stack: each test gets
//! buckets of its own in fake-gcs-server and moto (the audit reads whole
//! buckets, so other tests' backups would be findings too), writes real
//! encrypted and signed backups with chosen times (tests/src/backups.rs),
//! and runs the binary as cron or a monitoring system would.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Mutex;

use backstop_cloud::gcs::GcsStore;
use backstop_cloud::s3::S3Store;
use backstop_core::naming::BackupId;
use backstop_core::store::{ObjectStoreExt, PutOptions};
use backstop_tests::backups::{
    TestKeys, backup_id, drill_record, put_drill, unique_namespace, write_backup,
};
use backstop_tests::stack_env;
use chrono::{Duration, Utc};
use serde_json::Value;

/// A namespace in buckets of its own, with its keys and policy.
struct World {
    keys: TestKeys,
    ns: String,
    gcs_bucket: String,
    s3_bucket: String,
    gcs: GcsStore,
    s3: S3Store,
    policy: Value,
}

fn curl(args: &[&str]) {
    let out = Command::new("curl")
        .args(["-sf", "-o", "/dev/null"])
        .args(args)
        .output()
        .expect("curl");
    assert!(out.status.success(), "curl {args:?}: {out:?}");
}

impl World {
    /// Fresh buckets, and a protected, replicated namespace whose backups
    /// are stale after 26 h and whose drills after 400 days.
    async fn new(tag: &str) -> Self {
        let env = stack_env();
        let ns = unique_namespace(tag);
        let bucket = format!("status-{ns}");
        let gcs_host = env.optional("STORAGE_EMULATOR_HOST").expect("GCS emulator");
        curl(&[
            "-X",
            "POST",
            "-H",
            "Content-Type: application/json",
            "--data",
            &format!("{{\"name\":\"{bucket}\"}}"),
            &format!("{gcs_host}/storage/v1/b"),
        ]);
        let s3_endpoint = env.optional("AWS_ENDPOINT_URL_S3").expect("moto");
        curl(&[
            "--aws-sigv4",
            "aws:amz:us-east-1:s3",
            "--user",
            "test:test",
            "-X",
            "PUT",
            &format!("{s3_endpoint}/{bucket}"),
        ]);
        let gcs = GcsStore::builder()
            .env(&env)
            .bucket(&bucket)
            .build()
            .await
            .unwrap();
        let s3 = S3Store::builder()
            .env(&env)
            .bucket(&bucket)
            .build()
            .await
            .unwrap();
        let policy = serde_json::json!({"version": 1, "rules": [
            {"match": ns, "protected": true, "replicated": true, "keep_daily": 30,
             "stale_after": "26h", "drill_max_age": "400d"}
        ]});
        World {
            keys: TestKeys::generate(),
            ns,
            gcs_bucket: bucket.clone(),
            s3_bucket: bucket,
            gcs,
            s3,
            policy,
        }
    }

    /// A backup taken `age` ago, in GCS, and copied byte for byte to S3
    /// (what the replicator does) when `replicated`.
    async fn backup(&self, age: Duration, replicated: bool) -> BackupId {
        let id = backup_id(&self.ns, Utc::now() - age);
        write_backup(&self.gcs, &id, &self.keys, 1000).await;
        if replicated {
            for key in [id.data_key(), id.signature_key(), id.manifest_key()] {
                let bytes = self.gcs.get_bytes(&key, 1 << 20).await.unwrap();
                self.s3
                    .put_bytes(&key, bytes, PutOptions::create())
                    .await
                    .unwrap();
            }
        }
        id
    }

    /// A drill record of `id`, finished `age` ago, as `restore` writes it.
    async fn drill(&self, id: &BackupId, age: Duration, success: bool) {
        let finished = Utc::now() - age;
        let error = "1 table had a row count different from the manifest";
        let record = drill_record(id, finished, (!success).then_some(error), "gcs");
        put_drill(&self.gcs, &record).await;
    }

    /// `backstop ARGS` with this world's settings (over the stack's).
    fn backstop(&self, args: &[&str], extra: &[(&str, &str)]) -> Output {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_backstop"));
        cmd.args(args)
            .env("BACKSTOP_GCS_BUCKET", &self.gcs_bucket)
            .env("BACKSTOP_S3_BUCKET", &self.s3_bucket)
            .env("BACKSTOP_RETENTION_POLICY", self.policy.to_string())
            .env("NO_COLOR", "1")
            .env_remove("BACKSTOP_ALERT_TOPIC")
            .env_remove("BACKSTOP_GCS_BUCKET_CONFIG");
        for (k, v) in self.keys.env_pairs() {
            cmd.env(k, v);
        }
        for (k, v) in extra {
            cmd.env(k, v);
        }
        cmd.output().expect("backstop runs")
    }

    /// `backstop status --format json`: the status and the document.
    fn status_json(&self, extra: &[(&str, &str)]) -> (i32, Value) {
        let out = self.backstop(&["status", "--format", "json"], extra);
        let doc: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "status JSON ({e}): {}",
                String::from_utf8_lossy(&out.stdout)
            )
        });
        (out.status.code().expect("exit status"), doc)
    }
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The codes the status document counts.
fn codes(doc: &Value) -> Vec<(String, String, u64)> {
    doc["by_code"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["code"].as_str().unwrap().to_string(),
                c["severity"].as_str().unwrap().to_string(),
                c["count"].as_u64().unwrap(),
            )
        })
        .collect()
}

/// A virtualenv with the reference OpenMetrics parser, made once per build
/// directory.
fn openmetrics_python() -> PathBuf {
    static SETUP: Mutex<()> = Mutex::new(());
    let _one = SETUP.lock().unwrap();
    let venv = Path::new(env!("CARGO_TARGET_TMPDIR")).join("openmetrics-venv");
    let python = venv.join("bin/python");
    let ready = venv.join("ready");
    if !ready.exists() {
        let ok = |c: &mut Command| assert!(c.status().unwrap().success(), "{c:?}");
        ok(Command::new("python3").args(["-m", "venv"]).arg(&venv));
        ok(Command::new(&python).args(["-m", "pip", "install", "-q", "prometheus-client"]));
        std::fs::write(&ready, b"").unwrap();
    }
    python
}

/// One parsed sample: name, labels (a JSON object), value.
type Sample = (String, Value, f64);

/// Parses `text` with `prometheus_client.openmetrics.parser` (which
/// refuses anything that is not OpenMetrics, e.g. a missing `# EOF`) and
/// returns each sample as (name, labels, value), and each family's type.
fn parse_openmetrics(text: &str) -> (Vec<Sample>, Vec<(String, String)>) {
    let script = r#"
import json, sys
from prometheus_client.openmetrics.parser import text_string_to_metric_families
samples, types = [], []
for family in text_string_to_metric_families(sys.stdin.read()):
    types.append([family.name, family.type])
    for s in family.samples:
        samples.append([s.name, s.labels, s.value])
print(json.dumps({"samples": samples, "types": types}))
"#;
    let mut child = Command::new(openmetrics_python())
        .args(["-c", script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "not OpenMetrics: {}\n{text}",
        stderr(&out)
    );
    let parsed: Value = serde_json::from_slice(&out.stdout).unwrap();
    let samples = parsed["samples"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s[0].as_str().unwrap().to_string(),
                s[1].clone(),
                s[2].as_f64().unwrap(),
            )
        })
        .collect();
    let types = parsed["types"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| (t[0].as_str().unwrap().into(), t[1].as_str().unwrap().into()))
        .collect();
    (samples, types)
}

fn sample(samples: &[Sample], name: &str, labels: Value) -> Option<f64> {
    samples
        .iter()
        .find(|(n, l, _)| n == name && *l == labels)
        .map(|s| s.2)
}

/// The `name=value` perfdata of a Nagios line, value without its unit.
fn perfdata(line: &str, name: &str) -> String {
    let (_, perf) = line.split_once(" | ").expect("perfdata");
    perf.split(' ')
        .find_map(|item| item.strip_prefix(&format!("{name}=")))
        .unwrap_or_else(|| panic!("{name} not in {perf}"))
        .split(';')
        .next()
        .unwrap()
        .trim_end_matches('s')
        .to_string()
}

#[tokio::test]
async fn a_healthy_namespace_exits_0_in_every_format() {
    let w = World::new("healthy").await;
    let id = w.backup(Duration::hours(2), true).await;
    w.drill(&id, Duration::hours(1), true).await;

    let out = w.backstop(&["status"], &[]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    assert!(
        stdout(&out).starts_with("backstop status: OK (exit 0)\n"),
        "{}",
        stdout(&out)
    );
    assert_eq!(stderr(&out), "", "a healthy status says nothing on stderr");

    let (code, doc) = w.status_json(&[]);
    assert_eq!(code, 0, "{doc:#}");
    assert_eq!(doc["schema"], "backstop.status/v1");
    assert_eq!(
        (doc["status"].as_str(), doc["exit_code"].as_u64()),
        (Some("ok"), Some(0))
    );
    assert_eq!(doc["condition"], "healthy");
    assert_eq!(doc["findings"]["critical"], 0);
    assert_eq!(doc["findings"]["warning"], 0, "{doc:#}");
    assert_eq!(doc["newest_backup"]["backup_id"], id.to_string());
    let backup_age = doc["newest_backup"]["age_seconds"].as_i64().unwrap();
    assert!((7200..3 * 3600).contains(&backup_age), "{backup_age}");
    assert_eq!(doc["newest_drill"]["backup_id"], id.to_string());
    let drill_age = doc["newest_drill"]["age_seconds"].as_i64().unwrap();
    assert!((3600..7200).contains(&drill_age), "{drill_age}");
    assert_eq!(doc["unreachable"], serde_json::json!([]));

    let out = w.backstop(&["status", "--format", "nagios"], &[]);
    assert_eq!(out.status.code(), Some(0));
    let line = stdout(&out);
    assert_eq!(line.lines().count(), 1, "{line}");
    assert!(
        line.starts_with("BACKSTOP OK - status ok: 0 critical, 0 warning"),
        "{line}"
    );
    assert_eq!(perfdata(&line, "critical"), "0");
    let nagios_age: i64 = perfdata(&line, "newest_backup_age_s").parse().unwrap();
    assert!(
        (backup_age..backup_age + 600).contains(&nagios_age),
        "{line}"
    );
    let nagios_drill: i64 = perfdata(&line, "newest_drill_age_s").parse().unwrap();
    assert!((3600..7200).contains(&nagios_drill), "{line}");

    let out = w.backstop(&["status", "--format", "openmetrics"], &[]);
    assert_eq!(out.status.code(), Some(0));
    let text = stdout(&out);
    assert!(text.ends_with("# EOF\n"), "{text}");
    let (samples, types) = parse_openmetrics(&text);
    assert!(types.iter().all(|(_, t)| t == "gauge"), "{types:?}");
    let none = serde_json::json!({});
    assert_eq!(
        sample(&samples, "backstop_status_exit_code", none.clone()),
        Some(0.0)
    );
    let age = sample(&samples, "backstop_newest_backup_age_seconds", none.clone()).unwrap();
    assert!((7200.0..3.0 * 3600.0).contains(&age), "{age}");
    assert!(sample(&samples, "backstop_newest_drill_age_seconds", none).is_some());
    let series = serde_json::json!({"cloud": "s3", "namespace": w.ns, "database": "app"});
    assert!(
        sample(
            &samples,
            "backstop_series_newest_backup_age_seconds",
            series
        )
        .is_some()
    );
    let critical = serde_json::json!({"severity": "critical"});
    assert_eq!(sample(&samples, "backstop_findings", critical), Some(0.0));
    for cloud in ["gcs", "s3"] {
        let labels = serde_json::json!({ "cloud": cloud });
        assert_eq!(
            sample(&samples, "backstop_cloud_reachable", labels),
            Some(1.0)
        );
    }
}

#[tokio::test]
async fn a_stale_namespace_is_critical() {
    let w = World::new("stale").await;
    let id = w.backup(Duration::days(3), true).await;
    w.drill(&id, Duration::days(2), true).await;

    let (code, doc) = w.status_json(&[]);
    assert_eq!(code, 4, "{doc:#}");
    assert_eq!(
        (doc["status"].as_str(), doc["condition"].as_str()),
        (Some("critical"), Some("critical"))
    );
    assert_eq!(
        codes(&doc),
        [("stale_backup".to_string(), "critical".to_string(), 2)],
        "stale in both clouds and nothing else"
    );
    assert_eq!(doc["worst_namespace"]["namespace"], w.ns);
    assert_eq!(
        doc["worst_namespace"]["codes"],
        serde_json::json!(["stale_backup"])
    );

    // --json: the verdict on stderr as a JSON failure too.
    let out = w.backstop(&["status", "--json"], &[]);
    assert_eq!(out.status.code(), Some(4));
    let err: Value = serde_json::from_str(stderr(&out).trim()).unwrap();
    assert_eq!(
        (err["error"].as_str(), err["exit_code"].as_u64()),
        (Some("critical"), Some(4))
    );
    let message = err["message"].as_str().unwrap();
    assert!(
        message.contains(&format!("worst namespace {} (stale_backup)", w.ns)),
        "{message}"
    );
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["status"], "critical", "--json is --format json");

    // Text: the report on stdout, one line on stderr.
    let out = w.backstop(&["status"], &[]);
    assert_eq!(out.status.code(), Some(4));
    assert!(stdout(&out).contains("stale_backup"), "{}", stdout(&out));
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with("error: status critical: 2 critical"),
        "{err}"
    );

    // Nagios: CRITICAL is 2, and nothing on stderr.
    let out = w.backstop(&["status", "--format", "nagios"], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stdout(&out).starts_with("BACKSTOP CRITICAL - "),
        "{}",
        stdout(&out)
    );
    assert_eq!(stderr(&out), "");
    let age: i64 = perfdata(&stdout(&out), "newest_backup_age_s")
        .parse()
        .unwrap();
    assert!(age >= 3 * 86400, "{age}");
}

#[tokio::test]
async fn a_missing_replica_is_critical() {
    let w = World::new("replica").await;
    let older = w.backup(Duration::hours(10), true).await;
    w.drill(&older, Duration::hours(9), true).await;
    // Past the 6 h replica grace, and only in GCS.
    let lonely = w.backup(Duration::hours(8), false).await;

    let (code, doc) = w.status_json(&[]);
    assert_eq!(code, 4, "{doc:#}");
    // (Two backups of one day: the older is also `kept_past_policy`, a
    // warning, while its replica is missing.)
    let critical: Vec<_> = codes(&doc)
        .into_iter()
        .filter(|(_, severity, _)| severity == "critical")
        .collect();
    assert_eq!(
        critical,
        [("missing_replica".to_string(), "critical".to_string(), 1)]
    );
    let finding = doc["audit"]["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["code"] == "missing_replica")
        .unwrap();
    assert_eq!(finding["subject"], lonely.to_string());
    assert_eq!(finding["cloud"], "s3");
    assert_eq!(doc["newest_backup"]["backup_id"], lonely.to_string());
    assert_eq!(doc["newest_backup"]["cloud"], "gcs");
}

#[tokio::test]
async fn a_failed_drill_is_a_drill_mismatch() {
    let w = World::new("drillfail").await;
    let id = w.backup(Duration::hours(3), true).await;
    w.drill(&id, Duration::hours(2), true).await;
    w.drill(&id, Duration::hours(1), false).await;

    let (code, doc) = w.status_json(&[]);
    assert_eq!(code, 8, "{doc:#}");
    assert_eq!(
        (doc["status"].as_str(), doc["condition"].as_str()),
        (Some("drill_mismatch"), Some("drill_failed"))
    );
    assert_eq!(
        codes(&doc),
        [("restore_drill_failed".to_string(), "warning".to_string(), 1)]
    );
    let drill_age = doc["newest_drill"]["age_seconds"].as_i64().unwrap();
    assert!(
        drill_age >= 7200,
        "the newest successful drill, not the failed one: {drill_age}"
    );

    // The audit rates a failed drill a warning: Nagios WARNING (1).
    let out = w.backstop(&["status", "--format", "nagios"], &[]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert!(
        stdout(&out).starts_with("BACKSTOP WARNING - "),
        "{}",
        stdout(&out)
    );
}

#[tokio::test]
async fn warnings_only_exit_3() {
    let mut w = World::new("warn").await;
    // Not protected: a namespace never drilled is a warning, not critical.
    w.policy = serde_json::json!({"version": 1, "rules": [
        {"match": w.ns, "protected": false, "replicated": true, "keep_daily": 30,
         "stale_after": "26h", "drill_max_age": "400d"}
    ]});
    w.backup(Duration::hours(2), true).await;

    let (code, doc) = w.status_json(&[]);
    assert_eq!(code, 3, "{doc:#}");
    assert_eq!(
        codes(&doc),
        [("no_restore_drill".to_string(), "warning".to_string(), 1)]
    );
    assert!(doc["newest_drill"].is_null(), "{doc:#}");
    let out = w.backstop(&["status", "--format", "nagios"], &[]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(perfdata(&stdout(&out), "newest_drill_age_s"), "U");
}

#[tokio::test]
async fn an_unreachable_cloud_exits_6() {
    let w = World::new("down").await;
    let id = w.backup(Duration::hours(2), true).await;
    w.drill(&id, Duration::hours(1), true).await;
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let endpoint = format!("http://127.0.0.1:{closed}");
    let down = [
        ("AWS_ENDPOINT_URL_S3", endpoint.as_str()),
        ("BACKSTOP_CONNECT_TIMEOUT", "2s"),
    ];

    let (code, doc) = w.status_json(&down);
    assert_eq!(code, 6, "{doc:#}");
    assert_eq!(doc["status"], "unreachable");
    assert_eq!(doc["unreachable"], serde_json::json!(["s3"]));
    assert!(
        codes(&doc)
            .iter()
            .any(|(c, s, _)| c == "listing_failed" && s == "critical"),
        "{doc:#}"
    );
    assert_eq!(
        doc["newest_backup"]["cloud"], "gcs",
        "GCS was still audited"
    );

    let out = w.backstop(&["status", "--format", "nagios"], &down);
    assert_eq!(
        out.status.code(),
        Some(2),
        "unreachable is CRITICAL for Nagios"
    );
    let out = w.backstop(&["status", "--format", "openmetrics"], &down);
    assert_eq!(out.status.code(), Some(6));
    let (samples, _) = parse_openmetrics(&stdout(&out));
    let s3 = serde_json::json!({"cloud": "s3"});
    assert_eq!(sample(&samples, "backstop_cloud_reachable", s3), Some(0.0));
    let gcs = serde_json::json!({"cloud": "gcs"});
    assert_eq!(sample(&samples, "backstop_cloud_reachable", gcs), Some(1.0));
    let none = serde_json::json!({});
    assert_eq!(
        sample(&samples, "backstop_status_exit_code", none),
        Some(6.0)
    );
}

#[tokio::test]
async fn a_missing_setting_is_a_configuration_error_as_json() {
    let w = World::new("config").await;
    let unset = [("BACKSTOP_SIGNING_PUBLIC_KEY", "")];

    let out = w.backstop(&["status", "--json"], &unset);
    assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));
    assert_eq!(stdout(&out), "");
    let err: Value = serde_json::from_str(stderr(&out).trim())
        .unwrap_or_else(|e| panic!("stderr is one JSON object ({e}): {}", stderr(&out)));
    assert_eq!(err["error"], "config");
    assert_eq!(err["exit_code"], 5);
    let message = err["message"].as_str().unwrap();
    assert!(
        message.contains("BACKSTOP_SIGNING_PUBLIC_KEY") && message.contains("is not set"),
        "{message}"
    );
    assert!(
        err["hint"].as_str().unwrap().starts_with("fix the setting"),
        "{err}"
    );
    assert_eq!(err.as_object().unwrap().len(), 4, "{err}");

    // Without --json: one human line.
    let out = w.backstop(&["ping"], &[("BACKSTOP_GCS_BUCKET", "")]);
    assert_eq!(out.status.code(), Some(5));
    let line = stderr(&out);
    assert!(
        line.starts_with("error: environment variable BACKSTOP_GCS_BUCKET is not set"),
        "{line}"
    );
    assert_eq!(line.lines().count(), 1, "{line}");

    // Nagios: UNKNOWN (3), the reason on the one line, nothing on stderr.
    let out = w.backstop(&["status", "--format", "nagios"], &unset);
    assert_eq!(out.status.code(), Some(3));
    assert!(
        stdout(&out).starts_with("BACKSTOP UNKNOWN - "),
        "{}",
        stdout(&out)
    );
    assert_eq!(stderr(&out), "");

    // A usage error stays clap's 2, as JSON too.
    let out = w.backstop(&["status", "--format", "xml", "--json"], &[]);
    assert_eq!(out.status.code(), Some(2));
    let err: Value = serde_json::from_str(stderr(&out).trim()).unwrap();
    assert_eq!(
        (err["error"].as_str(), err["exit_code"].as_u64()),
        (Some("usage"), Some(2))
    );
}

#[tokio::test]
async fn a_tampered_backup_fails_verify_with_the_integrity_code() {
    let w = World::new("tamper").await;
    let id = w.backup(Duration::hours(1), false).await;
    let dir = tempfile::tempdir().unwrap();
    let file = |key: &str| dir.path().join(key.rsplit('/').next().unwrap());
    for key in [id.data_key(), id.signature_key(), id.manifest_key()] {
        let bytes = w.gcs.get_bytes(&key, 1 << 20).await.unwrap();
        std::fs::write(file(&key), bytes).unwrap();
    }
    let (manifest, signature, data) = (
        file(&id.manifest_key()),
        file(&id.signature_key()),
        file(&id.data_key()),
    );
    let verify = |json: bool| {
        let mut args: Vec<String> = ["verify", "--manifest"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        args.push(manifest.display().to_string());
        args.push("--signature".into());
        args.push(signature.display().to_string());
        args.push("--data".into());
        args.push(data.display().to_string());
        args.push("--signing-key".into());
        args.push(w.keys.path("signing.pub.asc").display().to_string());
        args.push("--recipient".into());
        args.push(w.keys.path("backup.pub.asc").display().to_string());
        if json {
            args.push("--json".into());
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        w.backstop(&args, &[])
    };
    let out = verify(false);
    assert_eq!(out.status.code(), Some(0), "untouched: {}", stderr(&out));

    let mut bytes = std::fs::read(&data).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x01;
    std::fs::write(&data, bytes).unwrap();
    let out = verify(true);
    assert_eq!(out.status.code(), Some(7), "{}", stderr(&out));
    let err: Value = serde_json::from_str(stderr(&out).trim()).unwrap();
    assert_eq!(
        (err["error"].as_str(), err["exit_code"].as_u64()),
        (Some("integrity"), Some(7))
    );
    assert!(
        err["hint"]
            .as_str()
            .unwrap()
            .starts_with("do not use this backup"),
        "{err}"
    );
    let out = verify(false);
    assert_eq!(out.status.code(), Some(7));
    assert!(stderr(&out).starts_with("error: "), "{}", stderr(&out));
}
