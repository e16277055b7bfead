//! The tunnel (SPEC.md 6.1, 6.2) end to end on the real engine: containers with no network
//! and none of our tools, attached by their label; the daemon's API, the SSH agent and
//! gpg-agent over the exec stream, used by real git, ssh, gpg and Chromium.

use std::process::Command;
use std::time::{Duration, Instant};

use e2e::*;

/// `wget` of the daemon's API inside the container, through the tunnel: (ok, body).
fn api(c: &Container, args: &str) -> (bool, String, String) {
    c.exec(&[], &format!("wget -q -O - {args}"))
}

const TUNNEL: &str = "http://127.0.0.1:18374";

#[test]
fn a_container_with_no_network_and_none_of_our_tools_gets_git_ssh_gpg_and_oauth_through_the_tunnel()
{
    let image = busybox_image();
    let agent = Agent::start();
    let gpg = Gpg::new();
    let dir = tempfile::tempdir().unwrap();
    // gpg is granted by the host, never by a label (SPEC.md 11).
    let d = DaemonProc::start(DaemonOpts {
        agent: Some(agent.socket.clone()),
        browser: Some(crate::browser::chromium_launcher(dir.path())),
        env: vec![("GNUPGHOME".into(), gpg.home.path().display().to_string())],
        args: config_args(
            dir.path(),
            "[attach]\nscopes = [\"open\", \"callback\", \"git:*\", \"ssh\", \"gpg\"]\n",
        ),
        ..DaemonOpts::default()
    });
    let n = name("all");
    let c = Container::start(d.tunnel_run().args(["--name", &n, image, "sleep", "300"]));
    let entry = d.wait_serving(&n, Duration::from_secs(15));
    assert_eq!(entry["identity"], format!("container:{n}"));
    assert_eq!(entry["engine"], "docker");

    // Nothing of ours was in the image: the daemon copied it in.
    let (ok, listing, _) = c.exec(&[], "ls /tmp/.hostproxy/bin");
    assert!(ok && listing.contains("clawker-socket-server") && listing.contains("host-open"));
    // No secret in the container.
    let (_, env, _) = c.exec(&[], "env");
    assert!(!env.contains("TOKEN") && !env.contains(&d.token), "{env}");
    // And no network but its loopback.
    let (_, ifaces, _) = c.exec(&[], "ls /sys/class/net");
    assert_eq!(ifaces.split_whitespace().collect::<Vec<_>>(), ["lo"]);

    // git, through the helper run-flags configured, gets the host's credential.
    let (ok, out, err) = c.exec(
        &[],
        "printf 'protocol=https\\nhost=github.com\\n\\n' | git credential fill",
    );
    assert!(
        ok && out.contains("password=s3cret-pass"),
        "{out}\n{err}\n{}",
        d.log_text()
    );
    assert!(d.helper_log().contains("get"));

    // ssh-add -l and ssh-keygen -Y sign with the host agent's key, verified on the host.
    let (ok, out, err) = c.exec(&[], "ssh-add -l");
    assert!(ok && out.contains("test@hostproxy"), "{out}{err}");
    let (ok, sig, err) = c.exec(
        &[],
        &format!(
            "echo '{}' > /tmp/k.pub && echo 'signed through the tunnel' > /tmp/msg && ssh-keygen -Y sign -n git -f /tmp/k.pub /tmp/msg >/dev/null 2>&1 && cat /tmp/msg.sig",
            agent.pubkey.trim()
        ),
    );
    assert!(ok, "{err}");
    agent
        .verify_git_signature("signed through the tunnel\n", &sig)
        .unwrap();

    // gpg --sign with the host's key (run-flags --gpg: GNUPGHOME and the gpg scope).
    let (ok, signed, err) = c.exec(
        &[],
        "echo 'gpg through the tunnel' | gpg --batch --no-tty --local-user bridge@example.com --armor --sign",
    );
    assert!(
        ok && signed.contains("BEGIN PGP MESSAGE"),
        "{signed}\n{err}"
    );
    let (ok, plain, err) = gpg.verify(&signed);
    assert!(ok && err.contains("Good signature"), "{err}");
    assert_eq!(plain, "gpg through the tunnel\n");

    // A full OAuth round trip: host Chromium follows the provider's redirect to the
    // daemon's listener; the capture comes back over the tunnel to the container's server.
    let auth_port = authorization_server("tunnel-code");
    let cb_port = free_port();
    let login = format!(
        "http://127.0.0.1:{auth_port}/authorize?client_id=cli&response_type=code&redirect_uri=http%3A%2F%2Flocalhost%3A{cb_port}%2Fcgi-bin%2Fcallback&state=st-tunnel"
    );
    let (ok, out, err) = c.exec(&[], &login_script(cb_port, &login));
    assert!(
        ok && out.trim() == "GET code=tunnel-code&state=st-tunnel",
        "{out}\n{err}\n{}",
        d.log_text()
    );

    // Every decision names the container's identity.
    let audit = std::fs::read_to_string(d.dir.path().join("state/logs/audit.jsonl")).unwrap();
    let ident = format!("container:{n}");
    for route in [
        "/git/credential",
        "/callback/register",
        "/open/url",
        "bridge:ssh-agent",
    ] {
        assert!(
            audit
                .lines()
                .any(|l| l.contains(route) && l.contains(&ident)),
            "no {route} line for {ident}: {audit}"
        );
    }

    // The container stops: its identity ends and it is no longer listed.
    drop(c);
    let gone = eventually(Duration::from_secs(10), || {
        (!d.attachments().iter().any(|a| a["name"] == n)).then_some(())
    });
    assert!(gone.is_some(), "still attached after the container stopped");
}

#[test]
fn a_killed_container_end_is_attached_again_within_two_seconds() {
    let d = DaemonProc::start(DaemonOpts::default());
    let n = name("kill");
    let c = Container::start(
        d.tunnel_run()
            .args(["--name", &n, busybox_image(), "sleep", "300"]),
    );
    d.wait_serving(&n, Duration::from_secs(15));
    let started = Instant::now();
    let (ok, out, err) = c.exec(
        &[],
        &format!(
            "kill $(pidof clawker-socket-server) && i=0; until wget -q -O /dev/null {TUNNEL}/health 2>/dev/null; do usleep 20000; i=$((i+1)); [ $i -lt 500 ] || exit 1; done; echo back"
        ),
    );
    let took = started.elapsed();
    assert!(ok && out.trim() == "back", "{out}{err}\n{}", d.log_text());
    assert!(
        took < Duration::from_secs(2),
        "serving again after {took:?}"
    );
    let entry = d.wait_serving(&n, Duration::from_secs(2));
    assert_eq!(entry["restarts"], 1);
}

#[test]
fn the_tunnel_ignores_tokens_keeps_identities_apart_and_attaches_only_what_it_should() {
    let image = busybox_image();
    let d = DaemonProc::start(DaemonOpts::default());
    let (a, b) = (name("a"), name("b"));
    // `a` may only use callbacks: its label narrows the scopes.
    let ca = Container::start(
        d.tunnel_run()
            .args(["--label", "dev.clawker.hostproxy.scopes=callback"])
            .args(["--name", &a, image, "sleep", "300"]),
    );
    let cb = Container::start(d.tunnel_run().args(["--name", &b, image, "sleep", "300"]));
    // Not labelled: never attached.
    let plain = name("plain");
    let cp = Container::plain(&plain, image, &[]);
    d.wait_serving(&a, Duration::from_secs(15));
    d.wait_serving(&b, Duration::from_secs(15));
    assert_eq!(
        d.wait_serving(&a, Duration::ZERO)["scopes"],
        serde_json::json!(["callback"])
    );

    // The user's own token sent on a's tunnel stream changes nothing: git is out of its
    // scopes, and git is not run.
    let (ok, out, err) = api(
        &ca,
        &format!(
            "--header 'Authorization: Bearer {}' --header 'Content-Type: application/json' --post-data '{{\"action\":\"get\",\"protocol\":\"https\",\"host\":\"github.com\"}}' {TUNNEL}/git/credential",
            d.token
        ),
    );
    assert!(!ok && err.contains("403"), "{out}{err}");
    assert!(
        !d.helper_log().contains("get"),
        "git ran: {}",
        d.helper_log()
    );

    // a registers a callback; b cannot see it (the unknown-id answer), a can.
    let port = free_port();
    let (ok, reg, err) = api(
        &ca,
        &format!(
            "--header 'Content-Type: application/json' --post-data '{{\"port\":{port},\"path\":\"/cb\",\"state\":\"s1\"}}' {TUNNEL}/callback/register"
        ),
    );
    assert!(ok, "{err}\n{}", d.log_text());
    let session = serde_json::from_str::<serde_json::Value>(&reg).unwrap()["session_id"]
        .as_str()
        .unwrap()
        .to_string();
    let (ok, _, err) = api(&cb, &format!("{TUNNEL}/callback/{session}/data"));
    assert!(!ok && err.contains("404"), "{err}");
    let (ok, out, _) = api(&ca, &format!("{TUNNEL}/callback/{session}/data"));
    assert!(ok && out.contains("\"received\":false"), "{out}");
    // A Host other than the container's own listener is refused.
    let (ok, _, err) = api(
        &cb,
        &format!("--header 'Host: evil.example:18374' {TUNNEL}/health"),
    );
    assert!(!ok && err.contains("403"), "{err}");

    // No verb of the control socket is reachable over TCP, with the token or without.
    for path in ["/attach", "/control/attach", "/detach"] {
        let (status, _) = Req::new("POST", format!("{}{path}", d.url()))
            .token(Some(&d.token))
            .json(Some(serde_json::json!({"container": plain})))
            .send();
        assert_eq!(status, 404, "{path}");
    }
    // The control socket is the user's alone (0600), so another local user gets nothing.
    let sock = d.dir.path().join("state/hostproxy.sock");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&sock).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let other = d
        .hostproxy(&["attach", "--container", &plain])
        .as_nobody()
        .output()
        .unwrap();
    assert!(!other.status.success());
    // Nothing attached the plain container, and nothing was copied into it.
    std::thread::sleep(Duration::from_millis(500));
    assert!(!d.attachments().iter().any(|x| x["name"] == plain));
    let (ok, _, _) = cp.exec(&[], "test -e /tmp/.hostproxy");
    assert!(
        !ok,
        "something was copied into a container that is not labelled"
    );

    // a stops: its session goes with its identity.
    drop(ca);
    let ended = eventually(Duration::from_secs(10), || {
        let (status, _) = Req::new("GET", format!("{}/callback/{session}/data", d.url()))
            .token(Some(&d.token))
            .send();
        (status == 404).then_some(())
    });
    assert!(ended.is_some(), "a's session outlived it");
    // Its listener closes with it (the accept loop stops at once; let it get there).
    let closed = eventually(Duration::from_secs(2), || {
        std::net::TcpListener::bind(("127.0.0.1", port)).ok()
    });
    assert!(closed.is_some(), "a's callback listener is still bound");
}

/// The daemon on a remote engine did not attach `name` by its label (SPEC.md 11), said so,
/// and attaches it when the user asks.
fn attach_by_name_only(d: &DaemonProc, name: &str) {
    let said = eventually(Duration::from_secs(10), || {
        d.log_text()
            .contains("not attaching labelled containers by themselves")
            .then_some(())
    });
    assert!(said.is_some(), "{}", d.log_text());
    std::thread::sleep(Duration::from_millis(300));
    assert!(!d.attachments().iter().any(|a| a["name"] == name));
    d.cli_ok(&["attach", "--container", name]);
}

/// Runs a command as `nobody` (uid 65534) through `setpriv`.
trait AsNobody {
    fn as_nobody(&mut self) -> &mut Command;
}

impl AsNobody for Command {
    fn as_nobody(&mut self) -> &mut Command {
        use std::os::unix::process::CommandExt;
        self.uid(65534).gid(65534)
    }
}

#[test]
fn via_a_command_and_through_a_tcp_engine_address() {
    require("socat", "socat");
    let image = test_image();
    // The engine over TCP: a relay to the local engine's socket stands in for a remote one.
    let relay_port = free_port();
    let mut relay = Command::new("socat")
        .arg(format!(
            "TCP-LISTEN:{relay_port},bind=127.0.0.1,reuseaddr,fork"
        ))
        .arg("UNIX-CONNECT:/var/run/docker.sock")
        .spawn()
        .unwrap();
    let agent = Agent::start();
    let d = DaemonProc::start(DaemonOpts {
        agent: Some(agent.socket.clone()),
        env: vec![(
            "DOCKER_HOST".into(),
            format!("tcp://127.0.0.1:{relay_port}"),
        )],
        ..DaemonOpts::default()
    });
    // Labelled, through the TCP engine, an image that has the tools.
    let t = name("tcp");
    let ct = Container::start(d.tunnel_run().args(["--name", &t, image, "sleep", "300"]));
    // A remote engine is not the user's alone: its labelled containers are not attached by
    // themselves (attach.discover = "local"); the user attaches them by name.
    attach_by_name_only(&d, &t);
    d.wait_serving(&t, Duration::from_secs(15));
    let (ok, out, err) = ct.exec(
        &[],
        "printf 'protocol=https\\nhost=github.com\\n\\n' | git -c credential.helper=clawker credential fill",
    );
    assert!(ok && out.contains("password=s3cret-pass"), "{out}{err}");
    // The container end that runs is the daemon's own copy, even in an image that has one
    // (SPEC.md 11: only what the daemon put there and checked is run).
    let (ok, _, _) = ct.exec(&[], "test -x /tmp/.hostproxy/bin/clawker-socket-server");
    assert!(ok, "the daemon's own container end was not copied in");

    // --via: the docker CLI's own exec; the container end uses its defaults.
    let v = name("via");
    let cv = Container::plain(
        &v,
        image,
        &[
            "-v",
            "/usr:/usr:ro",
            "-e",
            "CLAWKER_HOST_PROXY=http://127.0.0.1:18374",
        ],
    );
    let out = d
        .hostproxy(&[
            "attach",
            "--via",
            &format!("docker exec -i {v} clawker-socket-server"),
            "--name",
            "via-box",
            "--allow",
            "git:github.com",
            "--allow",
            "ssh",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let entry = d.wait_serving("via-box", Duration::from_secs(15));
    assert_eq!(entry["identity"], "via:via-box");
    let (ok, out, err) = cv.exec(
        &[],
        "printf 'protocol=https\\nhost=github.com\\n\\n' | git -c credential.helper=clawker credential fill",
    );
    assert!(
        ok && out.contains("password=s3cret-pass"),
        "{out}{err}\n{}",
        d.log_text()
    );
    let (ok, out, err) = cv.exec(&["SSH_AUTH_SOCK=/root/.ssh/agent.sock"], "ssh-add -l");
    assert!(ok && out.contains("test@hostproxy"), "{out}{err}");
    // Detach: the via command ends, the tunnel is gone.
    let out = d.hostproxy(&["detach", "via-box"]).output().unwrap();
    assert!(out.status.success());
    let gone = eventually(Duration::from_secs(10), || {
        (!cv.exec(&[], &format!("wget -q -O /dev/null {TUNNEL}/health"))
            .0)
            .then_some(())
    });
    assert!(gone.is_some(), "the tunnel outlived detach");
    assert!(!d.attachments().iter().any(|a| a["name"] == "via-box"));
    let _ = relay.kill();
    let _ = relay.wait();
}

#[test]
fn a_login_in_flight_survives_kill_9_of_the_daemon() {
    login_survives_a_restart(DaemonProc::kill9_and_restart);
}

/// A graceful stop (`hostproxy stop`) keeps the sessions of the attached containers for the
/// next start, as a crash does (SPEC.md 12, newcomer review): only a container's own end
/// deletes them.
#[test]
fn a_login_in_flight_survives_a_graceful_stop_of_the_daemon() {
    login_survives_a_restart(DaemonProc::stop_and_restart);
}

fn login_survives_a_restart(restart: fn(&mut DaemonProc)) {
    let mut d = DaemonProc::start(DaemonOpts::default());
    let n = name("restart");
    let c = Container::start(
        d.tunnel_run()
            .args(["--name", &n, busybox_image(), "sleep", "300"]),
    );
    d.wait_serving(&n, Duration::from_secs(15));
    // The CLI starts its login: host-open registers the callback, starts the forwarder and
    // opens the URL (the recording launcher: the user has not logged in yet).
    let cb_port = free_port();
    let login = format!(
        "http://127.0.0.1:9/authorize?response_type=code&redirect_uri=http%3A%2F%2Flocalhost%3A{cb_port}%2Fcgi-bin%2Fcallback&state=st-restart"
    );
    let script = login_script(cb_port, &login);
    let st = Command::new("docker")
        .args(["exec", "-d", &n, "sh", "-c"])
        .arg(format!("({script}) > /tmp/result 2>&1"))
        .status()
        .unwrap();
    assert!(st.success());
    let opened = eventually(Duration::from_secs(15), || {
        d.launch_log().contains("st-restart").then_some(())
    });
    assert!(
        opened.is_some(),
        "the login was never opened:\n{}",
        d.log_text()
    );

    // The daemon goes away and comes back.
    restart(&mut d);
    d.wait_serving(&n, Duration::from_secs(15));

    // The user finishes the login in the browser now: the provider redirects to the port,
    // which the new daemon listens on again for the same session.
    // (Restored before the daemon serves: the port is bound by the time it is healthy.)
    let (status, _) = Req::new(
        "GET",
        format!("http://127.0.0.1:{cb_port}/cgi-bin/callback?code=after-restart&state=st-restart"),
    )
    .header("Host", format!("localhost:{cb_port}"))
    .send();
    assert_eq!(status, 200, "{}", d.log_text());
    // And the capture reaches the CLI's server in the container.
    let done = eventually(Duration::from_secs(30), || {
        let (_, got, _) = c.exec(&[], "cat /tmp/got 2>/dev/null");
        (got.trim() == "GET code=after-restart&state=st-restart").then_some(())
    });
    if done.is_none() {
        let (_, got, _) = c.exec(&[], "cat /tmp/got 2>/dev/null");
        let (_, result, _) = c.exec(&[], "cat /tmp/result");
        panic!(
            "the login did not complete: {got:?}\n{result}\n{}",
            d.log_text()
        );
    }
}

#[test]
fn through_an_engine_reached_over_ssh() {
    // DOCKER_HOST=ssh://build-box: bollard runs the system's ssh and `docker system
    // dial-stdio` at the other end, as the docker CLI does. The other end is a throwaway
    // sshd on this machine; `ssh` on the daemon's PATH is the real one with a config for it
    // (ssh reads ~/.ssh/config from the password database, not $HOME).
    let agent = Agent::start();
    let sshd = Sshd::start(&agent.pubkey);
    let dir = tempfile::tempdir().unwrap();
    let real_ssh = require("ssh", "openssh-client");
    std::fs::write(
        dir.path().join("ssh_config"),
        format!(
            "Host build-box\n  HostName 127.0.0.1\n  Port {}\n  User root\n  StrictHostKeyChecking no\n  UserKnownHostsFile /dev/null\n  LogLevel ERROR\n",
            sshd.port
        ),
    )
    .unwrap();
    let bin = dir.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    write_script(
        &bin.join("ssh"),
        &format!(
            "exec {} -F {} \"$@\"",
            real_ssh.display(),
            dir.path().join("ssh_config").display()
        ),
    );
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let d = DaemonProc::start(DaemonOpts {
        agent: Some(agent.socket.clone()),
        env: vec![
            ("DOCKER_HOST".into(), "ssh://build-box".into()),
            ("PATH".into(), path),
        ],
        ..DaemonOpts::default()
    });
    let n = name("ssh");
    let c = Container::start(
        d.tunnel_run()
            .args(["--name", &n, busybox_image(), "sleep", "300"]),
    );
    attach_by_name_only(&d, &n);
    d.wait_serving(&n, Duration::from_secs(30));
    let (ok, out, err) = c.exec(
        &[],
        "printf 'protocol=https\\nhost=github.com\\n\\n' | git credential fill",
    );
    assert!(
        ok && out.contains("password=s3cret-pass"),
        "{out}{err}\n{}",
        d.log_text()
    );
    let (ok, out, err) = c.exec(&[], "ssh-add -l");
    assert!(ok && out.contains("test@hostproxy"), "{out}{err}");
}

#[test]
fn a_declared_host_socket_reaches_the_container_and_nothing_else_does() {
    require("socat", "socat");
    let dir = tempfile::tempdir().unwrap();
    let echo = dir.path().join("echo.sock");
    let mut server = Command::new("socat")
        .arg(format!("UNIX-LISTEN:{},fork", echo.display()))
        .arg("EXEC:cat")
        .spawn()
        .unwrap();
    let listening = eventually(Duration::from_secs(10), || echo.exists().then_some(()));
    assert!(listening.is_some(), "socat did not listen");
    let d = DaemonProc::start(DaemonOpts {
        args: config_args(
            dir.path(),
            &format!(
                "[attach]\nscopes = [\"open\", \"socket:echo\"]\n[[bridge.sockets]]\nname = \"echo\"\npath = \"{}\"\n",
                echo.display()
            ),
        ),
        ..DaemonOpts::default()
    });
    let n = name("sock");
    let c = Container::start(
        d.tunnel_run()
            .args(["--label", "dev.clawker.hostproxy.sockets=echo"])
            .args(["--label", "dev.clawker.hostproxy.scopes=open,socket:echo"])
            .args(["--name", &n, busybox_image(), "sleep", "300"]),
    );
    d.wait_serving(&n, Duration::from_secs(15));
    // Bytes both ways, through the tunnel, to the host's socket; the client shuts its
    // write side after its line, and the echo still comes back (half-close, SPEC.md 6.3).
    let (ok, out, err) = c.exec(
        &[],
        "echo 'through the tunnel' | socat -t 30 - UNIX-CONNECT:/tmp/.hostproxy/sockets/echo.sock",
    );
    assert!(
        ok && out.trim() == "through the tunnel",
        "{out}{err}\n{}",
        d.log_text()
    );

    // A name the config does not declare: the attach is refused, saying why.
    let other = name("nosock");
    let _o = Container::plain(&other, busybox_image(), &[]);
    let out = d
        .hostproxy(&[
            "attach",
            "--container",
            &other,
            "--allow",
            "socket:nope",
            "--socket",
            "nope",
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("no socket \"nope\" is declared"),
        "{err}"
    );
    assert!(!d.attachments().iter().any(|a| a["name"] == other));
    // Declared, but not in the container's scopes: refused too.
    let out = d
        .hostproxy(&[
            "attach",
            "--container",
            &other,
            "--allow",
            "open",
            "--socket",
            "echo",
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("scope socket:echo"),
        "{err}"
    );
    // Through --via with --socket: the declared socket comes on top of the container end's
    // own sockets, the tunnel's HTTP listener among them.
    let v = name("via-sock");
    let cv = Container::plain(&v, test_image(), &["-v", "/usr:/usr:ro"]);
    d.cli_ok(&[
        "attach",
        "--via",
        &format!("docker exec -i -e CLAWKER_REMOTE_SOCKETS {v} clawker-socket-server"),
        "--name",
        &v,
        "--allow",
        "open",
        "--allow",
        "socket:echo",
        "--socket",
        "echo",
    ]);
    d.wait_serving(&v, Duration::from_secs(15));
    let (ok, out, err) = cv.exec(
        &[],
        "echo 'via the tunnel' | socat -t 30 - UNIX-CONNECT:/tmp/.hostproxy/sockets/echo.sock",
    );
    assert!(ok && out.trim() == "via the tunnel", "{out}{err}");
    let (ok, out, err) = cv.exec(&[], "wget -q -O - http://127.0.0.1:18374/health");
    assert!(ok && out.contains("clawker-host-proxy"), "{out}{err}");
    let _ = server.kill();
    let _ = server.wait();
}

#[test]
fn the_docker_socket_is_not_declared_without_allow_docker() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("hostproxy.toml");
    std::fs::write(
        &config,
        "[[bridge.sockets]]\nname = \"engine\"\npath = \"/var/run/docker.sock\"\n",
    )
    .unwrap();
    let out = Command::new(bin("hostproxy"))
        .args(["serve", "--port", &free_port().to_string(), "--config"])
        .arg(&config)
        .env("CLAWKER_STATE_DIR", dir.path().join("state"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "the daemon started with the docker socket declared"
    );
    assert!(
        err.contains("container engine's socket") && err.contains("allow_docker_socket = true"),
        "{err}"
    );
}
