//! Where an attachment's container end runs, behind one trait: a Docker container through
//! bollard (local or remote engine; on a local unix socket the exec is started by hand,
//! `hijack`), or any command that speaks the bridge on its stdio (`via`).
//!
//! A native Kubernetes engine fits the same trait: `start` is an exec over the API's
//! WebSocket (kube-rs `AttachParams` with stdin and stdout), `alive` reads the pod's phase;
//! discovery lists pods by label instead of containers (ARCHITECTURE.md).

use std::pin::Pin;

use anyhow::{Context, Result, bail};
use bollard::Docker;
use bollard::query_parameters::ContainerArchiveInfoOptionsBuilder;
use futures_util::future::BoxFuture;
use futures_util::stream::BoxStream;
use futures_util::{StreamExt, TryStreamExt};
use tokio::io::AsyncWrite;

use super::tools::Tools;
use crate::bridge::ExecOutput;
use clawker_protocol::tunnel;

/// A started container end: what it writes, where to write to it, and what keeps it alive.
pub struct Exec {
    pub output: BoxStream<'static, Result<ExecOutput, std::io::Error>>,
    pub input: Pin<Box<dyn AsyncWrite + Send>>,
    /// Dropped with the exec: a `--via` child is killed.
    pub guard: Option<tokio::process::Child>,
}

impl std::fmt::Debug for Exec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Exec").finish_non_exhaustive()
    }
}

impl std::fmt::Debug for DockerTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DockerTarget")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("arch", &self.arch)
            .finish_non_exhaustive()
    }
}

/// One attachment's target.
pub trait Engine: Send + Sync + 'static {
    /// Starts the container end; `sockets` is its `CLAWKER_REMOTE_SOCKETS` (`None`: the
    /// container end's own defaults, for `--via`; a Docker attach always names them).
    fn start<'a>(&'a self, sockets: Option<&'a str>) -> BoxFuture<'a, Result<Exec>>;
    /// Whether there is still something to attach to (a stopped container is gone; a
    /// `--via` command is tried again until it is detached).
    fn alive(&self) -> BoxFuture<'_, bool>;
}

/// A container on a Docker engine.
pub struct DockerTarget {
    docker: Docker,
    /// The engine's unix socket when it is local: the exec is started there by hand
    /// (`hijack`), else through bollard.
    local_socket: Option<std::path::PathBuf>,
    pub id: String,
    pub name: String,
    /// The labels given to this container itself (`docker run --label`); the ones it got
    /// from its image are not here (SPEC.md 11: images choose nothing).
    pub labels: std::collections::HashMap<String, String>,
    /// Its network namespace as Docker names it: `none`, `bridge`, `host`,
    /// `container:ID`, a network's name.
    pub network_mode: String,
    /// Docker's `State.StartedAt`: tells this run of the container from a later one.
    pub started_at: String,
    /// The container's environment (`KEY=value`), for the default sockets.
    pub env: Vec<String>,
    /// `x86_64` or `aarch64`.
    arch: String,
    tools: Tools,
    /// Host folders bind-mounted read-only at `/tmp/.hostproxy/bin` (`run-flags`' mount of
    /// the tools, SPEC.md 12).
    tools_mounts: Vec<std::path::PathBuf>,
    /// The program found or copied at the first start.
    program: tokio::sync::Mutex<Option<String>>,
}

/// The container's labels less the ones its image carries with the same value: a `LABEL`
/// in an image (or in any image it was built `FROM`) reaches every container of it, so it
/// is the image author's word, not the user's.
pub fn own_labels(
    mut container: std::collections::HashMap<String, String>,
    image: &std::collections::HashMap<String, String>,
) -> std::collections::HashMap<String, String> {
    container.retain(|k, v| image.get(k) != Some(v));
    container
}

/// Whether a container shares a network namespace others can be in: the host's
/// (`host`), another container's (`container:…`), or a pod's (podman names it `ns:…` or
/// `pod:…`). Its loopback is then not its own.
pub fn shares_network(mode: &str) -> bool {
    mode == "host"
        || ["container:", "ns:", "pod:"]
            .iter()
            .any(|p| mode.starts_with(p))
}

/// Copies our tools for `arch` into `/tmp/.hostproxy/bin` of container `id` (running or
/// only created: the engine writes into its filesystem either way; `/` with a fresh `/tmp`
/// where it has none). Returns the hash of the `clawker-socket-server` it sent.
async fn upload_tools(docker: &Docker, id: &str, tools: &Tools, arch: &str) -> Result<[u8; 32]> {
    let has_tmp = docker
        .get_container_archive_info(
            id,
            Some(
                ContainerArchiveInfoOptionsBuilder::new()
                    .path("/tmp")
                    .build(),
            ),
        )
        .await
        .is_ok();
    // The first time per architecture this reads, checks and packs a few MiB of files: on
    // a blocking thread, not a runtime worker.
    let (archive, hash) = {
        let (tools, arch) = (tools.clone(), arch.to_string());
        tokio::task::spawn_blocking(move || tools.archive_cached(&arch, !has_tmp))
            .await
            .context("the tools archive task failed")??
    };
    docker
        .upload_to_container(
            id,
            Some(
                bollard::query_parameters::UploadToContainerOptionsBuilder::new()
                    .path(if has_tmp { "/tmp" } else { "/" })
                    .build(),
            ),
            bollard::body_full(archive),
        )
        .await
        .with_context(|| {
            format!(
                "cannot copy the container tools into {}",
                tunnel::CONTAINER_BIN_DIR
            )
        })?;
    Ok(hash)
}

/// `hostproxy run` (SPEC.md 12): the tools copied into a created container before it starts,
/// for engines that cannot mount the daemon's folder, so its first command finds them. The
/// daemon still copies (and checks) its own when it attaches: this copy is never run by it.
pub async fn copy_before_start(docker: &Docker, container: &str, tools: &Tools) -> Result<()> {
    let info = docker
        .inspect_container(container, None)
        .await
        .with_context(|| format!("no container {container:?}"))?;
    let image_arch = match &info.image {
        Some(img) => docker
            .inspect_image(img)
            .await
            .ok()
            .and_then(|i| i.architecture),
        None => None,
    };
    let arch = image_arch
        .as_deref()
        .and_then(arch_of)
        .unwrap_or(std::env::consts::ARCH);
    upload_tools(docker, container, tools, arch).await?;
    Ok(())
}

/// A running container looked up: what the engine says of it, its id, and its name (else
/// the id's first 12 characters).
pub async fn inspect_running(
    docker: &Docker,
    container: &str,
) -> Result<(bollard::models::ContainerInspectResponse, String, String)> {
    let info = docker
        .inspect_container(container, None)
        .await
        .with_context(|| format!("no container {container:?}"))?;
    if !info.state.as_ref().and_then(|s| s.running).unwrap_or(false) {
        bail!("container {container:?} is not running");
    }
    let id = info.id.clone().context("docker named no container id")?;
    let name = info
        .name
        .as_deref()
        .map(|n| n.trim_start_matches('/').to_string())
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| id.chars().take(12).collect());
    Ok((info, id, name))
}

/// The architecture names of `dist`, from Docker's.
fn arch_of(docker_arch: &str) -> Option<&'static str> {
    match docker_arch {
        "amd64" | "x86_64" => Some("x86_64"),
        "arm64" | "aarch64" => Some("aarch64"),
        _ => None,
    }
}

impl DockerTarget {
    /// Looks the container up; it must be running.
    pub async fn inspect(
        engine: &crate::docker::EngineClient,
        container: &str,
        tools: Tools,
    ) -> Result<Self> {
        let docker = engine.docker.clone();
        let (info, id, name) = inspect_running(&docker, container).await?;
        let config = info.config.unwrap_or_default();
        let image = match &info.image {
            Some(img) => docker.inspect_image(img).await.ok(),
            None => None,
        };
        let image_labels = image
            .as_ref()
            .and_then(|i| i.config.as_ref())
            .and_then(|c| c.labels.clone())
            .unwrap_or_default();
        let image_arch = image.and_then(|i| i.architecture);
        let network_mode = info
            .host_config
            .as_ref()
            .and_then(|h| h.network_mode.clone())
            .unwrap_or_default();
        let arch = image_arch
            .as_deref()
            .and_then(arch_of)
            .unwrap_or(std::env::consts::ARCH)
            .to_string();
        let mounts = info.mounts.unwrap_or_default();
        // Anything mounted below the tools folder (a file over `clawker-socket-server`)
        // would be run in its place: then no mount there counts as ours.
        let below = format!("{}/", tunnel::CONTAINER_BIN_DIR);
        let shadowed = mounts.iter().any(|m| {
            m.destination
                .as_deref()
                .is_some_and(|d| d.starts_with(&below))
        });
        let started_at = info
            .state
            .as_ref()
            .and_then(|s| s.started_at.clone())
            .unwrap_or_default();
        let tools_mounts = mounts
            .into_iter()
            .filter(|m| {
                !shadowed
                    && m.destination.as_deref() == Some(tunnel::CONTAINER_BIN_DIR)
                    && m.rw == Some(false)
                    && m.typ.as_deref() == Some("bind")
            })
            .filter_map(|m| m.source.map(std::path::PathBuf::from))
            .collect();
        Ok(Self {
            docker,
            local_socket: engine.local_socket(),
            id,
            name,
            labels: own_labels(config.labels.unwrap_or_default(), &image_labels),
            network_mode,
            started_at,
            env: config.env.unwrap_or_default(),
            arch,
            tools,
            tools_mounts,
            program: tokio::sync::Mutex::new(None),
        })
    }

    /// A variable of the container's environment.
    pub fn env_var(&self, key: &str) -> Option<String> {
        self.env.iter().find_map(|kv| {
            kv.split_once('=')
                .filter(|(k, _)| *k == key)
                .map(|(_, v)| v.to_string())
        })
    }

    async fn exists(&self, path: &str) -> bool {
        self.docker
            .get_container_archive_info(
                &self.id,
                Some(ContainerArchiveInfoOptionsBuilder::new().path(path).build()),
            )
            .await
            .is_ok()
    }

    /// The container end to run: our own copy of the tools, uploaded into
    /// `/tmp/.hostproxy/bin` at the first start of this attachment and checked by hash
    /// before it is run (SPEC.md 11: whatever was at that path before is replaced, never
    /// run); an image's own `clawker-socket-server` on its `PATH` only when the daemon has
    /// no tools for the container's architecture.
    async fn program(&self) -> Result<String> {
        let mut cached = self.program.lock().await;
        if let Some(p) = cached.as_ref() {
            return Ok(p.clone());
        }
        if self.tools_mounted() {
            let program = format!("{}/{}", tunnel::CONTAINER_BIN_DIR, tunnel::SOCKET_SERVER);
            tracing::info!(container = %self.name, "the container tools are mounted (run-flags): nothing copied");
            *cached = Some(program.clone());
            return Ok(program);
        }
        let program = match self.upload().await {
            Ok(p) => p,
            Err(no_tools) => match self.on_image_path().await {
                Some(p) => p,
                None => return Err(no_tools),
            },
        };
        *cached = Some(program.clone());
        Ok(program)
    }

    /// The daemon's own tools folder for this container's architecture is bind-mounted
    /// read-only at `/tmp/.hostproxy/bin` (what `run-flags` wires): nothing in the
    /// container can change it, so it is run as it is (and nothing could be copied over
    /// it). Any other mount there is not ours, and the copy goes on as usual (and fails on
    /// a read-only one).
    fn tools_mounted(&self) -> bool {
        let Ok(ours) = self.tools.dir_for(&self.arch) else {
            return false;
        };
        let ours = std::fs::canonicalize(&ours).unwrap_or(ours);
        self.tools_mounts
            .iter()
            .any(|m| std::fs::canonicalize(m).unwrap_or_else(|_| m.clone()) == ours)
    }

    /// `clawker-socket-server` baked into the image, on its `PATH`.
    async fn on_image_path(&self) -> Option<String> {
        let path = self.env_var("PATH").unwrap_or_else(|| {
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into()
        });
        for dir in path.split(':').filter(|d| d.starts_with('/')) {
            let candidate = format!("{}/{}", dir.trim_end_matches('/'), tunnel::SOCKET_SERVER);
            if self.exists(&candidate).await {
                return Some(candidate);
            }
        }
        None
    }

    /// Uploads our tools into `/tmp` (or `/` with a fresh `/tmp` where there is none) and
    /// checks what landed: `clawker-socket-server` root's, written by nobody else, with our
    /// hash.
    async fn upload(&self) -> Result<String> {
        let hash = upload_tools(&self.docker, &self.id, &self.tools, &self.arch)
            .await
            .with_context(|| format!("container {}", self.name))?;
        let program = format!("{}/{}", tunnel::CONTAINER_BIN_DIR, tunnel::SOCKET_SERVER);
        self.check_landed(&program, &hash).await?;
        tracing::info!(container = %self.name, arch = %self.arch, "copied the container tools into {}", tunnel::CONTAINER_BIN_DIR);
        Ok(program)
    }

    /// Reads `program` back out of the container: it must be root's, not writable by
    /// group or others, and hash to `hash`.
    async fn check_landed(&self, program: &str, hash: &[u8; 32]) -> Result<()> {
        use sha2::Digest;
        let tar_bytes: Vec<u8> = self
            .docker
            .download_from_container(
                &self.id,
                Some(
                    bollard::query_parameters::DownloadFromContainerOptionsBuilder::new()
                        .path(program)
                        .build(),
                ),
            )
            .map_ok(|b| b.to_vec())
            .try_concat()
            .await
            .with_context(|| format!("cannot read {program} back from {}", self.name))?;
        let mut archive = tar::Archive::new(tar_bytes.as_slice());
        let mut entry = archive
            .entries()?
            .next()
            .context("the engine sent back an empty archive")??;
        let (uid, mode) = (entry.header().uid()?, entry.header().mode()?);
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut entry, &mut bytes)?;
        let ok = uid == 0
            && mode & 0o022 == 0
            && entry.header().entry_type() == tar::EntryType::Regular
            && sha2::Sha256::digest(&bytes).as_slice() == hash;
        if !ok {
            bail!(
                "{program} in {} is not the copy the daemon put there (owner {uid}, mode {mode:o}): not run",
                self.name
            );
        }
        Ok(())
    }
}

impl Engine for DockerTarget {
    fn start<'a>(&'a self, sockets: Option<&'a str>) -> BoxFuture<'a, Result<Exec>> {
        Box::pin(async move {
            // The tunnel names the sockets (its defaults from this container's
            // environment, and any declared ones): one place decides them.
            let sockets = sockets.context("no sockets named for the container end")?;
            let program = self.program().await?;
            let exec = crate::docker::create_exec(
                &self.docker,
                &self.id,
                vec![program],
                vec![format!(
                    "{}={sockets}",
                    clawker_protocol::env::REMOTE_SOCKETS
                )],
                None,
            )
            .await?;
            // A local engine's exec is started by hand (`hijack`: no wake-up per message
            // for the engine reading what the daemon wrote); others through bollard.
            let (output, input) = match &self.local_socket {
                #[cfg(unix)]
                Some(socket) => super::hijack::start(socket, &exec).await?,
                _ => {
                    let (output, input) = crate::docker::start_exec(&self.docker, &exec).await?;
                    let output = output
                        .map_ok(ExecOutput::from)
                        .map_err(std::io::Error::other)
                        .boxed();
                    (output, input)
                }
            };
            Ok(Exec {
                output,
                input,
                guard: None,
            })
        })
    }

    fn alive(&self) -> BoxFuture<'_, bool> {
        Box::pin(async move {
            match self.docker.inspect_container(&self.id, None).await {
                Ok(i) => i.state.and_then(|s| s.running).unwrap_or(false),
                Err(bollard::errors::Error::DockerResponseServerError {
                    status_code: 404, ..
                }) => false,
                // The engine's hiccup is not the container's end.
                Err(_) => true,
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_the_image_carries_are_not_the_containers_own() {
        let map = |p: &[(&str, &str)]| -> std::collections::HashMap<String, String> {
            p.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let image = map(&[("attach", "yes"), ("scopes", "ssh")]);
        let container = map(&[("attach", "yes"), ("scopes", "open"), ("other", "x")]);
        // Same key and value: the image's; a value given at run time: the container's.
        assert_eq!(
            own_labels(container, &image),
            map(&[("scopes", "open"), ("other", "x")])
        );
    }

    #[test]
    fn shared_network_namespaces() {
        for m in ["host", "container:abc", "ns:/proc/1/ns/net", "pod:x"] {
            assert!(shares_network(m), "{m}");
        }
        for m in ["none", "bridge", "default", "my-net", ""] {
            assert!(!shares_network(m), "{m}");
        }
    }
}
