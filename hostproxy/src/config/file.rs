//! `hostproxy.toml` as it is written: every table and key, all optional, unknown keys
//! refused. [`super::Settings`] resolves it against the defaults.

use super::*;

/// `hostproxy.toml`. Every key is optional; see README.md for the documented defaults.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub port: Option<u16>,
    pub listen: Option<Vec<IpAddr>>,
    pub listen_docker_bridge: Option<bool>,
    /// URL launcher command, split on whitespace; the URL is appended as one argument.
    pub browser: Option<String>,
    pub no_auth: Option<bool>,
    /// Extra names accepted in the `Host` header.
    pub allowed_hosts: Option<Vec<String>>,
    pub max_connections: Option<usize>,
    #[serde(default)]
    pub git: GitFile,
    #[serde(default)]
    pub ssh: SshFile,
    #[serde(default)]
    pub callback: CallbackFile,
    #[serde(default)]
    pub open: OpenFile,
    #[serde(default)]
    pub notify: NotifyFile,
    #[serde(default)]
    pub watcher: WatcherFile,
    #[serde(default)]
    pub attach: AttachFile,
    #[serde(default)]
    pub docker: DockerFile,
    #[serde(default)]
    pub approval: ApprovalFile,
    /// `[[egress]]`: API upstreams reached through the daemon (SPEC.md 13).
    #[serde(default)]
    pub egress: Vec<EgressFile>,
    /// `[bridge]`: `[[bridge.sockets]]`, the host sockets a container may be given by name
    /// (SPEC.md 10).
    #[serde(default)]
    pub bridge: BridgeFile,
    /// `[[sockets]]`: the same as `[[bridge.sockets]]` (the name this shipped with first).
    #[serde(default)]
    pub sockets: Vec<DeclaredSocket>,
}

/// `[bridge]`.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BridgeFile {
    #[serde(default)]
    pub sockets: Vec<DeclaredSocket>,
}

/// One `[[bridge.sockets]]` entry: a host unix socket the user lets attached containers
/// use, by `name`, with the scope `socket:NAME`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeclaredSocket {
    pub name: String,
    /// Absolute, or `~/…` (the user's home).
    pub path: PathBuf,
    /// An engine's socket (Docker's, Podman's, containerd's, BuildKit's) is root on the
    /// host: refused unless this is true (`allow_engine_socket` is the same key).
    #[serde(default, alias = "allow_docker", alias = "allow_engine_socket")]
    pub allow_docker_socket: bool,
    /// Who must own the socket: `user` (the daemon's user, the default) or `root` (a
    /// system socket). Anyone else's is refused (SPEC.md 11).
    #[serde(default)]
    pub owner: SocketOwner,
}

/// `owner` of a declared socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SocketOwner {
    #[default]
    User,
    Root,
}

/// `[docker]`: registry credentials (SPEC.md 10).
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DockerFile {
    /// Let containers store credentials in the host's store (default false: `get` only).
    pub allow_store: Option<bool>,
    /// Let containers erase credentials from the host's store (default false).
    pub allow_erase: Option<bool>,
}

/// `[attach]`: the tunnel (SPEC.md 6.1).
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttachFile {
    /// Attach labelled containers at start and on Docker's events (default true).
    pub enabled: Option<bool>,
    /// `key=value` a container must carry to be attached (default
    /// `dev.clawker.hostproxy=attach`).
    pub label: Option<String>,
    /// Scopes of an attached container without `--allow` or a scopes label.
    pub scopes: Option<Vec<String>>,
    /// Where the container tools are found for images that lack them.
    pub tools_dir: Option<PathBuf>,
    /// Which engines labelled containers are attached from by themselves: `local` (the
    /// default: a local socket the user or root owns), `all`, `none` (SPEC.md 11).
    pub discover: Option<String>,
    /// Attach containers whose network namespace is shared (`--network host`,
    /// `container:…`, pods): then with their unix sockets only, never the tokenless HTTP
    /// listener (default false: refused).
    pub allow_shared_network: Option<bool>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GitFile {
    pub program: Option<PathBuf>,
    pub allowed_protocols: Option<Vec<String>>,
    /// `None` (or absent): any host.
    pub allowed_hosts: Option<Vec<String>>,
    pub allow_store: Option<bool>,
    pub allow_erase: Option<bool>,
    pub timeout: Option<String>,
    pub max_concurrent: Option<usize>,
    /// A private CA (PEM) for git hosts reached through the daemon (SPEC.md 13).
    pub ca_file: Option<PathBuf>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SshFile {
    /// Extra agent message numbers to forward, on top of 11 and 13.
    pub extra_messages: Option<Vec<u8>>,
    /// Extra extension names to forward, on top of `session-bind@openssh.com` and `query`.
    pub extra_extensions: Option<Vec<String>>,
    /// SSHSIG namespaces a container may sign for (default `["git"]`).
    pub sign_namespaces: Option<Vec<String>>,
    /// Allow signing SSH user-authentication requests (default true).
    pub sign_userauth: Option<bool>,
    /// Allow signing any data at all (default false).
    pub sign_any: Option<bool>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CallbackFile {
    pub max_sessions: Option<usize>,
    /// Admit callback registrations without `state` (default false). Such a session holds
    /// its port alone and captures the first request to its path from anyone.
    pub allow_stateless: Option<bool>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpenFile {
    pub rate_per_minute: Option<u32>,
    /// Hosts opened even though the URL policy would refuse them (private addresses,
    /// single-label names).
    pub allowed_hosts: Option<Vec<String>>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotifyFile {
    /// The notifier command, split on whitespace; the title and body are appended as two
    /// arguments (no shell).
    pub command: Option<String>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WatcherFile {
    pub grace_period: Option<String>,
    pub poll_interval: Option<String>,
    /// `key=value` labels a container must carry to be counted.
    pub labels: Option<Vec<String>>,
}

impl FileConfig {
    /// Loads `path`; a missing file is an empty config only when `required` is false.
    pub fn load(path: &Path, required: bool) -> Result<Self, ConfigError> {
        match std::fs::read_to_string(path) {
            Ok(text) => toml::from_str(&text).map_err(|source| ConfigError::Parse {
                path: path.to_owned(),
                source,
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => Ok(Self::default()),
            Err(source) => Err(ConfigError::Read {
                path: path.to_owned(),
                source,
            }),
        }
    }
}
