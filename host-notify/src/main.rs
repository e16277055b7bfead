//! `host-notify`: see the library crate.

fn main() -> std::process::ExitCode {
    host_notify::main()
}
