//! The store contract suite (`backstop_core::store::contract`), run against
//! every cloud adapter: GCS on fake-gcs-server, S3 on moto_server. The same
//! checks run on the in-memory store in the core crate's unit tests.

use backstop_core::store::contract;
use backstop_tests::{gcs, s3};

macro_rules! contract {
    ($adapter:ident, $make:expr) => {
        mod $adapter {
            use super::*;

            #[tokio::test]
            async fn streaming_put_then_get_100mib() {
                contract::streaming_put_then_get_100mib(&$make.await).await;
            }
            #[tokio::test]
            async fn metadata_round_trips() {
                contract::metadata_round_trips(&$make.await).await;
            }
            #[tokio::test]
            async fn conditional_create_refuses_existing() {
                contract::conditional_create_refuses_existing(&$make.await).await;
            }
            #[tokio::test]
            async fn list_follows_pages_within_prefix() {
                contract::list_follows_pages_within_prefix(&$make.await.with_page_size(3)).await;
            }
            #[tokio::test]
            async fn delete_then_not_found() {
                contract::delete_then_not_found(&$make.await).await;
            }
            #[tokio::test]
            async fn whole_object_crc32c_is_reported() {
                contract::whole_object_crc32c_is_reported(&$make.await).await;
            }
            #[tokio::test]
            async fn missing_objects_map_to_not_found() {
                contract::missing_objects_map_to_not_found(&$make.await).await;
            }
        }
    };
}

contract!(gcs_adapter, gcs());
contract!(s3_adapter, s3());

// Large objects go through S3 multipart uploads and GCS resumable uploads.
// fake-gcs-server ignores `ifGenerationMatch` on resumable uploads (GCS
// honours it; the adapter sends it), so this check runs against S3 only;
// small creates above cover the GCS precondition path.
#[tokio::test]
async fn s3_conditional_create_of_multipart_object_refuses_existing() {
    contract::conditional_create_of_multipart_object_refuses_existing(&s3().await).await;
}
