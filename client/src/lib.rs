//! The container tools' client for the hostproxy daemon.
//!
//! Resolves the daemon URL and token from the environment (SPEC.md section 3), speaks the
//! JSON API with the types of `clawker-protocol`, and turns every failure into an error that
//! says which URL was tried and what to check.

use std::time::Duration;

pub mod blocking;

use clawker_protocol::api::ErrorResponse;
use clawker_protocol::{Secret, env};
use serde::de::DeserializeOwned;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum ClientError {
    #[error(
        "cannot reach the hostproxy daemon at {url}: is `hostproxy serve` running on the host, and is {var} right?"
    )]
    Unreachable {
        url: String,
        var: &'static str,
        #[source]
        source: BoxError,
    },
    #[error("{var}={value:?} is not a usable http:// url")]
    BadUrl { var: &'static str, value: String },
    #[error("cannot read the token file {path} (from {var})")]
    TokenFile {
        path: String,
        var: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "the daemon at {url} refused the token: set {token} or {token_file} to the host's `hostproxy token`"
    )]
    Unauthorized {
        url: String,
        token: &'static str,
        token_file: &'static str,
    },
    #[error(
        "the token (from {var}) holds a control character or space: it must be the printable text `hostproxy token` prints"
    )]
    BadToken { var: &'static str },
    #[error("cannot set up the http client")]
    Setup(#[source] BoxError),
    #[error("the daemon answered {status}: {message}")]
    Status { status: u16, message: String },
    #[error("the daemon at {url} sent a reply this tool does not understand")]
    Decode {
        url: String,
        #[source]
        source: BoxError,
    },
}

/// The cause under a [`ClientError`]: reqwest's, or an I/O or JSON error of [`blocking`].
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl ClientError {
    /// The HTTP status the daemon answered with, if it answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Status { status, .. } => Some(*status),
            Self::Unauthorized { .. } => Some(401),
            _ => None,
        }
    }

    pub fn is_unreachable(&self) -> bool {
        matches!(self, Self::Unreachable { .. })
    }
}

/// A client of one daemon.
#[derive(Debug, Clone)]
pub struct Client {
    base: String,
    token: Option<Secret<String>>,
    http: reqwest::Client,
}

/// Reads the token: `CLAWKER_HOST_PROXY_TOKEN`, else the file named by
/// `CLAWKER_HOST_PROXY_TOKEN_FILE`, else none.
pub fn token_from_env() -> Result<Option<Secret<String>>, ClientError> {
    if let Some(t) = std::env::var(env::HOST_PROXY_TOKEN)
        .ok()
        .filter(|t| !t.trim().is_empty())
    {
        return checked_token(t.trim(), env::HOST_PROXY_TOKEN).map(Some);
    }
    let Some(path) = std::env::var(env::HOST_PROXY_TOKEN_FILE)
        .ok()
        .filter(|p| !p.is_empty())
    else {
        return Ok(None);
    };
    let text = std::fs::read_to_string(&path).map_err(|source| ClientError::TokenFile {
        path: path.clone(),
        var: env::HOST_PROXY_TOKEN_FILE,
        source,
    })?;
    let token = text.trim();
    if token.is_empty() {
        return Ok(None);
    }
    checked_token(token, env::HOST_PROXY_TOKEN_FILE).map(Some)
}

/// A token goes into a raw `Authorization` header: only visible ASCII, so no CR, LF or NUL
/// can add a header of its own.
fn checked_token(token: &str, var: &'static str) -> Result<Secret<String>, ClientError> {
    if token.bytes().all(|b| b.is_ascii_graphic()) {
        Ok(Secret::new(token.to_string()))
    } else {
        Err(ClientError::BadToken { var })
    }
}

/// How long a refused connection to the daemon is tried again: `CLAWKER_HOST_PROXY_WAIT`
/// seconds (default 10), so a tool that races the tunnel's attach does not fail.
pub fn wait_from_env() -> Duration {
    std::env::var(env::HOST_PROXY_WAIT)
        .ok()
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s >= 0.0)
        .map(|s| Duration::from_secs_f64(s.min(3600.0)))
        .unwrap_or(Duration::from_secs(env::HOST_PROXY_WAIT_DEFAULT_SECS))
}

/// Whether the connection was refused (nothing listens yet), not failed otherwise.
fn refused(e: &reqwest::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            return io.kind() == std::io::ErrorKind::ConnectionRefused;
        }
        source = s.source();
    }
    false
}

/// The daemon URL from `CLAWKER_HOST_PROXY` (default `http://host.docker.internal:18374`),
/// without a trailing slash.
pub fn base_from_env() -> Result<String, ClientError> {
    let raw = std::env::var(env::HOST_PROXY)
        .ok()
        .filter(|v| !v.trim().is_empty())
        .unwrap_or_else(|| clawker_protocol::DEFAULT_PROXY_URL.to_string());
    let bad = || ClientError::BadUrl {
        var: env::HOST_PROXY,
        value: raw.clone(),
    };
    let url = url::Url::parse(raw.trim()).map_err(|_| bad())?;
    if url.scheme() != "http" || url.host_str().is_none() || url.query().is_some() {
        return Err(bad());
    }
    Ok(url.as_str().trim_end_matches('/').to_string())
}

impl Client {
    pub fn from_env() -> Result<Self, ClientError> {
        Self::new(base_from_env()?, token_from_env()?)
    }

    pub fn new(base: String, token: Option<Secret<String>>) -> Result<Self, ClientError> {
        let http = reqwest::Client::builder()
            // The daemon is on the host: a container's HTTP_PROXY must never see the token.
            .no_proxy()
            .connect_timeout(Duration::from_secs(5))
            .pool_idle_timeout(Duration::from_secs(8))
            .tcp_nodelay(true)
            .build()
            // No fallback: a default client would honour HTTP_PROXY and hand it the token.
            .map_err(|e| ClientError::Setup(e.into()))?;
        Ok(Self { base, token, http })
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let mut r = self.http.request(method, self.url(path));
        if let Some(t) = &self.token {
            r = r.bearer_auth(t.expose());
        }
        r
    }

    async fn send<T: DeserializeOwned>(
        &self,
        req: reqwest::RequestBuilder,
        timeout: Duration,
    ) -> Result<T, ClientError> {
        // A refused connection (the tunnel not attached yet) is tried again for up to
        // `CLAWKER_HOST_PROXY_WAIT`; nothing was sent then.
        let deadline = tokio::time::Instant::now() + wait_from_env();
        let resp = loop {
            let attempt = req.try_clone().map(|r| r.timeout(timeout).send());
            let Some(attempt) = attempt else {
                break req.timeout(timeout).send().await;
            };
            match attempt.await {
                Err(e) if refused(&e) && tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                other => break other,
            }
        }
        .map_err(|source| ClientError::Unreachable {
            url: self.base.clone(),
            var: env::HOST_PROXY,
            // reqwest's text names the URL, whose path holds the session id.
            source: source.without_url().into(),
        })?;
        let status = resp.status().as_u16();
        let body = resp
            .bytes()
            .await
            .map_err(|source| ClientError::Unreachable {
                url: self.base.clone(),
                var: env::HOST_PROXY,
                source: source.without_url().into(),
            })?;
        reply(&self.base, status, &body)
    }

    /// GETs JSON; `timeout` covers the whole request (long-polls need more than the default).
    pub async fn get<T: DeserializeOwned>(
        &self,
        path: &str,
        timeout: Duration,
    ) -> Result<T, ClientError> {
        self.send(self.request(reqwest::Method::GET, path), timeout)
            .await
    }

    pub async fn delete<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        self.send(
            self.request(reqwest::Method::DELETE, path),
            Duration::from_secs(10),
        )
        .await
    }
}

/// The daemon's reply as `T`, or the error its status stands for; shared by [`Client`] and
/// [`blocking::Conn`].
pub(crate) fn reply<T: DeserializeOwned>(
    base: &str,
    status: u16,
    body: &[u8],
) -> Result<T, ClientError> {
    match status {
        401 => Err(ClientError::Unauthorized {
            url: base.to_string(),
            token: env::HOST_PROXY_TOKEN,
            token_file: env::HOST_PROXY_TOKEN_FILE,
        }),
        // serde's message can quote the value it choked on (a password, say): the error
        // keeps only what kind of mistake it was and where.
        200..=299 => serde_json::from_slice(body).map_err(|e| ClientError::Decode {
            url: base.to_string(),
            source: format!(
                "{:?} error at line {} column {}",
                e.classify(),
                e.line(),
                e.column()
            )
            .to_lowercase()
            .into(),
        }),
        status => Err(ClientError::Status {
            status,
            message: serde_json::from_slice::<ErrorResponse>(body)
                .map(|e| e.error)
                .unwrap_or_else(|_| "no error message".into()),
        }),
    }
}

/// Resolves when SIGTERM or SIGINT arrives (never, if the handlers cannot be installed).
pub async fn terminated() {
    use tokio::signal::unix::{SignalKind, signal};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut t), Ok(mut i)) => {
            tokio::select! {
                _ = t.recv() => {}
                _ = i.recv() => {}
            }
        }
        _ => std::future::pending().await,
    }
}

/// A tool's exit: the code on success; on failure one line `tool: error: cause…` on stderr
/// (`{:#}` prints an error's whole chain) and exit 1.
pub fn exit_code<E: std::fmt::Display>(
    tool: &str,
    result: Result<std::process::ExitCode, E>,
) -> std::process::ExitCode {
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("{tool}: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// A current-thread runtime for a tool's `main`.
pub fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_with_a_control_character_is_refused() {
        assert!(checked_token("abc123", env::HOST_PROXY_TOKEN_FILE).is_ok());
        for bad in ["abc\r\nX-Evil: 1", "abc\0", "a b", "tök"] {
            let e = checked_token(bad, env::HOST_PROXY_TOKEN_FILE).unwrap_err();
            assert!(matches!(e, ClientError::BadToken { .. }), "{bad:?}");
            assert!(
                !e.to_string().contains("abc"),
                "the token is not quoted: {e}"
            );
        }
    }
}
