//! `hostproxy attach` and `detach` (SPEC.md 6.1): requests to the running daemon over its
//! control socket.

use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::Args;
use clawker_protocol::tunnel::{AttachmentInfo, ControlRequest, ControlResponse};
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
    /// A scope the attached container gets (repeatable): open, callback, notify,
    /// git:HOST[/PREFIX], git:*, git-push:HOST[/PREFIX], git-store:HOST, ssh, ssh:SHA256:…,
    /// ssh-login, gpg, docker:REGISTRY, docker:*, socket:NAME, egress:NAME. Default: attach.scopes (open, callback, git:*, ssh); the container's
    /// own dev.clawker.hostproxy.scopes label can only narrow them.
    #[arg(
        long = "allow",
        value_name = "SCOPE",
        value_parser = clap::builder::TypedValueParser::map(super::ScopeArg, |s| s.to_string()),
        hide_possible_values = true
    )]
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
        a.engine.as_str(),
        a.state.as_str(),
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
            if r.attachments.is_empty() {
                // On stderr: a script reading the list still reads nothing.
                eprintln!("nothing is attached");
            }
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
        gpg_agent: None,
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
