//! The dump job on the local stack: real PostgreSQL, real fake-gcs-server,
//! real `gpg` and `pg_restore`.
//!
//!   tests/stack/stack.sh run -- cargo test -p backstop-tests --test dump

use std::collections::BTreeMap;
use std::future::Future;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::Command;
use std::sync::Mutex;

use backstop_core::crypto::{
    KeyAlgorithm, NoKms, VerifyingKey, generate_backup_key, generate_signing_key,
    verify_manifest_at,
};
use backstop_core::naming::{BackupId, MANIFEST_FILE, SIGNATURE_FILE};
use backstop_core::store::{
    ByteStream, GetResult, ListPage, ObjectMeta, ObjectStore, ObjectStoreExt, PutOptions,
    StoreResult,
};
use backstop_postgres::dump::{DumpConfig, DumpError, DumpSettings, RetryPolicy, run_dump};
use backstop_postgres::pg;
use backstop_tests::{gcs, s3, stack_env, unique_prefix};
use futures::StreamExt;
use sha2::{Digest, Sha256};

const SEED_SQL: &str = include_str!("../fixtures/seed.sql");

/// What `tests/fixtures/seed.sql` creates, per `schema.table`.
fn seeded_counts() -> BTreeMap<String, u64> {
    [
        ("Audit.Événements", 1000),
        ("inventory.items", 5000),
        ("public.customers", 20000),
        ("public.documents", 3),
        ("public.empty_table", 0),
        ("sales.events", 30000),
        ("sales.events_2025", 15000),
        ("sales.events_2026", 15000),
        ("sales.orders", 120000),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

// ---- helpers ---------------------------------------------------------------

/// A temporary directory, removed on drop (gpg-agent stopped first).
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        let p = std::env::temp_dir().join(format!(
            "bs-{tag}-{:012x}",
            rand::random::<u64>() & 0xffff_ffff_ffff
        ));
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let gnupg = self.0.join("gnupg");
        if gnupg.exists() {
            let _ = Command::new("gpgconf")
                .args(["--kill", "gpg-agent"])
                .env("GNUPGHOME", &gnupg)
                .status();
        }
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn test_url() -> String {
    stack_env()
        .optional("BACKSTOP_TEST_DATABASE_URL")
        .expect("BACKSTOP_TEST_DATABASE_URL from the stack")
}

fn pg_bindir() -> PathBuf {
    PathBuf::from(
        stack_env()
            .optional("PG_BINDIR")
            .expect("PG_BINDIR from the stack"),
    )
}

/// Creates an empty database with a unique name; returns its name and URL.
async fn fresh_database(tag: &str) -> (String, String) {
    let name = format!("bs_{tag}_{:08x}", rand::random::<u32>());
    let admin = pg::connect(&test_url()).await.unwrap();
    admin
        .batch_execute(&format!("CREATE DATABASE {}", pg::quote_ident(&name)))
        .await
        .unwrap();
    let url = pg::with_database(&test_url(), &name).unwrap();
    (name, url)
}

async fn drop_database(name: &str) {
    let admin = pg::connect(&test_url()).await.unwrap();
    let _ = admin
        .batch_execute(&format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            pg::quote_ident(name)
        ))
        .await;
}

async fn seeded_database(tag: &str) -> (String, String) {
    let (name, url) = fresh_database(tag).await;
    let client = pg::connect(&url).await.unwrap();
    client.batch_execute(SEED_SQL).await.expect("seed.sql runs");
    (name, url)
}

/// Generated keys written as files, as an operator would configure them.
struct Keys {
    backup_secret: PathBuf,
    signing_public: String,
    settings: DumpSettings,
}

fn keys_in(dir: &Path) -> Keys {
    let backup = generate_backup_key(
        "Backstop test backup <backup@example.invalid>",
        KeyAlgorithm::Curve25519,
    )
    .unwrap();
    let signing = generate_signing_key(
        "Backstop test signing <sign@example.invalid>",
        KeyAlgorithm::Curve25519,
    )
    .unwrap();
    let write = |name: &str, text: &str| {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    };
    let backup_pub = write("backup.pub.asc", &backup.public_armored);
    let backup_secret = write("backup.sec.asc", &backup.secret_armored);
    let signing_sec = write("signing.sec.asc", &signing.secret_armored);
    Keys {
        backup_secret,
        signing_public: signing.public_armored.clone(),
        settings: DumpSettings {
            database_url: None,
            namespace: None,
            recipients: Some(format!("file:{}", backup_pub.display())),
            signing_key: Some(format!("file:{}", signing_sec.display())),
            pg_bindir: Some(pg_bindir()),
            compression_level: None,
        },
    }
}

async fn config_for(keys: &Keys, url: &str, namespace: &str) -> DumpConfig {
    let settings = DumpSettings {
        database_url: Some(url.to_string()),
        namespace: Some(namespace.to_string()),
        ..keys.settings.clone()
    };
    let mut config = DumpConfig::load(settings, &NoKms).await.unwrap();
    config.retry = RetryPolicy {
        attempts: 3,
        initial_backoff: std::time::Duration::from_millis(50),
        max_backoff: std::time::Duration::from_millis(200),
    };
    config
}

fn namespace(tag: &str) -> String {
    unique_prefix(tag).trim_end_matches('/').to_string()
}

fn run(cmd: &mut Command) -> std::process::Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Wraps a store and records every call, to prove what the job may not do.
#[derive(Debug)]
struct Recording<S> {
    inner: S,
    calls: Mutex<Vec<String>>,
}

impl<S> Recording<S> {
    fn new(inner: S) -> Self {
        Self {
            inner,
            calls: Mutex::new(Vec::new()),
        }
    }

    fn record(&self, what: String) {
        self.calls.lock().unwrap().push(what);
    }

    fn calls(&self) -> Vec<String> {
        self.calls.lock().unwrap().clone()
    }
}

type BoxFut<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

// Written out as `#[async_trait]` expands it (the tests crate does not
// depend on async-trait).
impl<S: ObjectStore> ObjectStore for Recording<S> {
    fn url(&self) -> String {
        self.inner.url()
    }

    fn put<'a, 'b, 'r>(
        &'a self,
        key: &'b str,
        body: ByteStream,
        opts: PutOptions,
    ) -> BoxFut<'r, StoreResult<ObjectMeta>>
    where
        'a: 'r,
        'b: 'r,
        Self: 'r,
    {
        self.record(format!("put {key}"));
        self.inner.put(key, body, opts)
    }

    fn get<'a, 'b, 'r>(&'a self, key: &'b str) -> BoxFut<'r, StoreResult<GetResult>>
    where
        'a: 'r,
        'b: 'r,
        Self: 'r,
    {
        self.record(format!("get {key}"));
        self.inner.get(key)
    }

    fn head<'a, 'b, 'r>(&'a self, key: &'b str) -> BoxFut<'r, StoreResult<ObjectMeta>>
    where
        'a: 'r,
        'b: 'r,
        Self: 'r,
    {
        self.record(format!("head {key}"));
        self.inner.head(key)
    }

    fn list_page<'a, 'b, 'r>(
        &'a self,
        prefix: &'b str,
        page_token: Option<String>,
    ) -> BoxFut<'r, StoreResult<ListPage>>
    where
        'a: 'r,
        'b: 'r,
        Self: 'r,
    {
        self.record(format!("list {prefix}"));
        self.inner.list_page(prefix, page_token)
    }

    fn delete<'a, 'b, 'r>(&'a self, key: &'b str) -> BoxFut<'r, StoreResult<()>>
    where
        'a: 'r,
        'b: 'r,
        Self: 'r,
    {
        self.record(format!("delete {key}"));
        self.inner.delete(key)
    }
}

/// Asserts that the job only ever called `put`, and made no S3 request.
async fn assert_only_puts_and_no_s3(store: &Recording<impl ObjectStore>, namespace: &str) {
    let calls = store.calls();
    assert!(
        calls.iter().all(|c| c.starts_with("put ")),
        "the dump job may only create objects, but it called: {calls:?}"
    );
    let in_s3 = s3().await.list_all(&format!("{namespace}/")).await.unwrap();
    assert!(in_s3.is_empty(), "the dump job wrote to S3: {in_s3:?}");
}

// ---- tests -------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dump_uploads_data_and_signed_manifest_that_gpg_and_pg_restore_read() {
    let tmp = TempDir::new("dump");
    let keys = keys_in(tmp.path());
    let (db, url) = seeded_database("dump_src").await;
    let ns = namespace("dump");
    let config = config_for(&keys, &url, &ns).await;
    let store = Recording::new(gcs().await);

    let summary = run_dump(&config, &store).await.expect("dump succeeds");
    eprintln!("{}", serde_json::to_string_pretty(&summary).unwrap());

    // Only three creates, in commit order: data, signature, manifest.
    assert_eq!(
        store.calls(),
        vec![
            format!("put {}", summary.data_object),
            format!("put {}", summary.signature_object),
            format!("put {}", summary.manifest_object),
        ]
    );
    assert_only_puts_and_no_s3(&store, &ns).await;
    let id: BackupId = summary.backup_id.parse().unwrap();
    assert_eq!(id.namespace.as_str(), ns);
    assert_eq!(id.database, db);
    assert_eq!(summary.data_object, id.data_key());

    // All three objects exist in the GCS emulator.
    let gcs = gcs().await;
    let listed: Vec<String> = gcs
        .list_all(&id.prefix())
        .await
        .unwrap()
        .into_iter()
        .map(|o| o.key)
        .collect();
    assert_eq!(
        listed,
        vec![id.data_key(), id.manifest_key(), id.signature_key()]
    );

    // The manifest verifies with the signing public key and describes the
    // seeded database exactly.
    let manifest_bytes = gcs.get_bytes(&id.manifest_key(), 1 << 20).await.unwrap();
    let signature = gcs.get_bytes(&id.signature_key(), 1 << 16).await.unwrap();
    let verifying = VerifyingKey::from_armored(&keys.signing_public).unwrap();
    let manifest = verify_manifest_at(&manifest_bytes, &signature, &[verifying], &id)
        .expect("manifest verifies");
    assert_eq!(manifest.tables, seeded_counts());
    assert_eq!(manifest.dump_format, "custom");
    assert_eq!(manifest.database, db);
    assert_eq!(manifest.namespace.as_str(), ns);
    assert!(
        manifest.server_version.starts_with(char::is_numeric),
        "{}",
        manifest.server_version
    );
    assert!(manifest.tool.starts_with("backstop "));
    assert_eq!(manifest.recipients, summary.recipients);
    assert_eq!(manifest.recipients.len(), 1);
    assert_eq!(manifest.ciphertext.size, summary.ciphertext_bytes);
    assert!(
        manifest.plaintext_size > 100_000,
        "dump is {} bytes",
        manifest.plaintext_size
    );
    assert!(manifest.finished_at >= manifest.started_at);

    // Stock gpg verifies the detached signature too.
    let gnupg = tmp.path().join("gnupg");
    std::fs::create_dir_all(&gnupg).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&gnupg, std::fs::Permissions::from_mode(0o700)).unwrap();
    }
    let gpg = || {
        let mut c = Command::new("gpg");
        c.env("GNUPGHOME", &gnupg)
            .args(["--batch", "--no-tty", "--quiet"]);
        c
    };
    let signing_pub = tmp.path().join("signing.pub.asc");
    std::fs::write(&signing_pub, &keys.signing_public).unwrap();
    let manifest_file = tmp.path().join(MANIFEST_FILE);
    let sig_file = tmp.path().join(SIGNATURE_FILE);
    std::fs::write(&manifest_file, &manifest_bytes).unwrap();
    std::fs::write(&sig_file, &signature).unwrap();
    run(gpg().arg("--import").arg(&signing_pub));
    run(gpg().arg("--verify").arg(&sig_file).arg(&manifest_file));

    // Download the data object; its digest is the manifest's.
    let data_file = tmp.path().join("data.pgdump.pgp");
    let mut body = gcs.get(&id.data_key()).await.unwrap().body;
    let mut file = std::fs::File::create(&data_file).unwrap();
    let mut sha = Sha256::new();
    let mut size = 0u64;
    while let Some(chunk) = body.next().await {
        let chunk = chunk.unwrap();
        sha.update(&chunk);
        size += chunk.len() as u64;
        file.write_all(&chunk).unwrap();
    }
    drop(file);
    assert_eq!(size, manifest.ciphertext.size);
    assert_eq!(hex::encode(sha.finalize()), manifest.ciphertext.sha256);

    // Stock gpg decrypts it with the backup secret key.
    run(gpg().arg("--import").arg(&keys.backup_secret));
    let dump_file = tmp.path().join("restored.pgdump");
    run(gpg()
        .arg("--output")
        .arg(&dump_file)
        .arg("--decrypt")
        .arg(&data_file));
    assert_eq!(
        std::fs::metadata(&dump_file).unwrap().len(),
        manifest.plaintext_size
    );

    // pg_restore reproduces the same per-table row counts, and the large object.
    let (restored_db, restored_url) = fresh_database("dump_dst").await;
    run(Command::new(pg_bindir().join("pg_restore"))
        .args(["--exit-on-error", "--no-owner", "--no-password"])
        .arg(format!("--dbname={restored_url}"))
        .arg(&dump_file));
    let restored = pg::connect(&restored_url).await.unwrap();
    assert_eq!(pg::row_counts(&restored).await.unwrap(), manifest.tables);
    let source = pg::connect(&url).await.unwrap();
    let lo_digest =
        "SELECT string_agg(md5(lo_get(content)), ',' ORDER BY id) FROM public.documents";
    let want: String = source.query_one(lo_digest, &[]).await.unwrap().get(0);
    let got: String = restored.query_one(lo_digest, &[]).await.unwrap().get(0);
    assert_eq!(got, want, "large objects differ after restore");
    let text = "SELECT string_agg(city, '|' ORDER BY id) FROM public.customers WHERE id <= 6";
    let got: String = restored.query_one(text, &[]).await.unwrap().get(0);
    assert_eq!(got, "東京|São Paulo|Kraków|Reykjavík 🌋|القاهرة|Zürich");
    let ext: i64 = restored
        .query_one(
            "SELECT count(*) FROM pg_extension WHERE extname IN ('citext', 'pgcrypto')",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(ext, 2);

    drop((restored, source));
    drop_database(&restored_db).await;
    drop_database(&db).await;
}

/// A `pg_dump` that dies after ~200 KB of output: killed by a signal, or
/// exiting 1.
fn broken_pg_dump(dir: &Path, how: &str) -> PathBuf {
    let bindir = dir.join(format!("bin-{how}"));
    std::fs::create_dir_all(&bindir).unwrap();
    let ending = match how {
        "killed" => "kill -KILL $$",
        _ => "exit 1",
    };
    let script = format!(
        "#!/bin/sh\n\"{}\" \"$@\" | head -c 200000\n{ending}\n",
        pg_bindir().join("pg_dump").display()
    );
    let path = bindir.join("pg_dump");
    std::fs::write(&path, script).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    bindir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_pg_dump_leaves_no_manifest_and_only_puts() {
    let tmp = TempDir::new("dumpfail");
    let keys = keys_in(tmp.path());
    let (db, url) = seeded_database("dump_fail").await;
    let gcs = gcs().await;

    for how in ["killed", "exit1"] {
        let ns = namespace(&format!("dumpfail-{how}"));
        let mut config = config_for(&keys, &url, &ns).await;
        config.tools.bindir = Some(broken_pg_dump(tmp.path(), how));
        let store = Recording::new(gcs.clone());

        let err = run_dump(&config, &store)
            .await
            .expect_err("a broken pg_dump fails the job");
        eprintln!("{how}: {err}");
        assert!(matches!(err, DumpError::PgDump { .. }), "{how}: {err:?}");
        let msg = err.to_string();
        assert!(
            msg.contains("pg_dump") && msg.contains("no manifest"),
            "{how}: {msg}"
        );
        if how == "killed" {
            assert!(msg.contains("signal"), "{how}: {msg}");
        } else {
            assert!(msg.contains("exit status: 1"), "{how}: {msg}");
        }

        // It tried to create the data object, and did nothing else.
        let calls = store.calls();
        assert_eq!(calls.len(), 1, "{how}: {calls:?}");
        assert!(
            calls[0].starts_with(&format!("put {ns}/{db}/"))
                && calls[0].ends_with("/data.pgdump.pgp")
        );
        assert_only_puts_and_no_s3(&store, &ns).await;
        let left: Vec<String> = gcs
            .list_all(&format!("{ns}/"))
            .await
            .unwrap()
            .into_iter()
            .map(|o| o.key)
            .collect();
        assert!(
            left.iter()
                .all(|k| !k.ends_with(MANIFEST_FILE) && !k.ends_with(SIGNATURE_FILE)),
            "{how}: a failed dump left a manifest or signature: {left:?}"
        );
    }

    // A database that does not exist: no store call at all.
    let ns = namespace("dumpfail-nodb");
    let missing_url = pg::with_database(&test_url(), "bs_no_such_database").unwrap();
    let config = config_for(&keys, &missing_url, &ns).await;
    let store = Recording::new(gcs.clone());
    let err = run_dump(&config, &store)
        .await
        .expect_err("no database, no dump");
    assert!(matches!(err, DumpError::Snapshot { .. }), "{err:?}");
    assert!(err.to_string().contains("bs_no_such_database"), "{err}");
    assert!(store.calls().is_empty(), "{:?}", store.calls());

    drop_database(&db).await;
}

#[tokio::test]
async fn recipients_must_be_public_keys() {
    let tmp = TempDir::new("dumpkeys");
    let keys = keys_in(tmp.path());
    let settings = DumpSettings {
        database_url: Some("postgres://u@127.0.0.1:1/app".into()),
        recipients: Some(format!("file:{}", keys.backup_secret.display())),
        ..keys.settings.clone()
    };
    let err = DumpConfig::load(settings, &NoKms).await.unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("BACKSTOP_RECIPIENTS") && msg.contains("SECRET"),
        "{msg}"
    );
}

/// A `pg_dump` that records its arguments (one a line) and the
/// `PGPASSWORD` it was given into `dir`, then runs the real one.
fn recording_pg_dump(dir: &Path) -> PathBuf {
    let bindir = dir.join("bin-recording");
    std::fs::create_dir_all(&bindir).unwrap();
    let script = format!(
        "#!/bin/sh\nprintf '%s\\n' \"$@\" > \"{argv}\"\nprintf '%s' \"${{PGPASSWORD:-}}\" > \"{env}\"\nexec \"{real}\" \"$@\"\n",
        argv = dir.join("pg_dump.argv").display(),
        env = dir.join("pg_dump.pgpassword").display(),
        real = pg_bindir().join("pg_dump").display()
    );
    let path = bindir.join("pg_dump");
    std::fs::write(&path, script).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    bindir
}

/// `postgres://backstop@...` with a password put in (the stack trusts
/// loopback, so any password logs in: what counts is where it travels).
fn with_password(url: &str, password: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap();
    let (user, host) = rest.split_once('@').expect("the stack's URL names a user");
    format!("{scheme}://{user}:{password}@{host}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dump_keeps_the_password_off_command_lines_and_out_of_output() {
    let tmp = TempDir::new("dumppw");
    let keys = keys_in(tmp.path());
    let (db, url) = fresh_database("dump_pw").await;
    // Percent-encoded in the URL ('@' and '/'), decoded on its way to libpq.
    let (encoded, password) = ("s3cr3t%40Pa55%2Fword", "s3cr3t@Pa55/word");
    let secret_url = with_password(&url, encoded);
    let gcs = gcs().await;
    let ns = namespace("dumppw");
    let mut config = config_for(&keys, &secret_url, &ns).await;
    config.tools.bindir = Some(recording_pg_dump(tmp.path()));

    let summary = run_dump(&config, &gcs)
        .await
        .expect("a dump with a password URL");
    let argv = std::fs::read_to_string(tmp.path().join("pg_dump.argv")).unwrap();
    assert!(argv.contains("--format=custom"), "the wrapper ran: {argv}");
    for secret in [encoded, password, "s3cr3t"] {
        assert!(
            !argv.contains(secret),
            "pg_dump's command line holds the password: {argv}"
        );
    }
    let given = std::fs::read_to_string(tmp.path().join("pg_dump.pgpassword")).unwrap();
    assert_eq!(given, password, "pg_dump gets the password in PGPASSWORD");
    let json = serde_json::to_string(&summary).unwrap();
    assert!(!json.contains("s3cr3t"), "summary JSON: {json}");
    let debug = format!("{config:?}");
    assert!(!debug.contains("s3cr3t"), "DumpConfig's Debug: {debug}");

    // A failure's message names the URL, without the password.
    let missing = pg::with_database(&secret_url, "bs_no_such_database").unwrap();
    let config = config_for(&keys, &missing, &ns).await;
    let err = run_dump(&config, &gcs).await.expect_err("no database");
    for text in [err.to_string(), format!("{err:?}")] {
        assert!(!text.contains("s3cr3t"), "error: {text}");
    }
    drop_database(&db).await;
}
