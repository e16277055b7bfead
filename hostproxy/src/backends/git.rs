//! `git credential fill|approve|reject` on the host: argv only, no terminal, a timeout that
//! kills the whole process group.

use std::process::Stdio;

use clawker_protocol::api::GitCredentialAction;
use clawker_protocol::credential::{CredentialFields, decode};
use futures_util::future::BoxFuture;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{CredentialHelper, GitError};
use crate::config::GitPolicy;

/// Runs the host's real `git credential`.
#[derive(Debug, Clone)]
pub struct GitCommand {
    policy: GitPolicy,
    detach: Detach,
}

impl GitCommand {
    pub fn new(policy: GitPolicy) -> Self {
        Self::with_detach(policy, Detach::for_this_process())
    }

    fn with_detach(policy: GitPolicy, detach: Detach) -> Self {
        Self { policy, detach }
    }
}

/// How git is kept off the daemon's terminal (see [`detach_from_terminal`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Detach {
    /// A session of its own (`setsid` before exec): needed when the daemon has a terminal.
    Session,
    /// A process group of its own: enough when the daemon has no terminal.
    Group,
}

impl Detach {
    fn for_this_process() -> Self {
        if has_controlling_terminal() {
            Self::Session
        } else {
            Self::Group
        }
    }
}

/// Whether this process has a controlling terminal (`/dev/tty` opens only then). Asked once:
/// the daemon never opens a terminal, so the answer cannot change while it runs.
fn has_controlling_terminal() -> bool {
    static ANSWER: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ANSWER.get_or_init(|| std::fs::File::open("/dev/tty").is_ok())
}

/// Keeps the child off the terminal the daemon was started from, so neither git nor a helper
/// can prompt there, and makes it lead its own process group (for [`kill_group`]).
///
/// With a controlling terminal (`hostproxy serve` in a shell) the child gets a session of its
/// own (`setsid` before exec, which forces `fork`). Without one (`hostproxy start` runs the
/// daemon in its own session) the child cannot reach a terminal anyway, and a new process
/// group is enough, which lets the standard library use `posix_spawn` (≈ 0.2 ms less per
/// credential request).
#[allow(unsafe_code)]
fn detach_from_terminal(cmd: &mut tokio::process::Command, how: Detach) {
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

fn kill_group(pid: Option<u32>) {
    if let Some(pid) = pid.and_then(|p| i32::try_from(p).ok()) {
        // The child leads its own process group (see `detach_from_terminal`), so this reaches
        // the helpers git started too.
        #[allow(unsafe_code)]
        // SAFETY: kill(2) with a negative pid signals a process group; no memory involved.
        unsafe {
            libc::kill(-pid, libc::SIGKILL);
        }
    }
}

impl CredentialHelper for GitCommand {
    fn run(
        &self,
        action: GitCredentialAction,
        input: CredentialFields,
    ) -> BoxFuture<'_, Result<Option<CredentialFields>, GitError>> {
        Box::pin(async move {
            let stdin_text = input.encode().map_err(|_| GitError::BadReply)?;
            let mut cmd = tokio::process::Command::new(&self.policy.program);
            cmd.args(["-c", "core.askPass="]);
            if input.path.is_some() {
                // The container's git sends `path` only when its credential.useHttpPath asks
                // for it: the host's git must then match on it too (SPEC.md 4.3), or a
                // credential stored for one repository would be handed out for another.
                cmd.args(["-c", "credential.useHttpPath=true"]);
            }
            cmd.args(["credential", action.git_subcommand()])
                .env("GIT_TERMINAL_PROMPT", "0")
                .env_remove("GIT_ASKPASS")
                .env_remove("SSH_ASKPASS")
                .env("GCM_INTERACTIVE", "never")
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .kill_on_drop(true);
            detach_from_terminal(&mut cmd, self.detach);
            let mut child = cmd.spawn().map_err(GitError::Spawn)?;
            let pid = child.id();
            let mut stdin = child.stdin.take().ok_or(GitError::BadReply)?;
            let mut stdout = child.stdout.take().ok_or(GitError::BadReply)?;
            let work = async {
                stdin
                    .write_all(stdin_text.as_bytes())
                    .await
                    .map_err(GitError::Spawn)?;
                drop(stdin);
                let mut out = Vec::new();
                // A helper has no business sending more than this.
                (&mut stdout)
                    .take(64 * 1024)
                    .read_to_end(&mut out)
                    .await
                    .map_err(GitError::Spawn)?;
                let status = child.wait().await.map_err(GitError::Spawn)?;
                Ok::<_, GitError>((status, out))
            };
            let (status, out) = match tokio::time::timeout(self.policy.timeout, work).await {
                Ok(r) => r?,
                Err(_) => {
                    kill_group(pid);
                    return Err(GitError::Timeout(self.policy.timeout));
                }
            };
            if action != GitCredentialAction::Get {
                return if status.success() {
                    Ok(None)
                } else {
                    Err(GitError::Failed(status.to_string()))
                };
            }
            if !status.success() {
                // `fill` with prompts disabled exits non-zero when no helper knows the host.
                return Ok(None);
            }
            let text = String::from_utf8(out).map_err(|_| GitError::BadReply)?;
            let fields = decode(&text)
                .and_then(CredentialFields::from_pairs)
                .map_err(|_| GitError::BadReply)?;
            // A password, or (capability authtype) a pre-encoded credential such as a
            // bearer token; without either git found nothing usable (an expired password is
            // dropped by git itself).
            let usable = fields.password.is_some() || fields.credential.is_some();
            Ok(usable.then_some(fields))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;
    use std::path::PathBuf;

    /// A stand-in for git that answers with its own process group and session ids.
    fn fake_git(dir: &std::path::Path) -> PathBuf {
        let path = dir.join("git");
        std::fs::write(
            &path,
            "#!/bin/sh\ncat > /dev/null\nset -- $(cut -d' ' -f5,6 /proc/$$/stat)\nprintf 'username=%s\\npassword=%s %s\\n' \"$$\" \"$1\" \"$2\"\n",
        )
        .unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    async fn ids(how: Detach) -> (String, String) {
        let dir = tempfile::tempdir().unwrap();
        let git = GitCommand::with_detach(
            GitPolicy {
                program: fake_git(dir.path()),
                ..GitPolicy::default()
            },
            how,
        );
        let fields = CredentialFields::from_pairs(vec![
            ("protocol".into(), "https".into()),
            ("host".into(), "example.com".into()),
        ])
        .unwrap();
        let out = git
            .run(GitCredentialAction::Get, fields)
            .await
            .unwrap()
            .unwrap();
        (
            out.username.unwrap().expose().clone(),
            out.password.unwrap().expose().clone(),
        )
    }

    #[tokio::test]
    async fn git_leads_its_own_session_or_group() {
        // "pgrp sid": with a terminal git leads a session of its own, without one a group.
        let (pid, groups) = ids(Detach::Session).await;
        assert_eq!(groups, format!("{pid} {pid}"));
        let (pid, groups) = ids(Detach::Group).await;
        let (pgrp, sid) = groups.split_once(' ').unwrap();
        assert_eq!(pgrp, pid);
        assert_ne!(sid, pid, "a group leader, not a session leader");
    }
}
