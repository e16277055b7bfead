//! Two bridge ends wired to each other in memory, each with a stream pumped to a local
//! socket (SPEC.md 6.3): a slow reader loses nothing and holds no more than the window, a
//! half-closed stream still carries its answer, and a peer that breaks its window loses
//! its stream.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use clawker_bridge::{Out, Streams, out_channel, pump};
use clawker_protocol::bridge::{self, FrameType};
use clawker_protocol::flow::{Agreed, Hello, WINDOW};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::sync::mpsc;

/// One end: its registry and the queue of frames it sends.
struct End {
    streams: Streams,
    out: Out,
}

/// Frames of one end delivered to the other, decoded from the bytes the writer would send.
fn wire(mut from: mpsc::Receiver<Bytes>, to: End) {
    tokio::spawn(async move {
        while let Some(bytes) = from.recv().await {
            let (kind, id, total) = bridge::decode_head(&bytes).unwrap().unwrap();
            let payload = bytes.slice(bridge::HEADER_LEN..total);
            assert!(to.streams.on_frame(&to.out, kind, id, payload).await);
        }
    });
}

/// Two ends wired together and one stream between them, pumped on both: what each end's
/// local client holds, and A's registry (to watch what it queues).
fn one_stream(agreed: Agreed) -> (DuplexStream, DuplexStream, Streams, Streams) {
    let (a, b) = (Streams::default(), Streams::default());
    let (a_out, a_rx) = out_channel();
    let (b_out, b_rx) = out_channel();
    let a_end = a.insert(1, agreed).unwrap();
    let b_end = b.insert(1, agreed).unwrap();
    wire(
        a_rx,
        End {
            streams: b.clone(),
            out: b_out.clone(),
        },
    );
    wire(
        b_rx,
        End {
            streams: a.clone(),
            out: a_out.clone(),
        },
    );
    let (a_client, a_sock) = tokio::io::duplex(64 * 1024);
    let (b_client, b_sock) = tokio::io::duplex(64 * 1024);
    tokio::spawn(pump(a_sock, a_end, None, a_out, a.clone()));
    tokio::spawn(pump(b_sock, b_end, None, b_out, b.clone()));
    (a_client, b_client, a, b)
}

fn ours() -> Agreed {
    Hello::OURS.agree(&Hello::OURS)
}

#[tokio::test]
async fn a_slow_reader_loses_nothing_and_the_queue_stays_within_the_window() {
    let (mut sender, mut slow, _a, b) = one_stream(ours());
    // 24 MiB: three times what a stream without a window may fall behind by.
    let total = 24 * 1024 * 1024;
    let data: Vec<u8> = (0..total).map(|i| (i % 251) as u8).collect();
    let expected = data.clone();
    let writer = tokio::spawn(async move {
        sender.write_all(&data).await.unwrap();
        sender.shutdown().await.unwrap();
        sender
    });
    // The reader on B's side: 64 KiB every 1 ms, while B's queue is watched.
    let most = Arc::new(AtomicUsize::new(0));
    let watch = {
        let (b, most) = (b.clone(), most.clone());
        tokio::spawn(async move {
            loop {
                most.fetch_max(b.queued(), Ordering::SeqCst);
                tokio::time::sleep(Duration::from_micros(200)).await;
            }
        })
    };
    let mut got = Vec::with_capacity(total);
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = slow.read(&mut buf).await.unwrap();
        if n == 0 {
            break;
        }
        got.extend_from_slice(&buf[..n]);
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    watch.abort();
    assert_eq!(got.len(), expected.len(), "every byte, then EOF");
    assert!(got == expected, "in order");
    assert!(
        most.load(Ordering::SeqCst) <= WINDOW as usize,
        "B held {} bytes, more than the window",
        most.load(Ordering::SeqCst)
    );
    // Half-close: the sender's side is shut, the other way still carries an answer.
    slow.write_all(b"answer after EOF").await.unwrap();
    slow.shutdown().await.unwrap();
    let mut sender = writer.await.unwrap();
    let mut answer = Vec::new();
    sender.read_to_end(&mut answer).await.unwrap();
    assert_eq!(answer, b"answer after EOF");
}

#[tokio::test]
async fn without_the_hellos_eof_ends_the_stream_as_upstream_does() {
    let (mut a, mut b, _sa, _sb) = one_stream(Agreed::default());
    a.write_all(b"request").await.unwrap();
    a.shutdown().await.unwrap();
    let mut got = Vec::new();
    b.read_to_end(&mut got).await.unwrap();
    assert_eq!(got, b"request");
    // The stream is over: B's answer goes nowhere, A reads EOF.
    let _ = b.write_all(b"late").await;
    let mut rest = Vec::new();
    a.read_to_end(&mut rest).await.unwrap();
    assert!(rest.is_empty());
}

#[tokio::test]
async fn a_peer_past_the_window_or_granting_too_much_loses_its_stream() {
    let streams = Streams::default();
    let (out, mut rx) = out_channel();
    let _one = streams.insert(1, ours()).unwrap();
    let _two = streams.insert(2, ours()).unwrap();
    // Stream 1: a whole window is fine, one byte more is not.
    streams
        .deliver(&out, 1, Bytes::from(vec![0u8; WINDOW as usize]))
        .await;
    assert!(rx.try_recv().is_err(), "within the window");
    streams.deliver(&out, 1, Bytes::from_static(b"x")).await;
    let close = rx.try_recv().expect("CLOSE for the overrun");
    assert_eq!(close, clawker_bridge::encode(FrameType::Close, 1, &[]));
    // Stream 2: nothing in flight, so any credit back is too much.
    streams
        .window_from_peer(&out, 2, &1024u32.to_be_bytes())
        .await;
    let close = rx.try_recv().expect("CLOSE for too much credit");
    assert_eq!(close, clawker_bridge::encode(FrameType::Close, 2, &[]));
    assert!(streams.is_empty());
}
