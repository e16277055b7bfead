//! The daemon's side effects on the host, behind traits.
//!
//! Routes hold the policy (validation, filters, limits); these hold the effect (spawn a
//! browser, run git, talk to the agent, bind a port). The real daemon uses the `Host*`
//! implementations here; `mock-proxy` plugs in recording fakes behind the very same routes
//! and gates, which is what keeps the two from drifting apart.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use clawker_protocol::api::GitCredentialAction;
use clawker_protocol::credential::{CredentialFields, decode};
use futures_util::future::BoxFuture;
use thiserror::Error;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::config::GitPolicy;

#[derive(Debug, Error)]
pub enum LaunchError {
    #[error("cannot start the URL launcher {program:?}: {source}")]
    Spawn {
        program: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the URL launcher {program:?} exited with {status}")]
    Failed { program: String, status: String },
}

/// Opens a URL in the host's browser.
pub trait Launcher: Send + Sync + 'static {
    fn open<'a>(&'a self, url: &'a str) -> BoxFuture<'a, Result<(), LaunchError>>;
}

#[derive(Debug, Error)]
pub enum GitError {
    #[error("git did not answer within {0:?}")]
    Timeout(Duration),
    #[error("cannot run git: {0}")]
    Spawn(#[source] std::io::Error),
    #[error("git exited with {0}")]
    Failed(String),
    #[error("git's reply was not in the credential format")]
    BadReply,
}

/// Runs `git credential fill|approve|reject`.
pub trait CredentialHelper: Send + Sync + 'static {
    /// For `Get`, `Ok(Some)` carries what git found and `Ok(None)` means nothing was found.
    fn run(
        &self,
        action: GitCredentialAction,
        input: CredentialFields,
    ) -> BoxFuture<'_, Result<Option<CredentialFields>, GitError>>;
}

#[derive(Debug, Error)]
pub enum AgentError {
    #[error("no SSH agent on the host: SSH_AUTH_SOCK is not set for the daemon")]
    NoSocket,
    #[error("the host SSH agent is not answering")]
    Unreachable(#[source] std::io::Error),
    #[error("the host SSH agent sent an invalid reply")]
    BadReply,
}

/// Sends one framed request to the host's SSH agent and returns its framed reply.
pub trait AgentConnector: Send + Sync + 'static {
    fn request(&self, frame: Vec<u8>) -> BoxFuture<'_, Result<Vec<u8>, AgentError>>;
}

#[derive(Debug, Error)]
pub enum BindError {
    #[error("port {0} is already in use on the host")]
    InUse(u16),
    #[error("cannot listen on port {port}: {source}")]
    Other {
        port: u16,
        #[source]
        source: std::io::Error,
    },
}

/// Binds the loopback listeners of a callback session.
pub trait PortBinder: Send + Sync + 'static {
    /// Returns the listeners to serve; an empty list means "nothing to serve" (the mock).
    fn bind(&self, port: u16) -> Result<Vec<std::net::TcpListener>, BindError>;
}

/// Every side effect the routes may cause.
#[derive(Clone)]
pub struct Backends {
    pub launcher: Arc<dyn Launcher>,
    pub git: Arc<dyn CredentialHelper>,
    pub agent: Arc<dyn AgentConnector>,
    pub ports: Arc<dyn PortBinder>,
}

impl std::fmt::Debug for Backends {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Backends")
    }
}

/// Launches `argv... URL` directly (never through a shell).
#[derive(Debug, Clone)]
pub struct CommandLauncher {
    argv: Vec<String>,
}

impl CommandLauncher {
    pub fn new(argv: Option<Vec<String>>) -> Self {
        let default = if cfg!(target_os = "macos") {
            "open"
        } else {
            "xdg-open"
        };
        Self {
            argv: argv.unwrap_or_else(|| vec![default.to_string()]),
        }
    }
}

/// How long the launcher may run before it counts as "started": `xdg-open` returns at once,
/// a browser run directly keeps running and is then reaped in the background.
const LAUNCH_SETTLE: Duration = Duration::from_millis(1500);

impl Launcher for CommandLauncher {
    fn open<'a>(&'a self, url: &'a str) -> BoxFuture<'a, Result<(), LaunchError>> {
        Box::pin(async move {
            let program = self.argv[0].clone();
            let mut cmd = tokio::process::Command::new(&program);
            cmd.args(&self.argv[1..])
                .arg(url)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .process_group(0);
            let mut child = cmd.spawn().map_err(|source| LaunchError::Spawn {
                program: program.clone(),
                source,
            })?;
            match tokio::time::timeout(LAUNCH_SETTLE, child.wait()).await {
                Ok(Ok(status)) if status.success() => Ok(()),
                Ok(Ok(status)) => Err(LaunchError::Failed {
                    program,
                    status: status.to_string(),
                }),
                Ok(Err(source)) => Err(LaunchError::Spawn { program, source }),
                Err(_) => {
                    tokio::spawn(async move {
                        let _ = child.wait().await;
                    });
                    Ok(())
                }
            }
        })
    }
}

/// Runs the host's real `git credential`.
#[derive(Debug, Clone)]
pub struct GitCommand {
    policy: GitPolicy,
    detach: Detach,
}

impl GitCommand {
    pub fn new(policy: GitPolicy) -> Self {
        Self::with_detach(policy, Detach::for_this_process())
    }

    fn with_detach(policy: GitPolicy, detach: Detach) -> Self {
        Self { policy, detach }
    }
}

/// How git is kept off the daemon's terminal (see [`detach_from_terminal`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Detach {
    /// A session of its own (`setsid` before exec): needed when the daemon has a terminal.
    Session,
    /// A process group of its own: enough when the daemon has no terminal.
    Group,
}

impl Detach {
    fn for_this_process() -> Self {
        if has_controlling_terminal() {
            Self::Session
        } else {
            Self::Group
        }
    }
}

/// Whether this process has a controlling terminal (`/dev/tty` opens only then). Asked once:
/// the daemon never opens a terminal, so the answer cannot change while it runs.
fn has_controlling_terminal() -> bool {
    static ANSWER: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ANSWER.get_or_init(|| std::fs::File::open("/dev/tty").is_ok())
}

/// Keeps the child off the terminal the daemon was started from, so neither git nor a helper
/// can prompt there, and makes it lead its own process group (for [`kill_group`]).
///
/// With a controlling terminal (`hostproxy serve` in a shell) the child gets a session of its
/// own (`setsid` before exec, which forces `fork`). Without one (`hostproxy start` runs the
/// daemon in its own session) the child cannot reach a terminal anyway, and a new process
/// group is enough, which lets the standard library use `posix_spawn` (≈ 0.2 ms less per
/// credential request).
#[allow(unsafe_code)]
fn detach_from_terminal(cmd: &mut tokio::process::Command, how: Detach) {
    if how == Detach::Group {
        cmd.process_group(0);
        return;
    }
    // SAFETY: setsid is async-signal-safe and touches no memory of the parent.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

fn kill_group(pid: Option<u32>) {
    if let Some(pid) = pid.and_then(|p| i32::try_from(p).ok()) {
        // The child leads its own process group (see `detach_from_terminal`), so this reaches
        // the helpers git started too.
        #[allow(unsafe_code)]
        // SAFETY: kill(2) with a negative pid signals a process group; no memory involved.
        unsafe {
            libc::kill(-pid, libc::SIGKILL);
        }
    }
}

impl CredentialHelper for GitCommand {
    fn run(
        &self,
        action: GitCredentialAction,
        input: CredentialFields,
    ) -> BoxFuture<'_, Result<Option<CredentialFields>, GitError>> {
        Box::pin(async move {
            let stdin_text = input.encode().map_err(|_| GitError::BadReply)?;
            let mut cmd = tokio::process::Command::new(&self.policy.program);
            cmd.args(["-c", "core.askPass=", "credential", action.git_subcommand()])
                .env("GIT_TERMINAL_PROMPT", "0")
                .env_remove("GIT_ASKPASS")
                .env_remove("SSH_ASKPASS")
                .env("GCM_INTERACTIVE", "never")
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .kill_on_drop(true);
            detach_from_terminal(&mut cmd, self.detach);
            let mut child = cmd.spawn().map_err(GitError::Spawn)?;
            let pid = child.id();
            let mut stdin = child.stdin.take().ok_or(GitError::BadReply)?;
            let mut stdout = child.stdout.take().ok_or(GitError::BadReply)?;
            let work = async {
                stdin
                    .write_all(stdin_text.as_bytes())
                    .await
                    .map_err(GitError::Spawn)?;
                drop(stdin);
                let mut out = Vec::new();
                // A helper has no business sending more than this.
                (&mut stdout)
                    .take(64 * 1024)
                    .read_to_end(&mut out)
                    .await
                    .map_err(GitError::Spawn)?;
                let status = child.wait().await.map_err(GitError::Spawn)?;
                Ok::<_, GitError>((status, out))
            };
            let (status, out) = match tokio::time::timeout(self.policy.timeout, work).await {
                Ok(r) => r?,
                Err(_) => {
                    kill_group(pid);
                    return Err(GitError::Timeout(self.policy.timeout));
                }
            };
            if action != GitCredentialAction::Get {
                return if status.success() {
                    Ok(None)
                } else {
                    Err(GitError::Failed(status.to_string()))
                };
            }
            if !status.success() {
                // `fill` with prompts disabled exits non-zero when no helper knows the host.
                return Ok(None);
            }
            let text = String::from_utf8(out).map_err(|_| GitError::BadReply)?;
            let fields =
                CredentialFields::from_pairs(decode(&text).map_err(|_| GitError::BadReply)?);
            Ok(fields.password.is_some().then_some(fields))
        })
    }
}

/// Talks to the host agent at `SSH_AUTH_SOCK`, reusing idle connections.
///
/// A connection that carried an extension (`session-bind@openssh.com` binds the connection
/// to one SSH session) is never reused, so per-connection agent state cannot leak from
/// one container client to another; list and sign carry no such state.
#[derive(Debug)]
pub struct UnixAgent {
    socket: Option<PathBuf>,
    idle: std::sync::Mutex<Vec<tokio::net::UnixStream>>,
}

/// Idle agent connections kept for reuse.
const AGENT_POOL: usize = 8;

impl UnixAgent {
    pub fn new(socket: Option<PathBuf>) -> Self {
        Self {
            socket,
            idle: std::sync::Mutex::new(Vec::new()),
        }
    }

    fn take_idle(&self) -> Option<tokio::net::UnixStream> {
        self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop()
    }

    fn put_idle(&self, s: tokio::net::UnixStream) {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() < AGENT_POOL {
            idle.push(s);
        }
    }

    async fn exchange(s: &mut tokio::net::UnixStream, frame: &[u8]) -> std::io::Result<Vec<u8>> {
        s.write_all(frame).await?;
        read_agent_frame(s).await
    }

    pub fn from_env() -> Self {
        Self::new(
            std::env::var_os(clawker_protocol::env::SSH_AUTH_SOCK)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from),
        )
    }
}

/// Reads one agent frame from `r`, bounded by the protocol's limit.
pub async fn read_agent_frame<R: tokio::io::AsyncRead + Unpin>(
    r: &mut R,
) -> std::io::Result<Vec<u8>> {
    let mut prefix = [0u8; 4];
    r.read_exact(&mut prefix).await?;
    let n = match clawker_protocol::agent::frame_len(&prefix) {
        Err(e) => return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, e)),
        Ok(_) => u32::from_be_bytes(prefix) as usize,
    };
    let mut frame = vec![0u8; 4 + n];
    frame[..4].copy_from_slice(&prefix);
    r.read_exact(&mut frame[4..]).await?;
    Ok(frame)
}

impl AgentConnector for UnixAgent {
    fn request(&self, frame: Vec<u8>) -> BoxFuture<'_, Result<Vec<u8>, AgentError>> {
        Box::pin(async move {
            let path = self.socket.as_ref().ok_or(AgentError::NoSocket)?;
            let reusable = frame.get(4) != Some(&clawker_protocol::agent::msg::EXTENSION);
            // A pooled connection the agent has closed since fails at once: then retry on a
            // fresh one.
            if let Some(mut s) = self.take_idle()
                && let Ok(Ok(reply)) =
                    tokio::time::timeout(Duration::from_secs(60), Self::exchange(&mut s, &frame))
                        .await
            {
                if reusable {
                    self.put_idle(s);
                }
                return Ok(reply);
            }
            let mut s = tokio::net::UnixStream::connect(path)
                .await
                .map_err(AgentError::Unreachable)?;
            // Hardware keys may wait for a touch; anything slower is a stuck agent.
            match tokio::time::timeout(Duration::from_secs(60), Self::exchange(&mut s, &frame))
                .await
            {
                Ok(Ok(reply)) => {
                    if reusable {
                        self.put_idle(s);
                    }
                    Ok(reply)
                }
                Ok(Err(e)) if e.kind() == std::io::ErrorKind::InvalidData => {
                    Err(AgentError::BadReply)
                }
                Ok(Err(e)) => Err(AgentError::Unreachable(e)),
                Err(_) => Err(AgentError::Unreachable(std::io::ErrorKind::TimedOut.into())),
            }
        })
    }
}

/// Binds `127.0.0.1:port` and `[::1]:port`. A host without IPv6 is fine; a port taken on
/// either family is [`BindError::InUse`].
#[derive(Debug, Clone, Default)]
pub struct LoopbackBinder;

fn bind_one(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let l = std::net::TcpListener::bind(addr)?;
    l.set_nonblocking(true)?;
    Ok(l)
}

impl PortBinder for LoopbackBinder {
    fn bind(&self, port: u16) -> Result<Vec<std::net::TcpListener>, BindError> {
        let in_use = |e: std::io::Error| {
            if e.kind() == std::io::ErrorKind::AddrInUse {
                BindError::InUse(port)
            } else {
                BindError::Other { port, source: e }
            }
        };
        let v4 = bind_one(SocketAddr::from((Ipv4Addr::LOCALHOST, port))).map_err(in_use)?;
        let mut out = vec![v4];
        match bind_one(SocketAddr::from((Ipv6Addr::LOCALHOST, port))) {
            Ok(v6) => out.push(v6),
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
                return Err(BindError::InUse(port));
            }
            Err(_) => {} // no IPv6 on this host
        }
        Ok(out)
    }
}

impl Backends {
    /// The real host effects.
    pub fn host(browser: Option<Vec<String>>, git: GitPolicy, agent: UnixAgent) -> Self {
        Self {
            launcher: Arc::new(CommandLauncher::new(browser)),
            git: Arc::new(GitCommand::new(git)),
            agent: Arc::new(agent),
            ports: Arc::new(LoopbackBinder),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    /// A stand-in for git that answers with its own process group and session ids.
    fn fake_git(dir: &std::path::Path) -> PathBuf {
        let path = dir.join("git");
        std::fs::write(
            &path,
            "#!/bin/sh\ncat > /dev/null\nset -- $(cut -d' ' -f5,6 /proc/$$/stat)\nprintf 'username=%s\\npassword=%s %s\\n' \"$$\" \"$1\" \"$2\"\n",
        )
        .unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    async fn ids(how: Detach) -> (String, String) {
        let dir = tempfile::tempdir().unwrap();
        let git = GitCommand::with_detach(
            GitPolicy {
                program: fake_git(dir.path()),
                ..GitPolicy::default()
            },
            how,
        );
        let fields = CredentialFields::from_pairs(vec![
            ("protocol".into(), "https".into()),
            ("host".into(), "example.com".into()),
        ]);
        let out = git
            .run(GitCredentialAction::Get, fields)
            .await
            .unwrap()
            .unwrap();
        (
            out.username.unwrap().expose().clone(),
            out.password.unwrap().expose().clone(),
        )
    }

    #[tokio::test]
    async fn git_leads_its_own_session_or_group() {
        // "pgrp sid": with a terminal git leads a session of its own, without one a group.
        let (pid, groups) = ids(Detach::Session).await;
        assert_eq!(groups, format!("{pid} {pid}"));
        let (pid, groups) = ids(Detach::Group).await;
        let (pgrp, sid) = groups.split_once(' ').unwrap();
        assert_eq!(pgrp, pid);
        assert_ne!(sid, pid, "a group leader, not a session leader");
    }
}
