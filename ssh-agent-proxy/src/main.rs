//! `ssh-agent-proxy`: see the library crate.

fn main() -> std::process::ExitCode {
    ssh_agent_proxy::main()
}
