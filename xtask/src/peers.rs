//! The real programs the tests run against (SPEC.md: real peers, never stand-ins):
//! installed with apt-get when missing, then insisted on.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::util::{is_root, on_path, root, run};

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

/// Installs missing peers with apt-get when possible, then insists they are all there.
pub(crate) fn ensure() -> Result<()> {
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
