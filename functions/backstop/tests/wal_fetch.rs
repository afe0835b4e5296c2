//! `backstop wal-fetch %f %p` as PostgreSQL's `restore_command`, on the
//! local stack: WAL archived by the real `backstop wal-push` into
//! fake-gcs-server, copied to moto's S3, and fetched back by the real
//! binary through the production clients.
//!
//!   tests/stack/stack.sh run -- cargo test -p backstop-cli --test wal_fetch

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use backstop_core::manifest::MAX_MANIFEST_BYTES;
use backstop_core::naming::Namespace;
use backstop_core::store::{ObjectStore, ObjectStoreExt, PutOptions};
use backstop_core::wal::{WalFile, WalKey, WalManifest, namespace_prefix};
use backstop_tests::backups::TestKeys;
use backstop_tests::wal::wal_bytes;
use backstop_tests::{gcs, s3, stack_env};
use bytes::Bytes;

const DEST: &str = "pg_wal/RECOVERYXLOG";
const MIB: usize = 1 << 20;

/// One test's keys, namespace, cluster (a fake data directory holding
/// `global/pg_control`, as `wal-push` and `wal-fetch` read it) and the
/// data directory recovery runs in.
struct World {
    keys: TestKeys,
    namespace: String,
    system_identifier: u64,
    dir: tempfile::TempDir,
}

impl World {
    fn new(tag: &str) -> Self {
        stack_env();
        let dir = tempfile::tempdir().unwrap();
        let system_identifier = 7_000_000_000_000_000_000 + u64::from(rand::random::<u32>());
        for data in ["primary", "restore"] {
            let pgdata = dir.path().join(data);
            std::fs::create_dir_all(pgdata.join("global")).unwrap();
            std::fs::create_dir_all(pgdata.join("pg_wal/archive_status")).unwrap();
            let mut control = system_identifier.to_ne_bytes().to_vec();
            control.resize(8192, 0);
            std::fs::write(pgdata.join("global/pg_control"), control).unwrap();
        }
        World {
            keys: TestKeys::generate(),
            namespace: format!("walf-{tag}-{:06x}", rand::random::<u32>() & 0xff_ffff),
            system_identifier,
            dir,
        }
    }

    fn primary(&self) -> PathBuf {
        self.dir.path().join("primary")
    }

    /// The data directory being recovered (`restore_command`'s working
    /// directory).
    fn restore(&self) -> PathBuf {
        self.dir.path().join("restore")
    }

    fn prefetch_dir(&self) -> PathBuf {
        self.restore().join("pg_wal/backstop_prefetch")
    }

    fn key(&self, name: &str) -> WalKey {
        WalKey::new(
            Namespace::new(&self.namespace).unwrap(),
            self.system_identifier,
            WalFile::parse(name).unwrap(),
        )
    }

    /// Archives `content` as `name` with the real `backstop wal-push`.
    fn push(&self, name: &str, content: &[u8]) {
        let path = self.primary().join("pg_wal").join(name);
        std::fs::write(&path, content).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_backstop"))
            .args(["wal-push", &format!("pg_wal/{name}")])
            .current_dir(self.primary())
            .env("BACKSTOP_NAMESPACE", &self.namespace)
            .env(
                "BACKSTOP_RECIPIENTS",
                format!("file:{}", self.keys.path("backup.pub.asc").display()),
            )
            .env(
                "BACKSTOP_SIGNING_KEY",
                format!("file:{}", self.keys.path("signing.sec.asc").display()),
            )
            .output()
            .unwrap();
        assert!(out.status.success(), "wal-push {name}: {}", text(&out));
    }

    /// The environment `wal-fetch` runs with (the stack's clouds too).
    fn env(&self, backup_key: &Path) -> Vec<(String, String)> {
        vec![
            ("BACKSTOP_NAMESPACE".into(), self.namespace.clone()),
            (
                "BACKSTOP_BACKUP_KEY".into(),
                format!("file:{}", backup_key.display()),
            ),
            (
                "BACKSTOP_SIGNING_PUBLIC_KEY".into(),
                format!("file:{}", self.keys.path("signing.pub.asc").display()),
            ),
            ("BACKSTOP_CONNECT_TIMEOUT".into(), "1s".into()),
            ("BACKSTOP_REQUEST_TIMEOUT".into(), "5s".into()),
        ]
    }

    /// Runs `backstop wal-fetch NAME pg_wal/RECOVERYXLOG` in the restore
    /// data directory, with `extra` variables on top of [`Self::env`].
    fn fetch_with(&self, name: &str, backup_key: &Path, extra: &[(&str, String)]) -> Fetch {
        let out = self.wal_fetch(&["wal-fetch", name, DEST], backup_key, extra);
        let report = serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
        Fetch {
            code: out.status.code(),
            text: text(&out),
            report,
            dest: std::fs::read(self.restore().join(DEST)).ok(),
        }
    }

    /// Runs the binary with `args` after removing DEST.
    fn wal_fetch(&self, args: &[&str], backup_key: &Path, extra: &[(&str, String)]) -> Output {
        let _ = std::fs::remove_file(self.restore().join(DEST));
        Command::new(env!("CARGO_BIN_EXE_backstop"))
            .args(args)
            .current_dir(self.restore())
            .envs(self.env(backup_key))
            .envs(extra.iter().map(|(k, v)| (k.to_string(), v.clone())))
            .output()
            .unwrap()
    }

    fn fetch(&self, name: &str, extra: &[(&str, String)]) -> Fetch {
        self.fetch_with(name, &self.keys.path("backup.sec.asc"), extra)
    }

    /// A `--config` file, as restore-cluster writes one (namespace, cluster
    /// and `prefetch`; the keys come from the environment).
    fn config_file(&self, prefetch: usize) -> PathBuf {
        let path = self.dir.path().join("wal-fetch.json");
        let settings = serde_json::json!({
            "namespace": self.namespace,
            "system_identifier": self.system_identifier,
            "prefetch": prefetch,
        });
        std::fs::write(&path, settings.to_string()).unwrap();
        path
    }

    /// `wal-fetch --config FILE NAME pg_wal/RECOVERYXLOG`, with a wrong
    /// namespace in the environment: the file's must win.
    fn fetch_configured(
        &self,
        config: &Path,
        name: &str,
        extra: &[(&str, String)],
    ) -> (Output, serde_json::Value) {
        let config = config.to_str().unwrap();
        let mut extra = extra.to_vec();
        extra.push(("BACKSTOP_NAMESPACE", "not-this-one".into()));
        let args = ["wal-fetch", "--config", config, name, DEST];
        let out = self.wal_fetch(&args, &self.keys.path("backup.sec.asc"), &extra);
        let report = serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
        (out, report)
    }

    /// Copies every archived object of the namespace to S3 under the same
    /// key, as the replicator does.
    async fn replicate(&self) {
        let (gcs, s3) = (gcs().await, s3().await);
        let prefix = namespace_prefix(&Namespace::new(&self.namespace).unwrap());
        for meta in gcs.list_all(&prefix).await.unwrap() {
            let body = gcs.read(&meta.key).await.unwrap();
            s3.put(&meta.key, body, PutOptions::default())
                .await
                .unwrap();
        }
    }

    /// The sealed manifest of `name` in `store`, opened.
    async fn manifest(&self, store: &dyn ObjectStore, name: &str) -> WalManifest {
        let key = self.key(name);
        let sealed = store
            .get_bytes(&key.manifest_key(), MAX_MANIFEST_BYTES)
            .await
            .unwrap();
        WalManifest::open(&sealed, &[self.keys.signer().verifying_key()], &key).unwrap()
    }

    /// Flips one byte in the middle of `name`'s data object in `store`
    /// (same size; a chunk digest no longer matches).
    async fn tamper(&self, store: &dyn ObjectStore, name: &str) {
        let data_key = self.manifest(store, name).await.data_key(&self.key(name));
        let mut bytes = store.get_bytes(&data_key, 64 * MIB).await.unwrap().to_vec();
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0x5a;
        store
            .put_bytes(&data_key, Bytes::from(bytes), PutOptions::default())
            .await
            .unwrap();
    }

    /// Files left in `pg_wal` besides the directories the test made.
    fn pg_wal_leftovers(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(self.restore().join("pg_wal"))
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|n| n != "archive_status" && n != "backstop_prefetch")
            .collect();
        names.sort();
        names
    }
}

/// What one `wal-fetch` call did.
struct Fetch {
    code: Option<i32>,
    text: String,
    report: serde_json::Value,
    dest: Option<Vec<u8>>,
}

fn text(out: &Output) -> String {
    format!(
        "status {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `STORAGE_EMULATOR_HOST` (or an S3 endpoint) nothing listens on.
fn closed_endpoint() -> String {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    format!("http://127.0.0.1:{port}")
}

fn segment(n: u32) -> String {
    format!("00000001000000000000{n:04X}")
}

#[tokio::test(flavor = "multi_thread")]
async fn a_fetched_segment_is_the_archived_file_and_a_missing_one_exits_1() {
    let world = World::new("basic");
    let original = wal_bytes(16 * MIB, 1);
    world.push(&segment(5), &original);

    let f = world.fetch(&segment(5), &[]);
    assert_eq!(f.code, Some(0), "{}", f.text);
    assert!(
        f.dest.as_deref() == Some(&original[..]),
        "DEST differs from the original"
    );
    assert_eq!(f.report["outcome"], "fetched", "{}", f.text);
    assert_eq!(f.report["cloud"], "gcs", "{}", f.text);
    // The next segment is not archived: the prefetch stopped there.
    assert_eq!(
        f.report["ahead"][0]["outcome"], "not archived",
        "{}",
        f.text
    );
    assert!(
        world.pg_wal_leftovers() == ["RECOVERYXLOG"],
        "{:?}",
        world.pg_wal_leftovers()
    );

    let missing = world.fetch(&segment(6), &[]);
    assert_eq!(missing.code, Some(1), "{}", missing.text);
    assert!(missing.dest.is_none(), "DEST written for a missing file");
    assert!(missing.text.contains(&segment(6)) && missing.text.contains("not in the archive"));
    let history = world.fetch("00000002.history", &[]);
    assert_eq!(history.code, Some(1), "{}", history.text);
}

#[tokio::test(flavor = "multi_thread")]
async fn with_gcs_unreachable_the_file_comes_from_s3() {
    let world = World::new("down");
    let original = wal_bytes(2 * MIB, 2);
    world.push(&segment(7), &original);
    world.replicate().await;
    let gcs_down = [("STORAGE_EMULATOR_HOST", closed_endpoint())];

    let f = world.fetch(&segment(7), &gcs_down);
    assert_eq!(f.code, Some(0), "{}", f.text);
    assert!(f.dest.as_deref() == Some(&original[..]));
    assert_eq!(f.report["cloud"], "s3", "{}", f.text);
    assert!(
        f.report["fallback_reason"]
            .as_str()
            .unwrap()
            .contains("gcs: unreachable")
    );

    // GCS unreachable and S3 answers not found: not archived.
    let missing = world.fetch(&segment(8), &gcs_down);
    assert_eq!(missing.code, Some(1), "{}", missing.text);

    // Both unreachable: recovery must stop, not end.
    let both = [
        ("STORAGE_EMULATOR_HOST", closed_endpoint()),
        ("AWS_ENDPOINT_URL_S3", closed_endpoint()),
    ];
    let down = world.fetch(&segment(7), &both);
    assert_eq!(down.code, Some(126), "{}", down.text);
    assert!(down.dest.is_none());
    assert!(
        down.text.contains("gcs: unreachable") && down.text.contains("s3: unreachable"),
        "{}",
        down.text
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tampered_copy_is_never_used_and_tampered_everywhere_stops_recovery() {
    let world = World::new("tamper");
    let original = wal_bytes(8 * MIB, 3);
    world.push(&segment(9), &original);
    world.replicate().await;
    let (gcs, s3) = (gcs().await, s3().await);

    world.tamper(&gcs, &segment(9)).await;
    let f = world.fetch(&segment(9), &[]);
    assert_eq!(f.code, Some(0), "{}", f.text);
    assert!(
        f.dest.as_deref() == Some(&original[..]),
        "the tampered copy was used"
    );
    assert_eq!(f.report["cloud"], "s3", "{}", f.text);
    let reason = f.report["fallback_reason"].as_str().unwrap();
    assert!(reason.contains("does not match its digest"), "{reason}");

    world.tamper(&s3, &segment(9)).await;
    let f = world.fetch(&segment(9), &[]);
    assert_eq!(f.code, Some(126), "{}", f.text);
    assert!(f.dest.is_none(), "DEST written from a tampered copy");
    assert!(
        world.pg_wal_leftovers().is_empty(),
        "{:?}",
        world.pg_wal_leftovers()
    );
    assert!(
        f.text.contains(&segment(9)) && f.text.contains("fails verification"),
        "{}",
        f.text
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_manifest_copied_to_another_segment_is_refused() {
    let world = World::new("moved");
    world.push(&segment(3), &wal_bytes(MIB, 4));
    let gcs = gcs().await;
    let sealed = gcs
        .get_bytes(&world.key(&segment(3)).manifest_key(), MAX_MANIFEST_BYTES)
        .await
        .unwrap();
    gcs.put_bytes(
        &world.key(&segment(4)).manifest_key(),
        sealed,
        PutOptions::create(),
    )
    .await
    .unwrap();

    let f = world.fetch(&segment(4), &[]);
    assert_eq!(f.code, Some(126), "{}", f.text);
    assert!(f.dest.is_none());
    assert!(f.text.contains("belongs to another"), "{}", f.text);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_backup_key_stops_recovery_and_says_so() {
    let world = World::new("key");
    world.push(&segment(2), &wal_bytes(MIB, 5));
    let other = TestKeys::generate();

    let f = world.fetch_with(&segment(2), &other.path("backup.sec.asc"), &[]);
    assert_eq!(f.code, Some(126), "{}", f.text);
    assert!(f.dest.is_none());
    assert!(
        f.text.contains("backup key does not match the recipients"),
        "{}",
        f.text
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn prefetched_segments_are_served_without_the_network() {
    let world = World::new("ahead");
    let content: Vec<Bytes> = (0..5).map(|i| wal_bytes(MIB, 10 + i)).collect();
    for (i, c) in content.iter().enumerate() {
        world.push(&segment(0x20 + i as u32), c);
    }
    let config = world.config_file(3);
    let dest = world.restore().join(DEST);
    let run = |name: &str, extra: &[(&str, String)]| world.fetch_configured(&config, name, extra);

    let (out, report) = run(&segment(0x20), &[]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(std::fs::read(&dest).unwrap() == content[0]);
    assert_eq!(report["ahead"].as_array().unwrap().len(), 3, "{report}");
    for i in 1..=3 {
        let name = segment(0x20 + i);
        let prefetched = std::fs::read(world.prefetch_dir().join(&name)).unwrap();
        assert!(
            prefetched == content[i as usize],
            "{name} prefetched intact"
        );
    }
    assert!(
        !world.prefetch_dir().join(segment(0x24)).exists(),
        "only 3 ahead"
    );

    // GCS unreachable and no S3: only the prefetched copy can serve it.
    let offline = [
        ("STORAGE_EMULATOR_HOST", closed_endpoint()),
        ("BACKSTOP_S3_BUCKET", String::new()),
    ];
    let (out, report) = run(&segment(0x21), &offline);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(report["outcome"], "prefetched", "{report}");
    assert!(std::fs::read(&dest).unwrap() == content[1]);

    // Asking for N+3 deletes the stale N+2 and serves N+3 locally.
    let (out, report) = run(&segment(0x23), &offline);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(report["outcome"], "prefetched", "{report}");
    assert!(
        !world.prefetch_dir().join(segment(0x22)).exists(),
        "stale N+2 removed"
    );

    // A prefetched file that no longer matches its record is not used.
    let (out, _) = run(&segment(0x24), &[]);
    assert!(out.status.success(), "{}", text(&out));
    let ahead = world.prefetch_dir().join(segment(0x25));
    assert!(!ahead.exists(), "nothing archived past N+4");
    std::fs::write(world.prefetch_dir().join(segment(0x25)), b"forged").unwrap();
    std::fs::write(
        world
            .prefetch_dir()
            .join(format!("{}.sha256", segment(0x25))),
        "00 6 x 1\n",
    )
    .unwrap();
    let (out, _) = run(&segment(0x25), &[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(!dest.exists(), "a forged prefetched file reached DEST");
}
