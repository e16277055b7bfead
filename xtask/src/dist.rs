//! `cargo xtask dist`: the container tools for every architecture, their man pages and
//! completions, the tool tarballs, then the release (`release.rs`) and `SHA256SUMS`.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::artifacts::{ARCHES, Arch, MOCK, TOOLS, tar_gz};
use crate::release;
use crate::util::{cargo, root, run, rustup_target};

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
