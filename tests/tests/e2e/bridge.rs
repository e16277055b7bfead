//! `hostproxy bridge` end to end: an alias of `attach` (SPEC.md 6.1, 12) that puts the
//! daemon's ssh-agent and gpg-agent into a real container at the bridge's paths, used by the
//! host's own ssh and gpg (bind-mounted read-only into the container); in the foreground
//! until the container stops, detached on SIGTERM.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use e2e::*;

fn exec(c: &Container, script: &str) -> (bool, String, String) {
    c.exec(&["SSH_AUTH_SOCK=/root/.ssh/agent.sock"], script)
}

struct Bridge(Child);

impl Drop for Bridge {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn ssh_and_gpg_work_inside_a_container_through_the_bridge() {
    let image = test_image();
    let agent = Agent::start();
    let gpg_home = Gpg::new();
    let id = Command::new("docker")
        .args([
            "run",
            "-d",
            "--rm",
            "-v",
            "/usr:/usr:ro",
            image,
            "sleep",
            "300",
        ])
        .output()
        .unwrap();
    assert!(
        id.status.success(),
        "{}",
        String::from_utf8_lossy(&id.stderr)
    );
    let c = Container(String::from_utf8_lossy(&id.stdout).trim().to_string());
    // The daemon holds the agents: its SSH_AUTH_SOCK and GNUPGHOME, not the bridge's.
    let d = DaemonProc::start(DaemonOpts {
        agent: Some(agent.socket.clone()),
        env: vec![(
            "GNUPGHOME".into(),
            gpg_home.home.path().display().to_string(),
        )],
        ..DaemonOpts::default()
    });
    let start_bridge = || {
        Bridge(
            d.hostproxy(&["bridge", "--container", &c.0, "--ssh", "--gpg"])
                .env_remove("SSH_AUTH_SOCK")
                .stdin(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap(),
        )
    };
    let mut bridge = start_bridge();
    let up = eventually(Duration::from_secs(20), || {
        let exited = bridge.0.try_wait().unwrap();
        assert!(
            exited.is_none(),
            "bridge exited with {exited:?}: {}",
            d.log_text()
        );
        exec(
            &c,
            "test -S /root/.ssh/agent.sock && test -S /root/.gnupg/S.gpg-agent",
        )
        .0
        .then_some(())
    });
    assert!(
        up.is_some(),
        "the bridge sockets never appeared\n{}",
        d.log_text()
    );
    // A second bridge of what is already attached says so and leaves the first alone.
    let second = d
        .hostproxy(&["bridge", "--container", &c.0, "--ssh"])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&second.stderr);
    assert!(
        !second.status.success() && said.contains("already attached"),
        "{said}"
    );
    // One host end: the daemon's attachment, listed with the bridge's scopes.
    let listed = d.attachments();
    let entry = listed
        .iter()
        .find(|a| {
            a["identity"]
                .as_str()
                .is_some_and(|i| i.starts_with("container:"))
        })
        .unwrap_or_else(|| panic!("{listed:?}"));
    assert_eq!(
        entry["scopes"],
        serde_json::json!(["ssh", "ssh-login", "gpg"])
    );

    // ssh-add -l inside lists the host agent's key.
    let (ok, out, err) = exec(&c, "ssh-add -l");
    assert!(ok && out.contains("test@hostproxy"), "{out}{err}");

    // ssh-keygen -Y sign inside; verify on the host.
    let (ok, sig, err) = exec(
        &c,
        &format!(
            "echo '{}' > /tmp/k.pub && echo 'signed in a container' > /tmp/msg && ssh-keygen -Y sign -n git -f /tmp/k.pub /tmp/msg >/dev/null 2>&1 && cat /tmp/msg.sig",
            agent.pubkey.trim()
        ),
    );
    assert!(ok, "{err}");
    agent
        .verify_git_signature("signed in a container\n", &sig)
        .unwrap();

    // Removing keys through the bridge is refused; the host agent keeps its key.
    let (ok, _, _) = exec(&c, "ssh-add -D");
    assert!(!ok);
    let (code, listing) = agent.list();
    assert_eq!(code, 0);
    assert!(listing.contains("test@hostproxy"));

    // gpg --sign inside with the host's key; verify on the host.
    let (ok, signed, err) = exec(
        &c,
        "echo 'gpg in a container' | gpg --batch --no-tty --local-user bridge@example.com --armor --sign",
    );
    assert!(
        ok && signed.contains("BEGIN PGP MESSAGE"),
        "{signed}\n{err}"
    );
    let (ok, plain, err) = gpg_home.verify(&signed);
    assert!(ok, "{err}");
    assert_eq!(plain, "gpg in a container\n");
    assert!(err.contains("Good signature"));

    // Every agent decision of the bridge is in the audit log, tied to the container.
    let audit = std::fs::read_to_string(d.dir.path().join("state/logs/audit.jsonl")).unwrap();
    let records: Vec<clawker_protocol::audit::AuditRecord> = audit
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let decisions: Vec<_> = records
        .iter()
        .filter(|r| r.route == "bridge:ssh-agent")
        .collect();
    assert!(
        decisions
            .iter()
            .all(|r| r.container.as_deref() == Some(c.0.as_str())),
        "{audit}"
    );
    assert!(
        decisions.iter().any(|r| r.action == "list" && r.allowed),
        "{audit}"
    );
    assert!(
        decisions
            .iter()
            .any(|r| r.action == "sign:sshsig:git" && r.allowed && r.key.is_some()),
        "{audit}"
    );
    assert!(
        decisions
            .iter()
            .any(|r| r.action == "message:19" && !r.allowed),
        "ssh-add -D is audited as refused: {audit}"
    );

    // SIGTERM to the bridge detaches the container: its sockets go.
    let pid = bridge.0.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    assert!(bridge.0.wait().unwrap().success());
    let gone = eventually(Duration::from_secs(15), || {
        d.attachments().is_empty().then_some(())
    });
    assert!(
        gone.is_some(),
        "still attached after the bridge was stopped"
    );

    // Bridged again, then the container dies: the bridge exits.
    let mut bridge = start_bridge();
    let again = eventually(Duration::from_secs(20), || {
        assert!(
            bridge.0.try_wait().unwrap().is_none(),
            "the bridge exited early"
        );
        (!d.attachments().is_empty()).then_some(())
    });
    assert!(again.is_some(), "not attached again");
    drop(c);
    let ended = eventually(Duration::from_secs(15), || bridge.0.try_wait().unwrap());
    assert!(ended.is_some(), "the bridge outlived its container");
}
