//! `hostproxy`: see the library crate.

fn main() -> std::process::ExitCode {
    hostproxy::cli::main()
}
