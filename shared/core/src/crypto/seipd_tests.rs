//! Tests of the SEIPD stages: sealing and opening at many sizes and
//! splits, tampering and wrong keys, and the parallel CFB decryptor.

use super::*;
use crate::crypto::packet::{BodyLen, Parsed};

fn seal_all(data: &[u8], pieces: usize) -> (Vec<u8>, [u8; 32]) {
    let key = [7u8; 32];
    let mut framer = Framer::new([3u8; 16]);
    let mut sealer = Sealer::new(&key);
    let mut out = Vec::new();
    let mut emit = |c: BodyChunk| out.extend_from_slice(&sealer.seal(c));
    let step = data.len().div_ceil(pieces.max(1)).max(1);
    for piece in data.chunks(step) {
        framer.push(piece, &mut emit);
    }
    framer.finish(&mut emit);
    (out, key)
}

fn open_all(msg: &[u8], key: &[u8; 32]) -> Result<Vec<u8>, CryptoError> {
    // Parse the SEIPD framing by hand (tag octet + lengths).
    assert_eq!(msg[0], SEIPD_TAG_OCTET);
    let mut pos = 1;
    let mut body = Vec::new();
    loop {
        match packet::parse_new_len(&msg[pos..]) {
            Parsed::Done(BodyLen::Partial(n), used) => {
                pos += used;
                body.extend_from_slice(&msg[pos..pos + n as usize]);
                pos += n as usize;
            }
            Parsed::Done(BodyLen::Fixed(n), used) => {
                pos += used;
                body.extend_from_slice(&msg[pos..pos + n as usize]);
                pos += n as usize;
                break;
            }
            _ => panic!("bad framing"),
        }
    }
    assert_eq!(pos, msg.len());
    assert_eq!(body[0], 1);
    let mut opener = Opener::new(CfbDecryptor::new(9, key)?);
    let mut unwrap = Unwrapper::new();
    let mut plain = Vec::new();
    let mut out = |b: Bytes| plain.extend_from_slice(&b);
    for piece in body[1..].chunks(777_777) {
        unwrap.push(opener.open(piece), &mut out)?;
    }
    unwrap.finish(&mut out)?;
    Ok(plain)
}

#[test]
fn seal_and_open_sizes() {
    for len in [
        0usize,
        1,
        100,
        191,
        192,
        8383,
        8384,
        LIT_CHUNK - 6,
        LIT_CHUNK,
        LIT_CHUNK + 1,
        3 * LIT_CHUNK + 5,
    ] {
        let data: Vec<u8> = (0..len).map(|i| (i * 31 % 251) as u8).collect();
        for pieces in [1, 3] {
            let (msg, key) = seal_all(&data, pieces);
            assert_eq!(open_all(&msg, &key).unwrap(), data, "len {len}");
        }
    }
}

#[test]
fn flipped_ciphertext_fails_mdc() {
    let data = vec![42u8; 5000];
    let (mut msg, key) = seal_all(&data, 1);
    let mid = msg.len() / 2;
    msg[mid] ^= 1;
    assert!(matches!(
        open_all(&msg, &key),
        Err(CryptoError::IntegrityCheckFailed)
    ));
}

#[test]
fn parallel_cfb_matches_cfb_mode() {
    let key = [9u8; 32];
    let plain: Vec<u8> = (0..10_000u32).map(|i| (i * 7 + 3) as u8).collect();
    let mut ct = plain.clone();
    BufEncryptor::<Aes256>::new(&key.into(), &[0u8; BLOCK].into()).encrypt(&mut ct);
    for split in [1usize, 5, 15, 16, 17, 100, 4095, 4096, 4097, 9999] {
        let mut d = CfbDecryptor::new(9, &key).unwrap();
        let mut buf = ct.clone();
        let (a, rest) = buf.split_at_mut(split.min(ct.len()));
        d.decrypt(a);
        for piece in rest.chunks_mut(split) {
            d.decrypt(piece);
        }
        assert!(buf == plain, "split {split}");
    }
}

#[test]
fn wrong_key_fails_quick_check() {
    let (msg, _) = seal_all(b"hello", 1);
    assert!(matches!(
        open_all(&msg, &[8u8; 32]),
        Err(CryptoError::QuickCheckFailed)
    ));
}
