//! One attachment's life: start the container end, serve it, start it again while the
//! target lives (with a backoff, given up after too many ends), and end its identity.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use tokio_util::sync::CancellationToken;

use super::{Engine, Tunnels};
use crate::audit::Decision;
use crate::auth::{Identity, TunnelPeer};
use crate::bridge::{Declared, Targets, audited_filter, connect_local, serve_bridge};
use crate::server::ServeLimits;
use clawker_protocol::tunnel::AttachState;

/// One attachment's life.
pub(super) struct Attachment {
    /// The declared sockets this identity may reach.
    pub(super) declared: Arc<HashMap<String, Arc<Declared>>>,
    pub(super) tunnels: Tunnels,
    pub(super) engine: Arc<dyn Engine>,
    pub(super) identity: Identity,
    /// The container end's HTTP listener, for the `Host` gate (`None`: the container's
    /// defaults are unknown here, as with `--via`; any port on the loopback names).
    pub(super) listen: Option<std::net::SocketAddr>,
    pub(super) sockets: Option<String>,
    /// Where its gpg-agent streams go, when not to the daemon's gpg-agent.
    pub(super) gpg_agent: Option<std::path::PathBuf>,
    pub(super) cancel: CancellationToken,
    pub(super) name: String,
    pub(super) generation: u64,
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
    pub(super) async fn run(self) {
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
                // The container stopped under it (`docker stop`): its end went with it, an
                // ending, not a failure to warn of (newcomer review F6e).
                Err(e) if self.cancel.is_cancelled() || !self.engine.alive().await => {
                    tracing::info!(identity = %self.identity.name, error = %format!("{e:#}"), "the container end ended with its container");
                    break;
                }
                Err(e) => {
                    tracing::warn!(identity = %self.identity.name, error = %format!("{e:#}"), "the tunnel failed");
                    self.tunnels.set_error(
                        &self.name,
                        self.generation,
                        Some(&clawker_protocol::text::escape_bytes(
                            format!("{e:#}").as_bytes(),
                        )),
                    );
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
                .set_state(&self.name, self.generation, AttachState::Retrying, true);
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
        if self.tunnels.0.shutdown.is_cancelled() {
            // The daemon stops, not the container: its sessions stay in sessions.json for
            // the next start, which attaches it again (a login in flight completes).
            tracing::info!(identity = %self.identity.name, "the daemon stops: the attachment's callback sessions are kept");
            return;
        }
        let removed = self
            .tunnels
            .0
            .state
            .sessions
            .remove_owned_by(&self.identity.owner_key());
        self.tunnels
            .0
            .state
            .approvals
            .forget(&self.identity.owner_key());
        self.tunnels
            .0
            .state
            .egress
            .forget(&self.identity.owner_key());
        {
            let mut entries = self.tunnels.entries();
            match (entries.get_mut(&self.name), &given_up) {
                (Some(e), Some(reason)) if e.generation == self.generation => {
                    e.info.state = AttachState::Failed;
                    e.info.notes.push(reason.clone());
                }
                (Some(e), None) if e.generation == self.generation => {
                    entries.remove(&self.name);
                }
                _ => {}
            }
        }
        self.tunnels.0.state.audit.record(Decision {
            token: &self.identity.name,
            route: "control:detach",
            action: "detach",
            allowed: true,
            reason: given_up.or_else(|| {
                (removed > 0).then(|| format!("{removed} callback session(s) deleted"))
            }),
            ..Default::default()
        });
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
            gpg: self
                .gpg_agent
                .clone()
                .or_else(|| inner.agents.gpg.clone())
                .filter(|_| may_gpg),
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
            ask: Some(stream_ask(
                inner.state.approvals.clone(),
                self.identity.clone(),
            )),
        };
        // PUBKEY always goes first: a container end that serves gpg-agent waits for it, and
        // one that does not ignores it (empty without the gpg scope or host keys).
        let pubkey = if may_gpg && (self.gpg_agent.is_some() || inner.agents.gpg.is_some()) {
            crate::bridge::gpg_export().await
        } else {
            Vec::new()
        };
        let (tunnels, name, generation) =
            (self.tunnels.clone(), self.name.clone(), self.generation);
        let _guard = exec.guard;
        serve_bridge(exec.output, exec.input, Some(pubkey), targets, move || {
            ready.store(true, std::sync::atomic::Ordering::SeqCst);
            tunnels.set_state(&name, generation, AttachState::Serving, false);
            tunnels.set_error(&name, generation, None);
        })
        .await
    }
}

/// The user's answer for one of the attachment's streams (SPEC.md 14), as the bridge asks.
fn stream_ask(
    approvals: crate::approval::Approvals,
    identity: Identity,
) -> crate::bridge::StreamAsk {
    Arc::new(move |u| {
        let (approvals, identity) = (approvals.clone(), identity.clone());
        Box::pin(async move {
            match approvals.check(&identity, u).await {
                Ok(()) => true,
                Err(why) => {
                    tracing::info!(identity = %identity.name, "stream refused: {why}");
                    false
                }
            }
        })
    })
}
