terraform {
  # 1.10: S3 backend locking with use_lockfile.
  required_version = ">= 1.10.0"

  required_providers {
    aws = {
      source = "hashicorp/aws"
      # 6.29 added invoked_via_function_url to aws_lambda_permission.
      version = ">= 6.29, < 7.0"
    }
    archive = {
      source  = "hashicorp/archive"
      version = ">= 2.4, < 3.0"
    }
  }

  # AWS state, kept apart from infra/gcp (as in the seed). The bucket and
  # region are given at init time:
  #   terraform -chdir=infra/aws init -backend-config="bucket=<state bucket>" -backend-config="region=<region>"
  backend "s3" {
    key          = "backstop/aws.tfstate"
    encrypt      = true
    use_lockfile = true
  }
}

provider "aws" {
  region = var.region

  default_tags {
    tags = {
      app = "backstop"
    }
  }
}
