# One service account per part. What each may do is granted next to the
# resource it applies to (storage.tf, kms.tf, pubsub.tf); none gets a
# project-level role and none has a key: the Lambda functions come in through
# Workload Identity Federation (wif.tf), jobs through Workload Identity or by
# running as the account (Cloud Run).
#
# | part       | may                                                            |
# |------------|----------------------------------------------------------------|
# | dump       | create objects (not under _drills/), unwrap the signing key,    |
# |            | read its own two secrets (Cloud Run job, dump_job.tf)           |
# | replicator | read backups, publish alerts                                   |
# | retention  | list/read/delete objects, read bucket config, publish alerts   |
# | restore    | read backups, create _drills/ records, unwrap the backup key    |
# | push       | nothing: identity in the OIDC token Pub/Sub pushes with        |
# | scheduler  | run the dump Cloud Run job; otherwise only the identity in the |
# |            | OIDC token Cloud Scheduler sends to the retention function     |

resource "google_service_account" "dump" {
  account_id   = "${var.name_prefix}-dump"
  display_name = "Backstop dump job"
  description  = "Writes new encrypted backups to the backups bucket; cannot read, overwrite or delete them."
  project      = var.project_id
}

resource "google_service_account" "replicator" {
  account_id   = "${var.name_prefix}-replicator"
  display_name = "Backstop replicator (AWS Lambda via WIF)"
  description  = "Reads backups to copy them to S3 and publishes alerts; deletes nothing."
  project      = var.project_id
}

resource "google_service_account" "retention" {
  account_id   = "${var.name_prefix}-retention"
  display_name = "Backstop retention (AWS Lambda via WIF)"
  description  = "Prunes backups by policy, audits the bucket and publishes alerts; cannot decrypt."
  project      = var.project_id
}

resource "google_service_account" "restore" {
  account_id   = "${var.name_prefix}-restore"
  display_name = "Backstop restore job"
  description  = "Reads backups, unwraps the backup key, writes drill records; deletes nothing."
  project      = var.project_id
}

resource "google_service_account" "push_invoker" {
  account_id   = "${var.name_prefix}-push"
  display_name = "Backstop Pub/Sub push identity"
  description  = "Signs the OIDC tokens of pushes to the replicator Function URL. Holds no roles."
  project      = var.project_id
}

resource "google_service_account" "scheduler_invoker" {
  account_id   = "${var.name_prefix}-scheduler"
  display_name = "Backstop Cloud Scheduler identity"
  description  = "Signs the OIDC tokens of scheduled calls to the retention Function URL; may start the dump Cloud Run job. No other role."
  project      = var.project_id
}

# storage.objects.create and nothing else: no read, no list, no delete (so no
# overwrite either). Used by dump (outside _drills/) and restore (drills/ only).
resource "google_project_iam_custom_role" "object_create" {
  project     = var.project_id
  role_id     = "${local.role_prefix}ObjectCreate"
  title       = "Backstop: create objects only"
  description = "Create new objects; cannot read, list, overwrite or delete."
  permissions = ["storage.objects.create"]
}

resource "google_project_iam_custom_role" "retention" {
  project     = var.project_id
  role_id     = "${local.role_prefix}Retention"
  title       = "Backstop: retention and audit"
  description = "List, read and delete objects; read the bucket's configuration (lifecycle rules) for the audit."
  permissions = [
    "storage.buckets.get",
    "storage.objects.delete",
    "storage.objects.get",
    "storage.objects.list",
  ]
}

# Jobs that run outside GCP-managed runtimes act as their account through
# Workload Identity (GKE CronJob, CI pipeline).
resource "google_service_account_iam_member" "dump_workload_identity" {
  for_each           = toset(var.dump_workload_identity_members)
  service_account_id = google_service_account.dump.name
  role               = "roles/iam.workloadIdentityUser"
  member             = each.value
}

resource "google_service_account_iam_member" "restore_workload_identity" {
  for_each           = toset(var.restore_workload_identity_members)
  service_account_id = google_service_account.restore.name
  role               = "roles/iam.workloadIdentityUser"
  member             = each.value
}
