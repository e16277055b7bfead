//! `hostproxy doctor`: one line per check, with the fix when it fails.

use std::process::{Command, ExitCode, Stdio};
use std::time::Duration;

use anyhow::Result;
use serde::Serialize;

use crate::config::Settings;
use crate::state::StateDir;

#[derive(Debug, Serialize)]
pub struct Check {
    pub name: &'static str,
    pub ok: bool,
    /// Works, but unsafely: shown with `!` and its fix; doctor still exits 0.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub warning: bool,
    pub detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

fn pass(name: &'static str, detail: impl Into<String>) -> Check {
    Check {
        name,
        ok: true,
        warning: false,
        detail: detail.into(),
        fix: None,
    }
}

fn fail(name: &'static str, detail: impl Into<String>, fix: impl Into<String>) -> Check {
    Check {
        name,
        ok: false,
        warning: false,
        detail: detail.into(),
        fix: Some(fix.into()),
    }
}

fn warn(name: &'static str, detail: impl Into<String>, fix: impl Into<String>) -> Check {
    Check {
        warning: true,
        ok: true,
        ..fail(name, detail, fix)
    }
}

/// Running containers that mount the user's own token, which has every scope.
async fn check_token_mounts(docker: &bollard::Docker, token_file: &std::path::Path) -> Check {
    let token = std::fs::canonicalize(token_file).unwrap_or_else(|_| token_file.to_path_buf());
    let Ok(list) = docker
        .list_containers(None::<bollard::query_parameters::ListContainersOptions>)
        .await
    else {
        return pass("containers with your token", "cannot list containers");
    };
    let mounting: Vec<String> = list
        .iter()
        .filter(|c| {
            c.mounts.iter().flatten().any(|m| {
                m.source
                    .as_deref()
                    .map(std::path::Path::new)
                    .is_some_and(|p| {
                        p == token || std::fs::canonicalize(p).is_ok_and(|p| p == token)
                    })
            })
        })
        .map(|c| {
            c.names
                .as_ref()
                .and_then(|n| n.first())
                .map(|n| n.trim_start_matches('/').to_string())
                .or_else(|| c.id.clone().map(|i| i.chars().take(12).collect()))
                .unwrap_or_default()
        })
        .collect();
    if mounting.is_empty() {
        return pass("containers with your token", "none mounts it");
    }
    let first = mounting[0].clone();
    warn(
        "containers with your token",
        format!(
            "{} mount{} your own token (every scope, for everyone): {}",
            mounting.len(),
            if mounting.len() == 1 { "s" } else { "" },
            mounting.join(", ")
        ),
        format!(
            "give each its own scoped token instead: hostproxy token issue --name {first} --container {first} --allow open --allow callback --allow 'git:*' --allow ssh > {first}.token, and mount that"
        ),
    )
}

fn output(program: &str, args: &[&str]) -> Option<String> {
    let mut cmd = Command::new(program);
    crate::platform::process::as_host_program(&mut cmd);
    let o = cmd
        .args(args)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    o.status
        .success()
        .then(|| String::from_utf8_lossy(&o.stdout).trim().to_string())
}

fn on_path(program: &str) -> bool {
    if program.contains('/') {
        return std::path::Path::new(program).is_file();
    }
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(program).is_file()))
}

fn check_git() -> Vec<Check> {
    let Some(version) = output("git", &["--version"]) else {
        return vec![fail(
            "git",
            "git is not installed",
            "install git (apt-get install git)",
        )];
    };
    let helpers = output("git", &["config", "--get-all", "credential.helper"]).unwrap_or_default();
    vec![
        pass("git", version),
        if helpers.is_empty() {
            fail(
                "git credential helper",
                "no credential.helper is configured on the host",
                "configure one, e.g. git config --global credential.helper store (or libsecret, osxkeychain, manager)",
            )
        } else {
            pass(
                "git credential helper",
                helpers.lines().collect::<Vec<_>>().join(", "),
            )
        },
    ]
}

async fn check_ssh_agent() -> Check {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Some(sock) = crate::platform::local::ssh_agent_socket() else {
        return fail(
            "ssh agent",
            "SSH_AUTH_SOCK is not set",
            "start an agent (eval \"$(ssh-agent)\" && ssh-add) before the daemon",
        );
    };
    let ask = async {
        let mut s = crate::platform::local::connect(&sock).await?;
        s.write_all(&[0, 0, 0, 1, 11]).await?;
        let mut head = [0u8; 9];
        s.read_exact(&mut head).await?;
        if head[4] != 12 {
            return Err(std::io::ErrorKind::InvalidData.into());
        }
        Ok::<u32, std::io::Error>(u32::from_be_bytes([head[5], head[6], head[7], head[8]]))
    };
    let count = tokio::time::timeout(Duration::from_secs(3), ask)
        .await
        .unwrap_or_else(|_| Err(std::io::ErrorKind::TimedOut.into()));
    let sock = sock.display();
    match count {
        Ok(0) => fail(
            "ssh agent",
            format!("{sock} answers but holds no keys"),
            "add a key with ssh-add",
        ),
        Ok(n) => pass("ssh agent", format!("{sock} answers with {n} key(s)")),
        Err(e) => fail(
            "ssh agent",
            format!("{sock} does not answer: {e}"),
            "restart the agent and export its SSH_AUTH_SOCK",
        ),
    }
}

async fn check_gpg() -> Check {
    let Some(path) = output("gpgconf", &["--list-dirs", "agent-extra-socket"]) else {
        return fail(
            "gpg-agent",
            "gpgconf is not installed",
            "install gnupg to sign commits with GPG from containers",
        );
    };
    if crate::platform::local::connect(std::path::Path::new(&path))
        .await
        .is_ok()
    {
        pass("gpg-agent", format!("extra socket {path} answers"))
    } else {
        fail(
            "gpg-agent",
            format!("extra socket {path} does not answer"),
            "start the agent: gpg-connect-agent /bye",
        )
    }
}

async fn check_docker(token_file: &std::path::Path) -> Vec<Check> {
    let docker = match crate::docker::connect() {
        Ok(d) => d,
        Err(e) => {
            return vec![fail(
                "docker",
                format!("{e:#}"),
                "start Docker (systemctl start docker) or set DOCKER_HOST",
            )];
        }
    };
    if let Err(e) = docker.ping().await {
        return vec![fail(
            "docker",
            format!("the engine does not answer: {e}"),
            "start Docker (systemctl start docker) or set DOCKER_HOST",
        )];
    }
    let gw = match crate::docker::bridge_gateways().await {
        Ok(g) if !g.is_empty() => pass(
            "docker bridge gateway",
            format!(
                "{} (serve with --listen-docker-bridge to be reachable there)",
                g.iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ),
        Ok(_) => fail(
            "docker bridge gateway",
            "no bridge network gateway found",
            "create the default bridge network or pass --listen ADDR",
        ),
        Err(e) => fail(
            "docker bridge gateway",
            format!("{e:#}"),
            "check the Docker engine",
        ),
    };
    let mounts = check_token_mounts(&docker, token_file).await;
    vec![pass("docker", "the engine answers"), gw, mounts]
}

fn check_port(port: u16) -> Check {
    if crate::lifecycle::is_ours(port) {
        return pass("port", format!("{port} is served by hostproxy"));
    }
    match std::net::TcpListener::bind(("127.0.0.1", port)) {
        Ok(_) => pass("port", format!("{port} is free")),
        Err(_) => fail(
            "port",
            format!("{port} is taken by something that is not hostproxy"),
            "stop it, or use --port / CLAWKER_HOST_PROXY_PORT",
        ),
    }
}

fn check_state(state: &StateDir) -> Vec<Check> {
    let probe = state.root().join(".doctor-probe");
    let writable =
        StateDir::ensure_dir(state.root()).is_ok() && std::fs::write(&probe, b"x").is_ok();
    let _ = std::fs::remove_file(&probe);
    let dir = if writable {
        pass(
            "state dir",
            format!("{} is writable", state.root().display()),
        )
    } else {
        fail(
            "state dir",
            format!("{} is not writable", state.root().display()),
            "fix its permissions or set CLAWKER_STATE_DIR",
        )
    };
    let token = match std::fs::metadata(state.token_file()).map(|m| crate::platform::fs::mode(&m)) {
        Ok(None) => pass("token", state.token_file().display().to_string()),
        Ok(Some(mode)) if mode & 0o077 == 0 => pass(
            "token",
            format!("{} (mode 0600)", state.token_file().display()),
        ),
        Ok(Some(mode)) => fail(
            "token",
            format!(
                "{} has mode {:o}",
                state.token_file().display(),
                mode & 0o777
            ),
            format!("chmod 600 {}", state.token_file().display()),
        ),
        Err(_) => fail(
            "token",
            format!("{} does not exist", state.token_file().display()),
            "run `hostproxy token` or start the daemon once",
        ),
    };
    vec![dir, token]
}

/// The container tools the tunnel copies into images that lack them (SPEC.md 12): found for
/// this host's architecture, and where they come from.
fn check_tools(settings: &Settings, state: &StateDir) -> Check {
    let tools = crate::tunnel::tools::Tools::new(settings.attach.tools_dir.clone())
        .with_embedded(state.tools_dir());
    let arch = std::env::consts::ARCH;
    match tools.dir_for(arch) {
        Ok(dir) => pass(
            "container tools",
            format!("{} ({})", dir.display(), tools.describe()),
        ),
        Err(e) => fail(
            "container tools",
            format!("{e:#}"),
            "install a release hostproxy (it carries them), or build them with `cargo xtask dist`, or name their folder with --tools-dir",
        ),
    }
}

fn check_launcher(settings: &Settings) -> Check {
    let program = settings
        .browser
        .as_ref()
        .and_then(|b| b.first().cloned())
        .unwrap_or_else(|| crate::backends::default_launcher()[0].to_string());
    if on_path(&program) {
        pass("browser launcher", program)
    } else {
        fail(
            "browser launcher",
            format!("{program} is not found"),
            "install xdg-utils, or pass --browser CMD / set browser in the config",
        )
    }
}

/// The declared host sockets (`[[bridge.sockets]]`): there, a socket, whose.
fn check_sockets(settings: &Settings) -> Vec<Check> {
    settings
        .sockets
        .iter()
        .map(|d| {
            let shown = format!("{} → {}", d.name, d.path.display());
            if crate::platform::docker_host::is_engine_socket(&d.path) && !d.allow_docker_socket {
                return fail(
                    "declared socket",
                    format!("{shown} is the Docker engine's socket (root on this host)"),
                    "remove it from [[bridge.sockets]], or set allow_docker_socket = true if you mean it",
                );
            }
            match std::fs::symlink_metadata(&d.path) {
                Ok(m) if crate::platform::fs::is_socket(&m) => pass(
                    "declared socket",
                    match crate::platform::fs::owner(&m) {
                        Some(uid) => format!("{shown} (owner uid {uid})"),
                        None => shown,
                    },
                ),
                Ok(_) => fail(
                    "declared socket",
                    format!("{shown} is not a socket"),
                    "point path at the agent's socket",
                ),
                Err(e) => warn(
                    "declared socket",
                    format!("{shown}: {e}"),
                    "start the program that serves it (containers asking for it get nothing until then)",
                ),
            }
        })
        .collect()
}

/// `[approval]`: what asks, and who can answer (SPEC.md 14). Asked in this shell's
/// environment: a daemon run as a service sees its own.
fn check_approval(settings: &Settings) -> Check {
    let a = &settings.approval;
    if a.ask.is_empty() {
        return pass(
            "approval",
            "nothing waits for an answer ([approval] ask is empty)",
        );
    }
    let asks: Vec<String> = a.ask.iter().map(ToString::to_string).collect();
    let mut who = vec!["hostproxy approvals / approve / deny".to_string()];
    if let Some(argv) = &a.approver {
        let p = std::path::Path::new(&argv[0]);
        if !(p.is_file() || on_path(&argv[0])) {
            return fail(
                "approval",
                format!("the approver {} is not found", argv[0]),
                "fix approval.approver / --approver",
            );
        }
        who.push(format!("the approver {}", argv[0]));
    }
    let detail = format!(
        "asks for {}; answered by {}",
        asks.join(", "),
        who.join(", ")
    );
    match (a.desktop, crate::approval::desktop()) {
        (true, Ok(how)) => pass("approval", format!("{detail}, the desktop ({how})")),
        (true, Err(why)) => warn(
            "approval",
            format!("{detail}; the desktop cannot ask here: {why}"),
            "keep `hostproxy approvals` open in a terminal, or set --approver",
        ),
        (false, _) => pass("approval", detail),
    }
}

/// Runs every check and prints them. `settings` is the resolved configuration, or why it
/// could not be read (then reported as a failing check, and the defaults are used for the
/// rest).
pub fn run(port: u16, json: bool, settings: Result<Settings, String>) -> Result<ExitCode> {
    let (settings, config) = match settings {
        Ok(s) => (s, pass("config", "readable")),
        Err(e) => (
            Settings::default(),
            fail(
                "config",
                e,
                "fix the config file (or pass --config with a good one)",
            ),
        ),
    };
    let state = StateDir::from_env()?;
    let mut checks = vec![config];
    checks.extend(check_git());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    checks.push(rt.block_on(check_ssh_agent()));
    checks.push(rt.block_on(check_gpg()));
    checks.extend(rt.block_on(check_docker(&state.token_file())));
    checks.push(check_port(port));
    checks.extend(check_state(&state));
    checks.push(check_tools(&settings, &state));
    checks.push(match crate::service::describe() {
        Ok(d) => pass("service", d),
        Err(e) => fail(
            "service",
            e,
            "run `hostproxy service install` again with the hostproxy you use",
        ),
    });
    checks.push(check_launcher(&settings));
    checks.extend(check_sockets(&settings));
    checks.push(check_approval(&settings));
    for d in &settings.egress {
        let secrets = crate::egress::secret::Secrets::default();
        let shown = format!("{} → {}", d.name, d.upstream);
        checks.push(match rt.block_on(secrets.get(d)) {
            Ok(_) => pass("egress", format!("{shown}: its secret answers")),
            Err(e) => fail(
                "egress",
                format!("{shown}: {e}"),
                "fix secret.env / secret.file / secret.command of this [[egress]]",
            ),
        });
    }
    let ok = checks.iter().all(|c| c.ok);
    if json {
        println!("{}", serde_json::json!({ "ok": ok, "checks": checks }));
    } else {
        for c in &checks {
            match (&c.fix, c.warning) {
                (None, _) => println!("✓ {}: {}", c.name, c.detail),
                (Some(fix), true) => println!("! {}: {}\n    fix: {fix}", c.name, c.detail),
                (Some(fix), false) => println!("✗ {}: {}\n    fix: {fix}", c.name, c.detail),
            }
        }
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
