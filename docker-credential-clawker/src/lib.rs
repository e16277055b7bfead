//! `docker-credential-clawker get|store|erase|list`: Docker's credential-helper protocol on
//! stdin/stdout (SPEC.md 10), answered by the host's own credential store through the
//! hostproxy daemon. In an image: `{"credsStore": "clawker"}` in `~/.docker/config.json`.
//!
//! `get` reads the server URL and prints `{"ServerURL","Username","Secret"}`; nothing found
//! (or refused by the host) prints Docker's "credentials not found in native keychain" and
//! exits 1, which the docker CLI, skopeo and friends read as "no credential". `store` reads
//! that JSON, `erase` a server URL; `list` prints `{"URL": "username"}`.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clawker_client::ClientError;
use clawker_client::blocking::Conn;
use clawker_protocol::Secret;
use clawker_protocol::api::{
    DockerCredentialAction, DockerCredentialRequest, DockerCredentialResponse, routes,
};
use serde::{Deserialize, Serialize};

/// What Docker's helpers print when they have nothing: callers match this text.
pub const NOT_FOUND: &str = "credentials not found in native keychain";

/// Largest input read.
const MAX_INPUT: u64 = 64 * 1024;

/// Docker's credential JSON.
#[derive(Debug, Serialize, Deserialize)]
pub struct DockerCredential {
    #[serde(rename = "ServerURL")]
    pub server_url: String,
    #[serde(rename = "Username")]
    pub username: Secret<String>,
    #[serde(rename = "Secret")]
    pub secret: Secret<String>,
}

/// The request for `action` with what the caller wrote on stdin.
pub fn build_request(
    action: DockerCredentialAction,
    input: &str,
) -> Result<DockerCredentialRequest> {
    let url = || -> Result<String> {
        let u = input.trim();
        if u.is_empty() {
            bail!("no server URL on stdin");
        }
        Ok(u.to_string())
    };
    Ok(match action {
        DockerCredentialAction::Get | DockerCredentialAction::Erase => DockerCredentialRequest {
            action,
            server_url: Some(url()?),
            username: None,
            secret: None,
        },
        DockerCredentialAction::Store => {
            let c: DockerCredential = serde_json::from_str(input)
                .context("store expects {\"ServerURL\",\"Username\",\"Secret\"} on stdin")?;
            DockerCredentialRequest {
                action,
                server_url: Some(c.server_url),
                username: Some(c.username),
                secret: Some(c.secret),
            }
        }
        DockerCredentialAction::List => DockerCredentialRequest {
            action,
            server_url: None,
            username: None,
            secret: None,
        },
    })
}

fn usage() -> String {
    format!(
        "docker-credential-clawker {}\nDocker credential helper that asks the host's credential store through hostproxy.\n\nUsage: docker-credential-clawker get|store|erase|list   (input on stdin, as Docker sends it)\n\nIn an image: {{\"credsStore\": \"clawker\"}} in ~/.docker/config.json.\nExample:\n  echo 127.0.0.1:5000 | docker-credential-clawker get",
        env!("CARGO_PKG_VERSION")
    )
}

fn write_out(text: &str) -> Result<()> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            bail!("cannot write the reply: {e}")
        }
        _ => Ok(()),
    }
}

pub fn run(verb: &str) -> Result<ExitCode> {
    let action = match verb {
        "get" => DockerCredentialAction::Get,
        "store" => DockerCredentialAction::Store,
        "erase" => DockerCredentialAction::Erase,
        "list" => DockerCredentialAction::List,
        "version" | "--version" | "-V" => {
            println!("docker-credential-clawker {}", env!("CARGO_PKG_VERSION"));
            return Ok(ExitCode::SUCCESS);
        }
        "--help" | "-h" => {
            println!("{}", usage());
            return Ok(ExitCode::SUCCESS);
        }
        other => bail!("unknown verb {other:?}: use get, store, erase or list"),
    };
    let mut input = String::new();
    if action != DockerCredentialAction::List {
        std::io::stdin()
            .take(MAX_INPUT)
            .read_to_string(&mut input)
            .context("cannot read stdin")?;
    }
    let request = build_request(action, &input)?;
    match Conn::from_env()?.post::<_, DockerCredentialResponse>(routes::DOCKER_CREDENTIAL, &request)
    {
        Ok(reply) => match action {
            DockerCredentialAction::Get => {
                let (Some(username), Some(secret)) = (reply.username, reply.secret) else {
                    write_out(NOT_FOUND)?;
                    return Ok(ExitCode::FAILURE);
                };
                let c = DockerCredential {
                    server_url: request.server_url.unwrap_or_default(),
                    username,
                    secret,
                };
                write_out(&serde_json::to_string(&c)?)?;
                Ok(ExitCode::SUCCESS)
            }
            DockerCredentialAction::List => {
                let servers: BTreeMap<String, Secret<String>> = reply.servers;
                write_out(&serde_json::to_string(&servers)?)?;
                Ok(ExitCode::SUCCESS)
            }
            _ => Ok(ExitCode::SUCCESS),
        },
        // Nothing, or not for this container: Docker's "not found", so the caller goes on
        // without credentials.
        Err(ClientError::Status {
            status: 403 | 404, ..
        }) if action == DockerCredentialAction::Get => {
            write_out(NOT_FOUND)?;
            Ok(ExitCode::FAILURE)
        }
        Err(e) => Err(e.into()),
    }
}

pub fn main() -> ExitCode {
    let verb = std::env::args().nth(1).unwrap_or_default();
    if verb.is_empty() {
        eprintln!("{}", usage());
        return ExitCode::FAILURE;
    }
    clawker_client::exit_code("docker-credential-clawker", run(&verb))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_from_dockers_input() {
        let r = build_request(DockerCredentialAction::Get, "127.0.0.1:5000\n").unwrap();
        assert_eq!(r.server_url.as_deref(), Some("127.0.0.1:5000"));
        assert!(r.secret.is_none());
        assert!(build_request(DockerCredentialAction::Get, " \n").is_err());
        let r = build_request(
            DockerCredentialAction::Store,
            r#"{"ServerURL":"r.example","Username":"u","Secret":"s"}"#,
        )
        .unwrap();
        assert_eq!(r.secret.unwrap().expose(), "s");
        assert!(build_request(DockerCredentialAction::Store, "r.example").is_err());
        let r = build_request(DockerCredentialAction::List, "").unwrap();
        assert!(r.server_url.is_none());
    }

    #[test]
    fn the_credential_prints_as_docker_reads_it_and_debug_hides_the_secret() {
        let c = DockerCredential {
            server_url: "r".into(),
            username: Secret::new("u".into()),
            secret: Secret::new("s3".into()),
        };
        assert_eq!(
            serde_json::to_string(&c).unwrap(),
            r#"{"ServerURL":"r","Username":"u","Secret":"s3"}"#
        );
        let shown = format!("{c:?}");
        assert!(!shown.contains("s3") && !shown.contains("\"u\""), "{shown}");
    }
}
