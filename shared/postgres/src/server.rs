//! Backstop's whole conversation with a PostgreSQL server: connecting, the
//! dump's exported snapshot, counting tables and rows, the restore's
//! database DDL (create, drop, rename) and what a base backup checks first.
//!
//! It is one module so that every statement either job sends can be read
//! in one place, and so that every failed statement is reported the same
//! way ([`query_err`]: the statement's purpose and the server's SQLSTATE).
//! Spawning the client programs (`pg_dump`, `pg_restore`) is not here but
//! in [`crate::pg`].

use std::collections::BTreeMap;
use std::time::Duration;

use tokio_postgres::{Client, NoTls};

use crate::pg::{PgError, redact_url};

/// Connects, and drives the connection in the background until `Client` is
/// dropped.
pub async fn connect(url: &str) -> Result<Client, PgError> {
    let (client, conn) =
        tokio_postgres::connect(url, NoTls)
            .await
            .map_err(|e| PgError::Connect {
                target: redact_url(url),
                // The server's words ("password authentication failed for
                // user ..."); the error itself only says "db error".
                message: match e.as_db_error() {
                    Some(db) => format!("{}: {}", db.code().code(), db.message()),
                    None => e.to_string(),
                },
            })?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "PostgreSQL connection ended");
        }
    });
    Ok(client)
}

/// A failed statement as [`PgError::Query`]: `what` it was for, and the
/// server's SQLSTATE and message when the server answered.
pub(crate) fn query_err(what: &str) -> impl Fn(tokio_postgres::Error) -> PgError + '_ {
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

/// The `FROM ... WHERE` of user tables (plain and partitioned), excluding
/// system schemas and tables owned by extensions (their contents are
/// recreated by the extension). One text, so that the restore's "is the
/// target empty" and the drill's row counts agree on what a user table is.
macro_rules! user_tables_from {
    () => {
        "
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE c.relkind IN ('r', 'p')
      AND n.nspname NOT IN ('pg_catalog', 'information_schema')
      AND n.nspname NOT LIKE 'pg_toast%' AND n.nspname NOT LIKE 'pg_temp%'
      AND NOT EXISTS (SELECT 1 FROM pg_depend d
                      WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e')"
    };
}

/// Schema and name of every user table, in order.
const USER_TABLES: &str = concat!(
    "SELECT n.nspname, c.relname",
    user_tables_from!(),
    "
    ORDER BY 1, 2"
);

/// How many user tables there are.
const USER_TABLE_COUNT: &str = concat!("SELECT count(*)", user_tables_from!());

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

/// Counts user tables (excluding extension members) in a database.
pub(crate) async fn user_table_count(client: &Client) -> Result<i64, PgError> {
    let row = client
        .query_one(USER_TABLE_COUNT, &[])
        .await
        .map_err(query_err("count user tables"))?;
    Ok(row.get(0))
}

pub(crate) async fn server_version(client: &Client) -> Result<String, PgError> {
    Ok(client
        .query_one("SHOW server_version", &[])
        .await
        .map_err(query_err("server version"))?
        .get(0))
}

/// What `pg_dump`'s output is expected to weigh, for a progress display's
/// ETA: the user tables' on-disk size (heap and TOAST, no indexes, which
/// are dumped as definitions) plus the large objects. Page overhead and
/// dead rows usually put it above `pg_dump`'s output (compressed TOAST
/// values can put it below); it is only ever shown, never relied on.
const DUMP_SIZE_ESTIMATE: &str = concat!(
    "SELECT (coalesce(sum(pg_table_size(c.oid)), 0)
            + pg_table_size('pg_catalog.pg_largeobject'::regclass))::bigint",
    user_tables_from!()
);

/// A snapshot held open for `pg_dump --snapshot`, with the row counts and
/// server version read inside it.
pub(crate) struct ExportedSnapshot {
    client: Client,
    pub(crate) id: String,
    pub(crate) server_version: String,
    /// [`DUMP_SIZE_ESTIMATE`], read before the snapshot (so that a failure
    /// cannot abort its transaction); `None` when it could not be read.
    pub(crate) size_estimate: Option<u64>,
}

impl ExportedSnapshot {
    /// Opens a repeatable-read transaction and exports its snapshot, for
    /// `pg_dump --snapshot` and for [`Self::row_counts`].
    pub(crate) async fn take(url: &str) -> Result<Self, PgError> {
        let client = connect(url).await?;
        let size_estimate = match client.query_one(DUMP_SIZE_ESTIMATE, &[]).await {
            Ok(row) => Some(row.get::<_, i64>(0).max(0) as u64),
            Err(e) => {
                tracing::debug!(error = %e, "no size estimate for the progress display");
                None
            }
        };
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
            size_estimate,
        })
    }

    /// Rows per table as the snapshot sees them, so the manifest's counts
    /// match the dump exactly. Runs while `pg_dump` reads the same snapshot,
    /// so without parallel workers: one core at most, leaving the others to
    /// `pg_dump`'s compression, which sets the dump's pace.
    pub(crate) async fn row_counts(&self) -> Result<BTreeMap<String, u64>, PgError> {
        self.client
            .batch_execute("SET LOCAL max_parallel_workers_per_gather = 0")
            .await
            .map_err(query_err("limit the row counts to one worker"))?;
        row_counts(&self.client).await
    }

    /// Ends the transaction once `pg_dump` no longer needs the snapshot.
    pub(crate) async fn release(self) -> Result<(), PgError> {
        self.client
            .batch_execute("COMMIT")
            .await
            .map_err(query_err("end snapshot transaction"))
    }
}

pub(crate) async fn database_exists(admin: &Client, name: &str) -> Result<bool, PgError> {
    Ok(admin
        .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&name])
        .await
        .map_err(query_err("look up the target database"))?
        .is_some())
}

pub(crate) async fn create_database(admin: &Client, name: &str) -> Result<(), PgError> {
    admin
        .batch_execute(&format!(
            "CREATE DATABASE {} TEMPLATE template0",
            quote_ident(name)
        ))
        .await
        .map_err(query_err("create the target database"))
}

pub(crate) async fn drop_database(admin: &Client, name: &str) -> Result<(), PgError> {
    let version: i32 = admin
        .query_one("SELECT current_setting('server_version_num')::int", &[])
        .await
        .map_err(query_err("server version"))?
        .get(0);
    // FORCE (PostgreSQL 13+) ends other sessions, e.g. a pg_restore backend
    // that is still rolling back.
    let force = if version >= 130000 {
        " WITH (FORCE)"
    } else {
        ""
    };
    admin
        .batch_execute(&format!(
            "DROP DATABASE IF EXISTS {}{force}",
            quote_ident(name)
        ))
        .await
        .map_err(query_err("drop a database"))
}

/// The comment on database `name` (`COMMENT ON DATABASE`), if any.
pub(crate) async fn database_comment(
    admin: &Client,
    name: &str,
) -> Result<Option<String>, PgError> {
    let row = admin
        .query_opt(
            "SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = $1",
            &[&name],
        )
        .await
        .map_err(query_err("read the target database's comment"))?;
    Ok(row.and_then(|r| r.get::<_, Option<String>>(0)))
}

/// Sets the comment on database `name`.
pub(crate) async fn set_database_comment(
    admin: &Client,
    name: &str,
    comment: &str,
) -> Result<(), PgError> {
    // COMMENT takes no parameters: the text is quoted as a literal.
    let literal = format!("'{}'", comment.replace('\'', "''"));
    admin
        .batch_execute(&format!(
            "COMMENT ON DATABASE {} IS {literal}",
            quote_ident(name)
        ))
        .await
        .map_err(query_err("mark the database as Backstop's"))
}

/// Who a connection is talking to: the cluster's `system_identifier` (when
/// the role may read `pg_control_system()`) and the database's name (unique
/// within a cluster).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Identity {
    pub system_identifier: Option<i64>,
    pub database: String,
}

/// The [`Identity`] of `client`'s server and database.
pub(crate) async fn identity(client: &Client) -> Result<Identity, PgError> {
    let row = client
        .query_one("SELECT current_database()::text", &[])
        .await
        .map_err(query_err("identify the database"))?;
    // Restricted to superusers and pg_monitor by default; without it, the
    // caller decides conservatively.
    let system_identifier = match client
        .query_one("SELECT system_identifier FROM pg_control_system()", &[])
        .await
    {
        Ok(r) => Some(r.get::<_, i64>(0)),
        Err(_) => None,
    };
    Ok(Identity {
        system_identifier,
        database: row.get(0),
    })
}

/// What a base backup checks and records before the server begins sending
/// (`crate::basebackup`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ClusterFacts {
    /// `pg_control_system().system_identifier`: PostgreSQL's unsigned
    /// 64-bit number, which SQL shows as a (possibly negative) bigint.
    pub system_identifier: u64,
    pub server_version: String,
    pub server_version_num: u32,
    /// Bytes.
    pub wal_segment_size: u64,
    /// `off`, `on` or `always`.
    pub archive_mode: String,
    pub role: String,
    /// The role has REPLICATION (or is a superuser).
    pub may_replicate: bool,
}

const CLUSTER_FACTS: &str = "SELECT (SELECT system_identifier FROM pg_control_system()),
       current_setting('server_version'),
       current_setting('server_version_num')::int,
       pg_size_bytes(current_setting('wal_segment_size')),
       current_setting('archive_mode'),
       current_user::text,
       (SELECT rolreplication OR rolsuper FROM pg_roles WHERE rolname = current_user)";

/// The [`ClusterFacts`] of `client`'s server, in one statement.
pub(crate) async fn cluster_facts(client: &Client) -> Result<ClusterFacts, PgError> {
    let row = client
        .query_one(CLUSTER_FACTS, &[])
        .await
        .map_err(query_err("read the cluster's identity and settings"))?;
    Ok(ClusterFacts {
        system_identifier: row.get::<_, i64>(0) as u64,
        server_version: row.get(1),
        server_version_num: row.get::<_, i32>(2).max(0) as u32,
        wal_segment_size: row.get::<_, i64>(3).max(0) as u64,
        archive_mode: row.get(4),
        role: row.get(5),
        may_replicate: row.get::<_, Option<bool>>(6).unwrap_or(false),
    })
}

pub(crate) async fn rename_database(admin: &Client, from: &str, to: &str) -> Result<(), PgError> {
    let sql = format!(
        "ALTER DATABASE {} RENAME TO {}",
        quote_ident(from),
        quote_ident(to)
    );
    let mut attempt = 0;
    loop {
        match admin.batch_execute(&sql).await {
            Ok(()) => return Ok(()),
            // 55006 object_in_use: our own drill connection may still be closing.
            Err(e)
                if attempt < 50
                    && e.code() == Some(&tokio_postgres::error::SqlState::OBJECT_IN_USE) =>
            {
                attempt += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => return Err(query_err("rename the staging database")(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_are_quoted() {
        assert_eq!(quote_ident("a\"b; DROP"), "\"a\"\"b; DROP\"");
    }

    #[test]
    fn both_user_table_queries_use_one_filter() {
        let filter = user_tables_from!();
        assert!(USER_TABLES.contains(filter) && USER_TABLE_COUNT.contains(filter));
        assert!(USER_TABLES.starts_with("SELECT n.nspname, c.relname\n"));
        assert!(USER_TABLES.ends_with("ORDER BY 1, 2"));
        assert!(USER_TABLE_COUNT.starts_with("SELECT count(*)\n"));
        assert!(
            filter.contains("d.deptype = 'e'"),
            "extension tables are excluded"
        );
    }
}
