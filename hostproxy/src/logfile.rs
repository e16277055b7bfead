//! An append-only log file that rotates by size: `hostproxy.log` and `audit.jsonl` are
//! bounded (SPEC.md 7: 10 MiB, three old files kept as `NAME.1` … `NAME.3`).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// Size at which a log file is rotated.
pub const ROTATE_BYTES: u64 = 10 * 1024 * 1024;
/// Old files kept beside the current one.
pub const KEEP: usize = 3;

#[derive(Debug)]
pub struct RotatingFile {
    path: PathBuf,
    file: std::fs::File,
    size: u64,
    max: u64,
}

fn open_append(path: &Path) -> std::io::Result<std::fs::File> {
    if let Some(dir) = path.parent() {
        crate::platform::fs::create_private_dir(dir)?;
    }
    crate::platform::fs::private_file()
        .create(true)
        .append(true)
        .open(path)
}

impl RotatingFile {
    /// Opens `path` for appending (creating it 0600 in a 0700 directory).
    pub fn open(path: &Path) -> std::io::Result<Self> {
        Self::with_limit(path, ROTATE_BYTES)
    }

    pub fn with_limit(path: &Path, max: u64) -> std::io::Result<Self> {
        let file = open_append(path)?;
        let size = file.metadata()?.len();
        Ok(Self {
            path: path.to_path_buf(),
            file,
            size,
            max,
        })
    }

    /// `NAME.n`.
    pub fn old(path: &Path, n: usize) -> PathBuf {
        let mut name = path.as_os_str().to_owned();
        name.push(format!(".{n}"));
        PathBuf::from(name)
    }

    fn rotate(&mut self) -> std::io::Result<()> {
        for n in (1..KEEP).rev() {
            let from = Self::old(&self.path, n);
            if from.exists() {
                std::fs::rename(&from, Self::old(&self.path, n + 1))?;
            }
        }
        std::fs::rename(&self.path, Self::old(&self.path, 1))?;
        self.file = open_append(&self.path)?;
        self.size = 0;
        Ok(())
    }

    /// Appends one whole record (a line), rotating first when it would pass the limit.
    pub fn append(&mut self, line: &[u8]) -> std::io::Result<()> {
        if self.size > 0 && self.size + line.len() as u64 > self.max {
            self.rotate()?;
        }
        self.file.write_all(line)?;
        self.size += line.len() as u64;
        Ok(())
    }
}

/// A [`RotatingFile`] shared by threads, usable as tracing's writer (`MakeWriter`).
#[derive(Debug, Clone)]
pub struct SharedLog(Arc<Mutex<RotatingFile>>);

impl SharedLog {
    pub fn open(path: &Path) -> std::io::Result<Self> {
        Ok(Self(Arc::new(Mutex::new(RotatingFile::open(path)?))))
    }
}

impl Write for SharedLog {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let mut f = self.0.lock().unwrap_or_else(|p| p.into_inner());
        f.append(buf)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotates_by_size_and_keeps_three_old_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("logs/x.log");
        let mut f = RotatingFile::with_limit(&path, 100).unwrap();
        for i in 0..40 {
            f.append(format!("line {i:02} ..............................\n").as_bytes())
                .unwrap();
        }
        let files: Vec<PathBuf> = (1..=4).map(|n| RotatingFile::old(&path, n)).collect();
        assert!(path.exists());
        assert!(files[..3].iter().all(|p| p.exists()), "three old files");
        assert!(!files[3].exists(), "never a fourth");
        for p in std::iter::once(&path).chain(&files[..3]) {
            let len = std::fs::metadata(p).unwrap().len();
            assert!(len <= 100, "{} is {len} bytes", p.display());
        }
        // The newest line is in the current file, whole lines only in each.
        assert!(std::fs::read_to_string(&path).unwrap().contains("line 39"));
        #[cfg(unix)]
        assert_eq!(
            crate::platform::fs::mode(&std::fs::metadata(&path).unwrap()),
            Some(0o600)
        );
    }
}
