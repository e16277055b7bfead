//! One blocking HTTP/1.1 keep-alive connection to the daemon, for the paths where a
//! request's latency is the product: `ssh-agent-proxy` sends every agent message as one POST
//! and waits for it (a thread per agent client owns one [`Conn`]: no async runtime and no
//! task hand-off between the client's socket and the daemon's), and `host-open` and
//! `git-credential-clawker` make one or two requests and exit (no runtime to build).
//!
//! The request is written in one piece; the reply's head is parsed by `httparse` and its body
//! must carry a `Content-Length` (the daemon's JSON replies always do).
//!
//! A request that may have reached the daemon is never sent twice (SPEC.md 5): a signature
//! may wait for a touch, a `store` writes the keychain. A kept-alive connection is checked
//! before the request is written (the daemon closes idle ones after 10 s), and replaced when
//! the daemon has closed it; a write that fails on a reused connection is sent again on a
//! new one (the daemon cannot have read a whole request); a reply that does not come (a
//! time-out, a reset, an early close) is an error, never a second request. Like
//! [`crate::Client`], it never goes through an `HTTP_PROXY`: the token stays between the
//! container and the host.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use clawker_protocol::{Secret, env};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::ClientError;

/// Largest reply head and body accepted (agent replies are at most 256 KiB, base64'd).
const MAX_HEAD: usize = 64 * 1024;
const MAX_BODY: usize = 2 * 1024 * 1024;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a reply may take: longer than the longest the daemon lets a request wait for
/// the user's answer (`[approval] timeout`, at most 5 minutes; SPEC.md 14), so a tool never
/// gives up before the daemon says "no answer on the host".
const REPLY_TIMEOUT: Duration = Duration::from_secs(330);

/// A connection to the daemon at one base URL.
pub struct Conn {
    base: String,
    url: url::Url,
    /// `Host` header value: host, and the port unless it is the scheme's default.
    host: String,
    token: Option<Secret<String>>,
    reply_timeout: Duration,
    /// How long a refused connection is tried again (`CLAWKER_HOST_PROXY_WAIT`).
    wait: Duration,
    stream: Option<TcpStream>,
    /// Bytes read past the end of the previous reply (none with a well-behaved peer).
    buf: Vec<u8>,
}

impl std::fmt::Debug for Conn {
    // Buffered reply bytes may hold credentials or agent traffic: never shown.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn")
            .field("base", &self.base)
            .field("token", &self.token)
            .field("connected", &self.stream.is_some())
            .finish_non_exhaustive()
    }
}

/// How one exchange failed.
enum Failure {
    /// The request could not be written whole: the daemon has not read it.
    NotSent(std::io::Error),
    /// The request was written; the reply did not come or was unusable. The daemon may have
    /// acted on it.
    Broken(std::io::Error),
}

struct Reply {
    status: u16,
    body: Vec<u8>,
    keep_alive: bool,
}

impl Conn {
    /// A connection (opened on first use) to `base`, as returned by [`crate::base_from_env`].
    pub fn new(base: &str, token: Option<Secret<String>>) -> Result<Self, ClientError> {
        let bad = || ClientError::BadUrl {
            var: env::HOST_PROXY,
            value: base.to_string(),
        };
        let url = url::Url::parse(base).map_err(|_| bad())?;
        let host_str = url.host_str().ok_or_else(bad)?;
        let host = match url.port() {
            Some(p) => format!("{host_str}:{p}"),
            None => host_str.to_string(),
        };
        Ok(Self {
            base: base.trim_end_matches('/').to_string(),
            url,
            host,
            token,
            reply_timeout: REPLY_TIMEOUT,
            wait: crate::wait_from_env(),
            stream: None,
            buf: Vec::new(),
        })
    }

    /// How long a refused connection is tried again (default `CLAWKER_HOST_PROXY_WAIT`).
    pub fn with_wait(mut self, wait: Duration) -> Self {
        self.wait = wait;
        self
    }

    /// How long a reply may take (default 60 s: a hardware key may wait for a touch).
    pub fn with_reply_timeout(mut self, timeout: Duration) -> Self {
        self.reply_timeout = timeout;
        self
    }

    pub fn from_env() -> Result<Self, ClientError> {
        Self::new(&crate::base_from_env()?, crate::token_from_env()?)
    }

    /// Another connection to the same daemon with the same token, opened on first use.
    pub fn another(&self) -> Self {
        Self {
            base: self.base.clone(),
            url: self.url.clone(),
            host: self.host.clone(),
            token: self.token.clone(),
            reply_timeout: self.reply_timeout,
            wait: self.wait,
            stream: None,
            buf: Vec::new(),
        }
    }

    fn unreachable(&self, source: std::io::Error) -> ClientError {
        ClientError::Unreachable {
            url: self.base.clone(),
            var: env::HOST_PROXY,
            source: source.into(),
        }
    }

    /// Connects; a refused connection (the tunnel not attached yet) is tried again every
    /// 100 ms for up to `wait`.
    fn connect(&self) -> std::io::Result<TcpStream> {
        let deadline = std::time::Instant::now() + self.wait;
        loop {
            match self.connect_once() {
                Err(e)
                    if e.kind() == std::io::ErrorKind::ConnectionRefused
                        && std::time::Instant::now() < deadline =>
                {
                    std::thread::sleep(Duration::from_millis(100));
                }
                other => return other,
            }
        }
    }

    fn connect_once(&self) -> std::io::Result<TcpStream> {
        let addrs = self.url.socket_addrs(|| Some(80))?;
        let mut last = std::io::Error::new(std::io::ErrorKind::NotFound, "no address");
        for addr in addrs {
            match TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT) {
                Ok(s) => {
                    s.set_nodelay(true)?;
                    s.set_read_timeout(Some(self.reply_timeout))?;
                    s.set_write_timeout(Some(self.reply_timeout))?;
                    return Ok(s);
                }
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    /// POSTs `body` as JSON to `path` and decodes the reply, like [`crate::Client::post`].
    pub fn post<B: Serialize + ?Sized, T: DeserializeOwned>(
        &mut self,
        path: &str,
        body: &B,
    ) -> Result<T, ClientError> {
        let json = serde_json::to_vec(body).map_err(|e| ClientError::Decode {
            url: self.base.clone(),
            source: e.into(),
        })?;
        self.send("POST", path, json)
    }

    /// GETs `path` and decodes the reply.
    pub fn get<T: DeserializeOwned>(&mut self, path: &str) -> Result<T, ClientError> {
        self.send("GET", path, Vec::new())
    }

    /// PUTs `body` as JSON to `path` and decodes the reply.
    pub fn put<B: Serialize + ?Sized, T: DeserializeOwned>(
        &mut self,
        path: &str,
        body: &B,
    ) -> Result<T, ClientError> {
        let json = serde_json::to_vec(body).map_err(|e| ClientError::Decode {
            url: self.base.clone(),
            source: e.into(),
        })?;
        self.send("PUT", path, json)
    }

    /// DELETEs `path` and decodes the reply.
    pub fn delete<T: DeserializeOwned>(&mut self, path: &str) -> Result<T, ClientError> {
        self.send("DELETE", path, Vec::new())
    }

    fn send<T: DeserializeOwned>(
        &mut self,
        method: &str,
        path: &str,
        mut json: Vec<u8>,
    ) -> Result<T, ClientError> {
        let mut req = Vec::with_capacity(256 + json.len());
        req.extend_from_slice(
            format!("{method} {path} HTTP/1.1\r\nHost: {}\r\n", self.host).as_bytes(),
        );
        if !json.is_empty() {
            req.extend_from_slice(
                format!(
                    "Content-Type: application/json\r\nContent-Length: {}\r\n",
                    json.len()
                )
                .as_bytes(),
            );
        }
        if let Some(t) = &self.token {
            req.extend_from_slice(b"Authorization: Bearer ");
            req.extend_from_slice(t.expose().as_bytes());
            req.extend_from_slice(b"\r\n");
        }
        req.extend_from_slice(b"\r\n");
        req.extend_from_slice(&json);
        let reply = self.exchange(&req);
        // The request held the token and the body may hold a password: do not leave them in
        // freed memory.
        req.fill(0);
        json.fill(0);
        let reply = reply?;
        crate::reply(&self.base, reply.status, &reply.body)
    }

    /// Sends `req` and reads the reply, on the kept-alive connection if it is still open,
    /// else on a new one. Only a request that was not written whole on a reused connection
    /// goes again.
    fn exchange(&mut self, req: &[u8]) -> Result<Reply, ClientError> {
        let mut reused = self.stream.take().filter(still_open);
        loop {
            let was_reused = reused.is_some();
            let mut stream = match reused.take() {
                Some(s) => s,
                None => {
                    self.buf.clear();
                    self.connect().map_err(|e| self.unreachable(e))?
                }
            };
            match exchange_on(&mut stream, &mut self.buf, req) {
                Ok(reply) => {
                    if reply.keep_alive {
                        self.stream = Some(stream);
                    }
                    return Ok(reply);
                }
                Err(Failure::NotSent(_)) if was_reused => self.buf.clear(),
                Err(Failure::NotSent(e) | Failure::Broken(e)) => return Err(self.unreachable(e)),
            }
        }
    }
}

/// Whether a kept-alive connection can carry the next request: the daemon has not closed it
/// and sent nothing unasked.
fn still_open(s: &TcpStream) -> bool {
    if s.set_nonblocking(true).is_err() {
        return false;
    }
    let open = matches!(
        s.peek(&mut [0u8; 1]),
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock
    );
    s.set_nonblocking(false).is_ok() && open
}

fn invalid(msg: &'static str) -> Failure {
    Failure::Broken(std::io::Error::new(std::io::ErrorKind::InvalidData, msg))
}

fn exchange_on(stream: &mut TcpStream, buf: &mut Vec<u8>, req: &[u8]) -> Result<Reply, Failure> {
    stream.write_all(req).map_err(Failure::NotSent)?;
    let mut chunk = [0u8; 16 * 1024];
    let (head_len, status, content_length, keep_alive) = loop {
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut resp = httparse::Response::new(&mut headers);
        match resp.parse(buf) {
            Ok(httparse::Status::Complete(n)) => {
                let mut length = None;
                let mut keep = resp.version == Some(1);
                for h in resp.headers.iter() {
                    if h.name.eq_ignore_ascii_case("content-length") {
                        length = std::str::from_utf8(h.value)
                            .ok()
                            .and_then(|v| v.trim().parse::<usize>().ok());
                    } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
                        return Err(invalid("the daemon sent a chunked reply"));
                    } else if h.name.eq_ignore_ascii_case("connection") {
                        keep = !h.value.eq_ignore_ascii_case(b"close");
                    }
                }
                let Some(length) = length else {
                    return Err(invalid("the daemon's reply has no Content-Length"));
                };
                break (n, resp.code.unwrap_or(0), length, keep);
            }
            Ok(httparse::Status::Partial) if buf.len() < MAX_HEAD => {}
            Ok(httparse::Status::Partial) => return Err(invalid("the reply head is too large")),
            Err(_) => return Err(invalid("the daemon sent a malformed reply")),
        }
        let n = match stream.read(&mut chunk) {
            Ok(0) => return Err(Failure::Broken(std::io::ErrorKind::UnexpectedEof.into())),
            Ok(n) => n,
            Err(e) => return Err(Failure::Broken(e)),
        };
        buf.extend_from_slice(&chunk[..n]);
    };
    if content_length > MAX_BODY {
        return Err(invalid("the daemon's reply is too large"));
    }
    let end = head_len + content_length;
    while buf.len() < end {
        let n = stream.read(&mut chunk).map_err(Failure::Broken)?;
        if n == 0 {
            return Err(Failure::Broken(std::io::ErrorKind::UnexpectedEof.into()));
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let body = buf[head_len..end].to_vec();
    buf.drain(..end);
    Ok(Reply {
        status,
        body,
        keep_alive,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::BufRead;
    use std::net::TcpListener;

    /// A one-thread server: answers each request on a connection with `replies` in turn,
    /// closing the connection after `per_conn` replies. Returns its base URL.
    fn server(
        replies: Vec<&'static str>,
        per_conn: usize,
    ) -> (String, std::thread::JoinHandle<Vec<String>>) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}", l.local_addr().unwrap());
        let h = std::thread::spawn(move || {
            let mut seen = Vec::new();
            let mut replies = replies.into_iter().peekable();
            'conns: for conn in l.incoming() {
                let conn = conn.unwrap();
                let mut r = std::io::BufReader::new(conn.try_clone().unwrap());
                let mut w = conn;
                for _ in 0..per_conn {
                    let mut head = String::new();
                    let mut len = 0;
                    loop {
                        let mut line = String::new();
                        if r.read_line(&mut line).unwrap() == 0 {
                            continue 'conns;
                        }
                        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                            len = v.trim().parse().unwrap();
                        }
                        head.push_str(&line);
                        if line == "\r\n" {
                            break;
                        }
                    }
                    let mut body = vec![0u8; len];
                    r.read_exact(&mut body).unwrap();
                    seen.push(format!("{head}{}", String::from_utf8(body).unwrap()));
                    let Some(reply) = replies.next() else {
                        break 'conns;
                    };
                    w.write_all(reply.as_bytes()).unwrap();
                    if replies.peek().is_none() {
                        break 'conns;
                    }
                }
            }
            seen
        });
        (base, h)
    }

    fn ok(body: &'static str) -> &'static str {
        Box::leak(
            format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                body.len()
            )
            .into_boxed_str(),
        )
    }

    #[test]
    fn keeps_the_connection_and_sends_host_token_and_json() {
        let (base, h) = server(vec![ok(r#"{"n":1}"#), ok(r#"{"n":2}"#)], 2);
        let mut c = Conn::new(&base, Some(Secret::new("tok".into()))).unwrap();
        let a: serde_json::Value = c
            .post("/ssh/agent", &serde_json::json!({"data": "AA=="}))
            .unwrap();
        let b: serde_json::Value = c
            .post("/ssh/agent", &serde_json::json!({"data": "AQ=="}))
            .unwrap();
        assert_eq!((a["n"].as_u64(), b["n"].as_u64()), (Some(1), Some(2)));
        let seen = h.join().unwrap();
        assert_eq!(seen.len(), 2, "both requests on one connection");
        let host = base.trim_start_matches("http://");
        assert!(
            seen[0].starts_with("POST /ssh/agent HTTP/1.1\r\n"),
            "{}",
            seen[0]
        );
        assert!(
            seen[0].contains(&format!("Host: {host}\r\n")),
            "{}",
            seen[0]
        );
        assert!(seen[0].contains("Authorization: Bearer tok\r\n"));
        assert!(seen[0].contains("Content-Type: application/json\r\n"));
        assert!(seen[1].ends_with(r#"{"data":"AQ=="}"#), "{}", seen[1]);
    }

    #[test]
    fn a_connection_closed_while_idle_is_replaced_once() {
        // The server closes every connection after one reply, as the daemon does to idle ones.
        let (base, h) = server(vec![ok(r#"{"n":1}"#), ok(r#"{"n":2}"#)], 1);
        let mut c = Conn::new(&base, None).unwrap();
        let _: serde_json::Value = c.post("/x", &1).unwrap();
        std::thread::sleep(Duration::from_millis(50));
        let b: serde_json::Value = c.post("/x", &2).unwrap();
        assert_eq!(b["n"].as_u64(), Some(2));
        assert_eq!(h.join().unwrap().len(), 2);
    }

    #[test]
    fn a_reply_that_times_out_on_a_reused_connection_is_never_sent_again() {
        // The first request is answered; the second is read and never answered, as a
        // signature waiting for a touch that never comes.
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}", l.local_addr().unwrap());
        let seen = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = seen.clone();
        std::thread::spawn(move || {
            let mut held = Vec::new();
            for conn in l.incoming() {
                let conn = conn.unwrap();
                let mut r = std::io::BufReader::new(conn.try_clone().unwrap());
                let mut w = conn;
                loop {
                    let mut line = String::new();
                    if r.read_line(&mut line).unwrap_or(0) == 0 {
                        break;
                    }
                    if line.starts_with("POST ") {
                        let n = counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        // Skip the rest of the head and the 1-byte body.
                        while r.read_line(&mut line).unwrap_or(0) > 0 && !line.ends_with("\r\n\r\n")
                        {
                        }
                        let mut body = [0u8; 1];
                        let _ = r.read_exact(&mut body);
                        if n == 0 {
                            w.write_all(ok(r#"{"n":1}"#).as_bytes()).unwrap();
                        } else {
                            held.push(w.try_clone().unwrap());
                        }
                    }
                }
            }
        });
        let mut c = Conn::new(&base, None)
            .unwrap()
            .with_reply_timeout(Duration::from_millis(300));
        let _: serde_json::Value = c.post("/ssh/agent", &1).unwrap();
        let e = c
            .post::<_, serde_json::Value>("/ssh/agent", &2)
            .unwrap_err();
        assert!(e.is_unreachable(), "{e}");
        std::thread::sleep(Duration::from_millis(200));
        assert_eq!(
            seen.load(std::sync::atomic::Ordering::SeqCst),
            2,
            "the timed-out POST reached the server once"
        );
    }

    #[test]
    fn statuses_become_the_clients_errors() {
        let (base, _h) = server(
            vec![
                "HTTP/1.1 401 Unauthorized\r\ncontent-length: 0\r\n\r\n",
                "HTTP/1.1 503 Service Unavailable\r\ncontent-length: 33\r\n\r\n{\"success\":false,\"error\":\"no ag\"}",
                "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n",
            ],
            3,
        );
        let mut c = Conn::new(&base, None).unwrap();
        let e = c.post::<_, serde_json::Value>("/x", &1).unwrap_err();
        assert_eq!(e.status(), Some(401));
        let e = c.post::<_, serde_json::Value>("/x", &1).unwrap_err();
        assert_eq!(e.status(), Some(503));
        assert!(e.to_string().contains("no ag"), "{e}");
        let e = c.post::<_, serde_json::Value>("/x", &1).unwrap_err();
        assert!(e.is_unreachable(), "a chunked reply is refused: {e}");
    }

    #[test]
    fn a_reply_that_does_not_decode_is_not_quoted_in_the_error() {
        let (base, _h) = server(vec![ok(r#"{"n":"hunter2"}"#)], 1);
        #[derive(Debug, serde::Deserialize)]
        struct Wants {
            #[allow(dead_code)]
            n: u64,
        }
        let e = Conn::new(&base, None)
            .unwrap()
            .post::<_, Wants>("/x", &1)
            .unwrap_err();
        let shown = anyhow_like(&e);
        assert!(shown.contains("line 1"), "{shown}");
        assert!(!shown.contains("hunter2"), "{shown}");
    }

    /// The whole error chain on one line, as the tools print it.
    fn anyhow_like(e: &dyn std::error::Error) -> String {
        let mut s = e.to_string();
        let mut cur = e.source();
        while let Some(c) = cur {
            s.push_str(": ");
            s.push_str(&c.to_string());
            cur = c.source();
        }
        s
    }

    #[test]
    fn debug_shows_no_token_or_reply_bytes() {
        let mut c = Conn::new("http://127.0.0.1:1", Some(Secret::new("tok-123".into()))).unwrap();
        c.buf.extend_from_slice(b"password=hunter2");
        let shown = format!("{c:?}");
        assert!(
            !shown.contains("tok-123") && !shown.contains("hunter2"),
            "{shown}"
        );
    }

    #[test]
    fn a_refused_connection_is_tried_again_until_the_daemon_listens() {
        // The port is free now; a server takes it 300 ms later (the tunnel attaching).
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let late = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(300));
            let l = TcpListener::bind(("127.0.0.1", port)).unwrap();
            let (conn, _) = l.accept().unwrap();
            let mut r = std::io::BufReader::new(conn.try_clone().unwrap());
            let mut line = String::new();
            while r.read_line(&mut line).unwrap() > 0 && !line.ends_with("\r\n\r\n") {}
            let mut w = conn;
            w.write_all(ok("1").as_bytes()).unwrap();
        });
        let n: u32 = Conn::new(&format!("http://127.0.0.1:{port}"), None)
            .unwrap()
            .with_wait(Duration::from_secs(5))
            .get("/x")
            .unwrap();
        assert_eq!(n, 1);
        late.join().unwrap();
    }

    #[test]
    fn nothing_listening_is_unreachable_naming_the_url() {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let base = format!("http://127.0.0.1:{port}");
        let started = std::time::Instant::now();
        let e = Conn::new(&base, None)
            .unwrap()
            .with_wait(Duration::ZERO)
            .post::<_, serde_json::Value>("/x", &1)
            .unwrap_err();
        assert!(e.is_unreachable());
        assert!(started.elapsed() < Duration::from_secs(2));
        assert!(e.to_string().contains(&base), "{e}");
    }
}
