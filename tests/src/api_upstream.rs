//! A fake API upstream over TLS (Python's `http.server` with a certificate of a CA made for
//! the test): it checks the key, streams an OpenAI-style SSE reply event by event (logging
//! when it sent each), redirects `/v1/redirect` to another origin, and logs every request's
//! credential headers. Beside it, the "other origin": a listener that counts connections.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::git_server::tls_cert;
use crate::{free_port, require};

/// The key the upstream accepts; the daemon holds it, the container never.
pub const API_KEY: &str = "sk-host-held-0123456789";

const SERVER: &str = r#"
import http.server, json, ssl, sys, time
port, bundle, log, key, other = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])
def note(rec):
    with open(log, "a") as f:
        f.write(json.dumps(rec) + "\n")
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *a): pass
    def reply(self, code, body, ctype="application/json", extra=()):
        b = body.encode()
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(b)))
        for k, v in extra: self.send_header(k, v)
        self.end_headers()
        self.wfile.write(b)
    def handle_any(self):
        n = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(n) if n else b""
        note({"method": self.command, "path": self.path, "authorization": self.headers.get("Authorization"),
              "cookie": self.headers.get("Cookie"), "time": time.time()})
        if self.headers.get("Authorization") != "Bearer " + key:
            return self.reply(401, '{"error":{"message":"bad key"}}')
        if self.path == "/v1/redirect":
            return self.reply(302, "", extra=[("Location", "https://127.0.0.1:%d/steal" % other)])
        if self.path == "/v1/echo":
            return self.reply(200, "{}", extra=[("X-Echo", "you sent " + key)])
        req = json.loads(body or b"{}")
        if self.path != "/v1/chat/completions" or not req.get("stream"):
            return self.reply(404, '{"error":{"message":"not here"}}')
        # model "fast": no pause between events (the bench's time to first event).
        delay = 0 if req.get("model") == "fast" else 0.4
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        def chunk(s):
            b = s.encode()
            self.wfile.write(b"%x\r\n%s\r\n" % (len(b), b))
            self.wfile.flush()
        for i, word in enumerate(["one", "two", "three", "four", "five"]):
            ev = {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "m",
                  "choices": [{"index": 0, "delta": {"content": word}, "finish_reason": None}]}
            chunk("data: " + json.dumps(ev) + "\n\n")
            note({"sent": word, "time": time.time()})
            time.sleep(delay)
        chunk("data: [DONE]\n\n")
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()
    do_GET = do_POST = do_PUT = do_DELETE = handle_any
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(bundle)
srv = http.server.ThreadingHTTPServer(("127.0.0.1", port), H)
srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
srv.serve_forever()
"#;

#[derive(Debug)]
pub struct ApiUpstream {
    pub port: u16,
    pub dir: tempfile::TempDir,
    /// Connections the other origin (the redirect's target) received.
    pub other_hits: Arc<AtomicUsize>,
    child: Child,
}

impl ApiUpstream {
    pub fn start() -> Self {
        let python = require("python3", "python3");
        let dir = tempfile::tempdir().unwrap();
        tls_cert(dir.path());
        let other = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let other_port = other.local_addr().unwrap().port();
        let other_hits = Arc::new(AtomicUsize::new(0));
        let hits = other_hits.clone();
        std::thread::spawn(move || {
            for c in other.incoming() {
                if c.is_ok() {
                    hits.fetch_add(1, Ordering::SeqCst);
                }
            }
        });
        let port = free_port();
        let child = Command::new(python)
            .arg("-c")
            .arg(SERVER)
            .arg(port.to_string())
            .arg(dir.path().join("srv-bundle.pem"))
            .arg(dir.path().join("requests.log"))
            .arg(API_KEY)
            .arg(other_port.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        crate::wait_port(port, "the fake upstream");
        Self {
            port,
            dir,
            other_hits,
            child,
        }
    }

    pub fn ca(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// Every request (method, path, credential headers) and every event sent, in order.
    pub fn log(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(self.dir.path().join("requests.log"))
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

impl Drop for ApiUpstream {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
