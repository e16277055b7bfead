//! Who is asking and what they may do: the user's token, scoped tokens, their scopes and
//! per-token rate limits.

mod ratelimit;
mod tokens;

pub use ratelimit::{PerKey, RateLimiter};
pub use tokens::{Identity, Scope, TokenEntry, TokenError, TokenStore, sha256_hex};
