//! `hostproxy`: the command line (`cli/`) over the daemon library.

mod cli;

fn main() -> std::process::ExitCode {
    cli::main()
}
