//! URL checks shared by the daemon and the tools: canonicalisation and policy for
//! `/open/url`, and OAuth loopback-redirect detection for `host-open`. Pure functions, so
//! they are fuzzed directly.

use std::net::IpAddr;

use thiserror::Error;

/// Longest URL `/open/url` accepts.
pub const MAX_URL: usize = 8 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum UrlError {
    #[error("url is empty")]
    Empty,
    #[error("url is too long")]
    TooLong,
    #[error("url contains control characters")]
    ControlCharacters,
    #[error("invalid url: {0}")]
    Invalid(String),
    #[error("only http and https urls can be opened")]
    Scheme,
    #[error("urls with a username or password are not allowed")]
    UserInfo,
    #[error("url has no host")]
    NoHost,
    #[error(
        "urls to private, link-local or single-label hosts are not opened: allow the host in open.allowed_hosts"
    )]
    InternalHost,
}

/// Parses and canonicalises a URL to open: http(s) only, no userinfo, no control
/// characters (the `url` crate would silently strip tabs and newlines, so check first).
/// Spaces are percent-encoded by the re-serialisation, as a browser would.
pub fn canonical_url(raw: &str) -> Result<String, UrlError> {
    if raw.is_empty() {
        return Err(UrlError::Empty);
    }
    if raw.len() > MAX_URL {
        return Err(UrlError::TooLong);
    }
    if raw.chars().any(char::is_control) {
        return Err(UrlError::ControlCharacters);
    }
    let url = url::Url::parse(raw).map_err(|e| UrlError::Invalid(e.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(UrlError::Scheme);
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(UrlError::UserInfo);
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(UrlError::NoHost);
    }
    Ok(url.to_string())
}

/// True for addresses a browser must not be steered to from a container: private,
/// carrier-grade NAT, link-local (cloud metadata at 169.254.169.254), multicast, broadcast,
/// unspecified, unique-local. Loopback is fine: published dev-server ports live there.
pub fn is_internal_ip(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(a) => {
            let o = a.octets();
            a.is_private()
                || a.is_link_local()
                || a.is_multicast()
                || a.is_broadcast()
                || a.is_unspecified()
                || o[0] == 0
                || (o[0] == 100 && (o[1] & 0xc0) == 64)
        }
        IpAddr::V6(a) => {
            if let Some(v4) = a.to_ipv4_mapped() {
                return is_internal_ip(IpAddr::V4(v4));
            }
            let seg = a.segments();
            let o = a.octets();
            let v4 =
                |i: usize| IpAddr::V4(std::net::Ipv4Addr::new(o[i], o[i + 1], o[i + 2], o[i + 3]));
            // NAT64 (64:ff9b::/96, and the local-use 64:ff9b:1::/48) and 6to4 (2002::/16)
            // carry an IPv4 address that a gateway reaches: judge that one. Teredo
            // (2001::/32) is a tunnel out of the host: refused.
            let nat64 = seg[0] == 0x64 && seg[1] == 0xff9b && (seg[2..6] == [0; 4] || seg[2] == 1);
            a.is_unspecified()
                || a.is_multicast()
                || (seg[0] & 0xfe00) == 0xfc00
                || (seg[0] & 0xffc0) == 0xfe80
                || (nat64 && (is_internal_ip(v4(12)) || v4(12).is_loopback()))
                || (seg[0] == 0x2002 && (is_internal_ip(v4(2)) || v4(2).is_loopback()))
                || (seg[0] == 0x2001 && seg[1] == 0)
        }
    }
}

/// True for an address a host *name* must not resolve to (SPEC.md 11): every internal one,
/// and loopback too — the literal `localhost` and `127.0.0.1` stay allowed for published
/// dev-server ports, but a name that lands there (`127.0.0.1.nip.io`, a rebinding name) is
/// refused like an internal address.
pub fn is_refused_for_a_name(ip: IpAddr) -> bool {
    is_internal_ip(ip) || ip.is_loopback()
}

/// The URL policy: refuse internal IP literals and single-label names unless `allowed`
/// (lowercase host names) says otherwise.
pub fn check_url_policy(url: &url::Url, allowed: &[String]) -> Result<(), UrlError> {
    let host = url.host_str().unwrap_or("").to_ascii_lowercase();
    if allowed.iter().any(|h| h == &host) {
        return Ok(());
    }
    let refused = match url.host() {
        Some(url::Host::Ipv4(a)) => is_internal_ip(a.into()),
        Some(url::Host::Ipv6(a)) => is_internal_ip(a.into()),
        Some(url::Host::Domain(d)) => {
            let d = d.trim_end_matches('.').to_ascii_lowercase();
            (!d.contains('.') && d != "localhost") || d.ends_with(".localhost")
        }
        None => true,
    };
    if refused {
        Err(UrlError::InternalHost)
    } else {
        Ok(())
    }
}

/// An OAuth redirect to a loopback port of the container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OAuthRedirect {
    pub port: u16,
    pub path: String,
    pub state: Option<String>,
}

/// `http://localhost…`, `http://127.0.0.1…` or `http://[::1]…`: a URL that means the
/// machine it is opened on (inside a container, the container itself).
pub fn is_loopback_http(url: &url::Url) -> bool {
    url.scheme() == "http"
        && match url.host() {
            Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
            Some(url::Host::Ipv4(a)) => a == std::net::Ipv4Addr::LOCALHOST,
            Some(url::Host::Ipv6(a)) => a == std::net::Ipv6Addr::LOCALHOST,
            None => false,
        }
}

/// Finds `redirect_uri` (else `callback`) pointing at `http://localhost:P/…`,
/// `http://127.0.0.1:P/…` or `http://[::1]:P/…`, with the URL's `state`.
pub fn detect_oauth(url: &url::Url) -> Option<OAuthRedirect> {
    let param = |name: &str| {
        url.query_pairs()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
    };
    let target = param("redirect_uri").or_else(|| param("callback"))?;
    let target = url::Url::parse(&target).ok()?;
    if !is_loopback_http(&target) {
        return None;
    }
    Some(OAuthRedirect {
        port: target.port()?,
        path: target.path().to_string(),
        state: param("state").filter(|s| !s.is_empty()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(
            canonical_url("https://Example.com/a b").unwrap(),
            "https://example.com/a%20b"
        );
        assert_eq!(
            canonical_url("https://Example.COM/x?y=1").unwrap(),
            "https://example.com/x?y=1"
        );
        assert_eq!(
            canonical_url("http://localhost:3000").unwrap(),
            "http://localhost:3000/"
        );
        for bad in [
            "",
            "javascript:alert(1)",
            "file:///etc/passwd",
            "https://user:pw@example.com/",
            "https://user@example.com/",
            "https://exa\nmple.com",
            "https://example.com/\t",
            "not a url",
            "data:text/html,x",
        ] {
            assert!(canonical_url(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn url_policy() {
        let check =
            |u: &str| check_url_policy(&url::Url::parse(u).unwrap(), &["intranet".to_string()]);
        for ok in [
            "https://example.com/",
            "http://localhost:3000/",
            "http://127.0.0.1:8080/",
            "http://[::1]:8080/",
            "https://8.8.8.8/",
            "http://intranet/",
        ] {
            assert!(check(ok).is_ok(), "{ok}");
        }
        for bad in [
            "http://169.254.169.254/latest/meta-data/",
            "http://10.0.0.1/",
            "http://192.168.1.1/",
            "http://172.16.0.1/",
            "http://100.64.0.1/",
            "http://0.0.0.0:8080/",
            "http://224.0.0.1/",
            "http://255.255.255.255/",
            "http://[fe80::1]/",
            "http://[fd00::1]/",
            "http://[::ffff:10.0.0.1]/",
            "http://[::]/",
            "http://router/",
        ] {
            assert_eq!(check(bad), Err(UrlError::InternalHost), "{bad}");
        }
    }

    fn detect(s: &str) -> Option<OAuthRedirect> {
        detect_oauth(&url::Url::parse(s).unwrap())
    }

    #[test]
    fn detects_loopback_redirects() {
        let r = detect("https://auth.example.com/authorize?client_id=x&redirect_uri=http%3A%2F%2Flocalhost%3A8765%2Fcallback&state=abc").unwrap();
        assert_eq!(
            r,
            OAuthRedirect {
                port: 8765,
                path: "/callback".into(),
                state: Some("abc".into())
            }
        );
        let r = detect("https://a.example/?redirect_uri=http://127.0.0.1:9000/").unwrap();
        assert_eq!((r.port, r.path.as_str(), r.state), (9000, "/", None));
        assert_eq!(
            detect("https://a.example/?redirect_uri=http://[::1]:9001/cb")
                .unwrap()
                .port,
            9001
        );
        assert_eq!(
            detect("https://a.example/?callback=http://localhost:7000/done")
                .unwrap()
                .path,
            "/done"
        );
        let r = detect("https://a.example/?callback=http://localhost:7000/x&redirect_uri=http://localhost:7001/y").unwrap();
        assert_eq!(r.port, 7001, "redirect_uri wins over callback");
    }

    #[test]
    fn ignores_everything_else() {
        for s in [
            "https://example.com/",
            "https://a.example/?redirect_uri=https://localhost:8765/cb",
            "https://a.example/?redirect_uri=http://localhost/cb",
            "https://a.example/?redirect_uri=http://evil.example:8765/cb",
            "https://a.example/?redirect_uri=http://localhost.evil.example:8765/cb",
            "https://a.example/?redirect_uri=http://127.0.0.2:8765/cb",
            "https://a.example/?redirect_uri=not-a-url",
            "https://a.example/?x=http://localhost:8765/cb",
            "https://a.example/path/redirect_uri=http://localhost:8765/cb",
        ] {
            assert_eq!(detect(s), None, "{s}");
        }
    }
}
