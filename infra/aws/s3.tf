# The replica bucket: the off-site copy (3-2-1). Versioned with Object Lock,
# so that even the retention function only hides a backup (delete marker);
# the locked version itself stays until its retention has passed and the
# noncurrent-version lifecycle rule removes it.
resource "aws_s3_bucket" "replica" {
  # checkov:skip=CKV_AWS_18: Server access logs would need a second bucket to protect; use CloudTrail S3 data events for an audit trail of this bucket.
  # checkov:skip=CKV_AWS_144: This bucket is itself the cross-cloud replica of the GCS backups; a third copy is out of scope.
  # checkov:skip=CKV_AWS_145: Objects are OpenPGP-encrypted before upload; SSE-S3 avoids giving the functions KMS permissions (the table forbids them to decrypt).
  # checkov:skip=CKV2_AWS_62: Nothing consumes S3 events; the replicator is driven by GCS notifications.
  bucket              = var.replica_bucket_name
  object_lock_enabled = true
  force_destroy       = false
}

resource "aws_s3_bucket_versioning" "replica" {
  bucket = aws_s3_bucket.replica.id

  versioning_configuration {
    status = "Enabled"
  }
}

resource "aws_s3_bucket_object_lock_configuration" "replica" {
  bucket = aws_s3_bucket.replica.id

  rule {
    default_retention {
      mode = var.object_lock_mode
      days = var.object_lock_days
    }
  }

  depends_on = [aws_s3_bucket_versioning.replica]
}

resource "aws_s3_bucket_public_access_block" "replica" {
  bucket                  = aws_s3_bucket.replica.id
  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

resource "aws_s3_bucket_ownership_controls" "replica" {
  bucket = aws_s3_bucket.replica.id

  rule {
    object_ownership = "BucketOwnerEnforced"
  }
}

resource "aws_s3_bucket_server_side_encryption_configuration" "replica" {
  bucket = aws_s3_bucket.replica.id

  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm = "AES256"
    }
  }
}

resource "aws_s3_bucket_lifecycle_configuration" "replica" {
  bucket = aws_s3_bucket.replica.id

  # Versions deleted by the retention function (now noncurrent) go for good
  # once their lock has passed.
  rule {
    id     = "expire-noncurrent-versions"
    status = "Enabled"

    filter {}

    noncurrent_version_expiration {
      noncurrent_days = var.noncurrent_version_days
    }
  }

  # Delete markers left alone once their versions are gone.
  rule {
    id     = "remove-expired-delete-markers"
    status = "Enabled"

    filter {}

    expiration {
      expired_object_delete_marker = true
    }
  }

  rule {
    id     = "abort-incomplete-multipart-uploads"
    status = "Enabled"

    filter {}

    abort_incomplete_multipart_upload {
      days_after_initiation = 1
    }
  }

  lifecycle {
    precondition {
      condition     = var.noncurrent_version_days >= var.object_lock_days
      error_message = "noncurrent_version_days must be >= object_lock_days."
    }
  }

  depends_on = [aws_s3_bucket_versioning.replica]
}

data "aws_iam_policy_document" "replica_bucket" {
  statement {
    sid       = "DenyInsecureTransport"
    effect    = "Deny"
    actions   = ["s3:*"]
    resources = [aws_s3_bucket.replica.arn, "${aws_s3_bucket.replica.arn}/*"]

    principals {
      type        = "*"
      identifiers = ["*"]
    }

    condition {
      test     = "Bool"
      variable = "aws:SecureTransport"
      values   = ["false"]
    }
  }
}

resource "aws_s3_bucket_policy" "replica" {
  bucket = aws_s3_bucket.replica.id
  policy = data.aws_iam_policy_document.replica_bucket.json

  depends_on = [aws_s3_bucket_public_access_block.replica]
}
