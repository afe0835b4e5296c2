output "project_id" {
  value = var.project_id
}

output "backups_bucket" {
  description = "BACKSTOP_GCS_BUCKET."
  value       = google_storage_bucket.backups.name
}

output "alert_topic" {
  description = "BACKSTOP_ALERT_TOPIC (projects/P/topics/T)."
  value       = google_pubsub_topic.alerts.id
}

output "object_finalize_topic" {
  value = google_pubsub_topic.object_finalize.id
}

output "dead_letter_subscription" {
  description = "Pull subscription holding finalize events the replicator never took."
  value       = google_pubsub_subscription.dead_letter.id
}

output "backup_key_wrap" {
  description = "KMS key that wraps the backup secret key (restore's gcpkms: key source)."
  value       = google_kms_crypto_key.backup_key_wrap.id
}

output "signing_key_wrap" {
  description = "KMS key that wraps the signing secret key (dump's gcpkms: key source)."
  value       = google_kms_crypto_key.signing_key_wrap.id
}

output "service_accounts" {
  description = "Service account email per part."
  value = {
    dump       = google_service_account.dump.email
    replicator = google_service_account.replicator.email
    retention  = google_service_account.retention.email
    restore    = google_service_account.restore.email
    push       = google_service_account.push_invoker.email
    scheduler  = google_service_account.scheduler_invoker.email
  }
}

output "workload_identity_provider" {
  value = google_iam_workload_identity_pool_provider.aws.name
}

output "replicator_push_subscription" {
  value = local.replicator_enabled ? google_pubsub_subscription.replicator_push[0].id : null
}

output "retention_scheduler_job" {
  value = local.retention_enabled ? google_cloud_scheduler_job.retention[0].id : null
}

# Everything infra/aws needs, with its variable names:
#   terraform -chdir=infra/gcp output -json aws_tfvars > infra/aws/gcp.auto.tfvars.json
output "aws_tfvars" {
  description = "Inputs of infra/aws, as a tfvars JSON object."
  value = {
    gcp_project_id                    = var.project_id
    name_prefix                       = var.name_prefix
    gcs_bucket                        = google_storage_bucket.backups.name
    alert_topic                       = google_pubsub_topic.alerts.id
    replicator_role_name              = local.aws_role_names["replicator"]
    retention_role_name               = local.aws_role_names["retention"]
    replicator_oidc_audience          = local.replicator_oidc_audience
    replicator_oidc_service_account   = google_service_account.push_invoker.email
    retention_oidc_audience           = local.retention_oidc_audience
    retention_oidc_service_account    = google_service_account.scheduler_invoker.email
    replicator_gcp_credential_config  = local.gcp_credential_config["replicator"]
    retention_gcp_credential_config   = local.gcp_credential_config["retention"]
    restore_service_account_unique_id = google_service_account.restore.unique_id
  }
}

output "dump_job" {
  description = "The dump Cloud Run job (null until dump_job_image is set): run it now with `gcloud run jobs execute`."
  value       = local.dump_job_enabled ? google_cloud_run_v2_job.dump[0].id : null
}

output "dump_job_secrets" {
  description = "Secret Manager secrets of the dump job, to which the operator adds the versions (gcloud secrets versions add)."
  value = local.dump_job_enabled ? {
    database_url = google_secret_manager_secret.dump_database_url[0].secret_id
    signing_key  = google_secret_manager_secret.dump_signing_key[0].secret_id
  } : null
}
