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
    eprintln!(
        "hostproxy {} listening on {}\n\
         token: {} (print it with `hostproxy token`)\n\n\
         Give a container these flags:\n  \
         --add-host host.docker.internal:host-gateway \\\n  \
         -e CLAWKER_HOST_PROXY=http://host.docker.internal:{port} \\\n  \
         -v {}:/run/secrets/clawker-token:ro -e CLAWKER_HOST_PROXY_TOKEN_FILE=/run/secrets/clawker-token \\\n  \
         -e BROWSER=host-open\n\
         and in the image: git config --system credential.helper clawker{}",
        env!("CARGO_PKG_VERSION"),
        addrs.join(", "),
        token_file.display(),
        token_file.display(),
        if settings.listen_docker_bridge || bound.iter().any(|a| !a.is_loopback()) {
            ""
        } else {
            "\n(native Linux Docker: add --listen-docker-bridge so containers can reach this daemon)"
        }
    );
}
