//! `cargo xtask`: the project's own commands.
//!
//! - `cargo xtask test`: installs the Debian packages the tests need when they are missing
//!   (as root, `apt-get update` first), checks that Docker answers, then runs
//!   `cargo fmt --check`, `cargo clippy --all-targets -D warnings`, `cargo xtask dist` and
//!   every test.
//! - `cargo xtask dist`: static container tools in `target/dist/`.
//! - `cargo xtask bench`: benchmarks beside their baselines, written to `BENCHMARKS.md`.
//! - `cargo xtask fuzz [SECONDS]`: every cargo-fuzz target (CI: 20 s each).

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use anyhow::{Context, Result, bail};

mod bench;
mod exec_stream;
mod scratch;

/// The container tools: shipped static, into images we did not build.
pub(crate) const TOOLS: [&str; 5] = [
    "host-open",
    "callback-forwarder",
    "git-credential-clawker",
    "ssh-agent-proxy",
    "clawker-socket-server",
];

/// What the tests need on the machine: (program to look for, Debian package).
const PEERS: [(&str, &str); 12] = [
    ("sshd", "openssh-server"),
    ("git", "git"),
    ("ssh-agent", "openssh-client"),
    ("ssh-keygen", "openssh-client"),
    ("gpg", "gnupg"),
    ("gpg-agent", "gpg-agent"),
    ("chromium", "chromium"),
    ("socat", "socat"),
    ("curl", "curl"),
    ("jq", "jq"),
    ("busybox", "busybox-static"),
    ("docker", "docker.io"),
];

pub(crate) fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

pub(crate) fn cargo() -> Command {
    let mut c = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    c.current_dir(root());
    c
}

pub(crate) fn run(cmd: &mut Command) -> Result<()> {
    eprintln!("xtask: running {cmd:?}");
    let status = cmd
        .status()
        .with_context(|| format!("cannot run {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed with {status}");
    }
    Ok(())
}

pub(crate) fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(program).is_file()))
        .unwrap_or(false)
}

fn busybox_is_static() -> bool {
    Command::new("dpkg")
        .args(["-s", "busybox-static"])
        .output()
        .map(|o| {
            o.status.success()
                && String::from_utf8_lossy(&o.stdout).contains("Status: install ok installed")
        })
        .unwrap_or(false)
}

pub(crate) fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout.starts_with(b"0"))
        .unwrap_or(false)
}

/// Installs missing peers with apt-get when possible, then insists they are all there.
fn ensure_peers() -> Result<()> {
    let mut missing: Vec<&str> = PEERS
        .iter()
        .filter(|(prog, pkg)| {
            if *pkg == "busybox-static" {
                !busybox_is_static()
            } else {
                !on_path(prog)
            }
        })
        .map(|(_, pkg)| *pkg)
        .filter(|pkg| *pkg != "docker.io")
        .collect();
    // The container's Python in the OAuth-library tests is Debian's, bind-mounted from /usr.
    if !Path::new("/usr/bin/python3").is_file() {
        missing.push("python3");
    }
    missing.dedup();
    if !missing.is_empty() {
        if is_root() && on_path("apt-get") {
            run(Command::new("apt-get").args(["update", "-qq"]))?;
            run(Command::new("apt-get")
                .args(["install", "-y", "-qq", "--no-install-recommends"])
                .args(&missing)
                .env("DEBIAN_FRONTEND", "noninteractive"))?;
        } else {
            bail!(
                "missing test peers; install them with: sudo apt-get install {}",
                missing.join(" ")
            );
        }
    }
    let still: Vec<&str> = PEERS
        .iter()
        .filter(|(prog, _)| !on_path(prog))
        .map(|(prog, _)| *prog)
        .collect();
    if !still.is_empty() {
        bail!("still missing after install: {}", still.join(", "));
    }
    let docker = Command::new("docker")
        .args(["info", "--format", "{{.ServerVersion}}"])
        .output();
    match docker {
        Ok(o) if o.status.success() => {}
        _ => bail!(
            "the Docker engine does not answer (`docker info` failed): start it; the end-to-end tests need it"
        ),
    }
    Ok(())
}

/// The static target for the container tools: musl (static-pie, 0.7–1.4 MiB a tool) when
/// rustup has or can fetch it, else static glibc (1.5–2.3 MiB a tool, same behaviour), with a
/// warning.
fn dist_target() -> &'static str {
    const MUSL: &str = "x86_64-unknown-linux-musl";
    let installed = || {
        Command::new("rustup")
            .args(["target", "list", "--installed"])
            .output()
            .is_ok_and(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .lines()
                    .any(|l| l == MUSL)
            })
    };
    if installed()
        || Command::new("rustup")
            .args(["target", "add", MUSL])
            .status()
            .is_ok_and(|s| s.success())
    {
        return MUSL;
    }
    eprintln!(
        "xtask: WARNING: `rustup target add {MUSL}` failed; building the tools against static glibc instead (larger, same behaviour)"
    );
    "x86_64-unknown-linux-gnu"
}

/// Builds the container tools static and copies them to `target/dist/`.
pub(crate) fn dist() -> Result<PathBuf> {
    let target = dist_target();
    let mut cmd = cargo();
    cmd.args(["build", "--profile", "dist", "--target", target])
        .env("RUSTFLAGS", "-C target-feature=+crt-static");
    for t in TOOLS {
        cmd.args(["--bin", t]);
    }
    run(&mut cmd)?;
    let out = root().join("target").join("dist");
    std::fs::create_dir_all(&out)?;
    for t in TOOLS {
        let from = root().join("target").join(target).join("dist").join(t);
        let to = out.join(t);
        std::fs::copy(&from, &to).with_context(|| format!("cannot copy {}", from.display()))?;
        let size = std::fs::metadata(&to)?.len();
        eprintln!("xtask: {} {:.2} MiB", to.display(), size as f64 / 1048576.0);
    }
    docs(&out)?;
    tarball(&out)?;
    Ok(out)
}

/// Man pages and shell completions for every binary with a clap command line: the tools'
/// from their `Args`, the daemon's from its own binary (`hostproxy man`, `hostproxy
/// completions SHELL`), so xtask does not link the daemon's command line.
fn docs(out: &Path) -> Result<()> {
    use clap::CommandFactory;
    let commands: [(&str, clap::Command); 4] = [
        ("host-open", host_open::Args::command()),
        ("callback-forwarder", callback_forwarder::Args::command()),
        (
            "git-credential-clawker",
            git_credential_clawker::Args::command(),
        ),
        ("ssh-agent-proxy", ssh_agent_proxy::Args::command()),
    ];
    const SHELLS: [clap_complete::Shell; 3] = [
        clap_complete::Shell::Bash,
        clap_complete::Shell::Zsh,
        clap_complete::Shell::Fish,
    ];
    let man = out.join("man");
    std::fs::create_dir_all(&man)?;
    for (name, cmd) in commands {
        let mut page = Vec::new();
        clap_mangen::Man::new(cmd.clone()).render(&mut page)?;
        std::fs::write(man.join(format!("{name}.1")), page)?;
        for shell in SHELLS {
            let dir = out.join("completions").join(shell.to_string());
            std::fs::create_dir_all(&dir)?;
            clap_complete::generate_to(shell, &mut cmd.clone(), name, &dir)?;
        }
    }
    run(cargo().args(["build", "-q", "-p", "hostproxy"]))?;
    let daemon = root().join("target/debug/hostproxy");
    let output_of = |args: &[&str]| -> Result<Vec<u8>> {
        let o = Command::new(&daemon)
            .args(args)
            .output()
            .with_context(|| format!("cannot run {}", daemon.display()))?;
        if !o.status.success() {
            bail!("hostproxy {} failed with {}", args.join(" "), o.status);
        }
        Ok(o.stdout)
    };
    std::fs::write(man.join("hostproxy.1"), output_of(&["man"])?)?;
    for shell in SHELLS {
        let file = match shell {
            clap_complete::Shell::Bash => "hostproxy.bash".to_string(),
            clap_complete::Shell::Zsh => "_hostproxy".to_string(),
            _ => format!("hostproxy.{shell}"),
        };
        let dir = out.join("completions").join(shell.to_string());
        std::fs::write(
            dir.join(file),
            output_of(&["completions", &shell.to_string()])?,
        )?;
    }
    Ok(())
}

/// `hostproxy-tools-VERSION-x86_64-linux.tar.gz` with the static tools, man pages and
/// completions, plus `SHA256SUMS` for every file in it and for the tarball.
fn tarball(out: &Path) -> Result<()> {
    let version = env!("CARGO_PKG_VERSION");
    let name = format!("hostproxy-tools-{version}-x86_64-linux.tar.gz");
    let mut files: Vec<String> = TOOLS.iter().map(|t| (*t).to_string()).collect();
    files.extend(["man".to_string(), "completions".to_string()]);
    run(Command::new("tar")
        .current_dir(out)
        .args([
            "--sort=name",
            "--owner=0",
            "--group=0",
            "--numeric-owner",
            "-czf",
            &name,
        ])
        .args(&files))?;
    let mut sums = Command::new("sha256sum");
    sums.current_dir(out).args(TOOLS).arg(&name);
    let text = sums.output().context("cannot run sha256sum")?;
    if !text.status.success() {
        bail!("sha256sum failed");
    }
    std::fs::write(out.join("SHA256SUMS"), text.stdout)?;
    eprintln!("xtask: {}", out.join(&name).display());
    Ok(())
}

/// Writes `docs/openapi.json` from the wire types, or with `check` fails when it is stale.
fn openapi(check: bool) -> Result<()> {
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
fn schemathesis() -> Result<()> {
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
        .env("SCHEMATHESIS_TELEMETRY", "false")
        .status()
        .context("cannot run schemathesis")
        .and_then(|s| if s.success() { Ok(()) } else { bail!("schemathesis found failures (see above)") });
    drop(daemon);
    let _ = std::fs::remove_dir_all(&dir);
    result
}

const FUZZ_TARGETS: [&str; 5] = [
    "credential_codec",
    "agent_frame",
    "bridge_frame",
    "url_policy",
    "host_header",
];

/// Runs every cargo-fuzz target for `seconds` each (nightly toolchain, cargo-fuzz installed
/// when missing). A crash fails the run and leaves its input in `fuzz/artifacts/`.
fn fuzz(seconds: u64) -> Result<()> {
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
fn cargo_test(dist_dir: &Path) -> Result<(u64, u64)> {
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

fn test() -> Result<()> {
    ensure_peers()?;
    run(cargo().args(["fmt", "--all", "--", "--check"]))?;
    run(cargo().args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]))?;
    openapi(true)?;
    let dist_dir = dist()?;
    let (passed, failed) = cargo_test(&dist_dir)?;
    schemathesis()?;
    fuzz(20)?;
    // The suite's totals, last, in the plain form CI reads.
    println!("{passed} passed, {failed} failed");
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("test") => test(),
        Some("dist") => dist().map(|_| ()),
        Some("bench") => bench::bench(),
        Some("openapi") => openapi(args.get(1).is_some_and(|a| a == "--check")),
        Some("schemathesis") => schemathesis(),
        Some("fuzz") => match args.get(1).map(|s| s.parse::<u64>()) {
            None => fuzz(60),
            Some(Ok(s)) => fuzz(s),
            Some(Err(_)) => Err(anyhow::anyhow!("usage: cargo xtask fuzz [SECONDS]")),
        },
        _ => {
            eprintln!(
                "usage: cargo xtask test | dist | bench | fuzz [SECONDS] | openapi [--check] | schemathesis"
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
