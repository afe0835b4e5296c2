# Calls the retention Function URL on a schedule, with a Google-signed OIDC
# token for the scheduler service account (checked by the handler, as for the
# replicator). Created once infra/aws has produced the URL.
resource "google_cloud_scheduler_job" "retention" {
  count = local.retention_enabled ? 1 : 0

  name             = "${var.name_prefix}-retention"
  description      = "Backstop retention: prune both clouds by policy and audit them."
  project          = var.project_id
  region           = var.region
  schedule         = var.retention_schedule
  time_zone        = var.retention_time_zone
  attempt_deadline = "900s"

  retry_config {
    retry_count          = 2
    min_backoff_duration = "60s"
    max_backoff_duration = "600s"
  }

  http_target {
    http_method = "POST"
    uri         = var.retention_function_url
    headers = {
      "Content-Type" = "application/json"
    }
    body = base64encode(jsonencode({
      source = "cloud-scheduler"
      job    = "${var.name_prefix}-retention"
    }))

    oidc_token {
      service_account_email = google_service_account.scheduler_invoker.email
      audience              = local.retention_oidc_audience
    }
  }

  depends_on = [google_project_service.enabled]
}
