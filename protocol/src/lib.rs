//! Every type and constant that crosses a process boundary in the hostproxy toolkit.
//!
//! This crate is the single source of truth for the wire: HTTP request and reply bodies,
//! route and header names, environment variable names, the git credential `key=value`
//! codec, SSH agent framing and the socket-bridge frame codec. It performs no I/O and owns
//! no runtime, so both the daemon and the static container tools can depend on it.

pub mod agent;
pub mod api;
pub mod approval;
pub mod audit;
pub mod bridge;
pub mod credential;
pub mod env;
pub mod flow;
pub mod host;
pub mod mock;
#[cfg(feature = "openapi")]
pub mod openapi;
pub mod secret;
pub mod text;
pub mod tunnel;
pub mod urls;

pub use secret::Secret;

/// The daemon's default TCP port.
pub const DEFAULT_PORT: u16 = 18374;

/// The `service` value `/health` answers with; `hostproxy start` uses it to recognise a
/// daemon of ours on the port.
pub const SERVICE_NAME: &str = "clawker-host-proxy";

/// Base URL the container tools use when `CLAWKER_HOST_PROXY` is unset.
pub const DEFAULT_PROXY_URL: &str = "http://host.docker.internal:18374";

/// Lowercase hex of `bytes` (session ids, tokens, token hashes).
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    s
}

#[cfg(test)]
mod tests {
    #[test]
    fn hex_is_lowercase_two_digits_a_byte() {
        assert_eq!(super::hex(&[0x00, 0x0f, 0xa5, 0xff]), "000fa5ff");
        assert_eq!(super::hex(&[]), "");
    }
}
