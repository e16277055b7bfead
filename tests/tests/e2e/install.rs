//! One file to install (SPEC.md 12): `install.sh` from the release files over HTTP, a
//! tampered archive refused with nothing installed, and the installed `hostproxy` — run from
//! `/` with the checkout's `target/dist` hidden, so only the tools it carries can serve —
//! attaching stock `--network none` images whose first command is `git credential fill`,
//! writable and `--read-only`, with the tools mounted by `run-flags`.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use e2e::*;

/// `python3 -m http.server` on `dir`, on the loopback; killed on drop.
struct Http(Child, u16);

impl Http {
    fn serve(dir: &Path) -> Self {
        require("python3", "python3");
        let port = free_port();
        let child = Command::new("python3")
            .args(["-m", "http.server", "--bind", "127.0.0.1"])
            .arg(port.to_string())
            .arg("--directory")
            .arg(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        wait_port(port, "http.server");
        Self(child, port)
    }
}

impl Drop for Http {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `sh install.sh --prefix PREFIX` from `url`, run in `/`: (ok, stdout+stderr).
fn install(url: &str, prefix: &Path) -> (bool, String) {
    let out = Command::new("sh")
        .arg(dist_dir().join("install.sh"))
        .arg("--prefix")
        .arg(prefix)
        .env("HOSTPROXY_DOWNLOAD_URL", url)
        .current_dir("/")
        .output()
        .unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn archive_name() -> String {
    format!(
        "hostproxy-{}-{}-unknown-linux-musl.tar.gz",
        env!("CARGO_PKG_VERSION"),
        std::env::consts::ARCH
    )
}

#[test]
fn a_tampered_archive_is_refused_and_nothing_is_installed() {
    let bad = tempfile::tempdir().unwrap();
    for f in ["SHA256SUMS".to_string(), archive_name()] {
        std::fs::copy(dist_dir().join(&f), bad.path().join(&f)).unwrap();
    }
    let archive = bad.path().join(archive_name());
    let mut bytes = std::fs::read(&archive).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    std::fs::write(&archive, bytes).unwrap();
    let http = Http::serve(bad.path());
    let prefix = tempfile::tempdir().unwrap();
    let (ok, out) = install(&format!("http://127.0.0.1:{}", http.1), prefix.path());
    assert!(!ok, "{out}");
    assert!(
        out.contains("does not match SHA256SUMS") && out.contains("nothing installed"),
        "{out}"
    );
    assert_eq!(
        std::fs::read_dir(prefix.path()).unwrap().count(),
        0,
        "something was installed"
    );
}

#[test]
fn the_installed_hostproxy_attaches_stock_images_before_their_first_command() {
    require("unshare", "util-linux");
    let http = Http::serve(dist_dir());
    let prefix = tempfile::tempdir().unwrap();
    let (ok, out) = install(&format!("http://127.0.0.1:{}", http.1), prefix.path());
    assert!(ok, "install.sh failed: {out}");
    let installed = prefix.path().join("bin/hostproxy");
    assert!(installed.is_file(), "{out}");
    assert!(prefix.path().join("share/man/man1/hostproxy.1").is_file());

    // The checkout's tools out of reach: a private mount namespace with an empty tmpfs over
    // target/dist, and the daemon started in `/`.
    let hidden = workspace_root().join("target/dist");
    let d = DaemonProc::start(DaemonOpts {
        program: Some(installed.clone()),
        cwd: Some("/".into()),
        wrapper: vec![
            "unshare".into(),
            "-m".into(),
            "--propagation".into(),
            "private".into(),
            "sh".into(),
            "-c".into(),
            format!(
                "mount -t tmpfs tmpfs {} && exec \"$0\" \"$@\"",
                hidden.display()
            ),
        ],
        ..DaemonOpts::default()
    });
    let doctor = d.hostproxy(&["doctor"]).current_dir("/").output().unwrap();
    let doctor = String::from_utf8_lossy(&doctor.stdout).into_owned();
    assert!(
        doctor.contains("container tools: ") && doctor.contains("carried by this hostproxy"),
        "{doctor}"
    );

    // The banner leads with the tunnel and says where the tools are (newcomer review F5).
    let banner = d.log_text();
    let (tools_at, tunnel_at, token_at) = (
        banner.find("container tools: ").expect("the tools line"),
        banner.find("The tunnel").expect("the tunnel first"),
        banner.find("The TCP lane").expect("the TCP lane"),
    );
    assert!(tools_at < tunnel_at && tunnel_at < token_at, "{banner}");
    assert!(
        banner[tools_at..]
            .lines()
            .next()
            .unwrap()
            .contains("carried by this hostproxy"),
        "{banner}"
    );
    let fill = "printf 'protocol=https\\nhost=github.com\\n\\n' | git credential fill";
    for (label, extra) in [
        ("writable", vec![]),
        ("read-only", vec!["--read-only", "--tmpfs", "/tmp"]),
    ] {
        for run in 0..5 {
            let n = name(&format!("install-{label}-{run}"));
            // `docker run` without -d: the container's first and only command is git, and
            // its output is what the test reads.
            let mut cmd = d.run_flags_run("none", &[]);
            let args: Vec<String> = cmd
                .get_args()
                .map(|a| a.to_string_lossy().into_owned())
                .filter(|a| a != "-d")
                .collect();
            cmd = Command::new("docker");
            cmd.args(&args)
                .args(["--rm", "--name", &n])
                .args(&extra)
                .args([busybox_image(), "sh", "-c", fill]);
            let out = cmd.output().unwrap();
            let stdout = String::from_utf8_lossy(&out.stdout);
            assert!(
                out.status.success() && stdout.contains("password=s3cret-pass"),
                "{label} run {run}: {stdout}{}\n{}",
                String::from_utf8_lossy(&out.stderr),
                d.log_text()
            );
        }
    }
    assert!(
        d.log_text().contains("the container tools are mounted"),
        "the daemon copied the tools instead of using the mount:\n{}",
        d.log_text()
    );
}

/// The Homebrew formula `dist` writes (SPEC.md 12) names each release archive it built with
/// the SHA-256 that `SHA256SUMS` has for it, at a URL where that file is, and installs only
/// files the archive holds. (No Homebrew here to run it: what it would fetch and check is
/// checked instead.)
#[test]
fn the_homebrew_formula_names_the_release_archives_and_their_checksums() {
    let dist = dist_dir();
    let formula = std::fs::read_to_string(dist.join("hostproxy.rb")).unwrap();
    let sums = std::fs::read_to_string(dist.join("SHA256SUMS")).unwrap();
    let field = |key: &str| -> Vec<String> {
        formula
            .lines()
            .filter_map(|l| l.trim().strip_prefix(&format!("{key} \"")))
            .map(|v| v.trim_end_matches('"').to_string())
            .collect()
    };
    let (urls, shas) = (field("url"), field("sha256"));
    assert!(!urls.is_empty() && urls.len() == shas.len(), "{formula}");
    assert!(formula.contains(&format!("version \"{}\"", env!("CARGO_PKG_VERSION"))));
    for (url, sha) in urls.iter().zip(&shas) {
        let name = url.rsplit('/').next().unwrap();
        assert!(
            sums.contains(&format!("{sha}  {name}\n")),
            "{name}: {sha}\n{sums}"
        );
        let Some(path) = url.strip_prefix("file://") else {
            continue;
        };
        let out = Command::new("sha256sum").arg(path).output().unwrap();
        assert!(
            String::from_utf8_lossy(&out.stdout).starts_with(sha.as_str()),
            "{path}"
        );
        // What `def install` takes is in the archive.
        let listing = Command::new("tar").args(["tzf", path]).output().unwrap();
        let listing = String::from_utf8_lossy(&listing.stdout).into_owned();
        let top = name.trim_end_matches(".tar.gz");
        for f in [
            "hostproxy",
            "man/hostproxy.1",
            "completions/bash/hostproxy.bash",
            "completions/zsh/_hostproxy",
            "completions/fish/hostproxy.fish",
        ] {
            assert!(
                listing.contains(&format!("{top}/{f}\n")),
                "{f} is not in {name}"
            );
            assert!(
                f == "man/hostproxy.1" || formula.contains(&format!("\"{f}\"")),
                "the formula does not install {f}"
            );
        }
    }
}

/// `hostproxy run` on an engine whose containers cannot mount the daemon's folder (here
/// `--no-mount`, as a remote engine is): the tools are copied into the created container
/// before it starts, so its first command finds them, five runs of five.
#[test]
fn hostproxy_run_copies_the_tools_in_before_the_first_command() {
    let d = DaemonProc::start(DaemonOpts::default());
    // `run` wires the config's attach label: this daemon's own.
    let config = d.dir.path().join("run.toml");
    std::fs::write(
        &config,
        format!("[attach]\nlabel = \"{}\"\n", d.attach_label),
    )
    .unwrap();
    // `hostproxy run [RUN-FLAGS…] -- DOCKER-RUN-ARGS…` with that config, tools not mounted.
    let run = |flags: &[&str], docker_args: &[&str]| {
        let config = config.to_str().unwrap();
        let mut argv = vec!["--config", config, "run", "--no-mount"];
        argv.extend(flags);
        argv.push("--");
        argv.extend(docker_args);
        d.hostproxy(&argv)
    };
    let fill = "printf 'protocol=https\\nhost=github.com\\n\\n' | git credential fill";
    for i in 0..5 {
        let n = name(&format!("run-{i}"));
        let out = run(
            &[],
            &[
                "--rm",
                "--name",
                &n,
                "--network",
                "none",
                "-v",
                "/usr:/usr:ro",
                busybox_image(),
                "sh",
                "-c",
                fill,
            ],
        )
        .output()
        .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && stdout.contains("password=s3cret-pass"),
            "run {i}: {stdout}{}\n{}",
            String::from_utf8_lossy(&out.stderr),
            d.log_text()
        );
    }
    let log = d.log_text();
    assert!(
        !log.contains("the container tools are mounted")
            && log.contains("copied the container tools"),
        "{log}"
    );

    // The container's exit status is run's (no --rm: a container that exits while the
    // daemon is still copying into it can fail the engine's removal, as with docker run).
    let n = name("run-status");
    let _c = Container(n.clone());
    let out = run(
        &[],
        &[
            "--name",
            &n,
            "--network",
            "none",
            busybox_image(),
            "sh",
            "-c",
            "ls /tmp/.hostproxy/bin/git-credential-clawker && exit 7",
        ],
    )
    .output()
    .unwrap();
    assert_eq!(out.status.code(), Some(7), "{out:?}");
    // A copy the engine refuses (a read-only root filesystem takes no upload): run says
    // why, and nothing is left — the container it created is removed, never started.
    let n = name("run-refused");
    let out = run(&[], &["--read-only", "--name", &n, busybox_image(), "true"])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && said.contains("could not be copied"),
        "{said}"
    );
    let left = Command::new("docker")
        .args(["inspect", &n])
        .output()
        .unwrap();
    assert!(
        !left.status.success(),
        "the refused container was left behind"
    );

    // -d prints the id of a started container.
    let n = name("run-detached");
    let c = Container::start(&mut run(
        &["-d"],
        &[
            "--name",
            &n,
            "--network",
            "none",
            busybox_image(),
            "sleep",
            "30",
        ],
    ));
    assert_eq!(c.0.len(), 64, "{}", c.0);
    d.wait_serving(&n, std::time::Duration::from_secs(15));
}

/// The init-container image (`docs/init-image.Dockerfile`, built from `target/dist`) fills a
/// volume with `clawker-socket-server install DIR`; a stock `--network none` container
/// mounts it read-only and is attached `--via` the socket server in the volume, as a
/// Kubernetes pod with an `emptyDir` is through `kubectl exec -i`.
#[test]
fn the_init_image_fills_a_volume_a_stock_container_is_attached_through() {
    require_docker();
    let tag = "hostproxy-e2e-init:latest";
    let out = Command::new("docker")
        .args(["build", "-q", "-t", tag, "-f"])
        .arg(workspace_root().join("docs/init-image.Dockerfile"))
        .arg(dist_dir())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "docker build of the init image: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let volume = name("init-vol");
    let st = Command::new("docker")
        .args(["volume", "create", &volume])
        .output()
        .unwrap();
    assert!(st.status.success());
    let filled = Command::new("docker")
        .args(["run", "--rm", "--network", "none", "-v"])
        .arg(format!("{volume}:/hostproxy"))
        .arg(tag)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&filled.stdout);
    assert!(
        filled.status.success() && said.contains("installed 7 tools into /hostproxy"),
        "{said}{}",
        String::from_utf8_lossy(&filled.stderr)
    );

    let d = DaemonProc::start(DaemonOpts::default());
    let n = name("init-stock");
    let c = Container::plain(
        &n,
        busybox_image(),
        &["-v", &format!("{volume}:/hostproxy:ro")],
    );
    d.cli_ok(&[
        "attach",
        "--via",
        &format!("docker exec -i {n} /hostproxy/clawker-socket-server"),
        "--name",
        &n,
    ]);
    d.wait_serving(&n, Duration::from_secs(15));
    let (ok, out, err) = c.exec(
        &[],
        "printf 'protocol=https\\nhost=github.com\\n\\n' | CLAWKER_HOST_PROXY=http://127.0.0.1:18374 /hostproxy/git-credential-clawker get",
    );
    assert!(
        ok && out.contains("password=s3cret-pass"),
        "{out}{err}\n{}",
        d.log_text()
    );
    drop(c);
    let _ = Command::new("docker")
        .args(["volume", "rm", "-f", &volume])
        .output();
}

/// `hostproxy service install --no-start` writes a systemd user unit that runs this very
/// `hostproxy serve` (where `doctor` reports it), and `uninstall` removes it.
#[test]
fn service_install_writes_a_user_unit_that_runs_this_hostproxy() {
    let home = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        let out = Command::new(bin("hostproxy"))
            .args(args)
            .env("HOME", home.path())
            .env("XDG_CONFIG_HOME", home.path().join(".config"))
            .env("CLAWKER_STATE_DIR", home.path().join("state"))
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let unit = home.path().join(".config/systemd/user/hostproxy.service");
    let (ok, said) = run(&["service", "install", "--no-start"]);
    assert!(ok, "{said}");
    let text = std::fs::read_to_string(&unit).unwrap();
    let exe = std::fs::canonicalize(bin("hostproxy")).unwrap();
    assert!(
        text.contains(&format!("ExecStart=\"{}\" serve\n", exe.display())),
        "{text}"
    );
    assert!(text.contains("WantedBy=default.target"), "{text}");
    let (_, doctor) = run(&["doctor"]);
    assert!(
        doctor.contains(&format!("✓ service: {}", unit.display())),
        "{doctor}"
    );
    let (ok, said) = run(&["service", "uninstall"]);
    assert!(ok && !unit.exists(), "{said}");
    let (_, doctor) = run(&["doctor"]);
    assert!(doctor.contains("✓ service: none installed"), "{doctor}");
}

/// The devcontainer feature's `install.sh` (as `cargo xtask dist` writes it), run in a
/// scratch image with busybox, installs the tools from the release folder onto the `PATH`
/// the feature sets; with a tampered tools archive it installs nothing.
#[test]
fn the_devcontainer_feature_puts_the_tools_on_path() {
    let feature = dist_dir().join("devcontainer-feature/hostproxy-tools");
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(feature.join("devcontainer-feature.json")).unwrap())
            .unwrap();
    assert_eq!(json["id"], "hostproxy-tools");
    assert_eq!(json["containerEnv"]["PATH"], "/usr/local/bin:${PATH}");
    let run = |release: &Path| {
        Command::new("docker")
            .args(["run", "--rm", "--network", "none", "-v"])
            .arg(format!("{}:/feature:ro", feature.display()))
            .arg("-v")
            .arg(format!("{}:/release:ro", release.display()))
            .args([
                "-e",
                "DOWNLOADURL=file:///release",
                busybox_image(),
                "sh",
                "-c",
            ])
            .arg(
                "sh /feature/install.sh && export PATH=/usr/local/bin:$PATH \
                 && command -v host-open && git-credential-clawker --version; \
                 ls /usr/local/bin",
            )
            .output()
            .unwrap()
    };
    let out = run(dist_dir());
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success()
            && said.contains("/usr/local/bin/host-open")
            && said.contains("git-credential-clawker"),
        "{said}{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let bad = tempfile::tempdir().unwrap();
    let tools = format!(
        "hostproxy-tools-{}-{}-linux.tar.gz",
        env!("CARGO_PKG_VERSION"),
        std::env::consts::ARCH
    );
    std::fs::copy(dist_dir().join("SHA256SUMS"), bad.path().join("SHA256SUMS")).unwrap();
    let mut bytes = std::fs::read(dist_dir().join(&tools)).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 1;
    std::fs::write(bad.path().join(&tools), bytes).unwrap();
    let out = run(bad.path());
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        said.contains("does not match SHA256SUMS: nothing installed")
            && !said.contains("host-open"),
        "{said}"
    );
}

/// The daemon runs a mounted copy of its tools only when nothing is mounted below it: a
/// file bind-mounted over `clawker-socket-server` is never run (SPEC.md 11), and the
/// attach fails saying why instead.
#[test]
fn a_file_mounted_over_the_mounted_socket_server_is_never_run() {
    let d = DaemonProc::start(DaemonOpts::default());
    let dir = tempfile::tempdir().unwrap();
    let evil = dir.path().join("evil");
    write_script(&evil, "touch /tmp/evil-ran; sleep 300");
    let n = name("shadowed");
    let c = Container::start(
        d.run_flags_run("none", &[])
            .arg("-v")
            .arg(format!(
                "{}:/tmp/.hostproxy/bin/clawker-socket-server:ro",
                evil.display()
            ))
            .args(["--name", &n, busybox_image(), "sleep", "300"]),
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let entry = loop {
        let found = d
            .attachments()
            .into_iter()
            .find(|a| a["name"] == n.as_str());
        if let Some(a) = found.filter(|a| a["notes"].to_string().contains("last error")) {
            break a;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no failed attach reported: {:?}\n{}",
            d.attachments(),
            d.log_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_ne!(entry["state"], "serving", "{entry}");
    assert!(
        entry["notes"]
            .to_string()
            .contains("cannot copy the container tools"),
        "{entry}"
    );
    let (_, out, _) = c.exec(&[], "ls /tmp/evil-ran 2>&1");
    assert!(
        out.contains("No such file"),
        "the planted program ran: {out}"
    );
}
