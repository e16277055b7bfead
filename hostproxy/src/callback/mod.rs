//! Callback sessions: what a container registers so the host browser's OAuth redirect to
//! `http://localhost:P/…` is captured for it. Knows no router of the API and no `ApiError`.
//!
//! Three rooms, pointing one way: `store` (registration, one listener per port, expiry) →
//! `listener` (what the browser sees) → `session` (what one session waits for and captured).

mod listener;
mod session;
mod store;

pub use listener::{SUCCESS_PAGE, capture_response, not_found_page, success_page};
pub use session::{Capture, Incoming, Offer, PortSessions, Session};
pub use store::{RegisterError, Registration, SessionStore};
