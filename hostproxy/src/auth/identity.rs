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
    /// `git-push:HOST[/PREFIX]` (`git-push:*`): push through the daemon's git egress
    /// (SPEC.md 13). `git:HOST/PREFIX` limits fetching the same way.
    GitPush(String),
    /// `ssh`: every key of the host agent.
    Ssh,
    /// `ssh:SHA256:…`: only that key is listed and may sign.
    SshKey(String),
    /// `ssh-login`: SSH user-authentication signatures (logging in to servers) with the
    /// keys `ssh`/`ssh:…` give; without it only signatures such as git's (SSHSIG).
    SshLogin,
    /// `gpg`: the tunnel's gpg-agent streams (to gpg-agent's restricted extra socket).
    Gpg,
    /// `docker:REGISTRY` (`docker:*` for any): Docker registry credentials of the host.
    Docker(String),
    /// `socket:NAME`: the host socket declared as NAME in the daemon's config.
    Socket(String),
    /// `egress:NAME`: the API upstream declared as NAME (`[[egress]]`, SPEC.md 13).
    Egress(String),
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
            "ssh-login" => Ok(Self::SshLogin),
            "gpg" => Ok(Self::Gpg),
            _ => match s.split_once(':') {
                Some(("git", h)) => git_target(h, host).map(Self::Git),
                Some(("git-push", h)) => git_target(h, host).map(Self::GitPush),
                Some(("git-store", h)) => host(h).map(Self::GitStore),
                Some(("docker", "*")) => Ok(Self::Docker("*".into())),
                Some(("socket", n)) if clawker_protocol::tunnel::is_socket_name(n) => {
                    Ok(Self::Socket(n.to_string()))
                }
                Some(("egress", n)) if clawker_protocol::tunnel::is_socket_name(n) => {
                    Ok(Self::Egress(n.to_string()))
                }
                Some(("docker", r)) => clawker_protocol::api::docker_registry(r)
                    .map(Self::Docker)
                    .ok_or_else(|| format!("{r:?} is not a registry")),
                Some(("ssh", fp)) if fp.starts_with("SHA256:") && fp.len() > 7 => {
                    Ok(Self::SshKey(fp.to_string()))
                }
                _ => Err(format!(
                    "unknown scope {s:?}: use open, callback, notify, git:HOST[/PREFIX], git:*, git-push:HOST[/PREFIX], git-store:HOST, ssh, ssh:SHA256:<fingerprint>, ssh-login, gpg, docker:REGISTRY, docker:*, socket:NAME or egress:NAME"
                )),
            },
        }
    }
}

impl Scope {
    /// Whether holding `self` already grants everything `other` grants: equal, or a
    /// wildcard of the same kind (`git:*` covers `git:github.com`), or every key of the
    /// agent (`ssh` covers `ssh:SHA256:…`).
    pub fn covers(&self, other: &Scope) -> bool {
        match (self, other) {
            (Self::Git(a), Self::Git(b)) | (Self::GitPush(a), Self::GitPush(b)) => {
                target_covers(a, b)
            }
            (Self::GitStore(a), Self::GitStore(b)) | (Self::Docker(a), Self::Docker(b)) => {
                a == "*" || a == b
            }
            (Self::Ssh, Self::SshKey(_)) => true,
            _ => self == other,
        }
    }
}

/// `HOST` or `HOST/PREFIX` (a repository path prefix, `github.com/acme/`), the host checked
/// by `host`, lower case; the prefix kept as written.
fn git_target(t: &str, host: impl Fn(&str) -> Result<String, String>) -> Result<String, String> {
    match t.split_once('/') {
        None => host(t),
        Some((h, prefix)) => {
            if h == "*"
                || prefix.is_empty()
                || prefix.split('/').any(|s| s == "..")
                || !prefix
                    .bytes()
                    .all(|b| b.is_ascii_graphic() && !b"?#\\*".contains(&b))
            {
                return Err(format!(
                    "{t:?} is not HOST/PATH-PREFIX (a repository path prefix such as github.com/acme/)"
                ));
            }
            Ok(format!("{}/{prefix}", host(h)?))
        }
    }
}

/// Whether a git target (`*`, `HOST`, `HOST/PREFIX`) covers `other` (`HOST/REPO` or a
/// narrower target): every repository of a host, or those under a path prefix.
pub fn target_covers(granted: &str, other: &str) -> bool {
    if granted == "*" || granted == other {
        return true;
    }
    if granted.contains('/') {
        other.starts_with(granted)
    } else {
        other.starts_with(&format!("{granted}/"))
    }
}

/// The scopes of `wanted` that `granted` already covers, and the ones it does not: a
/// container's scopes label narrows what the user granted, never widens it (SPEC.md 6.2).
pub fn narrow(
    granted: &BTreeSet<Scope>,
    wanted: &BTreeSet<Scope>,
) -> (BTreeSet<Scope>, Vec<Scope>) {
    let (kept, dropped): (BTreeSet<Scope>, BTreeSet<Scope>) = wanted
        .iter()
        .cloned()
        .partition(|w| granted.iter().any(|g| g.covers(w)));
    (kept, dropped.into_iter().collect())
}

impl std::fmt::Display for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Open => f.write_str("open"),
            Self::Callback => f.write_str("callback"),
            Self::Notify => f.write_str("notify"),
            Self::Git(h) => write!(f, "git:{h}"),
            Self::GitStore(h) => write!(f, "git-store:{h}"),
            Self::GitPush(h) => write!(f, "git-push:{h}"),
            Self::Ssh => f.write_str("ssh"),
            Self::SshKey(k) => write!(f, "ssh:{k}"),
            Self::SshLogin => f.write_str("ssh-login"),
            Self::Gpg => f.write_str("gpg"),
            Self::Docker(r) => write!(f, "docker:{r}"),
            Self::Socket(n) => write!(f, "socket:{n}"),
            Self::Egress(n) => write!(f, "egress:{n}"),
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
    /// What tells this holder of the name from an earlier or later one: a token's hash
    /// prefix, an attached container's id. Callback sessions belong to it, so a token
    /// issued again under a revoked one's name, or a new container under a removed one's,
    /// inherits nothing.
    pub instance: Option<String>,
    /// Scope patterns its container's label adds to `[approval] ask` (SPEC.md 14); never
    /// fewer asks than the config's.
    pub ask: Vec<clawker_protocol::approval::AskPattern>,
}

impl Identity {
    /// The host user's own token.
    pub fn user() -> Self {
        Self {
            name: "user".into(),
            scopes: None,
            container: None,
            instance: None,
            ask: Vec::new(),
        }
    }

    /// Who owns what this identity registers (callback sessions): its name, and its
    /// instance when it has one.
    pub fn owner_key(&self) -> String {
        match &self.instance {
            Some(i) => format!("{}#{i}", self.name),
            None => self.name.clone(),
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

    /// git egress (SPEC.md 13): fetching `repo` of `host` needs `git:HOST[/PREFIX]`,
    /// pushing needs `git-push:HOST[/PREFIX]`.
    pub fn may_git_egress(&self, host: &str, repo: &str, push: bool) -> bool {
        let want = format!("{host}/{repo}");
        self.has(|s| match (s, push) {
            (Scope::Git(t), false) | (Scope::GitPush(t), true) => target_covers(t, &want),
            _ => false,
        })
    }

    pub fn may_ssh(&self) -> bool {
        self.has(|s| matches!(s, Scope::Ssh | Scope::SshKey(_)))
    }

    /// What this identity holds of the agent: its keys and whether it may sign logins.
    pub fn agent_grant(&self) -> clawker_protocol::agent::AgentGrant {
        clawker_protocol::agent::AgentGrant {
            keys: self.ssh_keys(),
            login: self.has(|s| *s == Scope::SshLogin),
        }
    }

    /// Docker credentials for `registry` (the store's key).
    pub fn may_docker(&self, registry: &str) -> bool {
        self.has(|s| matches!(s, Scope::Docker(r) if r == "*" || r == registry))
    }

    /// Some registry's Docker credentials (`list` needs this much).
    pub fn may_docker_any(&self) -> bool {
        self.has(|s| matches!(s, Scope::Docker(_)))
    }

    /// The declared host socket `name`.
    pub fn may_socket(&self, name: &str) -> bool {
        self.has(|s| matches!(s, Scope::Socket(n) if n == name))
    }

    /// The declared API upstream `name` (`[[egress]]`).
    pub fn may_egress(&self, name: &str) -> bool {
        self.has(|s| matches!(s, Scope::Egress(n) if n == name))
    }

    pub fn may_gpg(&self) -> bool {
        self.has(|s| *s == Scope::Gpg)
    }

    /// The scopes as their names (`None`: every scope, `*`).
    pub fn scope_names(&self) -> Vec<String> {
        match &self.scopes {
            None => vec!["*".into()],
            Some(s) => s.iter().map(ToString::to_string).collect(),
        }
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

/// What a connection that came through the tunnel carries into the gates, put there by the
/// daemon's own stream server (never read from the request): who is at the other end, and
/// the address the container end listens on (the only `Host` such a request may name).
#[derive(Debug, Clone)]
pub struct TunnelPeer {
    pub identity: Identity,
    /// `None`: not known here (`--via`): any port, on the loopback names.
    pub listen: Option<std::net::SocketAddr>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(names: &[&str]) -> BTreeSet<Scope> {
        names.iter().map(|n| n.parse().unwrap()).collect()
    }

    #[test]
    fn a_label_narrows_what_was_granted_and_never_widens_it() {
        let granted = set(&["open", "callback", "git:*", "ssh"]);
        let (kept, dropped) = narrow(
            &granted,
            &set(&[
                "open",
                "git:github.com",
                "ssh:SHA256:abc",
                "docker:*",
                "socket:op",
                "git-store:github.com",
                "gpg",
            ]),
        );
        assert_eq!(kept, set(&["open", "git:github.com", "ssh:SHA256:abc"]));
        assert_eq!(
            dropped.iter().map(ToString::to_string).collect::<Vec<_>>(),
            ["git-store:github.com", "gpg", "docker:*", "socket:op"]
        );
        // A narrower grant does not cover a wider ask.
        let (kept, _) = narrow(
            &set(&["git:github.com", "ssh:SHA256:abc"]),
            &set(&["git:*", "ssh"]),
        );
        assert!(kept.is_empty());
    }
}
