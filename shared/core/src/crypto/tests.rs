//! Round trips and the tamper table (issue 3's list of bad input): every
//! case fails with its own error variant, in the verifier (no secrets) and,
//! where it applies, in decryption.

use bytes::Bytes;
use futures::TryStreamExt;

use super::keys::tests::test_keys;
use super::*;
use crate::manifest::{Manifest, ManifestError};
use crate::store::{ByteStream, byte_stream};

/// Deterministic filler in chunks of `chunk` bytes.
fn data(len: usize) -> Vec<u8> {
    let mut x: u32 = 0x1234_5678;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

fn chunked(bytes: &[u8], chunk: usize) -> ByteStream {
    let pieces: Vec<std::io::Result<Bytes>> = bytes
        .chunks(chunk.max(1))
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    byte_stream(futures::stream::iter(pieces))
}

fn recipient(k: &GeneratedKey) -> RecipientKey {
    RecipientKey::from_armored(&k.public_armored).unwrap()
}

fn secret(k: &GeneratedKey) -> BackupSecretKey {
    BackupSecretKey::from_armored(&k.secret_armored).unwrap()
}

async fn encrypt_all(plain: &[u8], to: &[RecipientKey], chunk: usize) -> (Vec<u8>, EncryptSummary) {
    let enc = encrypt_stream(chunked(plain, chunk), to).unwrap();
    let out: Vec<Bytes> = enc.stream.try_collect().await.unwrap();
    (out.concat(), enc.summary.get().unwrap())
}

async fn decrypt_all(
    ct: &[u8],
    key: &BackupSecretKey,
    chunk: usize,
) -> Result<Vec<u8>, CryptoError> {
    let out: Result<Vec<Bytes>, std::io::Error> =
        decrypt_stream(chunked(ct, chunk), key).try_collect().await;
    out.map(|v| v.concat()).map_err(CryptoError::from_io)
}

/// Compressible filler: text-like lines, as a `pg_dump` of a table gives.
fn lines(len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 64);
    let mut i = 0u64;
    while out.len() < len {
        out.extend_from_slice(format!("{i}\tname-{}\t{}\n", i % 977, i * 31).as_bytes());
        i += 1;
    }
    out.truncate(len);
    out
}

#[tokio::test]
async fn compressed_round_trips_across_block_boundaries() {
    let k = test_keys();
    let key = secret(&k.backup);
    let to = [recipient(&k.backup)];
    // Sizes around the 1 MiB deflate block (the literal packet adds a few
    // header bytes), several blocks across workers, random and compressible.
    for (plain, in_chunk, compressible) in [
        (Vec::new(), 1usize, false),
        (lines(1), 1, false),
        (lines((1 << 20) - 8), 65_536, true),
        (lines(1 << 20), 1 << 20, true),
        (lines(7 * (1 << 20) + 3), 3_000_001, true),
        (data(3 * (1 << 20) + 5), 100_000, false),
    ] {
        let len = plain.len();
        let enc = encrypt_stream_with(chunked(&plain, in_chunk), &to, Compression::Zip(6)).unwrap();
        let out: Vec<Bytes> = enc.stream.try_collect().await.unwrap();
        let ct = out.concat();
        let summary = enc.summary.get().unwrap();
        assert_eq!(
            summary.plaintext_size, len as u64,
            "plaintext size of {len}"
        );
        assert_eq!(summary.ciphertext.size, ct.len() as u64);
        if compressible {
            assert!(
                ct.len() * 2 < len,
                "{len} bytes of lines compress: {}",
                ct.len()
            );
        }
        let back = decrypt_all(&ct, &key, 8191).await.unwrap();
        assert!(back == plain, "compressed round trip of {len} bytes");
        let mut insp = PacketInspector::new(RecipientSet::new(&to));
        insp.feed(&ct).unwrap();
        insp.finish().unwrap();
    }
}

#[tokio::test]
async fn round_trips_across_sizes_and_chunkings() {
    let k = test_keys();
    let key = secret(&k.backup);
    let to = [recipient(&k.backup)];
    for (len, in_chunk, out_chunk) in [
        (0usize, 1usize, 1usize),
        (1, 1, 1),
        (1000, 7, 3),
        ((1 << 20) - 7, 65_536, 100_000),
        (3 * (1 << 20) + 12_345, 1 << 20, 8191),
        (5 << 20, 3_000_001, 1 << 20),
    ] {
        let plain = data(len);
        let (ct, summary) = encrypt_all(&plain, &to, in_chunk).await;
        assert_eq!(summary.plaintext_size, len as u64);
        assert_eq!(summary.ciphertext.size, ct.len() as u64);
        let back = decrypt_all(&ct, &key, out_chunk).await.unwrap();
        assert!(back == plain, "round trip of {len} bytes");
        // And the inspector accepts it, fed in odd pieces.
        let mut insp = PacketInspector::new(RecipientSet::new(&to));
        for piece in ct.chunks(out_chunk) {
            insp.feed(piece).unwrap();
        }
        let report = insp.finish().unwrap();
        assert_eq!(report.total_len, ct.len() as u64);
        assert_eq!(report.recipients.len(), 1);
    }
}

#[tokio::test]
async fn decrypts_and_inspects_byte_by_byte() {
    let k = test_keys();
    let plain = data(3000);
    let (ct, _) = encrypt_all(&plain, &[recipient(&k.backup)], 1).await;
    assert_eq!(
        decrypt_all(&ct, &secret(&k.backup), 1).await.unwrap(),
        plain
    );
}

#[tokio::test]
async fn multiple_recipients_each_decrypt() {
    let k = test_keys();
    let plain = data(200_000);
    let to = [
        recipient(&k.backup),
        recipient(&k.backup2),
        recipient(&k.backup),
    ];
    let (ct, summary) = encrypt_all(&plain, &to, 10_000).await;
    // Duplicates are dropped.
    assert_eq!(summary.recipients.len(), 2);
    for key in [secret(&k.backup), secret(&k.backup2)] {
        assert_eq!(decrypt_all(&ct, &key, 4096).await.unwrap(), plain);
    }
}

#[tokio::test]
async fn wrong_key_is_a_clear_error() {
    let k = test_keys();
    let (ct, _) = encrypt_all(b"secret rows", &[recipient(&k.backup)], 4).await;
    let err = decrypt_all(&ct, &secret(&k.backup2), 1024)
        .await
        .unwrap_err();
    assert!(
        matches!(err, CryptoError::NoMatchingSecretKey { .. }),
        "{err}"
    );
    assert!(err.to_string().contains("none of our secret keys"));
}

#[tokio::test]
async fn decrypt_to_writer_reports_size() {
    let k = test_keys();
    let plain = data(70_000);
    let (ct, _) = encrypt_all(&plain, &[recipient(&k.backup)], 10_000).await;
    let (tx, rx) = std::sync::mpsc::channel::<Vec<u8>>();
    struct W(std::sync::mpsc::Sender<Vec<u8>>);
    impl std::io::Write for W {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.send(b.to_vec()).unwrap();
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let n = decrypt_to_writer(chunked(&ct, 5000), &secret(&k.backup), None, W(tx))
        .await
        .unwrap();
    assert_eq!(n, 70_000);
    assert_eq!(rx.iter().flatten().collect::<Vec<u8>>(), plain);
}

// ---- the tamper table ----------------------------------------------------

/// A signed backup: data, manifest bytes and signature.
struct Backup {
    data: Vec<u8>,
    manifest: Manifest,
    manifest_bytes: Vec<u8>,
    signature: String,
}

async fn make_backup(plain: &[u8], to: &[RecipientKey], stamp_nonce: &str) -> Backup {
    let k = test_keys();
    let (data, summary) = encrypt_all(plain, to, 65_536).await;
    let mut m = crate::manifest::tests::sample();
    m.backup_id = format!("production/app/20261127T030000Z-{stamp_nonce}");
    m.plaintext_size = summary.plaintext_size;
    m.ciphertext = summary.ciphertext_info(crate::naming::DATA_FILE);
    m.recipients = summary.recipients.clone();
    m.signer = k.signing.fingerprint.clone();
    let key = SigningKey::from_armored(&k.signing.secret_armored).unwrap();
    let (manifest_bytes, signature) = sign_manifest(&m, &key).unwrap();
    Backup {
        data,
        manifest: m,
        manifest_bytes,
        signature,
    }
}

fn verify_data(
    data: &[u8],
    manifest: &Manifest,
    to: &[RecipientKey],
) -> Result<Digests, CryptoError> {
    let mut v = BackupVerifier::new(manifest, RecipientSet::new(to))?;
    for piece in data.chunks(100_003) {
        v.feed(piece)?;
    }
    v.finish()
}

fn signing_public() -> Vec<VerifyingKey> {
    vec![VerifyingKey::from_armored(&test_keys().signing.public_armored).unwrap()]
}

/// An unencrypted OpenPGP message (what `gpg --store` writes).
fn literal_message(body: &[u8]) -> Vec<u8> {
    let mut m = vec![0xcb];
    let mut inner = vec![b'b', 0, 0, 0, 0, 0];
    inner.extend_from_slice(body);
    packet::write_fixed_len(&mut m, inner.len());
    m.extend_from_slice(&inner);
    m
}

#[derive(Debug)]
enum Expect {
    NotOpenPgp,
    Armored,
    Empty,
    PlaintextPacket,
    CompressedPlaintext,
    SymmetricSessionKey,
    UnknownRecipient,
    MissingRecipient,
    Truncated,
    TrailingData,
    SizeMismatch,
    Sha256Mismatch,
    ChunkMismatch,
    IntegrityCheckFailed,
    NoMatchingSecretKey,
    UnsupportedSeipdVersion,
}

fn check(case: &str, got: &CryptoError, want: &Expect) {
    let ok = matches!(
        (got, want),
        (CryptoError::NotOpenPgp { .. }, Expect::NotOpenPgp)
            | (CryptoError::Armored, Expect::Armored)
            | (CryptoError::Empty, Expect::Empty)
            | (CryptoError::PlaintextPacket { .. }, Expect::PlaintextPacket)
            | (
                CryptoError::CompressedPlaintext { .. },
                Expect::CompressedPlaintext
            )
            | (
                CryptoError::SymmetricSessionKey { .. },
                Expect::SymmetricSessionKey
            )
            | (
                CryptoError::UnknownRecipient { .. },
                Expect::UnknownRecipient
            )
            | (
                CryptoError::MissingRecipient { .. },
                Expect::MissingRecipient
            )
            | (CryptoError::Truncated { .. }, Expect::Truncated)
            | (CryptoError::TrailingData { .. }, Expect::TrailingData)
            | (CryptoError::SizeMismatch { .. }, Expect::SizeMismatch)
            | (CryptoError::Sha256Mismatch { .. }, Expect::Sha256Mismatch)
            | (CryptoError::ChunkMismatch { .. }, Expect::ChunkMismatch)
            | (
                CryptoError::IntegrityCheckFailed,
                Expect::IntegrityCheckFailed
            )
            | (
                CryptoError::NoMatchingSecretKey { .. },
                Expect::NoMatchingSecretKey
            )
            | (
                CryptoError::UnsupportedSeipdVersion { .. },
                Expect::UnsupportedSeipdVersion
            )
    );
    assert!(ok, "{case}: expected {want:?}, got {got:?} ({got})");
}

#[tokio::test]
async fn tamper_table_data() {
    let k = test_keys();
    let to = [recipient(&k.backup)];
    let key = secret(&k.backup);
    let plain = data(3 << 20);
    let good = make_backup(&plain, &to, "aaaaaa").await;
    verify_data(&good.data, &good.manifest, &to).unwrap();
    assert_eq!(decrypt_all(&good.data, &key, 1 << 20).await.unwrap(), plain);

    let flip = |at: usize| {
        let mut d = good.data.clone();
        d[at] ^= 0x01;
        d
    };
    let len = good.data.len();
    // Where the PKESK's key id and the SEIPD version octet are.
    let packet::Parsed::Done(hdr, hdr_len) = packet::parse_header(&good.data).unwrap() else {
        panic!("no header")
    };
    let packet::BodyLen::Fixed(body_len) = hdr.len else {
        panic!("PKESK length")
    };
    let pkesk_len = hdr_len + body_len as usize;
    let mut other_key_id = good.data.clone();
    other_key_id[hdr_len + 1] ^= 0xff; // first byte of the key id
    let mut wrong_version = good.data.clone();
    wrong_version[pkesk_len + 2] = 2;

    let other = make_backup(&data(1000), &to, "bbbbbb").await;
    // A version 1 manifest (before chunk digests): only the whole-object
    // digests can tell.
    let mut v1 = good.manifest.clone();
    v1.version = 1;
    v1.ciphertext.chunks.clear();
    v1.ciphertext.chunk_size = 0;
    let same_size_other = make_backup(
        &data(3 << 20).iter().map(|b| b ^ 0x55).collect::<Vec<_>>(),
        &to,
        "cccccc",
    )
    .await;
    let to_someone_else = make_backup(&plain, &[recipient(&k.backup2)], "dddddd").await;
    let mut armored = b"-----BEGIN PGP MESSAGE-----\n\n".to_vec();
    armored.extend_from_slice(b"hQEMA...\n-----END PGP MESSAGE-----\n");
    let mut compressed = vec![0xc8, 0x05, 0x01];
    compressed.extend_from_slice(b"\x03\x00\x00\x00");
    let mut skesk_msg = vec![0xc3, 0x0d, 0x04, 0x09, 0x03, 0x08];
    skesk_msg.extend_from_slice(&[0u8; 9]);
    skesk_msg.extend_from_slice(&good.data[pkesk_len..]);
    let mut junk = good.data.clone();
    junk.extend_from_slice(b"junk");

    // (case, data, manifest, verifier expects, decrypt expects)
    #[allow(clippy::type_complexity)]
    let cases: Vec<(&str, Vec<u8>, &Manifest, Expect, Option<Expect>)> = vec![
        (
            "byte flipped at start (packet header)",
            {
                let mut d = good.data.clone();
                d[0] ^= 0x80;
                d
            },
            &good.manifest,
            Expect::NotOpenPgp,
            Some(Expect::NotOpenPgp),
        ),
        (
            "byte flipped at start (recipient key id)",
            other_key_id,
            &good.manifest,
            Expect::UnknownRecipient,
            Some(Expect::NoMatchingSecretKey),
        ),
        (
            "byte flipped at start (SEIPD version)",
            wrong_version,
            &good.manifest,
            Expect::UnsupportedSeipdVersion,
            Some(Expect::UnsupportedSeipdVersion),
        ),
        (
            "byte flipped in the middle",
            flip(len / 2),
            &good.manifest,
            Expect::ChunkMismatch,
            Some(Expect::IntegrityCheckFailed),
        ),
        (
            "byte flipped in the middle, version 1 manifest",
            flip(len / 2),
            &v1,
            Expect::Sha256Mismatch,
            Some(Expect::IntegrityCheckFailed),
        ),
        (
            "byte flipped at the end",
            flip(len - 1),
            &good.manifest,
            Expect::ChunkMismatch,
            Some(Expect::IntegrityCheckFailed),
        ),
        (
            "truncated",
            good.data[..len - 100].to_vec(),
            &good.manifest,
            Expect::Truncated,
            Some(Expect::Truncated),
        ),
        (
            "truncated at a chunk boundary",
            good.data[..pkesk_len + 2 + (1 << 20)].to_vec(),
            &good.manifest,
            Expect::Truncated,
            Some(Expect::Truncated),
        ),
        (
            "junk appended",
            junk,
            &good.manifest,
            Expect::TrailingData,
            Some(Expect::TrailingData),
        ),
        (
            "manifest of another backup",
            good.data.clone(),
            &other.manifest,
            Expect::SizeMismatch,
            None,
        ),
        (
            "manifest of another backup, same size",
            good.data.clone(),
            &same_size_other.manifest,
            Expect::ChunkMismatch,
            None,
        ),
        (
            "message to a recipient we do not hold",
            to_someone_else.data.clone(),
            &good.manifest,
            Expect::UnknownRecipient,
            Some(Expect::NoMatchingSecretKey),
        ),
        (
            "plaintext dump",
            b"PGDMP\x01\x0e\x00\x04\x08\x01\x01\x01".to_vec(),
            &good.manifest,
            Expect::NotOpenPgp,
            Some(Expect::NotOpenPgp),
        ),
        (
            "unencrypted OpenPGP literal message",
            literal_message(b"COPY users ..."),
            &good.manifest,
            Expect::PlaintextPacket,
            Some(Expect::PlaintextPacket),
        ),
        (
            "unencrypted OpenPGP compressed message",
            compressed,
            &good.manifest,
            Expect::CompressedPlaintext,
            Some(Expect::CompressedPlaintext),
        ),
        (
            "password-encrypted (SKESK) message",
            skesk_msg,
            &good.manifest,
            Expect::SymmetricSessionKey,
            Some(Expect::SymmetricSessionKey),
        ),
        (
            "armored message",
            armored,
            &good.manifest,
            Expect::Armored,
            Some(Expect::Armored),
        ),
        (
            "empty file",
            Vec::new(),
            &good.manifest,
            Expect::Empty,
            Some(Expect::Empty),
        ),
    ];
    for (case, bad, manifest, want_verify, want_decrypt) in cases {
        let err = verify_data(&bad, manifest, &to).expect_err(case);
        check(case, &err, &want_verify);
        assert!(
            crate::error::Classify::retry(&err) == crate::error::Retry::Permanent,
            "{case}: {err} should count as bad data"
        );
        if let Some(want) = want_decrypt {
            let err = decrypt_all(&bad, &key, 65_536).await.expect_err(case);
            check(&format!("{case} (decrypt)"), &err, &want);
        }
    }

    // The manifest lists a recipient the data has no session key for.
    let mut m = good.manifest.clone();
    m.recipients
        .push(recipient(&k.backup2).encryption_fingerprint().unwrap());
    let both = [recipient(&k.backup), recipient(&k.backup2)];
    let err = verify_data(&good.data, &m, &both).unwrap_err();
    check(
        "manifest lists an extra recipient",
        &err,
        &Expect::MissingRecipient,
    );
    // The manifest lists a recipient that is not configured.
    let err = verify_data(&to_someone_else.data, &to_someone_else.manifest, &to).unwrap_err();
    check(
        "manifest recipient not configured",
        &err,
        &Expect::UnknownRecipient,
    );
}

#[tokio::test]
async fn tamper_table_manifest() {
    let k = test_keys();
    let to = [recipient(&k.backup)];
    let good = make_backup(b"rows", &to, "aaaaaa").await;
    let keys = signing_public();
    let signer = SigningKey::from_armored(&k.signing.secret_armored).unwrap();
    let stranger = SigningKey::from_armored(&k.signing2.secret_armored).unwrap();

    // Good.
    verify_manifest_at(
        &good.manifest_bytes,
        good.signature.as_bytes(),
        &keys,
        &good.manifest.id().unwrap(),
    )
    .unwrap();

    // Modified after signing.
    let mut tampered = good.manifest_bytes.clone();
    let pos = tampered.windows(4).position(|w| w == b"\"app").unwrap();
    tampered[pos + 1] = b'b';
    let err = verify_manifest(&tampered, good.signature.as_bytes(), &keys).unwrap_err();
    assert!(matches!(err, CryptoError::BadSignature { .. }), "{err}");

    // Signature by an unknown key.
    let mut m = good.manifest.clone();
    m.signer = stranger.fingerprint();
    let (bytes, sig) = sign_manifest(&m, &stranger).unwrap();
    let err = verify_manifest(&bytes, sig.as_bytes(), &keys).unwrap_err();
    assert!(matches!(err, CryptoError::UnknownSigner { .. }), "{err}");

    // The signature of another manifest.
    let other = make_backup(b"other rows", &to, "bbbbbb").await;
    let err = verify_manifest(&good.manifest_bytes, other.signature.as_bytes(), &keys).unwrap_err();
    assert!(matches!(err, CryptoError::BadSignature { .. }), "{err}");

    // The manifest of another backup, found at this backup's location.
    let err = verify_manifest_at(
        &other.manifest_bytes,
        other.signature.as_bytes(),
        &keys,
        &good.manifest.id().unwrap(),
    )
    .unwrap_err();
    assert!(
        matches!(
            err,
            CryptoError::Manifest(ManifestError::WrongBackup { .. })
        ),
        "{err}"
    );

    // Malformed, properly signed.
    let junk = b"{\"kind\": \"backstop.manifest\", \"version\": 1}".to_vec();
    let sig = sign_bytes(&junk, &signer).unwrap();
    let err = verify_manifest(&junk, sig.as_bytes(), &keys).unwrap_err();
    assert!(
        matches!(err, CryptoError::Manifest(ManifestError::Malformed(_))),
        "{err}"
    );

    // Future version, properly signed.
    let mut v: serde_json::Value = serde_json::from_slice(&good.manifest_bytes).unwrap();
    v["version"] = 99.into();
    let future = serde_json::to_vec_pretty(&v).unwrap();
    let sig = sign_bytes(&future, &signer).unwrap();
    let err = verify_manifest(&future, sig.as_bytes(), &keys).unwrap_err();
    assert!(
        matches!(
            err,
            CryptoError::Manifest(ManifestError::UnsupportedVersion(99))
        ),
        "{err}"
    );

    // Garbage instead of a signature.
    let err = verify_manifest(&good.manifest_bytes, b"not a signature", &keys).unwrap_err();
    assert!(matches!(err, CryptoError::SignatureMalformed(_)), "{err}");
}

#[test]
fn inspector_is_incremental_and_refuses_use_after_error() {
    let mut insp = PacketInspector::any_recipient();
    assert!(matches!(
        insp.feed(b"PGDMP"),
        Err(CryptoError::NotOpenPgp { first_byte: b'P' })
    ));
    assert!(insp.feed(b"more").is_err());
    assert!(insp.finish().is_err());
    let mut insp = PacketInspector::any_recipient();
    assert!(matches!(insp.finish(), Err(CryptoError::Empty)));
    // A lone SEIPD packet: nobody could decrypt it.
    let mut insp = PacketInspector::any_recipient();
    assert!(matches!(
        insp.feed(&[0xd2, 0x30, 0x01]),
        Err(CryptoError::NoRecipientsInMessage)
    ));
}

/// A decompression bomb inside a message that is otherwise fine: the
/// decryption of a backup stops at the manifest's plaintext size, before
/// producing more.
#[tokio::test]
async fn decryption_stops_at_the_signed_plaintext_size() {
    let k = test_keys();
    let key = secret(&k.backup);
    let to = [recipient(&k.backup)];
    let bomb = vec![0u8; 64 << 20];
    let enc =
        encrypt_stream_with(chunked(&bomb, 1 << 20), &to, encrypt::Compression::Zip(6)).unwrap();
    let ct: Vec<Bytes> = enc.stream.try_collect().await.unwrap();
    let ct = ct.concat();
    assert!(
        ct.len() < 1 << 20,
        "64 MiB of zeros deflate to {}",
        ct.len()
    );

    let limit = 1u64 << 20;
    let mut s = decrypt_stream_sized(chunked(&ct, 1 << 16), &key, Some(limit));
    let mut produced = 0u64;
    let err = loop {
        match futures::StreamExt::next(&mut s).await {
            Some(Ok(b)) => produced += b.len() as u64,
            Some(Err(e)) => break CryptoError::from_io(e),
            None => panic!("the bomb decrypted in full"),
        }
    };
    assert!(
        matches!(err, CryptoError::PlaintextTooLarge { limit: l } if l == limit),
        "{err}"
    );
    assert!(
        produced <= limit,
        "{produced} bytes produced past the limit"
    );

    // Less plaintext than the manifest says is an error too.
    let out: Result<Vec<Bytes>, std::io::Error> =
        decrypt_stream_sized(chunked(&ct, 1 << 16), &key, Some((64 << 20) + 1))
            .try_collect()
            .await;
    assert!(matches!(
        out.map_err(CryptoError::from_io),
        Err(CryptoError::PlaintextSizeMismatch { .. })
    ));
    // The exact size passes.
    let out: Vec<Bytes> = decrypt_stream_sized(chunked(&ct, 1 << 16), &key, Some(64 << 20))
        .try_collect()
        .await
        .unwrap();
    assert_eq!(out.iter().map(|b| b.len()).sum::<usize>(), 64 << 20);
}
