//! The container tools the daemon copies into an image that lacks them: where it finds
//! them on the host, and the tar archive it uploads (`/tmp/.hostproxy/bin/`).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clawker_protocol::tunnel::{CONTAINER_TOOLS, SOCKET_SERVER};

/// An archive made once, shared by every attach of its architecture.
type Built = (bytes::Bytes, [u8; 32]);

/// Where the tools are looked for, in order, and the archives made of them.
#[derive(Debug, Clone, Default)]
pub struct Tools {
    /// `--tools-dir` / `CLAWKER_HOST_PROXY_TOOLS_DIR` / `attach.tools_dir`.
    pub dir: Option<PathBuf>,
    /// `<state>/tools`: where the tools this build carries are unpacked.
    embedded_root: Option<PathBuf>,
    /// By (architecture, with `/tmp`): read, checked and packed at the first attach that
    /// needs it, not at every one (a few MiB each; the daemon is restarted to pick up new
    /// tools).
    built: std::sync::Arc<std::sync::Mutex<std::collections::HashMap<(String, bool), Built>>>,
}

/// A `cargo xtask dist` output beside this build, when it runs from a checkout.
fn checkout_dist() -> Option<PathBuf> {
    let dist = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/dist");
    std::fs::canonicalize(dist).ok().filter(|d| d.is_dir())
}

/// The tools folder `found` (under `root`), its parents up to `root`, and every tool in it
/// are the user's (or root's) and nobody else can write them: whatever is there is copied
/// into containers and run there (SPEC.md 11).
fn check_users(root: &Path, found: &Path) -> Result<()> {
    use crate::platform::fs::not_the_users;
    let mut paths = vec![root.to_path_buf()];
    if found != root {
        paths.push(found.to_path_buf());
    }
    paths.extend(
        CONTAINER_TOOLS
            .iter()
            .map(|t| found.join(t))
            .filter(|p| p.exists()),
    );
    if let Some(why) = paths.iter().find_map(|p| not_the_users(p)) {
        bail!(
            "the container tools in {} are refused: {why}; whatever is there would be run in containers (make them yours and not writable by others: chmod go-w)",
            found.display()
        );
    }
    Ok(())
}

impl Tools {
    pub fn new(dir: Option<PathBuf>) -> Self {
        Self {
            dir,
            ..Self::default()
        }
    }

    /// Also the tools this build carries, unpacked under `root` (`<state>/tools`) when
    /// first needed.
    pub fn with_embedded(mut self, root: PathBuf) -> Self {
        self.embedded_root = Some(root);
        self
    }

    /// Where the tools are looked for, in order: the configured folder, the tools this
    /// build carries (unpacked), the checkout's `target/dist`.
    fn roots(&self) -> Result<Vec<PathBuf>> {
        let mut roots: Vec<PathBuf> = self.dir.iter().cloned().collect();
        if let Some(root) = &self.embedded_root
            && let Some(unpacked) = super::embedded::unpacked(root)?
        {
            roots.push(unpacked);
        }
        roots.extend(checkout_dist());
        Ok(roots)
    }

    /// Where this build's tools are, in words, for `doctor` and `attach --list`.
    pub fn describe(&self) -> String {
        match (&self.dir, super::embedded::present(), checkout_dist()) {
            (Some(d), _, _) => format!("--tools-dir {}", d.display()),
            (None, true, _) => "carried by this hostproxy".into(),
            (None, false, Some(d)) => format!("the checkout's {}", d.display()),
            (None, false, None) => "none: this hostproxy carries no container tools (a `cargo xtask dist` build does); name a folder with --tools-dir".into(),
        }
    }

    /// [`Tools::archive`], made once per architecture and kept.
    pub fn archive_cached(&self, arch: &str, with_tmp: bool) -> Result<Built> {
        let key = (arch.to_string(), with_tmp);
        if let Some(b) = self
            .built
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
        {
            return Ok(b.clone());
        }
        let (bytes, hash) = self.archive(arch, with_tmp)?;
        let built = (bytes::Bytes::from(bytes), hash);
        self.built
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key, built.clone());
        Ok(built)
    }

    /// The folder holding the tools for `arch` (`x86_64`, `aarch64`): `DIR/<arch>/`, or
    /// `DIR` itself for the host's own architecture; first the configured folder, then the
    /// tools this build carries, then the checkout's `target/dist`.
    pub fn dir_for(&self, arch: &str) -> Result<PathBuf> {
        let roots = self.roots()?;
        for root in &roots {
            let mut candidates = vec![root.join(arch)];
            if arch == std::env::consts::ARCH {
                candidates.push(root.clone());
            }
            if let Some(found) = candidates
                .into_iter()
                .find(|c| c.join(SOCKET_SERVER).is_file())
            {
                check_users(root, &found)?;
                return Ok(found);
            }
        }
        bail!(
            "the container has no {SOCKET_SERVER} and no {arch} container tools were found{}: this hostproxy carries none (a `cargo xtask dist` build does); build them with `cargo xtask dist` or name their folder with --tools-dir (or {})",
            if roots.is_empty() {
                String::new()
            } else {
                format!(
                    " in {}",
                    roots
                        .iter()
                        .map(|r| r.display().to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            },
            clawker_protocol::env::TOOLS_DIR
        )
    }

    /// A tar archive of `.hostproxy/bin/` with every tool found for `arch`, to be unpacked
    /// in the container's `/tmp` (SPEC.md 11): no entry for `/tmp` itself, so neither its
    /// mode, owner nor times change (nor those of a host directory mounted there) — unless
    /// `with_tmp`, for a container that has no `/tmp`, when the archive is unpacked at `/`
    /// and makes one (1777). `.hostproxy` is sticky and world-writable like `/tmp`, so a
    /// container user that is not root can make its sockets there, but cannot rename or
    /// replace `bin`, which is root's and 0755, nor its files, root's and 0555. Unpacking
    /// over what is there replaces files and symlinks and takes over directories (owner and
    /// mode from the archive), so nothing planted before survives. Also returns the SHA-256
    /// of `clawker-socket-server`, checked in the container before it is run.
    pub fn archive(&self, arch: &str, with_tmp: bool) -> Result<(Vec<u8>, [u8; 32])> {
        use sha2::Digest;
        let dir = self.dir_for(arch)?;
        let prefix = if with_tmp { "tmp/" } else { "" };
        let mut server_hash = None;
        let mut tar = tar::Builder::new(Vec::new());
        let mut add_dir = |path: &str, mode: u32| -> std::io::Result<()> {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(tar::EntryType::Directory);
            h.set_mode(mode);
            h.set_size(0);
            h.set_uid(0);
            h.set_gid(0);
            h.set_mtime(0);
            tar.append_data(&mut h, path, std::io::empty())
        };
        if with_tmp {
            add_dir("tmp/", 0o1777)?;
        }
        add_dir(&format!("{prefix}.hostproxy/"), 0o1777)?;
        add_dir(&format!("{prefix}.hostproxy/bin/"), 0o755)?;
        for tool in CONTAINER_TOOLS {
            let path = dir.join(tool);
            let bytes = match std::fs::read(&path) {
                Ok(b) => b,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound && tool != SOCKET_SERVER => {
                    continue;
                }
                Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
            };
            if tool == SOCKET_SERVER {
                server_hash = Some(sha2::Sha256::digest(&bytes).into());
            }
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(tar::EntryType::Regular);
            h.set_mode(0o555);
            h.set_size(bytes.len() as u64);
            h.set_uid(0);
            h.set_gid(0);
            h.set_mtime(0);
            tar.append_data(
                &mut h,
                format!("{prefix}.hostproxy/bin/{tool}"),
                bytes.as_slice(),
            )?;
        }
        let hash = server_hash.context("no clawker-socket-server among the tools")?;
        Ok((tar.into_inner()?, hash))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_per_arch_then_flat_and_archives_what_it_found() {
        let d = tempfile::tempdir().unwrap();
        let arm = d.path().join("aarch64");
        std::fs::create_dir(&arm).unwrap();
        std::fs::write(arm.join(SOCKET_SERVER), b"arm").unwrap();
        std::fs::write(arm.join("host-open"), b"open").unwrap();
        std::fs::write(d.path().join(SOCKET_SERVER), b"flat").unwrap();
        let t = Tools::new(Some(d.path().to_path_buf()));
        assert_eq!(t.dir_for("aarch64").unwrap(), arm);
        if std::env::consts::ARCH == "x86_64" {
            assert_eq!(t.dir_for("x86_64").unwrap(), d.path());
        }
        // Made once per architecture: the second attach shares the first's bytes.
        let (once, _) = t.archive_cached("aarch64", false).unwrap();
        let (again, _) = t.archive_cached("aarch64", false).unwrap();
        assert_eq!(once.as_ptr(), again.as_ptr());
        let (archive, hash) = t.archive("aarch64", false).unwrap();
        use sha2::Digest;
        assert_eq!(hash, <[u8; 32]>::from(sha2::Sha256::digest(b"arm")));
        let mut names = Vec::new();
        for e in tar::Archive::new(archive.as_slice()).entries().unwrap() {
            let e = e.unwrap();
            names.push((
                e.path().unwrap().display().to_string(),
                e.header().mode().unwrap(),
            ));
        }
        // Nothing for /tmp itself: its mode, owner and times stay the container's.
        assert_eq!(
            names,
            [
                (".hostproxy/", 0o1777),
                (".hostproxy/bin/", 0o755),
                ("host-open", 0o555),
                (SOCKET_SERVER, 0o555),
            ]
            .map(|(n, m): (&str, u32)| if n.starts_with('.') {
                (n.to_string(), m)
            } else {
                (format!(".hostproxy/bin/{n}"), m)
            })
            .into_iter()
            .collect::<Vec<_>>(),
        );
        // A container without /tmp gets one, from `/`.
        let (archive, _) = t.archive("aarch64", true).unwrap();
        let mut a = tar::Archive::new(archive.as_slice());
        let first = a.entries().unwrap().next().unwrap().unwrap();
        assert_eq!(first.path().unwrap().display().to_string(), "tmp/");
    }

    #[test]
    fn no_tools_names_the_fix() {
        let d = tempfile::tempdir().unwrap();
        let t = Tools::new(Some(d.path().to_path_buf()));
        let e = format!("{:#}", t.dir_for("riscv64").unwrap_err());
        assert!(
            e.contains("cargo xtask dist") && e.contains("--tools-dir"),
            "{e}"
        );
    }

    #[cfg(unix)]
    #[test]
    fn a_tools_folder_others_can_write_or_own_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let x = d.path().join("x86_64");
        std::fs::create_dir(&x).unwrap();
        std::fs::write(x.join(SOCKET_SERVER), b"x").unwrap();
        std::fs::write(x.join("host-open"), b"o").unwrap();
        let t = Tools::new(Some(d.path().to_path_buf()));
        assert!(t.dir_for("x86_64").is_ok());
        // Writable by others: anyone could swap what is copied into containers.
        std::fs::set_permissions(&x, std::fs::Permissions::from_mode(0o777)).unwrap();
        let e = format!("{:#}", t.dir_for("x86_64").unwrap_err());
        assert!(
            e.contains("writable by others") && e.contains("chmod go-w"),
            "{e}"
        );
        std::fs::set_permissions(&x, std::fs::Permissions::from_mode(0o755)).unwrap();
        // A tool another user owns (the suite runs as root, which may give it away).
        std::os::unix::fs::chown(x.join("host-open"), Some(65534), None)
            .expect("chown needs root: the suite runs as root");
        let e = format!("{:#}", t.dir_for("x86_64").unwrap_err());
        assert!(e.contains("owned by uid 65534"), "{e}");
    }
}
