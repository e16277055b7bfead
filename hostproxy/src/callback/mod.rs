//! Callback sessions: registration, the per-session loopback listener, capture, long-poll,
//! expiry and deletion.
//!
//! Each session owns a `CancellationToken`; cancelling it (delete, expiry, daemon shutdown)
//! closes its listeners and wakes its long-polls. Captured data is kept in a `watch` channel
//! so a waiter sees it the instant it arrives.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use axum::http::{HeaderMap, Method};
use clawker_protocol::Secret;
use clawker_protocol::api::{self, CallbackData};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::backends::{BindError, PortBinder};
use crate::server::{ServeLimits, serve};
use crate::util::now_rfc3339;

mod listener;

pub use listener::{capture_response, not_found_page, success_page};

/// The page the browser sees after a capture. Static: it reflects nothing from the request.
pub const SUCCESS_PAGE: &str = "<!doctype html><html><head><meta charset=\"utf-8\"><title>Login complete</title></head><body><h1>Login complete</h1><p>You can close this tab and return to your terminal.</p></body></html>";

/// Headers never captured: they would hand host-browser secrets to the container.
const DROPPED_HEADERS: [&str; 3] = ["cookie", "authorization", "proxy-authorization"];

#[derive(Debug)]
pub struct Session {
    pub port: u16,
    /// Name of the token that registered it; only that token sees it.
    pub owner: String,
    pub path: String,
    state: Option<Secret<String>>,
    pub expires_at: SystemTime,
    captured: watch::Sender<Option<Arc<CallbackData>>>,
    cancel: CancellationToken,
}

/// What `register` needs.
#[derive(Debug)]
pub struct Registration {
    pub port: u16,
    pub path: String,
    pub ttl: Duration,
    pub state: Option<Secret<String>>,
    pub owner: String,
    /// Most live sessions `owner` may hold (scoped tokens), besides the global cap.
    pub owner_cap: Option<usize>,
}

/// The outcome of offering a request to a session.
#[derive(Debug, PartialEq, Eq)]
pub enum Offer {
    Captured,
    /// Already captured earlier: the browser gets the page again, nothing changes.
    AlreadyCaptured,
    /// Wrong method, path or state: 404, the session stays armed.
    NotForUs,
}

impl Session {
    fn matches(&self, method: &Method, path: &str, query: &str) -> bool {
        if (method != Method::GET && method != Method::POST) || path != self.path {
            return false;
        }
        match &self.state {
            None => true,
            Some(expected) => {
                let mut states = url::form_urlencoded::parse(query.as_bytes())
                    .filter(|(k, _)| k == "state")
                    .map(|(_, v)| v.into_owned());
                matches!((states.next(), states.next()), (Some(s), None) if subtle::ConstantTimeEq::ct_eq(s.as_bytes(), expected.expose().as_bytes()).into())
            }
        }
    }

    /// Captures the request if it is the one this session waits for.
    pub fn offer(
        &self,
        method: &Method,
        path: &str,
        query: &str,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Offer {
        if !self.matches(method, path, query) {
            return Offer::NotForUs;
        }
        let data = CallbackData {
            method: method.to_string(),
            path: path.to_string(),
            query: Secret::new(query.to_string()),
            headers: capture_headers(headers),
            body: Secret::new(String::from_utf8_lossy(body).into_owned()),
            received_at: now_rfc3339(),
        };
        self.inject(data)
    }

    /// Makes a capture arrive without a browser (mock-proxy's control API). First wins, as
    /// with [`Session::offer`].
    pub fn inject(&self, data: CallbackData) -> Offer {
        let mut first = false;
        self.captured.send_if_modified(|slot| {
            if slot.is_none() {
                *slot = Some(Arc::new(data));
                first = true;
            }
            first
        });
        if first {
            Offer::Captured
        } else {
            Offer::AlreadyCaptured
        }
    }

    /// The capture so far.
    pub fn data(&self) -> Option<Arc<CallbackData>> {
        self.captured.borrow().clone()
    }

    /// Waits up to `wait` for the capture; `None` if it did not come or the session ended.
    pub async fn wait(&self, wait: Duration) -> Option<Arc<CallbackData>> {
        let mut rx = self.captured.subscribe();
        tokio::select! {
            r = rx.wait_for(Option::is_some) => r.ok().and_then(|v| v.clone()),
            () = tokio::time::sleep(wait) => None,
            () = self.cancel.cancelled() => None,
        }
    }
}

fn capture_headers(headers: &HeaderMap) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for (name, value) in headers {
        if DROPPED_HEADERS.contains(&name.as_str()) {
            continue;
        }
        let Ok(v) = value.to_str() else { continue };
        out.entry(name.as_str().to_string())
            .and_modify(|e: &mut String| {
                e.push_str(", ");
                e.push_str(v);
            })
            .or_insert_with(|| v.to_string());
    }
    out
}

#[derive(Debug, thiserror::Error)]
pub enum RegisterError {
    #[error("too many live callback sessions (at most {0}): delete finished ones first")]
    TooMany(usize),
    #[error(transparent)]
    Bind(#[from] BindError),
    #[error("the operating system's random source failed")]
    Random,
}

struct StoreInner {
    sessions: Mutex<HashMap<String, Arc<Session>>>,
    max: usize,
    ports: Arc<dyn PortBinder>,
    daemon_port: u16,
    shutdown: CancellationToken,
}

/// All live callback sessions.
#[derive(Clone)]
pub struct SessionStore(Arc<StoreInner>);

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
        ports: Arc<dyn PortBinder>,
        shutdown: CancellationToken,
    ) -> Self {
        Self(Arc::new(StoreInner {
            sessions: Mutex::new(HashMap::new()),
            max,
            ports,
            daemon_port,
            shutdown,
        }))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Session>>> {
        self.0.sessions.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn daemon_port(&self) -> u16 {
        self.0.daemon_port
    }

    pub fn get(&self, id: &str) -> Option<Arc<Session>> {
        self.lock().get(id).cloned()
    }

    /// The session, only when `owner` registered it.
    pub fn get_owned(&self, id: &str, owner: &str) -> Option<Arc<Session>> {
        self.get(id).filter(|s| s.owner == owner)
    }

    /// Removes a session and closes its listener. Idempotent.
    pub fn remove(&self, id: &str) {
        if let Some(s) = self.lock().remove(id) {
            s.cancel.cancel();
        }
    }

    /// Creates a session, binds its listeners and arms its expiry. Returns the id.
    pub fn register(&self, reg: Registration) -> Result<(String, Arc<Session>), RegisterError> {
        // Reserve a slot under the lock first, so concurrent registrations cannot overshoot.
        let id = clawker_protocol::api::session_id_from_bytes(
            &crate::util::random_bytes::<{ api::SESSION_ID_BYTES }>()
                .map_err(|_| RegisterError::Random)?,
        );
        let listeners;
        let session;
        {
            let mut map = self.lock();
            if map.len() >= self.0.max {
                return Err(RegisterError::TooMany(self.0.max));
            }
            if let Some(cap) = reg.owner_cap
                && map.values().filter(|s| s.owner == reg.owner).count() >= cap
            {
                return Err(RegisterError::TooMany(cap));
            }
            listeners = self.0.ports.bind(reg.port)?;
            let (captured, _) = watch::channel(None);
            session = Arc::new(Session {
                port: reg.port,
                owner: reg.owner,
                path: reg.path,
                state: reg.state,
                expires_at: SystemTime::now() + reg.ttl,
                captured,
                cancel: self.0.shutdown.child_token(),
            });
            map.insert(id.clone(), session.clone());
        }
        self.spawn_listeners(listeners, session.clone());
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

    fn spawn_listeners(&self, listeners: Vec<std::net::TcpListener>, session: Arc<Session>) {
        let listeners: Vec<tokio::net::TcpListener> = listeners
            .into_iter()
            .filter_map(|l| tokio::net::TcpListener::from_std(l).ok())
            .collect();
        if listeners.is_empty() {
            return;
        }
        let app = listener::router(session.clone());
        let cancel = session.cancel.clone();
        let limits = ServeLimits {
            max_connections: 32,
            shutdown_grace: Duration::from_millis(200),
            ..ServeLimits::default()
        };
        tokio::spawn(serve(listeners, app, limits, cancel));
    }
}
