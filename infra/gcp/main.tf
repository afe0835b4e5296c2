# Backstop on GCP: the backups bucket, the key-wrapping KMS keys, the
# OBJECT_FINALIZE -> Pub/Sub -> replicator push path, the retention schedule,
# one service account per part and Workload Identity Federation for the AWS
# Lambda functions. Least privilege follows the table in DESIGN.md; the
# offline checks in infra/tests hold this file set to it.

data "google_project" "this" {
  project_id = var.project_id
}

# The Cloud Storage service agent, which publishes bucket notifications.
data "google_storage_project_service_account" "gcs" {
  project = var.project_id
}

locals {
  bucket_location = coalesce(var.bucket_location, var.region)
  kms_location    = coalesce(var.kms_location, var.region)

  # Custom role ids allow no hyphens.
  role_prefix = replace(var.name_prefix, "-", "_")

  # The Pub/Sub service agent: pushes with OIDC tokens and moves messages to
  # the dead-letter topic.
  pubsub_service_agent = "serviceAccount:service-${data.google_project.this.number}@gcp-sa-pubsub.iam.gserviceaccount.com"

  # OIDC audiences. Each function checks the `aud` claim against
  # BACKSTOP_OIDC_AUDIENCE. A fixed string, not the Function URL: the URL is
  # only known after the Lambda exists, and the Lambda's environment would
  # then depend on its own URL (a cycle). Any string unique to the receiver
  # is a valid audience for Pub/Sub push and Cloud Scheduler tokens.
  replicator_oidc_audience = "backstop:${var.project_id}:${var.name_prefix}-replicator"
  retention_oidc_audience  = "backstop:${var.project_id}:${var.name_prefix}-retention"

  # IAM role names of the Lambda functions in infra/aws (fed to it through
  # the aws_tfvars output, so both states agree).
  aws_role_names = {
    replicator = "${var.name_prefix}-replicator"
    retention  = "${var.name_prefix}-retention"
  }

  replicator_enabled = var.replicator_function_url != ""
  retention_enabled  = var.retention_function_url != ""

  drills_prefix = "_drills/"
}

resource "google_project_service" "enabled" {
  for_each = var.enable_apis ? toset([
    "cloudkms.googleapis.com",
    "cloudresourcemanager.googleapis.com",
    "cloudscheduler.googleapis.com",
    "iam.googleapis.com",
    "iamcredentials.googleapis.com",
    "pubsub.googleapis.com",
    "storage.googleapis.com",
    "sts.googleapis.com",
  ]) : toset([])

  project            = var.project_id
  service            = each.value
  disable_on_destroy = false
}
