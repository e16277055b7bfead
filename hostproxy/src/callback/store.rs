//! All live callback sessions and the one listener each port has: registration (caps,
//! sharing a port, binding it), expiry and deletion.
//!
//! Each session owns a `CancellationToken` (delete, expiry, daemon shutdown wake its
//! long-polls); each port's listener owns another, cancelled when its last session goes.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use clawker_protocol::Secret;
use clawker_protocol::api;
use tokio_util::sync::CancellationToken;

use super::listener;
use super::session::{PortSessions, Session};
use crate::backends::{BindError, PortBinder};
use crate::server::{ServeLimits, serve};

/// What `register` needs.
#[derive(Debug)]
pub struct Registration {
    pub port: u16,
    pub path: String,
    pub ttl: Duration,
    /// `None` only when the caller's policy admits stateless sessions.
    pub state: Option<Secret<String>>,
    pub owner: String,
    /// Most live sessions `owner` may hold (scoped tokens), besides the global cap.
    pub owner_cap: Option<usize>,
}

#[derive(Debug, thiserror::Error)]
pub enum RegisterError {
    #[error("too many live callback sessions (at most {0}): delete finished ones first")]
    TooMany(usize),
    #[error(transparent)]
    Bind(#[from] BindError),
    #[error(
        "port {0} already has a login waiting for this path and state, or one without state that holds the port alone: finish or cancel it first"
    )]
    Conflict(u16),
    #[error("the operating system's random source failed")]
    Random,
}

/// One port: its sessions and the token that closes its listener.
struct PortEntry {
    sessions: Arc<PortSessions>,
    close: CancellationToken,
}

#[derive(Default)]
struct Tables {
    sessions: HashMap<String, Arc<Session>>,
    ports: HashMap<u16, PortEntry>,
}

struct Shared {
    tables: Mutex<Tables>,
    max: usize,
    binder: Arc<dyn PortBinder>,
    daemon_port: u16,
    shutdown: CancellationToken,
    /// `sessions.json`; `None`: kept in memory only.
    persist: Option<Arc<Persist>>,
}

/// The file behind a persisted store, rewritten whole after changes by one writer task on a
/// blocking thread: changes that come while it writes share the next write (coalesced), and
/// no runtime worker waits on the disk. A registration waits for the write that holds it
/// ([`SessionStore::saved`]) before it is answered, so a login in flight survives even a
/// `kill -9` right after its answer.
struct Persist {
    path: PathBuf,
    /// Held while a snapshot is taken and written, so a later write never carries an older
    /// snapshot than an earlier one.
    write: Mutex<()>,
    /// Counts changes; bumped after each change is in the tables.
    wanted: AtomicU64,
    /// The newest change count on disk (or given up on, with a warning).
    written: tokio::sync::watch::Sender<u64>,
    wake: tokio::sync::Notify,
    /// A writer task runs for this store (it was made inside a runtime); else every change
    /// is written at once.
    behind: bool,
    /// Writes made (the coalescing test counts them).
    writes: AtomicU64,
}

impl Drop for Shared {
    fn drop(&mut self) {
        // Lets the writer task see the store is gone.
        if let Some(p) = &self.persist {
            p.wake.notify_one();
        }
    }
}

/// Longest a registration waits for its write to `sessions.json`.
const SAVE_WAIT: Duration = Duration::from_secs(5);

/// One session in `sessions.json`: what it waits for, never what it captured (an
/// authorization code is not written to disk).
#[derive(serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Persisted {
    id: String,
    port: u16,
    owner: String,
    path: String,
    state: Option<String>,
    /// Unix seconds.
    expires: u64,
}

#[derive(serde::Serialize, serde::Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct PersistedFile {
    sessions: Vec<Persisted>,
}

/// All live callback sessions.
#[derive(Clone)]
pub struct SessionStore(Arc<Shared>);

impl std::fmt::Debug for SessionStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionStore")
            .field("live", &self.len())
            .finish()
    }
}

impl SessionStore {
    pub fn new(
        max: usize,
        daemon_port: u16,
        binder: Arc<dyn PortBinder>,
        shutdown: CancellationToken,
    ) -> Self {
        Self(Arc::new(Shared {
            tables: Mutex::new(Tables::default()),
            max,
            binder,
            daemon_port,
            shutdown,
            persist: None,
        }))
    }

    /// The same store, kept in `path` across restarts (see [`SessionStore::restore`]).
    pub fn persisted(
        max: usize,
        daemon_port: u16,
        binder: Arc<dyn PortBinder>,
        shutdown: CancellationToken,
        path: PathBuf,
    ) -> Self {
        let runtime = tokio::runtime::Handle::try_current().ok();
        let persist = Arc::new(Persist {
            path,
            write: Mutex::new(()),
            wanted: AtomicU64::new(0),
            written: tokio::sync::watch::Sender::new(0),
            wake: tokio::sync::Notify::new(),
            behind: runtime.is_some(),
            writes: AtomicU64::new(0),
        });
        let store = Self(Arc::new(Shared {
            tables: Mutex::new(Tables::default()),
            max,
            binder,
            daemon_port,
            shutdown,
            persist: Some(persist.clone()),
        }));
        if let Some(rt) = runtime {
            rt.spawn(write_behind(persist, Arc::downgrade(&store.0)));
        }
        store
    }

    /// Notes a change for `sessions.json`: the writer task writes it soon, with whatever
    /// else changed meanwhile. Without one (a store made outside a runtime) it is written
    /// at once.
    fn save(&self) {
        let Some(p) = &self.0.persist else {
            return;
        };
        p.wanted.fetch_add(1, Ordering::SeqCst);
        if p.behind {
            p.wake.notify_one();
        } else {
            self.write_now();
        }
    }

    /// Waits until every change made before this call is on disk (or its write failed and
    /// was logged), for at most [`SAVE_WAIT`]: a disk that hangs delays an answer, it does
    /// not withhold it (the session works; it would not survive a restart). Returns at once
    /// for a store kept in memory.
    pub async fn saved(&self) {
        let Some(p) = &self.0.persist else {
            return;
        };
        let want = p.wanted.load(Ordering::SeqCst);
        let mut rx = p.written.subscribe();
        if tokio::time::timeout(SAVE_WAIT, rx.wait_for(|w| *w >= want))
            .await
            .is_err()
        {
            tracing::warn!(file = %p.path.display(), "the callback sessions were not written within 5 s: answering anyway");
        }
    }

    /// Writes what is not on disk yet, on this thread (the daemon's last act on stop).
    pub fn flush(&self) {
        if let Some(p) = &self.0.persist
            && p.wanted.load(Ordering::SeqCst) > *p.written.borrow()
        {
            self.write_now();
        }
    }

    /// Writes every live session to `sessions.json` (0600, atomically). A failure is
    /// logged: the sessions still work, they just would not survive a restart.
    fn write_now(&self) {
        let Some(p) = &self.0.persist else {
            return;
        };
        let _order = p.write.lock().unwrap_or_else(|e| e.into_inner());
        // Read before the snapshot: every change counted so far is in the tables already.
        let covers = p.wanted.load(Ordering::SeqCst);
        let path = &p.path;
        p.writes.fetch_add(1, Ordering::Relaxed);
        let file = PersistedFile {
            sessions: self
                .lock()
                .sessions
                .iter()
                .map(|(id, s)| Persisted {
                    id: id.clone(),
                    port: s.port,
                    owner: s.owner.clone(),
                    path: s.path.clone(),
                    state: s.state.as_ref().map(|st| st.expose().clone()),
                    expires: s
                        .expires_at
                        .duration_since(std::time::UNIX_EPOCH)
                        .map(|d| d.as_secs())
                        .unwrap_or(0),
                })
                .collect(),
        };
        // Never an empty body over the file: the sessions of the last write stay.
        match serde_json::to_vec(&file) {
            Ok(body) => {
                if let Err(e) = crate::util::write_private_atomic(path, &body) {
                    tracing::warn!(error = %e, file = %path.display(), "cannot write the callback sessions");
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot serialise the callback sessions: the file is left as it was");
            }
        }
        p.written.send_if_modified(|w| {
            let newer = covers > *w;
            if newer {
                *w = covers;
            }
            newer
        });
    }

    /// Takes the sessions of `sessions.json` back after a restart: expired ones are
    /// dropped, the rest registered again under their ids with the time they had left and
    /// their ports bound again (one whose port is now taken is dropped, with a warning).
    /// Returns how many came back.
    pub fn restore(&self) -> usize {
        let Some(persist) = &self.0.persist else {
            return 0;
        };
        let path = &persist.path;
        let file: PersistedFile = match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                tracing::warn!(error = %e, file = %path.display(), "unreadable callback sessions: starting without them");
                PersistedFile::default()
            }),
            Err(_) => PersistedFile::default(),
        };
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let mut restored = 0;
        for p in file.sessions {
            if p.expires <= now || !api::is_session_id(&p.id) {
                continue;
            }
            let reg = Registration {
                port: p.port,
                path: p.path,
                ttl: Duration::from_secs(p.expires - now),
                state: p.state.map(Secret::new),
                owner: p.owner,
                owner_cap: None,
            };
            match self.insert(p.id, reg) {
                Ok(_) => restored += 1,
                Err(e) => {
                    tracing::warn!(port = p.port, error = %e, "a callback session could not be restored")
                }
            }
        }
        self.save();
        restored
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Tables> {
        self.0.tables.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn len(&self) -> usize {
        self.lock().sessions.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn daemon_port(&self) -> u16 {
        self.0.daemon_port
    }

    pub fn get(&self, id: &str) -> Option<Arc<Session>> {
        self.lock().sessions.get(id).cloned()
    }

    /// The session, only when `owner` registered it.
    pub fn get_owned(&self, id: &str, owner: &str) -> Option<Arc<Session>> {
        self.get(id).filter(|s| s.owner == owner)
    }

    /// Removes a session; closes its port's listener when it was the last one there.
    /// Idempotent.
    pub fn remove(&self, id: &str) {
        {
            let mut t = self.lock();
            let Some(s) = t.sessions.remove(id) else {
                return;
            };
            s.cancel.cancel();
            if let Some(entry) = t.ports.get(&s.port)
                && entry.sessions.remove(&s)
            {
                entry.close.cancel();
                t.ports.remove(&s.port);
            }
        }
        self.save();
    }

    /// Removes every session `owner` registered (its identity ended); how many.
    pub fn remove_owned_by(&self, owner: &str) -> usize {
        let ids: Vec<String> = self
            .lock()
            .sessions
            .iter()
            .filter(|(_, s)| s.owner == owner)
            .map(|(id, _)| id.clone())
            .collect();
        for id in &ids {
            self.remove(id);
        }
        ids.len()
    }

    /// Creates a session, binds its port unless a session of ours already listens there,
    /// and arms its expiry. Returns the id.
    pub fn register(&self, reg: Registration) -> Result<(String, Arc<Session>), RegisterError> {
        let id = api::session_id_from_bytes(
            &crate::util::random_bytes::<{ api::SESSION_ID_BYTES }>()
                .map_err(|_| RegisterError::Random)?,
        );
        let out = self.insert(id, reg)?;
        self.save();
        Ok(out)
    }

    fn insert(
        &self,
        id: String,
        reg: Registration,
    ) -> Result<(String, Arc<Session>), RegisterError> {
        let session;
        {
            // Caps, conflicts and the bind all under one lock, so concurrent registrations
            // can neither overshoot nor bind one port twice.
            let mut t = self.lock();
            if t.sessions.len() >= self.0.max {
                return Err(RegisterError::TooMany(self.0.max));
            }
            if let Some(cap) = reg.owner_cap
                && t.sessions.values().filter(|s| s.owner == reg.owner).count() >= cap
            {
                return Err(RegisterError::TooMany(cap));
            }
            session = Arc::new(Session::new(
                reg.port,
                reg.owner,
                reg.path,
                reg.state,
                reg.ttl,
                self.0.shutdown.child_token(),
            ));
            match t.ports.get(&reg.port) {
                Some(entry) => {
                    let taken = entry.sessions.snapshot().iter().any(|s| {
                        s.is_stateless()
                            || session.is_stateless()
                            || s.waits_for(&session.path, session.state.as_ref())
                    });
                    if taken {
                        return Err(RegisterError::Conflict(reg.port));
                    }
                    entry.sessions.add(session.clone());
                }
                None => {
                    let listeners = self.0.binder.bind(reg.port)?;
                    let entry = PortEntry {
                        sessions: Arc::new(PortSessions::new(reg.port)),
                        close: self.0.shutdown.child_token(),
                    };
                    entry.sessions.add(session.clone());
                    spawn_listener(listeners, &entry);
                    t.ports.insert(reg.port, entry);
                }
            }
            t.sessions.insert(id.clone(), session.clone());
        }
        let (store, sid, cancel, ttl) = (self.clone(), id.clone(), session.cancel.clone(), reg.ttl);
        tokio::spawn(async move {
            tokio::select! {
                () = tokio::time::sleep(ttl) => {
                    tracing::debug!("callback session expired");
                    store.remove(&sid);
                }
                () = cancel.cancelled() => {}
            }
        });
        Ok((id, session))
    }
}

/// The writer task of a persisted store: one write per wake-up, on a blocking thread; it
/// ends with the store.
async fn write_behind(p: Arc<Persist>, store: Weak<Shared>) {
    loop {
        p.wake.notified().await;
        let Some(shared) = store.upgrade() else {
            return;
        };
        let store = SessionStore(shared);
        if tokio::task::spawn_blocking(move || store.write_now())
            .await
            .is_err()
        {
            return;
        }
    }
}

fn spawn_listener(listeners: Vec<std::net::TcpListener>, entry: &PortEntry) {
    let listeners: Vec<tokio::net::TcpListener> = listeners
        .into_iter()
        .filter_map(|l| tokio::net::TcpListener::from_std(l).ok())
        .collect();
    if listeners.is_empty() {
        return;
    }
    let app = listener::router(entry.sessions.clone());
    let limits = ServeLimits {
        max_connections: 32,
        shutdown_grace: Duration::from_millis(200),
        ..ServeLimits::default()
    };
    tokio::spawn(serve(listeners, app, limits, entry.close.clone()));
}

#[cfg(test)]
#[path = "store_tests.rs"]
mod tests;
