//! `backstop ping`: shows that each configured cloud endpoint answers.

use backstop::config::Env;
use backstop::store::gcs::GcsStore;
use backstop::store::s3::S3Store;
use backstop::store::ObjectStore;

#[derive(clap::Args)]
pub struct PingArgs {}

pub async fn ping(_args: PingArgs) -> anyhow::Result<()> {
    let env = Env::from_process();
    let gcs = GcsStore::from_env(&env, "BACKSTOP_GCS_BUCKET").await?;
    let s3 = S3Store::from_env(&env, "BACKSTOP_S3_BUCKET").await?;
    for store in [&gcs as &dyn ObjectStore, &s3 as &dyn ObjectStore] {
        let page = store.list_page("", None).await?;
        println!("{}: reachable, {} object(s) on the first page", store.url(), page.objects.len());
    }
    Ok(())
}
