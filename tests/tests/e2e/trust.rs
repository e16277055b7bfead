//! The trust boundary (SPEC.md 11): each attack of `shared/reviews/2026-12-trust-review.md`
//! made for real against the real binaries, and what shows that nothing happened on the
//! host (a marker file absent, a log empty, a mode unchanged, no attachment made).

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use e2e::*;

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

/// `docker commit` of a fresh container of `base` with `changes` (`LABEL k=v`, …) as a new
/// image: how an image author ships labels, with no registry and no build context.
fn image_with(base: &str, tag: &str, changes: &[&str]) -> String {
    let id = Container::start(Command::new("docker").args(["create", base, "true"]));
    let mut c = Command::new("docker");
    c.arg("commit");
    for ch in changes {
        c.args(["--change", ch]);
    }
    let out = c.args([&id.0, tag]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    tag.to_string()
}

fn remove_image(tag: &str) {
    let _ = Command::new("docker").args(["rmi", "-f", tag]).output();
}

/// A unix socket on the host that nobody should ever reach: the test checks no one did.
struct Untouched {
    listener: std::os::unix::net::UnixListener,
    path: std::path::PathBuf,
}

impl Untouched {
    fn new(dir: &Path) -> Self {
        let path = dir.join("fake.sock");
        let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        listener.set_nonblocking(true).unwrap();
        Self { listener, path }
    }

    fn assert_untouched(&self) {
        match self.listener.accept() {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            other => panic!("the host socket was connected to: {other:?}"),
        }
    }
}

/// Finding 2 (high): labels an image carries decide nothing. An image labelled to be
/// attached is not attached by itself; its scopes and sockets labels are ignored when the
/// user attaches it; a scopes label given at `docker run` narrows what the host grants and
/// never widens it, and a socket asked for by label needs the host's grant too.
#[test]
fn images_choose_nothing_and_labels_only_narrow() {
    require_docker();
    let dir = tempfile::tempdir().unwrap();
    let fake = Untouched::new(dir.path());
    let d = DaemonProc::start(DaemonOpts {
        args: config_args(
            dir.path(),
            &format!(
                "[[bridge.sockets]]\nname = \"fake\"\npath = \"{}\"\n",
                fake.path.display()
            ),
        ),
        ..DaemonOpts::default()
    });
    let tag = format!("hostproxy-e2e-evil:{}", d.port);
    let evil = image_with(
        busybox_image(),
        &tag,
        &[
            &format!("LABEL {}", d.attach_label),
            "LABEL dev.clawker.hostproxy.scopes=open,callback,git:*,ssh,notify,docker:*,socket:fake",
            "LABEL dev.clawker.hostproxy.sockets=fake",
        ],
    );
    // Started with no label of its own: never attached, nothing copied in. (The user
    // labelling such a container with the same value cannot be told from the image's
    // label: `hostproxy attach --container` is the way to attach it.)
    let n1 = name("img");
    let c1 = Container::plain(&n1, &evil, &[]);
    assert!(
        wait_until(Duration::from_secs(15), || d.log_text().contains(&format!(
            "the attach label of {n1} comes from its image"
        ))),
        "{}",
        d.log_text()
    );
    let n2 = name("user");
    let c2 = Container::plain(&n2, &evil, &["-v", "/usr:/usr:ro"]);
    d.cli_ok(&["attach", "--container", &n2]);
    let entry = d.wait_serving(&n2, Duration::from_secs(15));
    // The image's scopes label is ignored: the host's defaults, no docker, no socket.
    assert_eq!(
        entry["scopes"],
        serde_json::json!(["open", "callback", "git:*", "ssh"]),
        "{entry}"
    );
    assert!(
        !d.attachments().iter().any(|a| a["name"] == n1),
        "an image attached itself: {:?}",
        d.attachments()
    );
    let (copied, _, _) = c1.exec(&[], "test -e /tmp/.hostproxy");
    assert!(
        !copied,
        "tools were copied into a container the user never labelled"
    );
    // The user's container has no declared socket, and its docker request is refused.
    let (has_socket, _, _) = c2.exec(&[], "test -e /tmp/.hostproxy/sockets/fake.sock");
    assert!(!has_socket);
    let (ok, _, err) = c2.exec(
        &[],
        &format!("wget -q -O - --header 'Content-Type: application/json' --post-data '{{\"action\":\"get\",\"server_url\":\"ghcr.io\"}}' {TUNNEL}/docker/credential"),
    );
    assert!(!ok && err.contains("403"), "{err}");

    // A scopes label given at `docker run` narrows: asking for more than the host grants
    // leaves the rest out, and says so in `attach --list`.
    let n3 = name("narrow");
    let _c3 = Container::start(
        d.tunnel_run()
            .args([
                "--label",
                "dev.clawker.hostproxy.scopes=open,docker:*,notify",
            ])
            .args(["--name", &n3, busybox_image(), "sleep", "300"]),
    );
    let entry = d.wait_serving(&n3, Duration::from_secs(15));
    assert_eq!(entry["scopes"], serde_json::json!(["open"]), "{entry}");
    let notes = entry["notes"].to_string();
    assert!(
        notes.contains("docker:*") && notes.contains("notify"),
        "{entry}"
    );

    // A socket asked for by a run-time label, with the scope in the same label, is not
    // granted: the host's scopes do not name it. The attach is refused, saying why.
    let n4 = name("sock");
    let _c4 = Container::start(
        d.tunnel_run()
            .args(["--label", "dev.clawker.hostproxy.scopes=open,socket:fake"])
            .args(["--label", "dev.clawker.hostproxy.sockets=fake"])
            .args(["--name", &n4, busybox_image(), "sleep", "300"]),
    );
    assert!(
        wait_until(Duration::from_secs(15), || d
            .log_text()
            .contains("may not use the socket \"fake\"")),
        "{}",
        d.log_text()
    );
    // Listed as failed with the reason (F6 of the newcomer review), never serving.
    assert!(
        d.attachments()
            .iter()
            .filter(|a| a["name"] == n4.as_str())
            .all(|a| a["state"] == "failed"
                && a["notes"].to_string().contains("may not use the socket")),
        "{:?}",
        d.attachments()
    );
    fake.assert_untouched();
    drop((c1, c2));
    remove_image(&tag);
}

/// Finding 3 (high): a container in the host's network namespace is not given the
/// tokenless listener, which would be on the host's loopback for every local user: the
/// attach is refused naming `attach.allow_shared_network`, and with it the container gets
/// its unix sockets only, while another local user finds nothing listening.
#[test]
fn a_shared_network_namespace_never_gets_the_tokenless_listener() {
    require_docker();
    let agent = Agent::start();
    agent.add_key("k");
    let image = busybox_image();
    let listen_port = free_port();
    let d = DaemonProc::start(DaemonOpts {
        agent: Some(agent.socket.clone()),
        ..DaemonOpts::default()
    });
    let run_host = |d: &DaemonProc, n: &str| {
        Container::start(
            d.tunnel_run_on("host")
                .args([
                    "-e",
                    &format!("CLAWKER_HOST_PROXY=http://127.0.0.1:{listen_port}"),
                ])
                .args(["--name", n, image, "sleep", "300"]),
        )
    };
    let n = name("hostnet");
    let _c = run_host(&d, &n);
    assert!(
        wait_until(Duration::from_secs(15), || d
            .log_text()
            .contains("attach.allow_shared_network")),
        "{}",
        d.log_text()
    );
    d.cli_refused(
        &["attach", "--container", &n],
        "attach.allow_shared_network",
    );
    assert!(
        d.attachments()
            .iter()
            .filter(|a| a["name"] == n.as_str())
            .all(|a| a["state"] == "failed"
                && a["notes"].to_string().contains("allow_shared_network")),
        "{:?}",
        d.attachments()
    );
    assert!(std::net::TcpStream::connect(("127.0.0.1", listen_port)).is_err());
    drop(d);

    // Allowed by the user: attached with its unix sockets, no listener on the host.
    let dir = tempfile::tempdir().unwrap();
    let d = DaemonProc::start(DaemonOpts {
        agent: Some(agent.socket.clone()),
        args: config_args(dir.path(), "[attach]\nallow_shared_network = true\n"),
        ..DaemonOpts::default()
    });
    let n = name("hostnet-ok");
    let c = run_host(&d, &n);
    let entry = d.wait_serving(&n, Duration::from_secs(15));
    assert!(
        entry["notes"].to_string().contains("no HTTP listener"),
        "{entry}"
    );
    let (ok, keys, err) = c.exec(&[], "ssh-add -l");
    assert!(ok && keys.contains("ED25519"), "{keys}{err}");
    // Nobody on the host (another local user, the user) finds a tokenless API there.
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", listen_port)).is_err(),
        "something listens on the host's loopback for the container"
    );
}

/// (owner uid, mode, mtime) of `path`.
fn stat(path: &Path) -> (u32, u32, i64) {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).unwrap();
    (m.uid(), m.mode() & 0o7777, m.mtime())
}

/// Findings 4 and 5 (medium): copying the tools touches nothing of `/tmp` but
/// `.hostproxy` (a host directory mounted there keeps its owner, mode and times), and a
/// `clawker-socket-server` planted in `/tmp/.hostproxy/bin` by a user who is not root is
/// replaced, never run as the container's root.
#[test]
fn the_tools_upload_touches_nothing_else_and_runs_nothing_planted() {
    require_docker();
    let d = DaemonProc::start(DaemonOpts::default());
    let host_tmp = tempfile::tempdir().unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(host_tmp.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    std::os::unix::fs::chown(host_tmp.path(), Some(1234), Some(1234)).unwrap();
    let before = stat(host_tmp.path());
    let n = name("mounted-tmp");
    let c = Container::start(
        d.tunnel_run()
            .arg("-v")
            .arg(format!("{}:/tmp", host_tmp.path().display()))
            .args(["--name", &n, busybox_image(), "sleep", "300"]),
    );
    d.wait_serving(&n, Duration::from_secs(15));
    let after = stat(host_tmp.path());
    assert_eq!(
        (after.0, after.1),
        (before.0, before.1),
        "/tmp's owner or mode changed"
    );
    assert!(
        after.2 >= before.2,
        "/tmp's mtime was reset: {before:?} -> {after:?}"
    );
    let bin = host_tmp.path().join(".hostproxy/bin");
    assert_eq!(stat(&bin).0, 0);
    assert_eq!(stat(&bin).1, 0o755);
    assert_eq!(stat(&bin.join("clawker-socket-server")).1, 0o555);
    drop(c);

    // A user who is not root plants a container end before the attach.
    let n = name("planted");
    let c = Container::plain(&n, busybox_image(), &[]);
    let plant = Command::new("docker")
        .args(["exec", "-u", "65534", &n, "sh", "-c"])
        .arg(
            "mkdir -p /tmp/.hostproxy/bin && cd /tmp/.hostproxy/bin && \
             printf '#!/bin/sh\nid > /tmp/planted_ran\n' > clawker-socket-server && \
             chmod 755 clawker-socket-server . .. && ls -ln",
        )
        .output()
        .unwrap();
    assert!(
        plant.status.success(),
        "{}",
        String::from_utf8_lossy(&plant.stderr)
    );
    d.cli_ok(&["attach", "--container", &n, "--allow", "open"]);
    d.wait_serving(&n, Duration::from_secs(15));
    let (ran, _, _) = c.exec(&[], "test -e /tmp/planted_ran");
    assert!(!ran, "the planted program ran");
    let (_, listing, _) = c.exec(
        &[],
        "ls -lnd /tmp/.hostproxy/bin /tmp/.hostproxy/bin/clawker-socket-server",
    );
    for line in listing.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(f[2], "0", "not root's: {line}");
    }
    assert!(
        listing.starts_with("drwxr-xr-x") || listing.contains("dr-x"),
        "{listing}"
    );
    // nobody cannot write it any more.
    let replant = Command::new("docker")
        .args([
            "exec",
            "-u",
            "65534",
            &n,
            "sh",
            "-c",
            "echo x > /tmp/.hostproxy/bin/clawker-socket-server",
        ])
        .output()
        .unwrap();
    assert!(
        !replant.status.success(),
        "nobody can still write the container end"
    );
}

/// Finding 9 (low): a container end that says READY and then ends at once is restarted
/// with a growing backoff, not every half second forever, and ten ends within a minute give
/// it up, with the reason in `attach --list`.
#[test]
fn a_container_end_that_keeps_failing_after_ready_is_given_up() {
    let d = DaemonProc::start(DaemonOpts::default());
    let starts = d.dir.path().join("starts.log");
    // READY (length 5, type 5, stream 0), then exit.
    let end = format!(
        "sh -c \"echo start >> {}; printf '\\000\\000\\000\\005\\005\\000\\000\\000\\000'\"",
        starts.display()
    );
    d.cli_ok(&[
        "attach", "--via", &end, "--name", "flapper", "--allow", "open",
    ]);
    let count = || {
        std::fs::read_to_string(&starts)
            .unwrap_or_default()
            .lines()
            .count()
    };
    let failed = || {
        d.attachments()
            .into_iter()
            .find(|a| a["name"] == "flapper" && a["state"] == "failed")
    };
    // 0.2 + 0.4 + … capped at 5 s: ten ends take about 26 s, not 5.
    std::thread::sleep(Duration::from_secs(8));
    assert!(count() <= 6, "restarted {} times in 8 s", count());
    assert!(
        wait_until(Duration::from_secs(40), || failed().is_some()),
        "{:?}",
        d.attachments()
    );
    let entry = failed().unwrap();
    assert!(entry["notes"].to_string().contains("given up"), "{entry}");
    let after = count();
    assert_eq!(after, 10, "{entry}");
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(count(), after, "a given-up end was started again");
    // Detach clears it; attaching again starts afresh.
    d.cli_ok(&["detach", "flapper"]);
    assert!(!d.attachments().iter().any(|a| a["name"] == "flapper"));
}

/// Finding 13 (low): the URL policy knows names. Resolved on the host at the time of the
/// request (here through a private `/etc/hosts` of the daemon's own mount namespace), a
/// name for the metadata address, a private address or loopback is refused like the
/// literal; NAT64 and `*.localhost` too; and the launcher is never called for them.
#[test]
fn names_that_land_inside_are_refused_like_the_literals() {
    require("unshare", "util-linux");
    let dir = tempfile::tempdir().unwrap();
    let hosts = dir.path().join("hosts");
    std::fs::write(
        &hosts,
        "127.0.0.1 localhost\n169.254.169.254 metadata.hostproxy.test\n10.1.2.3 intranet.hostproxy.test\n127.0.0.1 rebind.hostproxy.test\nfd00::1 ula.hostproxy.test\n93.184.215.14 public.hostproxy.test\n",
    )
    .unwrap();
    let d = DaemonProc::start(DaemonOpts {
        wrapper: vec![
            "unshare".into(),
            "-m".into(),
            "--propagation".into(),
            "private".into(),
            "sh".into(),
            "-c".into(),
            format!(
                "mount --bind {} /etc/hosts && exec \"$0\" \"$@\"",
                hosts.display()
            ),
        ],
        ..DaemonOpts::default()
    });
    let open = |url: &str| {
        Req::new("POST", format!("{}/open/url", d.url()))
            .token(Some(&d.token))
            .json(Some(serde_json::json!({ "url": url })))
            .send()
    };
    for url in [
        "http://metadata.hostproxy.test/latest/meta-data/",
        "http://intranet.hostproxy.test/",
        "https://rebind.hostproxy.test:8443/",
        "http://ula.hostproxy.test/",
        "http://[64:ff9b::a9fe:a9fe]/",
        "http://[2002:a9fe:a9fe::1]/",
        "http://app.localhost:3000/",
    ] {
        let (status, body) = open(url);
        assert_eq!(status, 403, "{url}: {body}");
    }
    assert_eq!(
        d.launch_log(),
        "",
        "the launcher was called for a refused url"
    );
    // A public name, the literal localhost and a loopback literal still open.
    for url in [
        "https://public.hostproxy.test/login",
        "http://localhost:3000/",
        "http://127.0.0.1:8080/",
    ] {
        let (status, body) = open(url);
        assert_eq!(status, 200, "{url}: {body}");
    }
    assert_eq!(d.launch_log().matches("BEGIN").count(), 3);
}

/// `hostproxy serve --config CONFIG` that must fail at start: its stderr.
fn refused_at_start(config: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hostproxy.toml");
    std::fs::write(&path, config).unwrap();
    let out = Command::new(bin("hostproxy"))
        .args(["serve", "--port", &free_port().to_string(), "--config"])
        .arg(&path)
        .env("CLAWKER_STATE_DIR", dir.path().join("state"))
        .output()
        .unwrap();
    assert!(!out.status.success(), "the daemon started with {config}");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Findings 10 and 14 (low): a declared socket must be the user's (or root's, when the
/// config says `owner = "root"`): another user's is refused at start, and one another
/// user makes after the start is never connected to. Podman's, containerd's and BuildKit's
/// sockets are engine sockets like Docker's.
#[test]
fn declared_sockets_are_the_users_and_engine_sockets_are_refused() {
    require_docker();
    let dir = tempfile::tempdir().unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    // Another user's socket, there at start.
    let theirs = dir.path().join("theirs.sock");
    let _l = std::os::unix::net::UnixListener::bind(&theirs).unwrap();
    std::os::unix::fs::lchown(&theirs, Some(65534), Some(65534)).unwrap();
    let err = refused_at_start(&format!(
        "[[bridge.sockets]]\nname = \"theirs\"\npath = \"{}\"\n",
        theirs.display()
    ));
    assert!(
        err.contains("owned by uid 65534") && err.contains("owner = \"root\""),
        "{err}"
    );
    for engine in [
        "/run/podman/podman.sock",
        "/run/user/1000/podman/podman.sock",
        "/run/containerd/containerd.sock",
        "/run/buildkit/buildkitd.sock",
    ] {
        let err = refused_at_start(&format!(
            "[[bridge.sockets]]\nname = \"engine\"\npath = \"{engine}\"\n"
        ));
        assert!(
            err.contains("allow_engine_socket = true"),
            "{engine}: {err}"
        );
    }

    // A socket path in a shared directory, absent at start: another user makes it first.
    let shared = tempfile::tempdir().unwrap();
    std::fs::set_permissions(shared.path(), std::fs::Permissions::from_mode(0o1777)).unwrap();
    let path = shared.path().join("agent.sock");
    let d = DaemonProc::start(DaemonOpts {
        args: config_args(
            dir.path(),
            &format!(
                "[attach]\nscopes = [\"open\", \"socket:late\"]\n[[bridge.sockets]]\nname = \"late\"\npath = \"{}\"\n",
                path.display()
            ),
        ),
        ..DaemonOpts::default()
    });
    let squatter = Untouched::new(shared.path());
    std::fs::rename(&squatter.path, &path).unwrap();
    std::os::unix::fs::lchown(&path, Some(65534), Some(65534)).unwrap();
    let n = name("late");
    let c = Container::start(
        d.tunnel_run()
            .args(["--label", "dev.clawker.hostproxy.sockets=late"])
            .args(["--name", &n, busybox_image(), "sleep", "300"]),
    );
    d.wait_serving(&n, Duration::from_secs(15));
    let (ok, out, err) = c.exec(
        &[],
        "echo secret | socat -t1 - UNIX-CONNECT:/tmp/.hostproxy/sockets/late.sock",
    );
    assert!(out.is_empty(), "{ok} {out} {err}");
    squatter.assert_untouched();
    assert!(
        d.log_text().contains("owned by uid 65534"),
        "{}",
        d.log_text()
    );
}

/// `container:web` and `via:web` are two attachments, never one answered for the other;
/// `detach web` asks which, `detach via:web` ends that one only.
#[test]
fn a_container_and_a_via_of_the_same_name_are_two_attachments() {
    require_docker();
    let d = DaemonProc::start(DaemonOpts::default());
    let n = name("web");
    let _c = Container::start(
        d.tunnel_run()
            .args(["--name", &n, busybox_image(), "sleep", "300"]),
    );
    d.wait_serving(&n, Duration::from_secs(15));
    // The via end runs in another container (an image with the tools), under the same name.
    let other = name("web-via");
    let _o = Container::plain(&other, test_image(), &[]);
    let via = format!("docker exec -i {other} clawker-socket-server");
    d.cli_ok(&["attach", "--via", &via, "--name", &n, "--allow", "open"]);
    assert!(wait_until(Duration::from_secs(15), || d
        .attachments()
        .iter()
        .filter(|a| a["name"] == n.as_str() && a["state"] == "serving")
        .count()
        == 2));
    let identities: Vec<String> = d
        .attachments()
        .iter()
        .map(|a| a["identity"].as_str().unwrap().to_string())
        .collect();
    assert!(
        identities.contains(&format!("container:{n}")) && identities.contains(&format!("via:{n}"))
    );
    d.cli_refused(&["detach", &n], "detach one by its identity");
    d.cli_ok(&["detach", &format!("via:{n}")]);
    assert!(wait_until(Duration::from_secs(5), || {
        let a = d.attachments();
        a.len() == 1 && a[0]["identity"] == format!("container:{n}")
    }));
}

/// [`eventually`] for a yes/no probe.
fn wait_until(within: Duration, mut f: impl FnMut() -> bool) -> bool {
    eventually(within, || f().then_some(())).is_some()
}
