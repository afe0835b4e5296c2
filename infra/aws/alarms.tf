# CloudWatch alarms that page someone, on the metrics the functions print as
# Embedded Metric Format lines (namespace Backstop; README "Metrics and
# alarms"; shared/functions/src/metrics.rs): no backup for 26 h, any
# rejection by the replicator, a failed drill. Each notifies
# alarm_sns_topic_arn (subscribe the pager or the on-call email there).
#
# The functions publish a metric only when they have something to count,
# so an alarm on something that must keep happening (a backup copied, a
# retention run) treats missing data as breaching, and an alarm on an event
# (a rejection, a failed drill) treats it as fine.

locals {
  alarm_actions = var.alarm_sns_topic_arn == "" ? [] : [var.alarm_sns_topic_arn]

  # 26 h: a daily dump may run late once without paging anyone.
  backup_max_age_seconds = 26 * 3600

  # Finding codes of failed drills (retention's audit): dump restores and
  # point-in-time recoveries.
  drill_failure_codes = toset(["restore_drill_failed", "pitr_drill_failed"])
}

# No backup of the namespace reached the replica for 26 h: the dump did not
# run, failed, or its backups do not replicate.
resource "aws_cloudwatch_metric_alarm" "no_backup_replicated" {
  for_each = toset(var.alarm_namespaces)

  alarm_name        = "${var.name_prefix}-no-backup-${each.value}"
  alarm_description = "No backup of namespace ${each.value} was replicated to S3 for 26 hours. Check the dump job's logs (event dump_failed), then the replicator's (/aws/lambda/${var.name_prefix}-replicator) and the dead-letter subscription in GCP."
  namespace         = "Backstop"
  metric_name       = "BackupsReplicated"
  dimensions = {
    Function  = "replicator"
    Namespace = each.value
  }
  statistic           = "Sum"
  period              = 3600
  evaluation_periods  = 26
  datapoints_to_alarm = 26
  comparison_operator = "LessThanThreshold"
  threshold           = 1
  treat_missing_data  = "breaching"
  alarm_actions       = local.alarm_actions
  ok_actions          = local.alarm_actions
}

# The audit saw the namespace's newest verified backup older than 26 h, in
# either cloud (retention runs daily: the alarm holds for a day after a run).
resource "aws_cloudwatch_metric_alarm" "newest_backup_too_old" {
  for_each = toset(var.alarm_namespaces)

  alarm_name        = "${var.name_prefix}-stale-backup-${each.value}"
  alarm_description = "The newest verified backup of namespace ${each.value} is older than 26 hours in GCS or S3 (retention's audit, NewestBackupAgeSeconds). Run `backstop status` for the findings."
  namespace         = "Backstop"
  metric_name       = "NewestBackupAgeSeconds"
  dimensions = {
    Function  = "retention"
    Namespace = each.value
  }
  statistic           = "Maximum"
  period              = 3600
  evaluation_periods  = 24
  datapoints_to_alarm = 1
  comparison_operator = "GreaterThanThreshold"
  threshold           = local.backup_max_age_seconds
  treat_missing_data  = "notBreaching"
  alarm_actions       = local.alarm_actions
  ok_actions          = local.alarm_actions
}

# Retention did not report for 26 h: nothing audits the backups (and the
# age alarm above has no data to judge).
resource "aws_cloudwatch_metric_alarm" "retention_silent" {
  alarm_name        = "${var.name_prefix}-retention-silent"
  alarm_description = "The retention function reported no audit for 26 hours. Check its schedule (Cloud Scheduler ${var.name_prefix}-retention) and its logs (/aws/lambda/${var.name_prefix}-retention)."
  namespace         = "Backstop"
  metric_name       = "CriticalFindings"
  dimensions = {
    Function = "retention"
  }
  statistic           = "SampleCount"
  period              = 3600
  evaluation_periods  = 26
  datapoints_to_alarm = 26
  comparison_operator = "LessThanThreshold"
  threshold           = 1
  treat_missing_data  = "breaching"
  alarm_actions       = local.alarm_actions
  ok_actions          = local.alarm_actions
}

# The replicator refused a backup: a verification failure or a tamper
# alert (a committed backup rewritten). Nothing was copied.
resource "aws_cloudwatch_metric_alarm" "rejection" {
  alarm_name        = "${var.name_prefix}-rejection"
  alarm_description = "The replicator rejected a backup (failed verification or was rewritten after its commit: possible tampering). Its log line (/aws/lambda/${var.name_prefix}-replicator, \"backup failed verification\") names the backup and the reason; the alert topic has the details."
  namespace         = "Backstop"
  metric_name       = "Rejections"
  dimensions = {
    Function = "replicator"
  }
  statistic           = "Sum"
  period              = 300
  evaluation_periods  = 1
  comparison_operator = "GreaterThanOrEqualToThreshold"
  threshold           = 1
  treat_missing_data  = "notBreaching"
  alarm_actions       = local.alarm_actions
}

# The latest restore drill (or point-in-time recovery drill) of a namespace
# failed: the backups may not restore.
resource "aws_cloudwatch_metric_alarm" "drill_failed" {
  for_each = local.drill_failure_codes

  alarm_name        = "${var.name_prefix}-${replace(each.value, "_", "-")}"
  alarm_description = "Retention's audit found ${each.value}: the latest drill of a namespace failed. `backstop status` names the namespace and the backup; the drill record says why."
  namespace         = "Backstop"
  metric_name       = "Findings"
  dimensions = {
    Function = "retention"
    Code     = each.value
  }
  statistic           = "Maximum"
  period              = 3600
  evaluation_periods  = 24
  datapoints_to_alarm = 1
  comparison_operator = "GreaterThanOrEqualToThreshold"
  threshold           = 1
  treat_missing_data  = "notBreaching"
  alarm_actions       = local.alarm_actions
  ok_actions          = local.alarm_actions
}
