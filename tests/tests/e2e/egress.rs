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

fn base64_of(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(s)
}
