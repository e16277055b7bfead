//! The socket bridge end to end: ssh-agent and gpg-agent into a real container over docker
//! exec, used by the host's own ssh and gpg (bind-mounted read-only into the container).

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

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
    let state = tempfile::tempdir().unwrap();
    let mut bridge = Bridge(
        Command::new(bin("hostproxy"))
            .args(["bridge", "--container", &c.0, "--ssh", "--gpg"])
            .env("SSH_AUTH_SOCK", &agent.socket)
            .env("GNUPGHOME", gpg_home.home.path())
            .env("CLAWKER_STATE_DIR", state.path())
            .stdin(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while !exec(
        &c,
        "test -S /root/.ssh/agent.sock && test -S /root/.gnupg/S.gpg-agent",
    )
    .0
    {
        if let Ok(Some(st)) = bridge.0.try_wait() {
            let mut err = String::new();
            use std::io::Read;
            bridge
                .0
                .stderr
                .take()
                .unwrap()
                .read_to_string(&mut err)
                .unwrap();
            panic!("bridge exited with {st}: {err}");
        }
        assert!(
            Instant::now() < deadline,
            "the bridge sockets never appeared"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let safe: String =
        c.0.chars()
            .map(|ch| if ch.is_ascii_alphanumeric() { ch } else { '_' })
            .collect();
    assert!(
        state
            .path()
            .join("bridges")
            .join(format!("{safe}.pid"))
            .exists()
    );
    assert!(!state.path().join("pids/hostproxy.pid").exists());

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
    let audit = std::fs::read_to_string(state.path().join("logs/audit.jsonl")).unwrap();
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

    // The container dies: the bridge exits.
    drop(c);
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if bridge.0.try_wait().unwrap().is_some() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the bridge outlived its container"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
