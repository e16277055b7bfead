//! Daemon settings: the TOML file format, its defaults, and the resolved [`Settings`].
//!
//! Precedence is flags, then environment, then the file, then the defaults below; the CLI
//! layer (`cli.rs`) applies the first two on top of what [`FileConfig::load`] returns.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clawker_protocol::agent::AgentPolicy;
use clawker_protocol::host::HostName;
use serde::Deserialize;
use thiserror::Error;

mod approval;
mod egress;
mod file;
pub use approval::{ApprovalFile, ApprovalSettings, MAX_ASK_TIMEOUT, Remember};
pub use egress::{EgressDecl, EgressFile, SecretHeader, SecretSource};
pub use file::*;

#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid config file {path}")]
    Parse {
        path: PathBuf,
        #[source]
        source: toml::de::Error,
    },
    #[error("invalid value for {key}: {message}")]
    Value { key: &'static str, message: String },
}

/// The default config path: `$XDG_CONFIG_HOME/clawker/hostproxy.toml`, else (Windows)
/// `%APPDATA%\clawker\hostproxy.toml`, else `~/.config/clawker/hostproxy.toml`.
pub fn default_config_path() -> Option<PathBuf> {
    Some(
        crate::platform::dirs::config_base()?
            .join("clawker")
            .join("hostproxy.toml"),
    )
}

/// Parses `30s`, `2m`, `1h30m` (humantime) or a bare number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    if let Ok(secs) = s.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    humantime::parse_duration(s).map_err(|e| format!("{s:?} is not a duration like 30s or 2m: {e}"))
}

/// Git credential policy.
#[derive(Debug, Clone)]
pub struct GitPolicy {
    pub program: PathBuf,
    pub allowed_protocols: Vec<String>,
    pub allowed_hosts: Option<Vec<String>>,
    pub allow_store: bool,
    pub allow_erase: bool,
    pub timeout: Duration,
    pub max_concurrent: usize,
    /// `[git] ca_file`: trusted besides the host's roots for git egress.
    pub ca_file: Option<PathBuf>,
}

impl Default for GitPolicy {
    fn default() -> Self {
        Self {
            program: PathBuf::from("git"),
            allowed_protocols: vec!["https".into()],
            allowed_hosts: None,
            allow_store: false,
            allow_erase: false,
            timeout: Duration::from_secs(30),
            max_concurrent: 4,
            ca_file: None,
        }
    }
}

/// Settings of the idle-exit container watcher.
#[derive(Debug, Clone)]
pub struct WatcherSettings {
    pub grace_period: Duration,
    pub poll_interval: Duration,
    pub labels: Vec<(String, String)>,
}

impl Default for WatcherSettings {
    fn default() -> Self {
        Self {
            grace_period: Duration::from_secs(60),
            poll_interval: Duration::from_secs(30),
            labels: vec![
                ("dev.clawker.managed".into(), "true".into()),
                ("dev.clawker.purpose".into(), "agent".into()),
            ],
        }
    }
}

/// The tunnel's settings.
#[derive(Debug, Clone)]
pub struct AttachSettings {
    pub enabled: bool,
    pub label: (String, String),
    pub scopes: Vec<String>,
    pub tools_dir: Option<PathBuf>,
    pub discover: Discover,
    pub allow_shared_network: bool,
}

/// `attach.discover`: which engines labelled containers are attached from by themselves.
/// Anyone who can start a container on an engine can label it: only an engine the user
/// owns is trusted with that (SPEC.md 11). `hostproxy attach --container` always works.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Discover {
    /// A local socket (unix socket or named pipe) owned by the user or root.
    #[default]
    Local,
    All,
    None,
}

impl std::str::FromStr for Discover {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "local" => Ok(Self::Local),
            "all" => Ok(Self::All),
            "none" => Ok(Self::None),
            _ => Err(format!("{s:?} is not local, all or none")),
        }
    }
}

impl Default for AttachSettings {
    fn default() -> Self {
        use clawker_protocol::tunnel;
        Self {
            enabled: true,
            label: (
                tunnel::ATTACH_LABEL.into(),
                tunnel::ATTACH_LABEL_VALUE.into(),
            ),
            scopes: tunnel::DEFAULT_SCOPES
                .iter()
                .map(|s| s.to_string())
                .collect(),
            tools_dir: None,
            discover: Discover::Local,
            allow_shared_network: false,
        }
    }
}

/// Everything the daemon runs with, resolved.
#[derive(Debug, Clone)]
pub struct Settings {
    pub port: u16,
    pub listen: Vec<IpAddr>,
    pub listen_docker_bridge: bool,
    /// Launcher argv prefix; `None` means the platform default (`xdg-open` / `open`).
    pub browser: Option<Vec<String>>,
    /// Notifier argv prefix; `None` means the platform default (`notify-send` / `osascript`).
    pub notifier: Option<Vec<String>>,
    pub no_auth: bool,
    pub extra_hosts: Vec<HostName>,
    pub max_connections: usize,
    pub header_read_timeout: Duration,
    pub git: GitPolicy,
    pub agent_policy: AgentPolicy,
    pub max_callback_sessions: usize,
    /// `callback.allow_stateless`.
    pub callback_allow_stateless: bool,
    pub open_rate_per_minute: u32,
    /// Exceptions to the URL policy, lowercase.
    pub open_allowed_hosts: Vec<String>,
    pub watcher: Option<WatcherSettings>,
    pub attach: AttachSettings,
    /// `[[bridge.sockets]]` and `[[sockets]]`, checked (names, absolute paths, `~` expanded).
    pub sockets: Vec<DeclaredSocket>,
    /// `docker.allow_store`, `docker.allow_erase`.
    pub docker_allow_store: bool,
    pub docker_allow_erase: bool,
    /// `[approval]` (SPEC.md 14).
    pub approval: ApprovalSettings,
    /// `[[egress]]`, checked (SPEC.md 13).
    pub egress: Vec<EgressDecl>,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            port: clawker_protocol::DEFAULT_PORT,
            listen: vec![
                IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
                IpAddr::V6(std::net::Ipv6Addr::LOCALHOST),
            ],
            listen_docker_bridge: false,
            browser: None,
            notifier: None,
            no_auth: false,
            extra_hosts: Vec::new(),
            max_connections: 512,
            header_read_timeout: Duration::from_secs(10),
            git: GitPolicy::default(),
            agent_policy: AgentPolicy::default(),
            max_callback_sessions: 16,
            callback_allow_stateless: false,
            open_rate_per_minute: 10,
            open_allowed_hosts: Vec::new(),
            watcher: None,
            attach: AttachSettings::default(),
            docker_allow_store: false,
            docker_allow_erase: false,
            sockets: Vec::new(),
            approval: ApprovalSettings::default(),
            egress: Vec::new(),
        }
    }
}

/// `key=value` with a non-empty key.
pub fn parse_label(s: &str) -> Option<(String, String)> {
    let (k, v) = s.split_once('=')?;
    (!k.trim().is_empty()).then(|| (k.trim().to_string(), v.trim().to_string()))
}

/// Splits a launcher command line on whitespace (no shell, no quoting).
pub fn split_command(cmd: &str) -> Option<Vec<String>> {
    let argv: Vec<String> = cmd.split_whitespace().map(str::to_owned).collect();
    (!argv.is_empty()).then_some(argv)
}

impl Settings {
    /// Makes every relative path of the settings absolute from `base` (the directory the
    /// daemon was started in), before the daemon leaves it for its state directory
    /// (SPEC.md 11): the tools directory, and a program named by a relative path with a
    /// separator (`./my-browser`; a bare `xdg-open` is still looked up on `PATH`).
    pub fn resolve_paths(&mut self, base: &Path) {
        fn program(p: &mut PathBuf, base: &Path) {
            if p.is_relative() && p.components().count() > 1 {
                *p = base.join(&*p);
            }
        }
        fn argv(a: &mut Option<Vec<String>>, base: &Path) {
            if let Some(first) = a.as_mut().and_then(|a| a.first_mut()) {
                let mut p = PathBuf::from(&*first);
                program(&mut p, base);
                *first = p.display().to_string();
            }
        }
        if let Some(d) = self.attach.tools_dir.as_mut().filter(|d| d.is_relative()) {
            *d = base.join(&*d);
        }
        program(&mut self.git.program, base);
        if let Some(p) = self.git.ca_file.as_mut().filter(|p| p.is_relative()) {
            *p = base.join(&*p);
        }
        argv(&mut self.browser, base);
        argv(&mut self.notifier, base);
        argv(&mut self.approval.approver, base);
        for e in &mut self.egress {
            if let Some(p) = e.ca_file.as_mut().filter(|p| p.is_relative()) {
                *p = base.join(&*p);
            }
            if let SecretSource::Command { argv: a, .. } = &mut e.secret {
                let mut v = Some(std::mem::take(a));
                argv(&mut v, base);
                *a = v.unwrap_or_default();
            }
        }
    }

    /// Applies a config file on top of the defaults.
    pub fn from_file(file: &FileConfig) -> Result<Self, ConfigError> {
        let mut s = Self::default();
        if let Some(p) = file.port {
            s.port = p;
        }
        if let Some(l) = &file.listen {
            s.listen = l.clone();
        }
        if let Some(b) = file.listen_docker_bridge {
            s.listen_docker_bridge = b;
        }
        if let Some(b) = &file.browser {
            s.browser = split_command(b);
        }
        if let Some(n) = &file.notify.command {
            s.notifier = split_command(n);
        }
        if let Some(n) = file.no_auth {
            s.no_auth = n;
        }
        if let Some(hosts) = &file.allowed_hosts {
            for h in hosts {
                s.extra_hosts
                    .push(
                        HostName::parse_configured(h).map_err(|_| ConfigError::Value {
                            key: "allowed_hosts",
                            message: format!("{h:?} is not a host name or address"),
                        })?,
                    );
            }
        }
        if let Some(m) = file.max_connections {
            s.max_connections = m.max(1);
        }
        for d in file.bridge.sockets.iter().chain(&file.sockets) {
            let mut d = d.clone();
            if let Ok(rest) = d.path.strip_prefix("~") {
                let Some(home) = crate::platform::dirs::home() else {
                    return Err(ConfigError::Value {
                        key: "bridge.sockets.path",
                        message: format!("{}: HOME is not set", d.path.display()),
                    });
                };
                d.path = home.join(rest);
            }
            if !clawker_protocol::tunnel::is_socket_name(&d.name) {
                return Err(ConfigError::Value {
                    key: "bridge.sockets.name",
                    message: format!(
                        "{:?} is not a name (letters, digits, '-', '_', '.')",
                        d.name
                    ),
                });
            }
            if !d.path.is_absolute() {
                return Err(ConfigError::Value {
                    key: "bridge.sockets.path",
                    message: format!("{} is not absolute (nor ~/…)", d.path.display()),
                });
            }
            if s.sockets.iter().any(|o: &DeclaredSocket| o.name == d.name) {
                return Err(ConfigError::Value {
                    key: "bridge.sockets.name",
                    message: format!("{:?} is declared twice", d.name),
                });
            }
            s.sockets.push(d);
        }
        s.docker_allow_store = file.docker.allow_store.unwrap_or(false);
        s.docker_allow_erase = file.docker.allow_erase.unwrap_or(false);
        s.approval = ApprovalSettings::from_file(&file.approval)?;
        s.egress = egress::egress(&file.egress)?;
        let a = &file.attach;
        if let Some(e) = a.enabled {
            s.attach.enabled = e;
        }
        if let Some(l) = &a.label {
            s.attach.label = parse_label(l).ok_or_else(|| ConfigError::Value {
                key: "attach.label",
                message: format!("{l:?} is not key=value"),
            })?;
        }
        if let Some(sc) = &a.scopes {
            s.attach.scopes = sc.clone();
        }
        if let Some(d) = &a.tools_dir {
            s.attach.tools_dir = Some(d.clone());
        }
        if let Some(d) = &a.discover {
            s.attach.discover = d.parse().map_err(|message| ConfigError::Value {
                key: "attach.discover",
                message,
            })?;
        }
        if let Some(b) = a.allow_shared_network {
            s.attach.allow_shared_network = b;
        }
        let g = &file.git;
        if let Some(p) = &g.program {
            s.git.program = p.clone();
        }
        if let Some(p) = &g.allowed_protocols {
            s.git.allowed_protocols = p.clone();
        }
        if let Some(h) = &g.allowed_hosts {
            s.git.allowed_hosts = Some(h.iter().map(|h| h.to_ascii_lowercase()).collect());
        }
        if let Some(b) = g.allow_store {
            s.git.allow_store = b;
        }
        if let Some(b) = g.allow_erase {
            s.git.allow_erase = b;
        }
        if let Some(t) = &g.timeout {
            s.git.timeout = parse_duration(t).map_err(|message| ConfigError::Value {
                key: "git.timeout",
                message,
            })?;
        }
        if let Some(m) = g.max_concurrent {
            s.git.max_concurrent = m.max(1);
        }
        if let Some(p) = &g.ca_file {
            s.git.ca_file = Some(p.clone());
        }
        if let Some(extra) = &file.ssh.extra_messages {
            s.agent_policy
                .allowed_messages
                .extend(extra.iter().copied());
        }
        if let Some(extra) = &file.ssh.extra_extensions {
            s.agent_policy
                .allowed_extensions
                .extend(extra.iter().cloned());
        }
        if let Some(sign) = &mut s.agent_policy.sign {
            if let Some(ns) = &file.ssh.sign_namespaces {
                sign.namespaces = ns.iter().cloned().collect();
            }
            if let Some(u) = file.ssh.sign_userauth {
                sign.userauth = u;
            }
        }
        if file.ssh.sign_any == Some(true) {
            s.agent_policy.sign = None;
        }
        if let Some(h) = &file.open.allowed_hosts {
            s.open_allowed_hosts = h.iter().map(|h| h.to_ascii_lowercase()).collect();
        }
        if let Some(m) = file.callback.max_sessions {
            s.max_callback_sessions = m.max(1);
        }
        if let Some(b) = file.callback.allow_stateless {
            s.callback_allow_stateless = b;
        }
        if let Some(r) = file.open.rate_per_minute {
            s.open_rate_per_minute = r;
        }
        Ok(s)
    }
}

/// Resolves the watcher section of the file, for `--idle-exit`.
pub fn watcher_from_file(w: &WatcherFile) -> Result<WatcherSettings, ConfigError> {
    let mut out = WatcherSettings::default();
    if let Some(g) = &w.grace_period {
        out.grace_period = parse_duration(g).map_err(|message| ConfigError::Value {
            key: "watcher.grace_period",
            message,
        })?;
    }
    if let Some(p) = &w.poll_interval {
        out.poll_interval = parse_duration(p).map_err(|message| ConfigError::Value {
            key: "watcher.poll_interval",
            message,
        })?;
    }
    if let Some(labels) = &w.labels {
        out.labels = labels
            .iter()
            .map(|l| {
                l.split_once('=')
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .ok_or_else(|| ConfigError::Value {
                        key: "watcher.labels",
                        message: format!("{l:?} is not key=value"),
                    })
            })
            .collect::<Result<_, _>>()?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
