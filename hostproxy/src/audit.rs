//! Appends [`AuditRecord`]s to `<state>/logs/audit.jsonl`, rotated at 10 MiB with three old
//! files kept (`logfile`).
//!
//! Denials that need no token to cause (a wrong token, a foreign `Host`, a browser header, a
//! bad content type or size) are folded: at most one line a second per route and reason,
//! carrying how many more were folded into it, so no container or local process can fill
//! the disk or flush the real decisions out of the log.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use clawker_protocol::audit::AuditRecord;

use crate::logfile::RotatingFile;

pub use clawker_protocol::agent::fingerprint;

/// Window in which denials of one route and reason share a line.
const FOLD_WINDOW: Duration = Duration::from_secs(1);

#[derive(Debug, Default)]
struct Fold {
    last_line: Option<Instant>,
    folded: u64,
    flush_armed: bool,
}

#[derive(Debug)]
struct Sink {
    file: RotatingFile,
    folds: HashMap<(String, String), Fold>,
}

/// The audit sink; `disabled()` (tests, mock-proxy) writes nothing.
#[derive(Debug, Clone)]
pub struct Audit {
    sink: Option<Arc<Mutex<Sink>>>,
}

impl Audit {
    pub fn disabled() -> Self {
        Self { sink: None }
    }

    /// Opens (creating 0600) the log for appending.
    pub fn open(path: &Path) -> std::io::Result<Self> {
        Self::with_file(RotatingFile::open(path)?)
    }

    fn with_file(file: RotatingFile) -> std::io::Result<Self> {
        Ok(Self {
            sink: Some(Arc::new(Mutex::new(Sink {
                file,
                folds: HashMap::new(),
            }))),
        })
    }

    fn lock(sink: &Mutex<Sink>) -> std::sync::MutexGuard<'_, Sink> {
        sink.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Writes a whole record (the bridge sets `container`). A write failure is logged,
    /// never fatal to the request.
    pub fn write(&self, rec: &AuditRecord) {
        let Some(sink) = &self.sink else { return };
        append(&mut Self::lock(sink), rec);
    }

    /// Writes one decision.
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
        if self.sink.is_none() {
            return;
        }
        self.write(&AuditRecord {
            time: crate::util::now_rfc3339(),
            token: token.into(),
            container: None,
            route: route.into(),
            action: action.into(),
            host,
            key,
            allowed,
            reason,
            folded: None,
        });
    }

    /// A denial anyone can cause without a token: written at most once per second per
    /// `route` and `reason`; the ones in between are counted into the next line (or into a
    /// line of their own when the window closes).
    pub fn deny_unauthenticated(&self, route: &str, reason: &str) {
        let Some(sink) = &self.sink else { return };
        let now = Instant::now();
        let key = (route.to_string(), reason.to_string());
        let mut s = Self::lock(sink);
        let fold = s.folds.entry(key.clone()).or_default();
        if let Some(last) = fold.last_line
            && now.duration_since(last) < FOLD_WINDOW
        {
            fold.folded += 1;
            if !fold.flush_armed {
                fold.flush_armed = true;
                self.arm_flush(key, last + FOLD_WINDOW);
            }
            return;
        }
        let folded = std::mem::take(&mut fold.folded);
        fold.last_line = Some(now);
        append(&mut s, &denial(route, reason, folded));
    }

    /// Writes the count folded in a window once it closes (at `at`), so a burst's tail is
    /// not lost. If a line was written for this key since (the window moved on), it waits
    /// for the new window's end instead, so there is never more than a line a second.
    fn arm_flush(&self, key: (String, String), at: Instant) {
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let this = self.clone();
        rt.spawn(async move {
            let mut at = at;
            loop {
                tokio::time::sleep_until(at).await;
                let Some(sink) = &this.sink else { return };
                let mut s = Self::lock(sink);
                let Some(fold) = s.folds.get_mut(&key) else {
                    return;
                };
                match fold.last_line {
                    Some(last) if last + FOLD_WINDOW > at => {
                        // A line was written after this flush was armed: its window rules.
                        at = last + FOLD_WINDOW;
                        continue;
                    }
                    _ => {}
                }
                fold.flush_armed = false;
                if fold.folded == 0 {
                    return;
                }
                // This line stands for one of them; `folded` counts the rest.
                let folded = std::mem::take(&mut fold.folded) - 1;
                fold.last_line = Some(Instant::now());
                let rec = denial(&key.0, &key.1, folded);
                append(&mut s, &rec);
                return;
            }
        });
    }
}

fn denial(route: &str, reason: &str, folded: u64) -> AuditRecord {
    AuditRecord {
        time: crate::util::now_rfc3339(),
        token: "none".into(),
        container: None,
        route: route.into(),
        action: "request".into(),
        host: None,
        key: None,
        allowed: false,
        reason: Some(reason.into()),
        folded: (folded > 0).then_some(folded),
    }
}

fn append(s: &mut Sink, rec: &AuditRecord) {
    let Ok(mut line) = serde_json::to_vec(rec) else {
        return;
    };
    line.push(b'\n');
    if let Err(e) = s.file.append(&line) {
        tracing::warn!(error = %e, "cannot write the audit log");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(path: &Path) -> Vec<AuditRecord> {
        std::fs::read_to_string(path)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    #[tokio::test(start_paused = true)]
    async fn unauthenticated_denials_fold_into_one_line_a_second() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let audit = Audit::open(&path).unwrap();
        for _ in 0..1000 {
            audit.deny_unauthenticated("/git/credential", "missing or invalid bearer token");
        }
        audit.deny_unauthenticated("/open/url", "missing or invalid bearer token");
        audit.record("user", "/git/credential", "get", None, None, true, None);
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let got = lines(&path);
        assert_eq!(got.len(), 4, "{got:?}");
        assert_eq!(
            (got[0].route.as_str(), got[0].folded),
            ("/git/credential", None)
        );
        assert_eq!(got[1].route, "/open/url");
        assert!(got[2].allowed, "the real decision is there");
        // The burst's tail, written when its window closed: this line and 998 more.
        assert_eq!(got[3].folded, Some(998));
    }
}
