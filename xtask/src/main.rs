//! `cargo xtask`: the project's own commands.
//!
//! - `cargo xtask serve [ARGS…]`: `dist`, then the `hostproxy` it built (the container
//!   tools inside) runs `serve ARGS…`.
//! - `cargo xtask test`: installs the Debian packages the tests need when they are missing
//!   (as root, `apt-get update` first), checks that Docker answers, then runs
//!   `cargo fmt --check`, `cargo clippy --all-targets -D warnings`, `cargo xtask dist` and
//!   every test.
//! - `cargo xtask dist`: static container tools in `target/dist/`.
//! - `cargo xtask bench`: benchmarks beside their baselines, written to `BENCHMARKS.md`.
//! - `cargo xtask fuzz [SECONDS]`: every cargo-fuzz target (CI: 20 s each).

use std::process::{Command, ExitCode};

use anyhow::{Context, Result};

mod artifacts;
mod bench;
mod checks;
mod deps;
mod dist;
mod peers;
mod release;
mod scratch;
mod util;

use artifacts::ARCHES;
use util::{cargo, root, run};

fn test() -> Result<()> {
    peers::ensure()?;
    run(cargo().args(["fmt", "--all", "--", "--check"]))?;
    deps::check(&root())?;
    run(cargo().args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]))?;
    checks::cross_lint()?;
    checks::openapi(true)?;
    let dist_dir = dist::dist(false)?;
    let (passed, failed) = checks::cargo_test(&dist_dir)?;
    checks::schemathesis()?;
    // Every bench lane once (no targets asserted, no report kept): the bench cannot rot.
    bench::bench(true)?;
    checks::fuzz(20)?;
    // The suite's totals, last, in the plain form CI reads.
    println!("{passed} passed, {failed} failed");
    Ok(())
}

/// The README's first command: the release build (`dist`: the container tools, and a
/// `hostproxy` for this host that carries them), then that `hostproxy serve ARGS…` in this
/// process's place — a daemon that attaches a stock image, from a fresh clone.
fn serve(args: &[String]) -> Result<()> {
    use std::os::unix::process::CommandExt;
    dist::dist(false)?;
    let arch = ARCHES
        .iter()
        .find(|a| a.name == std::env::consts::ARCH)
        .context("no release target for this host's architecture")?;
    let daemon = root()
        .join("target")
        .join(arch.target)
        .join("release")
        .join("hostproxy");
    eprintln!("xtask: {} serve {}", daemon.display(), args.join(" "));
    let err = Command::new(&daemon).arg("serve").args(args).exec();
    Err(err).with_context(|| format!("cannot run {}", daemon.display()))
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("test") => test(),
        Some("dist") => dist::dist(args.get(1).is_some_and(|a| a == "--all")).map(|_| ()),
        Some("serve") => serve(&args[1..]),
        Some("bench") => bench::bench(args.get(1).is_some_and(|a| a == "--smoke")),
        Some("openapi") => checks::openapi(args.get(1).is_some_and(|a| a == "--check")),
        Some("deps") => deps::check(&root()),
        Some("schemathesis") => checks::schemathesis(),
        Some("fuzz") => match args.get(1).map(|s| s.parse::<u64>()) {
            None => checks::fuzz(60),
            Some(Ok(s)) => checks::fuzz(s),
            Some(Err(_)) => Err(anyhow::anyhow!("usage: cargo xtask fuzz [SECONDS]")),
        },
        _ => {
            eprintln!(
                "usage: cargo xtask serve [ARGS…] | test | dist [--all] | bench [--smoke] | fuzz [SECONDS] | openapi [--check] | deps | schemathesis"
            );
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e:#}");
            ExitCode::FAILURE
        }
    }
}
