//! git credentials with nothing lost (SPEC.md 4.3): real git 2.47 on both sides. The
//! container side's git uses `git-credential-clawker`; the host side's git (run by the
//! daemon) uses the real `cache` helper. The cases follow git's own conventions for
//! credential helpers (its `t/lib-credential.sh`): a helper in the middle must behave like
//! the helper behind it.

use std::path::{Path, PathBuf};
use std::process::Command;

use e2e::*;
use serde_json::json;

/// Ends the host's `git credential-cache--daemon` when the test is done.
struct CacheDaemon(PathBuf);

impl Drop for CacheDaemon {
    fn drop(&mut self) {
        let _ = Command::new("git")
            .args(["credential-cache", "--socket"])
            .arg(&self.0)
            .arg("exit")
            .status();
    }
}

/// The daemon with a host git whose only helper is `cache` (its own socket), and store and
/// erase allowed; http allowed too, so git's path cases run as git writes them.
fn daemon_with_cache(dir: &Path) -> (DaemonProc, CacheDaemon) {
    let home = dir.join("host-home");
    std::fs::create_dir_all(&home).unwrap();
    // git-credential-cache insists on a socket directory only its user can enter.
    let cache = dir.join("cache");
    std::fs::create_dir_all(&cache).unwrap();
    std::fs::set_permissions(&cache, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    let gitconfig = dir.join("host.gitconfig");
    std::fs::write(
        &gitconfig,
        format!(
            "[credential]\n\thelper = \"cache --timeout=300 --socket {}\"\n",
            cache.join("socket").display()
        ),
    )
    .unwrap();
    let config = dir.join("hostproxy.toml");
    std::fs::write(
        &config,
        "[git]\nallow_store = true\nallow_erase = true\nallowed_protocols = [\"https\", \"http\"]\n",
    )
    .unwrap();
    let d = DaemonProc::start(DaemonOpts {
        args: vec!["--config".into(), config.display().to_string()],
        env: vec![
            ("HOME".into(), home.display().to_string()),
            ("GIT_CONFIG_GLOBAL".into(), gitconfig.display().to_string()),
        ],
        ..DaemonOpts::default()
    });
    (d, CacheDaemon(cache.join("socket")))
}

/// The container side: real git with `credential.helper=clawker` as its only helper, an
/// askpass that says what it was asked (as git's tests do), no terminal.
struct ContainerGit {
    env: Vec<(String, String)>,
}

impl ContainerGit {
    fn new(d: &DaemonProc, dir: &Path) -> Self {
        let home = dir.join("container-home");
        std::fs::create_dir_all(&home).unwrap();
        let askpass = dir.join("askpass");
        write_script(
            &askpass,
            "echo >&2 askpass: $*\nwhat=$(echo $1 | cut -d' ' -f1 | tr A-Z a-z | tr -cd a-z)\necho \"askpass-$what\"",
        );
        let gitconfig = dir.join("container.gitconfig");
        std::fs::write(&gitconfig, "[credential]\n\thelper = clawker\n").unwrap();
        let tools: PathBuf = bin("git-credential-clawker")
            .parent()
            .unwrap()
            .to_path_buf();
        let mut env = d.tool_env();
        env.extend([
            (
                "PATH".to_string(),
                format!(
                    "{}:{}",
                    tools.display(),
                    std::env::var("PATH").unwrap_or_default()
                ),
            ),
            ("HOME".into(), home.display().to_string()),
            ("GIT_CONFIG_GLOBAL".into(), gitconfig.display().to_string()),
            ("GIT_CONFIG_NOSYSTEM".into(), "1".into()),
            ("GIT_ASKPASS".into(), askpass.display().to_string()),
        ]);
        Self { env }
    }

    /// `git [-c K=V…] credential CMD` with `input`: (stdout, stderr).
    fn credential(&self, config: &[&str], cmd: &str, input: &str) -> (String, String) {
        let git = require("git", "git");
        let mut c = Command::new(git);
        c.env_clear().envs(self.env.iter().cloned());
        for kv in config {
            c.args(["-c", kv]);
        }
        c.args(["credential", cmd]);
        let (code, out, err) = run_with_input(&mut c, input);
        assert_eq!(code, 0, "git credential {cmd} failed: {err}");
        (out, err)
    }
}

/// git's `check` (t/lib-credential.sh): input, expected stdout, expected stderr.
fn check(git: &ContainerGit, config: &[&str], cmd: &str, input: &str, out: &str, err: &str) {
    let (got_out, got_err) = git.credential(config, cmd, &format!("{input}\n"));
    assert_eq!(got_out, out, "stdout of `credential {cmd}` for:\n{input}");
    assert_eq!(got_err, err, "stderr of `credential {cmd}` for:\n{input}");
}

const ASKPASS_EXAMPLE: &str = "askpass: Username for 'https://example.com':\naskpass: Password for 'https://askpass-username@example.com':\n";

#[test]
fn git_credential_helper_conventions_hold_through_the_daemon() {
    let dir = tempfile::tempdir().unwrap();
    let (d, _cache) = daemon_with_cache(dir.path());
    let git = ContainerGit::new(&d, dir.path());
    let g = &git;
    let none: &[&str] = &[];

    // has no existing data
    check(
        g,
        none,
        "fill",
        "protocol=https\nhost=example.com",
        "protocol=https\nhost=example.com\nusername=askpass-username\npassword=askpass-password\n",
        ASKPASS_EXAMPLE,
    );
    // stores password, can retrieve it
    check(
        g,
        none,
        "approve",
        "protocol=https\nhost=example.com\nusername=store-user\npassword=store-pass",
        "",
        "",
    );
    check(
        g,
        none,
        "fill",
        "protocol=https\nhost=example.com",
        "protocol=https\nhost=example.com\nusername=store-user\npassword=store-pass\n",
        "",
    );
    // requires matching protocol, host, username
    check(
        g,
        none,
        "fill",
        "protocol=http\nhost=example.com",
        "protocol=http\nhost=example.com\nusername=askpass-username\npassword=askpass-password\n",
        "askpass: Username for 'http://example.com':\naskpass: Password for 'http://askpass-username@example.com':\n",
    );
    check(
        g,
        none,
        "fill",
        "protocol=https\nhost=other.tld",
        "protocol=https\nhost=other.tld\nusername=askpass-username\npassword=askpass-password\n",
        "askpass: Username for 'https://other.tld':\naskpass: Password for 'https://askpass-username@other.tld':\n",
    );
    check(
        g,
        none,
        "fill",
        "protocol=https\nhost=example.com\nusername=other",
        "protocol=https\nhost=example.com\nusername=other\npassword=askpass-password\n",
        "askpass: Password for 'https://other@example.com':\n",
    );
    // requires matching path: the container's git uses credential.useHttpPath, the host's
    // does not, and still a credential for foo.git is not handed out for bar.git
    let path = &["credential.usehttppath=true"];
    check(
        g,
        path,
        "approve",
        "protocol=http\nhost=path.tld\npath=foo.git\nusername=user\npassword=pass",
        "",
        "",
    );
    check(
        g,
        path,
        "fill",
        "protocol=http\nhost=path.tld\npath=bar.git",
        "protocol=http\nhost=path.tld\npath=bar.git\nusername=askpass-username\npassword=askpass-password\n",
        "askpass: Username for 'http://path.tld/bar.git':\naskpass: Password for 'http://askpass-username@path.tld/bar.git':\n",
    );
    check(
        g,
        path,
        "fill",
        "protocol=http\nhost=path.tld\npath=foo.git",
        "protocol=http\nhost=path.tld\npath=foo.git\nusername=user\npassword=pass\n",
        "",
    );
    // can forget host
    check(
        g,
        none,
        "reject",
        "protocol=https\nhost=example.com",
        "",
        "",
    );
    check(
        g,
        none,
        "fill",
        "protocol=https\nhost=example.com",
        "protocol=https\nhost=example.com\nusername=askpass-username\npassword=askpass-password\n",
        ASKPASS_EXAMPLE,
    );
    // two users on one host, erase one of them
    check(
        g,
        none,
        "approve",
        "protocol=https\nhost=example.com\nusername=user1\npassword=pass1",
        "",
        "",
    );
    check(
        g,
        none,
        "approve",
        "protocol=https\nhost=example.com\nusername=user2\npassword=pass2",
        "",
        "",
    );
    check(
        g,
        none,
        "fill",
        "protocol=https\nhost=example.com\nusername=user1",
        "protocol=https\nhost=example.com\nusername=user1\npassword=pass1\n",
        "",
    );
    check(
        g,
        none,
        "fill",
        "protocol=https\nhost=example.com\nusername=user2",
        "protocol=https\nhost=example.com\nusername=user2\npassword=pass2\n",
        "",
    );
    check(
        g,
        none,
        "reject",
        "protocol=https\nhost=example.com\nusername=user1",
        "",
        "",
    );
    check(
        g,
        none,
        "fill",
        "protocol=https\nhost=example.com\nusername=user1",
        "protocol=https\nhost=example.com\nusername=user1\npassword=askpass-password\n",
        "askpass: Password for 'https://user1@example.com':\n",
    );
    check(
        g,
        none,
        "fill",
        "protocol=https\nhost=example.com\nusername=user2",
        "protocol=https\nhost=example.com\nusername=user2\npassword=pass2\n",
        "",
    );
    // can store an empty username (and password)
    check(
        g,
        none,
        "approve",
        "protocol=https\nhost=sso.tld\nusername=\npassword=",
        "",
        "",
    );
    check(
        g,
        none,
        "fill",
        "protocol=https\nhost=sso.tld",
        "protocol=https\nhost=sso.tld\nusername=\npassword=\n",
        "",
    );
    // password_expiry_utc: stored, handed back, and overwritten when it changes
    check(
        g,
        none,
        "approve",
        "protocol=https\nhost=example.com\nusername=user-expiry\npassword=pass\npassword_expiry_utc=9999999999",
        "",
        "",
    );
    check(
        g,
        none,
        "fill",
        "protocol=https\nhost=example.com\nusername=user-expiry",
        "protocol=https\nhost=example.com\nusername=user-expiry\npassword=pass\npassword_expiry_utc=9999999999\n",
        "",
    );
    check(
        g,
        none,
        "approve",
        "protocol=https\nhost=example.com\nusername=user-expiry-overwrite\npassword=pass1\npassword_expiry_utc=9999999998",
        "",
        "",
    );
    check(
        g,
        none,
        "approve",
        "protocol=https\nhost=example.com\nusername=user-expiry-overwrite\npassword=pass2\npassword_expiry_utc=9999999999",
        "",
        "",
    );
    check(
        g,
        none,
        "fill",
        "protocol=https\nhost=example.com\nusername=user-expiry-overwrite",
        "protocol=https\nhost=example.com\nusername=user-expiry-overwrite\npassword=pass2\npassword_expiry_utc=9999999999\n",
        "",
    );
    check(
        g,
        none,
        "reject",
        "protocol=https\nhost=example.com\nusername=user-expiry-overwrite\npassword=pass2",
        "",
        "",
    );
    check(
        g,
        none,
        "fill",
        "protocol=https\nhost=example.com\nusername=user-expiry-overwrite",
        "protocol=https\nhost=example.com\nusername=user-expiry-overwrite\npassword=askpass-password\n",
        "askpass: Password for 'https://user-expiry-overwrite@example.com':\n",
    );
    // an expired password is not handed out
    check(
        g,
        none,
        "approve",
        "protocol=https\nhost=expired.tld\nusername=late\npassword=old-pass\npassword_expiry_utc=1000000000",
        "",
        "",
    );
    check(
        g,
        none,
        "fill",
        "protocol=https\nhost=expired.tld\nusername=late",
        "protocol=https\nhost=expired.tld\nusername=late\npassword=askpass-password\n",
        "askpass: Password for 'https://late@expired.tld':\n",
    );
    // oauth_refresh_token survives a round trip
    check(
        g,
        none,
        "approve",
        "protocol=https\nhost=example.com\nusername=user4\npassword=pass\noauth_refresh_token=xyzzy",
        "",
        "",
    );
    check(
        g,
        none,
        "fill",
        "protocol=https\nhost=example.com\nusername=user4",
        "protocol=https\nhost=example.com\nusername=user4\npassword=pass\noauth_refresh_token=xyzzy\n",
        "",
    );
    // authtype and credential (git 2.46+), when both gits announce the capability
    check(
        g,
        none,
        "approve",
        "capability[]=authtype\nauthtype=Bearer\ncredential=random-token\nprotocol=https\nhost=git.example.com",
        "",
        "",
    );
    check(
        g,
        none,
        "fill",
        "capability[]=authtype\nprotocol=https\nhost=git.example.com",
        "capability[]=authtype\nauthtype=Bearer\ncredential=random-token\nprotocol=https\nhost=git.example.com\n",
        "",
    );
    // ...and never to a caller that did not announce it
    check(
        g,
        none,
        "fill",
        "protocol=https\nhost=git.example.com",
        "protocol=https\nhost=git.example.com\nusername=askpass-username\npassword=askpass-password\n",
        "askpass: Username for 'https://git.example.com':\naskpass: Password for 'https://askpass-username@git.example.com':\n",
    );

    // None of it in the daemon's log.
    let log = d.log_text();
    for secret in ["store-pass", "pass2", "xyzzy", "random-token", "old-pass"] {
        assert!(!log.contains(secret), "{secret} in the daemon log");
    }
}

#[test]
fn upstreams_empty_username_gets_the_stored_credential_and_a_bad_attribute_runs_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (d, _cache) = daemon_with_cache(dir.path());
    let git = ContainerGit::new(&d, dir.path());
    check(
        &git,
        &[],
        "approve",
        "protocol=https\nhost=example.com\nusername=alice\npassword=s3cret",
        "",
        "",
    );
    let url = format!("{}/git/credential", d.url());
    // upstream clawker's shell helper always sends "username":"".
    let (s, b) = http(
        "POST",
        &url,
        Some(&d.token),
        Some(json!({"action": "get", "protocol": "https", "host": "example.com", "username": ""})),
    );
    assert_eq!(s, 200, "{b}");
    assert_eq!(
        (b["username"].as_str(), b["password"].as_str()),
        (Some("alice"), Some("s3cret"))
    );
    // A CR, LF or NUL in any attribute, or an unknown capability: 400, and git never ran
    // (the cache still holds exactly what it held).
    for body in [
        json!({"action": "store", "protocol": "https", "host": "example.com", "username": "alice", "password": "x", "oauth_refresh_token": "a\nhost=evil"}),
        json!({"action": "store", "protocol": "https", "host": "example.com", "username": "alice", "password": "x", "state": ["ok", "b\r"]}),
        json!({"action": "store", "protocol": "https", "host": "example.com", "username": "alice", "password": "x", "wwwauth": ["c\u{0}"]}),
        json!({"action": "get", "protocol": "https", "host": "example.com", "capability": ["everything"]}),
        json!({"action": "store", "protocol": "https", "host": "example.com", "username": "alice", "password": "x", "ephemeral": "maybe"}),
    ] {
        let (s, b) = http("POST", &url, Some(&d.token), Some(body.clone()));
        assert_eq!(s, 400, "{body}: {b}");
    }
    check(
        &git,
        &[],
        "fill",
        "protocol=https\nhost=example.com",
        "protocol=https\nhost=example.com\nusername=alice\npassword=s3cret\n",
        "",
    );
}
