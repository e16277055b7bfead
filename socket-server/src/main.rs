//! `clawker-socket-server`: see the library crate.

fn main() -> std::process::ExitCode {
    clawker_socket_server::main()
}
