//! The tunnel (SPEC.md 6.1, 6.2): the daemon attaches containers over their engine's exec
//! stream and serves its whole API, the SSH agent and gpg-agent on the streams the
//! container end opens, with the container's identity.
//!
//! [`Tunnels`] holds the attachments by name. Each runs one task: start the container end
//! (an [`Engine`]), serve the bridge until it ends, start it again while the target is
//! alive (0.2 s, doubling to 5 s; back to 0.2 s once it had been serving), and when it is
//! over — the container stopped, or `detach` — end its identity: its callback sessions are
//! deleted, its streams and their HTTP connections closed. [`Tunnels::discover`] attaches
//! every running container with the attach label, at start and on Docker's `start`
//! events. Requests to attach and detach come only through the control socket
//! ([`control`]), never over TCP.

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use bollard::Docker;
use bollard::query_parameters::{EventsOptionsBuilder, ListContainersOptionsBuilder};
use clawker_protocol::tunnel::{AttachmentInfo, RemoteSocket, default_sockets};
use futures_util::StreamExt;
use tokio_util::sync::CancellationToken;

use crate::api::AppState;
use crate::auth::{Identity, Scope, TunnelPeer};
use crate::bridge::{Declared, Targets, audited_filter, connect_local, serve_bridge};
use crate::config::AttachSettings;
use crate::server::ServeLimits;

pub mod control;
pub mod engine;
pub mod tools;

pub use engine::{DockerTarget, Engine, ViaTarget};
pub use tools::Tools;

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
    docker: Option<Docker>,
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
        docker: Option<Docker>,
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
            tools: Tools {
                dir: settings.tools_dir.clone(),
            },
            settings,
            docker,
            entries: Mutex::new(HashMap::new()),
            next_generation: std::sync::atomic::AtomicU64::new(1),
            shutdown,
        })))
    }

    fn entries(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        self.0.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// How many attachments are live (attaching, serving or retrying; not given up).
    pub fn live(&self) -> usize {
        self.entries()
            .values()
            .filter(|e| e.info.state != "failed")
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
            Some(e) if e.info.state == "failed" => {
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

    fn docker(&self) -> Result<&Docker> {
        self.0
            .docker
            .as_ref()
            .context("no docker engine: attach a container with --via instead")
    }

    /// Attaches `target` with `allow` (empty: the label, then `attach.scopes`) and
    /// `sockets` (empty: the defaults). Attaching what is already attached answers the
    /// attachment that exists.
    pub async fn attach(
        &self,
        target: Target,
        allow: &[String],
        sockets: &[RemoteSocket],
        declared: &[String],
    ) -> Result<AttachmentInfo> {
        let allow = parse_scopes(allow)?;
        let mut notes: Vec<String> = Vec::new();
        let mut label_sockets: Vec<String> = Vec::new();
        let mut base_sockets: Vec<RemoteSocket> = sockets.to_vec();
        let (engine, name, identity_name, container, listen, default_scopes, engine_name, shown): (
            Arc<dyn Engine>,
            _,
            _,
            _,
            _,
            _,
            _,
            _,
        ) = match target {
            Target::Container(ref c) | Target::Labelled(ref c) => {
                let t =
                    DockerTarget::inspect(self.docker()?.clone(), c, self.0.tools.clone()).await?;
                let (k, v) = &self.0.settings.label;
                if matches!(target, Target::Labelled(_)) && t.labels.get(k) != Some(v) {
                    tracing::info!(
                        container = %t.name,
                        "not attached: its attach label {k}={v} comes from its image, and images choose nothing (hostproxy attach --container attaches it)"
                    );
                    bail!("the attach label of {} comes from its image", t.name);
                }
                let env = |k: &str| t.env_var(k);
                let shared = engine::shares_network(&t.network_mode);
                if shared && !self.0.settings.allow_shared_network {
                    bail!(
                        "container {} shares a network namespace ({}): its loopback is not its own, so the tunnel's tokenless listener would serve whoever else is in it (every local user, with --network host); refused: set attach.allow_shared_network = true in the config to attach it with its unix sockets only",
                        t.name,
                        t.network_mode
                    );
                }
                let label_scopes = t
                    .labels
                    .get(clawker_protocol::tunnel::SCOPES_LABEL)
                    .map(|l| parse_scopes(&l.split(',').map(str::to_string).collect::<Vec<_>>()))
                    .transpose()
                    .with_context(|| format!("label {}", clawker_protocol::tunnel::SCOPES_LABEL))?;
                let (name, id) = (t.name.clone(), t.id.clone());
                check_name(&name)?;
                label_sockets = t
                    .labels
                    .get(clawker_protocol::tunnel::SOCKETS_LABEL)
                    .map(|l| {
                        l.split(',')
                            .map(|s| s.trim().to_string())
                            .filter(|s| !s.is_empty())
                            .collect()
                    })
                    .unwrap_or_default();
                base_sockets = if sockets.is_empty() {
                    default_sockets(env)
                } else {
                    sockets.to_vec()
                };
                if shared {
                    // No tokenless listener where others share the loopback (SPEC.md 11).
                    base_sockets.retain(|s| !matches!(s, RemoteSocket::Http { .. }));
                    notes.push(format!(
                        "no HTTP listener: the container shares a network namespace ({})",
                        t.network_mode
                    ));
                }
                let listen = listen_of(&base_sockets);
                (
                    Arc::new(t) as Arc<dyn Engine>,
                    name.clone(),
                    format!("container:{name}"),
                    Some(id.clone()),
                    listen,
                    label_scopes,
                    "docker",
                    id,
                )
            }
            Target::Via { argv, name } => {
                check_name(&name)?;
                if argv.is_empty() {
                    bail!("--via names no command");
                }
                let shown = argv.join(" ");
                // Declared sockets travel in CLAWKER_REMOTE_SOCKETS, which replaces the
                // container end's defaults: name the defaults too (its HOME unknown here,
                // so /root's, as SPEC.md 6.1 says), so the HTTP and agent sockets stay.
                if sockets.is_empty() && !declared.is_empty() {
                    base_sockets = default_sockets(|_| None);
                }
                (
                    Arc::new(ViaTarget { argv }) as Arc<dyn Engine>,
                    name.clone(),
                    format!("via:{name}"),
                    None,
                    listen_of(&base_sockets),
                    None,
                    "via",
                    shown,
                )
            }
        };
        // What the user granted (at the control socket, else in the config); a scopes
        // label narrows it and never widens it (SPEC.md 6.2).
        let granted = if !allow.is_empty() {
            allow
        } else {
            parse_scopes(&self.0.settings.scopes)?
        };
        let scopes = match default_scopes {
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
        };
        // Declared host sockets: each named in the config, and in the identity's scopes.
        let mut wanted: Vec<String> = declared.to_vec();
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
            engine: engine_name.into(),
            target: shown,
            state: "attaching".into(),
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
                && e.info.state != "failed"
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
        self.0.state.audit.record(
            &identity.name,
            "control:attach",
            "attach",
            None,
            None,
            true,
            None,
        );
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
            cancel,
            name: key,
            generation,
        };
        tokio::spawn(run.run());
        Ok(info)
    }

    fn set_state(&self, name: &str, generation: u64, state: &str, restart: bool) {
        if let Some(e) = self.entries().get_mut(name)
            && e.generation == generation
        {
            e.info.state = state.into();
            if restart {
                e.info.restarts += 1;
            }
        }
    }

    /// Attaches every running container with the attach label, now and whenever one
    /// starts, until the daemon stops. Docker's event stream is subscribed again after an
    /// error (0.2 s, doubling to 30 s), and the running ones listed again each time.
    pub async fn discover(self) {
        if !self.0.settings.enabled {
            return;
        }
        let Some(docker) = self.0.docker.clone() else {
            return;
        };
        use crate::config::Discover;
        use crate::platform::docker_host;
        let engine = docker_host::find(&docker_host::Env::from_process()).host;
        match self.0.settings.discover {
            Discover::None => return,
            Discover::Local if !docker_host::is_local_owned(&engine) => {
                tracing::info!(
                    engine = %engine,
                    "not attaching labelled containers by themselves: the engine is not a local socket of yours or root's, and anyone who can start a container there can label it (attach.discover = \"all\" to do it anyway; hostproxy attach --container always works)"
                );
                return;
            }
            Discover::Local | Discover::All => {}
        }
        let (k, v) = &self.0.settings.label;
        let label = format!("{k}={v}");
        let mut backoff = Duration::from_millis(200);
        loop {
            let filters = HashMap::from([
                ("type".to_string(), vec!["container".to_string()]),
                ("event".to_string(), vec!["start".to_string()]),
                ("label".to_string(), vec![label.clone()]),
            ]);
            let mut events =
                docker.events(Some(EventsOptionsBuilder::new().filters(&filters).build()));
            let listed = docker
                .list_containers(Some(
                    ListContainersOptionsBuilder::new()
                        .filters(&HashMap::from([("label".to_string(), vec![label.clone()])]))
                        .build(),
                ))
                .await;
            match listed {
                Ok(list) => {
                    backoff = Duration::from_millis(200);
                    for c in list {
                        if let Some(id) = c.id {
                            self.attach_in_background(id);
                        }
                    }
                }
                Err(e) => tracing::debug!(error = %e, "cannot list containers to attach"),
            }
            loop {
                tokio::select! {
                    () = self.0.shutdown.cancelled() => return,
                    ev = events.next() => match ev {
                        Some(Ok(ev)) => {
                            if let Some(id) = ev.actor.and_then(|a| a.id) {
                                self.attach_in_background(id);
                            }
                        }
                        Some(Err(e)) => {
                            tracing::debug!(error = %e, "docker's event stream failed");
                            break;
                        }
                        None => break,
                    },
                }
            }
            tokio::select! {
                () = self.0.shutdown.cancelled() => return,
                () = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(Duration::from_secs(30));
        }
    }

    fn attach_in_background(&self, id: String) {
        let me = self.clone();
        tokio::spawn(async move {
            if let Err(e) = me.attach(Target::Labelled(id.clone()), &[], &[], &[]).await {
                tracing::warn!(container = %id, error = %format!("{e:#}"), "cannot attach the container");
            }
        });
    }
}

/// The `http` socket's address among `sockets`.
fn listen_of(sockets: &[RemoteSocket]) -> Option<std::net::SocketAddr> {
    sockets.iter().find_map(|s| match s {
        RemoteSocket::Http { listen } => listen.parse().ok(),
        _ => None,
    })
}

/// One attachment's life.
struct Attachment {
    /// The declared sockets this identity may reach.
    declared: Arc<HashMap<String, Arc<Declared>>>,
    tunnels: Tunnels,
    engine: Arc<dyn Engine>,
    identity: Identity,
    /// The container end's HTTP listener, for the `Host` gate (`None`: the container's
    /// defaults are unknown here, as with `--via`; any port on the loopback names).
    listen: Option<std::net::SocketAddr>,
    sockets: Option<String>,
    cancel: CancellationToken,
    name: String,
    generation: u64,
}

/// A container end that ends this many times within [`GIVE_UP_WINDOW`] is given up,
/// whether or not it said READY first (SPEC.md 11): no tools for its architecture, a
/// `--via` command that cannot reach its target, or a container end that misbehaves on
/// purpose.
const GIVE_UP: usize = 10;
const GIVE_UP_WINDOW: Duration = Duration::from_secs(60);
/// A run at least this long was a real one: the next restart is quick again.
const SERVED_LONG: Duration = Duration::from_secs(10);

impl Attachment {
    async fn run(self) {
        let mut backoff = Duration::from_millis(200);
        let mut ends: std::collections::VecDeque<Instant> = Default::default();
        let mut given_up = None;
        loop {
            let ready = Arc::new(std::sync::atomic::AtomicBool::new(false));
            let started = Instant::now();
            let result = tokio::select! {
                () = self.cancel.cancelled() => break,
                r = self.serve_once(ready.clone()) => r,
            };
            let served = ready.load(std::sync::atomic::Ordering::SeqCst);
            match &result {
                Ok(()) => {
                    tracing::info!(identity = %self.identity.name, secs = started.elapsed().as_secs(), "the container end ended")
                }
                Err(e) => {
                    tracing::warn!(identity = %self.identity.name, error = %format!("{e:#}"), "the tunnel failed")
                }
            }
            if self.cancel.is_cancelled() || !self.engine.alive().await {
                break;
            }
            let now = Instant::now();
            if served && started.elapsed() >= SERVED_LONG {
                backoff = Duration::from_millis(200);
            }
            ends.push_back(now);
            while ends
                .front()
                .is_some_and(|t| now.duration_since(*t) > GIVE_UP_WINDOW)
            {
                ends.pop_front();
            }
            if ends.len() >= GIVE_UP {
                let last = match &result {
                    Ok(()) => "it exited".to_string(),
                    Err(e) => clawker_protocol::text::escape_bytes(format!("{e:#}").as_bytes()),
                };
                let reason = format!(
                    "given up: the container end ended {GIVE_UP} times within {}s (last: {last}); attach it again once fixed",
                    GIVE_UP_WINDOW.as_secs()
                );
                tracing::warn!(identity = %self.identity.name, "{reason}");
                given_up = Some(reason);
                break;
            }
            self.tunnels
                .set_state(&self.name, self.generation, "retrying", true);
            tokio::select! {
                () = self.cancel.cancelled() => break,
                () = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
        self.end(given_up);
    }

    /// Its identity ends: sessions deleted, listeners closed, the entry gone — or, when it
    /// was given up, kept as `failed` with the reason, for `attach --list` (until it is
    /// detached or attached again).
    fn end(&self, given_up: Option<String>) {
        self.cancel.cancel();
        let removed = self
            .tunnels
            .0
            .state
            .sessions
            .remove_owned_by(&self.identity.owner_key());
        {
            let mut entries = self.tunnels.entries();
            match (entries.get_mut(&self.name), &given_up) {
                (Some(e), Some(reason)) if e.generation == self.generation => {
                    e.info.state = "failed".into();
                    e.info.notes.push(reason.clone());
                }
                (Some(e), None) if e.generation == self.generation => {
                    entries.remove(&self.name);
                }
                _ => {}
            }
        }
        self.tunnels.0.state.audit.record(
            &self.identity.name,
            "control:detach",
            "detach",
            None,
            None,
            true,
            given_up.or_else(|| {
                (removed > 0).then(|| format!("{removed} callback session(s) deleted"))
            }),
        );
        tracing::info!(identity = %self.identity.name, "detached");
    }

    async fn serve_once(&self, ready: Arc<std::sync::atomic::AtomicBool>) -> Result<()> {
        let inner = &self.tunnels.0;
        let exec = self.engine.start(self.sockets.as_deref()).await?;
        let peer = TunnelPeer {
            identity: self.identity.clone(),
            listen: self.listen,
        };
        let app = inner.api.clone().layer(axum::Extension(peer));
        let (stop, limits) = (self.cancel.clone(), ServeLimits::default());
        let http: crate::bridge::HttpServer = Arc::new(move |io| {
            let (app, stop, limits) = (app.clone(), stop.clone(), limits.clone());
            tokio::spawn(async move { crate::server::serve_one(io, app, &limits, stop).await });
        });
        let may_gpg = self.identity.may_gpg();
        let targets = Targets {
            ssh: inner.agents.ssh.clone().filter(|_| self.identity.may_ssh()),
            gpg: inner.agents.gpg.clone().filter(|_| may_gpg),
            filter: audited_filter(
                inner.state.settings.agent_policy.clone(),
                self.identity.agent_grant(),
                Arc::new(inner.state.audit.clone()),
                self.identity.name.clone(),
                self.identity
                    .container
                    .clone()
                    .unwrap_or_else(|| self.name.clone()),
            ),
            connect: connect_local(),
            http: Some(http),
            declared: self.declared.clone(),
        };
        // PUBKEY always goes first: a container end that serves gpg-agent waits for it, and
        // one that does not ignores it (empty without the gpg scope or host keys).
        let pubkey = if may_gpg && inner.agents.gpg.is_some() {
            crate::bridge::gpg_export().await
        } else {
            Vec::new()
        };
        let (tunnels, name, generation) =
            (self.tunnels.clone(), self.name.clone(), self.generation);
        let _guard = exec.guard;
        serve_bridge(exec.output, exec.input, Some(pubkey), targets, move || {
            ready.store(true, std::sync::atomic::Ordering::SeqCst);
            tunnels.set_state(&name, generation, "serving", false);
        })
        .await
    }
}
