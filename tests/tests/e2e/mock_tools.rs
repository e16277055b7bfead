//! The container tools' failure paths, driven through mock-proxy's control API.

use std::process::Stdio;
use std::time::Duration;

use e2e::*;
use serde_json::json;

#[test]
fn git_helper_against_the_mock() {
    let mock = MockProc::start("tok", &[]);
    let (s, _) = mock.control(
        "PUT",
        "/__mock/credentials",
        Some(json!({"git.example.com": {"username": "bob", "password": "hunter2"}})),
    );
    assert_eq!(s, 200);
    let (code, out, err) = run_with_input(
        tool("git-credential-clawker", &mock.tool_env()).arg("get"),
        "protocol=https\nhost=git.example.com\n\n",
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "username=bob\npassword=hunter2\n");
    let (_, recorded) = mock.control("GET", "/__mock/requests", None);
    let r = recorded.as_array().unwrap().last().unwrap().clone();
    assert_eq!(r["path"], "/git/credential");
    assert_eq!(
        r["body"],
        json!({"action":"get","protocol":"https","host":"git.example.com"})
    );

    // A bearer credential (git 2.46+ capability authtype) crosses only to a caller that
    // announced the capability, announced back first.
    mock.control(
        "PUT",
        "/__mock/credentials",
        Some(json!({
            "git.example.com": {"username": "bob", "password": "hunter2"},
            "bearer.example.com": {"authtype": "Bearer", "credential": "tok-1", "password_expiry_utc": "9999999999"},
        })),
    );
    let (code, out, err) = run_with_input(
        tool("git-credential-clawker", &mock.tool_env()).arg("get"),
        "capability[]=authtype\nprotocol=https\nhost=bearer.example.com\n\n",
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        out,
        "capability[]=authtype\npassword_expiry_utc=9999999999\nauthtype=Bearer\ncredential=tok-1\n"
    );
    let (code, out, _) = run_with_input(
        tool("git-credential-clawker", &mock.tool_env()).arg("get"),
        "protocol=https\nhost=bearer.example.com\n\n",
    );
    assert_eq!(
        (code, out.as_str()),
        (0, ""),
        "no capability, no bearer token"
    );

    // Daemon 500: exit 1, one line, no output for git.
    mock.control(
        "POST",
        "/__mock/faults",
        Some(json!({"route": "/git/credential", "status": 500, "times": 1})),
    );
    let (code, out, err) = run_with_input(
        tool("git-credential-clawker", &mock.tool_env()).arg("get"),
        "protocol=https\nhost=git.example.com\n\n",
    );
    assert_eq!((code, out.as_str()), (1, ""));
    assert!(err.contains("500"), "{err}");
    // Slow replies still succeed.
    mock.control(
        "POST",
        "/__mock/faults",
        Some(json!({"route": "/git/credential", "delay_ms": 1500, "times": 1})),
    );
    let (code, out, _) = run_with_input(
        tool("git-credential-clawker", &mock.tool_env()).arg("get"),
        "protocol=https\nhost=git.example.com\n\n",
    );
    assert_eq!(code, 0);
    assert!(out.contains("hunter2"));
    // Wrong token: exit 1, says what to set.
    let env = vec![
        ("CLAWKER_HOST_PROXY".to_string(), mock.url()),
        ("CLAWKER_HOST_PROXY_TOKEN".to_string(), "wrong".to_string()),
    ];
    let (code, _, err) = run_with_input(
        tool("git-credential-clawker", &env).arg("get"),
        "protocol=https\nhost=git.example.com\n\n",
    );
    assert_eq!(code, 1);
    assert!(err.contains("CLAWKER_HOST_PROXY_TOKEN"), "{err}");
}

#[test]
fn host_open_oauth_flow_and_failures_against_the_mock() {
    let mock = MockProc::start("tok", &[]);
    // The CLI's local callback server.
    let local = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = local.local_addr().unwrap().port();
    let server = std::thread::spawn(move || {
        use std::io::{Read, Write};
        let (mut s, _) = local.accept().unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = vec![0u8; 8192];
        let n = s.read(&mut buf).unwrap();
        s.write_all(b"HTTP/1.1 302 Found\r\nlocation: /done\r\ncontent-length: 0\r\nconnection: close\r\n\r\n").unwrap();
        String::from_utf8_lossy(&buf[..n]).into_owned()
    });
    let url = format!(
        "https://auth.example.com/authorize?redirect_uri=http%3A%2F%2F127.0.0.1%3A{port}%2Fdone&state=s1"
    );
    let (code, _, err) = run_with_input(tool("host-open", &mock.tool_env()).arg(&url), "");
    assert_eq!(code, 0, "{err}");
    let (_, recorded) = mock.control("GET", "/__mock/requests", None);
    let recorded = recorded.as_array().unwrap().clone();
    let reg = recorded
        .iter()
        .find(|r| r["path"] == "/callback/register")
        .expect("registered");
    assert_eq!(
        reg["body"],
        json!({"port": port, "path": "/done", "state": "s1"})
    );
    let open = recorded
        .iter()
        .find(|r| r["path"] == "/open/url")
        .expect("opened");
    assert_eq!(
        open["body"]["url"],
        url.as_str(),
        "the url must be opened unchanged"
    );
    // Find the session id the forwarder is polling for, then make the callback arrive.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let id = loop {
        let (_, rec) = mock.control("GET", "/__mock/requests", None);
        if let Some(r) = rec
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["path"].as_str().is_some_and(|p| p.ends_with("/data")))
        {
            break r["path"]
                .as_str()
                .unwrap()
                .split('/')
                .nth(2)
                .unwrap()
                .to_string();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "callback-forwarder never polled"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let (s, _) = mock.control(
        "POST",
        &format!("/__mock/callbacks/{id}"),
        Some(json!({"query": "code=c&state=s1"})),
    );
    assert_eq!(s, 200);
    let got = server.join().unwrap();
    assert!(
        got.starts_with("GET /done?code=c&state=s1 HTTP/1.1"),
        "{got}"
    );
    // The forwarder deleted the session after delivery (a 302 counts as delivered).
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let (_, rec) = mock.control("GET", "/__mock/requests", None);
        if rec
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["method"] == "DELETE")
        {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "session not deleted");
        std::thread::sleep(Duration::from_millis(50));
    }

    // Daemon 500 on /open/url: exit 1 with the daemon's message.
    mock.control(
        "POST",
        "/__mock/faults",
        Some(json!({"route": "/open/url", "status": 500, "times": 1})),
    );
    let (code, _, err) = run_with_input(
        tool("host-open", &mock.tool_env()).arg("https://example.com/"),
        "",
    );
    assert_eq!(code, 1);
    assert!(err.contains("500"), "{err}");
}

#[test]
fn callback_forwarder_retries_errors_and_survives_slow_replies() {
    let mock = MockProc::start("tok", &[]);
    let (_, reg) = http(
        "POST",
        &format!("{}/callback/register", mock.url()),
        Some("tok"),
        Some(json!({"port": 40000, "path": "/cb", "state": "st"})),
    );
    let id = reg["session_id"].as_str().unwrap().to_string();
    let local = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = local.local_addr().unwrap().port();
    let server = std::thread::spawn(move || {
        use std::io::{Read, Write};
        let (mut s, _) = local.accept().unwrap();
        let mut buf = vec![0u8; 8192];
        let n = s.read(&mut buf).unwrap();
        s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
            .unwrap();
        String::from_utf8_lossy(&buf[..n]).into_owned()
    });
    mock.control(
        "POST",
        "/__mock/faults",
        Some(json!({"route": "/callback/{id}/data", "status": 500, "times": 2})),
    );
    mock.control(
        "POST",
        "/__mock/faults",
        Some(json!({"route": "/callback/{id}/data", "delay_ms": 800, "times": 1})),
    );
    mock.control("POST", &format!("/__mock/callbacks/{id}"), Some(json!({"method": "POST", "body": "code=x", "headers": {"content-type": "application/x-www-form-urlencoded"}})));
    let mut env = mock.tool_env();
    env.extend([
        ("CALLBACK_SESSION".to_string(), id.clone()),
        ("CALLBACK_PORT".to_string(), port.to_string()),
        ("CB_FORWARDER_POLL_INTERVAL".to_string(), "0".to_string()),
    ]);
    let out = tool("callback-forwarder", &env)
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got = server.join().unwrap();
    assert!(got.starts_with("POST /cb HTTP/1.1"), "{got}");
    assert!(got.ends_with("code=x"), "{got}");
    assert!(
        got.to_ascii_lowercase()
            .contains("content-type: application/x-www-form-urlencoded")
    );
    let (_, rec) = mock.control("GET", "/__mock/requests", None);
    let polls: Vec<u64> = rec
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["path"].as_str().unwrap().ends_with("/data"))
        .map(|r| r["status"].as_u64().unwrap())
        .collect();
    assert_eq!(&polls[..2], &[500, 500], "{polls:?}");
    assert_eq!(*polls.last().unwrap(), 200);

    // The overall timeout: exit 1 with a clear message.
    let (_, reg) = http(
        "POST",
        &format!("{}/callback/register", mock.url()),
        Some("tok"),
        Some(json!({"port": 40001, "state": "st"})),
    );
    let mut env = mock.tool_env();
    env.extend([
        (
            "CALLBACK_SESSION".to_string(),
            reg["session_id"].as_str().unwrap().to_string(),
        ),
        ("CALLBACK_PORT".to_string(), "9".to_string()),
        ("CB_FORWARDER_TIMEOUT".to_string(), "1".to_string()),
    ]);
    let out = tool("callback-forwarder", &env).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("CB_FORWARDER_TIMEOUT"));
}

#[test]
fn the_mock_serves_egress_recording_and_without_a_network() {
    let mock = MockProc::start("tok", &[]);
    // git egress: the fake upstream says what would have been sent (header names only).
    let (s, v) = http(
        "GET",
        &format!(
            "{}/git/git.example.com/acme/r.git/info/refs?service=git-upload-pack",
            mock.url()
        ),
        Some("tok"),
        None,
    );
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        v["url"],
        "https://git.example.com/acme/r.git/info/refs?service=git-upload-pack"
    );
    assert!(
        !v["headers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|h| h == "authorization" || h == "cookie"),
        "{v}"
    );
    let (_, recorded) = mock.control("GET", "/__mock/requests", None);
    assert!(
        recorded
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["path"] == "/git/git.example.com/acme/r.git/info/refs"),
        "{recorded}"
    );
    // Only git's smart HTTP, and only declared API egress.
    let (s, _) = http(
        "GET",
        &format!("{}/git/git.example.com/acme/r.git/HEAD", mock.url()),
        Some("tok"),
        None,
    );
    assert_eq!(s, 404);
    let (s, v) = http(
        "POST",
        &format!("{}/egress/openai/chat/completions", mock.url()),
        Some("tok"),
        Some(json!({})),
    );
    assert_eq!(s, 403, "{v}");
}
