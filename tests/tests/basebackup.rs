//! The base backup job on a throwaway cluster of its own (WAL archiving
//! on, a REPLICATION role) and the stack's fake-gcs-server: a real
//! walsender compressing on the server, real encryption, and `zstd`,
//! `tar` and `pg_verifybackup` on the decrypted result.
//!
//!   tests/stack/stack.sh run -- cargo test -p backstop-tests --test basebackup

use std::io::Write;
use std::path::Path;
use std::process::Command;

use backstop_core::crypto::{
    BackupSecretKey, NoKms, VerifyingKey, decrypt_stream, verify_manifest_at,
};
use backstop_core::manifest::Manifest;
use backstop_core::naming::BackupId;
use backstop_core::store::{ObjectStore, ObjectStoreExt};
use backstop_core::wal::{Lsn, WalFile};
use backstop_postgres::basebackup::{
    BaseBackupConfig, BaseBackupError, BaseBackupSummary, DEFAULT_SERVER_WORKERS, run_base_backup,
};
use backstop_postgres::dump::{DumpConfig, DumpSettings, RetryPolicy};
use backstop_tests::backups::{TestKeys, unique_namespace};
use backstop_tests::cluster::{Cluster, checked};
use backstop_tests::gcs;
use futures::StreamExt;
use sha2::{Digest, Sha256};

/// The role the job connects as: REPLICATION, no superuser.
const BACKUP_ROLE: &str = "backup";

async fn config(
    keys: &TestKeys,
    url: &str,
    namespace: &str,
    bindir: &Path,
    allow_no_archive: bool,
) -> BaseBackupConfig {
    config_at(keys, url, namespace, bindir, allow_no_archive, None).await
}

/// [`config`] at a compression level (`None`: the default).
async fn config_at(
    keys: &TestKeys,
    url: &str,
    namespace: &str,
    bindir: &Path,
    allow_no_archive: bool,
    level: Option<&str>,
) -> BaseBackupConfig {
    let settings = DumpSettings {
        database_url: Some(url.to_string()),
        namespace: Some(namespace.to_string()),
        recipients: Some(format!("file:{}", keys.path("backup.pub.asc").display())),
        signing_key: Some(format!("file:{}", keys.path("signing.sec.asc").display())),
        pg_bindir: Some(bindir.to_path_buf()),
        compression_level: level.map(str::to_string),
    };
    let mut job = DumpConfig::load(settings, &NoKms)
        .await
        .expect("config loads");
    job.retry = RetryPolicy {
        attempts: 3,
        initial_backoff: std::time::Duration::from_millis(50),
        max_backoff: std::time::Duration::from_millis(200),
    };
    BaseBackupConfig {
        job,
        allow_no_archive,
        server_workers: DEFAULT_SERVER_WORKERS,
        max_rate_kb: None,
    }
}

/// A cluster with archiving, a backup role and some data.
fn archiving_cluster() -> Cluster {
    let cluster = Cluster::start(&Cluster::ARCHIVING).expect("a test cluster starts");
    cluster.sql(&format!(
        "CREATE ROLE {BACKUP_ROLE} LOGIN REPLICATION; CREATE TABLE t AS SELECT g, md5(g::text) AS h FROM generate_series(1, 50000) g"
    ));
    cluster
}

fn run(cmd: &mut Command) -> String {
    checked(cmd).unwrap_or_else(|e| panic!("{e:#}"))
}

/// Downloads and decrypts the data object into `file`; returns its size.
async fn decrypt_to(store: &dyn ObjectStore, key: &str, keys: &TestKeys, file: &Path) -> u64 {
    let secret = BackupSecretKey::from_armored(&keys.backup.secret_armored).unwrap();
    let mut plain = decrypt_stream(store.read(key).await.unwrap(), &secret);
    let mut out = std::fs::File::create(file).unwrap();
    let mut size = 0;
    while let Some(chunk) = plain.next().await {
        let chunk = chunk.expect("the data object decrypts and authenticates");
        size += chunk.len() as u64;
        out.write_all(&chunk).unwrap();
    }
    size
}

/// The objects under the namespace.
async fn objects(namespace: &str) -> Vec<String> {
    let listed = gcs()
        .await
        .list_all(&format!("{namespace}/"))
        .await
        .unwrap();
    listed.into_iter().map(|o| o.key).collect()
}

async fn assert_nothing_committed(namespace: &str, what: &str) {
    let keys = objects(namespace).await;
    assert!(
        keys.iter()
            .all(|k| !k.ends_with("manifest.json") && !k.ends_with(".sig")),
        "{what}: a manifest or signature was written: {keys:?}"
    );
}

/// The signed manifest of `summary`'s backup, verified.
async fn verified_manifest(summary: &BaseBackupSummary, keys: &TestKeys) -> (BackupId, Manifest) {
    let id: BackupId = summary.backup_id.parse().unwrap();
    let store = gcs().await;
    let bytes = store.get_bytes(&id.manifest_key(), 1 << 20).await.unwrap();
    let signature = store.get_bytes(&id.signature_key(), 1 << 16).await.unwrap();
    let verifying = VerifyingKey::from_armored(&keys.signing.public_armored).unwrap();
    let manifest = verify_manifest_at(&bytes, &signature, &[verifying], &id)
        .expect("the manifest verifies with the signing public key");
    (id, manifest)
}

/// Decrypts `summary`'s data object into `dir` and, for `tar.zst`,
/// decompresses it with the zstd command; returns the tar's path.
async fn decrypt_to_tar(
    summary: &BaseBackupSummary,
    manifest: &Manifest,
    keys: &TestKeys,
    format: &str,
    dir: &Path,
) -> std::path::PathBuf {
    let plain = dir.join(format!("base.{format}"));
    let size = decrypt_to(&gcs().await, &summary.data_object, keys, &plain).await;
    assert_eq!(size, manifest.plaintext_size);
    assert_eq!(size, summary.plaintext_bytes);
    if format != "tar.zst" {
        return plain;
    }
    let tar = dir.join("base.tar");
    run(Command::new("zstd")
        .arg("-q")
        .arg("-d")
        .arg(&plain)
        .arg("-o")
        .arg(&tar));
    let tar_size = std::fs::metadata(&tar).unwrap().len();
    assert!(
        tar_size > 2 * size,
        "{tar_size} bytes of tar from {size} compressed"
    );
    tar
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_base_backup_is_signed_and_decrypts_to_a_tar_pg_verifybackup_accepts() {
    let cluster = archiving_cluster();
    let keys = TestKeys::generate();
    // The server's zstd (the default), and a plain tar at level 0.
    for (level, format) in [(None, "tar.zst"), (Some("0"), "tar")] {
        check_base_backup(&cluster, &keys, level, format).await;
    }
}

async fn check_base_backup(cluster: &Cluster, keys: &TestKeys, level: Option<&str>, format: &str) {
    let ns = unique_namespace("basebackup");
    let url = cluster.url_as(BACKUP_ROLE, "postgres");
    let config = config_at(keys, &url, &ns, cluster.bindir(), false, level).await;
    let store = gcs().await;

    let summary = run_base_backup(&config, &store)
        .await
        .expect("the base backup succeeds");
    eprintln!("{}", serde_json::to_string_pretty(&summary).unwrap());

    // Filed under the cluster's series, with the three objects of a backup.
    let sysid = cluster.system_identifier();
    let (id, manifest) = verified_manifest(&summary, keys).await;
    assert_eq!(id.system_identifier(), Some(sysid));
    assert_eq!(id.namespace.as_str(), ns);
    let mut expected = vec![id.data_key(), id.manifest_key(), id.signature_key()];
    expected.sort();
    assert_eq!(objects(&ns).await, expected);
    assert_eq!(summary.data_object, id.data_key());
    assert_eq!(summary.manifest_object, id.manifest_key());

    // The manifest describes the cluster and its WAL.
    assert_eq!(manifest.dump_format, format);
    assert!(manifest.tables.is_empty());
    assert_eq!(manifest.signer, keys.signer().fingerprint());
    let info = manifest.base_backup.clone().expect("base_backup is set");
    assert_eq!(info, summary.base_backup);
    assert_eq!(info.system_identifier, sysid.to_string());
    assert_eq!(info.timeline, 1);
    let server_version_num: u32 = cluster.sql("SHOW server_version_num").parse().unwrap();
    assert_eq!(info.server_version_num, server_version_num);
    assert_eq!(info.wal_segment_size, 16 << 20);
    let (start, stop): (Lsn, Lsn) = (
        info.start_lsn.parse().unwrap(),
        info.stop_lsn.parse().unwrap(),
    );
    assert!(start <= stop, "{start} > {stop}");
    assert_eq!(
        info.start_wal,
        WalFile::segment(1, start.segment(16 << 20), 16 << 20).name()
    );
    // The server names the file holding the last byte before `stop` so too.
    assert_eq!(
        info.stop_wal,
        cluster.sql(&format!("SELECT pg_walfile_name('{stop}')"))
    );

    // The data decrypts (and decompresses) to the whole tar:
    // pg_verifybackup accepts it.
    let dir = tempfile::tempdir().unwrap();
    let tar = decrypt_to_tar(&summary, &manifest, keys, format, dir.path()).await;
    // The server's archive, then the one with backup_manifest: `tar -i`.
    let listing = run(Command::new("tar").arg("-itvf").arg(&tar));
    let regular = listing.lines().filter(|l| l.starts_with('-')).count() as u64;
    assert_eq!(info.files, regular);
    let extracted = dir.path().join("data");
    std::fs::create_dir(&extracted).unwrap();
    run(Command::new("tar")
        .arg("-ixf")
        .arg(&tar)
        .arg("-C")
        .arg(&extracted));
    let backup_manifest = std::fs::read(extracted.join("backup_manifest")).unwrap();
    assert_eq!(
        info.backup_manifest_sha256,
        hex::encode(Sha256::digest(&backup_manifest))
    );
    let label = std::fs::read_to_string(extracted.join("backup_label")).unwrap();
    assert!(
        label.contains(&format!(
            "START WAL LOCATION: {start} (file {})",
            info.start_wal
        )),
        "{label}"
    );
    assert!(label.contains(&format!("LABEL: backstop {id}")), "{label}");
    run(Command::new(cluster.program("pg_verifybackup"))
        .arg("-n")
        .arg(&extracted));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_cut_off_midway_or_refused_commits_nothing() {
    let cluster = archiving_cluster();
    let keys = TestKeys::generate();
    let store = gcs().await;
    let url = cluster.url_as(BACKUP_ROLE, "postgres");

    // The walsender is terminated while it streams (slowed to 1 MB/s so
    // there is a midway): the job fails and commits nothing.
    let ns = unique_namespace("basebackup-cut");
    let mut slow = config(&keys, &url, &ns, cluster.bindir(), false).await;
    slow.max_rate_kb = Some(1024);
    let backup = tokio::spawn(async move {
        let store = gcs().await;
        run_base_backup(&slow, &store).await
    });
    let mut killed = String::new();
    for _ in 0..300 {
        killed = cluster.sql(
            "SELECT string_agg(pg_terminate_backend(pid)::text, ',') FROM pg_stat_progress_basebackup WHERE phase = 'streaming database files'",
        );
        if !killed.is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(
        killed, "true",
        "a walsender was seen streaming and terminated"
    );
    let err = backup.await.unwrap().unwrap_err();
    assert!(matches!(err, BaseBackupError::Stream { .. }), "{err:?}");
    let shown = err.to_string();
    assert!(shown.contains("terminating connection"), "{shown}");
    assert!(shown.contains("no manifest was written"), "{shown}");
    assert_nothing_committed(&ns, "terminated midway").await;

    // The server refuses the replication connection: its own words reach
    // the error.
    cluster.sql("CREATE ROLE refused LOGIN REPLICATION");
    let hba = cluster.data_dir().join("pg_hba.conf");
    let text = std::fs::read_to_string(&hba).unwrap();
    std::fs::write(
        &hba,
        format!("host replication refused 127.0.0.1/32 reject\n{text}"),
    )
    .unwrap();
    cluster.sql("SELECT pg_reload_conf()");
    let ns = unique_namespace("basebackup-hba");
    let config = config(
        &keys,
        &cluster.url_as("refused", "postgres"),
        &ns,
        cluster.bindir(),
        false,
    )
    .await;
    let err = run_base_backup(&config, &store).await.unwrap_err();
    let shown = err.to_string();
    assert!(matches!(err, BaseBackupError::Connect { .. }), "{err:?}");
    assert!(shown.contains("pg_hba.conf"), "{shown}");
    assert!(shown.contains("nothing was written"), "{shown}");
    assert_nothing_committed(&ns, "refused replication").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preconditions_are_checked_before_anything_is_written() {
    let keys = TestKeys::generate();
    let store = gcs().await;

    // A role without REPLICATION.
    let cluster = archiving_cluster();
    cluster.sql("CREATE ROLE plain LOGIN");
    let ns = unique_namespace("basebackup-role");
    let url = cluster.url_as("plain", "postgres");
    let err = run_base_backup(
        &config(&keys, &url, &ns, cluster.bindir(), false).await,
        &store,
    )
    .await
    .unwrap_err();
    assert!(
        matches!(err, BaseBackupError::NoReplication { .. }),
        "{err:?}"
    );
    assert!(
        err.to_string().contains("ALTER ROLE plain REPLICATION"),
        "{err}"
    );
    assert!(objects(&ns).await.is_empty());

    // Nothing listens: the connection's error, nothing written.
    let port = cluster.port();
    drop(cluster);
    let url = format!("postgres://{BACKUP_ROLE}@127.0.0.1:{port}/postgres");
    let err = run_base_backup(
        &config(&keys, &url, &ns, Path::new("/nonexistent"), false).await,
        &store,
    )
    .await
    .unwrap_err();
    assert!(matches!(err, BaseBackupError::Server { .. }), "{err:?}");
    assert!(err.to_string().contains("nothing was written"), "{err}");
    assert!(objects(&ns).await.is_empty());

    // archive_mode off: refused, unless allowed.
    let plain = Cluster::start(&[("wal_level", "replica")]).expect("a test cluster starts");
    plain.sql(&format!("CREATE ROLE {BACKUP_ROLE} LOGIN REPLICATION"));
    let url = plain.url_as(BACKUP_ROLE, "postgres");
    let err = run_base_backup(
        &config(&keys, &url, &ns, plain.bindir(), false).await,
        &store,
    )
    .await
    .unwrap_err();
    assert!(matches!(err, BaseBackupError::NoArchive), "{err:?}");
    assert!(err.to_string().contains("--allow-no-archive"), "{err}");
    assert!(objects(&ns).await.is_empty());
    let summary = run_base_backup(
        &config(&keys, &url, &ns, plain.bindir(), true).await,
        &store,
    )
    .await
    .expect("allowed without archiving");
    let (_, manifest) = verified_manifest(&summary, &keys).await;
    assert_eq!(
        manifest.base_backup.unwrap().system_identifier,
        plain.system_identifier().to_string()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_with_scram_or_md5_passwords_authenticate_and_a_wrong_password_is_not_shown() {
    let cluster = archiving_cluster();
    let keys = TestKeys::generate();
    let store = gcs().await;
    cluster.sql(
        "SET password_encryption = 'scram-sha-256'; CREATE ROLE scram LOGIN REPLICATION PASSWORD 's3cr&t pw'; \
         SET password_encryption = 'md5'; CREATE ROLE md5er LOGIN REPLICATION PASSWORD 'md5-pw'",
    );
    let hba = cluster.data_dir().join("pg_hba.conf");
    let text = std::fs::read_to_string(&hba).unwrap();
    std::fs::write(
        &hba,
        format!(
            "host all scram 127.0.0.1/32 scram-sha-256\nhost replication scram 127.0.0.1/32 scram-sha-256\n\
             host all md5er 127.0.0.1/32 md5\nhost replication md5er 127.0.0.1/32 md5\n{text}"
        ),
    )
    .unwrap();
    cluster.sql("SELECT pg_reload_conf()");
    let port = cluster.port();
    for (role, password) in [("scram", "s3cr%26t%20pw"), ("md5er", "md5-pw")] {
        let ns = unique_namespace("basebackup-auth");
        let url = format!("postgres://{role}:{password}@127.0.0.1:{port}/postgres");
        let config = config(&keys, &url, &ns, cluster.bindir(), false).await;
        let summary = run_base_backup(&config, &store)
            .await
            .unwrap_or_else(|e| panic!("{role}: {e}"));
        let (_, manifest) = verified_manifest(&summary, &keys).await;
        assert_eq!(manifest.dump_format, "tar.zst", "{role}");
    }
    let ns = unique_namespace("basebackup-auth");
    let url = format!("postgres://scram:not-the-password@127.0.0.1:{port}/postgres");
    let err = run_base_backup(
        &config(&keys, &url, &ns, cluster.bindir(), false).await,
        &store,
    )
    .await
    .unwrap_err();
    let shown = err.to_string();
    assert!(shown.contains("password authentication failed"), "{shown}");
    assert!(!shown.contains("not-the-password"), "{shown}");
    assert!(objects(&ns).await.is_empty());
}
