//! Binding the daemon's own listeners.

use std::net::{IpAddr, SocketAddr};

use anyhow::{Context, Result, bail};

/// Binds every listen address. The first family that is simply absent (no IPv6 on the
/// host) is skipped when it was a default; a taken port is always an error.
pub async fn bind_all(
    addrs: &[IpAddr],
    port: u16,
    explicit: bool,
) -> Result<Vec<tokio::net::TcpListener>> {
    let mut out = Vec::new();
    for &ip in addrs {
        let addr = SocketAddr::new(ip, port);
        match tokio::net::TcpListener::bind(addr).await {
            Ok(l) => out.push(l),
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
                bail!(
                    "port {port} is already in use on {ip}: stop whatever holds it or pass --port"
                )
            }
            Err(e) if !explicit && ip.is_ipv6() => {
                tracing::warn!(error = %e, "no IPv6 loopback; serving IPv4 only");
            }
            Err(e) => return Err(e).with_context(|| format!("cannot listen on {addr}")),
        }
    }
    if out.is_empty() {
        bail!("nothing to listen on");
    }
    Ok(out)
}
