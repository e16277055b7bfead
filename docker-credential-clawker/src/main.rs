//! `docker-credential-clawker`: see the library crate.

fn main() -> std::process::ExitCode {
    docker_credential_clawker::main()
}
