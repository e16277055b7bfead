//! `POST /docker/credential` against a scratch Docker config: a recording credential
//! helper for one registry, `auths` for another; scopes and policy refuse before any helper
//! runs.

use std::path::Path;

use hostproxy::auth::Scope;
use serde_json::json;

use crate::common::*;

/// `<dir>/docker/config.json` with a helper for `reg.example:5000` and `auths` for
/// `other.example`; the helper `docker-credential-rec` logs each verb and its stdin to
/// `<dir>/docker-helper.log`.
pub(crate) fn docker_config(dir: &Path) {
    let docker = dir.join("docker");
    std::fs::create_dir_all(&docker).unwrap();
    std::fs::write(
        docker.join("config.json"),
        json!({
            "credHelpers": {"reg.example:5000": "rec"},
            "auths": {"other.example": {"auth": "Ym9iOmh1bnRlcjI="}}
        })
        .to_string(),
    )
    .unwrap();
    let helpers = dir.join("helpers");
    std::fs::create_dir_all(&helpers).unwrap();
    e2e::write_script(
        &helpers.join("docker-credential-rec"),
        &format!(
            "in=$(cat); echo \"$1 $in\" >> {log}\n[ -e {slow} ] && sleep 1\ncase \"$1\" in\n get) [ \"$in\" = reg.example:5000 ] && echo '{{\"ServerURL\":\"reg.example:5000\",\"Username\":\"alice\",\"Secret\":\"s3cret\"}}' && exit 0; echo 'credentials not found in native keychain'; exit 1;;\n list) echo '{{\"reg.example:5000\":\"alice\",\"hidden.example\":\"eve\"}}';;\n store|erase) exit 0;;\nesac",
            log = dir.join("docker-helper.log").display(),
            slow = dir.join("slow").display()
        ),
    );
}

/// A daemon over the scratch Docker config that also takes scoped tokens.
async fn with_tokens() -> Daemon {
    spawn_with(
        Options {
            tokens: true,
            ..Options::default()
        },
        |_, dir| docker_config(dir),
    )
    .await
}

fn helper_log(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("docker-helper.log")).unwrap_or_default()
}

#[tokio::test]
async fn get_asks_the_helper_of_that_registry_else_auths() {
    let d = spawn(|_, dir| docker_config(dir)).await;
    let (s, v) = d
        .post(
            "/docker/credential",
            json!({"action":"get","server_url":"https://reg.example:5000/v2/"}),
        )
        .await;
    assert_eq!(
        (s, &v["username"], &v["secret"]),
        (200, &json!("alice"), &json!("s3cret")),
        "{v}"
    );
    assert_eq!(v["server_url"], "reg.example:5000");
    assert_eq!(helper_log(d.path()).trim(), "get reg.example:5000");
    let (s, v) = d
        .post(
            "/docker/credential",
            json!({"action":"get","server_url":"other.example"}),
        )
        .await;
    assert_eq!(
        (s, &v["username"], &v["secret"]),
        (200, &json!("bob"), &json!("hunter2"))
    );
    let (s, _) = d
        .post(
            "/docker/credential",
            json!({"action":"get","server_url":"none.example"}),
        )
        .await;
    assert_eq!(s, 404);
}

#[tokio::test]
async fn refusals_run_no_helper() {
    let d = with_tokens().await;
    let scoped = d
        .tokens()
        .issue("ci", None, &[Scope::Docker("other.example".into())], None)
        .unwrap();
    // Another registry than the token's.
    let (s, v) = d
        .call_as(
            &scoped,
            reqwest::Method::POST,
            "/docker/credential",
            Some(json!({"action":"get","server_url":"reg.example:5000"})),
        )
        .await;
    assert_eq!(s, 403, "{v}");
    // store and erase are off by default, even for the user's token.
    for body in [
        json!({"action":"store","server_url":"reg.example:5000","username":"a","secret":"b"}),
        json!({"action":"erase","server_url":"reg.example:5000"}),
    ] {
        let (s, v) = d.post("/docker/credential", body).await;
        assert_eq!(s, 403, "{v}");
    }
    // Not a registry, a secret on get, control characters in a store.
    for body in [
        json!({"action":"get","server_url":"a b"}),
        json!({"action":"get"}),
        json!({"action":"get","server_url":"reg.example:5000","secret":"x"}),
        json!({"action":"list","server_url":"reg.example:5000"}),
        json!({"action":"nope","server_url":"reg.example:5000"}),
    ] {
        let (s, v) = d.post("/docker/credential", body.clone()).await;
        assert!(s == 400 || s == 422, "{body}: {s} {v}");
    }
    assert_eq!(
        helper_log(d.path()),
        "",
        "a helper ran for a refused request"
    );
}

#[tokio::test]
async fn list_names_only_what_the_token_may_see_and_store_runs_when_allowed() {
    let d = spawn_with(
        Options {
            tokens: true,
            ..Options::default()
        },
        |s, dir| {
            docker_config(dir);
            s.docker_allow_store = true;
        },
    )
    .await;
    let scoped = d
        .tokens()
        .issue(
            "ci",
            None,
            &[Scope::Docker("reg.example:5000".into())],
            None,
        )
        .unwrap();
    let (s, v) = d
        .call_as(
            &scoped,
            reqwest::Method::POST,
            "/docker/credential",
            Some(json!({"action":"list"})),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["servers"], json!({"reg.example:5000": "alice"}));
    let (s, v) = d
        .post(
            "/docker/credential",
            json!({"action":"store","server_url":"reg.example:5000","username":"a","secret":"b"}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let log = helper_log(d.path());
    let stored = log
        .lines()
        .find_map(|l| l.strip_prefix("store "))
        .expect("the helper was asked to store");
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(stored).unwrap(),
        json!({"ServerURL":"reg.example:5000","Username":"a","Secret":"b"})
    );
}

#[tokio::test]
async fn list_needs_a_docker_scope_and_helpers_are_capped() {
    let d = with_tokens().await;
    // An identity with no docker scope lists nothing, and no helper runs.
    let open_only = d.tokens().issue("ci", None, &[Scope::Open], None).unwrap();
    let (s, v) = d
        .call_as(
            &open_only,
            reqwest::Method::POST,
            "/docker/credential",
            Some(json!({"action":"list"})),
        )
        .await;
    assert_eq!(s, 403, "{v}");
    assert!(v["error"].as_str().unwrap().contains("docker:"), "{v}");
    assert_eq!(helper_log(d.path()), "", "a helper ran for a refused list");
    // Forty lists at once against a slow helper: at most four helpers run, the rest 429.
    std::fs::write(d.path().join("slow"), "").unwrap();
    let mut calls = Vec::new();
    for _ in 0..40 {
        calls.push(d.post("/docker/credential", json!({"action":"list"})));
    }
    let results = futures_util::future::join_all(calls).await;
    let ok = results.iter().filter(|(s, _)| *s == 200).count();
    let busy = results.iter().filter(|(s, _)| *s == 429).count();
    assert_eq!(ok + busy, 40, "{results:?}");
    assert!((1..=4).contains(&ok), "{ok} ran");
    assert_eq!(helper_log(d.path()).lines().count(), ok);
}

#[tokio::test]
async fn one_identity_never_holds_every_helper_slot() {
    let d = with_tokens().await;
    let scoped = d
        .tokens()
        .issue("greedy", None, &[Scope::Docker("*".into())], None)
        .unwrap();
    std::fs::write(d.path().join("slow"), "").unwrap();
    let greedy: Vec<_> = (0..6)
        .map(|_| {
            d.call_as(
                &scoped,
                reqwest::Method::POST,
                "/docker/credential",
                Some(json!({"action":"list"})),
            )
        })
        .collect();
    // While it holds what it may, another identity (the user) still gets a helper.
    let (greedy, user) = tokio::join!(futures_util::future::join_all(greedy), async {
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        d.post("/docker/credential", json!({"action":"list"})).await
    });
    let ran = greedy.iter().filter(|(s, _)| *s == 200).count();
    assert_eq!(ran, 2, "{greedy:?}");
    assert!(
        greedy.iter().all(|(s, _)| *s == 200 || *s == 429),
        "{greedy:?}"
    );
    assert_eq!(user.0, 200, "{user:?}");
    assert_eq!(helper_log(d.path()).lines().count(), 3);
}
