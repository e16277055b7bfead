//! What the user asked of the tunnel that outlives the daemon (`<state>/attachments.json`,
//! 0600, written atomically): containers attached by hand (`attach --container`), attached
//! again at the next start while they run; and labelled containers detached by hand, left
//! alone until they start again (their `StartedAt` changes).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use super::{AttachOptions, Entry, Target, check_name};
use clawker_protocol::tunnel::{AttachState, AttachmentInfo, EngineKind};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manual {
    /// The container id.
    pub container: String,
    pub allow: Vec<String>,
    pub declared: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Detached {
    pub container: String,
    /// Docker's `State.StartedAt` when it was detached: a later start attaches it again.
    pub started_at: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Kept {
    #[serde(default)]
    pub manual: Vec<Manual>,
    #[serde(default)]
    pub detached: Vec<Detached>,
}

/// The file and what it holds, behind a lock; every change is written at once.
#[derive(Debug)]
pub struct KeptFile {
    path: PathBuf,
    kept: std::sync::Mutex<Kept>,
}

impl KeptFile {
    /// Reads `path`; a missing or unreadable file is an empty one (said in the log).
    pub fn load(path: PathBuf) -> Self {
        let kept = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                tracing::warn!(file = %path.display(), error = %e, "the kept attachments do not parse: starting without them");
                Kept::default()
            }),
            Err(_) => Kept::default(),
        };
        Self {
            path,
            kept: std::sync::Mutex::new(kept),
        }
    }

    pub fn get(&self) -> Kept {
        self.lock().clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Kept> {
        self.kept.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn change(&self, f: impl FnOnce(&mut Kept)) {
        let mut kept = self.lock();
        f(&mut kept);
        // Never an empty body over the file: what was kept stays kept.
        let bytes = match serde_json::to_vec_pretty(&*kept) {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(error = %e, "cannot serialise the kept attachments: the file is left as it was");
                return;
            }
        };
        if let Err(e) = crate::util::write_private_atomic(&self.path, &bytes) {
            tracing::warn!(file = %self.path.display(), error = %e, "cannot keep the attachments for the next start");
        }
    }

    pub fn keep_manual(&self, m: Manual) {
        self.change(|k| {
            k.manual.retain(|x| x.container != m.container);
            k.detached.retain(|x| x.container != m.container);
            k.manual.push(m);
        });
    }

    pub fn forget(&self, container: &str) {
        self.change(|k| {
            k.manual.retain(|x| x.container != container);
            k.detached.retain(|x| x.container != container);
        });
    }

    pub fn keep_detached(&self, d: Detached) {
        self.change(|k| {
            k.manual.retain(|x| x.container != d.container);
            k.detached.retain(|x| x.container != d.container);
            k.detached.push(d);
        });
    }

    /// Whether `container`, started at `started_at`, was detached by hand since it started.
    pub fn is_detached(&self, container: &str, started_at: &str) -> bool {
        self.lock()
            .detached
            .iter()
            .any(|d| d.container == container && d.started_at == started_at)
    }
}

/// What the tunnel does with the kept file, and with labelled containers it cannot attach.
impl super::Tunnels {
    /// A container attached by hand: attached again at the next start while it runs.
    pub fn keep_manual(&self, container: &str, allow: &[String], declared: &[String]) {
        if let Some(k) = &self.0.kept {
            k.keep_manual(Manual {
                container: container.to_string(),
                allow: allow.to_vec(),
                declared: declared.to_vec(),
            });
        }
    }

    /// The Docker container behind the attachment `name` (identity or name), if any.
    pub fn container_of(&self, name: &str) -> Option<String> {
        let entries = self.entries();
        let e = entries
            .get(name)
            .or_else(|| entries.values().find(|e| e.info.name == name))?;
        (e.info.engine == EngineKind::Docker).then(|| e.info.target.clone())
    }

    /// `container` was detached by hand: forgotten as a manual attachment, and while this
    /// run of it lasts (its `StartedAt`), not attached by its label again, across restarts.
    pub async fn keep_detached(&self, container: &str) {
        let (Some(k), Some(docker)) = (&self.0.kept, self.docker()) else {
            return;
        };
        let started_at = docker
            .inspect_container(container, None)
            .await
            .ok()
            .and_then(|i| i.state)
            .and_then(|s| s.started_at);
        match started_at {
            Some(started_at) => k.keep_detached(Detached {
                container: container.to_string(),
                started_at,
            }),
            None => k.forget(container),
        }
    }

    /// A labelled container discovery could not attach (a typo in its scopes label, an
    /// undeclared socket, a shared network): listed as `failed` with the reason, so the
    /// user sees it in `attach --list` rather than only in the log (newcomer review F6).
    /// Replaced by a later attach of it, removed by `detach`.
    pub(super) async fn note_refused(&self, container: &str, reason: String) {
        let Some(docker) = self.docker() else { return };
        let Some(name) = docker
            .inspect_container(container, None)
            .await
            .ok()
            .and_then(|i| i.name)
            .map(|n| n.trim_start_matches('/').to_string())
            .filter(|n| check_name(n).is_ok())
        else {
            return;
        };
        let identity = format!("container:{name}");
        let generation = self
            .0
            .next_generation
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let mut entries = self.entries();
        if entries
            .get(&identity)
            .is_some_and(|e| e.info.state != AttachState::Failed)
        {
            return;
        }
        entries.insert(
            identity.clone(),
            Entry {
                info: AttachmentInfo {
                    name,
                    identity,
                    engine: EngineKind::Docker,
                    target: container.to_string(),
                    state: AttachState::Failed,
                    scopes: Vec::new(),
                    restarts: 0,
                    since: crate::util::now_rfc3339(),
                    notes: vec![format!(
                        "not attached: {}",
                        clawker_protocol::text::escape_bytes(reason.as_bytes())
                    )],
                },
                cancel: CancellationToken::new(),
                generation,
            },
        );
    }

    /// At start: the containers attached by hand before, attached again while they run;
    /// the ones gone are forgotten.
    pub async fn restore_kept(self) {
        let Some(k) = &self.0.kept else { return };
        if self.docker().is_none() {
            // No engine now is not "the containers are gone": keep them for a later start.
            return;
        }
        for m in k.get().manual {
            if let Err(e) = self
                .attach(
                    Target::Container(m.container.clone()),
                    AttachOptions {
                        allow: m.allow.clone(),
                        declared: m.declared.clone(),
                        ..AttachOptions::default()
                    },
                )
                .await
            {
                tracing::info!(container = %m.container, error = %format!("{e:#}"), "a container attached by hand before is not attached again: forgotten");
                k.forget(&m.container);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kept_across_a_load_and_one_record_per_container() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("attachments.json");
        let f = KeptFile::load(path.clone());
        f.keep_manual(Manual {
            container: "c1".into(),
            allow: vec!["open".into()],
            declared: vec![],
        });
        f.keep_detached(Detached {
            container: "c2".into(),
            started_at: "t1".into(),
        });
        f.keep_detached(Detached {
            container: "c2".into(),
            started_at: "t2".into(),
        });
        let again = KeptFile::load(path.clone());
        assert_eq!(again.get(), f.get());
        assert_eq!(again.get().detached.len(), 1);
        assert!(again.is_detached("c2", "t2") && !again.is_detached("c2", "t1"));
        again.forget("c1");
        assert!(KeptFile::load(path.clone()).get().manual.is_empty());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o077, 0, "{mode:o}");
        }
        std::fs::write(&path, b"not json").unwrap();
        assert_eq!(KeptFile::load(path).get(), Kept::default());
    }
}
