//! `git-credential-clawker get|store|erase`: git's credential helper protocol on
//! stdin/stdout, answered by the host's git through the hostproxy daemon.
//!
//! Exit codes are API for git: 0 with no output means "nothing here, try the next helper"
//! (not found, or refused by the host's policy); 1 means the daemon could not be used.

use std::io::{Read, Write};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::Parser;
use clawker_client::ClientError;
use clawker_client::blocking::Conn;
use clawker_protocol::api::{
    GitCredentialAction, GitCredentialRequest, GitCredentialResponse, routes,
};
use clawker_protocol::credential::{self, CredentialFields};

#[derive(Debug, Parser)]
#[command(
    name = "git-credential-clawker",
    version,
    about = "git credential helper that asks the host's git through hostproxy",
    after_help = "Example:\n  git config --global credential.helper clawker\n  printf 'protocol=https\\nhost=github.com\\n\\n' | git-credential-clawker get"
)]
pub struct Args {
    /// get, store or erase (other actions are ignored, as git expects).
    pub action: String,
}

/// Largest credential description read from git.
const MAX_INPUT: u64 = 64 * 1024;

/// Parses git's input into the request to send; `None` when there is nothing to ask.
///
/// Every attribute of git's credential protocol crosses (SPEC.md 4.3); `url=` is split as
/// git splits it. A `get` sends no secret the host does not need to look one up.
pub fn build_request(
    action: GitCredentialAction,
    input: &str,
) -> Result<Option<GitCredentialRequest>> {
    let fields = credential::decode(input)
        .and_then(CredentialFields::from_pairs)
        .context("invalid credential input from git")?;
    let mut request = GitCredentialRequest::from_fields(action, fields);
    if action == GitCredentialAction::Get
        && let Some(r) = &mut request
    {
        r.password = None;
        r.oauth_refresh_token = None;
        r.credential = None;
    }
    Ok(request)
}

/// Formats a `get` reply for git: the capabilities the host's git answered with first (git
/// acts on `authtype`, `credential`, `state[]` only after them), then every attribute.
pub fn format_reply(reply: &GitCredentialResponse) -> Result<String> {
    let mut fields = reply.fields();
    // git already knows where it asked; a helper answers with what it found.
    fields.protocol = None;
    fields.host = None;
    let text = fields
        .encode()
        .context("the daemon sent a credential with a newline or nul")?;
    // `encode` ends with the blank terminator line; helpers print just the lines.
    Ok(text.strip_suffix('\n').unwrap_or(&text).to_string())
}

pub fn run(args: Args) -> Result<ExitCode> {
    let Ok(action) = args.action.parse::<GitCredentialAction>() else {
        // git may grow new actions; a helper ignores what it does not know.
        return Ok(ExitCode::SUCCESS);
    };
    let mut input = String::new();
    std::io::stdin()
        .take(MAX_INPUT)
        .read_to_string(&mut input)
        .context("cannot read the credential description from stdin")?;
    let Some(request) = build_request(action, &input)? else {
        return Ok(ExitCode::SUCCESS);
    };
    // One request: a blocking connection starts faster than an async runtime and client.
    match Conn::from_env()?.post::<_, GitCredentialResponse>(routes::GIT_CREDENTIAL, &request) {
        Ok(reply) => {
            if action == GitCredentialAction::Get {
                let text = format_reply(&reply)?;
                let mut out = std::io::stdout().lock();
                if let Err(e) = out.write_all(text.as_bytes()).and_then(|()| out.flush())
                    && e.kind() != std::io::ErrorKind::BrokenPipe
                {
                    bail!("cannot write to git: {e}");
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        // Not found, or refused by the host (its policy, or the user's answer): let git go
        // on to its next helper; a refused `get` says why, on stderr where git shows it. A
        // refused `store` or `erase` is the host's default policy (git.allow_store), not
        // something to act on after every clone and push: quiet.
        Err(ClientError::Status { status: 404, .. }) => Ok(ExitCode::SUCCESS),
        Err(ClientError::Status {
            status: 403,
            message,
        }) => {
            if action == GitCredentialAction::Get {
                eprintln!("git-credential-clawker: refused on the host: {message}");
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => Err(e.into()),
    }
}

pub fn main() -> ExitCode {
    let args = Args::parse();
    clawker_client::exit_code("git-credential-clawker", run(args))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clawker_protocol::Secret;

    #[test]
    fn request_from_git_input() {
        let r = build_request(
            GitCredentialAction::Get,
            "protocol=https\nhost=github.com\nwwwauth[]=Basic\n\n",
        )
        .unwrap()
        .unwrap();
        assert_eq!(r.protocol, "https");
        assert_eq!(r.host, "github.com");
        assert!(r.password.is_none());
        let r = build_request(
            GitCredentialAction::Get,
            "url=https://git.example.com:8443/org/repo.git\n",
        )
        .unwrap()
        .unwrap();
        assert_eq!(r.host, "git.example.com:8443");
        assert_eq!(r.path.as_deref(), Some("org/repo.git"));
        assert!(
            build_request(GitCredentialAction::Get, "protocol=https\n")
                .unwrap()
                .is_none()
        );
        assert!(build_request(GitCredentialAction::Get, "host=a\rb\n").is_err());
        assert!(build_request(GitCredentialAction::Get, "host=a\0b\n").is_err());
        let r = build_request(
            GitCredentialAction::Store,
            "protocol=https\nhost=h\nusername=u\npassword=p\n",
        )
        .unwrap()
        .unwrap();
        assert_eq!(r.password.unwrap().expose(), "p");
    }

    #[test]
    fn every_attribute_crosses_and_a_get_carries_no_secret() {
        let r = build_request(
            GitCredentialAction::Store,
            "capability[]=authtype\nprotocol=https\nhost=h\nusername=u\npassword=p\npassword_expiry_utc=9999999999\noauth_refresh_token=rt\nauthtype=Bearer\ncredential=tok\nstate[]=s:1\ncontinue=1\n",
        )
        .unwrap()
        .unwrap();
        assert_eq!(r.capability, ["authtype"]);
        assert_eq!(r.password_expiry_utc.as_deref(), Some("9999999999"));
        assert_eq!(r.oauth_refresh_token.unwrap().expose(), "rt");
        assert_eq!(r.credential.unwrap().expose(), "tok");
        assert_eq!(r.state.len(), 1);
        assert_eq!(r.r#continue, Some(true));
        let r = build_request(
            GitCredentialAction::Get,
            "protocol=https\nhost=h\npassword=p\noauth_refresh_token=rt\nwwwauth[]=Bearer\n",
        )
        .unwrap()
        .unwrap();
        assert!(r.password.is_none() && r.oauth_refresh_token.is_none());
        assert_eq!(r.wwwauth, ["Bearer"]);
    }

    #[test]
    fn reply_for_git() {
        let mut reply = GitCredentialResponse::done();
        reply.protocol = Some("https".into());
        reply.host = Some("github.com".into());
        reply.username = Some(Secret::new("alice".into()));
        reply.password = Some(Secret::new("pw".into()));
        reply.password_expiry_utc = Some("1700000000".into());
        reply.oauth_refresh_token = Some(Secret::new("rt".into()));
        assert_eq!(
            format_reply(&reply).unwrap(),
            "username=alice\npassword=pw\npassword_expiry_utc=1700000000\noauth_refresh_token=rt\n"
        );
        let mut bearer = GitCredentialResponse::done();
        bearer.capability = vec!["authtype".into()];
        bearer.authtype = Some("Bearer".into());
        bearer.credential = Some(Secret::new("tok".into()));
        assert_eq!(
            format_reply(&bearer).unwrap(),
            "capability[]=authtype\nauthtype=Bearer\ncredential=tok\n"
        );
    }
}
