//! `hostproxy run -- DOCKER-ARGS…` (SPEC.md 12): `docker create` with the wiring of
//! `run-flags`, the tools copied in through the engine's API when they cannot be mounted
//! (a remote engine, `--no-mount`), then `docker start`: the container's first command
//! finds the tools on any engine. The daemon attaches it when it starts, as any labelled
//! container.
//!
//! The docker CLI creates and starts the container, so every `docker run` option (and the
//! CLI's own context and config) works as the user knows it; only the copy goes through
//! the API.

use std::process::{Command, ExitCode, Stdio};

use anyhow::{Context, Result, bail};
use clap::Args;
use hostproxy::state::StateDir;

use super::run_flags::{WireArgs, wire};

#[derive(Debug, Clone, Args)]
#[command(after_help = "Example:\n  hostproxy run -- --rm -it --network none debian:stable bash")]
pub struct RunArgs {
    #[command(flatten)]
    pub wire: WireArgs,
    /// Start it in the background and print its id (docker run -d; give it before the --:
    /// docker create takes no -d).
    #[arg(short, long)]
    pub detach: bool,
    /// What `docker run` would take: options, the image, its command and arguments.
    #[arg(last = true, required = true, value_name = "DOCKER-RUN-ARGS")]
    pub docker_args: Vec<String>,
}

/// `docker` from `PATH`: the user's CLI, its context and config.
fn docker() -> Command {
    Command::new("docker")
}

pub fn run(args: RunArgs, settings: &hostproxy::config::Settings) -> Result<ExitCode> {
    let w = wire(&args.wire, settings)?;
    let mounted = !w.mounts.is_empty();
    let out = docker()
        .arg("create")
        .args(w.args())
        .args(&args.docker_args)
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .context("cannot run docker (is the docker CLI on PATH?)")?;
    if !out.status.success() {
        bail!("docker create failed ({})", out.status);
    }
    let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if id.is_empty() || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        bail!("docker create printed no container id: {id:?}");
    }
    if !mounted && let Err(e) = copy(&id, settings) {
        // Not started: nothing of it is left behind.
        let _ = docker()
            .args(["rm", "-f", &id])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        return Err(e);
    }
    if args.detach {
        let status = docker()
            .args(["start", &id])
            .stdout(Stdio::null())
            .status()
            .context("cannot run docker start")?;
        if !status.success() {
            bail!("docker start failed ({status})");
        }
        println!("{id}");
        return Ok(ExitCode::SUCCESS);
    }
    // Attached as `docker run` is: its output, its input, its exit status.
    let status = docker()
        .args(["start", "--attach", "--interactive", &id])
        .status()
        .context("cannot run docker start")?;
    Ok(match status.code() {
        Some(c) => ExitCode::from(u8::try_from(c).unwrap_or(1)),
        None => ExitCode::FAILURE,
    })
}

/// The tools into the created container, through the engine's API.
fn copy(id: &str, settings: &hostproxy::config::Settings) -> Result<()> {
    let state = StateDir::from_env()?;
    let tools = hostproxy::tunnel::Tools::new(settings.attach.tools_dir.clone())
        .with_embedded(state.tools_dir());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let docker = hostproxy::docker::connect()?;
        hostproxy::tunnel::engine::copy_before_start(&docker, id, &tools).await
    })
    .context("the tools could not be copied into the container before it started")
}
