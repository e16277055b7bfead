//! What `serve` prints for the user: where it listens and what a container needs.

use std::net::{IpAddr, SocketAddr};

use crate::config::Settings;
use crate::state::StateDir;

pub fn print_banner(settings: &Settings, bound: &[IpAddr], state: &StateDir) {
    let addrs: Vec<String> = bound
        .iter()
        .map(|a| SocketAddr::new(*a, settings.port).to_string())
        .collect();
    let port = settings.port;
    let token_file = state.token_file();
    // The default shown is a token of the container's own: the user's token can do
    // everything for everyone (SECURITY.md).
    eprintln!(
        "hostproxy {} listening on {}\n\
         your token: {} (every scope: keep it out of containers)\n\n\
         Give each container a token of its own, revoked when it stops:\n  \
         hostproxy token issue --name NAME --container NAME --allow open --allow callback --allow 'git:*' --allow ssh > NAME.token\n\
         and these flags:\n  \
         --name NAME --add-host host.docker.internal:host-gateway \\\n  \
         -e CLAWKER_HOST_PROXY=http://host.docker.internal:{port} \\\n  \
         -v $PWD/NAME.token:/run/secrets/clawker-token:ro -e CLAWKER_HOST_PROXY_TOKEN_FILE=/run/secrets/clawker-token \\\n  \
         -e BROWSER=host-open\n\
         and in the image: git config --system credential.helper clawker{}",
        env!("CARGO_PKG_VERSION"),
        addrs.join(", "),
        token_file.display(),
        if settings.listen_docker_bridge || bound.iter().any(|a| !a.is_loopback()) {
            ""
        } else {
            "\n(native Linux Docker: add --listen-docker-bridge so containers can reach this daemon)"
        }
    );
}
