//! `mock-proxy`: see the library crate.

fn main() -> std::process::ExitCode {
    mock_proxy::cli::main()
}
