//! `hostproxy doctor` against a real daemon, engine, gpg-agent and git: each failing check
//! named with its fix.

use std::process::Command;

use e2e::*;

#[test]
fn doctor_names_each_failing_check_and_its_fix() {
    require_docker();
    let agent = Agent::start();
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    std::fs::create_dir_all(home.join(".config/clawker")).unwrap();
    std::fs::write(home.join(".gitconfig"), "[credential]\n\thelper = store\n").unwrap();
    std::fs::write(
        home.join(".config/clawker/hostproxy.toml"),
        "browser = \"/bin/true\"\n",
    )
    .unwrap();
    let gnupg = tempfile::Builder::new()
        .prefix("d")
        .tempdir_in("/tmp")
        .unwrap();
    // Start gpg-agent for this GNUPGHOME so its extra socket answers.
    let st = Command::new("gpg-connect-agent")
        .arg("/bye")
        .env("GNUPGHOME", gnupg.path())
        .output()
        .unwrap();
    assert!(st.status.success());
    let state = dir.path().join("state");
    let port = free_port().to_string();
    let doctor = |tweak: &dyn Fn(&mut Command)| -> (i32, serde_json::Value) {
        let mut c = Command::new(bin("hostproxy"));
        c.args(["doctor", "--json", "--port", &port])
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap())
            .env("HOME", &home)
            .env("XDG_CONFIG_HOME", home.join(".config"))
            .env("CLAWKER_STATE_DIR", &state)
            .env("SSH_AUTH_SOCK", &agent.socket)
            .env("GNUPGHOME", gnupg.path());
        tweak(&mut c);
        let out = c.output().unwrap();
        (
            out.status.code().unwrap_or(-1),
            serde_json::from_slice(&out.stdout).unwrap(),
        )
    };
    let failing = |v: &serde_json::Value| -> Vec<String> {
        v["checks"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["ok"] == false)
            .map(|c| c["name"].as_str().unwrap().to_string())
            .collect()
    };
    // Create the token the way a user would.
    let tok = Command::new(bin("hostproxy"))
        .arg("token")
        .env("CLAWKER_STATE_DIR", &state)
        .output()
        .unwrap();
    assert!(tok.status.success());
    let (code, all) = doctor(&|_| {});
    assert_eq!((code, failing(&all)), (0, Vec::<String>::new()), "{all}");

    // A running container that mounts the user's own token: a warning naming the
    // scoped-token command, not a failure.
    let token_file = state.join("hostproxy.token");
    let name = format!("doctor-token-{}", std::process::id());
    let run = Command::new("docker")
        .args(["run", "-d", "--rm", "--name", &name, "-v"])
        .arg(format!(
            "{}:/run/secrets/clawker-token:ro",
            token_file.display()
        ))
        .args([test_image(), "sleep", "60"])
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let (code, v) = doctor(&|_| {});
    let _ = Command::new("docker").args(["rm", "-f", &name]).output();
    assert_eq!(code, 0, "a warning is not a failure: {v}");
    let check = v["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "containers with your token")
        .unwrap()
        .clone();
    assert_eq!(check["warning"], true, "{check}");
    assert!(check["detail"].as_str().unwrap().contains(&name), "{check}");
    assert!(
        check["fix"].as_str().unwrap().contains(&format!(
            "hostproxy token issue --name {name} --container {name}"
        )),
        "{check}"
    );
    // A broken config file is reported broken, with the parse error.
    let conf = home.join(".config/clawker/hostproxy.toml");
    let good = std::fs::read_to_string(&conf).unwrap();
    std::fs::write(&conf, "no_such_key = 1\n").unwrap();
    let (code, v) = doctor(&|_| {});
    std::fs::write(&conf, good).unwrap();
    assert_eq!((code, failing(&v)), (1, vec!["config".to_string()]), "{v}");

    use std::os::unix::fs::PermissionsExt;
    // Each check broken in turn: (its name, how the environment is broken, set-up, undo).
    type Tweak = Box<dyn Fn(&mut Command)>;
    type Step = Box<dyn Fn()>;
    let cases: Vec<(&str, Tweak, Step, Step)> = vec![
        (
            "git credential helper",
            Box::new(|c: &mut Command| {
                c.env("GIT_CONFIG_GLOBAL", "/dev/null");
            }),
            Box::new(|| {}),
            Box::new(|| {}),
        ),
        (
            "ssh agent",
            Box::new(|c: &mut Command| {
                c.env_remove("SSH_AUTH_SOCK");
            }),
            Box::new(|| {}),
            Box::new(|| {}),
        ),
        (
            "gpg-agent",
            Box::new(|c: &mut Command| {
                c.env("GNUPGHOME", "/nonexistent-gnupg");
            }),
            Box::new(|| {}),
            Box::new(|| {}),
        ),
        (
            "docker",
            Box::new(|c: &mut Command| {
                c.env("DOCKER_HOST", "unix:///nonexistent.sock");
            }),
            Box::new(|| {}),
            Box::new(|| {}),
        ),
        (
            "browser launcher",
            Box::new(|c: &mut Command| {
                c.env("XDG_CONFIG_HOME", "/nonexistent")
                    .env("PATH", "/nonexistent");
            }),
            Box::new(|| {}),
            Box::new(|| {}),
        ),
        (
            "token",
            Box::new(|_: &mut Command| {}),
            Box::new({
                let t = token_file.clone();
                move || {
                    std::fs::set_permissions(&t, std::fs::Permissions::from_mode(0o644)).unwrap()
                }
            }),
            Box::new({
                let t = token_file.clone();
                move || {
                    std::fs::set_permissions(&t, std::fs::Permissions::from_mode(0o600)).unwrap()
                }
            }),
        ),
    ];
    for (name, tweak, before, after) in cases {
        before();
        let (code, v) = doctor(&*tweak);
        after();
        assert_eq!(code, 1, "{name}: {v}");
        let failed = failing(&v);
        assert!(
            failed.contains(&name.to_string()),
            "{name} should fail: {v}"
        );
        let check = v["checks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == name)
            .unwrap();
        assert!(
            check["fix"].as_str().is_some_and(|f| !f.is_empty()),
            "{name} has no fix: {check}"
        );
    }
    // The port taken by something else.
    let squat = std::net::TcpListener::bind(("127.0.0.1", port.parse::<u16>().unwrap())).unwrap();
    let (code, v) = doctor(&|_| {});
    assert_eq!(code, 1);
    assert_eq!(failing(&v), vec!["port".to_string()], "{v}");
    drop(squat);
    // A state dir that cannot be written.
    let (code, v) = doctor(&|c: &mut Command| {
        c.env("CLAWKER_STATE_DIR", "/proc/no-such-dir");
    });
    assert_eq!(code, 1);
    assert!(failing(&v).contains(&"state dir".to_string()), "{v}");
    let _ = Command::new("gpgconf")
        .args(["--kill", "gpg-agent"])
        .env("GNUPGHOME", gnupg.path())
        .status();
}
