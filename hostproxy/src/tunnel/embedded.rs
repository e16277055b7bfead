//! The container tools a release `hostproxy` carries (SPEC.md 12): a zstd-compressed tar of
//! `<arch>/<tool>` for x86_64 and aarch64, put in by `cargo xtask dist` (`build.rs`), and
//! unpacked once into `<state>/tools/<version>/` — private, the user's, the tools 0555 —
//! where the tunnel copies them from and `run-flags` mounts them from.

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clawker_protocol::tunnel::CONTAINER_TOOLS;

static ARCHIVE: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/embedded-tools.tar.zst"));

/// Architectures a release carries tools for (`uname -m` names, as in `target/dist/`).
pub const ARCHES: [&str; 2] = ["x86_64", "aarch64"];

/// The file beside the unpacked tools naming the archive they came from.
const STAMP: &str = "SHA256";

/// Whether this build carries the tools.
pub fn present() -> bool {
    !ARCHIVE.is_empty()
}

fn digest() -> String {
    use sha2::Digest;
    clawker_protocol::hex(&sha2::Sha256::digest(ARCHIVE))
}

/// `<tools_root>/<version>/`, unpacked from this build's archive unless what is there came
/// from the same archive (its `SHA256` stamp); `None` for a build without tools.
///
/// Unpacked into a fresh private folder beside it and renamed into place, so a daemon and
/// a `run-flags` that unpack at once never see half a folder; only `<arch>/<tool>` entries
/// of known tools are taken, nothing else the archive might hold.
pub fn unpacked(tools_root: &Path) -> Result<Option<PathBuf>> {
    if !present() {
        return Ok(None);
    }
    let dest = tools_root.join(env!("CARGO_PKG_VERSION"));
    let want = digest();
    if std::fs::read_to_string(dest.join(STAMP)).is_ok_and(|s| s.trim() == want) {
        return Ok(Some(dest));
    }
    crate::platform::fs::create_private_dir(tools_root)
        .with_context(|| format!("cannot create {}", tools_root.display()))?;
    let fresh = tools_root.join(format!(".unpack-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&fresh);
    crate::platform::fs::create_private_dir(&fresh)?;
    unpack_into(ARCHIVE, &fresh)
        .with_context(|| format!("cannot unpack the embedded tools into {}", fresh.display()))?;
    std::fs::write(fresh.join(STAMP), format!("{want}\n"))?;
    // Whatever is at `dest` (another build of this version) is moved aside, not deleted: a
    // running container may have it bind-mounted (`run-flags`), and a mount of a folder
    // whose files were unlinked is empty. Only the last one moved aside is kept.
    if dest.exists() {
        for old in std::fs::read_dir(tools_root)?.flatten() {
            if old.file_name().to_string_lossy().starts_with(".old-") {
                let _ = std::fs::remove_dir_all(old.path());
            }
        }
        let _ = std::fs::rename(
            &dest,
            tools_root.join(format!(".old-{}", std::process::id())),
        );
    }
    if let Err(e) = std::fs::rename(&fresh, &dest) {
        let _ = std::fs::remove_dir_all(&fresh);
        // Another process put the same archive there meanwhile: use it.
        if std::fs::read_to_string(dest.join(STAMP)).is_ok_and(|s| s.trim() == want) {
            return Ok(Some(dest));
        }
        return Err(e).with_context(|| format!("cannot move the tools to {}", dest.display()));
    }
    Ok(Some(dest))
}

/// Unpacks `zst` (a zstd tar of `<arch>/<tool>`) into `dir`: each tool 0555, each arch
/// folder 0755 inside the private `dir`.
fn unpack_into(zst: &[u8], dir: &Path) -> Result<()> {
    let decoder = ruzstd::decoding::StreamingDecoder::new(zst)
        .map_err(|e| anyhow::anyhow!("the embedded archive is not zstd: {e}"))?;
    let mut archive = tar::Archive::new(decoder);
    let mut count = 0;
    for entry in archive.entries()? {
        let mut entry = entry?;
        if entry.header().entry_type() != tar::EntryType::Regular {
            continue;
        }
        let path = entry.path()?.into_owned();
        let parts: Vec<_> = path.iter().filter_map(|p| p.to_str()).collect();
        let [arch, tool] = parts.as_slice() else {
            continue;
        };
        if !ARCHES.contains(arch) || !CONTAINER_TOOLS.contains(tool) {
            continue;
        }
        let arch_dir = dir.join(arch);
        std::fs::create_dir_all(&arch_dir)?;
        let mut bytes = Vec::new();
        entry.read_to_end(&mut bytes)?;
        write_tool(&arch_dir.join(tool), &bytes)?;
        count += 1;
    }
    if count == 0 {
        bail!("the embedded archive holds no container tools");
    }
    Ok(())
}

fn write_tool(path: &Path, bytes: &[u8]) -> Result<()> {
    std::fs::write(path, bytes)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o555))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn archive(files: &[(&str, &[u8])]) -> Vec<u8> {
        let mut tar = tar::Builder::new(Vec::new());
        for (name, bytes) in files {
            let mut h = tar::Header::new_gnu();
            h.set_mode(0o755);
            h.set_size(bytes.len() as u64);
            h.set_entry_type(tar::EntryType::Regular);
            tar.append_data(&mut h, name, *bytes).unwrap();
        }
        let tar = tar.into_inner().unwrap();
        ruzstd::encoding::compress_to_vec(
            tar.as_slice(),
            ruzstd::encoding::CompressionLevel::Fastest,
        )
    }

    #[test]
    fn only_known_tools_of_known_arches_are_unpacked_read_only() {
        let d = tempfile::tempdir().unwrap();
        let zst = archive(&[
            ("x86_64/clawker-socket-server", b"server"),
            ("aarch64/host-open", b"open"),
            ("x86_64/evil", b"no"),
            ("riscv64/host-open", b"no"),
            ("x86_64/deeper/host-open", b"no"),
        ]);
        unpack_into(&zst, d.path()).unwrap();
        assert_eq!(
            std::fs::read(d.path().join("x86_64/clawker-socket-server")).unwrap(),
            b"server"
        );
        assert_eq!(
            std::fs::read(d.path().join("aarch64/host-open")).unwrap(),
            b"open"
        );
        assert!(!d.path().join("x86_64/evil").exists());
        assert!(!d.path().join("riscv64").exists());
        assert!(!d.path().join("x86_64/deeper").exists());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(d.path().join("aarch64/host-open"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o555);
        }
        assert!(unpack_into(&archive(&[("x86_64/evil", b"no")]), d.path()).is_err());
        assert!(unpack_into(b"not zstd", d.path()).is_err());
    }
}
