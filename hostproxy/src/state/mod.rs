//! The host state directory: its paths, the user's token file and the PID files.

use std::io::Write;
use std::path::{Path, PathBuf};

use clawker_protocol::Secret;
use thiserror::Error;

mod pidfile;

pub use pidfile::{PidFile, running, running_pid};

#[derive(Debug, Error)]
pub enum StateError {
    #[error(
        "cannot find a state directory: set CLAWKER_STATE_DIR, XDG_STATE_HOME or HOME (LOCALAPPDATA on Windows)"
    )]
    NoStateDir,
    #[error("cannot use {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("token file {0} is empty or not valid: delete it and start the daemon again")]
    BadToken(PathBuf),
    #[error("the operating system's random source failed")]
    Random,
    #[error(
        "the state directory {0} can be written by other users: run `chmod 700 {0}` (or set CLAWKER_STATE_DIR to a private directory)"
    )]
    Loose(PathBuf),
    #[error(
        "the state directory {path} belongs to uid {owner}, not to you: use a directory of your own (CLAWKER_STATE_DIR)"
    )]
    NotOurs { path: PathBuf, owner: u32 },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> StateError + '_ {
    move |source| StateError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Paths inside the state directory.
#[derive(Debug, Clone)]
pub struct StateDir {
    root: PathBuf,
}

impl StateDir {
    /// `CLAWKER_STATE_DIR`, then `$XDG_STATE_HOME/clawker`, then (Windows)
    /// `%LOCALAPPDATA%\clawker`, then `~/.local/state/clawker`.
    pub fn from_env() -> Result<Self, StateError> {
        let root = std::env::var_os(clawker_protocol::env::STATE_DIR)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .or_else(|| crate::platform::dirs::state_base().map(|b| b.join("clawker")))
            .ok_or(StateError::NoStateDir)?;
        Ok(Self { root })
    }

    pub fn at(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn pid_file(&self) -> PathBuf {
        self.root.join("pids").join("hostproxy.pid")
    }

    pub fn log_file(&self) -> PathBuf {
        self.root.join("logs").join("hostproxy.log")
    }

    pub fn audit_file(&self) -> PathBuf {
        self.root.join("logs").join("audit.jsonl")
    }

    pub fn token_file(&self) -> PathBuf {
        self.root.join("hostproxy.token")
    }

    /// Scoped tokens (hashes only).
    pub fn tokens_file(&self) -> PathBuf {
        self.root.join("tokens.json")
    }

    /// The control socket (`attach`, `detach`; SPEC.md 6.1).
    pub fn control_socket(&self) -> PathBuf {
        crate::platform::local::control_path(&self.root)
    }

    /// Callback sessions kept across a restart.
    pub fn sessions_file(&self) -> PathBuf {
        self.root.join("sessions.json")
    }

    /// Where a release build unpacks the container tools it carries (SPEC.md 12).
    pub fn tools_dir(&self) -> PathBuf {
        self.root.join("tools")
    }

    /// Creates `dir` (and parents) with mode 0700.
    pub fn ensure_dir(dir: &Path) -> Result<(), StateError> {
        crate::platform::fs::create_private_dir(dir).map_err(io_err(dir))
    }

    /// Reads the token, creating it (0600, 32 random bytes as hex) on first use.
    ///
    /// The token is written whole to a temporary file and linked into place (`link` fails
    /// when the name exists), so a reader never sees it empty or half-written and two
    /// daemons starting at once agree on one token.
    pub fn load_or_create_token(&self) -> Result<Secret<String>, StateError> {
        Self::ensure_dir(&self.root)?;
        let path = self.token_file();
        if path.exists() {
            return self.read_token();
        }
        let token = new_token()?;
        let tmp = self.root.join(format!(
            ".hostproxy.token.{}.{}",
            std::process::id(),
            clawker_protocol::hex(
                &crate::util::random_bytes::<4>().map_err(|_| StateError::Random)?
            )
        ));
        let written = crate::platform::fs::private_file()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .and_then(|mut f| {
                f.write_all(token.expose().as_bytes())?;
                f.write_all(b"\n")?;
                f.sync_all()
            });
        let linked = written.and_then(|()| std::fs::hard_link(&tmp, &path));
        let _ = std::fs::remove_file(&tmp);
        match linked {
            Ok(()) => Ok(token),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => self.read_token(),
            Err(e) => Err(io_err(&path)(e)),
        }
    }

    /// Refuses a state directory that is not the user's or that others may write (as ssh
    /// refuses a loose `~/.ssh`): whoever can write it can replace the token or the PID file.
    pub fn check_private(&self) -> Result<(), StateError> {
        use crate::platform::fs;
        let meta = std::fs::metadata(&self.root).map_err(io_err(&self.root))?;
        if let (Some(owner), Some(me)) = (fs::owner(&meta), fs::current_user())
            && owner != me
        {
            return Err(StateError::NotOurs {
                path: self.root.clone(),
                owner,
            });
        }
        if fs::mode(&meta).is_some_and(|m| m & 0o022 != 0) {
            return Err(StateError::Loose(self.root.clone()));
        }
        Ok(())
    }

    /// Reads an existing token; tightens its mode to 0600 if it was looser.
    pub fn read_token(&self) -> Result<Secret<String>, StateError> {
        use std::io::Read;
        let path = self.token_file();
        // One open, not following a symlink; its mode checked and fixed on that descriptor,
        // so what is checked is what is read.
        let mut file = crate::platform::fs::no_follow(std::fs::OpenOptions::new().read(true))
            .open(&path)
            .map_err(io_err(&path))?;
        let meta = file.metadata().map_err(io_err(&path))?;
        if crate::platform::fs::mode(&meta).is_some_and(|m| m & 0o077 != 0) {
            tracing::warn!(path = %path.display(), "the token file was readable by others: set to 0600; it may have leaked, so rotate it (delete it and restart the daemon)");
            crate::platform::fs::set_mode(&file, 0o600).map_err(io_err(&path))?;
        }
        let mut text = String::new();
        file.read_to_string(&mut text).map_err(io_err(&path))?;
        let token = text.trim();
        if token.len() < 32 || !token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(StateError::BadToken(path));
        }
        Ok(Secret::new(token.to_string()))
    }
}

/// 32 bytes from the OS random source, hex-encoded.
pub fn new_token() -> Result<Secret<String>, StateError> {
    Ok(Secret::new(clawker_protocol::hex(
        &crate::util::random_bytes::<32>().map_err(|_| StateError::Random)?,
    )))
}

#[cfg(test)]
#[cfg(unix)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_reader_never_sees_the_token_half_written() {
        for _ in 0..20 {
            let dir = tempfile::tempdir().unwrap();
            let state = StateDir::at(dir.path().join("s"));
            std::thread::scope(|scope| {
                let readers: Vec<_> = (0..4)
                    .map(|_| {
                        scope.spawn(|| {
                            for _ in 0..200 {
                                match state.read_token() {
                                    Ok(t) => return Some(t),
                                    Err(StateError::Io { .. }) => {} // not there yet
                                    Err(e) => panic!("a reader saw {e}"),
                                }
                            }
                            None
                        })
                    })
                    .collect();
                let writers: Vec<_> = (0..2)
                    .map(|_| scope.spawn(|| state.load_or_create_token().unwrap()))
                    .collect();
                let written: Vec<_> = writers.into_iter().map(|w| w.join().unwrap()).collect();
                assert_eq!(written[0], written[1], "one token for both");
                for r in readers {
                    if let Some(t) = r.join().unwrap() {
                        assert_eq!(t, written[0]);
                    }
                }
            });
        }
    }

    #[test]
    fn a_state_dir_others_can_write_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::at(dir.path());
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        state.check_private().unwrap();
        for loose in [0o777, 0o770, 0o1777] {
            std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(loose)).unwrap();
            let e = state.check_private().unwrap_err();
            assert!(e.to_string().contains("chmod 700"), "{e}");
        }
    }

    #[test]
    fn token_created_once_with_mode_0600() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::at(dir.path().join("s"));
        let t1 = state.load_or_create_token().unwrap();
        let t2 = state.load_or_create_token().unwrap();
        assert_eq!(t1, t2);
        assert_eq!(t1.expose().len(), 64);
        let mode = std::fs::metadata(state.token_file())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let dir_mode = std::fs::metadata(state.root())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(dir_mode & 0o777, 0o700);
    }

    #[test]
    fn loose_token_mode_is_tightened_and_garbage_refused() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::at(dir.path());
        std::fs::write(state.token_file(), "x".repeat(64)).unwrap();
        std::fs::set_permissions(state.token_file(), std::fs::Permissions::from_mode(0o644))
            .unwrap();
        state.read_token().unwrap();
        let mode = std::fs::metadata(state.token_file())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        std::fs::write(state.token_file(), "short").unwrap();
        assert!(matches!(state.read_token(), Err(StateError::BadToken(_))));
    }
}
