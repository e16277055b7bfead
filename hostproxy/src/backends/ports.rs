//! The loopback listeners of callback sessions, bound so that they never take a port from
//! anything else on the host (SPEC.md 4.2).
//!
//! Before binding, the port is probed on the wildcard addresses of both families: a bind
//! there conflicts with a socket listening on *any* local address of that port, so "in use
//! anywhere" is a 409. Then `127.0.0.1:P` and `[::1]:P` are bound.
//!
//! `SO_REUSEADDR`: on BSD and macOS a specific-address bind with it succeeds beside a
//! program listening on the wildcard and then receives that program's connections to
//! `127.0.0.1:P` (it would steal the host CLI's login), so it is never set there. Linux
//! refuses any bind that overlaps a *listening* socket whatever the option says, and only
//! uses it to accept a port whose old connections are in TIME_WAIT; without it, a login
//! retried within a minute on a fixed port would be refused. So it is set on Linux only.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};

use socket2::{Domain, Protocol, Socket, Type};

use super::{BindError, PortBinder};

/// See the module doc: safe on Linux, a port thief on BSD.
const REUSE_ADDRESS: bool = cfg!(any(target_os = "linux", target_os = "android"));

/// Binds `127.0.0.1:port` and `[::1]:port` when nothing else listens on `port`. A host
/// without IPv6 is fine; a port taken on any address is [`BindError::InUse`].
#[derive(Debug, Clone, Default)]
pub struct LoopbackBinder;

fn bound(addr: SocketAddr) -> std::io::Result<Socket> {
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    if addr.is_ipv6() {
        // The v4 side is probed and bound on its own.
        s.set_only_v6(true)?;
    }
    s.set_reuse_address(REUSE_ADDRESS)?;
    s.bind(&addr.into())?;
    Ok(s)
}

fn listening(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let s = bound(addr)?;
    s.listen(128)?;
    s.set_nonblocking(true)?;
    Ok(s.into())
}

/// A family this host does not have (no IPv6): not a conflict.
fn absent(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::AddrNotAvailable | std::io::ErrorKind::Unsupported
    ) || e.raw_os_error() == Some(libc::EAFNOSUPPORT)
}

impl PortBinder for LoopbackBinder {
    fn bind(&self, port: u16) -> Result<Vec<std::net::TcpListener>, BindError> {
        let classify = |e: std::io::Error| {
            if e.kind() == std::io::ErrorKind::AddrInUse {
                BindError::InUse(port)
            } else {
                BindError::Other { port, source: e }
            }
        };
        // The probes are bound, never listening, and closed before the real binds.
        {
            let _v4 = bound(SocketAddr::from((Ipv4Addr::UNSPECIFIED, port))).map_err(classify)?;
            match bound(SocketAddr::from((Ipv6Addr::UNSPECIFIED, port))) {
                Ok(_v6) => {}
                Err(e) if absent(&e) => {}
                Err(e) => return Err(classify(e)),
            }
        }
        let mut out =
            vec![listening(SocketAddr::from((Ipv4Addr::LOCALHOST, port))).map_err(classify)?];
        match listening(SocketAddr::from((Ipv6Addr::LOCALHOST, port))) {
            Ok(v6) => out.push(v6),
            Err(e) if absent(&e) => {}
            Err(e) => return Err(classify(e)),
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn free_port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }

    #[test]
    fn a_port_held_on_any_address_is_in_use() {
        for holder in ["0.0.0.0", "127.0.0.1", "::1", "::"] {
            let port = free_port();
            let _held = std::net::TcpListener::bind((holder, port)).unwrap();
            assert!(
                matches!(LoopbackBinder.bind(port), Err(BindError::InUse(p)) if p == port),
                "a listener on {holder} must make port {port} in use"
            );
        }
    }

    #[test]
    fn a_free_port_is_bound_on_both_loopbacks_and_released() {
        let port = free_port();
        let listeners = LoopbackBinder.bind(port).unwrap();
        let addrs: Vec<SocketAddr> = listeners.iter().map(|l| l.local_addr().unwrap()).collect();
        assert!(addrs.contains(&SocketAddr::from((Ipv4Addr::LOCALHOST, port))));
        assert!(matches!(
            LoopbackBinder.bind(port),
            Err(BindError::InUse(_))
        ));
        drop(listeners);
        assert!(LoopbackBinder.bind(port).is_ok());
    }
}
