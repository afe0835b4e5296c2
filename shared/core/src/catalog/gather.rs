//! The reads behind a listing: both buckets collected and verified at once,
//! as the retention run collects them, then the drill records of the rows
//! shown (for `list` only each backup's newest record: one read per
//! drilled backup).

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use futures::future::OptionFuture;

use super::build::{CatalogInput, CloudSide, LoadedDrill, attach_last_drills, build, shown};
use super::{Filter, Listing, Shown};
use crate::naming::BackupId;
use crate::retention::{
    AuditInput, CloudInput, Inventory, ManifestVerifier, Plan, PolicySet, audit, collect,
    load_drills, plan,
};
use crate::store::{ObjectMeta, ObjectStore, StoreError};

/// The clouds and settings a listing reads with: the retention function's
/// (`backstop_functions::retention::RetentionFunction`), so `list` sees what
/// retention sees.
pub struct Sources<'a> {
    /// The GCS backups bucket.
    pub primary: &'a dyn ObjectStore,
    /// The S3 replica, when configured.
    pub replica: Option<&'a dyn ObjectStore>,
    /// Checks each complete backup's signed manifest.
    pub verifier: &'a dyn ManifestVerifier,
    /// What retention would do comes from these.
    pub policies: &'a PolicySet,
    /// Backups verified at a time in each cloud.
    pub concurrency: usize,
}

/// Why there is no listing.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    /// No configured bucket could be listed (or a verification read failed
    /// in each). The source is GCS's error, so the exit status says what
    /// kind of failure it was (unreachable, refused, ...).
    #[error(
        "no bucket could be listed ({errors}): check the credentials and the network (`backstop ping` tries both clouds), then run again"
    )]
    Unlisted {
        /// Each bucket's error.
        errors: String,
        /// The primary's error.
        #[source]
        source: StoreError,
    },
    /// `show`: the backup is in no listed bucket.
    #[error(
        "backup {id} is not in {stores}: `backstop list --namespace {namespace}` shows the backups there are"
    )]
    NotFound {
        /// The id asked for.
        id: String,
        /// The buckets listed.
        stores: String,
        /// Its namespace.
        namespace: String,
    },
}

type Listed = Result<(Inventory, Plan), StoreError>;

/// Both clouds, collected and planned at one clock.
struct Collected {
    now: DateTime<Utc>,
    primary: Listed,
    replica: Option<Listed>,
}

async fn collect_one(src: &Sources<'_>, store: &dyn ObjectStore, now: DateTime<Utc>) -> Listed {
    let inventory = collect(store, src.verifier, src.concurrency).await?;
    let plan = plan(&inventory, src.policies, now);
    Ok((inventory, plan))
}

async fn collect_all(src: &Sources<'_>, now: DateTime<Utc>) -> Result<Collected, CatalogError> {
    // As the retention run: the clouds are independent, so at once.
    let (primary, replica) = tokio::join!(
        collect_one(src, src.primary, now),
        OptionFuture::from(src.replica.map(|r| collect_one(src, r, now))),
    );
    let replica_failed = replica.as_ref().is_none_or(Result::is_err);
    match primary {
        Err(source) if replica_failed => {
            let mut errors = vec![source.to_string()];
            let replica_error = replica.as_ref().and_then(|r| r.as_ref().err());
            errors.extend(replica_error.map(ToString::to_string));
            Err(CatalogError::Unlisted {
                errors: errors.join("; "),
                source,
            })
        }
        primary => Ok(Collected {
            now,
            primary,
            replica,
        }),
    }
}

fn error_text(listed: Option<&Listed>) -> String {
    listed
        .and_then(|l| l.as_ref().err())
        .map(|e| e.to_string())
        .unwrap_or_default()
}

fn cloud_input<'a>(cloud: &'a str, listed: &'a Listed, error: &'a str) -> CloudInput<'a> {
    match listed {
        Ok((inv, plan)) => CloudInput::listed(cloud, inv).with_plan(plan),
        Err(_) => CloudInput::listing_failed(cloud, error),
    }
}

fn side<'a>(
    cloud: &'a str,
    store: &dyn ObjectStore,
    listed: &'a Listed,
    error: &str,
) -> CloudSide<'a> {
    CloudSide {
        cloud,
        store: store.url(),
        listed: match listed {
            Ok((inv, plan)) => Ok((inv, plan)),
            Err(_) => Err(error.to_string()),
        },
    }
}

/// Audits what was collected and hands the catalog's input to `f`.
fn with_input<R>(src: &Sources<'_>, c: &Collected, f: impl FnOnce(&CatalogInput<'_>) -> R) -> R {
    let primary_error = error_text(Some(&c.primary));
    let replica_error = error_text(c.replica.as_ref());
    let report = audit(&AuditInput {
        now: c.now,
        policies: src.policies,
        primary: cloud_input("gcs", &c.primary, &primary_error),
        replica: c
            .replica
            .as_ref()
            .map(|r| cloud_input("s3", r, &replica_error)),
        drills: &[],
        extra_findings: Vec::new(),
    });
    let input = CatalogInput {
        now: c.now,
        policies: src.policies,
        primary: side("gcs", src.primary, &c.primary, &primary_error),
        replica: src
            .replica
            .zip(c.replica.as_ref())
            .map(|(store, listed)| side("s3", store, listed, &replica_error)),
        report: &report,
    };
    f(&input)
}

/// A drill record key found in a listing, for a backup asked about.
struct Candidate<'a> {
    side: usize,
    meta: &'a ObjectMeta,
    backup_id: String,
    run_id: Option<String>,
}

/// The drill record keys of the backups in `wanted`, in the listings of
/// `inventories` (by side); with `newest_only`, each backup's newest (by
/// run id; the primary's of the same record wins). Each key once.
fn candidates<'a>(
    inventories: &[&'a Inventory],
    wanted: &HashSet<String>,
    newest_only: bool,
) -> Vec<Candidate<'a>> {
    let mut chosen: HashMap<String, Candidate> = HashMap::new();
    let mut all: Vec<Candidate> = Vec::new();
    for (side, inv) in inventories.iter().enumerate() {
        for meta in &inv.drills {
            let Some((id, run_id)) = BackupId::parse_drill_key(&meta.key) else {
                continue;
            };
            let backup_id = id.to_string();
            if !wanted.contains(&backup_id) {
                continue;
            }
            let candidate = Candidate {
                side,
                meta,
                backup_id: backup_id.clone(),
                run_id,
            };
            if !newest_only {
                all.push(candidate);
                continue;
            }
            match chosen.get(&backup_id) {
                Some(have) if have.run_id >= candidate.run_id => {}
                _ => {
                    chosen.insert(backup_id, candidate);
                }
            }
        }
    }
    all.extend(chosen.into_values());
    let mut seen = HashSet::new();
    all.retain(|c| seen.insert(c.meta.key.clone()));
    all
}

/// The drill records of the backups in `wanted`, from both clouds (a
/// restore that fell back to the replica wrote its record there); with
/// `newest_only`, each backup's newest record only. Read and checked by
/// [`load_drills`], as the audit reads them.
async fn read_drills(
    src: &Sources<'_>,
    c: &Collected,
    wanted: &HashSet<String>,
    newest_only: bool,
) -> Vec<LoadedDrill> {
    let stores: Vec<(&dyn ObjectStore, &Inventory)> = [Some((src.primary, &c.primary))]
        .into_iter()
        .chain([src.replica.zip(c.replica.as_ref())])
        .flatten()
        .filter_map(|(store, listed)| listed.as_ref().ok().map(|(inv, _)| (store, inv)))
        .collect();
    let inventories: Vec<&Inventory> = stores.iter().map(|(_, inv)| *inv).collect();
    let all = candidates(&inventories, wanted, newest_only);
    let mut out = Vec::new();
    for (side, (store, _)) in stores.iter().enumerate() {
        let mine: Vec<&Candidate> = all.iter().filter(|c| c.side == side).collect();
        if !mine.is_empty() {
            out.extend(read_side(*store, &mine).await);
        }
    }
    out
}

/// Reads one store's `candidates` with [`load_drills`].
async fn read_side(store: &dyn ObjectStore, candidates: &[&Candidate<'_>]) -> Vec<LoadedDrill> {
    let subset = Inventory {
        drills: candidates.iter().map(|c| c.meta.clone()).collect(),
        ..Inventory::default()
    };
    let (records, findings) = load_drills(store, &subset, usize::MAX).await;
    let mut by_key: HashMap<String, _> = records
        .into_iter()
        .filter_map(|r| r.key().ok().map(|k| (k, r)))
        .collect();
    let problems: HashMap<&str, &str> = findings
        .iter()
        .filter_map(|f| f.subject.as_deref().map(|s| (s, f.message.as_str())))
        .collect();
    let mut out = Vec::new();
    for c in candidates {
        let key = &c.meta.key;
        let loaded = match by_key.remove(key) {
            Some(record) => Ok(record),
            None => Err(problems
                .get(key.as_str())
                .map_or("the record could not be read", |m| m)
                .to_string()),
        };
        out.push(LoadedDrill {
            backup_id: c.backup_id.clone(),
            run_id: c.run_id.clone(),
            record: format!("{}/{key}", store.url()),
            loaded,
        });
    }
    out
}

/// `backstop list`: both clouds collected and verified, planned at `now`,
/// the rows `filter` selects, each with its newest drill record.
pub async fn list(
    src: &Sources<'_>,
    now: DateTime<Utc>,
    filter: &Filter,
) -> Result<Listing, CatalogError> {
    let collected = collect_all(src, now).await?;
    let mut listing = with_input(src, &collected, |input| build(input, filter));
    let wanted: HashSet<String> = listing.backups.iter().map(|r| r.id.clone()).collect();
    let drills = read_drills(src, &collected, &wanted, true).await;
    attach_last_drills(&mut listing.backups, &drills);
    Ok(listing)
}

/// `backstop show`: one backup, with its tables and every drill record.
pub async fn show(
    src: &Sources<'_>,
    now: DateTime<Utc>,
    id: &BackupId,
) -> Result<Shown, CatalogError> {
    let collected = collect_all(src, now).await?;
    let wanted: HashSet<String> = [id.to_string()].into();
    let drills = read_drills(src, &collected, &wanted, false).await;
    with_input(src, &collected, |input| shown(input, id, &drills)).ok_or_else(|| {
        let stores: Vec<String> = [Some(src.primary), src.replica]
            .into_iter()
            .flatten()
            .map(|s| s.url())
            .collect();
        CatalogError::NotFound {
            id: id.to_string(),
            stores: stores.join(" or "),
            namespace: id.namespace.to_string(),
        }
    })
}
