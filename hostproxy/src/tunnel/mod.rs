//! The tunnel (SPEC.md 6.1, 6.2): the daemon attaches containers over their engine's exec
//! stream and serves its whole API, the SSH agent and gpg-agent on the streams the
//! container end opens, with the container's identity.
//!
//! [`Tunnels`] holds the attachments by identity and decides what each gets: the host's
//! grant narrowed by the container's own scopes label, the sockets it may have, and no
//! tokenless listener in a shared network namespace (SPEC.md 11). Each attachment runs one
//! task (`attachment.rs`): start the container end (an [`Engine`]), serve the bridge until
//! it ends, start it again while the target is alive (0.2 s doubling to 5 s; ten ends in a
//! minute give it up), and when it is over end its identity: its callback sessions are
//! deleted, its streams and their HTTP connections closed. `discover.rs` attaches labelled
//! containers by themselves on an engine the user owns. Requests to attach and detach come
//! only through the control socket ([`control`]), never over TCP.

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result, bail};
use bollard::Docker;
use clawker_protocol::tunnel::{AttachState, AttachmentInfo, EngineKind, RemoteSocket};
use tokio_util::sync::CancellationToken;

use crate::api::AppState;
use crate::audit::Decision;
use crate::auth::{Identity, Scope};
use crate::bridge::Declared;
use crate::config::AttachSettings;

mod attachment;
pub mod control;
mod discover;
pub mod embedded;
pub mod engine;
#[cfg(unix)]
mod hijack;
pub mod kept;
mod resolve;
pub mod tools;
mod via;

use resolve::Resolved;

use attachment::Attachment;

pub use engine::{DockerTarget, Engine};
pub use tools::Tools;
pub use via::ViaTarget;

/// What to attach (the control socket's request, resolved).
#[derive(Debug, Clone)]
pub enum Target {
    Container(String),
    /// Found by its attach label (discovery): attached only when the label is the
    /// container's own, not its image's.
    Labelled(String),
    Via {
        argv: Vec<String>,
        name: String,
    },
}

/// The host's agents, found once at start. The public keys are read (`gpg --export`) at
/// each attach of an identity with the `gpg` scope, so keys added later are handed on and
/// gpg is never run for containers that do not use it.
#[derive(Debug, Clone, Default)]
pub struct HostAgents {
    pub ssh: Option<PathBuf>,
    pub gpg: Option<PathBuf>,
}

impl HostAgents {
    /// `SSH_AUTH_SOCK` and gpg-agent's extra socket.
    pub async fn find() -> Self {
        Self {
            ssh: crate::platform::local::ssh_agent_socket(),
            gpg: crate::bridge::gpg_extra_socket().await,
        }
    }
}

struct Entry {
    info: AttachmentInfo,
    cancel: CancellationToken,
    /// Tells this attachment from a later one of the same name.
    generation: u64,
}

struct Inner {
    /// `[[bridge.sockets]]` of the config, by name.
    declared: HashMap<String, Arc<Declared>>,
    state: AppState,
    api: axum::Router,
    agents: HostAgents,
    settings: AttachSettings,
    tools: Tools,
    /// Where the tools were found at start, or why none were (`status`, `attach --list`).
    tools_found: std::sync::OnceLock<String>,
    /// Manual attachments and hand detaches kept for the next start.
    kept: Option<kept::KeptFile>,
    engine: Option<crate::docker::EngineClient>,
    entries: Mutex<HashMap<String, Entry>>,
    next_generation: std::sync::atomic::AtomicU64,
    shutdown: CancellationToken,
}

/// Every attachment of this daemon.
#[derive(Clone)]
pub struct Tunnels(Arc<Inner>);

impl std::fmt::Debug for Tunnels {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tunnels").finish_non_exhaustive()
    }
}

/// Parses scope names; every one must be valid.
fn parse_scopes(names: &[String]) -> Result<BTreeSet<Scope>> {
    names
        .iter()
        .map(|s| s.trim())
        .filter(|s| !s.is_empty())
        .map(|s| s.parse::<Scope>().map_err(anyhow::Error::msg))
        .collect()
}

/// A name safe to show and to use as an identity: what Docker allows in container names.
fn check_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if !ok {
        bail!("{name:?} is not a name (letters, digits, '-', '_' and '.', at most 128)");
    }
    Ok(())
}

impl Tunnels {
    pub fn new(
        state: AppState,
        agents: HostAgents,
        settings: AttachSettings,
        tools: Tools,
        kept: Option<std::path::PathBuf>,
        engine: Option<crate::docker::EngineClient>,
        shutdown: CancellationToken,
    ) -> Result<Self> {
        parse_scopes(&settings.scopes).context("attach.scopes")?;
        let mut declared = HashMap::new();
        for d in &state.settings.sockets {
            if crate::platform::docker_host::is_engine_socket(&d.path) && !d.allow_docker_socket {
                bail!(
                    "[[bridge.sockets]] {:?} is a container engine's socket ({}: Docker Engine's, Podman's, containerd's or BuildKit's), which is root on this host: refused; set allow_docker_socket = true (or allow_engine_socket = true) for it if you really mean to hand it to containers",
                    d.name,
                    d.path.display()
                );
            }
            let socket = Declared::new(d.path.clone(), d.owner == crate::config::SocketOwner::Root);
            // Checked now when it is there (a missing one is checked at each connection).
            if d.path.exists()
                && let Err(e) = socket.check()
            {
                bail!("[[bridge.sockets]] {:?}: {e}", d.name);
            }
            declared.insert(d.name.clone(), Arc::new(socket));
        }
        let api = crate::api::router(state.clone());
        Ok(Self(Arc::new(Inner {
            declared,
            state,
            api,
            agents,
            tools,
            tools_found: std::sync::OnceLock::new(),
            kept: kept.map(kept::KeptFile::load),
            settings,
            engine,
            entries: Mutex::new(HashMap::new()),
            next_generation: std::sync::atomic::AtomicU64::new(1),
            shutdown,
        })))
    }

    /// Notes where the tools were found at start (or why none were), for `status`.
    pub fn found_tools(&self, line: String) {
        let _ = self.0.tools_found.set(line);
    }

    /// What [`Tunnels::found_tools`] noted.
    pub fn tools_found(&self) -> Option<String> {
        self.0.tools_found.get().cloned()
    }

    fn entries(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        self.0.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// How many attachments are live (attaching, serving or retrying; not given up).
    pub fn live(&self) -> usize {
        self.entries()
            .values()
            .filter(|e| e.info.state != AttachState::Failed)
            .count()
    }

    /// Every attachment, by name.
    pub fn list(&self) -> Vec<AttachmentInfo> {
        let mut v: Vec<_> = self.entries().values().map(|e| e.info.clone()).collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    /// Ends an attachment, named by its identity (`container:web`) or, when only one has
    /// it, by its name (`web`); `Ok(false)` when there is none.
    pub fn detach(&self, name: &str) -> Result<bool, String> {
        let mut entries = self.entries();
        let key = if entries.contains_key(name) {
            name.to_string()
        } else {
            let matching: Vec<&String> = entries
                .iter()
                .filter(|(_, e)| e.info.name == name)
                .map(|(k, _)| k)
                .collect();
            match matching.as_slice() {
                [] => return Ok(false),
                [one] => (*one).clone(),
                many => {
                    let mut names: Vec<&str> = many.iter().map(|k| k.as_str()).collect();
                    names.sort();
                    return Err(format!(
                        "{name:?} names {}: detach one by its identity",
                        names.join(" and ")
                    ));
                }
            }
        };
        let name = key.as_str();
        Ok(match entries.get(name) {
            Some(e) if e.info.state == AttachState::Failed => {
                entries.remove(name);
                true
            }
            Some(e) => {
                e.cancel.cancel();
                true
            }
            None => false,
        })
    }

    fn engine(&self) -> Result<&crate::docker::EngineClient> {
        self.0
            .engine
            .as_ref()
            .context("no docker engine: attach a container with --via instead")
    }

    /// bollard's client of the engine, if there is one.
    fn docker(&self) -> Option<&Docker> {
        self.0.engine.as_ref().map(|e| &e.docker)
    }

    /// Attaches `target` with `allow` (empty: the label, then `attach.scopes`) and
    /// `sockets` (empty: the defaults). Attaching what is already attached answers the
    /// attachment that exists.
    pub async fn attach(&self, target: Target, opts: AttachOptions) -> Result<AttachmentInfo> {
        let AttachOptions {
            allow,
            sockets,
            declared,
            gpg_agent,
        } = opts;
        if gpg_agent.as_ref().is_some_and(|p| !p.is_absolute()) {
            bail!("the gpg-agent socket must be an absolute path");
        }
        let allow = parse_scopes(&allow)?;
        let Resolved {
            engine,
            kind,
            name,
            container,
            listen,
            label_scopes,
            shown,
            label_sockets,
            label_ask,
            sockets: mut base_sockets,
            mut notes,
        } = self.resolve(target, &sockets, &declared).await?;
        let identity_name = match kind {
            EngineKind::Docker => format!("container:{name}"),
            EngineKind::Via => format!("via:{name}"),
        };
        // What the user granted (at the control socket, else in the config); a scopes
        // label narrows it and never widens it (SPEC.md 6.2).
        let granted = if !allow.is_empty() {
            allow
        } else {
            parse_scopes(&self.0.settings.scopes)?
        };
        let scopes = match label_scopes {
            Some(wanted) => {
                let (kept, dropped) = crate::auth::narrow(&granted, &wanted);
                if !dropped.is_empty() {
                    let names: Vec<String> = dropped.iter().map(ToString::to_string).collect();
                    let note = format!(
                        "label {} asked for {} which the host does not grant (--allow or attach.scopes): left out",
                        clawker_protocol::tunnel::SCOPES_LABEL,
                        names.join(",")
                    );
                    tracing::warn!(container = %name, "{note}");
                    notes.push(note);
                }
                kept
            }
            None => granted,
        };
        let identity = Identity {
            name: identity_name,
            scopes: Some(scopes),
            instance: container.as_ref().map(|c| c.chars().take(12).collect()),
            container,
            ask: label_ask,
        };
        // Declared host sockets: each named in the config, and in the identity's scopes.
        let mut wanted: Vec<String> = declared;
        wanted.extend(label_sockets);
        wanted.sort();
        wanted.dedup();
        let mut reachable = HashMap::new();
        for n in &wanted {
            let d = self.0.declared.get(n).with_context(|| {
                format!("no socket {n:?} is declared in the daemon's config ([[bridge.sockets]] name = {n:?}, path = …)")
            })?;
            if !identity.may_socket(n) {
                bail!(
                    "{} may not use the socket {n:?}: give it the scope socket:{n}",
                    identity.name
                );
            }
            reachable.insert(n.clone(), d.clone());
            base_sockets.push(RemoteSocket::Socket {
                name: n.clone(),
                path: clawker_protocol::tunnel::declared_socket_path(n),
            });
        }
        let cancel = self.0.shutdown.child_token();
        let generation = self
            .0
            .next_generation
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let info = AttachmentInfo {
            name: name.clone(),
            identity: identity.name.clone(),
            engine: kind,
            target: shown,
            state: AttachState::Attaching,
            scopes: identity.scope_names(),
            restarts: 0,
            since: crate::util::now_rfc3339(),
            notes,
        };
        // Attachments are keyed by identity: `container:web` and `via:web` are two.
        let key = identity.name.clone();
        {
            let mut entries = self.entries();
            if let Some(e) = entries.get(&key)
                && e.info.state != AttachState::Failed
            {
                return Ok(e.info.clone());
            }
            entries.insert(
                key.clone(),
                Entry {
                    info: info.clone(),
                    cancel: cancel.clone(),
                    generation,
                },
            );
        }
        self.0.state.audit.record(Decision {
            token: &identity.name,
            route: "control:attach",
            action: "attach",
            allowed: true,
            ..Default::default()
        });
        let sockets = (!base_sockets.is_empty())
            .then(|| serde_json::to_string(&base_sockets))
            .transpose()?;
        let run = Attachment {
            declared: Arc::new(reachable),
            tunnels: self.clone(),
            engine,
            identity,
            listen,
            sockets,
            gpg_agent,
            cancel,
            name: key,
            generation,
        };
        tokio::spawn(run.run());
        Ok(info)
    }

    /// Why the container end last failed, for `attach --list` and `status` (one note, the
    /// latest; gone once it serves again).
    fn set_error(&self, name: &str, generation: u64, error: Option<&str>) {
        if let Some(e) = self.entries().get_mut(name)
            && e.generation == generation
        {
            e.info.notes.retain(|n| !n.starts_with(LAST_ERROR));
            if let Some(error) = error {
                e.info.notes.push(format!("{LAST_ERROR}{error}"));
            }
        }
    }

    fn set_state(&self, name: &str, generation: u64, state: AttachState, restart: bool) {
        if let Some(e) = self.entries().get_mut(name)
            && e.generation == generation
        {
            e.info.state = state;
            if restart {
                e.info.restarts += 1;
            }
        }
    }
}

/// What an attach asks for besides its target.
#[derive(Debug, Clone, Default)]
pub struct AttachOptions {
    /// Scopes; empty: the container's label narrows `attach.scopes`.
    pub allow: Vec<String>,
    /// The sockets its container end makes; empty: the defaults.
    pub sockets: Vec<RemoteSocket>,
    /// Declared host sockets to give it, by name.
    pub declared: Vec<String>,
    /// The host socket its gpg-agent streams reach, instead of the daemon's gpg-agent
    /// (`hostproxy bridge --gpg-agent-socket`, the user's own command).
    pub gpg_agent: Option<PathBuf>,
}

/// How the note of the latest failure starts.
const LAST_ERROR: &str = "last error: ";

/// The `http` socket's address among `sockets`.
fn listen_of(sockets: &[RemoteSocket]) -> Option<std::net::SocketAddr> {
    sockets.iter().find_map(|s| match s {
        RemoteSocket::Http { listen } => listen.parse().ok(),
        _ => None,
    })
}
