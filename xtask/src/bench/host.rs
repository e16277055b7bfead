//! The lanes on the host's side of the TCP lane and the bridge: the credential round trip,
//! a tool's start, SSH signing (HTTP, socat, the bridge, the exec floor), bulk through the
//! bridge, OAuth delivery.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result};

use super::chart::Lane;
use super::measure::{
    Bench, Stat, fmt_ms, fmt_rate, fmt_ratio, ms, paired, stat, timed, timed_input, verdict,
};
use super::probes::{
    ContainerGuard, bench_image, daemon_sign_rate, deliver, hop_request, http, key_blob,
    local_server, push_rate, script, sign_rate, sink, wait_path,
};
use crate::scratch::{Killer, ScratchDaemon, free_port, wait_port};
use crate::util::run;

/// What every lane on the host side shares: the scratch daemon with its ssh-agent and git,
/// the tools, and how a tool reaches the daemon.
pub(crate) struct Host {
    pub(crate) dir: PathBuf,
    pub(crate) dist: PathBuf,
    pub(crate) hostproxy: PathBuf,
    pub(crate) agent_sock: PathBuf,
    pub(crate) state: PathBuf,
    pub(crate) port: u16,
    pub(crate) token: String,
    pub(crate) base: String,
    pub(crate) host_home: PathBuf,
    /// `CLAWKER_HOST_PROXY` and its token, as a tool on the TCP lane gets them.
    pub(crate) tool_env: [(&'static str, String); 2],
    /// The daemon's RSS right after its start, in KiB.
    pub(crate) idle_rss: u64,
    pub(crate) daemon: ScratchDaemon,
}

/// Lane 1, the credential round trip: git with our helper through the daemon, beside git
/// with the host's helper directly and a shell+curl+jq helper.
pub(crate) fn credential(h: &Host, bench: &mut Bench) -> Result<()> {
    let Host {
        dir,
        dist,
        token,
        base,
        tool_env,
        host_home,
        ..
    } = h;
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
    for _ in 0..bench.rounds(40) {
        ours.push(timed_input(
            &mut git("c-gitconfig", &c_home, tool_env),
            input,
        )?);
        direct.push(timed_input(
            &mut git("host-gitconfig", host_home, &[]),
            input,
        )?);
        shell.push(timed_input(&mut git("s-gitconfig", &c_home, &[]), input)?);
    }
    let (rd, rs) = (paired(&ours, &direct), paired(&ours, &shell));
    let (o, d, s) = (stat(ours), stat(direct), stat(shell));
    bench.row([
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
    Ok(())
}

/// Lane 2, a tool's start and one request, beside `sh -c 'curl …'`.
pub(crate) fn tool_start(h: &Host, bench: &mut Bench) -> Result<()> {
    let Host {
        dist,
        token,
        base,
        tool_env,
        ..
    } = h;
    let (mut ours, mut shell) = (Vec::new(), Vec::new());
    for _ in 0..bench.rounds(40) {
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
    bench.row([
        "tool start + one request".into(),
        format!("`host-open URL`: {}", fmt_ms(&o)),
        format!("`sh -c 'curl …/open/url'`: {}", fmt_ms(&s)),
        format!(
            "≤ 0.5× → **{}** {}",
            fmt_ratio(&r),
            verdict(r.median <= 0.5)
        ),
    ]);
    Ok(())
}

/// The bridge the signing lane sets up and the bulk and tunnel lanes use: a container of the
/// bench image, `hostproxy bridge` into it, the sink its gpg socket streams to.
pub(crate) struct Bridge {
    pub(crate) image: String,
    pub(crate) blob: Vec<u8>,
    pub(crate) sink_total: usize,
    container: ContainerGuard,
    sink_sock: PathBuf,
    gpg: PathBuf,
    _bridge: Killer,
}

/// Lane 3, SSH agent signing: ssh-agent-proxy → daemon, the daemon alone, socat, the
/// bridge, beside ssh-agent directly and the exec floor.
pub(crate) fn signing(h: &Host, bench: &mut Bench) -> Result<Bridge> {
    let Host {
        dir,
        dist,
        hostproxy,
        agent_sock,
        state,
        token,
        base,
        tool_env,
        ..
    } = h;
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
    let image = bench_image(dist, dir)?;
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
    let total = if bench.smoke() {
        8 * 1024 * 1024
    } else {
        256 * 1024 * 1024
    };
    let sink_sock = dir.join("sink.sock");
    sink(&sink_sock, total)?;
    let _bridge = Killer(
        Command::new(hostproxy)
            .args([
                "bridge",
                "--container",
                &cid,
                "--ssh",
                "--gpg",
                "--gpg-agent-socket",
            ])
            .arg(&sink_sock)
            .env("SSH_AUTH_SOCK", agent_sock)
            .env("GNUPGHOME", &gpg_home)
            .env("CLAWKER_STATE_DIR", state)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?,
    );
    let croot = PathBuf::from(format!("/proc/{cpid}/root"));
    let bridge_ssh = croot.join("root/.ssh/agent.sock");
    let bridge_gpg = croot.join("root/.gnupg/S.gpg-agent");
    wait_path(&bridge_ssh)?;
    wait_path(&bridge_gpg)?;

    let blob = key_blob(agent_sock).context("listing the agent's key")?;
    let lanes: [(&str, &Path); 4] = [
        ("direct", agent_sock),
        ("http", &proxy_sock),
        ("socat", &relay_sock),
        ("bridge", &bridge_ssh),
    ];
    let mut rates: Vec<Vec<f64>> = vec![Vec::new(); 5];
    let mut straight = clawker_client::blocking::Conn::new(base, Some(token.clone().into()))?;
    for _ in 0..bench.rounds(12) {
        for (i, (name, p)) in lanes.iter().enumerate() {
            rates[i].push(
                sign_rate(p, &blob, bench.rounds(150))
                    .with_context(|| format!("signing through the {name} lane"))?,
            );
        }
        rates[4].push(daemon_sign_rate(&mut straight, &blob, bench.rounds(150))?);
    }
    let ratio: Vec<Stat> = rates.iter().map(|r| paired(r, &rates[0])).collect();
    let st: Vec<Stat> = rates.into_iter().map(stat).collect();
    // The floor under the bridge lane: a request-sized echo through a bare exec'd `cat`.
    let rtt = stat(
        super::exec_stream::round_trip_ms(&cid, 160, 12, 150).context("the bare exec stream")?,
    );
    let ceiling = 1.0 / (1.0 / st[0].median + rtt.median / 1000.0);
    bench.lane(
        Lane::new("SSH agent signing (ed25519, sequential)", "sign/s", true)
            .ours("ssh-agent-proxy → daemon → agent", st[1].median)
            .ours("bridge", st[3].median)
            .beside("direct to ssh-agent", st[0].median)
            .beside("the daemon alone (kept-alive HTTP)", st[4].median)
            .beside("socat unix↔tcp relay", st[2].median)
            .beside("exec floor (direct + bare exec echo)", ceiling),
    );
    bench.row([
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
    Ok(Bridge {
        image,
        blob,
        sink_total: total,
        container: _container,
        sink_sock,
        gpg: bridge_gpg,
        _bridge,
    })
}

/// Lane 4, bulk through the bridge into the sink, beside the sink directly, socat and the bare
/// exec stream.
pub(crate) fn bulk(h: &Host, bridge: &Bridge, bench: &mut Bench) -> Result<()> {
    let dir = &h.dir;
    let (sink_sock, bridge_gpg, total) = (&bridge.sink_sock, &bridge.gpg, bridge.sink_total);
    let cid = &bridge.container.0;
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
    for _ in 0..bench.rounds(5) {
        b.push(push_rate(bridge_gpg, total).context("bulk through the bridge")?);
        d.push(push_rate(sink_sock, total).context("bulk direct")?);
        s.push(push_rate(&relay2_sock, total).context("bulk through socat")?);
        e.push(super::exec_stream::out_rate(cid, total).context("bulk out of a bare exec")?);
    }
    let (rd, rs, re) = (paired(&b, &d), paired(&b, &s), paired(&b, &e));
    let (b, d, s, e) = (stat(b), stat(d), stat(s), stat(e));
    bench.lane(
        Lane::new("bulk through the bridge", "MiB/s", true)
            .ours("bridge", b.median)
            .beside("direct unix socket", d.median)
            .beside("socat relay", s.median)
            .beside("bare docker exec stdout", e.median),
    );
    bench.row([
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
    Ok(())
}

/// Lane 5, OAuth delivery on the TCP lane: the browser's hit on the daemon's listener → the
/// container's local server gets the replay, beside one direct HTTP hop.
pub(crate) fn oauth(h: &Host, bench: &mut Bench) -> Result<()> {
    let Host {
        dist,
        port,
        token,
        tool_env,
        ..
    } = h;
    let port = *port;
    let local = std::net::TcpListener::bind("127.0.0.1:0")?;
    let local_port = local.local_addr()?.port();
    let rx = local_server(local);
    let (mut ours, mut hop) = (Vec::new(), Vec::new());
    for _ in 0..bench.rounds(25) {
        let cb_port = free_port()?;
        let (_, reg) = http(
            port,
            "POST",
            "/callback/register",
            token,
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
    bench.lane(
        Lane::new("OAuth delivery, TCP lane (p50)", "ms", false)
            .ours("capture → long-poll → replay", o.median)
            .beside("one direct HTTP hop", h.median),
    );
    bench.row([
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
    Ok(())
}
