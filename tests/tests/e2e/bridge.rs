//! The socket bridge end to end: ssh-agent and gpg-agent into a real container over docker
//! exec, used by the host's own ssh and gpg (bind-mounted read-only into the container).

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use e2e::*;

struct Container(String);

impl Drop for Container {
    fn drop(&mut self) {
        let _ = Command::new("docker").args(["rm", "-f", &self.0]).output();
    }
}

fn exec(c: &Container, script: &str) -> (bool, String, String) {
    let out = Command::new("docker")
        .args([
            "exec",
            "-e",
            "SSH_AUTH_SOCK=/root/.ssh/agent.sock",
            &c.0,
            "sh",
            "-c",
            script,
        ])
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

struct Gpg {
    home: tempfile::TempDir,
}

impl Gpg {
    fn new() -> Self {
        require("gpg", "gnupg");
        require("gpg-agent", "gpg-agent");
        // Short path: agent socket paths are limited to ~100 bytes.
        let home = tempfile::Builder::new()
            .prefix("g")
            .tempdir_in("/tmp")
            .unwrap();
        let st = self::gpg(home.path())
            .args([
                "--batch",
                "--passphrase",
                "",
                "--quick-gen-key",
                "Bridge Test <bridge@example.com>",
                "ed25519",
                "sign",
                "never",
            ])
            .output()
            .unwrap();
        assert!(
            st.status.success(),
            "{}",
            String::from_utf8_lossy(&st.stderr)
        );
        Self { home }
    }
}

fn gpg(home: &std::path::Path) -> Command {
    let mut c = Command::new("gpg");
    c.env("GNUPGHOME", home);
    c
}

impl Drop for Gpg {
    fn drop(&mut self) {
        let _ = Command::new("gpgconf")
            .arg("--kill")
            .arg("gpg-agent")
            .env("GNUPGHOME", self.home.path())
            .status();
    }
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
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("msg"), "signed in a container\n").unwrap();
    std::fs::write(dir.path().join("msg.sig"), &sig).unwrap();
    std::fs::write(
        dir.path().join("allowed"),
        format!("test@hostproxy namespaces=\"git\" {}", agent.pubkey),
    )
    .unwrap();
    let verify = Command::new("ssh-keygen")
        .args(["-Y", "verify", "-n", "git", "-I", "test@hostproxy", "-f"])
        .arg(dir.path().join("allowed"))
        .arg("-s")
        .arg(dir.path().join("msg.sig"))
        .stdin(std::fs::File::open(dir.path().join("msg")).unwrap())
        .output()
        .unwrap();
    assert!(
        verify.status.success(),
        "{}",
        String::from_utf8_lossy(&verify.stderr)
    );

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
    let mut v = gpg(gpg_home.home.path())
        .args(["--batch", "--decrypt"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    v.stdin
        .take()
        .unwrap()
        .write_all(signed.as_bytes())
        .unwrap();
    let v = v.wait_with_output().unwrap();
    assert!(v.status.success());
    assert_eq!(String::from_utf8_lossy(&v.stdout), "gpg in a container\n");
    assert!(String::from_utf8_lossy(&v.stderr).contains("Good signature"));

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
