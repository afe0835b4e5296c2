# Broken: the Cloud Run Admin API takes OAuth access tokens; one job sends
# an OIDC token, another an OAuth token without a service account.
resource "google_cloud_scheduler_job" "dump" {
  name     = "backstop-dump"
  schedule = "0 2 * * *"
  http_target {
    http_method = "POST"
    uri         = "https://run.googleapis.com/v2/${google_cloud_run_v2_job.dump[0].id}:run"
    oidc_token {
      service_account_email = google_service_account.scheduler_invoker.email
      audience              = "https://run.googleapis.com/"
    }
  }
}

resource "google_cloud_scheduler_job" "no_account" {
  name     = "backstop-dump-2"
  schedule = "0 2 * * *"
  http_target {
    http_method = "POST"
    uri         = "https://run.googleapis.com/v2/${google_cloud_run_v2_job.dump[0].id}:run"
    oauth_token {
      scope = "https://www.googleapis.com/auth/cloud-platform"
    }
  }
}
