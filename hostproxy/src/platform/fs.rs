//! Files and directories only their owner may use.
//!
//! Unix: directories 0700, files 0600, owners compared by uid, symlinks not followed where a
//! secret is read. Windows: a file's access is its ACL, inherited from the user's profile
//! (`%LOCALAPPDATA%`, where the state directory lives), which is the user's alone by default;
//! no mode bits exist to set or check, so those calls do nothing there and the owner checks
//! have nothing to compare (`None`).

use std::fs::{Metadata, OpenOptions};
use std::io;
use std::path::Path;

/// Creates `dir` and its parents; the ones created are 0700 on unix.
pub fn create_private_dir(dir: &Path) -> io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)
}

/// Options that create a file 0600 on unix (open flags still to be chosen by the caller).
pub fn private_file() -> OpenOptions {
    #[allow(unused_mut)]
    let mut options = OpenOptions::new();
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options
}

/// Makes `options` fail on a symlink instead of following it (unix `O_NOFOLLOW`; Windows
/// opens the reparse point itself, which reading then refuses).
pub fn no_follow(options: &mut OpenOptions) -> &mut OpenOptions {
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::custom_flags(options, libc::O_NOFOLLOW);
    #[cfg(windows)]
    {
        /// FILE_FLAG_OPEN_REPARSE_POINT
        const OPEN_REPARSE_POINT: u32 = 0x0020_0000;
        std::os::windows::fs::OpenOptionsExt::custom_flags(options, OPEN_REPARSE_POINT);
    }
    options
}

/// The permission bits (`None` where there are none: Windows).
pub fn mode(meta: &Metadata) -> Option<u32> {
    #[cfg(unix)]
    {
        Some(std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o7777)
    }
    #[cfg(not(unix))]
    {
        let _ = meta;
        None
    }
}

/// Sets the permission bits of an open file (nothing on Windows).
pub fn set_mode(file: &std::fs::File, mode: u32) -> io::Result<()> {
    #[cfg(unix)]
    {
        file.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(mode))
    }
    #[cfg(not(unix))]
    {
        let _ = (file, mode);
        Ok(())
    }
}

/// The owner's uid (`None` on Windows).
pub fn owner(meta: &Metadata) -> Option<u32> {
    #[cfg(unix)]
    {
        Some(std::os::unix::fs::MetadataExt::uid(meta))
    }
    #[cfg(not(unix))]
    {
        let _ = meta;
        None
    }
}

/// This process's effective uid (`None` on Windows).
pub fn current_user() -> Option<u32> {
    #[cfg(unix)]
    {
        #[allow(unsafe_code)]
        // SAFETY: geteuid has no preconditions and cannot fail.
        Some(unsafe { libc::geteuid() })
    }
    #[cfg(not(unix))]
    {
        None
    }
}

/// What names one file whatever its path: (device, inode) on unix. On Windows the size and
/// modification time stand in (std has no stable file index there).
pub fn identity(meta: &Metadata) -> (u64, u64) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        (meta.dev(), meta.ino())
    }
    #[cfg(not(unix))]
    {
        let modified = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
        (meta.len(), modified)
    }
}

/// Whether `meta` is a unix socket (never on Windows, whose local sockets are named pipes,
/// not files).
pub fn is_socket(meta: &Metadata) -> bool {
    #[cfg(unix)]
    {
        std::os::unix::fs::FileTypeExt::is_socket(&meta.file_type())
    }
    #[cfg(not(unix))]
    {
        let _ = meta;
        false
    }
}

/// Why `path` is not the user's alone, if it is not (SPEC.md 11): owned by someone other
/// than the user or root, or writable by others, or by its group unless that is the
/// user's own group (a user-private group, as ssh's StrictModes allows). `None` on
/// platforms without owners and modes.
pub fn not_the_users(path: &Path) -> Option<String> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        let meta = match std::fs::metadata(path) {
            Ok(m) => m,
            Err(e) => return Some(format!("{}: {e}", path.display())),
        };
        let me = current_user()?;
        #[allow(unsafe_code)]
        // SAFETY: getegid has no preconditions and cannot fail.
        let my_group = unsafe { libc::getegid() };
        let mode = meta.mode() & 0o7777;
        if meta.uid() != me && meta.uid() != 0 {
            return Some(format!("{} is owned by uid {}", path.display(), meta.uid()));
        }
        if mode & 0o002 != 0 || (mode & 0o020 != 0 && meta.gid() != my_group) {
            return Some(format!(
                "{} is writable by others (mode {mode:o})",
                path.display()
            ));
        }
        None
    }
    #[cfg(not(unix))]
    {
        let _ = path;
        None
    }
}

#[cfg(test)]
#[cfg(unix)]
mod tests {
    use super::*;

    #[test]
    fn private_dirs_and_files_are_the_owners_alone() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("a/b");
        create_private_dir(&dir).unwrap();
        let meta = std::fs::metadata(&dir).unwrap();
        assert_eq!(mode(&meta), Some(0o700));
        assert_eq!(owner(&meta), current_user());
        let file = dir.join("f");
        private_file().write(true).create(true).open(&file).unwrap();
        assert_eq!(mode(&std::fs::metadata(&file).unwrap()), Some(0o600));
        // A symlink is refused, not followed.
        let link = dir.join("l");
        std::os::unix::fs::symlink(&file, &link).unwrap();
        let err = no_follow(OpenOptions::new().read(true))
            .open(&link)
            .unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ELOOP));
        // Identity follows the file, not the name.
        let before = identity(&std::fs::metadata(&file).unwrap());
        std::fs::rename(&file, dir.join("g")).unwrap();
        assert_eq!(identity(&std::fs::metadata(dir.join("g")).unwrap()), before);
    }
}
