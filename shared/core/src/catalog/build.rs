//! From what retention collected, planned and audited to catalog rows:
//! pure, no store is read here.

use std::collections::{BTreeSet, HashMap, HashSet};

use chrono::{DateTime, NaiveDate, Utc};

use super::{
    Action, BackupKind, BackupRow, CloudState, CopyState, Digests, DrillResult, DrillState, Filter,
    LIST_SCHEMA, Listing, ManifestFacts, Parity, Retention, SHOW_SCHEMA, Shown, WalRange,
};
use crate::drill::DrillRecord;
use crate::naming::{BackupId, pattern_matches};
use crate::retention::{
    BackupEntry, BackupPlan, BackupStatus, ClusterKey, Decision, Inventory, Plan, PolicySet,
    Report, SeriesPlan, WalDecision, parse_duration,
};

/// One cloud's part of the input: its listing and plan, or why it has none.
#[derive(Debug)]
pub struct CloudSide<'a> {
    /// `gcs` or `s3`.
    pub cloud: &'a str,
    /// The bucket's URL.
    pub store: String,
    /// The inventory and the plan made from it, or the listing's error.
    pub listed: Result<(&'a Inventory, &'a Plan), String>,
}

/// Everything a listing is built from.
#[derive(Debug)]
pub struct CatalogInput<'a> {
    /// The clock the plans were made at.
    pub now: DateTime<Utc>,
    /// The retention policy the plans were made with.
    pub policies: &'a PolicySet,
    /// GCS.
    pub primary: CloudSide<'a>,
    /// S3, when configured.
    pub replica: Option<CloudSide<'a>>,
    /// The audit over both (replica mismatches come from it).
    pub report: &'a Report,
}

/// A drill record as read from a store: parsed and in its place, or why not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadedDrill {
    /// The backup its key names.
    pub backup_id: String,
    /// The run its key names (`None`: a record from before run ids).
    pub run_id: Option<String>,
    /// `<store url>/<key>`.
    pub record: String,
    /// The record, or why it does not count (the audit's warning).
    pub loaded: Result<DrillRecord, String>,
}

impl LoadedDrill {
    fn state(&self) -> DrillState {
        match &self.loaded {
            Ok(r) => DrillState {
                result: if r.success {
                    DrillResult::Passed
                } else {
                    DrillResult::Failed
                },
                finished_at: Some(r.finished_at),
                started_at: Some(r.started_at),
                run_id: (!r.run_id.is_empty()).then(|| r.run_id.clone()),
                target_database: Some(r.target_database.clone()),
                restored_from: r.restored_from.clone(),
                tables_checked: Some(r.tables_checked),
                mismatches: r.mismatches.len() as u64,
                error: r.error.clone(),
                record: self.record.clone(),
            },
            Err(e) => DrillState {
                result: DrillResult::Unreadable,
                finished_at: None,
                started_at: None,
                run_id: self.run_id.clone(),
                target_database: None,
                restored_from: None,
                tables_checked: None,
                mismatches: 0,
                error: Some(e.clone()),
                record: self.record.clone(),
            },
        }
    }

    /// Newest last: by run id (records without one are older than any),
    /// then by end time.
    fn order_key(&self) -> (Option<String>, Option<DateTime<Utc>>) {
        let finished = self.loaded.as_ref().ok().map(|r| r.finished_at);
        (self.run_id.clone(), finished)
    }
}

/// `--since`: an RFC 3339 time, a date (midnight UTC) or an age before
/// `now` (`7d`, `26h`, as durations are written in the retention policy).
pub fn parse_since(text: &str, now: DateTime<Utc>) -> Result<DateTime<Utc>, String> {
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Ok(t.with_timezone(&Utc));
    }
    if let Some(t) = NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
    {
        return Ok(t.and_utc());
    }
    parse_duration(text).map(|d| now - d).map_err(|_| {
        format!(
            "{text:?} is neither a time (2026-11-27T03:00:00Z), a date (2026-11-27) nor an age (7d, 26h, 30min)"
        )
    })
}

type PlanIndex<'a> = HashMap<&'a BackupId, (&'a SeriesPlan, &'a BackupPlan)>;

/// A listed cloud with its plan indexed by backup.
struct Side<'a> {
    cloud: &'a str,
    inventory: &'a Inventory,
    plan: &'a Plan,
    index: PlanIndex<'a>,
}

impl<'a> Side<'a> {
    fn of(side: &CloudSide<'a>) -> Option<Self> {
        let (inventory, plan) = *side.listed.as_ref().ok()?;
        let index = plan
            .series
            .iter()
            .flat_map(|s| s.backups.iter().map(move |b| (&b.id, (s, b))))
            .collect();
        Some(Self {
            cloud: side.cloud,
            inventory,
            plan,
            index,
        })
    }

    fn complete(&self, id: &BackupId) -> bool {
        self.inventory.get(id).is_some_and(BackupEntry::is_complete)
    }
}

fn status_of(status: &BackupStatus) -> (&'static str, Option<String>) {
    match status {
        BackupStatus::Verified => ("verified", None),
        BackupStatus::Suspect { detail } => ("suspect", Some(detail.clone())),
        BackupStatus::Invalid { kind, reason } => {
            ("invalid", Some(format!("{}: {reason}", kind.code())))
        }
        BackupStatus::Future { ahead_seconds } => (
            "future",
            Some(format!("dated {ahead_seconds} s after the clock")),
        ),
        BackupStatus::NotChecked => ("not_checked", None),
        BackupStatus::Incomplete { missing } => {
            ("incomplete", Some(format!("no {}", missing.join(", "))))
        }
    }
}

/// The snake_case name serde gives a reason enum (the plan's JSON codes).
fn code(reason: impl serde::Serialize) -> String {
    serde_json::to_value(reason)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

fn retention_of(series: &SeriesPlan, plan: &BackupPlan) -> Retention {
    let (action, reasons) = match &plan.decision {
        Decision::Keep { reasons } => (Action::Keep, reasons.clone()),
        Decision::Delete { reason } => (Action::Delete, vec![code(reason)]),
        Decision::Hold { reason } => (Action::Hold, vec![code(reason)]),
    };
    Retention {
        action,
        rule: series.rule.clone(),
        reasons,
    }
}

fn copy_of(side: &Side<'_>, id: &BackupId) -> Option<CopyState> {
    let (series, plan) = side.index.get(id)?;
    let (status, detail) = status_of(&plan.status);
    Some(CopyState {
        cloud: side.cloud.to_string(),
        status: status.into(),
        detail,
        retention: retention_of(series, plan),
    })
}

/// Facts shared by the functions that build rows.
struct Context<'a> {
    now: DateTime<Utc>,
    policies: &'a PolicySet,
    primary: Option<Side<'a>>,
    replica: Option<Side<'a>>,
    /// Backups the audit found differing between the clouds.
    mismatched: HashSet<&'a str>,
}

impl<'a> Context<'a> {
    fn new(input: &CatalogInput<'a>) -> Self {
        let mismatched = input
            .report
            .with_code("replica_mismatch")
            .filter_map(|f| f.subject.as_deref())
            .collect();
        Self {
            now: input.now,
            policies: input.policies,
            primary: Side::of(&input.primary),
            replica: input.replica.as_ref().and_then(Side::of),
            mismatched,
        }
    }

    fn sides(&self) -> impl Iterator<Item = &Side<'a>> {
        self.primary.iter().chain(self.replica.iter())
    }

    /// Every backup id of either cloud, in row order (namespace, database,
    /// newest first).
    fn ids(&self) -> Vec<&'a BackupId> {
        let all: BTreeSet<&'a BackupId> = self
            .sides()
            .flat_map(|s| s.inventory.backups.keys())
            .collect();
        let mut ids: Vec<&BackupId> = all.into_iter().collect();
        ids.sort_by(|a, b| {
            (&a.namespace, &a.database)
                .cmp(&(&b.namespace, &b.database))
                .then_with(|| b.cmp(a))
        });
        ids
    }

    fn parity(&self, id: &BackupId, in_gcs: Option<bool>, in_s3: Option<bool>) -> Parity {
        let replicated = self
            .policies
            .rule_for(id.namespace.as_str())
            .is_some_and(|r| r.replicated);
        match (in_gcs, in_s3) {
            (Some(true), Some(true)) if self.mismatched.contains(id.to_string().as_str()) => {
                Parity::Mismatch
            }
            (Some(true), Some(true)) => Parity::InSync,
            (Some(true), _) if !replicated => Parity::NotReplicated,
            // As the audit's `missing_replica` / `replica_pending`.
            (Some(true), Some(false)) if self.now - id.taken_at > self.policies.replica_grace => {
                Parity::Missing
            }
            (Some(true), Some(false)) => Parity::Pending,
            (Some(false), Some(true)) => Parity::OnlyInReplica,
            _ => Parity::Unknown,
        }
    }

    fn row(&self, id: &BackupId) -> BackupRow {
        let entries: Vec<&BackupEntry> = self.sides().filter_map(|s| s.inventory.get(id)).collect();
        let copies: Vec<CopyState> = self.sides().filter_map(|s| copy_of(s, id)).collect();
        let main = copies.first().cloned();
        let manifest = entries.iter().find_map(|e| e.manifest());
        let listed_size = entries
            .iter()
            .find_map(|e| e.objects.data.as_ref().map(|d| d.size));
        let complete: Vec<&&BackupEntry> = entries.iter().filter(|e| e.is_complete()).collect();
        let in_gcs = self.primary.as_ref().map(|s| s.complete(id));
        let in_s3 = self.replica.as_ref().map(|s| s.complete(id));
        let (status, status_detail, retention) = match main {
            Some(c) => (c.status, c.detail, c.retention),
            None => (
                "not_checked".into(),
                None,
                Retention {
                    action: Action::Hold,
                    rule: None,
                    reasons: vec!["no_rule".into()],
                },
            ),
        };
        BackupRow {
            id: id.to_string(),
            namespace: id.namespace.to_string(),
            database: id.database.clone(),
            kind: match id.system_identifier() {
                Some(_) => BackupKind::BaseBackup,
                None => BackupKind::Dump,
            },
            system_identifier: id.system_identifier().map(|s| s.to_string()),
            taken_at: id.taken_at,
            finished_at: manifest.map(|m| m.finished_at),
            size: manifest.map(|m| m.ciphertext.size).or(listed_size),
            plaintext_size: manifest.map(|m| m.plaintext_size),
            tables: manifest.map(|m| m.tables.len() as u64),
            rows: manifest.map(|m| m.tables.values().sum()),
            verified: !complete.is_empty() && complete.iter().all(|e| e.is_verified()),
            status,
            status_detail,
            digests: manifest.map(|m| Digests {
                sha256: m.ciphertext.sha256.clone(),
                crc32c: format!("{:08x}", m.ciphertext.crc32c),
                chunks: m.ciphertext.chunks.len() as u64,
                chunk_size: m.ciphertext.chunk_size,
            }),
            in_gcs,
            in_s3,
            parity: self.parity(id, in_gcs, in_s3),
            last_drill: None,
            retention,
            copies,
        }
    }

    fn wal_ranges(&self, filter: &Filter) -> Vec<WalRange> {
        let clusters: BTreeSet<&ClusterKey> =
            self.sides().flat_map(|s| s.inventory.wal.keys()).collect();
        clusters
            .into_iter()
            .filter(|c| namespace_matches(filter, c.namespace.as_str()))
            .filter_map(|c| self.wal_range(c))
            .collect()
    }

    fn wal_range(&self, key: &ClusterKey) -> Option<WalRange> {
        let committed = |s: &Side<'_>| {
            s.inventory.wal.get(key).map_or(0, |c| {
                c.files.values().filter(|e| e.manifest.is_some()).count()
            })
        };
        let (side, wal) = self
            .sides()
            .find_map(|s| s.inventory.wal.get(key).map(|w| (s, w)))?;
        let files: Vec<_> = wal
            .files
            .values()
            .filter(|e| e.manifest.is_some())
            .collect();
        let timelines: BTreeSet<u32> = files.iter().map(|e| e.key.file.timeline()).collect();
        let plan = side.plan.wal.iter().find(|w| &w.cluster == key);
        let is_delete = |d: &WalDecision| matches!(d, WalDecision::Delete { .. });
        Some(WalRange {
            namespace: key.namespace.to_string(),
            system_identifier: key.system_identifier.to_string(),
            timelines: timelines.into_iter().collect(),
            first: files.first().map(|e| e.key.file.name().to_string()),
            last: files.last().map(|e| e.key.file.name().to_string()),
            files: files.len(),
            verified: files.iter().filter(|e| e.manifest().is_some()).count(),
            newest_archived_at: wal
                .newest_archived()
                .and_then(|e| e.manifest().map(|m| m.archived_at)),
            in_gcs: self.primary.as_ref().map(committed),
            in_s3: self.replica.as_ref().map(committed),
            keep_from: plan.and_then(|p| p.keep_from.clone()),
            to_delete: plan.map_or(0, |p| p.count(is_delete)),
        })
    }
}

fn namespace_matches(filter: &Filter, namespace: &str) -> bool {
    filter
        .namespace
        .as_deref()
        .is_none_or(|p| pattern_matches(p, namespace))
}

fn clouds(input: &CatalogInput<'_>) -> Vec<CloudState> {
    std::iter::once(&input.primary)
        .chain(input.replica.as_ref())
        .map(|side| CloudState {
            cloud: side.cloud.to_string(),
            store: side.store.clone(),
            listed: side.listed.is_ok(),
            error: side.listed.as_ref().err().cloned(),
            backups: side.listed.as_ref().map_or(0, |(inv, _)| inv.backups.len()),
        })
        .collect()
}

/// The listing `filter` selects, without drills ([`attach_last_drills`]
/// adds them once their records are read).
pub fn build(input: &CatalogInput<'_>, filter: &Filter) -> Listing {
    let ctx = Context::new(input);
    let mut per_series: HashMap<(&str, &str), usize> = HashMap::new();
    let backups = ctx
        .ids()
        .into_iter()
        .filter(|id| namespace_matches(filter, id.namespace.as_str()))
        .filter(|id| filter.since.is_none_or(|t| id.taken_at >= t))
        .filter(|id| {
            let n = per_series
                .entry((id.namespace.as_str(), id.database.as_str()))
                .or_default();
            *n += 1;
            filter.limit.is_none_or(|limit| *n <= limit)
        })
        .map(|id| ctx.row(id))
        .collect();
    Listing {
        schema: LIST_SCHEMA.into(),
        generated_at: input.now,
        clouds: clouds(input),
        backups,
        wal: ctx.wal_ranges(filter),
    }
}

/// Sets each row's `last_drill` to the newest of its records in `drills`.
pub(super) fn attach_last_drills(rows: &mut [BackupRow], drills: &[LoadedDrill]) {
    let mut newest: HashMap<&str, &LoadedDrill> = HashMap::new();
    for d in drills {
        let slot = newest.entry(d.backup_id.as_str()).or_insert(d);
        if d.order_key() > slot.order_key() {
            *slot = d;
        }
    }
    for row in rows {
        row.last_drill = newest.get(row.id.as_str()).map(|d| d.state());
    }
}

/// `show`: one backup's row, its tables and every drill (`drills` may hold
/// other backups' records; only its own are used). `None`: in no listing.
pub(super) fn shown(
    input: &CatalogInput<'_>,
    id: &BackupId,
    drills: &[LoadedDrill],
) -> Option<Shown> {
    let ctx = Context::new(input);
    if !ctx.sides().any(|s| s.inventory.get(id).is_some()) {
        return None;
    }
    let mut row = ctx.row(id);
    let mut mine: Vec<&LoadedDrill> = drills.iter().filter(|d| d.backup_id == row.id).collect();
    mine.sort_by_key(|d| std::cmp::Reverse(d.order_key()));
    let drills: Vec<DrillState> = mine.iter().map(|d| d.state()).collect();
    row.last_drill = drills.first().cloned();
    let manifest = ctx
        .sides()
        .find_map(|s| s.inventory.get(id).and_then(|e| e.manifest()));
    Some(Shown {
        schema: SHOW_SCHEMA.into(),
        generated_at: input.now,
        clouds: clouds(input),
        backup: row,
        tables: manifest.map(|m| m.tables.clone()).unwrap_or_default(),
        manifest: manifest.map(|m| ManifestFacts {
            server_version: m.server_version.clone(),
            dump_format: m.dump_format.clone(),
            tool: m.tool.clone(),
            signer: m.signer.clone(),
            recipients: m.recipients.clone(),
            base_backup: m.base_backup.clone(),
        }),
        drills,
    })
}
