//! The OAuth round trip with real headless Chromium on the host and the container side in a
//! real container, and the static tools in an empty root.

use std::process::Command;
use std::time::Duration;

use e2e::*;

#[test]
fn oauth_login_in_host_chromium_reaches_the_containers_localhost() {
    let chromium = require("chromium", "chromium");
    let image = test_image();
    let auth_port = authorization_server("the-auth-code");
    let dir = tempfile::tempdir().unwrap();
    let dom = dir.path().join("dom.html");
    let launcher = dir.path().join("chromium-launcher");
    // The daemon's --browser: headless Chromium, backgrounded as xdg-open would.
    write_script(
        &launcher,
        &format!(
            "{chromium} --headless --no-sandbox --disable-gpu --no-first-run --user-data-dir={dir}/profile --dump-dom \"$1\" > {dom} 2>{dir}/chromium.err &",
            chromium = chromium.display(),
            dir = dir.path().display(),
            dom = dom.display()
        ),
    );
    let d = DaemonProc::start(DaemonOpts {
        args: vec!["--listen-docker-bridge".into()],
        browser: Some(launcher),
        ..DaemonOpts::default()
    });
    let cb_port = free_port();
    let login = format!(
        "http://127.0.0.1:{auth_port}/authorize?client_id=cli&response_type=code&redirect_uri=http%3A%2F%2Flocalhost%3A{cb_port}%2Fcgi-bin%2Fcallback&state=st-42"
    );
    // Inside the container: the CLI's own callback server (busybox httpd + CGI) on the same
    // port, then `host-open` as its BROWSER, then wait for the callback to arrive.
    let script = login_script(cb_port, &login);
    let out = d
        .docker_run()
        .arg(image)
        .args(["sh", "-c", &script])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.trim() == "GET code=the-auth-code&state=st-42",
        "container said: {stdout}\n{stderr}\ndaemon log:\n{}\nchromium:\n{}",
        d.log_text(),
        std::fs::read_to_string(dir.path().join("chromium.err")).unwrap_or_default()
    );
    // The browser saw our static page, not anything from the request.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !std::fs::read_to_string(&dom)
        .unwrap_or_default()
        .contains("Login complete")
    {
        assert!(
            std::time::Instant::now() < deadline,
            "chromium did not render the success page"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let page = std::fs::read_to_string(&dom).unwrap();
    assert!(!page.contains("the-auth-code"));
}

/// The daemon's `--browser`: a headless Chromium per URL (its own profile), backgrounded as
/// xdg-open would.
pub(crate) fn chromium_launcher(dir: &std::path::Path) -> std::path::PathBuf {
    let chromium = require("chromium", "chromium");
    let launcher = dir.join("chromium-launcher");
    write_script(
        &launcher,
        &format!(
            "p={dir}/profile-$$; {chromium} --headless --no-sandbox --disable-gpu --no-first-run --user-data-dir=$p --dump-dom \"$1\" > $p.html 2>$p.err &",
            chromium = chromium.display(),
            dir = dir.display(),
        ),
    );
    launcher
}

#[test]
fn a_cli_whose_first_url_is_its_own_loopback_page_logs_in_through_host_chromium() {
    // rclone's way: the CLI serves its own page on a fixed loopback port, opens *that*
    // (`http://127.0.0.1:53682/auth?state=…`), and the page redirects to the provider with
    // the same port as redirect_uri. host-open follows it inside the container, opens the
    // provider's URL on the host, and the login's redirect comes back to the CLI.
    let image = test_image();
    let auth_port = authorization_server("cli-code");
    let dir = tempfile::tempdir().unwrap();
    // What the host opened, then Chromium on it.
    let opened = dir.path().join("opened.log");
    let launcher = dir.path().join("recording-launcher");
    write_script(
        &launcher,
        &format!(
            "echo \"$1\" >> {}\nexec {} \"$1\"",
            opened.display(),
            chromium_launcher(dir.path()).display()
        ),
    );
    let d = DaemonProc::start(DaemonOpts {
        args: vec!["--listen-docker-bridge".into()],
        browser: Some(launcher),
        ..DaemonOpts::default()
    });
    let port = free_port();
    let provider = format!(
        "http://127.0.0.1:{auth_port}/authorize?client_id=cli&response_type=code&redirect_uri=http%3A%2F%2F127.0.0.1%3A{port}%2Fcgi-bin%2Fcallback&state=st-cli"
    );
    let own_page = format!("http://127.0.0.1:{port}/cgi-bin/auth?state=st-cli");
    let script = format!(
        "mkdir -p /www/cgi-bin\ncat > /www/cgi-bin/auth <<'EOS'\n#!/bin/sh\necho \"$QUERY_STRING\" > /tmp/auth-page\nprintf 'HTTP/1.1 302 Found\\r\\nLocation: %s\\r\\nContent-Length: 0\\r\\n\\r\\n' '{provider}'\nEOS\nchmod +x /www/cgi-bin/auth\n{}",
        login_script(port, &own_page)
    );
    let out = d
        .docker_run()
        .arg(image)
        .args(["sh", "-c", &format!("{script}; echo; cat /tmp/auth-page")])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success()
            && stdout.split_whitespace().collect::<Vec<_>>()
                == ["GET", "code=cli-code&state=st-cli", "state=st-cli"],
        "container said: {stdout}\n{stderr}\ndaemon log:\n{}",
        d.log_text()
    );
    assert!(stderr.contains("this container's own page"), "{stderr}");
    // The host opened the provider's URL, never the container's own page.
    assert_eq!(std::fs::read_to_string(&opened).unwrap().trim(), provider);
}

#[test]
fn two_containers_log_in_on_one_fixed_port_at_once() {
    // A CLI with a fixed callback port (codex uses 1455): two containers, each with its
    // local server on that port, log in at the same time; each gets its own code.
    let image = test_image();
    let auth_port = authorization_server("code-of-{state}");
    let dir = tempfile::tempdir().unwrap();
    let d = DaemonProc::start(DaemonOpts {
        args: vec!["--listen-docker-bridge".into()],
        browser: Some(chromium_launcher(dir.path())),
        ..DaemonOpts::default()
    });
    let cb_port = free_port();
    let run = |state: &str| {
        let login = format!(
            "http://127.0.0.1:{auth_port}/authorize?client_id=cli&response_type=code&redirect_uri=http%3A%2F%2Flocalhost%3A{cb_port}%2Fcgi-bin%2Fcallback&state={state}"
        );
        let script = login_script(cb_port, &login);
        d.docker_run()
            .arg(image)
            .args(["sh", "-c", &script])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (a, b) = (run("login-a"), run("login-b"));
    for (child, state) in [(a, "login-a"), (b, "login-b")] {
        let out = child.wait_with_output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success()
                && stdout.trim() == format!("GET code=code-of-{state}&state={state}"),
            "{state}: {stdout}\n{}\ndaemon log:\n{}",
            String::from_utf8_lossy(&out.stderr),
            d.log_text()
        );
    }
}

#[test]
fn container_reaches_daemon_on_the_bridge_and_lying_host_is_refused() {
    let image = test_image();
    let d = DaemonProc::start(DaemonOpts {
        args: vec!["--listen-docker-bridge".into()],
        ..DaemonOpts::default()
    });
    let gw = docker_gateway();
    let run = |host_header: &str| {
        let out = Command::new("docker")
            .args(["run", "--rm", "--add-host", "host.docker.internal:host-gateway"])
            .arg(image)
            .args([
                "sh",
                "-c",
                &format!(
                    "{{ printf 'GET /health HTTP/1.0\\r\\nHost: {host_header}\\r\\n\\r\\n'; sleep 1; }} | nc host.docker.internal {} | head -1",
                    d.port
                ),
            ])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    assert!(
        run(&format!("host.docker.internal:{}", d.port)).contains("200"),
        "daemon log:\n{}",
        d.log_text()
    );
    assert!(run(&format!("{gw}:{}", d.port)).contains("200"));
    assert!(run(&format!("evil.example:{}", d.port)).contains("403"));
    // Never a wildcard bind.
    let listening = std::fs::read_to_string("/proc/net/tcp").unwrap();
    let port_hex = format!(":{:04X}", d.port);
    for line in listening.lines().filter(|l| l.contains(&port_hex)) {
        assert!(
            !line
                .split_whitespace()
                .nth(1)
                .unwrap()
                .starts_with("00000000:"),
            "wildcard bind: {line}"
        );
    }
}

#[test]
fn every_static_tool_runs_in_an_empty_root() {
    let image = tools_only_image();
    for t in [
        "host-open",
        "callback-forwarder",
        "git-credential-clawker",
        "ssh-agent-proxy",
    ] {
        let out = Command::new("docker")
            .args([
                "run",
                "--rm",
                "--entrypoint",
                &format!("/opt/clawker/bin/{t}"),
                image,
                "--version",
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{t}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(String::from_utf8_lossy(&out.stdout).starts_with(t));
    }
    // And one real request from that empty root, to prove no CA store or resolver is needed.
    let d = DaemonProc::start(DaemonOpts {
        args: vec!["--listen-docker-bridge".into()],
        ..DaemonOpts::default()
    });
    let out = d
        .docker_run()
        .args([
            "--entrypoint",
            "/opt/clawker/bin/host-open",
            image,
            "https://example.com/from-scratch",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        d.log_text()
    );
    assert!(d.launch_log().contains("https://example.com/from-scratch"));
}

#[test]
fn the_example_dockerfile_builds_and_its_container_reaches_the_daemon() {
    let base = test_image();
    let root = workspace_root();
    // The example copies from target/dist/: make sure the tools are there.
    let _ = dist_dir();
    let tag = "hostproxy-example:test";
    let out = Command::new("docker")
        .args([
            "build",
            "-q",
            "-f",
            "examples/Dockerfile",
            "--build-arg",
            &format!("BASE={base}"),
            "-t",
            tag,
            ".",
        ])
        .current_dir(&root)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let d = DaemonProc::start(DaemonOpts {
        args: vec!["--listen-docker-bridge".into()],
        ..DaemonOpts::default()
    });
    // The documented default path: examples/run.sh, which gives the container a token of
    // its own (scoped, bound to it, revoked afterwards), never the user's.
    let state = d.dir.path().join("state");
    let name = format!("example-run-{}", std::process::id());
    let out = Command::new("sh")
        .arg(root.join("examples/run.sh"))
        .arg(tag)
        // BROWSER is what a CLI would call; git finds the helper through /etc/gitconfig.
        .args(["sh", "-c", "$BROWSER https://example.com/from-the-example && printf 'protocol=https\\nhost=github.com\\n\\n' | git-credential-clawker get && cat /run/secrets/clawker-token"])
        .env("HOSTPROXY", bin("hostproxy"))
        .env("CLAWKER_HOST_PROXY_PORT", d.port.to_string())
        .env("CLAWKER_STATE_DIR", &state)
        .env("CONTAINER_NAME", &name)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        d.launch_log()
            .contains("https://example.com/from-the-example")
    );
    assert!(stdout.contains("password=s3cret-pass"), "{stdout}");
    let user_token = std::fs::read_to_string(state.join("hostproxy.token")).unwrap();
    assert!(
        !stdout.contains(user_token.trim()),
        "the container got the user's own token"
    );
    let list = Command::new(bin("hostproxy"))
        .args(["token", "list", "--json"])
        .env("CLAWKER_STATE_DIR", &state)
        .output()
        .unwrap();
    let tokens: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap();
    let issued = tokens
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == format!("run-{name}"))
        .expect("run.sh issued a token for the container")
        .clone();
    assert_eq!(issued["container"], name.as_str(), "{issued}");
    assert_eq!(
        issued["revoked"], true,
        "revoked once the container is gone: {issued}"
    );
    let labels = Command::new("docker")
        .args(["image", "inspect", "-f", "{{json .Config.Labels}}", tag])
        .output()
        .unwrap();
    let labels = String::from_utf8_lossy(&labels.stdout);
    assert!(
        labels.contains("\"dev.clawker.purpose\":\"agent\""),
        "{labels}"
    );
}
