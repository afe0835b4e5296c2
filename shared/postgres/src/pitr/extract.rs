//! The base backup's tar (the server's archive and then Backstop's with
//! `backup_manifest`, concatenated), written into the new data directory as it
//! streams past: regular files (0600) and directories (0700) only, names
//! checked (no absolute path, no `..`, nothing but plain components), one
//! header and one slice of data in memory at a time. The input is the
//! decrypted stream of authenticated chunks, so whatever reaches the disk
//! was authenticated; `backup_manifest`'s SHA-256 is computed on the way
//! and checked by the caller against the signed one.

use std::os::unix::fs::DirBuilderExt;
use std::path::{Component, Path, PathBuf};

use futures::StreamExt;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use backstop_core::crypto::CryptoError;
use backstop_core::error::{Failure, FailureKind};
use backstop_core::store::{ByteStream, StoreError};

const BLOCK: usize = 512;
/// The member written last (by `pg_basebackup`, or by Backstop in an
/// archive of its own), describing the others.
pub(super) const BACKUP_MANIFEST: &str = "backup_manifest";

/// What was written.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Extracted {
    /// Regular files.
    pub files: u64,
    /// Their bytes.
    pub bytes: u64,
    /// SHA-256 of `backup_manifest`, when the tar had one.
    pub backup_manifest_sha256: Option<String>,
}

/// Why extraction stopped; the message says where in the tar.
#[derive(Debug, thiserror::Error)]
pub(super) enum ExtractError {
    #[error("the backup's data could not be read: {0}")]
    Input(std::io::Error),
    #[error("the tar is malformed at byte {offset}: {what}")]
    Tar { offset: u64, what: String },
    #[error("writing {path} failed: {source}")]
    Write {
        path: String,
        source: std::io::Error,
    },
}

impl ExtractError {
    /// What the failure means: the data's own (it did not authenticate or
    /// decrypt, or the signed tar is malformed) is integrity; reading it,
    /// what the store says; writing the files is neither.
    pub(super) fn failure_kind(&self) -> FailureKind {
        match self {
            ExtractError::Input(e) => e
                .get_ref()
                .and_then(|inner| {
                    (inner
                        .downcast_ref::<CryptoError>()
                        .map(Failure::failure_kind))
                    .or_else(|| {
                        inner
                            .downcast_ref::<StoreError>()
                            .map(Failure::failure_kind)
                    })
                })
                .unwrap_or(FailureKind::Other),
            ExtractError::Tar { .. } => FailureKind::Integrity,
            ExtractError::Write { .. } => FailureKind::Other,
        }
    }
}

enum State {
    Header {
        filled: usize,
    },
    Data {
        file: Option<(tokio::fs::File, String)>,
        remaining: u64,
        padding: u64,
        /// Only for `backup_manifest`.
        sha: Option<Box<Sha256>>,
    },
    End,
}

struct Reader {
    dir: PathBuf,
    state: State,
    header: [u8; BLOCK],
    offset: u64,
    out: Extracted,
}

/// Extracts `plain` (a tar) into `dir`, which exists and is empty.
pub(super) async fn extract(mut plain: ByteStream, dir: &Path) -> Result<Extracted, ExtractError> {
    let mut r = Reader {
        dir: dir.to_path_buf(),
        state: State::Header { filled: 0 },
        header: [0; BLOCK],
        offset: 0,
        out: Extracted::default(),
    };
    while let Some(chunk) = plain.next().await {
        let chunk = chunk.map_err(ExtractError::Input)?;
        r.feed(&chunk).await?;
    }
    match r.state {
        State::End => Ok(r.out),
        State::Header { .. } => {
            Err(r.malformed("the tar has no end-of-archive blocks: it is truncated"))
        }
        State::Data { .. } => Err(r.malformed("the tar ends inside a member: it is truncated")),
    }
}

impl Reader {
    fn malformed(&self, what: impl Into<String>) -> ExtractError {
        ExtractError::Tar {
            offset: self.offset,
            what: what.into(),
        }
    }

    async fn feed(&mut self, mut data: &[u8]) -> Result<(), ExtractError> {
        while !data.is_empty() {
            let used = self.step(data).await?;
            self.offset += used as u64;
            data = &data[used..];
        }
        Ok(())
    }

    /// Consumes what the current state wants of `data`; returns how much.
    async fn step(&mut self, data: &[u8]) -> Result<usize, ExtractError> {
        match &mut self.state {
            State::Header { filled } => {
                let n = (BLOCK - *filled).min(data.len());
                self.header[*filled..*filled + n].copy_from_slice(&data[..n]);
                *filled += n;
                if *filled == BLOCK {
                    self.header_done(self.offset + n as u64 - BLOCK as u64)
                        .await?;
                }
                Ok(n)
            }
            State::Data {
                remaining, padding, ..
            } if *remaining == 0 => {
                let n = (*padding).min(data.len() as u64);
                *padding -= n;
                if *padding == 0 {
                    self.member_done().await?;
                }
                Ok(n as usize)
            }
            State::Data {
                file,
                remaining,
                padding,
                sha,
            } => {
                let n = (*remaining).min(data.len() as u64) as usize;
                if let Some((f, path)) = file {
                    f.write_all(&data[..n])
                        .await
                        .map_err(|source| ExtractError::Write {
                            path: path.clone(),
                            source,
                        })?;
                }
                if let Some(h) = sha {
                    h.update(&data[..n]);
                }
                *remaining -= n as u64;
                let done = *remaining == 0 && *padding == 0;
                self.out.bytes += n as u64;
                if done {
                    self.member_done().await?;
                }
                Ok(n)
            }
            // Zero blocks, or the next of concatenated archives (the
            // server's, then the one with `backup_manifest`), as
            // `tar --ignore-zeros` reads them.
            State::End => match data.iter().position(|b| *b != 0) {
                Some(at) if (self.offset + at as u64).is_multiple_of(BLOCK as u64) => {
                    self.state = State::Header { filled: 0 };
                    Ok(at)
                }
                Some(at) => {
                    self.offset += at as u64;
                    Err(self
                        .malformed("non-zero bytes inside a block after the end-of-archive blocks"))
                }
                None => Ok(data.len()),
            },
        }
    }

    async fn member_done(&mut self) -> Result<(), ExtractError> {
        if let State::Data { file, sha, .. } =
            std::mem::replace(&mut self.state, State::Header { filled: 0 })
        {
            if let Some((mut f, path)) = file {
                f.flush()
                    .await
                    .map_err(|source| ExtractError::Write { path, source })?;
            }
            if let Some(h) = sha {
                self.out.backup_manifest_sha256 = Some(hex::encode((*h).finalize()));
            }
        }
        Ok(())
    }

    /// A complete header block: the end of the archive, a directory, or a
    /// regular file to write.
    async fn header_done(&mut self, start: u64) -> Result<(), ExtractError> {
        let h = self.header;
        if h.iter().all(|b| *b == 0) {
            self.state = State::End;
            return Ok(());
        }
        let bad = |what: String| ExtractError::Tar {
            offset: start,
            what,
        };
        if !checksum_ok(&h) {
            return Err(bad(
                "the header's checksum does not match (not a tar header)".into(),
            ));
        }
        let name = member_name(&h).map_err(bad)?;
        let size = parse_size(&h[124..136]).ok_or_else(|| bad("unreadable size field".into()))?;
        let padding = (BLOCK as u64 - size % BLOCK as u64) % BLOCK as u64;
        let path = self.dir.join(&name);
        let shown = path.display().to_string();
        let werr = |source: std::io::Error| ExtractError::Write {
            path: shown.clone(),
            source,
        };
        let file = match h[156] {
            b'0' | 0 => {
                if let Some(parent) = path.parent() {
                    make_dir(parent).map_err(werr)?;
                }
                let mut opts = tokio::fs::OpenOptions::new();
                opts.write(true)
                    .create_new(true)
                    .mode(0o600)
                    .custom_flags(libc::O_NOFOLLOW);
                self.out.files += 1;
                Some((opts.open(&path).await.map_err(werr)?, shown.clone()))
            }
            b'5' => {
                make_dir(&path).map_err(werr)?;
                None
            }
            b'2' | b'1' => {
                return Err(bad(format!(
                    "{name} is a link; a base backup of one tablespace (pg_basebackup -Ft -X none) has none, and links are not restored"
                )));
            }
            t => {
                return Err(bad(format!(
                    "{name} has tar type {:?}, which pg_basebackup does not write",
                    t as char
                )));
            }
        };
        let sha = (name == BACKUP_MANIFEST).then(|| Box::new(Sha256::new()));
        self.state = State::Data {
            file,
            remaining: size,
            padding,
            sha,
        };
        if size == 0 && padding == 0 {
            self.member_done().await?;
        }
        Ok(())
    }
}

/// Creates `path` and its missing parents, mode 0700.
fn make_dir(path: &Path) -> std::io::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
}

fn field(bytes: &[u8]) -> &[u8] {
    let end = bytes.iter().position(|b| *b == 0).unwrap_or(bytes.len());
    &bytes[..end]
}

/// The member's path: ustar prefix and name, relative, plain components only.
fn member_name(h: &[u8; BLOCK]) -> Result<String, String> {
    let name = String::from_utf8(field(&h[..100]).to_vec())
        .map_err(|_| "a member name is not UTF-8".to_string())?;
    let prefix = if &h[257..262] == b"ustar" {
        String::from_utf8_lossy(field(&h[345..500])).into_owned()
    } else {
        String::new()
    };
    let full = if prefix.is_empty() {
        name
    } else {
        format!("{prefix}/{name}")
    };
    // PostgreSQL writes some members as `./pg_wal/...`.
    let trimmed = full
        .strip_prefix("./")
        .unwrap_or(&full)
        .trim_end_matches('/');
    let path = Path::new(trimmed);
    let plain = !trimmed.is_empty() && path.components().all(|c| matches!(c, Component::Normal(_)));
    if !plain || trimmed.contains("//") {
        return Err(format!(
            "member {full:?} is not a plain relative path (absolute, `..` or `.` components are refused)"
        ));
    }
    Ok(trimmed.to_string())
}

fn checksum_ok(h: &[u8; BLOCK]) -> bool {
    let stored = std::str::from_utf8(field(&h[148..156]))
        .ok()
        .map(|s| s.trim_matches(|c: char| c == ' ' || c == '\0'));
    let Some(stored) = stored.and_then(|s| u64::from_str_radix(s, 8).ok()) else {
        return false;
    };
    let sum: u64 = h
        .iter()
        .enumerate()
        .map(|(i, b)| {
            if (148..156).contains(&i) {
                32
            } else {
                u64::from(*b)
            }
        })
        .sum();
    sum == stored
}

/// Octal, or base-256 (first byte 0x80) as GNU tar and PostgreSQL write
/// sizes past 8 GiB.
fn parse_size(f: &[u8]) -> Option<u64> {
    if f[0] & 0x80 != 0 {
        return f[1..].iter().try_fold(u64::from(f[0] & 0x7f), |acc, b| {
            acc.checked_mul(256).map(|a| a + u64::from(*b))
        });
    }
    let text = std::str::from_utf8(field(f))
        .ok()?
        .trim_matches(|c: char| c == ' ' || c == '\0');
    if text.is_empty() {
        Some(0)
    } else {
        u64::from_str_radix(text, 8).ok()
    }
}

/// Removes everything inside `dir` (and `dir` itself when `remove_dir`).
pub(super) fn empty_dir(dir: &Path, remove_dir: bool) -> String {
    let result = if remove_dir {
        std::fs::remove_dir_all(dir)
    } else {
        std::fs::read_dir(dir).and_then(|entries| {
            entries.flatten().try_for_each(|e| {
                let p = e.path();
                if e.file_type()?.is_dir() {
                    std::fs::remove_dir_all(p)
                } else {
                    std::fs::remove_file(p)
                }
            })
        })
    };
    match result {
        Ok(()) => format!(
            "everything written into {} was removed again (all of it was from authenticated data)",
            dir.display()
        ),
        Err(e) => format!(
            "removing what was written into {} failed ({e}): remove it by hand before trying again",
            dir.display()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use backstop_core::store::byte_stream;
    use bytes::Bytes;

    fn header(name: &str, kind: u8, size: u64) -> [u8; BLOCK] {
        let mut h = [0u8; BLOCK];
        h[..name.len()].copy_from_slice(name.as_bytes());
        h[100..107].copy_from_slice(b"0000600");
        h[124..135].copy_from_slice(format!("{size:011o}").as_bytes());
        h[156] = kind;
        h[257..263].copy_from_slice(b"ustar\0");
        h[148..156].copy_from_slice(b"        ");
        let sum: u64 = h.iter().map(|b| u64::from(*b)).sum();
        h[148..155].copy_from_slice(format!("{sum:06o}\0").as_bytes());
        h
    }

    fn tar(members: &[(&str, u8, &[u8])]) -> Vec<u8> {
        let mut out = Vec::new();
        for (name, kind, data) in members {
            out.extend_from_slice(&header(name, *kind, data.len() as u64));
            out.extend_from_slice(data);
            out.resize(out.len().div_ceil(BLOCK) * BLOCK, 0);
        }
        out.resize(out.len() + 2 * BLOCK, 0);
        out
    }

    fn stream(bytes: Vec<u8>, piece: usize) -> ByteStream {
        let parts: Vec<std::io::Result<Bytes>> = bytes
            .chunks(piece)
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        byte_stream(futures::stream::iter(parts))
    }

    fn tempdir() -> PathBuf {
        let d = std::env::temp_dir().join(format!("pitr-x-{:08x}", rand::random::<u32>()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[tokio::test]
    async fn files_and_directories_are_written_in_any_slicing() {
        let body = b"{\"PostgreSQL-Backup-Manifest-Version\": 1}".to_vec();
        // The server's archive, then Backstop's with the manifest.
        let mut t = tar(&[
            ("global", b'5', b""),
            ("global/pg_control", b'0', &[7u8; 700]),
            ("pg_wal", b'5', b""),
        ]);
        t.extend(tar(&[(BACKUP_MANIFEST, b'0', &body)]));
        for piece in [1, 511, 512, 4096] {
            let dir = tempdir();
            let out = extract(stream(t.clone(), piece), &dir).await.unwrap();
            assert_eq!((out.files, out.bytes), (2, 700 + body.len() as u64));
            assert_eq!(
                out.backup_manifest_sha256.unwrap(),
                hex::encode(Sha256::digest(&body))
            );
            assert_eq!(
                std::fs::read(dir.join("global/pg_control")).unwrap(),
                vec![7u8; 700]
            );
            assert!(dir.join("pg_wal").is_dir());
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.join("global/pg_control"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
            std::fs::remove_dir_all(&dir).unwrap();
        }
    }

    #[tokio::test]
    async fn escapes_links_and_truncation_are_refused() {
        for name in ["/etc/passwd", "../x", "a/../../x", "./../x", "."] {
            let dir = tempdir();
            let err = extract(stream(tar(&[(name, b'0', b"x")]), 512), &dir)
                .await
                .unwrap_err();
            assert!(
                err.to_string().contains("not a plain relative path"),
                "{name}: {err}"
            );
            assert!(
                std::fs::read_dir(&dir).unwrap().next().is_none(),
                "nothing written for {name}"
            );
            std::fs::remove_dir_all(&dir).unwrap();
        }
        let dir = tempdir();
        let err = extract(stream(tar(&[("pg_wal", b'2', b"")]), 512), &dir)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("is a link"), "{err}");
        let mut cut = tar(&[("f", b'0', &[1u8; 2000])]);
        cut.truncate(1500);
        let err = extract(stream(cut, 100), &dir.join("f2"))
            .await
            .unwrap_err();
        assert!(
            err.to_string().contains("truncated") || err.to_string().contains("writing"),
            "{err}"
        );
        let mut trailing = tar(&[("g", b'0', b"y")]);
        trailing.extend_from_slice(&[0, 1]);
        let err = extract(stream(trailing, 512), &dir).await.unwrap_err();
        assert!(
            err.to_string().contains("after the end-of-archive"),
            "{err}"
        );
        let mut garbled = tar(&[("h", b'0', b"y")]);
        garbled[10] ^= 1;
        assert!(
            extract(stream(garbled, 512), &dir)
                .await
                .unwrap_err()
                .to_string()
                .contains("checksum")
        );
        assert!(empty_dir(&dir, true).contains("removed"));
    }
}
