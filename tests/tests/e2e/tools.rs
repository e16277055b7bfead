//! The container tools against the real daemon on this host.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use e2e::*;

fn container_git_env(d: &DaemonProc, dir: &std::path::Path) -> Vec<(String, String)> {
    let home = dir.join("container-home");
    std::fs::create_dir_all(&home).unwrap();
    let cfg = dir.join("container-gitconfig");
    std::fs::write(&cfg, "[credential]\n\thelper = clawker\n").unwrap();
    let mut env = d.tool_env();
    env.extend([
        ("HOME".into(), home.display().to_string()),
        ("GIT_CONFIG_GLOBAL".into(), cfg.display().to_string()),
        ("GIT_CONFIG_NOSYSTEM".into(), "1".into()),
        ("GIT_TERMINAL_PROMPT".into(), "0".into()),
    ]);
    env
}

fn git(env: &[(String, String)], args: &[&str], input: &str) -> (i32, String, String) {
    // Real git, which finds git-credential-clawker on PATH through credential.helper=clawker.
    run_with_input(command(require("git", "git"), env).args(args), input)
}

#[test]
fn real_git_fill_gets_the_hosts_password_through_the_helper() {
    let d = DaemonProc::start(DaemonOpts::default());
    let dir = tempfile::tempdir().unwrap();
    let env = container_git_env(&d, dir.path());
    let (code, out, err) = git(
        &env,
        &["credential", "fill"],
        "protocol=https\nhost=github.com\n\n",
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("username=alice\n"), "{out}");
    assert!(out.contains("password=s3cret-pass\n"), "{out}");
    assert_eq!(d.helper_log(), "get\n");

    // Unknown host: the helper says nothing and exits 0; git then has nothing.
    let (code, out, _) = run_with_input(
        tool("git-credential-clawker", &d.tool_env()).arg("get"),
        "protocol=https\nhost=unknown.example\n\n",
    );
    assert_eq!((code, out.as_str()), (0, ""));
    let (code, out, _) = git(
        &env,
        &["credential", "fill"],
        "protocol=https\nhost=unknown.example\n\n",
    );
    assert_ne!(code, 0);
    assert!(!out.contains("password="));

    // store is refused by the host's default policy: quiet exit 0 (no line after every clone
    // and push: newcomer review F6d), nothing stored, git not run.
    let before = d.helper_log();
    let (code, out, err) = run_with_input(
        tool("git-credential-clawker", &d.tool_env()).arg("store"),
        "protocol=https\nhost=github.com\nusername=mallory\npassword=evil\n\n",
    );
    assert_eq!((code, out.as_str(), err.as_str()), (0, "", ""));
    assert_eq!(d.helper_log(), before);
    let creds = std::fs::read_to_string(d.dir.path().join("git-credentials")).unwrap();
    assert!(!creds.contains("mallory"));

    // A CR smuggled into a value is refused before anything is sent.
    let (code, _, err) = run_with_input(
        tool("git-credential-clawker", &d.tool_env()).arg("get"),
        "protocol=https\nhost=github.com\rhost=evil\n\n",
    );
    assert_eq!(code, 1, "{err}");
    assert_eq!(d.helper_log(), before);

    // Unknown actions are ignored, as git expects of helpers.
    let (code, out, _) = run_with_input(
        tool("git-credential-clawker", &d.tool_env()).arg("capability"),
        "",
    );
    assert_eq!((code, out.as_str()), (0, ""));
}

#[test]
fn tools_name_the_url_when_the_daemon_is_down() {
    let port = free_port();
    let env = vec![
        (
            "CLAWKER_HOST_PROXY".to_string(),
            format!("http://127.0.0.1:{port}"),
        ),
        ("CLAWKER_HOST_PROXY_TOKEN".to_string(), "x".repeat(64)),
    ];
    let (code, out, err) = run_with_input(
        tool("git-credential-clawker", &env).arg("get"),
        "protocol=https\nhost=github.com\n\n",
    );
    assert_eq!(code, 1);
    assert_eq!(out, "");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains(&format!("http://127.0.0.1:{port}")), "{err}");

    let url = "https://example.com/login?x=1";
    let (code, out, err) = run_with_input(tool("host-open", &env).arg(url), "");
    assert_eq!(code, 1);
    assert_eq!(out.trim(), url, "the url must be printed for the user");
    assert!(err.contains(&format!("http://127.0.0.1:{port}")), "{err}");
}

/// A host whose launcher fails (no display, an SSH session: `xdg-open` exits 3): host-open
/// prints the URL for the user and says why, and an OAuth login's callback stays armed, so
/// opening the URL by hand still completes it (newcomer review F9).
#[test]
fn a_failing_launcher_prints_the_url_and_keeps_the_login_waiting() {
    let dir = tempfile::tempdir().unwrap();
    let launcher = dir.path().join("xdg-open");
    write_script(&launcher, "echo 'no DISPLAY' >&2; exit 3");
    let d = DaemonProc::start(DaemonOpts {
        browser: Some(launcher),
        ..DaemonOpts::default()
    });
    let cb_port = free_port();
    let url = format!(
        "https://accounts.example.com/o/oauth2/auth?response_type=code&redirect_uri=http%3A%2F%2Flocalhost%3A{cb_port}%2Fcb&state=by-hand"
    );
    let (code, out, err) = run_with_input(tool("host-open", &d.tool_env()).arg(&url), "");
    assert_eq!(code, 1, "{err}");
    assert_eq!(out.trim(), url, "the url must be printed for the user");
    assert!(
        err.contains("launcher") && err.contains("still awaited"),
        "{err}"
    );
    // The user opens it by hand; the provider's redirect reaches the host's listener.
    let (status, _) = Req::new(
        "GET",
        format!("http://127.0.0.1:{cb_port}/cb?code=c0de&state=by-hand"),
    )
    .header("Host", format!("localhost:{cb_port}"))
    .send();
    assert_eq!(status, 200, "{}", d.log_text());
}

/// A scripted daemon for host-open: registers the callback (session `s-kept`), then answers
/// `/open/url` with `open` (a status line), or drops the connection when `None`; every
/// request line it gets is sent on the channel. Its port.
fn scripted_daemon(open: Option<&'static str>) -> (u16, std::sync::mpsc::Receiver<String>) {
    use std::io::{BufRead, BufReader, Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { continue };
            let tx = tx.clone();
            std::thread::spawn(move || {
                let mut r = BufReader::new(conn);
                loop {
                    let mut line = String::new();
                    if r.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    let mut len = 0;
                    loop {
                        let mut h = String::new();
                        r.read_line(&mut h).unwrap();
                        if let Some((k, v)) = h.split_once(':')
                            && k.eq_ignore_ascii_case("content-length")
                        {
                            len = v.trim().parse().unwrap();
                        }
                        if h == "\r\n" {
                            break;
                        }
                    }
                    r.read_exact(&mut vec![0; len]).unwrap();
                    let _ = tx.send(line.trim_end().to_string());
                    let (status, body) = if line.starts_with("POST /callback/register ") {
                        (
                            "200 OK",
                            r#"{"success":true,"session_id":"s-kept","expires_at":"2030-01-01T00:00:00Z"}"#,
                        )
                    } else if line.starts_with("POST /open/url ") {
                        match open {
                            Some(status) => (status, r#"{"error":"refused"}"#),
                            None => return, // the answer never comes
                        }
                    } else {
                        ("404 Not Found", "{}")
                    };
                    let head = format!(
                        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
                        body.len()
                    );
                    if r.get_mut().write_all(head.as_bytes()).is_err()
                        || r.get_mut().write_all(body.as_bytes()).is_err()
                    {
                        return;
                    }
                }
            });
        }
    });
    (port, rx)
}

/// host-open with an OAuth URL against the scripted daemon: its exit code, stdout and
/// stderr, and the request lines the daemon got (the forwarder's polls may be among them).
fn open_against(open: Option<&'static str>) -> (i32, String, String, Vec<String>) {
    let (port, rx) = scripted_daemon(open);
    let url = "https://accounts.example.com/o/oauth2/auth?response_type=code&redirect_uri=http%3A%2F%2Flocalhost%3A38517%2Fcb&state=kept";
    let env = vec![
        (
            "CLAWKER_HOST_PROXY".to_string(),
            format!("http://127.0.0.1:{port}"),
        ),
        ("CLAWKER_HOST_PROXY_TOKEN".to_string(), "t0ken".to_string()),
    ];
    let (code, out, err) = run_with_input(tool("host-open", &env).arg(url), "");
    std::thread::sleep(Duration::from_millis(300));
    let seen: Vec<String> = rx.try_iter().collect();
    assert!(
        seen.iter()
            .any(|l| l.starts_with("POST /callback/register "))
            && seen.iter().any(|l| l.starts_with("POST /open/url ")),
        "{seen:?}"
    );
    (code, out, err, seen)
}

/// A daemon that goes away after it opened the page but before its answer arrived (a
/// restart, a crash): host-open cannot know whether the browser opened, so the login's
/// session stays for the daemon that comes back (caught under `stress`: host-open used to
/// delete it, and the login then hung with the forwarder polling a deleted session).
#[test]
fn an_open_whose_answer_never_came_keeps_the_login_waiting() {
    let (code, out, err, seen) = open_against(None);
    assert_eq!(code, 1, "{err}");
    assert!(
        out.contains("state=kept"),
        "the url must be printed for the user: {out}"
    );
    assert!(err.contains("still awaited"), "{err}");
    assert!(!seen.iter().any(|l| l.starts_with("DELETE ")), "{seen:?}");
}

/// A daemon that refuses the open (403): nothing was opened, so the login's session is
/// deleted at once (its forwarder then ends) and host-open says why.
#[test]
fn a_refused_open_ends_the_login_session() {
    let (code, out, err, seen) = open_against(Some("403 Forbidden"));
    assert_eq!(out, "", "nothing for the user to open");
    assert_ne!(code, 0, "{err}");
    assert!(err.contains("403"), "{err}");
    assert!(
        seen.iter().any(|l| l == "DELETE /callback/s-kept HTTP/1.1"),
        "{seen:?}"
    );
}

#[test]
fn host_open_plain_url_goes_to_the_launcher() {
    let d = DaemonProc::start(DaemonOpts::default());
    let (code, out, err) = run_with_input(
        tool("host-open", &d.tool_env()).arg("https://example.com/docs?a=1"),
        "",
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "");
    assert_eq!(d.launch_log(), "BEGIN\nhttps://example.com/docs?a=1\nEND\n");
    // A URL the daemon refuses: clear error, launcher not called.
    let (code, _, err) = run_with_input(
        tool("host-open", &d.tool_env()).arg("file:///etc/passwd"),
        "",
    );
    assert_eq!(code, 1);
    assert!(err.contains("http"), "{err}");
    assert_eq!(d.launch_log().matches("BEGIN").count(), 1);
    for flag in ["--help", "--version"] {
        for t in [
            "host-open",
            "callback-forwarder",
            "git-credential-clawker",
            "ssh-agent-proxy",
        ] {
            let out = tool(t, &[]).arg(flag).output().unwrap();
            assert!(out.status.success(), "{t} {flag}");
        }
    }
}

#[test]
fn callback_forwarder_replays_then_cleans_up_and_fails_clearly() {
    let d = DaemonProc::start(DaemonOpts::default());
    // Register a callback on a host port and capture it, as the browser would.
    let cb_port = free_port();
    let reg = http(
        "POST",
        &format!("{}/callback/register", d.url()),
        Some(&d.token),
        Some(serde_json::json!({"port": cb_port, "path": "/cb", "state": "st"})),
    )
    .1;
    let id = reg["session_id"].as_str().unwrap().to_string();
    // The "container's" local server: a socket on another port that records one request.
    let local = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let local_port = local.local_addr().unwrap().port();
    let server = std::thread::spawn(move || {
        use std::io::{Read, Write};
        let (mut s, _) = local.accept().unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = vec![0u8; 8192];
        let n = s.read(&mut buf).unwrap();
        s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok")
            .unwrap();
        String::from_utf8_lossy(&buf[..n]).into_owned()
    });
    let mut env = d.tool_env();
    env.push(("CALLBACK_SESSION".into(), id.clone()));
    env.push(("CALLBACK_PORT".into(), local_port.to_string()));
    let mut fwd = tool("callback-forwarder", &env)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let page = http(
        "GET",
        &format!("http://127.0.0.1:{cb_port}/cb?code=abc&state=st"),
        None,
        None,
    );
    assert_eq!(page.0, 200);
    let request = server.join().unwrap();
    assert!(
        request.starts_with("GET /cb?code=abc&state=st HTTP/1.1\r\n"),
        "{request}"
    );
    let status = fwd.wait().unwrap();
    assert!(status.success());
    // Cleaned up: the session is gone.
    let (s, _) = http(
        "GET",
        &format!("{}/callback/{id}/data", d.url()),
        Some(&d.token),
        None,
    );
    assert_eq!(s, 404);

    // Unknown session: exit 1 with a clear message.
    let mut env = d.tool_env();
    env.push(("CALLBACK_SESSION".into(), "0".repeat(32)));
    env.push(("CALLBACK_PORT".into(), "9".into()));
    let out = tool("callback-forwarder", &env).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("session"));

    // SIGTERM ends a waiting forwarder at once.
    let port2 = free_port();
    let reg = http(
        "POST",
        &format!("{}/callback/register", d.url()),
        Some(&d.token),
        Some(serde_json::json!({"port": port2, "state": "st2"})),
    )
    .1;
    let mut env = d.tool_env();
    env.push((
        "CALLBACK_SESSION".into(),
        reg["session_id"].as_str().unwrap().into(),
    ));
    env.push(("CALLBACK_PORT".into(), "9".into()));
    let mut waiting = tool("callback-forwarder", &env).spawn().unwrap();
    std::thread::sleep(Duration::from_millis(400));
    assert!(
        waiting.try_wait().unwrap().is_none(),
        "forwarder should be waiting"
    );
    let t = Instant::now();
    Command::new("kill")
        .arg("-TERM")
        .arg(waiting.id().to_string())
        .status()
        .unwrap();
    let st = waiting.wait().unwrap();
    assert!(
        t.elapsed() < Duration::from_secs(1),
        "took {:?}",
        t.elapsed()
    );
    assert!(!st.success());
}

#[test]
fn ssh_through_the_agent_proxy_lists_signs_and_cannot_remove() {
    let agent = Agent::start();
    let d = DaemonProc::start(DaemonOpts {
        agent: Some(agent.socket.clone()),
        ..DaemonOpts::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("c/agent.sock");
    let mut proxy = tool("ssh-agent-proxy", &d.tool_env())
        .arg("--socket")
        .arg(&sock)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::BufRead;
        let mut line = String::new();
        std::io::BufReader::new(proxy.stdout.as_mut().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), format!("SSH_AUTH_SOCK={}", sock.display()));
    }
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&sock).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let ssh = |args: &[&str]| {
        Command::new("ssh-add")
            .args(args)
            .env("SSH_AUTH_SOCK", &sock)
            .output()
            .unwrap()
    };
    let listed = ssh(&["-l"]);
    assert!(
        listed.status.success(),
        "{}",
        String::from_utf8_lossy(&listed.stderr)
    );
    assert!(String::from_utf8_lossy(&listed.stdout).contains("test@hostproxy"));

    // ssh-keygen -Y sign through the proxy; verify on the host.
    let file = dir.path().join("payload.txt");
    std::fs::write(&file, "commit to sign\n").unwrap();
    let pubfile = dir.path().join("key.pub");
    std::fs::write(&pubfile, &agent.pubkey).unwrap();
    let sign = Command::new("ssh-keygen")
        .args(["-Y", "sign", "-n", "git", "-f"])
        .arg(&pubfile)
        .arg(&file)
        .env("SSH_AUTH_SOCK", &sock)
        .output()
        .unwrap();
    assert!(
        sign.status.success(),
        "{}",
        String::from_utf8_lossy(&sign.stderr)
    );
    let allowed = dir.path().join("allowed_signers");
    std::fs::write(
        &allowed,
        format!("test@hostproxy namespaces=\"git\" {}", agent.pubkey),
    )
    .unwrap();
    let verify = Command::new("ssh-keygen")
        .args(["-Y", "verify", "-n", "git", "-I", "test@hostproxy", "-f"])
        .arg(&allowed)
        .arg("-s")
        .arg(file.with_extension("txt.sig"))
        .stdin(std::fs::File::open(&file).unwrap())
        .output()
        .unwrap();
    assert!(
        verify.status.success(),
        "{}",
        String::from_utf8_lossy(&verify.stderr)
    );

    // Signing for another namespace is refused by the daemon's signing policy.
    std::fs::write(dir.path().join("other.txt"), "x").unwrap();
    let other = Command::new("ssh-keygen")
        .args(["-Y", "sign", "-n", "file", "-f"])
        .arg(&pubfile)
        .arg(dir.path().join("other.txt"))
        .env("SSH_AUTH_SOCK", &sock)
        .output()
        .unwrap();
    assert!(!other.status.success(), "namespace file must not be signed");

    // Removing keys through the proxy fails and removes nothing; locking fails too.
    let removed = ssh(&["-D"]);
    assert!(!removed.status.success());
    let (code, listing) = agent.list();
    assert_eq!(code, 0);
    assert!(listing.contains("test@hostproxy"));

    // Many clients at once.
    let handles: Vec<_> = (0..8)
        .map(|_| {
            let sock = sock.clone();
            std::thread::spawn(move || {
                Command::new("ssh-add")
                    .arg("-l")
                    .env("SSH_AUTH_SOCK", sock)
                    .output()
                    .unwrap()
                    .status
                    .success()
            })
        })
        .collect();
    assert!(handles.into_iter().all(|h| h.join().unwrap()));

    // A thread serves each client, so their number is capped: one over the cap is closed,
    // the others keep working, and the cap frees up as clients leave.
    {
        use std::io::Read;
        let held: Vec<_> = (0..64)
            .map(|_| std::os::unix::net::UnixStream::connect(&sock).unwrap())
            .collect();
        let mut over = std::os::unix::net::UnixStream::connect(&sock).unwrap();
        over.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = [0u8; 1];
        assert_eq!(over.read(&mut buf).unwrap(), 0, "the 65th client is closed");
        drop(held);
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while !ssh(&["-l"]).status.success() {
            assert!(
                std::time::Instant::now() < deadline,
                "the cap never freed up"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    // A malformed frame closes that client only.
    {
        use std::io::{Read, Write};
        let mut bad = std::os::unix::net::UnixStream::connect(&sock).unwrap();
        bad.write_all(&[0xff, 0xff, 0xff, 0xff]).unwrap();
        let mut buf = [0u8; 1];
        bad.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        assert_eq!(
            bad.read(&mut buf).unwrap(),
            0,
            "connection should be closed"
        );
    }
    assert!(ssh(&["-l"]).status.success());

    // Daemon gone: the proxy answers FAILURE instead of dropping the client.
    drop(d);
    let listed = ssh(&["-l"]);
    assert!(!listed.status.success());
    let text = String::from_utf8_lossy(&listed.stderr).to_string()
        + &String::from_utf8_lossy(&listed.stdout);
    assert!(!text.contains("communication with agent failed"), "{text}");
    let _ = proxy.kill();
    let _ = proxy.wait();
}

#[test]
fn daemon_logs_hold_no_secrets() {
    let agent = Agent::start();
    let d = DaemonProc::start(DaemonOpts {
        agent: Some(agent.socket.clone()),
        ..DaemonOpts::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let env = container_git_env(&d, dir.path());
    let (code, out, _) = git(
        &env,
        &["credential", "fill"],
        "protocol=https\nhost=github.com\n\n",
    );
    assert_eq!(code, 0);
    assert!(out.contains("s3cret-pass"));
    let cb_port = free_port();
    let (_, reg) = http(
        "POST",
        &format!("{}/callback/register", d.url()),
        Some(&d.token),
        Some(serde_json::json!({"port": cb_port, "state": "state-secret-123"})),
    );
    let id = reg["session_id"].as_str().unwrap().to_string();
    http(
        "GET",
        &format!(
            "http://127.0.0.1:{cb_port}/callback?code=oauth-code-secret&state=state-secret-123"
        ),
        None,
        None,
    );
    http(
        "GET",
        &format!("{}/callback/{id}/data", d.url()),
        Some(&d.token),
        None,
    );
    http(
        "GET",
        &format!("{}/callback/{id}/data?token={}", d.url(), d.token),
        Some("wrong"),
        None,
    );
    // A refused store, an opened URL, and an SSH signature through the proxy, for the audit log.
    let (code, _, _) = run_with_input(
        tool("git-credential-clawker", &d.tool_env()).arg("store"),
        "protocol=https\nhost=github.com\nusername=alice\npassword=new-secret-pw\n\n",
    );
    assert_eq!(code, 0);
    let (code, _, _) = run_with_input(
        tool("host-open", &d.tool_env()).arg("https://example.com/page?q=url-query-secret"),
        "",
    );
    assert_eq!(code, 0);
    let sock = dir.path().join("a.sock");
    let proxy = AgentProxy::start(&d.tool_env(), &sock);
    std::fs::write(dir.path().join("m"), "x").unwrap();
    std::fs::write(dir.path().join("k.pub"), &agent.pubkey).unwrap();
    let signed = Command::new("ssh-keygen")
        .args(["-Y", "sign", "-n", "git", "-f"])
        .arg(dir.path().join("k.pub"))
        .arg(dir.path().join("m"))
        .env("SSH_AUTH_SOCK", &sock)
        .output()
        .unwrap();
    assert!(signed.status.success());
    drop(proxy);
    let mut d = d;
    d.terminate();
    let log = d.log_text();
    assert!(log.contains("request"), "log is empty?\n{log}");
    let audit = std::fs::read_to_string(d.dir.path().join("state/logs/audit.jsonl")).unwrap();
    for secret in [
        "s3cret-pass",
        "new-secret-pw",
        "alice",
        &d.token,
        &id,
        "oauth-code-secret",
        "state-secret-123",
        "url-query-secret",
    ] {
        assert!(!log.contains(secret), "log leaks {secret:?}:\n{log}");
        assert!(
            !audit.contains(secret),
            "audit log leaks {secret:?}:\n{audit}"
        );
    }
    let records: Vec<clawker_protocol::audit::AuditRecord> = audit
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let has = |route: &str, action: &str, allowed: bool| {
        records
            .iter()
            .any(|r| r.route == route && r.action == action && r.allowed == allowed)
    };
    assert!(has("/git/credential", "get", true), "{audit}");
    assert!(has("/git/credential", "store", false), "{audit}");
    assert!(has("/open/url", "open", true), "{audit}");
    assert!(has("/callback/register", "register", true), "{audit}");
    assert!(
        has("/callback/{id}/data", "request", false),
        "the wrong-token poll is a denial: {audit}"
    );
    let sign = records
        .iter()
        .find(|r| r.action == "sign:sshsig:git")
        .expect("the signature is audited");
    assert!(sign.allowed, "{sign:?}");
    let fp = Command::new("ssh-keygen")
        .arg("-lf")
        .arg(dir.path().join("k.pub"))
        .output()
        .unwrap();
    let key = sign.key.as_deref().unwrap();
    assert!(key.starts_with("SHA256:"));
    assert!(
        String::from_utf8_lossy(&fp.stdout).contains(key),
        "fingerprint differs from ssh-keygen -l"
    );
    assert!(
        records
            .iter()
            .any(|r| r.route == "/open/url" && r.host.as_deref() == Some("example.com"))
    );
}

/// A few blocking HTTP helpers for these process-level tests.
#[test]
fn a_real_ssh_login_signs_through_the_agent_proxy() {
    let agent = Agent::start();
    let sshd = Sshd::start(&agent.pubkey);
    let d = DaemonProc::start(DaemonOpts {
        agent: Some(agent.socket.clone()),
        ..DaemonOpts::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("agent.sock");
    let proxy = AgentProxy::start(&d.tool_env(), &sock);
    let (ok, err) = ssh_login(&sock, sshd.port);
    drop(proxy);
    assert!(ok, "{err}");
}

#[test]
fn host_notify_reaches_the_hosts_notifier_with_the_exact_text_and_never_a_shell() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("notify.log");
    let notifier = dir.path().join("notifier");
    recording_script(&notifier, &log);
    let d = DaemonProc::start(DaemonOpts {
        args: vec!["--notifier".into(), notifier.display().to_string()],
        ..DaemonOpts::default()
    });
    let (title, body) = ("Agent needs you", "$(touch /tmp/pwned-by-notify) `id`; ok");
    let (code, _, err) = run_with_input(tool("host-notify", &d.tool_env()).args([title, body]), "");
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        std::fs::read_to_string(&log).unwrap(),
        format!("BEGIN\n{title}\n{body}\nEND\n")
    );
    assert!(
        !std::path::Path::new("/tmp/pwned-by-notify").exists(),
        "a shell ran"
    );
    // A control character: refused with the daemon's reason, nothing shown.
    let (code, _, err) = run_with_input(tool("host-notify", &d.tool_env()).arg("bell\u{7}"), "");
    assert_eq!(code, 1);
    assert!(err.contains("control characters"), "{err}");
    assert_eq!(
        std::fs::read_to_string(&log)
            .unwrap()
            .matches("BEGIN")
            .count(),
        1
    );
}
