//! `hostproxy bridge` (SPEC.md 6.1, 12): an alias of `attach` with the ssh-agent and
//! gpg-agent sockets at the paths its flags name. One host end of the bridge: the running
//! daemon's tunnel attaches the container (its engine, its agent filter and audit, its
//! restarts); this command stays in the foreground while the attachment lives, and
//! detaches it on Ctrl-C or SIGTERM, as the standalone bridge did.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Args;
use clawker_protocol::tunnel::{AttachState, ControlRequest, ControlResponse, RemoteSocket};
use hostproxy::state::StateDir;
use hostproxy::tunnel::control;

/// The container end this command names by default: the daemon's own copy of it.
const DEFAULT_SERVER: &str = "clawker-socket-server";

#[derive(Debug, Clone, Args)]
pub struct BridgeArgs {
    /// Container id or name.
    #[arg(long)]
    pub container: String,
    /// Bridge the host's SSH agent (the daemon's SSH_AUTH_SOCK).
    #[arg(long)]
    pub ssh: bool,
    /// Bridge the host's gpg-agent (its restricted extra socket) and public keys.
    #[arg(long)]
    pub gpg: bool,
    /// SSH agent socket path inside the container (`~` is the container user's home).
    #[arg(long, default_value = "~/.ssh/agent.sock")]
    pub ssh_socket: String,
    /// gpg-agent socket path inside the container; its directory receives the public keyring.
    #[arg(long, default_value = "~/.gnupg/S.gpg-agent")]
    pub gpg_socket: String,
    /// The container-side program. Default: the daemon's own copy of clawker-socket-server;
    /// another one (the image's) runs through `docker exec -i` on the daemon's host.
    #[arg(long, default_value = DEFAULT_SERVER)]
    pub server: String,
    /// Host gpg-agent socket to connect gpg streams to. Default: the daemon's (gpgconf's
    /// agent-extra-socket, restricted for remote use); name another only if you know why.
    #[arg(long)]
    pub gpg_agent_socket: Option<std::path::PathBuf>,
    /// User to run the container-side program as (through `docker exec -i -u USER`).
    #[arg(long)]
    pub user: Option<String>,
}

/// What the daemon is asked.
#[derive(Debug, PartialEq, Eq)]
pub struct Plan {
    pub request: ControlRequest,
}

impl Plan {
    /// Whether an attachment's scopes are the ones this plan asks for (the daemon's answer
    /// is then this attach, not one that was there before).
    fn allow_matches(&self, scopes: &[String]) -> bool {
        let ControlRequest::Attach { allow, .. } = &self.request else {
            return false;
        };
        let (mut a, mut b) = (allow.clone(), scopes.to_vec());
        a.sort();
        b.sort();
        a == b
    }
}

/// The attach `args` ask for, for the container `id` named `name` whose environment is
/// `env`: the daemon's own container end where the default is asked for, else the named
/// program through `docker exec -i`.
pub fn plan(args: &BridgeArgs, id: &str, name: &str, env: &[String]) -> Result<Plan> {
    if !args.ssh && !args.gpg {
        bail!("nothing to bridge: pass --ssh, --gpg or both");
    }
    let gpg_agent = match &args.gpg_agent_socket {
        // The daemon runs elsewhere (cwd `/`): the path as this shell means it.
        Some(p) => Some(
            std::path::absolute(p)
                .with_context(|| format!("--gpg-agent-socket {}", p.display()))?
                .display()
                .to_string(),
        ),
        None => None,
    };
    // Upstream's container end takes paths literally: `~/` is the container's HOME here
    // (else /root), so the default paths work with it too (SPEC.md 6.1).
    let home = container_home(env);
    let mut sockets = Vec::new();
    let mut allow = Vec::new();
    if args.ssh {
        sockets.push(RemoteSocket::SshAgent {
            path: expand_home(&args.ssh_socket, &home),
        });
        // The user's own command for one container: every key, logins too, as far as the
        // daemon's agent policy goes (what the standalone bridge gave).
        allow.extend(["ssh".to_string(), "ssh-login".to_string()]);
    }
    if args.gpg {
        sockets.push(RemoteSocket::GpgAgent {
            path: expand_home(&args.gpg_socket, &home),
        });
        allow.push("gpg".to_string());
    }
    let request = if args.server == DEFAULT_SERVER && args.user.is_none() {
        ControlRequest::Attach {
            container: Some(id.to_string()),
            via: None,
            name: None,
            allow,
            sockets,
            declared: Vec::new(),
            gpg_agent,
        }
    } else {
        // The daemon sets CLAWKER_REMOTE_SOCKETS for a --via command; `docker exec -e NAME`
        // hands it on.
        let mut argv: Vec<String> = ["docker", "exec", "-i", "-e"].map(str::to_string).to_vec();
        argv.push(clawker_protocol::env::REMOTE_SOCKETS.to_string());
        if let Some(u) = &args.user {
            argv.extend(["-u".to_string(), u.clone()]);
        }
        argv.extend([id.to_string(), args.server.clone()]);
        ControlRequest::Attach {
            container: None,
            via: Some(argv),
            name: Some(name.to_string()),
            allow,
            sockets,
            declared: Vec::new(),
            gpg_agent,
        }
    };
    Ok(Plan { request })
}

/// The container's `HOME` (an absolute one), else `/root`.
fn container_home(env: &[String]) -> String {
    env.iter()
        .filter_map(|kv| kv.strip_prefix("HOME="))
        .rfind(|h| h.starts_with('/'))
        .unwrap_or("/root")
        .trim_end_matches('/')
        .to_string()
}

/// `~/REST` as `HOME/REST`; any other path as it is.
fn expand_home(path: &str, home: &str) -> String {
    match path.strip_prefix("~/") {
        Some(rest) => format!("{home}/{rest}"),
        None => path.to_string(),
    }
}

fn checked(r: ControlResponse) -> Result<ControlResponse> {
    if !r.ok {
        bail!("{}", r.error.unwrap_or_else(|| "the daemon refused".into()));
    }
    Ok(r)
}

pub fn bridge(args: BridgeArgs) -> Result<ExitCode> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(run(args))
}

async fn run(args: BridgeArgs) -> Result<ExitCode> {
    let docker = hostproxy::docker::connect()?;
    let (info, id, name) =
        hostproxy::tunnel::engine::inspect_running(&docker, &args.container).await?;
    let env = info.config.and_then(|c| c.env).unwrap_or_default();
    let plan = plan(&args, &id, &name, &env)?;
    let socket = StateDir::from_env()?.control_socket();
    let stop = stop_signal();
    let attached = checked(control::request_async(&socket, &plan.request).await?)?;
    let Some(info) = attached.attachments.first() else {
        bail!("the daemon attached nothing and said nothing");
    };
    // An attach of what is already attached answers the attachment that exists (by its
    // label, by hand, another bridge): its sockets are not at these paths, and it is not
    // this command's to detach.
    if info.state != AttachState::Attaching || !plan.allow_matches(&info.scopes) {
        bail!(
            "{} is already attached ({}, {}): its sockets are that attachment's, not at the bridge's paths; `hostproxy detach {}` first to bridge it",
            info.name,
            info.identity,
            info.state.as_str(),
            info.name
        );
    }
    let name = info.name.clone();
    eprintln!(
        "hostproxy bridge: bridging {} into container {} through the daemon (Ctrl-C detaches)",
        [
            args.ssh.then_some("ssh-agent"),
            args.gpg.then_some("gpg-agent")
        ]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join(" and "),
        args.container
    );
    // In the foreground while the attachment lives, as the standalone bridge was. The signal
    // listener lives across the loop: a SIGTERM that comes while the list is asked for is
    // kept for the next turn, not lost.
    tokio::pin!(stop);
    let mut every = tokio::time::interval(Duration::from_millis(500));
    loop {
        tokio::select! {
            () = &mut stop => {
                let detach = ControlRequest::Detach { name: name.clone() };
                checked(control::request_async(&socket, &detach).await?)?;
                eprintln!("hostproxy bridge: detached {name}");
                return Ok(ExitCode::SUCCESS);
            }
            _ = every.tick() => {
                let list = checked(control::request_async(&socket, &ControlRequest::List).await?)?;
                let live = list
                    .attachments
                    .iter()
                    .any(|a| a.name == name && a.state != AttachState::Failed);
                if !live {
                    eprintln!("hostproxy bridge: {name} is no longer attached (its container stopped, or it was detached): bridge ends");
                    return Ok(ExitCode::SUCCESS);
                }
            }
        }
    }
}

/// Ctrl-C or SIGTERM, listened for from the moment this is called (not from its first
/// poll): a signal that comes before the loop waits for it is kept.
#[cfg(unix)]
fn stop_signal() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{SignalKind, signal};
    let (int, term) = (
        signal(SignalKind::interrupt()).ok(),
        signal(SignalKind::terminate()).ok(),
    );
    async move {
        match (int, term) {
            (Some(mut int), Some(mut term)) => tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
            },
            _ => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
}

/// Ctrl-C.
#[cfg(not(unix))]
async fn stop_signal() {
    let _ = tokio::signal::ctrl_c().await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: BridgeArgs,
    }

    fn args(argv: &[&str]) -> BridgeArgs {
        Cli::parse_from(std::iter::once("bridge").chain(argv.iter().copied())).args
    }

    #[test]
    fn the_defaults_attach_through_the_daemons_own_container_end_with_absolute_paths() {
        let p = plan(
            &args(&["--container", "c1", "--ssh", "--gpg"]),
            "abc123",
            "c1",
            &["PATH=/bin".into(), "HOME=/home/dev/".into()],
        )
        .unwrap();
        assert_eq!(
            p.request,
            ControlRequest::Attach {
                container: Some("abc123".into()),
                via: None,
                name: None,
                allow: vec!["ssh".into(), "ssh-login".into(), "gpg".into()],
                sockets: vec![
                    RemoteSocket::SshAgent {
                        path: "/home/dev/.ssh/agent.sock".into()
                    },
                    RemoteSocket::GpgAgent {
                        path: "/home/dev/.gnupg/S.gpg-agent".into()
                    },
                ],
                declared: vec![],
                gpg_agent: None,
            }
        );
        // No HOME: root's; a path without `~/` as given.
        let p = plan(
            &args(&["--container", "c1", "--ssh", "--ssh-socket", "/run/a.sock"]),
            "abc123",
            "c1",
            &[],
        )
        .unwrap();
        let ControlRequest::Attach { sockets, allow, .. } = p.request else {
            panic!("not an attach")
        };
        assert_eq!(
            sockets,
            [RemoteSocket::SshAgent {
                path: "/run/a.sock".into()
            }]
        );
        assert_eq!(allow, ["ssh", "ssh-login"]);
        assert_eq!(
            expand_home("~/.ssh/a", &container_home(&[])),
            "/root/.ssh/a"
        );
    }

    #[test]
    fn another_server_or_user_runs_through_docker_exec_and_nothing_else_is_taken() {
        let p = plan(
            &args(&[
                "--container",
                "c1",
                "--gpg",
                "--server",
                "/usr/local/bin/clawker-socket-server",
                "--user",
                "dev",
            ]),
            "abc123",
            "c1",
            &[],
        )
        .unwrap();
        let ControlRequest::Attach {
            container,
            via,
            name,
            ..
        } = p.request
        else {
            panic!("not an attach")
        };
        assert_eq!(container, None);
        assert_eq!(name.as_deref(), Some("c1"));
        assert_eq!(
            via.unwrap(),
            [
                "docker",
                "exec",
                "-i",
                "-e",
                "CLAWKER_REMOTE_SOCKETS",
                "-u",
                "dev",
                "abc123",
                "/usr/local/bin/clawker-socket-server"
            ]
        );
        let e = plan(&args(&["--container", "c1"]), "a", "c1", &[]).unwrap_err();
        assert!(e.to_string().contains("pass --ssh, --gpg"), "{e}");
        // Another host gpg-agent socket: handed on, absolute.
        let p = plan(
            &args(&[
                "--container",
                "c1",
                "--gpg",
                "--gpg-agent-socket",
                "/run/x.sock",
            ]),
            "a",
            "c1",
            &[],
        )
        .unwrap();
        let ControlRequest::Attach { gpg_agent, .. } = p.request else {
            panic!("not an attach")
        };
        assert_eq!(gpg_agent.as_deref(), Some("/run/x.sock"));
    }
}
