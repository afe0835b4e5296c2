output "replica_bucket" {
  description = "BACKSTOP_S3_BUCKET."
  value       = aws_s3_bucket.replica.bucket
}

output "replicator_function_url" {
  value = aws_lambda_function_url.replicator.function_url
}

output "retention_function_url" {
  value = aws_lambda_function_url.retention.function_url
}

output "replicator_role_arn" {
  value = aws_iam_role.replicator.arn
}

output "retention_role_arn" {
  value = aws_iam_role.retention.arn
}

output "restore_role_arn" {
  description = "Role the GCP restore service account assumes (AssumeRoleWithWebIdentity) to read S3."
  value       = local.restore_role_enabled ? aws_iam_role.restore[0].arn : null
}

# Everything infra/gcp needs on its second apply:
#   terraform -chdir=infra/aws output -json gcp_tfvars > infra/gcp/aws.auto.tfvars.json
output "gcp_tfvars" {
  description = "Inputs of infra/gcp, as a tfvars JSON object."
  value = {
    replicator_function_url = aws_lambda_function_url.replicator.function_url
    retention_function_url  = aws_lambda_function_url.retention.function_url
  }
}
