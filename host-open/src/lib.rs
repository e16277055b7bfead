//! `host-open URL`: the container's `BROWSER`.
//!
//! Opens the URL in the host's browser through the daemon. When the URL is an OAuth
//! authorization request whose redirect goes to a loopback port inside this container, it
//! first registers that port with the daemon (so the host browser's redirect is captured)
//! and starts `callback-forwarder` detached to replay the captured request locally. A URL
//! that is the CLI's own page on this container's loopback is first followed to where it
//! leads (`loopback.rs`).

use std::path::PathBuf;
use std::process::{Command, ExitCode, Stdio};

use anyhow::{Context, Result};
use clap::Parser;
use clawker_client::blocking::Conn;
use clawker_protocol::Secret;
use clawker_protocol::api::{
    CallbackRegisterRequest, CallbackRegisterResponse, OpenUrlRequest, OpenUrlResponse, routes,
};
use clawker_protocol::env;
use clawker_protocol::urls::{OAuthRedirect, detect_oauth};

mod loopback;

#[derive(Debug, Parser)]
#[command(
    name = "host-open",
    version,
    about = "Open a URL in the host's browser; capture OAuth redirects to this container's localhost",
    after_help = "Example:\n  export BROWSER=host-open\n  host-open 'https://auth.example.com/authorize?redirect_uri=http://localhost:8765/callback&state=abc'"
)]
pub struct Args {
    /// The URL to open (http or https).
    pub url: String,
}

/// `callback-forwarder` beside this executable, else on `PATH`.
fn forwarder_path() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(|d| d.join("callback-forwarder")))
        .filter(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from("callback-forwarder"))
}

/// Starts the forwarder in a session of its own, with no terminal and no inherited pipes,
/// so it outlives `host-open` and never writes over the caller's terminal UI.
#[allow(unsafe_code)]
fn spawn_forwarder(session: &Secret<String>, port: u16) -> std::io::Result<u32> {
    use std::os::unix::process::CommandExt;
    let mut cmd = Command::new(forwarder_path());
    cmd.env(env::CALLBACK_SESSION, session.expose())
        .env(env::CALLBACK_PORT, port.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // SAFETY: setsid is async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    // Not waited for: once host-open exits, init reaps it.
    cmd.spawn().map(|c| c.id())
}

/// Registers the callback and starts the forwarder; returns the session id.
fn register(
    client: &mut Conn,
    redirect: &OAuthRedirect,
) -> Result<Secret<String>, clawker_client::ClientError> {
    let reply: CallbackRegisterResponse = client.post(
        routes::CALLBACK_REGISTER,
        &CallbackRegisterRequest {
            port: i64::from(redirect.port),
            path: Some(redirect.path.clone()),
            timeout_seconds: None,
            state: redirect.state.clone().map(Secret::new),
        },
    )?;
    spawn_forwarder(&reply.session_id, redirect.port).map_err(|e| {
        clawker_client::ClientError::Setup(format!("cannot start callback-forwarder: {e}").into())
    })?;
    eprintln!(
        "host-open: waiting for the login to redirect to port {}",
        redirect.port
    );
    Ok(reply.session_id)
}

/// Why a failed registration means the URL must not be opened, in one line.
fn refusal(redirect: &OAuthRedirect, e: &clawker_client::ClientError) -> String {
    let port = redirect.port;
    match e.status() {
        Some(400) if redirect.state.is_none() => format!(
            "this login url has no state, and the daemon refuses callbacks without state unless callback.allow_stateless is set in its config ({e})"
        ),
        Some(409) => format!(
            "port {port} is taken on the host ({e}); opening the login now would hand its code to whoever holds the port"
        ),
        Some(429) => format!("the daemon refused the callback for port {port} for now ({e})"),
        _ => format!("the login callback for port {port} could not be registered ({e:#})"),
    }
}

pub fn run(args: Args) -> Result<ExitCode> {
    let given =
        url::Url::parse(&args.url).with_context(|| format!("{:?} is not a valid url", args.url))?;
    // A CLI's own first page on this container's loopback: the provider's URL it leads to.
    let url = loopback::destination(&given, loopback::ask);
    let args = if url == given {
        args
    } else {
        // Without its query: a login's state is nobody's business in a log.
        eprintln!(
            "host-open: {}{} is this container's own page; opening where it leads",
            given.origin().ascii_serialization(),
            given.path()
        );
        Args {
            url: url.to_string(),
        }
    };
    // At most two requests: a blocking connection starts faster than an async runtime.
    let mut client = Conn::from_env()?;
    let mut session = None;
    if let Some(redirect) = detect_oauth(&url) {
        match register(&mut client, &redirect) {
            Ok(id) => session = Some(id),
            Err(e) => {
                // Never open a login whose callback we do not hold: the host browser would
                // deliver the code to whoever listens on that port on the host (SPEC.md 5).
                let why = if e.is_unreachable() {
                    format!("{e:#}")
                } else {
                    refusal(&redirect, &e)
                };
                return Ok(print_for_user(&args.url, &why));
            }
        }
    }
    // The URL is opened exactly as given; the daemon canonicalises and validates it.
    let opened = client.post::<_, OpenUrlResponse>(
        routes::OPEN_URL,
        &OpenUrlRequest {
            url: args.url.clone(),
        },
    );
    // 500: the daemon took the URL but its launcher failed (a host with no display, an SSH
    // session). The user can still open it by hand, and the redirect still lands on the
    // host's listener: the session stays, and the URL is printed. The same when the answer
    // never came (the daemon restarting, perhaps after it opened the page): the restarted
    // daemon still holds the session.
    let launcher_failed = matches!(&opened, Err(e) if e.status() == Some(500));
    let refused = matches!(&opened, Err(e) if e.status().is_some_and(|s| s != 500));
    if refused && let Some(id) = &session {
        // The daemon said no: nothing will arrive for it, so end the session (its
        // forwarder then exits too).
        let _ = client.delete::<serde_json::Value>(&routes::callback(id.expose()));
    }
    let awaited = if session.is_some() {
        " (the login's redirect is still awaited on the host)"
    } else {
        ""
    };
    match opened {
        Ok(_) => Ok(ExitCode::SUCCESS),
        Err(e) if e.is_unreachable() || launcher_failed => {
            Ok(print_for_user(&args.url, &format!("{e:#}{awaited}")))
        }
        Err(e) => Err(e.into()),
    }
}

/// One line on stderr saying why, the URL alone on stdout (so the user, or a CLI that
/// accepts a pasted code, can finish by hand), exit 1.
fn print_for_user(url: &str, why: &str) -> ExitCode {
    use std::io::Write;
    eprintln!("host-open: {why}; open this url in your browser yourself:");
    // A closed stdout is not worth a panic.
    let _ = writeln!(std::io::stdout(), "{url}");
    ExitCode::FAILURE
}

pub fn main() -> ExitCode {
    let args = Args::parse();
    clawker_client::exit_code("host-open", run(args))
}
