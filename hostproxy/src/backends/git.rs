//! `git credential fill|approve|reject` on the host: argv only, no terminal, a timeout that
//! kills the whole process group.

use clawker_protocol::api::GitCredentialAction;
use clawker_protocol::credential::{CredentialFields, decode};
use futures_util::future::BoxFuture;

use super::{CredentialHelper, GitError};
use crate::config::GitPolicy;
use crate::platform::process::{Detach, HostRun, RunError, host_command, run_captured};

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

impl CredentialHelper for GitCommand {
    fn run(
        &self,
        action: GitCredentialAction,
        input: CredentialFields,
    ) -> BoxFuture<'_, Result<Option<CredentialFields>, GitError>> {
        Box::pin(self.credential(action, input, true))
    }

    fn run_as_host(
        &self,
        action: GitCredentialAction,
        input: CredentialFields,
    ) -> BoxFuture<'_, Result<Option<CredentialFields>, GitError>> {
        Box::pin(self.credential(action, input, false))
    }
}

impl GitCommand {
    /// `git credential ACTION`. With `given_path`, a `path` in `input` is the container's git
    /// asking per repository, so the host's git matches on it whatever its own config says;
    /// without, the host's `credential.useHttpPath` decides.
    async fn credential(
        &self,
        action: GitCredentialAction,
        input: CredentialFields,
        given_path: bool,
    ) -> Result<Option<CredentialFields>, GitError> {
        let stdin_text = input.encode().map_err(|_| GitError::BadReply)?;
        let mut cmd = host_command(&self.policy.program);
        cmd.args(["-c", "core.askPass="]);
        if given_path && input.path.is_some() {
            // The container's git sends `path` only when its credential.useHttpPath asks
            // for it: the host's git must then match on it too (SPEC.md 4.3), or a
            // credential stored for one repository would be handed out for another.
            cmd.args(["-c", "credential.useHttpPath=true"]);
        }
        cmd.args(["credential", action.git_subcommand()])
            .env("GIT_TERMINAL_PROMPT", "0")
            .env_remove("GIT_ASKPASS")
            .env_remove("SSH_ASKPASS")
            .env("GCM_INTERACTIVE", "never");
        // Off the daemon's terminal, so neither git nor a helper can prompt there, and
        // leading its own group, so a timeout kills the helpers git started too.
        let run = HostRun {
            input: Some(stdin_text.as_bytes()),
            cap: 64 * 1024,
            detach: self.detach,
            kill_group_after: false,
        };
        let timeout = self.policy.timeout;
        let (status, out) = run_captured(cmd, run, tokio::time::sleep(timeout))
            .await
            .map_err(|e| match e {
                RunError::Spawn(e) | RunError::Io(e) => GitError::Spawn(e),
                RunError::Ended => GitError::Timeout(timeout),
            })?;
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
    }
}

#[cfg(test)]
#[cfg(unix)]
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
