//! Real OAuth client libraries, not our own test client, log in through the whole flow from
//! inside a container with `BROWSER=host-open`: Google's `google-auth-oauthlib`
//! (`InstalledAppFlow.run_local_server`, PKCE on by default) and `requests-oauthlib` with
//! PKCE S256, against a small identity provider that checks the PKCE verifier, with
//! headless Chromium as the host browser.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex, OnceLock};

use base64::Engine;
use e2e::*;
use sha2::Digest;

/// The libraries, installed once with pip into `target/pyoauth` (mounted read-only into
/// the container; the container's Python is the host's Debian `python3`).
fn python_libs() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        // The container runs the host's Debian python3 (its /usr is mounted read-only).
        assert!(
            Path::new("/usr/bin/python3").is_file(),
            "these tests need Debian's python3: apt-get install python3"
        );
        let python = require("python3", "python3");
        let dir = workspace_root().join("target/pyoauth");
        if !dir.join("requests_oauthlib").is_dir() || !dir.join("google_auth_oauthlib").is_dir() {
            let st = Command::new(&python)
                .args(["-m", "pip", "install", "-q", "--disable-pip-version-check"])
                .args(["--target"])
                .arg(&dir)
                .args(["google-auth-oauthlib==1.5.0", "requests-oauthlib==2.0.0"])
                .status()
                .expect("cannot run pip");
            assert!(
                st.success(),
                "pip install google-auth-oauthlib requests-oauthlib failed: these tests need PyPI"
            );
        }
        dir
    })
}

/// What the provider issued: code → (PKCE challenge, state).
type Issued = Arc<Mutex<HashMap<String, (String, String)>>>;

/// A minimal OAuth 2.0 provider on `addr`: `/authorize` redirects to `redirect_uri` with a
/// fresh code (remembering the PKCE challenge, which it requires), `/token` exchanges a code
/// once for an access token only when `code_verifier` matches the challenge (S256).
fn identity_provider(addr: &str) -> (u16, Issued) {
    let listener = std::net::TcpListener::bind((addr, 0)).unwrap();
    let port = listener.local_addr().unwrap().port();
    let issued: Issued = Arc::default();
    let codes = issued.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { continue };
            let mut r = BufReader::new(s.try_clone().unwrap());
            let mut line = String::new();
            if r.read_line(&mut line).is_err() {
                continue;
            }
            let (mut len, mut basic_client) = (0usize, None);
            loop {
                let mut h = String::new();
                if r.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
                    break;
                }
                let lower = h.to_ascii_lowercase();
                if let Some(v) = lower.strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap_or(0);
                }
                // A confidential client authenticates with HTTP Basic (RFC 6749 2.3.1).
                if lower.starts_with("authorization: basic ") {
                    basic_client = base64::engine::general_purpose::STANDARD
                        .decode(h[21..].trim())
                        .ok()
                        .and_then(|b| String::from_utf8(b).ok())
                        .and_then(|cred| cred.split(':').next().map(str::to_string));
                }
            }
            let mut body = vec![0u8; len];
            let _ = r.read_exact(&mut body);
            let target = line.split(' ').nth(1).unwrap_or("/").to_string();
            let (path, query) = target.split_once('?').unwrap_or((&target, ""));
            let params = |text: &str| -> HashMap<String, String> {
                reqwest::Url::parse(&format!("http://x/?{text}"))
                    .unwrap()
                    .query_pairs()
                    .into_owned()
                    .collect()
            };
            let reply = match path {
                "/authorize" => {
                    let q = params(query);
                    match (q.get("redirect_uri"), q.get("code_challenge"), q.get("state")) {
                        (Some(redirect), Some(challenge), Some(state))
                            if q.get("code_challenge_method").map(String::as_str) == Some("S256") =>
                        {
                            let code = format!("code-{}", codes.lock().unwrap().len() + 1);
                            codes
                                .lock()
                                .unwrap()
                                .insert(code.clone(), (challenge.clone(), state.clone()));
                            let sep = if redirect.contains('?') { '&' } else { '?' };
                            format!(
                                "HTTP/1.1 302 Found\r\nLocation: {redirect}{sep}code={code}&state={state}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                            )
                        }
                        _ => "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".into(),
                    }
                }
                "/token" => {
                    let f = params(&String::from_utf8_lossy(&body));
                    let entry = f.get("code").and_then(|c| codes.lock().unwrap().remove(c));
                    let verified = match (entry, f.get("code_verifier")) {
                        (Some((challenge, _)), Some(verifier)) => {
                            let digest = sha2::Sha256::digest(verifier.as_bytes());
                            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(digest)
                                == challenge
                        }
                        _ => false,
                    };
                    if verified
                        && f.get("grant_type").map(String::as_str) == Some("authorization_code")
                    {
                        let body = format!(
                            "{{\"access_token\":\"token-for-{}\",\"token_type\":\"Bearer\",\"expires_in\":3600}}",
                            f.get("client_id")
                                .or(basic_client.as_ref())
                                .map(String::as_str)
                                .unwrap_or("?")
                        );
                        format!(
                            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                            body.len()
                        )
                    } else {
                        let body = "{\"error\":\"invalid_grant\"}";
                        format!(
                            "HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                            body.len()
                        )
                    }
                }
                _ => "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                    .into(),
            };
            let _ = s.write_all(reply.as_bytes());
        }
    });
    (port, issued)
}

const GOOGLE: &str = r#"
import os
from google_auth_oauthlib.flow import InstalledAppFlow
base = os.environ["IDP"]
cfg = {"installed": {"client_id": "google-cli", "client_secret": "s3", "auth_uri": base + "/authorize",
       "token_uri": base + "/token", "redirect_uris": ["http://localhost"]}}
flow = InstalledAppFlow.from_client_config(cfg, scopes=["openid"])
creds = flow.run_local_server(port=int(os.environ["PORT"]), open_browser=True,
                              authorization_prompt_message=None, timeout_seconds=60)
print(creds.token)
"#;

const REQUESTS_OAUTHLIB: &str = r#"
import os, http.server, webbrowser
from requests_oauthlib import OAuth2Session
base, port = os.environ["IDP"], int(os.environ["PORT"])
s = OAuth2Session("requests-cli", redirect_uri="http://127.0.0.1:%d/callback" % port,
                  scope=["profile"], pkce="S256")
url, state = s.authorization_url(base + "/authorize")
got = {}
class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        got["path"] = self.path
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")
    def log_message(self, *args):
        pass
server = http.server.HTTPServer(("127.0.0.1", port), Handler)
server.timeout = 60
webbrowser.open(url)
server.handle_request()
token = s.fetch_token(base + "/token", authorization_response="https://127.0.0.1:%d%s" % (port, got["path"]),
                      client_secret="s4")
print(token["access_token"])
"#;

fn run_in_container(d: &DaemonProc, idp: &str, script: &str) -> (bool, String, String) {
    let port = free_port();
    let out = d
        .docker_run()
        .args(["-v", "/usr:/usr:ro"])
        .arg("-v")
        .arg(format!("{}:/opt/py:ro", python_libs().display()))
        .args(["-e", "PYTHONPATH=/opt/py", "-e", "BROWSER=host-open"])
        // The provider is plain http on the host: oauthlib insists on https otherwise.
        .args(["-e", "OAUTHLIB_INSECURE_TRANSPORT=1"])
        .args(["-e", &format!("IDP={idp}"), "-e", &format!("PORT={port}")])
        .arg(test_image())
        .args(["python3", "-c", script])
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).trim().to_string(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn real_oauth_client_libraries_log_in_from_a_container() {
    let _ = python_libs();
    let gw = docker_gateway();
    let (idp_port, issued) = identity_provider(&gw);
    let idp = format!("http://{gw}:{idp_port}");
    let dir = tempfile::tempdir().unwrap();
    // The provider lives on the bridge gateway, a private address the URL policy refuses
    // unless the config names it.
    let config = dir.path().join("hostproxy.toml");
    std::fs::write(&config, format!("[open]\nallowed_hosts = [\"{gw}\"]\n")).unwrap();
    let d = DaemonProc::start(DaemonOpts {
        args: vec![
            "--listen-docker-bridge".into(),
            "--config".into(),
            config.display().to_string(),
        ],
        browser: Some(crate::browser::chromium_launcher(dir.path())),
        ..DaemonOpts::default()
    });
    for (name, script, token) in [
        ("google-auth-oauthlib", GOOGLE, "token-for-google-cli"),
        (
            "requests-oauthlib",
            REQUESTS_OAUTHLIB,
            "token-for-requests-cli",
        ),
    ] {
        let (ok, stdout, stderr) = run_in_container(&d, &idp, script);
        assert!(
            ok && stdout == token,
            "{name}: {stdout}\n{stderr}\ndaemon log:\n{}",
            d.log_text()
        );
    }
    assert!(
        issued.lock().unwrap().is_empty(),
        "every code issued was exchanged exactly once"
    );
}
