//! HTTP for the tests: a small request builder over reqwest, and a fake OAuth provider.

use super::*;

/// A tiny authorization server: any GET answers 302 to its `redirect_uri` with a code and
/// the request's `state`, as an OAuth provider does after the user logs in. `{state}` in
/// `code` is replaced by the request's state (a code per login).
pub fn authorization_server(code: &'static str) -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { continue };
            let mut line = String::new();
            if BufReader::new(&s).read_line(&mut line).is_err() {
                continue;
            }
            let target = line.split(' ').nth(1).unwrap_or("/").to_string();
            let url = reqwest::Url::parse(&format!("http://x{target}")).unwrap();
            let param = |k: &str| {
                url.query_pairs()
                    .find(|(n, _)| n == k)
                    .map(|(_, v)| v.into_owned())
            };
            let state = param("state").unwrap_or_default();
            let reply = match param("redirect_uri") {
                Some(r) => format!(
                    "HTTP/1.1 302 Found\r\nLocation: {r}?code={}&state={state}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                    code.replace("{state}", &state)
                ),
                None => "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                    .to_string(),
            };
            let _ = s.write_all(reply.as_bytes());
        }
    });
    port
}

/// A shell script for a busybox container: a CLI's stand-in login server (httpd on `port`,
/// a CGI at `/cgi-bin/callback` that records `METHOD QUERY`), then `$BROWSER LOGIN_URL`
/// (default `host-open`), then what the server got (waiting up to a minute).
pub fn login_script(port: u16, login_url: &str) -> String {
    format!(
        r#"set -e
mkdir -p /www/cgi-bin
printf '#!/bin/sh\necho "$REQUEST_METHOD $QUERY_STRING" > /tmp/got\nprintf "Content-Type: text/plain\r\n\r\nok"\n' > /www/cgi-bin/callback
chmod +x /www/cgi-bin/callback
httpd -p {port} -h /www
"${{BROWSER:-host-open}}" '{login_url}'
i=0; while [ ! -s /tmp/got ] && [ $i -lt 600 ]; do sleep 0.1; i=$((i+1)); done
cat /tmp/got"#
    )
}

/// One HTTP request of a test: the one way every test in the workspace talks HTTP to a
/// daemon or a mock (no proxy, ever).
#[derive(Debug, Clone, Default)]
pub struct Req {
    pub method: String,
    pub url: String,
    pub token: Option<String>,
    pub headers: Vec<(String, String)>,
    /// A JSON body (sent as `application/json`).
    pub json: Option<serde_json::Value>,
    /// A raw body (the case sets its own content type, if any).
    pub raw: Option<String>,
}

impl Req {
    pub fn new(method: &str, url: impl Into<String>) -> Self {
        Self {
            method: method.to_string(),
            url: url.into(),
            ..Self::default()
        }
    }

    pub fn token(mut self, token: Option<&str>) -> Self {
        self.token = token.map(str::to_string);
        self
    }

    pub fn json(mut self, body: Option<serde_json::Value>) -> Self {
        self.json = body;
        self
    }

    pub fn header(mut self, name: &str, value: impl Into<String>) -> Self {
        self.headers.push((name.to_string(), value.into()));
        self
    }

    /// Sends it: (status, body as JSON, or as a JSON string when it is not JSON).
    pub async fn send_async(self, client: &reqwest::Client) -> (u16, serde_json::Value) {
        let method = reqwest::Method::from_bytes(self.method.as_bytes()).unwrap();
        let mut req = client.request(method, &self.url);
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        for (k, v) in &self.headers {
            req = req.header(k, v);
        }
        if let Some(b) = &self.json {
            req = req.json(b);
        }
        if let Some(r) = self.raw {
            req = req.body(r);
        }
        let r = req.send().await.unwrap();
        let status = r.status().as_u16();
        let text = r.text().await.unwrap_or_default();
        (
            status,
            serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)),
        )
    }

    /// Sends it from synchronous test code.
    pub fn send(self) -> (u16, serde_json::Value) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(self.send_async(&client()))
    }
}

/// The tests' HTTP client: never through a proxy.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
}

/// One blocking JSON request: (status, body as JSON or as a string).
pub fn http(
    method: &str,
    url: &str,
    token: Option<&str>,
    body: Option<serde_json::Value>,
) -> (u16, serde_json::Value) {
    Req::new(method, url).token(token).json(body).send()
}
