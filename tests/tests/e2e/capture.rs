//! OAuth capture that nobody can hijack (SPEC.md 4.2, 5): host-open opens nothing whose
//! callback it does not hold, and callback-forwarder spends a login code once.

use std::io::{Read, Write};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use e2e::*;
use serde_json::json;

fn login_url(port: u16, state: Option<&str>) -> String {
    let state = state.map(|s| format!("&state={s}")).unwrap_or_default();
    format!(
        "https://auth.example.com/authorize?client_id=cli&redirect_uri=http%3A%2F%2Flocalhost%3A{port}%2Fcallback{state}"
    )
}

#[test]
fn host_open_opens_nothing_when_the_callback_port_is_held_on_the_host() {
    let d = DaemonProc::start(DaemonOpts::default());
    for holder in ["0.0.0.0", "127.0.0.1", "::1"] {
        let held = std::net::TcpListener::bind((holder, 0)).unwrap();
        let port = held.local_addr().unwrap().port();
        let url = login_url(port, Some("st-1"));
        let (code, out, err) = run_with_input(tool("host-open", &d.tool_env()).arg(&url), "");
        assert_eq!(code, 1, "held on {holder}: {err}");
        assert_eq!(
            out,
            format!("{url}\n"),
            "the url for the user, alone on stdout"
        );
        assert_eq!(err.lines().count(), 1, "one line why: {err}");
        assert!(err.contains(&format!("port {port} is taken")), "{err}");
        assert_eq!(d.launch_log(), "", "the browser was not opened ({holder})");
    }
    // A login url without state: the daemon refuses it, host-open says how to allow it.
    let url = login_url(free_port(), None);
    let (code, out, err) = run_with_input(tool("host-open", &d.tool_env()).arg(&url), "");
    assert_eq!(code, 1, "{err}");
    assert_eq!(out, format!("{url}\n"));
    assert!(err.contains("callback.allow_stateless"), "{err}");
    assert_eq!(d.launch_log(), "");
    // Every refusal is in the audit log.
    let audit =
        std::fs::read_to_string(d.dir.path().join("state/logs/audit.jsonl")).unwrap_or_default();
    let refused = audit
        .lines()
        .filter(|l| l.contains("/callback/register") && l.contains("\"allowed\":false"))
        .count();
    assert_eq!(refused, 3, "{audit}");
}

/// A local server that answers every request with `status` and counts what it got.
fn counting_server(status: u16) -> (u16, Arc<AtomicUsize>, Arc<std::sync::Mutex<String>>) {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let (count, last) = (
        Arc::new(AtomicUsize::new(0)),
        Arc::new(std::sync::Mutex::new(String::new())),
    );
    let (c, got) = (count.clone(), last.clone());
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
            let mut buf = vec![0u8; 8192];
            let n = s.read(&mut buf).unwrap_or(0);
            c.fetch_add(1, Ordering::SeqCst);
            *got.lock().unwrap() = String::from_utf8_lossy(&buf[..n]).into_owned();
            let _ = s.write_all(
                format!("HTTP/1.1 {status} Nope\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                    .as_bytes(),
            );
        }
    });
    (port, count, last)
}

#[test]
fn a_local_server_answering_400_gets_exactly_one_replay_and_no_secret_is_printed() {
    let d = DaemonProc::start(DaemonOpts::default());
    let cb_port = free_port();
    let (s, reg) = http(
        "POST",
        &format!("{}/callback/register", d.url()),
        Some(&d.token),
        Some(json!({"port": cb_port, "state": "state-secret-77"})),
    );
    assert_eq!(s, 200, "{reg}");
    let id = reg["session_id"].as_str().unwrap().to_string();
    let (local, count, last) = counting_server(400);
    let mut env = d.tool_env();
    env.extend([
        ("CALLBACK_SESSION".to_string(), id.clone()),
        ("CALLBACK_PORT".to_string(), local.to_string()),
        ("CB_FORWARDER_POLL_INTERVAL".to_string(), "0".to_string()),
    ]);
    let fwd = tool("callback-forwarder", &env)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (s, _) = http(
        "GET",
        &format!("http://127.0.0.1:{cb_port}/callback?code=code-secret-99&state=state-secret-77"),
        None,
        None,
    );
    assert_eq!(s, 200);
    let out = fwd.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("answered 400"), "{stderr}");
    assert!(
        last.lock()
            .unwrap()
            .starts_with("GET /callback?code=code-secret-99&state=state-secret-77 "),
        "the replay"
    );
    // Longer than several poll intervals: the code is never sent again.
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(count.load(Ordering::SeqCst), 1, "exactly one replay");
    for secret in ["code-secret-99", "state-secret-77", &id] {
        assert!(!stderr.contains(secret), "{secret} in stderr: {stderr}");
    }
}

#[test]
fn a_forwarder_waits_for_a_local_server_that_is_not_listening_yet() {
    // Connect failures are the one thing retried: the CLI may not listen yet.
    let d = DaemonProc::start(DaemonOpts::default());
    let cb_port = free_port();
    let (_, reg) = http(
        "POST",
        &format!("{}/callback/register", d.url()),
        Some(&d.token),
        Some(json!({"port": cb_port, "state": "s"})),
    );
    let id = reg["session_id"].as_str().unwrap().to_string();
    let local = free_port();
    let mut env = d.tool_env();
    env.extend([
        ("CALLBACK_SESSION".to_string(), id),
        ("CALLBACK_PORT".to_string(), local.to_string()),
        ("CB_FORWARDER_POLL_INTERVAL".to_string(), "0".to_string()),
    ]);
    let fwd = tool("callback-forwarder", &env)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    http(
        "GET",
        &format!("http://127.0.0.1:{cb_port}/callback?code=c&state=s"),
        None,
        None,
    );
    std::thread::sleep(Duration::from_millis(600));
    let l = std::net::TcpListener::bind(("127.0.0.1", local)).unwrap();
    let (mut s, _) = l.accept().unwrap();
    let mut buf = [0u8; 4096];
    let n = s.read(&mut buf).unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("GET /callback?code=c&state=s "));
    s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
        .unwrap();
    let t = Instant::now();
    let out = fwd.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(t.elapsed() < Duration::from_secs(10));
}
