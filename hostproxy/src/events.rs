//! One subscription to the engine's container events, shared by every consumer: discovery
//! (attach labelled containers as they start), token revocation (a bound container died)
//! and the idle-exit watcher (count again). It reconnects in one place (0.2 s, doubling to
//! 5 s), says in the log when the engine cannot be reached and when it is back, and after
//! every (re)connection — and to a consumer that fell behind — sends [`Event::Resync`]:
//! events may have been missed, look again.

use std::collections::HashMap;
use std::time::Duration;

use bollard::Docker;
use bollard::query_parameters::EventsOptionsBuilder;
use futures_util::{Stream, StreamExt};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

/// What a consumer hears.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A container event: `action` is Docker's (`start`, `die`, `destroy`, …).
    Container {
        action: String,
        id: String,
        /// Its name and labels, as the event's attributes carry them.
        attributes: HashMap<String, String>,
    },
    /// Events may have been missed (the stream was (re)opened, or this consumer lagged):
    /// list what there is again.
    Resync,
}

impl Event {
    /// The container's `name` attribute.
    pub fn name(&self) -> Option<&str> {
        match self {
            Event::Container { attributes, .. } => attributes.get("name").map(String::as_str),
            Event::Resync => None,
        }
    }
}

/// The container actions any consumer needs.
const ACTIONS: [&str; 7] = [
    "start", "die", "stop", "kill", "destroy", "pause", "unpause",
];

/// How long a new subscription is polled before the consumers are told to list again.
const SETTLE: Duration = Duration::from_millis(250);

/// Events buffered per consumer before it lags (and gets a `Resync` instead).
const BUFFER: usize = 256;

/// The shared subscription. Clone it to hand it on; [`ContainerEvents::subscribe`] for each
/// consumer.
#[derive(Debug, Clone)]
pub struct ContainerEvents {
    tx: broadcast::Sender<Event>,
}

/// One consumer's end.
#[derive(Debug)]
pub struct Subscription {
    rx: broadcast::Receiver<Event>,
}

impl Subscription {
    /// The next event; `None` once the daemon stops. A consumer that fell behind gets a
    /// `Resync` in place of what it missed.
    pub async fn next(&mut self) -> Option<Event> {
        match self.rx.recv().await {
            Ok(e) => Some(e),
            Err(broadcast::error::RecvError::Lagged(_)) => Some(Event::Resync),
            Err(broadcast::error::RecvError::Closed) => None,
        }
    }
}

impl ContainerEvents {
    /// A hub with nothing feeding it yet (see [`ContainerEvents::run`]).
    pub fn new() -> Self {
        Self {
            tx: broadcast::channel(BUFFER).0,
        }
    }

    /// A consumer's end: it first hears `Resync` when the feed (re)connects.
    pub fn subscribe(&self) -> Subscription {
        Subscription {
            rx: self.tx.subscribe(),
        }
    }

    /// Feeds the hub from `docker` until `stop`.
    pub async fn run(self, docker: Docker, stop: CancellationToken) {
        let filters = HashMap::from([
            ("type".to_string(), vec!["container".to_string()]),
            (
                "event".to_string(),
                ACTIONS.iter().map(|a| a.to_string()).collect(),
            ),
        ]);
        let open = || {
            let docker = docker.clone();
            let filters = filters.clone();
            async move {
                docker.ping().await.map_err(|e| e.to_string())?;
                Ok(docker
                    .events(Some(EventsOptionsBuilder::new().filters(&filters).build()))
                    .map(|r| r.map_err(|e| e.to_string()).map(from_docker))
                    .boxed())
            }
        };
        tokio::select! {
            () = self.feed(open) => {}
            () = stop.cancelled() => {}
        }
    }

    /// The reconnect loop, over any source of event streams (`open`): a test drives it with
    /// scripted streams.
    pub async fn feed<S, F, Fut>(&self, mut open: F)
    where
        S: Stream<Item = Result<Option<Event>, String>> + Unpin,
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<S, String>>,
    {
        let mut backoff = Duration::from_millis(200);
        let mut down_said = false;
        loop {
            match open().await {
                Ok(mut events) => {
                    if down_said {
                        tracing::info!("docker's event stream is back");
                        down_said = false;
                    }
                    backoff = Duration::from_millis(200);
                    // Everyone lists what there is now (a daemon that just started attaches
                    // at once). The engine's stream is only requested when first polled, so a
                    // container that starts before it is subscribed would be in neither the
                    // list nor the stream: once the stream has had a moment (its first event,
                    // or SETTLE), everyone lists again. Seen twice is harmless: attaching what
                    // is attached answers the attachment there is.
                    let _ = self.tx.send(Event::Resync);
                    let first = tokio::time::timeout(SETTLE, events.next()).await;
                    let _ = self.tx.send(Event::Resync);
                    // An item that came in the meantime goes first; a stream that already
                    // ended is subscribed again below.
                    let first = match first {
                        Ok(Some(item)) => vec![item],
                        Ok(None) => vec![Err("the stream ended at once".to_string())],
                        Err(_) => Vec::new(),
                    };
                    let rest = futures_util::stream::iter(first).chain(events);
                    futures_util::pin_mut!(rest);
                    while let Some(item) = rest.next().await {
                        match item {
                            Ok(Some(e)) => {
                                let _ = self.tx.send(e);
                            }
                            Ok(None) => {}
                            Err(e) => {
                                tracing::warn!(error = %clawker_protocol::text::escape_controls(&e), "docker's event stream failed; subscribing again");
                                break;
                            }
                        }
                    }
                }
                Err(e) if !down_said => {
                    tracing::warn!(error = %clawker_protocol::text::escape_controls(&e), "docker is not reachable: attaching labelled containers, revoking the tokens of stopped ones and the idle-exit count wait until it is");
                    down_said = true;
                }
                Err(_) => {}
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    }
}

impl Default for ContainerEvents {
    fn default() -> Self {
        Self::new()
    }
}

/// Docker's event as ours (`None` when it names no container).
fn from_docker(ev: bollard::models::EventMessage) -> Option<Event> {
    let actor = ev.actor?;
    Some(Event::Container {
        action: ev.action.unwrap_or_default(),
        id: actor.id?,
        attributes: actor.attributes.unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn started(id: &str) -> Result<Option<Event>, String> {
        Ok(Some(Event::Container {
            action: "start".into(),
            id: id.into(),
            attributes: HashMap::new(),
        }))
    }

    #[tokio::test(start_paused = true)]
    async fn every_consumer_hears_each_event_and_a_resync_after_each_reconnection() {
        let hub = ContainerEvents::new();
        let (mut a, mut b) = (hub.subscribe(), hub.subscribe());
        let mut attempt = 0;
        let feeding = {
            let hub = hub.clone();
            tokio::spawn(async move {
                hub.feed(move || {
                    attempt += 1;
                    let n = attempt;
                    async move {
                        match n {
                            // Down at first; then a stream that breaks after one event; then
                            // one that stays open.
                            1 => Err("connection refused".to_string()),
                            2 => Ok(futures_util::stream::iter(vec![
                                started("c1"),
                                Err("reset".into()),
                            ])
                            .chain(futures_util::stream::pending())
                            .boxed()),
                            _ => Ok(futures_util::stream::iter(vec![started("c2")])
                                .chain(futures_util::stream::pending())
                                .boxed()),
                        }
                    }
                })
                .await;
            })
        };
        let want = |id: &str| Event::Container {
            action: "start".into(),
            id: id.into(),
            attributes: HashMap::new(),
        };
        // Each (re)subscription: a Resync at once and one once the stream has settled.
        for sub in [&mut a, &mut b] {
            assert_eq!(sub.next().await, Some(Event::Resync));
            assert_eq!(sub.next().await, Some(Event::Resync));
            assert_eq!(sub.next().await, Some(want("c1")));
            assert_eq!(sub.next().await, Some(Event::Resync));
            assert_eq!(sub.next().await, Some(Event::Resync));
            assert_eq!(sub.next().await, Some(want("c2")));
        }
        feeding.abort();
    }

    #[tokio::test]
    async fn a_consumer_that_falls_behind_is_told_to_look_again() {
        let hub = ContainerEvents::new();
        let mut slow = hub.subscribe();
        for i in 0..(BUFFER + 10) {
            let _ = hub.tx.send(Event::Container {
                action: "die".into(),
                id: format!("c{i}"),
                attributes: HashMap::new(),
            });
        }
        assert_eq!(slow.next().await, Some(Event::Resync));
        drop(hub);
    }
}
