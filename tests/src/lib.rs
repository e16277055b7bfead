//! Harness for the end-to-end suite: locate (and build) the real binaries, run the real
//! daemon in a scratch state dir, start real peers (ssh-agent, gpg, Chromium, Docker).
//!
//! A peer that is missing fails the test with what to install; nothing is skipped.
#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod api_upstream;
pub mod git_server;

use std::io::{BufRead as _, BufReader, Write as _};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"))
}

/// Builds every binary of the workspace once per test process (`CARGO_BIN_EXE_*` only
/// exists inside one package) and returns the directory holding them.
pub fn bin_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "--workspace", "--bins", "--quiet"])
            .current_dir(workspace_root())
            .status()
            .expect("cannot run cargo build");
        assert!(status.success(), "cargo build --workspace --bins failed");
        target_dir().join("debug")
    })
}

pub fn bin(name: &str) -> PathBuf {
    let p = bin_dir().join(name);
    assert!(p.is_file(), "{} was not built", p.display());
    p
}

/// The static container tools `cargo xtask dist` builds.
pub const TOOLS: [&str; 7] = [
    "host-open",
    "docker-credential-clawker",
    "host-notify",
    "callback-forwarder",
    "git-credential-clawker",
    "ssh-agent-proxy",
    "clawker-socket-server",
];

/// The static container tools (`cargo xtask dist`), built on first use.
pub fn dist_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        if let Some(d) = std::env::var_os("CLAWKER_DIST_DIR") {
            return PathBuf::from(d);
        }
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let status = Command::new(cargo)
            .args(["run", "--quiet", "-p", "xtask", "--", "dist"])
            .current_dir(workspace_root())
            .status()
            .expect("cannot run cargo xtask dist");
        assert!(status.success(), "cargo xtask dist failed");
        target_dir().join("dist")
    })
}

/// A stand-in for a host program (launcher, notifier): appends `BEGIN`, each argument on its
/// own line, and `END` to `log` per call.
pub fn recording_script(path: &Path, log: &Path) {
    write_script(
        path,
        &format!(
            "{{ echo BEGIN; for a in \"$@\"; do echo \"$a\"; done; echo END; }} >> {}",
            log.display()
        ),
    );
}

pub fn write_script(path: &Path, body: &str) {
    std::fs::write(path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// Fails loudly, naming the package, when a peer is missing.
pub fn require(program: &str, package: &str) -> PathBuf {
    std::env::var_os("PATH")
        .and_then(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join(program))
                .find(|p| p.is_file())
        })
        .unwrap_or_else(|| panic!("{program} is required for this test: apt-get install {package}"))
}

/// Docker must answer; there is no skipping.
pub fn require_docker() {
    require("docker", "docker.io");
    let ok = Command::new("docker")
        .args(["info", "--format", "{{.ServerVersion}}"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "the Docker engine is required for this test and does not answer: start dockerd"
    );
}

/// Asks `probe` every 20 ms until it answers `Some`, for `timeout` at most: that answer, or
/// `None` when time ran out (the caller says what it waited for). The one way the suites
/// wait for something to happen, instead of a fixed sleep.
pub fn eventually<T>(timeout: Duration, mut probe: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = probe() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits (10 s at most) until something listens on loopback `port`: a test server of ours
/// (`what` names it in the failure).
pub fn wait_port(port: u16, what: &str) {
    let up = eventually(Duration::from_secs(10), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).ok()
    });
    assert!(up.is_some(), "{what} did not listen on port {port}");
}

/// Whether a daemon on `port` answers `GET /health` with 200 (within a second).
fn health_answers(port: u16) -> bool {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
    let req =
        format!("GET /health HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n");
    let mut head = [0u8; 12];
    s.write_all(req.as_bytes()).is_ok()
        && s.read_exact(&mut head).is_ok()
        && head.starts_with(b"HTTP/1.1 200")
}

/// A container name unique to this test run: `hp-TAG-PORT` (a free port is unique enough).
pub fn name(tag: &str) -> String {
    format!("hp-{tag}-{}", free_port())
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A real ssh-agent with one fresh ed25519 key, killed on drop.
#[derive(Debug)]
pub struct Agent {
    pub socket: PathBuf,
    pub pid: u32,
    pub pubkey: String,
    pub key_path: PathBuf,
    pub dir: tempfile::TempDir,
}

impl Agent {
    pub fn start() -> Self {
        require("ssh-agent", "openssh-client");
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("agent.sock");
        let out = Command::new("ssh-agent")
            .arg("-a")
            .arg(&socket)
            .arg("-s")
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let pid: u32 = text
            .split("SSH_AGENT_PID=")
            .nth(1)
            .and_then(|s| s.split(';').next())
            .and_then(|s| s.parse().ok())
            .expect("ssh-agent pid");
        let key_path = dir.path().join("id_ed25519");
        add_key(&socket, &key_path, "test@hostproxy");
        let pubkey = std::fs::read_to_string(key_path.with_extension("pub")).unwrap();
        Self {
            socket,
            pid,
            pubkey,
            key_path,
            dir,
        }
    }

    /// A further fresh ed25519 key in this agent, at `<dir>/<name>` (public key beside it).
    pub fn add_key(&self, name: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        add_key(&self.socket, &path, &format!("{name}@hostproxy"));
        path
    }

    /// `ssh-add -l` straight against the agent: (exit code, output).
    pub fn list(&self) -> (i32, String) {
        let out = Command::new("ssh-add")
            .arg("-l")
            .env("SSH_AUTH_SOCK", &self.socket)
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr),
        )
    }
}

/// The fingerprint of the public key file `path` (`SHA256:…`).
pub fn fingerprint_of(path: &Path) -> String {
    let out = Command::new("ssh-keygen")
        .arg("-lf")
        .arg(path)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .nth(1)
        .unwrap()
        .to_string()
}

/// `ssh-keygen` a fresh ed25519 key at `path` and `ssh-add` it to the agent at `socket`.
fn add_key(socket: &Path, path: &Path, comment: &str) {
    let st = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", comment, "-f"])
        .arg(path)
        .status()
        .unwrap();
    assert!(st.success());
    let st = Command::new("ssh-add")
        .arg("-q")
        .arg(path)
        .env("SSH_AUTH_SOCK", socket)
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(st.success());
}

impl Agent {
    /// `ssh-keygen -Y verify -n git` on the host of `sig` over `msg` by this agent's key.
    pub fn verify_git_signature(&self, msg: &str, sig: &str) -> Result<(), String> {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("msg"), msg).unwrap();
        std::fs::write(dir.path().join("msg.sig"), sig).unwrap();
        std::fs::write(
            dir.path().join("allowed"),
            format!("test@hostproxy namespaces=\"git\" {}", self.pubkey),
        )
        .unwrap();
        let verify = Command::new("ssh-keygen")
            .args(["-Y", "verify", "-n", "git", "-I", "test@hostproxy", "-f"])
            .arg(dir.path().join("allowed"))
            .arg("-s")
            .arg(dir.path().join("msg.sig"))
            .stdin(std::fs::File::open(dir.path().join("msg")).unwrap())
            .output()
            .unwrap();
        if verify.status.success() {
            Ok(())
        } else {
            Err(String::from_utf8_lossy(&verify.stderr).into_owned())
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = Command::new("kill").arg(self.pid.to_string()).status();
    }
}

/// Scratch git for the host side: its own HOME and global config whose first credential
/// helper logs each call to `helper.log` and whose second is `store`.
pub fn host_git_env(dir: &Path) -> Vec<(String, String)> {
    require("git", "git");
    let home = dir.join("host-home");
    std::fs::create_dir_all(&home).unwrap();
    let creds = dir.join("git-credentials");
    std::fs::write(&creds, "https://alice:s3cret-pass@github.com\n").unwrap();
    let config = dir.join("host-gitconfig");
    std::fs::write(
        &config,
        format!(
            "[credential]\n\thelper = \"!f() {{ echo \\\"$1\\\" >> {log}; cat > /dev/null; }}; f\"\n\thelper = store --file {creds}\n",
            log = dir.join("helper.log").display(),
            creds = creds.display()
        ),
    )
    .unwrap();
    vec![
        ("HOME".into(), home.display().to_string()),
        ("GIT_CONFIG_GLOBAL".into(), config.display().to_string()),
        ("GIT_CONFIG_NOSYSTEM".into(), "1".into()),
    ]
}

/// `--config FILE` for a daemon, FILE written in `dir` with `toml`.
pub fn config_args(dir: &Path, toml: &str) -> Vec<String> {
    let path = dir.join("hostproxy.toml");
    std::fs::write(&path, toml).unwrap();
    vec!["--config".into(), path.display().to_string()]
}

/// The real `hostproxy serve` in a scratch state dir; SIGTERM on drop.
#[derive(Debug)]
pub struct DaemonProc {
    pub child: Child,
    pub port: u16,
    pub token: String,
    pub dir: tempfile::TempDir,
    pub log: PathBuf,
    /// The label this daemon attaches by (`--attach-label`): its own, so daemons of tests
    /// running at once never attach each other's containers.
    pub attach_label: String,
    opts: DaemonOpts,
}

#[derive(Debug, Default, Clone)]
pub struct DaemonOpts {
    pub args: Vec<String>,
    /// The URL launcher; default: a script recording its arguments in `launch.log`.
    pub browser: Option<PathBuf>,
    pub env: Vec<(String, String)>,
    pub agent: Option<PathBuf>,
    /// The directory the daemon is started in (default: the test's).
    pub cwd: Option<PathBuf>,
    /// A command that execs the daemon (its path and arguments follow as `$0 "$@"`), such
    /// as `unshare -m … sh -c '…; exec "$0" "$@"'` for a private `/etc/hosts`.
    pub wrapper: Vec<String>,
    /// The `hostproxy` to run, daemon and command line (default: the workspace's build).
    pub program: Option<PathBuf>,
}

impl DaemonProc {
    pub fn start(opts: DaemonOpts) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let launcher = dir.path().join("launcher");
        recording_script(&launcher, &dir.path().join("launch.log"));
        let log = dir.path().join("daemon.log");
        let attach_label = format!("dev.clawker.hostproxy.test={port}");
        let mut d = Self {
            child: Command::new("true").spawn().unwrap(),
            port,
            token: String::new(),
            dir,
            log,
            attach_label,
            opts,
        };
        d.child = d.spawn();
        d.wait_healthy();
        d.token = std::fs::read_to_string(d.dir.path().join("state/hostproxy.token"))
            .unwrap()
            .trim()
            .to_string();
        d
    }

    fn spawn(&self) -> Child {
        let opts = &self.opts;
        let launcher = self.dir.path().join("launcher");
        let mut cmd = match opts.wrapper.split_first() {
            Some((program, args)) => {
                let mut c = Command::new(program);
                c.args(args).arg(self.program());
                c
            }
            None => Command::new(self.program()),
        };
        cmd.arg("serve")
            .arg("--port")
            .arg(self.port.to_string())
            .arg("--attach-label")
            .arg(&self.attach_label)
            .arg("--browser")
            .arg(opts.browser.as_ref().unwrap_or(&launcher))
            .args(&opts.args)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("CLAWKER_STATE_DIR", self.dir.path().join("state"))
            .env("XDG_CONFIG_HOME", self.dir.path().join("config"))
            .env("RUST_LOG", "debug")
            .envs(host_git_env(self.dir.path()))
            .envs(opts.env.clone())
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(self.dir.path().join("daemon.out")).unwrap())
            .stderr(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&self.log)
                    .unwrap(),
            );
        if let Some(a) = &opts.agent {
            cmd.env("SSH_AUTH_SOCK", a);
        }
        if let Some(dir) = &opts.cwd {
            cmd.current_dir(dir);
        }
        cmd.spawn().expect("cannot start hostproxy")
    }

    /// `kill -9` the daemon (no cleanup at all), then start it again on the same port and
    /// state dir.
    pub fn kill9_and_restart(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
        self.child = self.spawn();
        self.wait_healthy();
    }

    /// `hostproxy stop` (SIGTERM: a graceful stop, the daemon's own cleanup), waits until
    /// it has exited, then starts it again on the same port and state dir.
    pub fn stop_and_restart(&mut self) {
        let out = self.hostproxy(&["stop"]).output().unwrap();
        assert!(
            out.status.success(),
            "hostproxy stop: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let status = self.child.wait().unwrap();
        assert!(status.success(), "the daemon's graceful stop: {status}");
        self.child = self.spawn();
        self.wait_healthy();
    }

    fn wait_healthy(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("hostproxy exited with {status}:\n{}", self.log_text());
            }
            // Answering `/health`, not merely listening: the daemon binds its port first and
            // serves (after the tools are unpacked and the banner printed) a moment later.
            if health_answers(self.port) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("hostproxy did not come up:\n{}", self.log_text());
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn launch_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("launch.log")).unwrap_or_default()
    }

    pub fn helper_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("helper.log")).unwrap_or_default()
    }

    /// `docker run --rm` of a container wired to this daemon over the bridge gateway
    /// (`host.docker.internal`, its URL and token); add the image and the command.
    pub fn docker_run(&self) -> Command {
        let mut c = Command::new("docker");
        c.args([
            "run",
            "--rm",
            "--add-host",
            "host.docker.internal:host-gateway",
        ])
        .arg("-e")
        .arg(format!(
            "CLAWKER_HOST_PROXY=http://host.docker.internal:{}",
            self.port
        ))
        .arg("-e")
        .arg(format!("CLAWKER_HOST_PROXY_TOKEN={}", self.token));
        c
    }

    /// `hostproxy ARGS…` against this daemon, which must succeed.
    pub fn cli_ok(&self, args: &[&str]) {
        let out = self.hostproxy(args).output().unwrap();
        assert!(
            out.status.success(),
            "hostproxy {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// `hostproxy ARGS…` against this daemon, which must fail saying `expect`.
    pub fn cli_refused(&self, args: &[&str], expect: &str) {
        let out = self.hostproxy(args).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && err.contains(expect),
            "hostproxy {args:?} should fail saying {expect:?}: {err}"
        );
    }

    /// `hostproxy ARGS…` against this daemon's state dir (its control socket).
    /// The `hostproxy` this daemon runs.
    pub fn program(&self) -> PathBuf {
        self.opts
            .program
            .clone()
            .unwrap_or_else(|| bin("hostproxy"))
    }

    pub fn hostproxy(&self, args: &[&str]) -> Command {
        let mut c = Command::new(self.program());
        c.args(args)
            .env("CLAWKER_STATE_DIR", self.dir.path().join("state"))
            .env("XDG_CONFIG_HOME", self.dir.path().join("config"));
        // The daemon's own config file, as the user's commands would read it.
        if let Some(i) = self.opts.args.iter().position(|a| a == "--config") {
            c.env("CLAWKER_HOST_PROXY_CONFIG", &self.opts.args[i + 1]);
        }
        c
    }

    /// `docker run -d` of a container for the tunnel: `--network none`, the host's `/usr`
    /// read-only (git, ssh, gpg), and the flags `hostproxy run-flags --gpg --no-mount`
    /// prints (the daemon copies the tools in, the path most of the suite tests), with this
    /// daemon's own attach label. Add the image and the command.
    pub fn tunnel_run(&self) -> Command {
        self.tunnel_run_on("none")
    }

    /// [`DaemonProc::tunnel_run`] on the Docker network `network`.
    pub fn tunnel_run_on(&self, network: &str) -> Command {
        self.run_flags_run(network, &["--gpg", "--no-mount"])
    }

    /// `docker run -d --network NETWORK -v /usr:/usr:ro` and the arguments
    /// `hostproxy run-flags --lines EXTRA…` prints, the attach label this daemon's own.
    pub fn run_flags_run(&self, network: &str, extra: &[&str]) -> Command {
        let out = self
            .hostproxy(&[&["run-flags", "--lines"], extra].concat())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "run-flags failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut c = Command::new("docker");
        c.args(["run", "-d", "--network", network, "-v", "/usr:/usr:ro"]);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let args: Vec<&str> = text.lines().collect();
        for pair in args.chunks(2) {
            // The test images keep their own PATH (busybox's /bin before the host's /usr,
            // mounted for git and ssh): run-flags' PATH would put the host's GNU tools first.
            if pair[1].starts_with("PATH=") {
                continue;
            }
            for arg in pair {
                c.arg(if *arg == "dev.clawker.hostproxy=attach" {
                    self.attach_label.as_str()
                } else {
                    arg
                });
            }
        }
        c
    }

    /// `hostproxy attach --list --json` of this daemon.
    pub fn attachments(&self) -> Vec<serde_json::Value> {
        let out = self
            .hostproxy(&["attach", "--list", "--json"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "attach --list failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// Waits until the attachment `name` is serving; returns its `attach --list` entry.
    pub fn wait_serving(&self, name: &str, within: Duration) -> serde_json::Value {
        let deadline = Instant::now() + within;
        loop {
            if let Some(a) = self
                .attachments()
                .into_iter()
                .find(|a| a["name"] == name && a["state"] == "serving")
            {
                return a;
            }
            assert!(
                Instant::now() < deadline,
                "{name} was not attached in {within:?}: {:?}\n{}",
                self.attachments(),
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Environment a container tool needs to reach this daemon from the host itself.
    pub fn tool_env(&self) -> Vec<(String, String)> {
        vec![
            ("CLAWKER_HOST_PROXY".into(), self.url()),
            ("CLAWKER_HOST_PROXY_TOKEN".into(), self.token.clone()),
        ]
    }

    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        self.child.wait().unwrap()
    }
}

impl Drop for DaemonProc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.terminate();
        }
    }
}

/// A tool command with a clean environment (PATH kept, our binaries first) plus `env`.
pub fn tool(name: &str, env: &[(String, String)]) -> Command {
    command(bin(name), env)
}

/// Any program with the same clean environment as [`tool`].
pub fn command(program: impl AsRef<std::ffi::OsStr>, env: &[(String, String)]) -> Command {
    let mut c = Command::new(program);
    c.env_clear()
        .env(
            "PATH",
            format!(
                "{}:{}",
                bin_dir().display(),
                std::env::var("PATH").unwrap_or_default()
            ),
        )
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    c
}

/// `ssh-agent-proxy` on `socket`, ready to accept; killed on drop.
#[derive(Debug)]
pub struct AgentProxy(Child);

impl AgentProxy {
    pub fn start(env: &[(String, String)], socket: &Path) -> Self {
        let child = tool("ssh-agent-proxy", env)
            .arg("--socket")
            .arg(socket)
            .stdout(Stdio::null())
            .spawn()
            .expect("cannot start ssh-agent-proxy");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::os::unix::net::UnixStream::connect(socket).is_err() {
            assert!(
                Instant::now() < deadline,
                "ssh-agent-proxy never listened on {}",
                socket.display()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Self(child)
    }
}

impl Drop for AgentProxy {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs a command with `input` on stdin: (exit code, stdout, stderr).
pub fn run_with_input(cmd: &mut Command, input: &str) -> (i32, String, String) {
    use std::io::Write;
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A container, removed on drop.
#[derive(Debug)]
pub struct Container(pub String);

impl Container {
    /// Runs `cmd` (a `docker run -d …`) and takes the container it printed.
    pub fn start(cmd: &mut Command) -> Self {
        let out = cmd.output().unwrap();
        assert!(
            out.status.success(),
            "docker run failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Self(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    /// `docker run -d --network none [EXTRA…] --name NAME IMAGE sleep 300`: a container
    /// with no label and no network, that nothing attaches by itself.
    pub fn plain(name: &str, image: &str, extra: &[&str]) -> Self {
        Self::start(
            Command::new("docker")
                .args(["run", "-d", "--network", "none"])
                .args(extra)
                .args(["--name", name, image, "sleep", "300"]),
        )
    }

    /// `sh -c SCRIPT` in the container with `env` (`KEY=value`): success, stdout, stderr.
    pub fn exec(&self, env: &[&str], script: &str) -> (bool, String, String) {
        let mut c = Command::new("docker");
        c.arg("exec");
        for e in env {
            c.args(["-e", e]);
        }
        let out = c.args([&self.0, "sh", "-c", script]).output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = Command::new("docker").args(["rm", "-f", &self.0]).output();
    }
}

/// A scratch GnuPG home with one signing key, `Bridge Test <bridge@example.com>`; its agent
/// is stopped on drop.
#[derive(Debug)]
pub struct Gpg {
    pub home: tempfile::TempDir,
}

impl Gpg {
    pub fn new() -> Self {
        require("gpg", "gnupg");
        require("gpg-agent", "gpg-agent");
        // Short path: agent socket paths are limited to ~100 bytes.
        let home = tempfile::Builder::new()
            .prefix("g")
            .tempdir_in("/tmp")
            .unwrap();
        let me = Self { home };
        let st = me
            .command()
            .args([
                "--batch",
                "--passphrase",
                "",
                "--quick-gen-key",
                "Bridge Test <bridge@example.com>",
                "ed25519",
                "sign",
                "never",
            ])
            .output()
            .unwrap();
        assert!(
            st.status.success(),
            "{}",
            String::from_utf8_lossy(&st.stderr)
        );
        me
    }

    /// `gpg` with this home.
    pub fn command(&self) -> Command {
        let mut c = Command::new("gpg");
        c.env("GNUPGHOME", self.home.path());
        c
    }

    /// `gpg --decrypt` of an armored signed message on the host: (plain text, gpg's stderr).
    pub fn verify(&self, signed: &str) -> (bool, String, String) {
        let mut v = self
            .command()
            .args(["--batch", "--decrypt"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        v.stdin
            .take()
            .unwrap()
            .write_all(signed.as_bytes())
            .unwrap();
        let v = v.wait_with_output().unwrap();
        (
            v.status.success(),
            String::from_utf8_lossy(&v.stdout).into_owned(),
            String::from_utf8_lossy(&v.stderr).into_owned(),
        )
    }
}

impl Default for Gpg {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for Gpg {
    fn drop(&mut self) {
        let _ = Command::new("gpgconf")
            .arg("--kill")
            .arg("gpg-agent")
            .env("GNUPGHOME", self.home.path())
            .status();
    }
}

/// `FROM scratch` with Debian's static busybox and nothing of ours: the tunnel copies the
/// tools in.
pub fn busybox_image() -> &'static str {
    static TAG: OnceLock<String> = OnceLock::new();
    TAG.get_or_init(|| build_image("hostproxy-e2e-busybox:latest", true, false))
}

/// `FROM scratch` with nothing but the static tools: no libc, no shell, no CA store.
pub fn tools_only_image() -> &'static str {
    static TAG: OnceLock<String> = OnceLock::new();
    TAG.get_or_init(|| build_image("hostproxy-e2e-bare:latest", false, true))
}

/// The test image: `FROM scratch` + Debian's static busybox (installed as /bin applets) +
/// the static container tools. Built once per test process.
pub fn test_image() -> &'static str {
    static TAG: OnceLock<String> = OnceLock::new();
    TAG.get_or_init(|| build_image("hostproxy-e2e:latest", true, true))
}

/// Where `cargo xtask test` puts Debian's arm64 `busybox-static` (from its .deb).
pub fn arm64_busybox() -> PathBuf {
    let p = workspace_root().join("target/peers/arm64/busybox");
    assert!(
        p.is_file(),
        "{} is missing: `cargo xtask test` fetches it (dpkg --add-architecture arm64; apt-get download busybox-static:arm64)",
        p.display()
    );
    p
}

/// arm64 programs run here under qemu user emulation: binfmt_misc mounted and qemu-aarch64
/// registered with the F flag (the interpreter is opened now, so it works inside
/// containers too) and P (argv[0] preserved, through Debian's `aarch64-binfmt-P` name,
/// which busybox's applets need). Root only, as the tests run in CI.
pub fn arm64_emulation() {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        require("qemu-aarch64-static", "qemu-user-static");
        let qemu = Path::new("/usr/libexec/qemu-binfmt/aarch64-binfmt-P");
        assert!(
            qemu.exists(),
            "{} is missing: apt-get install qemu-user-static",
            qemu.display()
        );
        let dir = Path::new("/proc/sys/fs/binfmt_misc");
        if !dir.join("register").exists() {
            let st = Command::new("mount")
                .args(["-t", "binfmt_misc", "binfmt_misc"])
                .arg(dir)
                .status()
                .expect("cannot run mount");
            assert!(st.success(), "cannot mount binfmt_misc (the arm64 tests need root)");
        }
        let entry = dir.join("qemu-aarch64");
        let registered = std::fs::read_to_string(&entry).unwrap_or_default();
        if !registered.is_empty() && !registered.lines().any(|l| l.starts_with("flags:") && l.contains('P')) {
            // An older registration without P: replace it.
            std::fs::write(&entry, "-1").expect("cannot remove the old qemu-aarch64 entry");
        }
        if !entry.exists() {
            let rule = format!(
                ":qemu-aarch64:M::{}:{}:{}:FP",
                "\\x7fELF\\x02\\x01\\x01\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x02\\x00\\xb7\\x00",
                "\\xff\\xff\\xff\\xff\\xff\\xff\\xff\\x00\\xff\\xff\\xff\\xff\\xff\\xff\\xff\\xff\\xfe\\xff\\xff\\xff",
                qemu.display()
            );
            std::fs::write(dir.join("register"), rule)
                .expect("cannot register qemu-aarch64 with binfmt_misc");
        }
    });
}

/// The arm64 test image: `FROM scratch --platform linux/arm64` with Debian's arm64 static
/// busybox and the aarch64 container tools (`target/dist/aarch64/`).
pub fn arm64_image() -> &'static str {
    static TAG: OnceLock<String> = OnceLock::new();
    TAG.get_or_init(|| {
        arm64_emulation();
        require_docker();
        let tag = "hostproxy-e2e-arm64:latest";
        let ctx = tempfile::tempdir().unwrap();
        std::fs::copy(arm64_busybox(), ctx.path().join("busybox")).unwrap();
        let mut copies = String::new();
        for name in TOOLS {
            let from = dist_dir().join("aarch64").join(name);
            std::fs::copy(&from, ctx.path().join(name))
                .unwrap_or_else(|e| panic!("{}: {e} (cargo xtask dist)", from.display()));
            copies.push_str(&format!("COPY {name} /opt/clawker/bin/{name}\n"));
        }
        std::fs::write(
            ctx.path().join("Dockerfile"),
            format!(
                "FROM scratch\n\
                 COPY busybox /bin/busybox\n\
                 RUN [\"/bin/busybox\", \"--install\", \"-s\", \"/bin\"]\n\
                 RUN [\"/bin/busybox\", \"mkdir\", \"-p\", \"/tmp\", \"/root\", \"/etc\"]\n\
                 RUN [\"/bin/busybox\", \"ln\", \"-s\", \"usr/lib\", \"/lib\"]\n\
                 RUN [\"/bin/busybox\", \"ln\", \"-s\", \"usr/lib64\", \"/lib64\"]\n\
                 RUN [\"/bin/sh\", \"-c\", \"echo root:x:0:0:root:/root:/bin/sh > /etc/passwd; echo root:x:0: > /etc/group; chmod 1777 /tmp\"]\n\
                 {copies}ENV PATH=/opt/clawker/bin:/bin:/usr/bin\nENV HOME=/root\n"
            ),
        )
        .unwrap();
        let out = Command::new("docker")
            .args(["build", "-q", "--platform", "linux/arm64", "-t", tag])
            .arg(ctx.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "docker build (arm64) failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        tag.to_string()
    })
}

fn build_image(tag: &str, with_busybox: bool, with_tools: bool) -> String {
    {
        require_docker();
        let ctx = tempfile::tempdir().unwrap();
        let mut base = String::from("FROM scratch\n");
        if with_busybox {
            let busybox = require("busybox", "busybox-static");
            std::fs::copy(&busybox, ctx.path().join("busybox")).unwrap();
            // /lib and /lib64 point into /usr so host tools work when the test bind-mounts the
            // host's /usr read-only (the tools themselves live in /opt/clawker/bin).
            base.push_str(concat!(
                "COPY busybox /bin/busybox\n",
                "RUN [\"/bin/busybox\", \"--install\", \"-s\", \"/bin\"]\n",
                "RUN [\"/bin/busybox\", \"mkdir\", \"-p\", \"/tmp\", \"/root\", \"/etc\"]\n",
                "RUN [\"/bin/busybox\", \"ln\", \"-s\", \"usr/lib\", \"/lib\"]\n",
                "RUN [\"/bin/busybox\", \"ln\", \"-s\", \"usr/lib64\", \"/lib64\"]\n",
                "RUN [\"/bin/sh\", \"-c\", \"echo root:x:0:0:root:/root:/bin/sh > /etc/passwd; echo root:x:0: > /etc/group; chmod 1777 /tmp\"]\n",
            ));
        }
        let mut copies = String::new();
        for name in TOOLS.iter().filter(|_| with_tools) {
            std::fs::copy(dist_dir().join(name), ctx.path().join(name)).unwrap();
            copies.push_str(&format!("COPY {name} /opt/clawker/bin/{name}\n"));
        }
        std::fs::write(
            ctx.path().join("Dockerfile"),
            format!("{base}{copies}ENV PATH=/opt/clawker/bin:/bin:/usr/bin\nENV HOME=/root\n"),
        )
        .unwrap();
        let out = Command::new("docker")
            .args(["build", "-q", "-t", tag])
            .arg(ctx.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "docker build failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        tag.to_string()
    }
}

/// A tiny authorization server: any GET answers 302 to its `redirect_uri` with a code and
/// the request's `state`, as an OAuth provider does after the user logs in. `{state}` in
/// `code` is replaced by the request's state (a code per login).
pub fn authorization_server(code: &'static str) -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { continue };
            let mut line = String::new();
            if BufReader::new(&s).read_line(&mut line).is_err() {
                continue;
            }
            let target = line.split(' ').nth(1).unwrap_or("/").to_string();
            let url = reqwest::Url::parse(&format!("http://x{target}")).unwrap();
            let param = |k: &str| {
                url.query_pairs()
                    .find(|(n, _)| n == k)
                    .map(|(_, v)| v.into_owned())
            };
            let state = param("state").unwrap_or_default();
            let reply = match param("redirect_uri") {
                Some(r) => format!(
                    "HTTP/1.1 302 Found\r\nLocation: {r}?code={}&state={state}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                    code.replace("{state}", &state)
                ),
                None => "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                    .to_string(),
            };
            let _ = s.write_all(reply.as_bytes());
        }
    });
    port
}

/// A shell script for a busybox container: a CLI's stand-in login server (httpd on `port`,
/// a CGI at `/cgi-bin/callback` that records `METHOD QUERY`), then `$BROWSER LOGIN_URL`
/// (default `host-open`), then what the server got (waiting up to a minute).
pub fn login_script(port: u16, login_url: &str) -> String {
    format!(
        r#"set -e
mkdir -p /www/cgi-bin
printf '#!/bin/sh\necho "$REQUEST_METHOD $QUERY_STRING" > /tmp/got\nprintf "Content-Type: text/plain\r\n\r\nok"\n' > /www/cgi-bin/callback
chmod +x /www/cgi-bin/callback
httpd -p {port} -h /www
"${{BROWSER:-host-open}}" '{login_url}'
i=0; while [ ! -s /tmp/got ] && [ $i -lt 600 ]; do sleep 0.1; i=$((i+1)); done
cat /tmp/got"#
    )
}

/// The gateway address containers on the default bridge reach the host at.
pub fn docker_gateway() -> String {
    let out = Command::new("docker")
        .args([
            "network",
            "inspect",
            "bridge",
            "--format",
            "{{range .IPAM.Config}}{{.Gateway}} {{.Subnet}}{{end}}",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let mut parts = text.split_whitespace();
    match (parts.next(), parts.next()) {
        (Some(gw), Some(_)) if gw.parse::<std::net::IpAddr>().is_ok() => gw.to_string(),
        (Some(subnet), None) | (_, Some(subnet)) => {
            let net = subnet.split('/').next().unwrap();
            let mut octets: Vec<u8> = net.split('.').map(|o| o.parse().unwrap()).collect();
            octets[3] += 1;
            octets
                .iter()
                .map(u8::to_string)
                .collect::<Vec<_>>()
                .join(".")
        }
        _ => panic!("cannot find the docker bridge gateway: {text:?}"),
    }
}

/// A real `ssh` login as the current user to the test sshd on `port`, signing through the
/// agent at `sock`, running `echo logged-in-through-hostproxy`: (logged in, ssh's stderr).
pub fn ssh_login(sock: &Path, port: u16) -> (bool, String) {
    let user = String::from_utf8(Command::new("id").arg("-un").output().unwrap().stdout).unwrap();
    let out = Command::new("ssh")
        .args([
            "-F",
            "/dev/null",
            "-o",
            "BatchMode=yes",
            "-o",
            "StrictHostKeyChecking=no",
        ])
        .args(["-o", "UserKnownHostsFile=/dev/null", "-o"])
        .arg(format!("IdentityAgent={}", sock.display()))
        .args(["-p", &port.to_string()])
        .arg(format!("{}@127.0.0.1", user.trim()))
        .arg("echo logged-in-through-hostproxy")
        .output()
        .unwrap();
    (
        out.status.success()
            && String::from_utf8_lossy(&out.stdout).contains("logged-in-through-hostproxy"),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A throwaway sshd on loopback that accepts `agent`'s key for the current user.
#[derive(Debug)]
pub struct Sshd {
    child: std::process::Child,
    pub port: u16,
    _dir: tempfile::TempDir,
}

impl Sshd {
    pub fn start(pubkey: &str) -> Self {
        let sshd = ["/usr/sbin/sshd", "/usr/bin/sshd"]
            .into_iter()
            .map(std::path::PathBuf::from)
            .find(|p| p.is_file())
            .unwrap_or_else(|| require("sshd", "openssh-server"));
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path();
        assert!(
            Command::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", "", "-f"])
                .arg(p.join("hostkey"))
                .status()
                .unwrap()
                .success()
        );
        std::fs::write(p.join("authorized_keys"), pubkey).unwrap();
        let _ = std::fs::create_dir_all("/run/sshd");
        let port = free_port();
        std::fs::write(
            p.join("sshd_config"),
            format!(
                "Port {port}\nListenAddress 127.0.0.1\nHostKey {dir}/hostkey\nAuthorizedKeysFile {dir}/authorized_keys\nPidFile {dir}/sshd.pid\nStrictModes no\nUsePAM no\nPermitRootLogin prohibit-password\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n",
                dir = p.display()
            ),
        )
        .unwrap();
        let child = Command::new(sshd)
            .arg("-D")
            .arg("-e")
            .arg("-f")
            .arg(p.join("sshd_config"))
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let t = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(t.elapsed() < Duration::from_secs(10), "sshd did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Self {
            child,
            port,
            _dir: dir,
        }
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The real `mock-proxy` binary on a free port; killed on drop.
#[derive(Debug)]
pub struct MockProc {
    pub child: Child,
    pub port: u16,
    pub token: String,
}

impl MockProc {
    pub fn start(token: &str, extra: &[&str]) -> Self {
        let port = free_port();
        let child = Command::new(bin("mock-proxy"))
            .args(["--port", &port.to_string(), "--token", token])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .expect("cannot start mock-proxy");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "mock-proxy did not come up");
            std::thread::sleep(Duration::from_millis(20));
        }
        Self {
            child,
            port,
            token: token.to_string(),
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn tool_env(&self) -> Vec<(String, String)> {
        vec![
            ("CLAWKER_HOST_PROXY".into(), self.url()),
            ("CLAWKER_HOST_PROXY_TOKEN".into(), self.token.clone()),
        ]
    }

    /// A control call: (status, JSON body).
    pub fn control(
        &self,
        method: &str,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> (u16, serde_json::Value) {
        http(method, &format!("{}{path}", self.url()), None, body)
    }
}

impl Drop for MockProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One HTTP request of a test: the one way every test in the workspace talks HTTP to a
/// daemon or a mock (no proxy, ever).
#[derive(Debug, Clone, Default)]
pub struct Req {
    pub method: String,
    pub url: String,
    pub token: Option<String>,
    pub headers: Vec<(String, String)>,
    /// A JSON body (sent as `application/json`).
    pub json: Option<serde_json::Value>,
    /// A raw body (the case sets its own content type, if any).
    pub raw: Option<String>,
}

impl Req {
    pub fn new(method: &str, url: impl Into<String>) -> Self {
        Self {
            method: method.to_string(),
            url: url.into(),
            ..Self::default()
        }
    }

    pub fn token(mut self, token: Option<&str>) -> Self {
        self.token = token.map(str::to_string);
        self
    }

    pub fn json(mut self, body: Option<serde_json::Value>) -> Self {
        self.json = body;
        self
    }

    pub fn header(mut self, name: &str, value: impl Into<String>) -> Self {
        self.headers.push((name.to_string(), value.into()));
        self
    }

    /// Sends it: (status, body as JSON, or as a JSON string when it is not JSON).
    pub async fn send_async(self, client: &reqwest::Client) -> (u16, serde_json::Value) {
        let method = reqwest::Method::from_bytes(self.method.as_bytes()).unwrap();
        let mut req = client.request(method, &self.url);
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        for (k, v) in &self.headers {
            req = req.header(k, v);
        }
        if let Some(b) = &self.json {
            req = req.json(b);
        }
        if let Some(r) = self.raw {
            req = req.body(r);
        }
        let r = req.send().await.unwrap();
        let status = r.status().as_u16();
        let text = r.text().await.unwrap_or_default();
        (
            status,
            serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)),
        )
    }

    /// Sends it from synchronous test code.
    pub fn send(self) -> (u16, serde_json::Value) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(self.send_async(&client()))
    }
}

/// The tests' HTTP client: never through a proxy.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
}

/// One blocking JSON request: (status, body as JSON or as a string).
pub fn http(
    method: &str,
    url: &str,
    token: Option<&str>,
    body: Option<serde_json::Value>,
) -> (u16, serde_json::Value) {
    Req::new(method, url).token(token).json(body).send()
}
