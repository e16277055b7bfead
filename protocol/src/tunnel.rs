//! The tunnel (SPEC.md 6.1, 6.2): what the container end listens on, the labels the daemon
//! attaches by, where copied tools live in a container, and the control socket's messages.

use serde::{Deserialize, Serialize};

use crate::bridge::{SOCKET_GPG_AGENT, SOCKET_HTTP, SOCKET_SSH_AGENT};

/// Container label: the daemon attaches containers whose value is [`ATTACH_LABEL_VALUE`].
pub const ATTACH_LABEL: &str = "dev.clawker.hostproxy";
pub const ATTACH_LABEL_VALUE: &str = "attach";
/// Container label: the scopes of an attached container (comma list).
pub const SCOPES_LABEL: &str = "dev.clawker.hostproxy.scopes";
/// The scopes of an attached container when neither `--allow`, its label nor the config
/// name any.
pub const DEFAULT_SCOPES: [&str; 4] = ["open", "callback", "git:*", "ssh"];
/// Where the HTTP API listens inside the container.
pub const DEFAULT_HTTP_LISTEN: &str = "127.0.0.1:18374";
/// Where the daemon copies its tools into an image that lacks them.
pub const CONTAINER_DIR: &str = "/tmp/.hostproxy";
pub const CONTAINER_BIN_DIR: &str = "/tmp/.hostproxy/bin";
/// The container end's program name.
pub const SOCKET_SERVER: &str = "clawker-socket-server";
/// The container tools the daemon copies into an image that lacks them (`cargo xtask dist`
/// builds these, for x86_64 and aarch64).
pub const CONTAINER_TOOLS: [&str; 7] = [
    "host-open",
    "docker-credential-clawker",
    "host-notify",
    "callback-forwarder",
    "git-credential-clawker",
    "ssh-agent-proxy",
    SOCKET_SERVER,
];
/// The OPEN payload of a declared socket's streams: this, then its name.
pub const DECLARED_PREFIX: &str = "socket:";
/// Container label: the declared host sockets an attached container asks for (comma list).
pub const SOCKETS_LABEL: &str = "dev.clawker.hostproxy.sockets";

/// Where a declared socket appears in the container.
pub fn declared_socket_path(name: &str) -> String {
    format!("{CONTAINER_DIR}/sockets/{name}.sock")
}

/// A declared socket's name: letters, digits, `-`, `_`, `.`, at most 64.
pub fn is_socket_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// `hostproxy run-flags`' socket paths: absolute, the same for every user of the image.
pub const RUN_FLAGS_SSH_SOCK: &str = "/tmp/.hostproxy/ssh/agent.sock";
pub const RUN_FLAGS_GNUPGHOME: &str = "/tmp/.hostproxy/gnupg";

/// One entry of `CLAWKER_REMOTE_SOCKETS`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", deny_unknown_fields)]
pub enum RemoteSocket {
    #[serde(rename = "ssh-agent")]
    SshAgent { path: String },
    #[serde(rename = "gpg-agent")]
    GpgAgent { path: String },
    /// A TCP listener on the container's loopback carrying the HTTP API.
    #[serde(rename = "http")]
    Http { listen: String },
    /// A host socket the user declared by name in the daemon's config (SPEC.md 10).
    #[serde(rename = "socket")]
    Socket { name: String, path: String },
}

impl RemoteSocket {
    /// The type name.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::SshAgent { .. } => SOCKET_SSH_AGENT,
            Self::GpgAgent { .. } => SOCKET_GPG_AGENT,
            Self::Http { .. } => SOCKET_HTTP,
            Self::Socket { .. } => "socket",
        }
    }

    /// The OPEN payload of its streams: the type, or `socket:NAME` for a declared socket.
    pub fn open_payload(&self) -> String {
        match self {
            Self::Socket { name, .. } => format!("{DECLARED_PREFIX}{name}"),
            other => other.kind().to_string(),
        }
    }
}

/// The sockets a container end serves when nobody named them (the daemon's attach, or
/// `clawker-socket-server` started by a `--via` command with no `CLAWKER_REMOTE_SOCKETS`),
/// from the container's environment as `env` reads it:
///
/// - `http` on the loopback address of `CLAWKER_HOST_PROXY` when that is
///   `http://127.0.0.1:PORT`, else on [`DEFAULT_HTTP_LISTEN`];
/// - `ssh-agent` at `SSH_AUTH_SOCK`, else `$HOME/.ssh/agent.sock` (`/root` without `HOME`:
///   the container end does not expand `~`);
/// - `gpg-agent` at `$GNUPGHOME/S.gpg-agent` only when `GNUPGHOME` is set (the container
///   end writes the host's public keyring there, so never into a default `~/.gnupg`).
pub fn default_sockets(env: impl Fn(&str) -> Option<String>) -> Vec<RemoteSocket> {
    let set = |k: &str| env(k).filter(|v| !v.is_empty());
    let listen = set(crate::env::HOST_PROXY)
        .and_then(|u| loopback_listen(&u))
        .unwrap_or_else(|| DEFAULT_HTTP_LISTEN.to_string());
    let home = set("HOME")
        .filter(|h| h.starts_with('/'))
        .unwrap_or_else(|| "/root".into());
    let ssh = set(crate::env::SSH_AUTH_SOCK)
        .filter(|p| p.starts_with('/'))
        .unwrap_or_else(|| format!("{}/.ssh/agent.sock", home.trim_end_matches('/')));
    let mut out = vec![
        RemoteSocket::Http { listen },
        RemoteSocket::SshAgent { path: ssh },
    ];
    if let Some(g) = set("GNUPGHOME").filter(|p| p.starts_with('/')) {
        out.push(RemoteSocket::GpgAgent {
            path: format!("{}/S.gpg-agent", g.trim_end_matches('/')),
        });
    }
    out
}

/// `127.0.0.1:PORT` for `http://127.0.0.1:PORT[/]` (or `localhost`), else `None`.
pub fn loopback_listen(base_url: &str) -> Option<String> {
    let u = url::Url::parse(base_url).ok()?;
    if u.scheme() != "http" {
        return None;
    }
    let port = u.port_or_known_default()?;
    match u.host()? {
        url::Host::Ipv4(ip) if ip.is_loopback() => Some(format!("{ip}:{port}")),
        url::Host::Domain(d) if d.eq_ignore_ascii_case("localhost") => {
            Some(format!("127.0.0.1:{port}"))
        }
        _ => None,
    }
}

/// A request on the daemon's control socket (one JSON line; one answer line).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "verb", rename_all = "snake_case", deny_unknown_fields)]
pub enum ControlRequest {
    /// Attach a Docker container, or run `via` and speak the bridge over its stdio.
    Attach {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        container: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        via: Option<Vec<String>>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name: Option<String>,
        /// Scopes; empty: the label, then the config, then [`DEFAULT_SCOPES`].
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        allow: Vec<String>,
        /// Only these socket types (`hostproxy bridge --ssh --gpg`); empty: the defaults.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        sockets: Vec<RemoteSocket>,
        /// Declared host sockets to give it, by name (besides its `SOCKETS_LABEL`).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        declared: Vec<String>,
        /// The host socket its gpg-agent streams reach instead of the daemon's gpg-agent
        /// (`hostproxy bridge --gpg-agent-socket`; an absolute path).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        gpg_agent: Option<String>,
    },
    Detach {
        name: String,
    },
    List,
    /// The asks waiting for the user (SPEC.md 14); with `follow`, the connection stays
    /// open and the daemon writes the whole list again, one line, whenever it changes.
    Approvals {
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        follow: bool,
    },
    /// The user's answer to one ask: `always` also allows this scope for the rest of the
    /// container's life. `by`: who answered, for the audit log (`answered_by`).
    Answer {
        id: String,
        allow: bool,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        always: bool,
        by: String,
    },
}

/// The daemon's answer on the control socket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ControlResponse {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attachments: Vec<AttachmentInfo>,
    /// `approvals`: the asks waiting now, oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub asks: Vec<crate::approval::PendingAsk>,
    /// `list`: where the daemon's container tools are, or why there are none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tools: Option<String>,
}

/// Where an attachment's container end runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EngineKind {
    /// A Docker container, through the engine's API (local or remote).
    Docker,
    /// A command that runs the container end on its stdio (`--via`).
    Via,
}

/// How an attachment is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AttachState {
    /// Its container end is being started.
    Attaching,
    /// Its container end said READY.
    Serving,
    /// Its container end ended; started again after a pause.
    Retrying,
    /// Given up (or never attached): the notes say why.
    Failed,
}

impl AttachState {
    /// Its name, as `attach --list` prints it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Attaching => "attaching",
            Self::Serving => "serving",
            Self::Retrying => "retrying",
            Self::Failed => "failed",
        }
    }
}

impl EngineKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Docker => "docker",
            Self::Via => "via",
        }
    }
}

/// One attachment as `attach --list` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttachmentInfo {
    /// The name `detach` takes (the container's name, or `--name`).
    pub name: String,
    /// `container:<name>` or `via:<name>`.
    pub identity: String,
    pub engine: EngineKind,
    /// The container id (Docker) or the command (via).
    pub target: String,
    pub state: AttachState,
    pub scopes: Vec<String>,
    /// Times the exec was started again after it ended.
    pub restarts: u32,
    /// RFC 3339, when it was attached.
    pub since: String,
    /// What the user should know: scopes a label asked for and did not get, why the
    /// attachment was given up (state `failed`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_and_engines_are_the_lower_case_words_on_the_wire() {
        for s in [
            AttachState::Attaching,
            AttachState::Serving,
            AttachState::Retrying,
            AttachState::Failed,
        ] {
            assert_eq!(
                serde_json::to_string(&s).unwrap(),
                format!("\"{}\"", s.as_str())
            );
        }
        for e in [EngineKind::Docker, EngineKind::Via] {
            assert_eq!(
                serde_json::from_str::<EngineKind>(&format!("\"{}\"", e.as_str())).unwrap(),
                e
            );
        }
        assert!(serde_json::from_str::<AttachState>("\"gone\"").is_err());
    }

    #[test]
    fn defaults_follow_the_container_environment() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| v.to_string())
            }
        };
        assert_eq!(
            default_sockets(env(&[])),
            vec![
                RemoteSocket::Http {
                    listen: "127.0.0.1:18374".into()
                },
                RemoteSocket::SshAgent {
                    path: "/root/.ssh/agent.sock".into()
                }
            ]
        );
        let got = default_sockets(env(&[
            ("HOME", "/home/a/"),
            ("CLAWKER_HOST_PROXY", "http://localhost:9999"),
            ("GNUPGHOME", "/g"),
        ]));
        assert_eq!(
            got,
            vec![
                RemoteSocket::Http {
                    listen: "127.0.0.1:9999".into()
                },
                RemoteSocket::SshAgent {
                    path: "/home/a/.ssh/agent.sock".into()
                },
                RemoteSocket::GpgAgent {
                    path: "/g/S.gpg-agent".into()
                }
            ]
        );
        // A daemon on the network (the TCP lane) is not where the tunnel listens; a
        // relative SSH_AUTH_SOCK is not a path the container end may use.
        let got = default_sockets(env(&[
            ("CLAWKER_HOST_PROXY", "http://host.docker.internal:18374"),
            ("SSH_AUTH_SOCK", "rel/sock"),
        ]));
        assert_eq!(
            got[0],
            RemoteSocket::Http {
                listen: DEFAULT_HTTP_LISTEN.into()
            }
        );
        assert_eq!(
            got[1],
            RemoteSocket::SshAgent {
                path: "/root/.ssh/agent.sock".into()
            }
        );
    }

    #[test]
    fn remote_sockets_parse_strictly() {
        let v: Vec<RemoteSocket> = serde_json::from_str(
            r#"[{"type":"http","listen":"127.0.0.1:1"},{"path":"/a","type":"ssh-agent"}]"#,
        )
        .unwrap();
        assert_eq!(v.len(), 2);
        for bad in [
            r#"[{"type":"http"}]"#,
            r#"[{"type":"http","listen":"x","path":"/a"}]"#,
            r#"[{"type":"nope","path":"/a"}]"#,
        ] {
            assert!(
                serde_json::from_str::<Vec<RemoteSocket>>(bad).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn control_messages_round_trip() {
        let r = ControlRequest::Attach {
            container: Some("c1".into()),
            via: None,
            name: None,
            allow: vec!["open".into()],
            sockets: vec![],
            declared: vec![],
            gpg_agent: None,
        };
        let s = serde_json::to_string(&r).unwrap();
        assert_eq!(s, r#"{"verb":"attach","container":"c1","allow":["open"]}"#);
        assert_eq!(serde_json::from_str::<ControlRequest>(&s).unwrap(), r);
        assert!(serde_json::from_str::<ControlRequest>(r#"{"verb":"run","cmd":"sh"}"#).is_err());
    }
}
