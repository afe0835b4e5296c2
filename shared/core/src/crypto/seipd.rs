//! SEIPD v1 (RFC 9580 section 5.13.1) as synchronous, streaming stages.
//!
//! Encryption is split in two stages so that they can run on two threads:
//! [`Framer`] builds the SEIPD plaintext (random prefix, one literal data
//! packet with partial body lengths, MDC) and hashes it with SHA-1;
//! [`Sealer`] encrypts it in place (AES-256, OpenPGP CFB without resync) and
//! writes the outer partial body lengths into headroom reserved by the
//! framer, so no byte is copied after framing.
//!
//! Decryption mirrors it: [`Opener`] CFB-decrypts the SEIPD body, and
//! [`Unwrapper`] checks the prefix, holds back the trailing MDC packet,
//! hashes with SHA-1, parses the inner packets (literal data, optionally
//! inside ZIP/ZLIB compressed data, signatures skipped) and, at the very
//! end, compares the MDC.

use aes::{Aes128, Aes192, Aes256};
use bytes::{Bytes, BytesMut};
use cfb_mode::BufEncryptor;
use cfb_mode::cipher::KeyIvInit;
use sha1::{Digest, Sha1};

use super::CryptoError;
use super::packet::{self, tag};

#[path = "seipd_inner.rs"]
mod inner;
pub(crate) use inner::InnerParser;

/// Outer partial chunks carry 2^20 bytes (1 MiB) of SEIPD body.
pub(crate) const BODY_POWER: u32 = 20;
pub(crate) const BODY_CHUNK: usize = 1 << BODY_POWER;
/// Inner (literal and compressed data) partial chunks: 2^20 bytes.
const LIT_POWER: u32 = 20;
const LIT_CHUNK: usize = 1 << LIT_POWER;
/// Room in front of each body buffer for the SEIPD tag and a length (1 + 5).
pub(crate) const HEADROOM: usize = 6;
/// 16-byte block: prefix is 16 random bytes plus a repeat of the last two.
const BLOCK: usize = 16;
const PREFIX_LEN: usize = BLOCK + 2;
/// MDC packet: 0xD3 0x14 and a 20-byte SHA-1.
const MDC_LEN: usize = 22;
const MDC_HEADER: [u8; 2] = [0xd3, 0x14];
/// SEIPD tag octet (new format, tag 18).
const SEIPD_TAG_OCTET: u8 = 0xc0 | tag::SEIPD;

/// One buffer of SEIPD body travelling from the framer to the sealer.
pub(crate) struct BodyChunk {
    /// `HEADROOM` reserved bytes, then body bytes.
    pub buf: BytesMut,
    pub first: bool,
    pub last: bool,
}

fn new_body_buf() -> BytesMut {
    let mut b = BytesMut::with_capacity(HEADROOM + BODY_CHUNK);
    b.resize(HEADROOM, 0);
    b
}

/// One packet of unknown length written as it comes: partial body chunks
/// of [`LIT_CHUNK`] bytes, then a last chunk with a fixed length. Used for
/// the literal data packet and for the compressed data packet around it.
pub(crate) struct PartialPacket {
    tag_octet: u8,
    /// Body bytes not yet written (< LIT_CHUNK after each push).
    pending: Vec<u8>,
    started: bool,
}

impl PartialPacket {
    /// A packet with tag `tag` whose body starts with `body_head`.
    pub fn new(tag: u8, body_head: &[u8]) -> Self {
        let mut pending = Vec::with_capacity(LIT_CHUNK + 8);
        pending.extend_from_slice(body_head);
        PartialPacket {
            tag_octet: 0xc0 | tag,
            pending,
            started: false,
        }
    }

    fn header(&mut self, len: Option<usize>, out: &mut dyn FnMut(&[u8])) {
        let mut hdr = [0u8; 6];
        let mut n = 0;
        if !self.started {
            hdr[0] = self.tag_octet;
            n = 1;
            self.started = true;
        }
        match len {
            None => {
                hdr[n] = packet::partial_len_octet(LIT_POWER);
                n += 1;
            }
            Some(l) => {
                let mut enc = [0u8; 5];
                let k = packet::encode_fixed_len(l, &mut enc);
                hdr[n..n + k].copy_from_slice(&enc[..k]);
                n += k;
            }
        }
        out(&hdr[..n]);
    }

    /// A literal data packet: binary, no file name, date 0.
    pub fn literal() -> Self {
        Self::new(tag::LITERAL, &[b'b', 0, 0, 0, 0, 0])
    }

    /// Adds body bytes; whole chunks go to `out` (straight from `data`
    /// when possible: only a pending head is copied).
    pub fn push(&mut self, mut data: &[u8], out: &mut dyn FnMut(&[u8])) {
        while !data.is_empty() {
            let want = LIT_CHUNK - self.pending.len();
            if data.len() < want {
                self.pending.extend_from_slice(data);
                return;
            }
            self.header(None, out);
            out(&self.pending);
            self.pending.clear();
            out(&data[..want]);
            data = &data[want..];
        }
    }

    /// Writes the last chunk.
    pub fn finish(mut self, out: &mut dyn FnMut(&[u8])) {
        let pending = std::mem::take(&mut self.pending);
        self.header(Some(pending.len()), out);
        out(&pending);
    }
}

/// Encryption stage 1: SEIPD plaintext framing and SHA-1 (the MDC).
pub(crate) struct Framer {
    /// The literal data packet around the input; `None` when the input is
    /// already OpenPGP packets (a compressed data packet).
    lit: Option<PartialPacket>,
    body: SeipdBody,
}

/// The SEIPD body being cut into buffers for the sealer, hashed as written.
struct SeipdBody {
    sha1: Sha1,
    buf: BytesMut,
    first: bool,
}

impl SeipdBody {
    /// Appends bytes, hashing them unless they are the MDC value itself.
    fn write(&mut self, mut data: &[u8], hashed: bool, emit: &mut dyn FnMut(BodyChunk)) {
        if hashed {
            self.sha1.update(data);
        }
        while !data.is_empty() {
            let room = HEADROOM + BODY_CHUNK - self.buf.len();
            if room == 0 {
                self.flush(false, emit);
                continue;
            }
            let n = room.min(data.len());
            self.buf.extend_from_slice(&data[..n]);
            data = &data[n..];
        }
    }

    fn flush(&mut self, last: bool, emit: &mut dyn FnMut(BodyChunk)) {
        let buf = std::mem::replace(
            &mut self.buf,
            if last {
                BytesMut::new()
            } else {
                new_body_buf()
            },
        );
        emit(BodyChunk {
            buf,
            first: self.first,
            last,
        });
        self.first = false;
    }
}

impl Framer {
    /// Wraps the input in a literal data packet. `prefix_random` must be
    /// 16 fresh random bytes.
    pub fn new(prefix_random: [u8; BLOCK]) -> Self {
        Self::with(prefix_random, Some(PartialPacket::literal()))
    }

    /// Takes the input as finished packets (see [`Framer::new`]).
    pub fn for_packets(prefix_random: [u8; BLOCK]) -> Self {
        Self::with(prefix_random, None)
    }

    fn with(prefix_random: [u8; BLOCK], lit: Option<PartialPacket>) -> Self {
        let mut body = SeipdBody {
            sha1: Sha1::new(),
            buf: new_body_buf(),
            first: true,
        };
        // Version 1, in the clear and not hashed.
        body.buf.extend_from_slice(&[1]);
        let mut prefix = [0u8; PREFIX_LEN];
        prefix[..BLOCK].copy_from_slice(&prefix_random);
        prefix[BLOCK] = prefix_random[BLOCK - 2];
        prefix[BLOCK + 1] = prefix_random[BLOCK - 1];
        // No emit can happen here: the buffer is nearly empty.
        body.write(&prefix, true, &mut |_| {
            unreachable!("first chunk is not full")
        });
        Framer { lit, body }
    }

    /// Adds input. Emits full body buffers through `emit`.
    pub fn push(&mut self, data: &[u8], emit: &mut dyn FnMut(BodyChunk)) {
        let Framer { lit, body } = self;
        match lit {
            Some(lit) => lit.push(data, &mut |b| body.write(b, true, emit)),
            None => body.write(data, true, emit),
        }
    }

    /// Ends the literal packet, writes the MDC and emits the last buffer.
    pub fn finish(self, emit: &mut dyn FnMut(BodyChunk)) {
        let Framer { lit, mut body } = self;
        if let Some(lit) = lit {
            lit.finish(&mut |b| body.write(b, true, emit));
        }
        body.write(&MDC_HEADER, true, emit);
        let digest = std::mem::take(&mut body.sha1).finalize();
        body.write(&digest, false, emit);
        body.flush(true, emit);
    }
}

/// Encryption stage 2: AES-256 CFB in place and outer length octets.
pub(crate) struct Sealer {
    cfb: BufEncryptor<Aes256>,
}

impl Sealer {
    pub fn new(session_key: &[u8; 32]) -> Self {
        Sealer {
            cfb: BufEncryptor::<Aes256>::new(session_key.into(), &[0u8; BLOCK].into()),
        }
    }

    /// Encrypts one body buffer and returns the bytes to output.
    pub fn seal(&mut self, chunk: BodyChunk) -> Bytes {
        let BodyChunk {
            mut buf,
            first,
            last,
        } = chunk;
        let body_len = buf.len() - HEADROOM;
        let skip = if first { 1 } else { 0 }; // version octet stays clear
        self.cfb.encrypt(&mut buf[HEADROOM + skip..]);
        let mut hdr = [0u8; 6];
        let mut n = 0;
        if first {
            hdr[0] = SEIPD_TAG_OCTET;
            n = 1;
        }
        if last {
            let mut enc = [0u8; 5];
            let k = packet::encode_fixed_len(body_len, &mut enc);
            hdr[n..n + k].copy_from_slice(&enc[..k]);
            n += k;
        } else {
            debug_assert_eq!(body_len, BODY_CHUNK);
            hdr[n] = packet::partial_len_octet(BODY_POWER);
            n += 1;
        }
        let start = HEADROOM - n;
        buf[start..HEADROOM].copy_from_slice(&hdr[..n]);
        buf.freeze().slice(start..)
    }
}

/// CFB-128 decryption, streaming, with the block cipher run on many blocks
/// at once: unlike CFB encryption, decryption does not chain (block `i`'s
/// keystream is the encryption of ciphertext block `i-1`, which is known),
/// so AES-NI can work on eight blocks in parallel. `cfb-mode`'s
/// `BufDecryptor` goes one block at a time, which is several times slower.
pub(crate) struct ParCfbDecryptor<C> {
    cipher: C,
    /// The last complete ciphertext block (the IV at the start).
    prev: [u8; BLOCK],
    /// Within a partial block: its keystream and its ciphertext so far.
    ks: [u8; BLOCK],
    cur: [u8; BLOCK],
    pos: usize,
    scratch: Vec<aes::Block>,
}

/// Blocks per batch: 4 KiB of keystream at a time.
const PAR_BATCH: usize = 256;

impl<C> ParCfbDecryptor<C>
where
    C: aes::cipher::BlockEncrypt + aes::cipher::BlockSizeUser<BlockSize = aes::cipher::consts::U16>,
{
    pub fn new(cipher: C) -> Self {
        ParCfbDecryptor {
            cipher,
            prev: [0u8; BLOCK],
            ks: [0u8; BLOCK],
            cur: [0u8; BLOCK],
            pos: 0,
            scratch: vec![aes::Block::default(); PAR_BATCH],
        }
    }

    pub fn decrypt(&mut self, mut data: &mut [u8]) {
        // Finish a partial block.
        if self.pos > 0 {
            let n = (BLOCK - self.pos).min(data.len());
            for (i, byte) in data[..n].iter_mut().enumerate() {
                let c = *byte;
                self.cur[self.pos + i] = c;
                *byte = c ^ self.ks[self.pos + i];
            }
            self.pos += n;
            data = &mut data[n..];
            if self.pos < BLOCK {
                return;
            }
            self.prev = self.cur;
            self.pos = 0;
        }
        // Whole blocks, in batches.
        while data.len() >= BLOCK {
            let blocks = (data.len() / BLOCK).min(PAR_BATCH);
            let scratch = &mut self.scratch[..blocks];
            scratch[0].copy_from_slice(&self.prev);
            for j in 1..blocks {
                scratch[j].copy_from_slice(&data[(j - 1) * BLOCK..j * BLOCK]);
            }
            self.prev
                .copy_from_slice(&data[(blocks - 1) * BLOCK..blocks * BLOCK]);
            self.cipher.encrypt_blocks(scratch);
            let (head, rest) = std::mem::take(&mut data).split_at_mut(blocks * BLOCK);
            for (chunk, k) in head.chunks_exact_mut(BLOCK).zip(scratch.iter()) {
                let c = u128::from_ne_bytes(chunk[..].try_into().expect("block"));
                let k = u128::from_ne_bytes(k[..].try_into().expect("block"));
                chunk.copy_from_slice(&(c ^ k).to_ne_bytes());
            }
            data = rest;
        }
        // Start a partial block.
        if !data.is_empty() {
            let mut k = aes::Block::from(self.prev);
            self.cipher.encrypt_block(&mut k);
            self.ks.copy_from_slice(&k);
            for (i, b) in data.iter_mut().enumerate() {
                self.cur[i] = *b;
                *b ^= self.ks[i];
            }
            self.pos = data.len();
        }
    }
}

/// A CFB decryptor for the AES variants GnuPG picks.
pub(crate) enum CfbDecryptor {
    Aes128(Box<ParCfbDecryptor<Aes128>>),
    Aes192(Box<ParCfbDecryptor<Aes192>>),
    Aes256(Box<ParCfbDecryptor<Aes256>>),
}

impl CfbDecryptor {
    /// `alg` is the OpenPGP symmetric algorithm id (7, 8, 9).
    pub fn new(alg: u8, key: &[u8]) -> Result<Self, CryptoError> {
        use aes::cipher::KeyInit;
        let bad = |_| CryptoError::SessionKeyDecrypt {
            fingerprint: "-".into(),
            reason: format!(
                "session key has the wrong length ({} bytes) for its algorithm",
                key.len()
            ),
        };
        Ok(match alg {
            7 => CfbDecryptor::Aes128(Box::new(ParCfbDecryptor::new(
                Aes128::new_from_slice(key).map_err(bad)?,
            ))),
            8 => CfbDecryptor::Aes192(Box::new(ParCfbDecryptor::new(
                Aes192::new_from_slice(key).map_err(bad)?,
            ))),
            9 => CfbDecryptor::Aes256(Box::new(ParCfbDecryptor::new(
                Aes256::new_from_slice(key).map_err(bad)?,
            ))),
            other => return Err(CryptoError::UnsupportedCipher(sym_alg_name(other))),
        })
    }

    pub fn decrypt(&mut self, data: &mut [u8]) {
        match self {
            CfbDecryptor::Aes128(d) => d.decrypt(data),
            CfbDecryptor::Aes192(d) => d.decrypt(data),
            CfbDecryptor::Aes256(d) => d.decrypt(data),
        }
    }
}

pub(crate) fn sym_alg_name(alg: u8) -> String {
    match alg {
        0 => "plaintext".into(),
        1 => "IDEA".into(),
        2 => "TripleDES".into(),
        3 => "CAST5".into(),
        4 => "Blowfish".into(),
        7 => "AES-128".into(),
        8 => "AES-192".into(),
        9 => "AES-256".into(),
        10 => "Twofish".into(),
        11..=13 => format!("Camellia ({alg})"),
        _ => format!("algorithm {alg}"),
    }
}

/// Decryption stage 1: CFB-decrypts the SEIPD body (after its version octet).
pub(crate) struct Opener {
    cfb: CfbDecryptor,
}

impl Opener {
    pub fn new(cfb: CfbDecryptor) -> Self {
        Opener { cfb }
    }

    /// Decrypts a copy of `data`.
    #[cfg(test)]
    pub fn open(&mut self, data: &[u8]) -> Bytes {
        let mut buf = BytesMut::from(data);
        self.cfb.decrypt(&mut buf);
        buf.freeze()
    }

    /// Decrypts in place.
    pub fn open_in_place(&mut self, buf: &mut [u8]) {
        self.cfb.decrypt(buf);
    }
}

/// Decryption stage 2: prefix check, SHA-1 and MDC, inner packets.
pub(crate) struct Unwrapper {
    sha1: Sha1,
    prefix: Vec<u8>,
    /// The last (up to) `MDC_LEN` bytes seen: not yet known not to be the MDC.
    tail: Vec<u8>,
    inner: InnerParser,
    total: u64,
}

impl Default for Unwrapper {
    fn default() -> Self {
        Self::new()
    }
}

impl Unwrapper {
    pub fn new() -> Self {
        Self::with_limit(u64::MAX)
    }

    /// An unwrapper that fails once the plaintext exceeds `limit` bytes.
    pub fn with_limit(limit: u64) -> Self {
        Unwrapper {
            sha1: Sha1::new(),
            prefix: Vec::with_capacity(PREFIX_LEN),
            tail: Vec::with_capacity(2 * MDC_LEN),
            inner: InnerParser::with_limit(0, limit),
            total: 0,
        }
    }

    /// Feeds decrypted SEIPD body bytes; plaintext goes to `out`.
    pub fn push(&mut self, mut data: Bytes, out: &mut dyn FnMut(Bytes)) -> Result<(), CryptoError> {
        self.total += data.len() as u64;
        if self.prefix.len() < PREFIX_LEN {
            let n = (PREFIX_LEN - self.prefix.len()).min(data.len());
            self.prefix.extend_from_slice(&data[..n]);
            self.sha1.update(&data[..n]);
            let _ = data.split_to(n);
            if self.prefix.len() == PREFIX_LEN
                && self.prefix[BLOCK - 2..BLOCK] != self.prefix[BLOCK..PREFIX_LEN]
            {
                return Err(CryptoError::QuickCheckFailed);
            }
            if data.is_empty() {
                return Ok(());
            }
        }
        if data.len() >= MDC_LEN {
            // Everything held back is now known not to be the MDC.
            if !self.tail.is_empty() {
                let held = Bytes::from(std::mem::take(&mut self.tail));
                self.sha1.update(&held);
                self.inner.push(held, out)?;
            }
            let keep = data.split_off(data.len() - MDC_LEN);
            self.tail.extend_from_slice(&keep);
            if !data.is_empty() {
                self.sha1.update(&data);
                self.inner.push(data, out)?;
            }
        } else {
            self.tail.extend_from_slice(&data);
            if self.tail.len() > MDC_LEN {
                let release = self.tail.len() - MDC_LEN;
                let held = Bytes::copy_from_slice(&self.tail[..release]);
                self.tail.drain(..release);
                self.sha1.update(&held);
                self.inner.push(held, out)?;
            }
        }
        Ok(())
    }

    /// Checks the MDC and that the inner message is complete. Only when this
    /// returns `Ok` may the plaintext be trusted.
    pub fn finish(mut self, out: &mut dyn FnMut(Bytes)) -> Result<(), CryptoError> {
        if self.prefix.len() < PREFIX_LEN || self.tail.len() < MDC_LEN {
            return Err(CryptoError::MissingMdc);
        }
        if self.tail[..2] != MDC_HEADER {
            return Err(CryptoError::MissingMdc);
        }
        self.sha1.update(&self.tail[..2]);
        let digest = self.sha1.finalize();
        // Constant-time comparison is not needed: the MDC is not a MAC
        // secret, but avoid early exit anyway.
        let diff = digest
            .iter()
            .zip(&self.tail[2..])
            .fold(0u8, |acc, (a, b)| acc | (a ^ b));
        if diff != 0 {
            return Err(CryptoError::IntegrityCheckFailed);
        }
        self.inner.finish(out)
    }
}

#[cfg(test)]
#[path = "seipd_tests.rs"]
mod tests;
