# Alerts on the dump job's logs (the Cloud Run job in dump_job.tf or the
# Kubernetes CronJob in infra/k8s: both log JSON lines, BACKSTOP_LOG_FORMAT
# =json in the image, which Cloud Logging keeps as jsonPayload). Two
# log-based metrics count the job's `event` fields, and two policies page
# someone through alert_notification_channels: a dump or base backup
# failed, or a namespace had no completed dump for 26 h. README "Metrics
# and alarms" lists them with the Lambda alarms of infra/aws.

locals {
  # PromQL names a log-based metric logging_googleapis_com:user_<name>;
  # underscores keep the name valid there.
  dump_completed_metric = "${local.role_prefix}_dump_completed"
  dump_failed_metric    = "${local.role_prefix}_dump_failed"

  # 26 h: a daily dump may run late once without paging anyone.
  dump_max_gap = "26h"
}

resource "google_project_service" "alerts" {
  for_each = var.enable_apis ? toset(["logging.googleapis.com", "monitoring.googleapis.com"]) : toset([])

  project            = var.project_id
  service            = each.value
  disable_on_destroy = false
}

resource "google_logging_metric" "dump_failed" {
  project     = var.project_id
  name        = local.dump_failed_metric
  description = "Backstop: failed dumps and base backups (log events dump_failed, base_backup_failed), by namespace."
  # The events the dump and base backup jobs log when they fail
  # (shared/postgres/src/dump/run.rs, basebackup/run.rs).
  filter = "jsonPayload.event=\"dump_failed\" OR jsonPayload.event=\"base_backup_failed\""

  metric_descriptor {
    metric_kind = "DELTA"
    value_type  = "INT64"
    unit        = "1"

    labels {
      key         = "event"
      value_type  = "STRING"
      description = "dump_failed or base_backup_failed"
    }
    labels {
      key         = "backstop_namespace"
      value_type  = "STRING"
      description = "BACKSTOP_NAMESPACE of the job"
    }
  }

  label_extractors = {
    event              = "EXTRACT(jsonPayload.event)"
    backstop_namespace = "EXTRACT(jsonPayload.namespace)"
  }

  depends_on = [google_project_service.alerts]
}

resource "google_logging_metric" "dump_completed" {
  project     = var.project_id
  name        = local.dump_completed_metric
  description = "Backstop: completed dumps (log event dump_complete), by namespace."
  filter      = "jsonPayload.event=\"dump_complete\""

  metric_descriptor {
    metric_kind = "DELTA"
    value_type  = "INT64"
    unit        = "1"

    labels {
      key         = "backstop_namespace"
      value_type  = "STRING"
      description = "BACKSTOP_NAMESPACE of the job"
    }
  }

  label_extractors = {
    backstop_namespace = "EXTRACT(jsonPayload.namespace)"
  }

  depends_on = [google_project_service.alerts]
}

resource "google_monitoring_alert_policy" "dump_failed" {
  project      = var.project_id
  display_name = "${var.name_prefix}: a dump failed"
  combiner     = "OR"
  severity     = "CRITICAL"
  user_labels  = { app = "backstop", part = "dump" }

  conditions {
    display_name = "dump_failed or base_backup_failed logged"

    condition_threshold {
      filter          = "metric.type=\"logging.googleapis.com/user/${google_logging_metric.dump_failed.name}\" AND resource.type=one_of(\"cloud_run_job\", \"k8s_container\")"
      comparison      = "COMPARISON_GT"
      threshold_value = 0
      duration        = "0s"

      aggregations {
        alignment_period     = "300s"
        per_series_aligner   = "ALIGN_SUM"
        cross_series_reducer = "REDUCE_SUM"
        group_by_fields      = ["metric.label.backstop_namespace", "metric.label.event"]
      }

      trigger {
        count = 1
      }
    }
  }

  notification_channels = var.alert_notification_channels

  alert_strategy {
    auto_close = "86400s"
  }

  documentation {
    mime_type = "text/markdown"
    content   = "A Backstop dump or base backup failed in namespace $${metric.label.backstop_namespace}. Its log line (jsonPayload.event=\"dump_failed\" or \"base_backup_failed\") names the stage and the error; a failed dump wrote no manifest, so nothing half-written is restored. Fix the cause and run the job again (gcloud run jobs execute ${var.name_prefix}-dump)."
  }
}

# One policy per namespace: a namespace whose dumps stopped pages even
# while the others' go on.
resource "google_monitoring_alert_policy" "no_dump" {
  for_each = toset(var.alert_dump_namespaces)

  project      = var.project_id
  display_name = "${var.name_prefix}: no dump of ${each.value} for 26 h"
  combiner     = "OR"
  severity     = "CRITICAL"
  user_labels  = { app = "backstop", part = "dump" }

  conditions {
    display_name = "no dump_complete of ${each.value} for ${local.dump_max_gap}"

    # No completed dump in the window: no data point at all (absent), or
    # only empty ones.
    condition_prometheus_query_language {
      query               = "absent_over_time(logging_googleapis_com:user_${google_logging_metric.dump_completed.name}{backstop_namespace=\"${each.value}\"}[${local.dump_max_gap}]) or (sum(sum_over_time(logging_googleapis_com:user_${google_logging_metric.dump_completed.name}{backstop_namespace=\"${each.value}\"}[${local.dump_max_gap}])) < 1)"
      duration            = "0s"
      evaluation_interval = "300s"
    }
  }

  notification_channels = var.alert_notification_channels

  alert_strategy {
    auto_close = "86400s"
  }

  documentation {
    mime_type = "text/markdown"
    content   = "No Backstop dump of namespace ${each.value} completed for 26 hours (log event dump_complete). Check that the job ran (Cloud Scheduler ${var.name_prefix}-dump, or the CronJob's last schedule time) and its logs; `backstop status` shows the newest backup."
  }
}
