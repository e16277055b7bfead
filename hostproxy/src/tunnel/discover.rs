//! Discovery (SPEC.md 6.1, 11): labelled containers attached by themselves, at start and
//! on Docker's `start` events — only on an engine the user owns (`attach.discover`), and
//! only by the container's own attach label (`Target::Labelled`).

use std::collections::HashMap;

use bollard::query_parameters::ListContainersOptionsBuilder;

use super::{AttachOptions, Target, Tunnels};
use crate::events::Event;

impl Tunnels {
    /// Attaches every running container with the attach label, at each (re)subscription of
    /// the daemon's container events (`events`, which reconnects) and whenever one starts,
    /// until the daemon stops.
    pub async fn discover(self, mut events: crate::events::Subscription) {
        if !self.0.settings.enabled {
            return;
        }
        let Some(engine) = self.0.engine.clone() else {
            return;
        };
        let docker = engine.docker;
        use crate::config::Discover;
        use crate::platform::docker_host;
        // The address the daemon's client was made to, not one found again now.
        let engine = engine.host;
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
        loop {
            let event = tokio::select! {
                () = self.0.shutdown.cancelled() => return,
                e = events.next() => e,
            };
            match event {
                None => return,
                // (Re)subscribed, or behind: every running labelled container.
                Some(Event::Resync) => {
                    let listed = docker
                        .list_containers(Some(
                            ListContainersOptionsBuilder::new()
                                .filters(&HashMap::from([(
                                    "label".to_string(),
                                    vec![label.clone()],
                                )]))
                                .build(),
                        ))
                        .await;
                    match listed {
                        Ok(list) => {
                            for id in list.into_iter().filter_map(|c| c.id) {
                                self.attach_in_background(id);
                            }
                        }
                        Err(e) => tracing::debug!(error = %e, "cannot list containers to attach"),
                    }
                }
                // The event carries the container's labels as attributes.
                Some(Event::Container {
                    action,
                    id,
                    attributes,
                }) if action == "start" && attributes.get(k) == Some(v) => {
                    self.attach_in_background(id);
                }
                Some(Event::Container { .. }) => {}
            }
        }
    }

    fn attach_in_background(&self, id: String) {
        let me = self.clone();
        tokio::spawn(async move {
            if let Err(e) = me
                .attach(Target::Labelled(id.clone()), AttachOptions::default())
                .await
            {
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
