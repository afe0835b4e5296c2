//! The restore job on the local stack: real PostgreSQL, fake-gcs-server,
//! moto S3, `pg_restore`, and stock `gpg` for the break-glass procedure.
//!
//!   tests/stack/stack.sh run -- cargo test -p backstop-tests --test restore

use std::collections::BTreeMap;
use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::process::Command;
use std::time::Duration;

use backstop_cloud::gcs::GcsStore;
use backstop_core::config::Env;
use backstop_core::crypto::chunks::ChunkHasher;
use backstop_core::crypto::inspect::DigestState;
use backstop_core::crypto::{CryptoError, NoKms, SigningKey, sign_manifest};
use backstop_core::drill::DrillRecord;
use backstop_core::naming::BackupId;
use backstop_core::store::{
    ByteStream, GetResult, ListPage, ObjectMeta, ObjectStore, ObjectStoreExt, PutOptions,
    StoreResult, byte_stream,
};
use backstop_postgres::pg;
use backstop_postgres::restore::{
    Clouds, NoProgress, RestoreConfig, RestoreError, RestoreReport, RestoreSettings, Target,
    database_for_branch, restore,
};
use backstop_tests::restore_fixture::{
    Fixture, create_database, database_exists, newest_drill, pg_bindir, row_counts, server_url,
    unique,
};
use backstop_tests::{gcs, s3, stack_env};
use bytes::Bytes;
use futures::StreamExt;

/// Tables whose whole content is compared (table, ORDER BY key).
const CHECKED_TABLES: [(&str, &str); 5] = [
    ("public.customers", "id"),
    ("sales.orders", "id"),
    ("sales.events", "id"),
    ("inventory.items", "sku"),
    ("\"Audit\".\"Événements\"", "id"),
];

// ---- helpers ---------------------------------------------------------------

/// md5 of every checked table's rows in key order, and the large objects.
async fn checksums(url: &str) -> Vec<(String, String)> {
    let client = pg::connect(url).await.unwrap();
    let mut out = Vec::new();
    for (table, key) in CHECKED_TABLES {
        let sql = format!("SELECT md5(string_agg(t::text, ',' ORDER BY {key})) FROM {table} t");
        let sum: String = client.query_one(&sql, &[]).await.unwrap().get(0);
        out.push((table.to_string(), sum));
    }
    let lo: String = client
        .query_one(
            "SELECT coalesce(md5(string_agg(md5(lo_get(oid)), ',' ORDER BY oid)), '') FROM pg_largeobject_metadata",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    out.push(("large objects".into(), lo));
    out
}

async fn restore_with(
    config: &RestoreConfig,
    primary: &dyn ObjectStore,
    replica: Option<&dyn ObjectStore>,
) -> Result<RestoreReport, RestoreError> {
    restore(
        config,
        Clouds {
            primary: Some(primary),
            replica,
        },
        &NoProgress,
    )
    .await
}

async fn drill_record(store: &dyn ObjectStore, id: &BackupId) -> DrillRecord {
    newest_drill(store, id).await.1
}

/// Asserts that the restored database equals the source, table by table.
async fn assert_same_content(source_url: &str, target_url: &str) {
    assert_eq!(
        row_counts(target_url).await,
        row_counts(source_url).await,
        "row counts differ"
    );
    assert_eq!(
        checksums(target_url).await,
        checksums(source_url).await,
        "table contents differ"
    );
}

/// A store whose data objects end late: after the last byte, the stream
/// waits before it ends. The decrypted dump is then complete while the
/// digest and MDC checks (which need the end of the stream) are still
/// pending: exactly the window in which a `pg_restore` that had been given
/// every byte would commit unverified data.
#[derive(Debug)]
struct SlowEnd<S>(S);

type BoxFut<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

// Written out as `#[async_trait]` expands it (the tests crate does not
// depend on async-trait).
impl<S: ObjectStore> ObjectStore for SlowEnd<S> {
    fn url(&self) -> String {
        self.0.url()
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
        self.0.put(key, body, opts)
    }

    fn get<'a, 'b, 'r>(&'a self, key: &'b str) -> BoxFut<'r, StoreResult<GetResult>>
    where
        'a: 'r,
        'b: 'r,
        Self: 'r,
    {
        Box::pin(async move {
            let got = self.0.get(key).await?;
            if !key.ends_with(backstop_core::naming::DATA_FILE) {
                return Ok(got);
            }
            let late_end = futures::stream::once(async {
                tokio::time::sleep(Duration::from_secs(3)).await;
                None
            });
            let body = got
                .body
                .map(Some)
                .chain(late_end)
                .filter_map(|x| async move { x });
            Ok(GetResult {
                meta: got.meta,
                body: byte_stream(body),
            })
        })
    }

    fn head<'a, 'b, 'r>(&'a self, key: &'b str) -> BoxFut<'r, StoreResult<ObjectMeta>>
    where
        'a: 'r,
        'b: 'r,
        Self: 'r,
    {
        self.0.head(key)
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
        self.0.list_page(prefix, page_token)
    }

    fn delete<'a, 'b, 'r>(&'a self, key: &'b str) -> BoxFut<'r, StoreResult<()>>
    where
        'a: 'r,
        'b: 'r,
        Self: 'r,
    {
        self.0.delete(key)
    }
}

// ---- tests -----------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dump_then_restore_gives_equal_tables_and_a_drill_record() {
    let fx = Fixture::new("eq").await;
    let gcs = gcs().await;
    let target = unique("rs_dst_eq");
    let report = restore_with(&fx.config(fx.fresh(&target)), &gcs, None)
        .await
        .expect("restore succeeds");
    assert!(report.success, "{report:?}");
    assert_eq!(report.backup_id, fx.id.to_string());
    assert_eq!(report.cloud, "gcs");
    assert!(report.fallback_reason.is_none());
    assert!(report.created_database);
    assert!(!report.replaced);
    assert_eq!(report.target_database, target);
    assert!(report.drill.mismatches.is_empty());
    assert_eq!(report.drill.tables_checked, 9);
    assert_eq!(
        report.rows,
        1000 + 5000 + 20000 + 3 + 30000 + 15000 + 15000 + 120000
    );
    let target_url = pg::with_database(&server_url(), &target).unwrap();
    assert_same_content(&fx.source_url, &target_url).await;

    // The drill record is where the audit looks for it.
    let (key, record) = newest_drill(&gcs, &fx.id).await;
    assert!(record.success);
    assert_eq!(record.restored_from.as_deref(), Some("gcs"));
    assert_eq!(record.target_database, target);
    assert_eq!(record.namespace, fx.namespace);
    assert_eq!(
        report.drill_record.as_deref(),
        Some(format!("{}/{key}", gcs.url()).as_str())
    );

    // A second restore into the now non-empty target is refused ...
    let err = restore_with(&fx.config(fx.fresh(&target)), &gcs, None)
        .await
        .unwrap_err();
    assert!(matches!(err, RestoreError::Refused { .. }), "{err}");
    assert!(err.to_string().contains("--replace"), "{err}");

    // ... unless --replace: the target is swapped for a fresh restore.
    let admin = pg::connect(&target_url).await.unwrap();
    admin
        .batch_execute("CREATE TABLE public.scratch (x int)")
        .await
        .unwrap();
    drop(admin);
    let mut replace = fx.config(Target::Url(target_url.clone()));
    replace.replace = true;
    let report = restore_with(&replace, &gcs, None)
        .await
        .expect("replace succeeds");
    assert!(
        report.success && report.replaced && !report.created_database,
        "{report:?}"
    );
    assert!(!row_counts(&target_url).await.contains_key("public.scratch"));
    assert_same_content(&fx.source_url, &target_url).await;

    // The source database is never a target: named by BACKSTOP_SOURCE_DATABASE_URL ...
    let mut onto_source = fx.config(Target::Url(fx.source_url.clone()));
    onto_source.replace = true;
    onto_source.source_database_url = Some(fx.source_url.clone());
    let err = restore_with(&onto_source, &gcs, None).await.unwrap_err();
    assert!(matches!(err, RestoreError::Refused { .. }), "{err}");
    // ... and without it, --replace of a database named like the backup's source is refused.
    onto_source.source_database_url = None;
    let err = restore_with(&onto_source, &gcs, None).await.unwrap_err();
    assert!(matches!(err, RestoreError::Refused { .. }), "{err}");
    assert!(
        err.to_string().contains("BACKSTOP_SOURCE_DATABASE_URL"),
        "{err}"
    );
    assert_eq!(
        row_counts(&fx.source_url).await.get("sales.orders"),
        Some(&120000)
    );

    fx.cleanup(&[&target]).await;
}

/// Replaces the data object with `data` (and optionally the manifest and
/// signature), as an attacker or a bit flip would.
async fn tamper(fx: &Fixture, gcs: &GcsStore, data: Vec<u8>, resign: bool) {
    if resign {
        let mut manifest = fx.manifest(gcs).await;
        let mut d = DigestState::new();
        d.update(&data);
        let d = d.finish();
        manifest.ciphertext.size = d.size;
        manifest.ciphertext.sha256 = d.sha256;
        manifest.ciphertext.crc32c = d.crc32c;
        let mut chunks = ChunkHasher::new(manifest.ciphertext.chunk_size);
        chunks.update(&data);
        manifest.ciphertext.chunks = chunks.finish();
        let key = SigningKey::from_armored(&fx.signing_key.secret_armored).unwrap();
        let (bytes, sig) = sign_manifest(&manifest, &key).unwrap();
        gcs.put_bytes(
            &fx.id.signature_key(),
            Bytes::from(sig),
            PutOptions::default(),
        )
        .await
        .unwrap();
        gcs.put_bytes(
            &fx.id.manifest_key(),
            Bytes::from(bytes),
            PutOptions::default(),
        )
        .await
        .unwrap();
    }
    gcs.put_bytes(&fx.id.data_key(), Bytes::from(data), PutOptions::default())
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampered_backup_fails_and_leaves_the_target_untouched() {
    let fx = Fixture::new("tamper").await;
    let gcs = gcs().await;
    let original = gcs
        .get_bytes(&fx.id.data_key(), 256 << 20)
        .await
        .unwrap()
        .to_vec();
    let flip = |at: usize| {
        let mut d = original.clone();
        d[at] ^= 0x01;
        d
    };
    // Every data object ends 3 s after its last byte (see `SlowEnd`). An
    // intact backup restores through it ...
    let slow = SlowEnd(gcs.clone());
    let intact = unique("rs_dst_tamper_intact");
    let report = restore_with(&fx.config(fx.fresh(&intact)), &slow, None)
        .await
        .expect("an intact backup restores");
    assert!(report.success);

    // ... and a tampered one never reaches the target.
    let existing = unique("rs_dst_tamper_empty");
    let existing_url = create_database(&existing).await;

    // (1) The last byte (inside the MDC): every byte pg_restore needs decrypts
    //     fine, only the checks at the end of the stream fail, 3 s after the
    //     last byte arrived. (The hold-back itself is pinned deterministically
    //     by the unit test `a_failing_stream_never_lets_pg_restore_see_...`.)
    // (2) A byte in the middle: garbled plaintext, digest mismatch.
    // (3) The last byte again, but with a manifest re-signed over the tampered
    //     data (a signing-key compromise): only the MDC catches it.
    let cases = [
        ("last byte", flip(original.len() - 1), false),
        ("middle byte", flip(original.len() / 2), false),
        ("re-signed", flip(original.len() - 1), true),
    ];
    for (what, data, resign) in cases {
        tamper(&fx, &gcs, data, resign).await;

        // Into a new database: it is dropped again, as if never created.
        let fresh = unique("rs_dst_tamper_new");
        let err = restore_with(&fx.config(fx.fresh(&fresh)), &slow, None)
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                RestoreError::Data { .. } | RestoreError::PgRestore { .. }
            ),
            "{what}: unexpected error {err}"
        );
        if what != "middle byte" {
            assert!(matches!(err, RestoreError::Data { .. }), "{what}: {err}");
        }
        if resign {
            assert!(
                matches!(
                    err,
                    RestoreError::Data {
                        source: CryptoError::IntegrityCheckFailed,
                        ..
                    }
                ),
                "{what}: {err}"
            );
        }
        assert!(
            !database_exists(&fresh).await,
            "{what}: the database created for the restore is left behind"
        );

        // Into an existing empty database: the transaction rolled back.
        let err = restore_with(&fx.config(Target::Url(existing_url.clone())), &slow, None)
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                RestoreError::Data { .. } | RestoreError::PgRestore { .. }
            ),
            "{what}: {err}"
        );
        assert!(
            row_counts(&existing_url).await.is_empty(),
            "{what}: the target holds tables after a failed restore"
        );

        // The failed drill is on record for the audit.
        let record = drill_record(&gcs, &fx.id).await;
        assert!(
            !record.success && record.error.is_some(),
            "{what}: {record:?}"
        );
    }

    // A non-empty target with --replace keeps its old contents on failure.
    let keep = unique("rs_dst_tamper_keep");
    let keep_url = create_database(&keep).await;
    pg::connect(&keep_url)
        .await
        .unwrap()
        .batch_execute("CREATE TABLE precious (x int); INSERT INTO precious VALUES (1), (2)")
        .await
        .unwrap();
    let mut replace = fx.config(Target::Url(keep_url.clone()));
    replace.replace = true;
    assert!(restore_with(&replace, &slow, None).await.is_err());
    assert_eq!(
        row_counts(&keep_url).await,
        BTreeMap::from([("public.precious".to_string(), 2)])
    );

    fx.cleanup(&[&intact, &existing, &keep]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_gcs_falls_back_to_s3() {
    let fx = Fixture::new("s3").await;
    let gcs = gcs().await;
    let s3 = s3().await;
    // The replicator's job, done by hand: copy the backup to S3 (manifest last).
    for key in [
        fx.id.data_key(),
        fx.id.signature_key(),
        fx.id.manifest_key(),
    ] {
        let got = gcs.get(&key).await.unwrap();
        s3.put(&key, got.body, PutOptions::default()).await.unwrap();
    }
    // GCS "down": a client pointing at a closed port.
    let dead = GcsStore::builder()
        .env(&Env::from_pairs([(
            "STORAGE_EMULATOR_HOST",
            "http://127.0.0.1:9",
        )]))
        .bucket(gcs.bucket())
        .build()
        .await
        .unwrap();
    let target = unique("rs_dst_s3");
    let report = restore_with(&fx.config(fx.fresh(&target)), &dead, Some(&s3))
        .await
        .expect("restore from S3");
    assert!(report.success, "{report:?}");
    assert_eq!(report.cloud, "s3");
    assert_eq!(report.store, s3.url());
    let reason = report.fallback_reason.as_deref().unwrap_or_default();
    assert!(
        reason.contains("gcs") && reason.contains("unavailable"),
        "{reason}"
    );
    assert_same_content(
        &fx.source_url,
        &pg::with_database(&server_url(), &target).unwrap(),
    )
    .await;
    // With GCS down, the drill record goes to the replica.
    let (key, record) = newest_drill(&s3, &fx.id).await;
    assert!(record.success);
    assert_eq!(record.restored_from.as_deref(), Some("s3"));
    assert_eq!(
        report.drill_record.as_deref(),
        Some(format!("{}/{key}", s3.url()).as_str())
    );

    // A chosen backup id is found on S3 as well.
    let target2 = unique("rs_dst_s3_chosen");
    let mut chosen = fx.config(fx.fresh(&target2));
    chosen.backup = Some(fx.id.clone());
    let report = restore_with(&chosen, &dead, Some(&s3))
        .await
        .expect("chosen backup from S3");
    assert!(report.success && report.cloud == "s3", "{report:?}");

    fx.cleanup(&[&target, &target2]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_branch_name_restores_into_a_safely_named_database() {
    let fx = Fixture::new("branch").await;
    let gcs = gcs().await;
    let branch = format!(
        "feature/it's\"; DROP DATABASE postgres; --Ünïcødé🦊/{}",
        "x".repeat(100)
    );
    assert!(branch.chars().count() > 100);
    // Through the same settings the CLI uses (keys from files, env names).
    let settings = RestoreSettings {
        namespace: Some(fx.namespace.to_string()),
        server_url: Some(server_url()),
        branch: Some(branch.clone()),
        backup_key: Some(format!(
            "file:{}",
            fx.dir.path().join("backup.sec.asc").display()
        )),
        signing_public_key: Some(format!(
            "file:{}",
            fx.dir.path().join("signing.pub.asc").display()
        )),
        pg_bindir: Some(pg_bindir()),
        ..RestoreSettings::default()
    };
    let config = RestoreConfig::load(settings, &NoKms).await.unwrap();
    let expected = database_for_branch(&branch);
    assert!(
        expected.len() <= 63 && expected.starts_with("br_feature_it_s_drop_database_postgres_"),
        "{expected}"
    );
    assert_eq!(database_for_branch(&branch), expected, "deterministic");
    let report = restore_with(&config, &gcs, None)
        .await
        .expect("restore succeeds");
    assert!(report.success, "{report:?}");
    assert_eq!(report.target_database, expected);
    assert!(database_exists(&expected).await);
    assert!(database_exists("postgres").await);
    assert_same_content(
        &fx.source_url,
        &pg::with_database(&server_url(), &expected).unwrap(),
    )
    .await;

    // An explicit hostile name is quoted, not interpreted.
    let explicit = format!("x\"; DROP DATABASE {}; --ü", fx.source_db);
    assert!(explicit.len() <= 63);
    let report = restore_with(&fx.config(fx.fresh(&explicit)), &gcs, None)
        .await
        .expect("restore succeeds");
    assert!(report.success);
    assert!(database_exists(&explicit).await && database_exists(&fx.source_db).await);

    // Names PostgreSQL would truncate are refused rather than silently shortened.
    let err = restore_with(&fx.config(fx.fresh(&"a".repeat(64))), &gcs, None)
        .await
        .unwrap_err();
    assert!(matches!(err, RestoreError::Refused { .. }), "{err}");

    fx.cleanup(&[&expected, &explicit]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn break_glass_script_restores_with_only_gpg_and_pg_restore() {
    let fx = Fixture::new("glass").await;
    let env = stack_env();
    let gnupg = fx.dir.path().join("gnupg");
    std::fs::create_dir_all(&gnupg).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&gnupg, std::fs::Permissions::from_mode(0o700)).unwrap();
    }
    // The README's key step: import the backup secret key and the signing public key.
    let status = Command::new("gpg")
        .env("GNUPGHOME", &gnupg)
        .args(["--batch", "--quiet", "--import"])
        .arg(fx.dir.path().join("backup.sec.asc"))
        .arg(fx.dir.path().join("signing.pub.asc"))
        .status()
        .unwrap();
    assert!(status.success());

    let target = unique("rs_dst_glass");
    let target_url = create_database(&target).await;
    let workdir = fx.dir.path().join("work");
    std::fs::create_dir_all(&workdir).unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("break-glass.sh");
    let path = format!(
        "{}:{}",
        pg_bindir().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = Command::new("bash")
        .arg(&script)
        .arg(fx.namespace.as_str())
        .arg(&target_url)
        .env("GNUPGHOME", &gnupg)
        .env("GCS_BUCKET", env.optional("BACKSTOP_GCS_BUCKET").unwrap())
        .env(
            "GCS_ENDPOINT",
            env.optional("STORAGE_EMULATOR_HOST").unwrap(),
        )
        .env("WORKDIR", &workdir)
        .env("PATH", path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "break-glass.sh failed: {stderr}");
    assert!(stderr.contains(&format!("backup: {}", fx.id)), "{stderr}");
    assert!(stderr.contains("Good signature"), "{stderr}");
    assert_same_content(&fx.source_url, &target_url).await;

    // The same script refuses a backup whose data was modified.
    let gcs = gcs().await;
    let mut data = gcs
        .get_bytes(&fx.id.data_key(), 256 << 20)
        .await
        .unwrap()
        .to_vec();
    let last = data.len() - 1;
    data[last] ^= 1;
    gcs.put_bytes(&fx.id.data_key(), Bytes::from(data), PutOptions::default())
        .await
        .unwrap();
    let target2 = unique("rs_dst_glass_bad");
    let target2_url = create_database(&target2).await;
    let out = Command::new("bash")
        .arg(&script)
        .arg(fx.namespace.as_str())
        .arg(&target2_url)
        .env("GNUPGHOME", &gnupg)
        .env("GCS_BUCKET", env.optional("BACKSTOP_GCS_BUCKET").unwrap())
        .env(
            "GCS_ENDPOINT",
            env.optional("STORAGE_EMULATOR_HOST").unwrap(),
        )
        .env("WORKDIR", &workdir)
        .env(
            "PATH",
            format!(
                "{}:{}",
                pg_bindir().display(),
                std::env::var("PATH").unwrap_or_default()
            ),
        )
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("FAILED"),
        "sha256sum reports the mismatch"
    );
    assert!(row_counts(&target2_url).await.is_empty());

    fx.cleanup(&[&target, &target2]).await;
}

/// `server_url()` with its port replaced by `port`.
fn with_port(url: &str, port: u16) -> String {
    let (scheme, rest) = url.split_once("://").unwrap();
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let (userhost, _) = authority.rsplit_once(':').unwrap();
    format!("{scheme}://{userhost}:{port}{path}")
}

/// A TCP forwarder to the stack's PostgreSQL, as PgBouncer or a second
/// address would be: another port, the same cluster. Returns its port.
async fn forwarder() -> u16 {
    let url = server_url();
    let rest = url.split_once("://").unwrap().1;
    let authority = &rest[..rest.find('/').unwrap_or(rest.len())];
    let port = authority.rsplit_once(':').unwrap().1.to_string();
    let target = format!("127.0.0.1:{port}");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut inbound, _)) = listener.accept().await {
            let target = target.clone();
            tokio::spawn(async move {
                if let Ok(mut out) = tokio::net::TcpStream::connect(&target).await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut out).await;
                }
            });
        }
    });
    port
}

/// The source database reached through another port is still the source
/// (identity, not URL text), and branch names only reach databases Backstop
/// created for them. Failed before identity checks and the `br_` mapping:
/// the source was replaced through the forwarder, `--branch postgres`
/// restored into `postgres`, and a branch named like another branch's
/// database replaced it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn targets_are_told_by_identity_and_branches_by_their_marking() {
    let fx = Fixture::new("ident").await;
    let gcs = gcs().await;
    let via_proxy = with_port(&fx.source_url, forwarder().await);
    let mut cfg = fx.config(Target::Url(via_proxy));
    cfg.replace = true;
    cfg.source_database_url = Some(fx.source_url.clone());
    let err = restore_with(&cfg, &gcs, None).await.unwrap_err();
    assert!(
        matches!(&err, RestoreError::Refused { reason, .. } if reason.contains("system identifier")),
        "{err}"
    );
    assert!(!row_counts(&fx.source_url).await.is_empty());

    // --branch postgres: its own database, and `postgres` untouched.
    let postgres_tables = row_counts(&server_url()).await;
    let report = restore_with(
        &fx.config(Target::branch(&server_url(), "postgres")),
        &gcs,
        None,
    )
    .await
    .expect("a branch called postgres restores into its own database");
    assert!(
        report.target_database.starts_with("br_postgres_"),
        "{report:?}"
    );
    assert_eq!(row_counts(&server_url()).await, postgres_tables);

    // A branch named like another branch's database cannot replace it.
    let victim = database_for_branch("feature/Fix-Login");
    let mut first = fx.config(Target::branch(&server_url(), "feature/Fix-Login"));
    first.replace = true;
    restore_with(&first, &gcs, None)
        .await
        .expect("the branch's own restore");
    let before = row_counts(&pg::with_database(&server_url(), &victim).unwrap()).await;
    let mut attack = fx.config(Target::branch(&server_url(), &victim));
    attack.replace = true;
    let report = restore_with(&attack, &gcs, None).await.unwrap();
    assert_ne!(report.target_database, victim);
    assert_eq!(
        row_counts(&pg::with_database(&server_url(), &victim).unwrap()).await,
        before
    );
    // The branch's own restore again, with --replace: allowed (marked).
    restore_with(&first, &gcs, None)
        .await
        .expect("replace a marked database");

    // An unmarked database that happens to have a branch's name is refused.
    let squatter = database_for_branch("release/v2");
    let squatter_url = create_database(&squatter).await;
    pg::connect(&squatter_url)
        .await
        .unwrap()
        .batch_execute("CREATE TABLE keep (x int); INSERT INTO keep VALUES (1)")
        .await
        .unwrap();
    let mut replace = fx.config(Target::branch(&server_url(), "release/v2"));
    replace.replace = true;
    let err = restore_with(&replace, &gcs, None).await.unwrap_err();
    assert!(
        matches!(&err, RestoreError::Refused { reason, .. } if reason.contains("not created by Backstop")),
        "{err}"
    );
    assert_eq!(row_counts(&squatter_url).await.get("public.keep"), Some(&1));

    let extra = [
        report.target_database.clone(),
        victim,
        squatter,
        database_for_branch("postgres"),
    ];
    fx.cleanup(&extra.iter().map(String::as_str).collect::<Vec<_>>())
        .await;
}

/// A validly signed backup stamped a day in the future (a dump host with a
/// skewed clock) is not the newest: the honest one is restored, and the
/// future one is reported as skipped. Failed before: the future backup was
/// chosen.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_future_dated_backup_is_never_the_newest() {
    let fx = Fixture::new("future").await;
    let gcs = gcs().await;
    let future = BackupId::with_nonce(
        fx.namespace.clone(),
        &fx.id.database,
        chrono::Utc::now() + chrono::TimeDelta::days(1),
        "fff000",
    )
    .unwrap();
    let mut manifest = fx.manifest(&gcs).await;
    manifest.backup_id = future.to_string();
    manifest.started_at = future.taken_at;
    manifest.finished_at = future.taken_at;
    let key = SigningKey::from_armored(&fx.signing_key.secret_armored).unwrap();
    let (bytes, sig) = sign_manifest(&manifest, &key).unwrap();
    let data = gcs.get_bytes(&fx.id.data_key(), 256 << 20).await.unwrap();
    for (k, b) in [
        (future.data_key(), data),
        (future.signature_key(), Bytes::from(sig)),
        (future.manifest_key(), Bytes::from(bytes)),
    ] {
        gcs.put_bytes(&k, b, PutOptions::create()).await.unwrap();
    }
    let target = unique("rs_dst_future");
    let report = restore_with(&fx.config(fx.fresh(&target)), &gcs, None)
        .await
        .expect("the honest backup restores");
    assert_eq!(report.backup_id, fx.id.to_string());
    assert!(
        report
            .skipped
            .iter()
            .any(|s| s.backup_id == future.to_string() && s.reason.contains("future")),
        "{:?}",
        report.skipped
    );
    fx.cleanup(&[&target]).await;
}
