# One role per function, each with only what DESIGN.md's table allows. No
# role may delete an object version (s3:DeleteObjectVersion), bypass Object
# Lock (s3:BypassGovernanceRetention), change the bucket or use KMS; the
# offline checks in infra/tests enforce the allow-list.

data "aws_iam_policy_document" "lambda_assume" {
  statement {
    actions = ["sts:AssumeRole"]

    principals {
      type        = "Service"
      identifiers = ["lambda.amazonaws.com"]
    }

    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [data.aws_caller_identity.current.account_id]
    }
  }
}

# --- replicator ---------------------------------------------------------------

resource "aws_iam_role" "replicator" {
  # The name is what infra/gcp's Workload Identity provider trusts.
  name               = var.replicator_role_name
  description        = "Backstop replicator: create objects in the replica bucket."
  assume_role_policy = data.aws_iam_policy_document.lambda_assume.json
}

data "aws_iam_policy_document" "replicator" {
  # Create objects, never replace one: PutObject and CompleteMultipartUpload
  # only with If-None-Match: * (a stolen replicator credential cannot
  # overwrite a replica, not even with a new version).
  statement {
    sid       = "CreateReplicasOnlyIfAbsent"
    actions   = ["s3:PutObject"]
    resources = ["${aws_s3_bucket.replica.arn}/*"]

    condition {
      test     = "StringEquals"
      variable = "s3:if-none-match"
      values   = ["*"]
    }
  }

  # The steps of a multipart upload before its completion
  # (CreateMultipartUpload, UploadPart) take no conditional header; they
  # are exempted by s3:ObjectCreationOperation = false and make no object
  # visible. Completing the upload is the conditional statement above.
  statement {
    sid       = "UploadReplicaParts"
    actions   = ["s3:PutObject"]
    resources = ["${aws_s3_bucket.replica.arn}/*"]

    condition {
      test     = "Bool"
      variable = "s3:ObjectCreationOperation"
      values   = ["false"]
    }
  }

  # Abort and list parts let a failed upload be cleaned up or resumed.
  statement {
    sid = "CleanUpUploads"
    actions = [
      "s3:AbortMultipartUpload",
      "s3:ListMultipartUploadParts",
    ]
    resources = ["${aws_s3_bucket.replica.arn}/*"]
  }

  # Reading back: HEAD/GET an existing copy to compare its checksum with the
  # manifest (a redelivered event then finds the copy done and acknowledges)
  # and ListBucket so that a missing object answers 404, not 403. Backups are
  # ciphertext and the role has no key, so reading discloses nothing.
  statement {
    sid       = "CheckExistingReplicas"
    actions   = ["s3:GetObject"]
    resources = ["${aws_s3_bucket.replica.arn}/*"]
  }

  # ListBucketMultipartUploads finds the open upload of a copy that paused
  # at its deadline, so the next delivery resumes it (and the copy leases
  # under _replication/ are listed with ListBucket).
  statement {
    sid       = "ListReplicaBucket"
    actions   = ["s3:ListBucket", "s3:ListBucketMultipartUploads"]
    resources = [aws_s3_bucket.replica.arn]
  }

  statement {
    sid       = "WriteOwnLogs"
    actions   = ["logs:CreateLogStream", "logs:PutLogEvents"]
    resources = ["${aws_cloudwatch_log_group.replicator.arn}:*"]
  }
}

resource "aws_iam_role_policy" "replicator" {
  name   = "replicator"
  role   = aws_iam_role.replicator.id
  policy = data.aws_iam_policy_document.replicator.json
}

# --- retention ----------------------------------------------------------------

resource "aws_iam_role" "retention" {
  name               = var.retention_role_name
  description        = "Backstop retention: list and delete in the replica bucket, read its configuration."
  assume_role_policy = data.aws_iam_policy_document.lambda_assume.json
}

data "aws_iam_policy_document" "retention" {
  statement {
    sid       = "ListAndReadConfig"
    actions   = ["s3:ListBucket", "s3:ListBucketMultipartUploads", "s3:GetBucketVersioning", "s3:GetLifecycleConfiguration", "s3:GetBucketObjectLockConfiguration"]
    resources = [aws_s3_bucket.replica.arn]
  }

  # Abort the open upload of a copy whose backup is gone from the source
  # or failed verification there (the audit reports copies in progress).
  statement {
    sid       = "AbortAbandonedUploads"
    actions   = ["s3:AbortMultipartUpload"]
    resources = ["${aws_s3_bucket.replica.arn}/*"]
  }

  # Read manifests (digests, signatures) for the audit; delete current
  # versions (adds a delete marker; the locked version stays until the
  # lifecycle rule removes it).
  statement {
    sid       = "PruneObjects"
    actions   = ["s3:GetObject", "s3:DeleteObject"]
    resources = ["${aws_s3_bucket.replica.arn}/*"]
  }

  statement {
    sid       = "WriteOwnLogs"
    actions   = ["logs:CreateLogStream", "logs:PutLogEvents"]
    resources = ["${aws_cloudwatch_log_group.retention.arn}:*"]
  }
}

resource "aws_iam_role_policy" "retention" {
  name   = "retention"
  role   = aws_iam_role.retention.id
  policy = data.aws_iam_policy_document.retention.json
}

# --- restore (S3 fallback) ----------------------------------------------------

# The restore job runs on the GCP side as the restore service account. When
# GCS is unavailable it reads from S3 by exchanging a Google-signed ID token
# for this role (AssumeRoleWithWebIdentity): no AWS access keys.
data "aws_iam_policy_document" "restore_assume" {
  statement {
    actions = ["sts:AssumeRoleWithWebIdentity"]

    principals {
      type        = "Federated"
      identifiers = ["accounts.google.com"]
    }

    condition {
      test     = "StringEquals"
      variable = "accounts.google.com:sub"
      values   = [var.restore_service_account_unique_id]
    }

    condition {
      test     = "StringEquals"
      variable = "accounts.google.com:aud"
      values   = [var.restore_service_account_unique_id]
    }
  }
}

resource "aws_iam_role" "restore" {
  count              = local.restore_role_enabled ? 1 : 0
  name               = "${var.name_prefix}-restore"
  description        = "Backstop restore: read backups from the replica bucket (fallback when GCS is unavailable)."
  assume_role_policy = data.aws_iam_policy_document.restore_assume.json
}

data "aws_iam_policy_document" "restore" {
  statement {
    sid       = "ListReplicaBucket"
    actions   = ["s3:ListBucket"]
    resources = [aws_s3_bucket.replica.arn]
  }

  statement {
    sid       = "ReadReplicas"
    actions   = ["s3:GetObject"]
    resources = ["${aws_s3_bucket.replica.arn}/*"]
  }
}

resource "aws_iam_role_policy" "restore" {
  count  = local.restore_role_enabled ? 1 : 0
  name   = "restore"
  role   = aws_iam_role.restore[0].id
  policy = data.aws_iam_policy_document.restore.json
}
