//! `backstop list` and `backstop show BACKUP_ID`: every backup of both
//! clouds (`backstop_core::catalog`), read with the retention function's
//! configuration (`RetentionFunction::from_env`: the same buckets, keys,
//! policy and concurrency), so the local stack and production take the
//! same variables and `list` shows what the retention run would see.

use backstop_core::catalog::{self, Filter, Sources};
use backstop_core::config::Env;
use backstop_core::naming::BackupId;
use backstop_functions::retention::RetentionFunction;
use chrono::{DateTime, Utc};

fn since_arg(text: &str) -> Result<DateTime<Utc>, String> {
    catalog::parse_since(text, Utc::now())
}

fn backup_arg(text: &str) -> Result<BackupId, String> {
    text.parse::<BackupId>().map_err(|e| {
        format!("{e}; give the id as `backstop list` prints it: <namespace>/<database>/<stamp>")
    })
}

#[derive(clap::Args)]
pub struct ListArgs {
    /// Only namespaces matching this name or glob (e.g. 'br-*').
    #[arg(long)]
    namespace: Option<String>,
    /// Only backups taken at or after this: a time (2026-11-27T03:00:00Z),
    /// a date (2026-11-27, midnight UTC) or an age (7d, 26h, 30min).
    #[arg(long, value_parser = since_arg)]
    since: Option<DateTime<Utc>>,
    /// At most this many backups of each namespace and database, the newest.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    limit: Option<u64>,
}

#[derive(clap::Args)]
pub struct ShowArgs {
    /// The backup, as `backstop list` prints its id: <namespace>/<database>/<stamp>.
    #[arg(value_parser = backup_arg)]
    backup: BackupId,
}

fn sources(f: &RetentionFunction) -> Sources<'_> {
    Sources {
        primary: f.primary.as_ref(),
        replica: f.replica.as_deref(),
        verifier: &f.verifier,
        policies: &f.policies,
        concurrency: f.concurrency,
    }
}

/// Lists every backup (and each cluster's WAL range) the filters select;
/// with `json` (the global `--json`) as JSON, schema `backstop.list/v1`.
pub async fn list(args: ListArgs, json: bool) -> anyhow::Result<()> {
    let function = RetentionFunction::from_env(&Env::from_process()).await?;
    let filter = Filter {
        namespace: args.namespace,
        since: args.since,
        limit: args.limit.map(|n| usize::try_from(n).unwrap_or(usize::MAX)),
    };
    let listing = catalog::list(&sources(&function), Utc::now(), &filter).await?;
    if json {
        println!("{}", listing.to_json());
    } else {
        print!("{}", listing.table());
    }
    Ok(())
}

/// Shows one backup: its row, tables and every drill; with `json` as
/// JSON, schema `backstop.show/v1`.
pub async fn show(args: ShowArgs, json: bool) -> anyhow::Result<()> {
    let function = RetentionFunction::from_env(&Env::from_process()).await?;
    let shown = catalog::show(&sources(&function), Utc::now(), &args.backup).await?;
    if json {
        println!("{}", shown.to_json());
    } else {
        print!("{shown}");
    }
    Ok(())
}
