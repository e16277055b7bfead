//! Unix sockets only their owner can use, for the container-side socket tools and the
//! daemon's control socket.

#[derive(Debug, thiserror::Error)]
pub enum SocketError {
    #[error("cannot create {0}")]
    Dir(String, #[source] std::io::Error),
    #[error("{0} exists and is not a socket")]
    NotASocket(String),
    #[error("{0} is in use by another process")]
    InUse(String),
    #[error("cannot use {0}")]
    Io(String, #[source] std::io::Error),
}

/// Binds a unix socket only its owner can use: the parent directory is created 0700, the
/// socket is 0600. A stale socket file is replaced; anything that is not a socket, or a
/// socket something still answers on, is left alone and refused.
///
/// Unix only: the container end is Linux, and the host's control socket on Windows is a
/// named pipe (`hostproxy::platform::local`).
#[cfg(unix)]
pub fn bind_private_socket(
    path: &std::path::Path,
) -> Result<tokio::net::UnixListener, SocketError> {
    prepare_private_socket(path)?;
    let shown = || path.display().to_string();
    let listener = tokio::net::UnixListener::bind(path).map_err(|e| SocketError::Io(shown(), e))?;
    restrict_socket(path)?;
    Ok(listener)
}

/// What [`bind_private_socket`] does before it binds: the parent directory created 0700, a
/// stale socket file removed, anything else at `path` refused. For a caller that binds
/// the socket itself (the daemon's control socket, through `interprocess`).
#[cfg(unix)]
pub fn prepare_private_socket(path: &std::path::Path) -> Result<(), SocketError> {
    use std::os::unix::fs::{DirBuilderExt, FileTypeExt};
    let shown = || path.display().to_string();
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| SocketError::Dir(dir.display().to_string(), e))?;
    }
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if !meta.file_type().is_socket() {
            return Err(SocketError::NotASocket(shown()));
        }
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(SocketError::InUse(shown()));
        }
        std::fs::remove_file(path).map_err(|e| SocketError::Io(shown(), e))?;
    }
    Ok(())
}

/// What [`bind_private_socket`] does after it binds: the socket made 0600.
#[cfg(unix)]
pub fn restrict_socket(path: &std::path::Path) -> Result<(), SocketError> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| SocketError::Io(path.display().to_string(), e))
}
