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

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use anyhow::{Context, Result, bail};

mod bench;
mod bench_egress;
mod bench_tunnel;
mod chart;
mod deps;
mod exec_stream;
mod release;
mod scratch;

/// The container tools: shipped static, into images we did not build.
pub(crate) const TOOLS: [&str; 7] = [
    "host-open",
    "docker-credential-clawker",
    "host-notify",
    "callback-forwarder",
    "git-credential-clawker",
    "ssh-agent-proxy",
    "clawker-socket-server",
];

/// Built static for both architectures beside the container tools and shipped in the same
/// tarballs, but not copied into images: the fake daemon for other people's CI (docs/ci.md).
pub(crate) const MOCK: &str = "mock-proxy";

/// What the tests need on the machine: (program to look for, Debian package).
const PEERS: [(&str, &str); 20] = [
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
    ("qemu-aarch64-static", "qemu-user-static"),
    ("wrk", "wrk"),
    ("docker", "docker.io"),
    ("skopeo", "skopeo"),
    ("docker-registry", "docker-registry"),
    ("htpasswd", "apache2-utils"),
    ("tmux", "tmux"),
    ("lighttpd", "lighttpd-mod-openssl"),
    ("openssl", "openssl"),
];

/// Debian's arm64 `busybox-static`, for the arm64 container image of the e2e suite: its
/// binary out of the .deb (`dpkg --add-architecture arm64`, `apt-get download`).
fn arm64_busybox() -> Result<()> {
    let dest = root().join("target/peers/arm64/busybox");
    if dest.is_file() {
        return Ok(());
    }
    if !is_root() {
        bail!(
            "the arm64 tests need Debian's arm64 busybox: as root, dpkg --add-architecture arm64 && apt-get update && apt-get download busybox-static:arm64, then put its bin/busybox at {}",
            dest.display()
        );
    }
    let listed = Command::new("dpkg")
        .arg("--print-foreign-architectures")
        .output()
        .is_ok_and(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .any(|l| l == "arm64")
        });
    if !listed {
        run(Command::new("dpkg").args(["--add-architecture", "arm64"]))?;
        run(Command::new("apt-get").args(["update", "-qq"]))?;
    }
    let dir = root().join("target/peers/arm64");
    std::fs::create_dir_all(&dir)?;
    let deb_dir = tempdir_in(&dir)?;
    // apt's sandbox user cannot write here; the download itself is fine as root.
    run(Command::new("apt-get")
        .args([
            "download",
            "-q",
            "-o",
            "APT::Sandbox::User=root",
            "busybox-static:arm64",
        ])
        .current_dir(&deb_dir))?;
    let deb = std::fs::read_dir(&deb_dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|x| x == "deb"))
        .context("apt-get download left no .deb")?;
    let x = deb_dir.join("x");
    run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&x))?;
    std::fs::copy(x.join("bin/busybox"), &dest)?;
    let _ = std::fs::remove_dir_all(&deb_dir);
    Ok(())
}

fn tempdir_in(dir: &Path) -> Result<PathBuf> {
    let d = dir.join(format!("dl-{}", std::process::id()));
    std::fs::create_dir_all(&d)?;
    Ok(d)
}

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
            } else if *pkg == "lighttpd-mod-openssl" {
                // lighttpd's TLS is a module of its own package.
                !Path::new("/usr/lib/lighttpd/mod_openssl.so").is_file()
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
    arm64_busybox()?;
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

/// An architecture the container tools are built for, and the musl target that builds them.
#[derive(Clone, Copy)]
pub(crate) struct Arch {
    /// `uname -m` / the directory name under `target/dist/` (SPEC.md 6.1, 9).
    pub(crate) name: &'static str,
    pub(crate) target: &'static str,
}

pub(crate) const ARCHES: [Arch; 2] = [
    Arch {
        name: "x86_64",
        target: "x86_64-unknown-linux-musl",
    },
    Arch {
        name: "aarch64",
        target: "aarch64-unknown-linux-musl",
    },
];

pub(crate) fn rustup_target(target: &str) -> Result<()> {
    let installed = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output()
        .is_ok_and(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .any(|l| l == target)
        });
    if !installed {
        run(Command::new("rustup").args(["target", "add", target])).with_context(|| {
            format!("the container tools need the {target} target: rustup target add {target}")
        })?;
    }
    Ok(())
}

/// Builds the container tools static for every architecture (musl, linked by the toolchain's
/// own `rust-lld`, so no cross C toolchain is needed) into `target/dist/<arch>/`, with the
/// host architecture's also flat in `target/dist/`; man pages, completions, a tarball per
/// architecture; then the release (`release.rs`): a static `hostproxy` carrying the tools,
/// in an archive per Linux target (`all`: both; else the host's, which is what the tests
/// install), `install.sh`, and `SHA256SUMS` of everything.
pub(crate) fn dist(all: bool) -> Result<PathBuf> {
    let out = root().join("target").join("dist");
    std::fs::create_dir_all(&out)?;
    docs(&out)?;
    let host = std::env::consts::ARCH;
    for arch in ARCHES {
        rustup_target(arch.target)?;
        let mut cmd = cargo();
        cmd.args(["build", "--profile", "dist", "--target", arch.target])
            .env(
                format!(
                    "CARGO_TARGET_{}_RUSTFLAGS",
                    arch.target.to_uppercase().replace('-', "_")
                ),
                "-C target-feature=+crt-static -C linker=rust-lld",
            );
        // Each tool's own package (directory = package = binary), so only their features
        // are resolved: not the daemon's (its egress TLS needs a C compiler per target).
        for t in TOOLS.iter().chain([&MOCK]) {
            cmd.args(["-p", t, "--bin", t]);
        }
        run(&mut cmd)?;
        let dir = out.join(arch.name);
        std::fs::create_dir_all(&dir)?;
        for t in TOOLS.iter().chain([&MOCK]) {
            let from = root().join("target").join(arch.target).join("dist").join(t);
            std::fs::copy(&from, dir.join(t))
                .with_context(|| format!("cannot copy {}", from.display()))?;
            let size = std::fs::metadata(dir.join(t))?.len();
            eprintln!(
                "xtask: {}/{t} {:.2} MiB",
                arch.name,
                size as f64 / 1048576.0
            );
            if arch.name == host {
                std::fs::copy(&from, out.join(t))?;
            }
        }
        tarball(&out, arch)?;
    }
    // Docker's names for the architectures, for `COPY ${TARGETARCH}/…` in a Dockerfile.
    for (docker, arch) in [("amd64", "x86_64"), ("arm64", "aarch64")] {
        let link = out.join(docker);
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(arch, &link)?;
    }
    let embedded = release::embedded_tools(&out)?;
    let mut archives = Vec::new();
    for arch in ARCHES.into_iter().filter(|a| all || a.name == host) {
        archives.push(release::daemon(&out, arch, &embedded)?);
    }
    release::install_script(&out)?;
    release::devcontainer_feature(&out)?;
    sums(&out, &archives)?;
    release::homebrew_formula(&out, &archives)?;
    Ok(out)
}

/// Man pages and shell completions for every binary with a clap command line: the tools'
/// from their `Args`, the daemon's from its own binary (`hostproxy man`, `hostproxy
/// completions SHELL`), so xtask does not link the daemon's command line.
fn docs(out: &Path) -> Result<()> {
    use clap::CommandFactory;
    let commands: [(&str, clap::Command); 6] = [
        ("mock-proxy", mock_proxy::cli::Args::command()),
        ("host-notify", host_notify::Args::command()),
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
    // hostproxy.1 and a page per subcommand (hostproxy-serve.1, …), which it refers to.
    output_of(&["man", "--dir", &man.display().to_string()])?;
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

/// `hostproxy-tools-VERSION-<arch>-linux.tar.gz`: that architecture's static tools, the
/// man pages and completions.
fn tarball(out: &Path, arch: Arch) -> Result<()> {
    let version = env!("CARGO_PKG_VERSION");
    let name = format!("hostproxy-tools-{version}-{}-linux.tar.gz", arch.name);
    let mut files: Vec<String> = TOOLS
        .iter()
        .chain([&MOCK])
        .map(|t| format!("{}/{t}", arch.name))
        .collect();
    files.extend(["man".to_string(), "completions".to_string()]);
    tar_gz(out, &out.join(&name), &files)?;
    eprintln!("xtask: {}", out.join(&name).display());
    Ok(())
}

/// `archive` (a .tar.gz) of `files` under `dir`: sorted, owned by root, so the same inputs
/// give the same archive.
pub(crate) fn tar_gz(dir: &Path, archive: &Path, files: &[String]) -> Result<()> {
    run(Command::new("tar")
        .current_dir(dir)
        .args([
            "--sort=name",
            "--owner=0",
            "--group=0",
            "--numeric-owner",
            "-czf",
        ])
        .arg(archive)
        .args(files))
}

/// `SHA256SUMS` for every tool of every architecture, every tarball and the release
/// archives.
fn sums(out: &Path, archives: &[String]) -> Result<()> {
    let mut files: Vec<String> = Vec::new();
    for arch in ARCHES {
        files.extend(
            TOOLS
                .iter()
                .chain([&MOCK])
                .map(|t| format!("{}/{t}", arch.name)),
        );
    }
    let version = env!("CARGO_PKG_VERSION");
    files.extend(
        ARCHES
            .iter()
            .map(|a| format!("hostproxy-tools-{version}-{}-linux.tar.gz", a.name)),
    );
    files.extend(archives.iter().cloned());
    let text = Command::new("sha256sum")
        .current_dir(out)
        .args(&files)
        .output()
        .context("cannot run sha256sum")?;
    if !text.status.success() {
        bail!("sha256sum failed");
    }
    std::fs::write(out.join("SHA256SUMS"), text.stdout)?;
    Ok(())
}

/// The host daemon's other platforms (SPEC.md 9): checked and linted here, run there. A
/// target rustup cannot add fails the run.
const CROSS_TARGETS: [&str; 3] = [
    "aarch64-apple-darwin",
    "x86_64-apple-darwin",
    "x86_64-pc-windows-msvc",
];

fn cross_lint() -> Result<()> {
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
    deps::check(&root())?;
    run(cargo().args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]))?;
    cross_lint()?;
    openapi(true)?;
    let dist_dir = dist(false)?;
    let (passed, failed) = cargo_test(&dist_dir)?;
    schemathesis()?;
    // Every bench lane once (no targets asserted, no report kept): the bench cannot rot.
    bench::bench_with(true)?;
    fuzz(20)?;
    // The suite's totals, last, in the plain form CI reads.
    println!("{passed} passed, {failed} failed");
    Ok(())
}

/// The README's first command: the release build (`dist`: the container tools, and a
/// `hostproxy` for this host that carries them), then that `hostproxy serve ARGS…` in this
/// process's place — a daemon that attaches a stock image, from a fresh clone.
fn serve(args: &[String]) -> Result<()> {
    use std::os::unix::process::CommandExt;
    dist(false)?;
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
        Some("dist") => dist(args.get(1).is_some_and(|a| a == "--all")).map(|_| ()),
        Some("serve") => serve(&args[1..]),
        Some("bench") => bench::bench_with(args.get(1).is_some_and(|a| a == "--smoke")),
        Some("openapi") => openapi(args.get(1).is_some_and(|a| a == "--check")),
        Some("deps") => deps::check(&root()),
        Some("schemathesis") => schemathesis(),
        Some("fuzz") => match args.get(1).map(|s| s.parse::<u64>()) {
            None => fuzz(60),
            Some(Ok(s)) => fuzz(s),
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
