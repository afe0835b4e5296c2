//! Differential tests of our hand-written OpenPGP code (SEIPD framing, CFB,
//! MDC, the inner packet parser) against rpgp, an independent
//! implementation (the `pgp` crate; gpg is the other one, in
//! tests/tests/crypto_gpg.rs):
//!
//! - every message our encryptor writes (uncompressed and ZIP at several
//!   levels, one and several recipients, empty to multi-MiB) decrypts with
//!   rpgp to the same bytes;
//! - messages rpgp writes (no compression, ZIP, ZLIB; fixed lengths when the
//!   size is known, partial lengths of several chunk sizes when it is not;
//!   AES-128/192/256; several recipients; signed) decrypt with ours;
//! - a flipped ciphertext byte is refused by both.

use backstop_core::crypto::{
    self, BackupSecretKey, Compression, CryptoError, GeneratedKey, KeyAlgorithm, RecipientKey,
};
use backstop_core::store::{ByteStream, byte_stream};
use bytes::Bytes;
use futures::TryStreamExt;
use pgp::composed::{Deserializable, Message, MessageBuilder, SignedPublicKey, SignedSecretKey};
use pgp::crypto::hash::HashAlgorithm;
use pgp::crypto::sym::SymmetricKeyAlgorithm;
use pgp::types::{CompressionAlgorithm, Password};

fn backup_key() -> GeneratedKey {
    crypto::generate_backup_key("Diff test <d@example.invalid>", KeyAlgorithm::Curve25519).unwrap()
}

fn data(len: usize) -> Vec<u8> {
    // Half random-looking, half repetitive, so that compression has work.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..len)
        .map(|i| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            if (i / 4096) % 2 == 0 {
                (x >> 24) as u8
            } else {
                b"backstop"[i % 8]
            }
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

async fn our_encrypt(plain: &[u8], to: &[RecipientKey], compression: Compression) -> Vec<u8> {
    let enc = crypto::encrypt_stream_with(chunked(plain, 100_003), to, compression).unwrap();
    let out: Vec<Bytes> = enc.stream.try_collect().await.unwrap();
    out.concat()
}

async fn our_decrypt(ct: &[u8], key: &BackupSecretKey) -> Result<Vec<u8>, CryptoError> {
    let out: Result<Vec<Bytes>, std::io::Error> = crypto::decrypt_stream(chunked(ct, 65_521), key)
        .try_collect()
        .await;
    out.map(|v| v.concat()).map_err(CryptoError::from_io)
}

/// rpgp's reading of `ct`: decrypt with `key`, decompress if compressed,
/// read to the end (which checks the MDC).
fn rpgp_decrypt(ct: &[u8], key: &SignedSecretKey) -> pgp::errors::Result<Vec<u8>> {
    let msg = Message::from_bytes(ct)?;
    let mut msg = msg.decrypt(&Password::empty(), key)?;
    if msg.is_compressed() {
        msg = msg.decompress()?;
    }
    Ok(msg.as_data_vec()?)
}

fn rpgp_secret(k: &GeneratedKey) -> SignedSecretKey {
    SignedSecretKey::from_string(&k.secret_armored).unwrap().0
}

fn rpgp_public(k: &GeneratedKey) -> SignedPublicKey {
    SignedPublicKey::from_string(&k.public_armored).unwrap().0
}

#[tokio::test]
async fn rpgp_decrypts_every_message_we_write() {
    let (a, b) = (backup_key(), backup_key());
    let to = [
        RecipientKey::from_armored(&a.public_armored).unwrap(),
        RecipientKey::from_armored(&b.public_armored).unwrap(),
    ];
    let (ra, rb) = (rpgp_secret(&a), rpgp_secret(&b));
    for len in [
        0usize,
        1,
        191,
        192,
        8383,
        8384,
        65_536,
        1_000_003,
        3 * 1024 * 1024 + 5,
    ] {
        let plain = data(len);
        for compression in [
            Compression::None,
            Compression::Zip(1),
            Compression::Zip(6),
            Compression::Zip(9),
        ] {
            let ct = our_encrypt(&plain, &to[..1], compression).await;
            let back = rpgp_decrypt(&ct, &ra)
                .unwrap_or_else(|e| panic!("{len} bytes, {compression:?}: rpgp refused ours: {e}"));
            assert!(
                back == plain,
                "{len} bytes, {compression:?}: rpgp read other bytes"
            );
        }
        // Two recipients: each key alone decrypts.
        let ct = our_encrypt(&plain, &to, Compression::Zip(6)).await;
        for key in [&ra, &rb] {
            assert!(
                rpgp_decrypt(&ct, key).unwrap() == plain,
                "{len} bytes, 2 recipients"
            );
        }
    }
}

/// How rpgp frames a message: size known up front (fixed lengths) or not
/// (partial lengths of `chunk` bytes).
#[derive(Debug, Clone, Copy)]
enum Framing {
    Fixed,
    Partial(u32),
}

struct RpgpCase {
    framing: Framing,
    compression: Option<CompressionAlgorithm>,
    cipher: SymmetricKeyAlgorithm,
    signed: bool,
}

fn rpgp_encrypt(
    plain: &[u8],
    to: &[SignedPublicKey],
    case: &RpgpCase,
    signer: &SignedSecretKey,
) -> Vec<u8> {
    let mut rng = rand08::rngs::OsRng;
    let reader_builder;
    let bytes_builder;
    macro_rules! finish {
        ($b:expr) => {{
            let mut b = $b.seipd_v1(&mut rng, case.cipher);
            for key in to {
                b.encrypt_to_key(&mut rng, &key.public_subkeys[0]).unwrap();
            }
            if let Some(c) = case.compression {
                b.compression(c);
            }
            if let Framing::Partial(size) = case.framing {
                b.partial_chunk_size(size).unwrap();
            }
            if case.signed {
                b.sign(
                    &signer.primary_key,
                    Password::empty(),
                    HashAlgorithm::Sha256,
                );
            }
            b.to_vec(&mut rng).unwrap()
        }};
    }
    match case.framing {
        Framing::Fixed => {
            bytes_builder = MessageBuilder::from_bytes("dump", plain.to_vec());
            finish!(bytes_builder)
        }
        Framing::Partial(_) => {
            reader_builder = MessageBuilder::from_reader("dump", plain);
            finish!(reader_builder)
        }
    }
}

/// Whether the SEIPD packet of `ct` (after its PKESKs, new-format headers
/// as rpgp writes them) starts with a partial body length.
fn seipd_has_partial_length(ct: &[u8]) -> bool {
    let mut at = 0;
    loop {
        let (tag, o) = (ct[at] & 0x3f, ct[at + 1] as usize);
        if tag == 18 {
            return (224..255).contains(&o);
        }
        let (len, head) = match o {
            0..192 => (o, 2),
            192..224 => (((o - 192) << 8) + ct[at + 2] as usize + 192, 3),
            _ => panic!("PKESK with a length form {o} rpgp does not write"),
        };
        at += head + len;
    }
}

#[tokio::test]
async fn we_decrypt_what_rpgp_writes() {
    let keys = [backup_key(), backup_key(), backup_key()];
    let publics: Vec<SignedPublicKey> = keys.iter().map(rpgp_public).collect();
    let ours = BackupSecretKey::from_armored(&keys[2].secret_armored).unwrap();
    let signing =
        crypto::generate_signing_key("Diff signer <s@example.invalid>", KeyAlgorithm::Curve25519)
            .unwrap();
    let signer = rpgp_secret(&signing);
    let mut cases = Vec::new();
    for framing in [
        Framing::Fixed,
        Framing::Partial(512),
        Framing::Partial(65_536),
        Framing::Partial(1 << 20),
    ] {
        for compression in [
            None,
            Some(CompressionAlgorithm::ZIP),
            Some(CompressionAlgorithm::ZLIB),
        ] {
            cases.push(RpgpCase {
                framing,
                compression,
                cipher: SymmetricKeyAlgorithm::AES256,
                signed: false,
            });
        }
    }
    for cipher in [SymmetricKeyAlgorithm::AES128, SymmetricKeyAlgorithm::AES192] {
        cases.push(RpgpCase {
            framing: Framing::Partial(4096),
            compression: None,
            cipher,
            signed: false,
        });
    }
    cases.push(RpgpCase {
        framing: Framing::Fixed,
        compression: Some(CompressionAlgorithm::ZLIB),
        cipher: SymmetricKeyAlgorithm::AES256,
        signed: true,
    });
    cases.push(RpgpCase {
        framing: Framing::Partial(8192),
        compression: None,
        cipher: SymmetricKeyAlgorithm::AES256,
        signed: true,
    });
    for len in [0usize, 1, 511, 512, 5000, 1_048_579] {
        let plain = data(len);
        for case in &cases {
            // One recipient (ours), then three with ours last.
            for to in [&publics[2..], &publics[..]] {
                let what = format!(
                    "{len} bytes, {:?}, {:?}, {:?}, signed {}, {} recipient(s)",
                    case.framing,
                    case.compression,
                    case.cipher,
                    case.signed,
                    to.len()
                );
                let ct = rpgp_encrypt(&plain, to, case, &signer);
                // The framing asked for is the framing tested.
                match case.framing {
                    // (rpgp frames larger messages in partial lengths even when
                    // it knows their size.)
                    Framing::Fixed if case.compression.is_none() && len < 512 * 1024 => {
                        assert!(!seipd_has_partial_length(&ct), "{what}")
                    }
                    Framing::Partial(n) if len > 2 * n as usize => {
                        assert!(seipd_has_partial_length(&ct), "{what}")
                    }
                    _ => {}
                }
                let back = our_decrypt(&ct, &ours)
                    .await
                    .unwrap_or_else(|e| panic!("{what}: we refused rpgp's message: {e}"));
                assert!(back == plain, "{what}: we read other bytes");
            }
        }
    }
}

#[tokio::test]
async fn a_flipped_byte_is_refused_by_both() {
    let k = backup_key();
    let to = [RecipientKey::from_armored(&k.public_armored).unwrap()];
    let ours = BackupSecretKey::from_armored(&k.secret_armored).unwrap();
    let theirs = rpgp_secret(&k);
    let plain = data(200_000);
    for compression in [Compression::None, Compression::Zip(6)] {
        let ct = our_encrypt(&plain, &to, compression).await;
        // Inside the encrypted data, past the session key packet, and in the
        // last bytes (the MDC).
        for at in [ct.len() / 2, ct.len() - 3] {
            let mut bad = ct.clone();
            bad[at] ^= 0x01;
            assert!(
                our_decrypt(&bad, &ours).await.is_err(),
                "{compression:?} @{at}: we accepted it"
            );
            assert!(
                rpgp_decrypt(&bad, &theirs).is_err(),
                "{compression:?} @{at}: rpgp accepted it"
            );
        }
    }
}
