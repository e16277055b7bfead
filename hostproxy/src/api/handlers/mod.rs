//! The handlers of SPEC.md 4.2, one file per route family. Each validates first, so a
//! rejected request has had no effect: the browser is not opened, git is not run, the agent
//! is not contacted.

use std::time::Duration;

use axum::http::StatusCode;

use crate::api::ApiError;

mod callback;
mod git_credential;
mod health;
mod open_url;
mod ssh_agent;

pub use callback::{
    callback_data, callback_delete, callback_register, cb_capture, cb_capture_root,
};
pub use git_credential::{git_credential, validate_credential};
pub use health::{health, status};
pub use open_url::open_url;
pub use ssh_agent::ssh_agent;

/// A 429 with `Retry-After`.
fn too_many(message: &str, wait: Duration) -> ApiError {
    let mut e = ApiError::new(StatusCode::TOO_MANY_REQUESTS, message);
    e.retry_after = Some(wait.as_secs().max(1));
    e
}

/// Requests per minute a scoped token may make on `/git/credential` and `/callback/register`.
const SCOPED_GIT_PER_MINUTE: u32 = 60;
const SCOPED_REGISTER_PER_MINUTE: u32 = 10;
/// Live callback sessions per scoped token (the global cap still applies).
const SCOPED_MAX_SESSIONS: usize = 4;
