//! `cargo xtask bench`: every hot path beside its baseline, alternating in one run, release
//! builds; medians with min–max; writes `BENCHMARKS.md`. Prints numbers, asserts nothing.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::chart::Lane;
use crate::scratch::{Killer, ScratchDaemon, free_port, wait_port};
use crate::{cargo, root, run};

pub(crate) struct Stat {
    pub(crate) median: f64,
    min: f64,
    max: f64,
}

pub(crate) fn stat(mut v: Vec<f64>) -> Stat {
    v.sort_by(|a, b| a.total_cmp(b));
    Stat {
        median: v[v.len() / 2],
        min: v[0],
        max: v[v.len() - 1],
    }
}

/// Ours against a baseline measured right beside it: the ratio of each pair, so that a
/// shared machine speeding up or slowing down between rounds moves both sides alike.
pub(crate) fn paired(ours: &[f64], base: &[f64]) -> Stat {
    stat(ours.iter().zip(base).map(|(o, b)| o / b).collect())
}

pub(crate) fn fmt_ratio(s: &Stat) -> String {
    format!("{:.2}× ({:.2}–{:.2})", s.median, s.min, s.max)
}

pub(crate) fn fmt_ms(s: &Stat) -> String {
    format!("{:.2} ms ({:.2}–{:.2})", s.median, s.min, s.max)
}

pub(crate) fn fmt_rate(s: &Stat, unit: &str) -> String {
    format!("{:.0} {unit} ({:.0}–{:.0})", s.median, s.min, s.max)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn script(path: &Path, body: &str) -> Result<()> {
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

pub(crate) fn timed(cmd: &mut Command) -> Result<f64> {
    let t = Instant::now();
    let out = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()?;
    let elapsed = ms(t.elapsed());
    if !out.success() {
        bail!("{cmd:?} failed");
    }
    Ok(elapsed)
}

pub(crate) fn timed_input(cmd: &mut Command, input: &str) -> Result<f64> {
    let t = Instant::now();
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    child
        .stdin
        .take()
        .context("stdin")?
        .write_all(input.as_bytes())?;
    let out = child.wait_with_output()?;
    let elapsed = ms(t.elapsed());
    if !out.status.success() || !String::from_utf8_lossy(&out.stdout).contains("password=") {
        bail!("{cmd:?} did not produce a credential");
    }
    Ok(elapsed)
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
fn key_blob(sock: &Path) -> Result<Vec<u8>> {
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
fn daemon_sign_rate(
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
    p50: String,
    p99: String,
    p99_ms: f64,
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

/// wrk with `conns` connections; with `core`, pinned to it (one thread) by `taskset`.
pub(crate) fn wrk(url: &str, conns: u32, token: Option<&str>, core: Option<u32>) -> Result<Wrk> {
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
    let secs = if smoke() { "-d1s" } else { "-d5s" };
    c.args([&format!("-c{conns}"), secs, "--latency"]);
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

/// `cargo xtask bench --smoke` (CI): every lane once, briefly, no report kept, so the bench
/// itself cannot rot; the numbers mean nothing.
static SMOKE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// The end of a target cell: whether the target was met, in words a script can grep.
pub(crate) fn verdict(met: bool) -> &'static str {
    if met { "— **met**" } else { "— **missed**" }
}

pub(crate) fn smoke() -> bool {
    SMOKE.load(std::sync::atomic::Ordering::Relaxed)
}

/// `n` rounds, or one in a smoke run.
pub(crate) fn rounds(n: usize) -> usize {
    if smoke() { 1 } else { n }
}

/// Runs the bench; `smoke` runs each lane once and writes `target/bench-smoke.md`.
pub fn bench_with(smoke_run: bool) -> Result<()> {
    SMOKE.store(smoke_run, std::sync::atomic::Ordering::Relaxed);
    bench()
}

pub fn bench() -> Result<()> {
    for (prog, pkg) in [
        ("wrk", "wrk"),
        ("socat", "socat"),
        ("curl", "curl"),
        ("jq", "jq"),
        ("ssh-agent", "openssh-client"),
        ("gpg", "gnupg"),
        ("docker", "docker.io"),
    ] {
        if !crate::on_path(prog) {
            if crate::is_root() {
                run(Command::new("apt-get")
                    .args(["install", "-y", "-qq", pkg])
                    .env("DEBIAN_FRONTEND", "noninteractive"))?;
            } else {
                bail!("{prog} is needed: apt-get install {pkg}");
            }
        }
    }
    run(cargo().args(["build", "--release", "-p", "hostproxy"]))?;
    let dist = crate::dist(false)?;
    let hostproxy = root().join("target/release/hostproxy");
    let tmp = tempfile_dir()?;
    let dir = tmp.as_path();
    let mut rows: Vec<[String; 4]> = Vec::new();
    let mut chart: Vec<Lane> = Vec::new();
    let mut notes: Vec<String> = Vec::new();

    // Host side: an ssh-agent with a key, then the daemon with a scratch git.
    let agent_sock = dir.join("agent.sock");
    let agent = Killer(
        Command::new("ssh-agent")
            .arg("-D")
            .arg("-a")
            .arg(&agent_sock)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?,
    );
    wait_path(&agent_sock)?;
    run(Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(dir.join("id")))?;
    run(Command::new("ssh-add")
        .arg("-q")
        .arg(dir.join("id"))
        .env("SSH_AUTH_SOCK", &agent_sock)
        .stderr(Stdio::null()))?;
    let state = dir.join("state");
    let daemon = ScratchDaemon::start(
        &hostproxy,
        dir,
        Some(&agent_sock),
        &format!(
            "[callback]\nmax_sessions = 64\n\n# The tunnel's bulk lane: the host grants the sink (a label only narrows).\n[attach]\nscopes = [{}, \"socket:sink\"]\n\n[[bridge.sockets]]\nname = \"sink\"\npath = \"{}\"\n",
            clawker_protocol::tunnel::DEFAULT_SCOPES
                .iter()
                .map(|s| format!("{s:?}"))
                .collect::<Vec<_>>()
                .join(", "),
            dir.join("sink.sock").display()
        ),
    )?;
    let (port, token) = (daemon.port, daemon.token.clone());
    let host_home = daemon.host_home.clone();
    std::thread::sleep(Duration::from_millis(300));
    let idle_rss = rss_kib(daemon.process.0.id())?;
    let base = format!("http://127.0.0.1:{port}");
    let tool_env = [
        ("CLAWKER_HOST_PROXY", base.clone()),
        ("CLAWKER_HOST_PROXY_TOKEN", token.clone()),
    ];

    // 1. Credential round trip.
    let c_home = dir.join("c-home");
    std::fs::create_dir_all(&c_home)?;
    std::fs::write(
        dir.join("c-gitconfig"),
        format!(
            "[credential]\n\thelper = {}\n",
            dist.join("git-credential-clawker").display()
        ),
    )?;
    let curl_helper = dir.join("curl-helper");
    script(
        &curl_helper,
        &format!(
            "[ \"$1\" = get ] || exit 0\neval \"$(sed -n 's/^\\(protocol\\|host\\)=\\(.*\\)/\\1=\\2/p')\"\ncurl -sf -H 'Authorization: Bearer {token}' -H 'Content-Type: application/json' -d \"{{\\\"action\\\":\\\"get\\\",\\\"protocol\\\":\\\"$protocol\\\",\\\"host\\\":\\\"$host\\\"}}\" {base}/git/credential | jq -r '\"username=\\(.username)\\npassword=\\(.password)\"'"
        ),
    )?;
    std::fs::write(
        dir.join("s-gitconfig"),
        format!("[credential]\n\thelper = {}\n", curl_helper.display()),
    )?;
    let git = |cfg: &str, home: &Path, extra: &[(&str, String)]| {
        let mut c = Command::new("git");
        c.args(["credential", "fill"])
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", home)
            .env("GIT_CONFIG_GLOBAL", dir.join(cfg))
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_TERMINAL_PROMPT", "0")
            .envs(extra.iter().map(|(k, v)| (*k, v.as_str())));
        c
    };
    let input = "protocol=https\nhost=github.com\n\n";
    let (mut ours, mut direct, mut shell) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..rounds(40) {
        ours.push(timed_input(
            &mut git("c-gitconfig", &c_home, &tool_env),
            input,
        )?);
        direct.push(timed_input(
            &mut git("host-gitconfig", &host_home, &[]),
            input,
        )?);
        shell.push(timed_input(&mut git("s-gitconfig", &c_home, &[]), input)?);
    }
    let (rd, rs) = (paired(&ours, &direct), paired(&ours, &shell));
    let (o, d, s) = (stat(ours), stat(direct), stat(shell));
    rows.push([
        "credential round trip (`git credential fill`)".into(),
        format!("helper=clawker via daemon: {}", fmt_ms(&o)),
        format!(
            "git direct on host: {}; sh+curl+jq helper: {}",
            fmt_ms(&d),
            fmt_ms(&s)
        ),
        format!(
            "≤ 2.2× direct, < sh+curl+jq → **{} direct, {} sh+curl+jq** {}",
            fmt_ratio(&rd),
            fmt_ratio(&rs),
            verdict(rd.median <= 2.2 && rs.median < 1.0)
        ),
    ]);

    // 2. Tool start + one request.
    let (mut ours, mut shell) = (Vec::new(), Vec::new());
    for _ in 0..rounds(40) {
        let mut c = Command::new(dist.join("host-open"));
        c.arg("https://example.com/")
            .env_clear()
            .envs(tool_env.iter().map(|(k, v)| (*k, v.as_str())));
        ours.push(timed(&mut c)?);
        let mut c = Command::new("sh");
        c.args([
            "-c",
            &format!("curl -sf -H 'Authorization: Bearer {token}' -H 'Content-Type: application/json' -d '{{\"url\":\"https://example.com/\"}}' {base}/open/url > /dev/null"),
        ]);
        shell.push(timed(&mut c)?);
    }
    let r = paired(&ours, &shell);
    let (o, s) = (stat(ours), stat(shell));
    rows.push([
        "tool start + one request".into(),
        format!("`host-open URL`: {}", fmt_ms(&o)),
        format!("`sh -c 'curl …/open/url'`: {}", fmt_ms(&s)),
        format!(
            "≤ 0.5× → **{}** {}",
            fmt_ratio(&r),
            verdict(r.median <= 0.5)
        ),
    ]);

    // 3. SSH agent signing.
    let proxy_sock = dir.join("proxy.sock");
    let _proxy = Killer(
        Command::new(dist.join("ssh-agent-proxy"))
            .arg("--socket")
            .arg(&proxy_sock)
            .env_clear()
            .envs(tool_env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdout(Stdio::null())
            .spawn()?,
    );
    wait_path(&proxy_sock)?;
    let relay_port = free_port()?;
    let relay_sock = dir.join("relay.sock");
    let _relay_tcp = Killer(
        Command::new("socat")
            .arg(format!(
                "TCP-LISTEN:{relay_port},bind=127.0.0.1,reuseaddr,fork"
            ))
            .arg(format!("UNIX-CONNECT:{}", agent_sock.display()))
            .spawn()?,
    );
    wait_port(relay_port)?;
    let _relay_unix = Killer(
        Command::new("socat")
            .arg(format!("UNIX-LISTEN:{},fork", relay_sock.display()))
            .arg(format!("TCP:127.0.0.1:{relay_port}"))
            .spawn()?,
    );
    wait_path(&relay_sock)?;

    // The bridge: a container, `hostproxy bridge` (an alias of `attach`, through the scratch
    // daemon; its gpg streams to the sink, the public keys of the scratch GnuPG home), the
    // container's sockets reached through /proc/<pid>/root from the host.
    let image = bench_image(&dist, dir)?;
    let cid = String::from_utf8(
        Command::new("docker")
            .args(["run", "-d", "--rm", &image, "sleep", "600"])
            .output()?
            .stdout,
    )?
    .trim()
    .to_string();
    let _container = ContainerGuard(cid.clone());
    let cpid = String::from_utf8(
        Command::new("docker")
            .args(["inspect", "-f", "{{.State.Pid}}", &cid])
            .output()?
            .stdout,
    )?
    .trim()
    .to_string();
    let gpg_home = dir.join("g");
    std::fs::create_dir_all(&gpg_home)?;
    std::fs::set_permissions(&gpg_home, std::fs::Permissions::from_mode(0o700))?;
    run(Command::new("gpg")
        .args([
            "--batch",
            "--passphrase",
            "",
            "--quick-gen-key",
            "Bench <bench@example.com>",
            "ed25519",
            "sign",
            "never",
        ])
        .env("GNUPGHOME", &gpg_home)
        .stdout(Stdio::null())
        .stderr(Stdio::null()))?;
    let _ = Command::new("gpgconf")
        .args(["--kill", "gpg-agent"])
        .env("GNUPGHOME", &gpg_home)
        .status();
    let total = if smoke() {
        8 * 1024 * 1024
    } else {
        256 * 1024 * 1024
    };
    let sink_sock = dir.join("sink.sock");
    sink(&sink_sock, total)?;
    let _bridge = Killer(
        Command::new(&hostproxy)
            .args([
                "bridge",
                "--container",
                &cid,
                "--ssh",
                "--gpg",
                "--gpg-agent-socket",
            ])
            .arg(&sink_sock)
            .env("SSH_AUTH_SOCK", &agent_sock)
            .env("GNUPGHOME", &gpg_home)
            .env("CLAWKER_STATE_DIR", &state)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?,
    );
    let croot = PathBuf::from(format!("/proc/{cpid}/root"));
    let bridge_ssh = croot.join("root/.ssh/agent.sock");
    let bridge_gpg = croot.join("root/.gnupg/S.gpg-agent");
    wait_path(&bridge_ssh)?;
    wait_path(&bridge_gpg)?;

    let blob = key_blob(&agent_sock).context("listing the agent's key")?;
    let lanes: [(&str, &Path); 4] = [
        ("direct", &agent_sock),
        ("http", &proxy_sock),
        ("socat", &relay_sock),
        ("bridge", &bridge_ssh),
    ];
    let mut rates: Vec<Vec<f64>> = vec![Vec::new(); 5];
    let mut straight = clawker_client::blocking::Conn::new(&base, Some(token.clone().into()))?;
    for _ in 0..rounds(12) {
        for (i, (name, p)) in lanes.iter().enumerate() {
            rates[i].push(
                sign_rate(p, &blob, rounds(150))
                    .with_context(|| format!("signing through the {name} lane"))?,
            );
        }
        rates[4].push(daemon_sign_rate(&mut straight, &blob, rounds(150))?);
    }
    let ratio: Vec<Stat> = rates.iter().map(|r| paired(r, &rates[0])).collect();
    let st: Vec<Stat> = rates.into_iter().map(stat).collect();
    // The floor under the bridge lane: a request-sized echo through a bare exec'd `cat`.
    let rtt = stat(
        crate::exec_stream::round_trip_ms(&cid, 160, 12, 150).context("the bare exec stream")?,
    );
    let ceiling = 1.0 / (1.0 / st[0].median + rtt.median / 1000.0);
    chart.push(
        Lane::new("SSH agent signing (ed25519, sequential)", "sign/s", true)
            .ours("ssh-agent-proxy → daemon → agent", st[1].median)
            .ours("bridge", st[3].median)
            .beside("direct to ssh-agent", st[0].median)
            .beside("the daemon alone (kept-alive HTTP)", st[4].median)
            .beside("socat unix↔tcp relay", st[2].median)
            .beside("exec floor (direct + bare exec echo)", ceiling),
    );
    rows.push([
        "SSH agent signing (ed25519, sequential)".into(),
        format!(
            "ssh-agent-proxy→daemon→agent: {}; bridge: {}",
            fmt_rate(&st[1], "sign/s"),
            fmt_rate(&st[3], "sign/s")
        ),
        format!(
            "direct to ssh-agent: {}; socat unix↔tcp relay: {}; the daemon alone (this process on a kept-alive connection to `/ssh/agent`, no ssh-agent-proxy): {} ({} direct); bare `docker exec` echo (no bridge): {} a round trip, so a bridge could at best do {:.0} sign/s ({:.2}× direct)",
            fmt_rate(&st[0], "sign/s"),
            fmt_rate(&st[2], "sign/s"),
            fmt_rate(&st[4], "sign/s"),
            fmt_ratio(&ratio[4]),
            fmt_ms(&rtt),
            ceiling,
            ceiling / st[0].median
        ),
        format!(
            "HTTP ≥ 0.9×, bridge ≥ 0.95× direct → **HTTP {}, bridge {}, socat {}** {}",
            fmt_ratio(&ratio[1]),
            fmt_ratio(&ratio[3]),
            fmt_ratio(&ratio[2]),
            verdict(ratio[1].median >= 0.9 && ratio[3].median >= 0.95)
        ),
    ]);

    // 4. Bridge bulk throughput into the sink.
    let relay2_port = free_port()?;
    let relay2_sock = dir.join("relay2.sock");
    let _r2t = Killer(
        Command::new("socat")
            .arg(format!(
                "TCP-LISTEN:{relay2_port},bind=127.0.0.1,reuseaddr,fork"
            ))
            .arg(format!("UNIX-CONNECT:{}", sink_sock.display()))
            .spawn()?,
    );
    wait_port(relay2_port)?;
    let _r2u = Killer(
        Command::new("socat")
            .arg(format!("UNIX-LISTEN:{},fork", relay2_sock.display()))
            .arg(format!("TCP:127.0.0.1:{relay2_port}"))
            .spawn()?,
    );
    wait_path(&relay2_sock)?;
    let (mut b, mut d, mut s, mut e) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for _ in 0..rounds(5) {
        b.push(push_rate(&bridge_gpg, total).context("bulk through the bridge")?);
        d.push(push_rate(&sink_sock, total).context("bulk direct")?);
        s.push(push_rate(&relay2_sock, total).context("bulk through socat")?);
        e.push(crate::exec_stream::out_rate(&cid, total).context("bulk out of a bare exec")?);
    }
    let (rd, rs, re) = (paired(&b, &d), paired(&b, &s), paired(&b, &e));
    let (b, d, s, e) = (stat(b), stat(d), stat(s), stat(e));
    chart.push(
        Lane::new("bulk through the bridge", "MiB/s", true)
            .ours("bridge", b.median)
            .beside("direct unix socket", d.median)
            .beside("socat relay", s.median)
            .beside("bare docker exec stdout", e.median),
    );
    rows.push([
        "bulk through the bridge and the tunnel's streams (256 MiB; one code path, `serve_bridge`)".into(),
        format!("through the bridge: {}", fmt_rate(&b, "MiB/s")),
        format!(
            "direct unix socket: {}; socat relay: {}; bare `docker exec` stdout (`dd` in the container, no bridge): {}",
            fmt_rate(&d, "MiB/s"),
            fmt_rate(&s, "MiB/s"),
            fmt_rate(&e, "MiB/s")
        ),
        format!(
            "≥ 0.9× the bare exec stream → **{} exec stream** ({} direct, {} socat) {}",
            fmt_ratio(&re),
            fmt_ratio(&rd),
            fmt_ratio(&rs),
            verdict(re.median >= 0.9)
        ),
    ]);

    // 5. OAuth delivery: capture on the daemon's listener → local server receives the replay.
    let local = std::net::TcpListener::bind("127.0.0.1:0")?;
    let local_port = local.local_addr()?.port();
    let rx = local_server(local);
    let (mut ours, mut hop) = (Vec::new(), Vec::new());
    for _ in 0..rounds(25) {
        let cb_port = free_port()?;
        let (_, reg) = http(
            port,
            "POST",
            "/callback/register",
            &token,
            Some(&format!("{{\"port\":{cb_port},\"state\":\"bench\"}}")),
        )?;
        let v: serde_json::Value = serde_json::from_str(&reg)?;
        let id = v["session_id"].as_str().context("session id")?.to_string();
        let mut fwd = Command::new(dist.join("callback-forwarder"));
        fwd.env_clear()
            .envs(tool_env.iter().map(|(k, v)| (*k, v.as_str())))
            .env("CALLBACK_SESSION", &id)
            .env("CALLBACK_PORT", local_port.to_string());
        ours.push(deliver(&mut fwd, cb_port, &rx)?);
        let t0 = hop_request(local_port)?;
        hop.push(ms(rx.recv_timeout(Duration::from_secs(10))? - t0));
    }
    let (o, h) = (stat(ours), stat(hop));
    chart.push(
        Lane::new("OAuth delivery, TCP lane (p50)", "ms", false)
            .ours("capture → long-poll → replay", o.median)
            .beside("one direct HTTP hop", h.median),
    );
    rows.push([
        "OAuth delivery (redirect → container's local server)".into(),
        format!("capture → long-poll → replay: {}", fmt_ms(&o)),
        format!(
            "upstream 2 s poll: ~1000 ms mean (computed); one direct HTTP hop: {}",
            fmt_ms(&h)
        ),
        format!(
            "p50 ≤ 10 ms (TCP lane) → **{:.2} ms** {}",
            o.median,
            verdict(o.median <= 10.0)
        ),
    ]);

    // The tunnel's lanes (Benchmarks v2).
    crate::bench_tunnel::lanes(
        &crate::bench_tunnel::Ctx {
            hostproxy: &hostproxy,
            dist: &dist,
            dir,
            image: &image,
            agent_sock: &agent_sock,
            blob: &blob,
            state: &state,
            label: &daemon.attach_label,
            daemon_pid: daemon.process.0.id(),
            base: &base,
            token: &token,
            host_git: (&host_home, &dir.join("host-gitconfig")),
            sink_total: total,
        },
        &mut rows,
        &mut chart,
    )
    .context("the tunnel lanes")?;

    // Egress (SPEC.md 13): git and API upstreams through the daemon, beside direct.
    crate::bench_egress::lanes(&hostproxy, dir, &mut rows, &mut chart)
        .context("the egress lanes")?;

    // 6. Daemon under load, 7. footprint.
    let mut ids = Vec::new();
    for _ in 0..rounds(16) {
        let (_, reg) = http(
            port,
            "POST",
            "/callback/register",
            &token,
            Some(&format!(
                "{{\"port\":{},\"state\":\"bench\"}}",
                free_port()?
            )),
        )?;
        let v: serde_json::Value = serde_json::from_str(&reg)?;
        ids.push(v["session_id"].as_str().context("session id")?.to_string());
    }
    // The load generator on one core, the daemon on the other, so the tail is the daemon's.
    let pinned = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        >= 2
        && Command::new("taskset")
            .args(["-a", "-p", "-c", "1", &daemon.process.0.id().to_string()])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
    for conns in [64, 512] {
        let core = pinned.then_some(0);
        let h = wrk(&format!("{base}/health"), conns, None, core)?;
        let d = wrk(
            &format!("{base}/callback/{}/data", ids[0]),
            conns,
            Some(&token),
            core,
        )?;
        rows.push([
            format!(
                "daemon under load, {conns} connections (wrk -d5s{})",
                if pinned { "; wrk on core 0, the daemon on core 1" } else { "; not pinned: one core" }
            ),
            format!("`/health`: {:.0} req/s, p50 {}, p99 {}; `/callback/{{id}}/data`: {:.0} req/s, p50 {}, p99 {}", h.rps, h.p50, h.p99, d.rps, d.p50, d.p99),
            "—".into(),
            if conns == 64 {
                format!(
                    "≥ 50k req/s, p99 ≤ 5 ms on `/health` → **{:.0} req/s, p99 {}** {}",
                    h.rps,
                    h.p99,
                    verdict(h.rps >= 50_000.0 && h.p99_ms <= 5.0)
                )
            } else {
                "(no target)".into()
            },
        ]);
    }
    // 8. mock-proxy's start-up, as a CI service: spawn → first `/health` answered, beside a
    // static C server's (busybox httpd) spawn → first answer, alternating.
    let (mut mock_ms, mut httpd_ms) = (Vec::new(), Vec::new());
    for _ in 0..rounds(15) {
        mock_ms.push(startup(
            Command::new(dist.join("x86_64").join(crate::MOCK)).args(["--port"]),
            "/health",
        )?);
        httpd_ms.push(startup(
            Command::new("busybox").args(["httpd", "-f", "-h", "/tmp", "-p"]),
            "/",
        )?);
    }
    let (mock_s, httpd_s) = (stat(mock_ms.clone()), stat(httpd_ms.clone()));
    rows.push([
        "mock-proxy start-up (spawn → first `/health` answered)".into(),
        format!(
            "mock-proxy (static, {:.2} MiB): {}",
            std::fs::metadata(dist.join("x86_64").join(crate::MOCK))?.len() as f64 / 1048576.0,
            fmt_ms(&mock_s)
        ),
        format!(
            "busybox httpd (static C) spawn → first answer: {}",
            fmt_ms(&httpd_s)
        ),
        format!(
            "static, ≤ 4 MiB (no start-up target) → **{}× busybox httpd**",
            fmt_ratio(&paired(&mock_ms, &httpd_ms))
        ),
    ]);
    let loaded_rss = rss_kib(daemon.process.0.id())?;
    let sizes: Vec<String> = crate::TOOLS
        .iter()
        .map(|t| {
            Ok(format!(
                "{t} {:.2} MiB",
                std::fs::metadata(dist.join(t))?.len() as f64 / 1048576.0
            ))
        })
        .collect::<Result<_>>()?;
    rows.push([
        "footprint".into(),
        format!("daemon RSS idle {:.1} MiB; after the load above with 16 live callback sessions {:.1} MiB", idle_rss as f64 / 1024.0, loaded_rss as f64 / 1024.0),
        sizes.join("; "),
        format!(
            "idle ≤ 10 MiB, loaded ≤ 20 MiB, each tool ≤ 1.5 MiB {}",
            verdict(
                idle_rss as f64 / 1024.0 <= 10.0
                    && loaded_rss as f64 / 1024.0 <= 20.0
                    && crate::TOOLS.iter().all(|t| std::fs::metadata(dist.join(t))
                        .is_ok_and(|m| m.len() as f64 <= 1.5 * 1048576.0))
            )
        ),
    ]);
    notes.push(format!(
        "{} sessions were live during the `/callback/{{id}}/data` runs.",
        ids.len()
    ));
    drop(agent);

    write_report(&rows, &notes, &chart)?;
    let _ = std::fs::remove_dir_all(dir);
    Ok(())
}

/// Starts `cmd PORT` (the port appended), times it until `path` answers on that port, then
/// ends it.
fn startup(cmd: &mut Command, path: &str) -> Result<f64> {
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
fn bench_image(dist: &Path, dir: &Path) -> Result<String> {
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
    for t in crate::TOOLS {
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

fn tempfile_dir() -> Result<PathBuf> {
    let d = std::env::temp_dir().join(format!("hp-bench-{}", std::process::id()));
    std::fs::create_dir_all(&d)?;
    Ok(d)
}

fn write_report(rows: &[[String; 4]], notes: &[String], chart: &[Lane]) -> Result<()> {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_else(|| "unknown cpu".into());
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let date = String::from_utf8(
        Command::new("date")
            .args(["-u", "+%Y-%m-%d %H:%M UTC"])
            .output()?
            .stdout,
    )?;
    let mut md = String::new();
    md.push_str("# Benchmarks\n\n");
    md.push_str("Generated by `cargo xtask bench` (release daemon, static `dist` tools; ours and the baseline alternate in the same run). ");
    md.push_str("Times are medians with min–max; rates are medians of rounds with min–max. A result `r× (a–b)` is the median of the ratios of ours to the baseline measured right beside it (each credential request against the next direct one, each signing round against the direct round before it), with their min–max: a paired comparison, so that this shared machine speeding up or slowing down moves both sides alike.\n\n");
    md.push_str(&format!(
        "- machine: {cores} cores, {cpu}\n- date: {}\n- command: `cargo xtask bench`\n\n",
        date.trim()
    ));
    md.push_str("| case | ours | baseline(s), same run | target → result |\n|---|---|---|---|\n");
    for r in rows {
        md.push_str(&format!("| {} | {} | {} | {} |\n", r[0], r[1], r[2], r[3]));
    }
    md.push('\n');
    for n in notes {
        md.push_str(&format!("- {n}\n"));
    }
    let (svg_path, svg_name) = if smoke() {
        (root().join("target/bench-smoke.svg"), "bench-smoke.svg")
    } else {
        (root().join("BENCHMARKS.svg"), "BENCHMARKS.svg")
    };
    std::fs::write(
        &svg_path,
        crate::chart::svg(
            chart,
            &format!("cargo xtask bench, {}: medians, same run", date.trim()),
        ),
    )?;
    md.push_str(&format!(
        "\n![Each lane: ours (blue) beside its floor and baselines (grey), medians of the same run]({svg_name})\n"
    ));
    let analysis = root().join("BENCHMARKS.analysis.md");
    if let Ok(text) = std::fs::read_to_string(&analysis) {
        md.push('\n');
        md.push_str(&text);
    }
    let out = if smoke() {
        root().join("target/bench-smoke.md")
    } else {
        root().join("BENCHMARKS.md")
    };
    std::fs::write(out, &md)?;
    println!("{md}");
    Ok(())
}
