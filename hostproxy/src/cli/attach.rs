//! `hostproxy attach`, `detach` and `run-flags` (SPEC.md 6.1): requests to the running
//! daemon over its control socket, and the `docker run` flags that wire a stock image.

use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::Args;
use clawker_protocol::tunnel::{
    self, AttachmentInfo, ControlRequest, ControlResponse, RUN_FLAGS_GNUPGHOME, RUN_FLAGS_SSH_SOCK,
};
use hostproxy::config::AttachSettings;
use hostproxy::state::StateDir;
use hostproxy::tunnel::control;

#[derive(Debug, Clone, Args)]
pub struct AttachArgs {
    /// The Docker container (id or name) to attach.
    #[arg(long, conflicts_with_all = ["via", "list"])]
    pub container: Option<String>,
    /// A command that runs clawker-socket-server in the container with stdin and stdout
    /// attached, e.g. 'kubectl exec -i POD -- clawker-socket-server' (split like a shell
    /// would; no shell runs it).
    #[arg(long, requires = "name", conflicts_with = "list")]
    pub via: Option<String>,
    /// The name of a --via attachment (its identity is via:NAME).
    #[arg(long)]
    pub name: Option<String>,
    /// A scope the attached container gets (repeatable): open, callback, notify, git:HOST,
    /// git:*, git-store:HOST, ssh, ssh:SHA256:…, ssh-login, gpg, docker:REGISTRY, docker:*,
    /// socket:NAME. Default: attach.scopes (open, callback, git:*, ssh); the container's
    /// own dev.clawker.hostproxy.scopes label can only narrow them.
    #[arg(long = "allow", value_name = "SCOPE")]
    pub allow: Vec<String>,
    /// A host socket declared in the config ([[bridge.sockets]]) to give the container
    /// (repeatable); it also needs the scope socket:NAME.
    #[arg(long = "socket", value_name = "NAME")]
    pub sockets: Vec<String>,
    /// List what is attached.
    #[arg(long)]
    pub list: bool,
    /// With --list: JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Args)]
pub struct DetachArgs {
    /// The attachment's name (see `hostproxy attach --list`).
    pub name: String,
}

#[derive(Debug, Clone, Args)]
pub struct RunFlagsArgs {
    /// Also wire gpg (GNUPGHOME). The container gets gpg only when the host grants the
    /// scope (`attach.scopes` or `attach --allow`): a label cannot widen what it gets.
    #[arg(long)]
    pub gpg: bool,
    /// The port the tools use inside the container.
    #[arg(long, default_value_t = clawker_protocol::DEFAULT_PORT)]
    pub port: u16,
    /// One flag per line instead of one line.
    #[arg(long)]
    pub lines: bool,
}

fn send(req: &ControlRequest) -> Result<ControlResponse> {
    let state = StateDir::from_env()?;
    let r = control::request(&state.control_socket(), req)?;
    if !r.ok {
        bail!(
            "{}",
            r.error
                .clone()
                .unwrap_or_else(|| "the daemon refused".into())
        );
    }
    Ok(r)
}

fn show(a: &AttachmentInfo) -> String {
    let mut line = format!(
        "{}\t{}\t{}\t{}\trestarts={}\tscopes={}\t{}",
        a.name,
        a.identity,
        a.engine,
        a.state,
        a.restarts,
        a.scopes.join(","),
        a.target
    );
    for n in &a.notes {
        // The daemon's words, but about a container's labels: shown escaped.
        line.push_str("\n\t");
        line.push_str(&n.escape_debug().to_string());
    }
    line
}

pub fn attach(args: AttachArgs) -> Result<ExitCode> {
    if args.list {
        let r = send(&ControlRequest::List)?;
        if args.json {
            println!("{}", serde_json::to_string_pretty(&r.attachments)?);
        } else {
            for a in &r.attachments {
                println!("{}", show(a));
            }
        }
        return Ok(ExitCode::SUCCESS);
    }
    let via = args
        .via
        .as_deref()
        .map(|v| {
            shlex::split(v)
                .filter(|a| !a.is_empty())
                .context("--via is not a command line (unbalanced quotes?)")
        })
        .transpose()?;
    if args.container.is_none() && via.is_none() {
        bail!("name what to attach: --container ID, or --via 'CMD ARG…' --name NAME (or --list)");
    }
    let r = send(&ControlRequest::Attach {
        container: args.container,
        via,
        name: args.name,
        allow: args.allow,
        sockets: Vec::new(),
        declared: args.sockets,
    })?;
    for a in &r.attachments {
        println!("{}", show(a));
    }
    Ok(ExitCode::SUCCESS)
}

pub fn detach(args: DetachArgs) -> Result<ExitCode> {
    send(&ControlRequest::Detach { name: args.name })?;
    Ok(ExitCode::SUCCESS)
}

/// The flags, in order; the attach label is the config's (`attach.label`).
pub fn run_flags_list(args: &RunFlagsArgs, label: &(String, String)) -> Vec<String> {
    let bin = tunnel::CONTAINER_BIN_DIR;
    let mut flags = vec![
        format!("--label {}={}", label.0, label.1),
        format!(
            "-e {}=http://127.0.0.1:{}",
            clawker_protocol::env::HOST_PROXY,
            args.port
        ),
        format!("-e BROWSER={bin}/host-open"),
        format!("-e SSH_AUTH_SOCK={RUN_FLAGS_SSH_SOCK}"),
        "-e GIT_CONFIG_COUNT=1".to_string(),
        "-e GIT_CONFIG_KEY_0=credential.helper".to_string(),
        format!("-e GIT_CONFIG_VALUE_0={bin}/git-credential-clawker"),
    ];
    if args.gpg {
        flags.push(format!("-e GNUPGHOME={RUN_FLAGS_GNUPGHOME}"));
    }
    flags
}

pub fn run_flags(args: RunFlagsArgs, attach: &AttachSettings) -> Result<ExitCode> {
    let flags = run_flags_list(&args, &attach.label);
    if args.gpg && !attach.scopes.iter().any(|s| s.trim() == "gpg") {
        eprintln!(
            "hostproxy: the container signs with gpg only when the daemon grants it the gpg scope (attach.scopes in the config, or attach --allow)"
        );
    }
    if args.lines {
        for f in flags {
            println!("{f}");
        }
    } else {
        println!("{}", flags.join(" "));
    }
    Ok(ExitCode::SUCCESS)
}
