//! `callback-forwarder`: waits (long-poll) for the OAuth callback the daemon captured for a
//! session and replays it to this container's local server on `CALLBACK_PORT`.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Parser;
use clawker_client::{Client, ClientError};
use clawker_protocol::api::{self, CallbackData, CallbackDataResponse, SuccessResponse, routes};
use clawker_protocol::env;

#[derive(Debug, Parser)]
#[command(
    name = "callback-forwarder",
    version,
    about = "Wait for a captured OAuth callback and replay it to the container's local server",
    long_about = "Configured by environment: CALLBACK_SESSION and CALLBACK_PORT (required), CB_FORWARDER_TIMEOUT (seconds, default 300), CB_FORWARDER_POLL_INTERVAL (seconds between retries after an error, default 2), CB_FORWARDER_CLEANUP (delete the session afterwards, default true). host-open starts it for you.",
    after_help = "Example:\n  CALLBACK_SESSION=0123… CALLBACK_PORT=8765 callback-forwarder"
)]
pub struct Args {}

#[derive(Debug, Clone)]
pub struct Config {
    pub session: String,
    pub port: u16,
    pub timeout: Duration,
    pub poll_interval: Duration,
    pub cleanup: bool,
}

fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

fn secs(name: &str, default: u64) -> Result<Duration> {
    match var(name) {
        None => Ok(Duration::from_secs(default)),
        Some(v) => v
            .trim()
            .parse::<u64>()
            .map(Duration::from_secs)
            .with_context(|| format!("{name}={v:?} is not a whole number of seconds")),
    }
}

impl Config {
    pub fn from_env() -> Result<Self> {
        let session = var(env::CALLBACK_SESSION)
            .with_context(|| format!("{} is not set", env::CALLBACK_SESSION))?;
        if !api::is_session_id(session.trim()) {
            bail!(
                "{} is not a session id (32 hex digits)",
                env::CALLBACK_SESSION
            );
        }
        let port_text = var(env::CALLBACK_PORT)
            .with_context(|| format!("{} is not set", env::CALLBACK_PORT))?;
        let port = port_text
            .trim()
            .parse::<u16>()
            .ok()
            .filter(|p| *p > 0)
            .with_context(|| format!("{}={port_text:?} is not a port", env::CALLBACK_PORT))?;
        let cleanup = match var(env::CB_FORWARDER_CLEANUP) {
            None => true,
            Some(v) => env::parse_bool(&v).with_context(|| {
                format!("{}={v:?} is not true or false", env::CB_FORWARDER_CLEANUP)
            })?,
        };
        Ok(Self {
            session: session.trim().to_string(),
            port,
            timeout: secs(
                env::CB_FORWARDER_TIMEOUT,
                env::CB_FORWARDER_TIMEOUT_DEFAULT_SECS,
            )?,
            poll_interval: secs(
                env::CB_FORWARDER_POLL_INTERVAL,
                env::CB_FORWARDER_POLL_INTERVAL_DEFAULT_SECS,
            )?
            .max(Duration::from_millis(100)),
            cleanup,
        })
    }
}

/// Headers that describe one hop, not the request: never replayed.
const HOP_HEADERS: [&str; 10] = [
    "host",
    "connection",
    "keep-alive",
    "transfer-encoding",
    "te",
    "trailer",
    "upgrade",
    "content-length",
    "proxy-connection",
    "proxy-authenticate",
];

/// How one replay went.
#[derive(Debug, PartialEq, Eq)]
pub enum Replay {
    /// The local server answered with this status: the code is spent, whatever it said.
    Answered(u16),
    /// Nothing listened on any loopback address: the request was not sent; try again.
    NotListening,
    /// The request may have reached the server but no answer came: it is never sent again.
    Lost(&'static str),
}

/// Replays `data` to `localhost`, `127.0.0.1` and `[::1]` in turn, moving on only when a
/// connection is refused. An authorization code is single-use: once a server has the
/// request, it is not sent again (SPEC.md 5).
pub async fn replay(http: &reqwest::Client, port: u16, data: &CallbackData) -> Replay {
    let Ok(method) = reqwest::Method::from_bytes(data.method.as_bytes()) else {
        return Replay::Lost("the captured request has an invalid method");
    };
    let query = data.query.expose();
    let suffix = if query.is_empty() {
        data.path.clone()
    } else {
        format!("{}?{query}", data.path)
    };
    for host in ["localhost", "127.0.0.1", "[::1]"] {
        let mut req = http.request(method.clone(), format!("http://{host}:{port}{suffix}"));
        for (k, v) in &data.headers {
            if !HOP_HEADERS.contains(&k.as_str()) {
                req = req.header(k, v);
            }
        }
        if !data.body.expose().is_empty() {
            req = req.body(data.body.expose().clone());
        }
        match req.send().await {
            Ok(r) => return Replay::Answered(r.status().as_u16()),
            Err(e) if e.is_connect() => continue,
            // Never `e.to_string()`: reqwest's text carries the URL, with the code in it.
            Err(e) if e.is_timeout() => {
                return Replay::Lost("the local server did not answer in time");
            }
            Err(_) => return Replay::Lost("the connection to the local server broke"),
        }
    }
    Replay::NotListening
}

pub async fn run(cfg: Config, client: Client) -> Result<ExitCode> {
    let deadline = Instant::now() + cfg.timeout;
    let replayer = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(30))
        .build()
        .context("cannot build the http client")?;
    let data_path = format!(
        "{}?{}=",
        routes::callback_data(&cfg.session),
        routes::WAIT_PARAM
    );
    let mut captured: Option<CallbackData> = None;
    let outcome = loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            bail!(
                "no login callback {} within {} s (CB_FORWARDER_TIMEOUT)",
                if captured.is_some() {
                    "could be delivered: nothing listened on the local port"
                } else {
                    "arrived"
                },
                cfg.timeout.as_secs()
            );
        }
        let data = match captured.take() {
            Some(d) => d,
            None => {
                let wait = remaining.as_secs().clamp(1, api::MAX_WAIT_SECS);
                let reply = client
                    .get::<CallbackDataResponse>(
                        &format!("{data_path}{wait}"),
                        Duration::from_secs(wait + 15),
                    )
                    .await;
                match reply {
                    Ok(CallbackDataResponse {
                        callback: Some(d), ..
                    }) => d,
                    Ok(_) => continue,
                    Err(ClientError::Status { status: 404, .. }) => {
                        bail!("the daemon does not know this callback session (expired or deleted)")
                    }
                    Err(
                        e @ (ClientError::Unauthorized { .. }
                        | ClientError::Status { status: 403, .. }),
                    ) => {
                        return Err(e.into());
                    }
                    Err(e) => {
                        eprintln!("callback-forwarder: {e}; retrying");
                        tokio::time::sleep(cfg.poll_interval.min(remaining)).await;
                        continue;
                    }
                }
            }
        };
        match replay(&replayer, cfg.port, &data).await {
            Replay::NotListening => {
                // The local server may not be listening yet: keep the data and retry.
                eprintln!(
                    "callback-forwarder: nothing listens on port {} yet; retrying",
                    cfg.port
                );
                captured = Some(data);
                tokio::time::sleep(cfg.poll_interval.min(remaining)).await;
            }
            Replay::Answered(status) => break Ok(status),
            Replay::Lost(why) => break Err(why),
        }
    };
    if cfg.cleanup
        && let Err(e) = client
            .delete::<SuccessResponse>(&routes::callback(&cfg.session))
            .await
    {
        eprintln!("callback-forwarder: could not delete the session: {e}");
    }
    match outcome {
        Ok(status) if status < 400 => {
            eprintln!(
                "callback-forwarder: delivered the login callback to port {} ({status})",
                cfg.port
            );
            Ok(ExitCode::SUCCESS)
        }
        Ok(status) => bail!(
            "the local server on port {} answered {status} to the login callback; it is not sent again (a login code works once)",
            cfg.port
        ),
        Err(why) => bail!(
            "{why} (port {}); the login callback is not sent again (a login code works once)",
            cfg.port
        ),
    }
}

pub fn main() -> ExitCode {
    let _ = Args::parse();
    let result = (|| -> Result<ExitCode> {
        let cfg = Config::from_env()?;
        let client = Client::from_env()?;
        let rt = clawker_client::runtime()?;
        rt.block_on(async {
            tokio::select! {
                r = run(cfg, client) => r,
                // SIGTERM ends it at once: it must never hold up a container's shutdown.
                () = clawker_client::terminated() => Ok(ExitCode::from(143)),
            }
        })
    })();
    clawker_client::exit_code("callback-forwarder", result)
}
