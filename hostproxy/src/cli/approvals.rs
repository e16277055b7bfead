//! `hostproxy approvals`, `approve` and `deny` (SPEC.md 14): the user's side of an ask, over
//! the daemon's control socket. The terminal view lists what waits and takes one key:
//! `y` allow, `n` deny, `a` allow for the rest of the container's life, `j`/`k` to choose,
//! `q` to leave.

use std::collections::HashSet;
use std::io::Write;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use clap::Args;
use clawker_protocol::approval::{PendingAsk, answered_by};
use clawker_protocol::tunnel::ControlRequest;
use hostproxy::state::StateDir;
use hostproxy::tunnel::control;

#[derive(Debug, Clone, Args)]
pub struct ApprovalsArgs {
    /// Print the asks waiting now, each once with its id, and exit (no terminal view).
    #[arg(long)]
    pub list: bool,
    /// With --list: one JSON object per line.
    #[arg(long, requires = "list")]
    pub json: bool,
    /// With --list: keep going, printing each new ask once as it comes.
    #[arg(long, requires = "list")]
    pub follow: bool,
}

#[derive(Debug, Clone, Args)]
pub struct ApproveArgs {
    /// The ask's id (hostproxy approvals --list).
    pub id: String,
    /// Also allow this use for the rest of the container's life.
    #[arg(long)]
    pub always: bool,
}

#[derive(Debug, Clone, Args)]
pub struct DenyArgs {
    /// The ask's id (hostproxy approvals --list).
    pub id: String,
}

fn socket() -> Result<std::path::PathBuf> {
    Ok(StateDir::from_env()?.control_socket())
}

async fn answer(id: &str, allow: bool, always: bool, by: &str) -> Result<()> {
    let r = control::request_async(
        &socket()?,
        &ControlRequest::Answer {
            id: id.into(),
            allow,
            always,
            by: by.into(),
        },
    )
    .await?;
    if !r.ok {
        bail!("{}", r.error.unwrap_or_else(|| "the daemon refused".into()));
    }
    Ok(())
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

/// `hostproxy approve ID` / `deny ID`.
pub fn approve(id: &str, allow: bool, always: bool) -> Result<ExitCode> {
    runtime()?.block_on(answer(id, allow, always, answered_by::COMMAND))?;
    println!("{} {id}", if allow { "allowed" } else { "denied" });
    Ok(ExitCode::SUCCESS)
}

/// One ask as a line of text.
fn line(a: &PendingAsk, left: u64) -> String {
    format!(
        "{}  {}  {}  {}  (scope {}; {}; {left}s left)",
        a.id, a.identity, a.what, a.target, a.scope, a.why
    )
}

pub fn approvals(args: ApprovalsArgs) -> Result<ExitCode> {
    let rt = runtime()?;
    if args.list {
        rt.block_on(list(&args))?;
        return Ok(ExitCode::SUCCESS);
    }
    use std::io::IsTerminal;
    if !std::io::stdin().is_terminal() {
        bail!(
            "the approvals view needs a terminal: use hostproxy approvals --list [--json] [--follow], then hostproxy approve ID or deny ID"
        );
    }
    rt.block_on(view())?;
    Ok(ExitCode::SUCCESS)
}

async fn list(args: &ApprovalsArgs) -> Result<()> {
    let print = |a: &PendingAsk| -> Result<()> {
        let mut out = std::io::stdout().lock();
        if args.json {
            writeln!(out, "{}", serde_json::to_string(a)?)?;
        } else {
            writeln!(out, "{}", line(a, a.expires_in))?;
        }
        out.flush()?;
        Ok(())
    };
    if !args.follow {
        let r = control::request_async(&socket()?, &ControlRequest::Approvals { follow: false })
            .await?;
        if !r.ok {
            bail!("{}", r.error.unwrap_or_else(|| "the daemon refused".into()));
        }
        for a in &r.asks {
            print(a)?;
        }
        return Ok(());
    }
    let mut rx = control::follow_approvals(&socket()?).await?;
    let mut seen = HashSet::new();
    while let Some(r) = rx.recv().await {
        for a in r?.asks {
            if seen.insert(a.id.clone()) {
                print(&a)?;
            }
        }
    }
    Ok(())
}

/// The terminal view: the list, drawn again on every change and every second.
async fn view() -> Result<()> {
    let mut rx = control::follow_approvals(&socket()?).await?;
    let _raw = RawMode::enter()?;
    let mut keys = keys();
    let mut asks: Vec<PendingAsk> = Vec::new();
    let mut got = Instant::now();
    let mut chosen = 0usize;
    let mut status = String::new();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        draw(&asks, got, chosen, &status)?;
        tokio::select! {
            r = rx.recv() => match r {
                Some(r) => {
                    asks = r?.asks;
                    got = Instant::now();
                    chosen = chosen.min(asks.len().saturating_sub(1));
                }
                None => bail!("the daemon closed the control socket (it stopped?)"),
            },
            k = keys.recv() => {
                let Some(k) = k else { return Ok(()) };
                let decision = match k {
                    b'q' | 3 | 4 => return Ok(()),
                    b'j' => { chosen = (chosen + 1).min(asks.len().saturating_sub(1)); None }
                    b'k' => { chosen = chosen.saturating_sub(1); None }
                    b'y' => Some((true, false)),
                    b'a' => Some((true, true)),
                    b'n' => Some((false, false)),
                    _ => None,
                };
                if let (Some((allow, always)), Some(a)) = (decision, asks.get(chosen)) {
                    status = match answer(&a.id, allow, always, answered_by::TERMINAL).await {
                        Ok(()) => format!(
                            "{} {}",
                            if !allow { "denied" } else if always { "allowed for the container" } else { "allowed" },
                            a.id
                        ),
                        Err(e) => format!("{e:#}"),
                    };
                }
            }
            _ = tick.tick() => {}
        }
    }
}

fn draw(asks: &[PendingAsk], got: Instant, chosen: usize, status: &str) -> Result<()> {
    let waited = got.elapsed().as_secs();
    let mut s = String::from("\x1b[2J\x1b[H");
    s.push_str("hostproxy approvals: y allow · n deny · a allow for the container · j/k choose · q quit\r\n\r\n");
    if asks.is_empty() {
        s.push_str("nothing waits for an answer\r\n");
    }
    for (i, a) in asks.iter().enumerate() {
        let mark = if i == chosen { '>' } else { ' ' };
        s.push_str(&format!(
            "{mark} {}  {} wants to {} on {}  (scope {}, {}s left)\r\n      why: {}\r\n",
            a.id,
            a.identity,
            a.what,
            a.target,
            a.scope,
            a.expires_in.saturating_sub(waited),
            a.why
        ));
    }
    if !status.is_empty() {
        s.push_str(&format!("\r\n{status}\r\n"));
    }
    let mut out = std::io::stdout().lock();
    out.write_all(s.as_bytes())?;
    out.flush()?;
    Ok(())
}

/// The keys pressed, one byte each, read on a thread of their own (stdin blocks).
fn keys() -> tokio::sync::mpsc::Receiver<u8> {
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    std::thread::spawn(move || {
        use std::io::Read;
        let mut stdin = std::io::stdin().lock();
        let mut b = [0u8; 1];
        while let Ok(1) = stdin.read(&mut b) {
            if tx.blocking_send(b[0]).is_err() {
                return;
            }
        }
    });
    rx
}

/// The terminal without line editing or echo while the view runs (each key is read at once;
/// Ctrl-C is read as a key too, so the terminal is always restored). Windows: unchanged,
/// keys arrive after Enter.
struct RawMode {
    #[cfg(unix)]
    saved: libc::termios,
}

impl RawMode {
    #[allow(unsafe_code)]
    fn enter() -> Result<Self> {
        #[cfg(unix)]
        {
            // SAFETY: termios is plain data; tcgetattr fills it for fd 0, a terminal here.
            let mut t: libc::termios = unsafe { std::mem::zeroed() };
            if unsafe { libc::tcgetattr(0, &mut t) } != 0 {
                return Err(std::io::Error::last_os_error())
                    .map_err(|e| anyhow::anyhow!("cannot read the terminal's mode: {e}"));
            }
            let saved = t;
            t.c_lflag &= !(libc::ICANON | libc::ECHO | libc::ISIG);
            t.c_cc[libc::VMIN] = 1;
            t.c_cc[libc::VTIME] = 0;
            // SAFETY: as above, with the mode just read and changed.
            if unsafe { libc::tcsetattr(0, libc::TCSANOW, &t) } != 0 {
                return Err(std::io::Error::last_os_error())
                    .map_err(|e| anyhow::anyhow!("cannot set the terminal's mode: {e}"));
            }
            Ok(Self { saved })
        }
        #[cfg(not(unix))]
        Ok(Self {})
    }
}

impl Drop for RawMode {
    #[allow(unsafe_code)]
    fn drop(&mut self) {
        #[cfg(unix)]
        // SAFETY: restores the mode read in `enter`.
        unsafe {
            libc::tcsetattr(0, libc::TCSANOW, &self.saved);
        }
        print!("\r\n");
        let _ = std::io::stdout().flush();
    }
}
