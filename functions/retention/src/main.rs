//! The retention Lambda: scheduled pruning of both clouds and the audit.
//! Configuration and behaviour live in `backstop::retention::function`.

use std::sync::Arc;

use backstop::config::Env;
use backstop::retention::function::RetentionFunction;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    backstop::telemetry::init(backstop::telemetry::LogFormat::detect());
    match RetentionFunction::from_env(&Env::from_process()).await {
        Ok(function) => backstop::function::main(Arc::new(function)).await,
        Err(e) => {
            eprintln!("error: retention configuration: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
