//! `hostproxy service install|uninstall` (SPEC.md 12): the daemon as a service of the
//! user's session — a systemd user unit on Linux, a launchd agent on macOS — running this
//! `hostproxy`'s `serve`.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use anyhow::{Context, Result, bail};

/// The systemd user unit's name.
pub const UNIT: &str = "hostproxy.service";
/// The launchd agent's label.
pub const LABEL: &str = "dev.clawker.hostproxy";

/// Where the service file goes on this platform.
pub fn service_file() -> Result<PathBuf> {
    let home = crate::platform::dirs::home().context("no home directory")?;
    if cfg!(target_os = "macos") {
        return Ok(home
            .join("Library/LaunchAgents")
            .join(format!("{LABEL}.plist")));
    }
    let config = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .unwrap_or_else(|| home.join(".config"));
    Ok(config.join("systemd/user").join(UNIT))
}

/// The systemd user unit that runs `exe serve`.
pub fn systemd_unit(exe: &Path) -> String {
    format!(
        "[Unit]\n\
         Description=hostproxy: the host end for tools in containers\n\
         Documentation=man:hostproxy(1)\n\
         \n\
         [Service]\n\
         ExecStart=\"{}\" serve\n\
         Restart=on-failure\n\
         RestartSec=2\n\
         \n\
         [Install]\n\
         WantedBy=default.target\n",
        exe.display()
    )
}

/// The launchd agent that runs `exe serve` at login and again if it fails.
pub fn launchd_plist(exe: &Path) -> String {
    let exe = exe
        .display()
        .to_string()
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;");
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
         <!DOCTYPE plist PUBLIC \"-//Apple//DTD PLIST 1.0//EN\" \"http://www.apple.com/DTDs/PropertyList-1.0.dtd\">\n\
         <plist version=\"1.0\">\n<dict>\n\
         \x20 <key>Label</key><string>{LABEL}</string>\n\
         \x20 <key>ProgramArguments</key><array><string>{exe}</string><string>serve</string></array>\n\
         \x20 <key>RunAtLoad</key><true/>\n\
         \x20 <key>KeepAlive</key><dict><key>SuccessfulExit</key><false/></dict>\n\
         </dict>\n</plist>\n"
    )
}

/// systemctl (or launchctl), run in `/` like every host program (SPEC.md 11).
fn manager() -> Command {
    let mut c = if cfg!(target_os = "macos") {
        Command::new("launchctl")
    } else {
        let mut c = Command::new("systemctl");
        c.arg("--user");
        c
    };
    c.current_dir("/");
    c
}

/// Runs the service manager; its failure is reported with what to run by hand.
fn ask(args: &[&str], by_hand: &str) -> bool {
    match manager().args(args).status() {
        Ok(s) if s.success() => true,
        _ => {
            eprintln!("hostproxy: could not run the service manager; run it yourself: {by_hand}");
            false
        }
    }
}

fn uid() -> String {
    crate::platform::fs::current_user()
        .map(|u| u.to_string())
        .unwrap_or_default()
}

/// Writes the service file for this `hostproxy` and, with `start`, enables and starts it.
pub fn install(start: bool) -> Result<ExitCode> {
    if !cfg!(unix) {
        bail!(
            "`hostproxy service` writes systemd (Linux) and launchd (macOS) services; on Windows, run `hostproxy serve` from a scheduled task at logon"
        );
    }
    let file = service_file()?;
    let macos = cfg!(target_os = "macos");
    let exe = std::env::current_exe()
        .and_then(std::fs::canonicalize)
        .context("cannot find this hostproxy's own path")?;
    let text = if macos {
        launchd_plist(&exe)
    } else {
        systemd_unit(&exe)
    };
    if let Some(dir) = file.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    std::fs::write(&file, text).with_context(|| format!("cannot write {}", file.display()))?;
    println!("wrote {} (runs {} serve)", file.display(), exe.display());
    if start {
        if macos {
            let domain = format!("gui/{}", uid());
            let path = file.display().to_string();
            ask(
                &["bootstrap", &domain, &path],
                &format!("launchctl bootstrap {domain} {path}"),
            );
        } else if ask(&["daemon-reload"], "systemctl --user daemon-reload") {
            ask(
                &["enable", "--now", UNIT],
                &format!("systemctl --user enable --now {UNIT}"),
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Stops the service (as far as the manager answers) and removes its file.
pub fn uninstall() -> Result<ExitCode> {
    let file = service_file()?;
    let macos = cfg!(target_os = "macos");
    if !file.exists() {
        println!("no service file at {}: nothing to remove", file.display());
        return Ok(ExitCode::SUCCESS);
    }
    if macos {
        let target = format!("gui/{}/{LABEL}", uid());
        let _ = manager()
            .args(["bootout", &target])
            .stderr(std::process::Stdio::null())
            .status();
    } else {
        let _ = manager()
            .args(["disable", "--now", UNIT])
            .stderr(std::process::Stdio::null())
            .status();
    }
    std::fs::remove_file(&file).with_context(|| format!("cannot remove {}", file.display()))?;
    if !macos {
        let _ = manager()
            .arg("daemon-reload")
            .stderr(std::process::Stdio::null())
            .status();
    }
    println!("removed {}", file.display());
    Ok(ExitCode::SUCCESS)
}

/// What `doctor` says of the service: none (fine), or the file and whether the program it
/// runs is still there.
pub fn describe() -> Result<String, String> {
    let file = service_file().map_err(|e| format!("{e:#}"))?;
    let Ok(text) = std::fs::read_to_string(&file) else {
        return Ok("none installed (optional: hostproxy service install)".into());
    };
    let program = text
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart=\""))
        .or_else(|| text.split("<string>").nth(2))
        .and_then(|rest| rest.split(['"', '<']).next())
        .unwrap_or_default()
        .to_string();
    if program.is_empty() || !Path::new(&program).is_file() {
        return Err(format!(
            "{} runs {program:?}, which is not there (hostproxy moved?)",
            file.display()
        ));
    }
    Ok(format!("{} runs {program} serve", file.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_unit_and_the_agent_run_this_hostproxy_serve() {
        let unit = systemd_unit(Path::new("/opt/hp/bin/hostproxy"));
        assert!(
            unit.contains("ExecStart=\"/opt/hp/bin/hostproxy\" serve\n"),
            "{unit}"
        );
        assert!(unit.contains("WantedBy=default.target"));
        let plist = launchd_plist(Path::new("/Users/a&b/hostproxy"));
        assert!(
            plist.contains("<string>/Users/a&amp;b/hostproxy</string><string>serve</string>"),
            "{plist}"
        );
    }
}
