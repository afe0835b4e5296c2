# OBJECT_FINALIZE notifications of the backups bucket.
resource "google_pubsub_topic" "object_finalize" {
  # checkov:skip=CKV_GCP_83: Messages carry object metadata only (name, size, hashes); backups are OpenPGP-encrypted before they reach GCS. Google-managed encryption is enough.
  name    = "${var.name_prefix}-object-finalize"
  project = var.project_id

  depends_on = [google_project_service.enabled]
}

resource "google_pubsub_topic_iam_member" "gcs_publishes_finalize" {
  topic  = google_pubsub_topic.object_finalize.id
  role   = "roles/pubsub.publisher"
  member = "serviceAccount:${data.google_storage_project_service_account.gcs.email_address}"
}

# Events the replicator could not take after push_max_delivery_attempts.
resource "google_pubsub_topic" "dead_letter" {
  # checkov:skip=CKV_GCP_83: Same metadata-only messages as the finalize topic.
  name    = "${var.name_prefix}-object-finalize-dead-letter"
  project = var.project_id

  depends_on = [google_project_service.enabled]
}

# Keeps dead-lettered events (7 days) for inspection and replay.
resource "google_pubsub_subscription" "dead_letter" {
  name                       = "${var.name_prefix}-object-finalize-dead-letter"
  project                    = var.project_id
  topic                      = google_pubsub_topic.dead_letter.id
  message_retention_duration = "604800s"
  ack_deadline_seconds       = 60

  expiration_policy {
    ttl = ""
  }
}

resource "google_pubsub_topic_iam_member" "pubsub_agent_publishes_dead_letters" {
  topic  = google_pubsub_topic.dead_letter.id
  role   = "roles/pubsub.publisher"
  member = local.pubsub_service_agent
}

# Critical audit findings and replication failures (BACKSTOP_ALERT_TOPIC).
resource "google_pubsub_topic" "alerts" {
  # checkov:skip=CKV_GCP_83: Alerts name backups and findings, never backup contents or keys.
  name    = "${var.name_prefix}-alerts"
  project = var.project_id

  depends_on = [google_project_service.enabled]
}

resource "google_pubsub_topic_iam_member" "replicator_publishes_alerts" {
  topic  = google_pubsub_topic.alerts.id
  role   = "roles/pubsub.publisher"
  member = google_service_account.replicator.member
}

resource "google_pubsub_topic_iam_member" "retention_publishes_alerts" {
  topic  = google_pubsub_topic.alerts.id
  role   = "roles/pubsub.publisher"
  member = google_service_account.retention.member
}

# Push to the replicator's Function URL, authenticated by a Google-signed OIDC
# token (the Function URL itself is AuthType NONE: Google cannot sign SigV4,
# so the handler verifies issuer, audience and the push service account).
# Created once infra/aws has produced the URL (second GCP apply).
resource "google_pubsub_subscription" "replicator_push" {
  count = local.replicator_enabled ? 1 : 0

  name                       = "${var.name_prefix}-replicator-push"
  project                    = var.project_id
  topic                      = google_pubsub_topic.object_finalize.id
  ack_deadline_seconds       = var.push_ack_deadline_seconds
  message_retention_duration = "604800s"
  retain_acked_messages      = false

  push_config {
    push_endpoint = var.replicator_function_url

    oidc_token {
      service_account_email = google_service_account.push_invoker.email
      audience              = local.replicator_oidc_audience
    }
  }

  # Transient failures (5xx, timeouts) are redelivered with backoff; a bad
  # backup is acknowledged by the handler, so it does not loop here.
  retry_policy {
    minimum_backoff = var.push_minimum_backoff
    maximum_backoff = var.push_maximum_backoff
  }

  dead_letter_policy {
    dead_letter_topic     = google_pubsub_topic.dead_letter.id
    max_delivery_attempts = var.push_max_delivery_attempts
  }

  expiration_policy {
    ttl = ""
  }

  depends_on = [google_pubsub_topic_iam_member.pubsub_agent_publishes_dead_letters]
}

# Dead-lettering needs the Pub/Sub service agent to acknowledge on the source
# subscription.
resource "google_pubsub_subscription_iam_member" "pubsub_agent_forwards_dead_letters" {
  count        = local.replicator_enabled ? 1 : 0
  subscription = google_pubsub_subscription.replicator_push[0].id
  role         = "roles/pubsub.subscriber"
  member       = local.pubsub_service_agent
}

# Only for projects created before 2021-04-08 (see the variable).
resource "google_service_account_iam_member" "pubsub_agent_mints_push_tokens" {
  count              = var.grant_pubsub_token_creator ? 1 : 0
  service_account_id = google_service_account.push_invoker.name
  role               = "roles/iam.serviceAccountTokenCreator"
  member             = local.pubsub_service_agent
}
