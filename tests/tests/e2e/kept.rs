//! What the user asked of the tunnel outlives the daemon (newcomer review F11): a container
//! attached by hand is attached again after a restart, with the scopes it was given; a
//! labelled container detached by hand stays detached across a restart, until it starts
//! again.

use std::process::Command;
use std::time::Duration;

use e2e::*;

#[test]
fn manual_attaches_and_hand_detaches_survive_a_restart_of_the_daemon() {
    let mut d = DaemonProc::start(DaemonOpts::default());
    let image = busybox_image();
    let by_hand = name("by-hand");
    let _a = Container::plain(&by_hand, image, &[]);
    d.cli_ok(&["attach", "--container", &by_hand, "--allow", "open"]);
    d.wait_serving(&by_hand, Duration::from_secs(15));
    let labelled = name("labelled");
    let _b = Container::start(
        d.tunnel_run()
            .args(["--name", &labelled, image, "sleep", "300"]),
    );
    d.wait_serving(&labelled, Duration::from_secs(15));
    d.cli_ok(&["detach", &labelled]);

    d.stop_and_restart();
    let entry = d.wait_serving(&by_hand, Duration::from_secs(15));
    assert_eq!(entry["scopes"], serde_json::json!(["open"]), "{entry}");
    // Discovery at the same start found the detached container and left it alone.
    let looked = eventually(Duration::from_secs(15), || {
        d.log_text().contains("detached by hand").then_some(())
    });
    assert!(
        looked.is_some(),
        "discovery never looked at the detached container:\n{}",
        d.log_text()
    );
    assert!(
        !d.attachments()
            .iter()
            .any(|a| a["name"] == labelled.as_str()),
        "{:?}",
        d.attachments()
    );

    // Started again, it is attached again by its label.
    let st = Command::new("docker")
        .args(["restart", "-t", "0", &labelled])
        .output()
        .unwrap();
    assert!(st.status.success());
    d.wait_serving(&labelled, Duration::from_secs(15));
}

/// A labelled container discovery cannot attach — here a typo in its scopes label — is
/// listed `failed` with the reason, not only logged (newcomer review F6), and nothing of
/// it is served.
#[test]
fn a_labelled_container_that_cannot_be_attached_says_why_in_the_list() {
    let d = DaemonProc::start(DaemonOpts::default());
    let n = name("typo");
    let _c = Container::start(
        d.tunnel_run()
            .args(["--label", "dev.clawker.hostproxy.scopes=open,calback"])
            .args(["--name", &n, busybox_image(), "sleep", "300"]),
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let entry = loop {
        if let Some(a) = d
            .attachments()
            .into_iter()
            .find(|a| a["name"] == n.as_str())
        {
            break a;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not listed:\n{}",
            d.log_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(entry["state"], "failed", "{entry}");
    assert!(entry["notes"].to_string().contains("calback"), "{entry}");
    // `detach` clears it.
    d.cli_ok(&["detach", &n]);
    assert!(!d.attachments().iter().any(|a| a["name"] == n.as_str()));
}
