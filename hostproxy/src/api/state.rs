//! `AppState`: everything a request handler may use, built once per daemon.

use std::sync::Arc;

use clawker_protocol::Secret;
use clawker_protocol::host::HostName;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::audit::Audit;
use crate::auth::{PerKey, PerKeySlots, RateLimiter, TokenStore};
use crate::backends::Backends;
use crate::callback::SessionStore;
use crate::config::Settings;
use crate::host_gate::builtin_host_names;

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
pub struct Shared {
    pub settings: Settings,
    pub auth: Auth,
    pub backends: Backends,
    pub sessions: SessionStore,
    pub git_slots: Semaphore,
    /// Docker credential helpers running at once.
    pub docker_slots: Semaphore,
    pub open_limiter: RateLimiter,
    /// Host names the `Host` header may carry (port checked separately).
    pub allowed_hosts: Vec<HostName>,
    pub version: &'static str,
    pub started: std::time::Instant,
    pub audit: Audit,
    /// Scoped tokens (`None`: only the user's token, as in mock-proxy).
    pub tokens: Option<TokenStore>,
    /// Per-token rate limits for scoped tokens.
    pub token_limits: PerKey,
    /// Host programs each scoped identity has running, per route.
    pub identity_slots: PerKeySlots,
    pub listen: Vec<std::net::IpAddr>,
    /// Asks waiting for the user and the answers remembered (SPEC.md 14).
    pub approvals: crate::approval::Approvals,
    /// The upstream client and the credentials held between a git command's requests
    /// (SPEC.md 13).
    pub egress: crate::egress::Egress,
}

/// Cheap to clone; shared by every connection.
#[derive(Debug, Clone)]
pub struct AppState(pub Arc<Shared>);

impl std::ops::Deref for AppState {
    type Target = Shared;
    fn deref(&self) -> &Shared {
        &self.0
    }
}

impl AppState {
    /// A slot for one more host program of `id` on `route`: a scoped identity holds at most
    /// [`crate::auth::SCOPED_RUNNING_PER_ROUTE`] at once, so it never holds every global
    /// slot (SPEC.md 11); the user's own identity is not counted. `Err`: 429, run nothing.
    /// Waits for the user's answer when `u` needs one for `id` (SPEC.md 14); a refusal is
    /// a 403 with the reason (429 when too many asks wait), and nothing was done.
    pub async fn approve(
        &self,
        id: &crate::auth::Identity,
        u: crate::approval::Use,
    ) -> Result<(), crate::api::error::ApiError> {
        use crate::approval::Refusal;
        self.approvals.check(id, u).await.map_err(|r| match r {
            Refusal::TooMany => crate::api::error::ApiError::new(
                axum::http::StatusCode::TOO_MANY_REQUESTS,
                r.to_string(),
            ),
            _ => crate::api::error::ApiError::forbidden(r.to_string()),
        })
    }

    pub fn identity_slot(
        &self,
        id: &crate::auth::Identity,
        route: &str,
    ) -> Result<Option<crate::auth::KeySlot>, crate::api::error::ApiError> {
        if !id.is_scoped() {
            return Ok(None);
        }
        self.identity_slots
            .try_acquire(
                &id.owner_key(),
                route,
                crate::auth::SCOPED_RUNNING_PER_ROUTE,
            )
            .map(Some)
            .ok_or_else(|| {
                crate::api::error::ApiError::new(
                    axum::http::StatusCode::TOO_MANY_REQUESTS,
                    "too many requests at once from this identity: retry shortly",
                )
            })
    }

    /// The state with no audit log and no scoped tokens (tests, mock-proxy); see
    /// [`AppState::builder`] for the rest. `listen_addrs` are the addresses actually served
    /// (also accepted in `Host`); `shutdown` closes every callback listener when cancelled.
    pub fn new(
        settings: Settings,
        auth: Auth,
        backends: Backends,
        listen_addrs: &[std::net::IpAddr],
        shutdown: CancellationToken,
    ) -> Self {
        Self::builder(settings, auth, backends, listen_addrs, shutdown).build()
    }

    pub fn builder(
        settings: Settings,
        auth: Auth,
        backends: Backends,
        listen_addrs: &[std::net::IpAddr],
        shutdown: CancellationToken,
    ) -> Builder {
        Builder {
            settings,
            auth,
            backends,
            listen: listen_addrs.to_vec(),
            shutdown,
            audit: Audit::disabled(),
            tokens: None,
            sessions_file: None,
        }
    }
}

/// Builds an [`AppState`]; the optional parts default to off.
#[derive(Debug)]
pub struct Builder {
    settings: Settings,
    auth: Auth,
    backends: Backends,
    listen: Vec<std::net::IpAddr>,
    shutdown: CancellationToken,
    audit: Audit,
    tokens: Option<TokenStore>,
    sessions_file: Option<std::path::PathBuf>,
}

impl Builder {
    /// Keeps the callback sessions in `path` (`sessions.json`), so a login in flight
    /// survives a restart ([`SessionStore::restore`]).
    pub fn sessions_file(mut self, path: std::path::PathBuf) -> Self {
        self.sessions_file = Some(path);
        self
    }

    /// Writes every decision on a sensitive route to `audit`.
    pub fn audit(mut self, audit: Audit) -> Self {
        self.audit = audit;
        self
    }

    /// Accepts the scoped tokens of `store` besides the user's token.
    pub fn tokens(mut self, store: TokenStore) -> Self {
        self.tokens = Some(store);
        self
    }

    pub fn build(self) -> AppState {
        let Self {
            settings,
            auth,
            backends,
            listen,
            shutdown,
            audit,
            tokens,
            sessions_file,
        } = self;
        let mut allowed_hosts = builtin_host_names();
        for a in &listen {
            if !a.is_unspecified() && !allowed_hosts.contains(&HostName::Ip(*a)) {
                allowed_hosts.push(HostName::Ip(*a));
            }
        }
        for h in &settings.extra_hosts {
            if !allowed_hosts.contains(h) {
                allowed_hosts.push(h.clone());
            }
        }
        let (max, port, binder) = (
            settings.max_callback_sessions,
            settings.port,
            backends.ports.clone(),
        );
        let sessions = match sessions_file {
            Some(path) => SessionStore::persisted(max, port, binder, shutdown, path),
            None => SessionStore::new(max, port, binder, shutdown),
        };
        let approvals = crate::approval::Approvals::new(settings.approval.clone(), audit.clone());
        let egress = crate::egress::Egress::new(settings.git.ca_file.clone());
        AppState(Arc::new(Shared {
            approvals,
            egress,
            git_slots: Semaphore::new(settings.git.max_concurrent),
            docker_slots: Semaphore::new(crate::auth::MAX_DOCKER_HELPERS),
            open_limiter: RateLimiter::per_minute(settings.open_rate_per_minute),
            settings,
            auth,
            backends,
            sessions,
            allowed_hosts,
            version: env!("CARGO_PKG_VERSION"),
            started: std::time::Instant::now(),
            audit,
            tokens,
            token_limits: PerKey::default(),
            identity_slots: PerKeySlots::default(),
            listen,
        }))
    }
}
