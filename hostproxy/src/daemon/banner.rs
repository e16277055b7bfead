//! What `serve` prints for the user: where it listens and what a container needs.

use std::net::{IpAddr, SocketAddr};

use crate::config::Settings;
use crate::state::StateDir;

/// `tools`: where the container tools are, in words (or why there are none).
pub fn print_banner(settings: &Settings, bound: &[IpAddr], state: &StateDir, tools: &str) {
    let addrs: Vec<String> = bound
        .iter()
        .map(|a| SocketAddr::new(*a, settings.port).to_string())
        .collect();
    let port = settings.port;
    let token_file = state.token_file();
    let (label_key, label_value) = &settings.attach.label;
    // The tunnel first: no token in the container, no network path (newcomer review F5).
    // The TCP lane's default shown is a token of the container's own: the user's token can
    // do everything for everyone (SECURITY.md).
    eprintln!(
        "hostproxy {} listening on {}\n\
         container tools: {tools}\n\n\
         The tunnel (any image, no network, no token):\n  \
         docker run $(hostproxy run-flags) --network none IMAGE …\n\
         attaches containers labelled {label_key}={label_value} as they start; `hostproxy attach --list` shows them.\n\n\
         The TCP lane (a token and a network path), for images with the tools baked in:\n  \
         hostproxy token issue --name NAME --container NAME --allow open --allow callback --allow 'git:*' --allow ssh > NAME.token\n  \
         docker run --name NAME --add-host host.docker.internal:host-gateway \\\n    \
         -e CLAWKER_HOST_PROXY=http://host.docker.internal:{port} \\\n    \
         -v $PWD/NAME.token:/run/secrets/clawker-token:ro -e CLAWKER_HOST_PROXY_TOKEN_FILE=/run/secrets/clawker-token \\\n    \
         -e BROWSER=host-open IMAGE …   (and in the image: git config --system credential.helper clawker){}\n\
         your token: {} (every scope: keep it out of containers)",
        env!("CARGO_PKG_VERSION"),
        addrs.join(", "),
        if settings.listen_docker_bridge || bound.iter().any(|a| !a.is_loopback()) {
            ""
        } else {
            "\n  (native Linux Docker: add --listen-docker-bridge so containers can reach this daemon)"
        },
        token_file.display(),
    );
}
