//! `backstop status`: a health check for cron, CI and monitoring. Runs the
//! retention audit as a dry run (the retention function's configuration and
//! code: `backstop_functions::retention`), summarizes it
//! (`backstop_core::retention::summarize`) and exits with the verdict's
//! code (`crate::exit`): text, JSON, a Nagios plugin line, or OpenMetrics
//! text for node_exporter's textfile collector.

use std::fmt::Write as _;

use backstop_core::config::Env;
use backstop_core::error::Classify;
use backstop_core::retention::{Condition, Health, Report, Severity, format_age, summarize};
use backstop_core::store::ObjectStore;
use backstop_functions::retention::RetentionFunction;
use chrono::TimeDelta;

use crate::exit::{Code, Exit, Unhealthy, classify};

/// The version of the JSON document (`--format json`); a later release
/// adds fields, never renames or removes one, and raises it when it must.
const SCHEMA: &str = "backstop.status/v1";

/// Audits both clouds without deleting anything (the retention function's
/// settings: BACKSTOP_GCS_BUCKET, BACKSTOP_S3_BUCKET, BACKSTOP_SIGNING_PUBLIC_KEY,
/// BACKSTOP_RECIPIENTS, BACKSTOP_RETENTION_POLICY, ...) and exits with the
/// verdict: 0 healthy, 3 warning, 4 critical, 6 a cloud unreachable, 8 a
/// namespace's latest drill failed (the highest that applies wins, in the
/// order unreachable, critical, drill, warning).
#[derive(clap::Args, Debug)]
#[command(after_help = crate::exit::EXIT_CODES_HELP)]
pub struct StatusArgs {
    /// text: readable summary and findings; json: the summary and every
    /// finding (schema backstop.status/v1; also --json); nagios: one line
    /// with perfdata, Nagios plugin statuses; openmetrics: gauges for
    /// node_exporter's textfile collector.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Text,
    Json,
    Nagios,
    Openmetrics,
}

impl StatusArgs {
    /// The format, with the global `--json` meaning `--format json`.
    pub fn format(&self, json: bool) -> Format {
        if json && self.format == Format::Text {
            Format::Json
        } else {
            self.format
        }
    }
}

pub async fn run(args: StatusArgs, json: bool) -> anyhow::Result<()> {
    let format = args.format(json);
    let (health, report) = match check().await {
        Ok(checked) => checked,
        Err(e) => return Err(failed(format, e)),
    };
    let code = Code::of_condition(health.condition);
    match format {
        Format::Text => print!("{}", text(&health, &report, code)),
        Format::Json => println!(
            "{}",
            serde_json::to_string_pretty(&document(&health, &report, code))?
        ),
        Format::Nagios => println!("{}", nagios(&health, code)),
        Format::Openmetrics => print!("{}", openmetrics(Some((&health, &report)), code)),
    }
    if health.condition == Condition::Healthy {
        return Ok(());
    }
    let unhealthy = Unhealthy {
        condition: health.condition,
        message: verdict(&health, code),
    };
    Err(match format {
        Format::Nagios => Exit::quiet(code.nagios(), unhealthy).into(),
        Format::Openmetrics => Exit::quiet(code.status(), unhealthy).into(),
        Format::Text | Format::Json => unhealthy.into(),
    })
}

/// A check that could not run: Nagios wants its one line on stdout and
/// UNKNOWN (or CRITICAL) as status; the textfile collector gets the code.
fn failed(format: Format, e: anyhow::Error) -> anyhow::Error {
    let (code, _) = classify(&e);
    match format {
        Format::Nagios => {
            let message = format!("{e:#}").replace(['\n', '|'], " ");
            println!("BACKSTOP {} - {message}", nagios_label(code.nagios()));
            Exit::quiet(code.nagios(), e).into()
        }
        Format::Openmetrics => {
            print!("{}", openmetrics(None, code));
            e
        }
        Format::Text | Format::Json => e,
    }
}

/// The dry-run audit, and which clouds did not answer.
async fn check() -> anyhow::Result<(Health, Report)> {
    let function = RetentionFunction::from_env(&Env::from_process()).await?;
    let request = backstop_core::events::ScheduleRequest {
        dry_run: Some(true),
    };
    let result = function.run(&request).await;
    let unreachable = unreachable(&function, &result.report).await;
    let health = summarize(&result.report, &result.drills, &unreachable);
    Ok((health, result.report))
}

/// The clouds whose listing failed and that fail a first-page listing
/// now with a transient error: an unreachable cloud, not a bad bucket
/// (the audit reports both as `listing_failed`, with the message only).
async fn unreachable(function: &RetentionFunction, report: &Report) -> Vec<String> {
    let mut down = Vec::new();
    for cloud in report.clouds.iter().filter(|c| c.listing_error.is_some()) {
        let store: Option<&dyn ObjectStore> = match cloud.cloud.as_str() {
            "gcs" => Some(function.primary.as_ref()),
            "s3" => function.replica.as_deref(),
            _ => None,
        };
        if let Some(store) = store
            && let Err(e) = store.list_page("", None).await
            && e.is_transient()
        {
            down.push(cloud.cloud.clone());
        }
    }
    down
}

fn age(seconds: i64) -> String {
    format_age(TimeDelta::seconds(seconds))
}

/// One line: the verdict and what decided it.
fn verdict(h: &Health, code: Code) -> String {
    let mut line = format!(
        "status {}: {} critical, {} warning, {} info finding(s)",
        code.name(),
        h.findings.critical,
        h.findings.warning,
        h.findings.info
    );
    if !h.unreachable.is_empty() {
        let _ = write!(line, "; unreachable: {}", h.unreachable.join(", "));
    }
    if let Some(w) = h
        .worst_namespace
        .as_ref()
        .filter(|w| w.severity > Severity::Info)
    {
        let _ = write!(
            line,
            "; worst namespace {} ({})",
            w.namespace,
            w.codes.join(", ")
        );
    }
    line
}

fn text(h: &Health, report: &Report, code: Code) -> String {
    let mut out = format!(
        "backstop status: {} (exit {})\n",
        code.name().to_uppercase(),
        code.status()
    );
    let _ = writeln!(out, "{}", verdict(h, code));
    match &h.newest_backup {
        Some(n) => {
            let cloud = n.cloud.as_deref().unwrap_or("?");
            let _ = writeln!(
                out,
                "newest backup: {} in {cloud}, {} ago",
                n.backup_id,
                age(n.age_seconds)
            );
        }
        None => out.push_str("newest backup: none verified\n"),
    }
    match &h.newest_drill {
        Some(n) => {
            let _ = writeln!(
                out,
                "newest successful drill: {}, {} ago",
                n.backup_id,
                age(n.age_seconds)
            );
        }
        None => out.push_str("newest successful drill: none recorded\n"),
    }
    if !h.by_code.is_empty() {
        out.push_str("by code:\n");
        for c in &h.by_code {
            let _ = writeln!(
                out,
                "  {:<8} {} x{}",
                c.severity.to_string(),
                c.code,
                c.count
            );
        }
    }
    out.push('\n');
    let _ = write!(out, "{report}");
    out
}

fn document(h: &Health, report: &Report, code: Code) -> serde_json::Value {
    let mut doc = serde_json::json!({
        "schema": SCHEMA,
        "status": code.name(),
        "exit_code": code.status(),
    });
    if let (Some(doc), Ok(serde_json::Value::Object(health))) =
        (doc.as_object_mut(), serde_json::to_value(h))
    {
        doc.extend(health);
        doc.insert("audit".into(), serde_json::json!(report));
    }
    doc
}

fn nagios_label(status: u8) -> &'static str {
    match status {
        0 => "OK",
        1 => "WARNING",
        2 => "CRITICAL",
        _ => "UNKNOWN",
    }
}

/// `BACKSTOP <STATE> - <summary> | <perfdata>`: ages in seconds (`U` when
/// there is none), counts with min 0.
fn nagios(h: &Health, code: Code) -> String {
    let mut summary = verdict(h, code);
    if let Some(n) = &h.newest_backup {
        let _ = write!(summary, "; newest backup {} ago", age(n.age_seconds));
    }
    if let Some(n) = &h.newest_drill {
        let _ = write!(summary, "; newest drill {} ago", age(n.age_seconds));
    }
    let seconds = |n: Option<i64>| n.map_or("U".to_string(), |s| format!("{s}s"));
    format!(
        "BACKSTOP {} - {} | critical={};;;0 warning={};;;0 info={};;;0 newest_backup_age_s={};;;0 newest_drill_age_s={};;;0",
        nagios_label(code.nagios()),
        summary.replace('|', "/"),
        h.findings.critical,
        h.findings.warning,
        h.findings.info,
        seconds(h.newest_backup.as_ref().map(|n| n.age_seconds)),
        seconds(h.newest_drill.as_ref().map(|n| n.age_seconds)),
    )
}

/// A label value as OpenMetrics (and the Prometheus text format) escape it.
fn label(value: &str) -> String {
    value
        .replace('\\', r"\\")
        .replace('"', "\\\"")
        .replace('\n', r"\n")
}

/// One gauge family: its HELP and TYPE lines and samples (`labels`,
/// value); nothing when it has no samples.
fn gauge(out: &mut String, name: &str, help: &str, samples: &[(String, String)]) {
    if samples.is_empty() {
        return;
    }
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} gauge");
    for (labels, value) in samples {
        if labels.is_empty() {
            let _ = writeln!(out, "{name} {value}");
        } else {
            let _ = writeln!(out, "{name}{{{labels}}} {value}");
        }
    }
}

/// OpenMetrics text (also valid Prometheus text: `# EOF` is a comment
/// there). `health` is `None` when the check could not run: then only the
/// exit code.
fn openmetrics(checked: Option<(&Health, &Report)>, code: Code) -> String {
    let mut out = String::new();
    let one = |v: String| vec![(String::new(), v)];
    gauge(
        &mut out,
        "backstop_status_exit_code",
        "Exit status of backstop status (0 healthy; the table is in backstop --help).",
        &one(code.status().to_string()),
    );
    if let Some((h, report)) = checked {
        health_gauges(&mut out, h, report);
    }
    out.push_str("# EOF\n");
    out
}

fn health_gauges(out: &mut String, h: &Health, report: &Report) {
    gauge(
        out,
        "backstop_status_generated_timestamp_seconds",
        "When the audit ran (Unix time).",
        &[(String::new(), h.generated_at.timestamp().to_string())],
    );
    let severities = [
        ("critical", h.findings.critical),
        ("warning", h.findings.warning),
        ("info", h.findings.info),
    ];
    let by_severity: Vec<_> = severities
        .iter()
        .map(|(s, n)| (format!("severity=\"{s}\""), n.to_string()))
        .collect();
    gauge(
        out,
        "backstop_findings",
        "Audit findings by severity.",
        &by_severity,
    );
    let by_code: Vec<_> = h
        .by_code
        .iter()
        .map(|c| {
            let severity = c.severity.to_string().to_lowercase();
            (
                format!("code=\"{}\",severity=\"{severity}\"", label(&c.code)),
                c.count.to_string(),
            )
        })
        .collect();
    gauge(
        out,
        "backstop_findings_by_code",
        "Audit findings by code.",
        &by_code,
    );
    age_gauges(out, h, report);
}

/// The ages of the newest backup and drill, per series, and which clouds
/// answered.
fn age_gauges(out: &mut String, h: &Health, report: &Report) {
    let newest = |n: Option<&backstop_core::retention::Newest>| {
        n.map(|n| (String::new(), n.age_seconds.to_string()))
            .into_iter()
            .collect::<Vec<_>>()
    };
    gauge(
        out,
        "backstop_newest_backup_age_seconds",
        "Age of the newest verified backup in any cloud.",
        &newest(h.newest_backup.as_ref()),
    );
    gauge(
        out,
        "backstop_newest_drill_age_seconds",
        "Age of the newest successful restore drill.",
        &newest(h.newest_drill.as_ref()),
    );
    let series: Vec<_> = h
        .series
        .iter()
        .filter_map(|s| {
            let age = s.newest_verified_age_seconds?;
            let labels = format!(
                "cloud=\"{}\",namespace=\"{}\",database=\"{}\"",
                label(&s.cloud),
                label(&s.namespace),
                label(&s.database)
            );
            Some((labels, age.to_string()))
        })
        .collect();
    gauge(
        out,
        "backstop_series_newest_backup_age_seconds",
        "Age of each series' newest verified backup, per cloud.",
        &series,
    );
    let reachable: Vec<_> = report
        .clouds
        .iter()
        .map(|c| {
            let up = !h.unreachable.contains(&c.cloud);
            (
                format!("cloud=\"{}\"", label(&c.cloud)),
                u8::from(up).to_string(),
            )
        })
        .collect();
    gauge(
        out,
        "backstop_cloud_reachable",
        "Whether the cloud answered.",
        &reachable,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }

    #[test]
    fn a_failed_check_still_ends_the_metrics() {
        let text = openmetrics(None, Code::Config);
        assert_eq!(
            text,
            "# HELP backstop_status_exit_code Exit status of backstop status (0 healthy; the table is in backstop --help).\n# TYPE backstop_status_exit_code gauge\nbackstop_status_exit_code 5\n# EOF\n"
        );
    }
}
