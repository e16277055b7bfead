//! `hostproxy start|stop|status|token` and the idle-exit watcher, as processes.

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use e2e::*;

struct Scratch {
    dir: tempfile::TempDir,
    port: u16,
}

impl Scratch {
    fn new() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
            port: free_port(),
        }
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(bin("hostproxy"));
        c.args(args)
            .arg("--port")
            .arg(self.port.to_string())
            .env("CLAWKER_STATE_DIR", self.dir.path())
            .env("XDG_CONFIG_HOME", self.dir.path().join("config"))
            .env("HOME", self.dir.path())
            .stdin(Stdio::null());
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().unwrap()
    }

    fn pid_file(&self) -> std::path::PathBuf {
        self.dir.path().join("pids/hostproxy.pid")
    }

    /// The PID file's first line (the second is the port, once bound).
    fn pid(&self) -> Option<u32> {
        std::fs::read_to_string(self.pid_file())
            .ok()?
            .lines()
            .next()?
            .trim()
            .parse()
            .ok()
    }

    /// A command with this scratch environment but no `--port`: the config decides.
    fn bare(&self, args: &[&str]) -> Command {
        let mut c = Command::new(bin("hostproxy"));
        c.args(args)
            .env("CLAWKER_STATE_DIR", self.dir.path())
            .env("XDG_CONFIG_HOME", self.dir.path().join("config"))
            .env("HOME", self.dir.path())
            .env_remove("CLAWKER_HOST_PROXY_PORT")
            .stdin(Stdio::null());
        c
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if let Some(pid) = self.pid() {
            let _ = Command::new("kill").arg("-9").arg(pid.to_string()).status();
        }
    }
}

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            !s.rsplit(')')
                .next()
                .unwrap_or("")
                .trim_start()
                .starts_with('Z')
        })
        .unwrap_or(false)
}

fn text(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr)
}

#[test]
fn start_status_token_stop() {
    let s = Scratch::new();
    let st = s.run(&["status"]);
    assert_eq!(st.status.code(), Some(1), "{}", text(&st));
    let started = s.run(&["start"]);
    assert!(started.status.success(), "{}", text(&started));
    let pid = s.pid().expect("pid file");
    assert!(alive(pid));
    let again = s.run(&["start"]);
    assert!(again.status.success());
    assert!(text(&again).contains("already running"));
    assert_eq!(s.pid(), Some(pid), "a second daemon was started");

    let st = s.run(&["status", "--json"]);
    assert!(st.status.success(), "{}", text(&st));
    let v: serde_json::Value = serde_json::from_slice(&st.stdout).unwrap();
    assert_eq!(v["running"], true);
    assert_eq!(v["pid"], pid);
    assert_eq!(v["port"], s.port);
    assert_eq!(v["sessions"], 0);
    assert!(
        v["listen"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a == "127.0.0.1")
    );
    assert!(v["uptime_secs"].is_u64());
    // The tunnel's side too (newcomer review F14): nothing attached, where the tools are.
    assert_eq!(v["attachments"], serde_json::json!([]), "{v}");
    assert!(v["tools"].is_string(), "{v}");
    let st = text(&s.run(&["status"]));
    assert!(st.contains("attached: nothing"), "{st}");
    assert!(st.contains("container tools: "), "{st}");

    let tok = Command::new(bin("hostproxy"))
        .arg("token")
        .env("CLAWKER_STATE_DIR", s.dir.path())
        .output()
        .unwrap();
    let file = std::fs::read_to_string(s.dir.path().join("hostproxy.token")).unwrap();
    assert_eq!(String::from_utf8_lossy(&tok.stdout).trim(), file.trim());
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(s.dir.path().join("hostproxy.token"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    assert!(s.dir.path().join("logs/hostproxy.log").exists());

    let stopped = s.run(&["stop", "--wait", "5"]);
    assert!(stopped.status.success(), "{}", text(&stopped));
    assert!(!alive(pid));
    assert!(!s.pid_file().exists(), "pid file left behind");
    assert_eq!(s.run(&["status"]).status.code(), Some(1));
    assert!(
        s.run(&["stop"]).status.success(),
        "stop when stopped is fine"
    );
}

#[test]
fn the_config_files_port_is_the_one_start_status_and_stop_use() {
    let s = Scratch::new();
    let conf = s.dir.path().join("config/clawker");
    std::fs::create_dir_all(&conf).unwrap();
    std::fs::write(conf.join("hostproxy.toml"), format!("port = {}\n", s.port)).unwrap();
    let started = s.bare(&["start"]).output().unwrap();
    assert!(started.status.success(), "{}", text(&started));
    assert!(
        text(&started).contains(&format!("port {}", s.port)),
        "{}",
        text(&started)
    );
    let st = s.bare(&["status", "--json"]).output().unwrap();
    assert!(st.status.success(), "{}", text(&st));
    let v: serde_json::Value = serde_json::from_slice(&st.stdout).unwrap();
    assert_eq!(
        (v["running"].clone(), v["port"].clone()),
        (true.into(), s.port.into())
    );
    // A stop aimed at another port leaves this daemon alone.
    let wrong = s.bare(&["stop", "--port", "1"]).output().unwrap();
    assert!(!wrong.status.success());
    assert!(
        text(&wrong).contains(&format!("serves port {}", s.port)),
        "{}",
        text(&wrong)
    );
    let pid = s.pid().unwrap();
    assert!(alive(pid));
    let stopped = s
        .bare(&["stop", "--port", &s.port.to_string(), "--wait", "5"])
        .output()
        .unwrap();
    assert!(stopped.status.success(), "{}", text(&stopped));
    assert!(!alive(pid));
}

#[test]
fn stop_then_start_at_once_gives_a_new_daemon() {
    let s = Scratch::new();
    assert!(s.run(&["start"]).status.success());
    let old = s.pid().unwrap();
    // Keep a connection busy so the old daemon drains for a while after SIGTERM.
    let _busy = std::net::TcpStream::connect(("127.0.0.1", s.port)).unwrap();
    assert!(s.run(&["stop"]).status.success());
    let started = s.run(&["start"]);
    assert!(started.status.success(), "{}", text(&started));
    let new = s.pid().expect("a daemon runs");
    assert_ne!(new, old);
    assert!(alive(new));
    assert_eq!(s.run(&["status"]).status.code(), Some(0));
}

#[test]
fn two_starts_racing_a_status_give_one_daemon_and_both_succeed() {
    let s = Scratch::new();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let prober = {
        let (stop, dir, port) = (stop.clone(), s.dir.path().to_path_buf(), s.port);
        std::thread::spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let _ = Command::new(bin("hostproxy"))
                    .args(["status", "--port", &port.to_string()])
                    .env("CLAWKER_STATE_DIR", &dir)
                    .env("XDG_CONFIG_HOME", dir.join("config"))
                    .output();
            }
        })
    };
    let starts: Vec<_> = (0..2)
        .map(|_| {
            s.cmd(&["start"])
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for c in starts {
        let out = c.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    prober.join().unwrap();
    let daemons = Command::new("pgrep")
        .args([
            "-f",
            &format!("hostproxy serve --idle-exit --port {}", s.port),
        ])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&daemons.stdout).lines().count(), 1);
}

#[test]
fn a_state_dir_others_can_write_is_refused_and_nothing_is_written() {
    use std::os::unix::fs::PermissionsExt;
    let s = Scratch::new();
    let state = s.dir.path().join("loose");
    std::fs::create_dir(&state).unwrap();
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o777)).unwrap();
    let out = Command::new(bin("hostproxy"))
        .args(["serve", "--port", &s.port.to_string()])
        .env("CLAWKER_STATE_DIR", &state)
        .env("XDG_CONFIG_HOME", s.dir.path().join("config"))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        text(&out).contains(&format!("chmod 700 {}", state.display())),
        "{}",
        text(&out)
    );
    assert_eq!(
        std::fs::read_dir(&state).unwrap().count(),
        0,
        "no token, no pid file"
    );
    assert!(std::net::TcpStream::connect(("127.0.0.1", s.port)).is_err());
}

#[test]
fn concurrent_starts_leave_one_daemon() {
    let s = Scratch::new();
    let children: Vec<_> = (0..4)
        .map(|_| {
            s.cmd(&["start"])
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for c in children {
        let out = c.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", text(&out));
    }
    let pid = s.pid().unwrap();
    let ours: Vec<u32> = std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|p| {
            std::fs::read(format!("/proc/{p}/cmdline")).is_ok_and(|c| {
                let c = String::from_utf8_lossy(&c).replace('\0', " ");
                c.contains("hostproxy serve") && c.contains(&format!("--port {}", s.port))
            })
        })
        .filter(|p| alive(*p))
        .collect();
    assert_eq!(ours, vec![pid], "expected exactly one daemon");
}

#[test]
fn kill_dash_nine_then_start_again_and_taken_port_is_an_error() {
    let s = Scratch::new();
    assert!(s.run(&["start"]).status.success());
    let pid = s.pid().unwrap();
    Command::new("kill")
        .arg("-9")
        .arg(pid.to_string())
        .status()
        .unwrap();
    while alive(pid) {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        s.pid_file().exists(),
        "the stale pid file is the point of this test"
    );
    let again = s.run(&["start"]);
    assert!(again.status.success(), "{}", text(&again));
    let new_pid = s.pid().unwrap();
    assert_ne!(new_pid, pid);
    assert!(s.run(&["stop", "--wait", "5"]).status.success());

    // Something else on the port: a clear error naming it, no fallback.
    let squatter = std::net::TcpListener::bind(("127.0.0.1", s.port)).unwrap();
    let out = s.run(&["start"]);
    assert!(!out.status.success());
    assert!(text(&out).contains(&s.port.to_string()), "{}", text(&out));
    let out = s.run(&["serve"]);
    assert!(!out.status.success());
    assert!(
        text(&out).contains(&format!("port {} is already in use", s.port)),
        "{}",
        text(&out)
    );
    drop(squatter);
}

fn docker(args: &[&str]) -> String {
    let out = Command::new("docker").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "docker {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

struct Container(String);

impl Drop for Container {
    fn drop(&mut self) {
        let _ = Command::new("docker").args(["rm", "-f", &self.0]).output();
    }
}

fn run_container(labels: &[&str]) -> Container {
    let mut args = vec!["run", "-d", "--rm"];
    for l in labels {
        args.extend(["--label", l]);
    }
    args.extend([test_image(), "sleep", "300"]);
    Container(docker(&args))
}

#[test]
fn idle_exit_follows_labelled_containers() {
    require_docker();
    let s = Scratch::new();
    // Labels of this test's own: other tests run agent images (the example image carries the
    // default labels) on the same engine at the same time, and must not keep this daemon up.
    let tag = format!("hostproxy.e2e.idle={}", s.port);
    let conf = s.dir.path().join("config/clawker");
    std::fs::create_dir_all(&conf).unwrap();
    std::fs::write(
        conf.join("hostproxy.toml"),
        format!("[watcher]\nlabels = [\"{tag}\", \"hostproxy.e2e.purpose=agent\"]\n"),
    )
    .unwrap();
    let agent = run_container(&[&tag, "hostproxy.e2e.purpose=agent"]);
    let _other = run_container(&[&tag]);
    let mut daemon = s
        .cmd(&[
            "serve",
            "--idle-exit",
            "--grace-period",
            "1s",
            "--poll-interval",
            "30s",
        ])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        daemon.try_wait().unwrap().is_none(),
        "exited while a labelled container runs"
    );
    docker(&["rm", "-f", &agent.0]);
    // The die event makes the count current at once: well before the 30 s poll.
    let t = Instant::now();
    loop {
        if let Some(st) = daemon.try_wait().unwrap() {
            assert!(st.success());
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "daemon did not exit after the last agent container stopped"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(!s.pid_file().exists());
}

#[test]
fn a_container_bound_token_dies_with_its_container() {
    let d = DaemonProc::start(DaemonOpts::default());
    let c = run_container(&[]);
    let state = d.dir.path().join("state");
    let token_cmd = |args: &[&str]| {
        Command::new(bin("hostproxy"))
            .arg("token")
            .args(args)
            .env("CLAWKER_STATE_DIR", &state)
            .output()
            .unwrap()
    };
    // No scope: refused with a clear message.
    let out = token_cmd(&["issue", "--name", "agent1", "--container", &c.0]);
    assert!(!out.status.success());
    assert!(text(&out).contains("--allow"), "{}", text(&out));
    let out = token_cmd(&[
        "issue",
        "--name",
        "agent1",
        "--container",
        &c.0,
        "--allow",
        "open",
        "--allow",
        "git:github.com",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let token = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert_eq!(token.len(), 64);
    let listed = token_cmd(&["list", "--json"]);
    let listed_text = String::from_utf8_lossy(&listed.stdout).to_string();
    assert!(!listed_text.contains(&token), "token list shows a secret");
    let v: serde_json::Value = serde_json::from_str(&listed_text).unwrap();
    assert_eq!(v[0]["name"], "agent1");
    assert_eq!(
        v[0]["scopes"],
        serde_json::json!(["open", "git:github.com"])
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(state.join("tokens.json"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let open = || {
        http(
            "POST",
            &format!("{}/open/url", d.url()),
            Some(&token),
            Some(serde_json::json!({"url": "https://example.com/"})),
        )
        .0
    };
    assert_eq!(open(), 200);
    docker(&["rm", "-f", &c.0]);
    let t = Instant::now();
    while open() != 401 {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "the token outlived its container"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let listed = token_cmd(&["list", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
    assert_eq!(v[0]["revoked"], true);
}

#[test]
fn a_second_signal_during_the_drain_ends_the_daemon_at_once() {
    let s = Scratch::new();
    std::fs::write(
        s.dir.path().join(".gitconfig"),
        "[credential]\n\thelper = \"!f() { sleep 4; echo password=late; }; f\"\n",
    )
    .unwrap();
    let mut daemon = s.cmd(&["serve"]).stderr(Stdio::piped()).spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", s.port)).is_err() {
        assert!(Instant::now() < deadline, "the daemon did not come up");
        std::thread::sleep(Duration::from_millis(20));
    }
    let token = std::fs::read_to_string(s.dir.path().join("hostproxy.token")).unwrap();
    // A credential request in flight (the host's helper takes 4 s) keeps the drain going
    // (up to 5 s) after the first signal.
    let url = format!("http://127.0.0.1:{}", s.port);
    let poll = {
        let (url, token) = (url.clone(), token.trim().to_string());
        std::thread::spawn(move || {
            let _ = std::panic::catch_unwind(|| {
                http(
                    "POST",
                    &format!("{url}/git/credential"),
                    Some(&token),
                    Some(
                        serde_json::json!({"action": "get", "protocol": "https", "host": "slow.example"}),
                    ),
                )
            });
        })
    };
    std::thread::sleep(Duration::from_millis(300));
    let pid = daemon.id().to_string();
    let signal = || Command::new("kill").args(["-INT", &pid]).status().unwrap();
    signal();
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        daemon.try_wait().unwrap().is_none(),
        "still draining after one signal"
    );
    let t = Instant::now();
    signal();
    let st = daemon.wait().unwrap();
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "took {:?}",
        t.elapsed()
    );
    assert_eq!(st.code(), Some(130));
    let _ = poll.join();
}

/// SPEC.md 7: `hostproxy start` (the idle-exit daemon) counts live attachments, so a tunnel
/// container without the watcher's labels keeps it up; it exits once that container stops.
#[test]
fn start_stays_up_for_tunnel_containers_and_exits_after_them() {
    require_docker();
    let s = Scratch::new();
    let conf = s.dir.path().join("config/clawker");
    std::fs::create_dir_all(&conf).unwrap();
    // Watcher labels no container carries: only the attachment can keep it up.
    std::fs::write(
        conf.join("hostproxy.toml"),
        format!("[watcher]\nlabels = [\"hostproxy.e2e.none={}\"]\n", s.port),
    )
    .unwrap();
    let attach_label = format!("hostproxy.e2e.attach={}", s.port);
    let hp = |args: &[&str]| {
        let mut c = Command::new(bin("hostproxy"));
        c.args(args)
            .env("CLAWKER_STATE_DIR", s.dir.path())
            .env("XDG_CONFIG_HOME", s.dir.path().join("config"))
            .env("HOME", s.dir.path())
            .stdin(Stdio::null());
        c.output().unwrap()
    };
    let port = s.port.to_string();
    let started = hp(&[
        "start",
        "--port",
        &port,
        "--",
        "--grace-period",
        "1s",
        "--poll-interval",
        "1s",
        "--attach-label",
        &attach_label,
    ]);
    assert!(started.status.success(), "{}", text(&started));
    let pid = s.pid().expect("pid file");
    let c = e2e::Container::plain(
        &format!("hp-start-{}", s.port),
        busybox_image(),
        &["-v", "/usr:/usr:ro", "--label", &attach_label],
    );
    let t = Instant::now();
    while !String::from_utf8_lossy(&hp(&["attach", "--list"]).stdout).contains("serving") {
        assert!(t.elapsed() < Duration::from_secs(15), "not attached");
        std::thread::sleep(Duration::from_millis(100));
    }
    let st = text(&hp(&["status", "--port", &port]));
    assert!(st.contains("attached: 1 (1 serving)"), "{st}");
    // Well past the grace period and several polls: still up.
    std::thread::sleep(Duration::from_secs(4));
    assert!(
        alive(pid),
        "start's daemon exited with a tunnel container attached"
    );
    drop(c);
    let t = Instant::now();
    while alive(pid) {
        assert!(
            t.elapsed() < Duration::from_secs(15),
            "the daemon did not exit after its last attachment ended"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
