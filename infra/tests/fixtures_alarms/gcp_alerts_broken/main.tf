# Broken on purpose: the failure metric misses base backups, the completion
# metric's name is not PromQL-safe and nothing alerts on its absence, and
# one policy notifies nobody, says nothing and has no app label.

variable "alert_notification_channels" {
  type    = list(string)
  default = []
}

resource "google_logging_metric" "failed" {
  name   = "backstop_dump_failed"
  filter = "jsonPayload.event=\"dump_failed\""
  metric_descriptor {
    metric_kind = "DELTA"
    value_type  = "INT64"
  }
}

resource "google_logging_metric" "completed" {
  name   = "backstop-dump-completed"
  filter = "jsonPayload.event=\"dump_complete\""
  metric_descriptor {
    metric_kind = "DELTA"
    value_type  = "INT64"
  }
}

resource "google_monitoring_alert_policy" "quiet" {
  display_name = "backstop: a dump failed"
  combiner     = "OR"

  conditions {
    display_name = "dump_failed logged"
    condition_threshold {
      filter          = "metric.type=\"logging.googleapis.com/user/${google_logging_metric.failed.name}\""
      comparison      = "COMPARISON_GT"
      threshold_value = 0
      duration        = "0s"
      aggregations {
        alignment_period   = "300s"
        per_series_aligner = "ALIGN_SUM"
      }
    }
  }

  # 48 h: too long.
  conditions {
    display_name = "no dump"
    condition_prometheus_query_language {
      query = "absent_over_time(logging_googleapis_com:user_${google_logging_metric.completed.name}[48h])"
    }
  }

  notification_channels = []
}
