# The backups bucket. Unversioned on purpose: the retention function decides
# what to keep, and soft delete keeps deleted objects recoverable for a while.
#
# On an unversioned bucket every lifecycle Delete rule states
# with_state = "LIVE". Without it the rule may be stored as applying to
# noncurrent versions only (the seed's "Live state = Non-current" pitfall) and
# never fires, since an unversioned bucket has no noncurrent objects.
resource "google_storage_bucket" "backups" {
  # checkov:skip=CKV_GCP_62: Access logs would go to another bucket that this configuration would then have to protect as well; Cloud Audit Logs (Data Access for Cloud Storage) are the recommended audit trail and are enabled per organisation.
  # checkov:skip=CKV_GCP_78: Not versioned by design: backups are immutable, named by time and written once (the dump job cannot overwrite: it has no delete permission); retention and lifecycle act on live objects and soft delete covers accidental deletion. Versioning would make every lifecycle Delete leave noncurrent copies behind.
  name                        = var.backups_bucket_name
  project                     = var.project_id
  location                    = local.bucket_location
  storage_class               = "STANDARD"
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  force_destroy               = false

  versioning {
    enabled = false
  }

  soft_delete_policy {
    retention_duration_seconds = var.soft_delete_retention_days * 86400
  }

  # Safety net behind the retention function: nothing lives forever.
  lifecycle_rule {
    condition {
      age        = var.backup_max_age_days
      with_state = "LIVE"
    }
    action {
      type = "Delete"
    }
  }

  # Short-lived namespaces (per-branch backups), by name prefix.
  dynamic "lifecycle_rule" {
    for_each = var.lifecycle_prefix_rules
    content {
      condition {
        age            = lifecycle_rule.value.age_days
        matches_prefix = lifecycle_rule.value.prefixes
        with_state     = "LIVE"
      }
      action {
        type = "Delete"
      }
    }
  }

  lifecycle_rule {
    condition {
      age = var.abort_incomplete_uploads_days
    }
    action {
      type = "AbortIncompleteMultipartUpload"
    }
  }

  labels = {
    app = "backstop"
  }

  depends_on = [google_project_service.enabled]
}

# Bucket-level grants, one per part (see service_accounts.tf for who is who).

# dump: create objects, and only outside _drills/ (it cannot forge drill
# records). Without storage.objects.delete it cannot overwrite either.
resource "google_storage_bucket_iam_member" "dump_create" {
  bucket = google_storage_bucket.backups.name
  role   = google_project_iam_custom_role.object_create.id
  member = google_service_account.dump.member

  condition {
    title       = "not-drill-records"
    description = "The dump job writes backups, never drill records."
    expression  = "!resource.name.startsWith(\"projects/_/buckets/${var.backups_bucket_name}/objects/${local.drills_prefix}\")"
  }
}

# replicator: read backups (get and list).
resource "google_storage_bucket_iam_member" "replicator_read" {
  bucket = google_storage_bucket.backups.name
  role   = "roles/storage.objectViewer"
  member = google_service_account.replicator.member
}

# retention: list, read metadata/manifests, delete, and read the bucket's
# configuration (lifecycle rules, for the audit).
resource "google_storage_bucket_iam_member" "retention_prune" {
  bucket = google_storage_bucket.backups.name
  role   = google_project_iam_custom_role.retention.id
  member = google_service_account.retention.member
}

# restore: read backups ...
resource "google_storage_bucket_iam_member" "restore_read" {
  bucket = google_storage_bucket.backups.name
  role   = "roles/storage.objectViewer"
  member = google_service_account.restore.member
}

# ... and write drill records, under _drills/ only.
resource "google_storage_bucket_iam_member" "restore_drill_records" {
  bucket = google_storage_bucket.backups.name
  role   = google_project_iam_custom_role.object_create.id
  member = google_service_account.restore.member

  condition {
    title       = "drill-records-only"
    description = "The restore job may create objects under _drills/ and nowhere else."
    expression  = "resource.name.startsWith(\"projects/_/buckets/${var.backups_bucket_name}/objects/${local.drills_prefix}\")"
  }
}

# OBJECT_FINALIZE -> Pub/Sub. The replicator acts on manifests (the commit
# markers) and acknowledges every other object's event.
resource "google_storage_notification" "finalize" {
  bucket         = google_storage_bucket.backups.name
  payload_format = "JSON_API_V1"
  topic          = google_pubsub_topic.object_finalize.id
  event_types    = ["OBJECT_FINALIZE"]

  depends_on = [google_pubsub_topic_iam_member.gcs_publishes_finalize]
}
