//! The loopback listeners of callback sessions.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};

use super::{BindError, PortBinder};

/// Binds `127.0.0.1:port` and `[::1]:port`. A host without IPv6 is fine; a port taken on
/// either family is [`BindError::InUse`].
#[derive(Debug, Clone, Default)]
pub struct LoopbackBinder;

fn bind_one(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let l = std::net::TcpListener::bind(addr)?;
    l.set_nonblocking(true)?;
    Ok(l)
}

impl PortBinder for LoopbackBinder {
    fn bind(&self, port: u16) -> Result<Vec<std::net::TcpListener>, BindError> {
        let in_use = |e: std::io::Error| {
            if e.kind() == std::io::ErrorKind::AddrInUse {
                BindError::InUse(port)
            } else {
                BindError::Other { port, source: e }
            }
        };
        let v4 = bind_one(SocketAddr::from((Ipv4Addr::LOCALHOST, port))).map_err(in_use)?;
        let mut out = vec![v4];
        match bind_one(SocketAddr::from((Ipv6Addr::LOCALHOST, port))) {
            Ok(v6) => out.push(v6),
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
                return Err(BindError::InUse(port));
            }
            Err(_) => {} // no IPv6 on this host
        }
        Ok(out)
    }
}
