//! Every environment variable the toolkit reads, in one place.

/// Base URL of the daemon as seen from the container (default [`crate::DEFAULT_PROXY_URL`]).
pub const HOST_PROXY: &str = "CLAWKER_HOST_PROXY";
/// Bearer token the container tools send.
pub const HOST_PROXY_TOKEN: &str = "CLAWKER_HOST_PROXY_TOKEN";
/// File holding the token; read when [`HOST_PROXY_TOKEN`] is unset.
pub const HOST_PROXY_TOKEN_FILE: &str = "CLAWKER_HOST_PROXY_TOKEN_FILE";
/// callback-forwarder: the session id to wait for.
pub const CALLBACK_SESSION: &str = "CALLBACK_SESSION";
/// callback-forwarder: the local port to replay the callback to.
pub const CALLBACK_PORT: &str = "CALLBACK_PORT";
/// callback-forwarder: seconds to wait in all (default 300).
pub const CB_FORWARDER_TIMEOUT: &str = "CB_FORWARDER_TIMEOUT";
/// callback-forwarder: seconds between retries after an error (default 2).
pub const CB_FORWARDER_POLL_INTERVAL: &str = "CB_FORWARDER_POLL_INTERVAL";
/// callback-forwarder: delete the session after replay (`true`/`1`/`yes`; default true).
pub const CB_FORWARDER_CLEANUP: &str = "CB_FORWARDER_CLEANUP";
/// clawker-socket-server: JSON list of sockets to create.
pub const REMOTE_SOCKETS: &str = "CLAWKER_REMOTE_SOCKETS";
/// Seconds a tool retries a refused connection to the daemon (the tunnel not attached yet).
pub const HOST_PROXY_WAIT: &str = "CLAWKER_HOST_PROXY_WAIT";
pub const HOST_PROXY_WAIT_DEFAULT_SECS: u64 = 10;
/// Host: where the daemon finds the container tools it copies into images that lack them.
pub const TOOLS_DIR: &str = "CLAWKER_HOST_PROXY_TOOLS_DIR";
/// Host state directory override.
pub const STATE_DIR: &str = "CLAWKER_STATE_DIR";
/// The host's SSH agent socket (read by the daemon and the bridge).
pub const SSH_AUTH_SOCK: &str = "SSH_AUTH_SOCK";

/// Daemon settings that may come from the environment (flags win, then these, then the
/// config file).
pub const DAEMON_PORT: &str = "CLAWKER_HOST_PROXY_PORT";
pub const DAEMON_LISTEN: &str = "CLAWKER_HOST_PROXY_LISTEN";
pub const DAEMON_BROWSER: &str = "CLAWKER_HOST_PROXY_BROWSER";
pub const DAEMON_CONFIG: &str = "CLAWKER_HOST_PROXY_CONFIG";

/// callback-forwarder defaults.
pub const CB_FORWARDER_TIMEOUT_DEFAULT_SECS: u64 = 300;
pub const CB_FORWARDER_POLL_INTERVAL_DEFAULT_SECS: u64 = 2;

/// Parses the boolean spellings the tools accept (`true`/`1`/`yes`, `false`/`0`/`no`).
pub fn parse_bool(value: &str) -> Option<bool> {
    match value.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Some(true),
        "false" | "0" | "no" | "off" | "" => Some(false),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bools() {
        for t in ["true", "1", "YES", " yes "] {
            assert_eq!(parse_bool(t), Some(true), "{t}");
        }
        for f in ["false", "0", "no", ""] {
            assert_eq!(parse_bool(f), Some(false), "{f}");
        }
        assert_eq!(parse_bool("maybe"), None);
    }
}
