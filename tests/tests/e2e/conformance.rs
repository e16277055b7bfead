//! One conformance suite, run against the real daemon and against mock-proxy: any
//! difference in status, body or gate behaviour fails.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use e2e::*;
use serde_json::{Value, json};

/// How to compare bodies: exactly, or by their set of keys (ids, times, pids differ).
#[derive(Clone, Copy)]
enum Cmp {
    Exact,
    Keys,
}

#[derive(Clone)]
struct Case {
    name: &'static str,
    method: &'static str,
    path: String,
    headers: Vec<(&'static str, String)>,
    /// `None`: no body; `Some(Ok(json))`; `Some(Err(raw))` with the content type header set by the case.
    body: Option<Result<Value, String>>,
    token: bool,
    cmp: Cmp,
}

fn case(name: &'static str, method: &'static str, path: &str, body: Option<Value>) -> Case {
    Case {
        name,
        method,
        path: path.to_string(),
        headers: Vec::new(),
        body: body.map(Ok),
        token: true,
        cmp: Cmp::Exact,
    }
}

fn send(port: u16, token: &str, c: &Case) -> (u16, Value) {
    let fill = |v: &str| v.replace("{port}", &port.to_string());
    let mut req = Req::new(
        c.method,
        format!("http://127.0.0.1:{port}{}", fill(&c.path)),
    )
    .token(c.token.then_some(token));
    for (k, v) in &c.headers {
        req = req.header(k, fill(v));
    }
    match &c.body {
        Some(Ok(v)) => req.json = Some(v.clone()),
        Some(Err(raw)) => req.raw = Some(raw.clone()),
        None => {}
    }
    req.send()
}

fn keys(v: &Value) -> Vec<String> {
    v.as_object()
        .map(|o| o.keys().cloned().collect())
        .unwrap_or_default()
}

fn agent_frame(body: &[u8]) -> Value {
    json!({"data": B64.encode(clawker_protocol::agent::frame(body))})
}

#[test]
fn mock_and_daemon_answer_alike() {
    let daemon = DaemonProc::start(DaemonOpts::default());
    let mock = MockProc::start(&daemon.token, &[]);
    let free = free_port();
    let cases = vec![
        Case {
            token: false,
            ..case("health", "GET", "/health", None)
        },
        Case {
            headers: vec![("host", "evil.example:{port}".into())],
            token: false,
            ..case("foreign host", "GET", "/health", None)
        },
        Case {
            token: false,
            ..case(
                "no token",
                "POST",
                "/open/url",
                Some(json!({"url":"https://example.com/"})),
            )
        },
        Case {
            headers: vec![("origin", "https://evil.example".into())],
            ..case(
                "origin",
                "POST",
                "/open/url",
                Some(json!({"url":"https://example.com/"})),
            )
        },
        Case {
            headers: vec![("sec-fetch-site", "cross-site".into())],
            ..case(
                "sec-fetch",
                "POST",
                "/open/url",
                Some(json!({"url":"https://example.com/"})),
            )
        },
        Case {
            headers: vec![("content-type", "text/plain".into())],
            body: Some(Err(r#"{"url":"https://example.com/"}"#.into())),
            ..case("content type", "POST", "/open/url", None)
        },
        case(
            "too large",
            "POST",
            "/open/url",
            Some(json!({"url": format!("https://example.com/{}", "a".repeat(70_000))})),
        ),
        case("unknown path", "GET", "/nope", None),
        case("wrong method", "GET", "/open/url", None),
        case("options", "OPTIONS", "/open/url", None),
        case(
            "bad url",
            "POST",
            "/open/url",
            Some(json!({"url":"javascript:alert(1)"})),
        ),
        case(
            "userinfo url",
            "POST",
            "/open/url",
            Some(json!({"url":"https://u:p@example.com/"})),
        ),
        case(
            "unknown field",
            "POST",
            "/open/url",
            Some(json!({"url":"https://example.com/","x":1})),
        ),
        case(
            "open ok",
            "POST",
            "/open/url",
            Some(json!({"url":"https://Example.com/a b"})),
        ),
        case(
            "cred not found",
            "POST",
            "/git/credential",
            Some(json!({"action":"get","protocol":"https","host":"unknown.example"})),
        ),
        case(
            "cred store refused",
            "POST",
            "/git/credential",
            Some(
                json!({"action":"store","protocol":"https","host":"github.com","username":"u","password":"p"}),
            ),
        ),
        case(
            "cred newline",
            "POST",
            "/git/credential",
            Some(json!({"action":"get","protocol":"https","host":"a\nb"})),
        ),
        case(
            "cred http refused",
            "POST",
            "/git/credential",
            Some(json!({"action":"get","protocol":"http","host":"github.com"})),
        ),
        // Egress (SPEC.md 13): the refusals that are decided before anything is sent, so
        // neither side needs a network. (Encoded dots are not here: the client's URL parser
        // turns `%2e%2e` into `..` and resolves it before sending; the e2e egress suite
        // sends them raw, with git.)
        case(
            "git egress: dumb http",
            "GET",
            "/git/github.com/acme/app.git/HEAD",
            None,
        ),
        case(
            "git egress: user in host",
            "GET",
            "/git/u@github.com/acme/app.git/info/refs?service=git-upload-pack",
            None,
        ),
        case("egress: undeclared", "POST", "/egress/nope/v1/chat", None),
        case(
            "docker not found",
            "POST",
            "/docker/credential",
            Some(json!({"action":"get","server_url":"unknown.example:5000"})),
        ),
        case(
            "docker store refused",
            "POST",
            "/docker/credential",
            Some(json!({"action":"store","server_url":"r.example","username":"u","secret":"s"})),
        ),
        case(
            "docker not a registry",
            "POST",
            "/docker/credential",
            Some(json!({"action":"get","server_url":"a b"})),
        ),
        case(
            "docker list",
            "POST",
            "/docker/credential",
            Some(json!({"action":"list"})),
        ),
        case(
            "agent malformed",
            "POST",
            "/ssh/agent",
            Some(json!({"data": B64.encode([0, 0, 0, 9, 11])})),
        ),
        case(
            "agent lock refused",
            "POST",
            "/ssh/agent",
            Some(agent_frame(&[22, 0, 0, 0, 1, b'x'])),
        ),
        case(
            "agent absent",
            "POST",
            "/ssh/agent",
            Some(agent_frame(&[11])),
        ),
        case(
            "register low port",
            "POST",
            "/callback/register",
            Some(json!({"port": 80})),
        ),
        case("register own port", "POST", "/callback/register", None),
        case(
            "register bad path",
            "POST",
            "/callback/register",
            Some(json!({"port": free, "path": "x"})),
        ),
        case(
            "data unknown",
            "GET",
            &format!("/callback/{}/data", "a".repeat(32)),
            None,
        ),
        case(
            "delete unknown",
            "DELETE",
            &format!("/callback/{}", "a".repeat(32)),
            None,
        ),
        case(
            "notify with a control character",
            "POST",
            "/notify",
            Some(json!({"title": "bell\u{7}"})),
        ),
        case(
            "notify too long",
            "POST",
            "/notify",
            Some(json!({"title": "x".repeat(121)})),
        ),
        case(
            "register without state",
            "POST",
            "/callback/register",
            Some(json!({"port": free})),
        ),
        // Where the mock's own layer (recording, faults) could answer differently from the
        // daemon: a refused request with a huge body is refused before the body is read,
        // and a huge body with a good token meets the daemon's own limit.
        Case {
            body: Some(Err(format!(
                "{{\"url\":\"https://example.com/{}\"}}",
                "a".repeat(1024 * 1024)
            ))),
            headers: vec![("content-type", "application/json".into())],
            ..case("1 MiB body", "POST", "/open/url", None)
        },
        Case {
            cmp: Cmp::Keys,
            ..case("status", "GET", "/status", None)
        },
    ];
    let mut diffs = Vec::new();
    for c in &cases {
        // The "own port" case needs each target's own port in the JSON number.
        let for_port = |port: u16| {
            let mut c = c.clone();
            if c.name == "register own port" {
                c.body = Some(Ok(json!({"port": port})));
            }
            c
        };
        let (ds, db) = send(daemon.port, &daemon.token, &for_port(daemon.port));
        let (ms, mb) = send(mock.port, &mock.token, &for_port(mock.port));
        let same = ds == ms
            && match c.cmp {
                Cmp::Exact => db == mb,
                Cmp::Keys => keys(&db) == keys(&mb),
            };
        if !same {
            diffs.push(format!("{}: daemon {ds} {db} / mock {ms} {mb}", c.name));
        }
    }

    // A whole callback session, where ids differ but shapes and statuses must not.
    let reg = |port: u16, token: &str| {
        http(
            "POST",
            &format!("http://127.0.0.1:{port}/callback/register"),
            Some(token),
            Some(json!({"port": free_port(), "path": "/cb", "state": "st"})),
        )
    };
    for (port, token, who) in [
        (daemon.port, daemon.token.as_str(), "daemon"),
        (mock.port, mock.token.as_str(), "mock"),
    ] {
        let (s, b) = reg(port, token);
        assert_eq!(s, 200, "{who}: {b}");
        assert_eq!(
            keys(&b),
            vec!["expires_at", "session_id", "success"],
            "{who}"
        );
        let id = b["session_id"].as_str().unwrap().to_string();
        let base = format!("http://127.0.0.1:{port}");
        assert_eq!(
            http(
                "GET",
                &format!("{base}/callback/{id}/data"),
                Some(token),
                None
            ),
            (200, json!({"received": false})),
            "{who}"
        );
        assert_eq!(
            http(
                "GET",
                &format!("{base}/callback/{id}/data?wait=x"),
                Some(token),
                None
            )
            .0,
            400,
            "{who}"
        );
        assert_eq!(
            http(
                "DELETE",
                &format!("{base}/callback/{id}"),
                Some(token),
                None
            ),
            (200, json!({"success": true})),
            "{who}"
        );
        assert_eq!(
            http(
                "GET",
                &format!("{base}/callback/{id}/data"),
                Some(token),
                None
            )
            .0,
            404,
            "{who}"
        );
    }
    assert!(
        diffs.is_empty(),
        "mock and daemon differ:\n{}",
        diffs.join("\n")
    );
    // The daemon really launched once ("open ok"); the mock launched nothing but recorded it.
    assert_eq!(
        daemon.launch_log(),
        "BEGIN\nhttps://example.com/a%20b\nEND\n"
    );
    let (_, recorded) = mock.control("GET", "/__mock/requests", None);
    let opened: Vec<&Value> = recorded
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["path"] == "/open/url" && r["status"] == 200)
        .collect();
    assert_eq!(opened.len(), 1);
    assert_eq!(opened[0]["body"]["url"], "https://Example.com/a b");
    assert_eq!(opened[0]["headers"]["authorization"], "[present]");
    // A request without a token that declares a 2 MiB body, of which only the start is
    // sent: both refuse it (401) without waiting for the body.
    for (port, who) in [(daemon.port, "daemon"), (mock.port, "mock")] {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .unwrap();
        write!(
            s,
            "POST /git/credential HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{{\"x\":\"",
            2 * 1024 * 1024
        )
        .unwrap();
        let mut head = [0u8; 12];
        s.read_exact(&mut head)
            .unwrap_or_else(|e| panic!("{who} did not answer before the body: {e}"));
        assert_eq!(&head, b"HTTP/1.1 401", "{who}");
    }
    // A request the gates refused was recorded without its body: it was never read.
    let (_, recorded) = mock.control("GET", "/__mock/requests", None);
    let refused = recorded
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["path"] == "/git/credential" && r["status"] == 401)
        .expect("the refused request is recorded");
    assert!(refused["body"].is_null(), "{refused}");
    // The control API has the same Host gate as the API.
    let (s, _) = Req::new("GET", format!("{}/__mock/requests", mock.url()))
        .header("host", format!("evil.example:{}", mock.port))
        .send();
    assert_eq!(s, 403);
}
