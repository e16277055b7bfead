//! What the release is made of: the container tools, the architectures, how an archive is
//! packed.

use std::path::Path;
use std::process::Command;

use anyhow::Result;

use crate::util::run;

/// The container tools: shipped static, into images we did not build (the protocol's list).
pub(crate) use clawker_protocol::tunnel::CONTAINER_TOOLS as TOOLS;

/// Built static for both architectures beside the container tools and shipped in the same
/// tarballs, but not copied into images: the fake daemon for other people's CI (docs/ci.md).
pub(crate) const MOCK: &str = "mock-proxy";

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
