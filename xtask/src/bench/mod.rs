//! `cargo xtask bench`: every hot path beside its baseline, alternating in one run, release
//! builds; medians with min–max; writes `BENCHMARKS.md`. Prints numbers, asserts nothing.
//!
//! The lanes, each a module over the same [`measure::Bench`] (the run and its rows):
//! `host` (the TCP lane and the bridge), `tunnel`, `egress`, `load`; `probes` are the
//! clients and servers they drive, `report` writes the table and `chart` its picture.
//! Nothing here imports a lane but this file.

use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};

mod chart;
mod egress;
mod exec_stream;
mod host;
mod load;
mod measure;
mod probes;
mod report;
mod tunnel;

use crate::scratch::{Killer, ScratchDaemon};
use crate::util::{cargo, is_root, on_path, root, run};
use host::Host;
use measure::Bench;
use probes::{rss_kib, tempfile_dir, wait_path};

/// Runs the bench; `smoke` runs each lane once and writes `target/bench-smoke.md`.
pub fn bench(smoke: bool) -> Result<()> {
    for (prog, pkg) in [
        ("wrk", "wrk"),
        ("socat", "socat"),
        ("curl", "curl"),
        ("jq", "jq"),
        ("ssh-agent", "openssh-client"),
        ("gpg", "gnupg"),
        ("docker", "docker.io"),
    ] {
        if !on_path(prog) {
            if is_root() {
                run(Command::new("apt-get")
                    .args(["install", "-y", "-qq", pkg])
                    .env("DEBIAN_FRONTEND", "noninteractive"))?;
            } else {
                bail!("{prog} is needed: apt-get install {pkg}");
            }
        }
    }
    run(cargo().args(["build", "--release", "-p", "hostproxy"]))?;
    let dist = crate::dist::dist(false)?;
    let hostproxy = root().join("target/release/hostproxy");
    let dir = tempfile_dir()?;
    let mut bench = Bench::new(smoke);

    // Host side: an ssh-agent with a key, then the daemon with a scratch git.
    let agent_sock = dir.join("agent.sock");
    let agent = Killer(
        Command::new("ssh-agent")
            .arg("-D")
            .arg("-a")
            .arg(&agent_sock)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?,
    );
    wait_path(&agent_sock)?;
    run(Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(dir.join("id")))?;
    run(Command::new("ssh-add")
        .arg("-q")
        .arg(dir.join("id"))
        .env("SSH_AUTH_SOCK", &agent_sock)
        .stderr(Stdio::null()))?;
    let state = dir.join("state");
    let daemon = ScratchDaemon::start(
        &hostproxy,
        &dir,
        Some(&agent_sock),
        &format!(
            "[callback]\nmax_sessions = 64\n\n# The tunnel's bulk lane: the host grants the sink (a label only narrows).\n[attach]\nscopes = [{}, \"socket:sink\"]\n\n[[bridge.sockets]]\nname = \"sink\"\npath = \"{}\"\n",
            clawker_protocol::tunnel::DEFAULT_SCOPES
                .iter()
                .map(|s| format!("{s:?}"))
                .collect::<Vec<_>>()
                .join(", "),
            dir.join("sink.sock").display()
        ),
    )?;
    let (port, token) = (daemon.port, daemon.token.clone());
    let host_home = daemon.host_home.clone();
    std::thread::sleep(Duration::from_millis(300));
    let idle_rss = rss_kib(daemon.process.0.id())?;
    let base = format!("http://127.0.0.1:{port}");
    let tool_env = [
        ("CLAWKER_HOST_PROXY", base.clone()),
        ("CLAWKER_HOST_PROXY_TOKEN", token.clone()),
    ];
    let h = Host {
        dir: dir.clone(),
        dist,
        hostproxy,
        agent_sock,
        state,
        port,
        token,
        base,
        host_home,
        tool_env,
        idle_rss,
        daemon,
    };

    host::credential(&h, &mut bench)?;
    host::tool_start(&h, &mut bench)?;
    let bridge = host::signing(&h, &mut bench)?;
    host::bulk(&h, &bridge, &mut bench)?;
    host::oauth(&h, &mut bench)?;

    // The tunnel's lanes (Benchmarks v2).
    tunnel::lanes(
        &tunnel::Ctx {
            hostproxy: &h.hostproxy,
            dist: &h.dist,
            dir: &h.dir,
            image: &bridge.image,
            agent_sock: &h.agent_sock,
            blob: &bridge.blob,
            state: &h.state,
            label: &h.daemon.attach_label,
            daemon_pid: h.daemon.process.0.id(),
            base: &h.base,
            token: &h.token,
            host_git: (&h.host_home, &h.dir.join("host-gitconfig")),
            sink_total: bridge.sink_total,
        },
        &mut bench,
    )
    .context("the tunnel lanes")?;
    drop(bridge);

    // Egress (SPEC.md 13): git and API upstreams through the daemon, beside direct.
    egress::lanes(&h.hostproxy, &h.dir, &mut bench).context("the egress lanes")?;

    load::lanes(&h, &mut bench)?;
    drop(agent);

    report::write(&bench)?;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
