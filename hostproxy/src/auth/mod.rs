//! Who is asking and what they may do: the user's token, scoped tokens, their scopes and
//! per-token rate limits.

mod identity;
mod ratelimit;
mod tokens;

pub use identity::{Identity, Scope, TunnelPeer, narrow};
pub use ratelimit::{KeySlot, PerKey, PerKeySlots, RateLimiter};
pub use tokens::{TokenEntry, TokenError, TokenStore, sha256_hex};

/// Requests per minute a scoped token may make on `/git/credential` and `/callback/register`.
pub const SCOPED_GIT_PER_MINUTE: u32 = 60;
pub const SCOPED_REGISTER_PER_MINUTE: u32 = 10;
/// Requests per minute a scoped identity may make on `/docker/credential` (each runs a
/// host credential helper).
pub const SCOPED_DOCKER_PER_MINUTE: u32 = 60;
/// Docker credential helpers running at once, for every identity together.
pub const MAX_DOCKER_HELPERS: usize = 4;
/// Host programs (git, a Docker credential helper) one scoped identity may have running at
/// once on a route, so it cannot hold every global slot.
pub const SCOPED_RUNNING_PER_ROUTE: usize = 2;
/// Live callback sessions per scoped token (the global cap still applies).
pub const SCOPED_MAX_SESSIONS: usize = 4;
