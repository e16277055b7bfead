//! The `hostproxy` command line: `serve` and the lifecycle commands.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand, ValueEnum};
use clawker_protocol::env as envs;
use tokio_util::sync::CancellationToken;

use crate::app::{AppState, Auth, router};
use crate::backends::{Backends, UnixAgent};
use crate::config::{
    FileConfig, Settings, default_config_path, parse_duration, split_command, watcher_from_file,
};
use crate::server::{ServeLimits, serve};
use crate::state::StateDir;

#[derive(Debug, Parser)]
#[command(
    name = "hostproxy",
    version,
    about = "Lets tools in Docker containers open URLs, finish OAuth logins, use git credentials and sign with the host's keys",
    after_help = "Example:\n  hostproxy serve                 # foreground, prints what a container needs\n  hostproxy start && hostproxy status --json"
)]
pub struct Cli {
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon in the foreground until SIGINT or SIGTERM.
    Serve(ServeArgs),
    /// Start the daemon in the background unless one already answers on the port.
    Start(StartArgs),
    /// Stop the background daemon.
    Stop(StopArgs),
    /// Say whether the daemon is running (exit 0) or not (exit 1).
    Status(StatusArgs),
    /// Print the user's bearer token (creating it if needed), or manage scoped tokens.
    Token {
        #[command(subcommand)]
        action: Option<TokenAction>,
    },
    /// Bridge the host's ssh-agent and gpg-agent into a container over docker exec.
    Bridge(crate::bridge::BridgeArgs),
    /// Check this host's setup and say how to fix what is missing.
    Doctor(DoctorArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff) on stdout.
    Man,
}

#[derive(Debug, Clone, Args)]
pub struct PortArg {
    /// Port the daemon serves.
    #[arg(long, env = envs::DAEMON_PORT)]
    pub port: Option<u16>,
}

#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub port: PortArg,
    /// Address to listen on (repeatable). Default: 127.0.0.1 and ::1.
    #[arg(long, env = envs::DAEMON_LISTEN, value_delimiter = ',')]
    pub listen: Vec<IpAddr>,
    /// URL launcher command; the URL is appended as one argument (no shell).
    #[arg(long, env = envs::DAEMON_BROWSER)]
    pub browser: Option<String>,
    /// Accept requests without the bearer token (insecure; for old clients only).
    #[arg(long)]
    pub no_auth: bool,
    /// Exit when no labelled agent containers are left (after the grace period).
    #[arg(long)]
    pub idle_exit: bool,
    /// With --idle-exit: how long to wait before the first check (e.g. 60s, 2m).
    #[arg(long, value_parser = parse_duration)]
    pub grace_period: Option<Duration>,
    /// With --idle-exit: how often to re-count containers besides Docker's events.
    #[arg(long, value_parser = parse_duration)]
    pub poll_interval: Option<Duration>,
    /// Also listen on the gateway address of Docker's bridge networks (native Linux Docker).
    #[arg(long)]
    pub listen_docker_bridge: bool,
    /// Config file (TOML). Default: $XDG_CONFIG_HOME/clawker/hostproxy.toml.
    #[arg(long, env = envs::DAEMON_CONFIG)]
    pub config: Option<PathBuf>,
}

#[derive(Debug, Clone, Args)]
pub struct StartArgs {
    #[command(flatten)]
    pub port: PortArg,
    /// Arguments passed on to `serve` (after `--`).
    #[arg(last = true)]
    pub serve_args: Vec<String>,
}

#[derive(Debug, Clone, Args)]
pub struct StopArgs {
    #[command(flatten)]
    pub port: PortArg,
    /// Wait up to this many seconds for the daemon to exit.
    #[arg(long, num_args = 0..=1, default_missing_value = "10")]
    pub wait: Option<u64>,
}

#[derive(Debug, Clone, Subcommand)]
pub enum TokenAction {
    /// Issue a scoped token and print it (the only time it is shown).
    #[command(
        after_help = "Example:\n  hostproxy token issue --name ci --container my-agent --allow git:github.com --allow open --ttl 8h"
    )]
    Issue {
        /// A name for the token (letters, digits, '-', '_', '.').
        #[arg(long)]
        name: String,
        /// Bind the token to a container: it is revoked when Docker reports it died or was removed.
        #[arg(long)]
        container: Option<String>,
        /// A scope: open, callback, git:HOST, git:*, git-store:HOST, ssh, ssh:SHA256:<fingerprint> (repeatable).
        #[arg(long = "allow", value_parser = |s: &str| s.parse::<crate::tokens::Scope>())]
        allow: Vec<crate::tokens::Scope>,
        /// Lifetime (e.g. 8h, 30m); default: until revoked.
        #[arg(long, value_parser = parse_duration)]
        ttl: Option<Duration>,
    },
    /// List scoped tokens (names, scopes, bindings; never the tokens).
    List {
        #[arg(long)]
        json: bool,
    },
    /// Revoke a scoped token at once.
    Revoke { name: String },
}

#[derive(Debug, Clone, Args)]
pub struct DoctorArgs {
    #[command(flatten)]
    pub port: PortArg,
    /// Print a JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub port: PortArg,
    /// Print a JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(use_color())
        .with_target(false);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// Colour only on a terminal, and never when `NO_COLOR` is set (no-color.org).
fn use_color() -> bool {
    use std::io::IsTerminal;
    std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()) && std::io::stderr().is_terminal()
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing(cli.log_format);
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("hostproxy: {e:#}");
            ExitCode::FAILURE
        }
    }
}

pub fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Serve(args) => {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()?;
            rt.block_on(run_serve(args))
        }
        Command::Start(args) => crate::lifecycle::start(&args),
        Command::Stop(args) => crate::lifecycle::stop(&args),
        Command::Status(args) => crate::lifecycle::status(&args),
        Command::Bridge(args) => {
            let file = match default_config_path() {
                Some(p) => FileConfig::load(&p, false)?,
                None => FileConfig::default(),
            };
            let policy = Settings::from_file(&file)?.agent_policy;
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()?;
            rt.block_on(crate::bridge::run(args, policy))
        }
        Command::Doctor(args) => crate::doctor::run(&args),
        Command::Completions { shell } => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut cmd, "hostproxy", &mut std::io::stdout());
            Ok(ExitCode::SUCCESS)
        }
        Command::Man => {
            let cmd = <Cli as clap::CommandFactory>::command();
            clap_mangen::Man::new(cmd).render(&mut std::io::stdout())?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Token { action } => token_command(action),
    }
}

fn token_command(action: Option<TokenAction>) -> Result<ExitCode> {
    let state = StateDir::from_env()?;
    let store = crate::tokens::TokenStore::new(state.tokens_file());
    match action {
        None => {
            let token = state.load_or_create_token()?;
            println!("{}", token.expose());
        }
        Some(TokenAction::Issue {
            name,
            container,
            allow,
            ttl,
        }) => {
            if allow.is_empty() {
                bail!(
                    "a scoped token needs at least one --allow SCOPE (open, callback, git:HOST, git-store:HOST, ssh, ssh:SHA256:…)"
                );
            }
            // Store the full container id when Docker knows the container, so events match.
            let container = container.map(|c| resolve_container(&c).unwrap_or(c));
            let token = store.issue(&name, container, &allow, ttl)?;
            println!("{token}");
        }
        Some(TokenAction::List { json }) => {
            let tokens = store.list()?;
            if json {
                let v: Vec<_> = tokens
                    .iter()
                    .map(|t| serde_json::json!({"name": t.name, "scopes": t.scopes, "container": t.container, "created": t.created, "expires": t.expires, "revoked": t.revoked}))
                    .collect();
                println!("{}", serde_json::Value::Array(v));
            } else {
                for t in tokens {
                    println!(
                        "{}\t{}\t{}{}{}",
                        t.name,
                        t.scopes.join(","),
                        t.container
                            .as_deref()
                            .map(|c| format!("container {}", &c[..c.len().min(12)]))
                            .unwrap_or_else(|| "any container".into()),
                        t.expires
                            .map(|e| format!(
                                "\texpires {}",
                                humantime::format_rfc3339_seconds(
                                    std::time::UNIX_EPOCH + Duration::from_secs(e)
                                )
                            ))
                            .unwrap_or_default(),
                        if t.revoked { "\trevoked" } else { "" }
                    );
                }
            }
        }
        Some(TokenAction::Revoke { name }) => {
            store.revoke(&name)?;
            eprintln!("revoked {name}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn resolve_container(name: &str) -> Option<String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .ok()?;
    rt.block_on(async {
        let docker = crate::docker::connect().ok()?;
        docker.inspect_container(name, None).await.ok()?.id
    })
}

/// Resolves settings: flags, then environment (clap's `env`), then the file, then defaults.
pub fn resolve_settings(args: &ServeArgs) -> Result<Settings> {
    let (path, required) = match &args.config {
        Some(p) => (Some(p.clone()), true),
        None => (default_config_path(), false),
    };
    let file = match &path {
        Some(p) => FileConfig::load(p, required)?,
        None => FileConfig::default(),
    };
    let mut s = Settings::from_file(&file)?;
    if let Some(p) = args.port.port {
        s.port = p;
    }
    if !args.listen.is_empty() {
        s.listen = args.listen.clone();
    }
    if let Some(b) = &args.browser {
        s.browser = split_command(b);
        if s.browser.is_none() {
            bail!("--browser is empty: give a command such as xdg-open");
        }
    }
    s.no_auth |= args.no_auth;
    s.listen_docker_bridge |= args.listen_docker_bridge;
    if args.idle_exit {
        let mut w = watcher_from_file(&file.watcher)?;
        if let Some(g) = args.grace_period {
            w.grace_period = g;
        }
        if let Some(p) = args.poll_interval {
            w.poll_interval = p;
        }
        s.watcher = Some(w);
    }
    Ok(s)
}

/// Binds every listen address. The first family that is simply absent (no IPv6 on the
/// host) is skipped when it was a default; a taken port is always an error.
async fn bind_all(
    addrs: &[IpAddr],
    port: u16,
    explicit: bool,
) -> Result<Vec<tokio::net::TcpListener>> {
    let mut out = Vec::new();
    for &ip in addrs {
        let addr = SocketAddr::new(ip, port);
        match tokio::net::TcpListener::bind(addr).await {
            Ok(l) => out.push(l),
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
                bail!(
                    "port {port} is already in use on {ip}: stop whatever holds it or pass --port"
                )
            }
            Err(e) if !explicit && ip.is_ipv6() => {
                tracing::warn!(error = %e, "no IPv6 loopback; serving IPv4 only");
            }
            Err(e) => return Err(e).with_context(|| format!("cannot listen on {addr}")),
        }
    }
    if out.is_empty() {
        bail!("nothing to listen on");
    }
    Ok(out)
}

async fn run_serve(args: ServeArgs) -> Result<ExitCode> {
    let mut settings = resolve_settings(&args)?;
    let state_dir = StateDir::from_env()?;
    let token = state_dir.load_or_create_token()?;
    let _pid = crate::lifecycle::PidFile::acquire(&state_dir)?;

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
    addrs.dedup();
    if addrs.iter().any(IpAddr::is_unspecified) {
        tracing::warn!(
            "listening on a wildcard address: every network this host is on can reach the daemon"
        );
    }
    let listeners = bind_all(&addrs, settings.port, !args.listen.is_empty()).await?;
    let bound: Vec<IpAddr> = listeners
        .iter()
        .filter_map(|l| l.local_addr().ok().map(|a| a.ip()))
        .collect();
    if settings.no_auth {
        tracing::warn!(
            "--no-auth: any local process and any container can use your git credentials and ssh keys"
        );
    }
    let shutdown = CancellationToken::new();
    let backends = Backends::host(
        settings.browser.clone(),
        settings.git.clone(),
        UnixAgent::from_env(),
    );
    let auth = if settings.no_auth {
        Auth::Disabled
    } else {
        Auth::Token(token.clone())
    };
    let watcher = settings.watcher.take();
    let audit_path = state_dir.root().join("logs").join("audit.jsonl");
    let audit = crate::audit::Audit::open(&audit_path)
        .with_context(|| format!("cannot open the audit log {}", audit_path.display()))?;
    let tokens = crate::tokens::TokenStore::new(state_dir.tokens_file());
    let state = AppState::new(settings.clone(), auth, backends, &bound, shutdown.clone())
        .with_audit(audit)
        .with_tokens(tokens);
    {
        let (tokens_file, stop) = (state_dir.tokens_file(), shutdown.clone());
        tokio::spawn(async move {
            tokio::select! {
                () = crate::docker::revoke_tokens_of_dead_containers(crate::tokens::TokenStore::new(tokens_file)) => {}
                () = stop.cancelled() => {}
            }
        });
    }
    print_banner(&settings, &bound, &state_dir);

    let signals = shutdown.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutting down");
        signals.cancel();
    });
    if let Some(w) = watcher {
        let stop = shutdown.clone();
        tokio::spawn(async move {
            crate::docker::watch_containers(w, stop.clone()).await;
            stop.cancel();
        });
    }
    let limits = ServeLimits {
        header_read_timeout: settings.header_read_timeout,
        max_connections: settings.max_connections,
        ..ServeLimits::default()
    };
    serve(listeners, router(state), limits, shutdown).await;
    tracing::info!("stopped");
    Ok(ExitCode::SUCCESS)
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        // Without signal handlers the daemon can still be killed; keep serving.
        std::future::pending::<()>().await;
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

fn print_banner(settings: &Settings, bound: &[IpAddr], state: &StateDir) {
    let addrs: Vec<String> = bound
        .iter()
        .map(|a| SocketAddr::new(*a, settings.port).to_string())
        .collect();
    let port = settings.port;
    let token_file = state.token_file();
    eprintln!(
        "hostproxy {} listening on {}\n\
         token: {} (print it with `hostproxy token`)\n\n\
         Give a container these flags:\n  \
         --add-host host.docker.internal:host-gateway \\\n  \
         -e CLAWKER_HOST_PROXY=http://host.docker.internal:{port} \\\n  \
         -v {}:/run/secrets/clawker-token:ro -e CLAWKER_HOST_PROXY_TOKEN_FILE=/run/secrets/clawker-token \\\n  \
         -e BROWSER=host-open\n\
         and in the image: git config --system credential.helper clawker{}",
        env!("CARGO_PKG_VERSION"),
        addrs.join(", "),
        token_file.display(),
        token_file.display(),
        if settings.listen_docker_bridge || bound.iter().any(|a| !a.is_loopback()) {
            ""
        } else {
            "\n(native Linux Docker: add --listen-docker-bridge so containers can reach this daemon)"
        }
    );
}
