//! Tunnel streams that lose nothing (SPEC.md 6.3), with the real binaries, a real container
//! and `socat`: a host reader far slower than the container's writer gets every byte, the
//! daemon holds a window rather than the stream, the tunnel's API answers meanwhile, and a
//! request/EOF/response protocol works through a declared socket.

use std::io::{Read, Write};
use std::os::unix::net::UnixListener;
use std::time::Duration;

use e2e::*;
use sha2::{Digest, Sha256};

/// A host socket that reads 64 KiB every 20 ms until EOF, then answers `BYTES SHA256` and
/// closes: a consumer much slower than the bridge, and a request/EOF/response protocol.
fn slow_hasher(
    path: &std::path::Path,
) -> std::thread::JoinHandle<(u64, String, std::io::Result<()>)> {
    let listener = UnixListener::bind(path).unwrap();
    std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().unwrap();
        let mut hash = Sha256::new();
        let mut total = 0u64;
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = conn.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            hash.update(&buf[..n]);
            total += n as u64;
            std::thread::sleep(Duration::from_millis(20));
        }
        let digest = clawker_protocol::hex(&hash.finalize());
        let answered = conn.write_all(format!("{total} {digest}\n").as_bytes());
        (total, digest, answered)
    })
}

/// Resident and peak memory of a process, in KiB (`/proc/PID/status`).
fn memory_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or_else(|| panic!("no {name} in /proc/{pid}/status"))
    };
    (field("VmRSS:"), field("VmHWM:"))
}

#[test]
fn a_slow_host_reader_gets_every_byte_and_the_answer_after_eof() {
    require("socat", "socat");
    let dir = tempfile::tempdir().unwrap();
    let sink = dir.path().join("sink.sock");
    let reader = slow_hasher(&sink);
    let d = DaemonProc::start(DaemonOpts {
        args: config_args(
            dir.path(),
            &format!(
                "[attach]\nscopes = [\"open\", \"socket:sink\"]\n[[bridge.sockets]]\nname = \"sink\"\npath = \"{}\"\n",
                sink.display()
            ),
        ),
        ..DaemonOpts::default()
    });
    let n = name("slow-sink");
    let c = Container::start(
        d.tunnel_run()
            .args(["--label", "dev.clawker.hostproxy.sockets=sink"])
            .args(["--name", &n, busybox_image(), "sleep", "300"]),
    );
    d.wait_serving(&n, Duration::from_secs(15));
    // 64 MiB of noise and its hash, made in the container before the clock starts.
    let (ok, out, err) = c.exec(
        &[],
        "head -c 67108864 /dev/urandom > /tmp/blob && sha256sum /tmp/blob",
    );
    assert!(ok, "{err}");
    let want = out.split_whitespace().next().unwrap().to_string();
    let (rss_before, _) = memory_kib(d.child.id());

    // The push: socat sends the file, shuts its write side at the end (EOF through the
    // tunnel), and prints what the host answers after it. Reading at 3.2 MiB/s, the host
    // takes about 20 s; a stream without flow control was cut after 8 MiB queued.
    let push = std::thread::spawn({
        let id = c.0.clone();
        move || {
            std::process::Command::new("docker")
                .args(["exec", &id, "sh", "-c"])
                .arg("socat -t 120 - UNIX-CONNECT:/tmp/.hostproxy/sockets/sink.sock < /tmp/blob")
                .output()
                .unwrap()
        }
    });
    // Meanwhile the tunnel's API answers: one request timed inside the container, a second
    // into the push (the host reader is seconds behind by then).
    std::thread::sleep(Duration::from_secs(3));
    let (ok, out, err) = c.exec(
        &[],
        // busybox's date has no %N: /proc/uptime's hundredths.
        "a=$(cut -d' ' -f1 /proc/uptime); wget -q -O - http://127.0.0.1:18374/health >/dev/null && b=$(cut -d' ' -f1 /proc/uptime) && awk \"BEGIN { print int(($b - $a) * 1000) }\"",
    );
    assert!(ok, "the API did not answer during the push: {err}");
    let during_ms: u64 = out.trim().parse().unwrap();
    assert!(
        !push.is_finished(),
        "the push ended before the request was made: the reader is not slow"
    );

    let pushed = push.join().unwrap();
    let (total, digest, answered) = reader.join().unwrap();
    let answer = String::from_utf8_lossy(&pushed.stdout).into_owned();
    assert!(
        answered.is_ok(),
        "the host could not answer after EOF ({answered:?}, {total} bytes in): the stream was closed\n{}",
        d.log_text()
    );
    assert!(
        pushed.status.success(),
        "socat in the container: {}\n{}",
        String::from_utf8_lossy(&pushed.stderr),
        d.log_text()
    );
    assert_eq!(total, 64 * 1024 * 1024, "every byte reached the host");
    assert_eq!(digest, want, "the same bytes, in order");
    assert_eq!(
        answer.trim(),
        format!("{total} {digest}"),
        "the answer made after EOF reached the container"
    );
    let (_, peak) = memory_kib(d.child.id());
    assert!(
        peak < rss_before + 64 * 1024,
        "the daemon grew from {rss_before} KiB to a peak of {peak} KiB: it held the stream"
    );
    // A request through the tunnel while 64 MiB wait behind a slow reader answers as one
    // does on an idle tunnel (a few ms); 2 s is far below the push's 20 s, so a stream that
    // held up the others would fail here.
    assert!(
        during_ms < 2000,
        "an API request took {during_ms} ms during the push"
    );
}
