//! The replicator Lambda: GCS finalize notification → verified copy in S3.
//! Configuration and behaviour live in `backstop_core::replicate`.

use std::sync::Arc;

use backstop_core::config::Env;
use backstop_functions::replicator::ReplicatorFunction;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    backstop_core::telemetry::init(backstop_core::telemetry::LogFormat::detect());
    match ReplicatorFunction::from_env(&Env::from_process()).await {
        Ok(function) => backstop_functions::lambda::main(Arc::new(function)).await,
        Err(e) => {
            eprintln!("error: replicator configuration: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
