//! A daemon for the project's own commands (bench, schemathesis): scratch state, a scratch
//! git whose `store` helper knows `https://alice:s3cret@github.com`, `/bin/true` as the
//! browser and as the desktop notifier, no URL rate limit.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// A child process killed on drop.
pub struct Killer(pub Child);

impl Drop for Killer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

pub fn wait_port(port: u16) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline {
            bail!("nothing answered on port {port}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

pub struct ScratchDaemon {
    pub process: Killer,
    pub port: u16,
    pub token: String,
    /// HOME of the scratch host git (its config is `<dir>/host-gitconfig`).
    pub host_home: PathBuf,
    /// The label it attaches containers by (its own, so no other daemon's are touched).
    pub attach_label: String,
}

impl ScratchDaemon {
    /// Starts `exe serve` with its state in `dir`; `agent` becomes its `SSH_AUTH_SOCK`.
    pub fn start(exe: &Path, dir: &Path, agent: Option<&Path>, extra_toml: &str) -> Result<Self> {
        let host_home = dir.join("host-home");
        std::fs::create_dir_all(&host_home)?;
        std::fs::write(dir.join("creds"), "https://alice:s3cret@github.com\n")?;
        std::fs::write(
            dir.join("host-gitconfig"),
            format!(
                "[credential]\n\thelper = store --file {}\n",
                dir.join("creds").display()
            ),
        )?;
        std::fs::write(
            dir.join("hostproxy.toml"),
            format!("[open]\nrate_per_minute = 0\n{extra_toml}"),
        )?;
        let host_env = [
            ("HOME", host_home.display().to_string()),
            (
                "GIT_CONFIG_GLOBAL",
                dir.join("host-gitconfig").display().to_string(),
            ),
            ("GIT_CONFIG_NOSYSTEM", "1".to_string()),
            ("GIT_TERMINAL_PROMPT", "0".to_string()),
            // The scratch GnuPG home the bench makes later (its public keys go to containers
            // with the gpg scope, `hostproxy bridge --gpg`), never the user's.
            ("GNUPGHOME", dir.join("g").display().to_string()),
        ];
        let port = free_port()?;
        let attach_label = format!("dev.clawker.hostproxy.scratch={port}");
        let mut cmd = Command::new(exe);
        cmd.args([
            "serve",
            "--port",
            &port.to_string(),
            "--attach-label",
            &attach_label,
            "--tools-dir",
            &crate::util::root()
                .join("target/dist")
                .display()
                .to_string(),
            "--browser",
            "/bin/true",
            "--notifier",
            "/bin/true",
            "--config",
        ])
        .arg(dir.join("hostproxy.toml"))
        .env("CLAWKER_STATE_DIR", dir.join("state"))
        .env("RUST_LOG", "warn")
        .envs(host_env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdout(Stdio::null())
        .stderr(Stdio::null());
        match agent {
            Some(a) => cmd.env("SSH_AUTH_SOCK", a),
            None => cmd.env_remove("SSH_AUTH_SOCK"),
        };
        let process = Killer(
            cmd.spawn()
                .with_context(|| format!("cannot start {}", exe.display()))?,
        );
        wait_port(port).context("the scratch daemon did not start")?;
        let token = std::fs::read_to_string(dir.join("state/hostproxy.token"))?
            .trim()
            .to_string();
        Ok(Self {
            process,
            port,
            token,
            host_home,
            attach_label,
        })
    }
}
