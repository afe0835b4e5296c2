//! `backstop restore-cluster` on the local stack: a real cluster archives
//! with `backstop wal-push %p`, `backstop basebackup` takes its base backup,
//! rows are written one per transaction with their commit times recorded,
//! and point-in-time restores (`backstop wal-fetch` as restore_command)
//! must hold exactly the rows committed before each target.
//!
//!   tests/stack/stack.sh run -- cargo test -p backstop-cli --test restore_cluster

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use backstop_core::naming::BackupId;
use backstop_core::store::ObjectStore;
use backstop_core::wal::{WalFile, WalKey};
use backstop_tests::gcs;
use common::{Cluster, World, free_port, var};

const BACKSTOP: &str = env!("CARGO_BIN_EXE_backstop");

/// The keys `restore-cluster` (and the `wal-fetch` it configures) reads.
fn restore_env(world: &World) -> Vec<(String, String)> {
    let key = |f: &str| format!("file:{}", world.dir.join("keys").join(f).display());
    vec![
        ("BACKSTOP_BACKUP_KEY".into(), key("backup.sec.asc")),
        ("BACKSTOP_SIGNING_PUBLIC_KEY".into(), key("signing.pub.asc")),
    ]
}

fn backstop(world: &World, args: &[&str]) -> (Output, serde_json::Value) {
    let out = Command::new(BACKSTOP)
        .args(args)
        .envs(world.env())
        .envs(restore_env(world))
        .output()
        .unwrap();
    let json = serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
    (out, json)
}

fn ok(what: &str, (out, json): (Output, serde_json::Value)) -> serde_json::Value {
    assert!(
        out.status.success(),
        "{what} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    json
}

/// A base backup of `cluster` through the CLI; returns its id.
fn base_backup(world: &World, cluster: &Cluster) -> String {
    let url = format!("postgres://postgres@127.0.0.1:{}/postgres", cluster.port);
    let args = [
        "basebackup",
        "--database-url",
        &url,
        "--namespace",
        &world.namespace,
    ];
    let json = ok("basebackup", backstop(world, &args));
    json["backup_id"].as_str().unwrap().to_string()
}

/// One row per transaction; returns (id, commit time, xid) as the server
/// recorded them.
fn write_row(cluster: &Cluster, id: u32) -> (String, String) {
    let out = cluster.psql(&format!(
        "INSERT INTO t (id) VALUES ({id}) RETURNING at::text || '|' || txid_current()"
    ));
    std::thread::sleep(Duration::from_millis(400));
    let (at, xid) = out.split_once('|').unwrap();
    (at.to_string(), xid.to_string())
}

/// Closes the current segment and waits until it is archived.
fn switch_and_archive(cluster: &Cluster) {
    let seg = cluster.psql("SELECT pg_walfile_name(pg_current_wal_lsn())");
    cluster.psql("SELECT pg_switch_wal()");
    cluster.wait_archived(&seg, Duration::from_secs(120));
}

/// Restores with `target` into a new directory, started; returns the
/// restored server and the JSON result.
fn restore(world: &World, name: &str, target: &[&str]) -> (Cluster, serde_json::Value) {
    let pgdata = world.dir.join(name);
    let port = free_port();
    let mut args = vec!["restore-cluster", "--namespace", &world.namespace];
    let (dir, port_text) = (pgdata.display().to_string(), port.to_string());
    args.extend(target);
    args.extend(["--pgdata", &dir, "--start", "--port", &port_text]);
    let restored = restored_cluster(&pgdata, port);
    let json = ok(
        &format!("restore-cluster {target:?}"),
        backstop(world, &args),
    );
    (restored, json)
}

fn restored_cluster(pgdata: &Path, port: u16) -> Cluster {
    Cluster {
        pgdata: pgdata.to_path_buf(),
        log: pgdata.join("backstop-recovery.log"),
        port,
        bindir: PathBuf::from(var("PG_BINDIR")),
    }
}

fn ids(cluster: &Cluster) -> String {
    cluster.psql("SELECT string_agg(id::text, ',' ORDER BY id) FROM t")
}

/// The midpoint of two of the server's timestamps, as RFC 3339 (UTC).
fn between(cluster: &Cluster, a: &str, b: &str) -> String {
    cluster.psql(&format!(
        "SELECT to_char(('{a}'::timestamptz + ('{b}'::timestamptz - '{a}'::timestamptz) / 2) AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')"
    ))
}

#[tokio::test(flavor = "multi_thread")]
async fn restores_to_a_time_an_lsn_an_xid_and_the_latest_exactly() {
    let world = World::new("pitr");
    let cluster = Cluster::start(&world, &world.env());
    cluster.psql("CREATE TABLE t (id int PRIMARY KEY, at timestamptz DEFAULT clock_timestamp())");
    write_row(&cluster, 1);
    let backup = base_backup(&world, &cluster);
    let rows: Vec<(String, String)> = (2..=8).map(|i| write_row(&cluster, i)).collect();
    let (at5, at6) = (&rows[3].0, &rows[4].0);
    let xid4 = &rows[2].1;
    switch_and_archive(&cluster);

    let t = between(&cluster, at5, at6);
    let (r, json) = restore(&world, "to-time", &["--to-time", &t]);
    assert_eq!(ids(&r), "1,2,3,4,5", "restored to {t}: {json}");
    assert_eq!(json["backup_id"], backup.as_str());
    assert_eq!(json["success"], true, "{json}");
    let reached = json["target_reached"].as_str().unwrap_or_default();
    assert!(
        reached.starts_with("recovery stopping before commit"),
        "{json}"
    );
    assert!(
        json["wal_segments_fetched"].as_u64().unwrap() >= 1,
        "{json}"
    );
    assert_eq!(json["pg_verifybackup"], "passed");
    assert!(
        json["drill_record"].as_str().unwrap().contains("/_drills/"),
        "{json}"
    );
    eprintln!("timings of one restore: {}", json["timings"]);
    drop(r);

    // An LSN taken between the 6th and 7th commit.
    let lsn = {
        cluster.psql("INSERT INTO t (id) VALUES (9)");
        let l = cluster.psql("SELECT pg_current_wal_insert_lsn()");
        cluster.psql("INSERT INTO t (id) VALUES (10)");
        switch_and_archive(&cluster);
        l
    };
    let (r, json) = restore(&world, "to-lsn", &["--to-lsn", &lsn]);
    assert_eq!(ids(&r), "1,2,3,4,5,6,7,8,9", "restored to {lsn}: {json}");
    drop(r);

    let (r, json) = restore(&world, "to-xid", &["--to-xid", xid4]);
    assert_eq!(ids(&r), "1,2,3,4", "restored to xid {xid4}: {json}");
    drop(r);

    write_row(&cluster, 11);
    switch_and_archive(&cluster);
    let (r, json) = restore(&world, "latest", &["--latest"]);
    assert_eq!(ids(&r), "1,2,3,4,5,6,7,8,9,10,11", "{json}");
    assert_eq!(r.psql("SELECT pg_is_in_recovery()"), "f", "promoted");
    assert_eq!(
        r.psql("SHOW archive_mode"),
        "off",
        "a restored cluster does not archive"
    );
    let conf = std::fs::read_to_string(r.pgdata.join("postgresql.auto.conf")).unwrap();
    assert!(
        conf.contains(" wal-fetch --config ") && !conf.contains("BEGIN PGP"),
        "{conf}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wal_gap_before_the_target_is_named_and_nothing_is_restored() {
    let world = World::new("gap");
    let cluster = Cluster::start(&world, &world.env());
    cluster.psql("CREATE TABLE t (id int PRIMARY KEY, at timestamptz DEFAULT clock_timestamp())");
    let backup: BackupId = base_backup(&world, &cluster).parse().unwrap();
    for i in 1..=3 {
        write_row(&cluster, i);
        switch_and_archive(&cluster);
    }
    // Remove a segment after the backup's start from the archive.
    let seg = cluster.psql("SELECT pg_walfile_name(pg_current_wal_lsn() - 2 * 16 * 1024 * 1024)");
    let key = WalKey::new(
        world.namespace(),
        backup.system_identifier().unwrap(),
        WalFile::parse(&seg).unwrap(),
    );
    gcs().await.delete(&key.manifest_key()).await.unwrap();
    let _ = backstop_tests::s3().await.delete(&key.manifest_key()).await;

    let pgdata = world.dir.join("gap");
    let port = free_port().to_string();
    let dir = pgdata.display().to_string();
    let args = [
        "restore-cluster",
        "--namespace",
        &world.namespace,
        "--latest",
        "--pgdata",
        &dir,
        "--start",
        "--port",
        &port,
    ];
    let (out, json) = backstop(&world, &args);
    assert!(!out.status.success(), "{json}");
    assert_eq!(json["kind"], "wal_gap", "{json}");
    let error = json["error"].as_str().unwrap();
    assert!(
        error.contains(&seg) && error.contains("missing in"),
        "{error}"
    );
    assert!(!pgdata.exists(), "nothing was written, nothing started");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_non_empty_data_directory_is_refused() {
    let world = World::new("nonempty");
    let pgdata = world.dir.join("busy");
    std::fs::create_dir_all(&pgdata).unwrap();
    std::fs::write(pgdata.join("PG_VERSION"), "15\n").unwrap();
    let dir = pgdata.display().to_string();
    let (out, _) = backstop(
        &world,
        &[
            "restore-cluster",
            "--namespace",
            &world.namespace,
            "--latest",
            "--pgdata",
            &dir,
        ],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--pgdata") && err.contains("not empty"),
        "{err}"
    );
    assert_eq!(
        std::fs::read_to_string(pgdata.join("PG_VERSION")).unwrap(),
        "15\n"
    );
}
