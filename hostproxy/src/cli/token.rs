//! `hostproxy token [issue|list|revoke]`.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Result, bail};
use hostproxy::auth::TokenStore;
use hostproxy::state::StateDir;

use super::TokenAction;

pub fn token_command(action: Option<TokenAction>) -> Result<ExitCode> {
    let state = StateDir::from_env()?;
    let store = TokenStore::new(state.tokens_file());
    match action {
        None => {
            let token = state.load_or_create_token()?;
            println!("{}", token.expose());
        }
        Some(TokenAction::Issue {
            name,
            container,
            allow,
            ttl,
        }) => {
            if allow.is_empty() {
                bail!(
                    "a scoped token needs at least one --allow SCOPE (open, callback, notify, git:HOST, git-push:HOST, git-store:HOST, ssh, ssh:SHA256:…, gpg, docker:REGISTRY, socket:NAME, egress:NAME)"
                );
            }
            // Store the full container id when Docker knows the container, so events match.
            let container = container.map(|c| resolve_container(&c).unwrap_or(c));
            let token = store.issue(&name, container, &allow, ttl)?;
            println!("{token}");
        }
        Some(TokenAction::List { json }) => {
            let tokens = store.list()?;
            if json {
                let v: Vec<_> = tokens
                    .iter()
                    .map(|t| serde_json::json!({"name": t.name, "scopes": t.scopes, "container": t.container, "created": t.created, "expires": t.expires, "revoked": t.revoked}))
                    .collect();
                println!("{}", serde_json::Value::Array(v));
            } else {
                if tokens.is_empty() {
                    eprintln!("no scoped tokens (hostproxy token issue --name NAME --allow SCOPE)");
                }
                for t in tokens {
                    println!(
                        "{}\t{}\t{}{}{}",
                        t.name,
                        t.scopes.join(","),
                        t.container
                            .as_deref()
                            .map(|c| format!(
                                "container {}",
                                c.chars().take(12).collect::<String>()
                            ))
                            .unwrap_or_else(|| "any container".into()),
                        t.expires
                            .map(|e| format!(
                                "\texpires {}",
                                humantime::format_rfc3339_seconds(
                                    std::time::UNIX_EPOCH + Duration::from_secs(e)
                                )
                            ))
                            .unwrap_or_default(),
                        if t.revoked { "\trevoked" } else { "" }
                    );
                }
            }
        }
        Some(TokenAction::Revoke { name }) => {
            store.revoke(&name)?;
            eprintln!("revoked {name}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn resolve_container(name: &str) -> Option<String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .ok()?;
    rt.block_on(async {
        let docker = hostproxy::docker::connect().ok()?;
        docker.inspect_container(name, None).await.ok()?.id
    })
}
