//! Signatures by revoked or expired keys, and by (sub)keys not flagged for
//! signing, are refused. The keys are made with rpgp and changed the way a
//! key owner (or gpg) would: a revocation, a new self-signature with an
//! expiry, a subkey bound for authentication only.

use pgp::composed::{
    ArmorOptions, Deserializable, DetachedSignature, EncryptionCaps, KeyType,
    SecretKeyParamsBuilder, SignedSecretKey, SubkeyParamsBuilder,
};
use pgp::crypto::hash::HashAlgorithm;
use pgp::packet::{
    KeyFlags, RevocationCode, SignatureConfig, SignatureType, Subpacket, SubpacketData,
};
use pgp::types::{Duration, KeyDetails, Password, SigningKey as PgpSigningKey, Tag, Timestamp};

use crate::crypto::keys::VerifyingKey;
use crate::crypto::keys::tests::test_keys;
use crate::crypto::sign::verify_bytes;

const DATA: &[u8] = b"{\"kind\":\"backstop.manifest\"}";
const DAY: u32 = 86_400;

fn secret_of(armored: &str) -> SignedSecretKey {
    SignedSecretKey::from_string(armored).unwrap().0
}

fn verifying(key: &SignedSecretKey) -> VerifyingKey {
    VerifyingKey {
        cert: key.to_public_key(),
    }
}

/// A detached signature over [`DATA`] made directly with `key`, whatever
/// its flags (as an attacker holding the key material could).
fn raw_signature(key: &impl PgpSigningKey) -> String {
    DetachedSignature::sign_binary_data(
        rand08::rngs::OsRng,
        key,
        &Password::empty(),
        HashAlgorithm::Sha256,
        DATA,
    )
    .unwrap()
    .to_armored_string(ArmorOptions::default())
    .unwrap()
}

fn self_sig_config(
    key: &SignedSecretKey,
    typ: SignatureType,
    extra: Vec<SubpacketData>,
) -> SignatureConfig {
    let mut c = SignatureConfig::v4(typ, key.primary_key.algorithm(), HashAlgorithm::Sha256);
    c.hashed_subpackets = [
        SubpacketData::SignatureCreationTime(Timestamp::now()),
        SubpacketData::IssuerFingerprint(key.fingerprint()),
    ]
    .into_iter()
    .chain(extra)
    .map(|d| Subpacket::regular(d).unwrap())
    .collect();
    c
}

/// A signing key (primary signs) created `age_days` ago, with one optional
/// Ed25519 subkey that may sign or only authenticate.
fn key_with(age_days: u32, subkey_signs: Option<bool>) -> SignedSecretKey {
    let created = Timestamp::from_secs(Timestamp::now().as_secs() - age_days * DAY);
    let subkeys = subkey_signs
        .map(|signs| {
            SubkeyParamsBuilder::default()
                .key_type(KeyType::Ed25519Legacy)
                .can_sign(signs)
                .can_authenticate(!signs)
                .can_encrypt(EncryptionCaps::None)
                .created_at(created)
                .build()
                .unwrap()
        })
        .into_iter()
        .collect();
    SecretKeyParamsBuilder::default()
        .key_type(KeyType::Ed25519Legacy)
        .can_certify(true)
        .can_sign(true)
        .can_encrypt(EncryptionCaps::None)
        .created_at(created)
        .primary_user_id("Validity test <v@example.invalid>".into())
        .subkeys(subkeys)
        .build()
        .unwrap()
        .generate(rand08::rngs::OsRng)
        .unwrap()
}

fn refusal(key: &VerifyingKey, sig: &str) -> String {
    match verify_bytes(DATA, sig.as_bytes(), std::slice::from_ref(key)) {
        Ok(fpr) => panic!("a signature by {fpr} was accepted, but the key may not sign"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn signatures_by_a_revoked_key_are_refused() {
    let mut key = secret_of(&test_keys().signing.secret_armored);
    let sig = raw_signature(&key.primary_key);
    // Accepted before the revocation.
    verify_bytes(DATA, sig.as_bytes(), &[verifying(&key)]).unwrap();
    let reason = SubpacketData::RevocationReason(RevocationCode::KeyCompromised, "stolen".into());
    let rev = self_sig_config(&key, SignatureType::KeyRevocation, vec![reason])
        .sign_key(
            &key.primary_key,
            &Password::empty(),
            key.primary_key.public_key(),
        )
        .unwrap();
    key.details.revocation_signatures.push(rev);
    // Through armor, as a configured public key would come.
    let armored = key
        .to_public_key()
        .to_armored_string(ArmorOptions::default())
        .unwrap();
    let v = VerifyingKey::from_armored(&armored).unwrap();
    let msg = refusal(&v, &sig);
    assert!(msg.contains("revoked"), "{msg}");
    assert!(msg.contains(&v.fingerprint()), "{msg}");
}

#[test]
fn signatures_made_after_the_key_expired_are_refused() {
    let mut key = key_with(2, None);
    let sig = raw_signature(&key.primary_key);
    verify_bytes(DATA, sig.as_bytes(), &[verifying(&key)]).unwrap();
    // The owner sets an expiry of one day after creation: it passed a day ago.
    let mut flags = KeyFlags::default();
    flags.set_sign(true);
    flags.set_certify(true);
    let extra = vec![
        SubpacketData::KeyFlags(flags),
        SubpacketData::KeyExpirationTime(Duration::from_secs(DAY)),
    ];
    let uid = key.details.users[0].id.clone();
    let cert = self_sig_config(&key, SignatureType::CertPositive, extra)
        .sign_certification(
            &key.primary_key,
            key.primary_key.public_key(),
            &Password::empty(),
            Tag::UserId,
            &uid,
        )
        .unwrap();
    key.details.users[0].signatures.push(cert);
    let v = VerifyingKey::from_armored(
        &key.to_public_key()
            .to_armored_string(ArmorOptions::default())
            .unwrap(),
    )
    .unwrap();
    let msg = refusal(&v, &sig);
    assert!(msg.contains("expired"), "{msg}");
}

#[test]
fn signatures_by_a_subkey_without_the_signing_flag_are_refused() {
    let key = key_with(0, Some(false));
    let sig = raw_signature(&key.secret_subkeys[0].key);
    let msg = refusal(&verifying(&key), &sig);
    assert!(msg.contains("not flagged for signing"), "{msg}");
    // A subkey bound for signing is fine.
    let key = key_with(0, Some(true));
    let sig = raw_signature(&key.secret_subkeys[0].key);
    assert_eq!(
        verify_bytes(DATA, sig.as_bytes(), &[verifying(&key)]).unwrap(),
        crate::crypto::hex_upper(key.fingerprint().as_bytes())
    );
}

#[test]
fn signatures_by_a_primary_key_that_only_certifies_are_refused() {
    // The backup key's primary certifies only (it is Ed25519, so it could
    // make a signature mathematically).
    let key = secret_of(&test_keys().backup.secret_armored);
    let sig = raw_signature(&key.primary_key);
    let msg = refusal(&verifying(&key), &sig);
    assert!(msg.contains("not flagged for signing"), "{msg}");
}
