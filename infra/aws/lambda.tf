# Function code: `cargo lambda build --release --arm64` writes
# target/lambda/<function>/bootstrap; these zips are made from it at plan time.
data "archive_file" "replicator" {
  type        = "zip"
  source_file = "${local.artifacts_dir}/replicator/bootstrap"
  output_path = "${path.module}/build/replicator.zip"
}

data "archive_file" "retention" {
  type        = "zip"
  source_file = "${local.artifacts_dir}/retention/bootstrap"
  output_path = "${path.module}/build/retention.zip"
}

# Configuration files too large or too structured for the environment: the
# Workload Identity Federation credential configs (no secrets in them) and
# the public keys. Mounted at /opt/backstop/.
data "archive_file" "config_layer" {
  type        = "zip"
  output_path = "${path.module}/build/config-layer.zip"

  source {
    filename = "backstop/replicator-gcp-credentials.json"
    content  = var.replicator_gcp_credential_config
  }

  source {
    filename = "backstop/retention-gcp-credentials.json"
    content  = var.retention_gcp_credential_config
  }

  source {
    filename = "backstop/signing-public-key.asc"
    content  = var.signing_public_key
  }

  source {
    filename = "backstop/recipients.asc"
    content  = var.backup_recipients
  }
}

resource "aws_lambda_layer_version" "config" {
  layer_name               = "${var.name_prefix}-config"
  description              = "Backstop: GCP credential configs (WIF) and OpenPGP public keys."
  filename                 = data.archive_file.config_layer.output_path
  source_code_hash         = data.archive_file.config_layer.output_base64sha256
  compatible_runtimes      = ["provided.al2023"]
  compatible_architectures = ["arm64"]
}

resource "aws_cloudwatch_log_group" "replicator" {
  # checkov:skip=CKV_AWS_158: Logs carry object names, digests and findings, never backup contents or keys; CloudWatch's default encryption is enough.
  name              = "/aws/lambda/${var.name_prefix}-replicator"
  retention_in_days = var.log_retention_days
}

resource "aws_cloudwatch_log_group" "retention" {
  # checkov:skip=CKV_AWS_158: Same as the replicator's log group.
  name              = "/aws/lambda/${var.name_prefix}-retention"
  retention_in_days = var.log_retention_days
}

resource "aws_lambda_function" "replicator" {
  # checkov:skip=CKV_AWS_50: X-Ray tracing would add xray:Put* permissions and a sidecar for little gain; each event emits structured JSON logs.
  # checkov:skip=CKV_AWS_116: Invoked synchronously through its Function URL: Pub/Sub redelivers failures and dead-letters them on the GCP side. A Lambda DLQ only applies to asynchronous invocations.
  # checkov:skip=CKV_AWS_117: Talks only to public Google and AWS endpoints; a VPC would need a NAT gateway and adds nothing here.
  # checkov:skip=CKV_AWS_173: The environment holds bucket names, public keys and audiences, no secrets; AWS-managed encryption at rest is enough.
  # checkov:skip=CKV_AWS_272: Code signing is left to the deployment pipeline (the zip is built from the same commit being applied).
  function_name                  = "${var.name_prefix}-replicator"
  description                    = "Backstop: verify new GCS backups and copy them to S3."
  role                           = aws_iam_role.replicator.arn
  runtime                        = "provided.al2023"
  architectures                  = ["arm64"]
  handler                        = "bootstrap"
  filename                       = data.archive_file.replicator.output_path
  source_code_hash               = data.archive_file.replicator.output_base64sha256
  memory_size                    = var.replicator_memory_mb
  timeout                        = var.replicator_timeout_seconds
  reserved_concurrent_executions = var.replicator_reserved_concurrency
  layers                         = [aws_lambda_layer_version.config.arn]

  environment {
    variables = local.replicator_environment
  }

  logging_config {
    log_format = "JSON"
    log_group  = aws_cloudwatch_log_group.replicator.name
  }

  lifecycle {
    precondition {
      condition     = sum([for k, v in local.replicator_environment : length(k) + length(v)]) <= local.environment_limit
      error_message = "The replicator's environment exceeds Lambda's 4 KB (BACKSTOP_RECIPIENTS is usually the culprit: use fewer or smaller keys, e.g. Curve25519)."
    }
  }

  depends_on = [aws_iam_role_policy.replicator]
}

resource "aws_lambda_function" "retention" {
  # checkov:skip=CKV_AWS_50: As for the replicator.
  # checkov:skip=CKV_AWS_116: Invoked synchronously through its Function URL by Cloud Scheduler (which retries); an optional EventBridge run that fails is retried by EventBridge and the next scheduled run redoes the work, which is idempotent.
  # checkov:skip=CKV_AWS_117: As for the replicator.
  # checkov:skip=CKV_AWS_173: As for the replicator.
  # checkov:skip=CKV_AWS_272: As for the replicator.
  function_name                  = "${var.name_prefix}-retention"
  description                    = "Backstop: prune backups in GCS and S3 by policy and audit both."
  role                           = aws_iam_role.retention.arn
  runtime                        = "provided.al2023"
  architectures                  = ["arm64"]
  handler                        = "bootstrap"
  filename                       = data.archive_file.retention.output_path
  source_code_hash               = data.archive_file.retention.output_base64sha256
  memory_size                    = var.retention_memory_mb
  timeout                        = var.retention_timeout_seconds
  reserved_concurrent_executions = var.retention_reserved_concurrency
  layers                         = [aws_lambda_layer_version.config.arn]

  environment {
    variables = local.retention_environment
  }

  logging_config {
    log_format = "JSON"
    log_group  = aws_cloudwatch_log_group.retention.name
  }

  lifecycle {
    precondition {
      condition     = sum([for k, v in local.retention_environment : length(k) + length(v)]) <= local.environment_limit
      error_message = "The retention function's environment exceeds Lambda's 4 KB (see BACKSTOP_RECIPIENTS)."
    }
  }

  depends_on = [aws_iam_role_policy.retention]
}

# Function URLs with authorization NONE: the callers are Google's Pub/Sub push
# and Cloud Scheduler, which cannot sign AWS SigV4 requests. Each request
# carries a Google-signed OIDC token instead, and the handler verifies it
# (issuer accounts.google.com, audience BACKSTOP_OIDC_AUDIENCE, email
# BACKSTOP_OIDC_SERVICE_ACCOUNT) before it does anything else; a request
# without a valid token is rejected with 401 and touches no bucket.
resource "aws_lambda_function_url" "replicator" {
  # checkov:skip=CKV_AWS_258: Public URL on purpose: Google cannot sign SigV4; the handler verifies the Google-signed OIDC token of every request (see the comment above).
  function_name      = aws_lambda_function.replicator.function_name
  authorization_type = "NONE"
  invoke_mode        = "BUFFERED"
}

resource "aws_lambda_function_url" "retention" {
  # checkov:skip=CKV_AWS_258: As for the replicator: Cloud Scheduler sends a Google-signed OIDC token that the handler verifies.
  function_name      = aws_lambda_function.retention.function_name
  authorization_type = "NONE"
  invoke_mode        = "BUFFERED"
}

# Since October 2025 a public Function URL needs both permissions:
# lambda:InvokeFunctionUrl (auth type NONE) and lambda:InvokeFunction
# restricted to calls that come through the Function URL.
resource "aws_lambda_permission" "replicator_url" {
  # checkov:skip=CKV_AWS_301: Public by design, like the AuthType NONE Function URL it serves: the handler admits only requests with a valid Google-signed OIDC token.
  statement_id           = "BackstopFunctionUrlPublic"
  function_name          = aws_lambda_function.replicator.function_name
  action                 = "lambda:InvokeFunctionUrl"
  principal              = "*"
  function_url_auth_type = "NONE"
}

resource "aws_lambda_permission" "replicator_url_invoke" {
  # checkov:skip=CKV_AWS_301: Public by design, like the AuthType NONE Function URL it serves: the handler admits only requests with a valid Google-signed OIDC token.
  statement_id             = "BackstopInvokeViaFunctionUrl"
  function_name            = aws_lambda_function.replicator.function_name
  action                   = "lambda:InvokeFunction"
  principal                = "*"
  invoked_via_function_url = true
}

resource "aws_lambda_permission" "retention_url" {
  # checkov:skip=CKV_AWS_301: Public by design, like the AuthType NONE Function URL it serves: the handler admits only requests with a valid Google-signed OIDC token.
  statement_id           = "BackstopFunctionUrlPublic"
  function_name          = aws_lambda_function.retention.function_name
  action                 = "lambda:InvokeFunctionUrl"
  principal              = "*"
  function_url_auth_type = "NONE"
}

resource "aws_lambda_permission" "retention_url_invoke" {
  # checkov:skip=CKV_AWS_301: Public by design, like the AuthType NONE Function URL it serves: the handler admits only requests with a valid Google-signed OIDC token.
  statement_id             = "BackstopInvokeViaFunctionUrl"
  function_name            = aws_lambda_function.retention.function_name
  action                   = "lambda:InvokeFunction"
  principal                = "*"
  invoked_via_function_url = true
}

# Optional EventBridge schedule for retention (the scheduled-event sample).
resource "aws_cloudwatch_event_rule" "retention" {
  count               = var.enable_eventbridge_schedule ? 1 : 0
  name                = "${var.name_prefix}-retention"
  description         = "Backstop retention run."
  schedule_expression = var.eventbridge_schedule_expression
}

resource "aws_cloudwatch_event_target" "retention" {
  count = var.enable_eventbridge_schedule ? 1 : 0
  rule  = aws_cloudwatch_event_rule.retention[0].name
  arn   = aws_lambda_function.retention.arn

  retry_policy {
    maximum_retry_attempts       = 2
    maximum_event_age_in_seconds = 3600
  }
}

resource "aws_lambda_permission" "retention_eventbridge" {
  count         = var.enable_eventbridge_schedule ? 1 : 0
  statement_id  = "BackstopEventBridgeSchedule"
  function_name = aws_lambda_function.retention.function_name
  action        = "lambda:InvokeFunction"
  principal     = "events.amazonaws.com"
  source_arn    = aws_cloudwatch_event_rule.retention[0].arn
}
