//! Local sockets through `interprocess` (SPEC.md 9): a unix socket's path on unix, a named
//! pipe (`\\.\pipe\NAME`) on Windows, one code path for both. What the daemon connects to
//! (ssh-agent, gpg-agent, declared sockets) and what it listens on (its control socket)
//! goes through here. On Windows, gpg-agent's sockets are libassuan's emulation (a file
//! naming a loopback TCP port and a nonce), which [`connect`] follows as well.

use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::task::{Context, Poll};

use interprocess::local_socket::tokio::prelude::*;
use interprocess::local_socket::{GenericFilePath, ListenerOptions, ToFsName};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};

/// What the control socket accepts.
pub use interprocess::local_socket::tokio::{Listener, Stream as Accepted};

/// A connection made by [`connect`].
#[derive(Debug)]
pub enum Stream {
    /// A unix socket, not through `interprocess` (its tokio stream cannot shut one direction:
    /// its `poll_shutdown` does nothing, and the tunnel's half-close needs it, SPEC.md 6.3),
    /// watched for readability only, so the peer reading what was written does not wake
    /// the daemon (`clawker_bridge::QuietStream`).
    #[cfg(unix)]
    Unix(clawker_bridge::QuietStream),
    /// A named pipe.
    #[cfg(not(unix))]
    Local(interprocess::local_socket::tokio::Stream),
    /// libassuan's socket emulation: loopback TCP, the nonce already sent.
    Assuan(tokio::net::TcpStream),
}

/// Connects to the local socket at `path`: a unix socket, or on Windows a named pipe such as
/// `\\.\pipe\openssh-ssh-agent` or gpg-agent's emulated socket file.
pub async fn connect(path: &Path) -> io::Result<Stream> {
    if cfg!(windows) && !is_pipe(path) && path.is_file() {
        return connect_assuan(path).await.map(Stream::Assuan);
    }
    #[cfg(unix)]
    {
        Ok(Stream::Unix(
            clawker_bridge::QuietStream::connect(path).await?,
        ))
    }
    #[cfg(not(unix))]
    {
        let name = path.to_fs_name::<GenericFilePath>()?;
        Ok(Stream::Local(
            interprocess::local_socket::tokio::Stream::connect(name).await?,
        ))
    }
}

fn is_pipe(path: &Path) -> bool {
    let p = path.as_os_str().to_string_lossy();
    p.starts_with(r"\\.\pipe\") || p.starts_with("//./pipe/")
}

/// The port and nonce in a libassuan socket file: the port in decimal, a newline, 16 bytes.
fn assuan_redirect(file: &[u8]) -> Option<(u16, [u8; 16])> {
    let nl = file.iter().position(|&b| b == b'\n')?;
    let port = std::str::from_utf8(&file[..nl]).ok()?.trim().parse().ok()?;
    let nonce = file.get(nl + 1..nl + 17)?.try_into().ok()?;
    Some((port, nonce))
}

/// Connects as libassuan's `assuan_sock_connect` does on Windows: read the port and nonce
/// from the socket file, connect to that port on the loopback, send the nonce.
async fn connect_assuan(path: &Path) -> io::Result<tokio::net::TcpStream> {
    let file = tokio::fs::read(path).await?;
    let (port, nonce) = assuan_redirect(&file).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{} is not a libassuan socket file", path.display()),
        )
    })?;
    let mut tcp = tokio::net::TcpStream::connect((std::net::Ipv4Addr::LOCALHOST, port)).await?;
    tcp.set_nodelay(true)?;
    tcp.write_all(&nonce).await?;
    Ok(tcp)
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            #[cfg(unix)]
            Self::Unix(s) => Pin::new(s).poll_read(cx, buf),
            #[cfg(not(unix))]
            Self::Local(s) => Pin::new(s).poll_read(cx, buf),
            Self::Assuan(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            #[cfg(unix)]
            Self::Unix(s) => Pin::new(s).poll_write(cx, buf),
            #[cfg(not(unix))]
            Self::Local(s) => Pin::new(s).poll_write(cx, buf),
            Self::Assuan(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            #[cfg(unix)]
            Self::Unix(s) => Pin::new(s).poll_flush(cx),
            #[cfg(not(unix))]
            Self::Local(s) => Pin::new(s).poll_flush(cx),
            Self::Assuan(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            #[cfg(unix)]
            Self::Unix(s) => Pin::new(s).poll_shutdown(cx),
            #[cfg(not(unix))]
            Self::Local(s) => Pin::new(s).poll_shutdown(cx),
            Self::Assuan(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

/// The host's ssh-agent: `SSH_AUTH_SOCK`, else on Windows the OpenSSH agent's pipe
/// `\\.\pipe\openssh-ssh-agent` (which Windows' ssh-agent service always uses).
pub fn ssh_agent_socket() -> Option<PathBuf> {
    std::env::var_os(clawker_protocol::env::SSH_AUTH_SOCK)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| cfg!(windows).then(|| PathBuf::from(r"\\.\pipe\openssh-ssh-agent")))
}

/// The control socket of the state directory `root`: `<root>/hostproxy.sock` on unix; on
/// Windows a named pipe named after the state directory (pipes live in their own
/// namespace, not in a directory).
pub fn control_path(root: &Path) -> PathBuf {
    #[cfg(unix)]
    {
        root.join("hostproxy.sock")
    }
    #[cfg(windows)]
    {
        use sha2::Digest;
        let digest = sha2::Sha256::digest(root.as_os_str().as_encoded_bytes());
        PathBuf::from(format!(
            r"\\.\pipe\clawker-hostproxy-{}",
            clawker_protocol::hex(&digest[..8])
        ))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BindError {
    #[cfg(unix)]
    #[error(transparent)]
    Prepare(#[from] clawker_bridge::SocketError),
    #[error("cannot listen on {0}")]
    Listen(String, #[source] io::Error),
}

/// Listens on `path` for this user only. Unix: the socket 0600 in a 0700 directory (a stale
/// socket replaced, a live one refused). Windows: a pipe with the default security (only
/// its owner, SYSTEM and administrators may write to it; remote clients are rejected);
/// [`peer_is_me`] has nothing more to check there.
pub fn listen_private(path: &Path) -> Result<Listener, BindError> {
    let shown = || path.display().to_string();
    #[cfg(unix)]
    clawker_bridge::prepare_private_socket(path)?;
    let name = path
        .to_fs_name::<GenericFilePath>()
        .map_err(|e| BindError::Listen(shown(), e))?;
    let listener = ListenerOptions::new()
        .name(name)
        .create_tokio()
        .map_err(|e| BindError::Listen(shown(), e))?;
    #[cfg(unix)]
    clawker_bridge::restrict_socket(path)?;
    Ok(listener)
}

/// Whether the peer of `conn` runs as this process's user (unix: its uid, from the kernel).
pub fn peer_is_me(conn: &Accepted) -> bool {
    #[cfg(unix)]
    {
        conn.peer_creds().ok().and_then(|c| c.euid()) == super::fs::current_user()
    }
    #[cfg(windows)]
    {
        let _ = conn;
        true
    }
}

#[cfg(test)]
mod assuan_tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    #[test]
    fn a_socket_file_names_a_port_and_a_nonce() {
        let mut file = b"51234\n".to_vec();
        file.extend_from_slice(&[7u8; 16]);
        assert_eq!(assuan_redirect(&file), Some((51234, [7u8; 16])));
        assert_eq!(assuan_redirect(b"51234\nshort"), None, "a short nonce");
        assert_eq!(assuan_redirect(b"no port here"), None);
        assert_eq!(
            assuan_redirect(b"99999\n0123456789abcdef"),
            None,
            "not a port"
        );
    }

    #[tokio::test]
    async fn the_nonce_goes_first_then_the_bytes_both_ways() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("S.gpg-agent.extra");
        let mut file = format!("{port}\n").into_bytes();
        file.extend_from_slice(b"0123456789abcdef");
        std::fs::write(&path, &file).unwrap();
        let agent = tokio::spawn(async move {
            let (mut c, _) = listener.accept().await.unwrap();
            let mut nonce = [0u8; 16];
            c.read_exact(&mut nonce).await.unwrap();
            c.write_all(b"OK Pleased to meet you\n").await.unwrap();
            nonce
        });
        let mut s = Stream::Assuan(connect_assuan(&path).await.unwrap());
        let mut greeting = [0u8; 23];
        s.read_exact(&mut greeting).await.unwrap();
        assert_eq!(&greeting, b"OK Pleased to meet you\n");
        assert_eq!(&agent.await.unwrap(), b"0123456789abcdef");
        // A file naming a live port but with a short nonce: refused, and nothing connects.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        std::fs::write(&path, format!("{port}\nshort")).unwrap();
        let err = connect_assuan(&path).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        let accepted =
            tokio::time::timeout(std::time::Duration::from_millis(200), listener.accept()).await;
        assert!(accepted.is_err(), "no connection was made");
    }
}

#[cfg(test)]
#[cfg(unix)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    #[tokio::test]
    async fn a_private_listener_a_client_and_its_peer() {
        let tmp = tempfile::tempdir().unwrap();
        let path = control_path(&tmp.path().join("state"));
        let listener = listen_private(&path).unwrap();
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(super::super::fs::mode(&meta), Some(0o600));
        let client = tokio::spawn({
            let path = path.clone();
            async move {
                let mut s = connect(&path).await.unwrap();
                s.write_all(b"ping").await.unwrap();
                let mut buf = [0u8; 4];
                s.read_exact(&mut buf).await.unwrap();
                buf
            }
        });
        let mut conn = listener.accept().await.unwrap();
        assert!(peer_is_me(&conn));
        let mut buf = [0u8; 4];
        conn.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"ping");
        conn.write_all(b"pong").await.unwrap();
        assert_eq!(&client.await.unwrap(), b"pong");
        // A second listener on a live socket is refused, and the live one is left alone.
        assert!(listen_private(&path).is_err());
        assert!(connect(&path).await.is_ok());
        // Dropped, the listener takes its socket file with it (the control socket's
        // shutdown relies on this).
        drop(listener);
        assert!(!path.exists());
    }
}
