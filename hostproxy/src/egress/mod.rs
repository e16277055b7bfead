//! Egress with host-held secrets (SPEC.md 13): the container calls a service through the
//! daemon, and the daemon adds the credential on the host. `git.rs`: git's smart HTTP
//! (`/git/HOST/PATH…`) with the credential from the host's `git credential fill`.
//!
//! The HTTPS client is a backend (`backends::Upstream`: rustls with `ring` under the
//! `egress` feature, on in the `hostproxy` binary; mock-proxy's answers without a network).

pub mod api;
pub mod git;
pub mod secret;

use std::collections::HashMap;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Mutex;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::Body;

use clawker_protocol::credential::CredentialFields;

use crate::auth::KeySlot;

/// Egress requests (and their streaming replies) one identity may have open at once, per
/// route (declared APIs, git).
pub const EGRESS_RUNNING: usize = 16;

/// git egress requests per minute, per identity and git host: a clone is two or three
/// requests, a push three or four; an agent looping on `git fetch` is slowed, not a user.
pub const GIT_EGRESS_PER_MINUTE: u32 = 240;

/// Request headers never carried upstream: hop-by-hop ones, and whatever could carry a
/// credential or identity of the container's choosing (the daemon adds the real one).
const DROPPED_REQUEST: &[&str] = &[
    "host",
    "authorization",
    "cookie",
    "connection",
    "keep-alive",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "expect",
];

/// Response headers never handed to the container: hop-by-hop ones and cookies.
const DROPPED_RESPONSE: &[&str] = &[
    "connection",
    "keep-alive",
    "transfer-encoding",
    "upgrade",
    "set-cookie",
    "proxy-authenticate",
    "trailer",
];

/// The container's request headers as they may go upstream: without the hop-by-hop ones,
/// `Authorization`, `Cookie`, `Proxy-*`, and `also` (a declared egress's secret header).
pub(crate) fn request_headers(
    from: &http::HeaderMap,
    also: Option<&http::HeaderName>,
) -> http::HeaderMap {
    let mut out = http::HeaderMap::new();
    for (k, v) in from {
        let name = k.as_str();
        if DROPPED_REQUEST.contains(&name) || name.starts_with("proxy-") || also == Some(k) {
            continue;
        }
        out.append(k.clone(), v.clone());
    }
    out
}

/// An upstream's reply headers as they may go to the container: without hop-by-hop ones
/// and cookies.
pub(crate) fn clean_reply(h: &mut http::HeaderMap) {
    for name in DROPPED_RESPONSE {
        h.remove(*name);
    }
}

/// A body that counts the bytes passing through it (into `shared`), and calls `done` with its
/// count once when it is dropped — at its end, or when the other side went away. Egress
/// audits bytes each way with it.
pub(crate) struct Metered {
    inner: axum::body::Body,
    bytes: u64,
    shared: Option<std::sync::Arc<std::sync::atomic::AtomicU64>>,
    done: Option<Box<dyn FnOnce(u64) + Send>>,
}

impl Metered {
    /// `inner`, its bytes added to `into` as they pass.
    pub(crate) fn counting(
        inner: axum::body::Body,
        into: std::sync::Arc<std::sync::atomic::AtomicU64>,
    ) -> axum::body::Body {
        axum::body::Body::new(Self {
            inner,
            bytes: 0,
            shared: Some(into),
            done: None,
        })
    }

    /// `inner`, then `done(bytes)` once it is dropped.
    pub(crate) fn then(
        inner: axum::body::Body,
        done: impl FnOnce(u64) + Send + 'static,
    ) -> axum::body::Body {
        axum::body::Body::new(Self {
            inner,
            bytes: 0,
            shared: None,
            done: Some(Box::new(done)),
        })
    }
}

impl http_body::Body for Metered {
    type Data = bytes::Bytes;
    type Error = axum::Error;
    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let this = self.get_mut();
        let polled = std::pin::Pin::new(&mut this.inner).poll_frame(cx);
        if let std::task::Poll::Ready(Some(Ok(frame))) = &polled
            && let Some(data) = frame.data_ref()
        {
            this.bytes += data.len() as u64;
            if let Some(s) = &this.shared {
                s.fetch_add(data.len() as u64, std::sync::atomic::Ordering::Relaxed);
            }
        }
        polled
    }
    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }
    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Metered {
    fn drop(&mut self) {
        if let Some(done) = self.done.take() {
            done(self.bytes);
        }
    }
}

/// One egress call's bytes up, counted from the start, and when it started: the reply is
/// audited when it is over (or abandoned) with its status, time and bytes each way.
pub(crate) struct Meter {
    up: std::sync::Arc<std::sync::atomic::AtomicU64>,
    started: std::time::Instant,
}

impl Meter {
    /// Starts counting `req`'s body.
    pub(crate) fn start(req: axum::extract::Request) -> (axum::extract::Request, Self) {
        let up = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let (parts, body) = req.into_parts();
        let req = axum::extract::Request::from_parts(parts, Metered::counting(body, up.clone()));
        let started = std::time::Instant::now();
        (req, Self { up, started })
    }

    /// `resp`, whose end calls `record(audit, reason)` with the status, time and bytes.
    pub(crate) fn audited(
        self,
        resp: axum::response::Response,
        audit: crate::audit::Audit,
        record: impl FnOnce(&crate::audit::Audit, String) + Send + 'static,
    ) -> axum::response::Response {
        let (head, body) = resp.into_parts();
        let status = head.status;
        let done = move |down: u64| {
            let reason = format!(
                "upstream {} in {} ms; {} bytes up, {down} down",
                status.as_u16(),
                self.started.elapsed().as_millis(),
                self.up.load(std::sync::atomic::Ordering::Relaxed)
            );
            record(&audit, reason);
        };
        axum::response::Response::from_parts(head, Metered::then(body, done))
    }
}

/// How long a credential the host's git gave for one identity and repository is kept for
/// that identity's next requests (one git command makes several), since its last use.
const HELD_FOR: Duration = Duration::from_secs(300);
/// Credentials held at most (identities × repositories).
const MAX_HELD: usize = 256;

/// Whose credential for what: the identity's owner key, the credential host, the repository.
type HeldKey = (String, String, String);

/// The credentials held between a git command's requests and the secrets of `[[egress]]`
/// programs. Only in the daemon's memory.
#[derive(Debug)]
pub struct Egress {
    ca_file: Option<PathBuf>,
    /// The secrets of `[[egress]]` programs, kept for their ttl.
    pub secrets: secret::Secrets,
    held: Mutex<HashMap<HeldKey, (CredentialFields, Instant)>>,
}

impl Egress {
    /// `ca_file`: a private CA (PEM) trusted besides the host's roots (`[git] ca_file`).
    pub fn new(ca_file: Option<PathBuf>) -> Self {
        Self {
            ca_file,
            secrets: secret::Secrets::default(),
            held: Mutex::new(HashMap::new()),
        }
    }

    fn held(&self) -> std::sync::MutexGuard<'_, HashMap<HeldKey, (CredentialFields, Instant)>> {
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The credential held for `key`, if it was used within [`HELD_FOR`].
    fn get(&self, key: &HeldKey) -> Option<CredentialFields> {
        let mut held = self.held();
        let now = Instant::now();
        match held.get_mut(key) {
            Some((c, at)) if now.duration_since(*at) < HELD_FOR => {
                *at = now;
                Some(c.clone())
            }
            Some(_) => {
                held.remove(key);
                None
            }
            None => None,
        }
    }

    fn put(&self, key: HeldKey, cred: CredentialFields) {
        let mut held = self.held();
        let now = Instant::now();
        held.retain(|_, (_, at)| now.duration_since(*at) < HELD_FOR);
        if held.len() >= MAX_HELD {
            let oldest = held
                .iter()
                .min_by_key(|(_, (_, at))| *at)
                .map(|(k, _)| k.clone());
            if let Some(k) = oldest {
                held.remove(&k);
            }
        }
        held.insert(key, (cred, now));
    }

    fn drop_held(&self, key: &HeldKey) {
        self.held().remove(key);
    }

    /// Forgets what an identity held (it ended).
    pub fn forget(&self, owner_key: &str) {
        self.held().retain(|(o, _, _), _| o != owner_key);
    }
}

/// A reply body that holds the identity's egress slot until it is done.
pub(crate) struct Held {
    inner: Body,
    _slot: KeySlot,
}

impl Held {
    pub(crate) fn new(inner: Body, slot: KeySlot) -> Self {
        Self { inner, _slot: slot }
    }
}

impl http_body::Body for Held {
    type Data = bytes::Bytes;
    type Error = axum::Error;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }
    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }
    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}
