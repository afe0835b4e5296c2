//! Helpers shared by the tests that run real clusters archiving with
//! `backstop wal-push` (`wal_push.rs`, `restore_cluster.rs`): keys and a
//! namespace per test in a directory the `postgres` user can read, and a
//! throwaway cluster whose `archive_command` is `backstop wal-push %p`.

#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use backstop_core::crypto::{BackupSecretKey, decrypt_stream};
use backstop_core::manifest::MAX_MANIFEST_BYTES;
use backstop_core::naming::Namespace;
use backstop_core::store::{ObjectStore, ObjectStoreExt};
use backstop_core::wal::{WalKey, WalManifest, WalObject, namespace_prefix};
use backstop_tests::backups::TestKeys;
use backstop_tests::{drain_sha256, gcs};

pub fn var(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: run inside the local stack (tests/run-all or tests/stack/stack.sh run -- cargo test)")
    })
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// A command run as the `postgres` user when the tests run as root
/// (initdb refuses root), as the stack does.
pub fn as_postgres(program: &Path) -> Command {
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    }
}

pub fn run_ok(cmd: &mut Command, what: &str) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Keys and a namespace of one test, in a directory the `postgres` user
/// can read (the archiver runs as it).
pub struct World {
    pub keys: TestKeys,
    pub dir: PathBuf,
    pub namespace: String,
}

impl World {
    pub fn new(tag: &str) -> Self {
        let keys = TestKeys::generate();
        let dir =
            std::env::temp_dir().join(format!("backstop-wal-{tag}-{:08x}", rand::random::<u32>()));
        std::fs::create_dir_all(dir.join("keys")).unwrap();
        for f in [
            "backup.pub.asc",
            "backup.sec.asc",
            "signing.sec.asc",
            "signing.pub.asc",
        ] {
            std::fs::copy(keys.path(f), dir.join("keys").join(f)).unwrap();
        }
        if is_root() {
            run_ok(
                Command::new("chown")
                    .args(["-R", "postgres:postgres"])
                    .arg(&dir),
                "chown",
            );
        }
        run_ok(Command::new("chmod").args(["0755"]).arg(&dir), "chmod");
        let namespace = format!("wal-{tag}-{:06x}", rand::random::<u32>() & 0xff_ffff);
        World {
            keys,
            dir,
            namespace,
        }
    }

    /// The environment `wal-push` runs with.
    pub fn env(&self) -> Vec<(String, String)> {
        vec![
            ("BACKSTOP_NAMESPACE".into(), self.namespace.clone()),
            (
                "BACKSTOP_RECIPIENTS".into(),
                format!("file:{}", self.dir.join("keys/backup.pub.asc").display()),
            ),
            (
                "BACKSTOP_SIGNING_KEY".into(),
                format!("file:{}", self.dir.join("keys/signing.sec.asc").display()),
            ),
            ("BACKSTOP_WAL_BACKLOG_WARN".into(), "3".into()),
        ]
    }

    pub fn namespace(&self) -> Namespace {
        Namespace::new(&self.namespace).unwrap()
    }

    pub fn secret(&self) -> BackupSecretKey {
        BackupSecretKey::from_armored(&self.keys.backup.secret_armored).unwrap()
    }

    /// Every archived file of the namespace: manifests opened with the
    /// signing key, data decrypted and checked against them.
    pub async fn archived(&self) -> Vec<(WalKey, WalManifest)> {
        let store = gcs().await;
        let listing = store
            .list_all(&namespace_prefix(&self.namespace()))
            .await
            .unwrap();
        let mut out = Vec::new();
        for meta in &listing {
            let Some((key, WalObject::Manifest)) = WalKey::parse_key(&meta.key) else {
                continue;
            };
            let sealed = store
                .get_bytes(&meta.key, MAX_MANIFEST_BYTES)
                .await
                .unwrap();
            let m = WalManifest::open(&sealed, &[self.keys.signer().verifying_key()], &key)
                .unwrap_or_else(|e| panic!("{}: {e}", meta.key));
            let data = store.read(&m.data_key(&key)).await.unwrap();
            let (size, sha) = drain_sha256(decrypt_stream(data, &self.secret()))
                .await
                .unwrap();
            assert_eq!(
                (size, sha.as_str()),
                (m.plaintext_size, m.plaintext_sha256.as_str()),
                "{key}"
            );
            out.push((key, m));
        }
        out.sort_by(|a, b| a.0.file.name().cmp(b.0.file.name()));
        out
    }

    pub async fn objects(&self) -> Vec<String> {
        let listing = gcs()
            .await
            .list_all(&namespace_prefix(&self.namespace()))
            .await
            .unwrap();
        listing.into_iter().map(|m| m.key).collect()
    }
}

impl Drop for World {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A throwaway cluster archiving with `backstop wal-push %p`.
pub struct Cluster {
    pub pgdata: PathBuf,
    pub log: PathBuf,
    pub port: u16,
    pub bindir: PathBuf,
}

impl Cluster {
    pub fn start(world: &World, env: &[(String, String)]) -> Self {
        let bindir = PathBuf::from(var("PG_BINDIR"));
        let pgdata = world.dir.join("data");
        let log = world.dir.join("server.log");
        run_ok(
            as_postgres(&bindir.join("initdb"))
                .args(["-D"])
                .arg(&pgdata)
                .args(["-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync"]),
            "initdb",
        );
        let port = free_port();
        let conf = format!(
            "port = {port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{}'\nwal_level = replica\narchive_mode = on\narchive_command = '{} wal-push %p'\nfsync = off\nmax_wal_size = '1GB'\n",
            world.dir.display(),
            env!("CARGO_BIN_EXE_backstop")
        );
        let conf_path = pgdata.join("postgresql.conf");
        let mut text = std::fs::read_to_string(&conf_path).unwrap();
        text.push_str(&conf);
        std::fs::write(&conf_path, text).unwrap();
        run_ok(
            as_postgres(&bindir.join("pg_ctl"))
                .args(["-D"])
                .arg(&pgdata)
                .args(["-l"])
                .arg(&log)
                .args(["-w", "start"])
                .envs(env.iter().map(|(k, v)| (k, v))),
            "pg_ctl start",
        );
        Cluster {
            pgdata,
            log,
            port,
            bindir,
        }
    }

    pub fn psql(&self, sql: &str) -> String {
        let out = run_ok(
            Command::new(self.bindir.join("psql"))
                .args([
                    "-X",
                    "-q",
                    "-tA",
                    "-v",
                    "ON_ERROR_STOP=1",
                    "-h",
                    "127.0.0.1",
                    "-U",
                    "postgres",
                    "-d",
                    "postgres",
                ])
                .args(["-p", &self.port.to_string(), "-c", sql]),
            sql,
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// Writes some WAL and switches segments: returns the segment closed.
    pub fn fill_and_switch(&self) -> String {
        self.psql("CREATE TABLE IF NOT EXISTS t (g int, h text); INSERT INTO t SELECT g, md5(g::text) FROM generate_series(1, 20000) g");
        let seg = self.psql("SELECT pg_walfile_name(pg_current_wal_lsn())");
        self.psql("SELECT pg_switch_wal()");
        seg
    }

    pub fn archived_through(&self, seg: &str) -> bool {
        self.pgdata
            .join("pg_wal/archive_status")
            .join(format!("{seg}.done"))
            .exists()
    }

    pub fn wait_archived(&self, seg: &str, timeout: Duration) {
        let t0 = Instant::now();
        while !self.archived_through(seg) {
            assert!(
                t0.elapsed() < timeout,
                "{seg} not archived after {timeout:?}; pg_stat_archiver: {}; server log:\n{}",
                self.psql(
                    "SELECT archived_count, failed_count, last_failed_wal FROM pg_stat_archiver"
                ),
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn system_identifier(&self) -> u64 {
        self.psql("SELECT system_identifier FROM pg_control_system()")
            .parse()
            .unwrap()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = as_postgres(&self.bindir.join("pg_ctl"))
            .args(["-D"])
            .arg(&self.pgdata)
            .args(["-m", "immediate", "-w", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}
