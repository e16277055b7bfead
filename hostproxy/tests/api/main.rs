//! The daemon's HTTP API against real peers: every route, every gate, and for every
//! rejection proof that nothing happened.
//!
//! Unix only: it drives real git, ssh-agent and sh scripts (SPEC.md 9: Windows and macOS are
//! built and linted in CI, run elsewhere).
#![cfg(unix)]
#![allow(clippy::unwrap_used)]

mod approval;
mod callbacks;
mod common;
mod docker;
mod gates;
mod git_credential;
mod git_egress;
mod notify;
mod open_url;
mod ssh_agent;
mod tokens;

use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use clawker_protocol::agent::{self, msg};
use common::*;
use reqwest::Method;
use serde_json::{Value, json};
