//! The steps of `cargo xtask test` besides the build: cross-target lints, the OpenAPI
//! check, schemathesis, fuzzing, and `cargo test` with its totals.

use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::scratch;
use crate::util::{cargo, on_path, root, run, rustup_target};

/// The host daemon's other platforms (SPEC.md 9): checked and linted here, run there. A
/// target rustup cannot add fails the run.
const CROSS_TARGETS: [&str; 3] = [
    "aarch64-apple-darwin",
    "x86_64-apple-darwin",
    "x86_64-pc-windows-msvc",
];

pub(crate) fn cross_lint() -> Result<()> {
    for target in CROSS_TARGETS {
        rustup_target(target)?;
        run(cargo().args([
            "clippy",
            "-p",
            "hostproxy",
            "--target",
            target,
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ]))?;
    }
    Ok(())
}

/// Writes `docs/openapi.json` from the wire types, or with `check` fails when it is stale.
pub(crate) fn openapi(check: bool) -> Result<()> {
    let path = root().join("docs").join("openapi.json");
    let doc = clawker_protocol::openapi::document();
    if check {
        let current = std::fs::read_to_string(&path).unwrap_or_default();
        if current != doc {
            bail!(
                "{} is out of date: run cargo xtask openapi and commit it",
                path.display()
            );
        }
        eprintln!("xtask: {} is up to date", path.display());
        return Ok(());
    }
    std::fs::write(&path, doc)?;
    eprintln!("xtask: wrote {}", path.display());
    Ok(())
}

/// schemathesis (PyPI, installed when missing) against a real daemon: any 5xx or any
/// response outside docs/openapi.json fails.
pub(crate) fn schemathesis() -> Result<()> {
    if !on_path("st") {
        run(Command::new("python3").args(["-m", "pip", "install", "-q", "schemathesis==4.32.5"]))?;
    }
    let dir = std::env::temp_dir().join(format!("hp-st-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let daemon =
        scratch::ScratchDaemon::start(&root().join("target/debug/hostproxy"), &dir, None, "")?;
    let (port, token) = (daemon.port, daemon.token.clone());
    // Not through run(): its echo would print the bearer token.
    eprintln!("xtask: running st run docs/openapi.json against the daemon on port {port}");
    let result = Command::new("st")
        .arg("run")
        .arg(root().join("docs/openapi.json"))
        .args(["--url", &format!("http://127.0.0.1:{port}")])
        .args(["-H", &format!("Authorization: Bearer {token}")])
        .args(["--checks", "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance"])
        .args(["--max-examples", "40", "--generation-deterministic"])
        // Egress routes carry other servers' replies (not the API's JSON), and a generated
        // host would be a real host on the network: their refusals are tested end to end.
        .args(["--exclude-tag", "egress"])
        .env("SCHEMATHESIS_TELEMETRY", "false")
        .status()
        .context("cannot run schemathesis")
        .and_then(|s| if s.success() { Ok(()) } else { bail!("schemathesis found failures (see above)") });
    drop(daemon);
    let _ = std::fs::remove_dir_all(&dir);
    result
}

const FUZZ_TARGETS: [&str; 6] = [
    "credential_codec",
    "agent_frame",
    "bridge_frame",
    "flow_window",
    "url_policy",
    "host_header",
];

/// Runs every cargo-fuzz target for `seconds` each (nightly toolchain, cargo-fuzz installed
/// when missing). A crash fails the run and leaves its input in `fuzz/artifacts/`.
pub(crate) fn fuzz(seconds: u64) -> Result<()> {
    let nightly = Command::new("rustup")
        .args(["run", "nightly", "rustc", "--version"])
        .output();
    if !nightly.is_ok_and(|o| o.status.success()) {
        bail!("fuzzing needs the nightly toolchain: rustup toolchain install nightly");
    }
    if !Command::new("cargo")
        .args(["fuzz", "--version"])
        .output()
        .is_ok_and(|o| o.status.success())
    {
        run(Command::new("cargo").args(["install", "cargo-fuzz", "--locked"]))?;
    }
    let dir = root().join("fuzz");
    run(Command::new("cargo")
        .args(["+nightly", "fuzz", "build"])
        .current_dir(&dir))?;
    for t in FUZZ_TARGETS {
        run(Command::new("cargo")
            .args([
                "+nightly",
                "fuzz",
                "run",
                t,
                "--",
                &format!("-max_total_time={seconds}"),
            ])
            .current_dir(&dir))?;
    }
    Ok(())
}

/// `cargo test --workspace`, streamed through, with the "test result:" lines summed.
pub(crate) fn cargo_test(dist_dir: &Path) -> Result<(u64, u64)> {
    use std::io::BufRead;
    let mut cmd = cargo();
    cmd.args(["test", "--workspace"])
        .env("CLAWKER_DIST_DIR", dist_dir)
        .stdout(std::process::Stdio::piped());
    eprintln!("xtask: running {cmd:?}");
    let mut child = cmd.spawn().context("cannot run cargo test")?;
    let (mut passed, mut failed) = (0u64, 0u64);
    let stdout = child.stdout.take().context("no stdout")?;
    for line in std::io::BufReader::new(stdout).lines() {
        let line = line?;
        println!("{line}");
        if let Some(rest) = line.strip_prefix("test result: ") {
            let num = |word: &str| {
                rest.split("; ")
                    .find_map(|p| {
                        p.trim_start_matches("ok. ")
                            .trim_start_matches("FAILED. ")
                            .strip_suffix(word)
                    })
                    .and_then(|n| n.trim().parse::<u64>().ok())
                    .unwrap_or(0)
            };
            passed += num(" passed");
            failed += num(" failed");
        }
    }
    let status = child.wait()?;
    if !status.success() {
        println!("{passed} passed, {failed} failed");
        bail!("cargo test failed with {status}");
    }
    Ok((passed, failed))
}
