//! The askers besides `hostproxy approvals`: the `--approver` hook and the desktop. Each runs
//! as a host program (argv, working directory `/`, its own process group, killed when the ask
//! is over) and answers through [`Approvals::answer`]; one that cannot answer abstains.

use clawker_protocol::approval::{PendingAsk, answered_by};
use tokio_util::sync::CancellationToken;

use super::{Answer, Approvals};
use crate::config::ApprovalSettings;
use crate::platform::process::{Detach, HostRun, RunError, host_command, run_captured};

/// Starts every asker the settings name for `ask`; `stop` ends them.
pub(super) fn start(
    approvals: &Approvals,
    settings: &ApprovalSettings,
    ask: PendingAsk,
    stop: CancellationToken,
) {
    if let Some(argv) = settings.approver.clone() {
        let (approvals, ask, stop) = (approvals.clone(), ask.clone(), stop.clone());
        tokio::spawn(async move { approver(&approvals, argv, ask, stop).await });
    }
    if settings.desktop
        && let Some(argv) = desktop_argv(&ask, settings.timeout.as_secs())
    {
        let approvals = approvals.clone();
        tokio::spawn(async move { ask_desktop(&approvals, argv, ask, stop).await });
    }
}

/// The variables an approver reads the ask from (its stdin has the same as one JSON line).
fn ask_env(ask: &PendingAsk) -> [(&'static str, String); 7] {
    [
        ("HOSTPROXY_ASK_ID", ask.id.clone()),
        ("HOSTPROXY_ASK_IDENTITY", ask.identity.clone()),
        (
            "HOSTPROXY_ASK_CONTAINER",
            ask.container.clone().unwrap_or_default(),
        ),
        ("HOSTPROXY_ASK_SCOPE", ask.scope.clone()),
        ("HOSTPROXY_ASK_WHAT", ask.what.clone()),
        ("HOSTPROXY_ASK_TARGET", ask.target.clone()),
        ("HOSTPROXY_ASK_WHY", ask.why.clone()),
    ]
}

/// Runs `cmd` until it exits or `stop`; its process group is killed either way. `None`: it
/// could not start, or was stopped.
async fn run(
    cmd: tokio::process::Command,
    stdin: Option<Vec<u8>>,
    stop: &CancellationToken,
    what: &str,
) -> Option<(std::process::ExitStatus, String)> {
    let run = HostRun {
        input: stdin.as_deref(),
        cap: 4096,
        detach: Detach::for_this_process(),
        kill_group_after: true,
    };
    match run_captured(cmd, run, stop.cancelled()).await {
        Ok((status, out)) => Some((status, String::from_utf8_lossy(&out).into_owned())),
        Err(RunError::Spawn(e)) => {
            tracing::warn!(error = %e, "cannot start the {what}");
            None
        }
        Err(RunError::Io(_) | RunError::Ended) => None,
    }
}

/// The `--approver` hook: exit 0 allows, exit 1 denies, anything else abstains.
async fn approver(
    approvals: &Approvals,
    argv: Vec<String>,
    ask: PendingAsk,
    stop: CancellationToken,
) {
    let mut cmd = host_command(&argv[0]);
    cmd.args(&argv[1..]).envs(ask_env(&ask));
    let mut line = serde_json::to_vec(&ask).unwrap_or_default();
    line.push(b'\n');
    let Some((status, _)) = run(cmd, Some(line), &stop, "approver").await else {
        return;
    };
    let allow = match status.code() {
        Some(0) => true,
        Some(1) => false,
        _ => {
            tracing::info!(%status, id = %ask.id, "the approver abstained");
            return;
        }
    };
    let _ = approvals.answer(
        &ask.id,
        Answer {
            allow,
            always: false,
            by: answered_by::APPROVER.into(),
        },
    );
}

/// The desktop's ask: `notify-send` with actions on Linux (when there is a display and
/// `notify-send` on `PATH`), a dialog through `osascript` on macOS; `None` elsewhere.
fn desktop_argv(ask: &PendingAsk, secs: u64) -> Option<Vec<String>> {
    let text = format!(
        "{} wants to {} ({}) on {}.\n{}",
        ask.identity, ask.what, ask.scope, ask.target, ask.why
    );
    if cfg!(target_os = "macos") {
        let script = format!(
            "on run argv\ndisplay dialog (item 1 of argv) with title \"hostproxy\" buttons {{\"Deny\", \"Always\", \"Allow\"}} default button \"Deny\" giving up after {secs}\nend run"
        );
        return Some(vec![
            "osascript".into(),
            "-e".into(),
            script,
            "--".into(),
            text,
        ]);
    }
    desktop().ok()?;
    Some(vec![
        "notify-send".into(),
        "--app-name=hostproxy".into(),
        "--urgency=critical".into(),
        format!("--expire-time={}", secs * 1000),
        "--wait".into(),
        "--action=allow=Allow".into(),
        "--action=always=Always for this container".into(),
        "--action=deny=Deny".into(),
        "--".into(),
        format!("{}: {}", ask.identity, ask.what),
        crate::backends::escape_markup(&text),
    ])
}

/// What asks on this desktop (`osascript`, `notify-send`), or why nothing can.
pub fn desktop() -> Result<&'static str, &'static str> {
    if cfg!(target_os = "macos") {
        return Ok("an osascript dialog");
    }
    if cfg!(windows) {
        return Err("no desktop asker on Windows yet");
    }
    let display = ["DISPLAY", "WAYLAND_DISPLAY"]
        .iter()
        .any(|v| std::env::var_os(v).is_some_and(|x| !x.is_empty()));
    match (display, on_path("notify-send")) {
        (false, _) => Err("no DISPLAY or WAYLAND_DISPLAY"),
        (true, false) => Err("notify-send is not installed (libnotify-bin)"),
        (true, true) => Ok("notify-send with actions"),
    }
}

pub(crate) fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(program).is_file()))
}

/// What the desktop said: `notify-send` prints the action's name, `osascript` `button
/// returned:Allow`. Closing the notification or giving up says nothing.
fn desktop_answer(out: &str) -> Option<(bool, bool)> {
    let word = out
        .trim()
        .strip_prefix("button returned:")
        .map(|r| r.split(',').next().unwrap_or(""))
        .unwrap_or(out.trim());
    match word.to_ascii_lowercase().as_str() {
        "allow" => Some((true, false)),
        "always" => Some((true, true)),
        "deny" => Some((false, false)),
        _ => None,
    }
}

async fn ask_desktop(
    approvals: &Approvals,
    argv: Vec<String>,
    ask: PendingAsk,
    stop: CancellationToken,
) {
    let mut cmd = host_command(&argv[0]);
    cmd.args(&argv[1..]);
    let Some((_, out)) = run(cmd, None, &stop, "desktop notifier").await else {
        return;
    };
    if let Some((allow, always)) = desktop_answer(&out) {
        let _ = approvals.answer(
            &ask.id,
            Answer {
                allow,
                always,
                by: answered_by::DESKTOP.into(),
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::desktop_answer;

    #[test]
    fn the_desktop_answers_by_action_name_or_button() {
        assert_eq!(desktop_answer("allow\n"), Some((true, false)));
        assert_eq!(desktop_answer("always"), Some((true, true)));
        assert_eq!(desktop_answer("deny\n"), Some((false, false)));
        assert_eq!(
            desktop_answer("button returned:Allow, gave up:false\n"),
            Some((true, false))
        );
        assert_eq!(desktop_answer("button returned:, gave up:true"), None);
        assert_eq!(desktop_answer(""), None);
    }
}
