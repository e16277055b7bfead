//! The daemon's control socket `<state>/hostproxy.sock` (a named pipe on Windows,
//! `platform::local`): `attach`, `detach` and `list`, for processes of this user only (0600
//! in the 0700 state dir, and each peer's uid checked with `SO_PEERCRED`). Never reachable
//! over TCP: a container that holds the user's token must not be able to make the daemon
//! run a command.
//!
//! One JSON line in, one JSON line out, per connection.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use clawker_protocol::approval::answered_by;
use clawker_protocol::tunnel::{ControlRequest, ControlResponse};
use interprocess::local_socket::tokio::prelude::*;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio_util::sync::CancellationToken;

use super::{AttachOptions, Target, Tunnels};
use crate::audit::Decision;
use crate::platform::local::{self, Accepted, Listener};

/// Longest request line.
const MAX_LINE: u64 = 64 * 1024;
/// How long a client may take to send its line.
const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Binds the control socket (a stale one is replaced; a live one, another daemon's, is
/// refused).
pub fn bind(path: &Path) -> Result<Listener> {
    local::listen_private(path)
        .with_context(|| format!("cannot create the control socket {}", path.display()))
}

/// Serves the control socket until `shutdown`; the socket file is removed then.
pub async fn serve(listener: Listener, tunnels: Tunnels, shutdown: CancellationToken) {
    loop {
        let conn = tokio::select! {
            () = shutdown.cancelled() => break,
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "control socket accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let tunnels = tunnels.clone();
        tokio::spawn(async move {
            if let Err(e) = handle(conn, &tunnels).await {
                tracing::debug!(error = %format!("{e:#}"), "control connection failed");
            }
        });
    }
    // The listener unlinks its socket file when dropped (interprocess' `reclaim_name`).
    drop(listener);
}

async fn handle(conn: Accepted, tunnels: &Tunnels) -> Result<()> {
    if !local::peer_is_me(&conn) {
        tunnels.0.state.audit.record(Decision {
            token: "control",
            route: "control",
            action: "connect",
            allowed: false,
            reason: Some("the peer is another user".into()),
            ..Default::default()
        });
        return Ok(());
    }
    let (rd, mut wr) = tokio::io::split(conn);
    let mut line = String::new();
    let mut rd = BufReader::new(tokio::io::AsyncReadExt::take(rd, MAX_LINE));
    tokio::time::timeout(READ_TIMEOUT, rd.read_line(&mut line))
        .await
        .context("the client sent nothing in time")??;
    let response = match serde_json::from_str::<ControlRequest>(line.trim_end()) {
        Ok(ControlRequest::Approvals { follow: true }) => {
            return serve_approvals(rd, wr, tunnels).await;
        }
        Ok(req) => answer(req, tunnels).await,
        Err(e) => ControlResponse {
            ok: false,
            error: Some(format!("not a control request: {e}")),
            ..ControlResponse::default()
        },
    };
    let mut out = serde_json::to_vec(&response)?;
    out.push(b'\n');
    wr.write_all(&out).await?;
    Ok(())
}

/// `approvals --follow`: the pending asks now, then again whenever they change, one line
/// each, until the client goes away (or the daemon stops).
async fn serve_approvals(
    mut rd: impl tokio::io::AsyncRead + Unpin,
    mut wr: impl tokio::io::AsyncWrite + Unpin,
    tunnels: &Tunnels,
) -> Result<()> {
    let approvals = &tunnels.0.state.approvals;
    let mut changed = approvals.subscribe();
    let mut sink = [0u8; 256];
    loop {
        changed.borrow_and_update();
        let mut out = serde_json::to_vec(&ControlResponse {
            ok: true,
            asks: approvals.pending(),
            ..ControlResponse::default()
        })?;
        out.push(b'\n');
        wr.write_all(&out).await?;
        tokio::select! {
            r = changed.changed() => if r.is_err() { return Ok(()) },
            // Anything or nothing from the client: it is gone (or says nothing we read).
            _ = tokio::io::AsyncReadExt::read(&mut rd, &mut sink) => return Ok(()),
            () = tunnels.0.shutdown.cancelled() => return Ok(()),
        }
    }
}

async fn answer(req: ControlRequest, tunnels: &Tunnels) -> ControlResponse {
    let failed = |e: anyhow::Error| ControlResponse {
        ok: false,
        error: Some(format!("{e:#}")),
        ..ControlResponse::default()
    };
    match req {
        ControlRequest::Approvals { .. } => ControlResponse {
            ok: true,
            asks: tunnels.0.state.approvals.pending(),
            ..ControlResponse::default()
        },
        ControlRequest::Answer {
            id,
            allow,
            always,
            by,
        } => {
            let by = if by == answered_by::TERMINAL {
                answered_by::TERMINAL
            } else {
                answered_by::COMMAND
            };
            match tunnels.0.state.approvals.answer(
                &id,
                crate::approval::Answer {
                    allow,
                    always,
                    by: by.into(),
                },
            ) {
                Ok(()) => ControlResponse {
                    ok: true,
                    ..ControlResponse::default()
                },
                Err(e) => failed(anyhow::anyhow!(e)),
            }
        }
        ControlRequest::List => ControlResponse {
            ok: true,
            attachments: tunnels.list(),
            tools: tunnels.tools_found(),
            ..ControlResponse::default()
        },
        ControlRequest::Detach { name } => {
            match (tunnels.container_of(&name), tunnels.detach(&name)) {
                (container, Ok(true)) => {
                    if let Some(c) = container {
                        tunnels.keep_detached(&c).await;
                    }
                    ControlResponse {
                        ok: true,
                        ..ControlResponse::default()
                    }
                }
                (_, Ok(false)) => failed(anyhow::anyhow!(
                    "nothing named {name:?} is attached (see hostproxy attach --list)"
                )),
                (_, Err(e)) => failed(anyhow::anyhow!(e)),
            }
        }
        ControlRequest::Attach {
            container,
            via,
            name,
            allow,
            sockets,
            declared,
            gpg_agent,
        } => {
            // Attached again after a restart: by hand, with the default sockets only.
            let kept = container.is_some() && sockets.is_empty() && gpg_agent.is_none();
            let target = match (container, via, name) {
                (Some(c), None, None) => Target::Container(c),
                (None, Some(argv), Some(name)) => Target::Via { argv, name },
                (None, Some(_), None) => {
                    return failed(anyhow::anyhow!("--via needs --name NAME"));
                }
                _ => {
                    return failed(anyhow::anyhow!(
                        "name either --container ID, or --via 'CMD ARG…' with --name NAME"
                    ));
                }
            };
            let opts = AttachOptions {
                allow: allow.clone(),
                sockets,
                declared: declared.clone(),
                gpg_agent: gpg_agent.map(std::path::PathBuf::from),
            };
            match tunnels.attach(target, opts).await {
                Ok(info) if kept => {
                    tunnels.keep_manual(&info.target, &allow, &declared);
                    ControlResponse {
                        ok: true,
                        attachments: vec![info],
                        ..ControlResponse::default()
                    }
                }
                Ok(info) => ControlResponse {
                    ok: true,
                    attachments: vec![info],
                    ..ControlResponse::default()
                },
                Err(e) => failed(e),
            }
        }
    }
}

/// How long the client waits for the daemon's answer (an attach copies tools and starts
/// the container end).
const ANSWER_TIMEOUT: Duration = Duration::from_secs(60);

/// The client end: sends `req` to the daemon whose control socket is `path`.
pub fn request(path: &Path, req: &ControlRequest) -> Result<ControlResponse> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(request_async(path, req))
}

/// [`request`] on a runtime the caller has.
pub async fn request_async(path: &Path, req: &ControlRequest) -> Result<ControlResponse> {
    let conn = connect(path).await?;
    let (rd, mut wr) = tokio::io::split(conn);
    let mut line = serde_json::to_vec(req)?;
    line.push(b'\n');
    wr.write_all(&line).await?;
    let mut answer = String::new();
    let mut rd = BufReader::new(tokio::io::AsyncReadExt::take(rd, MAX_LINE * 16));
    tokio::time::timeout(ANSWER_TIMEOUT, rd.read_line(&mut answer))
        .await
        .context("the daemon did not answer on its control socket in time")?
        .context("the daemon did not answer on its control socket")?;
    serde_json::from_str(answer.trim_end()).context("the daemon's answer is not a control response")
}

async fn connect(path: &Path) -> Result<local::Stream> {
    local::connect(path).await.with_context(|| {
        format!(
            "cannot reach the daemon's control socket {}: is `hostproxy serve` (or start) running for this state directory?",
            path.display()
        )
    })
}

/// The client end of `approvals --follow`: every line the daemon writes, parsed, until the
/// daemon closes the connection (the receiver then ends) or the receiver is dropped.
pub async fn follow_approvals(
    path: &Path,
) -> Result<tokio::sync::mpsc::Receiver<Result<ControlResponse>>> {
    let conn = connect(path).await?;
    let (rd, mut wr) = tokio::io::split(conn);
    let mut line = serde_json::to_vec(&ControlRequest::Approvals { follow: true })?;
    line.push(b'\n');
    wr.write_all(&line).await?;
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tokio::spawn(async move {
        let _keep_open = wr;
        let mut lines = BufReader::new(rd).lines();
        loop {
            let item = tokio::select! {
                () = tx.closed() => return,
                l = lines.next_line() => l,
            };
            let parsed = match item {
                Ok(Some(l)) => serde_json::from_str::<ControlResponse>(&l)
                    .context("the daemon's answer is not a control response"),
                Ok(None) => return,
                Err(e) => Err(anyhow::Error::new(e).context("the control socket failed")),
            };
            if tx.send(parsed).await.is_err() {
                return;
            }
        }
    });
    Ok(rx)
}
