//! Egress with host-held secrets (SPEC.md 13), git over HTTPS: a stock `--network none`
//! container clones, commits and pushes to a real TLS git server (lighttpd, git
//! http-backend, basic auth, a CA only the daemon knows) through the daemon, while the
//! password lives only in the host's credential store.

use std::time::Duration;

use e2e::git_server::{GIT_PASSWORD, GIT_USER, GitServer};
use e2e::*;

/// A daemon whose git trusts the server's CA and whose host credential store has the
/// server's password; containers attached with `scopes`.
fn daemon_for(server: &GitServer, scopes: &str) -> DaemonProc {
    let dir = tempfile::tempdir().unwrap();
    let d = DaemonProc::start(DaemonOpts {
        args: config_args(
            dir.path(),
            &format!(
                "[attach]\nscopes = [{scopes}]\n\n[git]\nca_file = \"{}\"\n",
                server.ca().display()
            ),
        ),
        ..DaemonOpts::default()
    });
    // The host's own store (host_git_env's second helper) learns the server's password.
    let creds = d.dir.path().join("git-credentials");
    let mut text = std::fs::read_to_string(&creds).unwrap();
    text.push_str(&format!(
        "https://{GIT_USER}:{GIT_PASSWORD}@{}\n",
        server.host()
    ));
    std::fs::write(&creds, text).unwrap();
    std::mem::forget(dir);
    d
}

/// A tunnel container wired with `run-flags --git-egress HOST`.
fn egress_container(d: &DaemonProc, server: &GitServer, tag: &str, extra: &[&str]) -> Container {
    let n = name(tag);
    let c = Container::start(
        d.run_flags_run("none", &["--no-mount", "--git-egress", &server.host()])
            .args(extra)
            .args(["--name", &n, busybox_image(), "sleep", "300"]),
    );
    d.wait_serving(&n, Duration::from_secs(15));
    c
}

const GIT_ID: &str = "-c user.name=agent -c user.email=agent@example.com";

#[test]
fn a_container_clones_and_pushes_over_https_while_the_password_stays_on_the_host() {
    let server = GitServer::start();
    let h = server.host();
    let d = daemon_for(&server, &format!("\"git:{h}\", \"git-push:{h}\""));
    let c = egress_container(&d, &server, "egress", &[]);

    // Clone, commit, push — with curl's trace on, and git's own trace of what it runs.
    let (ok, out, err) = c.exec(
        &["GIT_TRACE_CURL=1", "GIT_TRACE=1", "HOME=/tmp"],
        &format!(
            "git clone {url} /tmp/r && cd /tmp/r && cat README && echo from-the-container > agent.txt && git add agent.txt && git {GIT_ID} commit -q -m 'pushed through the daemon' && git push origin HEAD:main",
            url = server.url()
        ),
    );
    let all = format!("{out}{err}");
    assert!(ok, "{all}\n{}", d.log_text());
    assert!(out.contains("seeded on the server"), "{all}");
    assert_eq!(server.log(), "pushed through the daemon\nseed\n");
    // The requests went through the daemon, over TLS, with the host's credential.
    let seen = server.requests();
    assert!(
        seen.contains(&format!("{GIT_USER} POST /r.git/git-receive-pack")),
        "{seen}"
    );
    // Over HTTP/2: the server offers it (ALPN) and the daemon's pooled client takes it.
    assert!(
        seen.lines().all(|l| l.ends_with(" HTTP/2.0")),
        "not every request came over HTTP/2:\n{seen}"
    );

    // The password is nowhere in the container: not in git's traces, not in any process's
    // environment, not in a file git wrote; and git ran no credential helper.
    let basic = base64_of(&format!("{GIT_USER}:{GIT_PASSWORD}"));
    assert!(
        !all.contains(GIT_PASSWORD) && !all.contains(&basic),
        "{all}"
    );
    assert!(
        !all.contains("credential"),
        "git ran a credential helper:\n{all}"
    );
    let (_, found, _) = c.exec(
        &[],
        &format!("cat /proc/*/environ 2>/dev/null | tr '\\0' '\\n' | grep -c -e {GIT_PASSWORD} -e {basic}; grep -r -l -e {GIT_PASSWORD} -e {basic} /tmp /root /etc 2>/dev/null; true"),
    );
    assert_eq!(
        found.trim(),
        "0",
        "the password is in the container: {found}"
    );
}

#[test]
fn without_git_push_a_push_is_refused_before_anything_reaches_the_server() {
    let server = GitServer::start();
    let h = server.host();
    let d = daemon_for(&server, &format!("\"git:{h}\""));
    let c = egress_container(&d, &server, "egress-ro", &[]);
    let (ok, out, err) = c.exec(
        &["HOME=/tmp"],
        &format!(
            "git clone -q {url} /tmp/r && cd /tmp/r && git {GIT_ID} commit -q --allow-empty -m nope && git push origin HEAD:main",
            url = server.url()
        ),
    );
    assert!(!ok, "the push went through: {out}{err}");
    assert!(err.contains("403"), "{err}");
    assert_eq!(server.log(), "seed\n");
    let seen = server.requests();
    assert!(
        seen.contains("git-upload-pack"),
        "the clone did not reach the server: {seen}"
    );
    assert!(!seen.contains("git-receive-pack"), "{seen}");
    let audit = std::fs::read_to_string(d.dir.path().join("state/logs/audit.jsonl")).unwrap();
    assert!(
        audit
            .lines()
            .any(|l| l.contains("\"route\":\"/git/{host}/{*path}\"")
                && l.contains("\"action\":\"push\"")
                && l.contains("\"allowed\":false")),
        "{audit}"
    );
}

#[test]
fn a_push_scope_for_one_path_cannot_be_stretched_with_encoded_dots() {
    let server = GitServer::start();
    let h = server.host();
    // May push under acme/ only; the server's repository is git/r.git.
    let d = daemon_for(&server, &format!("\"git:{h}\", \"git-push:{h}/acme/\""));
    let c = egress_container(&d, &server, "egress-dots", &[]);
    for path in [
        format!("/git/{h}/acme/%2e%2e/git/r.git/git-receive-pack"),
        format!("/git/{h}/acme/%2E%2E/git/r.git/info/refs?service=git-receive-pack"),
    ] {
        let (ok, out, err) = c.exec(
            &[],
            &format!("wget -q -O - --post-data x --header 'Content-Type: application/x-git-receive-pack-request' 'http://127.0.0.1:18374{path}'"),
        );
        assert!(!ok, "{path} went through: {out}");
        assert!(err.contains("400 Bad Request"), "{path}: {err}");
    }
    // And the plain push outside acme/ is refused by scope.
    let (ok, _, err) = c.exec(
        &["HOME=/tmp"],
        &format!(
            "git clone -q {url} /tmp/r && cd /tmp/r && git {GIT_ID} commit -q --allow-empty -m nope && git push origin HEAD:main",
            url = server.url()
        ),
    );
    assert!(!ok && err.contains("403"), "{err}");
    let seen = server.requests();
    assert!(!seen.contains("git-receive-pack"), "{seen}");
    assert_eq!(server.log(), "seed\n");
}

fn base64_of(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(s)
}

/// The `openai` SDK, installed once with pip into `target/pyopenai` (mounted read-only into
/// the container, whose Python is the host's Debian `python3`).
fn openai_sdk() -> &'static std::path::Path {
    static DIR: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        assert!(
            std::path::Path::new("/usr/bin/python3").is_file(),
            "this test needs Debian's python3: apt-get install python3 python3-pip"
        );
        let dir = workspace_root().join("target/pyopenai");
        if !dir.join("openai").is_dir() {
            let st = std::process::Command::new("/usr/bin/python3")
                .args(["-m", "pip", "install", "-q", "--disable-pip-version-check"])
                .arg("--target")
                .arg(&dir)
                .arg("openai==3.63.0")
                .status()
                .expect("cannot run pip");
            assert!(
                st.success(),
                "pip install openai failed: this test needs PyPI"
            );
        }
        dir
    })
}

const STREAM: &str = r#"python3 -c '
import time, openai
c = openai.OpenAI()
s = c.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}], stream=True)
for ch in s:
    print("%f %s" % (time.time(), ch.choices[0].delta.content), flush=True)
'"#;

const PROBES: &str = r#"python3 -c '
import http.client
def ask(method, path):
    c = http.client.HTTPConnection("127.0.0.1", 18374)
    c.request(method, path, headers={"Authorization": "Bearer from-the-container", "Cookie": "c=1"})
    r = c.getresponse()
    r.read()
    print(method, path, r.status, r.getheader("Location"), r.getheader("X-Echo"))
ask("GET", "/egress/openai/redirect")
ask("GET", "/egress/openai/echo")
ask("DELETE", "/egress/openai/chat/completions")
ask("GET", "/egress/openai/models")
ask("GET", "/egress/anthropic/v1/messages")
'"#;

#[test]
fn an_sdk_in_the_container_streams_through_the_daemon_which_adds_the_key() {
    use e2e::api_upstream::{API_KEY, ApiUpstream};
    let up = ApiUpstream::start();
    let dir = tempfile::tempdir().unwrap();
    let d = DaemonProc::start(DaemonOpts {
        args: config_args(
            dir.path(),
            &format!(
                "[attach]\nscopes = [\"egress:openai\"]\n\n[[egress]]\nname = \"openai\"\nupstream = \"https://127.0.0.1:{}/v1\"\nbearer = true\nsecret.env = \"HOSTPROXY_TEST_OPENAI_KEY\"\nmethods = [\"GET\", \"POST\"]\npaths = [\"/chat/completions\", \"/redirect\", \"/echo\"]\nenv = \"OPENAI_BASE_URL\"\nkey_env = \"OPENAI_API_KEY\"\nca_file = \"{}\"\n",
                up.port,
                up.ca().display()
            ),
        ),
        env: vec![("HOSTPROXY_TEST_OPENAI_KEY".into(), API_KEY.into())],
        ..DaemonOpts::default()
    });
    let n = name("sdk");
    let c = Container::start(
        d.run_flags_run("none", &["--no-mount", "--egress", "openai"])
            .arg("-v")
            .arg(format!("{}:/opt/py:ro", openai_sdk().display()))
            .args(["-e", "PYTHONPATH=/opt/py"])
            .args(["--name", &n, busybox_image(), "sleep", "300"]),
    );
    d.wait_serving(&n, Duration::from_secs(15));

    // The SDK streams event by event: the first arrives before the upstream sent the last.
    let (ok, out, err) = c.exec(&["HOME=/tmp"], STREAM);
    assert!(ok, "{out}\n{err}\n{}", d.log_text());
    let got: Vec<(f64, &str)> = out
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(t, w)| (t.parse().unwrap(), w))
        .filter(|(_, w)| *w != "None")
        .collect();
    assert_eq!(
        got.iter().map(|(_, w)| *w).collect::<Vec<_>>(),
        ["one", "two", "three", "four", "five"],
        "{out}"
    );
    let log = up.log();
    let last_sent = log
        .iter()
        .filter(|r| r["sent"] == "five")
        .map(|r| r["time"].as_f64().unwrap())
        .next()
        .unwrap();
    assert!(
        got[0].0 < last_sent,
        "the first event arrived at {}, after the last was sent at {last_sent}: buffered",
        got[0].0
    );
    // The upstream saw the host's key, never the container's placeholder.
    let seen: Vec<&serde_json::Value> = log.iter().filter(|r| r["method"].is_string()).collect();
    assert!(!seen.is_empty());
    for r in &seen {
        assert_eq!(r["authorization"], format!("Bearer {API_KEY}"), "{r}");
    }
    // The key is nowhere in the container.
    let (_, found, _) = c.exec(
        &[],
        &format!(
            "cat /proc/*/environ 2>/dev/null | tr '\\0' '\\n' | grep -c {API_KEY}; grep -r -l {API_KEY} /tmp /root /etc 2>/dev/null; true"
        ),
    );
    assert_eq!(found.trim(), "0", "the key is in the container: {found}");

    // A redirect comes back to the container and is not followed with the key; a header
    // echoing the key is dropped; undeclared methods, paths and names are 403 with nothing
    // sent upstream.
    let before = up.log().len();
    let (ok, out, err) = c.exec(&[], PROBES);
    assert!(ok, "{out}{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        lines[0].starts_with("GET /egress/openai/redirect 302 https://127.0.0.1:")
            && lines[0].ends_with("/steal None"),
        "{out}"
    );
    assert_eq!(up.other_hits.load(std::sync::atomic::Ordering::SeqCst), 0);
    assert_eq!(lines[1], "GET /egress/openai/echo 200 None None", "{out}");
    for (i, what) in [
        (2, "DELETE"),
        (3, "/egress/openai/models"),
        (4, "anthropic"),
    ] {
        assert!(
            lines[i].contains(what) && lines[i].contains(" 403 "),
            "{out}"
        );
    }
    // Each call is audited when its reply is over: status, time and bytes each way.
    let audit = std::fs::read_to_string(d.dir.path().join("state/logs/audit.jsonl")).unwrap();
    let streamed = audit
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|r| r["route"] == "/egress/{name}/{*path}" && r["key"] == "/chat/completions")
        .unwrap_or_else(|| panic!("no audit line for the stream:\n{audit}"));
    let reason = streamed["reason"].as_str().unwrap();
    assert!(reason.starts_with("upstream 200 in "), "{reason}");
    let down: u64 = reason
        .rsplit(", ")
        .next()
        .and_then(|t| t.strip_suffix(" down"))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(down > 500 && !reason.contains(" 0 bytes up"), "{reason}");
    assert!(!audit.contains(API_KEY));
    let after = up.log();
    assert_eq!(
        after.len(),
        before + 2,
        "something undeclared reached the upstream: {after:?}"
    );
    assert!(after.iter().all(|r| r["cookie"].is_null()));
}
