//! The hostproxy daemon as a library: `router(state)` and `serve(listeners, …)` are the
//! seams; `cli` holds the command line and lifecycle commands that `main.rs` calls.

pub mod app;
pub mod audit;
pub mod backends;
pub mod bridge;
pub mod cli;
pub mod config;
pub mod docker;
pub mod doctor;
pub mod gates;
pub mod lifecycle;
pub mod ratelimit;
pub mod routes;
pub mod server;
pub mod sessions;
pub mod state;
pub mod tokens;

pub use app::{AppState, router};
pub use server::{ServeLimits, serve};
