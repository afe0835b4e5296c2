//! A streaming observer of `pg_basebackup -Ft`'s tar: the bytes pass on
//! unchanged (to the encryption), while it checks that they are one whole
//! tar (valid 512-byte headers, every member complete, the two zero blocks
//! of its end and nothing after them), counts its regular files and hands
//! the members it reads to [`Members`]. Memory stays bounded: one header,
//! and what `Members` keeps.
//!
//! The format as PostgreSQL writes it (`src/port/tar.c`): ustar headers,
//! sizes in octal or, past 8 GiB, base-256. GNU long-name (`L`, `K`) and
//! pax (`x`, `g`) headers, which it never writes, are skipped as metadata,
//! not counted as files.

use std::sync::{Arc, Mutex};

use futures::StreamExt;

use backstop_core::store::{ByteStream, byte_stream};

use super::members::{Facts, Members};

const BLOCK: usize = 512;

/// Why the stream is not one whole tar (offsets count from its first byte).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TarError {
    #[error("the header at byte {offset} is not a tar header (its checksum does not match)")]
    BadHeader { offset: u64 },
    #[error("the header at byte {offset} has an unreadable size field")]
    BadSize { offset: u64 },
    #[error("non-zero bytes at byte {offset}, after the tar's end-of-archive blocks")]
    AfterEnd { offset: u64 },
    #[error("the tar ends at byte {offset} inside {what}: it is truncated")]
    Truncated { offset: u64, what: String },
    #[error("the tar has no end-of-archive blocks (it stops at byte {offset}): it is truncated")]
    NoEnd { offset: u64 },
    #[error("{0}")]
    Contents(String),
}

/// Where the parser is.
#[derive(Debug)]
enum State {
    /// Collecting a header block (`filled` bytes so far).
    Header { filled: usize },
    /// Inside a member's data: `remaining` bytes of it, then `padding`.
    Data {
        name: String,
        remaining: u64,
        padding: u64,
    },
    /// After the first zero block: `zeros` zero bytes seen since it began.
    End { zeros: u64 },
}

/// What one step of [`TarObserver::feed`] completed.
enum Step {
    More,
    HeaderRead,
    /// The member is complete.
    MemberRead,
}

/// The observer's state; [`observe`] drives it from a byte stream.
#[derive(Debug)]
pub(crate) struct TarObserver {
    state: State,
    header: [u8; BLOCK],
    offset: u64,
    files: u64,
    members: Members,
}

impl Default for TarObserver {
    fn default() -> Self {
        Self {
            state: State::Header { filled: 0 },
            header: [0; BLOCK],
            offset: 0,
            files: 0,
            members: Members::default(),
        }
    }
}

impl TarObserver {
    /// Reads the next bytes of the tar.
    pub(crate) fn feed(&mut self, mut data: &[u8]) -> Result<(), TarError> {
        while !data.is_empty() {
            let (used, step) = self.step(data)?;
            self.offset += used as u64;
            data = &data[used..];
            match step {
                Step::More => {}
                Step::HeaderRead => self.header_done()?,
                Step::MemberRead => {
                    self.members.end().map_err(TarError::Contents)?;
                    self.state = State::Header { filled: 0 };
                }
            }
        }
        Ok(())
    }

    /// Takes what the current state wants of `data`: how many bytes, and
    /// whether that completed a header or a member.
    fn step(&mut self, data: &[u8]) -> Result<(usize, Step), TarError> {
        Ok(match &mut self.state {
            State::Header { filled } => {
                let n = (BLOCK - *filled).min(data.len());
                self.header[*filled..*filled + n].copy_from_slice(&data[..n]);
                *filled += n;
                let step = if *filled == BLOCK {
                    Step::HeaderRead
                } else {
                    Step::More
                };
                (n, step)
            }
            State::Data {
                remaining, padding, ..
            } => {
                let left = *remaining + *padding;
                let n = usize::try_from(left).map_or(data.len(), |l| l.min(data.len()));
                let content = usize::try_from(*remaining).map_or(n, |r| r.min(n));
                self.members.data(&data[..content]);
                *remaining -= content as u64;
                *padding -= (n - content) as u64;
                let step = if *remaining == 0 && *padding == 0 {
                    Step::MemberRead
                } else {
                    Step::More
                };
                (n, step)
            }
            State::End { zeros } => {
                if let Some(i) = data.iter().position(|&b| b != 0) {
                    return Err(TarError::AfterEnd {
                        offset: self.offset + i as u64,
                    });
                }
                *zeros += data.len() as u64;
                (data.len(), Step::More)
            }
        })
    }

    /// A whole header block has been read: the next member, or the end.
    fn header_done(&mut self) -> Result<(), TarError> {
        let offset = self.offset - BLOCK as u64;
        if self.header.iter().all(|&b| b == 0) {
            self.state = State::End {
                zeros: BLOCK as u64,
            };
            return Ok(());
        }
        let h = &self.header;
        if !checksum_matches(h) {
            return Err(TarError::BadHeader { offset });
        }
        let size = parse_size(&h[124..136]).ok_or(TarError::BadSize { offset })?;
        let regular = matches!(h[156], b'0' | b'\0' | b'7');
        // Only regular files are read: other members' data (none for
        // directories and links, metadata for L/K/x/g) is skipped.
        let name = if regular {
            self.files += 1;
            let name = member_name(h);
            self.members.begin(&name);
            name
        } else {
            String::new()
        };
        if size == 0 {
            self.members.end().map_err(TarError::Contents)?;
            self.state = State::Header { filled: 0 };
        } else {
            self.state = State::Data {
                name,
                remaining: size,
                padding: (BLOCK as u64 - size % BLOCK as u64) % BLOCK as u64,
            };
        }
        Ok(())
    }

    /// The stream has ended: it must have ended after the tar's end blocks.
    pub(crate) fn finish(self) -> Result<Facts, TarError> {
        let offset = self.offset;
        match self.state {
            State::End { zeros } if zeros >= 2 * BLOCK as u64 => {
                self.members.finish(self.files).map_err(TarError::Contents)
            }
            State::End { .. } | State::Header { filled: 0 } => Err(TarError::NoEnd { offset }),
            State::Header { .. } => Err(TarError::Truncated {
                offset,
                what: "a header".into(),
            }),
            State::Data { name, .. } => Err(TarError::Truncated {
                offset,
                what: if name.is_empty() {
                    "a member".into()
                } else {
                    format!("member {name:?}")
                },
            }),
        }
    }
}

/// The header checksum: the bytes' sum with the checksum field as spaces,
/// in octal in that field.
fn checksum_matches(h: &[u8; BLOCK]) -> bool {
    let sum: u64 = h
        .iter()
        .enumerate()
        .map(|(i, &b)| {
            if (148..156).contains(&i) {
                32
            } else {
                u64::from(b)
            }
        })
        .sum();
    parse_octal(&h[148..156]) == Some(sum)
}

/// An octal number field, NUL- or space-terminated.
fn parse_octal(field: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(field).ok()?;
    let digits = text.trim_matches(|c: char| c == '\0' || c == ' ');
    if digits.is_empty() {
        return Some(0);
    }
    u64::from_str_radix(digits, 8).ok()
}

/// The size field: octal, or base-256 (high bit of its first byte set).
fn parse_size(field: &[u8]) -> Option<u64> {
    if field[0] & 0x80 != 0 {
        let mut n: u64 = u64::from(field[0] & 0x7f);
        for &b in &field[1..] {
            n = n.checked_mul(256)? | u64::from(b);
        }
        return Some(n);
    }
    parse_octal(field)
}

/// The member's path: the ustar prefix, if any, then the name; without a
/// leading `./`.
fn member_name(h: &[u8; BLOCK]) -> String {
    let field = |r: std::ops::Range<usize>| {
        let f = &h[r];
        let end = f.iter().position(|&b| b == 0).unwrap_or(f.len());
        String::from_utf8_lossy(&f[..end]).into_owned()
    };
    let name = field(0..100);
    let prefix = if &h[257..262] == b"ustar" {
        field(345..500)
    } else {
        String::new()
    };
    let path = if prefix.is_empty() {
        name
    } else {
        format!("{prefix}/{name}")
    };
    path.trim_start_matches("./").to_string()
}

/// What [`observe`] found, once the stream has ended cleanly.
pub(crate) type FactsHandle = Arc<Mutex<Option<Facts>>>;

/// Passes `input` through unchanged while a [`TarObserver`] reads it. A
/// stream that is not one whole tar ends with an error instead of its end
/// (so no upload fed by it completes); an error of `input` passes on as
/// it is. After a clean end, the handle holds the [`Facts`].
pub(crate) fn observe(input: ByteStream) -> (ByteStream, FactsHandle) {
    let facts: FactsHandle = Arc::new(Mutex::new(None));
    let out = facts.clone();
    let broken = |e: TarError| {
        std::io::Error::other(format!(
            "the output of pg_basebackup is not a whole tar: {e}"
        ))
    };
    let stream = futures::stream::unfold(Some((input, TarObserver::default())), move |state| {
        let out = out.clone();
        async move {
            let (mut input, mut tar) = state?;
            match input.next().await {
                Some(Ok(chunk)) => match tar.feed(&chunk) {
                    Ok(()) => Some((Ok(chunk), Some((input, tar)))),
                    Err(e) => Some((Err(broken(e)), None)),
                },
                Some(Err(e)) => Some((Err(e), None)),
                None => match tar.finish() {
                    Ok(found) => {
                        *out.lock().expect("tar facts") = Some(found);
                        None
                    }
                    Err(e) => Some((Err(broken(e)), None)),
                },
            }
        }
    });
    (byte_stream(stream), facts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::basebackup::members::tests::server_manifest;

    /// A ustar header for a regular file (`kind` b'0') or a directory.
    fn header(name: &str, size: usize, kind: u8) -> [u8; BLOCK] {
        let mut h = [0u8; BLOCK];
        h[..name.len()].copy_from_slice(name.as_bytes());
        h[100..108].copy_from_slice(b"0000600\0");
        h[124..136].copy_from_slice(format!("{size:011o}\0").as_bytes());
        h[156] = kind;
        h[257..263].copy_from_slice(b"ustar\0");
        h[148..156].copy_from_slice(b"        ");
        let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
        h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
        h
    }

    fn tar_of(members: &[(&str, &[u8])]) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&header("base/", 0, b'5'));
        for (name, data) in members {
            out.extend_from_slice(&header(name, data.len(), b'0'));
            out.extend_from_slice(data);
            out.resize(out.len().div_ceil(BLOCK) * BLOCK, 0);
        }
        out.extend_from_slice(&[0u8; 2 * BLOCK]);
        out
    }

    const LABEL: &[u8] =
        b"START WAL LOCATION: 0/2000028 (file 000000010000000000000002)\nSTART TIME: 2026-12-01 18:34:44 UTC\nSTART TIMELINE: 1\n";

    fn backup(manifest: &[u8]) -> Vec<u8> {
        let control = 7_714_405_867_751_627_457u64.to_le_bytes();
        tar_of(&[
            ("backup_label", LABEL),
            ("base/1/1259", &[7u8; 8192 + 100]),
            ("global/pg_control", &control),
            ("empty", b""),
            ("backup_manifest", manifest),
        ])
    }

    fn read(bytes: &[u8], piece: usize) -> Result<Facts, TarError> {
        let mut tar = TarObserver::default();
        for chunk in bytes.chunks(piece) {
            tar.feed(chunk)?;
        }
        tar.finish()
    }

    fn manifest() -> Vec<u8> {
        server_manifest(
            40,
            "{ \"Timeline\": 1, \"Start-LSN\": \"0/2000028\", \"End-LSN\": \"0/2000100\" }",
        )
    }

    #[test]
    fn a_whole_tar_is_read_in_any_pieces() {
        let manifest = manifest();
        let tar = backup(&manifest);
        for piece in [1, 100, 511, 512, 513, 64 * 1024] {
            let facts = read(&tar, piece).unwrap();
            assert_eq!(facts.files, 5);
            assert_eq!(
                facts.manifest_sha256,
                hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&manifest))
            );
            assert_eq!(facts.label.timeline, 1);
            assert_eq!(facts.label.start_lsn.to_string(), "0/2000028");
            assert_eq!(facts.wal_ranges[0].end.to_string(), "0/2000100");
            assert!(facts.is_cluster(7_714_405_867_751_627_457));
            assert!(!facts.is_cluster(1));
        }
    }

    #[test]
    fn a_truncated_or_extended_tar_is_refused() {
        let tar = backup(&manifest());
        // Cut anywhere before the second end block: refused.
        for cut in [
            0,
            100,
            512,
            1024,
            5000,
            tar.len() - 2 * BLOCK,
            tar.len() - 1,
        ] {
            let err = read(&tar[..cut], 4096).unwrap_err();
            assert!(
                matches!(err, TarError::Truncated { .. } | TarError::NoEnd { .. }),
                "cut at {cut}: {err}"
            );
        }
        let mut longer = tar.clone();
        longer.extend_from_slice(b"\0\0x");
        let err = read(&longer, 4096).unwrap_err();
        assert_eq!(
            err,
            TarError::AfterEnd {
                offset: tar.len() as u64 + 2
            }
        );
        // More zero padding (a tar blocked to 10 KiB) is fine.
        let mut padded = tar;
        padded.resize(padded.len() + 8 * BLOCK, 0);
        read(&padded, 4096).unwrap();
    }

    #[test]
    fn a_damaged_header_or_missing_member_is_refused() {
        let mut tar = backup(&manifest());
        tar[BLOCK + 3] ^= 0x20;
        let err = read(&tar, 4096).unwrap_err();
        assert_eq!(err, TarError::BadHeader { offset: 512 });

        let no_manifest = tar_of(&[("backup_label", LABEL)]);
        let err = read(&no_manifest, 4096).unwrap_err().to_string();
        assert!(err.contains("no backup_manifest"), "{err}");
        let not_tar = vec![b'x'; 4096];
        assert_eq!(
            read(&not_tar, 4096).unwrap_err(),
            TarError::BadHeader { offset: 0 }
        );
    }

    #[test]
    fn sizes_are_octal_or_base_256() {
        assert_eq!(parse_size(b"00000001000\0"), Some(512));
        assert_eq!(parse_size(b"       1000 "), Some(512));
        let mut big = [0u8; 12];
        big[0] = 0x80;
        big[7] = 0x02;
        assert_eq!(parse_size(&big), Some(2 << 32));
        assert_eq!(parse_size(b"0000000009\0\0"), None);
    }

    #[tokio::test]
    async fn the_stream_passes_unchanged_and_ends_in_an_error_when_broken() {
        use futures::TryStreamExt;
        let tar = backup(&manifest());
        let (stream, facts) = observe(backstop_core::store::bytes_stream(tar.clone()));
        let out: Vec<bytes::Bytes> = stream.try_collect().await.unwrap();
        assert_eq!(out.concat(), tar);
        assert_eq!(facts.lock().unwrap().as_ref().unwrap().files, 5);

        let (stream, facts) = observe(backstop_core::store::bytes_stream(tar[..3000].to_vec()));
        let err = stream.try_collect::<Vec<_>>().await.unwrap_err();
        assert!(err.to_string().contains("not a whole tar"), "{err}");
        assert!(facts.lock().unwrap().is_none());
    }
}
