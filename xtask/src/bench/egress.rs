//! Egress lanes (SPEC.md 13), each beside the same work done directly in the same run: a git
//! clone through the daemon (its TCP lane, git smart HTTP → HTTPS with the host's
//! credential) beside git cloning over HTTPS itself; time to the first server-sent event
//! through a declared egress beside the upstream directly; requests a second through a
//! declared egress (pooled TLS to the upstream) beside wrk on the upstream directly. The
//! servers are the end-to-end suite's (`e2e::git_server`, `e2e::api_upstream`).

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use e2e::api_upstream::{API_KEY, ApiUpstream};
use e2e::git_server::{GIT_PASSWORD, GIT_USER, GitServer};

use super::chart::Lane;
use super::measure::{Bench, fmt_ms, fmt_ratio, paired, stat, verdict};
use super::probes::wrk;
use crate::scratch::ScratchDaemon;

/// git with no config of the user's, plus `args`.
fn git(args: &[&str]) -> Command {
    let mut c = Command::new("git");
    c.args(args)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_TERMINAL_PROMPT", "0")
        .env_remove("GIT_SSL_CAINFO");
    c
}

fn ok(c: &mut Command) -> Result<()> {
    let out = c.output()?;
    if !out.status.success() {
        bail!("{c:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

/// Seconds `c` took, which must succeed.
fn secs(c: &mut Command) -> Result<f64> {
    let t = Instant::now();
    ok(c)?;
    Ok(t.elapsed().as_secs_f64())
}

/// `curl`'s time to the first byte of the reply, in ms.
fn first_byte_ms(args: &[&str]) -> Result<f64> {
    let out = Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{time_starttransfer}"])
        .args(args)
        .output()?;
    if !out.status.success() {
        bail!("curl {args:?} failed");
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().parse::<f64>()? * 1000.0)
}

pub fn lanes(hostproxy: &Path, dir: &Path, bench: &mut Bench) -> Result<()> {
    let server = GitServer::start();
    let up = ApiUpstream::start();
    let dir = dir.join("egress");
    std::fs::create_dir_all(&dir)?;
    // A repository of this many MiB of incompressible data on the server.
    let mib = if bench.smoke() { 4 } else { 100 };
    let seed = dir.join("seed");
    ok(git(&["clone", "-q"])
        .arg(server.dir.path().join("repos/r.git"))
        .arg(&seed))?;
    let mut blob = vec![0u8; mib << 20];
    let mut f = std::fs::File::open("/dev/urandom")?;
    std::io::Read::read_exact(&mut f, &mut blob)?;
    std::fs::write(seed.join("blob.bin"), &blob)?;
    ok(git(&["-C"]).arg(&seed).args(["add", "blob.bin"]))?;
    ok(git(&["-C"]).arg(&seed).args([
        "-c",
        "user.name=b",
        "-c",
        "user.email=b@example.com",
        "commit",
        "-q",
        "-m",
        "blob",
    ]))?;
    ok(git(&["-C"])
        .arg(&seed)
        .args(["push", "-q", "origin", "main"]))?;

    let key = dir.join("api.key");
    std::fs::write(&key, API_KEY)?;
    let static_key = dir.join("static.key");
    std::fs::write(&static_key, "unused-by-lighttpd")?;
    let daemon = ScratchDaemon::start(
        hostproxy,
        &dir,
        None,
        &format!(
            "[git]\nca_file = \"{ca}\"\n\n[[egress]]\nname = \"sse\"\nupstream = \"https://127.0.0.1:{up}/v1\"\nbearer = true\nsecret.file = \"{key}\"\nca_file = \"{upca}\"\n\n[[egress]]\nname = \"static\"\nupstream = \"https://127.0.0.1:{gs}\"\nbearer = true\nsecret.file = \"{skey}\"\nca_file = \"{ca}\"\nrate_per_minute = 0\n",
            ca = server.ca().display(),
            up = up.port,
            key = key.display(),
            upca = up.ca().display(),
            gs = server.port,
            skey = static_key.display(),
        ),
    )?;
    // The host's credential store learns the server's password.
    let creds = dir.join("creds");
    let mut text = std::fs::read_to_string(&creds)?;
    text.push_str(&format!(
        "https://{GIT_USER}:{GIT_PASSWORD}@{}\n",
        server.host()
    ));
    std::fs::write(&creds, text)?;
    let (port, token) = (daemon.port, daemon.token.clone());
    let host = server.host();

    // Clone through the daemon and directly, alternating, each into a fresh directory.
    let (mut ours, mut direct) = (Vec::new(), Vec::new());
    for i in 0..bench.rounds(5) {
        let to = dir.join(format!("via-{i}"));
        ours.push(secs(
            git(&[
                "-c",
                &format!("url.http://127.0.0.1:{port}/git/{host}/.insteadOf=https://{host}/"),
                "-c",
                &format!("http.extraHeader=Authorization: Bearer {token}"),
                "clone",
                "-q",
                &server.url(),
            ])
            .arg(&to),
        )?);
        std::fs::remove_dir_all(&to)?;
        let to = dir.join(format!("direct-{i}"));
        direct.push(secs(
            git(&[
                "-c",
                &format!("credential.helper=store --file {}", creds.display()),
                "clone",
                "-q",
                &server.url(),
            ])
            .env("GIT_SSL_CAINFO", server.ca())
            .arg(&to),
        )?);
        std::fs::remove_dir_all(&to)?;
    }
    // Throughput ratio: direct time over ours.
    let ratio = paired(&direct, &ours);
    let mibs = |v: &[f64]| stat(v.iter().map(|s| mib as f64 / s).collect());
    let (o, d) = (mibs(&ours), mibs(&direct));
    bench.lane(
        Lane::new(format!("git clone of {mib} MiB over HTTPS"), "MiB/s", true)
            .ours("through the daemon (host credential)", o.median)
            .beside("git directly", d.median),
    );
    bench.row([
        format!(
            "git clone, {mib} MiB repository, HTTPS with basic auth (lighttpd + git http-backend)"
        ),
        format!(
            "through the daemon's git egress: {:.0} MiB/s (p50 of {})",
            o.median,
            ours.len()
        ),
        format!("git over HTTPS directly: {:.0} MiB/s", d.median),
        format!(
            "≥ 0.9× direct → **{}** {}",
            fmt_ratio(&ratio),
            verdict(ratio.median >= 0.9)
        ),
    ]);

    // Time to the first event of an SSE reply.
    let body = r#"{"model":"fast","stream":true,"messages":[]}"#;
    let (mut ours, mut direct) = (Vec::new(), Vec::new());
    for _ in 0..bench.rounds(30) {
        ours.push(first_byte_ms(&[
            "-H",
            &format!("Authorization: Bearer {token}"),
            "-H",
            "Content-Type: application/json",
            "-d",
            body,
            &format!("http://127.0.0.1:{port}/egress/sse/chat/completions"),
        ])?);
        direct.push(first_byte_ms(&[
            "--cacert",
            &up.ca().display().to_string(),
            "-H",
            &format!("Authorization: Bearer {API_KEY}"),
            "-H",
            "Content-Type: application/json",
            "-d",
            body,
            &format!("https://127.0.0.1:{}/v1/chat/completions", up.port),
        ])?);
    }
    let (o, d) = (stat(ours), stat(direct));
    bench.lane(
        Lane::new("time to first SSE event (p50)", "ms", false)
            .ours("through the daemon (pooled TLS)", o.median)
            .beside("the upstream directly (new TLS each)", d.median),
    );
    bench.row([
        "time to the first server-sent event (declared egress, bearer key added)".into(),
        format!("curl through the daemon: {}", fmt_ms(&o)),
        format!("curl to the upstream over TLS: {}", fmt_ms(&d)),
        format!(
            "p50 ≤ direct + 1 ms → **{:+.2} ms** {}",
            o.median - d.median,
            verdict(o.median <= d.median + 1.0)
        ),
    ]);

    // Requests a second on a pooled upstream (lighttpd serving a small file over TLS).
    let secs = if bench.smoke() { 1 } else { 5 };
    let via = wrk(
        &format!("http://127.0.0.1:{port}/egress/static/r.git/HEAD"),
        8,
        Some(&token),
        None,
        secs,
    )
    .context("wrk through the daemon")?;
    let plain = wrk(
        &format!("https://127.0.0.1:{}/r.git/HEAD", server.port),
        8,
        None,
        None,
        secs,
    )
    .context("wrk on the upstream")?;
    bench.lane(
        Lane::new("requests/s on a pooled HTTPS upstream", "req/s", true)
            .ours("through the daemon", via.rps)
            .beside("wrk on the upstream directly", plain.rps),
    );
    bench.row([
        "requests a second, declared egress to an HTTPS upstream (8 connections)".into(),
        format!("through the daemon (pooled): {:.0}/s", via.rps),
        format!("wrk on the upstream directly: {:.0}/s", plain.rps),
        "measured, no target".into(),
    ]);
    drop(daemon);
    Ok(())
}
