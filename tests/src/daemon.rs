//! The real `hostproxy serve` and `mock-proxy` as child processes in scratch state, with a
//! scratch host git.

use super::*;

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
