//! Harness for the end-to-end suite: locate (and build) the real binaries, run the real
//! daemon in a scratch state dir, start real peers (ssh-agent, gpg, Chromium, Docker).
//!
//! A peer that is missing fails the test with what to install; nothing is skipped.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod agents;
pub mod api_upstream;
mod daemon;
pub mod git_server;
mod http;
mod images;

pub use agents::*;
pub use daemon::*;
pub use http::*;
pub use images::*;

use std::io::{BufRead as _, BufReader, Write as _};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"))
}

/// Builds every binary of the workspace once per test process (`CARGO_BIN_EXE_*` only
/// exists inside one package) and returns the directory holding them.
pub fn bin_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "--workspace", "--bins", "--quiet"])
            .current_dir(workspace_root())
            .status()
            .expect("cannot run cargo build");
        assert!(status.success(), "cargo build --workspace --bins failed");
        target_dir().join("debug")
    })
}

pub fn bin(name: &str) -> PathBuf {
    let p = bin_dir().join(name);
    assert!(p.is_file(), "{} was not built", p.display());
    p
}

/// The static container tools `cargo xtask dist` builds (one list, the protocol's).
pub use clawker_protocol::tunnel::CONTAINER_TOOLS as TOOLS;

/// The static container tools (`cargo xtask dist`), built on first use.
pub fn dist_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        if let Some(d) = std::env::var_os("CLAWKER_DIST_DIR") {
            return PathBuf::from(d);
        }
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let status = Command::new(cargo)
            .args(["run", "--quiet", "-p", "xtask", "--", "dist"])
            .current_dir(workspace_root())
            .status()
            .expect("cannot run cargo xtask dist");
        assert!(status.success(), "cargo xtask dist failed");
        target_dir().join("dist")
    })
}

/// A stand-in for a host program (launcher, notifier): appends `BEGIN`, each argument on its
/// own line, and `END` to `log` per call.
pub fn recording_script(path: &Path, log: &Path) {
    write_script(
        path,
        &format!(
            "{{ echo BEGIN; for a in \"$@\"; do echo \"$a\"; done; echo END; }} >> {}",
            log.display()
        ),
    );
}

pub fn write_script(path: &Path, body: &str) {
    std::fs::write(path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// Fails loudly, naming the package, when a peer is missing.
pub fn require(program: &str, package: &str) -> PathBuf {
    std::env::var_os("PATH")
        .and_then(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join(program))
                .find(|p| p.is_file())
        })
        .unwrap_or_else(|| panic!("{program} is required for this test: apt-get install {package}"))
}

/// Docker must answer; there is no skipping.
pub fn require_docker() {
    require("docker", "docker.io");
    let ok = Command::new("docker")
        .args(["info", "--format", "{{.ServerVersion}}"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "the Docker engine is required for this test and does not answer: start dockerd"
    );
}

/// Asks `probe` every 20 ms until it answers `Some`, for `timeout` at most: that answer, or
/// `None` when time ran out (the caller says what it waited for). The one way the suites
/// wait for something to happen, instead of a fixed sleep.
pub fn eventually<T>(timeout: Duration, mut probe: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = probe() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits (10 s at most) until something listens on loopback `port`: a test server of ours
/// (`what` names it in the failure).
pub fn wait_port(port: u16, what: &str) {
    let up = eventually(Duration::from_secs(10), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).ok()
    });
    assert!(up.is_some(), "{what} did not listen on port {port}");
}

/// A container name unique to this test run: `hp-TAG-PORT` (a free port is unique enough).
pub fn name(tag: &str) -> String {
    format!("hp-{tag}-{}", free_port())
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A tool command with a clean environment (PATH kept, our binaries first) plus `env`.
pub fn tool(name: &str, env: &[(String, String)]) -> Command {
    command(bin(name), env)
}

/// Any program with the same clean environment as [`tool`].
pub fn command(program: impl AsRef<std::ffi::OsStr>, env: &[(String, String)]) -> Command {
    let mut c = Command::new(program);
    c.env_clear()
        .env(
            "PATH",
            format!(
                "{}:{}",
                bin_dir().display(),
                std::env::var("PATH").unwrap_or_default()
            ),
        )
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    c
}

/// Runs a command with `input` on stdin: (exit code, stdout, stderr).
pub fn run_with_input(cmd: &mut Command, input: &str) -> (i32, String, String) {
    use std::io::Write;
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
