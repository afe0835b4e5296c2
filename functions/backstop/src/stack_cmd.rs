//! Local-operation subcommands: `ping` (do the configured clouds answer?),
//! `invoke` (run a function on one event file, as its Lambda would) and
//! `serve` (a loopback push endpoint for the local Pub/Sub emulator).

use std::path::PathBuf;
use std::sync::Arc;

use backstop_cloud::gcs::GcsStore;
use backstop_cloud::s3::S3Store;
use backstop_core::config::Env;
use backstop_core::store::ObjectStore;
use backstop_functions::lambda::Function;

#[derive(clap::Args)]
pub struct PingArgs {}

pub async fn ping(_args: PingArgs) -> anyhow::Result<()> {
    let env = Env::from_process();
    let gcs = GcsStore::from_env(&env).await?;
    let s3 = S3Store::from_env(&env).await?;
    for store in [&gcs as &dyn ObjectStore, &s3 as &dyn ObjectStore] {
        let page = store.list_page("", None).await?;
        println!(
            "{}: reachable, {} object(s) on the first page",
            store.url(),
            page.objects.len()
        );
    }
    Ok(())
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum FunctionName {
    Replicator,
    Retention,
}

async fn build(name: FunctionName) -> anyhow::Result<Arc<dyn Function>> {
    let env = Env::from_process();
    Ok(match name {
        FunctionName::Replicator => {
            Arc::new(backstop_functions::replicator::ReplicatorFunction::from_env(&env).await?)
        }
        FunctionName::Retention => {
            Arc::new(backstop_functions::retention::RetentionFunction::from_env(&env).await?)
        }
    })
}

#[derive(clap::Args)]
pub struct InvokeArgs {
    /// Which function handles the event.
    #[arg(value_enum)]
    function: FunctionName,
    /// The event file (see samples/).
    #[arg(long)]
    event: PathBuf,
}

pub async fn invoke(args: InvokeArgs) -> anyhow::Result<()> {
    let function = build(args.function).await?;
    let code = backstop_functions::lambda::run_local(function.as_ref(), &args.event).await;
    if code == std::process::ExitCode::SUCCESS {
        Ok(())
    } else {
        anyhow::bail!(
            "{} answered with an error status (see the JSON result above)",
            function.name()
        )
    }
}

#[derive(clap::Args)]
pub struct ServeArgs {
    #[arg(value_enum)]
    function: FunctionName,
    /// Loopback address to listen on (the Pub/Sub emulator pushes here).
    #[arg(long, default_value = "127.0.0.1:8088")]
    listen: String,
}

pub async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let function = build(args.function).await?;
    let listener = tokio::net::TcpListener::bind(&args.listen).await?;
    backstop_functions::lambda::serve_local(function, listener).await?;
    Ok(())
}

#[derive(clap::Args)]
pub struct RetentionArgs {
    /// Plan and audit only; delete nothing. (`--json`: print the JSON
    /// report instead of the readable summary.)
    #[arg(long)]
    dry_run: bool,
}

/// Runs retention and the audit once, as the scheduled function would;
/// critical findings exit with the critical code (`crate::exit`).
pub async fn retention(args: RetentionArgs, json: bool) -> anyhow::Result<()> {
    use backstop_functions::retention::RetentionFunction;
    let function = RetentionFunction::from_env(&Env::from_process()).await?;
    let request = backstop_core::events::ScheduleRequest {
        dry_run: Some(args.dry_run || function.dry_run),
    };
    let result = function.run(&request).await;
    if json {
        println!("{}", serde_json::to_string_pretty(&result)?);
    } else {
        let verb = if result.dry_run {
            "would delete"
        } else {
            "deleted"
        };
        println!("{verb} {} object(s)", result.deleted.len());
        for key in &result.deleted {
            println!("  {key}");
        }
        println!("{}", result.report);
    }
    if result.report.has_critical() {
        return Err(crate::exit::Unhealthy {
            condition: backstop_core::retention::Condition::Critical,
            message: format!(
                "the audit has {} critical finding(s)",
                result.report.critical
            ),
        }
        .into());
    }
    Ok(())
}
