//! Backstop's cloud adapters, each behind a trait of the core crate:
//!
//! - [`gcs::GcsStore`] and [`s3::S3Store`]: [`backstop_core::store::ObjectStore`]
//!   over the official Google Cloud Storage and AWS S3 clients
//!   (`GcsStore::builder().bucket(..)`, `::from_env`);
//! - [`kms::CloudKms`]: [`backstop_core::crypto::KeyUnwrap`] over Cloud KMS;
//! - [`oidc::OidcVerifier`]: Google-signed OIDC tokens on Function URL requests;
//! - [`pubsub`]: [`backstop_core::alerts::AlertSink`] over Pub/Sub;
//! - [`timeouts::Timeouts`]: the connect and request deadlines all of them
//!   use (`BACKSTOP_CONNECT_TIMEOUT`, `BACKSTOP_REQUEST_TIMEOUT`).

mod gcs_json;
mod gcs_upload;

pub mod gcs;
pub mod kms;
pub mod oidc;
pub mod pubsub;
pub mod s3;
pub mod timeouts;
