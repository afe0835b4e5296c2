//! The archive Backstop adds after the server's: a tar of one member, the
//! server's `backup_manifest`, and its two end-of-archive blocks. The
//! server sends the manifest apart from its archive, and its archive ends
//! in end-of-archive blocks of its own, which a compressed stream cannot
//! have cut off; so the plaintext is two concatenated tars, which
//! `tar --ignore-zeros` (`-i`) and `restore-cluster` read as one.
//!
//! When the server compressed its archive with zstd, this one is one more
//! zstd frame of raw (stored) blocks: zstd frames concatenate, so the
//! whole decompresses in one pass, with no compressor on our side.
//! The manifest arrives before its size is known, so it is spooled: in
//! memory up to [`IN_MEMORY`], else in an unnamed temporary file (0600,
//! gone when closed), as a cluster of a million files has a manifest of
//! about 150 MB.

use std::io::{Read, Seek, SeekFrom, Write};

use bytes::{BufMut, Bytes, BytesMut};

const BLOCK: usize = 512;
/// The largest zstd block (`Block_Maximum_Size`).
const ZSTD_BLOCK: usize = 128 * 1024;
const ZSTD_MAGIC: u32 = 0xFD2F_B528;
/// Manifest bytes held in memory before the spool moves to a file.
const IN_MEMORY: usize = 8 << 20;

/// The manifest's bytes as they arrive.
pub(crate) enum Spool {
    Memory(Vec<u8>),
    File { file: std::fs::File, len: u64 },
}

impl Default for Spool {
    fn default() -> Self {
        Spool::Memory(Vec::new())
    }
}

impl Spool {
    pub(crate) fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        if let Spool::Memory(buf) = self {
            if buf.len() + bytes.len() <= IN_MEMORY {
                buf.extend_from_slice(bytes);
                return Ok(());
            }
            let mut file = tempfile::tempfile()?;
            file.write_all(buf)?;
            *self = Spool::File {
                file,
                len: buf.len() as u64,
            };
        }
        if let Spool::File { file, len } = self {
            file.write_all(bytes)?;
            *len += bytes.len() as u64;
        }
        Ok(())
    }

    fn len(&self) -> u64 {
        match self {
            Spool::Memory(buf) => buf.len() as u64,
            Spool::File { len, .. } => *len,
        }
    }

    /// The spooled bytes, `piece` at a time, in order.
    fn pieces(self, piece: usize, mut each: impl FnMut(&[u8])) -> std::io::Result<()> {
        match self {
            Spool::Memory(buf) => buf.chunks(piece).for_each(each),
            Spool::File { mut file, len } => {
                file.seek(SeekFrom::Start(0))?;
                let mut buf = vec![0u8; piece];
                let mut left = len;
                while left > 0 {
                    let n = (piece as u64).min(left) as usize;
                    file.read_exact(&mut buf[..n])?;
                    each(&buf[..n]);
                    left -= n as u64;
                }
            }
        }
        Ok(())
    }
}

/// The manifest's archive: `backup_manifest` (0600, `mtime`) and the two
/// end-of-archive blocks, as tar bytes or, with `zstd`, as one zstd frame
/// of them, in pieces of at most a zstd block for `emit`.
pub(crate) fn archive_end(
    manifest: Spool,
    mtime: u64,
    zstd: bool,
    mut emit: impl FnMut(Bytes),
) -> std::io::Result<()> {
    let size = manifest.len();
    let padding = (BLOCK as u64 - size % BLOCK as u64) % BLOCK as u64;
    let total = BLOCK as u64 + size + padding + 2 * BLOCK as u64;
    let mut frame = Frame::new(zstd, total, &mut emit);
    frame.put(&header(super::server_manifest::MANIFEST, size, mtime));
    manifest.pieces(ZSTD_BLOCK, |piece| frame.put(piece))?;
    frame.put(&vec![0u8; padding as usize + 2 * BLOCK]);
    frame.finish();
    Ok(())
}

/// Collects bytes into raw zstd blocks (or passes them on as they are).
struct Frame<'a, F: FnMut(Bytes)> {
    zstd: bool,
    /// Content bytes still to come.
    left: u64,
    block: BytesMut,
    emit: &'a mut F,
}

impl<'a, F: FnMut(Bytes)> Frame<'a, F> {
    fn new(zstd: bool, total: u64, emit: &'a mut F) -> Self {
        if zstd {
            // Frame header: single segment (the window is the content),
            // an 8-byte content size, no checksum, no dictionary.
            let mut head = BytesMut::with_capacity(13);
            head.put_u32_le(ZSTD_MAGIC);
            head.put_u8(0b1110_0000);
            head.put_u64_le(total);
            emit(head.freeze());
        }
        Frame {
            zstd,
            left: total,
            block: BytesMut::with_capacity(ZSTD_BLOCK),
            emit,
        }
    }

    fn put(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            let n = (ZSTD_BLOCK - self.block.len()).min(bytes.len());
            self.block.extend_from_slice(&bytes[..n]);
            bytes = &bytes[n..];
            self.left -= n as u64;
            if self.block.len() == ZSTD_BLOCK || self.left == 0 {
                self.flush();
            }
        }
    }

    fn flush(&mut self) {
        if self.block.is_empty() {
            return;
        }
        let data = self.block.split().freeze();
        if self.zstd {
            // Block header: last-block bit, type 0 (raw), size.
            let header = (data.len() as u32) << 3 | u32::from(self.left == 0);
            (self.emit)(Bytes::copy_from_slice(&header.to_le_bytes()[..3]));
        }
        (self.emit)(data);
    }

    fn finish(mut self) {
        debug_assert_eq!(self.left, 0, "the frame's content size was its length");
        self.flush();
    }
}

/// A ustar header of a regular file (mode 0600, owner 0).
fn header(name: &str, size: u64, mtime: u64) -> [u8; BLOCK] {
    let mut h = [0u8; BLOCK];
    h[..name.len()].copy_from_slice(name.as_bytes());
    octal(&mut h[100..108], 0o600);
    octal(&mut h[108..116], 0);
    octal(&mut h[116..124], 0);
    octal(&mut h[124..136], size);
    octal(&mut h[136..148], mtime);
    h[156] = b'0';
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    h[148..156].fill(b' ');
    let sum: u32 = h.iter().map(|b| u32::from(*b)).sum();
    octal(&mut h[148..155], u64::from(sum));
    h
}

/// `value` as zero-padded octal digits filling all but the field's last
/// byte (a NUL); sizes past 8 GiB would not fit, and a manifest is not one.
fn octal(field: &mut [u8], value: u64) {
    let digits = field.len() - 1;
    let text = format!("{value:0digits$o}");
    field[..digits].copy_from_slice(&text.as_bytes()[text.len() - digits..]);
    field[digits] = 0;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn end(manifest: &[u8], zstd: bool, spool_in_file: bool) -> Vec<u8> {
        let mut spool = Spool::default();
        if spool_in_file {
            let mut file = tempfile::tempfile().unwrap();
            file.write_all(manifest).unwrap();
            spool = Spool::File {
                file,
                len: manifest.len() as u64,
            };
        } else {
            spool.write(manifest).unwrap();
        }
        let mut out = Vec::new();
        archive_end(spool, 1_700_000_000, zstd, |b| out.extend_from_slice(&b)).unwrap();
        out
    }

    fn tar_t(tar: &[u8]) -> String {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.tar");
        std::fs::write(&path, tar).unwrap();
        let out = std::process::Command::new("tar")
            .arg("-tvf")
            .arg(&path)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    #[test]
    fn the_end_is_a_tar_member_tar_reads() {
        for size in [0usize, 1, 511, 512, 300_000] {
            let manifest: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
            let tar = end(&manifest, false, false);
            assert_eq!(tar.len() % BLOCK, 0);
            assert_eq!(&tar[BLOCK..BLOCK + size], &manifest[..]);
            assert!(tar[tar.len() - 2 * BLOCK..].iter().all(|b| *b == 0));
            let listing = tar_t(&tar);
            assert!(listing.starts_with("-rw-------"), "{listing}");
            assert!(listing.contains(&format!(" {size} ")), "{listing}");
            assert!(listing.trim_end().ends_with("backup_manifest"), "{listing}");
        }
    }

    #[test]
    fn the_zstd_end_decompresses_after_a_compressed_archive() {
        let archive = b"the archive's own members would be here".repeat(1000);
        let manifest: Vec<u8> = (0..(3 * ZSTD_BLOCK + 17)).map(|i| (i % 7) as u8).collect();
        for in_file in [false, true] {
            let mut stream = zstd::bulk::compress(&archive, 1).unwrap();
            let tail = end(&manifest, true, in_file);
            stream.extend_from_slice(&tail);
            let plain = zstd::stream::decode_all(&stream[..]).unwrap();
            assert_eq!(&plain[..archive.len()], &archive[..]);
            assert_eq!(plain[archive.len()..], end(&manifest, false, false)[..]);
        }
        // The zstd command line reads it too.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("end.zst");
        std::fs::write(&path, end(b"{}", true, false)).unwrap();
        if let Ok(out) = std::process::Command::new("zstd")
            .arg("-t")
            .arg(&path)
            .output()
        {
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }

    #[test]
    fn a_large_manifest_moves_to_a_file() {
        let mut spool = Spool::default();
        let piece = vec![7u8; 1 << 20];
        for _ in 0..9 {
            spool.write(&piece).unwrap();
        }
        assert!(matches!(spool, Spool::File { len, .. } if len == 9 << 20));
        let mut out = Vec::new();
        archive_end(spool, 0, false, |b| out.extend_from_slice(&b)).unwrap();
        assert_eq!(out.len(), BLOCK + (9 << 20) + 2 * BLOCK);
        assert!(out[BLOCK..BLOCK + (9 << 20)].iter().all(|b| *b == 7));
    }
}
