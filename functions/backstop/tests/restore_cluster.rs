//! `backstop restore-cluster` on the local stack: a real cluster archives
//! with `backstop wal-push %p`, `backstop basebackup` takes its base backup,
//! rows are written one per transaction with their commit times recorded,
//! and point-in-time restores (`backstop wal-fetch` as restore_command)
//! must hold exactly the rows committed before each target.
//!
//!   tests/stack/stack.sh run -- cargo test -p backstop-cli --test restore_cluster

mod common;

use backstop_core::naming::BackupId;
use backstop_core::store::ObjectStore;
use backstop_core::wal::{WalFile, WalKey};
use backstop_tests::gcs;
use common::{
    Cluster, World, backstop, base_backup, between, free_port, ids, restore, switch_and_archive,
    write_row,
};

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
