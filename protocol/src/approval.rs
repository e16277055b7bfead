//! Asking the user (SPEC.md 14): which uses need a human answer (`AskPattern`), and what an
//! ask looks like on the control socket (`PendingAsk`). No I/O.

use serde::{Deserialize, Serialize};

/// The container label that adds scope patterns to the daemon's `[approval] ask` (a comma
/// list). It only ever adds: nothing a container says removes an ask.
pub const ASK_LABEL: &str = "dev.clawker.hostproxy.ask";

/// The kinds of use an ask pattern may name: the scopes of SPEC.md 6.2, `git-push` and
/// `egress` of SPEC.md 13.
pub const ASK_KINDS: &[&str] = &[
    "open",
    "callback",
    "notify",
    "git",
    "git-store",
    "git-push",
    "ssh",
    "gpg",
    "docker",
    "socket",
    "egress",
];

/// One entry of `ask`: `KIND` (every use of that kind), `KIND:*`, `KIND:EXACT` or
/// `KIND:PREFIX*`, or `*` (everything).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AskPattern {
    text: String,
}

impl std::str::FromStr for AskPattern {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if s == "*" {
            return Ok(Self { text: s.into() });
        }
        let (kind, rest) = match s.split_once(':') {
            Some((k, r)) => (k, Some(r)),
            None => (s, None),
        };
        if !ASK_KINDS.contains(&kind) {
            return Err(format!(
                "{s:?} is not a scope pattern: start it with one of {} (or use *)",
                ASK_KINDS.join(", ")
            ));
        }
        if let Some(r) = rest {
            let body = r.strip_suffix('*').unwrap_or(r);
            if r.is_empty()
                || body.contains('*')
                || r.chars().any(|c| c.is_control() || c.is_whitespace())
            {
                return Err(format!(
                    "{s:?} is not a scope pattern: after {kind}: name one target, a prefix ending in *, or *"
                ));
            }
        }
        Ok(Self {
            text: s.to_ascii_lowercase(),
        })
    }
}

impl AskPattern {
    /// Whether a use of `scope` (a concrete scope: `git:github.com`, `ssh`,
    /// `socket:op-agent`) needs an answer under this pattern.
    pub fn matches(&self, scope: &str) -> bool {
        let scope = scope.to_ascii_lowercase();
        let p = self.text.as_str();
        if p == "*" || p == scope {
            return true;
        }
        if !p.contains(':') {
            // `ssh` asks for `ssh` and for every `ssh:…` key.
            return scope.split_once(':').is_some_and(|(k, _)| k == p);
        }
        match p.strip_suffix('*') {
            Some(prefix) => scope.starts_with(prefix),
            None => false,
        }
    }
}

impl std::fmt::Display for AskPattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

/// Parses a comma list of patterns (the label's value). Empty entries are skipped.
pub fn parse_patterns(list: &str) -> Result<Vec<AskPattern>, String> {
    list.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::parse)
        .collect()
}

/// One ask waiting for the user, as `hostproxy approvals` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PendingAsk {
    /// What `hostproxy approve ID` / `deny ID` take.
    pub id: String,
    /// Who asks: `container:web`, `via:ci`, a token's name, `user`.
    pub identity: String,
    /// The container id, when the identity is a container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
    /// The scope this use needs (`git:github.com`, `ssh`, `socket:op-agent`).
    pub scope: String,
    /// What would happen: `git credential get`, `ssh agent connection`, ….
    pub what: String,
    /// On what: a host, a registry, a socket name.
    pub target: String,
    /// Why the daemon asks: the pattern that matched and where it comes from.
    pub why: String,
    /// RFC 3339, when it was asked.
    pub since: String,
    /// Seconds left before silence becomes a denial.
    pub expires_in: u64,
}

/// Who answered an ask (the audit log says so).
pub mod answered_by {
    /// The `hostproxy approvals` terminal view.
    pub const TERMINAL: &str = "terminal";
    /// `hostproxy approve|deny ID`.
    pub const COMMAND: &str = "command";
    /// A desktop notification's action or dialog button.
    pub const DESKTOP: &str = "desktop";
    /// The `--approver` hook.
    pub const APPROVER: &str = "approver";
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> AskPattern {
        s.parse().unwrap()
    }

    #[test]
    fn patterns_match_kinds_prefixes_and_exact_targets() {
        assert!(p("git-push:*").matches("git-push:github.com"));
        assert!(!p("git-push:*").matches("git:github.com"));
        assert!(p("ssh").matches("ssh"));
        assert!(p("ssh").matches("ssh:SHA256:abc"));
        assert!(!p("ssh").matches("ssh-login"));
        assert!(p("docker:*").matches("docker:ghcr.io"));
        assert!(p("socket:op-*").matches("socket:op-agent"));
        assert!(!p("socket:op-*").matches("socket:db"));
        assert!(p("git:GitHub.com").matches("git:github.com"));
        assert!(!p("git:github.com").matches("git:github.com.evil"));
        assert!(p("*").matches("open"));
        assert!(!p("open").matches("notify"));
    }

    #[test]
    fn a_typo_is_an_error_not_a_pattern_that_never_matches() {
        for bad in ["gti:*", "git:", "git:a*b", "", "socket:a b", "egress:**"] {
            assert!(bad.parse::<AskPattern>().is_err(), "{bad:?} was accepted");
        }
        assert_eq!(
            parse_patterns("ssh, ,git-push:*").unwrap(),
            vec![p("ssh"), p("git-push:*")]
        );
    }
}
