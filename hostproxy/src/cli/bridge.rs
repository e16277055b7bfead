//! `hostproxy bridge`: its arguments, turned into `bridge::Options`.

use std::path::PathBuf;

use clap::Args;
use hostproxy::bridge::Options;

#[derive(Debug, Clone, Args)]
pub struct BridgeArgs {
    /// Container id or name.
    #[arg(long)]
    pub container: String,
    /// Bridge the host's SSH agent (SSH_AUTH_SOCK).
    #[arg(long)]
    pub ssh: bool,
    /// Bridge the host's gpg-agent (its restricted extra socket) and public keys.
    #[arg(long)]
    pub gpg: bool,
    /// SSH agent socket path inside the container (`~` is the container user's home).
    #[arg(long, default_value = "~/.ssh/agent.sock")]
    pub ssh_socket: String,
    /// gpg-agent socket path inside the container; its directory receives the public keyring.
    #[arg(long, default_value = "~/.gnupg/S.gpg-agent")]
    pub gpg_socket: String,
    /// The container-side program.
    #[arg(long, default_value = "clawker-socket-server")]
    pub server: String,
    /// Host gpg-agent socket to connect gpg streams to. Default: gpgconf's agent-extra-socket
    /// (restricted for remote use); name another only if you know why.
    #[arg(long)]
    pub gpg_agent_socket: Option<PathBuf>,
    /// User to run the container-side program as.
    #[arg(long)]
    pub user: Option<String>,
}

impl From<BridgeArgs> for Options {
    fn from(a: BridgeArgs) -> Self {
        Options {
            container: a.container,
            ssh: a.ssh,
            gpg: a.gpg,
            ssh_socket: a.ssh_socket,
            gpg_socket: a.gpg_socket,
            server: a.server,
            gpg_agent_socket: a.gpg_agent_socket,
            user: a.user,
        }
    }
}
