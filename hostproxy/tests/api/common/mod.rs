//! Harness for the daemon's API tests: a real daemon on port 0 with real backends pointed
//! at scratch state (a git wrapper with its own HOME, a recording launcher, a real or
//! recording SSH agent).
#![allow(dead_code, clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use clawker_protocol::Secret;
pub use e2e::{Agent, free_port, host_git_env, recording_script, write_script};
use hostproxy::api::Auth;
use hostproxy::backends::{
    Backends, CommandLauncher, CommandNotifier, GitCommand, HostAgent, HostDockerCredentials,
    LoopbackBinder,
};
use hostproxy::config::Settings;
use hostproxy::{AppState, ServeLimits, router, serve};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

pub const TOKEN: &str = "test-token-0123456789abcdef0123456789abcdef";

pub struct Daemon {
    pub port: u16,
    pub base: String,
    pub dir: tempfile::TempDir,
    pub shutdown: CancellationToken,
    pub client: reqwest::Client,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Scratch git: a wrapper script that runs the real git with the scratch host environment
/// of [`e2e::host_git_env`] (a logging helper in front of `store`).
pub fn scratch_git(dir: &Path) -> PathBuf {
    let env: Vec<String> = host_git_env(dir)
        .into_iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    let wrapper = dir.join("git-wrapper");
    write_script(&wrapper, &format!("{} exec git \"$@\"", env.join(" ")));
    wrapper
}

pub fn helper_log(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("helper.log")).unwrap_or_default()
}

pub fn notify_log(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("notify.log")).unwrap_or_default()
}

pub fn launch_log(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("launch.log")).unwrap_or_default()
}

pub struct Options {
    /// Scoped tokens from `<dir>/tokens.json`.
    pub tokens: bool,
    /// The audit log at `<dir>/audit.jsonl`.
    pub audit: bool,
    pub agent_socket: Option<PathBuf>,
    pub no_auth: bool,
    pub header_read_timeout: std::time::Duration,
    /// Egress upstreams (SPEC.md 13): the real HTTPS client unless a test brings its own.
    pub upstream: Option<Arc<dyn hostproxy::backends::Upstream>>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            tokens: false,
            audit: false,
            agent_socket: None,
            no_auth: false,
            header_read_timeout: std::time::Duration::from_secs(10),
            upstream: None,
        }
    }
}

pub async fn spawn(configure: impl FnOnce(&mut Settings, &Path)) -> Daemon {
    spawn_with(Options::default(), configure).await
}

pub async fn spawn_with(opts: Options, configure: impl FnOnce(&mut Settings, &Path)) -> Daemon {
    let dir = tempfile::tempdir().unwrap();
    let launcher = dir.path().join("launcher");
    // One line per call: every argument on its own line between markers.
    recording_script(&launcher, &dir.path().join("launch.log"));
    let notifier = dir.path().join("notifier");
    recording_script(&notifier, &dir.path().join("notify.log"));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let mut settings = Settings {
        port,
        browser: Some(vec![launcher.display().to_string()]),
        notifier: Some(vec![notifier.display().to_string()]),
        header_read_timeout: opts.header_read_timeout,
        ..Settings::default()
    };
    settings.git.program = scratch_git(dir.path());
    configure(&mut settings, dir.path());
    let backends = Backends {
        launcher: Arc::new(CommandLauncher::new(settings.browser.clone())),
        git: Arc::new(GitCommand::new(settings.git.clone())),
        agent: Arc::new(HostAgent::new(opts.agent_socket)),
        ports: Arc::new(LoopbackBinder),
        notifier: Arc::new(CommandNotifier::new(settings.notifier.clone())),
        // The scratch `<dir>/docker/config.json`, its helpers in `<dir>/helpers`.
        docker: Arc::new(HostDockerCredentials::at(
            dir.path().join("docker"),
            Some(dir.path().join("helpers")),
        )),
        upstream: opts
            .upstream
            .unwrap_or_else(hostproxy::backends::host_upstream),
    };
    let shutdown = CancellationToken::new();
    let auth = if opts.no_auth {
        Auth::Disabled
    } else {
        Auth::Token(Secret::new(TOKEN.to_string()))
    };
    let limits = ServeLimits {
        header_read_timeout: settings.header_read_timeout,
        ..ServeLimits::default()
    };
    let mut state = AppState::builder(
        settings,
        auth,
        backends,
        &["127.0.0.1".parse().unwrap()],
        shutdown.clone(),
    );
    if opts.tokens {
        state = state.tokens(hostproxy::auth::TokenStore::new(
            dir.path().join("tokens.json"),
        ));
    }
    if opts.audit {
        state =
            state.audit(hostproxy::audit::Audit::open(&dir.path().join("audit.jsonl")).unwrap());
    }
    let state = state.build();
    tokio::spawn(serve(
        vec![listener],
        router(state),
        limits,
        shutdown.clone(),
    ));
    Daemon {
        port,
        base: format!("http://127.0.0.1:{port}"),
        dir,
        shutdown,
        client: e2e::client(),
    }
}

impl Daemon {
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The scoped-token store of this daemon (with `Options { tokens: true }`).
    pub fn tokens(&self) -> hostproxy::auth::TokenStore {
        hostproxy::auth::TokenStore::new(self.dir.path().join("tokens.json"))
    }

    /// A JSON request with `token`; returns the status and the parsed body.
    pub async fn call_as(
        &self,
        token: &str,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        e2e::Req::new(method.as_str(), format!("{}{path}", self.base))
            .token(Some(token))
            .json(body)
            .send_async(&self.client)
            .await
    }

    /// An authenticated JSON request with the user's token.
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        self.call_as(TOKEN, method, path, body).await
    }

    pub async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.call(reqwest::Method::POST, path, Some(body)).await
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        self.call(reqwest::Method::GET, path, None).await
    }
}

/// Sends raw bytes and returns the raw reply (for Host header and framing tests).
pub async fn raw(port: u16, request: &[u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    s.write_all(request).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

pub fn status_of(raw: &str) -> u16 {
    raw.split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}
