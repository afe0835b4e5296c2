# Backstop on AWS: the S3 replica bucket (s3.tf), one IAM role per function
# (iam.tf), the replicator and retention Lambda functions with their Function
# URLs (lambda.tf). Inputs from infra/gcp arrive through variables; see the
# aws_tfvars output there.

data "aws_caller_identity" "current" {}

locals {
  artifacts_dir = coalesce(var.lambda_artifacts_dir, "${path.module}/../../target/lambda")

  restore_role_enabled = var.enable_restore_role && var.restore_service_account_unique_id != ""

  # Files of the config layer, mounted under /opt in both functions.
  layer_dir               = "/opt/backstop"
  signing_public_key_path = "${local.layer_dir}/signing-public-key.asc"

  common_environment = {
    BACKSTOP_GCS_BUCKET         = var.gcs_bucket
    BACKSTOP_S3_BUCKET          = aws_s3_bucket.replica.bucket
    BACKSTOP_SIGNING_PUBLIC_KEY = "file:${local.signing_public_key_path}"
    BACKSTOP_RECIPIENTS         = "file:/opt/backstop/recipients.asc"
    BACKSTOP_ALERT_TOPIC        = var.alert_topic
    GOOGLE_CLOUD_PROJECT        = var.gcp_project_id
  }

  # Empty values are left out: the functions treat an unset variable as
  # "use the default".
  replicator_environment = { for k, v in merge(var.extra_environment, local.common_environment, {
    BACKSTOP_OIDC_AUDIENCE         = var.replicator_oidc_audience
    BACKSTOP_OIDC_SERVICE_ACCOUNT  = var.replicator_oidc_service_account
    BACKSTOP_REPLICATE_NAMESPACES  = var.replicate_namespaces
    GOOGLE_APPLICATION_CREDENTIALS = "${local.layer_dir}/replicator-gcp-credentials.json"
  }) : k => v if v != "" }

  retention_environment = { for k, v in merge(var.extra_environment, local.common_environment, {
    BACKSTOP_OIDC_AUDIENCE         = var.retention_oidc_audience
    BACKSTOP_OIDC_SERVICE_ACCOUNT  = var.retention_oidc_service_account
    BACKSTOP_RETENTION_POLICY      = var.retention_policy
    BACKSTOP_DRY_RUN               = var.dry_run ? "true" : "false"
    GOOGLE_APPLICATION_CREDENTIALS = "${local.layer_dir}/retention-gcp-credentials.json"
  }) : k => v if v != "" }

  # Lambda caps a function's environment at 4 KB (keys and values).
  environment_limit = 4096
}
