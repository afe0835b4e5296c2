# Broken: the scheduler identity may run another job, the dump reads a
# secret not its own and holds a role of unknown permissions, the restore
# account reads the dump's database URL.
resource "google_cloud_run_v2_job_iam_member" "scheduler_runs_other" {
  name   = google_cloud_run_v2_job.other.name
  role   = "roles/run.invoker"
  member = google_service_account.scheduler_invoker.member
}

resource "google_cloud_run_v2_job_iam_member" "dump_develops" {
  name   = google_cloud_run_v2_job.dump.name
  role   = "roles/run.developer"
  member = google_service_account.dump.member
}

resource "google_secret_manager_secret_iam_member" "dump_reads_other" {
  secret_id = google_secret_manager_secret.other.secret_id
  role      = "roles/secretmanager.secretAccessor"
  member    = google_service_account.dump.member
}

resource "google_secret_manager_secret_iam_member" "restore_reads_url" {
  secret_id = google_secret_manager_secret.dump_database_url[0].secret_id
  role      = "roles/secretmanager.secretAccessor"
  member    = google_service_account.restore.member
}
