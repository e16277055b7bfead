//! The handlers of SPEC.md 4.2, one file per route family. Each validates first, so a
//! rejected request has had no effect: the browser is not opened, git is not run, the agent
//! is not contacted.

mod callback;
mod docker_credential;
mod git_credential;
mod health;
mod notify;
mod open_url;
mod ssh_agent;

pub use callback::{
    callback_data, callback_delete, callback_register, cb_capture, cb_capture_root,
};
pub use docker_credential::docker_credential;
pub use git_credential::{git_credential, validate_credential};
pub use health::{health, status};
pub use notify::notify;
pub use open_url::open_url;
pub use ssh_agent::ssh_agent;
