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
pub fn alive(pid: u32) -> bool {
    // Windows: no signals; `tasklist` is the portable answer without more dependencies.
    std::process::Command::new("tasklist")
        .args(["/FI", &format!("PID eq {pid}"), "/NH"])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains(&pid.to_string()))
}

#[cfg(all(test, unix))]
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
