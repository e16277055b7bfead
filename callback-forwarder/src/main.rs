//! `callback-forwarder`: see the library crate.

fn main() -> std::process::ExitCode {
    callback_forwarder::main()
}
