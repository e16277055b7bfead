//! The HTTP API: routes, limits, and every request and reply body (SPEC.md section 4).
//!
//! Request types reject unknown fields, so a typo in a client is a 400 rather than a
//! silently ignored setting.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::Secret;

/// Route paths and templates.
pub mod routes {
    pub const HEALTH: &str = "/health";
    /// Authenticated daemon status (`hostproxy status --json`).
    pub const STATUS: &str = "/status";
    pub const OPEN_URL: &str = "/open/url";
    pub const NOTIFY: &str = "/notify";
    pub const GIT_CREDENTIAL: &str = "/git/credential";
    /// git smart HTTP through the daemon (SPEC.md 13): `/git/HOST/PATH…`.
    pub const GIT_EGRESS: &str = "/git/{host}/{*path}";
    /// A declared API upstream through the daemon (SPEC.md 13): `/egress/NAME/PATH…`.
    pub const EGRESS: &str = "/egress/{name}/{*path}";
    pub const DOCKER_CREDENTIAL: &str = "/docker/credential";
    pub const SSH_AGENT: &str = "/ssh/agent";
    pub const CALLBACK_REGISTER: &str = "/callback/register";
    /// Template of `GET /callback/{id}/data`.
    pub const CALLBACK_DATA: &str = "/callback/{id}/data";
    /// Template of `DELETE /callback/{id}`.
    pub const CALLBACK: &str = "/callback/{id}";
    /// Prefix of the browser-facing capture route `/cb/{id}/{path…}`.
    pub const CB_PREFIX: &str = "/cb/";
    /// Query parameter of the long-poll.
    pub const WAIT_PARAM: &str = "wait";

    pub fn callback_data(id: &str) -> String {
        format!("/callback/{id}/data")
    }

    pub fn callback(id: &str) -> String {
        format!("/callback/{id}")
    }
}

/// Largest JSON body accepted on every route but `/ssh/agent`.
pub const MAX_BODY: usize = 64 * 1024;
/// Largest JSON body accepted on `/ssh/agent` (a 256 KiB frame, base64-encoded, with room).
pub const MAX_AGENT_BODY: usize = 512 * 1024;
/// Longest `?wait=` the long-poll honours, in seconds.
pub const MAX_WAIT_SECS: u64 = 60;
/// Callback session time-to-live: default and maximum, in seconds.
pub const DEFAULT_CALLBACK_TTL_SECS: u64 = 300;
pub const MAX_CALLBACK_TTL_SECS: u64 = 900;
/// Lowest port a callback may be registered for.
pub const MIN_CALLBACK_PORT: u32 = 1024;
/// Path registered when a client names none.
pub const DEFAULT_CALLBACK_PATH: &str = "/callback";
/// Longest callback path accepted.
pub const MAX_CALLBACK_PATH: usize = 1024;
/// Bytes of randomness in a session id (rendered as twice as many hex digits).
pub const SESSION_ID_BYTES: usize = 16;

/// `GET /health`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct HealthResponse {
    pub status: String,
    pub service: String,
    pub version: String,
}

/// `GET /status` (authenticated).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct StatusResponse {
    pub success: bool,
    pub service: String,
    pub version: String,
    pub pid: u32,
    pub port: u16,
    pub listen: Vec<String>,
    pub uptime_secs: u64,
    pub sessions: usize,
}

/// `POST /notify`: a desktop notification on the host (SPEC.md 10), for an agent's "I need
/// you". At most [`MAX_NOTIFY_TITLE`] and [`MAX_NOTIFY_BODY`] characters, no control
/// characters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct NotifyRequest {
    pub title: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
}

pub const MAX_NOTIFY_TITLE: usize = 120;
pub const MAX_NOTIFY_BODY: usize = 1000;
/// Notifications one identity may raise a minute.
pub const NOTIFY_PER_MINUTE: u32 = 6;

/// `POST /open/url`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct OpenUrlRequest {
    pub url: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct OpenUrlResponse {
    pub success: bool,
    /// The canonical (re-serialised) URL that was handed to the launcher.
    pub url: String,
}

/// What a container asks of the host's Docker credential store (Docker's credential-helper
/// verbs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum DockerCredentialAction {
    Get,
    Store,
    Erase,
    List,
}

impl DockerCredentialAction {
    /// The helper's verb (`docker-credential-NAME VERB`).
    pub fn verb(self) -> &'static str {
        match self {
            Self::Get => "get",
            Self::Store => "store",
            Self::Erase => "erase",
            Self::List => "list",
        }
    }
}

/// `POST /docker/credential` (SPEC.md 10): `server_url` is required except for `list`;
/// `username` and `secret` only for `store`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DockerCredentialRequest {
    pub action: DockerCredentialAction,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>))]
    pub username: Option<Secret<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>))]
    pub secret: Option<Secret<String>>,
}

/// Reply of `POST /docker/credential`: `get` carries the credential, `list` the registries
/// the caller may see (server URL → username).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DockerCredentialResponse {
    pub success: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>))]
    pub username: Option<Secret<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>))]
    pub secret: Option<Secret<String>>,
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    #[cfg_attr(feature = "openapi", schema(value_type = std::collections::BTreeMap<String, String>))]
    pub servers: std::collections::BTreeMap<String, Secret<String>>,
}

/// The registry a Docker server URL names, as the docker CLI keys its config:
/// `https://index.docker.io/v1/` for Docker Hub, else the host (and port), lowercase,
/// without scheme or path. `None` for what is not a registry address.
pub fn docker_registry(server_url: &str) -> Option<String> {
    let s = server_url.trim();
    if s.is_empty() || s.len() > 512 || s.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return None;
    }
    let rest = s
        .strip_prefix("https://")
        .or_else(|| s.strip_prefix("http://"))
        .unwrap_or(s);
    let host = rest.split('/').next()?.to_ascii_lowercase();
    if !crate::credential::is_valid_credential_host(&host) {
        return None;
    }
    Some(match host.as_str() {
        "docker.io" | "index.docker.io" | "registry-1.docker.io" => DOCKER_HUB.to_string(),
        _ => host,
    })
}

/// Docker Hub's key in `~/.docker/config.json`.
pub const DOCKER_HUB: &str = "https://index.docker.io/v1/";

#[cfg(test)]
mod docker_registry_tests {
    use super::*;

    #[test]
    fn server_urls_name_registries_as_the_docker_cli_keys_them() {
        for (url, want) in [
            ("127.0.0.1:5000", Some("127.0.0.1:5000")),
            (
                "https://Registry.Example.com/v2/",
                Some("registry.example.com"),
            ),
            ("http://localhost:5000", Some("localhost:5000")),
            ("docker.io", Some(DOCKER_HUB)),
            ("https://index.docker.io/v1/", Some(DOCKER_HUB)),
            ("", None),
            ("user@host", None),
            ("a b", None),
            ("host:99999", None),
            ("ho\nst", None),
        ] {
            assert_eq!(docker_registry(url).as_deref(), want, "{url:?}");
        }
    }
}

/// What a container asks of the host's git credential helpers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum GitCredentialAction {
    Get,
    Store,
    Erase,
}

impl GitCredentialAction {
    /// The `git credential` subcommand this action maps to.
    pub fn git_subcommand(self) -> &'static str {
        match self {
            Self::Get => "fill",
            Self::Store => "approve",
            Self::Erase => "reject",
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Get => "get",
            Self::Store => "store",
            Self::Erase => "erase",
        }
    }
}

impl std::str::FromStr for GitCredentialAction {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "get" => Ok(Self::Get),
            "store" => Ok(Self::Store),
            "erase" => Ok(Self::Erase),
            other => Err(format!(
                "unknown action {other:?}: expected get, store or erase"
            )),
        }
    }
}

/// The attributes of git's credential protocol beyond protocol, host, path, username and
/// password (SPEC.md 4.3), in both the request and the reply of `POST /git/credential`.
/// `[]` keys are arrays, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct GitCredentialExtra {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_expiry_utc: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>))]
    pub oauth_refresh_token: Option<Secret<String>>,
    /// With capability `authtype`: the scheme of `credential` (e.g. `Bearer`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authtype: Option<String>,
    /// With capability `authtype`: a pre-encoded credential (a bearer token).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>))]
    pub credential: Option<Secret<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ephemeral: Option<bool>,
    /// With capability `state`: a helper's state across rounds (`state[]`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<String>))]
    pub state: Vec<Secret<String>>,
    /// With capability `state`: another round follows.
    #[serde(default, rename = "continue", skip_serializing_if = "Option::is_none")]
    pub r#continue: Option<bool>,
    /// The server's `WWW-Authenticate` challenges (`wwwauth[]`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub wwwauth: Vec<String>,
    /// `capability[]`: in a request, what the container's git understands; in a reply,
    /// what the host's git answered with (only those may be acted on).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub capability: Vec<String>,
}

/// `POST /git/credential`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct GitCredentialRequest {
    pub action: GitCredentialAction,
    pub protocol: String,
    pub host: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>))]
    pub username: Option<Secret<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>))]
    pub password: Option<Secret<String>>,

    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_expiry_utc: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>))]
    pub oauth_refresh_token: Option<Secret<String>>,
    /// With capability `authtype`: the scheme of `credential` (e.g. `Bearer`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authtype: Option<String>,
    /// With capability `authtype`: a pre-encoded credential (a bearer token).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>))]
    pub credential: Option<Secret<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ephemeral: Option<bool>,
    /// With capability `state`: a helper's state across rounds (`state[]`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<String>))]
    pub state: Vec<Secret<String>>,
    /// With capability `state`: another round follows.
    #[serde(default, rename = "continue", skip_serializing_if = "Option::is_none")]
    pub r#continue: Option<bool>,
    /// The server's `WWW-Authenticate` challenges (`wwwauth[]`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub wwwauth: Vec<String>,
    /// `capability[]`: in a request, what the container's git understands; in a reply,
    /// what the host's git answered with (only those may be acted on).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub capability: Vec<String>,
}

/// Reply of `POST /git/credential`: the credential fields are present for `get` only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct GitCredentialResponse {
    pub success: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>))]
    pub username: Option<Secret<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>))]
    pub password: Option<Secret<String>>,

    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_expiry_utc: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>))]
    pub oauth_refresh_token: Option<Secret<String>>,
    /// With capability `authtype`: the scheme of `credential` (e.g. `Bearer`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authtype: Option<String>,
    /// With capability `authtype`: a pre-encoded credential (a bearer token).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>))]
    pub credential: Option<Secret<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ephemeral: Option<bool>,
    /// With capability `state`: a helper's state across rounds (`state[]`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<String>))]
    pub state: Vec<Secret<String>>,
    /// With capability `state`: another round follows.
    #[serde(default, rename = "continue", skip_serializing_if = "Option::is_none")]
    pub r#continue: Option<bool>,
    /// The server's `WWW-Authenticate` challenges (`wwwauth[]`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub wwwauth: Vec<String>,
    /// `capability[]`: in a request, what the container's git understands; in a reply,
    /// what the host's git answered with (only those may be acted on).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub capability: Vec<String>,
}

/// `self.extra()` and `self.set_extra(..)` for a type with the extra attributes inline.
macro_rules! extra_attributes {
    ($t:ty) => {
        impl $t {
            /// The attributes beyond protocol, host, path, username and password.
            pub fn extra(&self) -> GitCredentialExtra {
                GitCredentialExtra {
                    password_expiry_utc: self.password_expiry_utc.clone(),
                    oauth_refresh_token: self.oauth_refresh_token.clone(),
                    authtype: self.authtype.clone(),
                    credential: self.credential.clone(),
                    ephemeral: self.ephemeral,
                    state: self.state.clone(),
                    r#continue: self.r#continue,
                    wwwauth: self.wwwauth.clone(),
                    capability: self.capability.clone(),
                }
            }

            pub fn set_extra(&mut self, e: GitCredentialExtra) {
                self.password_expiry_utc = e.password_expiry_utc;
                self.oauth_refresh_token = e.oauth_refresh_token;
                self.authtype = e.authtype;
                self.credential = e.credential;
                self.ephemeral = e.ephemeral;
                self.state = e.state;
                self.r#continue = e.r#continue;
                self.wwwauth = e.wwwauth;
                self.capability = e.capability;
            }
        }
    };
}

extra_attributes!(GitCredentialRequest);
extra_attributes!(GitCredentialResponse);

impl GitCredentialExtra {
    /// The attributes of `f` beyond protocol, host, path, username and password.
    pub fn from_fields(f: &crate::credential::CredentialFields) -> Self {
        Self {
            password_expiry_utc: f.password_expiry_utc.clone(),
            oauth_refresh_token: f.oauth_refresh_token.clone(),
            authtype: f.authtype.clone(),
            credential: f.credential.clone(),
            ephemeral: f.ephemeral,
            state: f.state.clone(),
            r#continue: f.r#continue,
            wwwauth: f.wwwauth.clone(),
            capability: f.capability.clone(),
        }
    }

    fn into_fields(self, f: &mut crate::credential::CredentialFields) {
        f.password_expiry_utc = self.password_expiry_utc;
        f.oauth_refresh_token = self.oauth_refresh_token;
        f.authtype = self.authtype;
        f.credential = self.credential;
        f.ephemeral = self.ephemeral;
        f.state = self.state;
        f.r#continue = self.r#continue;
        f.wwwauth = self.wwwauth;
        f.capability = self.capability;
    }
}

impl GitCredentialRequest {
    /// The request for what git wrote to a helper; `None` without a protocol and a host
    /// (nothing to ask).
    pub fn from_fields(
        action: GitCredentialAction,
        f: crate::credential::CredentialFields,
    ) -> Option<Self> {
        let extra = GitCredentialExtra::from_fields(&f);
        let mut r = Self {
            action,
            protocol: f.protocol?,
            host: f.host?,
            path: f.path,
            username: f.username,
            password: f.password,
            password_expiry_utc: None,
            oauth_refresh_token: None,
            authtype: None,
            credential: None,
            ephemeral: None,
            state: Vec::new(),
            r#continue: None,
            wwwauth: Vec::new(),
            capability: Vec::new(),
        };
        r.set_extra(extra);
        Some(r)
    }

    /// Every attribute of the request, as git's credential protocol names them.
    pub fn fields(&self) -> crate::credential::CredentialFields {
        let mut f = crate::credential::CredentialFields {
            protocol: Some(self.protocol.clone()),
            host: Some(self.host.clone()),
            path: self.path.clone(),
            username: self.username.clone(),
            password: self.password.clone(),
            ..Default::default()
        };
        self.extra().into_fields(&mut f);
        f
    }
}

impl GitCredentialResponse {
    /// The reply to a `get` that found `f`.
    pub fn found(f: crate::credential::CredentialFields) -> Self {
        let extra = GitCredentialExtra::from_fields(&f);
        let mut r = Self {
            protocol: f.protocol,
            host: f.host,
            username: f.username,
            password: f.password,
            ..Self::done()
        };
        r.set_extra(extra);
        r
    }

    /// What a helper hands back to git: every attribute of the reply.
    pub fn fields(&self) -> crate::credential::CredentialFields {
        let mut f = crate::credential::CredentialFields {
            protocol: self.protocol.clone(),
            host: self.host.clone(),
            username: self.username.clone(),
            password: self.password.clone(),
            ..Default::default()
        };
        self.extra().into_fields(&mut f);
        f
    }

    /// The reply to a `store` or `erase` that went through: `{"success":true}`.
    pub fn done() -> Self {
        Self {
            success: true,
            protocol: None,
            host: None,
            username: None,
            password: None,
            password_expiry_utc: None,
            oauth_refresh_token: None,
            authtype: None,
            credential: None,
            ephemeral: None,
            state: Vec::new(),
            r#continue: None,
            wwwauth: Vec::new(),
            capability: Vec::new(),
        }
    }
}

/// `POST /ssh/agent`: one whole framed agent message, base64.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SshAgentRequest {
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub data: Secret<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SshAgentResponse {
    pub success: bool,
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub data: Secret<String>,
}

/// `POST /callback/register`.
///
/// `port` is a wide integer so that an out-of-range value gets the port error rather than a
/// generic JSON one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CallbackRegisterRequest {
    pub port: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_seconds: Option<u64>,
    /// The OAuth `state` the redirect will carry; only a request with exactly this state is
    /// captured. Required (400 without it) unless the daemon's config sets
    /// `callback.allow_stateless`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>))]
    pub state: Option<Secret<String>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CallbackRegisterResponse {
    pub success: bool,
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub session_id: Secret<String>,
    /// RFC 3339, UTC.
    pub expires_at: String,
}

/// A captured browser request, as replayed by callback-forwarder.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CallbackData {
    pub method: String,
    pub path: String,
    /// The raw query string without the leading `?` (holds the OAuth code: secret).
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub query: Secret<String>,
    /// Request headers, lowercase names; `Cookie`, `Authorization` and
    /// `Proxy-Authorization` are never captured.
    pub headers: BTreeMap<String, String>,
    /// The request body as UTF-8 (lossy), empty for GET.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub body: Secret<String>,
    /// RFC 3339, UTC.
    pub received_at: String,
}

/// `GET /callback/{id}/data`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CallbackDataResponse {
    pub received: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub callback: Option<CallbackData>,
}

/// `{"success":true}`: store, erase, delete.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SuccessResponse {
    pub success: bool,
}

impl SuccessResponse {
    pub const OK: Self = Self { success: true };
}

/// The body of every failure.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorResponse {
    pub success: bool,
    pub error: String,
}

impl ErrorResponse {
    pub fn new(error: impl Into<String>) -> Self {
        Self {
            success: false,
            error: error.into(),
        }
    }
}

/// True when `id` has the shape of a session id: 32 lowercase hex digits.
pub fn is_session_id(id: &str) -> bool {
    id.len() == SESSION_ID_BYTES * 2 && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Renders random bytes as a session id.
pub fn session_id_from_bytes(bytes: &[u8; SESSION_ID_BYTES]) -> String {
    crate::hex(bytes)
}

/// Why a callback path was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallbackPathError {
    #[error("path must start with '/'")]
    NotAbsolute,
    #[error("path must not contain a query, a fragment, spaces or control characters")]
    BadCharacter,
    #[error("path is longer than {MAX_CALLBACK_PATH} bytes")]
    TooLong,
}

/// Checks a callback path to register: absolute, printable, no query or fragment.
pub fn validate_callback_path(path: &str) -> Result<(), CallbackPathError> {
    if path.len() > MAX_CALLBACK_PATH {
        return Err(CallbackPathError::TooLong);
    }
    if !path.starts_with('/') {
        return Err(CallbackPathError::NotAbsolute);
    }
    if path
        .chars()
        .any(|c| c.is_control() || c.is_whitespace() || c == '?' || c == '#' || c == '\\')
    {
        return Err(CallbackPathError::BadCharacter);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_types_reject_unknown_fields() {
        let err = serde_json::from_str::<OpenUrlRequest>(r#"{"url":"https://x","extra":1}"#);
        assert!(err.is_err());
        let err = serde_json::from_str::<GitCredentialRequest>(
            r#"{"action":"get","protocol":"https","host":"h","pasword":"x"}"#,
        );
        assert!(err.is_err());
    }

    #[test]
    fn credential_reply_for_store_is_just_success() {
        let r = GitCredentialResponse::done();
        assert_eq!(serde_json::to_string(&r).unwrap(), r#"{"success":true}"#);
    }

    #[test]
    fn callback_data_golden() {
        let d = CallbackData {
            method: "GET".into(),
            path: "/callback".into(),
            query: Secret::new("code=abc&state=xyz".into()),
            headers: BTreeMap::from([("user-agent".into(), "t".into())]),
            body: Secret::new(String::new()),
            received_at: "2026-01-01T00:00:00Z".into(),
        };
        let json = serde_json::to_string(&CallbackDataResponse {
            received: true,
            callback: Some(d),
        })
        .unwrap();
        assert_eq!(
            json,
            r#"{"received":true,"callback":{"method":"GET","path":"/callback","query":"code=abc&state=xyz","headers":{"user-agent":"t"},"body":"","received_at":"2026-01-01T00:00:00Z"}}"#
        );
        let not_yet = serde_json::to_string(&CallbackDataResponse {
            received: false,
            callback: None,
        })
        .unwrap();
        assert_eq!(not_yet, r#"{"received":false}"#);
    }

    #[test]
    fn session_ids() {
        let id = session_id_from_bytes(&[0xab; 16]);
        assert_eq!(id.len(), 32);
        assert!(is_session_id(&id));
        assert!(!is_session_id("ABABABABABABABABABABABABABABABAB"));
        assert!(!is_session_id("../etc/passwd"));
    }

    #[test]
    fn callback_paths() {
        assert!(validate_callback_path("/callback").is_ok());
        assert!(validate_callback_path("/").is_ok());
        assert_eq!(
            validate_callback_path("cb"),
            Err(CallbackPathError::NotAbsolute)
        );
        assert_eq!(
            validate_callback_path("/a?b"),
            Err(CallbackPathError::BadCharacter)
        );
        assert_eq!(
            validate_callback_path("/a\nb"),
            Err(CallbackPathError::BadCharacter)
        );
        assert_eq!(
            validate_callback_path(&format!("/{}", "a".repeat(2000))),
            Err(CallbackPathError::TooLong)
        );
    }
}
