# Broken on purpose: alarms nobody hears, on metrics nothing emits, with
# missing data read the wrong way; no rejection alarm, no PITR drill alarm,
# the backup window longer than 26 h.

locals {
  alarm_actions = var.alarm_sns_topic_arn == "" ? [] : [var.alarm_sns_topic_arn]
}

variable "alarm_sns_topic_arn" {
  type    = string
  default = ""
}

# 2 days of empty periods, missing data not breaching, a misspelt metric and
# a dimension set the functions do not publish.
resource "aws_cloudwatch_metric_alarm" "no_backup" {
  alarm_name  = "backstop-no-backup"
  namespace   = "Backstop"
  metric_name = "BackupReplicated"
  dimensions = {
    Function = "replicator"
    Cloud    = "s3"
  }
  statistic           = "Sum"
  period              = 86400
  evaluation_periods  = 2
  datapoints_to_alarm = 2
  comparison_operator = "LessThanThreshold"
  threshold           = 1
  treat_missing_data  = "notBreaching"
  alarm_actions       = local.alarm_actions
}

# 48 h instead of 26 h.
resource "aws_cloudwatch_metric_alarm" "stale" {
  alarm_name  = "backstop-stale"
  namespace   = "Backstop"
  metric_name = "NewestBackupAgeSeconds"
  dimensions = {
    Function  = "retention"
    Namespace = "production"
  }
  statistic           = "Maximum"
  period              = 3600
  evaluation_periods  = 24
  datapoints_to_alarm = 1
  comparison_operator = "GreaterThanThreshold"
  threshold           = 48 * 3600
  treat_missing_data  = "notBreaching"
  alarm_actions       = local.alarm_actions
}

# Notifies nobody; missing data breaching on an event alarm; a misspelt code.
resource "aws_cloudwatch_metric_alarm" "silent" {
  alarm_name  = "backstop-drill"
  namespace   = "Backstop"
  metric_name = "Findings"
  dimensions = {
    Function = "retention"
    Code     = "restore_drill_fail"
  }
  statistic           = "Maximum"
  period              = 3600
  evaluation_periods  = 24
  datapoints_to_alarm = 1
  comparison_operator = "GreaterThanOrEqualToThreshold"
  threshold           = 1
  treat_missing_data  = "breaching"
}

# A drill alarm for dump restores only, and one on a namespace of AWS's.
resource "aws_cloudwatch_metric_alarm" "drill" {
  alarm_name  = "backstop-restore-drill-failed"
  namespace   = "Backstop"
  metric_name = "Findings"
  dimensions = {
    Function = "retention"
    Code     = "restore_drill_failed"
  }
  statistic           = "Maximum"
  period              = 3600
  evaluation_periods  = 24
  datapoints_to_alarm = 1
  comparison_operator = "GreaterThanOrEqualToThreshold"
  threshold           = 1
  treat_missing_data  = "notBreaching"
  alarm_actions       = local.alarm_actions
}

resource "aws_cloudwatch_metric_alarm" "errors" {
  alarm_name          = "backstop-errors"
  namespace           = "AWS/Lambda"
  metric_name         = "Errors"
  statistic           = "Sum"
  period              = 300
  evaluation_periods  = 1
  comparison_operator = "GreaterThanThreshold"
  threshold           = 0
  treat_missing_data  = "notBreaching"
  alarm_actions       = local.alarm_actions
}
