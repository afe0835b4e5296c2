//! Retention policies: which backups of a series to keep, per namespace.
//!
//! Keep rules follow restic's `forget`: for each bucket kind (last, hourly,
//! daily, ISO-weekly, monthly, yearly), walk the counted backups newest first
//! and keep the newest backup of each of the last N distinct periods that have
//! backups. Periods are UTC calendar periods. `keep_within` keeps everything
//! newer than the newest counted backup minus the duration (relative to the
//! latest backup, not to the clock, so a stalled namespace keeps its history).
//! A backup kept by any rule is kept.
//!
//! The policy set is read from JSON (`BACKSTOP_RETENTION_POLICY`):
//!
//! ```json
//! {
//!   "version": 1,
//!   "incomplete_grace": "6h",
//!   "replica_grace": "6h",
//!   "shrink_alert_ratio": 0.5,
//!   "branch_namespaces": [],
//!   "wal_stale_after": "1h",
//!   "wal_orphan_grace": "1d",
//!   "rules": [
//!     { "match": "production", "protected": true, "replicated": true,
//!       "keep_daily": 7, "keep_weekly": 4, "keep_monthly": 12,
//!       "stale_after": "26h", "drill_max_age": "14d" },
//!     { "match": "*", "keep_last": 2, "abandon_after": "14d", "stale_after": "8d" }
//!   ]
//! }
//! ```
//!
//! **Only branch namespaces are ever abandoned.** A branch namespace is one
//! named as `backstop dump --branch` names them (`br-…`, see
//! [`crate::naming::namespace_for_branch`]) or one matched by a pattern in
//! `branch_namespaces` (e.g. `"preview-*"`). Any other namespace — a second
//! production database called `billing`, say — keeps its newest verified
//! backup whatever its age, however the rule reads: a dump job that broke is
//! the classic way backups vanish, and abandoning its namespace would finish
//! the job. Its staleness is critical; a quiet branch's is a warning.
//!
//! Every field is optional; the above is exactly the default. `rules`, when
//! given, replaces the default rules entirely. Rules are tried in order and
//! the first whose `match` fits a namespace applies (`*` matches any run of
//! characters). A namespace no rule matches is never touched (and the audit
//! says so). Durations are strings of `<n><unit>` parts with units `w`, `d`,
//! `h`, `min`, `s` (e.g. `26h`, `1d12h`); `m` is refused because restic reads
//! it as months and a minute/month mix-up would be a disaster. Rule fields:
//!
//! | field | default | meaning |
//! | --- | --- | --- |
//! | `match` | required | namespace name or glob |
//! | `keep_last`, `keep_hourly`, `keep_daily`, `keep_weekly`, `keep_monthly`, `keep_yearly` | 0 | restic counts |
//! | `keep_within` | none | keep all newer than newest minus this |
//! | `protected` | false | never abandoned; stale / missing findings are critical |
//! | `replicated` | false | expected in the replica (S3) bucket too: parity is audited |
//! | `abandon_after` | none | branch namespaces only: remove the namespace entirely once its newest backup is older |
//! | `stale_after` | none | audit: newest verified backup older than this is stale |
//! | `drill_max_age` | none | audit: last successful restore drill older than this |
//! | `base_backups` | none | keep counts (`keep_*` fields only) for the namespace's physical base backups (cluster series) instead of the rule's |
//!
//! Base backups are the series `<namespace>/.cluster-<system id>`: rules
//! select them by namespace like any series, with the rule's keep counts
//! unless `base_backups` gives their own. Their WAL is kept from the oldest
//! kept base backup on (`super::wal_plan`); `wal_stale_after` (default `1h`)
//! is how old a cluster's newest archived WAL may be, `wal_orphan_grace`
//! (default `1d`) how long a WAL data object no manifest commits is left
//! alone (a push may still be writing it).
//!
//! The allowed clock skew ([`PolicySet::max_clock_skew`], default `10min`) is
//! not part of the JSON: it comes from `BACKSTOP_MAX_CLOCK_SKEW`, which
//! restore reads too, so that both agree on what "future-dated" means.
//!
//! Unknown fields are refused (a typo such as `keep_dialy` must not silently
//! keep nothing), as is a rule that keeps nothing, and any rule that would let
//! the namespace `production` be abandoned.

use std::collections::BTreeSet;
use std::fmt;

use chrono::{DateTime, Datelike, TimeDelta, Utc};
use serde_json::{Map, Value};

/// Name of the environment variable holding the policy JSON.
pub const POLICY_ENV: &str = "BACKSTOP_RETENTION_POLICY";

/// Name of the environment variable holding the allowed clock skew: how far
/// in the future a backup's time may lie (a duration, e.g. `10min`).
pub const MAX_CLOCK_SKEW_ENV: &str = "BACKSTOP_MAX_CLOCK_SKEW";

/// The default allowed clock skew, in seconds (10 minutes).
pub const DEFAULT_MAX_CLOCK_SKEW_SECS: i64 = 600;

/// The namespace that no configuration may ever abandon.
pub const PRODUCTION: &str = "production";

/// An invalid retention policy. Permanent: fix the setting.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// The policy is not valid JSON.
    #[error("retention policy ({POLICY_ENV}) is not valid JSON: {0}")]
    Json(String),
    /// A field is unknown, mistyped or out of range, or the rules break a
    /// safety rule (keep nothing, abandon `production`).
    #[error("retention policy ({POLICY_ENV}) field `{field}`: {reason}")]
    Field {
        /// Path of the field at fault, e.g. `rules[0].keep_daily`.
        field: String,
        /// What is wrong and what is expected.
        reason: String,
    },
    /// A retention setting outside the policy JSON is invalid.
    #[error("{name} is invalid: {reason}")]
    Setting {
        /// The environment variable at fault.
        name: &'static str,
        /// What is wrong and what is expected.
        reason: String,
    },
}

fn field_err(field: impl Into<String>, reason: impl Into<String>) -> PolicyError {
    PolicyError::Field {
        field: field.into(),
        reason: reason.into(),
    }
}

/// restic-style keep counts for one series of backups.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RetentionPolicy {
    /// Keep the newest N counted backups.
    pub keep_last: u32,
    /// Keep the newest backup of each of the last N UTC hours that have one.
    pub keep_hourly: u32,
    /// Keep the newest backup of each of the last N UTC days that have one.
    pub keep_daily: u32,
    /// Keep the newest backup of each of the last N ISO weeks that have one.
    pub keep_weekly: u32,
    /// Keep the newest backup of each of the last N UTC months that have one.
    pub keep_monthly: u32,
    /// Keep the newest backup of each of the last N UTC years that have one.
    pub keep_yearly: u32,
    /// Keep every backup newer than the newest one minus this.
    pub keep_within: Option<TimeDelta>,
}

/// Why a backup is kept, e.g. `daily 2026-11-20`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum KeepReason {
    /// 1-based rank among the counted backups, newest first.
    Last(u32),
    Hourly(String),
    Daily(String),
    Weekly(String),
    Monthly(String),
    Yearly(String),
    Within(TimeDelta),
}

impl fmt::Display for KeepReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeepReason::Last(n) => write!(f, "last #{n}"),
            KeepReason::Hourly(p) => write!(f, "hourly {p}"),
            KeepReason::Daily(p) => write!(f, "daily {p}"),
            KeepReason::Weekly(p) => write!(f, "weekly {p}"),
            KeepReason::Monthly(p) => write!(f, "monthly {p}"),
            KeepReason::Yearly(p) => write!(f, "yearly {p}"),
            KeepReason::Within(d) => write!(f, "within {}", format_duration(*d)),
        }
    }
}

#[derive(Clone, Copy)]
enum Bucket {
    Hourly,
    Daily,
    Weekly,
    Monthly,
    Yearly,
}

impl Bucket {
    fn period(self, t: DateTime<Utc>) -> String {
        match self {
            Bucket::Hourly => t.format("%Y-%m-%dT%H").to_string(),
            Bucket::Daily => t.format("%Y-%m-%d").to_string(),
            Bucket::Weekly => {
                let w = t.iso_week();
                format!("{}-W{:02}", w.year(), w.week())
            }
            Bucket::Monthly => t.format("%Y-%m").to_string(),
            Bucket::Yearly => t.format("%Y").to_string(),
        }
    }

    fn reason(self, period: String) -> KeepReason {
        match self {
            Bucket::Hourly => KeepReason::Hourly(period),
            Bucket::Daily => KeepReason::Daily(period),
            Bucket::Weekly => KeepReason::Weekly(period),
            Bucket::Monthly => KeepReason::Monthly(period),
            Bucket::Yearly => KeepReason::Yearly(period),
        }
    }
}

impl RetentionPolicy {
    /// Whether the policy keeps nothing at all (refused by validation: restic
    /// also refuses to forget with an empty policy).
    pub fn is_empty(&self) -> bool {
        self.keep_last == 0
            && self.keep_hourly == 0
            && self.keep_daily == 0
            && self.keep_weekly == 0
            && self.keep_monthly == 0
            && self.keep_yearly == 0
            && self.keep_within.is_none()
    }

    /// Applies the keep rules to `times`, which must be sorted newest first.
    /// Returns, for each input, why it is kept (empty: not kept).
    pub fn apply(&self, times: &[DateTime<Utc>]) -> Vec<Vec<KeepReason>> {
        debug_assert!(
            times.windows(2).all(|w| w[0] >= w[1]),
            "times must be newest first"
        );
        let mut reasons: Vec<Vec<KeepReason>> = vec![Vec::new(); times.len()];
        for (i, r) in reasons.iter_mut().enumerate().take(self.keep_last as usize) {
            r.push(KeepReason::Last(i as u32 + 1));
        }
        let buckets = [
            (Bucket::Hourly, self.keep_hourly),
            (Bucket::Daily, self.keep_daily),
            (Bucket::Weekly, self.keep_weekly),
            (Bucket::Monthly, self.keep_monthly),
            (Bucket::Yearly, self.keep_yearly),
        ];
        for (bucket, count) in buckets {
            let mut left = count;
            let mut last: Option<String> = None;
            for (i, t) in times.iter().enumerate() {
                if left == 0 {
                    break;
                }
                let period = bucket.period(*t);
                // Newest first: the first backup seen in a period is its newest.
                if last.as_deref() != Some(period.as_str()) {
                    last = Some(period.clone());
                    reasons[i].push(bucket.reason(period));
                    left -= 1;
                }
            }
        }
        if let (Some(within), Some(newest)) = (self.keep_within, times.first()) {
            let cutoff = *newest - within;
            for (i, t) in times.iter().enumerate() {
                if *t > cutoff {
                    reasons[i].push(KeepReason::Within(within));
                }
            }
        }
        reasons
    }

    /// How far back calendar rules reach at most: a lifecycle rule deleting
    /// younger objects fights this policy. `keep_last` is ignored (its reach
    /// depends on the backup cadence).
    pub fn horizon(&self) -> Option<TimeDelta> {
        [
            TimeDelta::hours(self.keep_hourly as i64),
            TimeDelta::days(self.keep_daily as i64),
            TimeDelta::days(7 * self.keep_weekly as i64),
            TimeDelta::days(31 * self.keep_monthly as i64),
            TimeDelta::days(366 * self.keep_yearly as i64),
            self.keep_within.unwrap_or_default(),
        ]
        .into_iter()
        .max()
        .filter(|d| *d > TimeDelta::zero())
    }
}

/// A namespace name or a glob where `*` matches any run of characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamespacePattern(String);

impl NamespacePattern {
    /// Validates a pattern: 1 to 63 characters from a-z, 0-9, `.`, `_`, `-` and
    /// `*`.
    pub fn new(s: &str) -> Result<Self, String> {
        let ok = !s.is_empty()
            && s.len() <= crate::naming::MAX_NAME_BYTES
            && s.chars().all(|c| {
                c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-' | '*')
            });
        if ok {
            Ok(Self(s.to_string()))
        } else {
            Err(format!(
                "{s:?} is not a namespace pattern: use a-z, 0-9, '.', '_', '-' and '*'"
            ))
        }
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether the pattern names exactly one namespace (no wildcard).
    pub fn is_literal(&self) -> bool {
        !self.0.contains('*')
    }

    /// Whether namespace `name` fits the pattern.
    pub fn matches(&self, name: &str) -> bool {
        crate::naming::pattern_matches(&self.0, name)
    }
}

impl fmt::Display for NamespacePattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One entry of the policy set: which namespaces, and what to do with them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamespaceRule {
    /// The namespaces the rule applies to (`match`).
    pub pattern: NamespacePattern,
    /// What to keep of each series (the `keep_*` fields).
    pub policy: RetentionPolicy,
    /// Never abandoned; missing or stale backups are critical.
    pub protected: bool,
    /// Expected in the replica bucket as well (parity is audited).
    pub replicated: bool,
    /// Remove the namespace entirely once its newest backup is older.
    pub abandon_after: Option<TimeDelta>,
    /// Audit: the newest verified backup must be younger than this.
    pub stale_after: Option<TimeDelta>,
    /// Audit: the last successful restore drill must be younger than this.
    pub drill_max_age: Option<TimeDelta>,
    /// Keep counts for the namespace's base backups (cluster series);
    /// `None`: the rule's own [`Self::policy`].
    pub base_backups: Option<RetentionPolicy>,
}

impl NamespaceRule {
    /// The keep counts for the series of `database` (a real database name,
    /// or a cluster's, [`crate::naming::cluster_database`]).
    pub fn policy_for(&self, database: &str) -> &RetentionPolicy {
        match (&self.base_backups, crate::naming::cluster_of(database)) {
            (Some(p), Some(_)) => p,
            _ => &self.policy,
        }
    }
}

/// Ordered rules plus global thresholds.
#[derive(Debug, Clone, PartialEq)]
pub struct PolicySet {
    /// Tried in order; the first match applies, no match means untouched.
    pub rules: Vec<NamespaceRule>,
    /// An incomplete backup younger than this may still be being written.
    pub incomplete_grace: TimeDelta,
    /// A backup younger than this may not have been replicated yet.
    pub replica_grace: TimeDelta,
    /// A verified backup smaller than this fraction of the previous one (in
    /// plaintext bytes or total rows) is suspect. 0 disables the check.
    pub shrink_alert_ratio: f64,
    /// A verified backup dated more than this after the clock is
    /// *future-dated*: reported, held, and never the newest. Not part of the
    /// policy JSON: set from [`MAX_CLOCK_SKEW_ENV`] (see
    /// [`PolicySet::with_clock_skew_setting`]), shared with restore.
    pub max_clock_skew: TimeDelta,
    /// Namespaces the policy marks as branch namespaces (`branch_namespaces`),
    /// besides those named by [`crate::naming::namespace_for_branch`] (`br-…`).
    /// Only a branch namespace is ever abandoned, and its staleness is a
    /// warning, not critical: quiet is what a finished branch does.
    pub branch_namespaces: Vec<NamespacePattern>,
    /// Audit: a cluster's newest archived WAL must be younger than this.
    pub wal_stale_after: TimeDelta,
    /// A WAL data object that no manifest commits (a push killed or
    /// retried) is deleted once older than this.
    pub wal_orphan_grace: TimeDelta,
}

impl Default for PolicySet {
    fn default() -> Self {
        Self {
            rules: vec![
                NamespaceRule {
                    pattern: NamespacePattern(PRODUCTION.into()),
                    policy: RetentionPolicy {
                        keep_daily: 7,
                        keep_weekly: 4,
                        keep_monthly: 12,
                        ..RetentionPolicy::default()
                    },
                    protected: true,
                    replicated: true,
                    abandon_after: None,
                    stale_after: Some(TimeDelta::hours(26)),
                    drill_max_age: Some(TimeDelta::days(14)),
                    base_backups: None,
                },
                NamespaceRule {
                    pattern: NamespacePattern("*".into()),
                    policy: RetentionPolicy {
                        keep_last: 2,
                        ..RetentionPolicy::default()
                    },
                    protected: false,
                    replicated: false,
                    abandon_after: Some(TimeDelta::days(14)),
                    stale_after: Some(TimeDelta::days(8)),
                    drill_max_age: None,
                    base_backups: None,
                },
            ],
            incomplete_grace: TimeDelta::hours(6),
            replica_grace: TimeDelta::hours(6),
            shrink_alert_ratio: 0.5,
            max_clock_skew: TimeDelta::seconds(DEFAULT_MAX_CLOCK_SKEW_SECS),
            branch_namespaces: Vec::new(),
            wal_stale_after: TimeDelta::hours(1),
            wal_orphan_grace: TimeDelta::days(1),
        }
    }
}

const TOP_FIELDS: &[&str] = &[
    "version",
    "incomplete_grace",
    "replica_grace",
    "shrink_alert_ratio",
    "branch_namespaces",
    "wal_stale_after",
    "wal_orphan_grace",
    "rules",
];
const RULE_FIELDS: &[&str] = &[
    "match",
    "protected",
    "replicated",
    "keep_last",
    "keep_hourly",
    "keep_daily",
    "keep_weekly",
    "keep_monthly",
    "keep_yearly",
    "keep_within",
    "abandon_after",
    "stale_after",
    "drill_max_age",
    "base_backups",
];

impl PolicySet {
    /// The first rule matching `namespace`, if any.
    pub fn rule_for(&self, namespace: &str) -> Option<&NamespaceRule> {
        self.rules.iter().find(|r| r.pattern.matches(namespace))
    }

    /// Whether `namespace` is a branch namespace: named as dump names
    /// branches (`br-…`), or matched by `branch_namespaces`. Only these are
    /// ever abandoned.
    pub fn is_branch(&self, namespace: &str) -> bool {
        namespace.starts_with(crate::naming::BRANCH_NAMESPACE_PREFIX)
            || self.branch_namespaces.iter().any(|p| p.matches(namespace))
    }

    /// The longest calendar horizon of any rule (see [`RetentionPolicy::horizon`]).
    pub fn max_horizon(&self) -> Option<TimeDelta> {
        self.rules
            .iter()
            .flat_map(|r| [Some(&r.policy), r.base_backups.as_ref()])
            .flatten()
            .filter_map(RetentionPolicy::horizon)
            .max()
    }

    /// The policy from the environment variable's value: unset or blank means
    /// the default.
    pub fn from_env_value(value: Option<&str>) -> Result<Self, PolicyError> {
        match value.map(str::trim).filter(|v| !v.is_empty()) {
            None => Ok(Self::default()),
            Some(json) => Self::from_json(json),
        }
    }

    /// Parses and validates policy JSON.
    pub fn from_json(json: &str) -> Result<Self, PolicyError> {
        let value: Value =
            serde_json::from_str(json).map_err(|e| PolicyError::Json(e.to_string()))?;
        Self::from_value(&value)
    }

    /// Parses and validates an already-decoded policy; unset fields take the
    /// defaults.
    pub fn from_value(value: &Value) -> Result<Self, PolicyError> {
        let obj = value
            .as_object()
            .ok_or_else(|| field_err("(top level)", "expected a JSON object"))?;
        check_fields(obj, "", TOP_FIELDS)?;
        let defaults = Self::default();
        if let Some(v) = obj.get("version")
            && v.as_u64() != Some(1)
        {
            return Err(field_err("version", "only version 1 is understood"));
        }
        let incomplete_grace =
            opt_duration(obj, "", "incomplete_grace")?.unwrap_or(defaults.incomplete_grace);
        let replica_grace =
            opt_duration(obj, "", "replica_grace")?.unwrap_or(defaults.replica_grace);
        let shrink_alert_ratio = match obj.get("shrink_alert_ratio") {
            None | Some(Value::Null) => defaults.shrink_alert_ratio,
            Some(v) => match v.as_f64() {
                Some(r) if (0.0..1.0).contains(&r) => r,
                _ => {
                    return Err(field_err(
                        "shrink_alert_ratio",
                        "expected a number from 0 (off) up to, not including, 1",
                    ));
                }
            },
        };
        let rules = match obj.get("rules") {
            None | Some(Value::Null) => defaults.rules,
            Some(Value::Array(items)) if !items.is_empty() => items
                .iter()
                .enumerate()
                .map(|(i, item)| parse_rule(item, &format!("rules[{i}]")))
                .collect::<Result<Vec<_>, _>>()?,
            Some(_) => return Err(field_err("rules", "expected a non-empty array of rules")),
        };
        let set = Self {
            rules,
            incomplete_grace,
            replica_grace,
            shrink_alert_ratio,
            max_clock_skew: defaults.max_clock_skew,
            branch_namespaces: pattern_list(obj, "branch_namespaces")?,
            wal_stale_after: opt_duration(obj, "", "wal_stale_after")?
                .unwrap_or(defaults.wal_stale_after),
            wal_orphan_grace: opt_duration(obj, "", "wal_orphan_grace")?
                .unwrap_or(defaults.wal_orphan_grace),
        };
        set.validate()?;
        Ok(set)
    }

    /// Sets [`Self::max_clock_skew`] from the value of [`MAX_CLOCK_SKEW_ENV`]:
    /// unset or blank keeps the default (10 minutes).
    pub fn with_clock_skew_setting(mut self, value: Option<&str>) -> Result<Self, PolicyError> {
        if let Some(text) = value.map(str::trim).filter(|v| !v.is_empty()) {
            self.max_clock_skew = parse_duration(text).map_err(|reason| PolicyError::Setting {
                name: MAX_CLOCK_SKEW_ENV,
                reason,
            })?;
        }
        Ok(self)
    }

    /// Cross-rule checks; single fields are checked while parsing.
    pub fn validate(&self) -> Result<(), PolicyError> {
        if let Some((i, p)) = self
            .branch_namespaces
            .iter()
            .enumerate()
            .find(|(_, p)| p.matches(PRODUCTION))
        {
            return Err(field_err(
                format!("branch_namespaces[{i}]"),
                format!(
                    "{:?} matches {PRODUCTION:?}, which is never a branch (branch namespaces may be abandoned); narrow the pattern",
                    p.as_str()
                ),
            ));
        }
        let mut seen = BTreeSet::new();
        for (i, rule) in self.rules.iter().enumerate() {
            let at = format!("rules[{i}]");
            if let Some(j) = self.rules[..i]
                .iter()
                .position(|r| r.pattern.as_str() == "*")
            {
                return Err(field_err(
                    format!("{at}.match"),
                    format!(
                        "unreachable: rules[{j}] (\"*\") already matches every namespace; put catch-all rules last"
                    ),
                ));
            }
            if !seen.insert(rule.pattern.as_str()) {
                return Err(field_err(
                    format!("{at}.match"),
                    format!("{:?} appears twice", rule.pattern.as_str()),
                ));
            }
            if rule.policy.is_empty() {
                return Err(field_err(
                    at,
                    "keeps nothing: set at least one keep_* count above 0 or keep_within",
                ));
            }
            if rule
                .base_backups
                .as_ref()
                .is_some_and(RetentionPolicy::is_empty)
            {
                return Err(field_err(
                    format!("{at}.base_backups"),
                    "keeps no base backup: set at least one keep_* count above 0 or keep_within",
                ));
            }
            if rule.protected && rule.abandon_after.is_some() {
                return Err(field_err(
                    format!("{at}.abandon_after"),
                    "a protected rule is never abandoned; remove abandon_after or protected",
                ));
            }
        }
        if let Some((i, rule)) = self
            .rules
            .iter()
            .enumerate()
            .find(|(_, r)| r.pattern.matches(PRODUCTION))
            && rule.abandon_after.is_some()
        {
            return Err(field_err(
                format!("rules[{i}].abandon_after"),
                format!(
                    "this rule ({:?}) is the one applied to {PRODUCTION:?}, which must never be abandoned; add a protected rule for {PRODUCTION:?} before it",
                    rule.pattern.as_str()
                ),
            ));
        }
        Ok(())
    }

    /// The effective policy in the JSON format it is read from.
    pub fn to_json(&self) -> Value {
        let rules: Vec<Value> = self
            .rules
            .iter()
            .map(|r| {
                let mut m = Map::new();
                m.insert("match".into(), r.pattern.as_str().into());
                m.insert("protected".into(), r.protected.into());
                m.insert("replicated".into(), r.replicated.into());
                keep_json(&r.policy, &mut m);
                if let Some(b) = &r.base_backups {
                    let mut bm = Map::new();
                    keep_json(b, &mut bm);
                    m.insert("base_backups".into(), Value::Object(bm));
                }
                for (k, v) in [
                    ("abandon_after", r.abandon_after),
                    ("stale_after", r.stale_after),
                    ("drill_max_age", r.drill_max_age),
                ] {
                    m.insert(k.into(), v.map(format_duration).into());
                }
                Value::Object(m)
            })
            .collect();
        serde_json::json!({
            "version": 1,
            "incomplete_grace": format_duration(self.incomplete_grace),
            "replica_grace": format_duration(self.replica_grace),
            "shrink_alert_ratio": self.shrink_alert_ratio,
            "branch_namespaces": self.branch_namespaces.iter().map(|p| p.as_str()).collect::<Vec<_>>(),
            "wal_stale_after": format_duration(self.wal_stale_after),
            "wal_orphan_grace": format_duration(self.wal_orphan_grace),
            "rules": rules,
        })
    }
}

/// Parses `26h`, `14d`, `1d12h`, `2w`, `30min`, `90s` (positive only).
pub fn parse_duration(s: &str) -> Result<TimeDelta, String> {
    let bad = |why: &str| {
        format!(
            "{s:?} is not a duration ({why}); write e.g. \"26h\", \"14d\", \"1d12h\", \"30min\""
        )
    };
    let mut rest = s.trim();
    if rest.is_empty() {
        return Err(bad("empty"));
    }
    let mut total = TimeDelta::zero();
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits == 0 {
            return Err(bad("expected a number"));
        }
        let n: i64 = rest[..digits]
            .parse()
            .map_err(|_| bad("number too large"))?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let secs = match unit {
            "w" => 7 * 86_400,
            "d" => 86_400,
            "h" => 3_600,
            "min" => 60,
            "s" => 1,
            "m" => {
                return Err(bad(
                    "`m` is ambiguous: use `min` for minutes, or days for months",
                ));
            }
            "" => return Err(bad("missing unit")),
            _ => return Err(bad("units are w, d, h, min, s")),
        };
        let part = n
            .checked_mul(secs)
            .and_then(TimeDelta::try_seconds)
            .ok_or_else(|| bad("too large"))?;
        total = total.checked_add(&part).ok_or_else(|| bad("too large"))?;
    }
    if total <= TimeDelta::zero() {
        return Err(bad("must be more than zero"));
    }
    Ok(total)
}

/// Formats a duration in the largest unit that divides it exactly, so that
/// [`parse_duration`] reads it back unchanged.
pub fn format_duration(d: TimeDelta) -> String {
    let secs = d.num_seconds();
    if secs != 0 && secs % 86_400 == 0 {
        format!("{}d", secs / 86_400)
    } else if secs != 0 && secs % 3_600 == 0 {
        format!("{}h", secs / 3_600)
    } else if secs != 0 && secs % 60 == 0 {
        format!("{}min", secs / 60)
    } else {
        format!("{secs}s")
    }
}

/// A readable age such as `3d 4h` (reports).
pub fn format_age(d: TimeDelta) -> String {
    let secs = d.num_seconds();
    if secs < 0 {
        return format!("in the future by {}", format_age(-d));
    }
    let (days, hours, mins) = (secs / 86_400, (secs % 86_400) / 3_600, (secs % 3_600) / 60);
    match (days, hours) {
        (0, 0) => format!("{mins}min"),
        (0, h) => format!("{h}h {mins}min"),
        (d, h) => format!("{d}d {h}h"),
    }
}

crate::error::permanent!(PolicyError);

impl crate::error::Failure for PolicyError {
    fn failure_kind(&self) -> crate::error::FailureKind {
        crate::error::FailureKind::Config
    }
}

#[path = "policy_json.rs"]
mod json;
use json::{check_fields, keep_json, opt_duration, parse_rule, pattern_list};

#[cfg(test)]
#[path = "policy_tests.rs"]
mod tests;
