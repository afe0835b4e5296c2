//! Shared helpers for the integration tests. The tests run inside the local
//! stack (`tests/stack/stack.sh run -- ...`), which exports the standard
//! endpoint variables; clients are built exactly as production builds them.

use backstop_cloud::gcs::GcsStore;
use backstop_cloud::s3::S3Store;
use backstop_core::config::Env;

/// The process environment, after checking that the local stack is up.
pub fn stack_env() -> Env {
    let env = Env::from_process();
    assert!(
        env.optional("BACKSTOP_STACK").is_some(),
        "integration tests need the local stack: run them with `tests/run-all` or `tests/stack/stack.sh run -- cargo test`"
    );
    env
}

pub async fn gcs() -> GcsStore {
    GcsStore::from_env(&stack_env())
        .await
        .expect("GCS client from the stack's environment")
}

/// A GCS client for writing large fixtures: fake-gcs-server hashes, copies
/// and stores a streamed upload only after its last byte, which for
/// hundreds of MiB on a busy machine can take longer than the default
/// 10 s answer deadline (seen in CI with the 520 MiB fixture).
pub async fn gcs_patient() -> GcsStore {
    let pairs = std::env::vars().filter(|(k, _)| k != "BACKSTOP_REQUEST_TIMEOUT");
    let env = Env::from_pairs(pairs.chain([("BACKSTOP_REQUEST_TIMEOUT".into(), "120s".into())]));
    assert!(
        env.optional("BACKSTOP_STACK").is_some(),
        "run inside the local stack"
    );
    GcsStore::from_env(&env)
        .await
        .expect("GCS client from the stack's environment")
}

pub async fn s3() -> S3Store {
    S3Store::from_env(&stack_env())
        .await
        .expect("S3 client from the stack's environment")
}

pub use backstop_core::store::contract::{drain_sha256, pseudo_random_stream, unique_prefix};

pub mod backups;
pub mod cluster;
pub mod counting;
pub mod lambda_api;
pub mod oidc;
pub mod pubsub;
pub mod restore_fixture;
pub mod wal;
