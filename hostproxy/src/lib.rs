//! The hostproxy daemon as a library: `router(state)` and `serve(listeners, …)` are the
//! seams, `daemon::run` is what `hostproxy serve` does as a process. The command line lives
//! in the binary (`src/cli/`), so `mock-proxy` links the daemon core without clap.
//!
//! Modules point one way (ARCHITECTURE.md, "Invariants"):
//! `daemon → api → {callback, auth, audit, backends} → {config, state, host_gate, util}`,
//! with `server` under `api`'s users, and `lifecycle`, `doctor`, `docker`, `bridge` beside
//! `daemon`. No module reaches back up to one that uses it.

pub mod api;
pub mod approval;
pub mod audit;
pub mod auth;
pub mod backends;
pub mod bridge;
pub mod callback;
pub mod config;
pub mod daemon;
pub mod docker;
pub mod doctor;
pub mod egress;
pub mod events;
pub mod host_gate;
pub mod lifecycle;
pub mod logfile;
pub mod platform;
pub mod server;
pub mod service;
pub mod state;
pub mod tunnel;
pub mod util;

pub use api::{AppState, router};
pub use server::{ServeLimits, serve};
