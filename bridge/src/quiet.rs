//! A unix socket connection the runtime watches for readability only.
//!
//! tokio registers a `UnixStream` for reading and writing, and a unix socket wakes its
//! writer's epoll whenever the peer reads (the write-space event), so every request written
//! to an ssh-agent, and every reply written to a client, woke its end once more for
//! nothing: 2 of the daemon's 4 wake-ups per signature through the tunnel (strace,
//! BENCHMARKS.analysis.md). [`QuietStream`] writes without waiting when the socket has room
//! — a request or a reply always fits — and registers a duplicate of the descriptor for
//! writability only the first time a write would block (a bulk stream), keeping it from
//! then on.

use std::io;
use std::os::unix::net::UnixStream;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};

/// A unix socket connection: reads through the runtime, writes straight to the socket
/// until one would block (module doc).
#[derive(Debug)]
pub struct QuietStream {
    read: AsyncFd<UnixStream>,
    /// The same socket (a duplicate descriptor) registered for writability, once a write
    /// had to wait.
    write: Option<AsyncFd<UnixStream>>,
}

/// `send(2)` flags: no SIGPIPE for a peer that went away, where the OS has the flag.
#[cfg(any(target_os = "linux", target_os = "android"))]
const SEND_FLAGS: libc::c_int = libc::MSG_NOSIGNAL;
#[cfg(not(any(target_os = "linux", target_os = "android")))]
const SEND_FLAGS: libc::c_int = 0;

fn send(s: &UnixStream, buf: &[u8]) -> io::Result<usize> {
    socket2::SockRef::from(s).send_with_flags(buf, SEND_FLAGS)
}

/// Registers `stream` with the runtime for `interest` only.
#[allow(unsafe_code)]
fn register(stream: UnixStream, interest: Interest) -> io::Result<AsyncFd<UnixStream>> {
    // SAFETY: the `AsyncFd` owns the `UnixStream`, which owns its descriptor: it stays open
    // and the same for as long as the registration lives (the I/O safety tokio asks for).
    unsafe { AsyncFd::register_with_interest(stream, interest) }.map_err(io::Error::from)
}

impl QuietStream {
    /// Takes over a connected socket (made non-blocking here).
    pub fn new(stream: UnixStream) -> io::Result<Self> {
        stream.set_nonblocking(true)?;
        Ok(Self {
            read: register(stream, Interest::READABLE)?,
            write: None,
        })
    }

    /// Takes over a tokio stream (an accepted or connected one).
    pub fn from_tokio(stream: tokio::net::UnixStream) -> io::Result<Self> {
        Self::new(stream.into_std()?)
    }

    /// Connects to the socket at `path`.
    pub async fn connect(path: impl AsRef<std::path::Path>) -> io::Result<Self> {
        Self::from_tokio(tokio::net::UnixStream::connect(path).await?)
    }
}

impl AsyncRead for QuietStream {
    #[allow(unsafe_code)]
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            let mut guard = ready!(this.read.poll_read_ready(cx))?;
            // SAFETY: `recv` only writes into the slice (never reads it or de-initialises
            // it) and returns how many bytes it wrote; only those are marked initialised.
            // Reading into uninitialised memory spares zeroing a whole window per read.
            let unfilled = unsafe { buf.unfilled_mut() };
            let len = unfilled.len();
            match guard.try_io(|s| socket2::SockRef::from(s.get_ref()).recv(unfilled)) {
                Ok(Ok(n)) => {
                    // SAFETY: `recv` initialised the first `n` bytes of the unfilled part.
                    unsafe { buf.assume_init(n) };
                    buf.advance(n);
                    // A short read emptied the socket: the next read waits for the runtime
                    // instead of failing once more (what tokio's own sockets do).
                    if n > 0 && n < len {
                        guard.clear_ready();
                    }
                    return Poll::Ready(Ok(()));
                }
                Ok(Err(e)) => return Poll::Ready(Err(e)),
                Err(_would_block) => {}
            }
        }
    }
}

impl AsyncWrite for QuietStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.write.is_none() {
            match send(this.read.get_ref(), buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    let dup = this.read.get_ref().try_clone()?;
                    this.write = Some(register(dup, Interest::WRITABLE)?);
                }
                done => return Poll::Ready(done),
            }
        }
        let Some(w) = &this.write else {
            return Poll::Ready(Err(io::ErrorKind::Other.into()));
        };
        loop {
            let mut guard = ready!(w.poll_write_ready(cx))?;
            match guard.try_io(|s| send(s.get_ref(), buf)) {
                Ok(done) => return Poll::Ready(done),
                Err(_would_block) => {}
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    /// Shuts the write side (the peer reads EOF; reading goes on).
    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(
            match self.read.get_ref().shutdown(std::net::Shutdown::Write) {
                Err(e) if e.kind() == io::ErrorKind::NotConnected => Ok(()),
                r => r,
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn carries_both_ways_blocks_when_full_and_half_closes() {
        let (a, b) = UnixStream::pair().unwrap();
        let (mut a, mut b) = (QuietStream::new(a).unwrap(), QuietStream::new(b).unwrap());
        a.write_all(b"request").await.unwrap();
        let mut got = [0u8; 7];
        b.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"request");
        assert!(a.write.is_none(), "a small write never waited");
        // 8 MiB one way while nobody reads: the writer waits for room, then all of it lands.
        let total = 8 * 1024 * 1024;
        let writer = tokio::spawn(async move {
            let chunk = vec![0x5a; 64 * 1024];
            for _ in 0..total / chunk.len() {
                a.write_all(&chunk).await.unwrap();
            }
            assert!(a.write.is_some(), "a full socket made the writer wait");
            a.shutdown().await.unwrap();
            a
        });
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        let mut all = Vec::new();
        b.read_to_end(&mut all).await.unwrap();
        assert_eq!(all.len(), total);
        assert!(all.iter().all(|&x| x == 0x5a));
        // The other direction still works after the half-close.
        let mut a = writer.await.unwrap();
        b.write_all(b"answer").await.unwrap();
        let mut got = [0u8; 6];
        a.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"answer");
    }

    #[tokio::test]
    async fn a_peer_gone_is_an_error_not_a_signal() {
        let (a, b) = UnixStream::pair().unwrap();
        let mut a = QuietStream::new(a).unwrap();
        drop(b);
        let err = a.write_all(b"x").await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::BrokenPipe);
        let mut buf = [0u8; 1];
        assert_eq!(a.read(&mut buf).await.unwrap(), 0);
    }
}
