//! Appends [`AuditRecord`]s to `<state>/logs/audit.jsonl`.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::Mutex;

use clawker_protocol::audit::AuditRecord;

/// The audit sink; `disabled()` (tests, mock-proxy) writes nothing.
#[derive(Debug)]
pub struct Audit {
    file: Option<Mutex<std::fs::File>>,
}

impl Audit {
    pub fn disabled() -> Self {
        Self { file: None }
    }

    /// Opens (creating 0600) the log for appending.
    pub fn open(path: &Path) -> std::io::Result<Self> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(path)?;
        Ok(Self {
            file: Some(Mutex::new(f)),
        })
    }

    /// Writes a whole record (the bridge sets `container`).
    pub fn write(&self, rec: &AuditRecord) {
        let Some(file) = &self.file else { return };
        let Ok(mut line) = serde_json::to_vec(rec) else {
            return;
        };
        line.push(b'\n');
        let mut f = file.lock().unwrap_or_else(|p| p.into_inner());
        if let Err(e) = f.write_all(&line) {
            tracing::warn!(error = %e, "cannot write the audit log");
        }
    }

    /// Writes one line. A write failure is logged, never fatal to the request.
    #[allow(clippy::too_many_arguments)]
    pub fn record(
        &self,
        token: &str,
        route: &str,
        action: &str,
        host: Option<String>,
        key: Option<String>,
        allowed: bool,
        reason: Option<String>,
    ) {
        let Some(file) = &self.file else { return };
        let rec = AuditRecord {
            time: crate::util::now_rfc3339(),
            token: token.into(),
            container: None,
            route: route.into(),
            action: action.into(),
            host,
            key,
            allowed,
            reason,
        };
        let Ok(mut line) = serde_json::to_vec(&rec) else {
            return;
        };
        line.push(b'\n');
        let mut f = file.lock().unwrap_or_else(|p| p.into_inner());
        if let Err(e) = f.write_all(&line) {
            tracing::warn!(error = %e, "cannot write the audit log");
        }
    }
}

pub use clawker_protocol::agent::fingerprint;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprint_matches_openssh_format() {
        let fp = fingerprint(b"blob");
        assert!(fp.starts_with("SHA256:"));
        assert!(!fp.ends_with('='));
        assert_eq!(fp.len(), 7 + 43);
    }
}
