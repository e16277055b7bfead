//! The container end as any command that speaks the bridge on its stdin and stdout
//! (`--via 'kubectl exec -i POD -- clawker-socket-server'`).

use std::process::Stdio;

use anyhow::{Context, Result};
use futures_util::future::BoxFuture;
use futures_util::{StreamExt, TryStreamExt};

use super::engine::{Engine, Exec};
use crate::bridge::ExecOutput;

/// A command that runs the container end with its stdin and stdout as the bridge.
#[derive(Debug)]
pub struct ViaTarget {
    pub argv: Vec<String>,
}

impl Engine for ViaTarget {
    fn start<'a>(&'a self, sockets: Option<&'a str>) -> BoxFuture<'a, Result<Exec>> {
        Box::pin(async move {
            let (program, args) = self.argv.split_first().context("--via names no command")?;
            // The user's own command, run like every host program (SPEC.md 11).
            let mut cmd = crate::platform::process::host_command(program);
            cmd.args(args)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .kill_on_drop(true);
            // Only named sockets travel this way (`docker exec -e CLAWKER_REMOTE_SOCKETS`
            // passes it on); otherwise the container end uses its own defaults.
            match sockets {
                Some(s) => cmd.env(clawker_protocol::env::REMOTE_SOCKETS, s),
                None => cmd.env_remove(clawker_protocol::env::REMOTE_SOCKETS),
            };
            let mut child = cmd
                .spawn()
                .with_context(|| format!("cannot run the --via command {program:?}"))?;
            let stdout = child.stdout.take().context("no stdout")?;
            let stderr = child.stderr.take().context("no stderr")?;
            let input = child.stdin.take().context("no stdin")?;
            let out = tokio_util::io::ReaderStream::with_capacity(stdout, 256 * 1024)
                .map_ok(ExecOutput::Stdout);
            let err = tokio_util::io::ReaderStream::new(stderr).map_ok(ExecOutput::Stderr);
            // Both end when the command exits.
            let output = futures_util::stream::select(out, err);
            Ok(Exec {
                output: output.boxed(),
                input: Box::pin(input),
                guard: Some(child),
            })
        })
    }

    fn alive(&self) -> BoxFuture<'_, bool> {
        Box::pin(async { true })
    }
}
