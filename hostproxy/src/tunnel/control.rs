//! The daemon's control socket `<state>/hostproxy.sock`: `attach`, `detach` and `list`,
//! for processes of this user only (0600 in the 0700 state dir, and each peer's uid checked
//! with `SO_PEERCRED`). Never reachable over TCP: a container that holds the user's token
//! must not be able to make the daemon run a command.
//!
//! One JSON line in, one JSON line out, per connection.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use clawker_protocol::tunnel::{ControlRequest, ControlResponse};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio_util::sync::CancellationToken;

use super::{Target, Tunnels};

/// Longest request line.
const MAX_LINE: u64 = 64 * 1024;
/// How long a client may take to send its line.
const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Binds the control socket (a stale one is replaced; a live one, another daemon's, is
/// refused).
pub fn bind(path: &Path) -> Result<UnixListener> {
    clawker_bridge::bind_private_socket(path)
        .with_context(|| format!("cannot create the control socket {}", path.display()))
}

/// Serves the control socket until `shutdown`; the socket file is removed then.
pub async fn serve(
    listener: UnixListener,
    path: &Path,
    tunnels: Tunnels,
    shutdown: CancellationToken,
) {
    loop {
        let conn = tokio::select! {
            () = shutdown.cancelled() => break,
            r = listener.accept() => match r {
                Ok((c, _)) => c,
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
    let _ = std::fs::remove_file(path);
}

/// Whether the peer runs as this process's user.
fn same_user(conn: &UnixStream) -> bool {
    #[allow(unsafe_code)]
    // SAFETY: geteuid has no preconditions and touches no memory.
    let me = unsafe { libc::geteuid() };
    conn.peer_cred().is_ok_and(|c| c.uid() == me)
}

async fn handle(conn: UnixStream, tunnels: &Tunnels) -> Result<()> {
    if !same_user(&conn) {
        tunnels.0.state.audit.record(
            "control",
            "control",
            "connect",
            None,
            None,
            false,
            Some("the peer is another user".into()),
        );
        return Ok(());
    }
    let (rd, mut wr) = conn.into_split();
    let mut line = String::new();
    let mut rd = BufReader::new(tokio::io::AsyncReadExt::take(rd, MAX_LINE));
    tokio::time::timeout(READ_TIMEOUT, rd.read_line(&mut line))
        .await
        .context("the client sent nothing in time")??;
    let response = match serde_json::from_str::<ControlRequest>(line.trim_end()) {
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

async fn answer(req: ControlRequest, tunnels: &Tunnels) -> ControlResponse {
    let failed = |e: anyhow::Error| ControlResponse {
        ok: false,
        error: Some(format!("{e:#}")),
        ..ControlResponse::default()
    };
    match req {
        ControlRequest::List => ControlResponse {
            ok: true,
            attachments: tunnels.list(),
            ..ControlResponse::default()
        },
        ControlRequest::Detach { name } => {
            if tunnels.detach(&name) {
                ControlResponse {
                    ok: true,
                    ..ControlResponse::default()
                }
            } else {
                failed(anyhow::anyhow!(
                    "nothing named {name:?} is attached (see hostproxy attach --list)"
                ))
            }
        }
        ControlRequest::Attach {
            container,
            via,
            name,
            allow,
            sockets,
            declared,
        } => {
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
            match tunnels.attach(target, &allow, &sockets, &declared).await {
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

/// The client end: sends `req` to the daemon whose control socket is `path`.
pub fn request(path: &Path, req: &ControlRequest) -> Result<ControlResponse> {
    use std::io::{BufRead, Write};
    let mut conn = std::os::unix::net::UnixStream::connect(path).with_context(|| {
        format!(
            "cannot reach the daemon's control socket {}: is `hostproxy serve` (or start) running for this state directory?",
            path.display()
        )
    })?;
    conn.set_read_timeout(Some(Duration::from_secs(60)))?;
    let mut line = serde_json::to_vec(req)?;
    line.push(b'\n');
    conn.write_all(&line)?;
    let mut answer = String::new();
    std::io::BufReader::new(conn)
        .read_line(&mut answer)
        .context("the daemon did not answer on its control socket")?;
    serde_json::from_str(answer.trim_end()).context("the daemon's answer is not a control response")
}
