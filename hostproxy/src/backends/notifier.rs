//! The host's desktop notifier: `argv… TITLE BODY` run directly, never through a shell.

use std::process::Stdio;
use std::time::Duration;

use futures_util::future::BoxFuture;

use super::{Notifier, NotifyError};

/// The platform's notifier when none is configured. The title and body are always separate
/// argv elements: `notify-send -- TITLE BODY` (no option can be smuggled in), and on macOS an
/// AppleScript that reads them from its arguments, so no text is ever spliced into a script.
pub fn default_notifier() -> Vec<String> {
    if cfg!(target_os = "macos") {
        [
            "osascript",
            "-e",
            "on run argv",
            "-e",
            "display notification (item 2 of argv) with title (item 1 of argv)",
            "-e",
            "end run",
        ]
        .map(String::from)
        .to_vec()
    } else {
        vec!["notify-send".to_string(), "--".to_string()]
    }
}

/// Runs `argv… TITLE BODY`.
#[derive(Debug, Clone)]
pub struct CommandNotifier {
    argv: Vec<String>,
    /// `notify-send`: notification servers render a subset of HTML in the body (links
    /// among it), so the body is escaped to stay the text it was (SPEC.md 11).
    escape_body: bool,
}

impl CommandNotifier {
    pub fn new(argv: Option<Vec<String>>) -> Self {
        let argv = argv
            .filter(|a| !a.is_empty())
            .unwrap_or_else(default_notifier);
        let escape_body = std::path::Path::new(&argv[0])
            .file_name()
            .is_some_and(|n| n == "notify-send");
        Self { argv, escape_body }
    }
}

/// The body as markup that shows exactly the text: `&`, `<`, `>` escaped (what the
/// Desktop Notifications spec's body markup understands), so `<a href>` is no link.
pub fn escape_markup(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            _ => out.push(c),
        }
    }
    out
}

/// A notifier has this long to show the notification and exit.
const NOTIFY_TIMEOUT: Duration = Duration::from_secs(5);

impl Notifier for CommandNotifier {
    fn notify<'a>(
        &'a self,
        title: &'a str,
        body: &'a str,
    ) -> BoxFuture<'a, Result<(), NotifyError>> {
        Box::pin(async move {
            let program = self.argv[0].clone();
            let body = if self.escape_body {
                escape_markup(body)
            } else {
                body.to_string()
            };
            let mut child = crate::platform::process::host_command(&program)
                .args(&self.argv[1..])
                .arg(title)
                .arg(body)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .kill_on_drop(true)
                .spawn()
                .map_err(|source| NotifyError::Spawn {
                    program: program.clone(),
                    source,
                })?;
            match tokio::time::timeout(NOTIFY_TIMEOUT, child.wait()).await {
                Ok(Ok(status)) if status.success() => Ok(()),
                Ok(Ok(status)) => Err(NotifyError::Failed {
                    program,
                    status: status.to_string(),
                }),
                Ok(Err(source)) => Err(NotifyError::Spawn { program, source }),
                Err(_) => Err(NotifyError::Failed {
                    program,
                    status: "no exit within 5 s".into(),
                }),
            }
        })
    }
}
