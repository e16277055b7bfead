//! The daemon's shared state, its error type and `router(state)`.

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::extract::FromRequest;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use clawker_protocol::Secret;
use clawker_protocol::api::{self, ErrorResponse, routes};
use clawker_protocol::host::HostName;
use serde::de::DeserializeOwned;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::backends::Backends;
use crate::config::Settings;
use crate::ratelimit::RateLimiter;
use crate::sessions::SessionStore;
use crate::{gates, routes as handlers};

/// A failure with the status and the lowercase message the client sees.
///
/// 5xx messages name what failed on the host, never internals (paths, errors of git).
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            retry_after: None,
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut r = (self.status, Json(ErrorResponse::new(self.message))).into_response();
        if let Some(secs) = self.retry_after
            && let Ok(v) = http::HeaderValue::from_str(&secs.to_string())
        {
            r.headers_mut().insert(http::header::RETRY_AFTER, v);
        }
        r
    }
}

/// A JSON body: read under the route's size limit (413 beyond it), with unknown fields and
/// syntax errors answered 400 in the API's error shape (axum's own `Json` says 422).
#[derive(Debug)]
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self, Self::Rejection> {
        let read = bytes::Bytes::from_request(req, state);
        // The head arrived in time (hyper's header timeout); the body must not trickle either.
        let body = match tokio::time::timeout(std::time::Duration::from_secs(10), read).await {
            Err(_) => {
                return Err(ApiError::new(
                    StatusCode::REQUEST_TIMEOUT,
                    "request body too slow",
                ));
            }
            Ok(Err(rejection)) => {
                let status = rejection.status();
                let message = if status == StatusCode::PAYLOAD_TOO_LARGE {
                    "request body too large".to_string()
                } else {
                    "cannot read request body".to_string()
                };
                return Err(ApiError::new(status, message));
            }
            Ok(Ok(b)) => b,
        };
        serde_json::from_slice(&body).map(ApiJson).map_err(|e| {
            ApiError::bad_request(format!("invalid json body: {}", json_error_text(&e)))
        })
    }
}

/// serde's message without echoing input values (which may be secrets).
fn json_error_text(e: &serde_json::Error) -> String {
    let msg = e.to_string();
    // "unknown field `x`, expected ..." and "missing field `x`" name fields, not values.
    if msg.starts_with("unknown field") || msg.starts_with("missing field") {
        return msg.split(" at line").next().unwrap_or(&msg).to_string();
    }
    match e.classify() {
        serde_json::error::Category::Syntax | serde_json::error::Category::Eof => {
            "malformed json".into()
        }
        serde_json::error::Category::Data => "a field has the wrong type or value".into(),
        serde_json::error::Category::Io => "cannot read body".into(),
    }
}

/// How the token gate decides.
#[derive(Debug, Clone)]
pub enum Auth {
    /// `Authorization: Bearer <this token>`, compared in constant time.
    Token(Secret<String>),
    /// Any bearer token (mock-proxy without `--token`): the header must still be present.
    AnyBearer,
    /// `--no-auth`.
    Disabled,
}

/// Everything a request handler may use.
#[derive(Debug)]
pub struct Inner {
    pub settings: Settings,
    pub auth: Auth,
    pub backends: Backends,
    pub sessions: SessionStore,
    pub git_slots: Semaphore,
    pub open_limiter: RateLimiter,
    /// Host names the `Host` header may carry (port checked separately).
    pub allowed_hosts: Vec<HostName>,
    pub version: &'static str,
    pub started: std::time::Instant,
    pub audit: crate::audit::Audit,
    /// Scoped tokens (`None`: only the user's token, as in mock-proxy).
    pub tokens: Option<crate::tokens::TokenStore>,
    /// Per-token rate limits for scoped tokens.
    pub token_limits: crate::ratelimit::PerKey,
    pub listen: Vec<std::net::IpAddr>,
}

/// Cheap to clone; shared by every connection.
#[derive(Debug, Clone)]
pub struct AppState(pub Arc<Inner>);

impl std::ops::Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

/// The built-in names every daemon accepts in `Host`.
pub fn builtin_host_names() -> Vec<HostName> {
    vec![
        HostName::Name("localhost".into()),
        HostName::Ip(std::net::Ipv4Addr::LOCALHOST.into()),
        HostName::Ip(std::net::Ipv6Addr::LOCALHOST.into()),
        HostName::Name("host.docker.internal".into()),
    ]
}

impl AppState {
    /// Builds the state. `listen_addrs` are the addresses actually served (also accepted in
    /// `Host`); `shutdown` closes every callback listener when cancelled.
    pub fn new(
        settings: Settings,
        auth: Auth,
        backends: Backends,
        listen_addrs: &[std::net::IpAddr],
        shutdown: CancellationToken,
    ) -> Self {
        let mut allowed_hosts = builtin_host_names();
        for a in listen_addrs {
            if !a.is_unspecified() {
                allowed_hosts.push(HostName::Ip(*a));
            }
        }
        allowed_hosts.extend(settings.extra_hosts.iter().cloned());
        allowed_hosts.dedup();
        let sessions = SessionStore::new(
            settings.max_callback_sessions,
            settings.port,
            backends.ports.clone(),
            shutdown,
        );
        Self(Arc::new(Inner {
            git_slots: Semaphore::new(settings.git.max_concurrent),
            open_limiter: RateLimiter::per_minute(settings.open_rate_per_minute),
            settings,
            auth,
            backends,
            sessions,
            allowed_hosts,
            version: env!("CARGO_PKG_VERSION"),
            started: std::time::Instant::now(),
            audit: crate::audit::Audit::disabled(),
            tokens: None,
            token_limits: crate::ratelimit::PerKey::default(),
            listen: listen_addrs.to_vec(),
        }))
    }
}

impl AppState {
    /// Writes every decision on a sensitive route to `audit` (call right after `new`).
    pub fn with_audit(mut self, audit: crate::audit::Audit) -> Self {
        if let Some(inner) = Arc::get_mut(&mut self.0) {
            inner.audit = audit;
        }
        self
    }

    /// Accepts the scoped tokens of `store` besides the user's token (call right after `new`).
    pub fn with_tokens(mut self, store: crate::tokens::TokenStore) -> Self {
        if let Some(inner) = Arc::get_mut(&mut self.0) {
            inner.tokens = Some(store);
        }
        self
    }
}

/// The daemon's routes, with every gate of SPEC.md 4.1 in front of them.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route(routes::HEALTH, get(handlers::health))
        .route(routes::STATUS, get(handlers::status))
        .route(routes::OPEN_URL, post(handlers::open_url))
        .route(routes::GIT_CREDENTIAL, post(handlers::git_credential))
        .route(
            routes::SSH_AGENT,
            post(handlers::ssh_agent).layer(DefaultBodyLimit::max(api::MAX_AGENT_BODY)),
        )
        .route(routes::CALLBACK_REGISTER, post(handlers::callback_register))
        .route(routes::CALLBACK_DATA, get(handlers::callback_data))
        .route(
            routes::CALLBACK,
            axum::routing::delete(handlers::callback_delete),
        )
        .route(
            "/cb/{id}/{*path}",
            get(handlers::cb_capture).post(handlers::cb_capture),
        )
        .route(
            "/cb/{id}/",
            get(handlers::cb_capture_root).post(handlers::cb_capture_root),
        )
        .fallback(|| async { ApiError::not_found("not found") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method not allowed")
        })
        .layer(DefaultBodyLimit::max(api::MAX_BODY))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            gates::api_gates,
        ))
        .with_state(state)
}
