//! Scoped tokens: each token gets only what it was granted, and nothing happens otherwise.

use crate::common::*;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use clawker_protocol::agent::{self, msg};
use hostproxy::auth::Scope;
use reqwest::Method;
use serde_json::{Value, json};

fn scopes(s: &[&str]) -> Vec<Scope> {
    s.iter().map(|s| s.parse().unwrap()).collect()
}

async fn scoped(
    configure: impl FnOnce(&mut hostproxy::config::Settings, &std::path::Path),
) -> Daemon {
    spawn_with(
        Options {
            tokens: true,
            ..Options::default()
        },
        configure,
    )
    .await
}

#[tokio::test]
async fn a_git_token_gets_its_host_and_nothing_else() {
    let d = scoped(|s, _| s.git.allow_store = true).await;
    let t = d
        .tokens()
        .issue("gh", None, &scopes(&["git:github.com"]), None)
        .unwrap();
    let get = |host: &str| json!({"action":"get","protocol":"https","host": host});
    let (s, b) = d
        .call_as(&t, Method::POST, "/git/credential", Some(get("github.com")))
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["password"], "s3cret-pass");
    assert_eq!(helper_log(d.path()), "get\n");
    let (s, _) = d
        .call_as(
            &t,
            Method::POST,
            "/git/credential",
            Some(get("gitlab.example.com")),
        )
        .await;
    assert_eq!(s, 403);
    let store = json!({"action":"store","protocol":"https","host":"github.com","username":"x","password":"y"});
    let (s, _) = d
        .call_as(&t, Method::POST, "/git/credential", Some(store))
        .await;
    assert_eq!(s, 403, "git-store scope absent");
    assert_eq!(
        helper_log(d.path()),
        "get\n",
        "git ran for a refused request"
    );
    let (s, _) = d
        .call_as(
            &t,
            Method::POST,
            "/open/url",
            Some(json!({"url":"https://example.com/"})),
        )
        .await;
    assert_eq!(s, 403);
    assert_eq!(launch_log(d.path()), "");
    let (s, _) = d
        .call_as(
            &t,
            Method::POST,
            "/callback/register",
            Some(json!({"port": 40123, "state": "s"})),
        )
        .await;
    assert_eq!(s, 403);
    let frame = json!({"data": B64.encode(agent::frame(&[msg::REQUEST_IDENTITIES]))});
    let (s, _) = d.call_as(&t, Method::POST, "/ssh/agent", Some(frame)).await;
    assert_eq!(s, 403);

    // git-store granted: store goes through (the config allows it too).
    let w = d
        .tokens()
        .issue("gh-write", None, &scopes(&["git-store:github.com"]), None)
        .unwrap();
    let store = json!({"action":"store","protocol":"https","host":"github.com","username":"bob","password":"pw2"});
    let (s, b) = d
        .call_as(&w, Method::POST, "/git/credential", Some(store))
        .await;
    assert_eq!((s, b), (200, json!({"success": true})));
}

#[tokio::test]
async fn revocation_is_immediate_and_unknown_tokens_are_401() {
    let d = scoped(|_, _| {}).await;
    let t = d
        .tokens()
        .issue("tmp", None, &scopes(&["open"]), None)
        .unwrap();
    let open = || json!({"url":"https://example.com/"});
    assert_eq!(
        d.call_as(&t, Method::POST, "/open/url", Some(open()))
            .await
            .0,
        200
    );
    d.tokens().revoke("tmp").unwrap();
    assert_eq!(
        d.call_as(&t, Method::POST, "/open/url", Some(open()))
            .await
            .0,
        401
    );
    assert_eq!(
        d.call_as(
            "f".repeat(64).as_str(),
            Method::POST,
            "/open/url",
            Some(open())
        )
        .await
        .0,
        401
    );
    assert_eq!(launch_log(d.path()).matches("BEGIN").count(), 1);
    // The user's own token is unaffected.
    assert_eq!(d.post("/open/url", open()).await.0, 200);
}

#[tokio::test]
async fn callback_sessions_belong_to_their_token() {
    let d = scoped(|_, _| {}).await;
    let a = d
        .tokens()
        .issue("a", None, &scopes(&["callback"]), None)
        .unwrap();
    let b = d
        .tokens()
        .issue("b", None, &scopes(&["callback"]), None)
        .unwrap();
    let port = free_port();
    let (s, reg) = d
        .call_as(
            &a,
            Method::POST,
            "/callback/register",
            Some(json!({"port": port, "state": "s"})),
        )
        .await;
    assert_eq!(s, 200, "{reg}");
    let id = reg["session_id"].as_str().unwrap().to_string();
    let (s, body) = d
        .call_as(&b, Method::GET, &format!("/callback/{id}/data"), None)
        .await;
    assert_eq!(s, 404);
    let (_, unknown) = d
        .call_as(
            &b,
            Method::GET,
            &format!("/callback/{}/data", "0".repeat(32)),
            None,
        )
        .await;
    assert_eq!(
        body, unknown,
        "another token's session must look exactly like an unknown one"
    );
    let (s, _) = d
        .call_as(&b, Method::DELETE, &format!("/callback/{id}"), None)
        .await;
    assert_eq!(s, 200, "delete stays idempotent");
    let (s, body) = d
        .call_as(&a, Method::GET, &format!("/callback/{id}/data"), None)
        .await;
    assert_eq!(
        (s, body),
        (200, json!({"received": false})),
        "B's delete must not touch A's session"
    );
    // The user's token does not see A's session either.
    assert_eq!(d.get(&format!("/callback/{id}/data")).await.0, 404);
    // Four live sessions per scoped token.
    for _ in 0..3 {
        assert_eq!(register_as(&d, &a, free_port()).await.0, 200);
    }
    let p = free_port();
    assert_eq!(register_as(&d, &a, p).await.0, 429);
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", p)).is_err(),
        "a refused registration bound its port"
    );
    assert_eq!(register_as(&d, &b, p).await.0, 200);
}

async fn register_as(d: &Daemon, token: &str, port: u16) -> (u16, Value) {
    d.call_as(
        token,
        Method::POST,
        "/callback/register",
        Some(json!({"port": port, "state": "s"})),
    )
    .await
}

#[tokio::test]
async fn a_scoped_token_is_rate_limited_on_its_own() {
    let d = scoped(|_, _| {}).await;
    let a = d
        .tokens()
        .issue("a", None, &scopes(&["callback"]), None)
        .unwrap();
    // Ten registrations a minute per scoped token; deleting keeps it under the session cap.
    for _ in 0..10 {
        let (s, reg) = register_as(&d, &a, free_port()).await;
        assert_eq!(s, 200, "{reg}");
        let id = reg["session_id"].as_str().unwrap();
        assert_eq!(
            d.call_as(&a, Method::DELETE, &format!("/callback/{id}"), None)
                .await
                .0,
            200
        );
    }
    let p = free_port();
    let r = d
        .client
        .post(format!("{}/callback/register", d.base))
        .bearer_auth(&a)
        .json(&json!({"port": p, "state": "s"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    assert!(r.headers().contains_key("retry-after"));
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", p)).is_err(),
        "nothing listens after a refusal"
    );
    // The user's token has no such per-token limit.
    assert_eq!(
        d.post("/callback/register", json!({"port": p, "state": "s"}))
            .await
            .0,
        200
    );
}

fn reply(v: &Value) -> Vec<u8> {
    agent::single_frame(&B64.decode(v["data"].as_str().unwrap()).unwrap())
        .unwrap()
        .to_vec()
}

#[tokio::test]
async fn an_ssh_key_scope_lists_and_signs_with_that_key_only() {
    let agent = Agent::start();
    // A second key in the same agent.
    agent.add_key("second");
    let d = spawn_with(
        Options {
            tokens: true,
            agent_socket: Some(agent.socket.clone()),
            ..Options::default()
        },
        |_, _| {},
    )
    .await;
    let fp = |path: &std::path::Path| e2e::fingerprint_of(path);
    let first_fp = fp(&agent.key_path.with_extension("pub"));
    let t = d
        .tokens()
        .issue(
            "one-key",
            None,
            &[format!("ssh:{first_fp}").parse().unwrap()],
            None,
        )
        .unwrap();
    let call = |body: Vec<u8>| json!({"data": B64.encode(agent::frame(&body))});
    let (s, b) = d
        .call_as(
            &t,
            Method::POST,
            "/ssh/agent",
            Some(call(vec![msg::REQUEST_IDENTITIES])),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    let body = reply(&b);
    assert_eq!(
        u32::from_be_bytes(body[1..5].try_into().unwrap()),
        1,
        "only the granted key is listed"
    );
    let (blob, rest) = agent::read_string(&body[5..]).unwrap();
    let (comment, _) = agent::read_string(rest).unwrap();
    assert_eq!(comment, b"test@hostproxy");
    // The user's token sees both.
    let (_, b) = d
        .post("/ssh/agent", call(vec![msg::REQUEST_IDENTITIES]))
        .await;
    assert_eq!(u32::from_be_bytes(reply(&b)[1..5].try_into().unwrap()), 2);
    let sshsig = agent::sshsig_blob("git", "sha512", &[1u8; 64]);
    let sign = |key: &[u8]| agent::sign_request(key, &sshsig, 0);
    let (_, b) = d
        .call_as(&t, Method::POST, "/ssh/agent", Some(call(sign(blob))))
        .await;
    assert_eq!(reply(&b)[0], msg::SIGN_RESPONSE);
    let other_blob = {
        let (_, all) = d
            .post("/ssh/agent", call(vec![msg::REQUEST_IDENTITIES]))
            .await;
        let all = reply(&all);
        let (k1, rest) = agent::read_string(&all[5..]).unwrap();
        let (_, rest) = agent::read_string(rest).unwrap();
        let (k2, _) = agent::read_string(rest).unwrap();
        if k1 == blob { k2.to_vec() } else { k1.to_vec() }
    };
    let (_, b) = d
        .call_as(
            &t,
            Method::POST,
            "/ssh/agent",
            Some(call(sign(&other_blob))),
        )
        .await;
    assert_eq!(
        reply(&b),
        vec![msg::FAILURE],
        "signing with a key not granted"
    );
}

#[tokio::test]
async fn a_token_without_scope_notify_cannot_notify() {
    let d = scoped(|_, _| {}).await;
    let t = d
        .tokens()
        .issue("no-notify", None, &scopes(&["open"]), None)
        .unwrap();
    let (s, _) = d
        .call_as(&t, Method::POST, "/notify", Some(json!({"title": "hi"})))
        .await;
    assert_eq!(s, 403);
    let n = d
        .tokens()
        .issue("notifies", None, &scopes(&["notify"]), None)
        .unwrap();
    let (s, _) = d
        .call_as(&n, Method::POST, "/notify", Some(json!({"title": "hi"})))
        .await;
    assert_eq!(s, 200);
    assert_eq!(notify_log(d.path()).matches("BEGIN").count(), 1);
}

#[tokio::test]
async fn status_answers_only_the_user() {
    let d = spawn_with(
        Options {
            tokens: true,
            ..Options::default()
        },
        |_, _| {},
    )
    .await;
    let scoped = d
        .tokens()
        .issue("ci", None, &[Scope::Open, Scope::Callback], None)
        .unwrap();
    let (s, v) = d
        .call_as(&scoped, reqwest::Method::GET, "/status", None)
        .await;
    assert_eq!(s, 403, "{v}");
    assert!(v.get("pid").is_none() && v.get("sessions").is_none(), "{v}");
    let (s, v) = d.get("/status").await;
    assert_eq!((s, v["success"].clone()), (200, json!(true)), "{v}");
}

#[tokio::test]
async fn a_token_issued_again_under_a_revoked_name_inherits_no_session() {
    let d = scoped(|_, _| {}).await;
    let first = d
        .tokens()
        .issue("agent", None, &scopes(&["callback"]), None)
        .unwrap();
    let port = free_port_for_test();
    let (s, reg) = d
        .call_as(
            &first,
            Method::POST,
            "/callback/register",
            Some(json!({"port": port, "path": "/cb", "state": "s1"})),
        )
        .await;
    assert_eq!(s, 200, "{reg}");
    let session = reg["session_id"].as_str().unwrap().to_string();
    let data = format!("/callback/{session}/data");
    assert_eq!(d.call_as(&first, Method::GET, &data, None).await.0, 200);
    d.tokens().revoke("agent").unwrap();
    let again = d
        .tokens()
        .issue("agent", None, &scopes(&["callback"]), None)
        .unwrap();
    // The same name, another token: the unknown-id answers, and delete touches nothing.
    assert_eq!(d.call_as(&again, Method::GET, &data, None).await.0, 404);
    d.call_as(
        &again,
        Method::DELETE,
        &format!("/callback/{session}"),
        None,
    )
    .await;
    // The session lives on (its listener still holds the port) until it expires.
    assert!(
        std::net::TcpListener::bind(("127.0.0.1", port)).is_err(),
        "the new token deleted the old token's session"
    );
}

fn free_port_for_test() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
