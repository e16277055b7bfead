//! The wire types of mock-proxy's control API under `/__mock/` (SPEC.md section 8).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::Secret;

/// Prefix of every control route.
pub const PREFIX: &str = "/__mock";
pub const REQUESTS: &str = "/__mock/requests";
pub const CREDENTIALS: &str = "/__mock/credentials";
pub const CALLBACKS: &str = "/__mock/callbacks/{id}";
pub const AGENT: &str = "/__mock/agent";
pub const FAULTS: &str = "/__mock/faults";

pub fn callbacks(id: &str) -> String {
    format!("{PREFIX}/callbacks/{id}")
}

/// One request the mock received (control routes excluded), oldest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordedRequest {
    pub method: String,
    pub path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query: Option<String>,
    /// Headers that matter to the API: host, content-type, origin, `sec-fetch-*`, and
    /// whether an authorization header was sent (its value is never recorded).
    pub headers: BTreeMap<String, String>,
    /// The body parsed as JSON, or as a string when it is not JSON; absent when empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<serde_json::Value>,
    /// The status the mock answered with; 0 while the request is still being served.
    pub status: u16,
}

/// `PUT /__mock/credentials`: host → credential handed out by `get`.
pub type MockCredentials = BTreeMap<String, MockCredential>;

/// A credential the mock hands out for its host: a username and password, or (capability
/// `authtype`) an `authtype` and `credential`, with any other attribute of SPEC.md 4.3.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MockCredential {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<Secret<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<Secret<String>>,
    #[serde(flatten)]
    pub extra: crate::api::GitCredentialExtra,
}

/// `POST /__mock/callbacks/{session_id}`: makes that callback arrive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MockCallback {
    #[serde(default = "default_method")]
    pub method: String,
    #[serde(default)]
    pub path: Option<String>,
    #[serde(default)]
    pub query: Secret<String>,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    #[serde(default)]
    pub body: Secret<String>,
}

fn default_method() -> String {
    "GET".into()
}

/// `PUT /__mock/agent`: how the fake agent answers forwarded messages.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum MockAgent {
    /// No agent: `/ssh/agent` answers 503 (the default, like a daemon without `SSH_AUTH_SOCK`).
    Absent,
    /// Answer every forwarded message with `SSH_AGENT_FAILURE`.
    Failure,
    /// Answer forwarded messages with these base64 frames in turn (the last one repeats).
    Replies(Vec<String>),
}

/// `POST /__mock/faults`: make a route fail.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MockFault {
    /// Route template as in SPEC.md 4.2, e.g. `/open/url` or `/callback/{id}/data`.
    pub route: String,
    /// Status to answer with; with `delay_ms` only, the request is delayed then served.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// How many requests it applies to; absent means every one until cleared.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub times: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay_ms: Option<u64>,
}
