//! The PostgreSQL client side that is not SQL: connection URLs (names,
//! passwords kept out of logs), where the client programs live, and running
//! `pg_dump` as a streaming child process whose failure cannot pass for a
//! clean end.
//!
//! The statements themselves live in the crate's `server` module; the
//! parts of it other crates use are re-exported here, so that `pg::connect`
//! and friends stay where callers know them.

use std::path::PathBuf;
use std::process::Stdio;

use bytes::Bytes;
use futures::StreamExt;
use tokio::io::AsyncReadExt;
use tokio::process::{Child, Command};
use tokio::task::JoinHandle;

use backstop_core::store::{ByteStream, byte_stream};

pub use crate::server::{connect, quote_ident, row_counts};

#[derive(Debug, thiserror::Error)]
pub enum PgError {
    #[error(
        "could not connect to PostgreSQL at {target}: {message}; check the URL, that the server runs and that the user may log in"
    )]
    Connect { target: String, message: String },
    #[error("PostgreSQL query failed ({what}): {message}")]
    Query { what: String, message: String },
    #[error(
        "could not start {program}: {message}; install the PostgreSQL client programs or set BACKSTOP_PG_BINDIR"
    )]
    Spawn { program: String, message: String },
    #[error("{program} failed ({status}): {stderr}")]
    Exited {
        program: String,
        status: String,
        stderr: String,
    },
    #[error("database URL {0:?} is invalid: expected postgres://user@host:port/dbname")]
    Url(String),
}

impl backstop_core::error::Classify for PgError {
    /// A server that could not be reached may be back later; a failed query,
    /// a missing program or a bad URL stays as it is.
    fn retry(&self) -> backstop_core::error::Retry {
        match self {
            PgError::Connect { .. } => backstop_core::error::Retry::Transient,
            _ => backstop_core::error::Retry::Permanent,
        }
    }
}

/// A server that does not answer is unreachable; a bad URL or a missing
/// program is configuration.
impl backstop_core::error::Failure for PgError {
    fn failure_kind(&self) -> backstop_core::error::FailureKind {
        use backstop_core::error::FailureKind;
        match self {
            PgError::Connect { .. } => FailureKind::Unreachable,
            PgError::Url(_) | PgError::Spawn { .. } => FailureKind::Config,
            PgError::Query { .. } | PgError::Exited { .. } => FailureKind::Other,
        }
    }
}

/// Where `pg_dump`/`pg_restore` live: `BACKSTOP_PG_BINDIR` (use the major
/// version of the server or newer), else `PATH`.
#[derive(Debug, Clone, Default)]
pub struct PgTools {
    pub bindir: Option<PathBuf>,
}

impl PgTools {
    pub(crate) fn program(&self, name: &str) -> PathBuf {
        match &self.bindir {
            Some(dir) => dir.join(name),
            None => PathBuf::from(name),
        }
    }
}

/// Hides the password of a connection URL for messages and logs: the one
/// in `user:password@` and a `password=` query parameter.
pub(crate) fn redact_url(url: &str) -> String {
    let (without, password) = split_password(url);
    if password.is_none() {
        return url.to_string();
    }
    let Some((scheme, rest)) = url.split_once("://") else {
        return without;
    };
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let masked_user = rest[..end]
        .rfind('@')
        .and_then(|at| rest[..at].split_once(':').map(|(user, _)| (user, at)));
    let authority = match masked_user {
        Some((user, at)) => format!("{user}:***{}", &rest[at..end]),
        None => rest[..end].to_string(),
    };
    let (path, query) = split_query(&rest[end..]);
    let masked: Vec<String> = query
        .map(|q| {
            q.split('&')
                .map(|pair| match pair.split_once('=') {
                    Some((k, _)) if k == "password" => format!("{k}=***"),
                    _ => pair.to_string(),
                })
                .collect()
        })
        .unwrap_or_default();
    join_url(scheme, &authority, path, &masked)
}

fn split_query(tail: &str) -> (&str, Option<&str>) {
    match tail.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (tail, None),
    }
}

fn join_url(scheme: &str, authority: &str, path: &str, query: &[String]) -> String {
    if query.is_empty() {
        format!("{scheme}://{authority}{path}")
    } else {
        format!("{scheme}://{authority}{path}?{}", query.join("&"))
    }
}

/// Splits the password out of a connection URL, for `PGPASSWORD` (never
/// on a command line, where `ps` and `/proc/*/cmdline` show it to every
/// local user): the URL without it, and the password, percent-decoded.
/// Both `user:password@` and a `password=` query parameter are taken out.
pub(crate) fn split_password(url: &str) -> (String, Option<String>) {
    let Some((scheme, rest)) = url.split_once("://") else {
        return (url.to_string(), None);
    };
    let decode = |s: &str| {
        percent_encoding::percent_decode_str(s)
            .decode_utf8_lossy()
            .to_string()
    };
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let mut authority = rest[..end].to_string();
    let mut password = None;
    if let Some(at) = authority.rfind('@')
        && let Some((user, pw)) = authority[..at].split_once(':')
    {
        password = Some(decode(pw));
        authority = format!("{user}{}", &authority[at..]);
    }
    let (path, query) = split_query(&rest[end..]);
    let mut kept = Vec::new();
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some(("password", pw)) => password = Some(decode(pw)),
            _ => kept.push(pair.to_string()),
        }
    }
    (join_url(scheme, &authority, path, &kept), password)
}

/// The database name in a `postgres://.../dbname?...` URL.
pub(crate) fn database_name(url: &str) -> Result<String, PgError> {
    let rest = url
        .split_once("://")
        .map(|(_, r)| r)
        .ok_or_else(|| PgError::Url(redact_url(url)))?;
    let path = rest.split_once('/').map(|(_, p)| p).unwrap_or("");
    let name = path.split('?').next().unwrap_or("");
    // Strict: a lossy decoding would back up one database under another's
    // name.
    let name = percent_encoding::percent_decode_str(name)
        .decode_utf8()
        .map_err(|_| PgError::Url(redact_url(url)))?
        .to_string();
    if name.is_empty() {
        return Err(PgError::Url(redact_url(url)));
    }
    Ok(name)
}

/// The same server, another database.
pub fn with_database(url: &str, database: &str) -> Result<String, PgError> {
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| PgError::Url(redact_url(url)))?;
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    let query = path
        .split_once('?')
        .map(|(_, q)| format!("?{q}"))
        .unwrap_or_default();
    let encoded =
        percent_encoding::utf8_percent_encode(database, percent_encoding::NON_ALPHANUMERIC);
    Ok(format!("{scheme}://{authority}/{encoded}{query}"))
}

/// How much of a child's stderr is kept: the end of it says why it failed.
const STDERR_TAIL_BYTES: usize = 16 * 1024;

/// Reads a child's stderr in the background (so the child never blocks on
/// a full pipe) and yields its last 16 KiB, trimmed, for error messages;
/// empty when stderr is not piped. Await it after the child has exited.
pub(crate) fn collect_stderr(child: &mut Child) -> JoinHandle<String> {
    let stderr = child.stderr.take();
    tokio::spawn(async move {
        let Some(mut stderr) = stderr else {
            return String::new();
        };
        let mut buf = Vec::new();
        let mut chunk = [0u8; 8192];
        while let Ok(n) = stderr.read(&mut chunk).await {
            if n == 0 {
                break;
            }
            buf.extend_from_slice(&chunk[..n]);
            if buf.len() > STDERR_TAIL_BYTES {
                buf.drain(..buf.len() - STDERR_TAIL_BYTES);
            }
        }
        String::from_utf8_lossy(&buf).trim().to_string()
    })
}

/// Runs `pg_dump -Fc -Z0` in `snapshot` and returns its output as a stream
/// ([`program_stream`]: a failure cannot pass for a clean end).
///
/// Uncompressed: `pg_dump` compresses on one core, which then sets the pace
/// of the whole dump; the encryption compresses instead, on every core
/// ([`backstop_core::crypto::Compression::Zip`]), into a packet `gpg` unpacks.
pub(crate) fn pg_dump_stream(
    tools: &PgTools,
    url: &str,
    snapshot: Option<&str>,
) -> Result<ByteStream, PgError> {
    let mut args = vec![
        "--format=custom".to_string(),
        "--compress=0".to_string(),
        "--no-password".to_string(),
    ];
    if let Some(s) = snapshot {
        args.push(format!("--snapshot={s}"));
    }
    program_stream(tools, "pg_dump", url, &args)
}

/// Runs the client program `name` with `args` and `--dbname=<url>` (the
/// password, if any, goes to `PGPASSWORD`, never on the command line) and
/// returns its stdout as a stream. The stream ends with an error (instead
/// of a clean end) when the program exits non-zero, so an upload fed by it
/// is abandoned and no truncated output can ever be committed; the error
/// quotes the end of its stderr.
pub(crate) fn program_stream(
    tools: &PgTools,
    name: &str,
    url: &str,
    args: &[String],
) -> Result<ByteStream, PgError> {
    let program = tools.program(name);
    let (url, password) = split_password(url);
    let mut cmd = Command::new(&program);
    if let Some(password) = password {
        // The child's environment is readable by its own user only.
        cmd.env("PGPASSWORD", password);
    }
    cmd.args(args)
        .arg(format!("--dbname={url}"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd.spawn().map_err(|e| PgError::Spawn {
        program: program.display().to_string(),
        message: e.to_string(),
    })?;
    let stdout = child.stdout.take().expect("stdout is piped");
    let stderr = collect_stderr(&mut child);
    let stderr_task = tokio::spawn(async move {
        let tail = stderr.await.unwrap_or_default();
        let status = child.wait().await;
        (tail, status)
    });
    let body = tokio_util::io::ReaderStream::with_capacity(stdout, 256 * 1024);
    let name = name.to_string();
    let finish = futures::stream::once(async move {
        let (stderr, status) = stderr_task.await.map_err(std::io::Error::other)?;
        let status = status?;
        if status.success() {
            Ok(None)
        } else {
            Err(std::io::Error::other(PgError::Exited {
                program: name,
                status: status.to_string(),
                stderr,
            }))
        }
    });
    let stream = body
        .map(|r| r.map(Some))
        .chain(finish)
        .filter_map(|r: std::io::Result<Option<Bytes>>| async move { r.transpose() });
    Ok(byte_stream(stream))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact_url("postgres://u:secret@h:5432/db"),
            "postgres://u:***@h:5432/db"
        );
        assert_eq!(redact_url("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(
            redact_url("postgres://u@h/db?sslmode=require&password=secret"),
            "postgres://u@h/db?sslmode=require&password=***"
        );
        assert_eq!(
            redact_url("postgres://u:p%40ss@h/db?password=x"),
            "postgres://u:***@h/db?password=***"
        );
    }

    #[test]
    fn passwords_are_split_out_of_urls() {
        assert_eq!(
            split_password("postgres://u:p%40ss:w@h:5432/db?sslmode=disable"),
            (
                "postgres://u@h:5432/db?sslmode=disable".to_string(),
                Some("p@ss:w".to_string())
            )
        );
        assert_eq!(
            split_password("postgres://u@h/db?password=s%2Fx&application_name=b"),
            (
                "postgres://u@h/db?application_name=b".to_string(),
                Some("s/x".to_string())
            )
        );
        assert_eq!(
            split_password("postgres://u@h/db"),
            ("postgres://u@h/db".to_string(), None)
        );
        assert_eq!(
            split_password("postgres://h?password=p"),
            ("postgres://h".to_string(), Some("p".to_string()))
        );
    }

    #[test]
    fn database_names_come_from_the_path() {
        assert_eq!(
            database_name("postgres://u@h/My%20DB?sslmode=disable").unwrap(),
            "My DB"
        );
        assert!(database_name("postgres://u@h/").is_err());
        assert_eq!(database_name("postgres://u@h/a%252Fb").unwrap(), "a%2Fb");
        assert!(database_name("postgres://u@h/%FF").is_err());
        let real = "Ünï app/%2F";
        let url = with_database("postgres://u@h/postgres", real).unwrap();
        assert_eq!(database_name(&url).unwrap(), real);
        assert_eq!(
            with_database("postgres://u@h:5/a?x=1", "b c").unwrap(),
            "postgres://u@h:5/b%20c?x=1"
        );
    }

    #[tokio::test]
    async fn stderr_keeps_the_trimmed_tail() {
        let mut child = Command::new("sh")
            .args([
                "-c",
                "head -c 40000 /dev/zero | tr '\\0' x >&2; echo ' the end ' >&2",
            ])
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let tail = collect_stderr(&mut child);
        child.wait().await.unwrap();
        let tail = tail.await.unwrap();
        assert!(tail.len() <= STDERR_TAIL_BYTES, "{}", tail.len());
        assert!(
            tail.starts_with('x') && tail.ends_with("x the end"),
            "{tail:?}"
        );

        let mut quiet = Command::new("true").spawn().unwrap();
        let tail = collect_stderr(&mut quiet);
        quiet.wait().await.unwrap();
        assert_eq!(tail.await.unwrap(), "");
    }
}
