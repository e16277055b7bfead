//! Where the Docker engine is, found as the docker CLI finds it (SPEC.md 9): `DOCKER_HOST`,
//! then the current context (`DOCKER_CONTEXT`, else `currentContext` in
//! `$DOCKER_CONFIG/config.json`, default `~/.docker`) and its endpoint in
//! `contexts/meta/<sha256 of the name>/meta.json`, then the platform's default socket
//! (`/var/run/docker.sock`, Docker Desktop's `~/.docker/run/docker.sock`, the Windows pipe).

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// The environment the lookup reads (a seam for tests: no global state).
#[derive(Debug, Clone, Default)]
pub struct Env {
    pub docker_host: Option<String>,
    pub docker_context: Option<String>,
    pub docker_config: Option<PathBuf>,
    pub home: Option<PathBuf>,
}

impl Env {
    pub fn from_process() -> Self {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
        Self {
            docker_host: var("DOCKER_HOST"),
            docker_context: var("DOCKER_CONTEXT"),
            docker_config: var("DOCKER_CONFIG").map(PathBuf::from),
            home: super::dirs::home(),
        }
    }

    fn config_dir(&self) -> Option<PathBuf> {
        self.docker_config
            .clone()
            .or_else(|| self.home.as_ref().map(|h| h.join(".docker")))
    }
}

/// Where the engine is and how that was decided (`doctor` says which).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// `unix:///…`, `tcp://…`, `ssh://…` or `npipe:////./pipe/…`.
    pub host: String,
    pub from: &'static str,
}

fn context_endpoint(config_dir: &Path, name: &str) -> Option<String> {
    let digest = clawker_protocol::hex(&Sha256::digest(name.as_bytes()));
    let meta = config_dir
        .join("contexts/meta")
        .join(digest)
        .join("meta.json");
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(meta).ok()?).ok()?;
    v["Endpoints"]["docker"]["Host"]
        .as_str()
        .filter(|h| !h.is_empty())
        .map(str::to_string)
}

fn current_context(env: &Env, config_dir: &Path) -> Option<String> {
    env.docker_context.clone().or_else(|| {
        let v: serde_json::Value =
            serde_json::from_slice(&std::fs::read(config_dir.join("config.json")).ok()?).ok()?;
        v["currentContext"].as_str().map(str::to_string)
    })
}

/// The engine's address for `env`.
pub fn find(env: &Env) -> Found {
    if let Some(h) = &env.docker_host {
        return Found {
            host: h.clone(),
            from: "DOCKER_HOST",
        };
    }
    if let Some(dir) = env.config_dir()
        && let Some(name) = current_context(env, &dir).filter(|n| n != "default")
        && let Some(host) = context_endpoint(&dir, &name)
    {
        return Found {
            host,
            from: "the current docker context",
        };
    }
    Found {
        host: default_socket(env),
        from: "the platform default",
    }
}

#[cfg(windows)]
fn default_socket(_env: &Env) -> String {
    "npipe:////./pipe/docker_engine".to_string()
}

#[cfg(not(windows))]
fn default_socket(env: &Env) -> String {
    let system = Path::new("/var/run/docker.sock");
    // Docker Desktop (macOS, and Linux) puts the user's engine here when the system socket
    // is absent.
    let desktop = env.home.as_ref().map(|h| h.join(".docker/run/docker.sock"));
    match desktop {
        Some(d) if !system.exists() && d.exists() => format!("unix://{}", d.display()),
        _ => format!("unix://{}", system.display()),
    }
}

/// Whether the engine at `host` is the user's own: a local unix socket owned by the user
/// or root (not a shared engine another user runs), or a named pipe; never `tcp://` or
/// `ssh://`, where anyone who can reach the engine can start containers (SPEC.md 11).
pub fn is_local_owned(host: &str) -> bool {
    if host.starts_with("npipe://") {
        return true;
    }
    let Some(path) = host.strip_prefix("unix://") else {
        return false;
    };
    let Ok(meta) = std::fs::metadata(path) else {
        return false;
    };
    match (super::fs::owner(&meta), super::fs::current_user()) {
        (Some(owner), Some(me)) => owner == me || owner == 0,
        // No owners on this platform: a local socket is the user's.
        _ => true,
    }
}

/// Names a container engine's local socket goes by (each is root on its host): Docker's
/// unix socket and Docker Desktop's named pipes on Windows, Podman's, containerd's (k3s's
/// too), BuildKit's, CRI-O's and cri-dockerd's (SPEC.md 11).
const ENGINE_NAMES: [&str; 10] = [
    "docker.sock",
    "docker_engine",
    "dockerDesktopLinuxEngine",
    "dockerDesktopWindowsEngine",
    "podman.sock",
    "podman-machine-default-api.sock",
    "containerd.sock",
    "buildkitd.sock",
    "crio.sock",
    "cri-dockerd.sock",
];

/// Whether `path` is a container engine's socket (Docker, Podman, containerd, BuildKit): the one this daemon's engine address names,
/// or one at a well-known place or with a well-known name (a unix socket, or a Windows
/// named pipe such as `\\.\pipe\docker_engine`).
pub fn is_engine_socket(path: &std::path::Path) -> bool {
    let canon = |p: &std::path::Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    let me = canon(path);
    let engine = find(&Env::from_process());
    let mut known: Vec<PathBuf> = vec![
        "/var/run/docker.sock".into(),
        "/run/docker.sock".into(),
        "/run/podman/podman.sock".into(),
        "/run/containerd/containerd.sock".into(),
        "/run/buildkit/buildkitd.sock".into(),
    ];
    if let Some(p) = engine.host.strip_prefix("unix://") {
        known.push(p.into());
    }
    if let Some(p) = engine.host.strip_prefix("npipe://") {
        known.push(p.into());
    }
    // A pipe name's last part, whichever separator it was written with.
    let last = path
        .as_os_str()
        .to_string_lossy()
        .rsplit(['/', '\\'])
        .next()
        .unwrap_or_default()
        .to_ascii_lowercase();
    ENGINE_NAMES.iter().any(|n| n.to_ascii_lowercase() == last)
        || known.iter().any(|k| canon(k) == me)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_context(dir: &Path, name: &str, host: &str) {
        let digest = clawker_protocol::hex(&Sha256::digest(name.as_bytes()));
        let meta = dir.join("contexts/meta").join(digest);
        std::fs::create_dir_all(&meta).unwrap();
        std::fs::write(
            meta.join("meta.json"),
            serde_json::json!({"Name": name, "Metadata": {}, "Endpoints": {"docker": {"Host": host, "SkipTLSVerify": false}}}).to_string(),
        )
        .unwrap();
    }

    #[test]
    fn docker_host_then_the_current_context_then_the_default() {
        let home = tempfile::tempdir().unwrap();
        let docker = home.path().join(".docker");
        std::fs::create_dir_all(&docker).unwrap();
        write_context(
            &docker,
            "colima",
            "unix:///Users/me/.colima/default/docker.sock",
        );
        write_context(&docker, "build-box", "ssh://me@build-box");
        std::fs::write(docker.join("config.json"), r#"{"currentContext":"colima"}"#).unwrap();
        let env = Env {
            home: Some(home.path().to_path_buf()),
            ..Env::default()
        };
        assert_eq!(
            find(&env),
            Found {
                host: "unix:///Users/me/.colima/default/docker.sock".into(),
                from: "the current docker context"
            }
        );
        let named = Env {
            docker_context: Some("build-box".into()),
            ..env.clone()
        };
        assert_eq!(find(&named).host, "ssh://me@build-box");
        let explicit = Env {
            docker_host: Some("tcp://127.0.0.1:2375".into()),
            ..named
        };
        assert_eq!(find(&explicit).from, "DOCKER_HOST");
        // The "default" context, or one whose meta is missing, is the platform default.
        std::fs::write(
            docker.join("config.json"),
            r#"{"currentContext":"default"}"#,
        )
        .unwrap();
        assert_eq!(find(&env).from, "the platform default");
        let elsewhere = Env {
            docker_config: Some(home.path().join("nowhere")),
            ..env
        };
        assert!(find(&elsewhere).host.starts_with("unix://"));
    }

    #[test]
    fn the_engine_socket_is_known_by_path_and_by_name_on_every_os() {
        for p in [
            "/var/run/docker.sock",
            "/home/u/.docker/run/docker.sock",
            r"\\.\pipe\docker_engine",
            "//./pipe/docker_engine",
            r"\\.\pipe\dockerDesktopLinuxEngine",
            r"\\.\PIPE\Docker_Engine",
        ] {
            assert!(is_engine_socket(Path::new(p)), "{p}");
        }
        for p in ["/tmp/op-agent.sock", r"\\.\pipe\openssh-ssh-agent"] {
            assert!(!is_engine_socket(Path::new(p)), "{p}");
        }
    }
}
