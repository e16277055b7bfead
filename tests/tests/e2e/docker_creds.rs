//! Docker registry credentials (SPEC.md 10) end to end: skopeo in a container reads a
//! private image's manifest from a real registry (Debian's docker-registry with htpasswd
//! auth) through `docker-credential-clawker` (`credsStore` for the docker CLI, `credHelpers`
//! for skopeo, which reads only that), the credential coming from the host's own store
//! (a credential helper named by `credHelpers` in a scratch `DOCKER_CONFIG`); a container
//! whose scopes do not name the registry gets nothing, and no helper runs.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use e2e::*;

struct Registry {
    child: std::process::Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Registry {
    /// A registry on `ip` (this host's own address) that wants `user`/`pass`.
    fn start(ip: &str, user: &str, pass: &str) -> Self {
        let registry = require("docker-registry", "docker-registry");
        let htpasswd = require("htpasswd", "apache2-utils");
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let st = Command::new(htpasswd)
            .args(["-Bbc"])
            .arg(dir.path().join("htpasswd"))
            .args([user, pass])
            .stderr(Stdio::null())
            .status()
            .unwrap();
        assert!(st.success());
        std::fs::write(
            dir.path().join("config.yml"),
            format!(
                "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {d}/data\nhttp:\n  addr: {ip}:{port}\nauth:\n  htpasswd:\n    realm: test\n    path: {d}/htpasswd\n",
                d = dir.path().display()
            ),
        )
        .unwrap();
        let child = Command::new(registry)
            .arg("serve")
            .arg(dir.path().join("config.yml"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let t = Instant::now();
        while std::net::TcpStream::connect((ip, port)).is_err() {
            assert!(
                t.elapsed() < Duration::from_secs(15),
                "the registry did not start"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Self {
            child,
            port,
            _dir: dir,
        }
    }
}

#[test]
fn skopeo_in_a_container_reads_a_private_manifest_with_the_hosts_docker_credential() {
    let skopeo = require("skopeo", "skopeo");
    let image = busybox_image();
    // On the Docker bridge's gateway (this host), where containers on the default bridge
    // reach it: a container in the host's network namespace is not attached (SPEC.md 11).
    let gateway = docker_gateway();
    let reg = Registry::start(&gateway, "alice", "s3cret-reg");
    let registry = format!("{gateway}:{}", reg.port);
    // An image in it, pushed with the credential.
    let out = Command::new(&skopeo)
        .args([
            "copy",
            "--quiet",
            "--dest-tls-verify=false",
            "--dest-creds",
            "alice:s3cret-reg",
        ])
        .arg(format!("docker-daemon:{image}"))
        .arg(format!("docker://{registry}/private/bb:1"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The host's store: credHelpers names a helper (it logs each call) for this registry.
    let dir = tempfile::tempdir().unwrap();
    let docker_config = dir.path().join("docker");
    std::fs::create_dir_all(&docker_config).unwrap();
    std::fs::write(
        docker_config.join("config.json"),
        format!(r#"{{"credHelpers": {{"{registry}": "rec"}}}}"#),
    )
    .unwrap();
    let bin = dir.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let log = dir.path().join("helper.log");
    write_script(
        &bin.join("docker-credential-rec"),
        &format!(
            "in=$(cat); echo \"$1 $in\" >> {log}\n[ \"$1\" = get ] && [ \"$in\" = {registry} ] && echo '{{\"ServerURL\":\"{registry}\",\"Username\":\"alice\",\"Secret\":\"s3cret-reg\"}}' && exit 0\necho 'credentials not found in native keychain'; exit 1",
            log = log.display()
        ),
    );
    // The host grants the registry's scope; each container's label narrows what it gets.
    let d = DaemonProc::start(DaemonOpts {
        args: config_args(
            dir.path(),
            &format!("[attach]\nscopes = [\"open\", \"docker:{registry}\"]\n"),
        ),
        env: vec![
            ("DOCKER_CONFIG".into(), docker_config.display().to_string()),
            (
                "PATH".into(),
                format!(
                    "{}:{}",
                    bin.display(),
                    std::env::var("PATH").unwrap_or_default()
                ),
            ),
        ],
        ..DaemonOpts::default()
    });

    // Two containers on the default bridge (the registry listens on its gateway); only the
    // second may use this registry's credentials.
    let run = |scopes: &str| {
        let n = format!("hp-docker-{}", free_port());
        let c = Container::start(
            d.tunnel_run_on("bridge")
                .args(["--label"])
                .arg(format!("dev.clawker.hostproxy.scopes={scopes}"))
                .args(["--name", &n, image, "sleep", "300"]),
        );
        d.wait_serving(&n, Duration::from_secs(15));
        // The docker CLI reads credsStore; skopeo (containers/image) only credHelpers.
        let (ok, _, err) = c.exec(
            &[],
            &format!(
                "mkdir -p /root/.docker && echo '{{\"credsStore\": \"clawker\", \"credHelpers\": {{\"{registry}\": \"clawker\"}}}}' > /root/.docker/config.json"
            ),
        );
        assert!(ok, "{err}");
        c
    };
    let inspect = format!(
        "skopeo inspect --tls-verify=false --retry-times 0 docker://{registry}/private/bb:1"
    );
    let path = "PATH=/tmp/.hostproxy/bin:/bin:/usr/bin";

    let refused = run("open");
    let (ok, out, err) = refused.exec(&[path], &inspect);
    assert!(
        !ok,
        "a container without the scope read the manifest: {out}"
    );
    assert!(
        err.to_ascii_lowercase().contains("unauthorized")
            || err.to_ascii_lowercase().contains("authentication required"),
        "{err}"
    );
    assert_eq!(
        std::fs::read_to_string(&log).unwrap_or_default(),
        "",
        "the host's helper ran for a refused container"
    );

    let allowed = run(&format!("docker:{registry}"));
    let (ok, out, err) = allowed.exec(&[path], &inspect);
    assert!(
        ok && out.contains("\"Digest\""),
        "{out}\n{err}\nhelper: {:?}\naudit: {}",
        allowed.exec(
            &[path],
            &format!("echo {registry} | docker-credential-clawker get")
        ),
        std::fs::read_to_string(d.dir.path().join("state/logs/audit.jsonl")).unwrap_or_default()
    );
    assert!(
        std::fs::read_to_string(&log)
            .unwrap()
            .contains(&format!("get {registry}")),
        "the host's helper was not asked"
    );
    // The secret never reached the daemon's log.
    assert!(!d.log_text().contains("s3cret-reg"));
    // And the audit names both decisions.
    let audit = std::fs::read_to_string(d.dir.path().join("state/logs/audit.jsonl")).unwrap();
    let lines: Vec<&str> = audit
        .lines()
        .filter(|l| l.contains("/docker/credential"))
        .collect();
    assert!(
        lines.iter().any(|l| l.contains("\"allowed\":false")),
        "{audit}"
    );
    assert!(
        lines.iter().any(|l| l.contains("\"allowed\":true")),
        "{audit}"
    );
}
