//! Appends [`AuditRecord`]s to `<state>/logs/audit.jsonl`, rotated at 10 MiB with three old
//! files kept (`logfile`).
//!
//! Records are folded (SPEC.md 7, 11): of the records one identity causes on one route
//! with one outcome — the same action, allowed or not, and reason; for allowed ones the
//! same host and key too — at most one line a second is written, and the ones in between
//! are counted into the next line (or into one of their own when the second is over). So
//! neither a process without a token nor a scoped identity can fill the disk or rotate
//! another identity's records out of the log, while a count keeps what was folded.
//! A denial's host and key (what the caller asked for) are not part of its kind: the
//! caller chooses them freely.

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
    /// The latest record folded, written (with the count) when the window closes.
    latest: Option<AuditRecord>,
}

/// What records fold together: identity, route, action, outcome, reason, and for an
/// allowed record its host and key.
type FoldKey = [String; 6];

#[derive(Debug)]
struct Sink {
    file: RotatingFile,
    folds: HashMap<FoldKey, Fold>,
}

/// How many kinds of record are remembered for folding before the oldest are forgotten
/// (each is one identity's route and outcome, so this is only reached by many identities).
const MAX_FOLDS: usize = 4096;

fn fold_key(rec: &AuditRecord) -> FoldKey {
    let (host, key) = if rec.allowed {
        (rec.host.clone(), rec.key.clone())
    } else {
        (None, None)
    };
    [
        rec.token.clone(),
        rec.route.clone(),
        format!("{}:{}", rec.allowed, rec.action),
        rec.reason.clone().unwrap_or_default(),
        host.unwrap_or_default(),
        key.unwrap_or_default(),
    ]
}

/// One decision, as a handler records it: who (the identity's name), which route and
/// action, on what (host, key), the outcome and why. Named fields, so no two strings can be
/// swapped at a call site.
#[derive(Debug, Default)]
pub struct Decision<'a> {
    pub token: &'a str,
    pub route: &'a str,
    pub action: &'a str,
    pub host: Option<String>,
    pub key: Option<String>,
    pub allowed: bool,
    pub reason: Option<String>,
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

    /// Writes a whole record (the bridge sets `container`), folded with the records of its
    /// kind (module doc). A write failure is logged, never fatal to the request.
    pub fn write(&self, rec: &AuditRecord) {
        let Some(sink) = &self.sink else { return };
        let now = Instant::now();
        let key = fold_key(rec);
        let mut s = Self::lock(sink);
        if s.folds.len() >= MAX_FOLDS && !s.folds.contains_key(&key) {
            // Forget the kinds whose window is over (nothing is pending for them).
            s.folds.retain(|_, f| {
                f.flush_armed
                    || f.last_line
                        .is_some_and(|l| now.duration_since(l) < FOLD_WINDOW)
            });
        }
        let fold = s.folds.entry(key.clone()).or_default();
        if let Some(last) = fold.last_line
            && now.duration_since(last) < FOLD_WINDOW
        {
            fold.folded += 1;
            fold.latest = Some(rec.clone());
            if !fold.flush_armed {
                fold.flush_armed = true;
                self.arm_flush(key, last + FOLD_WINDOW);
            }
            return;
        }
        let folded = std::mem::take(&mut fold.folded);
        fold.latest = None;
        fold.last_line = Some(now);
        let mut rec = rec.clone();
        rec.folded = (folded > 0).then_some(folded);
        append(&mut s, &rec);
    }

    /// Writes one decision.
    pub fn record(&self, d: Decision<'_>) {
        if self.sink.is_none() {
            return;
        }
        self.write(&AuditRecord {
            time: crate::util::now_rfc3339(),
            token: d.token.into(),
            container: None,
            route: d.route.into(),
            action: d.action.into(),
            host: d.host,
            key: d.key,
            allowed: d.allowed,
            reason: d.reason,
            folded: None,
        });
    }

    /// A denial anyone can cause without a token (identity `none`).
    pub fn deny_unauthenticated(&self, route: &str, reason: &str) {
        if self.sink.is_none() {
            return;
        }
        self.write(&denial(route, reason, 0));
    }

    /// Writes the count folded in a window once it closes (at `at`), so a burst's tail is
    /// not lost. If a line was written for this key since (the window moved on), it waits
    /// for the new window's end instead, so there is never more than a line a second.
    fn arm_flush(&self, key: FoldKey, at: Instant) {
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
                // This line stands for the latest of them; `folded` counts the rest.
                let folded = std::mem::take(&mut fold.folded) - 1;
                fold.last_line = Some(Instant::now());
                let Some(mut rec) = fold.latest.take() else {
                    return;
                };
                rec.folded = (folded > 0).then_some(folded);
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
        audit.record(Decision {
            token: "user",
            route: "/git/credential",
            action: "get",
            allowed: true,
            ..Default::default()
        });
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

    #[tokio::test(start_paused = true)]
    async fn a_scoped_identity_cannot_flush_the_others_out() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let audit = Audit::open(&path).unwrap();
        audit.record(Decision {
            token: "via:other",
            route: "/git/credential",
            action: "get",
            host: Some("github.com".into()),
            allowed: true,
            ..Default::default()
        });
        // 20,000 policy denials, each for another URL host, and 5,000 allowed signatures.
        for i in 0..20_000 {
            audit.record(Decision {
                token: "scoped",
                route: "/open/url",
                action: "open",
                host: Some(format!("10.0.{}.{}", i / 256, i % 256)),
                allowed: false,
                reason: Some("internal address".into()),
                ..Default::default()
            });
        }
        for _ in 0..5_000 {
            audit.record(Decision {
                token: "container:c",
                route: "ssh-agent",
                action: "sign",
                key: Some("SHA256:k".into()),
                allowed: true,
                ..Default::default()
            });
        }
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let got = lines(&path);
        assert_eq!(got.len(), 5, "{got:?}");
        assert_eq!(got[0].token, "via:other");
        let denied: Vec<_> = got.iter().filter(|r| r.token == "scoped").collect();
        assert_eq!(denied.len(), 2);
        assert_eq!(denied[1].folded, Some(19_998));
        let signed: Vec<_> = got.iter().filter(|r| r.token == "container:c").collect();
        assert_eq!(signed[1].folded, Some(4_998));
        assert_eq!(signed[1].key.as_deref(), Some("SHA256:k"));
    }
}
