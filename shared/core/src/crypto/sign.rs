//! Manifest signatures: detached, armored OpenPGP signatures over the exact
//! manifest bytes (`manifest.json.sig` next to `manifest.json`).
//!
//! `gpg --verify manifest.json.sig manifest.json` accepts ours, and we
//! accept `gpg --detach-sign [--armor]` signatures made with a configured
//! signing key.

use pgp::composed::{ArmorOptions, Deserializable, DetachedSignature};
use pgp::crypto::hash::HashAlgorithm;
use pgp::packet::SignatureType;
use pgp::types::{KeyDetails, Password};

use super::keys::{SignKeyRef, SigningKey, VerifyingKey, check_may_sign};
use super::{CryptoError, hex_upper};
use crate::manifest::Manifest;
use crate::naming::BackupId;

/// Signatures larger than this are not ours.
const MAX_SIGNATURE_BYTES: usize = 64 * 1024;

/// Signs arbitrary bytes: returns an armored detached signature.
pub fn sign_bytes(data: &[u8], key: &SigningKey) -> Result<String, CryptoError> {
    let rng = rand08::rngs::OsRng;
    let pw = Password::empty();
    let err = |e: pgp::errors::Error| CryptoError::Sign(e.to_string());
    let sig = match key.signer()? {
        SignKeyRef::Primary(k) => {
            DetachedSignature::sign_binary_data(rng, k, &pw, HashAlgorithm::Sha256, data)
        }
        SignKeyRef::Sub(k) => {
            DetachedSignature::sign_binary_data(rng, k, &pw, HashAlgorithm::Sha256, data)
        }
    }
    .map_err(err)?;
    sig.to_armored_string(ArmorOptions::default()).map_err(err)
}

/// The `kind` of a sealed object: a payload and its signature in one.
pub const SEALED_KIND: &str = "backstop.signed";

/// A payload with its detached signature in one JSON object (`kind`,
/// `payload` as base64 of the exact signed bytes, armored `signature`).
#[derive(serde::Serialize, serde::Deserialize)]
struct Sealed {
    kind: String,
    payload: String,
    signature: String,
}

/// Signs `payload` and seals both into one object's bytes.
pub fn seal(payload: &[u8], key: &SigningKey) -> Result<Vec<u8>, CryptoError> {
    use base64::Engine as _;
    let sealed = Sealed {
        kind: SEALED_KIND.into(),
        payload: base64::engine::general_purpose::STANDARD.encode(payload),
        signature: sign_bytes(payload, key)?,
    };
    let mut out = serde_json::to_vec_pretty(&sealed).expect("a sealed object serializes");
    out.push(b'\n');
    Ok(out)
}

/// Opens a sealed object: verifies the signature over the payload with one
/// of `keys` before returning it (with the signer's fingerprint); nothing
/// of the payload is looked at first.
pub fn unseal(bytes: &[u8], keys: &[VerifyingKey]) -> Result<(Vec<u8>, String), CryptoError> {
    use base64::Engine as _;
    let malformed =
        |why: String| CryptoError::Manifest(crate::manifest::ManifestError::Malformed(why));
    if bytes.len() > crate::manifest::MAX_MANIFEST_BYTES {
        return Err(CryptoError::Manifest(
            crate::manifest::ManifestError::TooLarge,
        ));
    }
    let sealed: Sealed = serde_json::from_slice(bytes)
        .map_err(|e| malformed(format!("not a sealed object ({SEALED_KIND}): {e}")))?;
    if sealed.kind != SEALED_KIND {
        return Err(CryptoError::Manifest(
            crate::manifest::ManifestError::WrongKind(sealed.kind),
        ));
    }
    let payload = base64::engine::general_purpose::STANDARD
        .decode(sealed.payload.as_bytes())
        .map_err(|e| malformed(format!("payload is not base64: {e}")))?;
    let signer = verify_bytes(&payload, sealed.signature.as_bytes(), keys)?;
    Ok((payload, signer))
}

/// Serializes and signs a manifest. Returns `(manifest bytes, armored
/// detached signature)`; store both unchanged. The manifest's `signer` must
/// be this key's fingerprint.
pub fn sign_manifest(
    manifest: &Manifest,
    key: &SigningKey,
) -> Result<(Vec<u8>, String), CryptoError> {
    if !manifest.signer.eq_ignore_ascii_case(&key.fingerprint()) {
        return Err(CryptoError::SignerMismatch {
            claimed: manifest.signer.clone(),
            actual: key.fingerprint(),
        });
    }
    let bytes = manifest.to_bytes();
    let sig = sign_bytes(&bytes, key)?;
    Ok((bytes, sig))
}

/// Verifies a detached signature over `data` with one of `keys`; returns the
/// primary fingerprint of the key that made it.
pub fn verify_bytes(
    data: &[u8],
    signature: &[u8],
    keys: &[VerifyingKey],
) -> Result<String, CryptoError> {
    if keys.is_empty() {
        return Err(CryptoError::NoVerifyingKeys);
    }
    if signature.len() > MAX_SIGNATURE_BYTES {
        return Err(CryptoError::SignatureMalformed(format!(
            "{} bytes is too large for a signature",
            signature.len()
        )));
    }
    if signature.is_empty() {
        return Err(CryptoError::SignatureMalformed(
            "the signature is empty".into(),
        ));
    }
    let (sig, _) = DetachedSignature::from_reader_single(signature)
        .map_err(|e| CryptoError::SignatureMalformed(e.to_string()))?;
    let s = &sig.signature;
    match s.typ() {
        Some(SignatureType::Binary) | Some(SignatureType::Text) => {}
        other => {
            return Err(CryptoError::SignatureMalformed(format!(
                "signature type {other:?} is not a data signature"
            )));
        }
    }
    let issuer_fprs: Vec<Vec<u8>> = s
        .issuer_fingerprint()
        .iter()
        .map(|f| f.as_bytes().to_vec())
        .collect();
    let issuer_ids: Vec<Vec<u8>> = s
        .issuer_key_id()
        .iter()
        .map(|k| k.as_ref().to_vec())
        .collect();
    let matches = |fpr: &[u8]| {
        issuer_fprs.iter().any(|f| f == fpr) || issuer_ids.iter().any(|id| fpr.ends_with(id))
    };
    let issuer = issuer_fprs
        .first()
        .map(|f| hex_upper(f))
        .or_else(|| issuer_ids.first().map(|i| hex_upper(i)))
        .unwrap_or_else(|| "(no issuer in the signature)".into());

    let signed_at = s.created().ok_or_else(|| {
        CryptoError::SignatureMalformed("the signature carries no creation time".into())
    })?;
    for key in keys {
        let cert = &key.cert;
        if matches(cert.fingerprint().as_bytes()) {
            sig.verify(cert, data)
                .map_err(|_| CryptoError::BadSignature {
                    fingerprint: key.fingerprint(),
                })?;
            check_may_sign(&key.signer_key(None), signed_at)?;
            return Ok(key.fingerprint());
        }
        for sub in &cert.public_subkeys {
            if matches(sub.key.fingerprint().as_bytes()) {
                sig.verify(sub, data)
                    .map_err(|_| CryptoError::BadSignature {
                        fingerprint: hex_upper(sub.key.fingerprint().as_bytes()),
                    })?;
                check_may_sign(&key.signer_key(Some(sub)), signed_at)?;
                return Ok(key.fingerprint());
            }
        }
    }
    Err(CryptoError::UnknownSigner { issuer })
}

/// Verifies the signature over the exact manifest bytes with one of `keys`,
/// then parses the manifest (kind, version) and checks that its `signer` is
/// the key that signed. Nothing in the manifest is looked at before the
/// signature verified.
pub fn verify_manifest(
    bytes: &[u8],
    signature: &[u8],
    keys: &[VerifyingKey],
) -> Result<Manifest, CryptoError> {
    let signer = verify_bytes(bytes, signature, keys)?;
    let manifest = Manifest::parse(bytes)?;
    if !manifest.signer.eq_ignore_ascii_case(&signer) {
        return Err(CryptoError::SignerMismatch {
            claimed: manifest.signer,
            actual: signer,
        });
    }
    Ok(manifest)
}

/// [`verify_manifest`], and checks that the manifest describes the backup
/// stored at `id` (not a manifest copied from another backup).
pub fn verify_manifest_at(
    bytes: &[u8],
    signature: &[u8],
    keys: &[VerifyingKey],
    id: &BackupId,
) -> Result<Manifest, CryptoError> {
    let m = verify_manifest(bytes, signature, keys)?;
    m.check_location(id)?;
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::keys::tests::test_keys;
    use crate::manifest::ManifestError;

    fn manifest_signed_by(fpr: &str) -> Manifest {
        let mut m = crate::manifest::tests::sample();
        m.signer = fpr.to_string();
        m
    }

    #[test]
    fn sign_and_verify_round_trip() {
        let k = test_keys();
        let key = SigningKey::from_armored(&k.signing.secret_armored).unwrap();
        let m = manifest_signed_by(&k.signing.fingerprint);
        let (bytes, sig) = sign_manifest(&m, &key).unwrap();
        assert!(sig.starts_with("-----BEGIN PGP SIGNATURE-----"));
        let back = verify_manifest(&bytes, sig.as_bytes(), &[key.verifying_key()]).unwrap();
        assert_eq!(back, m);
        verify_manifest_at(
            &bytes,
            sig.as_bytes(),
            &[key.verifying_key()],
            &m.id().unwrap(),
        )
        .unwrap();
    }

    #[test]
    fn signer_field_must_match_the_key() {
        let k = test_keys();
        let key = SigningKey::from_armored(&k.signing.secret_armored).unwrap();
        let m = manifest_signed_by(&k.signing2.fingerprint);
        assert!(matches!(
            sign_manifest(&m, &key),
            Err(CryptoError::SignerMismatch { .. })
        ));
        // Signed "by hand" with a mismatching signer field: refused on verify.
        let bytes = m.to_bytes();
        let sig = sign_bytes(&bytes, &key).unwrap();
        assert!(matches!(
            verify_manifest(&bytes, sig.as_bytes(), &[key.verifying_key()]),
            Err(CryptoError::SignerMismatch { .. })
        ));
    }

    #[test]
    fn wrong_location_is_refused() {
        let k = test_keys();
        let key = SigningKey::from_armored(&k.signing.secret_armored).unwrap();
        let m = manifest_signed_by(&k.signing.fingerprint);
        let (bytes, sig) = sign_manifest(&m, &key).unwrap();
        let other: BackupId = "production/app/20261127T030001Z-000001".parse().unwrap();
        assert!(matches!(
            verify_manifest_at(&bytes, sig.as_bytes(), &[key.verifying_key()], &other),
            Err(CryptoError::Manifest(ManifestError::WrongBackup { .. }))
        ));
    }

    #[test]
    fn garbage_signatures_are_malformed() {
        let k = test_keys();
        let v = VerifyingKey::from_armored(&k.signing.public_armored).unwrap();
        for sig in [
            &b""[..],
            b"junk",
            b"-----BEGIN PGP SIGNATURE-----\n\nAAAA\n-----END PGP SIGNATURE-----\n",
        ] {
            assert!(
                matches!(
                    verify_bytes(b"data", sig, std::slice::from_ref(&v)),
                    Err(CryptoError::SignatureMalformed(_))
                ),
                "{:?}",
                String::from_utf8_lossy(sig)
            );
        }
        assert!(matches!(
            verify_bytes(b"data", b"x", &[]),
            Err(CryptoError::NoVerifyingKeys)
        ));
    }
}
