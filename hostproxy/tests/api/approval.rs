//! Asking the user (SPEC.md 14) on every HTTP route: a use in `[approval] ask` waits for the
//! approver; a denial or silence is 403 with the reason, and nothing happened — no browser,
//! notifier, git, Docker helper or agent ran, no callback port was bound.

use std::sync::atomic::Ordering;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use clawker_protocol::agent::{self, msg};
use serde_json::{Value, json};

use crate::common::*;

/// Every route's request that would have an effect.
fn uses(port: u16) -> Vec<(&'static str, Value)> {
    vec![
        ("/open/url", json!({"url": "https://example.com/login"})),
        ("/notify", json!({"title": "agent needs you"})),
        ("/callback/register", json!({"port": port, "state": "st"})),
        (
            "/git/credential",
            json!({"action": "get", "protocol": "https", "host": "github.com"}),
        ),
        (
            "/docker/credential",
            json!({"action": "get", "server_url": "reg.example:5000"}),
        ),
        (
            "/ssh/agent",
            json!({"data": B64.encode(agent::frame(&[msg::REQUEST_IDENTITIES]))}),
        ),
    ]
}

#[tokio::test]
async fn every_route_waits_for_the_answer_and_a_refusal_does_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (sock, agent_calls) = crate::ssh_agent::recording_agent(dir.path()).await;
    let decision = dir.path().join("decision");
    let approver = dir.path().join("approver");
    e2e::write_script(
        &approver,
        &format!(
            "echo \"$HOSTPROXY_ASK_SCOPE\" >> {log}\nexit $(cat {decision})",
            log = dir.path().join("asked.log").display(),
            decision = decision.display()
        ),
    );
    let d = spawn_with(
        Options {
            agent_socket: Some(sock),
            audit: true,
            ..Options::default()
        },
        |s, dir| {
            crate::docker::docker_config(dir);
            s.approval.ask = vec!["*".parse().unwrap()];
            s.approval.timeout = Duration::from_secs(1);
            s.approval.remember = hostproxy::config::Remember::Once;
            s.approval.approver = Some(vec![approver.display().to_string()]);
            s.approval.desktop = false;
        },
    )
    .await;
    let port = e2e::free_port();
    let nothing_happened = |d: &Daemon| {
        assert_eq!(launch_log(d.path()), "", "the browser was opened");
        assert_eq!(notify_log(d.path()), "", "a notification was shown");
        assert_eq!(helper_log(d.path()), "", "git ran");
        assert!(
            !d.path().join("docker-helper.log").exists(),
            "a Docker helper ran"
        );
        assert_eq!(
            agent_calls.load(Ordering::SeqCst),
            0,
            "the agent was contacted"
        );
        std::net::TcpListener::bind(("127.0.0.1", port)).expect("the callback port was bound");
    };

    // Denied (exit 1), then no answer (exit 2 abstains, the timeout denies).
    for (answer, reason) in [
        ("1", "denied on the host"),
        ("2", "no answer on the host within 1s"),
    ] {
        std::fs::write(&decision, answer).unwrap();
        for (route, body) in uses(port) {
            let (s, b) = d.post(route, body).await;
            assert_eq!(s, 403, "{route}: {b}");
            assert_eq!(b["error"], reason, "{route}");
        }
        nothing_happened(&d);
    }
    let asked = std::fs::read_to_string(dir.path().join("asked.log")).unwrap();
    assert_eq!(
        asked.lines().take(6).collect::<Vec<_>>(),
        [
            "open",
            "notify",
            "callback",
            "git:github.com",
            "docker:reg.example:5000",
            "ssh"
        ]
    );

    // Allowed: each goes ahead.
    std::fs::write(&decision, "0").unwrap();
    for (route, body) in uses(port) {
        let (s, b) = d.post(route, body).await;
        assert_eq!(s, 200, "{route}: {b}");
    }
    assert!(launch_log(d.path()).contains("https://example.com/login"));
    assert!(notify_log(d.path()).contains("agent needs you"));
    assert_eq!(helper_log(d.path()), "get\n");
    assert!(d.path().join("docker-helper.log").exists());
    assert_eq!(agent_calls.load(Ordering::SeqCst), 1);

    // The audit log has each ask and its outcome, with who answered.
    let audit = std::fs::read_to_string(d.path().join("audit.jsonl")).unwrap();
    let records: Vec<Value> = audit
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .filter(|r: &Value| r["route"] == "approval")
        .collect();
    for (action, by) in [
        ("deny", "approver"),
        ("timeout", "no answer"),
        ("allow", "approver"),
    ] {
        assert!(
            records
                .iter()
                .any(|r| r["action"] == action && r["reason"].as_str().unwrap().contains(by)),
            "{action}: {records:#?}"
        );
    }
}
