//! The secrets of `[[egress]]`, read on the host when a request needs them: a variable of
//! the daemon's environment, a file, or a program's output kept for its `ttl`. Never logged,
//! never in an error's text.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use clawker_protocol::Secret;

use crate::config::{EgressDecl, SecretSource};
use crate::platform::process::{Detach, HostRun, RunError, host_command, run_captured};

/// How long a secret's program may take.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

/// Secrets of programs, by egress name, with when they were read.
#[derive(Debug, Default)]
pub struct Secrets {
    kept: Mutex<HashMap<String, (Secret<String>, Instant)>>,
}

/// What a header value may hold: no CR, LF or NUL, not empty.
fn usable(s: String, what: &str) -> Result<Secret<String>, String> {
    let s = s.trim_end_matches(['\r', '\n']).to_string();
    if s.is_empty() || s.contains(['\r', '\n', '\0']) {
        return Err(format!("{what} is empty or has a line break"));
    }
    Ok(Secret::new(s))
}

impl Secrets {
    /// The secret of `d` now.
    pub async fn get(&self, d: &EgressDecl) -> Result<Secret<String>, String> {
        match &d.secret {
            SecretSource::Env(v) => match std::env::var(v) {
                Ok(s) => usable(s, &format!("the daemon's {v}")),
                Err(_) => Err(format!("the daemon's environment has no {v}")),
            },
            SecretSource::File(p) => {
                let text = tokio::fs::read_to_string(p)
                    .await
                    .map_err(|e| format!("cannot read {}: {e}", p.display()))?;
                usable(text, &p.display().to_string())
            }
            SecretSource::Command { argv, ttl } => {
                if let Some((s, at)) = self
                    .kept
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .get(&d.name)
                    && at.elapsed() < *ttl
                {
                    return Ok(s.clone());
                }
                let s = run(argv).await?;
                self.kept
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(d.name.clone(), (s.clone(), Instant::now()));
                Ok(s)
            }
        }
    }
}

/// Runs a secret's program: argv, working directory `/`, no terminal, its own process
/// group (killed after [`COMMAND_TIMEOUT`]), stdout only (at most 64 KiB; stderr dropped,
/// as it may echo the secret).
async fn run(argv: &[String]) -> Result<Secret<String>, String> {
    let mut cmd = host_command(&argv[0]);
    cmd.args(&argv[1..]);
    let run = HostRun {
        input: None,
        cap: 64 * 1024,
        detach: Detach::for_this_process(),
        kill_group_after: false,
    };
    match run_captured(cmd, run, tokio::time::sleep(COMMAND_TIMEOUT)).await {
        Ok((st, out)) if st.success() => usable(
            String::from_utf8_lossy(&out).into_owned(),
            &format!("{}'s output", argv[0]),
        ),
        Ok((st, _)) => Err(format!("{} failed ({st})", argv[0])),
        Err(RunError::Spawn(e)) => Err(format!("cannot run {}: {e}", argv[0])),
        Err(RunError::Io(e)) => Err(format!("{} failed: {e}", argv[0])),
        Err(RunError::Ended) => Err(format!("{} did not answer within 30 s", argv[0])),
    }
}
