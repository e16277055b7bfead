//! Docker through bollard: bridge gateway discovery and the idle-exit container watcher.

use std::collections::HashMap;
use std::net::IpAddr;

use anyhow::{Context, Result};
use bollard::Docker;
use bollard::query_parameters::ListContainersOptionsBuilder;
use tokio_util::sync::CancellationToken;

use crate::config::WatcherSettings;

/// The engine, found as the docker CLI finds it (`platform::docker_host`).
pub fn connect() -> Result<Docker> {
    connect_engine().map(|e| e.docker)
}

/// A connection to the engine: bollard's client and the address it was made to (`unix://…`,
/// `tcp://…`, `ssh://…`), found together, so what is decided from the address (whose engine
/// it is, where `tunnel::hijack` starts an exec) is about the engine the client talks to,
/// even if the docker context changes while the daemon runs.
#[derive(Debug, Clone)]
pub struct EngineClient {
    pub docker: Docker,
    pub host: String,
}

impl EngineClient {
    /// The engine's unix socket, when it is a local one.
    pub fn local_socket(&self) -> Option<std::path::PathBuf> {
        self.host
            .strip_prefix("unix://")
            .filter(|_| cfg!(unix))
            .map(std::path::PathBuf::from)
    }
}

/// [`connect`], with the address it connected to.
pub fn connect_engine() -> Result<EngineClient> {
    let found =
        crate::platform::docker_host::find(&crate::platform::docker_host::Env::from_process());
    let docker = connect_to(&found.host).with_context(|| {
        format!(
            "cannot connect to the docker engine at {} (from {})",
            found.host, found.from
        )
    })?;
    Ok(EngineClient {
        docker,
        host: found.host,
    })
}

fn connect_to(host: &str) -> Result<Docker> {
    const TIMEOUT: u64 = 120;
    #[cfg(unix)]
    if let Some(path) = host.strip_prefix("unix://") {
        return Ok(Docker::connect_with_unix(
            path,
            TIMEOUT,
            bollard::API_DEFAULT_VERSION,
        )?);
    }
    if host.starts_with("tcp://") || host.starts_with("http://") {
        return Ok(Docker::connect_with_http(
            host,
            TIMEOUT,
            bollard::API_DEFAULT_VERSION,
        )?);
    }
    // bollard runs the system's ssh (ControlMaster) and `docker system dial-stdio` there,
    // as the docker CLI does; the user's ~/.ssh/config, agent and keys apply.
    #[cfg(unix)]
    if host.starts_with("ssh://") {
        return Ok(Docker::connect_with_ssh(
            host,
            TIMEOUT,
            bollard::API_DEFAULT_VERSION,
            None,
        )?);
    }
    #[cfg(windows)]
    if host.starts_with("npipe://") {
        return Ok(Docker::connect_with_named_pipe(
            host,
            TIMEOUT,
            bollard::API_DEFAULT_VERSION,
        )?);
    }
    anyhow::bail!(
        "{host}: this engine address is not supported (unix://, tcp://, {})",
        if cfg!(windows) {
            "npipe://; for an engine over ssh, forward its socket (ssh -L) and use tcp://"
        } else {
            "ssh://"
        }
    )
}

/// What an exec started with stdin and stdout attached writes, and where to write to it.
pub type AttachedExec = (
    std::pin::Pin<
        Box<
            dyn futures_util::Stream<
                    Item = Result<bollard::container::LogOutput, bollard::errors::Error>,
                > + Send,
        >,
    >,
    std::pin::Pin<Box<dyn tokio::io::AsyncWrite + Send>>,
);

/// Creates an exec of `cmd` in container `id` with `env` (and as `user`), stdin, stdout and
/// stderr to be attached, no TTY: the container end of the bridge and the tunnel. Its id.
pub async fn create_exec(
    docker: &Docker,
    id: &str,
    cmd: Vec<String>,
    env: Vec<String>,
    user: Option<String>,
) -> Result<String> {
    let exec = docker
        .create_exec(
            id,
            bollard::models::ExecConfig {
                attach_stdin: Some(true),
                attach_stdout: Some(true),
                attach_stderr: Some(true),
                tty: Some(false),
                cmd: Some(cmd),
                env: Some(env),
                user,
                ..Default::default()
            },
        )
        .await
        .context("cannot create the exec in the container")?;
    Ok(exec.id)
}

/// Starts the exec `exec_id` (from [`create_exec`]) attached, through bollard.
pub async fn start_exec(docker: &Docker, exec_id: &str) -> Result<AttachedExec> {
    use bollard::exec::{StartExecOptions, StartExecResults};
    let started = docker
        .start_exec(
            exec_id,
            Some(StartExecOptions {
                detach: false,
                tty: false,
                output_capacity: None,
            }),
        )
        .await
        .context("cannot start clawker-socket-server in the container")?;
    match started {
        StartExecResults::Attached { output, input } => Ok((output, input)),
        StartExecResults::Detached => anyhow::bail!("docker did not attach to the exec"),
    }
}

/// Gateway addresses of Docker's bridge networks: what `host-gateway` resolves to inside a
/// container on native Linux.
pub async fn bridge_gateways() -> Result<Vec<IpAddr>> {
    let docker = connect()?;
    let networks = docker
        .list_networks(None)
        .await
        .context("cannot list docker networks")?;
    let mut out = Vec::new();
    for n in networks {
        if n.driver.as_deref() != Some("bridge") {
            continue;
        }
        let configs = n.ipam.and_then(|i| i.config).unwrap_or_default();
        for c in configs {
            // Some engines leave Gateway empty for the default bridge; Docker then uses the
            // subnet's first address.
            let ip = c
                .gateway
                .and_then(|g| g.parse::<IpAddr>().ok())
                .or_else(|| c.subnet.as_deref().and_then(first_host));
            if let Some(ip) = ip
                && !ip.is_unspecified()
                && !out.contains(&ip)
            {
                out.push(ip);
            }
        }
    }
    Ok(out)
}

/// The first host address of a CIDR subnet (`172.17.0.0/16` → `172.17.0.1`).
pub fn first_host(subnet: &str) -> Option<IpAddr> {
    let (addr, prefix) = subnet.split_once('/')?;
    let prefix: u32 = prefix.parse().ok()?;
    match addr.parse::<IpAddr>().ok()? {
        IpAddr::V4(a) if prefix <= 30 => {
            let mask = u32::MAX.checked_shl(32 - prefix).unwrap_or(0);
            Some(IpAddr::V4((u32::from(a) & mask).wrapping_add(1).into()))
        }
        IpAddr::V6(a) if prefix <= 126 => {
            let mask = u128::MAX.checked_shl(128 - prefix).unwrap_or(0);
            Some(IpAddr::V6((u128::from(a) & mask).wrapping_add(1).into()))
        }
        _ => None,
    }
}

fn label_filters(labels: &[(String, String)]) -> HashMap<String, Vec<String>> {
    HashMap::from([(
        "label".to_string(),
        labels.iter().map(|(k, v)| format!("{k}={v}")).collect(),
    )])
}

/// Revokes scoped tokens whose container is gone: each bound one that is not running when
/// the daemon's container events are first subscribed, and each one as Docker reports it
/// died or was removed. Waits for the engine when it is down (the events say when).
pub async fn revoke_tokens_of_dead_containers(
    store: crate::auth::TokenStore,
    docker: Docker,
    mut events: crate::events::Subscription,
) {
    use crate::events::Event;
    let store = std::sync::Arc::new(store);
    // The store takes a blocking lock, reads, writes and fsyncs `tokens.json`: never on a
    // runtime worker.
    let revoke = |id: String, name: Option<String>| {
        let store = store.clone();
        async move {
            tokio::task::spawn_blocking(move || store.revoke_container(&id, name.as_deref()))
                .await
                .unwrap_or(Ok(0))
        }
    };
    // Bound containers are checked at the first Resync (the engine reachable): a token may be
    // bound to a container that is only about to be created, so a later Resync (a
    // reconnection) must not take "no such container" for "gone". Only the ones whose
    // inspect failed then (a hiccup, which is not "gone") are checked again at later ones.
    let mut first = true;
    let mut unsure: Vec<String> = Vec::new();
    while let Some(event) = events.next().await {
        match event {
            Event::Resync => {
                let to_check = if std::mem::take(&mut first) {
                    let store = store.clone();
                    tokio::task::spawn_blocking(move || store.bound_containers())
                        .await
                        .unwrap_or_default()
                } else {
                    std::mem::take(&mut unsure)
                };
                for c in to_check {
                    // Gone means the engine says so.
                    let running = match docker.inspect_container(&c, None).await {
                        Ok(i) => i.state.and_then(|s| s.running).unwrap_or(false),
                        Err(bollard::errors::Error::DockerResponseServerError {
                            status_code: 404,
                            ..
                        }) => false,
                        Err(e) => {
                            tracing::debug!(container = %c, error = %e, "cannot inspect a token's container: its tokens stay until the engine says");
                            unsure.push(c);
                            continue;
                        }
                    };
                    if !running
                        && let Ok(n) = revoke(c.clone(), None).await
                        && n > 0
                    {
                        tracing::info!(
                            revoked = n,
                            "tokens of a container that is gone were revoked"
                        );
                    }
                }
            }
            Event::Container {
                ref action, ref id, ..
            } if action == "die" || action == "destroy" => {
                let name = event.name().map(str::to_string);
                match revoke(id.clone(), name).await {
                    Ok(0) => {}
                    Ok(n) => {
                        tracing::info!(revoked = n, "tokens of a stopped container were revoked")
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot revoke the tokens of a stopped container")
                    }
                }
            }
            Event::Container { .. } => {}
        }
    }
}

/// Counts running containers carrying every label.
pub async fn count_labelled(docker: &Docker, labels: &[(String, String)]) -> Result<usize> {
    let opts = ListContainersOptionsBuilder::default()
        .filters(&label_filters(labels))
        .build();
    Ok(docker.list_containers(Some(opts)).await?.len())
}

/// Returns when the daemon should exit: no labelled container and no live attachment
/// (`attached()`, SPEC.md 7: a tunnel container keeps the daemon up whatever its labels) is
/// left after the grace period, or Docker failed 10 times in a row. Returns never (until
/// `stop`) when Docker is absent at start: then the daemon keeps serving without idle exit.
pub async fn watch_containers(
    settings: WatcherSettings,
    stop: CancellationToken,
    attached: impl Fn() -> usize + Send,
    mut events: crate::events::Subscription,
) {
    const MAX_ERRORS: u32 = 10;
    let docker = match connect() {
        Ok(d) if d.ping().await.is_ok() => d,
        _ => {
            tracing::warn!("docker is not reachable: --idle-exit is off, the daemon keeps serving");
            stop.cancelled().await;
            return;
        }
    };
    tracing::info!(grace = ?settings.grace_period, poll = ?settings.poll_interval, "container watcher armed");
    tokio::select! {
        () = tokio::time::sleep(settings.grace_period) => {}
        () = stop.cancelled() => return,
    }
    let mut errors = 0u32;
    loop {
        match count_labelled(&docker, &settings.labels)
            .await
            .map(|n| n + attached())
        {
            Ok(0) => {
                tracing::info!("no agent containers are running and nothing is attached: exiting");
                return;
            }
            Ok(n) => {
                errors = 0;
                tracing::debug!(containers = n, "agent containers running");
            }
            Err(e) => {
                errors += 1;
                tracing::warn!(error = %e, errors, "cannot count containers");
                if errors >= MAX_ERRORS {
                    tracing::error!("docker failed {MAX_ERRORS} times in a row: exiting");
                    return;
                }
            }
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(settings.poll_interval) => {}
            // Any container event (or a resubscription): count again.
            ev = events.next() => if ev.is_none() {
                stop.cancelled().await;
                return;
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fake engine on a unix socket: inspecting `hiccup` always fails (500); inspecting
    /// `gone` fails once, then says there is no such container (404). Counts inspects.
    #[cfg(unix)]
    async fn flaky_engine(
        dir: &std::path::Path,
    ) -> (Docker, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
        use std::sync::atomic::{AtomicUsize, Ordering};
        use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
        let path = dir.join("docker.sock");
        let listener = tokio::net::UnixListener::bind(&path).unwrap();
        let gone_asked = std::sync::Arc::new(AtomicUsize::new(0));
        let counter = gone_asked.clone();
        tokio::spawn(async move {
            while let Ok((conn, _)) = listener.accept().await {
                let counter = counter.clone();
                tokio::spawn(async move {
                    let mut conn = tokio::io::BufReader::new(conn);
                    loop {
                        let mut line = String::new();
                        if conn.read_line(&mut line).await.unwrap_or(0) == 0 {
                            return;
                        }
                        loop {
                            let mut h = String::new();
                            if conn.read_line(&mut h).await.unwrap_or(0) == 0 || h == "\r\n" {
                                break;
                            }
                        }
                        let (status, body) = if line.contains("/containers/gone/json")
                            && counter.fetch_add(1, Ordering::SeqCst) > 0
                        {
                            ("404 Not Found", r#"{"message":"No such container: gone"}"#)
                        } else {
                            ("500 Internal Server Error", r#"{"message":"hiccup"}"#)
                        };
                        let answer = format!(
                            "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                            body.len()
                        );
                        if conn.get_mut().write_all(answer.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        let docker =
            Docker::connect_with_unix(path.to_str().unwrap(), 5, bollard::API_DEFAULT_VERSION)
                .unwrap();
        (docker, gone_asked)
    }

    /// A failed inspect at the first Resync revokes nothing and is asked again at the next
    /// one, where the engine's "no such container" revokes; a container the engine never
    /// answers for keeps its token.
    #[cfg(unix)]
    #[tokio::test]
    async fn a_hiccup_at_start_is_checked_again_and_only_gone_revokes() {
        use crate::auth::{Scope, TokenStore};
        let dir = tempfile::tempdir().unwrap();
        let (docker, gone_asked) = flaky_engine(dir.path()).await;
        let store = TokenStore::new(dir.path().join("tokens.json"));
        for c in ["gone", "hiccup"] {
            store
                .issue(&format!("t-{c}"), Some(c.into()), &[Scope::Open], None)
                .unwrap();
        }
        let hub = crate::events::ContainerEvents::new();
        let sub = hub.subscribe();
        let revoker = tokio::spawn(revoke_tokens_of_dead_containers(
            TokenStore::new(dir.path().join("tokens.json")),
            docker,
            sub,
        ));
        // One connection of the event stream: a Resync at once, another once it settled.
        let feed = tokio::spawn(async move {
            hub.feed(|| async {
                Ok::<_, String>(futures_util::stream::pending::<
                    Result<Option<crate::events::Event>, String>,
                >())
            })
            .await
        });
        let mut bound = store.bound_containers();
        for _ in 0..100 {
            if !bound.contains(&"gone".to_string()) {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            bound = store.bound_containers();
        }
        assert_eq!(bound, ["hiccup"], "the container the engine says is gone");
        assert!(
            gone_asked.load(std::sync::atomic::Ordering::SeqCst) >= 2,
            "asked again after the hiccup"
        );
        feed.abort();
        revoker.abort();
    }

    #[test]
    fn first_hosts() {
        assert_eq!(
            first_host("172.17.0.0/16"),
            Some("172.17.0.1".parse().unwrap())
        );
        assert_eq!(first_host("10.1.2.0/24"), Some("10.1.2.1".parse().unwrap()));
        assert_eq!(first_host("fd00::/64"), Some("fd00::1".parse().unwrap()));
        assert_eq!(first_host("10.0.0.0/32"), None);
        assert_eq!(first_host("junk"), None);
    }
}
