//! The socket bridge's stream multiplexer, shared by its two ends (`clawker-socket-server`
//! in the container, `hostproxy bridge` on the host).
//!
//! Frames go out through one writer task; frames come in through [`FrameReader`]. Each
//! stream has a bounded queue towards its local socket: a client that stops reading
//! overflows it and loses its stream, never the others'. Each side sends CLOSE for a stream
//! at most once.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::{BufMut, Bytes, BytesMut};
use clawker_protocol::agent::{self, AgentGrant, AgentPolicy, FAILURE_FRAME, Verdict};
use clawker_protocol::bridge::{self, BridgeFrameError, Frame, FrameType};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

#[derive(Debug, thiserror::Error)]
pub enum SocketError {
    #[error("cannot create {0}")]
    Dir(String, #[source] std::io::Error),
    #[error("{0} exists and is not a socket")]
    NotASocket(String),
    #[error("{0} is in use by another process")]
    InUse(String),
    #[error("cannot use {0}")]
    Io(String, #[source] std::io::Error),
}

/// Binds a unix socket only its owner can use: the parent directory is created 0700, the
/// socket is 0600. A stale socket file is replaced; anything that is not a socket, or a
/// socket something still answers on, is left alone and refused.
///
/// Unix only: the container end is Linux, and the host's control socket on Windows is a
/// named pipe (`hostproxy::platform::local`).
#[cfg(unix)]
pub fn bind_private_socket(
    path: &std::path::Path,
) -> Result<tokio::net::UnixListener, SocketError> {
    prepare_private_socket(path)?;
    let shown = || path.display().to_string();
    let listener = tokio::net::UnixListener::bind(path).map_err(|e| SocketError::Io(shown(), e))?;
    restrict_socket(path)?;
    Ok(listener)
}

/// What [`bind_private_socket`] does before it binds: the parent directory created 0700, a
/// stale socket file removed, anything else at `path` refused. For a caller that binds
/// the socket itself (the daemon's control socket, through `interprocess`).
#[cfg(unix)]
pub fn prepare_private_socket(path: &std::path::Path) -> Result<(), SocketError> {
    use std::os::unix::fs::{DirBuilderExt, FileTypeExt};
    let shown = || path.display().to_string();
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| SocketError::Dir(dir.display().to_string(), e))?;
    }
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if !meta.file_type().is_socket() {
            return Err(SocketError::NotASocket(shown()));
        }
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(SocketError::InUse(shown()));
        }
        std::fs::remove_file(path).map_err(|e| SocketError::Io(shown(), e))?;
    }
    Ok(())
}

/// What [`bind_private_socket`] does after it binds: the socket made 0600.
#[cfg(unix)]
pub fn restrict_socket(path: &std::path::Path) -> Result<(), SocketError> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| SocketError::Io(path.display().to_string(), e))
}

/// Streams one bridge carries at once.
pub const MAX_STREAMS: usize = 64;
/// Bytes queued towards one local client before it counts as stalled and loses its stream.
/// The bridge never waits for a stream (one slow stream must not stall the others, SPEC.md
/// section 6), so this is what a client may fall behind by: a client that reads, however
/// slowly, keeps its stream through any burst smaller than this.
pub const STREAM_QUEUE_BYTES: usize = 8 * 1024 * 1024;
/// Bytes queued towards all local clients of one bridge together: what one bridge may hold
/// in memory however many streams fall behind at once. A stream whose delivery would pass
/// it loses its stream, as one past [`STREAM_QUEUE_BYTES`] does.
pub const BRIDGE_QUEUE_BYTES: usize = 32 * 1024 * 1024;
/// Largest DATA payload sent: well under the frame limit, big enough for bulk transfers.
pub const CHUNK: usize = 256 * 1024;

/// Encoded frames on their way to the peer.
pub type Out = mpsc::Sender<Bytes>;

/// Frames queued towards the peer's writer.
const OUT_QUEUE: usize = 256;

/// The queue of encoded frames towards the peer: hand the receiver to [`write_frames`].
pub fn out_channel() -> (Out, mpsc::Receiver<Bytes>) {
    mpsc::channel(OUT_QUEUE)
}

pub fn encode(kind: FrameType, stream: u32, payload: &[u8]) -> Bytes {
    let mut v = Vec::with_capacity(bridge::HEADER_LEN + payload.len());
    // Payloads are at most CHUNK bytes or short control strings: always within the limit.
    let _ = bridge::encode_parts(kind, stream, payload, &mut v);
    v.into()
}

/// Queues one frame; false when the writer is gone.
pub async fn send(out: &Out, kind: FrameType, stream: u32, payload: &[u8]) -> bool {
    out.send(encode(kind, stream, payload)).await.is_ok()
}

/// Writes queued frames to the peer, flushing whenever the queue runs dry; shuts the
/// output down when every sender is gone.
pub async fn write_frames<W: AsyncWrite + Unpin>(
    mut output: W,
    mut rx: mpsc::Receiver<Bytes>,
) -> std::io::Result<()> {
    while let Some(bytes) = rx.recv().await {
        output.write_all(&bytes).await?;
        if rx.is_empty() {
            output.flush().await?;
        }
    }
    output.flush().await?;
    output.shutdown().await
}

#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error(transparent)]
    Frame(BridgeFrameError),
    #[error("cannot read the bridge")]
    Io(#[source] std::io::Error),
    #[error("the bridge ended in the middle of a frame")]
    Truncated,
}

/// Reads bridge frames from a byte stream; "not enough bytes yet" is not an error.
#[derive(Debug)]
pub struct FrameReader<R> {
    inner: R,
    buf: Vec<u8>,
    start: usize,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    pub fn new(inner: R) -> Self {
        Self {
            inner,
            buf: Vec::with_capacity(CHUNK * 2),
            start: 0,
        }
    }

    /// The next frame, `Ok(None)` at a clean end of input.
    pub async fn next(&mut self) -> Result<Option<Frame>, ReadError> {
        loop {
            if let Some((frame, used)) =
                bridge::decode(&self.buf[self.start..]).map_err(ReadError::Frame)?
            {
                self.start += used;
                if self.start == self.buf.len() {
                    self.buf.clear();
                    self.start = 0;
                }
                return Ok(Some(frame));
            }
            if self.start > 0 {
                self.buf.drain(..self.start);
                self.start = 0;
            }
            let mut chunk = [0u8; 64 * 1024];
            let n = self.inner.read(&mut chunk).await.map_err(ReadError::Io)?;
            if n == 0 {
                return if self.buf.is_empty() {
                    Ok(None)
                } else {
                    Err(ReadError::Truncated)
                };
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}

#[derive(Debug)]
struct Entry {
    tx: mpsc::UnboundedSender<Bytes>,
    /// Bytes in `tx` not yet taken by the pump; bounded by [`STREAM_QUEUE_BYTES`].
    queued: Arc<AtomicUsize>,
    /// Set once this side has sent CLOSE for the stream.
    closed: Arc<AtomicBool>,
}

/// What a stream's pump takes DATA from.
#[derive(Debug)]
pub struct StreamRx {
    rx: mpsc::UnboundedReceiver<Bytes>,
    queued: Arc<AtomicUsize>,
    total: Arc<AtomicUsize>,
}

impl StreamRx {
    /// The next chunk, `None` once the stream is gone from the registry.
    pub async fn recv(&mut self) -> Option<Bytes> {
        let chunk = self.rx.recv().await?;
        self.queued.fetch_sub(chunk.len(), Ordering::SeqCst);
        self.total.fetch_sub(chunk.len(), Ordering::SeqCst);
        Some(chunk)
    }
}

impl Drop for StreamRx {
    fn drop(&mut self) {
        // What is still queued leaves the bridge's budget with the stream.
        self.total
            .fetch_sub(self.queued.swap(0, Ordering::SeqCst), Ordering::SeqCst);
    }
}

/// Why a stream could not be registered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum InsertError {
    #[error("the bridge already carries {MAX_STREAMS} streams")]
    Full,
    #[error("stream {0} is already open")]
    Duplicate(u32),
}

/// A registered stream's end: what its pump reads from and its CLOSE flag.
#[derive(Debug)]
pub struct StreamEnd {
    pub id: u32,
    pub rx: StreamRx,
    pub closed: Arc<AtomicBool>,
}

/// The live streams of one bridge, and the bytes queued towards all of them.
#[derive(Debug, Clone, Default)]
pub struct Streams {
    map: Arc<Mutex<HashMap<u32, Entry>>>,
    total: Arc<AtomicUsize>,
}

impl Streams {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u32, Entry>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Bytes queued towards the local clients of this bridge.
    pub fn queued(&self) -> usize {
        self.total.load(Ordering::SeqCst)
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Registers stream `id` (the peer's), unless [`MAX_STREAMS`] are live; an id already
    /// open is refused, never replaced.
    pub fn insert(&self, id: u32) -> Result<StreamEnd, InsertError> {
        self.insert_with(|| id)
    }

    /// Registers a stream under the next id of `next` (taken only when there is room).
    pub fn insert_next(&self, next: &std::sync::atomic::AtomicU32) -> Option<StreamEnd> {
        self.insert_with(|| next.fetch_add(1, Ordering::SeqCst))
            .ok()
    }

    fn insert_with(&self, id: impl FnOnce() -> u32) -> Result<StreamEnd, InsertError> {
        let mut map = self.lock();
        if map.len() >= MAX_STREAMS {
            return Err(InsertError::Full);
        }
        let id = id();
        if map.contains_key(&id) {
            return Err(InsertError::Duplicate(id));
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let queued = Arc::new(AtomicUsize::new(0));
        let closed = Arc::new(AtomicBool::new(false));
        map.insert(
            id,
            Entry {
                tx,
                queued: queued.clone(),
                closed: closed.clone(),
            },
        );
        Ok(StreamEnd {
            id,
            rx: StreamRx {
                rx,
                queued,
                total: self.total.clone(),
            },
            closed,
        })
    }

    /// DATA from the peer for stream `id`; unknown streams are ignored. Never waits: a
    /// stream whose client is more than [`STREAM_QUEUE_BYTES`] behind is closed (CLOSE sent).
    pub async fn deliver(&self, out: &Out, id: u32, payload: Bytes) {
        let stalled = {
            let mut map = self.lock();
            let Some(e) = map.get(&id) else { return };
            let n = payload.len();
            if e.queued.load(Ordering::SeqCst) + n <= STREAM_QUEUE_BYTES
                && self.total.load(Ordering::SeqCst) + n <= BRIDGE_QUEUE_BYTES
            {
                e.queued.fetch_add(n, Ordering::SeqCst);
                self.total.fetch_add(n, Ordering::SeqCst);
                // A send error means the pump has ended; the stream is on its way out.
                let _ = e.tx.send(payload);
                return;
            }
            map.remove(&id)
        };
        if let Some(e) = stalled
            && !e.closed.swap(true, Ordering::SeqCst)
        {
            send(out, FrameType::Close, id, &[]).await;
        }
    }

    /// CLOSE from the peer: the stream ends; answered with CLOSE unless one was sent already.
    pub async fn close_from_peer(&self, out: &Out, id: u32) {
        let entry = self.lock().remove(&id);
        if let Some(e) = entry
            && !e.closed.swap(true, Ordering::SeqCst)
        {
            send(out, FrameType::Close, id, &[]).await;
        }
    }

    /// Drops every stream (their pumps end, their sockets close).
    pub fn clear(&self) {
        self.lock().clear();
    }

    /// Ends stream `id` from this side (its local connection failed): CLOSE once.
    pub async fn close_local(&self, out: &Out, id: u32) {
        let entry = self.lock().remove(&id);
        if let Some(e) = entry
            && !e.closed.swap(true, Ordering::SeqCst)
        {
            send(out, FrameType::Close, id, &[]).await;
        }
    }

    fn remove(&self, id: u32) {
        self.lock().remove(&id);
    }
}

/// Told of every agent request the filter decided on (the body, the verdict, and why it
/// was refused).
pub type OnDecision = Arc<dyn Fn(&[u8], Verdict, Option<&str>) + Send + Sync>;

/// The SSH agent filter of a stream — the policy and what the stream's identity holds
/// (`AgentPolicy::decide_for`, the same filter as the HTTP route's) — and who to tell of
/// its decisions (the audit log).
#[derive(Clone)]
pub struct AgentFilter {
    pub policy: AgentPolicy,
    pub grant: AgentGrant,
    pub on_decision: Option<OnDecision>,
}

impl std::fmt::Debug for AgentFilter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentFilter")
            .field("policy", &self.policy)
            .field("grant", &self.grant)
            .finish_non_exhaustive()
    }
}

/// Pumps one stream between its local socket and the peer until either side ends, then
/// sends CLOSE once. With `filter`, bytes towards the socket are SSH agent requests: each
/// refused one is answered `SSH_AGENT_FAILURE` by the bridge, in its place among the
/// agent's replies (after those of the requests before it), and a malformed or oversized
/// frame ends the stream.
pub async fn pump<S>(
    conn: S,
    end: StreamEnd,
    filter: Option<AgentFilter>,
    out: Out,
    streams: Streams,
) where
    S: AsyncRead + AsyncWrite + Send,
{
    let StreamEnd { id, mut rx, closed } = end;
    let (mut rd, mut wr) = tokio::io::split(conn);
    // Requests forwarded to the agent and replies it has sent back, counted so that a
    // FAILURE made here waits for the replies still owed before it.
    let forwarded = AtomicUsize::new(0);
    let (replied_tx, mut replied_rx) = tokio::sync::watch::channel(0usize);
    // With a key-scoped grant, the kinds of the requests forwarded, in order: the agent's
    // reply to a REQUEST_IDENTITIES is cut down to the granted keys on its way back.
    let keys = filter.as_ref().and_then(|f| f.grant.keys.clone());
    let asked: std::sync::Mutex<std::collections::VecDeque<u8>> = Default::default();
    let to_local = async {
        let mut pending: Vec<u8> = Vec::new();
        while let Some(buf) = rx.recv().await {
            let Some(AgentFilter {
                policy,
                grant,
                on_decision,
            }) = &filter
            else {
                if wr.write_all(&buf).await.is_err() {
                    return;
                }
                continue;
            };
            pending.extend_from_slice(&buf);
            loop {
                let n = match agent::frame_len(&pending) {
                    Ok(Some(n)) => n,
                    Ok(None) => break,
                    Err(_) => return,
                };
                let frame: Vec<u8> = pending.drain(..4 + n).collect();
                let (verdict, why) = policy.decide_for(&frame[4..], grant);
                if let Some(tell) = on_decision {
                    tell(&frame[4..], verdict, why);
                }
                let ok = match verdict {
                    Verdict::Forward => {
                        if keys.is_some() {
                            asked
                                .lock()
                                .unwrap_or_else(|p| p.into_inner())
                                .push_back(frame[4]);
                        }
                        forwarded.fetch_add(1, Ordering::SeqCst);
                        wr.write_all(&frame).await.is_ok()
                    }
                    Verdict::Refuse => {
                        let owed = forwarded.load(Ordering::SeqCst);
                        replied_rx.wait_for(|r| *r >= owed).await.is_ok()
                            && send(&out, FrameType::Data, id, &FAILURE_FRAME).await
                    }
                };
                if !ok {
                    return;
                }
            }
        }
    };
    let from_local = async {
        if let Some(keys) = &keys {
            // Key-scoped: whole replies, each matched with its request; an identities answer
            // lists the granted keys only (the HTTP route's `filter_identities`).
            let mut pending: Vec<u8> = Vec::new();
            let mut chunk = vec![0u8; CHUNK];
            loop {
                let n = match rd.read(&mut chunk).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => n,
                };
                pending.extend_from_slice(&chunk[..n]);
                loop {
                    let len = match agent::frame_len(&pending) {
                        Ok(Some(len)) => len,
                        Ok(None) => break,
                        Err(_) => return,
                    };
                    let reply: Vec<u8> = pending.drain(..4 + len).collect();
                    let kind = asked.lock().unwrap_or_else(|p| p.into_inner()).pop_front();
                    let reply = if kind == Some(agent::msg::REQUEST_IDENTITIES) {
                        agent::filter_identities(&reply, keys)
                    } else {
                        reply
                    };
                    if !send(&out, FrameType::Data, id, &reply).await {
                        return;
                    }
                    replied_tx.send_modify(|r| *r += 1);
                }
            }
        }
        // Each DATA frame is read in place behind room for its header and handed to the
        // writer as is; once the writer has dropped it, `reserve` takes the same allocation
        // back, so a bulk transfer neither copies nor allocates per chunk.
        let mut buf = BytesMut::new();
        let mut replies = ReplyCounter::default();
        loop {
            buf.reserve(bridge::HEADER_LEN + CHUNK);
            buf.put_bytes(0, bridge::HEADER_LEN);
            let n = match rd.read_buf(&mut (&mut buf).limit(CHUNK)).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            let Ok(header) = bridge::header(FrameType::Data, id, n) else {
                break; // unreachable: n ≤ CHUNK
            };
            buf[..bridge::HEADER_LEN].copy_from_slice(&header);
            let whole = if filter.is_some() {
                replies.feed(&buf[bridge::HEADER_LEN..])
            } else {
                0
            };
            if out.send(buf.split().freeze()).await.is_err() {
                break;
            }
            if whole > 0 {
                replied_tx.send_modify(|r| *r += whole);
            }
        }
    };
    tokio::select! {
        () = to_local => {}
        () = from_local => {}
    }
    streams.remove(id);
    if !closed.swap(true, Ordering::SeqCst) {
        send(&out, FrameType::Close, id, &[]).await;
    }
}

/// Counts whole agent frames in a byte stream cut anywhere (the agent's replies).
#[derive(Debug, Default)]
struct ReplyCounter {
    head: Vec<u8>,
    rest: usize,
}

impl ReplyCounter {
    /// Takes the next bytes; returns how many frames they completed.
    fn feed(&mut self, mut bytes: &[u8]) -> usize {
        let mut whole = 0;
        while !bytes.is_empty() {
            if self.rest > 0 {
                let take = self.rest.min(bytes.len());
                self.rest -= take;
                bytes = &bytes[take..];
                if self.rest == 0 {
                    whole += 1;
                }
                continue;
            }
            let need = 4 - self.head.len();
            let take = need.min(bytes.len());
            self.head.extend_from_slice(&bytes[..take]);
            bytes = &bytes[take..];
            if self.head.len() == 4 {
                let mut len = [0u8; 4];
                len.copy_from_slice(&self.head);
                self.head.clear();
                self.rest = u32::from_be_bytes(len) as usize;
                if self.rest == 0 {
                    whole += 1;
                }
            }
        }
        whole
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU32;

    fn drain(rx: &mut mpsc::Receiver<Bytes>) -> Vec<Frame> {
        let mut out = Vec::new();
        while let Ok(bytes) = rx.try_recv() {
            out.push(bridge::decode(&bytes).unwrap().unwrap().0);
        }
        out
    }

    #[test]
    fn replies_are_counted_however_they_are_cut() {
        let mut c = ReplyCounter::default();
        let two = [agent::frame(&[5]), agent::frame(&[12, 0, 0, 0, 0])].concat();
        assert_eq!(c.feed(&two), 2);
        let mut c = ReplyCounter::default();
        let got: usize = two.iter().map(|b| c.feed(std::slice::from_ref(b))).sum();
        assert_eq!(got, 2, "byte by byte");
    }

    #[tokio::test]
    async fn a_duplicate_open_is_refused_and_the_budget_spans_every_stream() {
        let streams = Streams::default();
        let _a = streams.insert(1).unwrap();
        assert_eq!(streams.insert(1).unwrap_err(), InsertError::Duplicate(1));
        let (out, mut out_rx) = out_channel();
        // Four streams each just under their own limit; the next delivery would pass the
        // bridge's budget, and that stream alone is closed.
        let ends: Vec<_> = (2..7).map(|i| streams.insert(i).unwrap()).collect();
        let chunk = Bytes::from(vec![0u8; STREAM_QUEUE_BYTES - 1]);
        for i in 2..6 {
            streams.deliver(&out, i, chunk.clone()).await;
        }
        assert_eq!(streams.queued(), 4 * chunk.len());
        streams
            .deliver(&out, 6, Bytes::from(vec![0u8; 1024 * 1024]))
            .await;
        let close = out_rx
            .try_recv()
            .expect("CLOSE for the stream over the budget");
        assert_eq!(close, encode(FrameType::Close, 6, &[]));
        assert!(out_rx.try_recv().is_err(), "only that stream");
        drop(ends);
        assert_eq!(streams.queued(), 0, "dropped streams leave the budget");
    }

    #[tokio::test]
    async fn private_sockets() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/agent.sock");
        let live = bind_private_socket(&path).unwrap();
        let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(path.parent().unwrap()), 0o700);
        assert!(
            matches!(bind_private_socket(&path), Err(SocketError::InUse(_))),
            "a live socket is not stolen"
        );
        drop(live);
        bind_private_socket(&path).expect("a stale socket is replaced");
        let file = dir.path().join("plain");
        std::fs::write(&file, "keep me").unwrap();
        assert!(matches!(
            bind_private_socket(&file),
            Err(SocketError::NotASocket(_))
        ));
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "keep me");
    }

    #[tokio::test]
    async fn cap_ids_stall_and_close_once() {
        let streams = Streams::default();
        let next = AtomicU32::new(1);
        let mut ends: Vec<StreamEnd> = (0..MAX_STREAMS)
            .map(|_| streams.insert_next(&next).unwrap())
            .collect();
        assert!(streams.insert_next(&next).is_none());
        assert_eq!(
            next.load(Ordering::SeqCst),
            MAX_STREAMS as u32 + 1,
            "a refused stream takes no id"
        );
        let (out, mut rx) = mpsc::channel(1024);
        // Stream 1 never drains its queue: it holds exactly the limit, the next chunk closes
        // it, once, and a later one is ignored.
        let mib = Bytes::from(vec![0u8; 1024 * 1024]);
        for _ in 0..STREAM_QUEUE_BYTES / mib.len() {
            streams.deliver(&out, 1, mib.clone()).await;
        }
        assert!(drain(&mut rx).is_empty(), "at the limit, not over it");
        streams.deliver(&out, 1, Bytes::from_static(b"\0")).await;
        streams.deliver(&out, 1, Bytes::from_static(b"\0")).await;
        assert_eq!(
            drain(&mut rx),
            vec![Frame::new(FrameType::Close, 1, vec![])]
        );
        assert!(ends[0].closed.load(Ordering::SeqCst));
        // CLOSE from the peer is answered once; a second one, or one for an unknown id, is not.
        streams.close_from_peer(&out, 2).await;
        streams.close_from_peer(&out, 2).await;
        streams.close_from_peer(&out, 999).await;
        assert_eq!(
            drain(&mut rx),
            vec![Frame::new(FrameType::Close, 2, vec![])]
        );
        // Stream 3 still gets its data.
        streams.deliver(&out, 3, Bytes::from_static(b"x")).await;
        assert_eq!(ends[2].rx.recv().await.unwrap(), &b"x"[..]);
        assert_eq!(streams.len(), MAX_STREAMS - 2);
    }

    // Paused time: the sleeps below advance a virtual clock, so who is ahead is exact.
    #[tokio::test(start_paused = true)]
    async fn a_slow_reader_keeps_its_stream_through_a_burst() {
        use std::time::Duration;
        let streams = Streams::default();
        let mut end = streams.insert(1).unwrap();
        let (out, mut rx) = mpsc::channel(16);
        // 12 MiB, more than the queue holds, arriving every 1 ms; the client takes 1.5 ms a
        // chunk, so it ends up 4 MiB behind: slow, but reading.
        let chunk = Bytes::from(vec![7u8; 512 * 1024]);
        let burst = 24;
        assert!(burst * chunk.len() > STREAM_QUEUE_BYTES);
        let reader = tokio::spawn(async move {
            let mut got = 0;
            while let Some(c) = end.rx.recv().await {
                assert_eq!(c.len(), 512 * 1024);
                got += 1;
                tokio::time::sleep(Duration::from_micros(1500)).await;
            }
            got
        });
        for _ in 0..burst {
            streams.deliver(&out, 1, chunk.clone()).await;
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        assert!(rx.try_recv().is_err(), "no CLOSE for a client that reads");
        // The peer closes; what was queued still reaches the client before its pump ends.
        streams.clear();
        assert_eq!(reader.await.unwrap(), burst, "every chunk arrived");
    }
}
