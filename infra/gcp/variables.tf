variable "project_id" {
  description = "GCP project that holds the backups bucket, KMS keys, Pub/Sub and the service accounts."
  type        = string
}

variable "region" {
  description = "Region for Cloud Scheduler, KMS and (by default) the bucket."
  type        = string
  default     = "europe-west1"
}

variable "name_prefix" {
  description = "Prefix of every resource name (service accounts, topics, roles). Must match name_prefix in infra/aws."
  type        = string
  default     = "backstop"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{2,17}$", var.name_prefix))
    error_message = "name_prefix: 3-18 characters, lowercase letters, digits and hyphens, starting with a letter (service account ids are limited to 30 characters)."
  }
}

variable "enable_apis" {
  description = "Enable the Google APIs this configuration uses (leave false if the project is managed elsewhere)."
  type        = bool
  default     = true
}

# --- Backups bucket ---------------------------------------------------------

variable "backups_bucket_name" {
  description = "Name of the GCS backups bucket (globally unique)."
  type        = string
}

variable "bucket_location" {
  description = "Location of the backups bucket; defaults to var.region."
  type        = string
  default     = null
}

variable "backup_max_age_days" {
  description = "Safety-net lifecycle rule: delete any live object older than this many days. The retention function applies the real policy; keep this well above the longest keep-monthly/max-age in BACKSTOP_RETENTION_POLICY."
  type        = number
  default     = 800

  validation {
    condition     = var.backup_max_age_days >= 30
    error_message = "backup_max_age_days must be at least 30."
  }
}

variable "lifecycle_prefix_rules" {
  description = "Extra lifecycle Delete rules for short-lived namespaces, e.g. [{ prefixes = [\"branch-\"], age_days = 14 }]. Every rule must name at least one prefix (an empty prefix list would match the whole bucket)."
  type = list(object({
    prefixes = list(string)
    age_days = number
  }))
  default = []

  validation {
    condition     = alltrue([for r in var.lifecycle_prefix_rules : length(r.prefixes) > 0 && r.age_days >= 1])
    error_message = "Each lifecycle_prefix_rules entry needs a non-empty prefixes list and age_days >= 1."
  }
}

variable "abort_incomplete_uploads_days" {
  description = "Abort incomplete XML-API multipart uploads after this many days."
  type        = number
  default     = 1
}

variable "soft_delete_retention_days" {
  description = "GCS soft delete: deleted backups stay recoverable this many days (0 disables, otherwise 7-90)."
  type        = number
  default     = 7

  validation {
    condition     = var.soft_delete_retention_days == 0 || (var.soft_delete_retention_days >= 7 && var.soft_delete_retention_days <= 90)
    error_message = "soft_delete_retention_days must be 0 or between 7 and 90."
  }
}

# --- KMS --------------------------------------------------------------------

variable "kms_location" {
  description = "Location of the KMS key ring; defaults to var.region."
  type        = string
  default     = null
}

variable "kms_rotation_period" {
  description = "Rotation period of the key-wrapping KMS keys (old versions stay usable for decryption)."
  type        = string
  default     = "7776000s"
}

variable "kms_encrypter_members" {
  description = "Operators (IAM members, e.g. \"group:backup-admins@example.com\") allowed to wrap new backup/signing secret keys with KMS (encrypt only; nobody here gets decrypt except the restore and dump service accounts)."
  type        = list(string)
  default     = []
}

# --- AWS side (Workload Identity Federation) --------------------------------

variable "aws_account_id" {
  description = "AWS account that runs the Lambda functions (infra/aws). Its replicator and retention roles may impersonate their GCP service accounts."
  type        = string

  validation {
    condition     = can(regex("^[0-9]{12}$", var.aws_account_id))
    error_message = "aws_account_id must be 12 digits."
  }
}

# --- Function URLs (outputs of infra/aws; empty on the first apply) ---------

variable "replicator_function_url" {
  description = "Function URL of the replicator Lambda (infra/aws output replicator_function_url). Until set, no push subscription is created (notifications are kept on the topic only while a subscription exists)."
  type        = string
  default     = ""

  validation {
    condition     = var.replicator_function_url == "" || startswith(var.replicator_function_url, "https://")
    error_message = "replicator_function_url must be an https:// URL (or empty)."
  }
}

variable "retention_function_url" {
  description = "Function URL of the retention Lambda (infra/aws output retention_function_url). Until set, no Cloud Scheduler job is created."
  type        = string
  default     = ""

  validation {
    condition     = var.retention_function_url == "" || startswith(var.retention_function_url, "https://")
    error_message = "retention_function_url must be an https:// URL (or empty)."
  }
}

# --- Pub/Sub push -----------------------------------------------------------

variable "push_ack_deadline_seconds" {
  description = "Ack deadline of the push subscription, which is also how long Pub/Sub waits for the replicator's HTTP answer. Keep it <= the replicator Lambda timeout."
  type        = number
  default     = 600
}

variable "push_max_delivery_attempts" {
  description = "Deliveries before a finalize event goes to the dead-letter topic (5-100). A large backup's copy pauses at each invocation's deadline and resumes on the next delivery, and every paused delivery counts: 100 lets one backup take 100 Lambda timeouts."
  type        = number
  default     = 100
}

variable "push_minimum_backoff" {
  description = "Retry policy: minimum backoff between redeliveries."
  type        = string
  default     = "10s"
}

variable "push_maximum_backoff" {
  description = "Retry policy: maximum backoff between redeliveries."
  type        = string
  default     = "600s"
}

variable "grant_pubsub_token_creator" {
  description = "Grant the Pub/Sub service agent roles/iam.serviceAccountTokenCreator on the push-invoker service account. Only projects created before 2021-04-08 need it to mint OIDC tokens for push."
  type        = bool
  default     = false
}

# --- Cloud Scheduler --------------------------------------------------------

variable "retention_schedule" {
  description = "Cron schedule of the retention run (Cloud Scheduler)."
  type        = string
  default     = "17 3 * * *"
}

variable "retention_time_zone" {
  description = "Time zone of retention_schedule."
  type        = string
  default     = "Etc/UTC"
}

# --- Jobs outside the functions ---------------------------------------------

variable "dump_workload_identity_members" {
  description = "Members that may act as the dump service account through Workload Identity, e.g. \"serviceAccount:PROJECT.svc.id.goog[production/backstop-dump]\" for a Kubernetes CronJob. A Cloud Run job just runs as the service account instead."
  type        = list(string)
  default     = []
}

variable "restore_workload_identity_members" {
  description = "Members that may act as the restore service account through Workload Identity (the build pipeline's identity)."
  type        = list(string)
  default     = []
}

# --- Dump job (Cloud Run job + Cloud Scheduler, dump_job.tf) ----------------

variable "dump_job_image" {
  description = "Image of the dump job, built from the repository's Dockerfile and pushed to a registry the project can pull from (e.g. europe-west1-docker.pkg.dev/P/backstop/backstop:TAG). Until set, no Cloud Run job, secrets or schedule are created (run the dump as the Kubernetes CronJob in infra/k8s instead)."
  type        = string
  default     = ""
}

variable "dump_backup_recipients" {
  description = "BACKSTOP_RECIPIENTS of the dump job: the armored backup public key (keys/backup.pub.asc). Not secret."
  type        = string
  default     = ""
}

variable "dump_namespace" {
  description = "BACKSTOP_NAMESPACE of the dump job."
  type        = string
  default     = "production"
}

variable "dump_schedule" {
  description = "Cron schedule of the dump job (Cloud Scheduler)."
  type        = string
  default     = "0 2 * * *"
}

variable "dump_time_zone" {
  description = "Time zone of dump_schedule."
  type        = string
  default     = "Etc/UTC"
}

variable "dump_job_cpu" {
  description = "CPU limit of the dump job (deflate runs on every CPU)."
  type        = string
  default     = "2"
}

variable "dump_job_memory" {
  description = "Memory limit of the dump job. backstop peaks at 54 MiB dumping a 946 MiB database (README Benchmarks), pg_dump holds the catalog; 512Mi is Cloud Run's minimum for a job."
  type        = string
  default     = "512Mi"
}

variable "dump_job_timeout" {
  description = "Longest a dump may run before Cloud Run stops it (and retries)."
  type        = string
  default     = "21600s"
}

variable "dump_job_max_retries" {
  description = "Retries of a failed dump within one execution."
  type        = number
  default     = 2
}

variable "dump_job_subnetwork" {
  description = "Subnetwork for direct VPC egress, to reach a database on a private address (e.g. projects/P/regions/R/subnetworks/S); null: no VPC access."
  type        = string
  default     = null
}

# --- Alerts (alerts.tf) -----------------------------------------------------

variable "alert_notification_channels" {
  description = "Cloud Monitoring notification channels the dump alerts page (ids like projects/P/notificationChannels/N: the on-call email, PagerDuty, ...). Empty: the policies are created without notifications."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for c in var.alert_notification_channels : can(regex("^projects/[^/]+/notificationChannels/[^/]+$", c))])
    error_message = "alert_notification_channels entries must look like projects/PROJECT/notificationChannels/ID."
  }
}

variable "alert_dump_namespaces" {
  description = "Namespaces whose dump must complete at least every 26 h (one alert policy each). Usually dump_namespace."
  type        = list(string)
  default     = ["production"]
}
