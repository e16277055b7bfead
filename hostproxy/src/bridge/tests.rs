//! The host end of the bridge against fakes: a container side made of frames, agents that
//! are slow to accept or to answer, an event stream that drops.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use clawker_bridge::{FrameReader, encode};
use clawker_protocol::agent::{self, AgentPolicy, msg};
use clawker_protocol::bridge::Frame;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixListener;
use tokio::sync::mpsc;

use super::*;

/// What the container side "writes": frames on its stdout, ended by dropping the sender.
fn container() -> (
    mpsc::UnboundedSender<Bytes>,
    impl futures_util::Stream<Item = Result<ExecOutput, std::io::Error>> + Unpin,
) {
    let (tx, rx) = mpsc::unbounded_channel::<Bytes>();
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|message| (Ok(ExecOutput::Stdout(message)), rx))
    })
    .boxed();
    (tx, stream)
}

/// A bridge serving `targets` to a container side that, like upstream's, never answers
/// the host's HELLO (its streams have no window): what the container side sends, what it
/// reads back after that HELLO, the bridge's task.
async fn start(
    targets: Targets,
) -> (
    mpsc::UnboundedSender<Bytes>,
    FrameReader<tokio::io::DuplexStream>,
    tokio::task::JoinHandle<Result<()>>,
) {
    let (tx, output) = container();
    let (host_side, container_side) = tokio::io::duplex(1 << 20);
    let bridge = tokio::spawn(serve_bridge(output, host_side, None, targets, || {}));
    let mut from_host = FrameReader::new(container_side);
    let hello = next_frame(&mut from_host).await;
    assert_eq!(
        (hello.kind, hello.stream, hello.payload),
        (FrameType::Hello, 0, Hello::OURS.encode().to_vec()),
        "the host says HELLO first"
    );
    (tx, from_host, bridge)
}

fn targets(ssh: Option<PathBuf>, gpg: Option<PathBuf>, connect: Connector) -> Targets {
    Targets {
        ssh,
        gpg,
        filter: AgentFilter {
            policy: AgentPolicy::default(),
            grant: clawker_protocol::agent::AgentGrant::all(),
            on_decision: None,
        },
        connect,
        http: None,
        declared: Default::default(),
        ask: None,
    }
}

/// An agent socket that answers each request after `delay` with REQUEST_IDENTITIES' answer
/// (no keys).
fn slow_agent(dir: &std::path::Path, delay: Duration) -> PathBuf {
    let path = dir.join("agent.sock");
    let l = UnixListener::bind(&path).unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                loop {
                    let mut len = [0u8; 4];
                    if s.read_exact(&mut len).await.is_err() {
                        return;
                    }
                    let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
                    if s.read_exact(&mut body).await.is_err() {
                        return;
                    }
                    tokio::time::sleep(delay).await;
                    let reply = agent::frame(&[msg::IDENTITIES_ANSWER, 0, 0, 0, 0]);
                    if s.write_all(&reply).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    path
}

async fn next_frame(r: &mut FrameReader<tokio::io::DuplexStream>) -> Frame {
    tokio::time::timeout(Duration::from_secs(5), r.next())
        .await
        .expect("a frame in time")
        .unwrap()
        .expect("a frame")
}

#[tokio::test]
async fn a_stalled_agent_connect_stalls_only_its_own_stream() {
    let dir = tempfile::tempdir().unwrap();
    let agent = slow_agent(dir.path(), Duration::ZERO);
    let stuck = dir.path().join("stuck.sock");
    let agent_path = agent.clone();
    // Connecting to the gpg socket never finishes; the ssh agent answers at once.
    let connect: Connector = Arc::new(move |path: PathBuf| {
        let ok = path == agent_path;
        Box::pin(async move {
            if !ok {
                std::future::pending::<()>().await;
            }
            crate::platform::local::connect(&path).await
        })
    });
    let (tx, mut from_host, bridge) = start(targets(Some(agent), Some(stuck), connect)).await;
    tx.send(encode(FrameType::Ready, 0, &[])).unwrap();
    tx.send(encode(FrameType::Open, 1, SOCKET_GPG_AGENT.as_bytes()))
        .unwrap();
    tx.send(encode(FrameType::Data, 1, b"whatever")).unwrap();
    tx.send(encode(FrameType::Open, 2, SOCKET_SSH_AGENT.as_bytes()))
        .unwrap();
    tx.send(encode(
        FrameType::Data,
        2,
        &agent::frame(&[msg::REQUEST_IDENTITIES]),
    ))
    .unwrap();
    let f = next_frame(&mut from_host).await;
    assert_eq!((f.kind, f.stream), (FrameType::Data, 2), "{f:?}");
    assert_eq!(
        f.payload,
        agent::frame(&[msg::IDENTITIES_ANSWER, 0, 0, 0, 0])
    );
    drop(tx);
    bridge.await.unwrap().unwrap();
}

#[tokio::test]
async fn a_refused_request_is_answered_after_the_replies_owed_before_it() {
    let dir = tempfile::tempdir().unwrap();
    let agent = slow_agent(dir.path(), Duration::from_millis(300));
    let (tx, mut from_host, bridge) = start(targets(Some(agent), None, connect_local())).await;
    tx.send(encode(FrameType::Ready, 0, &[])).unwrap();
    tx.send(encode(FrameType::Open, 1, SOCKET_SSH_AGENT.as_bytes()))
        .unwrap();
    // A forwarded request, then (pipelined) one the policy refuses (REMOVE_ALL).
    let both = [
        agent::frame(&[msg::REQUEST_IDENTITIES]),
        agent::frame(&[msg::REMOVE_ALL_IDENTITIES]),
    ]
    .concat();
    tx.send(encode(FrameType::Data, 1, &both)).unwrap();
    let first = next_frame(&mut from_host).await;
    let second = next_frame(&mut from_host).await;
    assert_eq!(
        first.payload,
        agent::frame(&[msg::IDENTITIES_ANSWER, 0, 0, 0, 0]),
        "the agent's reply comes first"
    );
    assert_eq!(second.payload, agent::FAILURE_FRAME, "then the refusal");
    drop(tx);
    bridge.await.unwrap().unwrap();
}

#[tokio::test]
async fn a_duplicate_open_or_an_error_frame_ends_the_bridge_and_is_shown_escaped() {
    let dir = tempfile::tempdir().unwrap();
    let agent = slow_agent(dir.path(), Duration::ZERO);
    let (tx, _from_host, bridge) = start(targets(Some(agent.clone()), None, connect_local())).await;
    tx.send(encode(FrameType::Ready, 0, &[])).unwrap();
    tx.send(encode(FrameType::Open, 7, SOCKET_SSH_AGENT.as_bytes()))
        .unwrap();
    tx.send(encode(FrameType::Open, 7, SOCKET_SSH_AGENT.as_bytes()))
        .unwrap();
    let e = bridge.await.unwrap().unwrap_err();
    assert!(format!("{e:#}").contains("opened stream 7 twice"), "{e:#}");

    let (tx, _from_host, bridge) = start(targets(Some(agent), None, connect_local())).await;
    tx.send(encode(
        FrameType::Error,
        0,
        b"bad\x1b]0;owned\x07\x1b[2J\r\nforged line",
    ))
    .unwrap();
    let shown = format!("{:#}", bridge.await.unwrap().unwrap_err());
    assert!(!shown.chars().any(|c| c.is_control()), "{shown:?}");
    assert!(shown.contains("bad\\x1b]0;owned\\x07"), "{shown}");
    // The exec's stderr, likewise.
    let lines = stderr_lines(b"warn \x1b[31mred\x1b[0m\nsecond\x07\n");
    assert_eq!(lines, ["warn \\x1b[31mred\\x1b[0m", "second\\x07"]);
}

/// A unix socket that echoes what it reads, counting its connections.
fn echo_socket(path: &std::path::Path) -> Arc<AtomicUsize> {
    let l = UnixListener::bind(path).unwrap();
    let n = Arc::new(AtomicUsize::new(0));
    let seen = n.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            seen.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = [0u8; 1024];
                while let Ok(k) = s.read(&mut buf).await {
                    if k == 0 || s.write_all(&buf[..k]).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    n
}

#[tokio::test]
async fn a_declared_socket_carries_bytes_both_ways_and_nothing_else_is_reached() {
    let dir = tempfile::tempdir().unwrap();
    let (echo, other) = (dir.path().join("echo.sock"), dir.path().join("other.sock"));
    let reached = echo_socket(&echo);
    let other_reached = echo_socket(&other);
    let mut t = targets(None, None, connect_local());
    let echo_decl = Arc::new(Declared::new(echo.clone(), false));
    t.declared = Arc::new(HashMap::from([("echo".to_string(), echo_decl.clone())]));
    let (tx, mut from_host, bridge) = start(t).await;
    tx.send(encode(FrameType::Ready, 0, &[])).unwrap();
    tx.send(encode(FrameType::Open, 1, b"socket:echo")).unwrap();
    tx.send(encode(FrameType::Data, 1, b"ping")).unwrap();
    let f = next_frame(&mut from_host).await;
    assert_eq!(
        (f.kind, f.stream, f.payload.as_slice()),
        (FrameType::Data, 1, &b"ping"[..])
    );
    // A name not declared for this bridge (the other socket exists on the host) is closed.
    tx.send(encode(FrameType::Open, 2, b"socket:other"))
        .unwrap();
    let f = next_frame(&mut from_host).await;
    assert_eq!((f.kind, f.stream), (FrameType::Close, 2));
    assert_eq!(other_reached.load(Ordering::SeqCst), 0);
    // The path changes hands: refused from then on.
    std::os::unix::fs::lchown(&echo, Some(65534), None).unwrap();
    tx.send(encode(FrameType::Open, 3, b"socket:echo")).unwrap();
    let f = next_frame(&mut from_host).await;
    assert_eq!((f.kind, f.stream), (FrameType::Close, 3));
    assert_eq!(
        reached.load(Ordering::SeqCst),
        1,
        "the changed socket was connected to"
    );
    assert!(echo_decl.check().unwrap_err().contains("uid 65534"));
    drop(tx);
    bridge.await.unwrap().unwrap();
}
