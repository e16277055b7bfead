//! Local sockets through `interprocess` (SPEC.md 9): a unix socket's path on unix, a named
//! pipe (`\\.\pipe\NAME`) on Windows, one code path for both. What the daemon connects to
//! (ssh-agent, gpg-agent, declared sockets) and what it listens on (its control socket)
//! goes through here.

use std::io;
use std::path::{Path, PathBuf};

use interprocess::local_socket::tokio::prelude::*;
use interprocess::local_socket::{GenericFilePath, ListenerOptions, ToFsName};

pub use interprocess::local_socket::tokio::{Listener, Stream};

/// Connects to the local socket at `path`: a unix socket, or on Windows a named pipe such as
/// `\\.\pipe\openssh-ssh-agent`.
pub async fn connect(path: &Path) -> io::Result<Stream> {
    Stream::connect(path.to_fs_name::<GenericFilePath>()?).await
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
pub fn peer_is_me(conn: &Stream) -> bool {
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
#[cfg(unix)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

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
    }
}
