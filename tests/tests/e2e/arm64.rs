//! The aarch64 container tools in a real arm64 container (`--platform linux/arm64`, run here
//! under qemu user emulation): a git credential fill, `ssh-add -l` through the bridge, and
//! an OAuth replay.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use e2e::*;

struct Container(String);

impl Drop for Container {
    fn drop(&mut self) {
        let _ = Command::new("docker").args(["rm", "-f", &self.0]).output();
    }
}

struct Kill(Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn exec(c: &Container, env: &[(&str, String)], script: &str) -> (bool, String, String) {
    exec_in(&c.0, env, script)
}

fn exec_in(id: &str, env: &[(&str, String)], script: &str) -> (bool, String, String) {
    let mut cmd = Command::new("docker");
    cmd.arg("exec");
    for (k, v) in env {
        cmd.args(["-e", &format!("{k}={v}")]);
    }
    let out = cmd.args([id, "sh", "-c", script]).output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn the_arm64_tools_work_in_an_arm64_container() {
    let image = arm64_image();
    let agent = Agent::start();
    let d = DaemonProc::start(DaemonOpts {
        args: vec!["--listen-docker-bridge".into()],
        agent: Some(agent.socket.clone()),
        ..DaemonOpts::default()
    });
    // The host's /usr (git, ssh-add) beside the arm64 busybox and tools.
    let id = Command::new("docker")
        .args(["run", "-d", "--rm", "--platform", "linux/arm64"])
        .args(["--add-host", "host.docker.internal:host-gateway"])
        .args(["-v", "/usr:/usr:ro", image, "sleep", "300"])
        .output()
        .unwrap();
    assert!(
        id.status.success(),
        "{}",
        String::from_utf8_lossy(&id.stderr)
    );
    let c = Container(String::from_utf8_lossy(&id.stdout).trim().to_string());
    let env = [
        (
            "CLAWKER_HOST_PROXY",
            format!("http://host.docker.internal:{}", d.port),
        ),
        ("CLAWKER_HOST_PROXY_TOKEN", d.token.clone()),
    ];

    // Really arm64: the container's own busybox runs as aarch64, and the tools copied in
    // are aarch64 ELF files (e_machine 0xb7).
    let (ok, arch, err) = exec(&c, &[], "uname -m");
    assert!(ok && arch.trim() == "aarch64", "{arch}{err}");
    for t in TOOLS {
        let elf = std::fs::read(dist_dir().join("aarch64").join(t)).unwrap();
        assert_eq!(
            (&elf[..4], elf[18], elf[19]),
            (&b"\x7fELF"[..], 0xb7, 0),
            "{t}"
        );
    }

    // git credential fill: the host's git in the container runs the aarch64 helper.
    let (ok, out, err) = exec(
        &c,
        &env,
        "printf 'protocol=https\\nhost=github.com\\n\\n' | GIT_CONFIG_NOSYSTEM=1 GIT_CONFIG_GLOBAL=/dev/null git -c credential.helper=clawker credential fill",
    );
    assert!(ok, "{out}{err}");
    assert!(out.contains("password=s3cret-pass"), "{out}{err}");

    // ssh-add -l through the bridge: the aarch64 clawker-socket-server in the container.
    // (`hostproxy bridge` is `attach`: the daemon's agent, the daemon's copy of the tools.)
    let mut bridge = Kill(
        d.hostproxy(&["bridge", "--container", &c.0, "--ssh"])
            .stdin(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let sock = [("SSH_AUTH_SOCK", "/root/.ssh/agent.sock".to_string())];
    let deadline = Instant::now() + Duration::from_secs(30);
    while !exec(&c, &[], "test -S /root/.ssh/agent.sock").0 {
        assert!(bridge.0.try_wait().unwrap().is_none(), "the bridge exited");
        assert!(
            Instant::now() < deadline,
            "the bridge socket never appeared"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let (ok, out, err) = exec(&c, &sock, "ssh-add -l");
    assert!(ok && out.contains("test@hostproxy"), "{out}{err}");

    // An OAuth replay: host-open registers and starts the aarch64 forwarder; the "browser"
    // hits the host's callback port; the container's own server (arm64 busybox httpd) gets
    // exactly the redirect.
    let cb_port = free_port();
    let script = login_script(
        cb_port,
        &format!(
            "https://auth.example.com/authorize?redirect_uri=http%3A%2F%2Flocalhost%3A{cb_port}%2Fcgi-bin%2Fcallback&state=arm-state"
        ),
    );
    let waiter = {
        let (c, env) = (c.0.clone(), env.clone());
        std::thread::spawn(move || exec_in(&c, &env, &script))
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::net::TcpStream::connect(("127.0.0.1", cb_port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "the callback was never registered"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let (s, _) = http(
        "GET",
        &format!("http://127.0.0.1:{cb_port}/cgi-bin/callback?code=arm-code&state=arm-state"),
        None,
        None,
    );
    assert_eq!(s, 200);
    let (ok, out, err) = waiter.join().unwrap();
    assert!(
        ok && out.trim() == "GET code=arm-code&state=arm-state",
        "{out}{err}\n{}",
        d.log_text()
    );
    assert!(
        d.launch_log()
            .contains("https://auth.example.com/authorize")
    );
}
