//! One callback session (what it waits for, what it captured, who may see it) and the
//! sessions that share one port. A leaf: it knows no listener, no store and no router.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use axum::http::{HeaderMap, Method, header};
use clawker_protocol::Secret;
use clawker_protocol::api::CallbackData;
use subtle::ConstantTimeEq;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::util::now_rfc3339;

/// The only request headers a capture keeps (SPEC.md 4.2): what a CLI's local server may
/// need to answer the redirect. Cookies, authorization and API keys of host clients that
/// happen to reach the port are dropped.
const CAPTURED_HEADERS: [&str; 4] = ["accept", "accept-language", "content-type", "user-agent"];

/// A browser request as the capture sees it.
#[derive(Clone, Copy)]
pub struct Incoming<'a> {
    pub method: &'a Method,
    pub path: &'a str,
    pub query: &'a str,
    pub headers: &'a HeaderMap,
    pub body: &'a [u8],
}

impl std::fmt::Debug for Incoming<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The query and body carry the authorization code: never formatted.
        f.debug_struct("Incoming")
            .field("method", self.method)
            .finish_non_exhaustive()
    }
}

impl Incoming<'_> {
    /// Every `state` the request carries: in the query, and for a POST with a form body (an
    /// OAuth `form_post`) in the body too.
    fn states(&self) -> Vec<String> {
        let mut out: Vec<String> = url::form_urlencoded::parse(self.query.as_bytes())
            .filter(|(k, _)| k == "state")
            .map(|(_, v)| v.into_owned())
            .collect();
        let form = self
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|v| {
                v.trim()
                    .eq_ignore_ascii_case("application/x-www-form-urlencoded")
            });
        if self.method == Method::POST && form {
            out.extend(
                url::form_urlencoded::parse(self.body)
                    .filter(|(k, _)| k == "state")
                    .map(|(_, v)| v.into_owned()),
            );
        }
        out
    }
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

/// Something a browser request can be offered to: one session, or all of one port's.
pub trait Capture: Send + Sync + 'static {
    fn offer(&self, req: &Incoming<'_>) -> Offer;
    /// The port, for the log line.
    fn port(&self) -> u16;
}

pub struct Session {
    pub port: u16,
    /// Who registered it (a token's name); only they see it.
    pub owner: String,
    pub path: String,
    /// `None` only when the config admits stateless sessions; such a session holds its
    /// port alone.
    pub(super) state: Option<Secret<String>>,
    pub expires_at: SystemTime,
    captured: watch::Sender<Option<Arc<CallbackData>>>,
    pub(super) cancel: CancellationToken,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Not the state, not the capture (watch::Sender's Debug would print it).
        f.debug_struct("Session")
            .field("port", &self.port)
            .field("owner", &self.owner)
            .field("path", &self.path)
            .field("stateless", &self.state.is_none())
            .finish_non_exhaustive()
    }
}

impl Session {
    pub(super) fn new(
        port: u16,
        owner: String,
        path: String,
        state: Option<Secret<String>>,
        ttl: Duration,
        cancel: CancellationToken,
    ) -> Self {
        let (captured, _) = watch::channel(None);
        Self {
            port,
            owner,
            path,
            state,
            expires_at: SystemTime::now() + ttl,
            captured,
            cancel,
        }
    }

    pub fn is_stateless(&self) -> bool {
        self.state.is_none()
    }

    /// Whether this session waits for exactly `path` and `state`.
    pub(super) fn waits_for(&self, path: &str, state: Option<&Secret<String>>) -> bool {
        self.path == path
            && match (&self.state, state) {
                (Some(a), Some(b)) => a.expose() == b.expose(),
                (None, None) => true,
                _ => false,
            }
    }

    fn matches(&self, req: &Incoming<'_>) -> bool {
        if (req.method != Method::GET && req.method != Method::POST) || req.path != self.path {
            return false;
        }
        let Some(expected) = &self.state else {
            return true;
        };
        // Exactly one state, equal to ours (compared in constant time).
        match req.states().as_slice() {
            [one] => one.as_bytes().ct_eq(expected.expose().as_bytes()).into(),
            _ => false,
        }
    }

    /// Makes a capture arrive without a browser (mock-proxy's control API). First wins, as
    /// with [`Capture::offer`].
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

impl Capture for Session {
    fn offer(&self, req: &Incoming<'_>) -> Offer {
        if !self.matches(req) {
            return Offer::NotForUs;
        }
        self.inject(CallbackData {
            method: req.method.to_string(),
            path: req.path.to_string(),
            query: Secret::new(req.query.to_string()),
            headers: capture_headers(req.headers),
            body: Secret::new(String::from_utf8_lossy(req.body).into_owned()),
            received_at: now_rfc3339(),
        })
    }

    fn port(&self) -> u16 {
        self.port
    }
}

fn capture_headers(headers: &HeaderMap) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for name in CAPTURED_HEADERS {
        let values: Vec<&str> = headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        if !values.is_empty() {
            out.insert(name.to_string(), values.join(", "));
        }
    }
    out
}

/// The live sessions of one port: every browser request to the port's listener is offered
/// to each in turn; the one whose path and state match takes it.
#[derive(Debug)]
pub struct PortSessions {
    port: u16,
    sessions: Mutex<Vec<Arc<Session>>>,
}

impl PortSessions {
    pub(super) fn new(port: u16) -> Self {
        Self {
            port,
            sessions: Mutex::new(Vec::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Arc<Session>>> {
        self.sessions.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn add(&self, s: Arc<Session>) {
        self.lock().push(s);
    }

    /// Removes `s`; says whether the port has no session left.
    pub(super) fn remove(&self, s: &Arc<Session>) -> bool {
        let mut v = self.lock();
        v.retain(|x| !Arc::ptr_eq(x, s));
        v.is_empty()
    }

    pub(super) fn snapshot(&self) -> Vec<Arc<Session>> {
        self.lock().clone()
    }
}

impl Capture for PortSessions {
    fn offer(&self, req: &Incoming<'_>) -> Offer {
        for s in self.snapshot() {
            match s.offer(req) {
                Offer::NotForUs => continue,
                other => return other,
            }
        }
        Offer::NotForUs
    }

    fn port(&self) -> u16 {
        self.port
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(state: Option<&str>) -> Session {
        Session::new(
            5000,
            "user".into(),
            "/callback".into(),
            state.map(|s| Secret::new(s.to_string())),
            Duration::from_secs(60),
            CancellationToken::new(),
        )
    }

    fn get<'a>(path: &'a str, query: &'a str, headers: &'a HeaderMap) -> Incoming<'a> {
        Incoming {
            method: &Method::GET,
            path,
            query,
            headers,
            body: b"",
        }
    }

    #[test]
    fn only_the_exact_path_and_one_exact_state_are_captured() {
        let h = HeaderMap::new();
        let s = session(Some("st-1"));
        for (path, query) in [
            ("/callback", "code=x"),
            ("/callback", "code=x&state=st-2"),
            ("/callback", "code=x&state=st-1&state=st-1"),
            ("/callback/", "code=x&state=st-1"),
            ("/other", "code=x&state=st-1"),
        ] {
            assert_eq!(
                s.offer(&get(path, query, &h)),
                Offer::NotForUs,
                "{path}?{query}"
            );
        }
        assert!(s.data().is_none(), "nothing was used up");
        assert_eq!(
            s.offer(&get("/callback", "code=x&state=st-1", &h)),
            Offer::Captured
        );
        assert_eq!(
            s.offer(&get("/callback", "code=y&state=st-1", &h)),
            Offer::AlreadyCaptured
        );
        assert_eq!(s.data().unwrap().query.expose(), "code=x&state=st-1");
    }

    #[test]
    fn a_form_post_carries_its_state_in_the_body() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONTENT_TYPE,
            "application/x-www-form-urlencoded".parse().unwrap(),
        );
        let s = session(Some("st-1"));
        let post = |body: &'static [u8]| Incoming {
            method: &Method::POST,
            path: "/callback",
            query: "",
            headers: &h,
            body,
        };
        assert_eq!(s.offer(&post(b"code=x&state=nope")), Offer::NotForUs);
        assert_eq!(s.offer(&post(b"code=x&state=st-1")), Offer::Captured);
    }

    #[test]
    fn only_allow_listed_headers_are_kept() {
        let mut h = HeaderMap::new();
        for (k, v) in [
            ("cookie", "sid=1"),
            ("authorization", "Bearer t"),
            ("x-api-key", "k"),
            ("private-token", "p"),
            ("x-vault-token", "v"),
            ("user-agent", "Chromium"),
            ("accept", "text/html"),
        ] {
            h.insert(
                http::HeaderName::from_static(k),
                http::HeaderValue::from_static(v),
            );
        }
        let kept = capture_headers(&h);
        assert_eq!(
            kept.keys().map(String::as_str).collect::<Vec<_>>(),
            ["accept", "user-agent"]
        );
    }

    #[test]
    fn sessions_on_one_port_each_take_their_own_state() {
        let h = HeaderMap::new();
        let port = PortSessions::new(5000);
        let (a, b) = (Arc::new(session(Some("a"))), Arc::new(session(Some("b"))));
        port.add(a.clone());
        port.add(b.clone());
        assert_eq!(
            port.offer(&get("/callback", "code=2&state=b", &h)),
            Offer::Captured
        );
        assert_eq!(
            port.offer(&get("/callback", "code=3&state=c", &h)),
            Offer::NotForUs
        );
        assert!(a.data().is_none());
        assert_eq!(b.data().unwrap().query.expose(), "code=2&state=b");
        assert!(!port.remove(&a));
        assert!(port.remove(&b));
    }

    #[test]
    fn debug_shows_neither_state_nor_capture() {
        let s = session(Some("secret-state"));
        s.offer(&get(
            "/callback",
            "code=secret-code&state=secret-state",
            &HeaderMap::new(),
        ));
        let text = format!("{s:?}");
        assert!(!text.contains("secret"), "{text}");
    }
}
