//! Asking the user (SPEC.md 14) end to end: tunnel containers on the real engine whose uses
//! wait for an answer given by a scripted `--approver`, by `hostproxy approve|deny`, by
//! silence, and by a person at `hostproxy approvals` in a real terminal (tmux). Each refusal
//! shows that nothing happened: the host's git credential helper did not run, the host's ssh
//! agent was not connected to.

use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use e2e::*;

const FILL: &str = "printf 'protocol=https\\nhost=github.com\\n\\n' | git credential fill";

/// A daemon with `[approval]` as given, attaching `git:*` and `ssh`.
fn daemon(dir: &Path, approval: &str, extra: &[&str], agent: Option<PathBuf>) -> DaemonProc {
    let mut args = config_args(
        dir,
        &format!(
            "[attach]\nscopes = [\"git:*\", \"ssh\"]\n\n[approval]\ndesktop = false\n{approval}\n"
        ),
    );
    args.extend(extra.iter().map(|s| s.to_string()));
    DaemonProc::start(DaemonOpts {
        args,
        agent,
        ..DaemonOpts::default()
    })
}

/// A tunnel container of `d`, attached and serving.
fn container(d: &DaemonProc, tag: &str, extra: &[&str]) -> (Container, String) {
    let n = name(tag);
    let c = Container::start(d.tunnel_run().args(extra).args([
        "--name",
        &n,
        busybox_image(),
        "sleep",
        "300",
    ]));
    d.wait_serving(&n, Duration::from_secs(15));
    (c, n)
}

/// `sh -c SCRIPT` in the container on a thread of its own (it may wait for an answer).
fn exec_later(c: &Container, script: &str) -> std::thread::JoinHandle<Output> {
    let mut cmd = Command::new("docker");
    cmd.args(["exec", &c.0, "sh", "-c", script]);
    std::thread::spawn(move || cmd.output().unwrap())
}

/// The asks waiting now (`hostproxy approvals --list --json`).
fn pending(d: &DaemonProc) -> Vec<serde_json::Value> {
    let out = d
        .hostproxy(&["approvals", "--list", "--json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "approvals --list: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Waits for the one ask of `identity` to be listed.
fn wait_ask(d: &DaemonProc, identity: &str) -> serde_json::Value {
    eventually(Duration::from_secs(20), || {
        pending(d).into_iter().find(|a| a["identity"] == identity)
    })
    .unwrap_or_else(|| panic!("no ask of {identity} came:\n{}", d.log_text()))
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn audit(d: &DaemonProc) -> Vec<serde_json::Value> {
    std::fs::read_to_string(d.dir.path().join("state/logs/audit.jsonl"))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .filter(|r: &serde_json::Value| r["route"] == "approval")
        .collect()
}

#[test]
fn a_scripted_approver_decides_and_the_host_helper_runs_only_after_an_allow() {
    let dir = tempfile::tempdir().unwrap();
    let decision = dir.path().join("decision");
    let asks = dir.path().join("asks.log");
    let approver = dir.path().join("approver");
    write_script(
        &approver,
        &format!(
            "echo \"$HOSTPROXY_ASK_ID $HOSTPROXY_ASK_IDENTITY $HOSTPROXY_ASK_SCOPE $HOSTPROXY_ASK_WHAT\" >> {asks}\nhead -c 4096 > {asks}.json\nexit $(cat {decision})",
            asks = asks.display(),
            decision = decision.display()
        ),
    );
    let d = daemon(
        dir.path(),
        "ask = [\"git:*\"]\nremember = \"once\"\ntimeout = \"20s\"",
        &["--approver", &approver.display().to_string()],
        None,
    );
    let (c, n) = container(&d, "apr", &[]);

    // The approver says no: the container reads why, and the host's helper never ran.
    std::fs::write(&decision, "1").unwrap();
    let (_, out, err) = c.exec(&[], FILL);
    assert!(!out.contains("s3cret-pass"), "{out}");
    assert!(err.contains("denied on the host"), "{err}");
    assert!(d.helper_log().is_empty(), "{}", d.helper_log());
    let log = std::fs::read_to_string(&asks).unwrap();
    assert!(
        log.contains(&format!("container:{n} git:github.com git credential get")),
        "{log}"
    );
    // The ask as JSON on the approver's stdin.
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(format!("{}.json", asks.display())).unwrap())
            .unwrap();
    assert_eq!(json["target"], "github.com");

    // It says yes: the credential arrives; `once` asks again next time.
    std::fs::write(&decision, "0").unwrap();
    for _ in 0..2 {
        let (ok, out, err) = c.exec(&[], FILL);
        assert!(ok && out.contains("password=s3cret-pass"), "{out}{err}");
    }
    assert_eq!(std::fs::read_to_string(&asks).unwrap().lines().count(), 3);
    assert_eq!(d.helper_log().matches("get").count(), 2);

    let records = audit(&d);
    let kinds: Vec<(String, String)> = records
        .iter()
        .map(|r| {
            (
                r["action"].as_str().unwrap().into(),
                r["reason"].as_str().unwrap_or("").into(),
            )
        })
        .collect();
    assert!(
        kinds
            .iter()
            .any(|(a, r)| a == "deny" && r.contains("answered by approver")),
        "{kinds:?}"
    );
    // (Two allows of the same second fold into one line with a count: SECURITY.md.)
    assert!(
        kinds
            .iter()
            .any(|(a, r)| a == "allow" && r.contains("answered by approver")),
        "{kinds:?}"
    );
    assert!(
        records
            .iter()
            .all(|r| r["token"] == format!("container:{n}"))
    );
}

#[test]
fn approve_and_deny_answer_by_id_and_remember_container_asks_once_per_container() {
    let dir = tempfile::tempdir().unwrap();
    let d = daemon(
        dir.path(),
        "ask = [\"git-push:*\"]\nremember = \"container\"\ntimeout = \"30s\"",
        &[],
        None,
    );
    let (a, na) = container(&d, "apa", &[]);
    let id_a = format!("container:{na}");

    // `git-push:*` asks for a credential get too (it may be for a push). Denied by id:
    // nothing ran on the host.
    let waiting = exec_later(&a, FILL);
    let ask = wait_ask(&d, &id_a);
    assert_eq!(ask["scope"], "git:github.com");
    assert_eq!(ask["what"], "git credential get");
    assert!(ask["why"].as_str().unwrap().contains("git-push:*"), "{ask}");
    assert!(d.helper_log().is_empty());
    d.cli_ok(&["deny", ask["id"].as_str().unwrap()]);
    let out = waiting.join().unwrap();
    assert!(!text(&out).contains("s3cret-pass"));
    assert!(text(&out).contains("denied on the host"), "{}", text(&out));
    assert!(d.helper_log().is_empty(), "{}", d.helper_log());
    // An answered ask is gone: answering it again says so, and runs nothing.
    d.cli_refused(&["approve", ask["id"].as_str().unwrap()], "no ask");

    // Allowed by id: the credential arrives, and this container is not asked again.
    let waiting = exec_later(&a, FILL);
    let ask = wait_ask(&d, &id_a);
    d.cli_ok(&["approve", ask["id"].as_str().unwrap()]);
    let out = waiting.join().unwrap();
    assert!(
        out.status.success() && text(&out).contains("password=s3cret-pass"),
        "{}",
        text(&out)
    );
    let (ok, out, _) = a.exec(&[], FILL);
    assert!(ok && out.contains("password=s3cret-pass"));
    assert!(pending(&d).is_empty());

    // Another container is asked again: an allow is never shared.
    let (b, nb) = container(&d, "apb", &[]);
    let waiting = exec_later(&b, FILL);
    let ask = wait_ask(&d, &format!("container:{nb}"));
    d.cli_ok(&["approve", ask["id"].as_str().unwrap()]);
    assert!(text(&waiting.join().unwrap()).contains("password=s3cret-pass"));
    assert_eq!(d.helper_log().matches("get").count(), 3);

    // A container that stops takes its allow with it: started again, it is asked again.
    drop(a);
    let (a2, na2) = container(&d, "apa", &[]);
    let waiting = exec_later(&a2, FILL);
    let ask = wait_ask(&d, &format!("container:{na2}"));
    d.cli_ok(&["deny", ask["id"].as_str().unwrap()]);
    assert!(text(&waiting.join().unwrap()).contains("denied on the host"));
    let by: Vec<_> = audit(&d)
        .into_iter()
        .filter(|r| r["action"] == "allow" || r["action"] == "deny")
        .map(|r| r["reason"].as_str().unwrap().to_string())
        .collect();
    assert!(
        by.iter().all(|r| r.contains("answered by command")),
        "{by:?}"
    );
}

/// A unix socket in front of the host's ssh-agent that counts the connections made to it.
fn counting_agent(real: PathBuf, at: PathBuf) -> Arc<AtomicUsize> {
    let count = Arc::new(AtomicUsize::new(0));
    let listener = UnixListener::bind(&at).unwrap();
    let counted = count.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut client) = conn else { return };
            counted.fetch_add(1, Ordering::SeqCst);
            let Ok(mut agent) = UnixStream::connect(&real) else {
                continue;
            };
            let (mut c2, mut a2) = (client.try_clone().unwrap(), agent.try_clone().unwrap());
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut c2, &mut a2);
                let _ = a2.shutdown(std::net::Shutdown::Write);
            });
            std::thread::spawn(move || {
                let mut buf = [0u8; 16384];
                while let Ok(n) = agent.read(&mut buf) {
                    if n == 0 || client.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
                let _ = client.shutdown(std::net::Shutdown::Write);
            });
        }
    });
    count
}

#[test]
fn silence_is_a_denial_a_label_cannot_remove_an_ask_and_the_agent_waits_for_the_allow() {
    let dir = tempfile::tempdir().unwrap();
    let agent = Agent::start();
    let counted = dir.path().join("agent.sock");
    let connections = counting_agent(agent.socket.clone(), counted.clone());
    let d = daemon(
        dir.path(),
        "ask = [\"git:*\", \"ssh\"]\nremember = \"once\"\ntimeout = \"2s\"",
        &[],
        Some(counted),
    );
    // The container's ask label says nothing should be asked: it only ever adds.
    let (c, n) = container(
        &d,
        "aps",
        &[
            "--label",
            "dev.clawker.hostproxy.ask=",
            "--label",
            "dev.clawker.hostproxy.scopes=git:*,ssh",
        ],
    );
    let id = format!("container:{n}");

    // No answer: a denial that says so, audited; nothing ran.
    let started = Instant::now();
    let (_, out, err) = c.exec(&[], FILL);
    assert!(started.elapsed() >= Duration::from_secs(2));
    assert!(!out.contains("s3cret-pass"));
    assert!(err.contains("no answer on the host within 2s"), "{err}");
    assert!(d.helper_log().is_empty());
    assert!(
        audit(&d)
            .iter()
            .any(|r| r["action"] == "timeout" && r["token"] == id)
    );

    // ssh: the agent stream waits; the host agent is not connected to before the allow.
    let before = connections.load(Ordering::SeqCst);
    let waiting = exec_later(&c, "ssh-add -l");
    let ask = wait_ask(&d, &id);
    assert_eq!(ask["scope"], "ssh");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        connections.load(Ordering::SeqCst),
        before,
        "the agent was contacted before the allow"
    );
    d.cli_ok(&["approve", ask["id"].as_str().unwrap()]);
    let out = waiting.join().unwrap();
    assert!(
        out.status.success() && text(&out).contains("test@hostproxy"),
        "{}",
        text(&out)
    );
    assert!(connections.load(Ordering::SeqCst) > before);

    // And silence on an agent stream: the client's stream ends, the agent untouched.
    let before = connections.load(Ordering::SeqCst);
    let (ok, out, err) = c.exec(&[], "ssh-add -l");
    assert!(!ok && !out.contains("test@hostproxy"), "{out}{err}");
    assert_eq!(connections.load(Ordering::SeqCst), before);
}

/// tmux on a private socket, killed on drop.
struct Tmux {
    socket: PathBuf,
}

impl Tmux {
    fn cmd(&self) -> Command {
        let mut c = Command::new(require("tmux", "tmux"));
        c.arg("-S").arg(&self.socket);
        c
    }

    fn screen(&self) -> String {
        let out = self
            .cmd()
            .args(["capture-pane", "-p", "-t", "view"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn wait_for(&self, what: &str) -> String {
        eventually(Duration::from_secs(20), || {
            let s = self.screen();
            s.contains(what).then_some(s)
        })
        .unwrap_or_else(|| panic!("{what:?} never showed:\n{}", self.screen()))
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.cmd().arg("kill-server").output();
    }
}

#[test]
fn a_person_at_the_approvals_view_in_a_real_terminal_allows_a_pending_ask() {
    let dir = tempfile::tempdir().unwrap();
    let d = daemon(
        dir.path(),
        "ask = [\"git:*\"]\nremember = \"once\"\ntimeout = \"60s\"",
        &[],
        None,
    );
    let (c, n) = container(&d, "apt", &[]);
    let tmux = Tmux {
        socket: dir.path().join("tmux.sock"),
    };
    let view = format!(
        "CLAWKER_STATE_DIR={} {} approvals",
        d.dir.path().join("state").display(),
        d.program().display()
    );
    let out = tmux
        .cmd()
        .args([
            "new-session",
            "-d",
            "-s",
            "view",
            "-x",
            "200",
            "-y",
            "40",
            &view,
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    tmux.wait_for("nothing waits for an answer");

    let waiting = exec_later(&c, FILL);
    let screen = tmux.wait_for(&format!(
        "container:{n} wants to git credential get on github.com"
    ));
    assert!(screen.contains("git:* is in [approval] ask"), "{screen}");
    assert!(d.helper_log().is_empty());
    let keys = tmux
        .cmd()
        .args(["send-keys", "-t", "view", "y"])
        .output()
        .unwrap();
    assert!(keys.status.success());
    let out = waiting.join().unwrap();
    assert!(
        out.status.success() && text(&out).contains("password=s3cret-pass"),
        "{}",
        text(&out)
    );
    let screen = tmux.wait_for("nothing waits for an answer");
    assert!(screen.contains("allowed"), "{screen}");
    assert!(audit(&d).iter().any(|r| {
        r["action"] == "allow"
            && r["reason"]
                .as_str()
                .unwrap()
                .contains("answered by terminal")
    }));
    // q leaves the view and gives the terminal back.
    tmux.cmd()
        .args(["send-keys", "-t", "view", "q"])
        .output()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while tmux
        .cmd()
        .args(["has-session", "-t", "view"])
        .output()
        .unwrap()
        .status
        .success()
    {
        assert!(
            Instant::now() < deadline,
            "the view did not leave on q:\n{}",
            tmux.screen()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn the_desktop_asks_with_notify_send_actions_and_the_button_pressed_answers() {
    // No notification server runs here: a stand-in `notify-send` on the daemon's PATH logs
    // its arguments and "presses" the button named in a file, as notify-send --wait prints
    // the action chosen.
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("desktop-bin");
    std::fs::create_dir_all(&bin).unwrap();
    let press = dir.path().join("press");
    write_script(
        &bin.join("notify-send"),
        &format!(
            "for a in \"$@\"; do echo \"$a\"; done >> {log}\necho END >> {log}\ncat {press}",
            log = dir.path().join("desktop.log").display(),
            press = press.display()
        ),
    );
    let mut args = config_args(
        dir.path(),
        "[attach]\nscopes = [\"git:*\"]\n\n[approval]\nask = [\"git:*\"]\nremember = \"once\"\ntimeout = \"20s\"\n",
    );
    args.push("--notifier".into());
    args.push("true".into());
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let d = DaemonProc::start(DaemonOpts {
        args,
        env: vec![("PATH".into(), path), ("DISPLAY".into(), ":99".into())],
        ..DaemonOpts::default()
    });
    let (c, n) = container(&d, "apd", &[]);

    std::fs::write(&press, "deny\n").unwrap();
    let (_, out, err) = c.exec(&[], FILL);
    assert!(
        !out.contains("s3cret-pass") && err.contains("denied on the host"),
        "{out}{err}"
    );
    assert!(d.helper_log().is_empty());
    let shown = std::fs::read_to_string(dir.path().join("desktop.log")).unwrap();
    for arg in [
        "--wait",
        "--action=allow=Allow",
        "--action=deny=Deny",
        "--",
        &format!("container:{n}: git credential get"),
    ] {
        assert!(shown.lines().any(|l| l == arg), "{arg:?} not in:\n{shown}");
    }

    std::fs::write(&press, "allow\n").unwrap();
    let (ok, out, err) = c.exec(&[], FILL);
    assert!(ok && out.contains("password=s3cret-pass"), "{out}{err}");
    assert!(audit(&d).iter().any(|r| {
        r["action"] == "allow"
            && r["reason"]
                .as_str()
                .unwrap()
                .contains("answered by desktop")
    }));
}
