//! The retention Lambda: scheduled pruning of both clouds and the audit.
//! Configuration and behaviour live in `backstop_functions::retention`.

use std::sync::Arc;

use backstop_core::config::Env;
use backstop_functions::retention::RetentionFunction;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    backstop_core::telemetry::init(backstop_core::telemetry::LogFormat::detect());
    match RetentionFunction::from_env(&Env::from_process()).await {
        Ok(function) => backstop_functions::lambda::main(Arc::new(function)).await,
        Err(e) => {
            eprintln!("error: retention configuration: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
