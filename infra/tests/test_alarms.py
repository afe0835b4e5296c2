"""The alarms that page someone: CloudWatch alarms on the functions' EMF
metrics (infra/aws/alarms.tf) and the alert policies on the dump job's logs
(infra/gcp/alerts.tf). The real files satisfy every check here; each check
fails on a broken fixture (fixtures_alarms/) and on a broken copy of the
real file.

The checks read the names they expect from the code itself: the metric
names and dimension sets from shared/functions/src/metrics.rs, the finding
codes from the audit, the log events from the dump and base backup jobs, so
an alarm on a metric or event that nothing emits fails here, not silently
in production."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from tfconfig import Config, blocks, first, is_expression, load_dir

INFRA = Path(__file__).resolve().parent.parent
REPO = INFRA.parent
FIXTURES = Path(__file__).resolve().parent / "fixtures_alarms"

Violations = list[str]

# 26 h: the longest a namespace may go without a backup.
MAX_GAP_SECONDS = 26 * 3600


# --------------------------------------------------------------------------
# what the code emits
# --------------------------------------------------------------------------


def emitted_metrics() -> tuple[set[str], set[frozenset[str]]]:
    """Metric names (the `names` module) and dimension sets of metrics.rs."""
    text = (REPO / "shared/functions/src/metrics.rs").read_text()
    names_mod = re.search(r"pub mod names \{(.*?)\n\}", text, re.S)
    assert names_mod, "metrics.rs has no `pub mod names`"
    names = set(re.findall(r'pub const \w+: &str = "(\w+)";', names_mod.group(1)))
    sets = {frozenset(re.findall(r'"(\w+)"', s)) for s in re.findall(r"dimension_set\(&\[([^\]]*)\]\)", text)}
    return names, sets


def finding_codes() -> set[str]:
    """Every string literal that looks like a finding code in the audit."""
    codes = set()
    for path in (REPO / "shared/core/src/retention").rglob("*.rs"):
        codes |= set(re.findall(r'"([a-z]+(?:_[a-z]+)+)"', path.read_text()))
    return codes


def logged_events() -> set[str]:
    """The `event = "..."` fields the PostgreSQL jobs log."""
    events = set()
    for path in (REPO / "shared/postgres/src").rglob("*.rs"):
        events |= set(re.findall(r'event = "(\w+)"', path.read_text()))
    return events


# --------------------------------------------------------------------------
# reading values out of parsed HCL
# --------------------------------------------------------------------------

_ARITHMETIC = re.compile(r"\$\{([\d\s*+\-]+)\}")
_REF = re.compile(r"\$\{(local|var)\.([A-Za-z0-9_]+)\}")
_PURE = re.compile(r"\$\{[^${}]*\}")


def number(cfg: Config, value) -> float | None:
    """A literal number, `${local.X}` / `${var.X}` (default) resolved, or
    simple arithmetic (`26 * 3600`); None when it cannot be known."""
    for _ in range(5):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if not isinstance(value, str):
            return None
        if m := _REF.fullmatch(value):
            kind, name = m.groups()
            value = cfg.locals.get(name) if kind == "local" else cfg.variables.get(name, {}).get("default")
            continue
        if m := _ARITHMETIC.fullmatch(value):
            return float(eval(m.group(1), {"__builtins__": {}}))  # digits and + - * only
        try:
            return float(value)
        except ValueError:
            return None
    return None


def text(cfg: Config, value) -> str:
    """A string with `${local.X}` replaced by the text of string locals
    (templates too), except `local.role_prefix` (the PromQL-safe prefix)."""
    value = value if isinstance(value, str) else str(value)
    for _ in range(5):
        def repl(m: re.Match) -> str:
            local = cfg.locals.get(m.group(1))
            if m.group(1) == "role_prefix" or not isinstance(local, str) or _PURE.fullmatch(local):
                return m.group(0)
            return local

        new = re.sub(r"\$\{local\.([A-Za-z0-9_]+)\}", repl, value)
        if new == value:
            break
        value = new
    return value


def for_each_values(cfg: Config, body: dict) -> list[str] | None:
    """The literal strings a `for_each = toset([...])` (directly or through
    a local) iterates over; None when not literal."""
    value = body.get("for_each")
    for _ in range(3):
        if isinstance(value, str) and (m := _REF.fullmatch(value)) and m.group(1) == "local":
            value = cfg.locals.get(m.group(2))
            continue
        break
    if isinstance(value, str) and (m := re.fullmatch(r"\$\{toset\(\[(.*)\]\)\}", value, re.S)):
        return re.findall(r'"([^"]*)"', m.group(1))
    return None


def dimension_values(cfg: Config, body: dict, key: str) -> list[str]:
    """The values of dimension `key` of an alarm (each.value expanded)."""
    value = (body.get("dimensions") or {}).get(key)
    if value == "${each.value}":
        return for_each_values(cfg, body) or []
    return [value] if isinstance(value, str) and not is_expression(value) else []


def alarms(cfg: Config):
    yield from cfg.of_type("aws_cloudwatch_metric_alarm")


def refers_to(cfg: Config, value, variable: str) -> bool:
    """Whether `value` uses `var.<variable>`, directly or through a local."""
    if not isinstance(value, str):
        return False
    if f"var.{variable}" in value:
        return True
    return any(refers_to(cfg, cfg.locals.get(name), variable) for name in re.findall(r"local\.(\w+)", value))


# --------------------------------------------------------------------------
# AWS: CloudWatch alarms
# --------------------------------------------------------------------------


def aws_alarms_notify_the_topic(cfg: Config) -> Violations:
    """Every alarm notifies the SNS topic variable: an alarm nobody hears is
    no alarm."""
    out = []
    for name, body in alarms(cfg):
        if not refers_to(cfg, body.get("alarm_actions"), "alarm_sns_topic_arn"):
            out.append(f"aws_cloudwatch_metric_alarm.{name}: alarm_actions do not notify var.alarm_sns_topic_arn")
    return out


def aws_alarms_watch_emitted_metrics(cfg: Config) -> Violations:
    """Every alarm watches a metric the functions emit (namespace Backstop,
    a name of metrics.rs, one of its dimension sets), and a `Code`
    dimension names a finding code of the audit."""
    names, sets = emitted_metrics()
    codes = finding_codes()
    out = []
    for name, body in alarms(cfg):
        where = f"aws_cloudwatch_metric_alarm.{name}"
        if body.get("namespace") != "Backstop":
            out.append(f"{where}: namespace {body.get('namespace')!r} is not Backstop")
        if body.get("metric_name") not in names:
            out.append(f"{where}: metric {body.get('metric_name')!r} is not emitted by shared/functions/src/metrics.rs")
        keys = frozenset((body.get("dimensions") or {}).keys())
        if keys not in sets:
            out.append(f"{where}: dimensions {sorted(keys)} are not a dimension set the functions publish")
        for code in dimension_values(cfg, body, "Code"):
            if code not in codes:
                out.append(f"{where}: finding code {code!r} is not one the audit reports")
        if "Code" in keys and not dimension_values(cfg, body, "Code"):
            out.append(f"{where}: the Code dimension is not a literal finding code")
    return out


def aws_missing_data_matches_the_alarm(cfg: Config) -> Violations:
    """The functions publish only what they count: an alarm on something
    that must keep happening (LessThan...) treats missing data as breaching,
    an alarm on an event (GreaterThan...) as not breaching."""
    out = []
    for name, body in alarms(cfg):
        op, missing = str(body.get("comparison_operator", "")), body.get("treat_missing_data", "missing")
        want = "breaching" if op.startswith("LessThan") else "notBreaching"
        if missing != want:
            out.append(f"aws_cloudwatch_metric_alarm.{name}: {op} with treat_missing_data = {missing!r}, not {want!r}")
    return out


def _window(cfg: Config, body: dict) -> float | None:
    period, periods = number(cfg, body.get("period")), number(cfg, body.get("evaluation_periods"))
    return None if period is None or periods is None else period * periods


def aws_alarms_page_on_the_three_failures(cfg: Config) -> Violations:
    """No backup for 26 h (no BackupsReplicated in a window of at most 26 h,
    every period empty; and the audit's newest backup age above at most
    26 h), any rejection, and a failed drill of either kind."""
    out = []
    by_metric: dict[str, list[tuple[str, dict]]] = {}
    for name, body in alarms(cfg):
        by_metric.setdefault(body.get("metric_name"), []).append((name, body))

    def absence(body):
        window = _window(cfg, body)
        return (body.get("comparison_operator") == "LessThanThreshold" and number(cfg, body.get("threshold")) == 1
                and body.get("statistic") == "Sum" and window is not None and window <= MAX_GAP_SECONDS
                and number(cfg, body.get("datapoints_to_alarm")) == number(cfg, body.get("evaluation_periods")))

    if not any(absence(b) for _, b in by_metric.get("BackupsReplicated", [])):
        out.append("no alarm pages when no BackupsReplicated was published for 26 h (Sum < 1 in every period of a "
                   "window of at most 26 h)")

    def too_old(body):
        threshold = number(cfg, body.get("threshold"))
        return (body.get("comparison_operator") == "GreaterThanThreshold" and threshold is not None
                and threshold <= MAX_GAP_SECONDS and body.get("statistic") == "Maximum")

    if not any(too_old(b) for _, b in by_metric.get("NewestBackupAgeSeconds", [])):
        out.append("no alarm pages when NewestBackupAgeSeconds (Maximum) exceeds at most 26 h")

    def any_rejection(body):
        op, threshold = body.get("comparison_operator"), number(cfg, body.get("threshold"))
        window = _window(cfg, body)
        return (threshold is not None and window is not None and window <= 3600
                and ((op == "GreaterThanOrEqualToThreshold" and threshold <= 1)
                     or (op == "GreaterThanThreshold" and threshold < 1)))

    if not any(any_rejection(b) for _, b in by_metric.get("Rejections", [])):
        out.append("no alarm pages on a single Rejection within an hour")

    paged_codes = set()
    for _, body in by_metric.get("Findings", []):
        op, threshold = body.get("comparison_operator"), number(cfg, body.get("threshold"))
        if op == "GreaterThanOrEqualToThreshold" and threshold is not None and threshold <= 1:
            paged_codes |= set(dimension_values(cfg, body, "Code"))
    for code in ("restore_drill_failed", "pitr_drill_failed"):
        if code not in paged_codes:
            out.append(f"no alarm pages on a {code} finding")
    return out


# --------------------------------------------------------------------------
# GCP: log-based metrics and alert policies on the dump job's logs
# --------------------------------------------------------------------------

FAILURE_EVENTS = ("dump_failed", "base_backup_failed")
COMPLETE_EVENT = "dump_complete"


def _filter_events(cfg: Config, body: dict) -> set[str]:
    return set(re.findall(r'jsonPayload\.event\s*=\s*"(\w+)"', text(cfg, body.get("filter", ""))))


def _metrics_for(cfg: Config, events: set[str]) -> list[str]:
    """Log-based metrics whose filter is exactly these events."""
    return [n for n, b in cfg.of_type("google_logging_metric") if _filter_events(cfg, b) == events]


def _conditions(body: dict, kind: str) -> list[dict]:
    return [c for cond in blocks(body, "conditions") for c in blocks(cond, kind)]


def gcp_dump_failures_page(cfg: Config) -> Violations:
    """A log-based metric counts exactly the failure events the jobs log,
    and an alert policy fires on its first count."""
    out = []
    missing = [e for e in FAILURE_EVENTS if e not in logged_events()]
    if missing:
        out.append(f"the jobs no longer log {missing}: update the alerts and this check")
    metrics = _metrics_for(cfg, set(FAILURE_EVENTS))
    if not metrics:
        out.append(f"no google_logging_metric counts exactly the events {list(FAILURE_EVENTS)}")
    paged = False
    for _, body in cfg.of_type("google_monitoring_alert_policy"):
        for cond in _conditions(body, "condition_threshold"):
            flt = text(cfg, cond.get("filter", ""))
            names = re.findall(r"logging\.googleapis\.com/user/\$\{google_logging_metric\.(\w+)\.name\}", flt)
            first_count = (cond.get("comparison") == "COMPARISON_GT" and number(cfg, cond.get("threshold_value")) == 0)
            aggregation = first(cond, "aggregations") or {}
            summed = aggregation.get("per_series_aligner") in ("ALIGN_SUM", "ALIGN_COUNT", "ALIGN_DELTA")
            if set(names) & set(metrics) and first_count and summed:
                paged = True
    if metrics and not paged:
        out.append(f"no alert policy fires on the first count of {metrics} (COMPARISON_GT 0 over a sum)")
    return out


def gcp_missing_dumps_page(cfg: Config) -> Violations:
    """A log-based metric counts dump_complete, with a PromQL-safe name,
    and an alert policy fires when a namespace has none for at most 26 h."""
    out = []
    if COMPLETE_EVENT not in logged_events():
        out.append(f"the dump job no longer logs {COMPLETE_EVENT!r}: update the alerts and this check")
    metrics = _metrics_for(cfg, {COMPLETE_EVENT})
    if not metrics:
        out.append(f"no google_logging_metric counts exactly the event {COMPLETE_EVENT!r}")
    for name in metrics:
        metric_name = text(cfg, cfg.resources[("google_logging_metric", name)].get("name", ""))
        role_prefix_safe = 'replace(var.name_prefix, "-", "_")' in str(cfg.locals.get("role_prefix"))
        bare = metric_name.replace("${local.role_prefix}", "x" if role_prefix_safe else "-")
        if not re.fullmatch(r"[A-Za-z0-9_]+", bare):
            out.append(f"google_logging_metric.{name}: name {metric_name!r} is not PromQL-safe (letters, digits, _)")
    paged = False
    for _, body in cfg.of_type("google_monitoring_alert_policy"):
        for cond in _conditions(body, "condition_prometheus_query_language"):
            query = text(cfg, cond.get("query", ""))
            uses = re.findall(r"logging_googleapis_com:user_\$\{google_logging_metric\.(\w+)\.name\}", query)
            ranges = [_seconds(r) for r in re.findall(r"absent_over_time\([^\[]*\[(\w+)\]\)", query)]
            if set(uses) & set(metrics) and ranges and all(r is not None and r <= MAX_GAP_SECONDS for r in ranges):
                paged = True
    if metrics and not paged:
        out.append(f"no alert policy fires when {metrics} is absent for at most 26 h (absent_over_time)")
    return out


def _seconds(duration: str) -> float | None:
    m = re.fullmatch(r"(\d+)([smhd])", duration)
    return None if not m else int(m.group(1)) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]


def gcp_alert_policies_notify(cfg: Config) -> Violations:
    """Every alert policy notifies the channels variable, says what to do,
    and carries the app label."""
    out = []
    for name, body in cfg.of_type("google_monitoring_alert_policy"):
        where = f"google_monitoring_alert_policy.{name}"
        if not refers_to(cfg, body.get("notification_channels"), "alert_notification_channels"):
            out.append(f"{where}: notification_channels do not use var.alert_notification_channels")
        doc = first(body, "documentation") or {}
        if not str(doc.get("content", "")).strip():
            out.append(f"{where}: no documentation saying what to do")
        if (body.get("user_labels") or {}).get("app") != "backstop":
            out.append(f"{where}: no user label app = \"backstop\"")
    return out


AWS_CHECKS = {f.__name__: f for f in (aws_alarms_notify_the_topic, aws_alarms_watch_emitted_metrics,
                                      aws_missing_data_matches_the_alarm, aws_alarms_page_on_the_three_failures)}
GCP_CHECKS = {f.__name__: f for f in (gcp_dump_failures_page, gcp_missing_dumps_page, gcp_alert_policies_notify)}
CHECKS = {**{k: ("aws", f) for k, f in AWS_CHECKS.items()}, **{k: ("gcp", f) for k, f in GCP_CHECKS.items()}}


# --------------------------------------------------------------------------
# the real files pass
# --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def real():
    return {state: load_dir(INFRA / state) for state in ("aws", "gcp")}


@pytest.mark.parametrize("check", sorted(CHECKS))
def test_real_infra_satisfies(real, check):
    state, fn = CHECKS[check]
    assert fn(real[state]) == []


def test_real_files_are_not_vacuous(real):
    aws, gcp = real["aws"], real["gcp"]
    assert {n for n, _ in alarms(aws)} == {"no_backup_replicated", "newest_backup_too_old", "retention_silent",
                                           "rejection", "drill_failed"}
    assert {n for n, _ in gcp.of_type("google_logging_metric")} == {"dump_failed", "dump_completed"}
    assert {n for n, _ in gcp.of_type("google_monitoring_alert_policy")} == {"dump_failed", "no_dump"}
    names, sets = emitted_metrics()
    assert {"BackupsReplicated", "Rejections", "Findings", "NewestBackupAgeSeconds"} <= names
    assert frozenset({"Function", "Code"}) in sets
    assert {"restore_drill_failed", "pitr_drill_failed"} <= finding_codes()
    assert set(FAILURE_EVENTS) | {COMPLETE_EVENT} <= logged_events()
    assert for_each_values(aws, aws.resources[("aws_cloudwatch_metric_alarm", "drill_failed")]) == [
        "restore_drill_failed", "pitr_drill_failed"]
    assert number(aws, aws.resources[("aws_cloudwatch_metric_alarm", "newest_backup_too_old")]["threshold"]) == 93600
    for variable in ("alarm_sns_topic_arn", "alarm_namespaces"):
        assert variable in aws.variables
    for variable in ("alert_notification_channels", "alert_dump_namespaces"):
        assert variable in gcp.variables


# --------------------------------------------------------------------------
# each check fails on a broken fixture ...
# --------------------------------------------------------------------------

BROKEN = [
    # (fixture dir, check, expected fragments)
    ("aws_alarms_broken", "aws_alarms_notify_the_topic",
     ["aws_cloudwatch_metric_alarm.silent: alarm_actions do not notify var.alarm_sns_topic_arn"]),
    ("aws_alarms_broken", "aws_alarms_watch_emitted_metrics",
     ["metric 'BackupReplicated' is not emitted", "dimensions ['Cloud', 'Function'] are not a dimension set",
      "finding code 'restore_drill_fail' is not one the audit reports", "namespace 'AWS/Lambda' is not Backstop"]),
    ("aws_alarms_broken", "aws_missing_data_matches_the_alarm",
     ["no_backup: LessThanThreshold with treat_missing_data = 'notBreaching', not 'breaching'",
      "silent: GreaterThanOrEqualToThreshold with treat_missing_data = 'breaching', not 'notBreaching'"]),
    ("aws_alarms_broken", "aws_alarms_page_on_the_three_failures",
     ["no BackupsReplicated was published for 26 h", "NewestBackupAgeSeconds (Maximum) exceeds at most 26 h",
      "no alarm pages on a single Rejection", "no alarm pages on a pitr_drill_failed finding"]),
    ("gcp_alerts_broken", "gcp_dump_failures_page",
     ["no google_logging_metric counts exactly the events ['dump_failed', 'base_backup_failed']"]),
    ("gcp_alerts_broken", "gcp_missing_dumps_page",
     ["name 'backstop-dump-completed' is not PromQL-safe",
      "no alert policy fires when ['completed'] is absent for at most 26 h"]),
    ("gcp_alerts_broken", "gcp_alert_policies_notify",
     ["google_monitoring_alert_policy.quiet: notification_channels do not use var.alert_notification_channels",
      "quiet: no documentation", "quiet: no user label app"]),
]


@pytest.mark.parametrize("fixture,check,expected", BROKEN, ids=[c for _, c, _ in BROKEN])
def test_check_fails_on_broken_fixture(fixture, check, expected):
    _, fn = CHECKS[check]
    found = "\n".join(fn(load_dir(FIXTURES / fixture)))
    assert found, f"{check} accepted the broken fixture {fixture}"
    for fragment in expected:
        assert fragment in found, f"{fragment!r} not reported; got:\n{found}"


def test_every_check_has_a_broken_fixture():
    assert {c for _, c, _ in BROKEN} == set(CHECKS)
    assert {p.name for p in FIXTURES.iterdir() if p.is_dir()} == {f for f, _, _ in BROKEN}


# --------------------------------------------------------------------------
# ... and on a broken copy of the real files
# --------------------------------------------------------------------------

MUTATIONS = [
    # (state, file, pattern, replacement, check that must then fail)
    ("aws", "alarms.tf", r"(resource \"aws_cloudwatch_metric_alarm\" \"rejection\" \{.*?)alarm_actions\s+= local\.alarm_actions",
     r"\1alarm_actions = []", "aws_alarms_notify_the_topic"),
    ("aws", "alarms.tf", r'metric_name\s+= "BackupsReplicated"', 'metric_name = "BackupReplicated"',
     "aws_alarms_watch_emitted_metrics"),
    ("aws", "alarms.tf", r'"restore_drill_failed", "pitr_drill_failed"', '"restore_drill_failed", "pitr_drill_fail"',
     "aws_alarms_watch_emitted_metrics"),
    ("aws", "alarms.tf", r'treat_missing_data\s+= "breaching"', 'treat_missing_data = "notBreaching"',
     "aws_missing_data_matches_the_alarm"),
    ("aws", "alarms.tf", r"evaluation_periods\s+= 26\n(\s*)datapoints_to_alarm = 26",
     r"evaluation_periods = 48\n\1datapoints_to_alarm = 48", "aws_alarms_page_on_the_three_failures"),
    ("aws", "alarms.tf", r"backup_max_age_seconds = 26 \* 3600", "backup_max_age_seconds = 48 * 3600",
     "aws_alarms_page_on_the_three_failures"),
    ("aws", "alarms.tf", r'(metric_name\s+= "Rejections"(?:.|\n)*?threshold\s+= )1', r"\g<1>5",
     "aws_alarms_page_on_the_three_failures"),
    ("aws", "alarms.tf", r', "pitr_drill_failed"\]', "]", "aws_alarms_page_on_the_three_failures"),
    ("gcp", "alerts.tf", r' OR jsonPayload\.event=\\"base_backup_failed\\"', "", "gcp_dump_failures_page"),
    ("gcp", "alerts.tf", r'comparison\s+= "COMPARISON_GT"', 'comparison = "COMPARISON_LT"', "gcp_dump_failures_page"),
    ("gcp", "alerts.tf", r'dump_max_gap = "26h"', 'dump_max_gap = "48h"', "gcp_missing_dumps_page"),
    ("gcp", "alerts.tf", r'filter\s+= "jsonPayload\.event=\\"dump_complete\\""',
     'filter = "jsonPayload.event=\\"dump_completed\\""', "gcp_missing_dumps_page"),
    ("gcp", "alerts.tf", r"notification_channels = var\.alert_notification_channels", "notification_channels = []",
     "gcp_alert_policies_notify"),
]


@pytest.mark.parametrize("state,file,pattern,replacement,check", MUTATIONS,
                         ids=[f"{m[0]}/{m[1]}:{m[4]}:{i}" for i, m in enumerate(MUTATIONS)])
def test_check_fails_on_broken_real_infra(tmp_path, state, file, pattern, replacement, check):
    copy = tmp_path / state
    shutil.copytree(INFRA / state, copy)
    target = copy / file
    broken, n = re.subn(pattern, replacement, target.read_text(), count=1, flags=re.S)
    assert n == 1, f"mutation pattern {pattern!r} no longer matches infra/{state}/{file}; update the test"
    target.write_text(broken)
    _, fn = CHECKS[check]
    assert fn(load_dir(copy)), f"{check} accepted infra/{state}/{file} with {pattern!r} broken"
