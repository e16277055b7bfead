//! Every gate in front of the routes: Host, token, browser requests, content type, size,
//! slow headers, `--no-auth`, and an audit log a flood of wrong tokens cannot fill.

use super::*;

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
