//! `[approval]`: which uses wait for the user's answer, how long, and how long an answer
//! holds (SPEC.md 14).

use std::time::Duration;

use clawker_protocol::approval::AskPattern;
use serde::Deserialize;

use super::{ConfigError, parse_duration};

/// `[approval]` as written in the file.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApprovalFile {
    /// Scope patterns that need an answer (`git-push:*`, `ssh`, `docker:*`, `socket:*`).
    pub ask: Option<Vec<String>>,
    /// How long an ask waits (`60s`); silence is a denial.
    pub timeout: Option<String>,
    /// `once`, `container` or a duration (`10m`).
    pub remember: Option<String>,
    /// A program asked too (argv; the ask in its environment; exit 0 allows, 1 denies).
    pub approver: Option<Vec<String>>,
    /// Ask on the desktop too (`notify-send --action`, an `osascript` dialog). Default true.
    pub desktop: Option<bool>,
}

/// How long an allow holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Remember {
    /// This one request (or stream).
    Once,
    /// Until the container (the identity) ends.
    #[default]
    Container,
    /// For this long, and never past the container's end.
    For(Duration),
}

impl std::str::FromStr for Remember {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim() {
            "once" => Ok(Self::Once),
            "container" => Ok(Self::Container),
            d => parse_duration(d)
                .map(Self::For)
                .map_err(|_| format!("{s:?} is not once, container or a duration such as 10m")),
        }
    }
}

/// The longest an ask may wait: the container tools wait for a reply a little longer
/// (`clawker_client`'s reply timeout), so the daemon's answer always reaches them.
pub const MAX_ASK_TIMEOUT: Duration = Duration::from_secs(300);

/// `[approval]`, resolved.
#[derive(Debug, Clone)]
pub struct ApprovalSettings {
    pub ask: Vec<AskPattern>,
    pub timeout: Duration,
    pub remember: Remember,
    pub approver: Option<Vec<String>>,
    pub desktop: bool,
}

impl Default for ApprovalSettings {
    fn default() -> Self {
        Self {
            ask: Vec::new(),
            timeout: Duration::from_secs(60),
            remember: Remember::Container,
            approver: None,
            desktop: true,
        }
    }
}

impl ApprovalSettings {
    pub fn from_file(f: &ApprovalFile) -> Result<Self, ConfigError> {
        let mut s = Self::default();
        if let Some(ask) = &f.ask {
            s.ask = ask
                .iter()
                .map(|p| p.parse())
                .collect::<Result<_, _>>()
                .map_err(|message| ConfigError::Value {
                    key: "approval.ask",
                    message,
                })?;
        }
        if let Some(t) = &f.timeout {
            s.timeout = parse_duration(t).map_err(|message| ConfigError::Value {
                key: "approval.timeout",
                message,
            })?;
            if s.timeout.is_zero() || s.timeout > MAX_ASK_TIMEOUT {
                return Err(ConfigError::Value {
                    key: "approval.timeout",
                    message: format!("{t:?}: give 1s to 5m"),
                });
            }
        }
        if let Some(r) = &f.remember {
            s.remember = r.parse().map_err(|message| ConfigError::Value {
                key: "approval.remember",
                message,
            })?;
        }
        if let Some(a) = &f.approver {
            if a.is_empty() || a[0].is_empty() {
                return Err(ConfigError::Value {
                    key: "approval.approver",
                    message: "name a program: approver = [\"/path/to/approver\", \"arg\"]".into(),
                });
            }
            s.approver = Some(a.clone());
        }
        if let Some(d) = f.desktop {
            s.desktop = d;
        }
        Ok(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_section_resolves_and_refuses_what_would_silently_not_ask() {
        let f: ApprovalFile = toml::from_str(
            "ask = [\"git-push:*\", \"ssh\"]\ntimeout = \"20s\"\nremember = \"10m\"\n",
        )
        .unwrap();
        let s = ApprovalSettings::from_file(&f).unwrap();
        assert_eq!(s.ask.len(), 2);
        assert_eq!(s.timeout, Duration::from_secs(20));
        assert_eq!(s.remember, Remember::For(Duration::from_secs(600)));
        for bad in [
            "ask = [\"gti-push:*\"]",
            "timeout = \"0s\"",
            "timeout = \"1h\"",
            "remember = \"forever\"",
            "approver = []",
        ] {
            let f: ApprovalFile = toml::from_str(bad).unwrap();
            assert!(ApprovalSettings::from_file(&f).is_err(), "{bad} accepted");
        }
        assert!(toml::from_str::<ApprovalFile>("asks = []").is_err());
    }
}
