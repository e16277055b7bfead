//! Benchmarks v2: the tunnel's lanes (SPEC.md 6.1), each beside its floor and a peer-style
//! baseline in the same run. The container's side is reached from the host without a
//! network: its sockets through `/proc/<pid>/root`, its loopback by entering its network
//! namespace (`nsenter --net`, or `setns` on a thread of this process).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use super::chart::Lane;
use super::measure::{
    Bench, fmt_ms, fmt_rate, fmt_ratio, paired, stat, timed, timed_input, verdict,
};
use super::probes::{
    ContainerGuard as Container, cpu_ticks, deliver, health_in_netns, hop_request, http, in_netns,
    local_server, push_rate, rss_kib, sign_rate, wait_path,
};
use crate::scratch::Killer;

/// What the tunnel lanes need from the rest of the bench.
pub struct Ctx<'a> {
    pub hostproxy: &'a Path,
    pub dist: &'a Path,
    pub dir: &'a Path,
    pub image: &'a str,
    pub agent_sock: &'a Path,
    pub blob: &'a [u8],
    /// The scratch daemon's state dir (its control socket) and attach label.
    pub state: &'a Path,
    pub label: &'a str,
    pub daemon_pid: u32,
    /// The daemon's TCP lane: base URL and token.
    pub base: &'a str,
    pub token: &'a str,
    pub host_git: (&'a Path, &'a Path),
    /// Bytes per bulk push into the declared socket `sink` (the bench's sink).
    pub sink_total: usize,
}

/// Where the tunnel listens inside a container (its defaults: nothing configured).
const TUNNEL: &str = clawker_protocol::tunnel::DEFAULT_HTTP_LISTEN;

fn out(cmd: &mut Command) -> Result<String> {
    let o = cmd.output()?;
    if !o.status.success() {
        bail!("{:?} failed: {}", cmd, String::from_utf8_lossy(&o.stderr));
    }
    Ok(String::from_utf8(o.stdout)?.trim().to_string())
}

/// `docker run -d` of a labelled tunnel container; its id.
fn run_labelled(ctx: &Ctx<'_>, extra: &[&str]) -> Result<Container> {
    let mut c = Command::new("docker");
    c.args([
        "run",
        "-d",
        "--network",
        "none",
        "-v",
        "/usr:/usr:ro",
        "--label",
        ctx.label,
    ])
    .args([
        "-e",
        &format!("CLAWKER_HOST_PROXY=http://{TUNNEL}"),
        "-e",
        "SSH_AUTH_SOCK=/tmp/t/agent.sock",
    ])
    .args(extra)
    .args([ctx.image, "sleep", "900"]);
    Ok(Container(out(&mut c)?))
}

fn pid_of(c: &Container) -> Result<u32> {
    Ok(out(Command::new("docker").args(["inspect", "-f", "{{.State.Pid}}", &c.0]))?.parse()?)
}

/// A peer-style relay: socat in the container `c` (the host's, from the bind-mounted
/// `/usr`) listening on `/tmp/NAME.sock`, over `docker exec -i`, to a host socat on
/// `target`. It serves one connection. Returns the relay and the socket's path as seen from
/// the host (through `root`, the container's `/proc/PID/root`).
fn socat_over_exec(
    c: &Container,
    root: &Path,
    name: &str,
    target: &Path,
) -> Result<(Killer, PathBuf)> {
    let peer = format!("/tmp/{name}.sock");
    let relay = Killer(
        Command::new("socat")
            .arg(format!(
                "EXEC:docker exec -i {} /usr/bin/socat STDIO UNIX-LISTEN\\:{peer}",
                c.0
            ))
            .arg(format!("UNIX-CONNECT:{}", target.display()))
            .stderr(Stdio::null())
            .spawn()?,
    );
    let on_host = root.join(peer.trim_start_matches('/'));
    // Only looked at, not connected to: the relay serves one connection.
    let deadline = Instant::now() + Duration::from_secs(20);
    while !on_host.exists() {
        if Instant::now() > deadline {
            bail!("the socat-over-exec relay never listened");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok((relay, on_host))
}

/// Waits until `hostproxy attach --list` shows `n` attachments serving.
fn wait_serving(ctx: &Ctx<'_>, n: usize) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let list = out(Command::new(ctx.hostproxy)
            .args(["attach", "--list", "--json"])
            .env("CLAWKER_STATE_DIR", ctx.state))?;
        let v: serde_json::Value = serde_json::from_str(&list)?;
        let serving = v
            .as_array()
            .map(|a| a.iter().filter(|x| x["state"] == "serving").count())
            .unwrap_or(0);
        if serving >= n {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("only {serving} of {n} containers attached");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub fn lanes(ctx: &Ctx<'_>, bench: &mut Bench) -> Result<()> {
    // Attach latency: the container starts → /health answered through its tunnel.
    let (mut attach, mut exec_true) = (Vec::new(), Vec::new());
    for _ in 0..bench.rounds(10) {
        let mut c = Command::new("docker");
        c.args([
            "run",
            "-d",
            "--network",
            "none",
            "--label",
            ctx.label,
            ctx.image,
            "sleep",
            "900",
        ]);
        let id = out(&mut c)?;
        let t0 = Instant::now();
        let guard = Container(id);
        let pid = pid_of(&guard)?;
        let t1 = health_in_netns(pid, Duration::from_secs(20))?;
        attach.push((t1 - t0).as_secs_f64() * 1000.0);
        exec_true.push(timed(
            Command::new("docker").args(["exec", &guard.0, "true"]),
        )?);
    }
    let (a, e) = (stat(attach), stat(exec_true));
    bench.lane(
        Lane::new("attach latency (p50)", "ms", false)
            .ours("container start → /health through the tunnel", a.median)
            .beside("docker exec C true", e.median)
            .beside("target", 300.0),
    );
    bench.row([
        "attach latency (container started → `/health` answered through its tunnel)".into(),
        format!("labelled container, tools in the image: {}", fmt_ms(&a)),
        format!("`docker exec C true` round trip: {}", fmt_ms(&e)),
        format!(
            "p50 ≤ 300 ms → **{:.0} ms** {}",
            a.median,
            verdict(a.median <= 300.0)
        ),
    ]);

    // One attached container for the signing and credential lanes.
    let c = run_labelled(ctx, &[])?;
    let pid = pid_of(&c)?;
    let root = PathBuf::from(format!("/proc/{pid}/root"));
    let tunnel_ssh = root.join("tmp/t/agent.sock");
    wait_path(&tunnel_ssh).context("the tunnel's ssh-agent socket")?;

    // SSH signing: direct, the tunnel, and a peer-style relay (socat in the container over
    // `docker exec -i`, to a host socat on the agent socket; one connection per exec).
    let mut rates: [Vec<f64>; 3] = [Vec::new(), Vec::new(), Vec::new()];
    for round in 0..bench.rounds(12) {
        rates[0].push(sign_rate(ctx.agent_sock, ctx.blob, bench.rounds(150))?);
        rates[1].push(
            sign_rate(&tunnel_ssh, ctx.blob, bench.rounds(150))
                .context("signing through the tunnel")?,
        );
        let (_relay, peer_host) =
            socat_over_exec(&c, &root, &format!("peer{round}"), ctx.agent_sock)?;
        rates[2].push(
            sign_rate(&peer_host, ctx.blob, bench.rounds(150))
                .context("signing through socat over exec")?,
        );
    }
    let rtt = stat(super::exec_stream::round_trip_ms(&c.0, 160, 12, 150)?);
    let direct = stat(rates[0].clone());
    let floor = 1.0 / (1.0 / direct.median + rtt.median / 1000.0);
    let vs_peer = paired(&rates[1], &rates[2]);
    let t = stat(rates[1].clone());
    let p = stat(rates[2].clone());
    let of_floor = t.median / floor;
    bench.lane(
        Lane::new("SSH signing through the tunnel", "sign/s", true)
            .ours("tunnel", t.median)
            .beside("direct to ssh-agent", direct.median)
            .beside("exec floor", floor)
            .beside("socat over docker exec -i", p.median),
    );
    bench.row([
        "SSH signing through the tunnel (the attached container's agent socket)".into(),
        format!("tunnel: {}", fmt_rate(&t, "sign/s")),
        format!(
            "direct: {}; bare exec echo {} a round trip, so the exec floor is {floor:.0} sign/s; socat over `docker exec -i`: {}",
            fmt_rate(&direct, "sign/s"),
            fmt_ms(&rtt),
            fmt_rate(&p, "sign/s")
        ),
        format!(
            "≥ 0.95× the exec floor, ≥ 1.2× socat over exec → **{of_floor:.2}× floor, {} socat** {}",
            fmt_ratio(&vs_peer),
            verdict(of_floor >= 0.95 && vs_peer.median >= 1.2)
        ),
    ]);

    // git credential fill: the tunnel (no token, from the container's network namespace)
    // beside the TCP lane (token, the host's namespace); both under nsenter, so both pay
    // the same extra exec.
    let (home, _) = ctx.host_git;
    let helper_cfg = ctx.dir.join("t-gitconfig");
    std::fs::write(
        &helper_cfg,
        format!(
            "[credential]\n\thelper = {}\n",
            ctx.dist.join("git-credential-clawker").display()
        ),
    )?;
    let git = |netns: &str, env: &[(&str, &str)]| {
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net={netns}"))
            .args(["--", "git", "credential", "fill"])
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", home)
            .env("GIT_CONFIG_GLOBAL", &helper_cfg)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_TERMINAL_PROMPT", "0")
            .envs(env.iter().copied());
        cmd
    };
    let input = "protocol=https\nhost=github.com\n\n";
    let netns = format!("/proc/{pid}/ns/net");
    let ours = format!("/proc/{}/ns/net", std::process::id());
    let (mut tun, mut tcp) = (Vec::new(), Vec::new());
    for _ in 0..bench.rounds(40) {
        tun.push(timed_input(
            &mut git(
                &netns,
                &[("CLAWKER_HOST_PROXY", &format!("http://{TUNNEL}"))],
            ),
            input,
        )?);
        tcp.push(timed_input(
            &mut git(
                &ours,
                &[
                    ("CLAWKER_HOST_PROXY", ctx.base),
                    ("CLAWKER_HOST_PROXY_TOKEN", ctx.token),
                ],
            ),
            input,
        )?);
    }
    let r = paired(&tun, &tcp);
    let (a, b) = (stat(tun), stat(tcp));
    bench.lane(
        Lane::new("git credential fill (p50)", "ms", false)
            .ours("through the tunnel", a.median)
            .beside("the TCP lane", b.median),
    );
    bench.row([
        "git credential fill through the tunnel".into(),
        format!("helper over the tunnel (no token): {}", fmt_ms(&a)),
        format!("the same helper over the TCP lane (token): {}", fmt_ms(&b)),
        format!(
            "≤ 1.15× the TCP lane → **{}** {}",
            fmt_ratio(&r),
            verdict(r.median <= 1.15)
        ),
    ]);
    drop(c);
    oauth_lane(ctx, bench)?;
    bulk_lane(ctx, bench)?;

    // 16 attached containers, idle: the daemon's memory, and its CPU over the idle time.
    let n = bench.rounds(16);
    let many: Vec<Container> = (0..n)
        .map(|_| run_labelled(ctx, &[]))
        .collect::<Result<_>>()?;
    wait_serving(ctx, n)?;
    std::thread::sleep(Duration::from_millis(500));
    let rss = rss_kib(ctx.daemon_pid)? as f64 / 1024.0;
    let idle = if bench.smoke() { 1 } else { 10 };
    let before = cpu_ticks(ctx.daemon_pid)?;
    std::thread::sleep(Duration::from_secs(idle));
    let ticks = cpu_ticks(ctx.daemon_pid)? - before;
    drop(many);
    bench.row([
        format!("{n} containers attached, idle"),
        format!(
            "daemon RSS {rss:.1} MiB; CPU over {idle} s idle: {ticks} clock ticks ({:.2} %)",
            ticks as f64 / (idle as f64 * 100.0) * 100.0
        ),
        "—".into(),
        format!(
            "RSS ≤ 40 MiB, 0 % CPU idle → **{rss:.1} MiB, {ticks} ticks** {}",
            verdict(rss <= 40.0 && ticks == 0)
        ),
    ]);
    Ok(())
}

/// OAuth delivery through the tunnel: the container registers its session and runs
/// `callback-forwarder` over the tunnel (no token); the browser's hit lands on the host's
/// listener; the time until the container's own local server sees the replayed request.
/// Beside it, one direct HTTP hop to that same local server, from inside the container.
///
/// A container may register 10 sessions a minute (`SCOPED_REGISTER_PER_MINUTE`), so the
/// rounds are spread over three attached containers.
fn oauth_lane(ctx: &Ctx<'_>, bench: &mut Bench) -> Result<()> {
    let (mut ours, mut hop) = (Vec::new(), Vec::new());
    for _ in 0..bench.rounds(3) {
        let c = run_labelled(ctx, &[])?;
        let pid = pid_of(&c)?;
        health_in_netns(pid, Duration::from_secs(30))?;
        oauth_rounds(ctx, pid, bench.rounds(8), &mut ours, &mut hop)?;
    }
    let (o, h) = (stat(ours), stat(hop));
    bench.lane(
        Lane::new("OAuth delivery through the tunnel (p50)", "ms", false)
            .ours("browser hit → the container's local server", o.median)
            .beside("one direct HTTP hop", h.median)
            .beside("target", 3.0),
    );
    bench.row([
        "OAuth delivery through the tunnel (browser hit on the host → the container's local server)".into(),
        format!(
            "capture → long-poll over the tunnel → replay in the container: {}",
            fmt_ms(&o)
        ),
        format!(
            "one direct HTTP hop to the same local server: {}",
            fmt_ms(&h)
        ),
        format!(
            "p50 ≤ 3 ms → **{:.2} ms** {}",
            o.median,
            verdict(o.median <= 3.0)
        ),
    ]);
    Ok(())
}

/// `n` logins in the container `pid`: (delivery, direct hop) times pushed onto `ours`, `hop`.
fn oauth_rounds(
    ctx: &Ctx<'_>,
    pid: u32,
    n: usize,
    ours: &mut Vec<f64>,
    hop: &mut Vec<f64>,
) -> Result<()> {
    let local = in_netns(pid, || Ok(std::net::TcpListener::bind("127.0.0.1:0")?))?;
    let local_port = local.local_addr()?.port();
    let rx = local_server(local);
    let netns = format!("/proc/{pid}/ns/net");
    for _ in 0..n {
        let cb_port = crate::scratch::free_port()?;
        let body = format!("{{\"port\":{cb_port},\"state\":\"bench\"}}");
        let (status, reg) = in_netns(pid, move || {
            http(
                clawker_protocol::DEFAULT_PORT,
                "POST",
                "/callback/register",
                "",
                Some(&body),
            )
        })?;
        if status != 201 && status != 200 {
            bail!("registering through the tunnel: {status} {reg}");
        }
        let v: serde_json::Value = serde_json::from_str(&reg)?;
        let id = v["session_id"].as_str().context("session id")?.to_string();
        let mut fwd = Command::new("nsenter");
        fwd.arg(format!("--net={netns}"))
            .arg("--")
            .arg(ctx.dist.join("callback-forwarder"))
            .env_clear()
            .env("CLAWKER_HOST_PROXY", format!("http://{TUNNEL}"))
            .env("CALLBACK_SESSION", &id)
            .env("CALLBACK_PORT", local_port.to_string());
        ours.push(deliver(&mut fwd, cb_port, &rx)?);
        let t0 = in_netns(pid, move || hop_request(local_port))?;
        hop.push((rx.recv_timeout(Duration::from_secs(10))? - t0).as_secs_f64() * 1000.0);
    }
    Ok(())
}

/// Bulk through the tunnel: 256 MiB into the declared socket `sink` of an attached
/// container (its `/tmp/.hostproxy/sockets/sink.sock`, reached through `/proc/PID/root`), to
/// the host's sink. Beside it, the bare exec stream (`dd` to stdout) and a peer-style relay
/// (socat in the container over `docker exec -i`, to a host socat on the sink).
fn bulk_lane(ctx: &Ctx<'_>, bench: &mut Bench) -> Result<()> {
    use clawker_protocol::tunnel::{DEFAULT_SCOPES, SCOPES_LABEL, SOCKETS_LABEL};
    let scopes = format!("{SCOPES_LABEL}={},socket:sink", DEFAULT_SCOPES.join(","));
    let sockets = format!("{SOCKETS_LABEL}=sink");
    let c = run_labelled(ctx, &["--label", &scopes, "--label", &sockets])?;
    let pid = pid_of(&c)?;
    let root = PathBuf::from(format!("/proc/{pid}/root"));
    let tunnel_sink =
        root.join(clawker_protocol::tunnel::declared_socket_path("sink").trim_start_matches('/'));
    wait_path(&tunnel_sink).context("the tunnel's declared socket `sink`")?;
    let sink = ctx.dir.join("sink.sock");
    let total = ctx.sink_total;
    let (mut t, mut e, mut s) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..bench.rounds(5) {
        t.push(push_rate(&tunnel_sink, total).context("bulk through the tunnel")?);
        e.push(super::exec_stream::out_rate(&c.0, total).context("bulk out of a bare exec")?);
        let (_relay, peer_host) = socat_over_exec(&c, &root, &format!("bulk{round}"), &sink)?;
        s.push(push_rate(&peer_host, total).context("bulk through socat over exec")?);
    }
    let (re, rs) = (paired(&t, &e), paired(&t, &s));
    let (t, e, s) = (stat(t), stat(e), stat(s));
    bench.lane(
        Lane::new("bulk through the tunnel", "MiB/s", true)
            .ours("tunnel (declared socket)", t.median)
            .beside("bare docker exec stdout", e.median)
            .beside("socat over docker exec -i", s.median),
    );
    bench.row([
        format!(
            "bulk through the tunnel ({} MiB into an attached container's declared socket)",
            total / (1024 * 1024)
        ),
        format!("tunnel: {}", fmt_rate(&t, "MiB/s")),
        format!(
            "bare `docker exec` stdout (`dd`): {}; socat over `docker exec -i`: {}",
            fmt_rate(&e, "MiB/s"),
            fmt_rate(&s, "MiB/s")
        ),
        format!(
            "≥ 0.9× the bare exec stream → **{} exec stream, {} socat** {}",
            fmt_ratio(&re),
            fmt_ratio(&rs),
            verdict(re.median >= 0.9)
        ),
    ]);
    Ok(())
}
