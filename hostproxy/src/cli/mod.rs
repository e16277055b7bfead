//! The `hostproxy` command line: the only place clap lives. It parses, resolves settings
//! one way for every subcommand (flags, then environment, then the config file), and calls
//! the library with plain values.

use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Result;
use clap::{Args, Parser, Subcommand, ValueEnum};
use clawker_protocol::env as envs;
use hostproxy::auth::Scope;
use hostproxy::config::parse_duration;

mod approvals;
mod attach;
mod bridge;
mod man;
mod run;
mod run_flags;
mod serve;
mod token;

#[derive(Debug, Parser)]
#[command(
    name = "hostproxy",
    version,
    about = "Lets tools in Docker containers open URLs, finish OAuth logins, use git credentials and sign with the host's keys",
    after_help = "Example:\n  hostproxy serve                 # foreground, prints what a container needs\n  hostproxy start && hostproxy status --json"
)]
pub struct Cli {
    /// Config file (TOML). Default: $XDG_CONFIG_HOME/clawker/hostproxy.toml.
    #[arg(long, global = true, env = envs::DAEMON_CONFIG)]
    pub config: Option<PathBuf>,
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
    /// Stop the running daemon (`start`'s or a `serve` in a terminal).
    Stop(StopArgs),
    /// Say whether the daemon is running (exit 0) or not (exit 1).
    Status(StatusArgs),
    /// Print the user's bearer token (creating it if needed), or manage scoped tokens.
    Token {
        #[command(subcommand)]
        action: Option<TokenAction>,
    },
    /// Ask the running daemon to attach a container (the tunnel), or list what is attached.
    Attach(attach::AttachArgs),
    /// Ask the running daemon to end an attachment.
    Detach(attach::DetachArgs),
    /// Answer what containers ask ([approval] ask): a terminal view of the pending asks
    /// (y allow, n deny, a allow for the container), or --list for scripts.
    Approvals(approvals::ApprovalsArgs),
    /// Allow one pending ask (its id from hostproxy approvals --list).
    Approve(approvals::ApproveArgs),
    /// Deny one pending ask.
    Deny(approvals::DenyArgs),
    /// Print the `docker run` flags that wire a stock image to the tunnel.
    RunFlags(run_flags::RunFlagsArgs),
    /// `docker run` wired to the tunnel, the tools in the container before its first command
    /// on any engine (created, the tools copied in when they cannot be mounted, started).
    Run(run::RunArgs),
    /// Bridge the host's ssh-agent and gpg-agent into a container: `attach` with those
    /// sockets at the paths given, through the running daemon, in the foreground until the
    /// container stops (Ctrl-C detaches).
    Bridge(bridge::BridgeArgs),
    /// Check this host's setup and say how to fix what is missing.
    Doctor(DoctorArgs),
    /// Run the daemon as a service of your session: a systemd user unit (Linux) or a
    /// launchd agent (macOS) running this hostproxy's `serve`.
    Service {
        #[command(subcommand)]
        action: ServiceAction,
    },
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff) on stdout; with --dir, write it and one page per
    /// subcommand there.
    Man {
        /// Write every page (hostproxy.1, hostproxy-SUBCOMMAND.1) into this directory.
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
}

#[derive(Debug, Clone, Subcommand)]
pub enum ServiceAction {
    /// Write the service file and (unless --no-start) enable and start it.
    Install {
        /// Only write the file: do not ask systemd or launchd to start it.
        #[arg(long)]
        no_start: bool,
    },
    /// Stop the service and remove its file.
    Uninstall,
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
    /// Desktop notifier command; the title and body are appended as two arguments (no shell).
    /// Default: notify-send (Linux), osascript (macOS).
    #[arg(long)]
    pub notifier: Option<String>,
    /// A program asked too when a use needs the user's answer ([approval] ask): argv split on
    /// whitespace, the ask in its environment (HOSTPROXY_ASK_*) and on stdin as JSON; exit 0
    /// allows, 1 denies, anything else leaves it to the other askers.
    #[arg(long, value_name = "CMD")]
    pub approver: Option<String>,
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
    /// Attach running containers carrying this label (KEY=VALUE). Default:
    /// dev.clawker.hostproxy=attach (config attach.label).
    #[arg(long, value_name = "KEY=VALUE")]
    pub attach_label: Option<String>,
    /// Attach no container by its label (attach --container and --via still work).
    #[arg(long)]
    pub no_attach: bool,
    /// Where the container tools are for images that lack them (`DIR/x86_64/`,
    /// `DIR/aarch64/`, or the tools flat for this host's architecture). Default: the
    /// checkout's target/dist.
    #[arg(long, env = envs::TOOLS_DIR)]
    pub tools_dir: Option<PathBuf>,
    /// Write the log to this file instead of stderr, rotated at 10 MiB with three old files
    /// kept (`hostproxy start` uses <state>/logs/hostproxy.log).
    #[arg(long)]
    pub log_file: Option<PathBuf>,
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
        /// A scope (repeatable): open, callback, notify, git:HOST[/PREFIX], git:*,
        /// git-push:HOST[/PREFIX], git-store:HOST, ssh, ssh:SHA256:<fingerprint>, ssh-login,
        /// gpg, docker:REGISTRY, docker:*, socket:NAME, egress:NAME.
        #[arg(long = "allow", value_name = "SCOPE", value_parser = ScopeArg, hide_possible_values = true)]
        allow: Vec<Scope>,
        /// Lifetime (e.g. 8h, 30m); default: until revoked.
        #[arg(long, value_parser = parse_duration)]
        ttl: Option<Duration>,
    },
    /// List scoped tokens (names, scopes, bindings; never the tokens).
    List {
        /// Print a JSON array instead of text.
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

fn init_tracing(format: LogFormat, file: Option<&std::path::Path>) -> Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false);
    match file {
        Some(path) => {
            let log = hostproxy::logfile::SharedLog::open(path)
                .map_err(|e| anyhow::anyhow!("cannot open the log file {}: {e}", path.display()))?;
            let builder = builder.with_ansi(false).with_writer(move || log.clone());
            match format {
                LogFormat::Text => builder.init(),
                LogFormat::Json => builder.json().init(),
            }
        }
        None => {
            let builder = builder.with_ansi(use_color()).with_writer(std::io::stderr);
            match format {
                LogFormat::Text => builder.init(),
                LogFormat::Json => builder.json().init(),
            }
        }
    }
    Ok(())
}

/// Colour only on a terminal, and never when `NO_COLOR` is set (no-color.org).
fn use_color() -> bool {
    use std::io::IsTerminal;
    std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()) && std::io::stderr().is_terminal()
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let log_file = match &cli.command {
        Command::Serve(a) => a.log_file.clone(),
        _ => None,
    };
    if let Err(e) = init_tracing(cli.log_format, log_file.as_deref()) {
        eprintln!("hostproxy: {e:#}");
        return ExitCode::FAILURE;
    }
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("hostproxy: {e:#}");
            ExitCode::FAILURE
        }
    }
}

pub fn run(cli: Cli) -> Result<ExitCode> {
    let config = cli.config.as_deref();
    match cli.command {
        Command::Serve(args) => {
            let opts = serve::options(&args, config)?;
            serve::runtime()?.block_on(hostproxy::daemon::run(opts))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Start(args) => {
            let settings = serve::settings(config)?;
            let port = args.port.port.unwrap_or(settings.port);
            let mut serve_args = Vec::new();
            if let Some(c) = config {
                serve_args.push("--config".to_string());
                serve_args.push(c.display().to_string());
            }
            serve_args.extend(args.serve_args);
            hostproxy::lifecycle::start(port, &serve_args)
        }
        Command::Stop(args) => hostproxy::lifecycle::stop(args.port.port, args.wait),
        Command::Status(args) => {
            hostproxy::lifecycle::status(serve::port(&args.port, config)?, args.json)
        }
        Command::Attach(args) => attach::attach(args),
        Command::Detach(args) => attach::detach(args),
        Command::Approvals(args) => approvals::approvals(args),
        Command::Approve(args) => approvals::approve(&args.id, true, args.always),
        Command::Deny(args) => approvals::approve(&args.id, false, false),
        Command::RunFlags(args) => run_flags::run_flags(args, &serve::settings(config)?),
        Command::Run(args) => run::run(args, &serve::settings(config)?),
        Command::Bridge(args) => bridge::bridge(args),
        Command::Doctor(args) => {
            let settings = serve::settings(config).map_err(|e| format!("{e:#}"));
            let port = args
                .port
                .port
                .or(settings.as_ref().ok().map(|s| s.port))
                .unwrap_or(clawker_protocol::DEFAULT_PORT);
            hostproxy::doctor::run(port, args.json, settings)
        }
        Command::Completions { shell } => {
            restore_sigpipe();
            let mut cmd = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut cmd, "hostproxy", &mut std::io::stdout());
            Ok(ExitCode::SUCCESS)
        }
        Command::Service { action } => match action {
            ServiceAction::Install { no_start } => hostproxy::service::install(!no_start),
            ServiceAction::Uninstall => hostproxy::service::uninstall(),
        },
        Command::Man { dir } => {
            let cmd = <Cli as clap::CommandFactory>::command();
            match dir {
                Some(dir) => man::write_all(cmd, &dir)?,
                None => {
                    restore_sigpipe();
                    man::top(cmd, &mut std::io::stdout())?;
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Token { action } => token::token_command(action),
    }
}

/// For commands that only print (`completions`, `man`): a reader that stops early
/// (`| head -1`) ends them quietly as it ends `cat`, instead of a write error or a panic in
/// the generator (Rust ignores SIGPIPE by default).
fn restore_sigpipe() {
    #[cfg(unix)]
    #[allow(unsafe_code)]
    // SAFETY: setting a signal's disposition to its default; no handler runs our code.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// `--allow`'s values: any scope the daemon accepts (so a typo fails here, before anything
/// is asked), with the forms that need no name offered to shell completion (and hidden
/// from `--help`, whose text lists every form).
#[derive(Clone, Debug)]
pub struct ScopeArg;

/// The scopes completion offers: the ones complete without a host, key or name.
const SCOPES_COMPLETED: [&str; 8] = [
    "open",
    "callback",
    "notify",
    "git:*",
    "ssh",
    "ssh-login",
    "gpg",
    "docker:*",
];

impl clap::builder::TypedValueParser for ScopeArg {
    type Value = Scope;

    fn parse_ref(
        &self,
        cmd: &clap::Command,
        arg: Option<&clap::Arg>,
        value: &std::ffi::OsStr,
    ) -> Result<Scope, clap::Error> {
        let text = value.to_string_lossy();
        text.parse::<Scope>().map_err(|why| {
            let flag = arg.map_or_else(|| "--allow".to_string(), ToString::to_string);
            clap::Error::raw(
                clap::error::ErrorKind::ValueValidation,
                format!("invalid value '{text}' for '{flag}': {why}\n"),
            )
            .with_cmd(cmd)
        })
    }

    fn possible_values(
        &self,
    ) -> Option<Box<dyn Iterator<Item = clap::builder::PossibleValue> + '_>> {
        Some(Box::new(
            SCOPES_COMPLETED
                .iter()
                .map(|v| clap::builder::PossibleValue::new(*v)),
        ))
    }
}
