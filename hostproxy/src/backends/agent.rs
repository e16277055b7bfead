//! The host's SSH agent (`SSH_AUTH_SOCK`, or Windows' OpenSSH agent pipe), with a small
//! pool of idle connections.

use std::path::PathBuf;
use std::time::Duration;

use futures_util::future::BoxFuture;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{AgentConnector, AgentError};
use crate::platform::local::Stream;

/// Talks to the host agent at `SSH_AUTH_SOCK`, reusing idle connections.
///
/// A connection that carried an extension (`session-bind@openssh.com` binds the connection
/// to one SSH session) is never reused, so per-connection agent state cannot leak from
/// one container client to another; list and sign carry no such state.
#[derive(Debug)]
pub struct HostAgent {
    socket: Option<PathBuf>,
    idle: std::sync::Mutex<Vec<Stream>>,
}

/// Idle agent connections kept for reuse.
const AGENT_POOL: usize = 8;

impl HostAgent {
    pub fn new(socket: Option<PathBuf>) -> Self {
        Self {
            socket,
            idle: std::sync::Mutex::new(Vec::new()),
        }
    }

    fn take_idle(&self) -> Option<Stream> {
        self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop()
    }

    fn put_idle(&self, s: Stream) {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() < AGENT_POOL {
            idle.push(s);
        }
    }

    async fn exchange(s: &mut Stream, frame: &[u8]) -> std::io::Result<Vec<u8>> {
        s.write_all(frame).await?;
        read_agent_frame(s).await
    }

    pub fn from_env() -> Self {
        Self::new(crate::platform::local::ssh_agent_socket())
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

impl AgentConnector for HostAgent {
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
            let mut s = crate::platform::local::connect(path)
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
