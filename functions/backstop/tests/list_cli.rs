//! `backstop list` and `backstop show` as processes against the local
//! stack: dumps in two namespaces, one replicated to S3 (by the replicator)
//! and one not, one drilled by `backstop restore` and one with a failed
//! drill record; each fact of `list --json` checked field by field against
//! the signed manifests, the restore's report and the policy, then the
//! table, the filters and `show`.
//!
//!   tests/stack/stack.sh run -- cargo test -p backstop-cli --test list_cli

use std::process::{Command, Output};
use std::sync::Arc;

use backstop_core::alerts::LogAlerts;
use backstop_core::config::Env;
use backstop_core::drill::{DrillRecord, new_run_id};
use backstop_core::manifest::{MAX_MANIFEST_BYTES, Manifest};
use backstop_core::naming::BackupId;
use backstop_core::replicate::Replicator;
use backstop_core::store::{ObjectStoreExt, PutOptions};
use backstop_tests::{gcs, s3, stack_env};
use serde_json::Value;

mod common;
use common::{database_url, psql, var};

fn backstop(args: &[&str], env: &[(String, String)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_backstop"))
        .args(args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .output()
        .expect("run backstop")
}

fn json_ok(args: &[&str], env: &[(String, String)]) -> Value {
    let out = backstop(args, env);
    assert!(
        out.status.success(),
        "backstop {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "backstop {args:?} printed no JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

/// Keys, two source databases and two namespaces of this test.
struct World {
    _keys: tempfile::TempDir,
    env: Vec<(String, String)>,
    tag: String,
    ns_a: String,
    ns_b: String,
    src_a: String,
    src_b: String,
    drill_db: String,
}

impl World {
    fn new() -> Self {
        let tag = format!("{:08x}", rand::random::<u32>());
        let keys = tempfile::tempdir().unwrap();
        let out = backstop(&["keygen", "--out", keys.path().to_str().unwrap()], &[]);
        assert!(out.status.success(), "keygen: {out:?}");
        let key = |f: &str| format!("file:{}", keys.path().join(f).display());
        let (ns_a, ns_b) = (format!("list-a-{tag}"), format!("list-b-{tag}"));
        // `a` keeps its newest backup and is replicated; the rest keep two.
        let policy = format!(
            r#"{{"rules": [{{"match": "{ns_a}", "keep_last": 1, "replicated": true}}, {{"match": "*", "keep_last": 2}}]}}"#
        );
        let env = vec![
            ("BACKSTOP_RECIPIENTS".into(), key("backup.pub.asc")),
            ("BACKSTOP_SIGNING_KEY".into(), key("signing.sec.asc")),
            ("BACKSTOP_SIGNING_PUBLIC_KEY".into(), key("signing.pub.asc")),
            ("BACKSTOP_BACKUP_KEY".into(), key("backup.sec.asc")),
            ("BACKSTOP_PG_BINDIR".into(), var("PG_BINDIR")),
            ("BACKSTOP_RETENTION_POLICY".into(), policy),
        ];
        let (src_a, src_b) = (format!("list_a_{tag}"), format!("list_b_{tag}"));
        for db in [&src_a, &src_b] {
            psql("postgres", &format!("CREATE DATABASE {db}"));
        }
        psql(
            &src_a,
            "CREATE TABLE people (id int PRIMARY KEY); INSERT INTO people SELECT generate_series(1, 2500); \
             CREATE TABLE pets (id int); INSERT INTO pets SELECT generate_series(1, 7)",
        );
        psql(
            &src_b,
            "CREATE TABLE orders (id int); INSERT INTO orders SELECT generate_series(1, 40)",
        );
        World {
            _keys: keys,
            env,
            drill_db: format!("list_drill_{tag}"),
            tag,
            ns_a,
            ns_b,
            src_a,
            src_b,
        }
    }

    /// `backstop dump`; returns the backup id.
    fn dump(&self, source: &str, namespace: &str) -> BackupId {
        let url = database_url(source);
        let dumped = json_ok(
            &["dump", "--database-url", &url, "--namespace", namespace],
            &self.env,
        );
        dumped["backup_id"].as_str().unwrap().parse().unwrap()
    }

    fn list(&self, extra: &[&str]) -> Output {
        let pattern = format!("list-*-{}", self.tag);
        let mut args = vec!["list", "--namespace", &pattern];
        args.extend_from_slice(extra);
        backstop(&args, &self.env)
    }
}

impl Drop for World {
    fn drop(&mut self) {
        for db in [&self.src_a, &self.src_b, &self.drill_db] {
            psql(
                "postgres",
                &format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"),
            );
        }
    }
}

/// Copies one backup to S3 as the replicator function does.
async fn replicate(world: &World, id: &BackupId) {
    let env = Env::from_pairs(world.env.clone());
    let keys = backstop_core::trust::TrustedKeys::from_env(&env)
        .await
        .unwrap();
    let replicator = Replicator {
        source: Arc::new(gcs().await),
        target: Arc::new(s3().await),
        source_bucket: stack_env().required("BACKSTOP_GCS_BUCKET", "").unwrap(),
        signing_keys: keys.signing,
        recipients: keys.recipients,
        namespaces: vec![world.ns_a.clone()],
        alerts: Arc::new(LogAlerts),
    };
    replicator.replicate(id).await.expect("replicate");
}

/// A failed drill record, written where and as `backstop restore` writes one.
async fn failed_drill(id: &BackupId) -> DrillRecord {
    let now = chrono::Utc::now();
    let record = DrillRecord {
        backup_id: id.to_string(),
        run_id: new_run_id(now),
        namespace: id.namespace.clone(),
        target_database: "list_failed_drill".into(),
        started_at: now,
        finished_at: now,
        success: false,
        tables_checked: 1,
        mismatches: Vec::new(),
        error: Some("pg_restore exited with status 1".into()),
        restored_from: Some("gcs".into()),
    };
    let opts = PutOptions::create().with_content_type("application/json");
    gcs()
        .await
        .put_bytes(&record.key().unwrap(), record.to_bytes().into(), opts)
        .await
        .unwrap();
    record
}

async fn manifest(id: &BackupId) -> Manifest {
    let bytes = gcs()
        .await
        .get_bytes(&id.manifest_key(), MAX_MANIFEST_BYTES)
        .await
        .unwrap();
    Manifest::parse(&bytes).unwrap()
}

/// What every row's size, tables and rows must be: the signed manifest's.
async fn assert_manifest_facts(row: &Value, id: &BackupId) {
    let m = manifest(id).await;
    assert_eq!(row["size"], m.ciphertext.size, "{row}");
    assert_eq!(row["plaintext_size"], m.plaintext_size, "{row}");
    assert_eq!(row["tables"], m.tables.len(), "{row}");
    assert_eq!(row["rows"], m.tables.values().sum::<u64>(), "{row}");
    assert_eq!(
        row["finished_at"],
        serde_json::json!(m.finished_at),
        "{row}"
    );
    assert_eq!(row["digests"]["sha256"], m.ciphertext.sha256, "{row}");
    assert_eq!(row["digests"]["chunks"], m.ciphertext.chunks.len(), "{row}");
    assert_eq!(row["verified"], true, "{row}");
    assert_eq!(row["status"], "verified", "{row}");
    assert_eq!(row["in_gcs"], true, "{row}");
}

/// `backstop restore` of `id` into the drill database: the drill record.
fn drill_by_restore(world: &World, id: &BackupId) -> Value {
    let id = id.to_string();
    let server = database_url("postgres");
    let restored = json_ok(
        &[
            "restore",
            "--backup",
            &id,
            "--server-url",
            &server,
            "--target-db",
            &world.drill_db,
            "--no-progress",
        ],
        &world.env,
    );
    assert_eq!(restored["drill"]["success"], true, "{restored}");
    restored
}

/// a2: replicated, drilled by restore, kept as the newest.
async fn assert_a2(world: &World, r: &Value, a2: &BackupId, restored: &Value) {
    assert_eq!(
        (&r["namespace"], &r["database"]),
        (&world.ns_a.clone().into(), &world.src_a.clone().into())
    );
    assert_eq!(r["kind"], "dump");
    assert_manifest_facts(r, a2).await;
    assert_eq!((&r["tables"], &r["rows"]), (&2.into(), &2507.into()));
    assert_eq!(
        (&r["in_s3"], &r["parity"]),
        (&true.into(), &"in_sync".into())
    );
    let drill = &r["last_drill"];
    assert_eq!(drill["result"], "passed");
    assert_eq!(drill["finished_at"], restored["drill"]["finished_at"]);
    assert_eq!(drill["target_database"], world.drill_db.as_str());
    assert_eq!(drill["record"], restored["drill_record"]);
    assert_eq!(r["retention"]["action"], "keep");
    assert_eq!(r["retention"]["rule"], world.ns_a.as_str());
    assert_eq!(
        r["retention"]["reasons"],
        serde_json::json!(["newest verified", "last #1"])
    );
    let copies: Vec<&str> = r["copies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["cloud"].as_str().unwrap())
        .collect();
    assert_eq!(copies, ["gcs", "s3"]);
}

/// a1: not copied yet (within the replica grace), not kept by keep_last 1;
/// b1: its namespace is not replicated, its drill failed.
async fn assert_a1_b1(
    world: &World,
    rows: &[Value],
    (a1, b1): (&BackupId, &BackupId),
    failed: &DrillRecord,
) {
    let r = &rows[1];
    assert_manifest_facts(r, a1).await;
    assert_eq!(
        (&r["in_s3"], &r["parity"]),
        (&false.into(), &"pending".into())
    );
    assert_eq!(r["last_drill"], Value::Null);
    assert_eq!(r["retention"]["action"], "delete");
    assert_eq!(r["retention"]["reasons"], serde_json::json!(["expired"]));
    let r = &rows[2];
    assert_eq!(
        (&r["namespace"], &r["database"]),
        (&world.ns_b.clone().into(), &world.src_b.clone().into())
    );
    assert_manifest_facts(r, b1).await;
    assert_eq!((&r["tables"], &r["rows"]), (&1.into(), &40.into()));
    assert_eq!(
        (&r["in_s3"], &r["parity"]),
        (&false.into(), &"not_replicated".into())
    );
    let drill = &r["last_drill"];
    assert_eq!(drill["result"], "failed");
    assert_eq!(drill["run_id"], failed.run_id.as_str());
    assert_eq!(drill["error"], "pg_restore exited with status 1");
    assert_eq!(r["retention"]["action"], "keep");
    assert_eq!(r["retention"]["rule"], "*");
}

#[tokio::test]
async fn list_shows_each_fact_of_each_backup() {
    let world = World::new();
    let a1 = world.dump(&world.src_a, &world.ns_a);
    // A later second, so that a2 is the newer by its id's time alone.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let a2 = world.dump(&world.src_a, &world.ns_a);
    let b1 = world.dump(&world.src_b, &world.ns_b);
    replicate(&world, &a2).await;
    let restored = drill_by_restore(&world, &a2);
    let a2_id = a2.to_string();
    let failed = failed_drill(&b1).await;

    let out = world.list(&["--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listing: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(listing["schema"], "backstop.list/v1");
    let clouds: Vec<(&str, bool)> = listing["clouds"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["cloud"].as_str().unwrap(), c["listed"].as_bool().unwrap()))
        .collect();
    assert_eq!(clouds, [("gcs", true), ("s3", true)]);
    let rows = listing["backups"].as_array().unwrap();
    let ids: Vec<&str> = rows.iter().map(|r| r["id"].as_str().unwrap()).collect();
    let (a1_id, b1_id) = (a1.to_string(), b1.to_string());
    assert_eq!(ids, [&a2_id, &a1_id, &b1_id], "by namespace, newest first");

    assert_a2(&world, &rows[0], &a2, &restored).await;
    assert_a1_b1(&world, rows, (&a1, &b1), &failed).await;

    table_and_filters(&world, [&a2, &a1, &b1]);

    let shown = json_ok(&["show", &a2_id, "--json"], &world.env);
    assert_eq!(shown["schema"], "backstop.show/v1");
    assert_eq!(shown["backup"], rows[0]);
    let tables: std::collections::BTreeMap<String, u64> =
        serde_json::from_value(shown["tables"].clone()).unwrap();
    assert_eq!(tables, manifest(&a2).await.tables);
    assert_eq!(shown["drills"].as_array().unwrap().len(), 1);
}

/// The table's header and rows, then each filter, on the same backups.
fn table_and_filters(world: &World, [a2, a1, b1]: [&BackupId; 3]) {
    let out = world.list(&[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let table = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = table.lines().collect();
    let header: Vec<&str> = lines[0]
        .split("  ")
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .collect();
    assert_eq!(
        header,
        [
            "NAMESPACE",
            "DATABASE",
            "BACKUP",
            "TAKEN (UTC)",
            "SIZE",
            "TABLES/ROWS",
            "VERIFIED",
            "GCS",
            "S3",
            "LAST DRILL",
            "RETENTION"
        ]
    );
    assert_eq!(lines.len(), 4, "{table}");
    let cells = |line: &str, want: &[&str]| {
        for cell in want {
            assert!(line.contains(cell), "{cell:?} not in {line:?}");
        }
    };
    cells(
        lines[1],
        &[
            &world.ns_a,
            &world.src_a,
            &a2.stamp(),
            "2/2507",
            "passed",
            "keep (newest verified, last #1)",
        ],
    );
    cells(
        lines[2],
        &[&a1.stamp(), "pending", "never", "delete (expired)"],
    );
    cells(
        lines[3],
        &[
            &world.ns_b,
            &b1.stamp(),
            "1/40",
            "no (not replicated)",
            "FAILED",
        ],
    );
    assert_filters(world, [a2, b1]);
}

/// `--limit`, `--since`, `--namespace`, and a `--since` that does not parse.
fn assert_filters(world: &World, [a2, b1]: [&BackupId; 2]) {
    let ids = |extra: &[&str]| -> Vec<String> {
        let mut args = vec!["--json"];
        args.extend_from_slice(extra);
        let out = world.list(&args);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        v["backups"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["id"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(ids(&["--limit", "1"]), [a2.to_string(), b1.to_string()]);
    let since = a2.taken_at.to_rfc3339();
    assert_eq!(ids(&["--since", &since]), [a2.to_string(), b1.to_string()]);
    let only_b = backstop(&["list", "--json", "--namespace", &world.ns_b], &world.env);
    let v: Value = serde_json::from_slice(&only_b.stdout).unwrap();
    let only: Vec<&str> = v["backups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    assert_eq!(only, [b1.to_string()]);

    let bad = world.list(&["--since", "last tuesday"]);
    assert!(!bad.status.success());
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(err.contains("--since") && err.contains("7d"), "{err}");
}

/// A port nothing listens on.
fn closed_endpoint() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    format!("http://127.0.0.1:{}", l.local_addr().unwrap().port())
}

#[test]
fn failures_exit_with_their_kind() {
    let out = Command::new(env!("CARGO_BIN_EXE_backstop"))
        .args(["list", "--json"])
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(5), "a configuration error");
    let err: Value = serde_json::from_slice(&out.stderr).unwrap();
    assert_eq!(err["error"], "config");
    assert!(
        err["message"]
            .as_str()
            .unwrap()
            .contains("BACKSTOP_GCS_BUCKET"),
        "{err}"
    );
    assert!(out.stdout.is_empty());

    // S3 down: GCS is still listed, S3's columns are unknown.
    let world = World::new();
    let b1 = world.dump(&world.src_b, &world.ns_b);
    let down = closed_endpoint();
    let mut env = world.env.clone();
    env.push(("BACKSTOP_CONNECT_TIMEOUT".into(), "2s".into()));
    env.push(("AWS_ENDPOINT_URL_S3".into(), down.clone()));
    let listed = json_ok(&["list", "--json", "--namespace", &world.ns_b], &env);
    assert_eq!(listed["clouds"][1]["listed"], false, "{listed}");
    assert!(listed["clouds"][1]["error"].as_str().is_some(), "{listed}");
    let row = &listed["backups"][0];
    assert_eq!(row["id"], b1.to_string());
    assert_eq!(
        (&row["in_gcs"], &row["in_s3"]),
        (&true.into(), &Value::Null)
    );

    // Both down: nothing to list, and the status says unreachable.
    env.push(("STORAGE_EMULATOR_HOST".into(), down));
    let out = backstop(&["list", "--json"], &env);
    assert_eq!(
        out.status.code(),
        Some(6),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let err: Value = serde_json::from_slice(&out.stderr).unwrap();
    assert_eq!(err["error"], "unreachable");
    assert!(
        err["message"]
            .as_str()
            .unwrap()
            .contains("no bucket could be listed"),
        "{err}"
    );
}
