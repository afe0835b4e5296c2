# The dump job as a Cloud Run job, started by Cloud Scheduler: the
# serverless alternative to the Kubernetes CronJob in infra/k8s. Same image
# (the repository's Dockerfile), same settings; created once dump_job_image
# is set.
#
# It runs as the dump service account (service_accounts.tf), which may only
# create objects in the backups bucket and unwrap the signing key. Its two
# secrets live in Secret Manager, created here without a version: the
# operator adds the versions (`gcloud secrets versions add`, README "The dump
# job"), so no secret is ever in the Terraform state.
#   <prefix>-dump-database-url  postgres://user:password@host:5432/db
#   <prefix>-dump-signing-key   the signing secret key wrapped by Cloud KMS
#                               (signing_key_wrap), never the plaintext key

locals {
  dump_job_enabled = var.dump_job_image != ""
  # Where the wrapped signing key is mounted; BACKSTOP_SIGNING_KEY names it.
  dump_keys_dir = "/etc/backstop/keys"
}

resource "google_project_service" "dump_job" {
  for_each = var.enable_apis && local.dump_job_enabled ? toset([
    "run.googleapis.com",
    "secretmanager.googleapis.com",
  ]) : toset([])

  project            = var.project_id
  service            = each.value
  disable_on_destroy = false
}

resource "google_secret_manager_secret" "dump_database_url" {
  count = local.dump_job_enabled ? 1 : 0

  project   = var.project_id
  secret_id = "${var.name_prefix}-dump-database-url"
  labels    = { app = "backstop", part = "dump" }

  replication {
    auto {}
  }

  depends_on = [google_project_service.dump_job]
}

resource "google_secret_manager_secret" "dump_signing_key" {
  count = local.dump_job_enabled ? 1 : 0

  project   = var.project_id
  secret_id = "${var.name_prefix}-dump-signing-key"
  labels    = { app = "backstop", part = "dump" }

  replication {
    auto {}
  }

  depends_on = [google_project_service.dump_job]
}

# dump: read its own two secrets (and, through kms.tf, unwrap the key).
resource "google_secret_manager_secret_iam_member" "dump_reads_database_url" {
  count = local.dump_job_enabled ? 1 : 0

  project   = var.project_id
  secret_id = google_secret_manager_secret.dump_database_url[0].secret_id
  role      = "roles/secretmanager.secretAccessor"
  member    = google_service_account.dump.member
}

resource "google_secret_manager_secret_iam_member" "dump_reads_signing_key" {
  count = local.dump_job_enabled ? 1 : 0

  project   = var.project_id
  secret_id = google_secret_manager_secret.dump_signing_key[0].secret_id
  role      = "roles/secretmanager.secretAccessor"
  member    = google_service_account.dump.member
}

resource "google_cloud_run_v2_job" "dump" {
  count = local.dump_job_enabled ? 1 : 0

  name     = "${var.name_prefix}-dump"
  project  = var.project_id
  location = var.region
  labels   = { app = "backstop", part = "dump" }

  template {
    # One dump per execution.
    task_count  = 1
    parallelism = 1

    template {
      service_account = google_service_account.dump.email
      timeout         = var.dump_job_timeout
      # A failed dump wrote no manifest, so a retry is a clean new backup.
      max_retries = var.dump_job_max_retries

      containers {
        image = var.dump_job_image
        args  = ["dump"]

        # backstop peaks at 54 MiB dumping a 946 MiB database (README
        # Benchmarks) and pg_dump holds the catalog; 512 MiB is Cloud Run's
        # smallest size for a job. Deflate runs on every CPU.
        resources {
          limits = {
            cpu    = var.dump_job_cpu
            memory = var.dump_job_memory
          }
        }

        env {
          name  = "BACKSTOP_GCS_BUCKET"
          value = google_storage_bucket.backups.name
        }
        env {
          name  = "BACKSTOP_NAMESPACE"
          value = var.dump_namespace
        }
        env {
          name  = "BACKSTOP_RECIPIENTS"
          value = var.dump_backup_recipients
        }
        env {
          name  = "BACKSTOP_SIGNING_KEY"
          value = "gcpkms:${google_kms_crypto_key.signing_key_wrap.id}:${local.dump_keys_dir}/signing.sec.asc.kms"
        }
        env {
          name = "BACKSTOP_DATABASE_URL"
          value_source {
            secret_key_ref {
              secret  = google_secret_manager_secret.dump_database_url[0].secret_id
              version = "latest"
            }
          }
        }

        volume_mounts {
          name       = "keys"
          mount_path = local.dump_keys_dir
        }
      }

      # Mounted read-only; the file is KMS-wrapped, so reading it alone
      # gives nothing.
      volumes {
        name = "keys"
        secret {
          secret = google_secret_manager_secret.dump_signing_key[0].secret_id
          items {
            version = "latest"
            path    = "signing.sec.asc.kms"
          }
        }
      }

      # Direct VPC egress to a database on a private address.
      dynamic "vpc_access" {
        for_each = var.dump_job_subnetwork == null ? [] : [var.dump_job_subnetwork]
        content {
          egress = "PRIVATE_RANGES_ONLY"
          network_interfaces {
            subnetwork = vpc_access.value
          }
        }
      }
    }
  }

  lifecycle {
    precondition {
      condition     = strcontains(var.dump_backup_recipients, "BEGIN PGP PUBLIC KEY BLOCK")
      error_message = "dump_backup_recipients must hold the armored backup public key (keys/backup.pub.asc from backstop keygen) when dump_job_image is set."
    }
  }

  depends_on = [
    google_project_service.dump_job,
    google_secret_manager_secret_iam_member.dump_reads_database_url,
    google_secret_manager_secret_iam_member.dump_reads_signing_key,
  ]
}

# Cloud Scheduler starts an execution through the Cloud Run Admin API,
# which takes an OAuth token (not an OIDC one), as the scheduler identity:
# it may run this job and nothing else.
resource "google_cloud_run_v2_job_iam_member" "scheduler_runs_dump" {
  count = local.dump_job_enabled ? 1 : 0

  project  = var.project_id
  location = var.region
  name     = google_cloud_run_v2_job.dump[0].name
  role     = "roles/run.invoker"
  member   = google_service_account.scheduler_invoker.member
}

resource "google_cloud_scheduler_job" "dump" {
  count = local.dump_job_enabled ? 1 : 0

  name             = "${var.name_prefix}-dump"
  description      = "Backstop dump: start the dump Cloud Run job."
  project          = var.project_id
  region           = var.region
  schedule         = var.dump_schedule
  time_zone        = var.dump_time_zone
  attempt_deadline = "180s"

  # The :run call only starts the execution; retrying a failed call may at
  # worst start a second dump (a second backup), never lose one.
  retry_config {
    retry_count          = 2
    min_backoff_duration = "60s"
    max_backoff_duration = "300s"
  }

  http_target {
    http_method = "POST"
    uri         = "https://run.googleapis.com/v2/${google_cloud_run_v2_job.dump[0].id}:run"

    oauth_token {
      service_account_email = google_service_account.scheduler_invoker.email
      scope                 = "https://www.googleapis.com/auth/cloud-platform"
    }
  }

  depends_on = [google_project_service.enabled, google_cloud_run_v2_job_iam_member.scheduler_runs_dump]
}
