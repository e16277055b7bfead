//! Discovery (SPEC.md 6.1, 11): labelled containers attached by themselves, at start and
//! on Docker's `start` events — only on an engine the user owns (`attach.discover`), and
//! only by the container's own attach label (`Target::Labelled`).

use std::collections::HashMap;
use std::time::Duration;

use bollard::query_parameters::{EventsOptionsBuilder, ListContainersOptionsBuilder};
use futures_util::StreamExt;

use super::{Target, Tunnels};

impl Tunnels {
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
                let why = format!("{e:#}");
                tracing::warn!(container = %id, error = %why, "cannot attach the container");
                // Left alone on purpose (by hand, or by its image's label), or already gone
                // (a short-lived container): nothing to show.
                let quiet = [
                    "detached by hand",
                    "comes from its image",
                    "is not running",
                    "no container",
                ];
                if !quiet.iter().any(|q| why.contains(q)) {
                    me.note_refused(&id, why).await;
                }
            }
        });
    }
}
