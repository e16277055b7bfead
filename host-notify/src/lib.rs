//! `host-notify TITLE [BODY]`: a desktop notification on the host through the daemon's
//! `POST /notify` (SPEC.md 10), for an agent's "I need you" hook.

use std::process::ExitCode;

use anyhow::Result;
use clap::Parser;
use clawker_client::blocking::Conn;
use clawker_protocol::api::{NotifyRequest, SuccessResponse, routes};

#[derive(Debug, Parser)]
#[command(
    name = "host-notify",
    version,
    about = "Show a desktop notification on the host (at most 6 a minute; no control characters)",
    after_help = "Example (a Claude Code Notification hook, say):\n  host-notify 'Agent needs you' 'waiting for approval in ~/src/app'"
)]
pub struct Args {
    /// Title (at most 120 characters).
    pub title: String,
    /// Body (at most 1000 characters).
    pub body: Option<String>,
}

pub fn run(args: Args) -> Result<ExitCode> {
    let _: SuccessResponse = Conn::from_env()?.post(
        routes::NOTIFY,
        &NotifyRequest {
            title: args.title,
            body: args.body,
        },
    )?;
    Ok(ExitCode::SUCCESS)
}

pub fn main() -> ExitCode {
    let args = Args::parse();
    clawker_client::exit_code("host-notify", run(args))
}
