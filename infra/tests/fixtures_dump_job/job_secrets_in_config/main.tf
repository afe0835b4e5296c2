# Broken: the database URL (with its password) and a plaintext signing key
# in the job's environment, and a secret version managed by Terraform.
resource "google_secret_manager_secret_version" "url" {
  secret      = "projects/p/secrets/backstop-dump-database-url"
  secret_data = "postgres://backup:hunter2@db:5432/app"
}

resource "google_cloud_run_v2_job" "dump" {
  name     = "backstop-dump"
  location = "europe-west1"
  template {
    template {
      service_account = google_service_account.dump.email
      containers {
        image = "example/backstop"
        env {
          name  = "BACKSTOP_DATABASE_URL"
          value = "postgres://backup:hunter2@db:5432/app"
        }
        env {
          name  = "BACKSTOP_SIGNING_KEY"
          value = "file:/keys/signing.sec.asc"
        }
        env {
          name  = "BACKSTOP_SIGNING_KEY_TEXT"
          value = "-----BEGIN PGP PRIVATE KEY BLOCK-----"
        }
      }
    }
  }
}
