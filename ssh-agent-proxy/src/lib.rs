//! `ssh-agent-proxy`: an SSH agent socket inside the container whose every request is
//! forwarded to the host agent through the daemon's `/ssh/agent` route.
//!
//! The listener and the signals run on a small async runtime; each agent client gets a
//! thread with blocking I/O and its own kept-alive connection to the daemon
//! ([`clawker_client::blocking::Conn`]). A signature is a strict request/reply exchange, so
//! the shortest path for it is a thread that reads the client, writes the daemon and reads
//! the reply without handing the bytes to another task (measured in BENCHMARKS.md).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use clap::Parser;
use clawker_client::blocking::Conn;
use clawker_protocol::Secret;
use clawker_protocol::agent::{self, FAILURE_FRAME};
use clawker_protocol::api::{SshAgentRequest, SshAgentResponse, routes};
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use tokio::net::UnixListener;

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
pub fn forward(conn: &mut Conn, frame: &[u8]) -> Vec<u8> {
    let req = SshAgentRequest {
        data: Secret::new(B64.encode(frame)),
    };
    match conn.post::<_, SshAgentResponse>(routes::SSH_AGENT, &req) {
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

/// Serves one client, blocking, until it hangs up or sends a malformed frame.
pub fn serve_client(conn: &mut Conn, mut stream: UnixStream) {
    let mut prefix = [0u8; 4];
    loop {
        if stream.read_exact(&mut prefix).is_err() {
            return;
        }
        let len = match agent::frame_len(&prefix) {
            Ok(_) => u32::from_be_bytes(prefix) as usize,
            Err(_) => return, // malformed or oversized: close this client only
        };
        let mut frame = vec![0u8; 4 + len];
        frame[..4].copy_from_slice(&prefix);
        if stream.read_exact(&mut frame[4..]).is_err() {
            return;
        }
        let reply = forward(conn, &frame);
        if stream.write_all(&reply).is_err() {
            return;
        }
    }
}

/// Daemon connections kept for the next client (`ssh-keygen -Y sign` connects anew each run).
const IDLE_CONNS: usize = 4;
/// Agent clients served at once (a thread each); one more is closed at once.
pub const MAX_CLIENTS: usize = 64;

/// Accepts clients until the listener fails for good; each one is served on its own thread
/// with a connection to `daemon` (an idle one if there is one).
pub async fn run(listener: UnixListener, daemon: Conn) {
    let idle: Arc<Mutex<Vec<Conn>>> = Arc::default();
    let live = Arc::new(AtomicUsize::new(0));
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                if live.load(Ordering::SeqCst) >= MAX_CLIENTS {
                    eprintln!(
                        "ssh-agent-proxy: {MAX_CLIENTS} clients connected; closing a new one"
                    );
                    continue; // dropping the stream closes it
                }
                let client = stream.into_std().and_then(|s| {
                    s.set_nonblocking(false)?;
                    Ok(s)
                });
                let client = match client {
                    Ok(c) => c,
                    Err(e) => {
                        eprintln!("ssh-agent-proxy: cannot serve a client: {e}");
                        continue;
                    }
                };
                let reused = idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
                let mut conn = reused.unwrap_or_else(|| daemon.another());
                live.fetch_add(1, Ordering::SeqCst);
                let (idle, done) = (idle.clone(), live.clone());
                let spawned = std::thread::Builder::new()
                    .name("agent-client".into())
                    .stack_size(256 * 1024)
                    .spawn(move || {
                        serve_client(&mut conn, client);
                        let mut idle = idle.lock().unwrap_or_else(|p| p.into_inner());
                        if idle.len() < IDLE_CONNS {
                            idle.push(conn);
                        }
                        done.fetch_sub(1, Ordering::SeqCst);
                    });
                if let Err(e) = spawned {
                    live.fetch_sub(1, Ordering::SeqCst);
                    eprintln!("ssh-agent-proxy: cannot serve a client: {e}");
                }
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
        // Fails here, before the socket exists, if the URL or the token file cannot be used.
        let daemon = Conn::from_env()?;
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
                () = run(listener, daemon) => {}
                () = clawker_client::terminated() => {}
            }
            let _ = std::fs::remove_file(&path);
            Ok(ExitCode::SUCCESS)
        })
    })();
    clawker_client::exit_code("ssh-agent-proxy", result)
}
