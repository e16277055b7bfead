//! `host-open`: see the library crate.

fn main() -> std::process::ExitCode {
    host_open::main()
}
