//! Helpers shared by the CLI tests: the stack's variables, its server and
//! `psql`; for the tests that run real clusters archiving with
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

/// A PostgreSQL program of the stack's `PG_BINDIR`.
pub fn pg_tool(name: &str) -> PathBuf {
    Path::new(&var("PG_BINDIR")).join(name)
}

/// The stack's server URL with another database name.
pub fn database_url(db: &str) -> String {
    let server = var("BACKSTOP_TEST_DATABASE_URL");
    let (base, _) = server.rsplit_once('/').expect("a URL with a database");
    format!("{base}/{db}")
}

/// Runs `sql` in `db` of the stack's server (stopping at the first error);
/// returns what it printed, unaligned and without headers.
pub fn psql(db: &str, sql: &str) -> String {
    let out = Command::new(pg_tool("psql"))
        .args(["-X", "-q", "-tA", "-v", "ON_ERROR_STOP=1", "-d"])
        .arg(database_url(db))
        .args(["-c", sql])
        .output()
        .expect("run psql");
    assert!(
        out.status.success(),
        "psql {sql}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
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

// ---- point-in-time restores (restore_cluster*.rs) ---------------------------

/// The keys `restore-cluster` (and the `wal-fetch` it configures) reads.
pub fn restore_env(world: &World) -> Vec<(String, String)> {
    let key = |f: &str| format!("file:{}", world.dir.join("keys").join(f).display());
    vec![
        ("BACKSTOP_BACKUP_KEY".into(), key("backup.sec.asc")),
        ("BACKSTOP_SIGNING_PUBLIC_KEY".into(), key("signing.pub.asc")),
    ]
}

/// Runs the real `backstop` with the world's settings and `extra` on top;
/// returns its output and its stdout as JSON (`Null` if it is none).
pub fn backstop_with(
    world: &World,
    args: &[&str],
    extra: &[(String, String)],
) -> (Output, serde_json::Value) {
    let out = Command::new(env!("CARGO_BIN_EXE_backstop"))
        .args(args)
        .envs(world.env())
        .envs(restore_env(world))
        .envs(extra.iter().map(|(k, v)| (k, v)))
        .output()
        .unwrap();
    let json = serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
    (out, json)
}

pub fn backstop(world: &World, args: &[&str]) -> (Output, serde_json::Value) {
    backstop_with(world, args, &[])
}

pub fn ok(what: &str, (out, json): (Output, serde_json::Value)) -> serde_json::Value {
    assert!(
        out.status.success(),
        "{what} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    json
}

/// A base backup of `cluster` through the CLI; returns its id.
pub fn base_backup(world: &World, cluster: &Cluster) -> String {
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

/// One row per transaction; returns (commit time, xid) as the server
/// recorded them.
pub fn write_row(cluster: &Cluster, id: u32) -> (String, String) {
    let out = cluster.psql(&format!(
        "INSERT INTO t (id) VALUES ({id}) RETURNING at::text || '|' || txid_current()"
    ));
    std::thread::sleep(Duration::from_millis(400));
    let (at, xid) = out.split_once('|').unwrap();
    (at.to_string(), xid.to_string())
}

/// Closes the current segment and waits until it is archived; returns it.
pub fn switch_and_archive(cluster: &Cluster) -> String {
    let seg = cluster.psql("SELECT pg_walfile_name(pg_current_wal_lsn())");
    cluster.psql("SELECT pg_switch_wal()");
    cluster.wait_archived(&seg, Duration::from_secs(120));
    seg
}

/// The arguments of `restore-cluster ... --pgdata <world>/<name> --start
/// --port P` and the cluster it will start.
fn restore_args(world: &World, name: &str) -> (Cluster, String, String) {
    let pgdata = world.dir.join(name);
    let port = free_port();
    let restored = restored_cluster(&pgdata, port);
    (restored, pgdata.display().to_string(), port.to_string())
}

/// Restores with `target` (and `extra` variables) into a new directory,
/// started; returns the restored server and the JSON result.
pub fn restore_with(
    world: &World,
    name: &str,
    target: &[&str],
    extra: &[(String, String)],
) -> (Cluster, serde_json::Value) {
    let (restored, result) = try_restore(world, name, target, extra);
    let json = ok(&format!("restore-cluster {target:?}"), result);
    (restored, json)
}

pub fn restore(world: &World, name: &str, target: &[&str]) -> (Cluster, serde_json::Value) {
    restore_with(world, name, target, &[])
}

/// [`restore_with`] that may fail: the cluster (maybe never started) and
/// the command's output.
pub fn try_restore(
    world: &World,
    name: &str,
    target: &[&str],
    extra: &[(String, String)],
) -> (Cluster, (Output, serde_json::Value)) {
    let (restored, dir, port) = restore_args(world, name);
    let mut args = vec!["restore-cluster", "--namespace", &world.namespace];
    args.extend(target);
    args.extend(["--pgdata", &dir, "--start", "--port", &port]);
    let result = backstop_with(world, &args, extra);
    (restored, result)
}

pub fn restored_cluster(pgdata: &Path, port: u16) -> Cluster {
    Cluster {
        pgdata: pgdata.to_path_buf(),
        log: pgdata.join("backstop-recovery.log"),
        port,
        bindir: PathBuf::from(var("PG_BINDIR")),
    }
}

pub fn ids(cluster: &Cluster) -> String {
    cluster.psql("SELECT string_agg(id::text, ',' ORDER BY id) FROM t")
}

/// The midpoint of two of the server's timestamps, as RFC 3339 (UTC).
pub fn between(cluster: &Cluster, a: &str, b: &str) -> String {
    cluster.psql(&format!(
        "SELECT to_char(('{a}'::timestamptz + ('{b}'::timestamptz - '{a}'::timestamptz) / 2) AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')"
    ))
}

impl Cluster {
    /// `pg_ctl stop -m fast`: the server is down when it returns.
    pub fn stop(&self) {
        run_ok(
            as_postgres(&self.bindir.join("pg_ctl"))
                .args(["-D"])
                .arg(&self.pgdata)
                .args(["-m", "fast", "-w", "stop"]),
            "pg_ctl stop",
        );
    }

    /// `Database cluster state` as `pg_controldata` prints it.
    pub fn control_state(&self) -> String {
        let out = run_ok(
            Command::new(self.bindir.join("pg_controldata"))
                .arg("-D")
                .arg(&self.pgdata),
            "pg_controldata",
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .find_map(|l| l.strip_prefix("Database cluster state:"))
            .unwrap_or_default()
            .trim()
            .to_string()
    }
}
