terraform {
  required_version = ">= 1.5.0"

  required_providers {
    google = {
      source  = "hashicorp/google"
      version = ">= 6.14, < 8.0"
    }
  }

  # GCP state, kept apart from infra/aws (its own state in S3). The bucket is
  # given at init time:
  #   terraform -chdir=infra/gcp init -backend-config="bucket=<state bucket>"
  backend "gcs" {
    prefix = "backstop/gcp"
  }
}

provider "google" {
  project = var.project_id
  region  = var.region
}
