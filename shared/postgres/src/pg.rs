//! PostgreSQL side of dumps and restores: snapshots, exact row counts,
//! database creation, and running `pg_dump` / `pg_restore` as streaming
//! child processes.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Stdio;

use bytes::Bytes;
use futures::StreamExt;
use tokio::io::AsyncReadExt;
use tokio::process::{Child, Command};
use tokio_postgres::{Client, NoTls};

use backstop_core::store::{ByteStream, byte_stream};

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

/// Where `pg_dump`/`pg_restore` live: `BACKSTOP_PG_BINDIR` (use the major
/// version of the server or newer), else `PATH`.
#[derive(Debug, Clone, Default)]
pub struct PgTools {
    pub bindir: Option<PathBuf>,
}

impl PgTools {
    pub fn program(&self, name: &str) -> PathBuf {
        match &self.bindir {
            Some(dir) => dir.join(name),
            None => PathBuf::from(name),
        }
    }
}

/// Hides the password of a connection URL for messages and logs.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let creds = &url[scheme + 3..at];
            match creds.split_once(':') {
                Some((user, _)) => format!("{}{}:***{}", &url[..scheme + 3], user, &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

/// The database name in a `postgres://.../dbname?...` URL.
pub fn database_name(url: &str) -> Result<String, PgError> {
    let rest = url
        .split_once("://")
        .map(|(_, r)| r)
        .ok_or_else(|| PgError::Url(redact_url(url)))?;
    let path = rest.split_once('/').map(|(_, p)| p).unwrap_or("");
    let name = path.split('?').next().unwrap_or("");
    let name = percent_encoding::percent_decode_str(name)
        .decode_utf8_lossy()
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

pub async fn connect(url: &str) -> Result<Client, PgError> {
    let (client, conn) =
        tokio_postgres::connect(url, NoTls)
            .await
            .map_err(|e| PgError::Connect {
                target: redact_url(url),
                message: e.to_string(),
            })?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "PostgreSQL connection ended");
        }
    });
    Ok(client)
}

fn query_err(what: &str) -> impl Fn(tokio_postgres::Error) -> PgError + '_ {
    move |e| PgError::Query {
        what: what.to_string(),
        message: match e.as_db_error() {
            Some(db) => format!("{}: {}", db.code().code(), db.message()),
            None => e.to_string(),
        },
    }
}

/// Quotes an SQL identifier.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// User tables (plain and partitioned), excluding system schemas and tables
/// owned by extensions (their contents are recreated by the extension).
const USER_TABLES: &str = "
    SELECT n.nspname, c.relname
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE c.relkind IN ('r', 'p')
      AND n.nspname NOT IN ('pg_catalog', 'information_schema')
      AND n.nspname NOT LIKE 'pg_toast%' AND n.nspname NOT LIKE 'pg_temp%'
      AND NOT EXISTS (SELECT 1 FROM pg_depend d
                      WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e')
    ORDER BY 1, 2";

/// Exact row counts of every user table, as seen by `client`'s current
/// transaction (the dump's snapshot during a dump).
pub async fn row_counts(client: &Client) -> Result<BTreeMap<String, u64>, PgError> {
    let tables = client
        .query(USER_TABLES, &[])
        .await
        .map_err(query_err("list tables"))?;
    let mut counts = BTreeMap::new();
    for row in tables {
        let (schema, table): (String, String) = (row.get(0), row.get(1));
        let sql = format!(
            "SELECT count(*) FROM {}.{}",
            quote_ident(&schema),
            quote_ident(&table)
        );
        let n: i64 = client
            .query_one(&sql, &[])
            .await
            .map_err(query_err(&format!("count rows of {schema}.{table}")))?
            .get(0);
        counts.insert(format!("{schema}.{table}"), n.max(0) as u64);
    }
    Ok(counts)
}

pub async fn server_version(client: &Client) -> Result<String, PgError> {
    Ok(client
        .query_one("SHOW server_version", &[])
        .await
        .map_err(query_err("server version"))?
        .get(0))
}

/// A snapshot held open for `pg_dump --snapshot`, with the row counts and
/// server version read inside it.
pub struct ExportedSnapshot {
    client: Client,
    pub id: String,
    pub server_version: String,
}

impl ExportedSnapshot {
    /// Opens a repeatable-read transaction and exports its snapshot, for
    /// `pg_dump --snapshot` and for [`Self::row_counts`].
    pub async fn take(url: &str) -> Result<Self, PgError> {
        let client = connect(url).await?;
        client
            .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            .await
            .map_err(query_err("begin snapshot transaction"))?;
        let id: String = client
            .query_one("SELECT pg_export_snapshot()", &[])
            .await
            .map_err(query_err("export snapshot"))?
            .get(0);
        let server_version = server_version(&client).await?;
        Ok(Self {
            client,
            id,
            server_version,
        })
    }

    /// Rows per table as the snapshot sees them, so the manifest's counts
    /// match the dump exactly. Runs while `pg_dump` reads the same snapshot,
    /// so without parallel workers: one core at most, leaving the others to
    /// `pg_dump`'s compression, which sets the dump's pace.
    pub async fn row_counts(&self) -> Result<BTreeMap<String, u64>, PgError> {
        self.client
            .batch_execute("SET LOCAL max_parallel_workers_per_gather = 0")
            .await
            .map_err(query_err("limit the row counts to one worker"))?;
        row_counts(&self.client).await
    }

    /// Ends the transaction once `pg_dump` no longer needs the snapshot.
    pub async fn release(self) -> Result<(), PgError> {
        self.client
            .batch_execute("COMMIT")
            .await
            .map_err(query_err("end snapshot transaction"))
    }
}

/// Keeps the last few KiB of a child's stderr for error messages.
async fn tail_stderr(child: &mut Child) -> String {
    let Some(mut stderr) = child.stderr.take() else {
        return String::new();
    };
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    while let Ok(n) = stderr.read(&mut chunk).await {
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
        if buf.len() > 16 * 1024 {
            buf.drain(..buf.len() - 16 * 1024);
        }
    }
    String::from_utf8_lossy(&buf).trim().to_string()
}

/// Runs `pg_dump -Fc -Z0` in `snapshot` and returns its output as a stream.
/// The stream ends with an error (instead of a clean end) when `pg_dump`
/// exits non-zero, so an upload fed by it is abandoned and no truncated dump
/// can ever be committed.
///
/// Uncompressed: `pg_dump` compresses on one core, which then sets the pace
/// of the whole dump; the encryption compresses instead, on every core
/// ([`backstop_core::crypto::Compression::Zip`]), into a packet `gpg` unpacks.
pub fn pg_dump_stream(
    tools: &PgTools,
    url: &str,
    snapshot: Option<&str>,
) -> Result<ByteStream, PgError> {
    let program = tools.program("pg_dump");
    let mut cmd = Command::new(&program);
    cmd.arg("--format=custom")
        .arg("--compress=0")
        .arg("--no-password");
    if let Some(s) = snapshot {
        cmd.arg(format!("--snapshot={s}"));
    }
    cmd.arg(format!("--dbname={url}"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd.spawn().map_err(|e| PgError::Spawn {
        program: program.display().to_string(),
        message: e.to_string(),
    })?;
    let stdout = child.stdout.take().expect("stdout is piped");
    let stderr_task = tokio::spawn(async move {
        let tail = tail_stderr(&mut child).await;
        let status = child.wait().await;
        (tail, status)
    });
    let body = tokio_util::io::ReaderStream::with_capacity(stdout, 256 * 1024);
    let finish = futures::stream::once(async move {
        let (stderr, status) = stderr_task.await.map_err(std::io::Error::other)?;
        let status = status?;
        if status.success() {
            Ok(None)
        } else {
            Err(std::io::Error::other(PgError::Exited {
                program: "pg_dump".into(),
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
