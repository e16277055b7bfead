//! `mock-proxy`'s command line: serving (the default), and the few verbs a CI job needs to
//! drive and check a running mock with nothing but this binary (no curl, no jq).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use clawker_client::blocking::Conn;
use clawker_protocol::Secret;
use clawker_protocol::api::SuccessResponse;
use clawker_protocol::mock::{self, MockCallback, MockCredential, RecordedRequest};
use tokio_util::sync::CancellationToken;

use crate::{Mock, MockConfig, router};

#[derive(Debug, Parser)]
#[command(
    name = "mock-proxy",
    version,
    args_conflicts_with_subcommands = true,
    about = "A fake hostproxy daemon for tests: same API and gates, no side effects, control API under /__mock/",
    after_help = "Example (a CI job checking an agent image's wiring, see docs/ci.md):\n  \
        mock-proxy --listen 0.0.0.0 --port 18374 --token ci-token &\n  \
        mock-proxy put-credential --url http://127.0.0.1:18374 --host github.com --username ci --password ci-pass\n  \
        docker run … my-agent-image sh -c '$BROWSER https://example.com/ && git credential fill …'\n  \
        mock-proxy expect --url http://127.0.0.1:18374 --route /open/url --count 1\n  \
        mock-proxy expect --url http://127.0.0.1:18374 --route /git/credential --at-least 1\n  \
        mock-proxy callback --url http://127.0.0.1:18374 --query 'code=ci-code&state=ci'"
)]
pub struct Args {
    /// Port to serve (0 picks a free one; the URL is printed on stdout).
    #[arg(long, default_value_t = clawker_protocol::DEFAULT_PORT)]
    pub port: u16,
    /// Enforce this bearer token exactly like the daemon; without it any bearer token passes.
    #[arg(long)]
    pub token: Option<String>,
    /// Address to listen on (repeatable). Default: 127.0.0.1. In a container: 0.0.0.0.
    #[arg(long)]
    pub listen: Vec<IpAddr>,
    /// Bind real loopback listeners for registered callbacks.
    #[arg(long)]
    pub real_listeners: bool,
    #[command(subcommand)]
    pub command: Option<Verb>,
}

#[derive(Debug, Subcommand)]
pub enum Verb {
    /// Check what a running mock recorded: exit 0 when it matches, else 1 with what it saw.
    Expect {
        /// The mock's URL, e.g. http://127.0.0.1:18374.
        #[arg(long)]
        url: String,
        /// Route path; `{…}` matches one segment (`/callback/{id}/data`).
        #[arg(long)]
        route: String,
        /// Only requests with this method.
        #[arg(long)]
        method: Option<String>,
        /// Exactly this many requests (default 1, unless --at-least is given).
        #[arg(long, conflicts_with = "at_least")]
        count: Option<usize>,
        /// At least this many requests.
        #[arg(long)]
        at_least: Option<usize>,
        /// Seconds to wait for the requests to arrive.
        #[arg(long, default_value_t = 10)]
        wait: u64,
    },
    /// Wait until the mock answers `/health`.
    Ready {
        #[arg(long)]
        url: String,
        #[arg(long, default_value_t = 10)]
        wait: u64,
    },
    /// Set the credential `/git/credential` `get` hands out for a host.
    PutCredential {
        #[arg(long)]
        url: String,
        #[arg(long)]
        host: String,
        #[arg(long)]
        username: String,
        #[arg(long)]
        password: String,
    },
    /// Make the OAuth redirect arrive for the newest session a forwarder waits on.
    Callback {
        #[arg(long)]
        url: String,
        /// The redirect's query, e.g. `code=abc&state=xyz`.
        #[arg(long)]
        query: String,
        /// Seconds to wait for a forwarder to be waiting.
        #[arg(long, default_value_t = 10)]
        wait: u64,
    },
}

/// What to check in the image when a route saw no request.
fn hint(route: &str) -> &'static str {
    match route {
        r if r.starts_with("/open/url") => {
            "nothing opened a URL: is BROWSER=host-open set in the image, and host-open on PATH?"
        }
        r if r.starts_with("/git/credential") => {
            "git never asked: is credential.helper = clawker set for git in the image (/etc/gitconfig), and git-credential-clawker on PATH?"
        }
        r if r.starts_with("/ssh/agent") => {
            "no agent request: is ssh-agent-proxy running in the image and SSH_AUTH_SOCK pointing at its socket?"
        }
        r if r.starts_with("/callback") => {
            "no callback: did host-open see an OAuth URL with a loopback redirect_uri and a state?"
        }
        _ => "check the image's wiring (docs/container.md)",
    }
}

/// `/callback/{id}/data` matches `/callback/0123…/data`.
pub fn route_matches(template: &str, path: &str) -> bool {
    let (t, p): (Vec<&str>, Vec<&str>) = (template.split('/').collect(), path.split('/').collect());
    t.len() == p.len()
        && t.iter()
            .zip(&p)
            .all(|(t, p)| t == p || (t.starts_with('{') && t.ends_with('}') && !p.is_empty()))
}

/// A recorded path as a CI log may show it: session ids (they are capabilities) as `{id}`.
fn shown_path(path: &str) -> String {
    path.split('/')
        .map(|seg| {
            if clawker_protocol::api::is_session_id(seg) {
                "{id}"
            } else {
                seg
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

fn recorded(conn: &mut Conn) -> Result<Vec<RecordedRequest>> {
    conn.get(mock::REQUESTS)
        .context("cannot read the mock's recorded requests")
}

fn expect(
    url: &str,
    route: &str,
    method: Option<&str>,
    want: (usize, bool),
    wait: Duration,
) -> Result<ExitCode> {
    let mut conn = Conn::new(url, None)?;
    let deadline = Instant::now() + wait;
    let (n, exact) = want;
    loop {
        let all = recorded(&mut conn)?;
        let hits = all
            .iter()
            .filter(|r| route_matches(route, &r.path))
            .filter(|r| method.is_none_or(|m| r.method.eq_ignore_ascii_case(m)))
            .filter(|r| r.status != 0)
            .count();
        let ok = if exact { hits == n } else { hits >= n };
        if ok {
            println!("ok: {hits} request(s) to {route}");
            return Ok(ExitCode::SUCCESS);
        }
        // More than expected will not get fewer by waiting.
        if Instant::now() >= deadline || (exact && hits > n) {
            let what = if exact { "exactly" } else { "at least" };
            eprintln!(
                "mock-proxy expect: wanted {what} {n} request(s) to {}{route}, saw {hits}",
                method.map(|m| format!("{m} ")).unwrap_or_default()
            );
            if hits < n {
                eprintln!("  hint: {}", hint(route));
            }
            eprintln!("  recorded ({}):", all.len());
            for r in &all {
                eprintln!("    {} {} -> {}", r.method, shown_path(&r.path), r.status);
            }
            return Ok(ExitCode::FAILURE);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn callback(url: &str, query: &str, wait: Duration) -> Result<ExitCode> {
    let mut conn = Conn::new(url, None)?;
    let deadline = Instant::now() + wait;
    let id = loop {
        let waiting = recorded(&mut conn)?
            .into_iter()
            .rev()
            .find(|r| route_matches("/callback/{id}/data", &r.path));
        if let Some(r) = waiting {
            break r.path.split('/').nth(2).unwrap_or_default().to_string();
        }
        if Instant::now() >= deadline {
            eprintln!(
                "mock-proxy callback: no callback-forwarder polled within {} s",
                wait.as_secs()
            );
            eprintln!("  hint: {}", hint("/callback"));
            return Ok(ExitCode::FAILURE);
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let _: SuccessResponse = conn
        .post(
            &mock::CALLBACKS.replace("{id}", &id),
            &MockCallback {
                method: "GET".into(),
                path: None,
                query: Secret::new(query.to_string()),
                headers: Default::default(),
                body: Secret::new(String::new()),
            },
        )
        .context("cannot make the callback arrive")?;
    println!("ok: callback delivered to the waiting session");
    Ok(ExitCode::SUCCESS)
}

fn ready(url: &str, wait: Duration) -> Result<ExitCode> {
    let deadline = Instant::now() + wait;
    loop {
        let up = Conn::new(url, None)?
            .get::<clawker_protocol::api::HealthResponse>(clawker_protocol::api::routes::HEALTH)
            .is_ok();
        if up {
            return Ok(ExitCode::SUCCESS);
        }
        if Instant::now() >= deadline {
            eprintln!(
                "mock-proxy ready: nothing answered /health at {url} within {} s",
                wait.as_secs()
            );
            return Ok(ExitCode::FAILURE);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn put_credential(url: &str, host: &str, username: &str, password: &str) -> Result<ExitCode> {
    let mut conn = Conn::new(url, None)?;
    let creds = std::collections::BTreeMap::from([(
        host.to_string(),
        MockCredential {
            username: Some(Secret::new(username.to_string())),
            password: Some(Secret::new(password.to_string())),
            ..MockCredential::default()
        },
    )]);
    let _: SuccessResponse = conn
        .put(mock::CREDENTIALS, &creds)
        .context("cannot set the mock's credentials")?;
    Ok(ExitCode::SUCCESS)
}

async fn serve(args: Args) -> Result<()> {
    let addrs = if args.listen.is_empty() {
        vec![IpAddr::V4(Ipv4Addr::LOCALHOST)]
    } else {
        args.listen.clone()
    };
    let first = tokio::net::TcpListener::bind(SocketAddr::new(addrs[0], args.port))
        .await
        .with_context(|| format!("cannot listen on port {}", args.port))?;
    let port = first.local_addr()?.port();
    let mut listeners = vec![first];
    for a in &addrs[1..] {
        listeners.push(tokio::net::TcpListener::bind(SocketAddr::new(*a, port)).await?);
    }
    let cfg = MockConfig {
        port,
        token: args.token.map(Secret::new),
        listen: addrs.clone(),
        real_listeners: args.real_listeners,
    };
    let shutdown = CancellationToken::new();
    let app = router(Arc::new(Mock::default()), &cfg, shutdown.clone());
    println!("http://{}", SocketAddr::new(addrs[0], port));
    let stop = shutdown.clone();
    tokio::spawn(async move {
        let _ = tokio::signal::ctrl_c().await;
        stop.cancel();
    });
    let term = shutdown.clone();
    tokio::spawn(async move {
        if let Ok(mut s) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        {
            s.recv().await;
            term.cancel();
        }
    });
    hostproxy::serve(listeners, app, hostproxy::ServeLimits::default(), shutdown).await;
    Ok(())
}

pub fn run(args: Args) -> Result<ExitCode> {
    match args.command {
        Some(Verb::Expect {
            url,
            route,
            method,
            count,
            at_least,
            wait,
        }) => {
            let want = match (count, at_least) {
                (_, Some(n)) => (n, false),
                (n, None) => (n.unwrap_or(1), true),
            };
            expect(
                &url,
                &route,
                method.as_deref(),
                want,
                Duration::from_secs(wait),
            )
        }
        Some(Verb::Ready { url, wait }) => ready(&url, Duration::from_secs(wait)),
        Some(Verb::PutCredential {
            url,
            host,
            username,
            password,
        }) => put_credential(&url, &host, &username, &password),
        Some(Verb::Callback { url, query, wait }) => {
            callback(&url, &query, Duration::from_secs(wait))
        }
        None => {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(serve(args))?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

pub fn main() -> ExitCode {
    let args = Args::parse();
    match run(args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("mock-proxy: {e:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_templates_match_one_segment_per_placeholder() {
        assert!(route_matches("/open/url", "/open/url"));
        assert!(route_matches(
            "/callback/{id}/data",
            "/callback/0123abcd/data"
        ));
        assert!(!route_matches("/callback/{id}/data", "/callback//data"));
        assert!(!route_matches(
            "/callback/{id}/data",
            "/callback/x/data/more"
        ));
        assert!(!route_matches("/open/url", "/open/urls"));
    }

    #[test]
    fn session_ids_are_not_printed() {
        let id = "0123456789abcdef0123456789abcdef";
        assert_eq!(
            shown_path(&format!("/callback/{id}/data")),
            "/callback/{id}/data"
        );
        assert_eq!(shown_path("/open/url"), "/open/url");
    }
}
