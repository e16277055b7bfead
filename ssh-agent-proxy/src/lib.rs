//! `ssh-agent-proxy`: an SSH agent socket inside the container whose every request is
//! forwarded to the host agent through the daemon's `/ssh/agent` route.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use clap::Parser;
use clawker_client::Client;
use clawker_protocol::Secret;
use clawker_protocol::agent::{self, FAILURE_FRAME};
use clawker_protocol::api::{SshAgentRequest, SshAgentResponse, routes};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};

#[derive(Debug, Parser)]
#[command(
    name = "ssh-agent-proxy",
    version,
    about = "SSH agent socket in the container that forwards to the host's agent through hostproxy",
    after_help = "Example:\n  eval \"$(ssh-agent-proxy --socket /tmp/agent.sock & sleep 0.2)\"\n  export SSH_AUTH_SOCK=/tmp/agent.sock; ssh-add -l"
)]
pub struct Args {
    /// Where to create the socket. Default: $HOME/.ssh/agent.sock.
    #[arg(long)]
    pub socket: Option<PathBuf>,
}

fn default_socket() -> Result<PathBuf> {
    let home = std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .context("HOME is not set: pass --socket")?;
    Ok(PathBuf::from(home).join(".ssh").join("agent.sock"))
}

/// Binds the agent socket (0600, parent 0700; see [`clawker_bridge::bind_private_socket`]).
pub fn bind_socket(path: &Path) -> Result<UnixListener> {
    clawker_bridge::bind_private_socket(path)
        .map_err(|e| anyhow::anyhow!("{:#}: pass another --socket", anyhow::Error::from(e)))
}

/// Forwards one framed request; any daemon failure becomes `SSH_AGENT_FAILURE`.
pub async fn forward(client: &Client, frame: &[u8]) -> Vec<u8> {
    let req = SshAgentRequest {
        data: Secret::new(B64.encode(frame)),
    };
    match client
        .post::<_, SshAgentResponse>(routes::SSH_AGENT, &req)
        .await
    {
        Ok(reply) => match B64.decode(reply.data.expose()) {
            Ok(bytes) if agent::single_frame(&bytes).is_ok() => bytes,
            _ => FAILURE_FRAME.to_vec(),
        },
        Err(e) => {
            eprintln!("ssh-agent-proxy: {e:#}");
            FAILURE_FRAME.to_vec()
        }
    }
}

/// Serves one client until it hangs up or sends a malformed frame.
pub async fn serve_client(client: Client, mut stream: UnixStream) {
    let mut prefix = [0u8; 4];
    loop {
        if stream.read_exact(&mut prefix).await.is_err() {
            return;
        }
        let len = match agent::frame_len(&prefix) {
            Ok(_) => u32::from_be_bytes(prefix) as usize,
            Err(_) => return, // malformed or oversized: close this client only
        };
        let mut frame = vec![0u8; 4 + len];
        frame[..4].copy_from_slice(&prefix);
        if stream.read_exact(&mut frame[4..]).await.is_err() {
            return;
        }
        let reply = forward(&client, &frame).await;
        if stream.write_all(&reply).await.is_err() {
            return;
        }
    }
}

pub async fn run(listener: UnixListener, client: Client) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                tokio::spawn(serve_client(client.clone(), stream));
            }
            Err(e) => {
                eprintln!("ssh-agent-proxy: accept failed: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }
}

pub fn main() -> ExitCode {
    let args = Args::parse();
    let result = (|| -> Result<ExitCode> {
        let path = match args.socket {
            Some(p) => p,
            None => default_socket()?,
        };
        let client = Client::from_env()?;
        let rt = clawker_client::runtime()?;
        rt.block_on(async {
            let listener = bind_socket(&path)?;
            {
                use std::io::Write;
                let mut out = std::io::stdout().lock();
                writeln!(out, "SSH_AUTH_SOCK={}", path.display())?;
                out.flush()?;
            }
            tokio::select! {
                () = run(listener, client) => {}
                () = clawker_client::terminated() => {}
            }
            let _ = std::fs::remove_file(&path);
            Ok(ExitCode::SUCCESS)
        })
    })();
    clawker_client::exit_code("ssh-agent-proxy", result)
}
