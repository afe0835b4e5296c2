# Workload Identity Federation: the replicator and retention Lambda roles in
# the AWS account exchange their AWS credentials for short-lived Google tokens
# and impersonate their own service account. No service-account keys exist.
resource "google_iam_workload_identity_pool" "aws" {
  project                   = var.project_id
  workload_identity_pool_id = "${var.name_prefix}-aws"
  display_name              = "Backstop AWS Lambda"
  description               = "Backstop's Lambda functions in AWS account ${var.aws_account_id}."

  depends_on = [google_project_service.enabled]
}

resource "google_iam_workload_identity_pool_provider" "aws" {
  # checkov:skip=CKV_GCP_125: False positive: the check is for GitHub Actions OIDC providers and fails any provider without an oidc block; this is an AWS provider, restricted by attribute_condition to the two function roles.
  project                            = var.project_id
  workload_identity_pool_id          = google_iam_workload_identity_pool.aws.workload_identity_pool_id
  workload_identity_pool_provider_id = "aws-${var.aws_account_id}"
  display_name                       = "AWS ${var.aws_account_id}"

  aws {
    account_id = var.aws_account_id
  }

  attribute_mapping = {
    "google.subject"     = "assertion.arn"
    "attribute.aws_role" = "assertion.arn.contains('assumed-role') ? assertion.arn.extract('{account_arn}assumed-role/') + 'assumed-role/' + assertion.arn.extract('assumed-role/{role_name}/') : assertion.arn"
  }

  # Only the two function roles may exchange tokens at all.
  attribute_condition = "attribute.aws_role in [${join(", ", [for r in values(local.aws_role_names) : "'arn:aws:sts::${var.aws_account_id}:assumed-role/${r}'"])}]"
}

locals {
  wif_principal = {
    for part, role in local.aws_role_names :
    part => "principalSet://iam.googleapis.com/${google_iam_workload_identity_pool.aws.name}/attribute.aws_role/arn:aws:sts::${var.aws_account_id}:assumed-role/${role}"
  }

  impersonated = {
    replicator = google_service_account.replicator.email
    retention  = google_service_account.retention.email
  }

  # External-account credential configuration (what
  # `gcloud iam workload-identity-pools create-cred-config --aws` writes).
  # infra/aws ships it in a Lambda layer and points
  # GOOGLE_APPLICATION_CREDENTIALS at it. It holds no secret: the AWS
  # credentials come from the Lambda environment at run time.
  # No imdsv2_session_token_url on purpose: Lambda has no instance metadata
  # service, and google-cloud-auth fetches an IMDSv2 token first whenever
  # that URL is set. Without it, the region and the role's credentials are
  # read from AWS_REGION / AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY /
  # AWS_SESSION_TOKEN, which the Lambda runtime sets.
  gcp_credential_config = {
    for part, email in local.impersonated : part => jsonencode({
      type                              = "external_account"
      universe_domain                   = "googleapis.com"
      audience                          = "//iam.googleapis.com/${google_iam_workload_identity_pool_provider.aws.name}"
      subject_token_type                = "urn:ietf:params:aws:token-type:aws4_request"
      token_url                         = "https://sts.googleapis.com/v1/token"
      service_account_impersonation_url = "https://iamcredentials.googleapis.com/v1/projects/-/serviceAccounts/${email}:generateAccessToken"
      credential_source = {
        environment_id                 = "aws1"
        region_url                     = "http://169.254.169.254/latest/meta-data/placement/availability-zone"
        url                            = "http://169.254.169.254/latest/meta-data/iam/security-credentials"
        regional_cred_verification_url = "https://sts.{region}.amazonaws.com?Action=GetCallerIdentity&Version=2011-06-15"
      }
    })
  }
}

resource "google_service_account_iam_member" "replicator_wif" {
  service_account_id = google_service_account.replicator.name
  role               = "roles/iam.workloadIdentityUser"
  member             = local.wif_principal["replicator"]
}

resource "google_service_account_iam_member" "retention_wif" {
  service_account_id = google_service_account.retention.name
  role               = "roles/iam.workloadIdentityUser"
  member             = local.wif_principal["retention"]
}
