//! Containers and the test images (`FROM scratch`: busybox, our tools, arm64), built once
//! per run; the Docker bridge's gateway.

use super::*;

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
