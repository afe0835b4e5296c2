//! Whether a key may make (or may have made) a signature: the certificate is
//! not revoked, the key had not expired when it signed, and the (sub)key is
//! flagged for signing by its owner's self-signature.
//!
//! Revocations are hard: a revoked signing key's signatures are refused
//! whatever date they carry, because whoever holds a compromised key can
//! back-date a signature. Expiry is soft: a signature made while the key was
//! valid stays valid, so that backups signed before the key expired remain
//! restorable.

use pgp::composed::SignedKeyDetails;
use pgp::packet::{Signature, SignatureType};
use pgp::types::Timestamp;

use super::{latest, subkey_binding};
use crate::crypto::CryptoError;

/// The key of a certificate that signs or signed, with what its owner said
/// about it.
#[derive(Clone)]
pub(crate) struct SignerKey<'a> {
    /// Primary fingerprint, upper-case hex.
    pub primary_fpr: String,
    /// The certificate's revocations, user ids and direct signatures.
    pub details: &'a SignedKeyDetails,
    /// When the primary key was created.
    pub primary_created: Timestamp,
    /// `None`: the primary key signs; else the subkey's fingerprint, creation
    /// time and binding (and revocation) signatures.
    pub subkey: Option<(String, Timestamp, &'a [Signature])>,
}

/// Refuses a signature made at `at` by `key` when the certificate is
/// revoked, the key was expired or not yet created at `at`, or the key is
/// not flagged for signing.
pub(crate) fn check_may_sign(key: &SignerKey<'_>, at: Timestamp) -> Result<(), CryptoError> {
    let primary = &key.primary_fpr;
    let refuse = |reason: String| CryptoError::KeyParse {
        what: format!("signing key {primary}"),
        reason,
    };
    if let Some(rev) = key
        .details
        .revocation_signatures
        .iter()
        .find(|s| s.typ() == Some(SignatureType::KeyRevocation))
    {
        return Err(refuse(format!(
            "it was revoked{}, and signatures by a revoked key are refused whatever their date; sign with a current key and remove {primary} from BACKSTOP_SIGNING_PUBLIC_KEY",
            describe_revocation(rev)
        )));
    }
    let self_sig = current_self_sig(key.details);
    check_lifetime(primary, key.primary_created, self_sig, at).map_err(refuse)?;
    match key.subkey {
        None => {
            if !self_sig.is_some_and(|s| s.key_flags().sign()) {
                return Err(refuse(
                    "its primary key is not flagged for signing (it may only certify, like a backup key); configure the signing key from `backstop keygen`, or a key whose primary or subkey has the sign flag".into(),
                ));
            }
            Ok(())
        }
        Some((ref sub, created, sigs)) => check_subkey(sub, created, sigs, at).map_err(refuse),
    }
}

fn check_subkey(
    sub: &str,
    created: Timestamp,
    sigs: &[Signature],
    at: Timestamp,
) -> Result<(), String> {
    if let Some(rev) = sigs
        .iter()
        .find(|s| s.typ() == Some(SignatureType::SubkeyRevocation))
    {
        return Err(format!(
            "its subkey {sub} that made the signature was revoked{}; signatures by a revoked subkey are refused whatever their date",
            describe_revocation(rev)
        ));
    }
    let binding = subkey_binding(sigs);
    if !binding.is_some_and(|b| b.key_flags().sign()) {
        return Err(format!(
            "its subkey {sub} that made the signature is not flagged for signing (only subkeys bound with the sign flag may sign manifests); sign with the signing key from `backstop keygen`"
        ));
    }
    check_lifetime(sub, created, binding, at)
}

/// The key must exist and must not have expired at `at`.
fn check_lifetime(
    fpr: &str,
    created: Timestamp,
    self_sig: Option<&Signature>,
    at: Timestamp,
) -> Result<(), String> {
    if at.as_secs() < created.as_secs() {
        return Err(format!(
            "the signature ({}) is older than key {fpr} ({}): a clock was wrong or the signature is forged",
            date(at.as_secs() as u64),
            date(created.as_secs() as u64)
        ));
    }
    let expiry = self_sig
        .and_then(|s| s.key_expiration_time())
        .filter(|d| d.as_secs() > 0)
        .map(|d| created.as_secs() as u64 + d.as_secs() as u64);
    match expiry {
        Some(end) if at.as_secs() as u64 >= end => Err(format!(
            "key {fpr} expired on {} and the signature was made after that, on {}; extend the key's expiry (gpg --quick-set-expire) or sign with a current key",
            date(end),
            date(at.as_secs() as u64)
        )),
        _ => Ok(()),
    }
}

/// The primary key's current self-signature: the newest user id
/// certification or direct-key signature (revocations of user ids are not
/// self-signatures of the key).
fn current_self_sig(details: &SignedKeyDetails) -> Option<&Signature> {
    use SignatureType::{CertCasual, CertGeneric, CertPersona, CertPositive, Key};
    latest(
        details
            .users
            .iter()
            .flat_map(|u| u.signatures.iter())
            .chain(details.direct_signatures.iter())
            .filter(|s| {
                matches!(
                    s.typ(),
                    Some(CertGeneric | CertPersona | CertCasual | CertPositive | Key)
                )
            }),
    )
}

/// ` on DATE (reason: ...)` for a revocation signature.
fn describe_revocation(rev: &Signature) -> String {
    let mut out = rev
        .created()
        .map(|t| format!(" on {}", date(t.as_secs() as u64)))
        .unwrap_or_default();
    if let Some(code) = rev.revocation_reason_code() {
        let text: String = rev
            .revocation_reason_string()
            .map(|b| String::from_utf8_lossy(b).into_owned())
            .unwrap_or_default()
            .chars()
            .filter(|c| !c.is_control())
            .take(120)
            .collect();
        out.push_str(&format!(" (reason: {code:?}"));
        if !text.is_empty() {
            out.push_str(&format!(", {text:?}"));
        }
        out.push(')');
    }
    out
}

fn date(secs: u64) -> String {
    chrono::DateTime::from_timestamp(secs as i64, 0)
        .map(|t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_else(|| secs.to_string())
}

#[cfg(test)]
#[path = "key_validity_tests.rs"]
mod tests;
