# Broken: one job names no service account (Cloud Run then uses the
# project's default compute account), another runs as restore.
resource "google_cloud_run_v2_job" "dump" {
  name     = "backstop-dump"
  location = "europe-west1"
  template {
    template {
      containers {
        image = "example/backstop"
      }
    }
  }
}

resource "google_cloud_run_v2_job" "as_restore" {
  name     = "backstop-dump-2"
  location = "europe-west1"
  template {
    template {
      service_account = google_service_account.restore.email
      containers {
        image = "example/backstop"
      }
    }
  }
}
