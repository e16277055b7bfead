//! All live callback sessions and the one listener each port has: registration (caps,
//! sharing a port, binding it), expiry and deletion.
//!
//! Each session owns a `CancellationToken` (delete, expiry, daemon shutdown wake its
//! long-polls); each port's listener owns another, cancelled when its last session goes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
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
        }))
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
