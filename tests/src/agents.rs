//! The host's agents and logins as the tests run them: a scratch `ssh-agent` with a key,
//! `ssh-agent-proxy`, a scratch GnuPG home, a throwaway `sshd`.

use super::*;

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
