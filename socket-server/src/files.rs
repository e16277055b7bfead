//! What the container end writes to the container's disk: the host's public keyring for
//! gpg (SPEC.md 11: only into a private folder of its own user, never through a symlink),
//! and its own copy and the tools into a folder (`install DIR`, an init container).

use std::path::Path;

use anyhow::{Context, Result, bail};

/// Writes the host's public keyring and a `gpg.conf` that never starts a local agent
/// (SPEC.md 11): into a directory this user made (0700) or already owns with no access for
/// others — never one another user made first below the world-writable `/tmp` — and never
/// over a keyring of the container's own (`pubring.kbx`, private keys). Each file is
/// unlinked and created afresh with `O_NOFOLLOW|O_EXCL`, so a symlink planted in its place
/// is never followed.
pub fn install_gpg_home(dir: &Path, pubkey: &[u8]) -> Result<()> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if let Some(parent) = dir.parent() {
                std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o755)
                    .create(parent)?;
            }
            std::fs::DirBuilder::new().mode(0o700).create(dir)?;
        }
        Err(e) => return Err(e).with_context(|| format!("cannot create {}", dir.display())),
    }
    let meta = std::fs::symlink_metadata(dir)?;
    #[allow(unsafe_code)]
    // SAFETY: geteuid has no preconditions and cannot fail.
    let me = unsafe { libc::geteuid() };
    if !meta.is_dir() || meta.uid() != me || meta.mode() & 0o077 != 0 {
        bail!(
            "{} is not a private directory of this user (owner {}, mode {:o}): the host's keys are not written there",
            dir.display(),
            meta.uid(),
            meta.mode() & 0o7777
        );
    }
    for theirs in ["pubring.kbx", "private-keys-v1.d"] {
        if std::fs::symlink_metadata(dir.join(theirs)).is_ok() {
            bail!(
                "{} holds a keyring of its own ({theirs}): left alone; point GNUPGHOME elsewhere for the host's gpg",
                dir.display()
            );
        }
    }
    let write = |name: &str, bytes: &[u8]| -> Result<()> {
        let path = dir.join(name);
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("cannot replace {}", path.display())),
        }
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&path)
            .with_context(|| format!("cannot write {}", path.display()))?;
        std::io::Write::write_all(&mut f, bytes)?;
        Ok(())
    };
    write("pubring.gpg", pubkey)?;
    write("gpg.conf", b"no-autostart\n")?;
    Ok(())
}

/// `clawker-socket-server install DIR`: copies itself and the container tools beside it
/// into `DIR` (created when missing), each 0555, written under a temporary name and renamed
/// into place: what an init container (`FROM scratch`, the tools) runs to fill a volume a
/// stock container then uses (Kubernetes `emptyDir`, `--via 'kubectl exec -i …'`).
pub fn install(dest: &Path) -> Result<usize> {
    use std::os::unix::fs::PermissionsExt;
    let me = std::env::current_exe().context("cannot find this program's own path")?;
    let from = me.parent().context("this program's path has no folder")?;
    std::fs::create_dir_all(dest).with_context(|| format!("cannot create {}", dest.display()))?;
    let mut copied = 0;
    for tool in clawker_protocol::tunnel::CONTAINER_TOOLS {
        let src = if tool == clawker_protocol::tunnel::SOCKET_SERVER {
            me.clone()
        } else {
            from.join(tool)
        };
        if !src.is_file() {
            continue;
        }
        let tmp = dest.join(format!(".{tool}.new"));
        std::fs::copy(&src, &tmp)
            .with_context(|| format!("cannot copy {} to {}", src.display(), dest.display()))?;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o555))?;
        std::fs::rename(&tmp, dest.join(tool))?;
        copied += 1;
    }
    Ok(copied)
}
