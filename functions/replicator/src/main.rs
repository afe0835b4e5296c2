//! The replicator Lambda: GCS finalize notification → verified copy in S3.
//! Configuration and behaviour live in `backstop::replicate`.

use std::sync::Arc;

use backstop::config::Env;
use backstop::replicate::ReplicatorFunction;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    backstop::telemetry::init(backstop::telemetry::LogFormat::detect());
    match ReplicatorFunction::from_env(&Env::from_process()).await {
        Ok(function) => backstop::function::main(Arc::new(function)).await,
        Err(e) => {
            eprintln!("error: replicator configuration: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
