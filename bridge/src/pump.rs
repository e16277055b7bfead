//! One stream's pump: its local socket on one side, the peer's frames on the other, the SSH
//! agent filter between them on the host end, and the window and half-close of SPEC.md 6.3.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use bytes::{BufMut, BytesMut};
use clawker_protocol::agent::{self, AgentGrant, AgentPolicy, FAILURE_FRAME, Verdict};
use clawker_protocol::bridge::{self, FrameType};
use clawker_protocol::flow;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::streams::{Flow, Incoming, StreamEnd, Streams};
use crate::{CHUNK, Out, send};

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

/// What a stream's first read asks for, and again after a read that did not fill its ask.
const FIRST_READ: usize = 16 * 1024;

/// The sending side of one stream: every DATA frame within the peer's window.
struct Sender<'a> {
    id: u32,
    out: &'a Out,
    flow: Option<&'a Flow>,
}

impl Sender<'_> {
    /// How much to read for the next frame: the credit there now; with none, one piece
    /// (read ahead and held here until credit comes, so an EOF is seen without credit).
    fn room(&self) -> usize {
        match self.flow {
            Some(f) => match f.room_now() {
                0 => f.piece(),
                n => n,
            },
            None => CHUNK,
        }
    }

    /// Takes credit for a frame of `n` bytes if it is there now (always, without a window).
    fn try_take(&self, n: usize) -> bool {
        self.flow.is_none_or(|f| f.try_take(n))
    }

    /// Sends `payload` as DATA, in pieces as credit comes; false when the writer is gone.
    async fn data(&self, mut payload: &[u8]) -> bool {
        while !payload.is_empty() {
            // Never more than a frame carries, whatever window the peer announced.
            let want = payload.len().min(CHUNK);
            let n = match self.flow {
                Some(f) => f.take_up_to(want).await,
                None => want,
            };
            let (part, rest) = payload.split_at(n);
            if !send(self.out, FrameType::Data, self.id, part).await {
                return false;
            }
            payload = rest;
        }
        true
    }
}

/// How one direction of a pump ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ended {
    /// The stream is over (an error, the local socket gone, the stream closed).
    Stream,
    /// Both directions are closed (EOF sent and EOF received and passed on).
    Both,
}

/// Pumps one stream between its local socket and the peer until it ends, then sends CLOSE
/// once. A stream that may be half-closed sends EOF when its local socket's read side
/// ends and shuts the socket's write side when the peer's EOF comes, and ends once both
/// have happened; any other end of either side ends it at once. With `filter`, bytes
/// towards the socket are SSH agent requests: each refused one is answered
/// `SSH_AGENT_FAILURE` by the bridge, in its place among the agent's replies (after those
/// of the requests before it), and a malformed or oversized frame ends the stream.
pub async fn pump<S>(
    conn: S,
    end: StreamEnd,
    filter: Option<AgentFilter>,
    out: Out,
    streams: Streams,
) where
    S: AsyncRead + AsyncWrite + Send,
{
    let StreamEnd {
        id,
        mut rx,
        closed,
        flow,
        half_close,
    } = end;
    let sender = Sender {
        id,
        out: &out,
        flow: flow.as_deref(),
    };
    let (mut rd, mut wr) = tokio::io::split(conn);
    // Which halves are over, for a stream that may be half-closed.
    let (sent_eof, got_eof) = (AtomicBool::new(false), AtomicBool::new(false));
    // Requests forwarded to the agent and replies it has sent back, counted so that a
    // FAILURE made here waits for the replies still owed before it.
    let forwarded = AtomicUsize::new(0);
    let (replied_tx, mut replied_rx) = tokio::sync::watch::channel(0usize);
    // With a key-scoped grant, the kinds of the requests forwarded, in order: the agent's
    // reply to a REQUEST_IDENTITIES is cut down to the granted keys on its way back.
    let keys = filter.as_ref().and_then(|f| f.grant.keys.clone());
    let asked: std::sync::Mutex<std::collections::VecDeque<u8>> = Default::default();
    // Credit back to the peer for what was handed to the local socket.
    let (out_ref, flow_ref) = (&out, flow.as_deref());
    let handed_on = move |n: usize| {
        let back = flow_ref.and_then(|f| f.handed_on(n));
        async move {
            match back {
                Some(n) => send(out_ref, FrameType::Window, id, &flow::window_payload(n)).await,
                None => true,
            }
        }
    };
    let to_local = async {
        let mut pending: Vec<u8> = Vec::new();
        loop {
            let buf = match rx.recv().await {
                Some(Incoming::Data(buf)) => buf,
                Some(Incoming::Eof) => {
                    let _ = wr.shutdown().await;
                    got_eof.store(true, Ordering::SeqCst);
                    if sent_eof.load(Ordering::SeqCst) {
                        return Ended::Both;
                    }
                    continue;
                }
                None => return Ended::Stream,
            };
            let Some(AgentFilter {
                policy,
                grant,
                on_decision,
            }) = &filter
            else {
                if wr.write_all(&buf).await.is_err() || !handed_on(buf.len()).await {
                    return Ended::Stream;
                }
                continue;
            };
            pending.extend_from_slice(&buf);
            loop {
                let n = match agent::frame_len(&pending) {
                    Ok(Some(n)) => n,
                    Ok(None) => break,
                    Err(_) => return Ended::Stream,
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
                            && sender.data(&FAILURE_FRAME).await
                    }
                };
                if !ok {
                    return Ended::Stream;
                }
            }
            // Credit for a request comes back once the whole of it was handled.
            if !handed_on(buf.len()).await {
                return Ended::Stream;
            }
        }
    };
    // The local socket's read side ended: EOF to the peer on a stream that may be
    // half-closed (the stream goes on the other way), else the stream is over.
    let local_eof = || async {
        if !half_close || !send(&out, FrameType::Eof, id, &[]).await {
            return Ended::Stream;
        }
        sent_eof.store(true, Ordering::SeqCst);
        if got_eof.load(Ordering::SeqCst) {
            return Ended::Both;
        }
        std::future::pending().await
    };
    let from_local = async {
        if let Some(keys) = &keys {
            // Key-scoped: whole replies, each matched with its request; an identities answer
            // lists the granted keys only (the HTTP route's `filter_identities`).
            let mut pending: Vec<u8> = Vec::new();
            let mut chunk = vec![0u8; CHUNK];
            loop {
                let n = match rd.read(&mut chunk).await {
                    Ok(0) => return local_eof().await,
                    Err(_) => return Ended::Stream,
                    Ok(n) => n,
                };
                pending.extend_from_slice(&chunk[..n]);
                loop {
                    let len = match agent::frame_len(&pending) {
                        Ok(Some(len)) => len,
                        Ok(None) => break,
                        Err(_) => return Ended::Stream,
                    };
                    let reply: Vec<u8> = pending.drain(..4 + len).collect();
                    let kind = asked.lock().unwrap_or_else(|p| p.into_inner()).pop_front();
                    let reply = if kind == Some(agent::msg::REQUEST_IDENTITIES) {
                        agent::filter_identities(&reply, keys)
                    } else {
                        reply
                    };
                    if !sender.data(&reply).await {
                        return Ended::Stream;
                    }
                    replied_tx.send_modify(|r| *r += 1);
                }
            }
        }
        // Each DATA frame is read in place behind room for its header and handed to the
        // writer as is; once the writer has dropped it, `reserve` takes the same allocation
        // back, so a bulk transfer neither copies nor allocates per chunk. A stream with a
        // window reads no more than its credit, so a slow peer slows only this stream.
        let mut buf = BytesMut::new();
        let mut replies = ReplyCounter::default();
        // How much one read asks for: small while messages are small (a request, a reply),
        // so a buffer the writer still holds is replaced by a small one, not by a whole
        // window (musl maps and unmaps an allocation that large each time); doubled up to
        // the credit while reads fill what they ask for (bulk).
        let mut ask = FIRST_READ;
        loop {
            let room = sender.room().min(ask);
            buf.reserve(bridge::HEADER_LEN + room);
            buf.put_bytes(0, bridge::HEADER_LEN);
            let n = match rd.read_buf(&mut (&mut buf).limit(room)).await {
                Ok(0) => return local_eof().await,
                Err(_) => return Ended::Stream,
                Ok(n) => n,
            };
            ask = if n == room {
                (ask * 2).min(CHUNK)
            } else {
                FIRST_READ
            };
            let Ok(header) = bridge::header(FrameType::Data, id, n) else {
                return Ended::Stream; // unreachable: n ≤ CHUNK
            };
            buf[..bridge::HEADER_LEN].copy_from_slice(&header);
            let whole = if filter.is_some() {
                replies.feed(&buf[bridge::HEADER_LEN..])
            } else {
                0
            };
            // Credit there when the read began is normally still there (only a refusal
            // above takes some meanwhile): the frame goes as read. Read ahead of credit, it
            // goes in pieces as credit comes back (a copy, on a stream a slow reader holds).
            let sent = if sender.try_take(n) {
                out.send(buf.split().freeze()).await.is_ok()
            } else {
                let frame = buf.split();
                sender.data(&frame[bridge::HEADER_LEN..]).await
            };
            if !sent {
                return Ended::Stream;
            }
            if whole > 0 {
                replied_tx.send_modify(|r| *r += whole);
            }
        }
    };
    // `to_local` sees the stream leave the registry (its queue ends) even while
    // `from_local` waits on its socket or for credit.
    tokio::select! {
        _ = to_local => {}
        _ = from_local => {}
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

    #[test]
    fn replies_are_counted_however_they_are_cut() {
        let mut c = ReplyCounter::default();
        let two = [agent::frame(&[5]), agent::frame(&[12, 0, 0, 0, 0])].concat();
        assert_eq!(c.feed(&two), 2);
        let mut c = ReplyCounter::default();
        let got: usize = two.iter().map(|b| c.feed(std::slice::from_ref(b))).sum();
        assert_eq!(got, 2, "byte by byte");
    }
}
