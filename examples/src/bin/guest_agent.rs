//! `guest_agent`: serves the replication guest calls of one local server over HTTP/JSON.
//!
//! ```text
//! guest_agent --config /etc/trove/guest-agent.toml
//! ```
//!
//! The configuration format is documented in `trove_guest_examples::config`. The agent listens
//! where `listen` says (keep it on loopback or put authentication in front of it) and stops on
//! Ctrl-C or SIGTERM; a replication change still running is aborted (every call is safe to
//! repeat). It starts the server if it is not running; a `process` server is the agent's child
//! and is stopped with it.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use trove_guest_examples::config::{AgentConfig, ServiceSection};
use trove_guest_examples::{AgentOptions, GuestAgent, backends};

/// Command-line arguments.
#[derive(Debug, Parser)]
#[command(version, about = "HTTP/JSON guest agent for trove-guest replication")]
struct Args {
    /// The configuration file (TOML).
    #[arg(long, short)]
    config: PathBuf,
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let args = Args::parse();
    match run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("guest_agent: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let config = AgentConfig::load(&args.config)?;
    let handle = config.datastore_handle()?;
    // The agent owns a `process` server (a systemd unit is merely started if stopped).
    handle.service.start().await?;
    let store = config.snapshot_store()?;
    let handle_for_stop = handle.clone();
    let strategy = backends::strategy(config.datastore.kind, handle, store.clone(), &config.mysql)?;
    let agent = GuestAgent::new(
        strategy,
        store,
        AgentOptions::new(config.instance_id.clone()),
    )
    .spawn(config.listen)
    .await?;
    tracing::info!(
        url = %agent.url(),
        instance = %config.instance_id,
        datastore = %config.datastore.kind,
        "guest agent serving"
    );
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("stopping");
    agent.shutdown().await?;
    if matches!(config.service, ServiceSection::Process { .. }) {
        handle_for_stop.service.stop().await?;
    }
    Ok(())
}
