//! git egress (SPEC.md 13) against a recording upstream: the host's credential is looked up
//! as the host's own git would (its `credential.useHttpPath` decides whether the repository
//! counts), and each identity's requests are rate-limited and capped in number at once —
//! a refused request reaches no upstream.

use std::sync::{Arc, Mutex};

use axum::body::Body;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use futures_util::future::BoxFuture;
use hostproxy::backends::Upstream;
use tokio::sync::mpsc;

use crate::common::*;

/// The sending end of a reply body the test holds open.
type Open = mpsc::Sender<Result<Vec<u8>, std::io::Error>>;

/// An upstream that wants a login (401 without `Authorization`), records each request's
/// method, path and credential, and keeps each reply's body open until the test lets go.
#[derive(Default)]
struct Recording {
    seen: Mutex<Vec<(String, String, Option<String>)>>,
    open: Mutex<Vec<Open>>,
}

impl Recording {
    fn seen(&self) -> Vec<(String, String, Option<String>)> {
        self.seen.lock().unwrap().clone()
    }

    /// The user name of each credential that arrived.
    fn users(&self) -> Vec<String> {
        self.seen()
            .into_iter()
            .filter_map(|(_, _, auth)| {
                let b = B64.decode(auth?.strip_prefix("Basic ")?).ok()?;
                let text = String::from_utf8(b).ok()?;
                Some(text.split_once(':')?.0.to_string())
            })
            .collect()
    }

    fn let_go(&self) {
        self.open.lock().unwrap().clear();
    }
}

impl Upstream for Recording {
    fn send<'a>(
        &'a self,
        req: http::Request<Body>,
        _ca_file: Option<&'a std::path::Path>,
    ) -> BoxFuture<'a, Result<http::Response<Body>, String>> {
        Box::pin(async move {
            let auth = req
                .headers()
                .get("authorization")
                .map(|v| v.to_str().unwrap().to_string());
            self.seen.lock().unwrap().push((
                req.method().to_string(),
                req.uri().path().to_string(),
                auth.clone(),
            ));
            if auth.is_none() {
                return Ok(http::Response::builder()
                    .status(401)
                    .header("www-authenticate", "Basic realm=\"git\"")
                    .body(Body::empty())
                    .unwrap());
            }
            let (tx, rx) = mpsc::channel(1);
            tx.send(Ok(b"0008NAK\n".to_vec())).await.unwrap();
            self.open.lock().unwrap().push(tx);
            let body = futures_util::stream::unfold(rx, |mut rx| async move {
                rx.recv().await.map(|item| (item, rx))
            });
            Ok(http::Response::builder()
                .status(200)
                .header("content-type", "application/x-git-upload-pack-result")
                .body(Body::from_stream(body))
                .unwrap())
        })
    }
}

async fn daemon_with(up: &Arc<Recording>) -> Daemon {
    spawn_with(
        Options {
            upstream: Some(up.clone()),
            ..Options::default()
        },
        |_, _| {},
    )
    .await
}

const REFS: &str = "/git/github.com/acme/app.git/info/refs?service=git-upload-pack";
const PACK: &str = "/git/github.com/acme/app.git/git-upload-pack";

async fn git_request(d: &Daemon, method: reqwest::Method, path: &str) -> reqwest::Response {
    d.client
        .request(method, format!("{}{path}", d.base))
        .bearer_auth(TOKEN)
        .header("content-type", "application/x-git-upload-pack-request")
        .body("0000")
        .send()
        .await
        .unwrap()
}

/// The host's store: a host-wide login first, then one for `acme/app.git` only.
fn two_logins(dir: &std::path::Path) {
    std::fs::write(
        dir.join("git-credentials"),
        "https://alice:s3cret-pass@github.com\nhttps://repo-bot:repo-pass@github.com/acme/app.git\n",
    )
    .unwrap();
}

#[tokio::test]
async fn the_hosts_use_http_path_decides_which_login_a_repository_gets() {
    // As git on the host would: without useHttpPath, the host-wide login.
    let up = Arc::new(Recording::default());
    let d = daemon_with(&up).await;
    two_logins(d.path());
    let r = git_request(&d, reqwest::Method::GET, REFS).await;
    assert_eq!(r.status(), 200);
    assert_eq!(up.users(), ["alice"]);
    up.let_go();

    // With credential.https://github.com.useHttpPath, the repository's own.
    let up = Arc::new(Recording::default());
    let d = daemon_with(&up).await;
    two_logins(d.path());
    let config = d.path().join("host-gitconfig");
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str("[credential \"https://github.com\"]\n\tuseHttpPath = true\n");
    std::fs::write(&config, text).unwrap();
    let r = git_request(&d, reqwest::Method::GET, REFS).await;
    assert_eq!(r.status(), 200);
    assert_eq!(up.users(), ["repo-bot"]);
    // The next request of the same git command reuses the held credential: no second fill.
    let r = git_request(&d, reqwest::Method::POST, PACK).await;
    assert_eq!(r.status(), 200);
    assert_eq!(up.users(), ["repo-bot", "repo-bot"]);
    assert_eq!(helper_log(d.path()).matches("get").count(), 1);
    up.let_go();
}

#[tokio::test]
async fn an_identitys_git_requests_are_capped_at_once_and_refused_ones_send_nothing() {
    let up = Arc::new(Recording::default());
    let d = daemon_with(&up).await;
    // The first request brings the fill (401, then again with the login), the rest hold it.
    let mut open = vec![git_request(&d, reqwest::Method::GET, REFS).await];
    for _ in 1..hostproxy::egress::EGRESS_RUNNING {
        open.push(git_request(&d, reqwest::Method::POST, PACK).await);
    }
    assert!(open.iter().all(|r| r.status() == 200));
    let sent = up.seen().len();
    assert_eq!(sent, hostproxy::egress::EGRESS_RUNNING + 1);

    // Every reply is still streaming: one more is refused before it goes anywhere.
    let r = git_request(&d, reqwest::Method::POST, PACK).await;
    assert_eq!(r.status(), 429);
    let text = r.text().await.unwrap();
    assert!(text.contains("at once"), "{text}");
    assert_eq!(up.seen().len(), sent);

    // Replies that end give their places back.
    up.let_go();
    for r in open {
        assert_eq!(&r.bytes().await.unwrap()[..], b"0008NAK\n");
    }
    let mut back = None;
    // (5 s at most: a busy machine may take a moment to drop the ended replies.)
    for _ in 0..250 {
        let r = git_request(&d, reqwest::Method::POST, PACK).await;
        if r.status() == 200 {
            back = Some(r);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(back.is_some(), "no place was given back");
    up.let_go();
}

#[tokio::test]
async fn an_identitys_git_requests_are_rate_limited_and_refused_ones_send_nothing() {
    let up = Arc::new(Recording::default());
    let d = daemon_with(&up).await;
    let per_minute = hostproxy::egress::GIT_EGRESS_PER_MINUTE as usize;
    // The first fills (the login held for the rest); each reply ends before the next. The
    // budget refills as time passes (per_minute a minute), so on a busy machine a few more
    // than the burst get through: as many as the time taken allows, and no more.
    let started = std::time::Instant::now();
    let mut allowed = 0;
    let (r, before) = loop {
        let before = up.seen().len();
        let r = git_request(&d, reqwest::Method::GET, REFS).await;
        if r.status() != 200 || allowed > 2 * per_minute {
            break (r, before);
        }
        allowed += 1;
        up.let_go();
        r.bytes().await.unwrap();
    };
    let refilled = (started.elapsed().as_secs_f64() * per_minute as f64 / 60.0).ceil() as usize;
    assert_eq!(r.status(), 429);
    assert!(
        allowed >= per_minute && allowed <= per_minute + refilled + 1,
        "{allowed} allowed in {:?}",
        started.elapsed()
    );
    assert!(r.headers().contains_key("retry-after"));
    // The fill's first request, then one each; the refused one reached nothing.
    assert_eq!(before, allowed + 1);
    assert_eq!(
        up.seen().len(),
        before,
        "a refused request reached the upstream"
    );
}
