//! Who made a request (an `Identity`) and the `Scope`s it carries.

use std::collections::BTreeSet;

/// One permission a scoped token carries.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Scope {
    /// `/open/url`.
    Open,
    /// `/callback/…`.
    Callback,
    /// `/notify`: desktop notifications on the host.
    Notify,
    /// `git:HOST` (`git:*` for any host): credential `get`.
    Git(String),
    /// `git-store:HOST`: credential `store` and `erase` (the daemon's config must allow them too).
    GitStore(String),
    /// `ssh`: every key of the host agent.
    Ssh,
    /// `ssh:SHA256:…`: only that key is listed and may sign.
    SshKey(String),
}

impl std::str::FromStr for Scope {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let host = |h: &str| -> Result<String, String> {
            if h == "*" || clawker_protocol::credential::is_valid_credential_host(h) {
                Ok(h.to_ascii_lowercase())
            } else {
                Err(format!("{h:?} is not a host name"))
            }
        };
        match s {
            "open" => Ok(Self::Open),
            "callback" => Ok(Self::Callback),
            "notify" => Ok(Self::Notify),
            "ssh" => Ok(Self::Ssh),
            _ => match s.split_once(':') {
                Some(("git", h)) => host(h).map(Self::Git),
                Some(("git-store", h)) => host(h).map(Self::GitStore),
                Some(("ssh", fp)) if fp.starts_with("SHA256:") && fp.len() > 7 => {
                    Ok(Self::SshKey(fp.to_string()))
                }
                _ => Err(format!(
                    "unknown scope {s:?}: use open, callback, notify, git:HOST, git:*, git-store:HOST, ssh or ssh:SHA256:<fingerprint>"
                )),
            },
        }
    }
}

impl std::fmt::Display for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Open => f.write_str("open"),
            Self::Callback => f.write_str("callback"),
            Self::Notify => f.write_str("notify"),
            Self::Git(h) => write!(f, "git:{h}"),
            Self::GitStore(h) => write!(f, "git-store:{h}"),
            Self::Ssh => f.write_str("ssh"),
            Self::SshKey(k) => write!(f, "ssh:{k}"),
        }
    }
}

/// Who made a request, and what they may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub name: String,
    /// `None`: every scope (the user's own token, `--no-auth`).
    pub scopes: Option<BTreeSet<Scope>>,
    pub container: Option<String>,
}

impl Identity {
    /// The host user's own token.
    pub fn user() -> Self {
        Self {
            name: "user".into(),
            scopes: None,
            container: None,
        }
    }

    pub fn is_scoped(&self) -> bool {
        self.scopes.is_some()
    }

    fn has(&self, f: impl Fn(&Scope) -> bool) -> bool {
        self.scopes.as_ref().is_none_or(|s| s.iter().any(f))
    }

    pub fn may_open(&self) -> bool {
        self.has(|s| *s == Scope::Open)
    }

    pub fn may_notify(&self) -> bool {
        self.has(|s| *s == Scope::Notify)
    }

    pub fn may_callback(&self) -> bool {
        self.has(|s| *s == Scope::Callback)
    }

    /// `get` needs `git:HOST`; `store`/`erase` need `git-store:HOST`.
    pub fn may_git(&self, host: &str, write: bool) -> bool {
        self.has(|s| match (s, write) {
            (Scope::Git(h), false) | (Scope::GitStore(h), true) => {
                h == "*" || h.eq_ignore_ascii_case(host)
            }
            _ => false,
        })
    }

    pub fn may_ssh(&self) -> bool {
        self.has(|s| matches!(s, Scope::Ssh | Scope::SshKey(_)))
    }

    /// `None`: every key; `Some(fps)`: only these fingerprints.
    pub fn ssh_keys(&self) -> Option<BTreeSet<String>> {
        let scopes = self.scopes.as_ref()?;
        if scopes.contains(&Scope::Ssh) {
            return None;
        }
        Some(
            scopes
                .iter()
                .filter_map(|s| match s {
                    Scope::SshKey(k) => Some(k.clone()),
                    _ => None,
                })
                .collect(),
        )
    }
}
