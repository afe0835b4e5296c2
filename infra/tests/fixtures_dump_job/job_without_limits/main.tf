# Broken: no CPU limit, and a memory limit below twice the dump's peak.
variable "memory" {
  type    = string
  default = "64Mi"
}

resource "google_cloud_run_v2_job" "dump" {
  name     = "backstop-dump"
  location = "europe-west1"
  template {
    template {
      service_account = google_service_account.dump.email
      containers {
        image = "example/backstop"
        resources {
          limits = {
            memory = var.memory
          }
        }
      }
    }
  }
}
