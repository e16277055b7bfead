//! The daemon under load (wrk on `/health` and a callback's data), mock-proxy's start-up,
//! and the footprint (RSS idle and loaded, the tools' sizes).

use std::process::{Command, Stdio};

use anyhow::{Context, Result};

use super::host::Host;
use super::measure::{Bench, fmt_ms, fmt_ratio, paired, stat, verdict};
use super::probes::{http, rss_kib, startup, wrk};
use crate::artifacts::{MOCK, TOOLS};
use crate::scratch::free_port;

/// Lanes 6–8: the daemon under load, the footprint, mock-proxy's start-up.
pub(crate) fn lanes(h: &Host, bench: &mut Bench) -> Result<()> {
    let Host {
        dist,
        daemon,
        port,
        token,
        base,
        idle_rss,
        ..
    } = h;
    let (port, idle_rss) = (*port, *idle_rss);
    let mut ids = Vec::new();
    for _ in 0..bench.rounds(16) {
        let (_, reg) = http(
            port,
            "POST",
            "/callback/register",
            token,
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
        let secs = if bench.smoke() { 1 } else { 5 };
        let h = wrk(&format!("{base}/health"), conns, None, core, secs)?;
        let d = wrk(
            &format!("{base}/callback/{}/data", ids[0]),
            conns,
            Some(token),
            core,
            secs,
        )?;
        bench.row([
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
    for _ in 0..bench.rounds(15) {
        mock_ms.push(startup(
            Command::new(dist.join("x86_64").join(MOCK)).args(["--port"]),
            "/health",
        )?);
        httpd_ms.push(startup(
            Command::new("busybox").args(["httpd", "-f", "-h", "/tmp", "-p"]),
            "/",
        )?);
    }
    let (mock_s, httpd_s) = (stat(mock_ms.clone()), stat(httpd_ms.clone()));
    bench.row([
        "mock-proxy start-up (spawn → first `/health` answered)".into(),
        format!(
            "mock-proxy (static, {:.2} MiB): {}",
            std::fs::metadata(dist.join("x86_64").join(MOCK))?.len() as f64 / 1048576.0,
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
    let sizes: Vec<String> = TOOLS
        .iter()
        .map(|t| {
            Ok(format!(
                "{t} {:.2} MiB",
                std::fs::metadata(dist.join(t))?.len() as f64 / 1048576.0
            ))
        })
        .collect::<Result<_>>()?;
    bench.row([
        "footprint".into(),
        format!("daemon RSS idle {:.1} MiB; after the load above with 16 live callback sessions {:.1} MiB", idle_rss as f64 / 1024.0, loaded_rss as f64 / 1024.0),
        sizes.join("; "),
        format!(
            "idle ≤ 10 MiB, loaded ≤ 20 MiB, each tool ≤ 1.5 MiB {}",
            verdict(
                idle_rss as f64 / 1024.0 <= 10.0
                    && loaded_rss as f64 / 1024.0 <= 20.0
                    && TOOLS.iter().all(|t| std::fs::metadata(dist.join(t))
                        .is_ok_and(|m| m.len() as f64 <= 1.5 * 1048576.0))
            )
        ),
    ]);
    bench.note(format!(
        "{} sessions were live during the `/callback/{{id}}/data` runs.",
        ids.len()
    ));
    Ok(())
}
