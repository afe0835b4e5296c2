//! Verified data on local disk, for the two restores that cannot stream
//! straight into one `pg_restore` transaction:
//!
//! - a backup written before chunk digests existed: its ciphertext is
//!   written to an already-unlinked 0600 file while it is hashed, checked
//!   whole against the signed manifest, and only then read back into
//!   decryption (one download, no second read of the cloud object);
//! - `--jobs N`: the authenticated, decrypted archive is written to a 0600
//!   file in a 0700 directory of its own, for `pg_restore -j N` (which needs
//!   a file it can seek), and removed afterwards.
//!
//! Free space is checked before the first byte is written.

use std::io::SeekFrom;
use std::path::{Path, PathBuf};

use futures::StreamExt;
use tokio::io::{AsyncSeekExt, AsyncWriteExt, BufWriter};

use backstop_core::crypto::DigestChecker;
use backstop_core::manifest::CiphertextInfo;
use backstop_core::store::{ByteStream, byte_stream};

use super::error::RestoreError;
use super::stream::stream_error;

/// Room left beside what a spool needs, for the file system's own use.
const SPARE_BYTES: u64 = 64 << 20;

fn spool_err(path: &Path, message: impl std::fmt::Display) -> RestoreError {
    RestoreError::Spool {
        path: path.display().to_string(),
        message: message.to_string(),
    }
}

/// Bytes free for an unprivileged user on the file system of `dir`.
fn free_bytes(dir: &Path) -> std::io::Result<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes()).map_err(std::io::Error::other)?;
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a NUL-terminated path; statvfs fills `st`.
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(st.f_bavail as u64 * st.f_frsize as u64)
}

/// Fails with a clear error unless `dir` has room for `need` bytes of
/// `what`.
pub(super) fn check_free_space(dir: &Path, need: u64, what: &str) -> Result<(), RestoreError> {
    let free = free_bytes(dir).map_err(|e| spool_err(dir, e))?;
    if free < need.saturating_add(SPARE_BYTES) {
        return Err(spool_err(
            dir,
            format!(
                "{what} needs {need} bytes (plus {SPARE_BYTES} spare), the file system has {free} free"
            ),
        ));
    }
    Ok(())
}

fn random_name(prefix: &str) -> String {
    format!("{prefix}-{:016x}", rand::random::<u64>())
}

/// A new file only its owner can read, created (never opened) at `path`.
fn create_private(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
}

/// Writes `body` to an unlinked spool file in `dir` while checking size,
/// SHA-256 and CRC32C against `expected`; once all of it matched, returns
/// the file's contents as a stream. Nothing is handed on before the whole
/// object verified, and nothing is left on disk whatever happens.
pub(super) async fn verified_ciphertext(
    dir: &Path,
    mut body: ByteStream,
    expected: &CiphertextInfo,
    object: &str,
) -> Result<ByteStream, RestoreError> {
    let path = dir.join(random_name(".backstop-spool"));
    let file = create_private(&path).map_err(|e| spool_err(&path, e))?;
    // Unlinked at once: the open file is all there is, gone when closed.
    std::fs::remove_file(&path).map_err(|e| spool_err(&path, e))?;
    let mut file = tokio::fs::File::from_std(file);
    let mut checker = DigestChecker::new(expected);
    let data = |source| RestoreError::Data {
        object: object.to_string(),
        source,
    };
    {
        let mut out = BufWriter::with_capacity(1 << 20, &mut file);
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| stream_error(e, object))?;
            checker.feed(&chunk).map_err(data)?;
            out.write_all(&chunk)
                .await
                .map_err(|e| spool_err(&path, e))?;
        }
        out.flush().await.map_err(|e| spool_err(&path, e))?;
    }
    checker.finish().map_err(data)?;
    file.seek(SeekFrom::Start(0))
        .await
        .map_err(|e| spool_err(&path, e))?;
    tracing::info!(
        event = "restore_spool_verified",
        object,
        "the whole object matches the signed manifest; decrypting it from the spool"
    );
    Ok(byte_stream(tokio_util::io::ReaderStream::with_capacity(
        file,
        1 << 20,
    )))
}

/// A spooled archive: removed with its private directory when dropped.
pub(super) struct SpooledArchive {
    dir: PathBuf,
    file: PathBuf,
}

impl SpooledArchive {
    /// The archive file (mode 0600, in a 0700 directory).
    pub(super) fn path(&self) -> &Path {
        &self.file
    }
}

impl Drop for SpooledArchive {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.dir) {
            tracing::warn!(event = "restore_spool_cleanup_failed", dir = %self.dir.display(), error = %e, "could not remove the restore spool; delete it by hand");
        }
    }
}

/// Writes the authenticated, decrypted archive `plain` (`size` bytes, as
/// the signed manifest says) to a private spool directory under `dir`,
/// after checking there is room. `on_chunk` is called as data arrives.
pub(super) async fn plaintext(
    dir: &Path,
    mut plain: ByteStream,
    size: u64,
    object: &str,
    mut on_chunk: impl FnMut(),
) -> Result<SpooledArchive, RestoreError> {
    check_free_space(dir, size, "the decrypted archive for --jobs")?;
    let private = dir.join(random_name("backstop-restore"));
    {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&private)
            .map_err(|e| spool_err(&private, e))?;
    }
    let archive = SpooledArchive {
        file: private.join("archive.pgdump"),
        dir: private,
    };
    let file = create_private(&archive.file).map_err(|e| spool_err(&archive.file, e))?;
    let mut out = BufWriter::with_capacity(1 << 20, tokio::fs::File::from_std(file));
    while let Some(chunk) = plain.next().await {
        let chunk = chunk.map_err(|e| stream_error(e, object))?;
        out.write_all(&chunk)
            .await
            .map_err(|e| spool_err(&archive.file, e))?;
        on_chunk();
    }
    out.flush().await.map_err(|e| spool_err(&archive.file, e))?;
    Ok(archive)
}

#[cfg(test)]
mod tests {
    use super::*;
    use backstop_core::crypto::inspect::DigestState;
    use bytes::Bytes;

    fn body(data: &'static [u8]) -> ByteStream {
        byte_stream(futures::stream::iter(
            data.chunks(1000).map(|c| Ok(Bytes::from_static(c))),
        ))
    }

    fn info(data: &[u8]) -> CiphertextInfo {
        let mut d = DigestState::new();
        d.update(data);
        let d = d.finish();
        CiphertextInfo {
            object: "data".into(),
            size: d.size,
            sha256: d.sha256,
            crc32c: d.crc32c,
            ..CiphertextInfo::default()
        }
    }

    fn entries(dir: &Path) -> usize {
        std::fs::read_dir(dir).unwrap().count()
    }

    const DATA: &[u8] = &[42u8; 10_000];

    #[tokio::test]
    async fn an_intact_object_comes_back_whole_and_leaves_nothing_on_disk() {
        let dir = tempdir();
        let mut s = verified_ciphertext(&dir, body(DATA), &info(DATA), "gs://b/k")
            .await
            .unwrap();
        assert_eq!(entries(&dir), 0, "the spool file is unlinked at once");
        let mut got = Vec::new();
        while let Some(c) = s.next().await {
            got.extend_from_slice(&c.unwrap());
        }
        assert_eq!(got, DATA);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[tokio::test]
    async fn a_modified_object_hands_on_nothing() {
        let dir = tempdir();
        let mut bad = DATA.to_vec();
        bad[9_999] ^= 1;
        let bad: &'static [u8] = Box::leak(bad.into_boxed_slice());
        let err = verified_ciphertext(&dir, body(bad), &info(DATA), "gs://b/k")
            .await
            .err()
            .expect("a modified object fails before anything is handed on");
        assert!(
            matches!(&err, RestoreError::Data { object, .. } if object == "gs://b/k"),
            "{err}"
        );
        assert_eq!(entries(&dir), 0);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[tokio::test]
    async fn spooled_archives_are_private_and_removed_after_use() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempdir();
        let archive = plaintext(&dir, body(DATA), DATA.len() as u64, "gs://b/k", || {})
            .await
            .unwrap();
        assert_eq!(std::fs::read(archive.path()).unwrap(), DATA);
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(archive.path()), 0o600);
        assert_eq!(mode(archive.path().parent().unwrap()), 0o700);
        drop(archive);
        assert_eq!(entries(&dir), 0);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn too_little_free_space_is_a_clear_error() {
        let dir = std::env::temp_dir();
        let err = check_free_space(&dir, u64::MAX / 2, "the test").unwrap_err();
        assert!(
            err.to_string().contains("needs") && err.to_string().contains("BACKSTOP_SPOOL_DIR"),
            "{err}"
        );
        assert!(check_free_space(&dir, 1, "the test").is_ok());
    }

    fn tempdir() -> PathBuf {
        let d = std::env::temp_dir().join(random_name("bs-spool-test"));
        std::fs::create_dir(&d).unwrap();
        d
    }
}
