//! The container side driven byte for byte over its stdin/stdout by a test playing the host.
#![allow(clippy::unwrap_used)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use clawker_protocol::bridge::{Frame, FrameType};
use clawker_socket_server::FrameReader;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::process::{Child, ChildStdin, ChildStdout};

struct Host {
    child: Child,
    stdin: Option<ChildStdin>,
    frames: FrameReader<ChildStdout>,
    dir: tempfile::TempDir,
}

fn spec(dir: &Path, gpg: bool) -> String {
    let mut v = vec![format!(
        r#"{{"path":"{}/ssh/agent.sock","type":"ssh-agent"}}"#,
        dir.display()
    )];
    if gpg {
        v.push(format!(
            r#"{{"path":"{}/gnupg/S.gpg-agent","type":"gpg-agent"}}"#,
            dir.display()
        ));
    }
    format!("[{}]", v.join(","))
}

impl Host {
    fn start(gpg: bool, pubkey_timeout: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_clawker-socket-server"))
            .env("CLAWKER_REMOTE_SOCKETS", spec(dir.path(), gpg))
            .env("CLAWKER_SOCKET_SERVER_PUBKEY_TIMEOUT", pubkey_timeout)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let stdin = child.stdin.take();
        let frames = FrameReader::new(child.stdout.take().unwrap());
        Self {
            child,
            stdin,
            frames,
            dir,
        }
    }

    fn ssh(&self) -> PathBuf {
        self.dir.path().join("ssh/agent.sock")
    }

    fn gpg(&self) -> PathBuf {
        self.dir.path().join("gnupg/S.gpg-agent")
    }

    async fn send(&mut self, kind: FrameType, stream: u32, payload: &[u8]) {
        let bytes = Frame::new(kind, stream, payload.to_vec()).encode().unwrap();
        self.stdin
            .as_mut()
            .unwrap()
            .write_all(&bytes)
            .await
            .unwrap();
    }

    async fn raw(&mut self, bytes: &[u8]) {
        self.stdin.as_mut().unwrap().write_all(bytes).await.unwrap();
    }

    async fn next(&mut self) -> Frame {
        tokio::time::timeout(Duration::from_secs(10), self.frames.next())
            .await
            .expect("no frame within 10 s")
            .unwrap()
            .expect("bridge ended")
    }

    async fn stderr(mut self) -> String {
        let mut s = String::new();
        self.child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut s)
            .await
            .unwrap();
        s
    }
}

#[tokio::test]
async fn ready_open_data_close_both_ways() {
    let mut h = Host::start(false, "10");
    assert_eq!(h.next().await, Frame::new(FrameType::Ready, 0, vec![]));
    let mode = std::fs::metadata(h.ssh()).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let dmode = std::fs::metadata(h.ssh().parent().unwrap())
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(dmode & 0o777, 0o700);

    let mut c1 = UnixStream::connect(h.ssh()).await.unwrap();
    assert_eq!(
        h.next().await,
        Frame::new(FrameType::Open, 1, b"ssh-agent".to_vec())
    );
    let mut c2 = UnixStream::connect(h.ssh()).await.unwrap();
    assert_eq!(
        h.next().await,
        Frame::new(FrameType::Open, 2, b"ssh-agent".to_vec())
    );

    h.send(FrameType::Data, 1, b"hello").await;
    let mut buf = [0u8; 5];
    c1.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"hello");
    c2.write_all(b"world").await.unwrap();
    assert_eq!(
        h.next().await,
        Frame::new(FrameType::Data, 2, b"world".to_vec())
    );

    // CLOSE from the host: the client sees EOF, the host gets one CLOSE back.
    h.send(FrameType::Close, 1, b"").await;
    assert_eq!(h.next().await, Frame::new(FrameType::Close, 1, vec![]));
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), c1.read_to_end(&mut rest))
        .await
        .unwrap()
        .unwrap();
    assert!(rest.is_empty());
    // CLOSE from the client side; the host's answering CLOSE gets no further reply.
    drop(c2);
    assert_eq!(h.next().await, Frame::new(FrameType::Close, 2, vec![]));
    h.send(FrameType::Close, 2, b"").await;
    // Data for unknown streams is ignored; a new client still gets the next id.
    h.send(FrameType::Data, 99, b"x").await;
    let _c3 = UnixStream::connect(h.ssh()).await.unwrap();
    assert_eq!(
        h.next().await,
        Frame::new(FrameType::Open, 3, b"ssh-agent".to_vec())
    );

    // stdin closes: exit 0, socket removed.
    drop(h.stdin.take());
    let status = tokio::time::timeout(Duration::from_secs(5), h.child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success());
    assert!(!h.ssh().exists());
}

#[tokio::test]
async fn three_mib_in_order_each_way() {
    let mut h = Host::start(false, "10");
    assert_eq!(h.next().await.kind, FrameType::Ready);
    let client = UnixStream::connect(h.ssh()).await.unwrap();
    assert_eq!(h.next().await.kind, FrameType::Open);
    let data: Vec<u8> = (0..3 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    let (mut rd, mut wr) = client.into_split();
    let up = data.clone();
    let writer = tokio::spawn(async move {
        wr.write_all(&up).await.unwrap();
        wr
    });
    let mut got = Vec::new();
    while got.len() < data.len() {
        let f = h.next().await;
        assert_eq!((f.kind, f.stream), (FrameType::Data, 1));
        got.extend_from_slice(&f.payload);
    }
    assert!(got == data, "container → host bytes differ");
    let _wr = writer.await.unwrap();
    // host → container, read concurrently by the client.
    let reader = tokio::spawn(async move {
        let mut buf = vec![0u8; 3 * 1024 * 1024];
        rd.read_exact(&mut buf).await.unwrap();
        buf
    });
    for chunk in data.chunks(60_000) {
        h.send(FrameType::Data, 1, chunk).await;
    }
    let back = tokio::time::timeout(Duration::from_secs(20), reader)
        .await
        .unwrap()
        .unwrap();
    assert!(back == data, "host → container bytes differ");
}

#[tokio::test]
async fn a_stalled_client_loses_its_stream_not_the_others() {
    let mut h = Host::start(false, "10");
    assert_eq!(h.next().await.kind, FrameType::Ready);
    let _stalled = UnixStream::connect(h.ssh()).await.unwrap();
    assert_eq!(h.next().await.stream, 1);
    let mut live = UnixStream::connect(h.ssh()).await.unwrap();
    assert_eq!(h.next().await.stream, 2);
    let chunk = vec![7u8; 64 * 1024];
    // Far more than the kernel buffer plus the stream's queue.
    let mut closed = false;
    for _ in 0..400 {
        h.send(FrameType::Data, 1, &chunk).await;
    }
    // The live stream still works while (and after) the stalled one is closed.
    h.send(FrameType::Data, 2, b"ping").await;
    let mut buf = [0u8; 4];
    tokio::time::timeout(Duration::from_secs(5), live.read_exact(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&buf, b"ping");
    live.write_all(b"pong").await.unwrap();
    let mut saw_pong = false;
    for _ in 0..10 {
        let f = h.next().await;
        match (f.kind, f.stream) {
            (FrameType::Close, 1) => closed = true,
            (FrameType::Data, 2) => saw_pong = f.payload == b"pong",
            other => panic!("unexpected {other:?}"),
        }
        if closed && saw_pong {
            break;
        }
    }
    assert!(closed, "the stalled stream was not closed");
    assert!(saw_pong);
}

#[tokio::test]
async fn gpg_pubkey_written_or_socket_dropped() {
    // A key: keyring and gpg.conf written, socket created.
    let mut h = Host::start(true, "10");
    h.send(FrameType::Pubkey, 0, b"\x99public-key-bytes").await;
    assert_eq!(h.next().await.kind, FrameType::Ready);
    let home = h.gpg().parent().unwrap().to_path_buf();
    assert_eq!(
        std::fs::read(home.join("pubring.gpg")).unwrap(),
        b"\x99public-key-bytes"
    );
    assert_eq!(
        std::fs::read_to_string(home.join("gpg.conf")).unwrap(),
        "no-autostart\n"
    );
    assert!(h.gpg().exists());
    let _c = UnixStream::connect(h.gpg()).await.unwrap();
    assert_eq!(
        h.next().await,
        Frame::new(FrameType::Open, 1, b"gpg-agent".to_vec())
    );

    // Empty PUBKEY: no GPG; warn and serve the rest.
    let mut h = Host::start(true, "10");
    h.send(FrameType::Pubkey, 0, b"").await;
    assert_eq!(h.next().await.kind, FrameType::Ready);
    assert!(!h.gpg().exists());
    let _c = UnixStream::connect(h.ssh()).await.unwrap();
    assert_eq!(h.next().await.kind, FrameType::Open);
    drop(h.stdin.take());
    let err = h.stderr().await;
    assert!(err.contains("no GPG keys"), "{err}");

    // No PUBKEY at all: after the timeout, the same (upstream hangs forever here).
    let mut h = Host::start(true, "0.3");
    let started = std::time::Instant::now();
    assert_eq!(h.next().await.kind, FrameType::Ready);
    assert!(started.elapsed() >= Duration::from_millis(250));
    assert!(!h.gpg().exists());
    assert!(h.ssh().exists());
}

#[tokio::test]
async fn hostile_lengths_end_the_bridge_with_an_error_frame() {
    for bad in [
        &[0u8, 0, 0, 4, 1, 0, 0, 0][..],
        &[0xff, 0xff, 0xff, 0xff][..],
        &[0, 0x10, 0, 1][..],
    ] {
        let mut h = Host::start(false, "10");
        assert_eq!(h.next().await.kind, FrameType::Ready);
        h.raw(bad).await;
        let f = h.next().await;
        assert_eq!((f.kind, f.stream), (FrameType::Error, 0), "{bad:?}");
        assert!(!f.payload.is_empty());
        let status = tokio::time::timeout(Duration::from_secs(5), h.child.wait())
            .await
            .unwrap()
            .unwrap();
        assert!(!status.success());
    }
}

#[tokio::test]
async fn at_most_64_streams() {
    let mut h = Host::start(false, "10");
    assert_eq!(h.next().await.kind, FrameType::Ready);
    let mut clients = Vec::new();
    for i in 1..=64u32 {
        clients.push(UnixStream::connect(h.ssh()).await.unwrap());
        assert_eq!(h.next().await.stream, i);
    }
    let mut extra = UnixStream::connect(h.ssh()).await.unwrap();
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), extra.read_to_end(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert!(buf.is_empty(), "the 65th client must be turned away");
    // Closing one makes room.
    drop(clients.pop());
    assert_eq!(h.next().await, Frame::new(FrameType::Close, 64, vec![]));
    let _again = UnixStream::connect(h.ssh()).await.unwrap();
    assert_eq!(
        h.next().await,
        Frame::new(FrameType::Open, 65, b"ssh-agent".to_vec())
    );
}

/// Finding 8 of the trust review: the gpg home is written only into a private directory of
/// this user, never over a keyring of the container's own, never through a symlink.
#[test]
fn the_gpg_home_is_private_and_follows_no_symlink() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let tmp = tempfile::tempdir().unwrap();
    let victim = tmp.path().join("victim");
    std::fs::write(&victim, "original-root-file").unwrap();
    // Planted by another user (uid 65534) below a world-writable /tmp, with a symlink.
    let planted = tmp.path().join("planted");
    std::fs::create_dir(&planted).unwrap();
    std::os::unix::fs::symlink(&victim, planted.join("gpg.conf")).unwrap();
    std::os::unix::fs::chown(&planted, Some(65534), Some(65534))
        .expect("chown needs root: the suite runs as root");
    let e = clawker_socket_server::install_gpg_home(&planted, b"KEY").unwrap_err();
    assert!(
        format!("{e:#}").contains("not a private directory"),
        "{e:#}"
    );
    assert_eq!(
        std::fs::read_to_string(&victim).unwrap(),
        "original-root-file"
    );
    // Ours but open to others: refused too.
    let open = tmp.path().join("open");
    std::fs::create_dir(&open).unwrap();
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
    assert!(clawker_socket_server::install_gpg_home(&open, b"KEY").is_err());
    // Ours and private, with a symlink in place of gpg.conf: replaced, not followed.
    let mine = tmp.path().join("mine");
    std::fs::create_dir(&mine).unwrap();
    std::fs::set_permissions(&mine, std::fs::Permissions::from_mode(0o700)).unwrap();
    std::os::unix::fs::symlink(&victim, mine.join("gpg.conf")).unwrap();
    clawker_socket_server::install_gpg_home(&mine, b"KEY").unwrap();
    assert_eq!(
        std::fs::read_to_string(&victim).unwrap(),
        "original-root-file"
    );
    assert_eq!(
        std::fs::read_to_string(mine.join("gpg.conf")).unwrap(),
        "no-autostart\n"
    );
    assert_eq!(std::fs::read(mine.join("pubring.gpg")).unwrap(), b"KEY");
    assert_eq!(
        std::fs::metadata(mine.join("pubring.gpg")).unwrap().mode() & 0o777,
        0o600
    );
    // A keyring of the container's own is left alone.
    let own = tmp.path().join("own");
    std::fs::create_dir(&own).unwrap();
    std::fs::set_permissions(&own, std::fs::Permissions::from_mode(0o700)).unwrap();
    std::fs::write(own.join("pubring.kbx"), "theirs").unwrap();
    let e = clawker_socket_server::install_gpg_home(&own, b"KEY").unwrap_err();
    assert!(format!("{e:#}").contains("keyring of its own"), "{e:#}");
    assert_eq!(
        std::fs::read_to_string(own.join("pubring.kbx")).unwrap(),
        "theirs"
    );
    assert!(!own.join("pubring.gpg").exists());
    // Missing: made, 0700.
    let fresh = tmp.path().join("a/b/gnupg");
    clawker_socket_server::install_gpg_home(&fresh, b"KEY").unwrap();
    assert_eq!(std::fs::metadata(&fresh).unwrap().mode() & 0o777, 0o700);
}

/// SPEC.md 6.3 from the container end: the host's HELLO is answered with ours, a stream
/// opened before the answer has no window (upstream's rules), one opened after it sends no
/// more than the host's window until credit comes back, and its client's EOF is an EOF
/// frame that leaves the other direction open.
#[tokio::test]
async fn hello_windows_and_half_close() {
    use clawker_protocol::flow::{Hello, caps, window_payload};
    let mut h = Host::start(false, "10");
    assert_eq!(h.next().await.kind, FrameType::Ready);
    let early = UnixStream::connect(h.ssh()).await.unwrap();
    assert_eq!(h.next().await.stream, 1);
    let small = Hello {
        caps: caps::WINDOW | caps::HALF_CLOSE,
        window: 64 * 1024,
    };
    h.send(FrameType::Hello, 0, &small.encode()).await;
    assert_eq!(
        h.next().await,
        Frame::new(FrameType::Hello, 0, Hello::OURS.encode().to_vec())
    );
    let late = UnixStream::connect(h.ssh()).await.unwrap();
    assert_eq!(h.next().await.stream, 2);
    // 1 MiB from each client: stream 1 sends it all, stream 2 stops at the 64 KiB window.
    let (_early_rd, mut early_wr) = early.into_split();
    let (mut late_rd, mut late_wr) = late.into_split();
    let mib = vec![5u8; 1024 * 1024];
    let (a, b) = (mib.clone(), mib.clone());
    // (Held open: its EOF would end stream 1, which has no half-close.)
    let _early_open = tokio::spawn(async move {
        early_wr.write_all(&a).await.unwrap();
        early_wr
    });
    let late_writer = tokio::spawn(async move {
        late_wr.write_all(&b).await.unwrap();
        late_wr.shutdown().await.unwrap();
        late_wr
    });
    let (mut from_early, mut from_late) = (0usize, 0usize);
    while from_early < mib.len() {
        let f = h.next().await;
        assert_eq!(f.kind, FrameType::Data);
        match f.stream {
            1 => from_early += f.payload.len(),
            _ => from_late += f.payload.len(),
        }
    }
    // Whatever of stream 2 came meanwhile is within its window, and no more comes.
    assert!(
        from_late <= 64 * 1024,
        "{from_late} bytes past a 64 KiB window"
    );
    while from_late < 64 * 1024 {
        let f = h.next().await;
        assert_eq!((f.kind, f.stream), (FrameType::Data, 2));
        from_late += f.payload.len();
    }
    assert_eq!(from_late, 64 * 1024);
    assert!(
        tokio::time::timeout(Duration::from_millis(300), h.frames.next())
            .await
            .is_err(),
        "stream 2 sent past its window"
    );
    // Credit back, a window at a time, until every byte is in; then the client's EOF
    // arrives as EOF, though no credit is left.
    while from_late < mib.len() {
        h.send(FrameType::Window, 2, &window_payload(64 * 1024))
            .await;
        let mut this_window = 0;
        while this_window < 64 * 1024 {
            let f = h.next().await;
            assert_eq!((f.kind, f.stream), (FrameType::Data, 2));
            this_window += f.payload.len();
        }
        assert_eq!(this_window, 64 * 1024, "no more than the credit returned");
        from_late += this_window;
    }
    assert_eq!(h.next().await, Frame::new(FrameType::Eof, 2, vec![]));
    // Half-closed: the host's answer still reaches the client, then the host's EOF.
    h.send(FrameType::Data, 2, b"answer").await;
    h.send(FrameType::Eof, 2, b"").await;
    let mut answer = Vec::new();
    late_rd.read_to_end(&mut answer).await.unwrap();
    assert_eq!(answer, b"answer");
    drop(late_writer.await.unwrap());
    // Both directions over: one CLOSE.
    assert_eq!(h.next().await, Frame::new(FrameType::Close, 2, vec![]));
}
