//! The URL launcher: `argv... URL` run directly, never through a shell.

use std::process::Stdio;
use std::time::Duration;

use futures_util::future::BoxFuture;

use super::{LaunchError, Launcher};
use crate::platform::process::{Detach, detach_child, host_command};

/// Launches `argv... URL` directly (never through a shell).
#[derive(Debug, Clone)]
pub struct CommandLauncher {
    argv: Vec<String>,
}

/// The platform's URL launcher when none is configured (SPEC.md 9); the URL is its last
/// argument.
pub fn default_launcher() -> &'static [&'static str] {
    if cfg!(target_os = "macos") {
        &["open"]
    } else if cfg!(windows) {
        // Not `cmd /c start`: cmd would parse the URL's `&` and `^`.
        &["rundll32", "url.dll,FileProtocolHandler"]
    } else {
        &["xdg-open"]
    }
}

impl CommandLauncher {
    pub fn new(argv: Option<Vec<String>>) -> Self {
        Self {
            argv: argv
                .filter(|a| !a.is_empty())
                .unwrap_or_else(|| default_launcher().iter().map(|a| a.to_string()).collect()),
        }
    }
}

/// How long the launcher may run before it counts as "started": `xdg-open` returns at once,
/// a browser run directly keeps running and is then reaped in the background.
const LAUNCH_SETTLE: Duration = Duration::from_millis(1500);

impl Launcher for CommandLauncher {
    fn open<'a>(&'a self, url: &'a str) -> BoxFuture<'a, Result<(), LaunchError>> {
        Box::pin(async move {
            let program = self.argv[0].clone();
            let mut cmd = host_command(&program);
            cmd.args(&self.argv[1..])
                .arg(url)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            detach_child(&mut cmd, Detach::Group);
            let mut child = cmd.spawn().map_err(|source| LaunchError::Spawn {
                program: program.clone(),
                source,
            })?;
            match tokio::time::timeout(LAUNCH_SETTLE, child.wait()).await {
                Ok(Ok(status)) if status.success() => Ok(()),
                Ok(Ok(status)) => Err(LaunchError::Failed {
                    program,
                    status: status.to_string(),
                }),
                Ok(Err(source)) => Err(LaunchError::Spawn { program, source }),
                Err(_) => {
                    tokio::spawn(async move {
                        let _ = child.wait().await;
                    });
                    Ok(())
                }
            }
        })
    }
}
