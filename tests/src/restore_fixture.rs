//! A restore test's world on the local stack: databases on the stack's
//! PostgreSQL, and [`Fixture`], a seeded source database with fresh keys
//! and one backup of it in GCS, made by the real dump job.

use std::collections::BTreeMap;
use std::path::PathBuf;

use backstop_core::crypto::{
    BackupSecretKey, GeneratedKey, KeyAlgorithm, NoKms, SigningKey, VerifyingKey,
    generate_backup_key, generate_signing_key, sign_manifest,
};
use backstop_core::manifest::{MAX_MANIFEST_BYTES, Manifest};
use backstop_core::naming::{BackupId, Namespace};
use backstop_core::store::{ObjectStore, ObjectStoreExt, PutOptions};
use backstop_postgres::dump::{DumpConfig, DumpSettings, run_dump};
use backstop_postgres::pg::{self, PgTools};
use backstop_postgres::restore::{
    Clouds, NoProgress, RestoreConfig, RestoreError, RestoreReport, Target, restore,
};
use bytes::Bytes;

use crate::{gcs, stack_env};

/// The source database's content (tests/fixtures/seed.sql).
pub const SEED_SQL: &str = include_str!("../fixtures/seed.sql");

// ---- helpers ---------------------------------------------------------------

pub fn server_url() -> String {
    stack_env()
        .optional("BACKSTOP_TEST_DATABASE_URL")
        .expect("BACKSTOP_TEST_DATABASE_URL from the stack")
}

pub fn pg_bindir() -> PathBuf {
    PathBuf::from(
        stack_env()
            .optional("PG_BINDIR")
            .expect("PG_BINDIR from the stack"),
    )
}

pub fn unique(tag: &str) -> String {
    format!("{tag}_{:08x}", rand::random::<u32>())
}

pub async fn create_database(name: &str) -> String {
    let admin = pg::connect(&server_url()).await.unwrap();
    admin
        .batch_execute(&format!("CREATE DATABASE {}", pg::quote_ident(name)))
        .await
        .unwrap();
    pg::with_database(&server_url(), name).unwrap()
}

pub async fn drop_database(name: &str) {
    let admin = pg::connect(&server_url()).await.unwrap();
    let _ = admin
        .batch_execute(&format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            pg::quote_ident(name)
        ))
        .await;
}

pub async fn database_exists(name: &str) -> bool {
    let admin = pg::connect(&server_url()).await.unwrap();
    admin
        .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&name])
        .await
        .unwrap()
        .is_some()
}

/// Row count per user table (empty: the database holds no user table).
pub async fn row_counts(url: &str) -> BTreeMap<String, u64> {
    pg::row_counts(&pg::connect(url).await.unwrap())
        .await
        .unwrap()
}

pub fn private_dir(tag: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(&format!("bs-{tag}-"))
        .tempdir()
        .unwrap()
}

/// A seeded source database, fresh keys and one backup of it in GCS.
pub struct Fixture {
    pub dir: tempfile::TempDir,
    pub backup_key: GeneratedKey,
    pub signing_key: GeneratedKey,
    pub namespace: Namespace,
    pub source_db: String,
    pub source_url: String,
    pub id: BackupId,
}

impl Fixture {
    pub async fn new(tag: &str) -> Self {
        Self::with_sql(tag, "").await
    }

    /// The fixture, with `extra` run in the source database after the seed.
    pub async fn with_sql(tag: &str, extra: &str) -> Self {
        let dir = private_dir(tag);
        let backup_key = generate_backup_key(
            "Restore auth backup <backup@example.invalid>",
            KeyAlgorithm::Curve25519,
        )
        .unwrap();
        let signing_key = generate_signing_key(
            "Restore auth signing <sign@example.invalid>",
            KeyAlgorithm::Curve25519,
        )
        .unwrap();
        let file = |name: &str| dir.path().join(name);
        for (name, text) in [
            ("backup.pub.asc", backup_key.public_armored.as_str()),
            ("backup.sec.asc", backup_key.secret_armored.as_str()),
            ("signing.sec.asc", signing_key.secret_armored.as_str()),
            ("signing.pub.asc", signing_key.public_armored.as_str()),
        ] {
            std::fs::write(file(name), text).unwrap();
        }
        let source_db = unique(&format!("ra_src_{tag}"));
        let source_url = create_database(&source_db).await;
        pg::connect(&source_url)
            .await
            .unwrap()
            .batch_execute(&format!("{SEED_SQL};\n{extra}"))
            .await
            .expect("seed.sql runs");
        let namespace =
            Namespace::new(&format!("it-rauth-{tag}-{:08x}", rand::random::<u32>())).unwrap();
        let settings = DumpSettings {
            database_url: Some(source_url.clone()),
            namespace: Some(namespace.to_string()),
            recipients: Some(format!("file:{}", file("backup.pub.asc").display())),
            signing_key: Some(format!("file:{}", file("signing.sec.asc").display())),
            pg_bindir: Some(pg_bindir()),
            compression_level: None,
        };
        let config = DumpConfig::load(settings, &NoKms).await.unwrap();
        let summary = run_dump(&config, &gcs().await)
            .await
            .expect("dump succeeds");
        Fixture {
            id: summary.backup_id.parse().unwrap(),
            dir,
            backup_key,
            signing_key,
            namespace,
            source_db,
            source_url,
        }
    }

    pub fn config(&self, target: Target) -> RestoreConfig {
        RestoreConfig {
            namespace: self.namespace.clone(),
            database: None,
            backup: None,
            target,
            replace: false,
            source_database_url: None,
            tools: PgTools {
                bindir: Some(pg_bindir()),
            },
            secret_key: BackupSecretKey::from_armored(&self.backup_key.secret_armored).unwrap(),
            signing_keys: vec![
                VerifyingKey::from_armored(&self.signing_key.public_armored).unwrap(),
            ],
            write_drill: true,
            jobs: 1,
            spool_dir: std::env::temp_dir(),
            max_clock_skew: chrono::TimeDelta::minutes(10),
        }
    }

    pub fn fresh(&self, database: &str) -> Target {
        Target::OnServer {
            server_url: server_url(),
            database: database.to_string(),
        }
    }

    pub async fn manifest(&self, store: &dyn ObjectStore) -> Manifest {
        let bytes = store
            .get_bytes(&self.id.manifest_key(), MAX_MANIFEST_BYTES)
            .await
            .unwrap();
        Manifest::parse(&bytes).unwrap()
    }

    pub async fn data(&self, store: &dyn ObjectStore) -> Vec<u8> {
        store
            .get_bytes(&self.id.data_key(), 256 << 20)
            .await
            .unwrap()
            .to_vec()
    }

    /// Replaces the data object (the manifest and signature stay).
    pub async fn put_data(&self, store: &dyn ObjectStore, data: &[u8]) {
        let body = Bytes::copy_from_slice(data);
        store
            .put_bytes(&self.id.data_key(), body, PutOptions::default())
            .await
            .unwrap();
    }

    /// Signs `manifest` with the fixture's signing key and stores it with
    /// its signature where its backup id says (signature first).
    pub async fn publish(&self, store: &dyn ObjectStore, manifest: &Manifest) {
        let key = SigningKey::from_armored(&self.signing_key.secret_armored).unwrap();
        let (bytes, sig) = sign_manifest(manifest, &key).unwrap();
        let id: BackupId = manifest.backup_id.parse().unwrap();
        store
            .put_bytes(&id.signature_key(), Bytes::from(sig), PutOptions::default())
            .await
            .unwrap();
        store
            .put_bytes(
                &id.manifest_key(),
                Bytes::from(bytes),
                PutOptions::default(),
            )
            .await
            .unwrap();
    }

    pub async fn cleanup(self, extra: &[&str]) {
        drop_database(&self.source_db).await;
        for db in extra {
            drop_database(db).await;
        }
    }
}

impl Drop for Fixture {
    /// A test that ran `gpg` with `GNUPGHOME` under the fixture's directory
    /// leaves an agent behind: stop it before the directory goes.
    fn drop(&mut self) {
        let gnupg = self.dir.path().join("gnupg");
        if gnupg.exists() {
            let _ = std::process::Command::new("gpgconf")
                .args(["--kill", "gpg-agent"])
                .env("GNUPGHOME", &gnupg)
                .status();
        }
    }
}

/// Restores from `store` alone (no replica).
pub async fn restore_from(
    config: &RestoreConfig,
    store: &dyn ObjectStore,
) -> Result<RestoreReport, RestoreError> {
    let clouds = Clouds {
        primary: Some(store),
        replica: None,
    };
    restore(config, clouds, &NoProgress).await
}

/// The newest drill record of backup `id` in `store`, and its key.
pub async fn newest_drill(
    store: &dyn ObjectStore,
    id: &BackupId,
) -> (String, backstop_core::drill::DrillRecord) {
    let prefix = format!("{}{id}/", backstop_core::naming::DRILLS_PREFIX);
    let key = store
        .list_all(&prefix)
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.key)
        .max()
        .unwrap_or_else(|| panic!("no drill record under {prefix} in {}", store.url()));
    let bytes = store.get_bytes(&key, 1 << 20).await.unwrap();
    let record = backstop_core::drill::DrillRecord::parse(&bytes).unwrap();
    assert_eq!(record.key().unwrap(), key, "a record lives at its own key");
    (key, record)
}
