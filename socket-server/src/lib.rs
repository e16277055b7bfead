//! `clawker-socket-server`: the container end of the socket bridge (SPEC.md section 6).
//!
//! Started by `hostproxy bridge` through `docker exec -i`. It creates the unix sockets
//! listed in `CLAWKER_REMOTE_SOCKETS`, and multiplexes every connection to them over
//! stdin/stdout as bridge frames (`clawker_protocol::bridge`): OPEN when a client connects,
//! DATA both ways, CLOSE both ways. The host end connects each stream to the real agent.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clawker_protocol::bridge::{
    self, BridgeFrameError, Frame, FrameType, SOCKET_GPG_AGENT, SOCKET_SSH_AGENT,
};
use clawker_protocol::env;
use serde::Deserialize;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::mpsc;

/// Streams one bridge carries at once; further clients are turned away.
pub const MAX_STREAMS: usize = 64;
/// Chunks queued towards one local client before it counts as stalled and is closed.
pub const STREAM_QUEUE: usize = 64;
/// Largest DATA payload sent (well under the frame limit, big enough for bulk transfers).
pub const CHUNK: usize = 256 * 1024;
/// Seconds to wait for PUBKEY when a gpg-agent socket is listed.
pub const PUBKEY_TIMEOUT_VAR: &str = "CLAWKER_SOCKET_SERVER_PUBKEY_TIMEOUT";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum Kind {
    #[serde(rename = "ssh-agent")]
    SshAgent,
    #[serde(rename = "gpg-agent")]
    GpgAgent,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Self::SshAgent => SOCKET_SSH_AGENT,
            Self::GpgAgent => SOCKET_GPG_AGENT,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SocketSpec {
    pub path: PathBuf,
    #[serde(rename = "type")]
    pub kind: Kind,
}

/// Parses `CLAWKER_REMOTE_SOCKETS`; a leading `~/` is this user's home.
pub fn parse_specs(json: &str, home: Option<&Path>) -> Result<Vec<SocketSpec>> {
    let mut specs: Vec<SocketSpec> = serde_json::from_str(json).with_context(|| {
        format!(
            "{} must be a JSON list like [{{\"path\":\"/tmp/agent.sock\",\"type\":\"ssh-agent\"}}] (types: ssh-agent, gpg-agent)",
            env::REMOTE_SOCKETS
        )
    })?;
    if specs.is_empty() {
        bail!("{} lists no sockets", env::REMOTE_SOCKETS);
    }
    for s in &mut specs {
        if let Ok(rest) = s.path.strip_prefix("~") {
            let home = home.context("a socket path starts with ~ but HOME is not set")?;
            s.path = home.join(rest);
        }
        if !s.path.is_absolute() {
            bail!("socket path {} is not absolute", s.path.display());
        }
    }
    Ok(specs)
}

/// Creates a socket 0600 in a 0700 parent, replacing a stale socket file.
pub fn create_socket(path: &Path) -> Result<UnixListener> {
    use std::os::unix::fs::{DirBuilderExt, FileTypeExt, PermissionsExt};
    if let Some(dir) = path.parent() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
    }
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if !meta.file_type().is_socket() {
            bail!("{} exists and is not a socket", path.display());
        }
        std::fs::remove_file(path).with_context(|| format!("cannot replace {}", path.display()))?;
    }
    let l = UnixListener::bind(path)
        .with_context(|| format!("cannot create socket {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(l)
}

/// Writes the host's public keyring and a `gpg.conf` that never starts a local agent.
pub fn install_gpg_home(dir: &Path, pubkey: &[u8]) -> Result<()> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    let write = |name: &str, bytes: &[u8]| -> Result<()> {
        let path = dir.join(name);
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&path)
            .with_context(|| format!("cannot write {}", path.display()))?;
        std::io::Write::write_all(&mut f, bytes)?;
        Ok(())
    };
    write("pubring.gpg", pubkey)?;
    // A pubring.kbx would shadow pubring.gpg.
    let _ = std::fs::remove_file(dir.join("pubring.kbx"));
    write("gpg.conf", b"no-autostart\n")?;
    Ok(())
}

/// Reads bridge frames from a byte stream; "not enough bytes yet" is not an error.
#[derive(Debug)]
pub struct FrameReader<R> {
    inner: R,
    buf: Vec<u8>,
    start: usize,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    pub fn new(inner: R) -> Self {
        Self {
            inner,
            buf: Vec::with_capacity(CHUNK * 2),
            start: 0,
        }
    }

    /// The next frame, `Ok(None)` at a clean end of input.
    pub async fn next(&mut self) -> Result<Option<Frame>, ReadError> {
        loop {
            if let Some((frame, used)) =
                bridge::decode(&self.buf[self.start..]).map_err(ReadError::Frame)?
            {
                self.start += used;
                if self.start == self.buf.len() {
                    self.buf.clear();
                    self.start = 0;
                }
                return Ok(Some(frame));
            }
            if self.start > 0 {
                self.buf.drain(..self.start);
                self.start = 0;
            }
            let mut chunk = [0u8; 64 * 1024];
            let n = self.inner.read(&mut chunk).await.map_err(ReadError::Io)?;
            if n == 0 {
                return if self.buf.is_empty() {
                    Ok(None)
                } else {
                    Err(ReadError::Truncated)
                };
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error(transparent)]
    Frame(BridgeFrameError),
    #[error("cannot read the bridge")]
    Io(#[source] std::io::Error),
    #[error("the bridge ended in the middle of a frame")]
    Truncated,
}

type Out = mpsc::Sender<Vec<u8>>;

fn encode(kind: FrameType, stream: u32, payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(9 + payload.len());
    // Payloads are chunked to CHUNK or are short control strings: always within the limit.
    let _ = bridge::encode_parts(kind, stream, payload, &mut v);
    v
}

async fn send(out: &Out, kind: FrameType, stream: u32, payload: &[u8]) -> bool {
    out.send(encode(kind, stream, payload)).await.is_ok()
}

/// Writes queued frames to the host, flushing whenever the queue runs dry.
async fn write_frames<W: AsyncWrite + Unpin>(
    mut output: W,
    mut rx: mpsc::Receiver<Vec<u8>>,
) -> std::io::Result<()> {
    while let Some(bytes) = rx.recv().await {
        output.write_all(&bytes).await?;
        if rx.is_empty() {
            output.flush().await?;
        }
    }
    output.flush().await
}

#[derive(Debug)]
struct Entry {
    tx: mpsc::Sender<Vec<u8>>,
    /// Set once a CLOSE for this stream has been sent (each side sends at most one).
    closed: Arc<AtomicBool>,
}

type Streams = Arc<std::sync::Mutex<HashMap<u32, Entry>>>;

fn streams_lock(s: &Streams) -> std::sync::MutexGuard<'_, HashMap<u32, Entry>> {
    s.lock().unwrap_or_else(|p| p.into_inner())
}

/// Pumps one local connection: local bytes become DATA frames; queued host bytes are written
/// to the client. Ends when either side ends; sends CLOSE once.
async fn pump(
    conn: UnixStream,
    id: u32,
    mut rx: mpsc::Receiver<Vec<u8>>,
    closed: Arc<AtomicBool>,
    out: Out,
    streams: Streams,
) {
    let (mut rd, mut wr) = conn.into_split();
    let to_local = async {
        while let Some(buf) = rx.recv().await {
            if wr.write_all(&buf).await.is_err() {
                break;
            }
        }
    };
    let from_local = async {
        let mut buf = vec![0u8; CHUNK];
        loop {
            match rd.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if !send(&out, FrameType::Data, id, &buf[..n]).await {
                        break;
                    }
                }
            }
        }
    };
    tokio::select! {
        () = to_local => {}
        () = from_local => {}
    }
    streams_lock(&streams).remove(&id);
    if !closed.swap(true, Ordering::SeqCst) {
        send(&out, FrameType::Close, id, &[]).await;
    }
}

async fn accept_loop(
    listener: UnixListener,
    kind: Kind,
    next_id: Arc<AtomicU32>,
    streams: Streams,
    out: Out,
) {
    loop {
        let Ok((conn, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let (tx, rx) = mpsc::channel(STREAM_QUEUE);
        let closed = Arc::new(AtomicBool::new(false));
        let id = {
            let mut map = streams_lock(&streams);
            if map.len() >= MAX_STREAMS {
                eprintln!(
                    "clawker-socket-server: {MAX_STREAMS} streams open; refusing a {} client",
                    kind.name()
                );
                continue;
            }
            let id = next_id.fetch_add(1, Ordering::SeqCst);
            map.insert(
                id,
                Entry {
                    tx,
                    closed: closed.clone(),
                },
            );
            id
        };
        // OPEN goes out before the pump can send any DATA for this stream.
        if !send(&out, FrameType::Open, id, kind.name().as_bytes()).await {
            return;
        }
        tokio::spawn(pump(conn, id, rx, closed, out.clone(), streams.clone()));
    }
}

/// Waits for the host's PUBKEY frame; other frames before it are ignored.
async fn wait_pubkey<R: AsyncRead + Unpin>(
    reader: &mut FrameReader<R>,
) -> Result<Option<Vec<u8>>, ReadError> {
    while let Some(f) = reader.next().await? {
        if f.kind == FrameType::Pubkey {
            return Ok(Some(f.payload));
        }
    }
    Ok(None)
}

/// Runs the bridge until `input` ends (Ok) or carries a bad frame (Err, after an ERROR
/// frame has been sent).
pub async fn run<R, W>(
    mut specs: Vec<SocketSpec>,
    input: R,
    output: W,
    pubkey_timeout: Duration,
) -> Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let (out, out_rx) = mpsc::channel::<Vec<u8>>(256);
    let writer = tokio::spawn(write_frames(output, out_rx));
    let mut reader = FrameReader::new(input);
    let fail = |out: Out, msg: String| async move {
        send(&out, FrameType::Error, 0, msg.as_bytes()).await;
    };
    if specs.iter().any(|s| s.kind == Kind::GpgAgent) {
        let key = match tokio::time::timeout(pubkey_timeout, wait_pubkey(&mut reader)).await {
            Ok(Ok(Some(key))) => Some(key),
            Ok(Ok(None)) => return Ok(()),
            Ok(Err(e)) => {
                fail(out.clone(), e.to_string()).await;
                drop(out);
                let _ = writer.await;
                return Err(e.into());
            }
            Err(_) => None,
        };
        match key {
            Some(key) if !key.is_empty() => {
                for s in specs.iter().filter(|s| s.kind == Kind::GpgAgent) {
                    let home = s
                        .path
                        .parent()
                        .context("gpg-agent socket has no parent directory")?;
                    install_gpg_home(home, &key)?;
                }
            }
            other => {
                eprintln!(
                    "clawker-socket-server: {}; gpg-agent socket not created, the rest is served",
                    if other.is_some() {
                        "the host has no GPG keys"
                    } else {
                        "no PUBKEY from the host within the timeout"
                    }
                );
                specs.retain(|s| s.kind != Kind::GpgAgent);
            }
        }
    }
    let streams: Streams = Arc::default();
    let next_id = Arc::new(AtomicU32::new(1));
    let mut acceptors = tokio::task::JoinSet::new();
    for s in &specs {
        let listener = match create_socket(&s.path) {
            Ok(l) => l,
            Err(e) => {
                fail(out.clone(), format!("{e:#}")).await;
                drop(out);
                let _ = writer.await;
                return Err(e);
            }
        };
        acceptors.spawn(accept_loop(
            listener,
            s.kind,
            next_id.clone(),
            streams.clone(),
            out.clone(),
        ));
    }
    send(&out, FrameType::Ready, 0, &[]).await;
    let result = loop {
        let frame = match reader.next().await {
            Ok(Some(f)) => f,
            Ok(None) => break Ok(()),
            Err(e) => {
                fail(out.clone(), e.to_string()).await;
                break Err(anyhow::Error::from(e));
            }
        };
        match frame.kind {
            FrameType::Data => {
                let stalled = {
                    let mut map = streams_lock(&streams);
                    match map.get(&frame.stream).map(|e| e.tx.try_send(frame.payload)) {
                        Some(Err(mpsc::error::TrySendError::Full(_))) => map.remove(&frame.stream),
                        _ => None,
                    }
                };
                // A client that stops reading loses its stream, never the others'.
                if let Some(e) = stalled
                    && !e.closed.swap(true, Ordering::SeqCst)
                {
                    eprintln!(
                        "clawker-socket-server: stream {} is not reading; closing it",
                        frame.stream
                    );
                    send(&out, FrameType::Close, frame.stream, &[]).await;
                }
            }
            FrameType::Close => {
                let entry = streams_lock(&streams).remove(&frame.stream);
                if let Some(e) = entry
                    && !e.closed.swap(true, Ordering::SeqCst)
                {
                    send(&out, FrameType::Close, frame.stream, &[]).await;
                }
            }
            _ => {} // PUBKEY again, or frames only the host receives: nothing to do
        }
    };
    acceptors.abort_all();
    for s in &specs {
        let _ = std::fs::remove_file(&s.path);
    }
    drop(out);
    streams_lock(&streams).clear();
    let _ = tokio::time::timeout(Duration::from_secs(2), writer).await;
    result
}

type BoxRead = Box<dyn AsyncRead + Unpin + Send>;
type BoxWrite = Box<dyn AsyncWrite + Unpin + Send>;

/// stdin/stdout as non-blocking pipes when they are pipes (as under `docker exec -i`), so
/// bulk traffic does not go through tokio's blocking-thread stdio; plain stdio otherwise.
fn stdio() -> std::io::Result<(BoxRead, BoxWrite)> {
    use std::os::fd::AsFd;
    use tokio::net::unix::pipe;
    let input: BoxRead = match std::io::stdin()
        .as_fd()
        .try_clone_to_owned()
        .and_then(|fd| pipe::Receiver::from_file(std::fs::File::from(fd)))
    {
        Ok(r) => Box::new(r),
        Err(_) => Box::new(tokio::io::stdin()),
    };
    let output: BoxWrite = match std::io::stdout()
        .as_fd()
        .try_clone_to_owned()
        .and_then(|fd| pipe::Sender::from_file(std::fs::File::from(fd)))
    {
        Ok(w) => Box::new(w),
        Err(_) => Box::new(tokio::io::stdout()),
    };
    Ok((input, output))
}

pub fn main() -> ExitCode {
    if std::env::args()
        .skip(1)
        .any(|a| a == "--version" || a == "-V")
    {
        println!("clawker-socket-server {}", env!("CARGO_PKG_VERSION"));
        return ExitCode::SUCCESS;
    }
    if std::env::args().skip(1).any(|a| a == "--help" || a == "-h") {
        println!(
            "clawker-socket-server {}\nContainer end of the hostproxy socket bridge: started by `hostproxy bridge` with docker exec -i.\nReads {} (JSON list of {{\"path\",\"type\": \"ssh-agent\"|\"gpg-agent\"}}) and speaks bridge frames on stdin/stdout.\n\nExample:\n  {}='[{{\"path\":\"~/.ssh/agent.sock\",\"type\":\"ssh-agent\"}}]' clawker-socket-server",
            env!("CARGO_PKG_VERSION"),
            env::REMOTE_SOCKETS,
            env::REMOTE_SOCKETS
        );
        return ExitCode::SUCCESS;
    }
    let result = (|| -> Result<()> {
        let json = std::env::var(env::REMOTE_SOCKETS)
            .with_context(|| format!("{} is not set", env::REMOTE_SOCKETS))?;
        let home = std::env::var_os("HOME").map(PathBuf::from);
        let specs = parse_specs(&json, home.as_deref())?;
        let timeout = std::env::var(PUBKEY_TIMEOUT_VAR)
            .ok()
            .and_then(|v| v.parse::<f64>().ok())
            .map(Duration::from_secs_f64)
            .unwrap_or(Duration::from_secs(10));
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        rt.block_on(async {
            let (input, output) = stdio()?;
            run(specs, input, output, timeout).await
        })
    })();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("clawker-socket-server: {e:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs() {
        let s = parse_specs(
            r#"[{"path":"~/.ssh/agent.sock","type":"ssh-agent"},{"path":"/g/S.gpg-agent","type":"gpg-agent"}]"#,
            Some(Path::new("/home/u")),
        )
        .unwrap();
        assert_eq!(s[0].path, PathBuf::from("/home/u/.ssh/agent.sock"));
        assert_eq!(s[1].kind, Kind::GpgAgent);
        for bad in [
            "",
            "{}",
            "[]",
            r#"[{"path":"rel","type":"ssh-agent"}]"#,
            r#"[{"path":"/a","type":"x"}]"#,
            r#"[{"path":"/a","type":"ssh-agent","x":1}]"#,
        ] {
            assert!(parse_specs(bad, None).is_err(), "{bad}");
        }
    }
}
