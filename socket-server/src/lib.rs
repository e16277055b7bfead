//! `clawker-socket-server`: the container end of the socket bridge (SPEC.md section 6).
//!
//! Started by `hostproxy bridge` through `docker exec -i`. It creates the unix sockets
//! listed in `CLAWKER_REMOTE_SOCKETS`, and multiplexes every connection to them over
//! stdin/stdout as bridge frames (`clawker_protocol::bridge`): OPEN when a client connects,
//! DATA both ways, CLOSE both ways. The host end connects each stream to the real agent.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::AtomicU32;
use std::time::Duration;

use anyhow::{Context, Result, bail};
pub use clawker_bridge::{FrameReader, MAX_STREAMS, ReadError};
use clawker_bridge::{Out, Streams, pump, send, write_frames};
use clawker_protocol::bridge::{FrameType, SOCKET_GPG_AGENT, SOCKET_HTTP, SOCKET_SSH_AGENT};
use clawker_protocol::env;
use clawker_protocol::flow::{Agreed, Hello};
use clawker_protocol::tunnel::RemoteSocket;
use std::net::SocketAddr;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, UnixListener};

mod files;
pub use files::{install, install_gpg_home};
/// Seconds to wait for PUBKEY when a gpg-agent socket is listed.
pub const PUBKEY_TIMEOUT_VAR: &str = "CLAWKER_SOCKET_SERVER_PUBKEY_TIMEOUT";

/// One socket to serve, checked: an absolute path, or a loopback TCP address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SocketSpec {
    /// A unix socket; `kind` is its OPEN payload (`ssh-agent`, `gpg-agent`, `socket:NAME`).
    Unix {
        path: PathBuf,
        kind: String,
    },
    Http {
        listen: SocketAddr,
    },
}

impl SocketSpec {
    /// The OPEN payload of its streams.
    pub fn kind(&self) -> &str {
        match self {
            Self::Unix { kind, .. } => kind,
            Self::Http { .. } => SOCKET_HTTP,
        }
    }

    fn is_gpg(&self) -> bool {
        self.kind() == SOCKET_GPG_AGENT
    }
}

/// Parses `CLAWKER_REMOTE_SOCKETS`; a leading `~/` is this user's home.
pub fn parse_specs(json: &str, home: Option<&Path>) -> Result<Vec<SocketSpec>> {
    let specs: Vec<RemoteSocket> = serde_json::from_str(json).with_context(|| {
        format!(
            "{} must be a JSON list like [{{\"path\":\"/tmp/agent.sock\",\"type\":\"ssh-agent\"}}, {{\"type\":\"http\",\"listen\":\"127.0.0.1:18374\"}}] (types: ssh-agent, gpg-agent, http, socket)",
            env::REMOTE_SOCKETS
        )
    })?;
    if specs.is_empty() {
        bail!("{} lists no sockets", env::REMOTE_SOCKETS);
    }
    specs.iter().map(|s| check_spec(s, home)).collect()
}

/// One entry made usable: `~` expanded, the path absolute, the address a loopback one (the
/// tunnel's API is for this container's processes, never its network).
pub fn check_spec(spec: &RemoteSocket, home: Option<&Path>) -> Result<SocketSpec> {
    let unix = |path: &str, kind: String| -> Result<SocketSpec> {
        let mut path = PathBuf::from(path);
        if let Ok(rest) = path.strip_prefix("~") {
            let home = home.context("a socket path starts with ~ but HOME is not set")?;
            path = home.join(rest);
        }
        if !path.is_absolute() {
            bail!("socket path {} is not absolute", path.display());
        }
        Ok(SocketSpec::Unix { path, kind })
    };
    match spec {
        RemoteSocket::SshAgent { path } => unix(path, SOCKET_SSH_AGENT.into()),
        RemoteSocket::GpgAgent { path } => unix(path, SOCKET_GPG_AGENT.into()),
        RemoteSocket::Socket { name, path } => {
            if !clawker_protocol::tunnel::is_socket_name(name) {
                bail!("{name:?} is not a socket name");
            }
            unix(path, spec.open_payload())
        }
        RemoteSocket::Http { listen } => {
            let addr: SocketAddr = listen
                .parse()
                .with_context(|| format!("http listen address {listen:?} is not IP:PORT"))?;
            if !addr.ip().is_loopback() {
                bail!("http listen address {addr} is not a loopback address");
            }
            Ok(SocketSpec::Http { listen: addr })
        }
    }
}

/// A listening socket of either family.
enum Listener {
    Unix(UnixListener),
    Tcp(TcpListener),
}

type Conn = Box<dyn AsyncReadWrite>;
trait AsyncReadWrite: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> AsyncReadWrite for T {}

impl Listener {
    async fn accept(&self) -> std::io::Result<Conn> {
        Ok(match self {
            // Watched for readability only: a client reading its reply does not wake this
            // end (`QuietStream`).
            Self::Unix(l) => Box::new(clawker_bridge::QuietStream::from_tokio(
                l.accept().await?.0,
            )?),
            Self::Tcp(l) => {
                let (c, _) = l.accept().await?;
                let _ = c.set_nodelay(true);
                Box::new(c)
            }
        })
    }
}

/// What streams opened from now on get: nothing until the host's HELLO was answered
/// (SPEC.md 6.3). Held across "register the stream, send its OPEN" and across "answer the
/// HELLO", so each OPEN is on the wire after the answer exactly when its stream has a
/// window and may be half-closed.
type Mode = Arc<tokio::sync::Mutex<Agreed>>;

async fn accept_loop(
    listener: Listener,
    kind: String,
    next_id: Arc<AtomicU32>,
    streams: Streams,
    mode: Mode,
    out: Out,
) {
    loop {
        let Ok(conn) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let agreed = mode.lock().await;
        let Some(end) = streams.insert_next(&next_id, *agreed) else {
            eprintln!(
                "clawker-socket-server: {MAX_STREAMS} streams open; refusing a {kind} client"
            );
            continue;
        };
        // OPEN goes out before the pump can send any DATA for this stream.
        if !send(&out, FrameType::Open, end.id, kind.as_bytes()).await {
            return;
        }
        drop(agreed);
        tokio::spawn(pump(conn, end, None, out.clone(), streams.clone()));
    }
}

/// The host's HELLO: answered with ours (once), and every stream opened after the answer
/// gets what the two agree on. A HELLO that does not parse changes nothing.
async fn answer_hello(payload: &[u8], mode: &Mode, out: &Out) {
    let Ok(theirs) = Hello::decode(payload) else {
        eprintln!(
            "clawker-socket-server: the host's HELLO does not parse; streams without flow control"
        );
        return;
    };
    let mut agreed = mode.lock().await;
    if *agreed != Agreed::default() {
        return;
    }
    send(out, FrameType::Hello, 0, &Hello::OURS.encode()).await;
    *agreed = Hello::OURS.agree(&theirs);
}

/// Binds one socket: unix ones private to this user, TCP ones on the loopback.
async fn bind(spec: &SocketSpec) -> Result<Listener> {
    match spec {
        SocketSpec::Unix { path, .. } => {
            Ok(Listener::Unix(clawker_bridge::bind_private_socket(path)?))
        }
        SocketSpec::Http { listen } => Ok(Listener::Tcp(
            TcpListener::bind(listen)
                .await
                .with_context(|| format!("cannot listen on {listen}"))?,
        )),
    }
}

/// Waits for the host's PUBKEY frame; a HELLO before it is kept for later, other frames
/// are ignored.
async fn wait_pubkey<R: AsyncRead + Unpin>(
    reader: &mut FrameReader<R>,
    hello: &mut Option<Vec<u8>>,
) -> Result<Option<Vec<u8>>, ReadError> {
    while let Some(f) = reader.next().await? {
        match f.kind {
            FrameType::Pubkey => return Ok(Some(f.payload)),
            FrameType::Hello => *hello = Some(f.payload),
            _ => {}
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
    lenient: bool,
) -> Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let (out, out_rx) = clawker_bridge::out_channel();
    let writer = tokio::spawn(write_frames(output, out_rx));
    let mut reader = FrameReader::new(input);
    let fail = |out: Out, msg: String| async move {
        send(&out, FrameType::Error, 0, msg.as_bytes()).await;
    };
    let mut early_hello = None;
    if specs.iter().any(SocketSpec::is_gpg) {
        let key =
            match tokio::time::timeout(pubkey_timeout, wait_pubkey(&mut reader, &mut early_hello))
                .await
            {
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
        let mut gpg_refused = false;
        match key {
            Some(key) if !key.is_empty() => {
                for s in &specs {
                    if let SocketSpec::Unix { path, kind } = s
                        && kind == SOCKET_GPG_AGENT
                    {
                        let home = path
                            .parent()
                            .context("gpg-agent socket has no parent directory")?;
                        if let Err(e) = install_gpg_home(home, &key) {
                            eprintln!(
                                "clawker-socket-server: {e:#}; gpg-agent socket not created, the rest is served"
                            );
                            gpg_refused = true;
                        }
                    }
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
                specs.retain(|s| !s.is_gpg());
            }
        }
        if gpg_refused {
            specs.retain(|s| !s.is_gpg());
        }
    }
    let streams = Streams::default();
    let mode: Mode = Default::default();
    if let Some(hello) = early_hello {
        answer_hello(&hello, &mode, &out).await;
    }
    let next_id = Arc::new(AtomicU32::new(1));
    let mut acceptors = tokio::task::JoinSet::new();
    let mut bound = Vec::new();
    for s in specs {
        let listener = match bind(&s).await {
            Ok(l) => l,
            // Sockets nobody named (the defaults) are served where they can be: a
            // container's own agent at SSH_AUTH_SOCK is left alone, the rest goes on.
            Err(e) if lenient && s.kind() != SOCKET_HTTP => {
                eprintln!(
                    "clawker-socket-server: {e:#}; the {} socket is not served",
                    s.kind()
                );
                continue;
            }
            Err(e) => {
                fail(out.clone(), format!("{e:#}")).await;
                drop(out);
                let _ = writer.await;
                return Err(e);
            }
        };
        acceptors.spawn(accept_loop(
            listener,
            s.kind().to_string(),
            next_id.clone(),
            streams.clone(),
            mode.clone(),
            out.clone(),
        ));
        bound.push(s);
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
        if frame.kind == FrameType::Hello {
            answer_hello(&frame.payload, &mode, &out).await;
            continue;
        }
        // DATA, CLOSE, WINDOW, EOF for a stream. Without a window (a host that never said
        // HELLO) a client that falls `STREAM_QUEUE_BYTES` behind loses its stream, never
        // the others'. PUBKEY again, or frames only the host receives: nothing to do.
        streams
            .on_frame(&out, frame.kind, frame.stream, frame.payload.into())
            .await;
    };
    acceptors.abort_all();
    for s in &bound {
        if let SocketSpec::Unix { path, .. } = s {
            let _ = std::fs::remove_file(path);
        }
    }
    drop(out);
    streams.clear();
    let _ = tokio::time::timeout(Duration::from_secs(2), writer).await;
    result
}

type BoxRead = Box<dyn AsyncRead + Unpin + Send>;
type BoxWrite = Box<dyn AsyncWrite + Unpin + Send>;

/// Pipe capacity asked for on stdin/stdout: a 256 KiB frame fits whole, so a frame is one
/// write and the peer drains it without waking us four times (the default is 64 KiB).
/// Linux grants up to `/proc/sys/fs/pipe-max-size` (1 MiB by default) without privilege.
const PIPE_CAPACITY: libc::c_int = 1024 * 1024;

/// Grows a pipe's buffer; a refusal (not a pipe, over the limit) leaves it as it was.
#[allow(unsafe_code)]
fn grow_pipe(fd: std::os::fd::BorrowedFd<'_>) {
    use std::os::fd::AsRawFd;
    // SAFETY: fcntl(F_SETPIPE_SZ) on a descriptor we borrow; it touches no memory of ours.
    unsafe {
        libc::fcntl(fd.as_raw_fd(), libc::F_SETPIPE_SZ, PIPE_CAPACITY);
    }
}

/// stdin/stdout as non-blocking pipes when they are pipes (as under `docker exec -i`), so
/// bulk traffic does not go through tokio's blocking-thread stdio; plain stdio otherwise.
fn stdio() -> std::io::Result<(BoxRead, BoxWrite)> {
    use std::os::fd::AsFd;
    use tokio::net::unix::pipe;
    grow_pipe(std::io::stdin().as_fd());
    grow_pipe(std::io::stdout().as_fd());
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
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("install") {
        let Some(dest) = args.get(1) else {
            eprintln!("usage: clawker-socket-server install DIR");
            return ExitCode::from(2);
        };
        return match install(Path::new(dest)) {
            Ok(n) => {
                println!("clawker-socket-server: installed {n} tools into {dest}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("clawker-socket-server: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    if std::env::args()
        .skip(1)
        .any(|a| a == "--version" || a == "-V")
    {
        println!("clawker-socket-server {}", env!("CARGO_PKG_VERSION"));
        return ExitCode::SUCCESS;
    }
    if std::env::args().skip(1).any(|a| a == "--help" || a == "-h") {
        println!(
            "clawker-socket-server {}\nContainer end of the hostproxy socket bridge: started by `hostproxy bridge` with docker exec -i.\nReads {} (JSON list of {{\"path\",\"type\": \"ssh-agent\"|\"gpg-agent\"}} and {{\"type\":\"http\",\"listen\":\"127.0.0.1:PORT\"}}) and speaks bridge frames on stdin/stdout.\nUnset: the tunnel's defaults (http on 127.0.0.1:18374, ssh-agent at $SSH_AUTH_SOCK or $HOME/.ssh/agent.sock, gpg-agent in $GNUPGHOME when set).\n\n`clawker-socket-server install DIR` copies itself and the tools beside it into DIR (an init container filling a volume).\n\nExample:\n  {}='[{{\"path\":\"~/.ssh/agent.sock\",\"type\":\"ssh-agent\"}}]' clawker-socket-server",
            env!("CARGO_PKG_VERSION"),
            env::REMOTE_SOCKETS,
            env::REMOTE_SOCKETS
        );
        return ExitCode::SUCCESS;
    }
    let result = (|| -> Result<()> {
        let home = std::env::var_os("HOME").map(PathBuf::from);
        // Unset: the tunnel's defaults from this container's environment (a `--via`
        // command that could not pass the variable, e.g. `kubectl exec`).
        let (specs, lenient) = match std::env::var(env::REMOTE_SOCKETS) {
            Ok(json) => (parse_specs(&json, home.as_deref())?, false),
            Err(_) => (
                clawker_protocol::tunnel::default_sockets(|k| std::env::var(k).ok())
                    .iter()
                    .map(|s| check_spec(s, home.as_deref()))
                    .collect::<Result<_>>()?,
                true,
            ),
        };
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
            run(specs, input, output, timeout, lenient).await
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
        assert_eq!(
            s[0],
            SocketSpec::Unix {
                path: PathBuf::from("/home/u/.ssh/agent.sock"),
                kind: SOCKET_SSH_AGENT.into()
            }
        );
        assert!(s[1].is_gpg());
        let h = parse_specs(r#"[{"type":"http","listen":"127.0.0.1:18374"}]"#, None).unwrap();
        assert_eq!(
            h,
            vec![SocketSpec::Http {
                listen: "127.0.0.1:18374".parse().unwrap()
            }]
        );
        for bad in [
            "",
            "{}",
            "[]",
            r#"[{"path":"rel","type":"ssh-agent"}]"#,
            r#"[{"path":"/a","type":"x"}]"#,
            r#"[{"path":"/a","type":"ssh-agent","x":1}]"#,
            r#"[{"type":"http","listen":"0.0.0.0:18374"}]"#,
            r#"[{"type":"http","listen":"localhost"}]"#,
        ] {
            assert!(parse_specs(bad, None).is_err(), "{bad}");
        }
    }
}
