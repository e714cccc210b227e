//! `guest_agent`: serves the replication guest calls of one local server over HTTP/JSON.
//!
//! ```text
//! guest_agent --config /etc/trove/guest-agent.toml
//! ```
//!
//! The configuration format is documented in `trove_guest_agent::config`. With a
//! `[trove_rpc]` section it also serves a stock OpenStack Trove control plane over RabbitMQ
//! (oslo.messaging, queue `guestagent.<guest_id>`; see `trove_guest_agent::rpc`). The agent listens
//! where `listen` says (keep it on loopback or put authentication in front of it) and stops on
//! Ctrl-C or SIGTERM; a replication change still running is aborted (every call is safe to
//! repeat). Before it listens it runs the strategy's recovery (an interrupted change of an
//! earlier agent is completed or undone, leftovers are removed; `GET /v1/recovery` shows what
//! was done) and starts the server if it is not running. A `process` server is the agent's
//! child and is stopped with it; with `pid_file` set, a server left running by an agent that
//! was killed is adopted instead of started twice.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use trove_guest_agent::config::{AgentConfig, ServiceSection};
use trove_guest_agent::rpc::TroveRpcServer;
use trove_guest_agent::{AgentOptions, GuestAgent, backends};
use trove_guest_core::RecoverOptions;

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
    let store = config.open_snapshot_store().await?;
    let handle_for_stop = handle.clone();
    let service = handle.service.clone();
    let strategy = backends::strategy(config.datastore.kind, handle, store.clone(), &config.mysql)?;
    // Passwords by reference through the secret store, resolved once here for every backend.
    let strategy = config.credential_strategy(strategy)?;
    let rpc = match &config.trove_rpc {
        Some(section) => Some(section.rpc_options()?),
        None => None,
    };
    let agent = GuestAgent::new(
        strategy.clone(),
        store,
        AgentOptions::new(config.instance_id.clone()),
    );
    // Recovery first: after a crash the data directory may be aside, so the server is started
    // (or adopted) only once an interrupted change has been completed or undone.
    let report = agent
        .recover(&RecoverOptions::new())
        .await
        .map_err(|e| format!("recovery failed, not serving: {e}"))?;
    tracing::info!(actions = report.actions.len(), "recovery done");
    // The agent owns a `process` server (a systemd unit is merely started if stopped).
    service.start().await?;
    let agent = agent.spawn(config.listen).await?;
    tracing::info!(
        url = %agent.url(),
        instance = %config.instance_id,
        datastore = %config.datastore.kind,
        "guest agent serving"
    );
    // Trove's RPC front end, next to the HTTP API, on the same strategy.
    let (rpc_stop, rpc_stopped) = tokio::sync::oneshot::channel::<()>();
    let rpc_task = rpc.map(|opts| {
        let server = TroveRpcServer::new(strategy.clone(), opts);
        tracing::info!(queue = %server.queue(), "serving Trove RPC");
        tokio::spawn(server.run(async move {
            let _ = rpc_stopped.await;
        }))
    });
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("stopping");
    let _ = rpc_stop.send(());
    if let Some(task) = rpc_task {
        match tokio::time::timeout(std::time::Duration::from_secs(5), task).await {
            Ok(Ok(Err(e))) => tracing::warn!(error = %e, "Trove RPC front end failed"),
            Ok(_) => {}
            Err(_) => tracing::warn!("Trove RPC front end did not stop within 5 s"),
        }
    }
    agent.shutdown().await?;
    if matches!(config.service, ServiceSection::Process { .. }) {
        handle_for_stop.service.stop().await?;
    }
    Ok(())
}
