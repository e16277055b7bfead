//! The daemon's side effects on the host, behind traits.
//!
//! Routes hold the policy (validation, filters, limits); these hold the effect (spawn a
//! browser, run git, talk to the agent, bind a port). The real daemon uses the `Host*`
//! implementations here; `mock-proxy` plugs in recording fakes behind the very same routes
//! and gates, which is what keeps the two from drifting apart.

use std::sync::Arc;
use std::time::Duration;

use clawker_protocol::api::GitCredentialAction;
use clawker_protocol::credential::CredentialFields;
use futures_util::future::BoxFuture;
use thiserror::Error;

use crate::config::GitPolicy;

mod agent;
mod docker_creds;
mod git;
mod launcher;
mod notifier;
mod ports;
#[cfg(feature = "egress")]
mod upstream;

pub use agent::{HostAgent, read_agent_frame};
pub use docker_creds::HostDockerCredentials;
pub use git::GitCommand;
pub use launcher::{CommandLauncher, default_launcher};
pub use notifier::{CommandNotifier, default_notifier, escape_markup};
pub use ports::LoopbackBinder;
#[cfg(feature = "egress")]
pub use upstream::HttpsUpstream;

#[derive(Debug, Error)]
pub enum LaunchError {
    #[error("cannot start the URL launcher {program:?}: {source}")]
    Spawn {
        program: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the URL launcher {program:?} exited with {status}")]
    Failed { program: String, status: String },
}

#[derive(Debug, Error)]
pub enum NotifyError {
    #[error("cannot start the notifier {program:?}: {source}")]
    Spawn {
        program: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the notifier {program:?} exited with {status}")]
    Failed { program: String, status: String },
}

/// Shows a desktop notification on the host.
pub trait Notifier: Send + Sync + 'static {
    fn notify<'a>(
        &'a self,
        title: &'a str,
        body: &'a str,
    ) -> BoxFuture<'a, Result<(), NotifyError>>;
}

/// Opens a URL in the host's browser.
pub trait Launcher: Send + Sync + 'static {
    fn open<'a>(&'a self, url: &'a str) -> BoxFuture<'a, Result<(), LaunchError>>;
}

#[derive(Debug, Error)]
pub enum GitError {
    #[error("git did not answer within {0:?}")]
    Timeout(Duration),
    #[error("cannot run git: {0}")]
    Spawn(#[source] std::io::Error),
    #[error("git exited with {0}")]
    Failed(String),
    #[error("git's reply was not in the credential format")]
    BadReply,
}

/// Runs `git credential fill|approve|reject`.
pub trait CredentialHelper: Send + Sync + 'static {
    /// For `Get`, `Ok(Some)` carries what git found and `Ok(None)` means nothing was found.
    fn run(
        &self,
        action: GitCredentialAction,
        input: CredentialFields,
    ) -> BoxFuture<'_, Result<Option<CredentialFields>, GitError>>;

    /// Like [`run`](Self::run), for a request the daemon makes itself (git egress): `path`
    /// is the repository's, and the host's own `credential.useHttpPath` decides whether it
    /// counts, as it would for git on the host.
    fn run_as_host(
        &self,
        action: GitCredentialAction,
        input: CredentialFields,
    ) -> BoxFuture<'_, Result<Option<CredentialFields>, GitError>> {
        self.run(action, input)
    }
}

#[derive(Debug, Error)]
pub enum DockerError {
    #[error("cannot run {0}")]
    Spawn(String, #[source] std::io::Error),
    #[error("the credential helper did not answer within {0:?}")]
    Timeout(Duration),
    #[error("talking to the credential helper failed")]
    Io(#[source] std::io::Error),
    #[error("the credential helper's reply was not in Docker's format")]
    BadReply,
    #[error("docker-credential-{0} failed")]
    Failed(String),
    #[error("no credential helper serves this registry on the host (store and erase need one)")]
    NoHelper,
}

/// What the host's Docker credential store answered.
#[derive(Debug)]
pub enum DockerReply {
    Found {
        username: clawker_protocol::Secret<String>,
        secret: clawker_protocol::Secret<String>,
    },
    NotFound,
    Done,
    /// Registry → username.
    List(std::collections::BTreeMap<String, clawker_protocol::Secret<String>>),
}

/// The host's Docker credential store (credential helpers, or `auths`).
pub trait DockerCredentials: Send + Sync + 'static {
    /// `registry` is the store's key for the server (`None` only for `List`).
    fn run<'a>(
        &'a self,
        action: clawker_protocol::api::DockerCredentialAction,
        registry: Option<&'a str>,
        username: Option<&'a clawker_protocol::Secret<String>>,
        secret: Option<&'a clawker_protocol::Secret<String>>,
    ) -> BoxFuture<'a, Result<DockerReply, DockerError>>;
}

#[derive(Debug, Error)]
pub enum AgentError {
    #[error("no SSH agent on the host: SSH_AUTH_SOCK is not set for the daemon")]
    NoSocket,
    #[error("the host SSH agent is not answering")]
    Unreachable(#[source] std::io::Error),
    #[error("the host SSH agent sent an invalid reply")]
    BadReply,
}

/// Sends one framed request to the host's SSH agent and returns its framed reply.
pub trait AgentConnector: Send + Sync + 'static {
    fn request(&self, frame: Vec<u8>) -> BoxFuture<'_, Result<Vec<u8>, AgentError>>;
}

#[derive(Debug, Error)]
pub enum BindError {
    #[error("port {0} is already in use on the host")]
    InUse(u16),
    #[error("cannot listen on port {port}: {source}")]
    Other {
        port: u16,
        #[source]
        source: std::io::Error,
    },
}

/// Binds the loopback listeners of a callback session.
pub trait PortBinder: Send + Sync + 'static {
    /// Returns the listeners to serve; an empty list means "nothing to serve" (the mock).
    fn bind(&self, port: u16) -> Result<Vec<std::net::TcpListener>, BindError>;
}

/// Sends a request to an HTTPS upstream (SPEC.md 13) trusting the host's roots and
/// `ca_file`; the reply's body streams. The rustls client ([`HttpsUpstream`], feature
/// `egress`), or mock-proxy's fake.
pub trait Upstream: Send + Sync + 'static {
    fn send<'a>(
        &'a self,
        req: http::Request<axum::body::Body>,
        ca_file: Option<&'a std::path::Path>,
    ) -> BoxFuture<'a, Result<http::Response<axum::body::Body>, String>>;
}

/// A build without the `egress` feature: every upstream request fails, saying why.
#[derive(Debug, Default)]
pub struct NoUpstream;

impl Upstream for NoUpstream {
    fn send<'a>(
        &'a self,
        _req: http::Request<axum::body::Body>,
        _ca_file: Option<&'a std::path::Path>,
    ) -> BoxFuture<'a, Result<http::Response<axum::body::Body>, String>> {
        Box::pin(async { Err("this build has no egress (the egress feature)".to_string()) })
    }
}

/// The upstream of this build: the rustls client with the `egress` feature.
pub fn host_upstream() -> Arc<dyn Upstream> {
    #[cfg(feature = "egress")]
    return Arc::new(HttpsUpstream::default());
    #[cfg(not(feature = "egress"))]
    Arc::new(NoUpstream)
}

/// Every side effect the routes may cause.
#[derive(Clone)]
pub struct Backends {
    pub launcher: Arc<dyn Launcher>,
    pub git: Arc<dyn CredentialHelper>,
    pub agent: Arc<dyn AgentConnector>,
    pub ports: Arc<dyn PortBinder>,
    pub notifier: Arc<dyn Notifier>,
    pub docker: Arc<dyn DockerCredentials>,
    /// HTTPS upstreams of egress (SPEC.md 13).
    pub upstream: Arc<dyn Upstream>,
}

impl std::fmt::Debug for Backends {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Backends")
    }
}

impl Backends {
    /// The real host effects.
    pub fn host(
        browser: Option<Vec<String>>,
        notifier: Option<Vec<String>>,
        git: GitPolicy,
        agent: HostAgent,
    ) -> Self {
        Self {
            launcher: Arc::new(CommandLauncher::new(browser)),
            git: Arc::new(GitCommand::new(git)),
            agent: Arc::new(agent),
            ports: Arc::new(LoopbackBinder),
            notifier: Arc::new(CommandNotifier::new(notifier)),
            docker: Arc::new(HostDockerCredentials::from_env()),
            upstream: host_upstream(),
        }
    }
}
