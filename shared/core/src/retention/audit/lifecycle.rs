//! Bucket lifecycle rules: parsing a bucket description and the findings
//! about its rules.
//!
//! A lifecycle rule deletes or changes objects behind Backstop's back, so the
//! audit checks that the bucket's rules can fire at all (noncurrent-only
//! conditions need versioning) and do not delete backups the retention policy
//! keeps. Kept apart from the inventory checks because the input is different:
//! a bucket resource (GCS JSON API or `gcloud` JSON), parsed into the
//! cloud-neutral [`BucketConfig`].

use chrono::TimeDelta;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{Finding, Severity};
use crate::retention::policy::{PolicySet, format_duration};

/// A bucket description that cannot be parsed. Permanent: fix the input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bucket description field `{field}`: {reason}")]
pub struct BucketConfigError {
    /// Path of the field at fault, e.g. `lifecycle.rule[0].action.type`.
    pub field: String,
    /// What is wrong with it.
    pub reason: String,
}

/// One object lifecycle rule, cloud-neutral.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct LifecycleRule {
    /// `Delete`, `SetStorageClass`, `AbortIncompleteMultipartUpload`, ...
    pub action: String,
    /// The storage class a `SetStorageClass` action moves objects to.
    pub storage_class: Option<String>,
    /// Condition: object age in days at least this.
    pub age_days: Option<u32>,
    /// `Some(false)`: only noncurrent (archived) versions.
    pub is_live: Option<bool>,
    /// Condition: at least this many newer versions exist.
    pub num_newer_versions: Option<u32>,
    /// Condition: days since the version became noncurrent.
    pub days_since_noncurrent_time: Option<u32>,
    /// Condition: became noncurrent before this date (`YYYY-MM-DD`).
    pub noncurrent_time_before: Option<String>,
    /// Condition: created before this date (`YYYY-MM-DD`).
    pub created_before: Option<String>,
    /// Condition: the key starts with one of these; empty matches all.
    pub matches_prefix: Vec<String>,
    /// Condition: the key ends with one of these; empty matches all.
    pub matches_suffix: Vec<String>,
}

impl LifecycleRule {
    /// Conditions that only noncurrent object versions can meet.
    pub fn noncurrent_only(&self) -> Vec<String> {
        let mut why = Vec::new();
        if self.is_live == Some(false) {
            why.push("isLive: false (Terraform with_state = \"ARCHIVED\")".to_string());
        }
        if let Some(n) = self.num_newer_versions.filter(|n| *n > 0) {
            why.push(format!("numNewerVersions: {n}"));
        }
        if let Some(d) = self.days_since_noncurrent_time {
            why.push(format!("daysSinceNoncurrentTime: {d}"));
        }
        if let Some(t) = &self.noncurrent_time_before {
            why.push(format!("noncurrentTimeBefore: {t}"));
        }
        why
    }

    fn describe(&self, index: usize) -> String {
        let mut parts = vec![self.action.clone()];
        if let Some(a) = self.age_days {
            parts.push(format!("age {a}d"));
        }
        if let Some(l) = self.is_live {
            parts.push(format!("isLive {l}"));
        }
        format!("lifecycle.rule[{index}] ({})", parts.join(", "))
    }
}

/// What the audit needs to know about a bucket.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct BucketConfig {
    /// The bucket name, when the description gives it.
    pub name: Option<String>,
    /// Whether object versioning is on (deleted backups linger as noncurrent
    /// versions).
    pub versioning_enabled: bool,
    /// The bucket's lifecycle rules, in order.
    pub lifecycle_rules: Vec<LifecycleRule>,
}

impl BucketConfig {
    /// Parses a GCS bucket resource, as returned by the JSON API
    /// (`GET /storage/v1/b/NAME`: `versioning.enabled`, `lifecycle.rule[]`)
    /// or by `gcloud storage buckets describe --format=json`
    /// (`versioning_enabled`, `lifecycle_config.rule[]`). Terraform's
    /// `with_state` spelling is understood too.
    pub fn from_gcs_json(json: &str) -> Result<Self, BucketConfigError> {
        let v: Value = serde_json::from_str(json).map_err(|e| BucketConfigError {
            field: "(document)".into(),
            reason: format!("not JSON: {e}"),
        })?;
        Self::from_gcs_value(&v)
    }

    /// [`Self::from_gcs_json`] for an already-decoded JSON value.
    pub fn from_gcs_value(v: &Value) -> Result<Self, BucketConfigError> {
        let obj = v
            .as_object()
            .ok_or_else(|| err("(document)", "expected a JSON object"))?;
        let versioning_enabled = match (obj.get("versioning"), obj.get("versioning_enabled")) {
            (Some(Value::Object(ver)), _) => {
                ver.get("enabled").and_then(Value::as_bool).unwrap_or(false)
            }
            (_, Some(Value::Bool(b))) => *b,
            _ => false,
        };
        let lifecycle = obj.get("lifecycle").or_else(|| obj.get("lifecycle_config"));
        let rules: &[Value] = match lifecycle.and_then(|l| l.get("rule")) {
            None | Some(Value::Null) => &[],
            Some(Value::Array(rules)) => rules,
            Some(_) => return Err(err("lifecycle.rule", "expected an array")),
        };
        let lifecycle_rules = rules
            .iter()
            .enumerate()
            .map(|(i, rule)| parse_rule(i, rule))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            name: obj.get("name").and_then(Value::as_str).map(String::from),
            versioning_enabled,
            lifecycle_rules,
        })
    }
}

fn err(field: &str, reason: &str) -> BucketConfigError {
    BucketConfigError {
        field: field.into(),
        reason: reason.into(),
    }
}

/// Parses `lifecycle.rule[i]` of a bucket resource.
fn parse_rule(i: usize, rule: &Value) -> Result<LifecycleRule, BucketConfigError> {
    let at = format!("lifecycle.rule[{i}]");
    let action = rule.get("action").unwrap_or(&Value::Null);
    let action_type = action
        .get("type")
        .and_then(Value::as_str)
        .ok_or_else(|| err(&format!("{at}.action.type"), "missing"))?;
    let cond = Condition {
        value: rule.get("condition").unwrap_or(&Value::Null),
        at: &at,
    };
    let is_live = cond.is_live()?;
    Ok(LifecycleRule {
        action: action_type.to_string(),
        storage_class: action
            .get("storageClass")
            .or_else(|| action.get("storage_class"))
            .and_then(Value::as_str)
            .map(String::from),
        age_days: cond.num("age", "age")?,
        is_live,
        num_newer_versions: cond.num("numNewerVersions", "num_newer_versions")?,
        days_since_noncurrent_time: cond
            .num("daysSinceNoncurrentTime", "days_since_noncurrent_time")?,
        noncurrent_time_before: cond.text("noncurrentTimeBefore", "noncurrent_time_before"),
        created_before: cond.text("createdBefore", "created_before"),
        matches_prefix: cond.list("matchesPrefix", "matches_prefix"),
        matches_suffix: cond.list("matchesSuffix", "matches_suffix"),
    })
}

/// A rule's `condition` object. Every field is read in the JSON API's
/// camelCase spelling, else in `gcloud`'s snake_case; `null` counts as absent.
/// Errors name the field under `at` (`lifecycle.rule[i]`).
struct Condition<'a> {
    value: &'a Value,
    at: &'a str,
}

impl<'a> Condition<'a> {
    fn get(&self, camel: &str, snake: &str) -> Option<&'a Value> {
        self.value
            .get(camel)
            .or_else(|| self.value.get(snake))
            .filter(|v| !v.is_null())
    }

    /// A whole number, also when written as a string.
    fn num(&self, camel: &str, snake: &str) -> Result<Option<u32>, BucketConfigError> {
        match self.get(camel, snake) {
            None => Ok(None),
            Some(v) => v
                .as_u64()
                .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
                .and_then(|n| u32::try_from(n).ok())
                .map(Some)
                .ok_or_else(|| {
                    err(
                        &format!("{}.condition.{camel}", self.at),
                        "expected a whole number",
                    )
                }),
        }
    }

    fn text(&self, camel: &str, snake: &str) -> Option<String> {
        self.get(camel, snake)
            .and_then(Value::as_str)
            .map(String::from)
    }

    /// The strings of an array; anything else reads as empty.
    fn list(&self, camel: &str, snake: &str) -> Vec<String> {
        self.get(camel, snake)
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(String::from)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// `isLive`, overridden by Terraform's `withState` when that says `LIVE`
    /// or `ARCHIVED`.
    fn is_live(&self) -> Result<Option<bool>, BucketConfigError> {
        let at = self.at;
        let mut is_live = match self.get("isLive", "is_live") {
            None => None,
            Some(Value::Bool(b)) => Some(*b),
            Some(_) => {
                return Err(err(
                    &format!("{at}.condition.isLive"),
                    "expected true or false",
                ));
            }
        };
        if let Some(state) = self.text("withState", "with_state") {
            is_live = match state.to_ascii_uppercase().as_str() {
                "LIVE" => Some(true),
                "ARCHIVED" => Some(false),
                "ANY" | "" => is_live,
                _ => {
                    return Err(err(
                        &format!("{at}.condition.withState"),
                        "expected LIVE, ARCHIVED or ANY",
                    ));
                }
            };
        }
        Ok(is_live)
    }
}

/// Lifecycle rules that can never fire, or that fight the retention policy.
pub fn lifecycle_findings(
    cloud: &str,
    bucket: &BucketConfig,
    policies: &PolicySet,
) -> Vec<Finding> {
    let name = bucket.name.as_deref().unwrap_or("the bucket");
    let horizon = policies.max_horizon();
    let mut out: Vec<Finding> = bucket
        .lifecycle_rules
        .iter()
        .enumerate()
        .filter_map(|(i, rule)| {
            rule_finding(bucket.versioning_enabled, name, horizon, i, rule)
                .map(|f| f.cloud(cloud).subject(format!("lifecycle.rule[{i}]")))
        })
        .collect();
    let cleans_noncurrent = bucket
        .lifecycle_rules
        .iter()
        .any(|r| r.action.eq_ignore_ascii_case("Delete") && !r.noncurrent_only().is_empty());
    if bucket.versioning_enabled && !cleans_noncurrent {
        out.push(
            Finding::new(
                Severity::Info,
                "noncurrent_versions_kept",
                format!(
                    "{name} has object versioning on and no lifecycle rule deletes noncurrent versions: pruned backups keep their storage (and their data) as noncurrent versions"
                ),
            )
            .cloud(cloud),
        );
    }
    out
}

/// The finding about `lifecycle.rule[i]`, if any (without cloud and subject):
/// a noncurrent-only rule on an unversioned bucket, or a delete-by-age rule
/// set shorter than the policy's horizon (or not).
fn rule_finding(
    versioning_enabled: bool,
    name: &str,
    horizon: Option<TimeDelta>,
    i: usize,
    rule: &LifecycleRule,
) -> Option<Finding> {
    let what = rule.describe(i);
    let noncurrent = rule.noncurrent_only();
    let is_delete = rule.action.eq_ignore_ascii_case("Delete");
    if !versioning_enabled && !noncurrent.is_empty() {
        return Some(Finding::new(
            if is_delete {
                Severity::Critical
            } else {
                Severity::Warning
            },
            "lifecycle_rule_cannot_fire",
            format!(
                "{what} on {name} can never fire: it only applies to noncurrent versions ({}) but object versioning is off, so every object stays live and nothing is ever {}. For live objects use isLive: true (Terraform with_state = \"LIVE\"), or leave pruning to Backstop's retention policy",
                noncurrent.join(", "),
                if is_delete { "deleted" } else { "changed" }
            ),
        ));
    }
    if !is_delete || !noncurrent.is_empty() {
        return None;
    }
    let age = TimeDelta::days(rule.age_days? as i64);
    Some(match horizon {
        Some(h) if age < h => Finding::new(
            Severity::Warning,
            "lifecycle_shorter_than_policy",
            format!(
                "{what} on {name} deletes backups after {} but the retention policy keeps some for up to {}: it will silently remove backups the policy wants kept",
                format_duration(age),
                format_duration(h)
            ),
        ),
        _ => Finding::new(
            Severity::Info,
            "lifecycle_deletes_backups",
            format!(
                "{what} on {name} deletes every object older than {}, including the newest backup of a namespace whose backups stopped; Backstop's retention never deletes that one",
                format_duration(age)
            ),
        ),
    })
}

crate::error::permanent!(BucketConfigError);
