//! The bare `docker exec` stream, measured with no bridge in it: the floor under the socket
//! bridge's lanes. The engine's API is spoken by hand over its unix socket, the way bollard
//! does it for `hostproxy bridge` (create the exec, start it attached, take over the
//! connection), so the baseline has exactly the engine's hops and none of ours.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::Instant;

use anyhow::{Context, Result, bail};

const DOCKER_SOCK: &str = "/var/run/docker.sock";

fn request(
    method: &str,
    path: &str,
    body: &serde_json::Value,
    upgrade: bool,
) -> Result<UnixStream> {
    let mut s = UnixStream::connect(DOCKER_SOCK)
        .with_context(|| format!("cannot connect to the Docker engine at {DOCKER_SOCK}"))?;
    let body = body.to_string();
    let extra = if upgrade {
        "Connection: Upgrade\r\nUpgrade: tcp\r\n"
    } else {
        ""
    };
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: docker\r\nContent-Type: application/json\r\n{extra}Content-Length: {}\r\n\r\n{body}",
        body.len()
    )?;
    Ok(s)
}

/// Reads a reply head byte by byte (nothing of what follows is consumed).
fn head(s: &mut UnixStream) -> Result<String> {
    let mut h = Vec::new();
    let mut b = [0u8; 1];
    while !h.ends_with(b"\r\n\r\n") {
        if s.read(&mut b)? == 0 {
            bail!("the Docker engine closed the connection");
        }
        h.push(b[0]);
    }
    Ok(String::from_utf8_lossy(&h).into_owned())
}

/// Starts `cmd` in `cid` attached (stdin too when `stdin`), returning the raw stream:
/// stdin goes in as is, stdout comes back in the engine's 8-byte-headed frames.
fn exec_attached(cid: &str, cmd: &[&str], stdin: bool) -> Result<UnixStream> {
    let mut s = request(
        "POST",
        &format!("/containers/{cid}/exec"),
        &serde_json::json!({"AttachStdin": stdin, "AttachStdout": true, "Cmd": cmd}),
        false,
    )?;
    let h = head(&mut s)?;
    let len: usize = h
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().to_string())
        })
        .context("exec create reply without Content-Length")?
        .parse()?;
    let mut body = vec![0u8; len];
    s.read_exact(&mut body)?;
    let reply: serde_json::Value = serde_json::from_slice(&body)?;
    let id = reply["Id"]
        .as_str()
        .context("exec create reply without Id")?;
    let mut s = request(
        "POST",
        &format!("/exec/{id}/start"),
        &serde_json::json!({"Detach": false, "Tty": false}),
        true,
    )?;
    let h = head(&mut s)?;
    if !h.starts_with("HTTP/1.1 101") {
        bail!(
            "exec start was not upgraded: {}",
            h.lines().next().unwrap_or("")
        );
    }
    Ok(s)
}

/// Reads `n` bytes of stdout payload out of the engine's frames.
fn read_payload(s: &mut UnixStream, n: usize, buf: &mut Vec<u8>) -> Result<()> {
    let mut got = 0;
    let mut h = [0u8; 8];
    while got < n {
        s.read_exact(&mut h)?;
        let len = u32::from_be_bytes([h[4], h[5], h[6], h[7]]) as usize;
        buf.resize(len, 0);
        s.read_exact(buf)?;
        got += len;
    }
    Ok(())
}

/// Milliseconds per round trip of `size` bytes through an exec'd `cat`, `rounds` medians of
/// `per_round` round trips each.
pub fn round_trip_ms(cid: &str, size: usize, rounds: usize, per_round: usize) -> Result<Vec<f64>> {
    let mut s = exec_attached(cid, &["cat"], true)?;
    let msg = vec![0x5au8; size];
    let mut buf = Vec::new();
    let mut once = |s: &mut UnixStream| -> Result<()> {
        s.write_all(&msg)?;
        read_payload(s, size, &mut buf)
    };
    for _ in 0..50 {
        once(&mut s)?;
    }
    let mut out = Vec::new();
    for _ in 0..rounds {
        let t = Instant::now();
        for _ in 0..per_round {
            once(&mut s)?;
        }
        out.push(t.elapsed().as_secs_f64() * 1000.0 / per_round as f64);
    }
    Ok(out)
}

/// MiB/s of `total` bytes (a multiple of 256 KiB) written to its stdout by `dd` in the
/// container in 256 KiB writes, the size of the bridge's DATA frames, read here.
pub fn out_rate(cid: &str, total: usize) -> Result<f64> {
    let count = format!("count={}", total / (256 * 1024));
    let mut s = exec_attached(cid, &["dd", "if=/dev/zero", "bs=256k", &count], false)?;
    let mut buf = Vec::new();
    let t = Instant::now();
    read_payload(&mut s, total, &mut buf)?;
    Ok(total as f64 / 1048576.0 / t.elapsed().as_secs_f64())
}
