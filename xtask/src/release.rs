//! The release side of `cargo xtask dist` (SPEC.md 12): the container tools of both
//! architectures packed into one zstd archive, a static `hostproxy` for each Linux target
//! that carries it (`HOSTPROXY_EMBED_TOOLS`, read by `hostproxy/build.rs`), an archive per
//! target with the man pages and completions, and `install.sh`.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result};

use crate::artifacts::{ARCHES, Arch, TOOLS, tar_gz};
use crate::util::{cargo, on_path, root, run, rustup_target};

/// The archive the daemon embeds: `<arch>/<tool>` for every architecture, zstd level 19
/// with a long window (the tools share most of their code, across tools and arches alike:
/// 13 MiB of tools pack to about 2 MiB).
pub(crate) fn embedded_tools(out: &Path) -> Result<PathBuf> {
    let mut tar = tar::Builder::new(Vec::new());
    for arch in ARCHES {
        for tool in TOOLS {
            let path = out.join(arch.name).join(tool);
            let bytes =
                std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(tar::EntryType::Regular);
            h.set_mode(0o555);
            h.set_size(bytes.len() as u64);
            h.set_mtime(0);
            tar.append_data(&mut h, format!("{}/{tool}", arch.name), bytes.as_slice())?;
        }
    }
    let tar = tar.into_inner()?;
    let mut enc = zstd::stream::Encoder::new(Vec::new(), 19)?;
    enc.long_distance_matching(true)?;
    enc.window_log(24)?;
    std::io::copy(&mut tar.as_slice(), &mut enc)?;
    let zst = enc.finish()?;
    let dest = out.join("embedded-tools.tar.zst");
    // Unchanged bytes keep their mtime: `hostproxy/build.rs` reruns (and the daemon is
    // compiled again) only when the tools did change.
    if std::fs::read(&dest).ok().as_deref() != Some(zst.as_slice()) {
        std::fs::write(&dest, &zst)?;
    }
    eprintln!(
        "xtask: embedded tools {:.2} MiB → {:.2} MiB",
        tar.len() as f64 / 1048576.0,
        zst.len() as f64 / 1048576.0
    );
    Ok(dest)
}

/// `hostproxy` for `arch`'s static musl target, carrying `tools`, in a release archive
/// `hostproxy-VERSION-TARGET.tar.gz` (`hostproxy-VERSION-TARGET/{hostproxy,man,completions}`).
pub(crate) fn daemon(out: &Path, arch: Arch, tools: &Path) -> Result<String> {
    rustup_target(arch.target)?;
    run(cargo()
        .args([
            "build",
            "--release",
            "--target",
            arch.target,
            "-p",
            "hostproxy",
            "--bin",
            "hostproxy",
        ])
        .env("HOSTPROXY_EMBED_TOOLS", tools)
        // ring's C (egress's TLS) for the musl target: the host's C compiler, which builds
        // the same architecture's freestanding code (no libc headers are needed by it).
        .envs(ring_cc(arch.target)?)
        // Symbols are most of a release binary's size, and of no use to its users.
        .env("CARGO_PROFILE_RELEASE_STRIP", "symbols")
        .env(
            format!(
                "CARGO_TARGET_{}_RUSTFLAGS",
                arch.target.to_uppercase().replace('-', "_")
            ),
            "-C target-feature=+crt-static -C linker=rust-lld",
        ))?;
    let built = root()
        .join("target")
        .join(arch.target)
        .join("release")
        .join("hostproxy");
    let version = env!("CARGO_PKG_VERSION");
    let name = format!("hostproxy-{version}-{}", arch.target);
    let stage = out.join("release").join(&name);
    let _ = std::fs::remove_dir_all(&stage);
    std::fs::create_dir_all(&stage)?;
    std::fs::copy(&built, stage.join("hostproxy"))
        .with_context(|| format!("cannot copy {}", built.display()))?;
    eprintln!(
        "xtask: {}/hostproxy {:.2} MiB (tools embedded)",
        arch.target,
        std::fs::metadata(stage.join("hostproxy"))?.len() as f64 / 1048576.0
    );
    for dir in ["man", "completions"] {
        run(Command::new("cp")
            .arg("-R")
            .arg(out.join(dir))
            .arg(stage.join(dir)))?;
    }
    let archive = format!("{name}.tar.gz");
    tar_gz(
        &out.join("release"),
        &out.join(&archive),
        std::slice::from_ref(&name),
    )?;
    let _ = std::fs::remove_dir_all(&stage);
    Ok(archive)
}

/// `install.sh`, its version filled in.
pub(crate) fn install_script(out: &Path) -> Result<()> {
    let script = include_str!("../../docs/install.sh").replace(
        "VERSION=\"@VERSION@\"",
        &format!("VERSION=\"{}\"", env!("CARGO_PKG_VERSION")),
    );
    let dest = out.join("install.sh");
    std::fs::write(&dest, script)?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(0o755))?;
    Ok(())
}

/// The devcontainer feature `hostproxy-tools` (`docs/devcontainer-feature/`), its version
/// filled in, as a folder and as the `.tgz` a feature registry serves.
pub(crate) fn devcontainer_feature(out: &Path) -> Result<()> {
    let src = root().join("docs/devcontainer-feature");
    let dest = out.join("devcontainer-feature/hostproxy-tools");
    let _ = std::fs::remove_dir_all(&dest);
    std::fs::create_dir_all(&dest)?;
    for name in ["devcontainer-feature.json", "install.sh"] {
        let text = std::fs::read_to_string(src.join(name))?
            .replace("@VERSION@", env!("CARGO_PKG_VERSION"));
        std::fs::write(dest.join(name), text)?;
    }
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(
        dest.join("install.sh"),
        std::fs::Permissions::from_mode(0o755),
    )?;
    tar_gz(
        &dest,
        &out.join("devcontainer-feature-hostproxy-tools.tgz"),
        &["devcontainer-feature.json".into(), "install.sh".into()],
    )?;
    Ok(())
}

/// The C compiler for ring on `target`: `CC_<target>` as set, else the host's `cc` for the
/// host's own architecture, else a cross gcc (`aarch64-linux-gnu-gcc`) when installed.
fn ring_cc(target: &str) -> Result<Vec<(String, String)>> {
    let var = format!("CC_{}", target.replace('-', "_"));
    if std::env::var_os(&var).is_some() {
        return Ok(Vec::new());
    }
    let host_arch = std::env::consts::ARCH;
    let cc = if target.starts_with(host_arch) {
        "cc".to_string()
    } else {
        let arch = target.split('-').next().unwrap_or(target);
        let cross = format!("{arch}-linux-gnu-gcc");
        if !on_path(&cross) {
            anyhow::bail!(
                "the {target} release daemon needs a C compiler for ring: apt-get install gcc-{arch}-linux-gnu (or set {var})"
            );
        }
        cross
    };
    Ok(vec![(var, cc)])
}

/// `hostproxy.rb`, a Homebrew formula (Homebrew on Linux) for the release archives built
/// now (SPEC.md 12): each architecture's URL and the SHA-256 `SHA256SUMS` has for it. The
/// base URL is `HOSTPROXY_DOWNLOAD_URL` when set (where the release is published), else
/// this dist folder as a `file://` URL, so `brew install --formula target/dist/hostproxy.rb`
/// installs the local build.
pub(crate) fn homebrew_formula(out: &Path, archives: &[String]) -> Result<()> {
    let sums = std::fs::read_to_string(out.join("SHA256SUMS"))?;
    let sha_of = |name: &str| {
        sums.lines()
            .find_map(|l| l.split_once("  ").filter(|(_, n)| *n == name))
            .map(|(h, _)| h.to_string())
            .with_context(|| format!("{name} is not in SHA256SUMS"))
    };
    let base = match std::env::var("HOSTPROXY_DOWNLOAD_URL") {
        Ok(u) if !u.is_empty() => u.trim_end_matches('/').to_string(),
        _ => format!("file://{}", std::fs::canonicalize(out)?.display()),
    };
    let mut arches = String::new();
    for (block, arch) in [("on_intel", "x86_64"), ("on_arm", "aarch64")] {
        let Some(name) = archives
            .iter()
            .find(|a| a.contains(&format!("-{arch}-unknown-linux-musl")))
        else {
            continue;
        };
        arches.push_str(&format!(
            "    {block} do\n      url \"{base}/{name}\"\n      sha256 \"{}\"\n    end\n",
            sha_of(name)?
        ));
    }
    let formula = format!(
        r##"# Homebrew formula for hostproxy, written by `cargo xtask dist` for the archives it built.
# Homebrew on Linux: brew install --formula ./hostproxy.rb
class Hostproxy < Formula
  desc "Lets tools in containers use the host's browser, git credentials and SSH/GPG keys"
  homepage "{homepage}"
  version "{version}"
  license any_of: ["MIT", "Apache-2.0"]

  on_linux do
{arches}  end

  def install
    bin.install "hostproxy"
    man1.install Dir["man/*.1"]
    bash_completion.install "completions/bash/hostproxy.bash" => "hostproxy"
    zsh_completion.install "completions/zsh/_hostproxy"
    fish_completion.install "completions/fish/hostproxy.fish"
  end

  service do
    run [opt_bin/"hostproxy", "serve"]
    keep_alive true
  end

  test do
    assert_match version.to_s, shell_output("#{{bin}}/hostproxy --version")
  end
end
"##,
        version = env!("CARGO_PKG_VERSION"),
        homepage = env!("CARGO_PKG_REPOSITORY"),
    );
    std::fs::write(out.join("hostproxy.rb"), formula)?;
    Ok(())
}
