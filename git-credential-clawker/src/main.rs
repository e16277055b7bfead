//! `git-credential-clawker`: see the library crate.

fn main() -> std::process::ExitCode {
    git_credential_clawker::main()
}
