//! The live streams of one bridge: what each is queued, its window (SPEC.md 6.3) and its
//! half-close, and the CLOSE each side sends at most once.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use clawker_protocol::bridge::FrameType;
use clawker_protocol::flow::{self, Agreed, Credit, FlowError, Intake};
use tokio::sync::{Notify, mpsc};

use crate::{BRIDGE_QUEUE_BYTES, CHUNK, MAX_STREAMS, Out, STREAM_QUEUE_BYTES, send};

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// What the peer sent for a stream, in order.
#[derive(Debug)]
pub(crate) enum Incoming {
    Data(Bytes),
    /// The peer sends no more (half-close): shut the local socket's write side.
    Eof,
}

/// One flow-controlled stream's windows: the credit this side may still send, and what it
/// took in from the peer and owes back.
#[derive(Debug)]
pub(crate) struct Flow {
    credit: Mutex<Credit>,
    /// Woken when credit comes back.
    more: Notify,
    intake: Mutex<Intake>,
}

impl Flow {
    fn new(windows: flow::Windows) -> Self {
        Self {
            credit: Mutex::new(Credit::new(windows.send)),
            more: Notify::new(),
            intake: Mutex::new(Intake::new(windows.receive)),
        }
    }

    /// The largest frame payload this stream may send at once.
    pub(crate) fn piece(&self) -> usize {
        (lock(&self.credit).max() as usize).min(CHUNK)
    }

    /// Credit there now (at most `CHUNK`), without waiting or taking it.
    pub(crate) fn room_now(&self) -> usize {
        (lock(&self.credit).available() as usize).min(CHUNK)
    }

    /// Takes `n` bytes of credit if they are there now.
    pub(crate) fn try_take(&self, n: usize) -> bool {
        u32::try_from(n).is_ok_and(|n| lock(&self.credit).take(n))
    }

    /// Waits until there is credit, and takes as much of it as there is, up to `want`.
    pub(crate) async fn take_up_to(&self, want: usize) -> usize {
        let want = u32::try_from(want).unwrap_or(u32::MAX);
        loop {
            let more = self.more.notified();
            tokio::pin!(more);
            more.as_mut().enable();
            {
                let mut credit = lock(&self.credit);
                let n = credit.available().min(want);
                if n > 0 && credit.take(n) {
                    return n as usize;
                }
            }
            more.await;
        }
    }

    /// `n` bytes were handed to the local client: the credit to return now, if any.
    pub(crate) fn handed_on(&self, n: usize) -> Option<u32> {
        lock(&self.intake).hand_on(n)
    }
}

#[derive(Debug)]
struct Entry {
    tx: mpsc::UnboundedSender<Incoming>,
    /// Bytes in `tx` not yet taken by the pump; bounded by [`STREAM_QUEUE_BYTES`] for a
    /// stream without a window, by the window for one with.
    queued: Arc<AtomicUsize>,
    /// Set once this side has sent CLOSE for the stream.
    closed: Arc<AtomicBool>,
    flow: Option<Arc<Flow>>,
    half_close: bool,
    /// Set once the peer said EOF: DATA after it is a protocol error.
    peer_eof: bool,
}

/// What a stream's pump takes from the peer.
#[derive(Debug)]
pub struct StreamRx {
    rx: mpsc::UnboundedReceiver<Incoming>,
    queued: Arc<AtomicUsize>,
    total: Arc<AtomicUsize>,
}

impl StreamRx {
    /// The next chunk or EOF, `None` once the stream is gone from the registry.
    pub(crate) async fn recv(&mut self) -> Option<Incoming> {
        let item = self.rx.recv().await?;
        if let Incoming::Data(chunk) = &item {
            self.queued.fetch_sub(chunk.len(), Ordering::SeqCst);
            self.total.fetch_sub(chunk.len(), Ordering::SeqCst);
        }
        Some(item)
    }

    /// The next chunk of data; `None` at EOF or once the stream is gone.
    pub async fn recv_data(&mut self) -> Option<Bytes> {
        match self.recv().await? {
            Incoming::Data(b) => Some(b),
            Incoming::Eof => None,
        }
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

/// A registered stream's end: what its pump reads from, its CLOSE flag, its window and
/// whether it may be half-closed.
#[derive(Debug)]
pub struct StreamEnd {
    pub id: u32,
    pub rx: StreamRx,
    pub closed: Arc<AtomicBool>,
    pub(crate) flow: Option<Arc<Flow>>,
    pub(crate) half_close: bool,
}

/// The live streams of one bridge, and the bytes queued towards all of them.
#[derive(Debug, Clone, Default)]
pub struct Streams {
    map: Arc<Mutex<HashMap<u32, Entry>>>,
    total: Arc<AtomicUsize>,
}

impl Streams {
    /// Bytes queued towards the local clients of this bridge.
    pub fn queued(&self) -> usize {
        self.total.load(Ordering::SeqCst)
    }

    pub fn len(&self) -> usize {
        lock(&self.map).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Registers stream `id` (the peer's), unless [`MAX_STREAMS`] are live; an id already
    /// open is refused, never replaced. `agreed`: what the HELLOs gave streams opened now.
    pub fn insert(&self, id: u32, agreed: Agreed) -> Result<StreamEnd, InsertError> {
        self.insert_with(|| id, agreed)
    }

    /// Registers a stream under the next id of `next` (taken only when there is room).
    pub fn insert_next(&self, next: &AtomicU32, agreed: Agreed) -> Option<StreamEnd> {
        self.insert_with(|| next.fetch_add(1, Ordering::SeqCst), agreed)
            .ok()
    }

    fn insert_with(
        &self,
        id: impl FnOnce() -> u32,
        agreed: Agreed,
    ) -> Result<StreamEnd, InsertError> {
        let mut map = lock(&self.map);
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
        let flow = agreed.window.map(|w| Arc::new(Flow::new(w)));
        map.insert(
            id,
            Entry {
                tx,
                queued: queued.clone(),
                closed: closed.clone(),
                flow: flow.clone(),
                half_close: agreed.half_close,
                peer_eof: false,
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
            flow,
            half_close: agreed.half_close,
        })
    }

    /// DATA from the peer for stream `id`; unknown streams are ignored. Never waits. A
    /// stream with a window takes what the window allows and closes on a peer that sends
    /// more; a stream without one (upstream's container end) is closed when its client is
    /// more than [`STREAM_QUEUE_BYTES`] behind. CLOSE is sent for a stream closed here.
    pub async fn deliver(&self, out: &Out, id: u32, payload: Bytes) {
        let refused = {
            let mut map = lock(&self.map);
            let Some(e) = map.get(&id) else { return };
            let n = payload.len();
            let room = match (&e.flow, e.peer_eof) {
                // DATA after EOF, or past the window: the peer broke the protocol.
                (_, true) => Err(()),
                (Some(f), false) => lock(&f.intake).receive(n).map_err(|_| ()),
                (None, false) => {
                    if e.queued.load(Ordering::SeqCst) + n <= STREAM_QUEUE_BYTES
                        && self.total.load(Ordering::SeqCst) + n <= BRIDGE_QUEUE_BYTES
                    {
                        Ok(())
                    } else {
                        Err(())
                    }
                }
            };
            match room {
                Ok(()) => {
                    e.queued.fetch_add(n, Ordering::SeqCst);
                    self.total.fetch_add(n, Ordering::SeqCst);
                    // A send error means the pump has ended; the stream is on its way out.
                    let _ = e.tx.send(Incoming::Data(payload));
                    return;
                }
                Err(()) => map.remove(&id),
            }
        };
        self.close_entry(out, id, refused).await;
    }

    /// WINDOW from the peer: credit back for stream `id`. More than is in flight, or a
    /// WINDOW for a stream without one, closes the stream.
    pub async fn window_from_peer(&self, out: &Out, id: u32, payload: &[u8]) {
        let refused = {
            let mut map = lock(&self.map);
            let Some(e) = map.get(&id) else { return };
            let granted = match &e.flow {
                Some(f) => flow::parse_window(payload).and_then(|n| lock(&f.credit).grant(n)),
                None => Err(FlowError::BadWindowFrame(payload.len())),
            };
            match granted {
                Ok(()) => {
                    if let Some(f) = &e.flow {
                        f.more.notify_waiters();
                    }
                    return;
                }
                Err(_) => map.remove(&id),
            }
        };
        self.close_entry(out, id, refused).await;
    }

    /// EOF from the peer: after what is queued, the local client's write side is shut.
    /// On a stream that may not be half-closed it is a protocol error that closes it.
    pub async fn eof_from_peer(&self, out: &Out, id: u32) {
        let refused = {
            let mut map = lock(&self.map);
            let Some(e) = map.get_mut(&id) else { return };
            if e.half_close && !e.peer_eof {
                e.peer_eof = true;
                let _ = e.tx.send(Incoming::Eof);
                return;
            }
            map.remove(&id)
        };
        self.close_entry(out, id, refused).await;
    }

    /// CLOSE from the peer: the stream ends; answered with CLOSE unless one was sent already.
    pub async fn close_from_peer(&self, out: &Out, id: u32) {
        let entry = lock(&self.map).remove(&id);
        self.close_entry(out, id, entry).await;
    }

    /// Ends stream `id` from this side (its local connection failed): CLOSE once.
    pub async fn close_local(&self, out: &Out, id: u32) {
        let entry = lock(&self.map).remove(&id);
        self.close_entry(out, id, entry).await;
    }

    async fn close_entry(&self, out: &Out, id: u32, entry: Option<Entry>) {
        if let Some(e) = entry
            && !e.closed.swap(true, Ordering::SeqCst)
        {
            send(out, FrameType::Close, id, &[]).await;
        }
    }

    /// A stream's frame from the peer (DATA, CLOSE, WINDOW, EOF) handed to its stream; false
    /// for any other type, which the caller handles.
    pub async fn on_frame(&self, out: &Out, kind: FrameType, id: u32, payload: Bytes) -> bool {
        match kind {
            FrameType::Data => self.deliver(out, id, payload).await,
            FrameType::Close => self.close_from_peer(out, id).await,
            FrameType::Window => self.window_from_peer(out, id, &payload).await,
            FrameType::Eof => self.eof_from_peer(out, id).await,
            _ => return false,
        }
        true
    }

    /// Drops every stream (their pumps end, their sockets close).
    pub fn clear(&self) {
        lock(&self.map).clear();
    }

    pub(crate) fn remove(&self, id: u32) {
        lock(&self.map).remove(&id);
    }
}
