//! OAuth callbacks: register, capture, long-poll, expiry, fixed ports shared by sessions.

use super::*;

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
