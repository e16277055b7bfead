//! `mock-proxy`: see the library crate.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::Parser;
use mock_proxy::{Mock, MockConfig, router};
use tokio_util::sync::CancellationToken;

#[derive(Debug, Parser)]
#[command(
    name = "mock-proxy",
    version,
    about = "A fake hostproxy daemon for tests: same API and gates, no side effects, control API under /__mock/",
    after_help = "Example:\n  mock-proxy --port 18374 --token test-token &\n  curl -s localhost:18374/__mock/requests"
)]
struct Args {
    /// Port to serve (0 picks a free one; the URL is printed on stdout).
    #[arg(long, default_value_t = clawker_protocol::DEFAULT_PORT)]
    port: u16,
    /// Enforce this bearer token exactly like the daemon; without it any bearer token passes.
    #[arg(long)]
    token: Option<String>,
    /// Address to listen on (repeatable). Default: 127.0.0.1.
    #[arg(long)]
    listen: Vec<IpAddr>,
    /// Bind real loopback listeners for registered callbacks.
    #[arg(long)]
    real_listeners: bool,
}

async fn run(args: Args) -> Result<()> {
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
        token: args.token.map(clawker_protocol::Secret::new),
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

fn main() -> ExitCode {
    let args = Args::parse();
    let result = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(anyhow::Error::from)
        .and_then(|rt| rt.block_on(run(args)));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mock-proxy: {e:#}");
            ExitCode::FAILURE
        }
    }
}
