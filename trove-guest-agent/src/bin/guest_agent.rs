//! `guest_agent`: serves the replication guest calls of one local server over HTTP/JSON.
//!
//! ```text
//! guest_agent --config /etc/trove/guest-agent.toml [--log-format json|text]
//! guest_agent --check-config /etc/trove/guest-agent.toml
//! ```
//!
//! `--check-config` validates the file (and the files it names) without starting, connecting
//! to or changing anything: exit status 0 and a short summary, or 2 and the typed error.
//!
//! The configuration format is documented in `trove_guest_agent::config`. With a
//! `[trove_rpc]` section it also serves a stock OpenStack Trove control plane over RabbitMQ
//! (oslo.messaging, queue `guestagent.<guest_id>`; see `trove_guest_agent::rpc`). The agent listens
//! where `listen` says (with the bearer token of `[auth] token_file`; HTTPS with `[http]` TLS
//! files, required off loopback) and on `[http] unix_socket` (callers admitted by uid), and stops
//! on Ctrl-C or SIGTERM; a replication change still running is aborted (every call is safe to
//! repeat). Before it listens it runs the strategy's recovery (an interrupted change of an
//! earlier agent is completed or undone, leftovers are removed; `GET /v1/recovery` shows what
//! was done) and starts the server if it is not running. A `process` server is the agent's
//! child and is stopped with it; with `pid_file` set, a server left running by an agent that
//! was killed is adopted instead of started twice.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use trove_guest_agent::config::{AgentConfig, ServiceSection};
use trove_guest_agent::logging::{self, LogFormat};
use trove_guest_agent::rpc::TroveRpcServer;
use trove_guest_agent::{GuestAgent, backends};
use trove_guest_core::RecoverOptions;

/// Command-line arguments.
#[derive(Debug, Parser)]
#[command(version, about = "HTTP/JSON guest agent for trove-guest replication")]
struct Args {
    /// The configuration file (TOML).
    #[arg(long, short, required_unless_present = "check_config")]
    config: Option<PathBuf>,
    /// Validates this configuration file and exits: starts, connects to and changes nothing.
    #[arg(long, value_name = "FILE", conflicts_with = "config")]
    check_config: Option<PathBuf>,
    /// The log format, overriding the configuration's `[log] format`.
    #[arg(long, value_enum)]
    log_format: Option<LogFormat>,
}

/// Exit status of an invalid configuration.
const INVALID_CONFIG: u8 = 2;

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    if let Some(path) = &args.check_config {
        return check_config(path);
    }
    let Some(path) = args.config.as_deref() else {
        eprintln!("guest_agent: --config is required");
        return ExitCode::from(INVALID_CONFIG);
    };
    let config = match AgentConfig::load(path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("guest_agent: {e}");
            return ExitCode::from(INVALID_CONFIG);
        }
    };
    let format = args.log_format.unwrap_or(config.log.format);
    if let Err(e) = logging::init(format, config.log.level.as_deref()) {
        eprintln!("guest_agent: {e}");
        return ExitCode::from(INVALID_CONFIG);
    }
    match run(config).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "guest agent stopped");
            eprintln!("guest_agent: {e}");
            ExitCode::FAILURE
        }
    }
}

fn check_config(path: &std::path::Path) -> ExitCode {
    match AgentConfig::load(path).and_then(|c| c.check()) {
        Ok(summary) => {
            println!("{}: configuration valid", path.display());
            print!("{summary}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!(
                "guest_agent: {}: configuration invalid: {e}",
                path.display()
            );
            ExitCode::from(INVALID_CONFIG)
        }
    }
}

async fn run(config: AgentConfig) -> Result<(), Box<dyn std::error::Error>> {
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
    let listeners = config.listeners()?;
    let agent = GuestAgent::new(strategy.clone(), store, config.agent_options()?);
    // One change lock for both front ends: an HTTP change is refused while an RPC change runs.
    let changes = agent.changes();
    // Recovery first: after a crash the data directory may be aside, so the server is started
    // (or adopted) only once an interrupted change has been completed or undone.
    let report = agent
        .recover(&RecoverOptions::new())
        .await
        .map_err(|e| format!("recovery failed, not serving: {e}"))?;
    tracing::info!(actions = report.actions.len(), "recovery done");
    // The agent owns a `process` server (a systemd unit is merely started if stopped).
    service.start().await?;
    let mut serving = Vec::new();
    for on in &listeners {
        let running = agent.clone().spawn_on(on).await?;
        tracing::info!(
            endpoint = ?running.endpoint(),
            instance = %config.instance_id,
            datastore = %config.datastore.kind,
            "guest agent serving"
        );
        serving.push(running);
    }
    // Trove's RPC front end, next to the HTTP API, on the same strategy.
    let (rpc_stop, rpc_stopped) = tokio::sync::oneshot::channel::<()>();
    let mut rpc_task = rpc.map(|opts| {
        let server = TroveRpcServer::with_changes(strategy.clone(), opts, changes);
        tracing::info!(queue = %server.queue(), "serving Trove RPC");
        tokio::spawn(server.run(async move {
            let _ = rpc_stopped.await;
        }))
    });
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    // The RPC front end ends on its own only when it gives up (an unreachable broker past
    // `[trove_rpc] reconnect_attempts`, a refused queue layout): the agent then stops with an
    // error, for the service manager to restart it.
    let mut rpc_failed = None;
    {
        let rpc_ended = async {
            match rpc_task.as_mut() {
                Some(t) => t.await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
            r = rpc_ended => rpc_failed = Some(match r {
                Ok(Err(e)) => e.to_string(),
                Ok(Ok(())) => "stopped".to_owned(),
                Err(e) => e.to_string(),
            }),
        }
    }
    if rpc_failed.is_some() {
        rpc_task = None;
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
    for running in serving {
        running.shutdown().await?;
    }
    if matches!(config.service, ServiceSection::Process { .. }) {
        handle_for_stop.service.stop().await?;
    }
    match rpc_failed {
        Some(why) => Err(format!("the Trove RPC front end stopped: {why}").into()),
        None => Ok(()),
    }
}
