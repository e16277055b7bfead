//! A real git server on the loopback: git's `git http-backend` behind lighttpd with TLS (a
//! certificate of a CA made for the test, which only the daemon is told about) and basic
//! auth (`alice` / `s3cret-pass`), every request in an access log.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use crate::{free_port, require};

pub const GIT_USER: &str = "alice";
pub const GIT_PASSWORD: &str = "s3cret-pass";

#[derive(Debug)]
pub struct GitServer {
    pub port: u16,
    pub dir: tempfile::TempDir,
    child: Child,
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA of the test's own (`ca.pem`) and a certificate it signed for `127.0.0.1` and
/// `localhost` (`srv.pem`, `srv.key`, both in `srv-bundle.pem`), in `d`.
pub fn tls_cert(d: &Path) {
    let openssl = require("openssl", "openssl");
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    run(Command::new(&openssl)
        .args(["req", "-x509"])
        .args(ec)
        .args(["-keyout", "ca.key", "-out", "ca.pem", "-days", "2"])
        .args(["-subj", "/CN=hostproxy test CA"])
        .current_dir(d));
    run(Command::new(&openssl)
        .arg("req")
        .args(ec)
        .args([
            "-keyout",
            "srv.key",
            "-out",
            "srv.csr",
            "-subj",
            "/CN=git.test",
        ])
        .current_dir(d));
    std::fs::write(
        d.join("ext"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    run(Command::new(&openssl)
        .args([
            "x509", "-req", "-in", "srv.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
        ])
        .args([
            "-CAcreateserial",
            "-out",
            "srv.pem",
            "-days",
            "2",
            "-extfile",
            "ext",
        ])
        .current_dir(d));
    let bundle = [
        std::fs::read(d.join("srv.pem")).unwrap(),
        std::fs::read(d.join("srv.key")).unwrap(),
    ]
    .concat();
    std::fs::write(d.join("srv-bundle.pem"), bundle).unwrap();
}

impl GitServer {
    /// Serves `repos/r.git` (one commit on `main`, pushes allowed) at
    /// `https://127.0.0.1:PORT/git/r.git`.
    pub fn start() -> Self {
        let lighttpd = require("lighttpd", "lighttpd lighttpd-mod-openssl");
        require("htpasswd", "apache2-utils");
        let backend = Path::new("/usr/lib/git-core/git-http-backend");
        assert!(
            backend.is_file(),
            "git http-backend is required: apt-get install git"
        );
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        tls_cert(d);
        run(Command::new("htpasswd")
            .args(["-bc", "htpasswd", GIT_USER, GIT_PASSWORD])
            .current_dir(d));
        // The repository, with one commit, made by the host's git straight on disk.
        let repos = d.join("repos");
        std::fs::create_dir_all(&repos).unwrap();
        let git = |args: &[&str], cwd: &Path| {
            run(Command::new("git")
                .args(["-c", "user.name=t", "-c", "user.email=t@example.com"])
                .args(args)
                .env("GIT_CONFIG_GLOBAL", "/dev/null")
                .env("GIT_CONFIG_NOSYSTEM", "1")
                .current_dir(cwd));
        };
        git(&["init", "-q", "--bare", "-b", "main", "r.git"], &repos);
        git(
            &["config", "http.receivepack", "true"],
            &repos.join("r.git"),
        );
        let work = d.join("seed");
        git(&["init", "-q", "-b", "main", work.to_str().unwrap()], d);
        std::fs::write(work.join("README"), "seeded on the server\n").unwrap();
        git(&["add", "README"], &work);
        git(&["commit", "-q", "-m", "seed"], &work);
        git(
            &["push", "-q", repos.join("r.git").to_str().unwrap(), "main"],
            &work,
        );

        let port = free_port();
        let conf = format!(
            r#"server.document-root = "{repos}"
server.port = {port}
server.bind = "127.0.0.1"
server.modules = ("mod_auth", "mod_authn_file", "mod_cgi", "mod_setenv", "mod_accesslog", "mod_openssl", "mod_alias")
ssl.engine = "enable"
ssl.pemfile = "{d}/srv-bundle.pem"
accesslog.filename = "{d}/access.log"
server.errorlog = "{d}/error.log"
auth.backend = "htpasswd"
auth.backend.htpasswd.userfile = "{d}/htpasswd"
auth.require = ( "/git/" => ( "method" => "basic", "realm" => "git", "require" => "valid-user" ) )
alias.url = ( "/git/" => "{d}/backend/" )
$HTTP["url"] =~ "^/git/" {{
  cgi.assign = ( "" => "" )
  setenv.add-environment = ( "GIT_PROJECT_ROOT" => "{repos}", "GIT_HTTP_EXPORT_ALL" => "1" )
}}
"#,
            repos = repos.display(),
            d = d.display(),
        );
        std::fs::write(d.join("lighttpd.conf"), conf).unwrap();
        // Each request the backend gets, logged before it runs (lighttpd's own access log is
        // written in batches): the witness of what reached the server.
        crate::write_script(
            &d.join("backend"),
            &format!(
                "echo \"$REMOTE_USER $REQUEST_METHOD $PATH_INFO $QUERY_STRING $SERVER_PROTOCOL\" >> {}/requests.log\nexec {}",
                d.display(),
                backend.display()
            ),
        );
        let child = Command::new(lighttpd)
            .args(["-D", "-f"])
            .arg(d.join("lighttpd.conf"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        crate::wait_port(port, "lighttpd");
        Self { port, dir, child }
    }

    /// git's credential host for it.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// `https://127.0.0.1:PORT/git/r.git`.
    pub fn url(&self) -> String {
        format!("https://{}/git/r.git", self.host())
    }

    pub fn ca(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// Every request that reached git, one line each: `USER METHOD PATH QUERY`.
    pub fn requests(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("requests.log")).unwrap_or_default()
    }

    /// `git log` of the server's repository.
    pub fn log(&self) -> String {
        let out = Command::new("git")
            .args(["log", "--format=%s", "main"])
            .current_dir(self.dir.path().join("repos/r.git"))
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for GitServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
