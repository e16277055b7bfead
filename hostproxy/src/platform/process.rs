//! Is a process alive? Portable: `kill(pid, 0)` (no `/proc`, which macOS has not), after
//! reaping it if it is our own exited child (a zombie is not alive).

/// Whether `pid` names a live process (our exited, unreaped children are reaped and count
/// as gone).
#[cfg(unix)]
#[allow(unsafe_code)]
pub fn alive(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    if pid <= 0 {
        return false;
    }
    let mut status = 0;
    // SAFETY: waitpid with WNOHANG only inspects; it fails with ECHILD for others' processes.
    if unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) } == pid {
        return false;
    }
    // SAFETY: signal 0 checks existence and permission; nothing is delivered.
    if unsafe { libc::kill(pid, 0) } == 0 {
        return true;
    }
    // EPERM: it exists, it is just not ours.
    std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

#[cfg(windows)]
#[allow(unsafe_code)]
pub fn alive(pid: u32) -> bool {
    use windows_sys::Win32::Foundation::{CloseHandle, STILL_ACTIVE};
    use windows_sys::Win32::System::Threading::{
        GetExitCodeProcess, OpenProcess, PROCESS_QUERY_LIMITED_INFORMATION,
    };
    // SAFETY: OpenProcess returns a handle we own (or null); it is closed below.
    let handle = unsafe { OpenProcess(PROCESS_QUERY_LIMITED_INFORMATION, 0, pid) };
    if handle.is_null() {
        // No such process, or one we may not query: it exists only in the second case,
        // which `running()` then still checks against the locked PID file.
        return std::io::Error::last_os_error().raw_os_error() == Some(5); // ERROR_ACCESS_DENIED
    }
    let mut code = 0u32;
    // SAFETY: `handle` is a valid process handle and `code` a valid out pointer.
    let ok = unsafe { GetExitCodeProcess(handle, &mut code) } != 0;
    // SAFETY: `handle` was opened above and is closed once.
    unsafe { CloseHandle(handle) };
    ok && code == STILL_ACTIVE as u32
}

/// Asks `pid` to stop: SIGTERM on unix (the daemon drains and removes its PID file).
/// Windows has no signal to send another console process, so it is ended (`taskkill /F`);
/// the next start finds the PID file unlocked and replaces it.
pub fn terminate(pid: u32) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        let pid = libc::pid_t::try_from(pid)
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
        #[allow(unsafe_code)]
        // SAFETY: kill(2) with a PID; no memory involved.
        let rc = unsafe { libc::kill(pid, libc::SIGTERM) };
        if rc != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }
    #[cfg(windows)]
    {
        taskkill(pid, false)
    }
}

#[cfg(windows)]
fn taskkill(pid: u32, tree: bool) -> std::io::Result<()> {
    let mut cmd = std::process::Command::new("taskkill");
    cmd.args(["/F", "/PID", &pid.to_string()]);
    if tree {
        cmd.arg("/T");
    }
    let status = cmd
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()?;
    if status.success() {
        Ok(())
    } else {
        Err(std::io::Error::other(format!("taskkill failed: {status}")))
    }
}

/// The working directory of every host program the daemon runs (SPEC.md 11): the root of
/// the file system, which is no repository and which no container, image or other local
/// user can write (Windows: the system root). Never the daemon's own, which began as
/// wherever the user started it, often the very project a container has mounted.
pub fn child_dir() -> std::path::PathBuf {
    #[cfg(windows)]
    {
        std::env::var_os("SystemRoot")
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|| std::path::PathBuf::from(r"C:\"))
    }
    #[cfg(not(windows))]
    {
        std::path::PathBuf::from("/")
    }
}

/// The `GIT_*` variables of the daemon's environment a host program keeps: the ones that
/// choose the user's own global and system config, which still apply (SPEC.md 11). Every
/// other (`GIT_DIR`, `GIT_WORK_TREE`, `GIT_CONFIG_PARAMETERS`, `GIT_CONFIG_COUNT`, …) would
/// point git at a repository or config the daemon's caller happened to have.
const GIT_ENV_KEPT: [&str; 3] = [
    "GIT_CONFIG_GLOBAL",
    "GIT_CONFIG_SYSTEM",
    "GIT_CONFIG_NOSYSTEM",
];

/// A host program as the daemon runs every one (git, Docker credential helpers, the
/// launcher, the notifier, gpg): argv only, working directory [`child_dir`], no inherited
/// `GIT_*` but [`GIT_ENV_KEPT`], and git's repository discovery stopped at that directory
/// (`GIT_CEILING_DIRECTORIES`), so no repository config a container could have written is
/// ever read.
pub fn host_command(program: impl AsRef<std::ffi::OsStr>) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(program);
    as_host_program(cmd.as_std_mut());
    cmd
}

/// What [`host_command`] sets, on a blocking `Command` (`doctor` asks git and gpgconf what
/// the daemon's own children would see, not what the caller's directory says).
pub fn as_host_program(cmd: &mut std::process::Command) {
    let dir = child_dir();
    cmd.current_dir(&dir);
    for (key, _) in std::env::vars_os() {
        let Some(k) = key.to_str() else { continue };
        if k.to_ascii_uppercase().starts_with("GIT_") && !GIT_ENV_KEPT.contains(&k) {
            cmd.env_remove(&key);
        }
    }
    cmd.env("GIT_CEILING_DIRECTORIES", &dir);
}

/// How a child is kept off the daemon's terminal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Detach {
    /// A session of its own (unix `setsid`): for a daemon that has a controlling terminal.
    Session,
    /// A process group of its own: enough when the daemon has no terminal, and cheaper
    /// (lets the standard library `posix_spawn`).
    Group,
}

impl Detach {
    /// A session when this process has a controlling terminal (`hostproxy serve` in a
    /// shell), else a group (`hostproxy start` already runs the daemon in its own session).
    pub fn for_this_process() -> Self {
        if has_controlling_terminal() {
            Self::Session
        } else {
            Self::Group
        }
    }
}

/// Whether this process has a controlling terminal (`/dev/tty` opens only then; never on
/// Windows). Asked once: the daemon never opens a terminal, so the answer cannot change.
fn has_controlling_terminal() -> bool {
    static ANSWER: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ANSWER.get_or_init(|| cfg!(unix) && std::fs::File::open("/dev/tty").is_ok())
}

/// Makes `cmd`'s child lead its own process group (so [`kill_group`] reaches whatever it
/// starts) and, with [`Detach::Session`], its own session, off any terminal. Windows: a new
/// process group without a console window.
pub fn detach_child(cmd: &mut tokio::process::Command, how: Detach) {
    detach(cmd.as_std_mut(), how, false);
}

/// Starts `cmd` outside this terminal's session for good (`hostproxy start`): unix `setsid`;
/// Windows a detached process in its own group.
pub fn daemonize(cmd: &mut std::process::Command) {
    detach(cmd, Detach::Session, true);
}

/// What [`detach_child`] and [`daemonize`] do; `for_good` also leaves the console on
/// Windows (unix needs nothing more than the session for that).
#[allow(unsafe_code)]
fn detach(cmd: &mut std::process::Command, how: Detach, for_good: bool) {
    #[cfg(unix)]
    {
        use std::os::unix::process::CommandExt;
        let _ = for_good;
        if how == Detach::Group {
            cmd.process_group(0);
            return;
        }
        // SAFETY: setsid is async-signal-safe and touches no memory of the parent.
        unsafe {
            cmd.pre_exec(|| {
                if libc::setsid() == -1 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    #[cfg(windows)]
    {
        use std::os::windows::process::CommandExt;
        let _ = how;
        let mut flags = windows::CREATE_NEW_PROCESS_GROUP | windows::CREATE_NO_WINDOW;
        if for_good {
            flags |= windows::DETACHED_PROCESS;
        }
        cmd.creation_flags(flags);
    }
}

/// How one run of a host program is made (see [`run_captured`]).
#[derive(Clone, Copy)]
pub struct HostRun<'a> {
    /// Written to its stdin, which is then closed; `None`: stdin is `/dev/null`.
    pub input: Option<&'a [u8]>,
    /// Most stdout bytes kept (a helper has no business sending more).
    pub cap: u64,
    pub detach: Detach,
    /// Kill its process group after it exits too (what it left behind: a desktop asker's
    /// notification); else only when the run is ended early.
    pub kill_group_after: bool,
}

/// The input is left out: it is what git or a credential helper is told to store (a
/// password, a registry secret).
impl std::fmt::Debug for HostRun<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostRun")
            .field("input_len", &self.input.map(<[u8]>::len))
            .field("cap", &self.cap)
            .field("detach", &self.detach)
            .field("kill_group_after", &self.kill_group_after)
            .finish()
    }
}

/// How a run ended without an exit status.
#[derive(Debug)]
pub enum RunError {
    /// It could not be started.
    Spawn(std::io::Error),
    /// Reading its output or waiting for it failed.
    Io(std::io::Error),
    /// `until` came first (a timeout, a shutdown): its process group was killed.
    Ended,
}

/// Runs a [`host_command`] the one way the daemon runs every host program that answers it
/// (git, a Docker credential helper, an egress secret's command, an approver): argv only,
/// no shell; `run.input` on stdin; stdout kept up to `run.cap` bytes; stderr dropped (it may
/// echo a secret); off the daemon's terminal and leading its own process group, which is
/// killed when `until` completes first — the program and whatever it started. Returns its
/// exit status and stdout.
pub async fn run_captured(
    mut cmd: tokio::process::Command,
    run: HostRun<'_>,
    until: impl std::future::Future<Output = ()>,
) -> Result<(std::process::ExitStatus, Vec<u8>), RunError> {
    use std::process::Stdio;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    cmd.stdin(if run.input.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::null())
    .kill_on_drop(true);
    detach_child(&mut cmd, run.detach);
    let mut child = cmd.spawn().map_err(RunError::Spawn)?;
    let pid = child.id();
    let stdin = child.stdin.take();
    let stdout = child.stdout.take();
    let work = async {
        if let (Some(bytes), Some(mut w)) = (run.input, stdin) {
            // A program that exits without reading its input says so by its status.
            let _ = w.write_all(bytes).await;
        }
        let mut out = Vec::new();
        if let Some(o) = stdout {
            o.take(run.cap)
                .read_to_end(&mut out)
                .await
                .map_err(RunError::Io)?;
        }
        let status = child.wait().await.map_err(RunError::Io)?;
        Ok((status, out))
    };
    let result = tokio::select! {
        r = work => r,
        () = until => Err(RunError::Ended),
    };
    if let Some(pid) = pid
        && (run.kill_group_after || matches!(result, Err(RunError::Ended)))
    {
        kill_group(pid);
    }
    result
}

/// Kills the process group `pid` leads (see [`detach_child`]): the child and whatever it
/// started. Windows: the process tree.
pub fn kill_group(pid: u32) {
    #[cfg(unix)]
    if let Ok(pid) = libc::pid_t::try_from(pid) {
        #[allow(unsafe_code)]
        // SAFETY: kill(2) with a negative pid signals a process group; no memory involved.
        unsafe {
            libc::kill(-pid, libc::SIGKILL);
        }
    }
    #[cfg(windows)]
    {
        let _ = taskkill(pid, true);
    }
}

#[cfg(windows)]
mod windows {
    pub const DETACHED_PROCESS: u32 = 0x0000_0008;
    pub const CREATE_NEW_PROCESS_GROUP: u32 = 0x0000_0200;
    pub const CREATE_NO_WINDOW: u32 = 0x0800_0000;
}

#[cfg(test)]
#[cfg(unix)]
mod tests {
    use super::*;

    #[test]
    fn a_live_process_a_zombie_and_a_dead_pid() {
        let mut live = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        assert!(alive(live.id()));
        assert!(
            alive(1),
            "init is alive (and not ours: EPERM or not, it exists)"
        );
        // An exited child nobody has waited for is a zombie: not alive.
        let zombie = std::process::Command::new("true").spawn().unwrap();
        let zpid = zombie.id();
        std::thread::sleep(std::time::Duration::from_millis(200));
        assert!(!alive(zpid));
        live.kill().unwrap();
        live.wait().unwrap();
        // A PID that is gone (just reaped).
        assert!(!alive(live.id()));
        assert!(!alive(u32::MAX));
        drop(zombie);
    }
}

#[cfg(test)]
mod host_run_tests {
    use super::*;

    #[test]
    fn a_runs_debug_shows_no_input() {
        let run = HostRun {
            input: Some(b"password=s3cret-pass\n"),
            cap: 1,
            detach: Detach::Group,
            kill_group_after: false,
        };
        let shown = format!("{run:?}");
        assert!(
            !shown.contains("s3cret") && shown.contains("input_len: Some(21)"),
            "{shown}"
        );
    }
}
