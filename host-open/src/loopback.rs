//! A CLI's own first page. Some CLIs open a page of their own on the container's loopback
//! first (rclone: `http://127.0.0.1:53682/auth?state=…`), which redirects to the provider's
//! login. The host's browser cannot reach the container's loopback, so `host-open` follows
//! those redirects itself, inside the container, opening nothing, until a URL that this
//! container does not serve: the provider's, whose loopback `redirect_uri` is then
//! registered as usual.
//!
//! Only a redirect chain that leaves the container changes what is opened. A loopback page
//! that answers without a redirect (a dev server published on the host's same port) or one
//! that does not answer in time is opened as given, as before.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use clawker_protocol::urls::is_loopback_http;
use url::Url;

/// Redirects followed inside the container at most.
const MAX_HOPS: usize = 10;
/// Per connect and per read: the container's own server answers at once or not at all.
const WAIT: Duration = Duration::from_secs(5);
const MAX_HEAD: usize = 64 * 1024;

/// What a loopback URL of the container answered.
#[derive(Debug, PartialEq, Eq)]
pub enum Answer {
    /// Nothing of the container listens there: the URL is not the container's.
    NotServed,
    /// A redirect to this `Location` (as sent, maybe relative).
    Redirect(String),
    /// A page, an error, or no answer in time.
    Page,
}

/// The URL to open for `given`: the first one off the container's loopback that a chain of
/// its redirects reaches, else `given` itself. `ask` answers for one loopback URL.
pub fn destination(given: &Url, mut ask: impl FnMut(&Url) -> Answer) -> Url {
    let mut at = given.clone();
    for _ in 0..=MAX_HOPS {
        if !is_loopback_http(&at) {
            return at;
        }
        match ask(&at) {
            Answer::NotServed => return at,
            Answer::Page => return given.clone(),
            Answer::Redirect(to) => match at.join(&to) {
                Ok(next) if matches!(next.scheme(), "http" | "https") => at = next,
                _ => return given.clone(),
            },
        }
    }
    given.clone()
}

/// `GET url` on the container's loopback, its head only.
pub fn ask(url: &Url) -> Answer {
    let Some(port) = url.port_or_known_default() else {
        return Answer::Page;
    };
    let addrs: Vec<SocketAddr> = match url.host() {
        Some(url::Host::Ipv6(a)) => vec![(a, port).into()],
        Some(url::Host::Ipv4(a)) => vec![(a, port).into()],
        // `localhost` without a resolver: both loopbacks, as a browser would try them.
        _ => vec![
            (std::net::Ipv4Addr::LOCALHOST, port).into(),
            (std::net::Ipv6Addr::LOCALHOST, port).into(),
        ],
    };
    let Some(mut s) = addrs
        .iter()
        .find_map(|a| TcpStream::connect_timeout(a, WAIT).ok())
    else {
        return Answer::NotServed;
    };
    let _ = s.set_read_timeout(Some(WAIT));
    let _ = s.set_write_timeout(Some(WAIT));
    let target = match url.query() {
        Some(q) => format!("{}?{q}", url.path()),
        None => url.path().to_string(),
    };
    let host = url.host_str().unwrap_or("localhost");
    let req = format!(
        "GET {target} HTTP/1.1\r\nHost: {host}:{port}\r\nUser-Agent: host-open\r\nAccept: text/html,*/*\r\nConnection: close\r\n\r\n"
    );
    if s.write_all(req.as_bytes()).is_err() {
        return Answer::Page;
    }
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut resp = httparse::Response::new(&mut headers);
        match resp.parse(&buf) {
            Ok(httparse::Status::Complete(_)) => {
                let redirect = matches!(resp.code, Some(301 | 302 | 303 | 307 | 308));
                let location = resp
                    .headers
                    .iter()
                    .find(|h| h.name.eq_ignore_ascii_case("location"))
                    .and_then(|h| std::str::from_utf8(h.value).ok());
                return match location {
                    Some(l) if redirect => Answer::Redirect(l.trim().to_string()),
                    _ => Answer::Page,
                };
            }
            Ok(httparse::Status::Partial) if buf.len() < MAX_HEAD => {}
            _ => return Answer::Page,
        }
        match s.read(&mut chunk) {
            Ok(0) | Err(_) => return Answer::Page,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn u(s: &str) -> Url {
        Url::parse(s).unwrap()
    }

    #[test]
    fn a_chain_of_the_containers_own_redirects_is_followed_to_the_provider() {
        let provider = "https://accounts.example/o/auth?redirect_uri=http%3A%2F%2F127.0.0.1%3A53682%2F&state=s1";
        let mut asked = vec![];
        let got = destination(&u("http://127.0.0.1:53682/auth?state=s1"), |at| {
            asked.push(at.to_string());
            match at.path() {
                "/auth" => Answer::Redirect("/auth2".into()),
                _ => Answer::Redirect(provider.into()),
            }
        });
        assert_eq!(got, u(provider));
        assert_eq!(
            asked,
            [
                "http://127.0.0.1:53682/auth?state=s1",
                "http://127.0.0.1:53682/auth2"
            ]
        );
    }

    #[test]
    fn what_the_container_does_not_redirect_away_is_opened_as_given() {
        let given = u("http://localhost:3000/");
        // A dev server's page, no answer at all, a loop, a redirect to another scheme.
        assert_eq!(destination(&given, |_| Answer::Page), given);
        assert_eq!(
            destination(&given, |_| Answer::Redirect("/again".into())),
            given
        );
        assert_eq!(
            destination(&given, |_| Answer::Redirect("file:///etc/passwd".into())),
            given
        );
        // Nothing listens in the container: not its URL (a provider on the host's loopback).
        assert_eq!(destination(&given, |_| Answer::NotServed), given);
        // A redirect to a loopback port nothing in the container serves: that one.
        let host_side = u("http://127.0.0.1:9999/authorize?x=1");
        assert_eq!(
            destination(&given, |at| if at.port() == Some(3000) {
                Answer::Redirect(host_side.to_string())
            } else {
                Answer::NotServed
            }),
            host_side
        );
        // Off loopback from the start: never asked.
        let away = u("https://example.com/");
        assert_eq!(destination(&away, |_| unreachable!()), away);
    }

    #[test]
    fn a_real_server_on_loopback_is_asked_for_its_head_only() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let server = std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            let mut req = vec![0u8; 1024];
            let n = s.read(&mut req).unwrap();
            s.write_all(
                b"HTTP/1.1 302 Found\r\nLocation: https://p.example/x\r\nContent-Length: 0\r\n\r\n",
            )
            .unwrap();
            String::from_utf8_lossy(&req[..n]).into_owned()
        });
        let got = ask(&u(&format!("http://127.0.0.1:{port}/auth?state=a%20b")));
        assert_eq!(got, Answer::Redirect("https://p.example/x".into()));
        let req = server.join().unwrap();
        assert!(
            req.starts_with("GET /auth?state=a%20b HTTP/1.1\r\n"),
            "{req}"
        );
        // A port nothing listens on.
        let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = free.local_addr().unwrap().port();
        drop(free);
        assert_eq!(
            ask(&u(&format!("http://127.0.0.1:{port}/"))),
            Answer::NotServed
        );
    }
}
