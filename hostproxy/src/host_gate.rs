//! Gate 1 of SPEC.md 4.1, shared by the API and every callback listener: exactly one
//! well-formed `Host` whose name is allowed and whose port is the one served. A leaf: it
//! knows no router and no `ApiError`.

use axum::http::{HeaderMap, StatusCode, header};
use clawker_protocol::host::{HostName, parse_host_header};

/// The built-in names every daemon accepts in `Host`.
pub fn builtin_host_names() -> Vec<HostName> {
    vec![
        HostName::Name("localhost".into()),
        HostName::Ip(std::net::Ipv4Addr::LOCALHOST.into()),
        HostName::Ip(std::net::Ipv6Addr::LOCALHOST.into()),
        HostName::Name("host.docker.internal".into()),
    ]
}

/// Why a `Host` was refused: 400 for a missing, repeated or malformed one, 403 otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostRejection {
    MissingOrRepeated,
    Malformed,
    NotAllowed,
}

impl HostRejection {
    pub fn status(self) -> StatusCode {
        match self {
            Self::MissingOrRepeated | Self::Malformed => StatusCode::BAD_REQUEST,
            Self::NotAllowed => StatusCode::FORBIDDEN,
        }
    }

    pub fn message(self) -> &'static str {
        match self {
            Self::MissingOrRepeated => "missing or repeated host header",
            Self::Malformed => "malformed host header",
            Self::NotAllowed => "host not allowed",
        }
    }
}

/// Gate 1: exactly one well-formed `Host` whose name is allowed and whose port is `port`.
pub fn check_host(
    headers: &HeaderMap,
    allowed: &[HostName],
    port: u16,
) -> Result<(), HostRejection> {
    match allowed_host(headers, allowed)? {
        p if p == port => Ok(()),
        _ => Err(HostRejection::NotAllowed),
    }
}

/// Gate 1 without the port: exactly one well-formed `Host` whose name is allowed (a
/// tunnel stream whose container end's port is not known to the daemon).
pub fn check_host_name(headers: &HeaderMap, allowed: &[HostName]) -> Result<(), HostRejection> {
    allowed_host(headers, allowed).map(|_| ())
}

/// The port of the one well-formed `Host` whose name is allowed.
fn allowed_host(headers: &HeaderMap, allowed: &[HostName]) -> Result<u16, HostRejection> {
    let mut values = headers.get_all(header::HOST).iter();
    let (Some(value), None) = (values.next(), values.next()) else {
        return Err(HostRejection::MissingOrRepeated);
    };
    let parsed = parse_host_header(value.as_bytes()).map_err(|_| HostRejection::Malformed)?;
    if !allowed.contains(&parsed.host) {
        return Err(HostRejection::NotAllowed);
    }
    Ok(parsed.port.unwrap_or(80))
}

/// A header map of `pairs` (the gates' unit tests).
#[cfg(test)]
pub(crate) fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        h.append(
            http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            http::HeaderValue::from_str(v).unwrap(),
        );
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts() {
        let allowed = builtin_host_names();
        let ok = |h: &str| check_host(&headers(&[("host", h)]), &allowed, 18374);
        assert!(ok("localhost:18374").is_ok());
        assert!(ok("127.0.0.1:18374").is_ok());
        assert!(ok("[::1]:18374").is_ok());
        assert!(ok("host.docker.internal:18374").is_ok());
        assert_eq!(
            ok("evil.example:18374").unwrap_err().status(),
            StatusCode::FORBIDDEN
        );
        assert_eq!(
            ok("localhost:1").unwrap_err().status(),
            StatusCode::FORBIDDEN
        );
        assert_eq!(ok("localhost").unwrap_err().status(), StatusCode::FORBIDDEN);
        assert_eq!(
            ok("local host").unwrap_err().status(),
            StatusCode::BAD_REQUEST
        );
        let none = check_host(&HeaderMap::new(), &allowed, 18374);
        assert_eq!(none.unwrap_err().status(), StatusCode::BAD_REQUEST);
        let two = headers(&[("host", "localhost:18374"), ("host", "localhost:18374")]);
        assert_eq!(
            check_host(&two, &allowed, 18374).unwrap_err().status(),
            StatusCode::BAD_REQUEST
        );
    }
}
