//! `Tunnels::resolve`: a target looked up, whatever its engine — the Docker container's
//! labels (its own, not its image's), network mode and environment, or a `--via` command —
//! and what it asks for (scopes label, asks, sockets), before any grant is decided.

use std::collections::BTreeSet;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use clawker_protocol::tunnel::{EngineKind, RemoteSocket, default_sockets};

use super::ViaTarget;
use super::engine::{self, DockerTarget, Engine};
use super::{Target, Tunnels, check_name, listen_of, parse_scopes};
use crate::auth::Scope;

/// A target looked up: what `attach` needs of it, whatever its engine.
pub(super) struct Resolved {
    pub engine: Arc<dyn Engine>,
    pub kind: EngineKind,
    /// The container's name, or the `--via` attachment's `--name`.
    pub name: String,
    /// The Docker container's id.
    pub container: Option<String>,
    /// The container end's HTTP listener on its loopback, if it has one.
    pub listen: Option<std::net::SocketAddr>,
    /// The container's own scopes label, which narrows what the host grants.
    pub label_scopes: Option<BTreeSet<Scope>>,
    /// The container id, or the command.
    pub shown: String,
    /// Declared sockets its label names.
    pub label_sockets: Vec<String>,
    /// Scope patterns its ask label adds (SPEC.md 14).
    pub label_ask: Vec<clawker_protocol::approval::AskPattern>,
    /// The sockets its container end makes (declared ones are added by `attach`).
    pub sockets: Vec<RemoteSocket>,
    /// What the user should know about it.
    pub notes: Vec<String>,
}

/// The target's own part of a [`Resolved`], as the match over engines finds it.
struct Looked {
    engine: Arc<dyn Engine>,
    kind: EngineKind,
    name: String,
    container: Option<String>,
    label_scopes: Option<BTreeSet<Scope>>,
    shown: String,
}

impl Tunnels {
    /// Looks `target` up; `sockets` (empty: the defaults) and `declared` as `attach` got them.
    pub(super) async fn resolve(
        &self,
        target: Target,
        sockets: &[RemoteSocket],
        declared: &[String],
    ) -> Result<Resolved> {
        let mut notes: Vec<String> = Vec::new();
        let mut label_sockets: Vec<String> = Vec::new();
        let mut label_ask = Vec::new();
        let mut base_sockets: Vec<RemoteSocket> = sockets.to_vec();
        let looked = match target {
            Target::Container(ref c) | Target::Labelled(ref c) => {
                let t = DockerTarget::inspect(self.engine()?, c, self.0.tools.clone()).await?;
                let (k, v) = &self.0.settings.label;
                if matches!(target, Target::Labelled(_)) && t.labels.get(k) != Some(v) {
                    tracing::info!(
                        container = %t.name,
                        "not attached: its attach label {k}={v} comes from its image, and images choose nothing (hostproxy attach --container attaches it)"
                    );
                    bail!("the attach label of {} comes from its image", t.name);
                }
                if matches!(target, Target::Labelled(_))
                    && self
                        .0
                        .kept
                        .as_ref()
                        .is_some_and(|k| k.is_detached(&t.id, &t.started_at))
                {
                    tracing::info!(container = %t.name, "not attached: detached by hand; attached again when it starts again");
                    bail!("{} was detached by hand", t.name);
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
                // Asks the container's own label adds; it cannot remove any (SPEC.md 14).
                if let Some(l) = t.labels.get(clawker_protocol::approval::ASK_LABEL) {
                    label_ask = clawker_protocol::approval::parse_patterns(l)
                        .map_err(anyhow::Error::msg)
                        .with_context(|| {
                            format!("label {}", clawker_protocol::approval::ASK_LABEL)
                        })?;
                }
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
                Looked {
                    engine: Arc::new(t),
                    kind: EngineKind::Docker,
                    name,
                    container: Some(id.clone()),
                    label_scopes,
                    shown: id,
                }
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
                Looked {
                    engine: Arc::new(ViaTarget { argv }),
                    kind: EngineKind::Via,
                    name,
                    container: None,
                    label_scopes: None,
                    shown,
                }
            }
        };
        Ok(Resolved {
            engine: looked.engine,
            kind: looked.kind,
            name: looked.name,
            container: looked.container,
            listen: listen_of(&base_sockets),
            label_scopes: looked.label_scopes,
            shown: looked.shown,
            label_sockets,
            label_ask,
            sockets: base_sockets,
            notes,
        })
    }
}
