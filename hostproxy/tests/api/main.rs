//! The daemon's HTTP API against real peers: every route, every gate, and for every
//! rejection proof that nothing happened.
//!
//! Unix only: it drives real git, ssh-agent and sh scripts (SPEC.md 9: Windows and macOS are
//! built and linted in CI, run elsewhere).
#![cfg(unix)]
#![allow(clippy::unwrap_used)]

mod approval;
mod common;
mod docker;
mod git_egress;
mod tokens;

use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use clawker_protocol::agent::{self, msg};
use common::*;
use reqwest::Method;
use serde_json::{Value, json};

// ---------- gates ----------

#[tokio::test]
async fn health_is_public_and_exact() {
    let d = spawn(|_, _| {}).await;
    let resp = reqwest::get(format!("{}/health", d.base)).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "application/json");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(
        body,
        json!({"status":"ok","service":"clawker-host-proxy","version":env!("CARGO_PKG_VERSION")})
    );
}

#[tokio::test]
async fn host_allow_list() {
    let d = spawn(|_, _| {}).await;
    let p = d.port;
    for (host, want) in [
        (format!("localhost:{p}"), 200),
        (format!("127.0.0.1:{p}"), 200),
        (format!("[::1]:{p}"), 200),
        (format!("host.docker.internal:{p}"), 200),
        (format!("LOCALHOST:{p}"), 200),
        (format!("evil.example:{p}"), 403),
        (format!("localhost.evil.example:{p}"), 403),
        ("localhost:1".to_string(), 403),
        ("localhost".to_string(), 403),
        (format!("local host:{p}"), 400),
        (format!("127.1:{p}"), 400),
    ] {
        let r = raw(
            p,
            format!("GET /health HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await;
        assert_eq!(status_of(&r), want, "Host: {host}\n{r}");
    }
    let missing = raw(p, b"GET /health HTTP/1.0\r\n\r\n").await;
    assert_eq!(status_of(&missing), 400, "{missing}");
    let repeated = raw(
        p,
        format!("GET /health HTTP/1.1\r\nHost: localhost:{p}\r\nHost: localhost:{p}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await;
    assert_eq!(status_of(&repeated), 400);
    let binary = raw(
        p,
        b"GET /health HTTP/1.1\r\nHost: \xff\xfe\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(matches!(status_of(&binary), 400), "{binary}");
    // Still alive after all that.
    assert_eq!(
        reqwest::get(format!("{}/health", d.base))
            .await
            .unwrap()
            .status(),
        200
    );
}

#[tokio::test]
async fn host_gate_runs_before_the_launcher() {
    let d = spawn(|_, _| {}).await;
    let body = r#"{"url":"https://example.com/"}"#;
    let r = raw(
        d.port,
        format!(
            "POST /open/url HTTP/1.1\r\nHost: attacker.example:{}\r\nAuthorization: Bearer {TOKEN}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            d.port,
            body.len()
        )
        .as_bytes(),
    )
    .await;
    assert_eq!(status_of(&r), 403);
    assert_eq!(launch_log(d.path()), "");
}

#[tokio::test]
async fn token_required_and_never_from_query() {
    let d = spawn(|_, _| {}).await;
    let url = json!({"url":"https://example.com/"});
    let c = &d.client;
    let no_token = c
        .post(format!("{}/open/url", d.base))
        .json(&url)
        .send()
        .await
        .unwrap();
    assert_eq!(no_token.status(), 401);
    let body: Value = no_token.json().await.unwrap();
    assert_eq!(body["success"], false);
    assert!(body["error"].as_str().unwrap().contains("token"));
    let wrong = c
        .post(format!("{}/open/url", d.base))
        .bearer_auth("nope")
        .json(&url)
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    let in_query = c
        .post(format!(
            "{}/open/url?token={TOKEN}&access_token={TOKEN}",
            d.base
        ))
        .json(&url)
        .send()
        .await
        .unwrap();
    assert_eq!(in_query.status(), 401);
    let basic = c
        .post(format!("{}/open/url", d.base))
        .basic_auth("x", Some(TOKEN))
        .json(&url)
        .send()
        .await
        .unwrap();
    assert_eq!(basic.status(), 401);
    assert_eq!(launch_log(d.path()), "", "launcher ran without a token");
    // An unknown path is 404 with or without a token (the routes are public knowledge).
    assert_eq!(
        c.get(format!("{}/nope", d.base))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
}

#[tokio::test]
async fn browser_requests_refused_on_api_and_no_cors() {
    let d = spawn(|_, _| {}).await;
    for (h, v) in [
        ("Origin", "https://evil.example"),
        ("Origin", "null"),
        ("Sec-Fetch-Site", "cross-site"),
        ("Sec-Fetch-Mode", "no-cors"),
        ("Sec-Fetch-Dest", "document"),
    ] {
        let r = d
            .client
            .post(format!("{}/open/url", d.base))
            .bearer_auth(TOKEN)
            .header(h, v)
            .json(&json!({"url":"https://example.com/"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 403, "{h}: {v}");
        assert!(
            r.headers()
                .keys()
                .all(|k| !k.as_str().starts_with("access-control-"))
        );
    }
    assert_eq!(launch_log(d.path()), "");
    let preflight = d
        .client
        .request(Method::OPTIONS, format!("{}/open/url", d.base))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(preflight.status(), 405);
    assert!(
        preflight
            .headers()
            .keys()
            .all(|k| !k.as_str().starts_with("access-control-"))
    );
    // A real browser preflight: no token, Origin and Access-Control-Request-*.
    let real = d
        .client
        .request(Method::OPTIONS, format!("{}/git/credential", d.base))
        .header("Origin", "https://evil.example")
        .header("Access-Control-Request-Method", "POST")
        .header(
            "Access-Control-Request-Headers",
            "authorization, content-type",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(real.status(), 405);
    assert!(
        real.headers()
            .keys()
            .all(|k| !k.as_str().starts_with("access-control-"))
    );
    let bare = d
        .client
        .request(Method::OPTIONS, format!("{}/open/url", d.base))
        .send()
        .await
        .unwrap();
    assert_eq!(bare.status(), 405, "OPTIONS is 405 with or without a token");
    let preflight_health = d
        .client
        .request(Method::OPTIONS, format!("{}/health", d.base))
        .send()
        .await
        .unwrap();
    assert_eq!(preflight_health.status(), 405);
}

#[tokio::test]
async fn content_type_size_unknown_fields_paths_methods() {
    let d = spawn(|_, _| {}).await;
    let c = &d.client;
    let text = c
        .post(format!("{}/open/url", d.base))
        .bearer_auth(TOKEN)
        .header("content-type", "text/plain")
        .body(r#"{"url":"https://example.com/"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(text.status(), 415);
    let form = c
        .post(format!("{}/open/url", d.base))
        .bearer_auth(TOKEN)
        .header("content-type", "application/x-www-form-urlencoded")
        .body("url=https://example.com/")
        .send()
        .await
        .unwrap();
    assert_eq!(form.status(), 415);
    let charset = c
        .post(format!("{}/open/url", d.base))
        .bearer_auth(TOKEN)
        .header("content-type", "application/json; charset=utf-8")
        .body(r#"{"url":"https://example.com/charset"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(charset.status(), 200);
    let big = json!({"url": format!("https://example.com/{}", "a".repeat(70 * 1024))});
    let (s, _) = d.post("/open/url", big).await;
    assert_eq!(s, 413);
    // Chunked body without a length: limit enforced while reading.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        (0..20).map(|_| Ok(vec![b' '; 8 * 1024])).collect();
    let chunked = c
        .post(format!("{}/open/url", d.base))
        .bearer_auth(TOKEN)
        .header("content-type", "application/json")
        .body(reqwest::Body::wrap_stream(futures_stream(chunks)))
        .send()
        .await
        .unwrap();
    assert_eq!(chunked.status(), 413);
    let (s, b) = d
        .post(
            "/open/url",
            json!({"url":"https://example.com/","extra":true}),
        )
        .await;
    assert_eq!(s, 400, "{b}");
    let (s, _) = d.post("/open/url", json!({})).await;
    assert_eq!(s, 400);
    let (s, _) = d.get("/no/such/route").await;
    assert_eq!(s, 404);
    let (s, _) = d.get("/open/url").await;
    assert_eq!(s, 405);
    let (s, _) = d.call(Method::PUT, "/git/credential", None).await;
    assert_eq!(s, 405);
    // Only the charset request launched.
    assert_eq!(
        launch_log(d.path()),
        "BEGIN\nhttps://example.com/charset\nEND\n"
    );
}

fn futures_stream(
    items: Vec<Result<Vec<u8>, std::io::Error>>,
) -> impl futures_core_stream::Stream<Item = Result<Vec<u8>, std::io::Error>> {
    futures_core_stream::iter(items)
}

mod futures_core_stream {
    pub use futures_util::stream::{Stream, iter};
}

#[tokio::test]
async fn slow_header_client_is_cut_off() {
    let d = spawn_with(
        Options {
            header_read_timeout: Duration::from_millis(600),
            ..Options::default()
        },
        |_, _| {},
    )
    .await;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", d.port))
        .await
        .unwrap();
    s.write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\n")
        .await
        .unwrap();
    let start = Instant::now();
    let mut buf = Vec::new();
    let n = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf)).await;
    assert!(n.is_ok(), "connection still open after 5 s");
    assert!(start.elapsed() < Duration::from_secs(3));
    // A silent client too.
    let mut idle = tokio::net::TcpStream::connect(("127.0.0.1", d.port))
        .await
        .unwrap();
    let n = tokio::time::timeout(Duration::from_secs(5), idle.read_to_end(&mut buf)).await;
    assert!(n.is_ok(), "silent connection still open after 5 s");
}

#[tokio::test]
async fn no_auth_mode_accepts_without_token_but_keeps_other_gates() {
    let d = spawn_with(
        Options {
            no_auth: true,
            ..Options::default()
        },
        |_, _| {},
    )
    .await;
    let r = d
        .client
        .post(format!("{}/open/url", d.base))
        .json(&json!({"url":"https://example.com/"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = d
        .client
        .post(format!("{}/open/url", d.base))
        .header("Origin", "https://evil.example")
        .json(&json!({"url":"https://example.com/"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
}

// ---------- /open/url ----------

#[tokio::test]
async fn open_url_launches_canonical_url_as_one_argument() {
    let d = spawn(|_, _| {}).await;
    let tricky = "https://Example.com/a;b$(touch pwned)?q=1&x=`id`#frag";
    let (s, b) = d.post("/open/url", json!({"url": tricky})).await;
    assert_eq!(s, 200, "{b}");
    let canonical = b["url"].as_str().unwrap().to_string();
    assert!(canonical.starts_with("https://example.com/"));
    assert_eq!(b["success"], true);
    assert_eq!(launch_log(d.path()), format!("BEGIN\n{canonical}\nEND\n"));
    assert!(!d.path().join("pwned").exists());
}

#[tokio::test]
async fn open_url_rejections_launch_nothing() {
    let d = spawn(|_, _| {}).await;
    for bad in [
        "javascript:alert(1)",
        "file:///etc/passwd",
        "ftp://example.com/",
        "https://user:pass@example.com/",
        "https://user@example.com/",
        "https://example.com/\nx",
        "https://exam\tple.com/",
        "https://example.com/\u{7f}",
        "not a url",
        "",
        "//example.com",
    ] {
        let (s, b) = d.post("/open/url", json!({"url": bad})).await;
        assert_eq!(s, 400, "{bad:?}: {b}");
        assert_eq!(b["success"], false);
    }
    let (s, _) = d.post("/open/url", json!({"url": 42})).await;
    assert_eq!(s, 400);
    assert_eq!(launch_log(d.path()), "");
}

#[tokio::test]
async fn open_url_policy_refuses_internal_hosts_without_launching() {
    let d = spawn(|s, _| s.open_allowed_hosts = vec!["intranet".into()]).await;
    for bad in [
        "http://169.254.169.254/latest/meta-data/",
        "http://10.1.2.3/",
        "http://[fd00::1]/",
        "http://router/",
    ] {
        let (s, b) = d.post("/open/url", json!({"url": bad})).await;
        assert_eq!(s, 403, "{bad}: {b}");
    }
    assert_eq!(launch_log(d.path()), "");
    let (s, _) = d
        .post("/open/url", json!({"url": "http://intranet/"}))
        .await;
    assert_eq!(s, 200);
    let (s, _) = d
        .post("/open/url", json!({"url": "http://localhost:5173/"}))
        .await;
    assert_eq!(s, 200);
}

#[tokio::test]
async fn open_url_launcher_failure_is_500_and_rate_limit_429() {
    let d = spawn(|s, dir| {
        let failing = dir.join("failing-launcher");
        write_script(&failing, "exit 3");
        s.browser = Some(vec![failing.display().to_string()]);
    })
    .await;
    let (s, b) = d
        .post("/open/url", json!({"url":"https://example.com/"}))
        .await;
    assert_eq!(s, 500);
    assert!(
        !b["error"].as_str().unwrap().contains("failing-launcher"),
        "internals leaked: {b}"
    );

    let d = spawn(|s, _| s.open_rate_per_minute = 2).await;
    for _ in 0..2 {
        assert_eq!(
            d.post("/open/url", json!({"url":"https://example.com/"}))
                .await
                .0,
            200
        );
    }
    let r = d
        .client
        .post(format!("{}/open/url", d.base))
        .bearer_auth(TOKEN)
        .json(&json!({"url":"https://example.com/"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    assert!(r.headers().contains_key("retry-after"));
    assert_eq!(launch_log(d.path()).matches("BEGIN").count(), 2);
}

// ---------- /git/credential ----------

#[tokio::test]
async fn git_get_returns_the_hosts_credential() {
    let d = spawn(|_, _| {}).await;
    let (s, b) = d
        .post(
            "/git/credential",
            json!({"action":"get","protocol":"https","host":"github.com"}),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(
        b,
        json!({"success":true,"protocol":"https","host":"github.com","username":"alice","password":"s3cret-pass"})
    );
    assert_eq!(helper_log(d.path()), "get\n");
    let (s, b) = d
        .post(
            "/git/credential",
            json!({"action":"get","protocol":"https","host":"unknown.example"}),
        )
        .await;
    assert_eq!(s, 404);
    assert_eq!(b, json!({"success":false,"error":"no credential found"}));
}

#[tokio::test]
async fn git_rejections_never_run_git() {
    let d = spawn(|_, _| {}).await;
    let cases = [
        (
            json!({"action":"get","protocol":"https","host":"github.com\nhost=evil.com"}),
            400,
        ),
        (
            json!({"action":"get","protocol":"https","host":"github.com\r"}),
            400,
        ),
        (
            json!({"action":"get","protocol":"https","host":"github.com","path":"a\u{0}b"}),
            400,
        ),
        (
            json!({"action":"get","protocol":"https","host":"github.com","username":"a\nb"}),
            400,
        ),
        (
            json!({"action":"get","protocol":"https\nx","host":"github.com"}),
            400,
        ),
        (
            json!({"action":"get","protocol":"","host":"github.com"}),
            400,
        ),
        (json!({"action":"get","protocol":"https","host":""}), 400),
        (
            json!({"action":"get","protocol":"https","host":"evil.com/x"}),
            400,
        ),
        (
            json!({"action":"get","protocol":"https","host":"u@evil.com"}),
            400,
        ),
        (json!({"action":"get","protocol":"https","host":"a b"}), 400),
        (
            json!({"action":"steal","protocol":"https","host":"github.com"}),
            400,
        ),
        (
            json!({"action":"get","protocol":"https","host":"github.com","bogus":1}),
            400,
        ),
        (json!({"action":"get","host":"github.com"}), 400),
        (
            json!({"action":"get","protocol":"http","host":"github.com"}),
            403,
        ),
        (
            json!({"action":"get","protocol":"ssh","host":"github.com"}),
            403,
        ),
        (
            json!({"action":"store","protocol":"https","host":"github.com","username":"x","password":"y"}),
            403,
        ),
        (
            json!({"action":"erase","protocol":"https","host":"github.com"}),
            403,
        ),
    ];
    for (body, want) in cases {
        let (s, b) = d.post("/git/credential", body.clone()).await;
        assert_eq!(s, want, "{body} -> {b}");
        assert_eq!(b["success"], false);
    }
    assert_eq!(helper_log(d.path()), "", "git ran for a rejected request");
    let creds = std::fs::read_to_string(d.path().join("git-credentials")).unwrap();
    assert_eq!(creds, "https://alice:s3cret-pass@github.com\n");
}

#[tokio::test]
async fn git_host_policy_and_enabled_store() {
    let d = spawn(|s, _| {
        s.git.allowed_hosts = Some(vec!["github.com".into()]);
        s.git.allow_store = true;
    })
    .await;
    let (s, _) = d
        .post(
            "/git/credential",
            json!({"action":"get","protocol":"https","host":"gitlab.example.com"}),
        )
        .await;
    assert_eq!(s, 403);
    assert_eq!(helper_log(d.path()), "");
    let (s, b) = d
        .post(
            "/git/credential",
            json!({"action":"store","protocol":"https","host":"github.com","username":"bob","password":"new-pass"}),
        )
        .await;
    assert_eq!((s, b), (200, json!({"success":true})));
    assert_eq!(helper_log(d.path()), "store\n");
    let creds = std::fs::read_to_string(d.path().join("git-credentials")).unwrap();
    assert!(creds.contains("bob:new-pass@github.com"), "{creds}");
}

#[tokio::test]
async fn git_timeout_is_504_and_concurrency_is_capped() {
    let d = spawn(|s, dir| {
        let slow = dir.join("slow-git");
        write_script(&slow, "sleep 30");
        s.git.program = slow;
        s.git.timeout = Duration::from_millis(700);
        s.git.max_concurrent = 2;
    })
    .await;
    let start = Instant::now();
    let (s, b) = d
        .post(
            "/git/credential",
            json!({"action":"get","protocol":"https","host":"github.com"}),
        )
        .await;
    assert_eq!(s, 504, "{b}");
    assert!(start.elapsed() < Duration::from_secs(5));
    let body = json!({"action":"get","protocol":"https","host":"github.com"});
    let calls = (0..3).map(|_| d.post("/git/credential", body.clone()));
    let statuses: Vec<u16> = futures_util::future::join_all(calls)
        .await
        .into_iter()
        .map(|(s, _)| s)
        .collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == 504).count(),
        2,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 429).count(),
        1,
        "{statuses:?}"
    );
}

// ---------- /ssh/agent ----------

fn agent_call(body: &[u8]) -> Value {
    json!({"data": B64.encode(agent::frame(body))})
}

fn reply_body(v: &Value) -> Vec<u8> {
    let bytes = B64.decode(v["data"].as_str().unwrap()).unwrap();
    agent::single_frame(&bytes).unwrap().to_vec()
}

/// An SSHSIG blob as `ssh-keygen -Y sign -n NAMESPACE` sends it to the agent.
fn sshsig(namespace: &str) -> Vec<u8> {
    agent::sshsig_blob(namespace, "sha512", &[7u8; 64])
}

fn sign_request(key: &[u8], data: &[u8]) -> Vec<u8> {
    agent::sign_request(key, data, 0)
}

#[tokio::test]
async fn ssh_agent_lists_and_signs_but_refuses_lock_and_remove() {
    let agent = Agent::start();
    let d = spawn_with(
        Options {
            agent_socket: Some(agent.socket.clone()),
            ..Options::default()
        },
        |_, _| {},
    )
    .await;
    let (s, b) = d
        .post("/ssh/agent", agent_call(&[msg::REQUEST_IDENTITIES]))
        .await;
    assert_eq!(s, 200, "{b}");
    let body = reply_body(&b);
    assert_eq!(body[0], msg::IDENTITIES_ANSWER);
    assert_eq!(u32::from_be_bytes(body[1..5].try_into().unwrap()), 1);
    let (key_blob, _) = agent::read_string(&body[5..]).unwrap();

    let (s, b) = d
        .post(
            "/ssh/agent",
            agent_call(&sign_request(key_blob, &sshsig("git"))),
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(
        reply_body(&b)[0],
        msg::SIGN_RESPONSE,
        "an SSHSIG for namespace git is signed"
    );
    // Other purposes are answered FAILURE by the daemon (the recording-agent test below
    // shows the agent never sees them).
    for data in [sshsig("file"), vec![0x42; 64]] {
        let (s, b) = d
            .post("/ssh/agent", agent_call(&sign_request(key_blob, &data)))
            .await;
        assert_eq!(s, 200);
        assert_eq!(reply_body(&b), vec![msg::FAILURE]);
    }

    let mut lock = vec![msg::LOCK];
    agent::put_string(&mut lock, b"passphrase");
    for refused in [
        lock,
        vec![msg::REMOVE_ALL_IDENTITIES],
        vec![msg::ADD_IDENTITY, 0, 0, 0, 0],
    ] {
        let (s, b) = d.post("/ssh/agent", agent_call(&refused)).await;
        assert_eq!(s, 200);
        assert_eq!(reply_body(&b), vec![msg::FAILURE], "message {}", refused[0]);
    }
    let (code, listing) = agent.list();
    assert_eq!(code, 0, "agent locked or emptied: {listing}");
    assert!(listing.contains("test@hostproxy"), "{listing}");
}

/// An agent that records every connection and answers FAILURE.
async fn recording_agent(
    dir: &std::path::Path,
) -> (
    std::path::PathBuf,
    std::sync::Arc<std::sync::atomic::AtomicUsize>,
) {
    let path = dir.join("rec.sock");
    let listener = tokio::net::UnixListener::bind(&path).unwrap();
    let count = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let c = count.clone();
    tokio::spawn(async move {
        use tokio::io::AsyncWriteExt;
        while let Ok((mut s, _)) = listener.accept().await {
            c.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            if hostproxy::backends::read_agent_frame(&mut s).await.is_ok() {
                let _ = s.write_all(&agent::FAILURE_FRAME).await;
            }
        }
    });
    (path, count)
}

#[tokio::test]
async fn ssh_agent_rejections_never_reach_the_agent() {
    let dir = tempfile::tempdir().unwrap();
    let (sock, count) = recording_agent(dir.path()).await;
    let d = spawn_with(
        Options {
            agent_socket: Some(sock),
            ..Options::default()
        },
        |_, _| {},
    )
    .await;
    let two = [agent::frame(&[11]), agent::frame(&[11])].concat();
    let mut oversized = vec![msg::SIGN_REQUEST];
    oversized.resize(agent::MAX_FRAME + 1, 0);
    for data in [
        B64.encode(&two),
        B64.encode([0, 0, 0, 5, 11]),
        B64.encode([0, 0, 0]),
        B64.encode([0, 0, 0, 0]),
        B64.encode(agent::frame(&oversized)),
        "***not base64***".to_string(),
    ] {
        let (s, b) = d.post("/ssh/agent", json!({"data": data})).await;
        assert!(s == 400 || s == 413, "{s} {b}");
    }
    // Random bytes to sign, and an SSHSIG for a namespace that is not allowed.
    for data in [vec![0x42u8; 64], sshsig("file")] {
        let (s, b) = d
            .post("/ssh/agent", agent_call(&sign_request(b"key", &data)))
            .await;
        assert_eq!(s, 200);
        assert_eq!(reply_body(&b), vec![msg::FAILURE]);
    }
    for kind in 0u8..=255 {
        if kind == msg::REQUEST_IDENTITIES || kind == msg::SIGN_REQUEST {
            continue;
        }
        let (s, b) = d.post("/ssh/agent", agent_call(&[kind, 0, 0, 0, 0])).await;
        assert_eq!(s, 200);
        assert_eq!(reply_body(&b), vec![msg::FAILURE], "message {kind}");
    }
    assert_eq!(
        count.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "agent was contacted"
    );
    let (s, _) = d
        .post("/ssh/agent", agent_call(&[msg::REQUEST_IDENTITIES]))
        .await;
    assert_eq!(s, 200);
    assert_eq!(count.load(std::sync::atomic::Ordering::SeqCst), 1);
}

#[tokio::test]
async fn ssh_agent_absent_is_503() {
    let d = spawn(|_, _| {}).await;
    let (s, b) = d
        .post("/ssh/agent", agent_call(&[msg::REQUEST_IDENTITIES]))
        .await;
    assert_eq!(s, 503, "{b}");
    let dir = tempfile::tempdir().unwrap();
    let d = spawn_with(
        Options {
            agent_socket: Some(dir.path().join("gone.sock")),
            ..Options::default()
        },
        |_, _| {},
    )
    .await;
    let (s, _) = d
        .post("/ssh/agent", agent_call(&[msg::REQUEST_IDENTITIES]))
        .await;
    assert_eq!(s, 503);
}

// ---------- callbacks ----------

async fn register(d: &Daemon, body: Value) -> (u16, Value) {
    d.post("/callback/register", body).await
}

#[tokio::test]
async fn callback_round_trip_with_long_poll() {
    let d = spawn(|_, _| {}).await;
    let port = free_port();
    let (s, b) = register(
        &d,
        json!({"port": port, "path": "/callback", "state": "xyz"}),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    let id = b["session_id"].as_str().unwrap().to_string();
    assert_eq!(id.len(), 32);
    assert!(b["expires_at"].as_str().unwrap().ends_with('Z'));

    let (s, b) = d.get(&format!("/callback/{id}/data")).await;
    assert_eq!((s, b), (200, json!({"received": false})));

    let browser = reqwest::Client::new();
    // Wrong path, wrong state, missing state, wrong method: 404 and the session stays armed.
    for url in [
        format!("http://127.0.0.1:{port}/favicon.ico"),
        format!("http://127.0.0.1:{port}/callback?code=1&state=nope"),
        format!("http://127.0.0.1:{port}/callback?code=1"),
        format!("http://127.0.0.1:{port}/callback?state=xyz&state=xyz"),
    ] {
        let r = browser.get(&url).send().await.unwrap();
        assert_eq!(r.status(), 404, "{url}");
    }
    let r = browser
        .put(format!("http://127.0.0.1:{port}/callback?state=xyz"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    // A foreign Host on the callback listener.
    let r = raw(port, format!("GET /callback?state=xyz HTTP/1.1\r\nHost: evil.example:{port}\r\nConnection: close\r\n\r\n").as_bytes()).await;
    assert_eq!(status_of(&r), 403);
    let (_, b) = d.get(&format!("/callback/{id}/data")).await;
    assert_eq!(b["received"], false);

    let waiter = {
        let (client, base, id) = (d.client.clone(), d.base.clone(), id.clone());
        tokio::spawn(async move {
            let r = client
                .get(format!("{base}/callback/{id}/data?wait=30"))
                .bearer_auth(TOKEN)
                .send()
                .await
                .unwrap();
            (Instant::now(), r.json::<Value>().await.unwrap())
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let sent = Instant::now();
    let page = browser
        .get(format!(
            "http://localhost:{port}/callback?code=the-code&state=xyz"
        ))
        .header("Cookie", "session=host-secret")
        .header("Authorization", "Bearer host-secret")
        .header("X-Api-Key", "host-api-key")
        .header("X-Custom", "dropped")
        .header("User-Agent", "TestBrowser/1")
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    assert!(
        !html.contains("the-code") && !html.contains("xyz"),
        "page reflects the request"
    );
    let (woke, data) = waiter.await.unwrap();
    let latency = woke.duration_since(sent);
    assert!(
        latency < Duration::from_millis(500),
        "long-poll woke after {latency:?}"
    );
    assert_eq!(data["received"], true);
    let cb = &data["callback"];
    assert_eq!(cb["method"], "GET");
    assert_eq!(cb["path"], "/callback");
    assert_eq!(cb["query"], "code=the-code&state=xyz");
    // Only the allow-listed headers (SPEC.md 4.2): a host client's keys never reach the
    // container.
    assert_eq!(
        cb["headers"],
        json!({"accept": "*/*", "user-agent": "TestBrowser/1"})
    );
    assert!(cb["received_at"].as_str().unwrap().ends_with('Z'));

    // The first capture wins; data stays until delete.
    let again = browser
        .get(format!(
            "http://127.0.0.1:{port}/callback?code=second&state=xyz"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 200);
    let (_, b) = d.get(&format!("/callback/{id}/data")).await;
    assert_eq!(b["callback"]["query"], "code=the-code&state=xyz");

    let (s, b) = d
        .call(Method::DELETE, &format!("/callback/{id}"), None)
        .await;
    assert_eq!((s, b), (200, json!({"success": true})));
    let (s, _) = d
        .call(Method::DELETE, &format!("/callback/{id}"), None)
        .await;
    assert_eq!(s, 200, "delete is idempotent");
    let (s, _) = d.get(&format!("/callback/{id}/data")).await;
    assert_eq!(s, 404);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "listener still open after delete"
    );
}

#[tokio::test]
async fn callback_post_capture_and_cb_route() {
    let d = spawn(|_, _| {}).await;
    let port = free_port();
    let (_, b) = register(
        &d,
        json!({"port": port, "path": "/oauth/done", "state": "s"}),
    )
    .await;
    let id = b["session_id"].as_str().unwrap().to_string();
    // An OAuth form_post: the state is in the form body.
    let r = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{port}/oauth/done?x=1"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("code=c0de&state=s")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let (_, b) = d.get(&format!("/callback/{id}/data")).await;
    assert_eq!(b["callback"]["method"], "POST");
    assert_eq!(b["callback"]["body"], "code=c0de&state=s");

    // The daemon's own /cb/{id}/{path} route captures too (no token: it is the browser).
    let port2 = free_port();
    let (_, b) = register(
        &d,
        json!({"port": port2, "path": "/cb-path", "state": "s2"}),
    )
    .await;
    let id2 = b["session_id"].as_str().unwrap().to_string();
    let r = reqwest::get(format!("{}/cb/{id2}/cb-path?code=9&state=wrong", d.base))
        .await
        .unwrap();
    assert_eq!(r.status(), 404, "the state is checked on /cb/ too");
    let r = reqwest::get(format!("{}/cb/{id2}/cb-path?code=9&state=s2", d.base))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = reqwest::get(format!(
        "{}/cb/{}/cb-path?code=9&state=s2",
        d.base,
        "0".repeat(32)
    ))
    .await
    .unwrap();
    assert_eq!(r.status(), 404);
    let (_, b) = d.get(&format!("/callback/{id2}/data")).await;
    assert_eq!(b["callback"]["query"], "code=9&state=s2");
}

#[tokio::test]
async fn callback_register_rejections() {
    let d = spawn(|s, _| s.max_callback_sessions = 3).await;
    for (body, want) in [
        (json!({"port": 80, "state": "s"}), 400),
        (json!({"port": 1023, "state": "s"}), 400),
        (json!({"port": 65536, "state": "s"}), 400),
        (json!({"port": -1, "state": "s"}), 400),
        (json!({"port": d.port, "state": "s"}), 400),
        (
            json!({"port": free_port(), "path": "no-slash", "state": "s"}),
            400,
        ),
        (
            json!({"port": free_port(), "path": "/a b", "state": "s"}),
            400,
        ),
        (
            json!({"port": free_port(), "path": "/a?b=c", "state": "s"}),
            400,
        ),
        (json!({"port": free_port(), "bogus": 1, "state": "s"}), 400),
        (json!({"port": "8080", "state": "s"}), 400),
        (json!({"port": free_port(), "state": ""}), 400),
    ] {
        let (s, b) = register(&d, body.clone()).await;
        assert_eq!(s, want, "{body}: {b}");
    }
    // No state: refused (nobody could tell the real redirect from a squatter's), and the
    // port is not bound.
    let p = free_port();
    let (s, b) = register(&d, json!({"port": p})).await;
    assert_eq!(s, 400, "{b}");
    assert!(
        b["error"]
            .as_str()
            .unwrap()
            .contains("callback.allow_stateless"),
        "{b}"
    );
    assert!(std::net::TcpStream::connect(("127.0.0.1", p)).is_err());
    // A port another program holds, on any local address, is 409 and never shared.
    for holder in ["0.0.0.0", "127.0.0.1", "::1"] {
        let taken = std::net::TcpListener::bind((holder, 0)).unwrap();
        let port = taken.local_addr().unwrap().port();
        let (s, b) = register(&d, json!({"port": port, "state": "s"})).await;
        assert_eq!(s, 409, "held on {holder}: {b}");
    }
    let mut ids = Vec::new();
    for _ in 0..3 {
        let (s, b) = register(&d, json!({"port": free_port(), "state": "s"})).await;
        assert_eq!(s, 200);
        ids.push(b["session_id"].as_str().unwrap().to_string());
    }
    let (s, _) = register(&d, json!({"port": free_port(), "state": "s"})).await;
    assert_eq!(s, 429);
    let (s, _) = d.get(&format!("/callback/{}/data?wait=abc", ids[0])).await;
    assert_eq!(s, 400);
    let (s, _) = d.get(&format!("/callback/{}/data", "f".repeat(32))).await;
    assert_eq!(s, 404);
    // The dot segments sent literally (an HTTP client would remove them).
    let r = raw(
        d.port,
        format!(
            "GET /callback/../data HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nAuthorization: Bearer {TOKEN}\r\nConnection: close\r\n\r\n",
            d.port
        )
        .as_bytes(),
    )
    .await;
    assert_eq!(status_of(&r), 404, "{r}");
}

#[tokio::test]
async fn extractor_rejections_keep_the_json_error_shape() {
    // Found by schemathesis: axum answers these in text/plain by itself.
    let d = spawn(|_, _| {}).await;
    for path in ["/callback/0/data?wait=1&wait=2", "/callback/%FF/data"] {
        let r = d
            .client
            .get(format!("{}{path}", d.base))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap();
        assert!(r.status().is_client_error(), "{path}");
        assert_eq!(r.headers()["content-type"], "application/json", "{path}");
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["success"], false, "{path}");
    }
}

#[tokio::test]
async fn callback_expiry_closes_the_listener() {
    let d = spawn(|_, _| {}).await;
    let port = free_port();
    let (_, b) = register(
        &d,
        json!({"port": port, "timeout_seconds": 1, "state": "s"}),
    )
    .await;
    let id = b["session_id"].as_str().unwrap().to_string();
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_ok());
    // A long-poll on an expiring session ends with 404 when it expires.
    let start = Instant::now();
    let (s, _) = d.get(&format!("/callback/{id}/data?wait=10")).await;
    assert_eq!(s, 404);
    assert!(start.elapsed() < Duration::from_secs(3));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err());
}

#[tokio::test]
async fn shutdown_closes_callback_listeners() {
    let d = spawn(|_, _| {}).await;
    let port = free_port();
    let (s, _) = register(&d, json!({"port": port, "state": "s"})).await;
    assert_eq!(s, 200);
    d.shutdown.cancel();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err());
    assert!(std::net::TcpStream::connect(("127.0.0.1", d.port)).is_err());
}

#[tokio::test]
async fn sessions_share_one_fixed_port_and_each_gets_its_own_code() {
    let d = spawn(|_, _| {}).await;
    let port = free_port();
    let (s, a) = register(&d, json!({"port": port, "state": "state-a"})).await;
    assert_eq!(s, 200, "{a}");
    let (s, b) = register(&d, json!({"port": port, "state": "state-b"})).await;
    assert_eq!(s, 200, "a second login on the same fixed port: {b}");
    let (s, dup) = register(&d, json!({"port": port, "state": "state-b"})).await;
    assert_eq!(s, 409, "the same path and state twice: {dup}");
    let (a, b) = (
        a["session_id"].as_str().unwrap().to_string(),
        b["session_id"].as_str().unwrap().to_string(),
    );
    let browser = reqwest::Client::new();
    let hit = |q: &'static str| {
        let browser = browser.clone();
        async move {
            browser
                .get(format!("http://localhost:{port}/callback?{q}"))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    assert_eq!(hit("code=stolen&state=state-c").await, 404);
    assert_eq!(hit("code=stolen").await, 404);
    assert_eq!(hit("code=code-b&state=state-b").await, 200);
    assert_eq!(hit("code=code-a&state=state-a").await, 200);
    let (_, da) = d.get(&format!("/callback/{a}/data")).await;
    let (_, db) = d.get(&format!("/callback/{b}/data")).await;
    assert_eq!(da["callback"]["query"], "code=code-a&state=state-a");
    assert_eq!(db["callback"]["query"], "code=code-b&state=state-b");
    // The listener stays while one session is left, and closes with the last.
    d.call(Method::DELETE, &format!("/callback/{a}"), None)
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_ok());
    d.call(Method::DELETE, &format!("/callback/{b}"), None)
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err());
    // The port can be registered again at once (its old connections may be in TIME_WAIT).
    let (s, again) = register(&d, json!({"port": port, "state": "state-d"})).await;
    assert_eq!(s, 200, "{again}");
}

#[tokio::test]
async fn a_stateless_session_needs_the_config_and_holds_its_port_alone() {
    let d = spawn(|s, _| s.callback_allow_stateless = true).await;
    let port = free_port();
    let (s, b) = register(&d, json!({"port": port})).await;
    assert_eq!(s, 200, "{b}");
    let (s, b) = register(&d, json!({"port": port, "state": "s"})).await;
    assert_eq!(s, 409, "{b}");
    let port2 = free_port();
    let (s, _) = register(&d, json!({"port": port2, "state": "s"})).await;
    assert_eq!(s, 200);
    let (s, b) = register(&d, json!({"port": port2})).await;
    assert_eq!(s, 409, "{b}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_wrong_tokens_cannot_fill_the_audit_log_or_hide_real_decisions() {
    let d = spawn_with(
        Options {
            audit: true,
            ..Options::default()
        },
        |_, _| {},
    )
    .await;
    // 100,000 requests with a wrong token on 16 keep-alive connections, each written as a
    // pipelined batch and its replies read back.
    let request = format!(
        "POST /git/credential HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nAuthorization: Bearer wrong\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{{}}",
        d.port
    );
    let started = Instant::now();
    let tasks: Vec<_> = (0..16)
        .map(|_| {
            let (port, request) = (d.port, request.clone());
            tokio::spawn(async move {
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
                    .await
                    .unwrap();
                let mut got = 0usize;
                let mut buf = vec![0u8; 1 << 16];
                for _ in 0..(100_000 / 16 / 125) {
                    s.write_all(request.repeat(125).as_bytes()).await.unwrap();
                    let mut seen = 0;
                    while seen < 125 {
                        let n = s.read(&mut buf).await.unwrap();
                        assert!(n > 0, "the daemon closed the connection");
                        seen += buf[..n]
                            .windows(12)
                            .filter(|w| w == b"HTTP/1.1 401")
                            .count();
                    }
                    got += seen;
                }
                got
            })
        })
        .collect();
    // A real decision in the middle of the flood.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let (s, _) = d
        .post("/open/url", json!({"url": "https://example.com/real"}))
        .await;
    assert_eq!(s, 200);
    let mut answered = 0;
    for t in tasks {
        answered += t.await.unwrap();
    }
    assert!(answered >= 100_000 - 16 * 125, "{answered} answered");
    tokio::time::sleep(Duration::from_millis(1200)).await; // the last window's count
    let path = d.path().join("audit.jsonl");
    let size = std::fs::metadata(&path).unwrap().len();
    assert!(size < 1024 * 1024, "audit log grew to {size} bytes");
    let lines: Vec<Value> = std::fs::read_to_string(&path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let denials: Vec<&Value> = lines.iter().filter(|l| l["token"] == "none").collect();
    let folded: u64 = denials
        .iter()
        .map(|l| l["folded"].as_u64().unwrap_or(0))
        .sum();
    assert_eq!(
        denials.len() as u64 + folded,
        answered as u64,
        "every denial is a line or counted in one"
    );
    // One line a second per route and reason, plus the first one.
    let seconds = started.elapsed().as_secs_f64().ceil() as u64;
    assert!(
        denials.len() as u64 <= seconds + 1,
        "{} denial lines in {seconds} s: at most one a second",
        denials.len()
    );
    assert!(
        lines
            .iter()
            .any(|l| l["route"] == "/open/url" && l["allowed"] == true),
        "the real decision is still there"
    );
}

#[tokio::test]
async fn notify_shows_the_exact_text_refuses_control_characters_and_the_seventh_a_minute() {
    let d = spawn(|_, _| {}).await;
    let title = "Agent needs you: review PR #42 — ünïcode ok";
    let body = "It's waiting on `cargo test`; $HOME and ; rm -rf / stay text";
    let (s, b) = d
        .post("/notify", json!({"title": title, "body": body}))
        .await;
    assert_eq!((s, b), (200, json!({"success": true})));
    // Two argv elements, exactly as sent (the script prints each on its own line).
    assert_eq!(
        notify_log(d.path()),
        format!("BEGIN\n{title}\n{body}\nEND\n")
    );
    for bad in [
        json!({"title": "a\u{1b}]0;pwned\u{7}"}),
        json!({"title": "ok", "body": "line\nforged"}),
        json!({"title": ""}),
        json!({"title": "x".repeat(121)}),
        json!({"title": "ok", "body": "y".repeat(1001)}),
        json!({"title": "ok", "extra": 1}),
    ] {
        let (s, b) = d.post("/notify", bad.clone()).await;
        assert_eq!(s, 400, "{bad}: {b}");
    }
    assert_eq!(
        notify_log(d.path()).matches("BEGIN").count(),
        1,
        "no refused request reached the notifier"
    );
    // Six a minute per identity: five more pass, the seventh is 429 and shows nothing.
    for i in 0..5 {
        let (s, _) = d.post("/notify", json!({"title": format!("n{i}")})).await;
        assert_eq!(s, 200);
    }
    let r = d
        .client
        .post(format!("{}/notify", d.base))
        .bearer_auth(TOKEN)
        .json(&json!({"title": "seventh"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    assert!(r.headers().contains_key("retry-after"));
    assert!(!notify_log(d.path()).contains("seventh"));
}

#[tokio::test]
async fn a_notification_body_is_text_not_markup() {
    // A notifier named notify-send (a recording stand-in): its body markup is escaped.
    let d = spawn(|s, dir| {
        let bin = dir.join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        let n = bin.join("notify-send");
        e2e::recording_script(&n, &dir.join("notify.log"));
        s.notifier = Some(vec![n.display().to_string(), "--".into()]);
    })
    .await;
    let body = r#"Security update <a href="http://10.0.0.1/">click</a> & <b>now</b>"#;
    let (s, b) = d
        .post("/notify", json!({"title": "Update", "body": body}))
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(
        notify_log(d.path()),
        "BEGIN\n--\nUpdate\nSecurity update &lt;a href=\"http://10.0.0.1/\"&gt;click&lt;/a&gt; &amp; &lt;b&gt;now&lt;/b&gt;\nEND\n"
    );
}

#[tokio::test]
async fn an_old_clients_empty_attributes_are_absent() {
    // Upstream's git-credential-clawker.sh sends every attribute, the missing ones as "".
    let d = spawn(|s, _| s.git.allow_erase = true).await;
    let old_get = json!({"action":"get","protocol":"https","host":"github.com",
        "username":"alice","password":"","path":""});
    let (s, v) = d.post("/git/credential", old_get.clone()).await;
    assert_eq!(
        (s, v["password"].clone()),
        (200, json!("s3cret-pass")),
        "{v}"
    );
    // An empty username on get means none too.
    let (s, v) = d
        .post(
            "/git/credential",
            json!({"action":"get","protocol":"https","host":"github.com","username":"","password":"","path":""}),
        )
        .await;
    assert_eq!((s, v["username"].clone()), (200, json!("alice")), "{v}");
    // erase with a username and an empty password erases the entry.
    let (s, v) = d
        .post(
            "/git/credential",
            json!({"action":"erase","protocol":"https","host":"github.com","username":"alice","password":"","path":""}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let stored = std::fs::read_to_string(d.path().join("git-credentials")).unwrap();
    assert!(!stored.contains("alice"), "the entry was kept: {stored}");
    let (s, _) = d.post("/git/credential", old_get).await;
    assert_eq!(s, 404);
}
