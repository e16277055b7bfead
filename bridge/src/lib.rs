//! The socket bridge's stream multiplexer, shared by its two ends (`clawker-socket-server`
//! in the container, `hostproxy bridge` on the host).
//!
//! Frames go out through one writer task; frames come in through [`FrameReader`]. Between
//! our two ends every stream opened after the HELLOs (`clawker_protocol::flow`, SPEC.md
//! 6.3) has a window: its sender never has more than the window in flight, so a slow
//! client slows only its own stream and loses nothing, and it may be closed in one
//! direction (EOF). A stream without one (upstream's container end) has a bounded queue
//! towards its local socket: a client that stops reading overflows it and loses its
//! stream, never the others'. Each side sends CLOSE for a stream at most once.
//!
//! `socket` (private unix sockets) → `streams` (the registry, windows) ← `pump` (one
//! stream's two directions); this file: the frames in and out.

use bytes::Bytes;
use clawker_protocol::bridge::{self, BridgeFrameError, Frame, FrameType};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

mod pump;
#[cfg(unix)]
mod quiet;
mod socket;
mod streams;

pub use pump::{AgentFilter, OnDecision, pump};
#[cfg(unix)]
pub use quiet::QuietStream;
pub use socket::*;
pub use streams::{InsertError, StreamEnd, StreamRx, Streams};

/// Streams one bridge carries at once.
pub const MAX_STREAMS: usize = 64;
/// Bytes queued towards one local client of a stream without a window (upstream's
/// container end) before it counts as stalled and loses its stream. The bridge never waits
/// for a stream (one slow stream must not stall the others, SPEC.md section 6), so this is
/// what such a client may fall behind by: one that reads, however slowly, keeps its stream
/// through any burst smaller than this.
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

#[cfg(test)]
mod tests {
    use super::*;
    use clawker_protocol::flow::Agreed;
    use std::sync::atomic::{AtomicU32, Ordering};

    /// A stream opened before the HELLOs, or with upstream's container end.
    const LEGACY: Agreed = Agreed {
        window: None,
        half_close: false,
    };

    fn drain(rx: &mut mpsc::Receiver<Bytes>) -> Vec<Frame> {
        let mut out = Vec::new();
        while let Ok(bytes) = rx.try_recv() {
            out.push(bridge::decode(&bytes).unwrap().unwrap().0);
        }
        out
    }

    #[tokio::test]
    async fn a_duplicate_open_is_refused_and_the_budget_spans_every_stream() {
        let streams = Streams::default();
        let _a = streams.insert(1, LEGACY).unwrap();
        assert_eq!(
            streams.insert(1, LEGACY).unwrap_err(),
            InsertError::Duplicate(1)
        );
        let (out, mut out_rx) = out_channel();
        // Four streams each just under their own limit; the next delivery would pass the
        // bridge's budget, and that stream alone is closed.
        let ends: Vec<_> = (2..7).map(|i| streams.insert(i, LEGACY).unwrap()).collect();
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
            .map(|_| streams.insert_next(&next, LEGACY).unwrap())
            .collect();
        assert!(streams.insert_next(&next, LEGACY).is_none());
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
        assert_eq!(ends[2].rx.recv_data().await.unwrap(), &b"x"[..]);
        assert_eq!(streams.len(), MAX_STREAMS - 2);
    }

    // Paused time: the sleeps below advance a virtual clock, so who is ahead is exact.
    #[tokio::test(start_paused = true)]
    async fn a_slow_reader_keeps_its_stream_through_a_burst() {
        use std::time::Duration;
        let streams = Streams::default();
        let mut end = streams.insert(1, LEGACY).unwrap();
        let (out, mut rx) = mpsc::channel(16);
        // 12 MiB, more than the queue holds, arriving every 1 ms; the client takes 1.5 ms a
        // chunk, so it ends up 4 MiB behind: slow, but reading.
        let chunk = Bytes::from(vec![7u8; 512 * 1024]);
        let burst = 24;
        assert!(burst * chunk.len() > STREAM_QUEUE_BYTES);
        let reader = tokio::spawn(async move {
            let mut got = 0;
            while let Some(c) = end.rx.recv_data().await {
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
