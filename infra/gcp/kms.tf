# Envelope encryption: the OpenPGP secret keys live in the repository wrapped
# by these KMS keys. Two keys, so that each job can unwrap only its own:
# the dump job unwraps the signing key (it signs manifests), the restore job
# unwraps the backup key (it decrypts backups). Nobody else gets decrypt.
resource "google_kms_key_ring" "backstop" {
  name     = "${var.name_prefix}-keys"
  location = local.kms_location
  project  = var.project_id

  depends_on = [google_project_service.enabled]
}

resource "google_kms_crypto_key" "backup_key_wrap" {
  name            = "${var.name_prefix}-backup-key-wrap"
  key_ring        = google_kms_key_ring.backstop.id
  purpose         = "ENCRYPT_DECRYPT"
  rotation_period = var.kms_rotation_period

  version_template {
    algorithm        = "GOOGLE_SYMMETRIC_ENCRYPTION"
    protection_level = "SOFTWARE"
  }

  lifecycle {
    # Destroying it makes every backup unreadable.
    prevent_destroy = true
  }
}

resource "google_kms_crypto_key" "signing_key_wrap" {
  name            = "${var.name_prefix}-signing-key-wrap"
  key_ring        = google_kms_key_ring.backstop.id
  purpose         = "ENCRYPT_DECRYPT"
  rotation_period = var.kms_rotation_period

  version_template {
    algorithm        = "GOOGLE_SYMMETRIC_ENCRYPTION"
    protection_level = "SOFTWARE"
  }

  lifecycle {
    prevent_destroy = true
  }
}

# restore: unwrap the backup secret key.
resource "google_kms_crypto_key_iam_member" "restore_unwraps_backup_key" {
  crypto_key_id = google_kms_crypto_key.backup_key_wrap.id
  role          = "roles/cloudkms.cryptoKeyDecrypter"
  member        = google_service_account.restore.member
}

# dump: unwrap the signing secret key (it signs manifests; it cannot decrypt
# backups: no access to backup_key_wrap).
resource "google_kms_crypto_key_iam_member" "dump_unwraps_signing_key" {
  crypto_key_id = google_kms_crypto_key.signing_key_wrap.id
  role          = "roles/cloudkms.cryptoKeyDecrypter"
  member        = google_service_account.dump.member
}

# Operators wrap new or rotated secret keys (encrypt only).
resource "google_kms_crypto_key_iam_member" "operators_wrap_backup_key" {
  for_each      = toset(var.kms_encrypter_members)
  crypto_key_id = google_kms_crypto_key.backup_key_wrap.id
  role          = "roles/cloudkms.cryptoKeyEncrypter"
  member        = each.value
}

resource "google_kms_crypto_key_iam_member" "operators_wrap_signing_key" {
  for_each      = toset(var.kms_encrypter_members)
  crypto_key_id = google_kms_crypto_key.signing_key_wrap.id
  role          = "roles/cloudkms.cryptoKeyEncrypter"
  member        = each.value
}
