//! Restore authenticates a backup's data against its signed manifest before
//! `pg_restore` sees any of it, on the local stack (real PostgreSQL,
//! fake-gcs-server, moto S3, `pg_dump`/`pg_restore`, stock `gpg`):
//! substituted archives, flipped bytes, truncation, decompression bombs,
//! old-format (version 1) backups, the fallback to S3 and `--jobs`.
//!
//!   tests/stack/stack.sh run -- cargo test -p backstop-tests --test restore_auth

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use backstop_cloud::gcs::GcsStore;
use backstop_core::crypto::chunks::{CHUNK_SIZE, chunk_count};
use backstop_core::crypto::{
    BackupSecretKey, Compression, CryptoError, RecipientKey, decrypt_stream, encrypt_stream_with,
};
use backstop_core::manifest::Manifest;
use backstop_core::naming::{BackupId, DATA_FILE};
use backstop_core::store::{
    ByteStream, GetResult, ListPage, ObjectMeta, ObjectStore, ObjectStoreExt, PutOptions,
    StoreResult, byte_stream,
};
use backstop_postgres::pg::{self, PgTools};
use backstop_postgres::restore::{
    Clouds, NoProgress, RestoreConfig, RestoreError, RestoreReport, Target, database_for_branch,
    restore, restore_reporting,
};
use backstop_tests::restore_fixture::{
    Fixture, create_database, database_exists, drop_database, pg_bindir, private_dir, restore_from,
    row_counts, server_url, unique,
};
use backstop_tests::{gcs, s3};
use bytes::Bytes;
use futures::StreamExt;

// ---- helpers ---------------------------------------------------------------

/// Runs a command to completion, asserting that it succeeded.
fn run(cmd: &mut Command, what: &str) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn is_empty_dir(dir: &Path) -> bool {
    std::fs::read_dir(dir).unwrap().next().is_none()
}

fn flipped(data: &[u8], at: usize) -> Vec<u8> {
    let mut d = data.to_vec();
    d[at] ^= 0x01;
    d
}

/// 19 MiB of incompressible rows: a backup of three chunks, so that a
/// bad chunk can come after `pg_restore` was fed authenticated ones.
const BULK_SQL: &str = "CREATE TABLE public.bulk AS SELECT g AS id, \
    decode(md5(random()::text) || md5(random()::text) || md5(random()::text) \
    || md5(random()::text), 'hex') AS noise FROM generate_series(1, 300000) g";

/// The authentication failure a restore ended with (panics otherwise).
fn into_data(result: Result<RestoreReport, RestoreError>, what: &str) -> CryptoError {
    match result {
        Err(RestoreError::Data { source, .. }) => source,
        Err(other) => panic!(
            "{what}: expected a verification failure (RestoreError::Data), got {}: {other}",
            other.kind()
        ),
        Ok(report) => panic!("{what}: the restore succeeded: {report:?}"),
    }
}

/// Restores `config`'s backup from `store` into a new database and into
/// the existing empty database at `existing_url`: both must fail with
/// [`RestoreError::Data`] and leave the server as it was (the new database
/// dropped again, the existing one without tables). Returns both failures.
async fn fails_twice(
    config: impl Fn(Target) -> RestoreConfig,
    store: &dyn ObjectStore,
    existing_url: &str,
    what: &str,
) -> [CryptoError; 2] {
    let fresh = unique("ra_fresh");
    let target = Target::OnServer {
        server_url: server_url(),
        database: fresh.clone(),
    };
    let first = restore_from(&config(target), store).await;
    assert!(
        !database_exists(&fresh).await,
        "{what}: the database created for the restore is left behind"
    );
    let second = restore_from(&config(Target::Url(existing_url.to_string())), store).await;
    assert!(
        row_counts(existing_url).await.is_empty(),
        "{what}: the existing empty target holds tables after the failed restore"
    );
    [into_data(first, what), into_data(second, what)]
}

async fn collect(mut s: ByteStream) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    while let Some(c) = s.next().await {
        out.extend_from_slice(&c?);
    }
    Ok(out)
}

/// Staging databases (`--jobs` into an existing target) still on the server.
async fn staging_databases() -> i64 {
    let admin = pg::connect(&server_url()).await.unwrap();
    admin
        .query_one(
            r"SELECT count(*) FROM pg_database WHERE datname LIKE 'backstop\_restore\_%'",
            &[],
        )
        .await
        .unwrap()
        .get(0)
}

/// A store whose data object, once a backup has been selected, delivers
/// other bytes than its listing and `head` report: the object was
/// replaced between selection and download.
#[derive(Debug)]
struct ReplacedAfterSelection {
    inner: GcsStore,
    data_key: String,
    body: Bytes,
}

impl ReplacedAfterSelection {
    /// The replacement, in 1 MiB pieces as a download delivers them.
    fn body_stream(&self) -> ByteStream {
        let b = self.body.clone();
        let pieces: Vec<std::io::Result<Bytes>> = (0..b.len())
            .step_by(1 << 20)
            .map(|s| Ok(b.slice(s..(s + (1 << 20)).min(b.len()))))
            .collect();
        byte_stream(futures::stream::iter(pieces))
    }
}

#[async_trait::async_trait]
impl ObjectStore for ReplacedAfterSelection {
    fn url(&self) -> String {
        self.inner.url()
    }

    async fn put(&self, key: &str, body: ByteStream, opts: PutOptions) -> StoreResult<ObjectMeta> {
        self.inner.put(key, body, opts).await
    }

    async fn get(&self, key: &str) -> StoreResult<GetResult> {
        let got = self.inner.get(key).await?;
        if key != self.data_key {
            return Ok(got);
        }
        Ok(GetResult {
            meta: got.meta,
            body: self.body_stream(),
        })
    }

    async fn read(&self, key: &str) -> StoreResult<ByteStream> {
        if key != self.data_key {
            return self.inner.read(key).await;
        }
        self.inner.head(key).await?;
        Ok(self.body_stream())
    }

    async fn head(&self, key: &str) -> StoreResult<ObjectMeta> {
        self.inner.head(key).await
    }

    async fn list_page(&self, prefix: &str, page_token: Option<String>) -> StoreResult<ListPage> {
        self.inner.list_page(prefix, page_token).await
    }

    async fn delete(&self, key: &str) -> StoreResult<()> {
        self.inner.delete(key).await
    }
}

// ---- (a) a substituted archive ---------------------------------------------

/// The attacker's database: a table whose CHECK constraint runs a shell
/// command on the database server (`COPY ... TO PROGRAM`, superuser only)
/// for every row loaded into it, which is what `pg_restore`'s COPY does.
/// A side effect outside the database: no rollback undoes it.
fn evil_sql(marker: &Path) -> String {
    format!(
        r#"
CREATE FUNCTION public.evil(x int) RETURNS boolean LANGUAGE plpgsql AS $f$
BEGIN
    EXECUTE 'COPY (SELECT 1) TO PROGRAM ''touch {m}; cat >/dev/null''';
    RETURN true;
END
$f$;
CREATE TABLE public.loot (x int CONSTRAINT side_effect CHECK (public.evil(x)));
INSERT INTO public.loot VALUES (1);
"#,
        m = marker.display()
    )
}

/// `pg_dump -Fc` of a fresh attacker database; returns the archive's path.
async fn evil_archive(dir: &Path, marker: &Path) -> PathBuf {
    let db = unique("ra_attacker");
    let url = create_database(&db).await;
    pg::connect(&url)
        .await
        .unwrap()
        .batch_execute(&evil_sql(marker))
        .await
        .unwrap();
    assert!(marker.exists(), "the side effect works on this server");
    std::fs::remove_file(marker).unwrap();
    let dump = dir.join("evil.dump");
    run(
        Command::new(pg_bindir().join("pg_dump"))
            .args(["-Fc", "-f"])
            .arg(&dump)
            .arg(&url),
        "pg_dump of the attacker's database",
    );
    drop_database(&db).await;
    dump
}

/// Without Backstop, restoring the archive runs the side effect: the
/// marker appears.
async fn side_effect_is_real(dump: &Path, marker: &Path) {
    let db = unique("ra_proof");
    let url = create_database(&db).await;
    run(
        Command::new(pg_bindir().join("pg_restore"))
            .args(["--no-owner", "--no-acl", "--exit-on-error"])
            .arg("--single-transaction")
            .arg(format!("--dbname={url}"))
            .arg(dump),
        "pg_restore of the attacker's archive",
    );
    assert!(
        marker.exists(),
        "restoring the archive directly runs its side effect"
    );
    assert_eq!(row_counts(&url).await.get("public.loot"), Some(&1));
    std::fs::remove_file(marker).unwrap();
    drop_database(&db).await;
}

/// Encrypts `file` to the backup *public* key with stock gpg: all an
/// attacker needs to make a message that decrypts with the backup key.
fn gpg_encrypt(fx: &Fixture, file: &Path) -> Vec<u8> {
    let home = fx.dir.path().join("gnupg");
    std::fs::create_dir_all(&home).unwrap();
    set_mode(&home, 0o700);
    let gpg = || {
        let mut c = Command::new("gpg");
        c.env("GNUPGHOME", &home)
            .args(["--batch", "--yes", "--no-tty", "--quiet"]);
        c
    };
    let public = fx.dir.path().join("backup.pub.asc");
    run(gpg().arg("--import").arg(public), "gpg --import");
    let out = fx.dir.path().join("evil.pgp");
    run(
        gpg()
            .args(["--trust-model", "always", "--compress-algo", "zip"])
            .args(["--recipient", &fx.backup_key.fingerprint, "--output"])
            .arg(&out)
            .arg("--encrypt")
            .arg(file),
        "gpg --encrypt",
    );
    let _ = Command::new("gpgconf")
        .args(["--kill", "gpg-agent"])
        .env("GNUPGHOME", &home)
        .status();
    std::fs::read(out).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_substituted_archive_never_runs_its_side_effect() {
    let fx = Fixture::new("evil").await;
    let gcs = gcs().await;
    // Written by the server (user postgres when the stack runs as root).
    let markers = tempfile::Builder::new()
        .prefix("bs-evil-")
        .tempdir_in("/tmp")
        .unwrap();
    set_mode(markers.path(), 0o777);
    let marker = markers.path().join("side-effect-ran");
    let dump = evil_archive(fx.dir.path(), &marker).await;
    side_effect_is_real(&dump, &marker).await;

    // A message Backstop's own decryption accepts (the MDC is valid).
    let evil = gpg_encrypt(&fx, &dump);
    let secret = BackupSecretKey::from_armored(&fx.backup_key.secret_armored).unwrap();
    let body = byte_stream(futures::stream::iter([Ok(Bytes::from(evil.clone()))]));
    let plain = collect(decrypt_stream(body, &secret)).await;
    assert_eq!(
        plain.expect("gpg's message decrypts"),
        std::fs::read(&dump).unwrap()
    );

    // Stored as it is, its size is not the signed one: passed over.
    fx.put_data(&gcs, &evil).await;
    let fresh = unique("ra_evil_sel");
    let err = restore_from(&fx.config(fx.fresh(&fresh)), &gcs)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, RestoreError::NoBackup { skipped, .. } if skipped[0].reason.contains("the manifest says")),
        "{err}"
    );
    assert!(!database_exists(&fresh).await && !marker.exists());

    // Padded to the signed size it is selected, and stops at chunk 0.
    let size = fx.manifest(&gcs).await.ciphertext.size as usize;
    assert!(
        evil.len() < size,
        "{} >= {size}: shrink the attacker's database",
        evil.len()
    );
    let mut padded = evil.clone();
    padded.resize_with(size, rand::random::<u8>);
    fx.put_data(&gcs, &padded).await;
    let object = format!("{}/{}", gcs.url(), fx.id.data_key());

    let existing = unique("ra_evil_empty");
    let existing_url = create_database(&existing).await;
    let err = restore_from(&fx.config(Target::Url(existing_url.clone())), &gcs).await;
    let err = err.expect_err("a substituted archive is refused");
    assert!(
        matches!(&err, RestoreError::Data { object: o, source: CryptoError::ChunkMismatch { index: 0, offset: 0, .. } } if *o == object),
        "{err}"
    );
    assert!(row_counts(&existing_url).await.is_empty());
    assert!(!marker.exists(), "the archive's side effect ran");

    let branch = format!("attack/substituted-{:08x}", rand::random::<u32>());
    let err = restore_from(&fx.config(Target::branch(&server_url(), &branch)), &gcs).await;
    let source = into_data(err, "into a branch database");
    assert!(
        matches!(source, CryptoError::ChunkMismatch { index: 0, .. }),
        "{source}"
    );
    assert!(!database_exists(&database_for_branch(&branch)).await);
    assert!(!marker.exists(), "the archive's side effect ran");

    fx.cleanup(&[&existing]).await;
}

// ---- (b) modified, truncated, extended -------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn modified_truncated_or_extended_data_never_reaches_the_target() {
    let fx = Fixture::with_sql("bytes", BULK_SQL).await;
    let gcs = gcs().await;
    let original = fx.data(&gcs).await;
    let n = original.len();
    let chunks = chunk_count(n as u64, CHUNK_SIZE) as usize;
    assert!(chunks >= 3, "the backup is {n} bytes, {chunks} chunks");
    let existing = unique("ra_bytes_empty");
    let existing_url = create_database(&existing).await;
    let config = |t: Target| fx.config(t);

    for (what, at) in [
        ("first byte", 0),
        ("middle byte", n / 2),
        ("last byte", n - 1),
    ] {
        fx.put_data(&gcs, &flipped(&original, at)).await;
        let want = at / CHUNK_SIZE as usize;
        for e in fails_twice(config, &gcs, &existing_url, what).await {
            assert!(
                matches!(e, CryptoError::ChunkMismatch { index, offset, count }
                    if index == want && offset == want as u64 * CHUNK_SIZE && count == chunks),
                "{what}: {e}"
            );
        }
    }

    let mut appended = original.clone();
    appended.extend((0..4096).map(|_| rand::random::<u8>()));
    let cases = [
        ("last byte dropped", original[..n - 1].to_vec()),
        ("last MiB dropped", original[..n - (1 << 20)].to_vec()),
        ("4 KiB appended", appended),
    ];
    for (what, data) in cases {
        // Stored: the listing shows the size, the backup is passed over.
        fx.put_data(&gcs, &data).await;
        let fresh = unique("ra_bytes_sel");
        let err = restore_from(&fx.config(fx.fresh(&fresh)), &gcs).await;
        let err = err.expect_err(what);
        assert!(
            matches!(&err, RestoreError::NoBackup { skipped, .. } if skipped[0].reason.contains("the manifest says")),
            "{what}: {err}"
        );
        assert!(!database_exists(&fresh).await);
        // Replaced after selection: the download itself stops.
        fx.put_data(&gcs, &original).await;
        let swapped = ReplacedAfterSelection {
            inner: gcs.clone(),
            data_key: fx.id.data_key(),
            body: Bytes::from(data),
        };
        for e in fails_twice(config, &swapped, &existing_url, what).await {
            assert!(
                matches!(e, CryptoError::SizeMismatch { expected, .. } if expected == n as u64),
                "{what}: {e}"
            );
        }
    }
    fx.cleanup(&[&existing]).await;
}

// ---- (c) a decompression bomb ----------------------------------------------

/// Stores a correctly signed backup (a new id in the fixture's namespace)
/// whose data is `plain` deflated at level 9 and whose manifest claims
/// `limit` bytes of plaintext. Returns its id.
async fn publish_bomb(fx: &Fixture, gcs: &GcsStore, plain: ByteStream, limit: u64) -> BackupId {
    let recipient = RecipientKey::from_armored(&fx.backup_key.public_armored).unwrap();
    let enc = encrypt_stream_with(plain, &[recipient], Compression::Zip(9)).unwrap();
    let ciphertext = collect(enc.stream).await.unwrap();
    let summary = enc
        .summary
        .get()
        .expect("the summary after the stream ended");
    assert!(summary.plaintext_size >= 256 << 20);
    assert!(ciphertext.len() < 8 << 20, "{} bytes", ciphertext.len());
    let real = fx.manifest(gcs).await;
    let id = BackupId::new(fx.namespace.clone(), &real.database, chrono::Utc::now()).unwrap();
    let bomb = Manifest {
        server_version: real.server_version.clone(),
        plaintext_size: limit,
        ciphertext: summary.ciphertext_info(DATA_FILE),
        recipients: summary.recipients.clone(),
        signer: real.signer.clone(),
        tables: real.tables.clone(),
        tool: real.tool.clone(),
        base_backup: None,
        ..Manifest::of_backup(&id)
    };
    let body = Bytes::from(ciphertext);
    gcs.put_bytes(&id.data_key(), body, PutOptions::default())
        .await
        .unwrap();
    fx.publish(gcs, &bomb).await;
    id
}

/// 256 MiB of zeros, in 1 MiB pieces.
fn zeros() -> impl futures::Stream<Item = std::io::Result<Bytes>> + Send + 'static {
    let zero = Bytes::from(vec![0u8; 1 << 20]);
    futures::stream::iter((0..256).map(move |_| Ok(zero.clone())))
}

/// Restores the bomb `id` into a new and an existing empty database; both
/// must fail with `PlaintextTooLarge` at `limit` and leave nothing behind.
async fn bomb_fails(fx: &Fixture, gcs: &GcsStore, id: &BackupId, limit: u64, what: &str) {
    let existing = unique("ra_bomb_empty");
    let existing_url = create_database(&existing).await;
    let config = |t: Target| RestoreConfig {
        backup: Some(id.clone()),
        ..fx.config(t)
    };
    let started = Instant::now();
    let errors = fails_twice(config, gcs, &existing_url, what).await;
    eprintln!("{what}: two restores failed in {:?}", started.elapsed());
    for e in errors {
        assert!(
            matches!(e, CryptoError::PlaintextTooLarge { limit: l } if l == limit),
            "{what}: {e}"
        );
    }
    drop_database(&existing).await;
}

/// Nothing but zeros, claiming 1 MiB of plaintext. The first zeros reach
/// `pg_restore`, which exits ("not a valid archive") before decryption
/// reaches the cap; the restore then looks ahead in the data stream and
/// reports its failure, the bomb, rather than `pg_restore`'s. (Failed
/// before that look-ahead: reported as a `pg_restore` failure.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_decompression_bomb_of_zeros_fails_as_a_verification_failure() {
    let fx = Fixture::new("bomb0").await;
    let gcs = gcs().await;
    let id = publish_bomb(&fx, &gcs, byte_stream(zeros()), 1 << 20).await;
    bomb_fails(&fx, &gcs, &id, 1 << 20, "zeros").await;
    fx.cleanup(&[]).await;
}

/// A bomb behind a valid archive (the fixture's own dump), so `pg_restore`
/// keeps reading until decryption reaches the signed size.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_decompression_bomb_behind_a_valid_archive_stops_at_the_signed_size() {
    let fx = Fixture::new("bomb").await;
    let gcs = gcs().await;
    let secret = BackupSecretKey::from_armored(&fx.backup_key.secret_armored).unwrap();
    let data = fx.data(&gcs).await;
    let body = byte_stream(futures::stream::iter([Ok(Bytes::from(data))]));
    let archive = collect(decrypt_stream(body, &secret)).await.unwrap();
    let limit = 1 << 20;
    assert!(archive.len() as u64 > limit, "{} bytes", archive.len());
    let plain = futures::stream::iter([Ok(Bytes::from(archive))]).chain(zeros());
    let id = publish_bomb(&fx, &gcs, byte_stream(plain), limit).await;
    bomb_fails(&fx, &gcs, &id, limit, "archive, then zeros").await;
    fx.cleanup(&[]).await;
}

// ---- (d) an old-format (version 1) backup ----------------------------------

/// A `pg_restore` that touches `marker` and then runs the real one.
fn recording_bindir(dir: &Path, marker: &Path) -> PathBuf {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let script = bin.join("pg_restore");
    let real = pg_bindir().join("pg_restore");
    let text = format!(
        "#!/bin/sh\ntouch '{}'\nexec '{}' \"$@\"\n",
        marker.display(),
        real.display()
    );
    std::fs::write(&script, text).unwrap();
    set_mode(&script, 0o755);
    bin
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_old_format_backup_is_verified_whole_before_pg_restore_starts() {
    let fx = Fixture::new("v1").await;
    let gcs = gcs().await;
    let mut v1 = fx.manifest(&gcs).await;
    v1.version = 1;
    v1.ciphertext.chunks.clear();
    v1.ciphertext.chunk_size = 0;
    fx.publish(&gcs, &v1).await;
    let stored = fx.manifest(&gcs).await;
    assert!(stored.version == 1 && stored.ciphertext.chunks.is_empty());

    let started = fx.dir.path().join("pg_restore-started");
    let bindir = recording_bindir(fx.dir.path(), &started);
    let spool = private_dir("v1-spool");
    let config = |t: Target| RestoreConfig {
        tools: PgTools {
            bindir: Some(bindir.clone()),
        },
        spool_dir: spool.path().to_path_buf(),
        ..fx.config(t)
    };

    let good = unique("ra_v1_good");
    let report = restore_from(&config(fx.fresh(&good)), &gcs).await;
    let report = report.expect("an intact version 1 backup restores");
    assert!(report.success, "{report:?}");
    let good_url = pg::with_database(&server_url(), &good).unwrap();
    assert_eq!(
        row_counts(&good_url).await,
        row_counts(&fx.source_url).await
    );
    assert!(started.exists(), "pg_restore ran through the wrapper");
    assert!(is_empty_dir(spool.path()), "the spool file is unlinked");
    std::fs::remove_file(&started).unwrap();

    let original = fx.data(&gcs).await;
    let existing = unique("ra_v1_empty");
    let existing_url = create_database(&existing).await;
    let n = original.len();
    for (what, at) in [("middle byte", n / 2), ("last byte", n - 1)] {
        fx.put_data(&gcs, &flipped(&original, at)).await;
        for e in fails_twice(config, &gcs, &existing_url, what).await {
            assert!(
                matches!(
                    e,
                    CryptoError::Sha256Mismatch { .. } | CryptoError::Crc32cMismatch { .. }
                ),
                "{what}: {e}"
            );
        }
        assert!(
            !started.exists(),
            "{what}: pg_restore was started for a tampered old-format backup"
        );
        assert!(
            is_empty_dir(spool.path()),
            "{what}: the spool is left behind"
        );
    }
    fx.cleanup(&[&good, &existing]).await;
}

// ---- (e) the fallback to S3 ------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_data_in_gcs_falls_back_to_the_same_backup_in_s3() {
    let fx = Fixture::new("fallback").await;
    let gcs = gcs().await;
    let s3 = s3().await;
    // The replicator's job, by hand (manifest last).
    for key in [
        fx.id.data_key(),
        fx.id.signature_key(),
        fx.id.manifest_key(),
    ] {
        let bytes = gcs.get_bytes(&key, 256 << 20).await.unwrap();
        s3.put_bytes(&key, bytes, PutOptions::default())
            .await
            .unwrap();
    }
    let original = fx.data(&gcs).await;
    fx.put_data(&gcs, &flipped(&original, original.len() / 2))
        .await;
    let clouds = || Clouds {
        primary: Some(&gcs),
        replica: Some(&s3),
    };

    let target = unique("ra_fallback");
    let report = restore(&fx.config(fx.fresh(&target)), clouds(), &NoProgress)
        .await
        .expect("restored from S3");
    assert!(report.success, "{report:?}");
    assert_eq!(
        (report.cloud.as_str(), report.store.clone()),
        ("s3", s3.url())
    );
    let gcs_object = format!("{}/{}", gcs.url(), fx.id.data_key());
    let reason = report.fallback_reason.clone().unwrap_or_default();
    assert!(
        reason.contains(&gcs_object) && reason.contains("chunk") && reason.contains("s3"),
        "{reason}"
    );
    let target_url = pg::with_database(&server_url(), &target).unwrap();
    assert_eq!(
        row_counts(&target_url).await,
        row_counts(&fx.source_url).await
    );

    // Both copies bad: the failure names the backup, the cloud and why.
    fx.put_data(&s3, &flipped(&original, 0)).await;
    let target2 = unique("ra_fallback_both");
    let failed = restore_reporting(&fx.config(fx.fresh(&target2)), clouds(), &NoProgress)
        .await
        .expect_err("both copies are bad");
    let s3_object = format!("{}/{}", s3.url(), fx.id.data_key());
    assert!(
        matches!(&failed.error, RestoreError::Data { object, source: CryptoError::ChunkMismatch { index: 0, .. } } if *object == s3_object),
        "{}",
        failed.error
    );
    assert_eq!(failed.backup_id, Some(fx.id.to_string()));
    assert_eq!(failed.cloud.as_deref(), Some("s3"));
    let reason = failed.fallback_reason.unwrap_or_default();
    assert!(reason.contains(&gcs_object), "{reason}");
    assert!(!database_exists(&target2).await);
    fx.cleanup(&[&target]).await;
}

// ---- (f) --jobs ------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_jobs_restore_through_a_spool_that_is_emptied_again() {
    let fx = Fixture::new("jobs").await;
    let gcs = gcs().await;
    let spool = private_dir("jobs-spool");
    let config = |t: Target| RestoreConfig {
        jobs: 2,
        spool_dir: spool.path().to_path_buf(),
        ..fx.config(t)
    };
    let source_counts = row_counts(&fx.source_url).await;

    let fresh = unique("ra_jobs_new");
    let report = restore_from(&config(fx.fresh(&fresh)), &gcs).await;
    let report = report.expect("--jobs 2 into a new database");
    assert!(report.success && report.created_database, "{report:?}");
    let fresh_url = pg::with_database(&server_url(), &fresh).unwrap();
    assert_eq!(row_counts(&fresh_url).await, source_counts);
    assert!(is_empty_dir(spool.path()), "the spooled archive is removed");

    let existing = unique("ra_jobs_empty");
    let existing_url = create_database(&existing).await;
    let report = restore_from(&config(Target::Url(existing_url.clone())), &gcs).await;
    let report = report.expect("--jobs 2 into an existing empty database");
    assert!(report.success && !report.created_database, "{report:?}");
    assert_eq!(report.target_database, existing);
    assert_eq!(row_counts(&existing_url).await, source_counts);
    assert!(is_empty_dir(spool.path()));
    assert_eq!(staging_databases().await, 0, "a staging database is left");

    // Tampered: nothing spooled or created stays behind.
    let original = fx.data(&gcs).await;
    fx.put_data(&gcs, &flipped(&original, original.len() / 2))
        .await;
    let empty = unique("ra_jobs_empty2");
    let empty_url = create_database(&empty).await;
    for e in fails_twice(config, &gcs, &empty_url, "--jobs 2, middle byte").await {
        assert!(matches!(e, CryptoError::ChunkMismatch { .. }), "{e}");
    }
    assert!(is_empty_dir(spool.path()));
    assert_eq!(staging_databases().await, 0, "a staging database is left");
    fx.cleanup(&[&fresh, &existing, &empty]).await;
}
