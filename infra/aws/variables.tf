variable "region" {
  description = "AWS region of the replica bucket and the Lambda functions."
  type        = string
  default     = "eu-west-1"
}

variable "name_prefix" {
  description = "Prefix of resource names; must match infra/gcp (it comes with the gcp aws_tfvars output)."
  type        = string
  default     = "backstop"
}

# --- Replica bucket ---------------------------------------------------------

variable "replica_bucket_name" {
  description = "Name of the S3 replica bucket (globally unique)."
  type        = string
}

variable "object_lock_mode" {
  description = "Default Object Lock mode of new object versions: GOVERNANCE (users with s3:BypassGovernanceRetention can still delete) or COMPLIANCE (nobody can, not even the root user, until the retention ends)."
  type        = string
  default     = "GOVERNANCE"

  validation {
    condition     = contains(["GOVERNANCE", "COMPLIANCE"], var.object_lock_mode)
    error_message = "object_lock_mode must be GOVERNANCE or COMPLIANCE."
  }
}

variable "object_lock_days" {
  description = "Default Object Lock retention of every new object version, in days."
  type        = number
  default     = 35

  validation {
    condition     = var.object_lock_days >= 1
    error_message = "object_lock_days must be at least 1."
  }
}

variable "noncurrent_version_days" {
  description = "Days after which a version that retention has deleted (made noncurrent) is removed for good. At least object_lock_days: locked versions cannot be removed earlier anyway."
  type        = number
  default     = 35
}

# --- Inputs from infra/gcp (terraform -chdir=infra/gcp output -json aws_tfvars)

variable "gcp_project_id" {
  description = "GOOGLE_CLOUD_PROJECT of the functions."
  type        = string
}

variable "gcs_bucket" {
  description = "BACKSTOP_GCS_BUCKET: the GCS backups bucket."
  type        = string
}

variable "alert_topic" {
  description = "BACKSTOP_ALERT_TOPIC: projects/P/topics/T."
  type        = string

  validation {
    condition     = can(regex("^projects/[^/]+/topics/[^/]+$", var.alert_topic))
    error_message = "alert_topic must look like projects/PROJECT/topics/TOPIC."
  }
}

variable "replicator_role_name" {
  description = "IAM role name of the replicator; infra/gcp's Workload Identity provider trusts exactly this role."
  type        = string
}

variable "retention_role_name" {
  description = "IAM role name of the retention function; trusted by infra/gcp's Workload Identity provider."
  type        = string
}

variable "replicator_oidc_audience" {
  description = "BACKSTOP_OIDC_AUDIENCE of the replicator: the audience of the Pub/Sub push OIDC token."
  type        = string
}

variable "replicator_oidc_service_account" {
  description = "BACKSTOP_OIDC_SERVICE_ACCOUNT of the replicator: the Pub/Sub push service account email."
  type        = string
}

variable "retention_oidc_audience" {
  description = "BACKSTOP_OIDC_AUDIENCE of the retention function: the audience of the Cloud Scheduler OIDC token."
  type        = string
}

variable "retention_oidc_service_account" {
  description = "BACKSTOP_OIDC_SERVICE_ACCOUNT of the retention function: the Cloud Scheduler service account email."
  type        = string
}

variable "replicator_gcp_credential_config" {
  description = "External-account (Workload Identity Federation) credential JSON with which the replicator impersonates its GCP service account."
  type        = string
}

variable "retention_gcp_credential_config" {
  description = "External-account credential JSON for the retention function."
  type        = string
}

variable "restore_service_account_unique_id" {
  description = "Numeric unique id of the GCP restore service account; its Google-signed ID tokens may assume the read-only restore role (S3 fallback)."
  type        = string
  default     = ""
}

# --- Function configuration -------------------------------------------------

variable "signing_public_key" {
  description = "Armored OpenPGP public key of the dump job's signing key. Shipped in the config layer; BACKSTOP_SIGNING_PUBLIC_KEY points at it with file:."
  type        = string
}

variable "backup_recipients" {
  description = "BACKSTOP_RECIPIENTS: armored OpenPGP public key(s) backups must be encrypted to. Lambda allows 4 KB of environment in total."
  type        = string
}

variable "replicate_namespaces" {
  description = "BACKSTOP_REPLICATE_NAMESPACES: comma-separated namespaces the replicator copies to S3."
  type        = string
  default     = "production"
}

variable "retention_policy" {
  description = "BACKSTOP_RETENTION_POLICY (JSON). Empty: the function's built-in default policy."
  type        = string
  default     = ""

  validation {
    condition     = var.retention_policy == "" || can(jsondecode(var.retention_policy))
    error_message = "retention_policy must be JSON (or empty)."
  }
}

variable "dry_run" {
  description = "BACKSTOP_DRY_RUN for the retention function: report what would be deleted, delete nothing."
  type        = bool
  default     = false
}

variable "extra_environment" {
  description = "More environment variables for both functions (e.g. RUST_LOG)."
  type        = map(string)
  default     = {}
}

# --- Lambda -----------------------------------------------------------------

variable "lambda_artifacts_dir" {
  description = "Where `cargo lambda build --release --arm64` put the binaries (<dir>/replicator/bootstrap, <dir>/retention/bootstrap). Default: target/lambda of this repository."
  type        = string
  default     = null
}

variable "replicator_memory_mb" {
  type    = number
  default = 512
}

variable "replicator_timeout_seconds" {
  description = "At least the push subscription's ack deadline (infra/gcp push_ack_deadline_seconds), so Pub/Sub never redelivers a copy that is still running."
  type        = number
  default     = 600
}

variable "replicator_reserved_concurrency" {
  description = "Copies running at once (-1: no reservation, e.g. in accounts whose concurrency quota is too small to reserve)."
  type        = number
  default     = 5
}

variable "retention_memory_mb" {
  type    = number
  default = 256
}

variable "retention_timeout_seconds" {
  type    = number
  default = 900
}

variable "retention_reserved_concurrency" {
  description = "1: two retention runs never overlap (-1: no reservation)."
  type        = number
  default     = 1
}

variable "log_retention_days" {
  description = "CloudWatch Logs retention of the functions' log groups."
  type        = number
  default     = 365
}

variable "enable_eventbridge_schedule" {
  description = "Also run retention from an EventBridge schedule (in addition to, or instead of, Cloud Scheduler)."
  type        = bool
  default     = false
}

variable "eventbridge_schedule_expression" {
  type    = string
  default = "cron(17 3 * * ? *)"
}

variable "enable_restore_role" {
  description = "Create the read-only S3 role that the GCP restore service account assumes for the S3 fallback (needs restore_service_account_unique_id)."
  type        = bool
  default     = true
}

# --- Alarms (alarms.tf) -----------------------------------------------------

variable "alarm_sns_topic_arn" {
  description = "SNS topic the CloudWatch alarms notify (the pager's or on-call email's subscription lives there). Empty: the alarms are created without actions."
  type        = string
  default     = ""

  validation {
    condition     = var.alarm_sns_topic_arn == "" || can(regex("^arn:aws[a-z-]*:sns:[a-z0-9-]+:[0-9]{12}:[A-Za-z0-9_.-]+$", var.alarm_sns_topic_arn))
    error_message = "alarm_sns_topic_arn must be an SNS topic ARN (arn:aws:sns:REGION:ACCOUNT:NAME) or empty."
  }
}

variable "alarm_namespaces" {
  description = "Namespaces whose backups must be at most 26 h old (one no-backup and one stale-backup alarm each). Usually the namespaces in replicate_namespaces."
  type        = list(string)
  default     = ["production"]
}
