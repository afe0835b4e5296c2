# Broken: the scheduler job calls another job's :run (and a GET), so the
# dump job never runs.
resource "google_cloud_run_v2_job" "dump" {
  name     = "backstop-dump"
  location = "europe-west1"
  template {
    template {
      service_account = google_service_account.dump.email
      containers {
        image = "example/backstop"
      }
    }
  }
}

resource "google_cloud_scheduler_job" "dump" {
  name     = "backstop-dump"
  schedule = "0 2 * * *"
  http_target {
    http_method = "POST"
    uri         = "https://run.googleapis.com/v2/${google_cloud_run_v2_job.other[0].id}:run"
    oauth_token {
      service_account_email = google_service_account.scheduler_invoker.email
    }
  }
}

resource "google_cloud_scheduler_job" "get" {
  name     = "backstop-dump-get"
  schedule = "0 2 * * *"
  http_target {
    http_method = "GET"
    uri         = "https://run.googleapis.com/v2/${google_cloud_run_v2_job.dump.id}:run"
    oauth_token {
      service_account_email = google_service_account.scheduler_invoker.email
    }
  }
}
