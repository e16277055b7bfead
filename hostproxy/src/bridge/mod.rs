//! The host end of the socket bridge (SPEC.md section 6), which the tunnel runs for each
//! attachment (`hostproxy bridge` is an alias of `attach`: one host end).
//!
//! Serves the container end's frames (sent PUBKEY first when bridging GPG), and connects
//! every stream the container OPENs to the host's agent: ssh-agent streams to `SSH_AUTH_SOCK` through the
//! same message filter as `/ssh/agent`, gpg-agent streams to gpg-agent's restricted extra
//! socket. One slow stream never stalls the others: each has a bounded queue and is closed
//! when it overflows.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use crate::platform::local::Stream;
use anyhow::{Context, Result, bail};
use bollard::container::LogOutput;
use bytes::BytesMut;
use clawker_bridge::{AgentFilter, InsertError, Out, Streams, pump, send, write_frames};
use clawker_protocol::agent::{AgentPolicy, Verdict};
use clawker_protocol::audit::AuditRecord;
use clawker_protocol::bridge::{self, FrameType, SOCKET_GPG_AGENT, SOCKET_HTTP, SOCKET_SSH_AGENT};
use clawker_protocol::flow::{Agreed, Hello};
use clawker_protocol::text::escape_bytes;
use futures_util::StreamExt;
use futures_util::future::BoxFuture;
use tokio::io::AsyncWrite;

/// Where each socket type is connected on the host.
#[derive(Clone)]
pub struct Targets {
    pub ssh: Option<PathBuf>,
    pub gpg: Option<PathBuf>,
    pub filter: AgentFilter,
    /// How a host socket is connected (a seam for tests; [`connect_local`] otherwise).
    pub connect: Connector,
    /// Serves the daemon's HTTP API on an `http` stream (the tunnel); `None`: such streams
    /// are closed.
    pub http: Option<HttpServer>,
    /// Declared host sockets this bridge may reach, by name (`socket:NAME` streams).
    pub declared: std::sync::Arc<HashMap<String, std::sync::Arc<Declared>>>,
    /// Asks the user before a stream's host socket is connected, when the config asks for
    /// that use (SPEC.md 14); `None`: nothing asks (the standalone bridge).
    pub ask: Option<StreamAsk>,
}

/// Whether the use may go on: `false` closes the stream with nothing connected.
pub type StreamAsk =
    std::sync::Arc<dyn Fn(crate::approval::Use) -> BoxFuture<'static, bool> + Send + Sync>;

/// What a stream of `kind` uses of the host, for the ask.
fn stream_use(kind: &str, declared: Option<&str>) -> crate::approval::Use {
    let (scope, what, target) = match declared {
        Some(n) => (
            format!("socket:{n}"),
            "connect to a declared host socket",
            n.to_string(),
        ),
        None if kind == SOCKET_GPG_AGENT => (
            "gpg".to_string(),
            "use gpg-agent (a connection)",
            "the host's gpg-agent".to_string(),
        ),
        None => (
            "ssh".to_string(),
            "use the ssh agent (a connection)",
            "the host's ssh agent".to_string(),
        ),
    };
    crate::approval::Use {
        scope,
        also: None,
        what: what.into(),
        target,
        hold: None,
    }
}

/// A declared host socket and who must own it: the daemon's user, or root for a system
/// socket (`owner = "root"`). A socket someone else owns — another user who made the
/// path first in a shared directory — is refused, at start and at every connection
/// (SPEC.md 11).
#[derive(Debug)]
pub struct Declared {
    pub path: PathBuf,
    /// The uid that must own it (`None`: no owners on this platform).
    owner: Option<u32>,
}

impl Declared {
    /// `root`: the socket must be root's rather than the daemon user's.
    pub fn new(path: PathBuf, root: bool) -> Self {
        let owner = if root {
            Some(0)
        } else {
            crate::platform::fs::current_user()
        };
        Self { path, owner }
    }

    /// The socket is a socket and its owner the expected one. (Windows: a named pipe, not
    /// a file; its own ACL decides who serves and who connects.)
    pub fn check(&self) -> Result<(), String> {
        use crate::platform::fs;
        if cfg!(windows) {
            return Ok(());
        }
        let meta = std::fs::symlink_metadata(&self.path)
            .map_err(|e| format!("{}: {e}", self.path.display()))?;
        if !fs::is_socket(&meta) {
            return Err(format!("{} is not a socket", self.path.display()));
        }
        match (fs::owner(&meta), self.owner) {
            (Some(now), Some(want)) if now != want => Err(format!(
                "{} is owned by uid {now}, not {}: refused (owner = \"root\" in its [[bridge.sockets]] entry for a system socket)",
                self.path.display(),
                if want == 0 {
                    "root".to_string()
                } else {
                    format!("the daemon's user (uid {want})")
                },
            )),
            _ => Ok(()),
        }
    }
}

/// Serves one `http` stream's host end (it spawns what it needs and returns).
pub type HttpServer = std::sync::Arc<dyn Fn(tokio::io::DuplexStream) + Send + Sync>;

/// What the container-side program wrote.
#[derive(Debug)]
pub enum ExecOutput {
    Stdout(bytes::Bytes),
    Stderr(bytes::Bytes),
}

impl From<LogOutput> for ExecOutput {
    fn from(o: LogOutput) -> Self {
        match o {
            LogOutput::StdErr { message } => Self::Stderr(message),
            LogOutput::StdOut { message }
            | LogOutput::Console { message }
            | LogOutput::StdIn { message } => Self::Stdout(message),
        }
    }
}

impl std::fmt::Debug for Targets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Targets")
            .field("ssh", &self.ssh)
            .field("gpg", &self.gpg)
            .finish_non_exhaustive()
    }
}

/// Connects to a host agent's socket.
pub type Connector =
    std::sync::Arc<dyn Fn(PathBuf) -> BoxFuture<'static, std::io::Result<Stream>> + Send + Sync>;

/// The real connector: a local socket (`platform::local::connect`).
pub fn connect_local() -> Connector {
    std::sync::Arc::new(|path| {
        Box::pin(async move { crate::platform::local::connect(&path).await })
    })
}

/// The agent filter of `policy`, writing each decision to `audit` for `who` (an identity's
/// name) in `container`.
pub fn audited_filter(
    policy: AgentPolicy,
    grant: clawker_protocol::agent::AgentGrant,
    audit: std::sync::Arc<crate::audit::Audit>,
    who: String,
    container: String,
) -> AgentFilter {
    AgentFilter {
        policy,
        grant,
        on_decision: Some(std::sync::Arc::new(
            move |body: &[u8], verdict: Verdict, why: Option<&str>| {
                let (action, key) = clawker_protocol::agent::describe_request(body);
                let allowed = verdict == Verdict::Forward;
                audit.write(&AuditRecord {
                    time: crate::util::now_rfc3339(),
                    token: who.clone(),
                    container: Some(container.clone()),
                    route: "bridge:ssh-agent".into(),
                    action,
                    host: None,
                    key,
                    allowed,
                    reason: (!allowed)
                        .then(|| why.unwrap_or("not allowed by the agent policy").to_string()),
                    folded: None,
                });
            },
        )),
    }
}

/// How long connecting to a host agent may take before that stream is closed.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// OPEN from the container: the stream is registered at once (DATA that follows is queued
/// for it), and its host socket is connected in a task of its own, so an agent that is
/// slow to accept stalls only this stream. A duplicate id is a protocol error.
fn open_stream(
    id: u32,
    kind: &[u8],
    agreed: Agreed,
    targets: &Targets,
    streams: &Streams,
    out: &Out,
) -> Result<()> {
    if kind == SOCKET_HTTP.as_bytes() {
        return open_http(id, agreed, targets, streams, out);
    }
    let declared = kind
        .strip_prefix(clawker_protocol::tunnel::DECLARED_PREFIX.as_bytes())
        .map(|n| String::from_utf8_lossy(n).into_owned());
    let (path, filter) = match kind {
        _ if declared.is_some() => {
            let name = declared.clone().unwrap_or_default();
            match targets.declared.get(&name).map(|d| (d, d.check())) {
                Some((d, Ok(()))) => (Some(d.path.clone()), None),
                Some((_, Err(why))) => {
                    tracing::warn!(socket = %escape_bytes(name.as_bytes()), "declared socket refused: {why}");
                    (None, None)
                }
                None => {
                    tracing::warn!(socket = %escape_bytes(name.as_bytes()), "the container opened a socket that is not declared for it");
                    (None, None)
                }
            }
        }
        p if p == SOCKET_SSH_AGENT.as_bytes() => {
            (targets.ssh.clone(), Some(targets.filter.clone()))
        }
        p if p == SOCKET_GPG_AGENT.as_bytes() => (targets.gpg.clone(), None),
        _ => (None, None),
    };
    let (streams, out, connect) = (streams.clone(), out.clone(), targets.connect.clone());
    let end = match (path, streams.insert(id, agreed)) {
        (_, Err(InsertError::Duplicate(id))) => {
            bail!("the container opened stream {id} twice: a bridge protocol error")
        }
        (Some(path), Ok(end)) => (path, end),
        (None, Ok(_)) => {
            tokio::spawn(async move { streams.close_local(&out, id).await });
            return Ok(());
        }
        (_, Err(InsertError::Full)) => {
            tokio::spawn(async move { send(&out, FrameType::Close, id, &[]).await });
            return Ok(());
        }
    };
    let (path, end) = end;
    let asked = targets.ask.clone().map(|ask| {
        let kind = String::from_utf8_lossy(kind).into_owned();
        ask(stream_use(&kind, declared.as_deref()))
    });
    tokio::spawn(async move {
        // Nothing is connected before the user's answer, when one is asked for.
        if let Some(asked) = asked
            && !asked.await
        {
            tracing::info!(stream = id, "stream refused on the host (approval)");
            drop(end);
            streams.close_local(&out, id).await;
            return;
        }
        match tokio::time::timeout(CONNECT_TIMEOUT, connect(path)).await {
            Ok(Ok(conn)) => pump(conn, end, filter, out, streams).await,
            _ => {
                tracing::warn!(stream = id, "cannot connect to the host agent in time");
                drop(end);
                streams.close_local(&out, id).await;
            }
        }
    });
    Ok(())
}

/// An `http` stream: its bytes go to the daemon's router through an in-memory pipe.
fn open_http(
    id: u32,
    agreed: Agreed,
    targets: &Targets,
    streams: &Streams,
    out: &Out,
) -> Result<()> {
    let (streams, out) = (streams.clone(), out.clone());
    match (streams.insert(id, agreed), &targets.http) {
        (Err(InsertError::Duplicate(id)), _) => {
            bail!("the container opened stream {id} twice: a bridge protocol error")
        }
        (Ok(end), Some(serve)) => {
            let (ours, theirs) = tokio::io::duplex(HTTP_PIPE_BYTES);
            serve(theirs);
            tokio::spawn(pump(ours, end, None, out, streams));
        }
        (Ok(_), None) => {
            tokio::spawn(async move { streams.close_local(&out, id).await });
        }
        (Err(InsertError::Full), _) => {
            tokio::spawn(async move { send(&out, FrameType::Close, id, &[]).await });
        }
    }
    Ok(())
}

/// The in-memory pipe between an `http` stream and the router, each way.
const HTTP_PIPE_BYTES: usize = 256 * 1024;

/// Serves the bridge over an already started container-side program until its output ends.
/// `on_ready` runs once, when the container end says READY.
pub async fn serve_bridge<W, E>(
    mut output: impl futures_util::Stream<Item = Result<ExecOutput, E>> + Unpin,
    input: W,
    pubkey: Option<Vec<u8>>,
    targets: Targets,
    mut on_ready: impl FnMut(),
) -> Result<()>
where
    W: AsyncWrite + Unpin + Send + 'static,
    E: std::error::Error + Send + Sync + 'static,
{
    let (out, out_rx) = clawker_bridge::out_channel();
    let writer = tokio::spawn(write_frames(input, out_rx));
    if let Some(key) = &pubkey {
        send(&out, FrameType::Pubkey, 0, key).await;
    }
    // After PUBKEY, which upstream's container end insists on first; it ignores HELLO, ours
    // answers it, and the streams it opens after its answer have windows (SPEC.md 6.3).
    send(&out, FrameType::Hello, 0, &Hello::OURS.encode()).await;
    let mut agreed = Agreed::default();
    let streams = Streams::default();
    // Frames are cut out of this buffer, not copied: a DATA payload goes to its stream as a
    // slice of the bytes read from the exec stream.
    let mut buf = BytesMut::new();
    let mut ready = false;
    let ready_deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        // Hand on every whole frame in the buffer.
        while let Some((kind, stream, total)) =
            bridge::decode_head(&buf).context("the container sent a bad bridge frame")?
        {
            let payload = buf.split_to(total).freeze().slice(bridge::HEADER_LEN..);
            match kind {
                FrameType::Ready => {
                    ready = true;
                    tracing::info!("bridge ready");
                    on_ready();
                }
                // Bytes from the container never reach the terminal raw.
                FrameType::Error => bail!("the container side failed: {}", escape_bytes(&payload)),
                FrameType::Open => open_stream(stream, &payload, agreed, &targets, &streams, &out)?,
                FrameType::Hello => match Hello::decode(&payload) {
                    Ok(theirs) => agreed = Hello::OURS.agree(&theirs),
                    Err(e) => bail!("the container sent a bad HELLO: {e}"),
                },
                FrameType::Pubkey | FrameType::Unknown(_) => {}
                _ => {
                    streams.on_frame(&out, kind, stream, payload).await;
                }
            }
        }
        let next = if ready {
            output.next().await
        } else {
            match tokio::time::timeout_at(ready_deadline, output.next()).await {
                Ok(n) => n,
                Err(_) => bail!(
                    "the container side did not say READY within 15 s: is clawker-socket-server in the image?"
                ),
            }
        };
        match next {
            None => break,
            Some(Ok(ExecOutput::Stdout(message))) => buf.extend_from_slice(&message),
            Some(Ok(ExecOutput::Stderr(message))) => {
                for line in stderr_lines(&message) {
                    tracing::warn!("container: {line}");
                }
            }
            Some(Err(e)) => return Err(e).context("the exec stream failed"),
        }
    }
    drop(out);
    streams.clear();
    let _ = tokio::time::timeout(Duration::from_secs(2), writer).await;
    if !ready {
        bail!("the container side exited before it was ready");
    }
    Ok(())
}

/// The exec's stderr as lines safe for the host's terminal.
fn stderr_lines(message: &[u8]) -> Vec<String> {
    message
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(escape_bytes)
        .collect()
}

/// `gpg --export` on the host: the public keys (empty when there are none or gpg is absent).
pub async fn gpg_export() -> Vec<u8> {
    match crate::platform::process::host_command("gpg")
        .args(["--batch", "--export"])
        .stderr(std::process::Stdio::null())
        .output()
        .await
    {
        Ok(o) if o.status.success() => o.stdout,
        _ => Vec::new(),
    }
}

/// gpg-agent's restricted socket for remote use.
pub async fn gpg_extra_socket() -> Option<PathBuf> {
    let o = crate::platform::process::host_command("gpgconf")
        .args(["--list-dirs", "agent-extra-socket"])
        .output()
        .await
        .ok()?;
    let p = String::from_utf8(o.stdout).ok()?.trim().to_string();
    (o.status.success() && !p.is_empty()).then(|| PathBuf::from(p))
}

// Fake agents on unix sockets.
#[cfg(test)]
#[cfg(unix)]
mod tests;
