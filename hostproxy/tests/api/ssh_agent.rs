//! `POST /ssh/agent`: a real ssh-agent behind the filter; every refusal reaches no agent.

use super::*;

fn agent_call(body: &[u8]) -> Value {
    json!({"data": B64.encode(agent::frame(body))})
}

fn reply_body(v: &Value) -> Vec<u8> {
    let bytes = B64.decode(v["data"].as_str().unwrap()).unwrap();
    agent::single_frame(&bytes).unwrap().to_vec()
}

/// An SSHSIG blob as `ssh-keygen -Y sign -n NAMESPACE` sends it to the agent.
fn sshsig(namespace: &str) -> Vec<u8> {
    agent::sshsig_blob(namespace, "sha512", &[7u8; 64])
}

fn sign_request(key: &[u8], data: &[u8]) -> Vec<u8> {
    agent::sign_request(key, data, 0)
}

#[tokio::test]
async fn ssh_agent_lists_and_signs_but_refuses_lock_and_remove() {
    let agent = Agent::start();
    let d = spawn_with(
        Options {
            agent_socket: Some(agent.socket.clone()),
            ..Options::default()
        },
        |_, _| {},
    )
    .await;
    let (s, b) = d
        .post("/ssh/agent", agent_call(&[msg::REQUEST_IDENTITIES]))
        .await;
    assert_eq!(s, 200, "{b}");
    let body = reply_body(&b);
    assert_eq!(body[0], msg::IDENTITIES_ANSWER);
    assert_eq!(u32::from_be_bytes(body[1..5].try_into().unwrap()), 1);
    let (key_blob, _) = agent::read_string(&body[5..]).unwrap();

    let (s, b) = d
        .post(
            "/ssh/agent",
            agent_call(&sign_request(key_blob, &sshsig("git"))),
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(
        reply_body(&b)[0],
        msg::SIGN_RESPONSE,
        "an SSHSIG for namespace git is signed"
    );
    // Other purposes are answered FAILURE by the daemon (the recording-agent test below
    // shows the agent never sees them).
    for data in [sshsig("file"), vec![0x42; 64]] {
        let (s, b) = d
            .post("/ssh/agent", agent_call(&sign_request(key_blob, &data)))
            .await;
        assert_eq!(s, 200);
        assert_eq!(reply_body(&b), vec![msg::FAILURE]);
    }

    let mut lock = vec![msg::LOCK];
    agent::put_string(&mut lock, b"passphrase");
    for refused in [
        lock,
        vec![msg::REMOVE_ALL_IDENTITIES],
        vec![msg::ADD_IDENTITY, 0, 0, 0, 0],
    ] {
        let (s, b) = d.post("/ssh/agent", agent_call(&refused)).await;
        assert_eq!(s, 200);
        assert_eq!(reply_body(&b), vec![msg::FAILURE], "message {}", refused[0]);
    }
    let (code, listing) = agent.list();
    assert_eq!(code, 0, "agent locked or emptied: {listing}");
    assert!(listing.contains("test@hostproxy"), "{listing}");
}

/// An agent that records every connection and answers FAILURE.
pub(crate) async fn recording_agent(
    dir: &std::path::Path,
) -> (
    std::path::PathBuf,
    std::sync::Arc<std::sync::atomic::AtomicUsize>,
) {
    let path = dir.join("rec.sock");
    let listener = tokio::net::UnixListener::bind(&path).unwrap();
    let count = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let c = count.clone();
    tokio::spawn(async move {
        use tokio::io::AsyncWriteExt;
        while let Ok((mut s, _)) = listener.accept().await {
            c.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            if hostproxy::backends::read_agent_frame(&mut s).await.is_ok() {
                let _ = s.write_all(&agent::FAILURE_FRAME).await;
            }
        }
    });
    (path, count)
}

#[tokio::test]
async fn ssh_agent_rejections_never_reach_the_agent() {
    let dir = tempfile::tempdir().unwrap();
    let (sock, count) = recording_agent(dir.path()).await;
    let d = spawn_with(
        Options {
            agent_socket: Some(sock),
            ..Options::default()
        },
        |_, _| {},
    )
    .await;
    let two = [agent::frame(&[11]), agent::frame(&[11])].concat();
    let mut oversized = vec![msg::SIGN_REQUEST];
    oversized.resize(agent::MAX_FRAME + 1, 0);
    for data in [
        B64.encode(&two),
        B64.encode([0, 0, 0, 5, 11]),
        B64.encode([0, 0, 0]),
        B64.encode([0, 0, 0, 0]),
        B64.encode(agent::frame(&oversized)),
        "***not base64***".to_string(),
    ] {
        let (s, b) = d.post("/ssh/agent", json!({"data": data})).await;
        assert!(s == 400 || s == 413, "{s} {b}");
    }
    // Random bytes to sign, and an SSHSIG for a namespace that is not allowed.
    for data in [vec![0x42u8; 64], sshsig("file")] {
        let (s, b) = d
            .post("/ssh/agent", agent_call(&sign_request(b"key", &data)))
            .await;
        assert_eq!(s, 200);
        assert_eq!(reply_body(&b), vec![msg::FAILURE]);
    }
    for kind in 0u8..=255 {
        if kind == msg::REQUEST_IDENTITIES || kind == msg::SIGN_REQUEST {
            continue;
        }
        let (s, b) = d.post("/ssh/agent", agent_call(&[kind, 0, 0, 0, 0])).await;
        assert_eq!(s, 200);
        assert_eq!(reply_body(&b), vec![msg::FAILURE], "message {kind}");
    }
    assert_eq!(
        count.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "agent was contacted"
    );
    let (s, _) = d
        .post("/ssh/agent", agent_call(&[msg::REQUEST_IDENTITIES]))
        .await;
    assert_eq!(s, 200);
    assert_eq!(count.load(std::sync::atomic::Ordering::SeqCst), 1);
}

#[tokio::test]
async fn ssh_agent_absent_is_503() {
    let d = spawn(|_, _| {}).await;
    let (s, b) = d
        .post("/ssh/agent", agent_call(&[msg::REQUEST_IDENTITIES]))
        .await;
    assert_eq!(s, 503, "{b}");
    let dir = tempfile::tempdir().unwrap();
    let d = spawn_with(
        Options {
            agent_socket: Some(dir.path().join("gone.sock")),
            ..Options::default()
        },
        |_, _| {},
    )
    .await;
    let (s, _) = d
        .post("/ssh/agent", agent_call(&[msg::REQUEST_IDENTITIES]))
        .await;
    assert_eq!(s, 503);
}
