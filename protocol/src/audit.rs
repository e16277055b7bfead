//! The audit log's line format: `<state>/logs/audit.jsonl`, one JSON object per decision.
//!
//! It records who asked for what and what was decided, never a secret: no token, password,
//! username, query string, URL path or session id.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditRecord {
    /// RFC 3339, UTC.
    pub time: String,
    /// Name of the token used (`user` for the host's own token), or `none`.
    pub token: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
    /// Route template, e.g. `/git/credential`.
    pub route: String,
    /// What was asked: `open`, `get`/`store`/`erase`, an agent message name, `register`, …
    pub action: String,
    /// The git host or the URL's host, when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// `SHA256:…` of the SSH key a signature was asked of.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    pub allowed: bool,
    /// Why it was refused, or what came of it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// For a denial that needs no token to cause: how many more like it (same route and
    /// reason) were folded into this line since the previous one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub folded: Option<u64>,
}
