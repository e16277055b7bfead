//! Parsing of the HTTP `Host` header for the daemon's allow-list (SPEC.md 4.1, gate 1).
//!
//! DNS rebinding works by pointing an attacker's name at 127.0.0.1; the browser then sends
//! `Host: attacker.example`. Parsing strictly and comparing against a short list of names
//! is what stops it.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use thiserror::Error;

/// The host part of a `Host` header.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum HostName {
    /// A DNS name, lowercased, without a trailing dot.
    Name(String),
    Ip(IpAddr),
}

impl std::fmt::Display for HostName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Name(n) => f.write_str(n),
            Self::Ip(IpAddr::V4(a)) => write!(f, "{a}"),
            Self::Ip(IpAddr::V6(a)) => write!(f, "[{a}]"),
        }
    }
}

impl HostName {
    /// Parses a configured name: a DNS name or an IP address (brackets optional for IPv6).
    pub fn parse_configured(s: &str) -> Result<Self, HostError> {
        let s = s.trim();
        if let Ok(ip) = s.parse::<IpAddr>() {
            return Ok(Self::Ip(ip));
        }
        if let Some(inner) = s.strip_prefix('[').and_then(|r| r.strip_suffix(']')) {
            return inner
                .parse::<Ipv6Addr>()
                .map(|a| Self::Ip(IpAddr::V6(a)))
                .map_err(|_| HostError::Malformed);
        }
        parse_name(s)
    }
}

/// A parsed `Host` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostHeader {
    pub host: HostName,
    /// `None` when the header had no port (port 80 for http).
    pub port: Option<u16>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum HostError {
    #[error("malformed host header")]
    Malformed,
}

fn parse_name(s: &str) -> Result<HostName, HostError> {
    let lower = s.to_ascii_lowercase();
    let s = lower.strip_suffix('.').unwrap_or(&lower);
    let valid_label = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    if s.is_empty() || s.len() > 253 || !s.split('.').all(valid_label) {
        return Err(HostError::Malformed);
    }
    // All-numeric dotted names must be real IPv4 literals (parsed above), never names:
    // "127.1" or "0x7f.1" are how allow-lists get bypassed.
    if s.split('.')
        .all(|l| l.bytes().all(|b| b.is_ascii_hexdigit() || b == b'x'))
    {
        if let Ok(v4) = s.parse::<Ipv4Addr>() {
            return Ok(HostName::Ip(IpAddr::V4(v4)));
        }
        if s.split('.').any(|l| l.bytes().all(|b| b.is_ascii_digit())) {
            return Err(HostError::Malformed);
        }
    }
    Ok(HostName::Name(s.to_string()))
}

/// Parses a `Host` header value: `name[:port]`, `a.b.c.d[:port]` or `[v6][:port]`.
pub fn parse_host_header(value: &[u8]) -> Result<HostHeader, HostError> {
    let s = std::str::from_utf8(value).map_err(|_| HostError::Malformed)?;
    if s.is_empty() || s.len() > 300 || s.bytes().any(|b| b <= b' ' || b == 0x7f) {
        return Err(HostError::Malformed);
    }
    let parse_port = |p: &str| -> Result<u16, HostError> {
        if p.is_empty() || p.len() > 5 || !p.bytes().all(|b| b.is_ascii_digit()) {
            return Err(HostError::Malformed);
        }
        p.parse::<u16>().map_err(|_| HostError::Malformed)
    };
    if let Some(rest) = s.strip_prefix('[') {
        let (inner, after) = rest.split_once(']').ok_or(HostError::Malformed)?;
        let addr = inner
            .parse::<Ipv6Addr>()
            .map_err(|_| HostError::Malformed)?;
        let port = match after {
            "" => None,
            a => Some(parse_port(
                a.strip_prefix(':').ok_or(HostError::Malformed)?,
            )?),
        };
        return Ok(HostHeader {
            host: HostName::Ip(IpAddr::V6(addr)),
            port,
        });
    }
    let (h, port) = match s.split_once(':') {
        Some((h, p)) => (h, Some(parse_port(p)?)),
        None => (s, None),
    };
    let host = match h.parse::<Ipv4Addr>() {
        Ok(a) => HostName::Ip(IpAddr::V4(a)),
        Err(_) => parse_name(h)?,
    };
    Ok(HostHeader { host, port })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(s: &str) -> HostHeader {
        parse_host_header(s.as_bytes()).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn accepted_forms() {
        assert_eq!(
            ok("localhost:18374"),
            HostHeader {
                host: HostName::Name("localhost".into()),
                port: Some(18374)
            }
        );
        assert_eq!(ok("LocalHost.").host, HostName::Name("localhost".into()));
        assert_eq!(
            ok("127.0.0.1:1").host,
            HostName::Ip("127.0.0.1".parse().unwrap())
        );
        assert_eq!(ok("[::1]:80").host, HostName::Ip("::1".parse().unwrap()));
        assert_eq!(ok("[::1]").port, None);
        assert_eq!(ok("host.docker.internal").port, None);
    }

    #[test]
    fn rejected_forms() {
        for bad in [
            "",
            " ",
            "a b",
            "a:b",
            "a:",
            "a:65536",
            "a:1:2",
            "[::1",
            "[::1]x",
            "[xyz]",
            "::1",
            "u@host",
            "host/x",
            "127.1",
            "0x7f.0.0.1",
            "a..b",
            "-a.b",
            "a\u{0}",
            "évil",
            "a:+80",
            "a:080000",
            // found by fuzzing: numeric-looking names in upper case
            "X5.0.0",
            "0X7F.0.0.1",
        ] {
            assert!(parse_host_header(bad.as_bytes()).is_err(), "{bad:?}");
        }
        assert!(parse_host_header(&[0xff, 0xfe]).is_err());
    }

    #[test]
    fn configured_names() {
        assert_eq!(
            HostName::parse_configured("::1").unwrap(),
            HostName::Ip("::1".parse().unwrap())
        );
        assert_eq!(
            HostName::parse_configured("[::1]").unwrap(),
            HostName::Ip("::1".parse().unwrap())
        );
        assert_eq!(
            HostName::parse_configured("My.Box").unwrap(),
            HostName::Name("my.box".into())
        );
        assert!(HostName::parse_configured("a b").is_err());
    }

    proptest::proptest! {
        #[test]
        fn never_panics(s in proptest::collection::vec(proptest::num::u8::ANY, 0..64)) {
            let _ = parse_host_header(&s);
        }
    }
}
