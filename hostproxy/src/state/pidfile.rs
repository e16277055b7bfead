//! The PID file that makes one daemon per host (and one bridge per container).
//!
//! The running process holds an exclusive lock on it for its whole life. A PID file nobody
//! holds the lock on is stale, whatever PID it names, so a `kill -9`ed daemon never blocks
//! the next one.

use std::fs::File;
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use super::StateDir;

/// The locked PID file of the running daemon; removed on drop.
#[derive(Debug)]
pub struct PidFile {
    file: File,
    path: PathBuf,
}

/// How long a starting daemon keeps trying for the lock: a `status` or `stop` probing it
/// holds it for an instant, which must not make the start fail.
const LOCK_RETRY: Duration = Duration::from_millis(500);

/// Whether `file` is still the file at `path` (same device and inode).
fn same_file(file: &File, path: &Path) -> bool {
    match (file.metadata(), std::fs::metadata(path)) {
        (Ok(a), Ok(b)) => crate::platform::fs::identity(&a) == crate::platform::fs::identity(&b),
        _ => false,
    }
}

impl PidFile {
    pub fn acquire(state: &StateDir) -> Result<Self> {
        Self::acquire_at(&state.pid_file())
    }

    /// Locks the PID file at `path` (the daemon's, or a bridge's in `<state>/bridges/`).
    ///
    /// The holder that stops unlinks the file, then unlocks it; whoever had opened it in
    /// between then locks a file no longer at `path`, which this notices (the inode
    /// differs) and retries on the new one. So exactly one live process holds the lock of
    /// the file that is at `path`.
    pub fn acquire_at(path: &Path) -> Result<Self> {
        let path = path.to_path_buf();
        if let Some(dir) = path.parent() {
            StateDir::ensure_dir(dir)?;
        }
        let deadline = Instant::now() + LOCK_RETRY;
        loop {
            let mut file = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&path)
                .with_context(|| format!("cannot open {}", path.display()))?;
            match file.try_lock() {
                Ok(()) if same_file(&file, &path) => {
                    file.set_len(0)?;
                    file.rewind()?;
                    writeln!(file, "{}", std::process::id())?;
                    file.sync_all()?;
                    return Ok(Self { file, path });
                }
                // Locked a file its holder has just unlinked: open the new one.
                Ok(()) => {}
                Err(_) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(_) => {
                    let mut pid = String::new();
                    let _ = file.read_to_string(&mut pid);
                    bail!(
                        "another hostproxy process (pid {}) holds {}: stop it first",
                        pid.lines().next().unwrap_or("").trim(),
                        path.display()
                    );
                }
            }
        }
    }

    /// Records the port the daemon serves, on the line after its PID, so that `status`
    /// sends the token only to the port this daemon holds.
    pub fn record_port(&mut self, port: u16) -> Result<()> {
        self.file.set_len(0)?;
        self.file.rewind()?;
        writeln!(self.file, "{}\n{port}", std::process::id())?;
        self.file.sync_all()?;
        Ok(())
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        // Unlink first, then unlock: see `acquire_at`.
        let _ = std::fs::remove_file(&self.path);
        let _ = self.file.unlock();
    }
}

/// The daemon holding the PID file: its PID and, once it has bound, its port; `None` when
/// no daemon holds it.
pub fn running(state: &StateDir) -> Option<(u32, Option<u16>)> {
    let path = state.pid_file();
    let mut file = File::open(&path).ok()?;
    match file.try_lock_shared() {
        Ok(()) => {
            // Nobody holds it: stale.
            let _ = file.unlock();
            return None;
        }
        Err(std::fs::TryLockError::WouldBlock) => {}
        Err(std::fs::TryLockError::Error(_)) => return None,
    }
    let mut s = String::new();
    file.read_to_string(&mut s).ok()?;
    let mut lines = s.lines();
    let pid = lines.next()?.trim().parse().ok()?;
    Some((pid, lines.next().and_then(|p| p.trim().parse().ok())))
}

/// The PID of the daemon holding the PID file, or `None` when no daemon holds it.
pub fn running_pid(state: &StateDir) -> Option<u32> {
    running(state).map(|(pid, _)| pid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_holder_a_probe_does_not_stop_a_start_and_a_stop_start_race_leaves_one() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::at(dir.path());
        let mut held = PidFile::acquire(&state).unwrap();
        held.record_port(4242).unwrap();
        assert_eq!(running(&state), Some((std::process::id(), Some(4242))));
        assert!(PidFile::acquire(&state).is_err(), "one holder");
        drop(held);
        assert_eq!(running(&state), None);
        // A probe holding the lock shared for a moment while a daemon starts.
        let probe = File::open({
            let p = PidFile::acquire(&state).unwrap();
            let path = state.pid_file();
            drop(p);
            std::fs::write(&path, "1\n").unwrap();
            path
        })
        .unwrap();
        probe.try_lock_shared().unwrap();
        let release = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(100));
            drop(probe);
        });
        let started = PidFile::acquire(&state);
        release.join().unwrap();
        assert!(started.is_ok(), "the start waited out the probe");
        drop(started);
        // Starts racing a stop: always exactly one holder of the file at the path.
        let winners: Vec<_> = (0..8)
            .map(|_| {
                let state = state.clone();
                std::thread::spawn(move || PidFile::acquire(&state).ok())
            })
            .collect();
        let held: Vec<PidFile> = winners
            .into_iter()
            .filter_map(|t| t.join().unwrap())
            .collect();
        assert_eq!(held.len(), 1);
        assert!(same_file(&held[0].file, &state.pid_file()));
    }
}
