//! The host's Docker credential store, found as the docker CLI finds it (SPEC.md 10):
//! `credHelpers` for the registry, else `credsStore`, else the `auths` of
//! `$DOCKER_CONFIG/config.json` (default `~/.docker/config.json`). A helper is run like git:
//! `docker-credential-NAME VERB` by argv, no shell, no terminal (a process group of its
//! own, stdin a pipe), killed after a timeout.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use base64::Engine;
use clawker_protocol::Secret;
use clawker_protocol::api::{DockerCredentialAction, docker_registry};
use futures_util::future::BoxFuture;
use serde::Deserialize;

use super::{DockerCredentials, DockerError, DockerReply};
use crate::platform::process::{Detach, HostRun, RunError, host_command, run_captured};

/// `~/.docker/config.json`, the parts that say where credentials are.
#[derive(Debug, Default, Deserialize)]
struct DockerConfig {
    #[serde(default, rename = "credHelpers")]
    cred_helpers: BTreeMap<String, String>,
    #[serde(default, rename = "credsStore")]
    creds_store: Option<String>,
    #[serde(default)]
    auths: BTreeMap<String, AuthEntry>,
}

#[derive(Debug, Default, Deserialize)]
struct AuthEntry {
    #[serde(default)]
    auth: Option<String>,
}

/// A helper's `get` reply.
#[derive(Deserialize)]
struct HelperCredential {
    #[serde(rename = "Username")]
    username: String,
    #[serde(rename = "Secret")]
    secret: String,
}

/// The host's store.
#[derive(Debug, Clone)]
pub struct HostDockerCredentials {
    /// `$DOCKER_CONFIG`, else `~/.docker`.
    dir: Option<PathBuf>,
    /// Where `docker-credential-NAME` is looked for (`None`: on `PATH`).
    helpers: Option<PathBuf>,
    timeout: Duration,
}

impl HostDockerCredentials {
    pub fn from_env() -> Self {
        let dir = crate::platform::dirs::docker_config();
        Self {
            dir,
            helpers: None,
            timeout: Duration::from_secs(10),
        }
    }

    /// The store of the config in `dir`, its helpers in `helpers` (tests).
    pub fn at(dir: PathBuf, helpers: Option<PathBuf>) -> Self {
        Self {
            dir: Some(dir),
            helpers,
            timeout: Duration::from_secs(10),
        }
    }

    fn program(&self, name: &str) -> PathBuf {
        let file = format!("docker-credential-{name}");
        match &self.helpers {
            Some(d) => d.join(file),
            None => PathBuf::from(file),
        }
    }

    fn config(&self) -> DockerConfig {
        let Some(dir) = &self.dir else {
            return DockerConfig::default();
        };
        std::fs::read(dir.join("config.json"))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }
}

/// A helper name as docker accepts it: the suffix of `docker-credential-NAME`.
fn valid_helper(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// Which helper serves `registry`, if any.
fn helper_for(cfg: &DockerConfig, registry: &str) -> Option<String> {
    cfg.cred_helpers
        .iter()
        .find(|(k, _)| docker_registry(k).as_deref() == Some(registry))
        .map(|(_, v)| v.clone())
        .or_else(|| cfg.creds_store.clone())
        .filter(|h| valid_helper(h))
}

/// The `auths` entry for `registry`: (username, secret).
fn from_auths(cfg: &DockerConfig, registry: &str) -> Option<(String, String)> {
    let entry = cfg
        .auths
        .iter()
        .find(|(k, _)| docker_registry(k).as_deref() == Some(registry))?
        .1;
    let raw = base64::engine::general_purpose::STANDARD
        .decode(entry.auth.as_deref()?.trim())
        .ok()?;
    let text = String::from_utf8(raw).ok()?;
    let (u, p) = text.split_once(':')?;
    Some((u.to_string(), p.to_string()))
}

/// Runs `docker-credential-NAME VERB` with `input` on stdin: (success, stdout).
async fn run_helper(
    program: PathBuf,
    verb: &str,
    input: &[u8],
    timeout: Duration,
) -> Result<(bool, Vec<u8>), DockerError> {
    let shown = program.display().to_string();
    let mut cmd = host_command(&program);
    cmd.arg(verb);
    // The helper and whatever it starts (a keychain prompt, a `pass` gpg) go on a timeout,
    // like git's.
    let run = HostRun {
        input: Some(input),
        cap: 1024 * 1024,
        detach: Detach::Group,
        kill_group_after: false,
    };
    match run_captured(cmd, run, tokio::time::sleep(timeout)).await {
        Ok((status, out)) => Ok((status.success(), out)),
        Err(RunError::Spawn(e)) => Err(DockerError::Spawn(shown, e)),
        Err(RunError::Io(e)) => Err(DockerError::Io(e)),
        Err(RunError::Ended) => Err(DockerError::Timeout(timeout)),
    }
}

impl DockerCredentials for HostDockerCredentials {
    fn run<'a>(
        &'a self,
        action: DockerCredentialAction,
        registry: Option<&'a str>,
        username: Option<&'a Secret<String>>,
        secret: Option<&'a Secret<String>>,
    ) -> BoxFuture<'a, Result<DockerReply, DockerError>> {
        Box::pin(async move {
            let cfg = self.config();
            match action {
                DockerCredentialAction::List => {
                    let mut servers: BTreeMap<String, Secret<String>> = BTreeMap::new();
                    for k in cfg.auths.keys() {
                        if let Some(r) = docker_registry(k) {
                            let user = from_auths(&cfg, &r).map(|(u, _)| u).unwrap_or_default();
                            servers.insert(r, Secret::new(user));
                        }
                    }
                    let mut helpers: Vec<String> = cfg.cred_helpers.values().cloned().collect();
                    helpers.extend(cfg.creds_store.clone());
                    helpers.sort();
                    helpers.dedup();
                    for h in helpers.iter().filter(|h| valid_helper(h)) {
                        let (ok, out) =
                            run_helper(self.program(h), "list", b"", self.timeout).await?;
                        let listed: BTreeMap<String, String> = if ok {
                            serde_json::from_slice(&out).map_err(|_| DockerError::BadReply)?
                        } else {
                            BTreeMap::new()
                        };
                        for (k, v) in listed {
                            if let Some(r) = docker_registry(&k) {
                                servers.insert(r, Secret::new(v));
                            }
                        }
                    }
                    Ok(DockerReply::List(servers))
                }
                DockerCredentialAction::Get => {
                    let registry = registry.ok_or(DockerError::BadReply)?;
                    match helper_for(&cfg, registry) {
                        Some(h) => {
                            let (ok, out) = run_helper(
                                self.program(&h),
                                "get",
                                registry.as_bytes(),
                                self.timeout,
                            )
                            .await?;
                            if !ok {
                                // "credentials not found in native keychain", or a failure:
                                // either way nothing to hand out.
                                return Ok(DockerReply::NotFound);
                            }
                            let c: HelperCredential =
                                serde_json::from_slice(&out).map_err(|_| DockerError::BadReply)?;
                            Ok(DockerReply::Found {
                                username: Secret::new(c.username),
                                secret: Secret::new(c.secret),
                            })
                        }
                        None => Ok(match from_auths(&cfg, registry) {
                            Some((username, secret)) => DockerReply::Found {
                                username: Secret::new(username),
                                secret: Secret::new(secret),
                            },
                            None => DockerReply::NotFound,
                        }),
                    }
                }
                DockerCredentialAction::Store | DockerCredentialAction::Erase => {
                    let registry = registry.ok_or(DockerError::BadReply)?;
                    let h = helper_for(&cfg, registry).ok_or(DockerError::NoHelper)?;
                    let input = if action == DockerCredentialAction::Store {
                        serde_json::to_vec(&serde_json::json!({
                            "ServerURL": registry,
                            "Username": username.map(|u| u.expose().as_str()).unwrap_or_default(),
                            "Secret": secret.map(|s| s.expose().as_str()).unwrap_or_default(),
                        }))
                        .map_err(|_| DockerError::BadReply)?
                    } else {
                        registry.as_bytes().to_vec()
                    };
                    let (ok, _) =
                        run_helper(self.program(&h), action.verb(), &input, self.timeout).await?;
                    if ok {
                        Ok(DockerReply::Done)
                    } else {
                        Err(DockerError::Failed(h))
                    }
                }
            }
        })
    }
}
