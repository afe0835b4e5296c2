//! Tests of key generation, parsing, roles and key sources, and the
//! shared test keys ([`test_keys`]) that the other crypto tests use.

use super::*;
use std::sync::OnceLock;

/// Keys are generated once per test binary (Ed25519 is fast, but many
/// tests need them).
pub(crate) struct TestKeys {
    pub backup: GeneratedKey,
    pub backup2: GeneratedKey,
    pub signing: GeneratedKey,
    pub signing2: GeneratedKey,
}

pub(crate) fn test_keys() -> &'static TestKeys {
    static KEYS: OnceLock<TestKeys> = OnceLock::new();
    KEYS.get_or_init(|| TestKeys {
        backup: generate_backup_key(
            "Test backup <backup@example.invalid>",
            KeyAlgorithm::Curve25519,
        )
        .unwrap(),
        backup2: generate_backup_key(
            "Other backup <other@example.invalid>",
            KeyAlgorithm::Curve25519,
        )
        .unwrap(),
        signing: generate_signing_key(
            "Test signing <sign@example.invalid>",
            KeyAlgorithm::Curve25519,
        )
        .unwrap(),
        signing2: generate_signing_key(
            "Other signing <sign2@example.invalid>",
            KeyAlgorithm::Curve25519,
        )
        .unwrap(),
    })
}

#[test]
fn generated_keys_parse_in_their_roles() {
    let k = test_keys();
    let r = RecipientKey::from_armored(&k.backup.public_armored).unwrap();
    assert_eq!(r.fingerprint(), k.backup.fingerprint);
    assert_eq!(
        r.encryption_fingerprint().unwrap(),
        k.backup.working_fingerprint
    );
    let s = BackupSecretKey::from_armored(&k.backup.secret_armored).unwrap();
    assert_eq!(s.fingerprint(), k.backup.fingerprint);
    assert_eq!(s.recipient().fingerprint(), k.backup.fingerprint);
    let sig = SigningKey::from_armored(&k.signing.secret_armored).unwrap();
    assert_eq!(sig.fingerprint(), k.signing.fingerprint);
    let v = VerifyingKey::from_armored(&k.signing.public_armored).unwrap();
    assert_eq!(v.fingerprint(), k.signing.fingerprint);
    assert!(
        k.backup
            .public_armored
            .starts_with("-----BEGIN PGP PUBLIC KEY BLOCK-----")
    );
    assert!(
        k.backup
            .secret_armored
            .starts_with("-----BEGIN PGP PRIVATE KEY BLOCK-----")
    );
}

#[test]
fn keys_in_the_wrong_role_are_refused() {
    let k = test_keys();
    // A signing key has no encryption subkey.
    assert!(matches!(
        RecipientKey::from_armored(&k.signing.public_armored),
        Err(CryptoError::NoEncryptionKey { .. })
    ));
    // A public key is not a secret key.
    assert!(matches!(
        BackupSecretKey::from_armored(&k.backup.public_armored),
        Err(CryptoError::NotASecretKey { .. })
    ));
    // The backup key cannot sign (its primary only certifies).
    assert!(matches!(
        SigningKey::from_armored(&k.backup.secret_armored),
        Err(CryptoError::NoSigningCapability { .. })
    ));
    assert!(matches!(
        RecipientKey::from_armored("not a key"),
        Err(CryptoError::KeyParse { .. })
    ));
}

#[test]
fn recipient_set_knows_subkeys() {
    let k = test_keys();
    let r = RecipientKey::from_armored(&k.backup.public_armored).unwrap();
    let set = RecipientSet::new(std::slice::from_ref(&r));
    let fpr = r.encryption_fingerprint().unwrap();
    assert!(set.contains_fingerprint(&fpr));
    assert!(set.contains_fingerprint(&fpr.to_lowercase()));
    assert!(set.contains_fingerprint(&r.fingerprint()));
    let id: [u8; 8] = hex::decode(&fpr[24..]).unwrap().try_into().unwrap();
    assert!(set.contains_key_id(&id));
    assert!(!set.contains_key_id(&[0; 8]));
}

#[test]
fn key_source_settings() {
    assert_eq!(
        "file:/etc/k.asc".parse::<KeySource>().unwrap(),
        KeySource::File("/etc/k.asc".into())
    );
    assert_eq!(
        "file:///etc/k.asc".parse::<KeySource>().unwrap(),
        KeySource::File("/etc/k.asc".into())
    );
    let kms: KeySource =
        "gcpkms:projects/p/locations/global/keyRings/r/cryptoKeys/k:keys/backup.sec.asc.kms"
            .parse()
            .unwrap();
    assert_eq!(
        kms,
        KeySource::GcpKms {
            key_name: "projects/p/locations/global/keyRings/r/cryptoKeys/k".into(),
            path: "keys/backup.sec.asc.kms".into()
        }
    );
    assert_eq!(
        kms.to_string(),
        "gcpkms:projects/p/locations/global/keyRings/r/cryptoKeys/k:keys/backup.sec.asc.kms"
    );
    let inline: KeySource = "  -----BEGIN PGP PRIVATE KEY BLOCK-----\nxyz\n"
        .parse()
        .unwrap();
    assert!(matches!(inline, KeySource::Inline(_)));
    assert_eq!(inline.to_string(), "inline key");
    for bad in [
        "",
        "s3://x",
        "/plain/path",
        "gcpkms:projects/p",
        "gcpkms:nonsense:/x",
        "file:",
    ] {
        assert!(
            matches!(bad.parse::<KeySource>(), Err(CryptoError::KeySource { .. })),
            "{bad:?} should be refused"
        );
    }
}

#[tokio::test]
async fn file_source_reads_keys() {
    let k = test_keys();
    let dir = std::env::temp_dir().join(format!("backstop-keys-{:x}", rand::random::<u64>()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("signing.sec.asc");
    std::fs::write(&path, k.signing.secret_armored.as_bytes()).unwrap();
    let src: KeySource = format!("file:{}", path.display()).parse().unwrap();
    let key = SigningKey::load(&src, &NoKms).await.unwrap();
    assert_eq!(key.fingerprint(), k.signing.fingerprint);
    let missing: KeySource = format!("file:{}", dir.join("nope").display())
        .parse()
        .unwrap();
    assert!(matches!(
        SigningKey::load(&missing, &NoKms).await,
        Err(CryptoError::KeyFile { .. })
    ));
    std::fs::remove_dir_all(dir).unwrap();
}
