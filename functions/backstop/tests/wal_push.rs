//! `backstop wal-push` as PostgreSQL's `archive_command`, on the local
//! stack: real clusters (initdb, `archive_mode = on`) archive into
//! fake-gcs-server through the production GCS client; what lands is read
//! back and checked with the library's verification and decryption.
//!
//!   tests/stack/stack.sh run -- cargo test -p backstop-cli --test wal_push

mod common;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use backstop_core::manifest::MAX_MANIFEST_BYTES;
use backstop_core::store::{ObjectStore, ObjectStoreExt};
use backstop_core::wal::WalKey;
use backstop_tests::{drain_sha256, gcs};
use common::{Cluster, World, is_root, run_ok, var};

#[tokio::test(flavor = "multi_thread")]
async fn a_busy_cluster_archives_every_segment_encrypted_signed_and_in_order() {
    let world = World::new("busy");
    // GCS's finalize notifications reach the replicator through a Pub/Sub
    // push subscription, as in production; it copies every file to S3.
    let subscription = ReplicatorFront::start(&world).await;
    let cluster = Cluster::start(&world, &world.env());
    let pgbench = PathBuf::from(var("PG_BINDIR")).join("pgbench");
    run_ok(
        Command::new(&pgbench)
            .args(["-i", "-q", "-s", "3", "-h", "127.0.0.1", "-U", "postgres"])
            .args(["-p", &cluster.port.to_string(), "postgres"]),
        "pgbench -i",
    );
    let last = cluster.fill_and_switch();
    cluster.wait_archived(&last, Duration::from_secs(120));
    assert_eq!(
        cluster.psql("SELECT failed_count FROM pg_stat_archiver"),
        "0",
        "{}",
        cluster.log_text()
    );

    let archived = world.archived().await;
    let segments: Vec<&str> = archived
        .iter()
        .filter(|(k, _)| k.file.is_segment())
        .map(|(k, _)| k.file.name())
        .collect();
    assert!(
        segments.len() >= 3,
        "pgbench -i -s 3 writes several segments: {segments:?}"
    );
    assert!(segments.contains(&last.as_str()), "{last} in {segments:?}");
    // No segment missing between the first and the last archived one.
    let numbers: Vec<u64> = archived
        .iter()
        .filter(|(k, _)| k.file.is_segment())
        .map(|(k, _)| k.file.segment_number(16 << 20).unwrap())
        .collect();
    assert_eq!(
        numbers.last().unwrap() - numbers[0] + 1,
        numbers.len() as u64,
        "{segments:?}"
    );
    let sysid = cluster.system_identifier();
    for (key, m) in &archived {
        assert_eq!(key.system_identifier, sysid);
        assert_eq!(m.signer, world.keys.signing.fingerprint);
        assert!(
            m.ciphertext.size < m.plaintext_size,
            "{key}: WAL compresses"
        );
    }
    // Every archived file reached S3 through the push, byte for byte.
    let (source, target) = (gcs().await, backstop_tests::s3().await);
    for (key, m) in &archived {
        let manifest = wait_for(&target, &key.manifest_key()).await;
        assert_eq!(
            manifest,
            source
                .get_bytes(&key.manifest_key(), MAX_MANIFEST_BYTES)
                .await
                .unwrap()
        );
        let (size, sha) = drain_sha256(target.read(&m.data_key(key)).await.unwrap())
            .await
            .unwrap();
        assert_eq!(
            (size, sha.as_str()),
            (m.ciphertext.size, m.ciphertext.sha256.as_str()),
            "{key} in S3"
        );
    }
    subscription.stop().await;
    // The look-ahead pushed some files before PostgreSQL asked for them.
    let log = cluster.log_text();
    eprintln!(
        "{} files archived; {} calls answered from a look-ahead marker",
        archived.len(),
        log.matches("\"outcome\":\"pushed_ahead\"").count()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_repush_is_harmless_and_a_different_file_of_the_same_name_is_refused() {
    let world = World::new("repush");
    let pgdata = fake_pgdata(&world, 4242);
    let name = "000000010000000000000007";
    std::fs::write(pgdata.join("pg_wal").join(name), pseudo_random(1 << 20, 1)).unwrap();

    let (out, report) = wal_push(&world, &pgdata, name);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(report["outcome"], "stored", "{report}");
    let store = gcs().await;
    let key = WalKey::new(
        world.namespace(),
        4242,
        backstop_core::wal::WalFile::parse(name).unwrap(),
    );
    let committed = store
        .get_bytes(&key.manifest_key(), MAX_MANIFEST_BYTES)
        .await
        .unwrap();

    let (out, report) = wal_push(&world, &pgdata, name);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(report["outcome"], "already_archived", "{report}");

    std::fs::write(pgdata.join("pg_wal").join(name), pseudo_random(1 << 20, 2)).unwrap();
    let out = wal_push_raw(&world, &pgdata, name);
    assert!(
        !out.status.success(),
        "a different file under an archived name must fail"
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("refusing to archive") && err.contains("Nothing was overwritten"),
        "{err}"
    );
    assert_eq!(
        store
            .get_bytes(&key.manifest_key(), MAX_MANIFEST_BYTES)
            .await
            .unwrap(),
        committed
    );
    let archived = world.archived().await;
    assert_eq!(archived.len(), 1);
    assert_eq!(
        archived[0].1.plaintext_sha256,
        hex::encode(<sha2::Sha256 as sha2::Digest>::digest(pseudo_random(
            1 << 20,
            1
        )))
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_push_killed_midway_leaves_nothing_visible_and_the_retry_succeeds() {
    let world = World::new("killed");
    let pgdata = fake_pgdata(&world, 4343);
    let name = "000000010000000000000009";
    let fifo = pgdata.join("pg_wal").join(name);
    run_ok(Command::new("mkfifo").arg(&fifo), "mkfifo");
    // The push reads the file through a pipe that delivers 4 MiB and then
    // stalls: the upload is under way when the process is killed.
    let mut child = wal_push_command(&world, &pgdata, name)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut writer = std::fs::OpenOptions::new().write(true).open(&fifo).unwrap();
    std::io::Write::write_all(&mut writer, &pseudo_random(4 << 20, 3)).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    child.kill().unwrap();
    child.wait().unwrap();
    drop(writer);
    assert_eq!(
        world.objects().await,
        Vec::<String>::new(),
        "nothing of a killed push is visible"
    );

    std::fs::remove_file(&fifo).unwrap();
    std::fs::write(&fifo, pseudo_random(4 << 20, 3)).unwrap();
    let (out, report) = wal_push(&world, &pgdata, name);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(report["outcome"], "stored");
    assert_eq!(world.archived().await.len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn with_gcs_unreachable_postgres_keeps_the_wal_and_archives_it_once_gcs_is_back() {
    let world = World::new("down");
    let Some(proxy) = Proxy::bind() else {
        eprintln!("SKIPPED: no free 127.0.0.x:80 address for the proxy (needs root)");
        return;
    };
    let mut env = world.env();
    env.push((
        "STORAGE_EMULATOR_HOST".into(),
        format!("http://{}:80", proxy.addr),
    ));
    env.push(("BACKSTOP_CONNECT_TIMEOUT".into(), "1s".into()));
    let cluster = Cluster::start(&world, &env);
    let mut closed = Vec::new();
    for _ in 0..4 {
        closed.push(cluster.fill_and_switch());
    }
    let t0 = Instant::now();
    while cluster.psql("SELECT failed_count FROM pg_stat_archiver") == "0" {
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "the archiver never failed"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    for seg in &closed {
        assert!(
            !cluster.archived_through(seg),
            "{seg} archived while GCS was unreachable"
        );
        assert!(
            cluster.pgdata.join("pg_wal").join(seg).exists(),
            "PostgreSQL keeps {seg}"
        );
    }
    assert!(world.objects().await.is_empty());
    let log = cluster.log_text();
    assert!(
        log.contains("could not store") || log.contains("error"),
        "{log}"
    );

    let _running = proxy.start();
    // A new segment wakes the archiver instead of its 60 s retry timer.
    closed.push(cluster.fill_and_switch());
    cluster.wait_archived(closed.last().unwrap(), Duration::from_secs(120));
    let archived = world.archived().await;
    for seg in &closed {
        assert!(
            archived.iter().any(|(k, _)| k.file.name() == seg),
            "{seg} archived after GCS came back"
        );
    }
    let log = cluster.log_text();
    // The first call after the outage pushed the waiting files alongside
    // its own, and PostgreSQL's next calls found them done.
    assert!(
        log.contains("\"outcome\":\"pushed_ahead\""),
        "the backlog is pushed ahead: {log}"
    );
    assert!(
        log.contains("wal_backlog"),
        "the backlog of {} files is logged: {log}",
        closed.len()
    );
}

// ---- helpers -----------------------------------------------------------------

/// The replicator served locally behind a push subscription of the stack's
/// notification topic.
struct ReplicatorFront {
    subscription: String,
}

impl ReplicatorFront {
    async fn start(world: &World) -> Self {
        let replicator = backstop_tests::wal::replicator(
            &world.keys,
            &world.namespace,
            std::sync::Arc::new(backstop_core::alerts::LogAlerts),
        )
        .await;
        let function = std::sync::Arc::new(backstop_functions::replicator::ReplicatorFunction {
            replicator,
            oidc: backstop_cloud::oidc::OidcVerifier::new(&backstop_cloud::oidc::OidcConfig {
                audience: "unused-for-direct-invocations".into(),
                service_account: "push@example.invalid".into(),
                jwks_url: None,
            }),
            deadline_window: None,
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("http://{}/", listener.local_addr().unwrap());
        tokio::spawn(backstop_functions::lambda::serve_local(function, listener));
        let subscription = format!("push-{}", world.namespace);
        backstop_tests::pubsub::create_push_subscription(
            "gcs-notifications",
            &subscription,
            &endpoint,
        )
        .await;
        ReplicatorFront { subscription }
    }

    async fn stop(self) {
        backstop_tests::pubsub::delete_subscription(&self.subscription).await;
    }
}

async fn wait_for(store: &dyn ObjectStore, key: &str) -> bytes::Bytes {
    let t0 = Instant::now();
    loop {
        if let Ok(b) = store.get_bytes(key, MAX_MANIFEST_BYTES).await {
            return b;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(90),
            "{key} did not reach {} within 90 s",
            store.url()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// A data directory with just what `wal-push` reads: `global/pg_control`
/// (the system identifier first) and `pg_wal/archive_status`.
fn fake_pgdata(world: &World, system_identifier: u64) -> PathBuf {
    let pgdata = world.dir.join("fake");
    std::fs::create_dir_all(pgdata.join("global")).unwrap();
    std::fs::create_dir_all(pgdata.join("pg_wal/archive_status")).unwrap();
    let mut control = system_identifier.to_ne_bytes().to_vec();
    control.resize(8192, 0);
    std::fs::write(pgdata.join("global/pg_control"), control).unwrap();
    pgdata
}

fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

fn wal_push_command(world: &World, pgdata: &Path, name: &str) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_backstop"));
    c.args(["wal-push", &format!("pg_wal/{name}")])
        .current_dir(pgdata)
        .envs(world.env());
    c
}

fn wal_push_raw(world: &World, pgdata: &Path, name: &str) -> Output {
    wal_push_command(world, pgdata, name).output().unwrap()
}

fn wal_push(world: &World, pgdata: &Path, name: &str) -> (Output, serde_json::Value) {
    let out = wal_push_raw(world, pgdata, name);
    let report = serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
    (out, report)
}

/// A TCP relay to the stack's GCS on a loopback address of its own, port
/// 80 (the GCS client needs port 80, see tests/stack/stack.sh): closed
/// until started, so GCS is unreachable for whoever is pointed at it.
struct Proxy {
    addr: String,
}

impl Proxy {
    fn bind() -> Option<Self> {
        if !is_root() {
            return None;
        }
        (200..250)
            .map(|x| format!("127.0.0.{x}"))
            .find(|a| TcpListener::bind((a.as_str(), 80)).is_ok())
            .map(|addr| Proxy { addr })
    }

    fn start(&self) -> std::thread::JoinHandle<()> {
        let upstream = var("STORAGE_EMULATOR_HOST")
            .trim_start_matches("http://")
            .to_string();
        let listener = TcpListener::bind((self.addr.as_str(), 80)).unwrap();
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let Ok(server) = std::net::TcpStream::connect(&upstream) else {
                    continue;
                };
                let (mut c2, mut s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                let (mut c, mut s) = (client, server);
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut c, &mut s);
                    let _ = s.shutdown(std::net::Shutdown::Write);
                });
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut s2, &mut c2);
                    let _ = c2.shutdown(std::net::Shutdown::Write);
                });
            }
        })
    }
}
