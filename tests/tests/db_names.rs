//! Any database name PostgreSQL accepts can be backed up (issue 17 item 5):
//! names with spaces, non-ASCII letters, `%` and `/` are dumped under an
//! encoded key segment, carry their real name in the manifest, replicate,
//! count for retention, and restore (with Backstop and with the break-glass
//! script) into a database named just as freely.
//!
//!   tests/stack/stack.sh run -- cargo test -p backstop-tests --test db_names

use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use backstop_core::config::Env;
use backstop_core::crypto::{NoKms, VerifyingKey, verify_manifest_at};
use backstop_core::events::{ObjectRef, StorageEvent};
use backstop_core::manifest::MAX_MANIFEST_BYTES;
use backstop_core::naming::BackupId;
use backstop_core::replicate::{Outcome, Replicator};
use backstop_core::retention::{Inventory, ManifestVerifier, PolicySet, SignatureVerifier, plan};
use backstop_core::store::{ObjectStore, ObjectStoreExt};
use backstop_core::trust::TrustedKeys;
use backstop_postgres::dump::{DumpConfig, DumpSettings, DumpSummary, run_dump};
use backstop_postgres::pg;
use backstop_postgres::restore::{Clouds, NoProgress, RestoreConfig, RestoreSettings, restore};
use backstop_tests::backups::{TestKeys, unique_namespace};
use backstop_tests::restore_fixture::{
    create_database, drop_database, pg_bindir, row_counts, server_url,
};
use backstop_tests::{gcs, s3, stack_env};

/// A few tables, one in a schema and under a name that need quoting too.
const SEED: &str = r#"
CREATE SCHEMA "Sch ë";
CREATE TABLE "Sch ë"."t/1" AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 1234) g;
CREATE TABLE public.plain AS SELECT g AS id FROM generate_series(1, 77) g;
"#;

/// One database, seeded; its expected key segment written out by hand (not
/// computed with the code under test).
struct Source {
    real: String,
    segment: String,
    url: String,
}

impl Source {
    async fn create(real: String, segment: String) -> Self {
        let url = create_database(&real).await;
        pg::connect(&url)
            .await
            .unwrap()
            .batch_execute(SEED)
            .await
            .expect("seed runs");
        Source { real, segment, url }
    }
}

fn tag() -> String {
    format!("{:08x}", rand::random::<u32>())
}

async fn dump(keys: &TestKeys, namespace: &str, source: &Source) -> DumpSummary {
    let settings = DumpSettings {
        database_url: Some(source.url.clone()),
        namespace: Some(namespace.to_string()),
        recipients: Some(format!("file:{}", keys.path("backup.pub.asc").display())),
        signing_key: Some(format!("file:{}", keys.path("signing.sec.asc").display())),
        pg_bindir: Some(pg_bindir()),
        compression_level: None,
    };
    let config = DumpConfig::load(settings, &NoKms)
        .await
        .unwrap_or_else(|e| panic!("dump of database {:?} is refused: {e}", source.real));
    run_dump(&config, &gcs().await)
        .await
        .unwrap_or_else(|e| panic!("dump of database {:?} fails: {e}", source.real))
}

/// The keys are `<namespace>/<segment>/<stamp>/...`, and the signed
/// manifest names the real database.
async fn check_objects(keys: &TestKeys, namespace: &str, source: &Source, summary: &DumpSummary) {
    let stamp = summary.backup_id.rsplit('/').next().unwrap();
    let backup_id = format!("{namespace}/{}/{stamp}", source.segment);
    assert_eq!(summary.backup_id, backup_id);
    assert_eq!(summary.database, source.real);
    assert_eq!(summary.data_object, format!("{backup_id}/data.pgdump.pgp"));
    let expected: Vec<String> = ["data.pgdump.pgp", "manifest.json", "manifest.json.sig"]
        .iter()
        .map(|f| format!("{backup_id}/{f}"))
        .collect();
    for store in [&gcs().await as &dyn ObjectStore, &s3().await] {
        let mut listed: Vec<String> = store
            .list_all(&format!("{namespace}/"))
            .await
            .unwrap()
            .into_iter()
            .map(|m| m.key)
            .collect();
        listed.sort();
        assert_eq!(listed, expected, "objects in {}", store.url());
    }
    let gcs = gcs().await;
    let id: BackupId = backup_id.parse().expect("the backup id parses");
    assert_eq!(id.to_string(), backup_id);
    let (manifest_key, signature_key) = (id.manifest_key(), id.signature_key());
    let (manifest, signature) = tokio::join!(
        gcs.get_bytes(&manifest_key, MAX_MANIFEST_BYTES),
        gcs.get_bytes(&signature_key, MAX_MANIFEST_BYTES),
    );
    let signing = VerifyingKey::from_armored(&keys.signing.public_armored).unwrap();
    let m = verify_manifest_at(&manifest.unwrap(), &signature.unwrap(), &[signing], &id)
        .expect("the manifest verifies at its encoded key");
    assert_eq!(m.database, source.real);
    assert_eq!(m.backup_id, backup_id);
}

/// The replicator, handed the manifest's finalize event, copies the backup
/// to S3 under the same keys.
async fn replicate(keys: &TestKeys, namespace: &str, summary: &DumpSummary) {
    let env = Env::from_pairs(keys.env_pairs());
    let trusted = TrustedKeys::from_env(&env).await.unwrap();
    let bucket = stack_env().required("BACKSTOP_GCS_BUCKET", "").unwrap();
    let replicator = Replicator {
        source: Arc::new(gcs().await),
        target: Arc::new(s3().await),
        source_bucket: bucket.clone(),
        signing_keys: trusted.signing,
        recipients: trusted.recipients,
        namespaces: vec![namespace.to_string()],
        alerts: Arc::new(backstop_core::alerts::LogAlerts),
    };
    let event = StorageEvent::Finalized(ObjectRef {
        bucket,
        name: summary.manifest_object.clone(),
        generation: None,
        size: None,
    });
    let outcome = replicator.handle(&event).await.expect("replication");
    assert!(matches!(outcome, Outcome::Replicated { .. }), "{outcome:?}");
}

/// Retention groups the backup by its real name, verifies it and keeps it.
async fn check_retention(keys: &TestKeys, namespace: &str, source: &Source) {
    let gcs = gcs().await;
    let listing = gcs.list_all(&format!("{namespace}/")).await.unwrap();
    let mut inventory = Inventory::from_listing(gcs.url(), listing);
    assert!(inventory.foreign.is_empty(), "{:?}", inventory.foreign);
    let env = Env::from_pairs(keys.env_pairs());
    let verifier = SignatureVerifier {
        keys: TrustedKeys::from_env(&env).await.unwrap(),
    };
    let entries: Vec<_> = inventory.backups.values().cloned().collect();
    assert_eq!(entries.len(), 1);
    for entry in entries {
        let verdict = verifier.verify(&gcs, &entry.id, &entry.objects).await;
        inventory.set_verification(&entry.id, verdict.unwrap());
    }
    let entry = inventory.backups.values().next().unwrap();
    assert!(entry.manifest().is_some(), "{:?}", entry.verification);
    let p = plan(&inventory, &PolicySet::default(), chrono::Utc::now());
    assert_eq!(p.series.len(), 1);
    assert_eq!(p.series[0].series.database, source.real);
    assert!(p.deletes.is_empty(), "{:?}", p.deletes);
}

/// Restores with `restore` options as the CLI passes them: by database
/// (`--database`) or by backup id (`--backup`), into `target`.
async fn restore_into(keys: &TestKeys, settings: RestoreSettings, source: &Source, target: &str) {
    let settings = RestoreSettings {
        server_url: Some(server_url()),
        target_db: Some(target.to_string()),
        backup_key: Some(format!("file:{}", keys.path("backup.sec.asc").display())),
        signing_public_key: Some(format!("file:{}", keys.path("signing.pub.asc").display())),
        pg_bindir: Some(pg_bindir()),
        ..settings
    };
    let config = RestoreConfig::load(settings, &NoKms)
        .await
        .expect("restore settings");
    let gcs = gcs().await;
    let clouds = Clouds {
        primary: Some(&gcs),
        replica: None,
    };
    let report = restore(&config, clouds, &NoProgress)
        .await
        .unwrap_or_else(|e| panic!("restore into {target:?} fails: {e}"));
    assert!(report.success, "{report:?}");
    assert_eq!(report.target_database, target);
    let target_url = pg::with_database(&server_url(), target).unwrap();
    let restored = row_counts(&target_url).await;
    assert_eq!(restored, row_counts(&source.url).await);
    assert_eq!(restored.get("Sch ë.t/1"), Some(&1234));
}

/// `tests/break-glass.sh` finds the newest backup of the namespace and
/// restores it with curl, gpg and pg_restore alone.
async fn break_glass(keys: &TestKeys, namespace: &str, source: &Source, target: &str) {
    let gnupg = keys.path("gnupg");
    std::fs::create_dir_all(&gnupg).unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&gnupg, std::fs::Permissions::from_mode(0o700)).unwrap();
    }
    let status = Command::new("gpg")
        .env("GNUPGHOME", &gnupg)
        .args(["--batch", "--quiet", "--import"])
        .arg(keys.path("backup.sec.asc"))
        .arg(keys.path("signing.pub.asc"))
        .status()
        .unwrap();
    assert!(status.success());
    let target_url = create_database(target).await;
    let workdir = keys.path("work");
    std::fs::create_dir_all(&workdir).unwrap();
    let env = stack_env();
    let out = Command::new("bash")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("break-glass.sh"))
        .arg(namespace)
        .arg(&target_url)
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
    let _ = Command::new("gpgconf")
        .args(["--kill", "gpg-agent"])
        .env("GNUPGHOME", &gnupg)
        .status();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "break-glass.sh failed: {stderr}");
    assert_eq!(row_counts(&target_url).await, row_counts(&source.url).await);
}

/// Everything above, for one database name.
async fn round_trip(real: String, segment: String) {
    let source = Source::create(real, segment).await;
    let keys = TestKeys::generate();
    let namespace = unique_namespace("it-dbnames");
    let summary = dump(&keys, &namespace, &source).await;
    replicate(&keys, &namespace, &summary).await;
    check_objects(&keys, &namespace, &source, &summary).await;
    check_retention(&keys, &namespace, &source).await;

    let by_database = format!("{} restored", source.real);
    let by_id = format!("{} by id", source.real);
    let glass = format!("{} glass", source.real);
    let filter = RestoreSettings {
        namespace: Some(namespace.clone()),
        database: Some(source.real.clone()),
        ..Default::default()
    };
    restore_into(&keys, filter, &source, &by_database).await;
    let chosen = RestoreSettings {
        namespace: Some(namespace.clone()),
        backup: Some(summary.backup_id.clone()),
        ..Default::default()
    };
    restore_into(&keys, chosen, &source, &by_id).await;
    break_glass(&keys, &namespace, &source, &glass).await;

    for db in [&source.real, &by_database, &by_id, &glass] {
        drop_database(db).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_ascii_name_with_a_space() {
    let t = tag();
    round_trip(format!("Ünï app {t}"), format!("%C3%9Cn%C3%AF%20app%20{t}")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn name_that_looks_percent_encoded() {
    let t = tag();
    round_trip(format!("a%2Fb{t}"), format!("a%252Fb{t}")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn name_with_a_slash_and_a_leading_dot() {
    let t = tag();
    round_trip(format!(".a/b{t}"), format!("%2Ea%2Fb{t}")).await;
}
