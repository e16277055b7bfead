//! The PID file that makes one daemon per host (and one bridge per container).
//!
//! The running process holds an exclusive lock on it for its whole life. A PID file nobody
//! holds the lock on is stale, whatever PID it names, so a `kill -9`ed daemon never blocks
//! the next one.

use std::fs::File;
use std::io::{Read, Seek, Write};
use std::path::PathBuf;

use anyhow::{Context, Result, bail};

use super::StateDir;

/// The locked PID file of the running daemon; removed on drop.
#[derive(Debug)]
pub struct PidFile {
    file: File,
    path: PathBuf,
}

impl PidFile {
    pub fn acquire(state: &StateDir) -> Result<Self> {
        Self::acquire_at(&state.pid_file())
    }

    /// Locks the PID file at `path` (the daemon's, or a bridge's in `<state>/bridges/`).
    pub fn acquire_at(path: &std::path::Path) -> Result<Self> {
        let path = path.to_path_buf();
        if let Some(dir) = path.parent() {
            StateDir::ensure_dir(dir)?;
        }
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        if file.try_lock().is_err() {
            let mut pid = String::new();
            let _ = file.read_to_string(&mut pid);
            bail!(
                "another hostproxy process (pid {}) holds {}: stop it first",
                pid.trim(),
                path.display()
            );
        }
        file.set_len(0)?;
        file.rewind()?;
        writeln!(file, "{}", std::process::id())?;
        file.sync_all()?;
        Ok(Self { file, path })
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
        let _ = self.file.unlock();
    }
}

/// The PID of the daemon holding the PID file, or `None` when no daemon holds it.
pub fn running_pid(state: &StateDir) -> Option<u32> {
    let path = state.pid_file();
    let mut file = File::open(&path).ok()?;
    if file.try_lock_shared().is_ok() {
        // Nobody holds it: stale.
        let _ = file.unlock();
        return None;
    }
    let mut s = String::new();
    file.read_to_string(&mut s).ok()?;
    s.trim().parse().ok()
}
