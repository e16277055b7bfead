//! The clients and servers the lanes drive: a raw HTTP request, an ssh-agent client, a
//! byte sink and pusher, the local server an OAuth replay lands on, wrk, `/proc` readings,
//! the bench image and its containers.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use super::measure::ms;
use crate::scratch::Killer;
use crate::util::run;

pub(crate) fn script(path: &Path, body: &str) -> Result<()> {
    std::fs::write(path, format!("#!/bin/sh\n{body}\n"))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))?;
    Ok(())
}

pub(crate) fn wait_path(p: &Path) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    while UnixStream::connect(p).is_err() {
        if Instant::now() > deadline {
            bail!("{} never appeared", p.display());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// One blocking HTTP/1.1 request; returns (status, body).
pub(crate) fn http(
    port: u16,
    method: &str,
    path: &str,
    token: &str,
    body: Option<&str>,
) -> Result<(u16, String)> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port))?;
    let body = body.unwrap_or("");
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    let status = out
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    Ok((
        status,
        out.split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default(),
    ))
}

fn agent_roundtrip(s: &mut UnixStream, body: &[u8]) -> Result<Vec<u8>> {
    let mut f = (body.len() as u32).to_be_bytes().to_vec();
    f.extend_from_slice(body);
    s.write_all(&f)?;
    let mut len = [0u8; 4];
    s.read_exact(&mut len)?;
    let mut reply = vec![0u8; u32::from_be_bytes(len) as usize];
    s.read_exact(&mut reply)?;
    Ok(reply)
}

/// The first identity's key blob.
pub(crate) fn key_blob(sock: &Path) -> Result<Vec<u8>> {
    let mut s = UnixStream::connect(sock)?;
    let reply = agent_roundtrip(&mut s, &[11])?;
    if reply.first() != Some(&12) || reply.len() < 13 {
        bail!("agent at {} lists no identity", sock.display());
    }
    let n = u32::from_be_bytes(reply[5..9].try_into()?) as usize;
    Ok(reply[9..9 + n].to_vec())
}

/// Sign operations per second over `n` sequential requests on one connection.
pub(crate) fn sign_rate(sock: &Path, blob: &[u8], n: usize) -> Result<f64> {
    // What `ssh-keygen -Y sign -n git` asks for: an SSHSIG blob (the daemon's signing
    // policy refuses arbitrary data).
    let req = clawker_protocol::agent::sign_request(
        blob,
        &clawker_protocol::agent::sshsig_blob("git", "sha512", &[0x5a; 64]),
        0,
    );
    let mut s = UnixStream::connect(sock)?;
    let t = Instant::now();
    for _ in 0..n {
        let r = agent_roundtrip(&mut s, &req)?;
        if r.first() != Some(&14) {
            bail!("sign failed through {}", sock.display());
        }
    }
    Ok(n as f64 / t.elapsed().as_secs_f64())
}

/// Sign operations per second sent straight to the daemon's `/ssh/agent` on one kept-alive
/// connection (the HTTP lane without `ssh-agent-proxy` and its unix socket hop).
pub(crate) fn daemon_sign_rate(
    conn: &mut clawker_client::blocking::Conn,
    blob: &[u8],
    n: usize,
) -> Result<f64> {
    use base64::Engine;
    use clawker_protocol::api::{SshAgentRequest, SshAgentResponse, routes};
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut frame = Vec::new();
    let body = clawker_protocol::agent::sign_request(
        blob,
        &clawker_protocol::agent::sshsig_blob("git", "sha512", &[0x5a; 64]),
        0,
    );
    frame.extend_from_slice(&(body.len() as u32).to_be_bytes());
    frame.extend_from_slice(&body);
    let req = SshAgentRequest {
        data: clawker_protocol::Secret::new(b64.encode(&frame)),
    };
    let t = Instant::now();
    for _ in 0..n {
        let reply: SshAgentResponse = conn.post(routes::SSH_AGENT, &req)?;
        if b64.decode(reply.data.expose())?.get(4) != Some(&14) {
            bail!("sign failed through the daemon");
        }
    }
    Ok(n as f64 / t.elapsed().as_secs_f64())
}

/// A sink: reads `total` bytes from each connection, then answers one byte.
pub(crate) fn sink(path: &Path, total: usize) -> Result<()> {
    let _ = std::fs::remove_file(path);
    let l = std::os::unix::net::UnixListener::bind(path)?;
    std::thread::spawn(move || {
        for conn in l.incoming() {
            let Ok(mut c) = conn else { continue };
            std::thread::spawn(move || {
                let mut buf = vec![0u8; 256 * 1024];
                let mut got = 0;
                while got < total {
                    match c.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => got += n,
                    }
                }
                let _ = c.write_all(b"k");
            });
        }
    });
    Ok(())
}

/// MiB/s pushing `total` bytes through `path` until the sink acknowledges.
pub(crate) fn push_rate(path: &Path, total: usize) -> Result<f64> {
    let mut s = UnixStream::connect(path)?;
    let chunk = vec![0xa5u8; 256 * 1024];
    let t = Instant::now();
    let mut sent = 0;
    while sent < total {
        s.write_all(&chunk)?;
        sent += chunk.len();
    }
    let mut ack = [0u8; 1];
    s.read_exact(&mut ack)?;
    Ok(total as f64 / 1048576.0 / t.elapsed().as_secs_f64())
}

/// The local server an OAuth replay lands on: when each request's first line arrived.
pub(crate) fn local_server(listener: std::net::TcpListener) -> std::sync::mpsc::Receiver<Instant> {
    let (tx, rx) = std::sync::mpsc::channel::<Instant>();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut c) = conn else { continue };
            let mut line = String::new();
            let _ = BufReader::new(&c).read_line(&mut line);
            let _ = tx.send(Instant::now());
            let _ =
                c.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
        }
    });
    rx
}

/// One login delivered: `forwarder` started (and given time to long-poll), then the
/// browser's hit on the daemon's listener at `cb_port`; ms until the local server behind
/// `rx` saw the replay.
pub(crate) fn deliver(
    forwarder: &mut Command,
    cb_port: u16,
    rx: &std::sync::mpsc::Receiver<Instant>,
) -> Result<f64> {
    let mut fwd = Killer(forwarder.stderr(Stdio::null()).spawn()?);
    std::thread::sleep(Duration::from_millis(150)); // the forwarder is now long-polling
    let t0 = Instant::now();
    let mut b = std::net::TcpStream::connect(("127.0.0.1", cb_port))?;
    write!(
        b,
        "GET /callback?code=x&state=bench HTTP/1.1\r\nHost: localhost:{cb_port}\r\nConnection: close\r\n\r\n"
    )?;
    let t1 = rx
        .recv_timeout(Duration::from_secs(10))
        .context("the replay never reached the local server")?;
    let _ = fwd.0.wait();
    Ok(ms(t1 - t0))
}

/// The direct hop beside [`deliver`]: the same request sent straight to the local server on
/// `port` from this thread's network namespace; when it was sent.
pub(crate) fn hop_request(port: u16) -> Result<Instant> {
    let t0 = Instant::now();
    let mut h = std::net::TcpStream::connect(("127.0.0.1", port))?;
    write!(
        h,
        "GET /callback?code=x&state=bench HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )?;
    Ok(t0)
}

pub(crate) fn rss_kib(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .context("no VmRSS")
}

pub(crate) struct Wrk {
    pub(crate) rps: f64,
    pub(crate) p50: String,
    pub(crate) p99: String,
    pub(crate) p99_ms: f64,
}

/// wrk's latency text (`812.00us`, `1.52ms`, `2.01s`) in milliseconds.
fn wrk_ms(v: &str) -> f64 {
    let (num, scale) = if let Some(n) = v.strip_suffix("us") {
        (n, 0.001)
    } else if let Some(n) = v.strip_suffix("ms") {
        (n, 1.0)
    } else if let Some(n) = v.strip_suffix('s') {
        (n, 1000.0)
    } else {
        (v, f64::NAN)
    };
    num.parse::<f64>().map(|n| n * scale).unwrap_or(f64::NAN)
}

/// wrk with `conns` connections for `secs` seconds; with `core`, pinned to it (one thread) by `taskset`.
pub(crate) fn wrk(
    url: &str,
    conns: u32,
    token: Option<&str>,
    core: Option<u32>,
    secs: u32,
) -> Result<Wrk> {
    let mut c = match core {
        Some(n) => {
            let mut c = Command::new("taskset");
            c.args(["-c", &n.to_string(), "wrk", "-t1"]);
            c
        }
        None => {
            let mut c = Command::new("wrk");
            c.arg("-t2");
            c
        }
    };
    c.args([&format!("-c{conns}"), &format!("-d{secs}s"), "--latency"]);
    if let Some(t) = token {
        c.args(["-H", &format!("Authorization: Bearer {t}")]);
    }
    let out = c.arg(url).output()?;
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let find = |prefix: &str| {
        text.lines()
            .find(|l| l.trim_start().starts_with(prefix))
            .and_then(|l| l.split_whitespace().nth(1))
            .unwrap_or("?")
            .to_string()
    };
    let rps = find("Requests/sec:").parse().unwrap_or(0.0);
    let non2xx = text
        .lines()
        .find(|l| l.contains("Non-2xx"))
        .map(str::to_owned);
    if let Some(n) = non2xx {
        bail!("wrk saw errors on {url}: {n}");
    }
    Ok(Wrk {
        rps,
        p50: find("50%"),
        p99_ms: wrk_ms(&find("99%")),
        p99: find("99%"),
    })
}

/// Starts `cmd PORT` (the port appended), times it until `path` answers on that port, then
/// ends it.
pub(crate) fn startup(cmd: &mut Command, path: &str) -> Result<f64> {
    let port = crate::scratch::free_port()?;
    let t = Instant::now();
    let mut child = Killer(
        cmd.arg(port.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?,
    );
    let deadline = t + Duration::from_secs(10);
    loop {
        if let Ok((status, _)) = http(port, "GET", path, "x", None)
            && status != 0
        {
            break;
        }
        if Instant::now() > deadline {
            bail!("{cmd:?} did not answer within 10 s");
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    let elapsed = ms(t.elapsed());
    let _ = child.0.kill();
    Ok(elapsed)
}

/// A container removed on drop.
pub(crate) struct ContainerGuard(pub(crate) String);

impl Drop for ContainerGuard {
    fn drop(&mut self) {
        let _ = Command::new("docker").args(["rm", "-f", &self.0]).output();
    }
}

/// `FROM scratch` with busybox and the static tools.
pub(crate) fn bench_image(dist: &Path, dir: &Path) -> Result<String> {
    let ctx = dir.join("image");
    std::fs::create_dir_all(&ctx)?;
    let busybox = ["/bin/busybox", "/usr/bin/busybox"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .context("busybox-static is needed")?;
    std::fs::copy(busybox, ctx.join("busybox"))?;
    let mut df = String::from(
        "FROM scratch\nCOPY busybox /bin/busybox\nRUN [\"/bin/busybox\", \"--install\", \"-s\", \"/bin\"]\nRUN [\"/bin/busybox\", \"mkdir\", \"-p\", \"/tmp\", \"/root\"]\n",
    );
    for t in crate::artifacts::TOOLS {
        std::fs::copy(dist.join(t), ctx.join(t))?;
        df.push_str(&format!("COPY {t} /opt/clawker/bin/{t}\n"));
    }
    // /lib and /lib64 point into /usr, so the host's /usr bind-mounted read-only (socat for
    // the peer-style relay) runs in it.
    df.push_str("RUN [\"/bin/busybox\", \"ln\", \"-s\", \"usr/lib\", \"/lib\"]\nRUN [\"/bin/busybox\", \"ln\", \"-s\", \"usr/lib64\", \"/lib64\"]\n");
    df.push_str("ENV PATH=/opt/clawker/bin:/bin HOME=/root\n");
    std::fs::write(ctx.join("Dockerfile"), df)?;
    let tag = "hostproxy-bench:latest";
    run(Command::new("docker")
        .args(["build", "-q", "-t", tag])
        .arg(&ctx)
        .stdout(Stdio::null()))?;
    Ok(tag.to_string())
}

pub(crate) fn tempfile_dir() -> Result<PathBuf> {
    let d = std::env::temp_dir().join(format!("hp-bench-{}", std::process::id()));
    std::fs::create_dir_all(&d)?;
    Ok(d)
}

/// Runs `f` on a thread of its own that has entered `pid`'s network namespace (`setns`):
/// what it connects to or binds is the container's loopback. A socket bound there stays
/// there when handed back to another thread.
#[allow(unsafe_code)]
pub(crate) fn in_netns<T: Send + 'static>(
    pid: u32,
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    std::thread::spawn(move || -> Result<T> {
        use std::os::fd::AsRawFd;
        let ns = std::fs::File::open(format!("/proc/{pid}/ns/net"))?;
        // SAFETY: setns on a descriptor we hold, for this thread only; no memory is shared.
        if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            bail!("setns: {}", std::io::Error::last_os_error());
        }
        f()
    })
    .join()
    .map_err(|_| anyhow::anyhow!("the netns thread panicked"))?
}

/// `/health` through the tunnel from inside `pid`'s network namespace, tried every
/// millisecond until it answers 200; when it did.
pub(crate) fn health_in_netns(pid: u32, within: Duration) -> Result<Instant> {
    in_netns(pid, move || {
        let deadline = Instant::now() + within;
        let tunnel = clawker_protocol::tunnel::DEFAULT_HTTP_LISTEN;
        loop {
            if let Ok(mut s) = std::net::TcpStream::connect(tunnel) {
                let _ = write!(
                    s,
                    "GET /health HTTP/1.1\r\nHost: {tunnel}\r\nConnection: close\r\n\r\n"
                );
                let mut reply = Vec::new();
                let _ = s.read_to_end(&mut reply);
                if reply.starts_with(b"HTTP/1.1 200") {
                    return Ok(Instant::now());
                }
            }
            if Instant::now() > deadline {
                bail!("no /health through the tunnel within {within:?}");
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    })
}

/// CPU time (user + system, clock ticks) of a process.
pub(crate) fn cpu_ticks(pid: u32) -> Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let rest = stat.rsplit_once(')').context("odd /proc stat")?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    Ok(f[11].parse::<u64>()? + f[12].parse::<u64>()?)
}
