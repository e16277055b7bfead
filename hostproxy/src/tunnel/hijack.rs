//! The container end's exec started by hand on a local engine's unix socket, instead of
//! through bollard: `POST /exec/ID/start` with `Upgrade: tcp`, then the engine's
//! multiplexed stdio on the same connection.
//!
//! Why by hand: the connection is a [`clawker_bridge::QuietStream`], so dockerd reading
//! what the daemon wrote does not wake the daemon (bollard's connection, hyper's, is
//! registered for writing too: one spurious wake-up per message), and the stdio frames are
//! cut straight out of the read buffer (`Demux`), without hyper's and bollard's layers in
//! between. Remote engines (`tcp://`, `ssh://`) and Windows' named pipe keep bollard.

use std::io;
use std::path::Path;
use std::pin::Pin;

use anyhow::{Context, Result, bail};
use bytes::{Buf, BytesMut};
use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_util::codec::{Decoder, FramedRead};

use crate::bridge::ExecOutput;

/// The engine's multiplexed stdio (an exec without a TTY): each piece is an 8-byte header —
/// the stream (0 stdin, 1 stdout, 2 stderr), three zero bytes, the length (u32, big
/// endian) — and that many bytes.
#[derive(Debug, Default)]
pub struct Demux;

/// Header of one piece of the multiplexed stdio.
const PIECE_HEADER: usize = 8;

impl Decoder for Demux {
    type Item = ExecOutput;
    type Error = io::Error;

    fn decode(&mut self, src: &mut BytesMut) -> io::Result<Option<ExecOutput>> {
        if src.len() < PIECE_HEADER {
            return Ok(None);
        }
        let len = u32::from_be_bytes([src[4], src[5], src[6], src[7]]) as usize;
        if src.len() < PIECE_HEADER + len {
            src.reserve(PIECE_HEADER + len - src.len());
            return Ok(None);
        }
        let stream = src[0];
        src.advance(PIECE_HEADER);
        let payload = src.split_to(len).freeze();
        Ok(Some(match stream {
            2 => ExecOutput::Stderr(payload),
            _ => ExecOutput::Stdout(payload),
        }))
    }
}

/// The longest answer head the engine may send before the stream starts.
const HEAD_MAX: usize = 16 * 1024;

/// How long the engine may take to answer the exec start (bollard's client waits as long).
const ANSWER_WAIT: std::time::Duration = std::time::Duration::from_secs(120);

/// What a started exec gives: its output, and its stdin.
pub type Started = (
    BoxStream<'static, io::Result<ExecOutput>>,
    Pin<Box<dyn AsyncWrite + Send>>,
);

/// Starts the created exec `exec_id` on the engine listening at `socket`, attached.
pub async fn start(socket: &Path, exec_id: &str) -> Result<Started> {
    if exec_id.is_empty() || !exec_id.bytes().all(|b| b.is_ascii_alphanumeric()) {
        bail!("the engine gave the exec an id that is not one: {exec_id:?}");
    }
    let mut conn = clawker_bridge::QuietStream::connect(socket)
        .await
        .with_context(|| format!("cannot connect to the engine at {}", socket.display()))?;
    let body = br#"{"Detach":false,"Tty":false}"#;
    let head = format!(
        "POST /exec/{exec_id}/start HTTP/1.1\r\nHost: docker\r\nContent-Type: application/json\r\nConnection: Upgrade\r\nUpgrade: tcp\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    conn.write_all(head.as_bytes()).await?;
    conn.write_all(body).await?;
    let mut buf = BytesMut::with_capacity(1024);
    let head = async {
        loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                return Ok(i + 4);
            }
            if buf.len() > HEAD_MAX {
                bail!("the engine's answer to the exec start has no end");
            }
            if conn.read_buf(&mut buf).await? == 0 {
                bail!("the engine closed the connection before it started the exec");
            }
        }
    };
    let end = tokio::time::timeout(ANSWER_WAIT, head)
        .await
        .context("the engine did not answer the exec start")??;
    let rest = buf.split_off(end);
    let status = status_code(&buf).context("the engine's answer to the exec start is not HTTP")?;
    if status != 101 && status != 200 {
        bail!(
            "the engine refused to start the exec ({status}): {}",
            engine_message(&rest)
        );
    }
    let (rd, wr) = tokio::io::split(conn);
    // What came with the head is the stream's start: read first, then the connection.
    let first = io::Cursor::new(rest.freeze());
    let output = FramedRead::new(AsyncReadExt::chain(first, rd), Demux);
    Ok((output.boxed(), Box::pin(wr)))
}

/// The status code of an HTTP/1.x answer head.
fn status_code(head: &[u8]) -> Option<u16> {
    let line = head.split(|&b| b == b'\n').next()?;
    let line = std::str::from_utf8(line).ok()?;
    let mut words = line.split_whitespace();
    words.next().filter(|v| v.starts_with("HTTP/1."))?;
    words.next()?.parse().ok()
}

/// The engine's error message (`{"message": …}`), as much as came with the head; escaped,
/// since it can quote the container's words.
fn engine_message(body: &[u8]) -> String {
    #[derive(serde::Deserialize)]
    struct EngineError {
        message: String,
    }
    match serde_json::from_slice::<EngineError>(body) {
        Ok(e) => e.message.escape_debug().to_string(),
        Err(_) => String::from_utf8_lossy(body).escape_debug().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncBufReadExt;

    fn piece(stream: u8, payload: &[u8]) -> Vec<u8> {
        let mut v = vec![stream, 0, 0, 0];
        v.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        v.extend_from_slice(payload);
        v
    }

    #[test]
    fn pieces_come_out_whole_however_they_are_cut() {
        let mut wire = piece(1, b"hello");
        wire.extend(piece(2, b"warning: x"));
        wire.extend(piece(1, &[7u8; 70_000]));
        for cut in [1, 3, 8, 9, 13, 4096, wire.len()] {
            let mut src = BytesMut::new();
            let mut got = Vec::new();
            for chunk in wire.chunks(cut) {
                src.extend_from_slice(chunk);
                while let Some(o) = Demux.decode(&mut src).unwrap() {
                    got.push(o);
                }
            }
            assert!(src.is_empty(), "cut {cut}");
            assert!(matches!(&got[0], ExecOutput::Stdout(b) if &b[..] == b"hello"));
            assert!(matches!(&got[1], ExecOutput::Stderr(b) if &b[..] == b"warning: x"));
            assert!(matches!(&got[2], ExecOutput::Stdout(b) if b.len() == 70_000));
            assert_eq!(got.len(), 3, "cut {cut}");
        }
    }

    /// A fake engine on a unix socket: checks the request, answers `answer`, then echoes
    /// what the daemon writes back as stdout pieces.
    async fn engine(answer: &'static [u8]) -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("docker.sock");
        let listener = tokio::net::UnixListener::bind(&path).unwrap();
        tokio::spawn(async move {
            let (conn, _) = listener.accept().await.unwrap();
            let mut conn = tokio::io::BufReader::new(conn);
            let mut line = String::new();
            conn.read_line(&mut line).await.unwrap();
            assert_eq!(line, "POST /exec/abc123/start HTTP/1.1\r\n");
            let mut len = 0;
            loop {
                line.clear();
                conn.read_line(&mut line).await.unwrap();
                if let Some(v) = line.strip_prefix("Content-Length: ") {
                    len = v.trim().parse().unwrap();
                }
                if line == "\r\n" {
                    break;
                }
            }
            let mut body = vec![0u8; len];
            conn.read_exact(&mut body).await.unwrap();
            assert_eq!(body, br#"{"Detach":false,"Tty":false}"#);
            conn.get_mut().write_all(answer).await.unwrap();
            let mut buf = [0u8; 64];
            loop {
                let n = conn.read(&mut buf).await.unwrap();
                if n == 0 {
                    return;
                }
                conn.get_mut()
                    .write_all(&piece(1, &buf[..n]))
                    .await
                    .unwrap();
            }
        });
        (dir, path)
    }

    #[tokio::test]
    async fn an_upgraded_exec_carries_both_ways_and_bytes_sent_with_the_head_are_kept() {
        let (_dir, path) = engine(
            b"HTTP/1.1 101 UPGRADED\r\nContent-Type: application/vnd.docker.raw-stream\r\nConnection: Upgrade\r\nUpgrade: tcp\r\n\r\n\x01\x00\x00\x00\x00\x00\x00\x05READY",
        )
        .await;
        let (mut output, mut input) = start(&path, "abc123").await.unwrap();
        assert!(
            matches!(output.next().await, Some(Ok(ExecOutput::Stdout(b))) if &b[..] == b"READY")
        );
        input.write_all(b"ping").await.unwrap();
        assert!(
            matches!(output.next().await, Some(Ok(ExecOutput::Stdout(b))) if &b[..] == b"ping")
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_engine_that_never_answers_is_given_up_on() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("docker.sock");
        let listener = tokio::net::UnixListener::bind(&path).unwrap();
        // Accepts, reads the request, answers nothing.
        let held = tokio::spawn(async move {
            let (mut conn, _) = listener.accept().await.unwrap();
            let mut sink = Vec::new();
            let _ = conn.read_to_end(&mut sink).await;
        });
        let err = format!("{:#}", start(&path, "abc123").await.err().unwrap());
        assert!(err.contains("did not answer"), "{err}");
        held.abort();
    }

    #[tokio::test]
    async fn a_refusal_says_the_engines_reason() {
        let (_dir, path) = engine(
            b"HTTP/1.1 409 Conflict\r\nContent-Type: application/json\r\nContent-Length: 46\r\n\r\n{\"message\":\"container abc is not running\\n\"}\n",
        )
        .await;
        let err = format!("{:#}", start(&path, "abc123").await.err().unwrap());
        assert!(
            err.contains("(409)") && err.contains("is not running"),
            "{err}"
        );
        let err = format!("{:#}", start(&path, "../x").await.err().unwrap());
        assert!(err.contains("not one"), "{err}");
    }
}
