//! "The agent stays the user's" (SPEC.md 11, 6.2), the trust boundary's agent rule made for
//! real: real `ssh-add`, `ssh-keygen -Y sign` and `ssh` logins through containers and
//! `ssh-agent-proxy`, against the host's own ssh-agent.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use e2e::*;

/// "The agent stays the user's" (SPEC.md 11, 6.2): a container scoped to one key gets an
/// agent stream that lists and signs with that key only; no container can remove, add,
/// lock or unlock keys; and an SSH login signature needs `ssh-login`, for the HTTP route
/// and the streams alike (one filter).
#[test]
fn the_agent_stays_the_users() {
    require_docker();
    let agent = Agent::start();
    let second = agent.add_key("second");
    let first_fp = fingerprint_of(&agent.key_path.with_extension("pub"));
    let sshd = Sshd::start(&agent.pubkey);
    let d = DaemonProc::start(DaemonOpts {
        agent: Some(agent.socket.clone()),
        ..DaemonOpts::default()
    });
    // One key: listed alone, signs; the other does not.
    let n = name("onekey");
    let c = Container::start(
        d.tunnel_run()
            .args([
                "--label",
                &format!("dev.clawker.hostproxy.scopes=ssh:{first_fp}"),
            ])
            .args(["--name", &n, busybox_image(), "sleep", "300"]),
    );
    d.wait_serving(&n, Duration::from_secs(15));
    let (ok, keys, err) = c.exec(&[], "ssh-add -l");
    assert!(ok && keys.contains("test@hostproxy"), "{keys}{err}");
    assert!(!keys.contains("second@hostproxy"), "{keys}");
    let pub1 = std::fs::read_to_string(agent.key_path.with_extension("pub")).unwrap();
    let pub2 = std::fs::read_to_string(second.with_extension("pub")).unwrap();
    let sign = |key: &str| {
        c.exec(
            &[],
            &format!(
                "printf '%s' '{}' > /tmp/k.pub && echo data > /tmp/f && rm -f /tmp/f.sig && ssh-keygen -Y sign -f /tmp/k.pub -n git /tmp/f && test -s /tmp/f.sig",
                key.trim()
            ),
        )
    };
    assert!(sign(&pub1).0, "the granted key does not sign");
    assert!(!sign(&pub2).0, "a key outside the scope signed");
    drop(c);

    // A container with every key: it cannot re-key, lock or unlock the user's agent.
    let n = name("rekey");
    let c = Container::start(
        d.tunnel_run()
            .args(["--name", &n, busybox_image(), "sleep", "300"]),
    );
    d.wait_serving(&n, Duration::from_secs(15));
    let (removed, _, _) = c.exec(&[], "ssh-add -D");
    let (added, _, _) = c.exec(
        &[],
        "ssh-keygen -q -t ed25519 -N '' -f /tmp/new && ssh-add /tmp/new",
    );
    let (locked, _, _) = c.exec(
        &[],
        "printf '#!/bin/sh\\necho pw\\n' > /tmp/askpass && chmod +x /tmp/askpass && SSH_ASKPASS=/tmp/askpass SSH_ASKPASS_REQUIRE=force DISPLAY=x ssh-add -x",
    );
    assert!(!removed && !added && !locked, "{removed} {added} {locked}");
    let (code, listed) = agent.list();
    assert_eq!(code, 0, "the host agent is locked or empty: {listed}");
    assert_eq!(listed.lines().count(), 2, "{listed}");
    // Unlock too: lock the host agent by hand, a container cannot unlock it.
    // `ssh-add -x`/`-X` on the host, the password from an askpass script.
    let host_ssh_add = |flag: &str| {
        Command::new("ssh-add")
            .arg(flag)
            .env("SSH_AUTH_SOCK", &agent.socket)
            .env("SSH_ASKPASS", c_askpass(d.dir.path()))
            .env("SSH_ASKPASS_REQUIRE", "force")
            .env("DISPLAY", "x")
            .output()
            .unwrap()
    };
    let lock = host_ssh_add("-x");
    assert!(
        lock.status.success(),
        "{}",
        String::from_utf8_lossy(&lock.stderr)
    );
    let (unlocked, _, _) = c.exec(
        &[],
        "SSH_ASKPASS=/tmp/askpass SSH_ASKPASS_REQUIRE=force DISPLAY=x ssh-add -X",
    );
    assert!(!unlocked, "a container unlocked the user's agent");
    assert_ne!(agent.list().0, 0, "the host agent is no longer locked");
    let unlock = host_ssh_add("-X");
    assert!(unlock.status.success());
    let audit = std::fs::read_to_string(d.dir.path().join("state/logs/audit.jsonl")).unwrap();
    assert!(audit.contains("never allowed from a container"), "{audit}");

    // SSH login: refused without ssh-login, through a scoped token and ssh-agent-proxy.
    let state = d.dir.path().join("state");
    let issue = |name: &str, scopes: &[&str]| {
        let mut c = Command::new(bin("hostproxy"));
        c.args(["token", "issue", "--name", name])
            .env("CLAWKER_STATE_DIR", &state);
        for s in scopes {
            c.args(["--allow", s]);
        }
        let out = c.output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let dir = tempfile::tempdir().unwrap();
    for (name, scopes, expected) in [
        ("nologin", &["ssh"][..], false),
        ("login", &["ssh", "ssh-login"][..], true),
    ] {
        let token = issue(name, scopes);
        let env = vec![
            ("CLAWKER_HOST_PROXY".into(), d.url()),
            ("CLAWKER_HOST_PROXY_TOKEN".into(), token),
        ];
        let sock = dir.path().join(format!("{name}.sock"));
        let proxy = AgentProxy::start(&env, &sock);
        let (ok, err) = ssh_login(&sock, sshd.port);
        drop(proxy);
        assert_eq!(ok, expected, "{name}: {err}");
    }
    let audit = std::fs::read_to_string(state.join("logs/audit.jsonl")).unwrap();
    assert!(
        audit.contains("ssh login signatures need the scope ssh-login"),
        "{audit}"
    );
}

/// An askpass script answering `pw`, for the host's own `ssh-add -x`/`-X`.
fn c_askpass(dir: &Path) -> std::path::PathBuf {
    let p = dir.join("askpass");
    write_script(&p, "echo pw");
    p
}
