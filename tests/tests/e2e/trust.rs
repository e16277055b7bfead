//! The trust boundary (SPEC.md 11): each attack of `shared/reviews/2026-12-trust-review.md`
//! made for real against the real binaries, and what shows that nothing happened on the
//! host (a marker file absent, a log empty, a mode unchanged, no attachment made).

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use e2e::*;

fn name(tag: &str) -> String {
    format!("hp-trust-{tag}-{}", free_port())
}

const TUNNEL: &str = "http://127.0.0.1:18374";

/// `git init` of `dir` with `config` appended to its `.git/config`.
fn repo(dir: &Path, config: &str) {
    std::fs::create_dir_all(dir).unwrap();
    let st = Command::new("git")
        .args(["init", "-q"])
        .arg(dir)
        .status()
        .unwrap();
    assert!(st.success());
    let cfg = dir.join(".git/config");
    let mut text = std::fs::read_to_string(&cfg).unwrap();
    text.push_str(config);
    std::fs::write(cfg, text).unwrap();
}

/// A `!` helper that would leave `marker` behind if it ever ran.
fn planted_helper(marker: &Path) -> String {
    format!(
        "[credential]\n\thelper = \"!f() {{ echo \\\"ran in $(pwd)\\\" >> {}; }}; f\"\n",
        marker.display()
    )
}

fn get_github(d: &DaemonProc) -> (u16, serde_json::Value) {
    Req::new("POST", format!("{}/git/credential", d.url()))
        .token(Some(&d.token))
        .json(Some(serde_json::json!({
            "action": "get", "protocol": "https", "host": "github.com"
        })))
        .send()
}

/// Finding 1 (critical): a repository at or above the directory the daemon was started in
/// (`serve` and `start`) never has its config read by the host's git: not its `!` helper,
/// not an `include.path`, not `core.fsmonitor`; over the TCP lane and through the tunnel,
/// where the container writes the helper into the project it has mounted.
#[test]
fn no_repository_where_the_daemon_was_started_is_ever_read() {
    require_docker();
    let image = busybox_image();
    let scratch = tempfile::tempdir().unwrap();
    let outer = scratch.path().join("outer");
    let marker = scratch.path().join("host-marker");
    // A repository above the start directory, its helper behind an include.path.
    let inc = scratch.path().join("evil.inc");
    std::fs::write(&inc, planted_helper(&marker)).unwrap();
    repo(
        &outer,
        &format!(
            "[include]\n\tpath = {}\n[core]\n\tfsmonitor = \"echo fsmonitor >> {}\"\n",
            inc.display(),
            marker.display()
        ),
    );
    // The project, a repository of its own, where the user starts the daemon.
    let proj = outer.join("proj");
    repo(&proj, &planted_helper(&marker));
    let d = DaemonProc::start(DaemonOpts {
        cwd: Some(proj.clone()),
        ..DaemonOpts::default()
    });
    let (status, body) = get_github(&d);
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["password"], "s3cret-pass");
    // The user's global config applied (its logging helper ran); the project's did not.
    assert!(d.helper_log().contains("get"), "{}", d.helper_log());
    assert!(
        !marker.exists(),
        "a repository's helper ran on the host: {}",
        std::fs::read_to_string(&marker).unwrap_or_default()
    );
    // The daemon is no longer in the project.
    let cwd = std::fs::read_link(format!("/proc/{}/cwd", d.child.id())).unwrap();
    assert_eq!(cwd, d.dir.path().join("state"));

    // Through the tunnel: the container has the project mounted and writes the helper
    // into its git config itself, then asks for a credential. Nothing runs on the host.
    let n = name("repo");
    let c = Container::start(
        d.tunnel_run()
            .arg("-v")
            .arg(format!("{}:/proj", proj.display()))
            .args(["--name", &n, image, "sleep", "300"]),
    );
    d.wait_serving(&n, Duration::from_secs(15));
    let (ok, _, err) = c.exec(
        &[],
        &format!(
            "git config -f /proj/.git/config --add credential.helper '!f() {{ echo container >> {}; }}; f'",
            marker.display()
        ),
    );
    assert!(ok, "{err}");
    let (ok, out, err) = c.exec(
        &[],
        "printf 'protocol=https\\nhost=github.com\\n\\n' | git credential fill",
    );
    assert!(ok && out.contains("password=s3cret-pass"), "{out}\n{err}");
    assert!(
        !marker.exists(),
        "the container's helper ran on the host: {}",
        std::fs::read_to_string(&marker).unwrap_or_default()
    );
    drop(c);
    drop(d);

    // `hostproxy start` from a plain directory below the outer repository.
    let below = outer.join("notes");
    std::fs::create_dir_all(&below).unwrap();
    let state = scratch.path().join("state");
    let port = free_port().to_string();
    let env = host_git_env(scratch.path());
    let hp = |args: &[&str]| {
        let mut c = Command::new(bin("hostproxy"));
        c.args(args)
            .args(["--port", &port])
            .current_dir(&below)
            .env("CLAWKER_STATE_DIR", &state)
            .env("XDG_CONFIG_HOME", scratch.path().join("config"))
            .envs(env.clone());
        c
    };
    let started = hp(&["start"]).output().unwrap();
    assert!(
        started.status.success(),
        "{}",
        String::from_utf8_lossy(&started.stderr)
    );
    let token = std::fs::read_to_string(state.join("hostproxy.token")).unwrap();
    let (status, body) = Req::new("POST", format!("http://127.0.0.1:{port}/git/credential"))
        .token(Some(token.trim()))
        .json(Some(serde_json::json!({
            "action": "get", "protocol": "https", "host": "github.com"
        })))
        .send();
    let stopped = hp(&["stop", "--wait", "10"]).output().unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(stopped.status.success());
    assert!(
        !marker.exists(),
        "a repository's helper ran under `start`: {}",
        std::fs::read_to_string(&marker).unwrap_or_default()
    );
}

#[allow(dead_code)]
fn wait_until(within: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    f()
}

#[allow(dead_code)]
const _: &str = TUNNEL;
