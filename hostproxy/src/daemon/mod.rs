//! What `hostproxy serve` does as a process: the token, the PID lock, the listeners, the
//! audit log, the token store and its revocation task, the container watcher, signals and
//! the banner, around `api::router` and `server::serve`. Callable with plain values, so a
//! test can run a whole daemon without the command line.

use std::net::IpAddr;

use anyhow::{Context, Result};
use tokio_util::sync::CancellationToken;

use crate::api::{AppState, Auth, router};
use crate::audit::Audit;
use crate::auth::TokenStore;
use crate::backends::{Backends, HostAgent};
use crate::config::Settings;
use crate::server::{ServeLimits, serve};
use crate::state::{PidFile, StateDir};
use crate::tunnel::{self, HostAgents, Tunnels};

mod banner;
mod bind;
mod signals;

pub use bind::bind_all;
pub use signals::wait_for_signal;

/// How to run the daemon: the resolved settings and where its state lives.
#[derive(Debug, Clone)]
pub struct Options {
    pub settings: Settings,
    pub state_dir: StateDir,
    /// The listen addresses were named by the user: a missing IPv6 loopback is then an
    /// error, not a warning.
    pub explicit_listen: bool,
    /// Print the banner for the user (where it listens, what a container needs).
    pub banner: bool,
}

/// Runs the daemon until SIGTERM or SIGINT.
pub async fn run(opts: Options) -> Result<()> {
    let shutdown = CancellationToken::new();
    let signals = shutdown.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutting down (a second signal ends it at once)");
        signals.cancel();
        // A second ^C or SIGTERM during the drain: the user means it. The PID file's lock
        // goes with the process; a file left behind is stale by design.
        wait_for_signal().await;
        tracing::warn!("second signal: exiting without draining");
        std::process::exit(130);
    });
    run_until(opts, shutdown).await
}

/// Runs the daemon until `shutdown` is cancelled (or the container watcher ends it).
pub async fn run_until(opts: Options, shutdown: CancellationToken) -> Result<()> {
    let Options {
        mut settings,
        state_dir,
        explicit_listen,
        banner,
    } = opts;
    StateDir::ensure_dir(state_dir.root())?;
    state_dir.check_private()?;
    // The directory the user started the daemon in is often the project a container has
    // mounted: leave it (SPEC.md 11), once every relative path is resolved from it.
    let state_dir = match std::env::current_dir() {
        Ok(here) => {
            settings.resolve_paths(&here);
            StateDir::at(here.join(state_dir.root()))
        }
        Err(_) => state_dir,
    };
    std::env::set_current_dir(state_dir.root()).with_context(|| {
        format!(
            "cannot change to the state directory {}",
            state_dir.root().display()
        )
    })?;
    let token = state_dir.load_or_create_token()?;
    let mut pid = PidFile::acquire(&state_dir)?;

    let mut addrs = settings.listen.clone();
    if settings.listen_docker_bridge {
        match crate::docker::bridge_gateways().await {
            Ok(gw) if gw.is_empty() => tracing::warn!("no docker bridge network gateway found"),
            Ok(gw) => addrs.extend(gw),
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "cannot ask docker for its bridge gateways")
            }
        }
    }
    // A set, not adjacent dedup: a gateway equal to a --listen address is bound once.
    let mut seen = std::collections::HashSet::new();
    addrs.retain(|a| seen.insert(*a));
    if addrs.iter().any(IpAddr::is_unspecified) {
        tracing::warn!(
            "listening on a wildcard address: every network this host is on can reach the daemon"
        );
    }
    let listeners = bind_all(&addrs, settings.port, explicit_listen).await?;
    pid.record_port(settings.port)?;
    let bound: Vec<IpAddr> = listeners
        .iter()
        .filter_map(|l| l.local_addr().ok().map(|a| a.ip()))
        .collect();
    if settings.no_auth {
        tracing::warn!(
            "--no-auth: any local process and any container can use your git credentials and ssh keys"
        );
    }
    let backends = Backends::host(
        settings.browser.clone(),
        settings.notifier.clone(),
        settings.git.clone(),
        HostAgent::from_env(),
    );
    let auth = if settings.no_auth {
        Auth::Disabled
    } else {
        Auth::Token(token.clone())
    };
    let watcher = settings.watcher.take();
    let audit_path = state_dir.audit_file();
    let audit = Audit::open(&audit_path)
        .with_context(|| format!("cannot open the audit log {}", audit_path.display()))?;
    let state = AppState::builder(settings.clone(), auth, backends, &bound, shutdown.clone())
        .audit(audit)
        .tokens(TokenStore::new(state_dir.tokens_file()))
        .sessions_file(state_dir.sessions_file())
        .build();
    let restored = state.sessions.restore();
    if restored > 0 {
        tracing::info!(
            restored,
            "callback sessions of the last run are waiting again"
        );
    }
    // One subscription to the engine's container events for every consumer below; each
    // subscribes before the feed starts, so each hears its first Resync.
    let events = crate::events::ContainerEvents::new();
    let engine = crate::docker::connect_engine()
        .map_err(
            |e| tracing::info!(error = %format!("{e:#}"), "no docker engine: only --via attaches"),
        )
        .ok();
    if let Some(engine) = &engine {
        let (tokens_file, stop) = (state_dir.tokens_file(), shutdown.clone());
        let (docker, sub) = (engine.docker.clone(), events.subscribe());
        tokio::spawn(async move {
            tokio::select! {
                () = crate::docker::revoke_tokens_of_dead_containers(TokenStore::new(tokens_file), docker, sub) => {}
                () = stop.cancelled() => {}
            }
        });
    }
    let tools = tunnel::tools::Tools::new(settings.attach.tools_dir.clone())
        .with_embedded(state_dir.tools_dir());
    // The first call unpacks the tools this build carries (a 13 MiB decompress): not on a
    // runtime worker.
    let tools_said = {
        let tools = tools.clone();
        tokio::task::spawn_blocking(move || match tools.dir_for(std::env::consts::ARCH) {
            Ok(dir) => format!("{} ({})", dir.display(), tools.describe()),
            Err(e) => format!("none — {e:#}"),
        })
        .await
        .unwrap_or_else(|e| format!("none — {e}"))
    };
    let tunnels = Tunnels::new(
        state.clone(),
        HostAgents::find().await,
        settings.attach.clone(),
        tools,
        Some(state_dir.root().join("attachments.json")),
        engine.clone(),
        shutdown.clone(),
    )?;
    tunnels.found_tools(tools_said.clone());
    let control = tunnel::control::bind(&state_dir.control_socket())?;
    tokio::spawn(tunnel::control::serve(
        control,
        tunnels.clone(),
        shutdown.clone(),
    ));
    tokio::spawn(tunnels.clone().discover(events.subscribe()));
    tokio::spawn(tunnels.clone().restore_kept());
    if banner {
        banner::print_banner(&settings, &bound, &state_dir, &tools_said);
    }
    if let Some(w) = watcher {
        let stop = shutdown.clone();
        let live = tunnels.clone();
        let sub = events.subscribe();
        tokio::spawn(async move {
            crate::docker::watch_containers(w, stop.clone(), move || live.live(), sub).await;
            stop.cancel();
        });
    }
    if let Some(engine) = engine {
        tokio::spawn(events.run(engine.docker, shutdown.clone()));
    }
    let limits = ServeLimits {
        header_read_timeout: settings.header_read_timeout,
        max_connections: settings.max_connections,
        ..ServeLimits::default()
    };
    let sessions = state.sessions.clone();
    serve(listeners, router(state), limits, shutdown).await;
    sessions.flush();
    tracing::info!("stopped");
    Ok(())
}
