//! The backup format on a local file system: the key directory that
//! `backstop keygen` writes, decryption into a file that appears only once
//! it is known good, and verification of a backup's three files with public
//! keys only.
//!
//! - [`generate_key_dir`]: the four key files ([`KEY_DIR_FILES`]), public
//!   keys mode 0644, secret keys mode 0600, never overwriting a file.
//! - [`decrypt_to_file`]: plaintext goes to `OUT.partial` ([`partial_path`],
//!   mode 0600, created new), is synced to disk and renamed to `OUT` only
//!   after the integrity check passed; on any error the partial file is
//!   deleted.
//! - [`verify_backup_files`]: manifest signature, then the data file's
//!   OpenPGP structure, recipients, size and digests ([`verify_data_file`]).
//!
//! Errors are [`FileError`]: each names the file it is about; failures of
//! the format itself are carried as [`CryptoError`].

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::{
    BackupSecretKey, BackupVerifier, CryptoError, Digests, GeneratedKey, KeyAlgorithm, KeySource,
    RecipientSet, VerifyingKey, decrypt_to_writer, generate_backup_key, generate_signing_key,
    verify_manifest,
};
use crate::manifest::Manifest;
use crate::store::ByteStream;

/// The backup public key in a key directory (encrypt to it).
pub const BACKUP_PUBLIC_KEY_FILE: &str = "backup.pub.asc";
/// The backup secret key in a key directory (decrypts backups; wrap it with
/// KMS and delete the plaintext copy).
pub const BACKUP_SECRET_KEY_FILE: &str = "backup.sec.asc";
/// The signing public key in a key directory (verifies manifests).
pub const SIGNING_PUBLIC_KEY_FILE: &str = "signing.pub.asc";
/// The signing secret key in a key directory (signs manifests; wrap it with
/// KMS and delete the plaintext copy).
pub const SIGNING_SECRET_KEY_FILE: &str = "signing.sec.asc";
/// Every file [`generate_key_dir`] writes, in the order it writes them.
pub const KEY_DIR_FILES: [&str; 4] = [
    BACKUP_PUBLIC_KEY_FILE,
    BACKUP_SECRET_KEY_FILE,
    SIGNING_PUBLIC_KEY_FILE,
    SIGNING_SECRET_KEY_FILE,
];
/// Unix permissions of a public key file.
pub const PUBLIC_FILE_MODE: u32 = 0o644;
/// Unix permissions of a secret key file and of decrypted output.
pub const SECRET_FILE_MODE: u32 = 0o600;
/// Appended to the output path while decrypted data is not yet known good.
pub const PARTIAL_SUFFIX: &str = ".partial";

/// Read size of the verification loop.
const CHUNK: usize = 1 << 20;

/// What can go wrong with backup files on disk. The message names the file;
/// the underlying I/O error is the [`source`](std::error::Error::source)
/// (print the whole chain, e.g. `{:#}` with anyhow).
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// The key directory could not be created.
    #[error("cannot create {path}")]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// A key file is already there: keys are never overwritten.
    #[error("{path} already exists: keygen never overwrites keys (move the old ones away first)")]
    KeyFileExists {
        /// The existing file.
        path: PathBuf,
    },
    /// A new file could not be created (it may exist already).
    #[error("cannot create {path} (keygen never overwrites a key file)")]
    CreateFile {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// Writing or syncing a newly created file failed.
    #[error("cannot write {path}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// The partial output file could not be created (most often: a failed
    /// or killed run left it behind).
    #[error("cannot create {path} (left over from a failed run? delete it)")]
    CreatePartial {
        /// `OUT.partial`.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// Decryption (or writing the plaintext) failed; the partial output is
    /// gone and the output was not created.
    #[error("decryption failed; the partial output was deleted")]
    Decrypt {
        /// Why it failed.
        #[source]
        source: CryptoError,
    },
    /// The verified plaintext could not be renamed into place; the partial
    /// output was deleted.
    #[error("cannot rename {from} to {to}")]
    Rename {
        /// `OUT.partial`.
        from: PathBuf,
        /// `OUT`.
        to: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// A file could not be opened.
    #[error("cannot open {path}")]
    Open {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// A file could not be read.
    #[error("cannot read {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// The verification thread died (a panic or a runtime shutting down).
    #[error("the verification thread stopped unexpectedly: {0}")]
    Thread(String),
    /// Keys, signature, structure or digests are wrong.
    #[error(transparent)]
    Crypto(#[from] CryptoError),
}

/// A refused key file is configuration; a failed check follows the crypto
/// error; the file system's failures say nothing more.
impl crate::error::Failure for FileError {
    fn failure_kind(&self) -> crate::error::FailureKind {
        match self {
            FileError::Crypto(e) | FileError::Decrypt { source: e } => {
                crate::error::Failure::failure_kind(e)
            }
            FileError::KeyFileExists { .. } => crate::error::FailureKind::Config,
            _ => crate::error::FailureKind::Other,
        }
    }
}

// ---- the key directory ---------------------------------------------------

/// The two key pairs [`generate_key_dir`] wrote.
#[derive(Debug)]
pub struct GeneratedKeyDir {
    /// The backup (encryption) key pair.
    pub backup: GeneratedKey,
    /// The signing key pair.
    pub signing: GeneratedKey,
}

/// Creates `path` (which must not exist) and writes `data` to it, synced to
/// disk: mode [`SECRET_FILE_MODE`] if `secret`, else [`PUBLIC_FILE_MODE`]
/// (on Unix; the umask may remove bits). Never overwrites a file.
pub fn write_new_file(path: &Path, data: &[u8], secret: bool) -> Result<(), FileError> {
    let mut f = create_new(
        path,
        if secret {
            SECRET_FILE_MODE
        } else {
            PUBLIC_FILE_MODE
        },
    )
    .map_err(|source| FileError::CreateFile {
        path: path.to_path_buf(),
        source,
    })?;
    f.write_all(data)
        .and_then(|()| f.sync_all())
        .map_err(|source| FileError::Write {
            path: path.to_path_buf(),
            source,
        })
}

/// Generates a backup key pair and a signing key pair and writes them into
/// `dir` as [`KEY_DIR_FILES`] (secret keys mode 0600, public keys 0644).
///
/// Creates `dir` if needed. Refuses before generating anything if any of
/// the four files exists ([`FileError::KeyFileExists`]), and never
/// overwrites one. The secret keys are written unprotected: wrap them with
/// KMS and delete the plaintext copies.
pub fn generate_key_dir(
    dir: &Path,
    algorithm: KeyAlgorithm,
    backup_name: &str,
    signing_name: &str,
) -> Result<GeneratedKeyDir, FileError> {
    std::fs::create_dir_all(dir).map_err(|source| FileError::CreateDir {
        path: dir.to_path_buf(),
        source,
    })?;
    if let Some(path) = KEY_DIR_FILES
        .iter()
        .map(|n| dir.join(n))
        .find(|p| p.exists())
    {
        return Err(FileError::KeyFileExists { path });
    }
    let backup = generate_backup_key(backup_name, algorithm)?;
    let signing = generate_signing_key(signing_name, algorithm)?;
    let files: [(&str, &[u8], bool); 4] = [
        (
            BACKUP_PUBLIC_KEY_FILE,
            backup.public_armored.as_bytes(),
            false,
        ),
        (
            BACKUP_SECRET_KEY_FILE,
            backup.secret_armored.as_bytes(),
            true,
        ),
        (
            SIGNING_PUBLIC_KEY_FILE,
            signing.public_armored.as_bytes(),
            false,
        ),
        (
            SIGNING_SECRET_KEY_FILE,
            signing.secret_armored.as_bytes(),
            true,
        ),
    ];
    for (name, data, secret) in files {
        write_new_file(&dir.join(name), data, secret)?;
    }
    Ok(GeneratedKeyDir { backup, signing })
}

/// A key setting (`file:`, `gcpkms:`, inline armor; see [`KeySource`]), or
/// a plain path of an existing file, taken as `file:PATH`. The error is the
/// setting's own parse error.
pub fn key_source_or_path(setting: &str) -> Result<KeySource, CryptoError> {
    setting.parse::<KeySource>().or_else(|e| {
        if Path::new(setting).exists() {
            Ok(KeySource::File(PathBuf::from(setting)))
        } else {
            Err(e)
        }
    })
}

// ---- decryption into a file ----------------------------------------------

/// Where [`decrypt_to_file`] writes before the output is known good:
/// `output` with [`PARTIAL_SUFFIX`] appended (`dump.pgdump` ->
/// `dump.pgdump.partial`).
pub fn partial_path(output: &Path) -> PathBuf {
    let mut partial = output.as_os_str().to_owned();
    partial.push(PARTIAL_SUFFIX);
    PathBuf::from(partial)
}

/// Decrypts `input` with `key` into the file `output` (capped at
/// `plaintext_size` when known); returns the plaintext size.
///
/// The plaintext is written to [`partial_path`]`(output)`, created new with
/// mode [`SECRET_FILE_MODE`] (an existing partial file is an error: it is
/// left from a failed run), synced to disk, and renamed to `output` only
/// after decryption ended with a passing integrity check. On any error the
/// partial file is deleted, so `output` exists only if it holds the whole,
/// verified plaintext (an existing `output` is replaced only then). A
/// process killed mid-way leaves the partial file behind.
pub async fn decrypt_to_file(
    input: ByteStream,
    key: &BackupSecretKey,
    plaintext_size: Option<u64>,
    output: &Path,
) -> Result<u64, FileError> {
    let partial = partial_path(output);
    let file =
        create_new(&partial, SECRET_FILE_MODE).map_err(|source| FileError::CreatePartial {
            path: partial.clone(),
            source,
        })?;
    let file = Arc::new(file);
    let written = match decrypt_to_writer(input, key, plaintext_size, Arc::clone(&file)).await {
        Ok(n) => sync(file).await.map(|()| n).map_err(CryptoError::Output),
        Err(e) => Err(e),
    };
    let result = match written {
        Ok(n) => std::fs::rename(&partial, output)
            .map(|()| n)
            .map_err(|source| FileError::Rename {
                from: partial.clone(),
                to: output.to_path_buf(),
                source,
            }),
        Err(source) => Err(FileError::Decrypt { source }),
    };
    if result.is_err() {
        let _ = std::fs::remove_file(&partial);
    }
    result
}

/// `fsync` on a blocking thread.
async fn sync(file: Arc<File>) -> io::Result<()> {
    tokio::task::spawn_blocking(move || file.sync_all())
        .await
        .map_err(io::Error::other)?
}

/// Creates a file that must not exist yet, with `mode` on Unix.
fn create_new(path: &Path, mode: u32) -> io::Result<File> {
    let mut opts = OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(mode);
    }
    #[cfg(not(unix))]
    let _ = mode;
    opts.open(path)
}

// ---- verification of files -------------------------------------------------

/// A backup whose files verified.
#[derive(Debug, Clone)]
pub struct VerifiedBackup {
    /// The manifest, signature checked.
    pub manifest: Manifest,
    /// Size and digests of the data file (equal to the manifest's).
    pub digests: Digests,
}

/// Verifies a backup from its three files without secrets: the detached
/// `signature` over the exact `manifest` bytes with one of `signing_keys`
/// ([`verify_manifest`]), then the data file against the signed manifest
/// ([`verify_data_file`], on a blocking thread).
pub async fn verify_backup_files(
    manifest: &Path,
    signature: &Path,
    data: &Path,
    signing_keys: &[VerifyingKey],
    recipients: RecipientSet,
) -> Result<VerifiedBackup, FileError> {
    let manifest_bytes = read(manifest)?;
    let sig = read(signature)?;
    let manifest = verify_manifest(&manifest_bytes, &sig, signing_keys)?;
    let m = manifest.clone();
    let data = data.to_path_buf();
    let digests = tokio::task::spawn_blocking(move || verify_data_file(&m, recipients, &data))
        .await
        .map_err(|e| FileError::Thread(e.to_string()))??;
    Ok(VerifiedBackup { manifest, digests })
}

/// Reads the data file at `path` through a [`BackupVerifier`] for
/// `manifest` (whose signature the caller checked): OpenPGP structure,
/// recipients (every one must be in `recipients`), size, SHA-256 and
/// CRC32C. Blocking; memory stays bounded whatever the file's size.
pub fn verify_data_file(
    manifest: &Manifest,
    recipients: RecipientSet,
    path: &Path,
) -> Result<Digests, FileError> {
    let mut verifier = BackupVerifier::new(manifest, recipients)?;
    let mut f = File::open(path).map_err(|source| FileError::Open {
        path: path.to_path_buf(),
        source,
    })?;
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = match f.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(source) => {
                return Err(FileError::Read {
                    path: path.to_path_buf(),
                    source,
                });
            }
        };
        verifier.feed(&buf[..n])?;
    }
    Ok(verifier.finish()?)
}

fn read(path: &Path) -> Result<Vec<u8>, FileError> {
    std::fs::read(path).map_err(|source| FileError::Read {
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::crypto::keys::tests::test_keys;
    use crate::crypto::{RecipientKey, SigningKey, encrypt_stream, sign_manifest};
    use crate::store::byte_stream;

    /// A fresh directory under the system temp dir, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(test: &str) -> Self {
            let p = std::env::temp_dir().join(format!(
                "backstop-files-{test}-{}-{:016x}",
                std::process::id(),
                rand::random::<u64>()
            ));
            std::fs::create_dir_all(&p).unwrap();
            TempDir(p)
        }

        fn join(&self, name: &str) -> PathBuf {
            self.0.join(name)
        }

        fn names(&self) -> Vec<String> {
            let mut v: Vec<String> = std::fs::read_dir(&self.0)
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            v.sort();
            v
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[cfg(unix)]
    fn mode(p: &Path) -> u32 {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    fn plaintext(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 31 % 251) as u8).collect()
    }

    fn stream_of(bytes: &[u8]) -> ByteStream {
        let pieces: Vec<io::Result<Bytes>> = bytes
            .chunks(7_919)
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        byte_stream(futures::stream::iter(pieces))
    }

    fn backup_recipient() -> RecipientKey {
        RecipientKey::from_armored(&test_keys().backup.public_armored).unwrap()
    }

    fn backup_secret() -> BackupSecretKey {
        BackupSecretKey::from_armored(&test_keys().backup.secret_armored).unwrap()
    }

    async fn encrypt(plain: &[u8]) -> (Vec<u8>, crate::crypto::EncryptSummary) {
        use futures::TryStreamExt;
        let enc = encrypt_stream(stream_of(plain), &[backup_recipient()]).unwrap();
        let out: Vec<Bytes> = enc.stream.try_collect().await.unwrap();
        (out.concat(), enc.summary.get().unwrap())
    }

    /// Writes manifest.json, manifest.json.sig and data.pgdump.pgp of a
    /// signed backup of `plain` into `dir`.
    async fn write_backup(dir: &TempDir, plain: &[u8]) -> Manifest {
        let k = test_keys();
        let (data, summary) = encrypt(plain).await;
        let mut m = crate::manifest::tests::sample();
        m.plaintext_size = summary.plaintext_size;
        m.ciphertext = summary.ciphertext_info(crate::naming::DATA_FILE);
        m.recipients = summary.recipients.clone();
        m.signer = k.signing.fingerprint.clone();
        let key = SigningKey::from_armored(&k.signing.secret_armored).unwrap();
        let (bytes, sig) = sign_manifest(&m, &key).unwrap();
        std::fs::write(dir.join("manifest.json"), bytes).unwrap();
        std::fs::write(dir.join("manifest.json.sig"), sig).unwrap();
        std::fs::write(dir.join("data.pgdump.pgp"), data).unwrap();
        m
    }

    async fn verify_dir(dir: &TempDir) -> Result<VerifiedBackup, FileError> {
        let signing =
            vec![VerifyingKey::from_armored(&test_keys().signing.public_armored).unwrap()];
        verify_backup_files(
            &dir.join("manifest.json"),
            &dir.join("manifest.json.sig"),
            &dir.join("data.pgdump.pgp"),
            &signing,
            RecipientSet::new(&[backup_recipient()]),
        )
        .await
    }

    #[test]
    fn keygen_writes_the_four_key_files_with_their_modes() {
        let dir = TempDir::new("keygen");
        let out = dir.join("keys");
        let keys = generate_key_dir(&out, KeyAlgorithm::Curve25519, "b", "s").unwrap();
        let mut names: Vec<String> = KEY_DIR_FILES.iter().map(|n| n.to_string()).collect();
        names.sort();
        let mut found: Vec<String> = std::fs::read_dir(&out)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        found.sort();
        assert_eq!(found, names);
        let read = |n: &str| std::fs::read_to_string(out.join(n)).unwrap();
        assert_eq!(read(BACKUP_PUBLIC_KEY_FILE), keys.backup.public_armored);
        assert_eq!(read(BACKUP_SECRET_KEY_FILE), *keys.backup.secret_armored);
        assert_eq!(read(SIGNING_PUBLIC_KEY_FILE), keys.signing.public_armored);
        assert_eq!(read(SIGNING_SECRET_KEY_FILE), *keys.signing.secret_armored);
        let r = RecipientKey::from_file(out.join(BACKUP_PUBLIC_KEY_FILE)).unwrap();
        assert_eq!(r.fingerprint(), keys.backup.fingerprint);
        let v = VerifyingKey::from_file(out.join(SIGNING_PUBLIC_KEY_FILE)).unwrap();
        assert_eq!(v.fingerprint(), keys.signing.fingerprint);
        #[cfg(unix)]
        {
            assert_eq!(mode(&out.join(BACKUP_SECRET_KEY_FILE)), 0o600);
            assert_eq!(mode(&out.join(SIGNING_SECRET_KEY_FILE)), 0o600);
            // The umask may only remove bits from the public files.
            for n in [BACKUP_PUBLIC_KEY_FILE, SIGNING_PUBLIC_KEY_FILE] {
                let m = mode(&out.join(n));
                assert_eq!(m & !PUBLIC_FILE_MODE, 0, "{n}: {m:o}");
                assert_eq!(m & 0o600, 0o600, "{n}: {m:o}");
            }
        }
    }

    #[test]
    fn keygen_refuses_before_generating_if_any_key_file_exists() {
        let dir = TempDir::new("keygen-exists");
        std::fs::write(dir.join(SIGNING_SECRET_KEY_FILE), "old").unwrap();
        let err = generate_key_dir(&dir.0, KeyAlgorithm::Curve25519, "b", "s").unwrap_err();
        assert!(
            matches!(&err, FileError::KeyFileExists { path } if *path == dir.join(SIGNING_SECRET_KEY_FILE)),
            "{err:?}"
        );
        assert!(
            err.to_string().contains("keygen never overwrites keys"),
            "{err}"
        );
        assert_eq!(dir.names(), vec![SIGNING_SECRET_KEY_FILE.to_string()]);
        assert_eq!(
            std::fs::read_to_string(dir.join(SIGNING_SECRET_KEY_FILE)).unwrap(),
            "old"
        );
    }

    #[test]
    fn keygen_reports_a_directory_it_cannot_create() {
        let dir = TempDir::new("keygen-dir");
        std::fs::write(dir.join("file"), "x").unwrap();
        let err =
            generate_key_dir(&dir.join("file"), KeyAlgorithm::Curve25519, "b", "s").unwrap_err();
        assert!(matches!(err, FileError::CreateDir { .. }), "{err:?}");
    }

    #[test]
    fn write_new_file_never_overwrites() {
        let dir = TempDir::new("write-new");
        let p = dir.join("wrapped.kms");
        write_new_file(&p, b"first", false).unwrap();
        let err = write_new_file(&p, b"second", true).unwrap_err();
        assert!(matches!(err, FileError::CreateFile { .. }), "{err:?}");
        assert_eq!(
            err.to_string(),
            format!(
                "cannot create {} (keygen never overwrites a key file)",
                p.display()
            )
        );
        assert_eq!(std::fs::read(&p).unwrap(), b"first");
    }

    #[test]
    fn key_setting_or_plain_path() {
        let dir = TempDir::new("key-source");
        let p = dir.join("backup.sec.asc");
        std::fs::write(&p, "key").unwrap();
        let plain = p.to_str().unwrap();
        assert_eq!(
            key_source_or_path(plain).unwrap(),
            KeySource::File(p.clone())
        );
        assert_eq!(
            key_source_or_path(&format!("file:{plain}")).unwrap(),
            KeySource::File(p.clone())
        );
        let missing = dir.join("missing.asc");
        let err = key_source_or_path(missing.to_str().unwrap()).unwrap_err();
        assert!(matches!(err, CryptoError::KeySource { .. }), "{err:?}");
    }

    #[test]
    fn partial_path_appends_the_suffix() {
        assert_eq!(
            partial_path(Path::new("/tmp/out.pgdump")),
            PathBuf::from("/tmp/out.pgdump.partial")
        );
        assert_eq!(partial_path(Path::new("x")), PathBuf::from("x.partial"));
    }

    #[tokio::test]
    async fn decrypt_to_file_renames_only_the_verified_plaintext() {
        let dir = TempDir::new("decrypt-ok");
        let plain = plaintext(300_000);
        let (ct, _) = encrypt(&plain).await;
        let out = dir.join("out.pgdump");
        let n = decrypt_to_file(stream_of(&ct), &backup_secret(), None, &out)
            .await
            .unwrap();
        assert_eq!(n, plain.len() as u64);
        assert_eq!(std::fs::read(&out).unwrap(), plain);
        assert_eq!(dir.names(), vec!["out.pgdump".to_string()]);
        #[cfg(unix)]
        assert_eq!(mode(&out), SECRET_FILE_MODE);
    }

    #[tokio::test]
    async fn decrypt_to_file_deletes_the_partial_output_on_failure() {
        let dir = TempDir::new("decrypt-bad");
        let (mut ct, _) = encrypt(&plaintext(300_000)).await;
        let at = ct.len() / 2;
        ct[at] ^= 0x40;
        let out = dir.join("out.pgdump");
        let err = decrypt_to_file(stream_of(&ct), &backup_secret(), None, &out)
            .await
            .unwrap_err();
        assert!(
            matches!(
                &err,
                FileError::Decrypt {
                    source: CryptoError::IntegrityCheckFailed
                }
            ),
            "{err:?}"
        );
        assert_eq!(
            err.to_string(),
            "decryption failed; the partial output was deleted"
        );
        assert!(dir.names().is_empty(), "{:?}", dir.names());
    }

    #[tokio::test]
    async fn decrypt_to_file_keeps_an_existing_output_when_it_fails() {
        let dir = TempDir::new("decrypt-keep");
        let out = dir.join("out.pgdump");
        std::fs::write(&out, "previous").unwrap();
        let (ct, _) = encrypt(&plaintext(10_000)).await;
        let truncated = &ct[..ct.len() - 5];
        let err = decrypt_to_file(stream_of(truncated), &backup_secret(), None, &out)
            .await
            .unwrap_err();
        assert!(matches!(err, FileError::Decrypt { .. }), "{err:?}");
        assert_eq!(std::fs::read_to_string(&out).unwrap(), "previous");
        assert_eq!(dir.names(), vec!["out.pgdump".to_string()]);
    }

    #[tokio::test]
    async fn decrypt_to_file_refuses_a_leftover_partial_file() {
        let dir = TempDir::new("decrypt-leftover");
        let out = dir.join("out.pgdump");
        let partial = partial_path(&out);
        std::fs::write(&partial, "left over").unwrap();
        let (ct, _) = encrypt(&plaintext(10_000)).await;
        let err = decrypt_to_file(stream_of(&ct), &backup_secret(), None, &out)
            .await
            .unwrap_err();
        assert!(matches!(err, FileError::CreatePartial { .. }), "{err:?}");
        assert_eq!(
            err.to_string(),
            format!(
                "cannot create {} (left over from a failed run? delete it)",
                partial.display()
            )
        );
        assert_eq!(std::fs::read_to_string(&partial).unwrap(), "left over");
        assert!(!out.exists());
    }

    #[tokio::test]
    async fn verify_backup_files_accepts_a_signed_backup() {
        let dir = TempDir::new("verify-ok");
        let m = write_backup(&dir, &plaintext(200_000)).await;
        let v = verify_dir(&dir).await.unwrap();
        assert_eq!(v.manifest, m);
        assert_eq!(v.digests.size, m.ciphertext.size);
        assert_eq!(v.digests.sha256, m.ciphertext.sha256);
        assert_eq!(v.digests.crc32c, m.ciphertext.crc32c);
    }

    #[tokio::test]
    async fn verify_backup_files_refuses_modified_data_and_manifest() {
        let dir = TempDir::new("verify-bad");
        write_backup(&dir, &plaintext(200_000)).await;
        let data = dir.join("data.pgdump.pgp");
        let good = std::fs::read(&data).unwrap();

        let mut appended = good.clone();
        appended.push(0);
        std::fs::write(&data, &appended).unwrap();
        let err = verify_dir(&dir).await.unwrap_err();
        assert!(
            matches!(err, FileError::Crypto(CryptoError::TrailingData { .. })),
            "{err:?}"
        );

        std::fs::write(&data, &good[..good.len() - 1]).unwrap();
        let err = verify_dir(&dir).await.unwrap_err();
        assert!(
            matches!(err, FileError::Crypto(CryptoError::Truncated { .. })),
            "{err:?}"
        );

        std::fs::write(&data, &good).unwrap();
        let manifest = dir.join("manifest.json");
        let mut bytes = std::fs::read(&manifest).unwrap();
        bytes.push(b'\n');
        std::fs::write(&manifest, bytes).unwrap();
        let err = verify_dir(&dir).await.unwrap_err();
        assert!(
            matches!(err, FileError::Crypto(CryptoError::BadSignature { .. })),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn verify_backup_files_names_a_missing_file() {
        let dir = TempDir::new("verify-missing");
        write_backup(&dir, &plaintext(1_000)).await;
        std::fs::remove_file(dir.join("data.pgdump.pgp")).unwrap();
        let err = verify_dir(&dir).await.unwrap_err();
        assert!(matches!(err, FileError::Open { .. }), "{err:?}");
        assert_eq!(
            err.to_string(),
            format!("cannot open {}", dir.join("data.pgdump.pgp").display())
        );
        std::fs::remove_file(dir.join("manifest.json.sig")).unwrap();
        let err = verify_dir(&dir).await.unwrap_err();
        assert!(
            matches!(&err, FileError::Read { path, .. } if *path == dir.join("manifest.json.sig")),
            "{err:?}"
        );
    }
}
