//! `start`, `stop` and `status`, with plain values: the command line resolves the port and
//! the config before it calls them. One daemon per host is the PID file's job
//! (`state::PidFile`).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clawker_protocol::api::{HealthResponse, StatusResponse, routes};

use crate::state::{StateDir, running, running_pid};

/// A tiny blocking HTTP/1.1 GET against the local daemon (no client library needed).
pub fn local_get(port: u16, path: &str, token: Option<&str>) -> std::io::Result<(u16, String)> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(500))?;
    s.set_read_timeout(Some(Duration::from_secs(3)))?;
    s.set_write_timeout(Some(Duration::from_secs(3)))?;
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{auth}Connection: close\r\n\r\n"
    )?;
    let mut buf = Vec::new();
    s.take(1024 * 1024).read_to_end(&mut buf)?;
    let text = String::from_utf8_lossy(&buf);
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidData, "not http"))?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

/// True when a daemon of ours answers `/health` on `port`.
pub fn is_ours(port: u16) -> bool {
    matches!(
        local_get(port, routes::HEALTH, None),
        Ok((200, body)) if serde_json::from_str::<HealthResponse>(&body)
            .is_ok_and(|h| h.service == clawker_protocol::SERVICE_NAME)
    )
}

fn last_lines(path: &std::path::Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Starts `serve --idle-exit --port PORT SERVE_ARGS…` detached unless a daemon of ours
/// already answers on `port`.
pub fn start(port: u16, serve_args: &[String]) -> Result<ExitCode> {
    if is_ours(port) {
        eprintln!("hostproxy is already running on port {port}");
        return Ok(ExitCode::SUCCESS);
    }
    if TcpStream::connect_timeout(
        &SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_millis(300),
    )
    .is_ok()
    {
        // A daemon started a moment ago (a concurrent `start`) binds before it answers.
        if wait_for_health(port, Duration::from_secs(2)) {
            eprintln!("hostproxy is already running on port {port}");
            return Ok(ExitCode::SUCCESS);
        }
        bail!("port {port} is in use by something that is not hostproxy: pass --port or stop it");
    }
    let state = StateDir::from_env()?;
    // A daemon that was just asked to stop holds its PID file until it has drained (5 s at
    // most) although its port is already closed: wait for it, so `stop; start` works.
    let drained = Instant::now() + Duration::from_secs(7);
    while running_pid(&state).is_some() && Instant::now() < drained {
        std::thread::sleep(Duration::from_millis(25));
    }
    let log = state.log_file();
    if let Some(dir) = log.parent() {
        StateDir::ensure_dir(dir)?;
    }
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log)
        .with_context(|| format!("cannot open {}", log.display()))?;
    let exe = std::env::current_exe().context("cannot find the hostproxy executable")?;
    let mut cmd = Command::new(exe);
    // From the caller's directory, so relative paths in `serve_args` mean what the user
    // meant: `serve` resolves them and then leaves it for the state directory (SPEC.md 11).
    cmd.arg("serve")
        .arg("--idle-exit")
        .arg("--port")
        .arg(port.to_string())
        .arg("--log-file")
        .arg(&log)
        .args(serve_args)
        .stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out);
    crate::platform::process::daemonize(&mut cmd);
    let mut child = cmd.spawn().context("cannot start the daemon")?;
    let deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < deadline {
        if is_ours(port) {
            if running_pid(&state) == Some(child.id()) {
                eprintln!("hostproxy started on port {port} (log: {})", log.display());
            } else {
                // A concurrent start won; ours is about to find the PID file locked and exit.
                // Reap it so no stray process outlives this command.
                let until = Instant::now() + Duration::from_secs(3);
                while child.try_wait().ok().flatten().is_none() && Instant::now() < until {
                    std::thread::sleep(Duration::from_millis(10));
                }
                if child.try_wait().ok().flatten().is_none() {
                    let _ = child.kill();
                    let _ = child.wait();
                }
                eprintln!("hostproxy is already running on port {port}");
            }
            return Ok(ExitCode::SUCCESS);
        }
        if let Ok(Some(status)) = child.try_wait() {
            // Lost a race with a concurrent start? Then the winner answers shortly.
            if wait_for_health(port, Duration::from_millis(1500)) {
                eprintln!("hostproxy is already running on port {port}");
                return Ok(ExitCode::SUCCESS);
            }
            bail!(
                "the daemon exited with {status} during start; last lines of {}:\n{}",
                log.display(),
                last_lines(&log, 10)
            );
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    bail!(
        "the daemon did not answer on port {port} within 3 s; last lines of {}:\n{}",
        log.display(),
        last_lines(&log, 10)
    )
}

fn wait_for_health(port: u16, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if is_ours(port) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    false
}

/// Asks the daemon holding the PID file to stop; with `wait`, waits that many seconds for it
/// to be gone. With `port` (given by the user), only when that daemon serves that port.
pub fn stop(port: Option<u16>, wait: Option<u64>) -> Result<ExitCode> {
    let state = StateDir::from_env()?;
    let Some((pid, served)) = running(&state) else {
        eprintln!("hostproxy is not running");
        return Ok(ExitCode::SUCCESS);
    };
    if let (Some(asked), Some(served)) = (port, served)
        && asked != served
    {
        bail!(
            "the daemon of this state directory (pid {pid}) serves port {served}, not {asked}: pass --port {served}, or set CLAWKER_STATE_DIR to the other daemon's"
        );
    }
    crate::platform::process::terminate(pid)
        .with_context(|| format!("cannot signal the daemon (pid {pid})"))?;
    if let Some(secs) = wait {
        let deadline = Instant::now() + Duration::from_secs(secs);
        while running_pid(&state).is_some() || crate::platform::process::alive(pid) {
            if Instant::now() >= deadline {
                bail!("the daemon (pid {pid}) did not exit within {secs} s");
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        eprintln!("hostproxy stopped");
    } else {
        eprintln!("hostproxy asked to stop (pid {pid})");
    }
    Ok(ExitCode::SUCCESS)
}

/// `status`'s line about the tunnel: how many attachments, by state, and why any failed.
fn attachments_line(list: &[clawker_protocol::tunnel::AttachmentInfo]) -> String {
    use clawker_protocol::tunnel::AttachState;
    if list.is_empty() {
        return "attached: nothing (hostproxy run-flags wires a container)".into();
    }
    let states = [
        AttachState::Serving,
        AttachState::Attaching,
        AttachState::Retrying,
        AttachState::Failed,
    ];
    let counts: Vec<String> = states
        .iter()
        .map(|st| (st, list.iter().filter(|a| a.state == *st).count()))
        .filter(|(_, n)| *n > 0)
        .map(|(st, n)| format!("{n} {}", st.as_str()))
        .collect();
    let mut line = format!("attached: {} ({})", list.len(), counts.join(", "));
    for a in list.iter().filter(|a| a.state == AttachState::Failed) {
        // The reasons are the daemon's words about a container's labels: shown escaped.
        let why = a.notes.last().map(|n| n.escape_debug().to_string());
        line.push_str(&format!(
            "\n  {} failed: {}",
            a.name.escape_debug(),
            why.as_deref().unwrap_or("see hostproxy attach --list")
        ));
    }
    line
}

/// Says whether the daemon answers on `port` (exit 0) or not (exit 1).
pub fn status(port: u16, json: bool) -> Result<ExitCode> {
    let state = StateDir::from_env()?;
    // The token goes only to the port the daemon holding our PID file says it serves: a
    // process squatting the port while the daemon is down gets nothing.
    let ours = running(&state).is_some_and(|(_, served)| served == Some(port));
    let token = ours.then(|| state.read_token().ok()).flatten();
    let reply = local_get(
        port,
        routes::STATUS,
        token.as_ref().map(|t| t.expose().as_str()),
    );
    let status = match reply {
        Ok((200, body)) => serde_json::from_str::<StatusResponse>(&body).ok(),
        _ => None,
    };
    // The tunnel's side, from the control socket of the daemon that holds our PID file.
    let tunnel = status.as_ref().filter(|_| ours).and_then(|_| {
        crate::tunnel::control::request(
            &state.control_socket(),
            &clawker_protocol::tunnel::ControlRequest::List,
        )
        .ok()
    });
    match (status, json) {
        (Some(s), true) => {
            let mut v = serde_json::to_value(&s)?;
            v["running"] = serde_json::Value::Bool(true);
            if let Some(t) = &tunnel {
                v["attachments"] = serde_json::to_value(&t.attachments)?;
                v["tools"] = serde_json::to_value(&t.tools)?;
            }
            println!("{v}");
            Ok(ExitCode::SUCCESS)
        }
        (Some(s), false) => {
            println!(
                "hostproxy {} running: pid {}, port {}, listening on {}, up {} s, {} live callback session(s)",
                s.version,
                s.pid,
                s.port,
                s.listen.join(", "),
                s.uptime_secs,
                s.sessions
            );
            if let Some(t) = &tunnel {
                println!("{}", attachments_line(&t.attachments));
                if let Some(tools) = &t.tools {
                    println!("container tools: {tools}");
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        (None, json) => {
            let ours_on_port = is_ours(port);
            if json {
                println!(
                    "{}",
                    serde_json::json!({"running": false, "port": port, "pid": running_pid(&state), "answers_health": ours_on_port})
                );
            } else if ours_on_port {
                println!(
                    "a hostproxy daemon answers on port {port}, but its status needs this host's token"
                );
            } else {
                println!("hostproxy is not running on port {port}");
            }
            Ok(ExitCode::from(if ours_on_port { 0 } else { 1 }))
        }
    }
}
