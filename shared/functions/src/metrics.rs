//! The functions' metrics as CloudWatch Embedded Metric Format (EMF)
//! records: one JSON object per line, which CloudWatch Logs turns into
//! metrics of the namespace `Backstop` (no `PutMetricData` call, no extra
//! permission, nothing lost when CloudWatch is slow).
//!
//! Where a line goes: under the Lambda runtime to stdout, which Lambda
//! ships to CloudWatch Logs, where EMF is extracted; locally (`--event`,
//! `backstop invoke`, `backstop serve`) the same line goes to stderr beside
//! the logs, because stdout carries the invocation's result as one JSON
//! document that scripts parse.
//!
//! The numbers are read off what the core already returns (the replicator's
//! [`Outcome`], the audit's [`Report`], the drill records): nothing here
//! decides anything. A record that breaks the format's limits is a bug: it is
//! logged and dropped, since metrics must never fail an invocation.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde_json::{Map, Value, json};

use backstop_core::drill::DrillRecord;
use backstop_core::naming::{BackupId, database_segment};
use backstop_core::replicate::Outcome;
use backstop_core::retention::{Report, Severity};

/// The CloudWatch namespace of every metric.
pub const NAMESPACE: &str = "Backstop";
/// EMF: a directive's `Metrics` holds at most 100 definitions.
pub const MAX_METRICS: usize = 100;
/// EMF: a dimension set names at most 30 dimensions.
pub const MAX_DIMENSIONS: usize = 30;
/// CloudWatch: names are 1 to 255 characters, dimension values 1 to 1024.
const MAX_NAME: usize = 255;
const MAX_DIMENSION_VALUE: usize = 1024;

/// The units the functions publish (a subset of CloudWatch's).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Count,
    Bytes,
    Seconds,
}

impl Unit {
    fn as_str(self) -> &'static str {
        match self {
            Unit::Count => "Count",
            Unit::Bytes => "Bytes",
            Unit::Seconds => "Seconds",
        }
    }
}

/// A record that EMF would reject or CloudWatch would misread.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EmfError {
    #[error(
        "the metric record has {0} metrics; EMF allows at most {MAX_METRICS} in one directive: split it into several records"
    )]
    TooManyMetrics(usize),
    #[error(
        "the dimension set {0:?} names more than {MAX_DIMENSIONS} dimensions, the most EMF allows: drop some"
    )]
    TooManyDimensions(Vec<String>),
    #[error(
        "the dimension set names {0:?}, which the record does not define: add it with Record::dimension"
    )]
    UndefinedDimension(String),
    #[error(
        "{0:?} is defined twice in the record (dimension, metric or property): the line would carry only one value; rename one"
    )]
    Duplicate(String),
    #[error("the metric {name:?} is {value}, not a finite number: CloudWatch drops the record")]
    NotFinite { name: String, value: f64 },
    #[error(
        "the name {0:?} is empty, longer than {MAX_NAME} bytes or not ASCII: CloudWatch refuses it"
    )]
    BadName(String),
    #[error(
        "the dimension {name:?} has the value {value:?}, which is empty, longer than {MAX_DIMENSION_VALUE} bytes or not ASCII: CloudWatch refuses it"
    )]
    BadDimensionValue { name: String, value: String },
    #[error(
        "the record has no metric or no dimension set: it would publish nothing useful; add both"
    )]
    Empty,
}

/// One EMF record: dimensions (string members), the dimension sets that
/// publish them, metrics (number members) and other members for people
/// reading the log line.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    dimensions: Vec<(String, String)>,
    sets: Vec<Vec<String>>,
    metrics: Vec<(String, f64, Unit)>,
    properties: Vec<(String, Value)>,
}

impl Record {
    /// A record of `function` (the `Function` dimension every record has).
    pub fn new(function: &str) -> Self {
        Self {
            dimensions: vec![("Function".into(), function.into())],
            sets: Vec::new(),
            metrics: Vec::new(),
            properties: Vec::new(),
        }
    }

    pub fn dimension(mut self, name: &str, value: impl Into<String>) -> Self {
        self.dimensions.push((name.into(), value.into()));
        self
    }

    /// Publishes every metric of the record under these dimensions too.
    pub fn dimension_set(mut self, names: &[&str]) -> Self {
        self.sets
            .push(names.iter().map(|n| n.to_string()).collect());
        self
    }

    pub fn metric(mut self, name: &str, value: f64, unit: Unit) -> Self {
        self.metrics.push((name.into(), value, unit));
        self
    }

    /// A member that is not a metric (searchable in CloudWatch Logs Insights).
    pub fn property(mut self, name: &str, value: Value) -> Self {
        self.properties.push((name.into(), value));
        self
    }

    /// The value of the metric `name`, if the record has it.
    pub fn value(&self, name: &str) -> Option<f64> {
        self.metrics
            .iter()
            .find(|(n, _, _)| n == name)
            .map(|(_, v, _)| *v)
    }

    /// The value of the dimension `name`, if the record has it.
    pub fn dimension_value(&self, name: &str) -> Option<&str> {
        self.dimensions
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    fn check(&self) -> Result<(), EmfError> {
        if self.metrics.is_empty() || self.sets.is_empty() {
            return Err(EmfError::Empty);
        }
        if self.metrics.len() > MAX_METRICS {
            return Err(EmfError::TooManyMetrics(self.metrics.len()));
        }
        let valid = |s: &str, max: usize| !s.trim().is_empty() && s.len() <= max && s.is_ascii();
        let mut seen = std::collections::BTreeSet::from(["_aws".to_string()]);
        let names = (self.dimensions.iter().map(|(n, _)| n))
            .chain(self.metrics.iter().map(|(n, _, _)| n))
            .chain(self.properties.iter().map(|(n, _)| n));
        for name in names {
            if !valid(name, MAX_NAME) {
                return Err(EmfError::BadName(name.clone()));
            }
            if !seen.insert(name.clone()) {
                return Err(EmfError::Duplicate(name.clone()));
            }
        }
        for (name, value) in &self.dimensions {
            if !valid(value, MAX_DIMENSION_VALUE) {
                return Err(EmfError::BadDimensionValue {
                    name: name.clone(),
                    value: value.clone(),
                });
            }
        }
        for set in &self.sets {
            if set.len() > MAX_DIMENSIONS {
                return Err(EmfError::TooManyDimensions(set.clone()));
            }
            if let Some(missing) = set.iter().find(|n| self.dimension_value(n).is_none()) {
                return Err(EmfError::UndefinedDimension(missing.clone()));
            }
        }
        match self.metrics.iter().find(|(_, v, _)| !v.is_finite()) {
            Some((name, value, _)) => Err(EmfError::NotFinite {
                name: name.clone(),
                value: *value,
            }),
            None => Ok(()),
        }
    }

    /// The EMF document, stamped `at`.
    pub fn to_json(&self, at: DateTime<Utc>) -> Result<Value, EmfError> {
        self.check()?;
        let definitions: Vec<Value> = (self.metrics.iter())
            .map(|(name, _, unit)| json!({"Name": name, "Unit": unit.as_str()}))
            .collect();
        let mut root = Map::new();
        root.insert(
            "_aws".into(),
            json!({
                "Timestamp": at.timestamp_millis(),
                "CloudWatchMetrics": [{
                    "Namespace": NAMESPACE,
                    "Dimensions": self.sets,
                    "Metrics": definitions,
                }],
            }),
        );
        for (name, value) in &self.dimensions {
            root.insert(name.clone(), json!(value));
        }
        for (name, value, _) in &self.metrics {
            root.insert(name.clone(), json!(value));
        }
        for (name, value) in &self.properties {
            root.insert(name.clone(), value.clone());
        }
        Ok(Value::Object(root))
    }
}

/// Prints each record as one line where the platform reads it (see the
/// module docs); a record that fails its check is logged, not printed.
pub fn emit(records: &[Record], at: DateTime<Utc>) {
    use std::io::Write;
    let lines: Vec<String> = records
        .iter()
        .filter_map(|r| match r.to_json(at) {
            Ok(v) => Some(v.to_string()),
            Err(e) => {
                tracing::error!(error = %e, record = ?r, "metric record dropped");
                None
            }
        })
        .collect();
    if lines.is_empty() {
        return;
    }
    let text = lines.join("\n") + "\n";
    // One write per batch: the lines do not interleave with log lines.
    let written = if crate::lambda::under_lambda_runtime() {
        std::io::stdout().lock().write_all(text.as_bytes())
    } else {
        std::io::stderr().lock().write_all(text.as_bytes())
    };
    if let Err(e) = written {
        tracing::warn!(error = %e, "could not print the metric records");
    }
}

/// Metric names, as the README and the alarms in `infra/` name them.
pub mod names {
    pub const BACKUPS_REPLICATED: &str = "BackupsReplicated";
    pub const WAL_FILES_REPLICATED: &str = "WalFilesReplicated";
    pub const REPLICATED_BYTES: &str = "ReplicatedBytes";
    pub const REPLICATION_SECONDS: &str = "ReplicationSeconds";
    pub const REJECTIONS: &str = "Rejections";
    pub const FINDINGS: &str = "Findings";
    pub const CRITICAL_FINDINGS: &str = "CriticalFindings";
    pub const WARNING_FINDINGS: &str = "WarningFindings";
    pub const OBJECTS_DELETED: &str = "ObjectsDeleted";
    pub const NEWEST_BACKUP_AGE: &str = "NewestBackupAgeSeconds";
    pub const NEWEST_BASE_BACKUP_AGE: &str = "NewestBaseBackupAgeSeconds";
    pub const NEWEST_DRILL_AGE: &str = "NewestDrillAgeSeconds";
    pub const NEWEST_PITR_DRILL_AGE: &str = "NewestPitrDrillAgeSeconds";
}

use names::*;

/// What the replicator did with one notification, as a record: a copy
/// (`BackupsReplicated` or `WalFilesReplicated`, bytes, seconds) or a
/// rejection (a verification failure or tamper alert). Redeliveries and
/// ignored objects publish nothing, so a count of copies stays a count of
/// backups.
pub fn replicator_record(outcome: &Outcome) -> Option<Record> {
    let (label, copied) = match outcome {
        Outcome::Replicated {
            backup_id,
            bytes,
            seconds,
            ..
        } => (backup_id, Some((*bytes, *seconds))),
        Outcome::Rejected { backup_id, .. } => (backup_id, None),
        Outcome::AlreadyReplicated { .. } | Outcome::Ignored { .. } => return None,
    };
    // Backup ids and WAL labels both start with the namespace.
    let namespace = label.split('/').next().unwrap_or_default();
    let is_backup = label.parse::<BackupId>().is_ok();
    let record = Record::new("replicator")
        .dimension("Namespace", namespace)
        .dimension_set(&["Function"])
        .dimension_set(&["Function", "Namespace"])
        .property("BackupId", json!(label));
    let record = match copied {
        Some((bytes, seconds)) => {
            let count = if is_backup {
                BACKUPS_REPLICATED
            } else {
                WAL_FILES_REPLICATED
            };
            record
                .metric(count, 1.0, Unit::Count)
                .metric(REPLICATED_BYTES, bytes as f64, Unit::Bytes)
                .metric(REPLICATION_SECONDS, seconds, Unit::Seconds)
                .metric(REJECTIONS, 0.0, Unit::Count)
        }
        None => record.metric(REJECTIONS, 1.0, Unit::Count),
    };
    Some(record)
}

/// One retention run as records: the totals; one `Findings` count per
/// finding code (dimension `Code`); the newest verified backup's age per
/// series (dimensions `Namespace`, `Database`, `Cloud`; base backups apart);
/// the newest successful drill's age per namespace (PITR drills apart).
pub fn retention_records(
    report: &Report,
    drills: &[DrillRecord],
    deleted: usize,
    dry_run: bool,
) -> Vec<Record> {
    let now = report.generated_at;
    let mut records = vec![
        Record::new("retention")
            .dimension_set(&["Function"])
            .metric(CRITICAL_FINDINGS, report.critical as f64, Unit::Count)
            .metric(WARNING_FINDINGS, report.warning as f64, Unit::Count)
            .metric(
                OBJECTS_DELETED,
                if dry_run { 0.0 } else { deleted as f64 },
                Unit::Count,
            )
            .property("DryRun", json!(dry_run)),
    ];
    let mut by_code: BTreeMap<&str, (usize, Severity)> = BTreeMap::new();
    for f in &report.findings {
        let entry = by_code.entry(&f.code).or_insert((0, f.severity));
        entry.0 += 1;
        entry.1 = entry.1.max(f.severity);
    }
    records.extend(by_code.into_iter().map(|(code, (count, severity))| {
        Record::new("retention")
            .dimension("Code", code)
            .dimension_set(&["Function", "Code"])
            .metric(FINDINGS, count as f64, Unit::Count)
            .property("Severity", json!(severity.to_string()))
    }));
    for s in &report.series {
        let (Some(age), Some(newest)) = (s.newest_verified_age_seconds, &s.newest_verified) else {
            continue;
        };
        let base_backup = newest
            .parse::<BackupId>()
            .is_ok_and(|id| id.system_identifier().is_some());
        let name = if base_backup {
            NEWEST_BASE_BACKUP_AGE
        } else {
            NEWEST_BACKUP_AGE
        };
        records.push(
            Record::new("retention")
                .dimension("Namespace", s.namespace.as_str())
                .dimension("Database", database_segment(&s.database))
                .dimension("Cloud", s.cloud.as_str())
                .dimension_set(&["Function", "Namespace"])
                .dimension_set(&["Function", "Namespace", "Database", "Cloud"])
                .metric(name, age.max(0) as f64, Unit::Seconds)
                .property("BackupId", json!(newest)),
        );
    }
    records.extend(drill_records(drills, now));
    records
}

/// The newest successful drill per namespace and kind.
fn drill_records(drills: &[DrillRecord], now: DateTime<Utc>) -> Vec<Record> {
    let mut newest: BTreeMap<(&str, bool), &DrillRecord> = BTreeMap::new();
    for d in drills.iter().filter(|d| d.success) {
        // A drill of a base backup (restore-cluster) is a PITR drill.
        let pitr = d
            .backup_id
            .parse::<BackupId>()
            .is_ok_and(|id| id.system_identifier().is_some());
        let slot = newest.entry((d.namespace.as_str(), pitr)).or_insert(d);
        if d.finished_at > slot.finished_at {
            *slot = d;
        }
    }
    newest
        .into_iter()
        .map(|((namespace, pitr), d)| {
            let name = if pitr {
                NEWEST_PITR_DRILL_AGE
            } else {
                NEWEST_DRILL_AGE
            };
            let age = (now - d.finished_at).num_seconds().max(0);
            Record::new("retention")
                .dimension("Namespace", namespace)
                .dimension_set(&["Function", "Namespace"])
                .metric(name, age as f64, Unit::Seconds)
                .property("BackupId", json!(d.backup_id))
        })
        .collect()
}

#[cfg(test)]
#[path = "metrics_tests.rs"]
mod tests;
