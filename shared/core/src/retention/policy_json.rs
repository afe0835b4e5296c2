//! Reading the policy JSON's fields: each error names the field at fault.

use chrono::TimeDelta;
use serde_json::{Map, Value};

use super::{
    NamespacePattern, NamespaceRule, PolicyError, RULE_FIELDS, RetentionPolicy, field_err,
    format_duration, parse_duration,
};

pub(super) fn check_fields(
    obj: &Map<String, Value>,
    at: &str,
    known: &[&str],
) -> Result<(), PolicyError> {
    for key in obj.keys() {
        if !known.contains(&key.as_str()) {
            return Err(field_err(
                format!("{at}{}{key}", if at.is_empty() { "" } else { "." }),
                format!("unknown field; expected one of: {}", known.join(", ")),
            ));
        }
    }
    Ok(())
}

fn path(at: &str, key: &str) -> String {
    if at.is_empty() {
        key.to_string()
    } else {
        format!("{at}.{key}")
    }
}

pub(super) fn opt_duration(
    obj: &Map<String, Value>,
    at: &str,
    key: &str,
) -> Result<Option<TimeDelta>, PolicyError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => parse_duration(s)
            .map(Some)
            .map_err(|e| field_err(path(at, key), e)),
        Some(_) => Err(field_err(
            path(at, key),
            "expected a duration string such as \"26h\" or \"14d\"",
        )),
    }
}

pub(super) fn pattern_list(
    obj: &Map<String, Value>,
    key: &str,
) -> Result<Vec<NamespacePattern>, PolicyError> {
    let items = match obj.get(key) {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(items)) => items,
        Some(_) => return Err(field_err(key, "expected an array of namespace patterns")),
    };
    items
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let at = format!("{key}[{i}]");
            v.as_str()
                .ok_or_else(|| field_err(&at, "expected a namespace name or glob string"))
                .and_then(|s| NamespacePattern::new(s).map_err(|e| field_err(&at, e)))
        })
        .collect()
}

pub(super) fn opt_count(obj: &Map<String, Value>, at: &str, key: &str) -> Result<u32, PolicyError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(0),
        Some(v) => v
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .ok_or_else(|| {
                field_err(
                    path(at, key),
                    "expected a whole number of backups (0 or more)",
                )
            }),
    }
}

pub(super) fn opt_bool(obj: &Map<String, Value>, at: &str, key: &str) -> Result<bool, PolicyError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(_) => Err(field_err(path(at, key), "expected true or false")),
    }
}

pub(super) fn parse_rule(v: &Value, at: &str) -> Result<NamespaceRule, PolicyError> {
    let obj = v
        .as_object()
        .ok_or_else(|| field_err(at, "expected a JSON object"))?;
    check_fields(obj, at, RULE_FIELDS)?;
    let pattern = match obj.get("match") {
        Some(Value::String(s)) => {
            NamespacePattern::new(s).map_err(|e| field_err(path(at, "match"), e))?
        }
        Some(_) => {
            return Err(field_err(
                path(at, "match"),
                "expected a namespace name or glob string",
            ));
        }
        None => {
            return Err(field_err(
                path(at, "match"),
                "missing: which namespaces does this rule apply to?",
            ));
        }
    };
    let base_backups = match obj.get("base_backups") {
        None | Some(Value::Null) => None,
        Some(Value::Object(b)) => {
            let at = path(at, "base_backups");
            check_fields(b, &at, KEEP_FIELDS)?;
            Some(keep_counts(b, &at)?)
        }
        Some(_) => {
            return Err(field_err(
                path(at, "base_backups"),
                "expected an object of keep_* fields, e.g. {\"keep_last\": 2}",
            ));
        }
    };
    Ok(NamespaceRule {
        pattern,
        policy: keep_counts(obj, at)?,
        protected: opt_bool(obj, at, "protected")?,
        replicated: opt_bool(obj, at, "replicated")?,
        abandon_after: opt_duration(obj, at, "abandon_after")?,
        stale_after: opt_duration(obj, at, "stale_after")?,
        drill_max_age: opt_duration(obj, at, "drill_max_age")?,
        base_backups,
    })
}

/// The fields of a `base_backups` object.
const KEEP_FIELDS: &[&str] = &[
    "keep_last",
    "keep_hourly",
    "keep_daily",
    "keep_weekly",
    "keep_monthly",
    "keep_yearly",
    "keep_within",
];

fn keep_counts(obj: &Map<String, Value>, at: &str) -> Result<RetentionPolicy, PolicyError> {
    Ok(RetentionPolicy {
        keep_last: opt_count(obj, at, "keep_last")?,
        keep_hourly: opt_count(obj, at, "keep_hourly")?,
        keep_daily: opt_count(obj, at, "keep_daily")?,
        keep_weekly: opt_count(obj, at, "keep_weekly")?,
        keep_monthly: opt_count(obj, at, "keep_monthly")?,
        keep_yearly: opt_count(obj, at, "keep_yearly")?,
        keep_within: opt_duration(obj, at, "keep_within")?,
    })
}

/// The keep counts of `p` as policy JSON fields (counts above 0, and
/// `keep_within` when set).
pub(super) fn keep_json(p: &RetentionPolicy, m: &mut Map<String, Value>) {
    for (k, v) in [
        ("keep_last", p.keep_last),
        ("keep_hourly", p.keep_hourly),
        ("keep_daily", p.keep_daily),
        ("keep_weekly", p.keep_weekly),
        ("keep_monthly", p.keep_monthly),
        ("keep_yearly", p.keep_yearly),
    ] {
        if v > 0 {
            m.insert(k.into(), v.into());
        }
    }
    m.insert(
        "keep_within".into(),
        p.keep_within.map(format_duration).into(),
    );
}
