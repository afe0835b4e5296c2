//! Writes a synthetic backup (real encryption, real signatures, pseudo-random
//! plaintext) into the stack's GCS bucket for `tests/bench/replicate.sh`.
//!
//!   bench-backup NAMESPACE SIZE_MIB OUT_DIR
//!
//! Leaves in OUT_DIR: the public keys (`backup.pub.asc`, `signing.pub.asc`),
//! `finalize.json` (the Pub/Sub push envelope of the manifest's finalize
//! notification, as the sample has it) and `backup.env` (shell variables:
//! BENCH_BACKUP_ID, BENCH_DATA_KEY, BENCH_DATA_BYTES, BENCH_DATA_SHA256).

use std::path::PathBuf;

use backstop_core::naming::{BackupId, Namespace};
use backstop_tests::backups::{TestKeys, write_backup};
use base64::Engine as _;
use serde_json::json;

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [namespace, size_mib, out] = args.as_slice() else {
        eprintln!("usage: bench-backup NAMESPACE SIZE_MIB OUT_DIR");
        std::process::exit(2);
    };
    let size: u64 = size_mib.parse::<u64>().expect("SIZE_MIB is a number") << 20;
    let out = PathBuf::from(out);
    std::fs::create_dir_all(&out).unwrap();

    let keys = TestKeys::generate();
    for f in ["backup.pub.asc", "signing.pub.asc"] {
        std::fs::copy(keys.path(f), out.join(f)).unwrap();
    }
    let id = BackupId::new(
        Namespace::new(namespace).expect("valid namespace"),
        "app",
        chrono::Utc::now(),
    )
    .unwrap();
    let store = backstop_tests::gcs().await;
    let started = std::time::Instant::now();
    let manifest = write_backup(&store, &id, &keys, size).await;
    eprintln!(
        "[bench-backup] wrote {id}: {} bytes of ciphertext in {:.1} s",
        manifest.ciphertext.size,
        started.elapsed().as_secs_f64()
    );

    let bucket = store.bucket().to_string();
    let object = json!({
        "kind": "storage#object",
        "bucket": bucket,
        "name": id.manifest_key(),
        "id": format!("{bucket}/{}/1", id.manifest_key()),
        "generation": "1",
        "contentType": "application/json",
    });
    let push = json!({
        "message": {
            "attributes": {
                "bucketId": bucket,
                "objectId": id.manifest_key(),
                "objectGeneration": "1",
                "eventType": "OBJECT_FINALIZE",
                "payloadFormat": "JSON_API_V1",
            },
            "data": base64::engine::general_purpose::STANDARD.encode(object.to_string()),
            "messageId": "1",
        },
        "subscription": "projects/backstop-local/subscriptions/bench",
    });
    std::fs::write(
        out.join("finalize.json"),
        serde_json::to_vec_pretty(&push).unwrap(),
    )
    .unwrap();
    std::fs::write(
        out.join("backup.env"),
        format!(
            "BENCH_BACKUP_ID={id}\nBENCH_DATA_KEY={}\nBENCH_DATA_BYTES={}\nBENCH_DATA_SHA256={}\n",
            id.data_key(),
            manifest.ciphertext.size,
            manifest.ciphertext.sha256
        ),
    )
    .unwrap();
}
