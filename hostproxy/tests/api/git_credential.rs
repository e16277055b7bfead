//! `POST /git/credential`: the host's credential through real git; every refusal runs no
//! git; an old client's empty attributes mean absent.

use super::*;

#[tokio::test]
async fn git_get_returns_the_hosts_credential() {
    let d = spawn(|_, _| {}).await;
    let (s, b) = d
        .post(
            "/git/credential",
            json!({"action":"get","protocol":"https","host":"github.com"}),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(
        b,
        json!({"success":true,"protocol":"https","host":"github.com","username":"alice","password":"s3cret-pass"})
    );
    assert_eq!(helper_log(d.path()), "get\n");
    let (s, b) = d
        .post(
            "/git/credential",
            json!({"action":"get","protocol":"https","host":"unknown.example"}),
        )
        .await;
    assert_eq!(s, 404);
    assert_eq!(b, json!({"success":false,"error":"no credential found"}));
}

#[tokio::test]
async fn git_rejections_never_run_git() {
    let d = spawn(|_, _| {}).await;
    let cases = [
        (
            json!({"action":"get","protocol":"https","host":"github.com\nhost=evil.com"}),
            400,
        ),
        (
            json!({"action":"get","protocol":"https","host":"github.com\r"}),
            400,
        ),
        (
            json!({"action":"get","protocol":"https","host":"github.com","path":"a\u{0}b"}),
            400,
        ),
        (
            json!({"action":"get","protocol":"https","host":"github.com","username":"a\nb"}),
            400,
        ),
        (
            json!({"action":"get","protocol":"https\nx","host":"github.com"}),
            400,
        ),
        (
            json!({"action":"get","protocol":"","host":"github.com"}),
            400,
        ),
        (json!({"action":"get","protocol":"https","host":""}), 400),
        (
            json!({"action":"get","protocol":"https","host":"evil.com/x"}),
            400,
        ),
        (
            json!({"action":"get","protocol":"https","host":"u@evil.com"}),
            400,
        ),
        (json!({"action":"get","protocol":"https","host":"a b"}), 400),
        (
            json!({"action":"steal","protocol":"https","host":"github.com"}),
            400,
        ),
        (
            json!({"action":"get","protocol":"https","host":"github.com","bogus":1}),
            400,
        ),
        (json!({"action":"get","host":"github.com"}), 400),
        (
            json!({"action":"get","protocol":"http","host":"github.com"}),
            403,
        ),
        (
            json!({"action":"get","protocol":"ssh","host":"github.com"}),
            403,
        ),
        (
            json!({"action":"store","protocol":"https","host":"github.com","username":"x","password":"y"}),
            403,
        ),
        (
            json!({"action":"erase","protocol":"https","host":"github.com"}),
            403,
        ),
    ];
    for (body, want) in cases {
        let (s, b) = d.post("/git/credential", body.clone()).await;
        assert_eq!(s, want, "{body} -> {b}");
        assert_eq!(b["success"], false);
    }
    assert_eq!(helper_log(d.path()), "", "git ran for a rejected request");
    let creds = std::fs::read_to_string(d.path().join("git-credentials")).unwrap();
    assert_eq!(creds, "https://alice:s3cret-pass@github.com\n");
}

#[tokio::test]
async fn git_host_policy_and_enabled_store() {
    let d = spawn(|s, _| {
        s.git.allowed_hosts = Some(vec!["github.com".into()]);
        s.git.allow_store = true;
    })
    .await;
    let (s, _) = d
        .post(
            "/git/credential",
            json!({"action":"get","protocol":"https","host":"gitlab.example.com"}),
        )
        .await;
    assert_eq!(s, 403);
    assert_eq!(helper_log(d.path()), "");
    let (s, b) = d
        .post(
            "/git/credential",
            json!({"action":"store","protocol":"https","host":"github.com","username":"bob","password":"new-pass"}),
        )
        .await;
    assert_eq!((s, b), (200, json!({"success":true})));
    assert_eq!(helper_log(d.path()), "store\n");
    let creds = std::fs::read_to_string(d.path().join("git-credentials")).unwrap();
    assert!(creds.contains("bob:new-pass@github.com"), "{creds}");
}

#[tokio::test]
async fn git_timeout_is_504_and_concurrency_is_capped() {
    let d = spawn(|s, dir| {
        let slow = dir.join("slow-git");
        write_script(&slow, "sleep 30");
        s.git.program = slow;
        s.git.timeout = Duration::from_millis(700);
        s.git.max_concurrent = 2;
    })
    .await;
    let start = Instant::now();
    let (s, b) = d
        .post(
            "/git/credential",
            json!({"action":"get","protocol":"https","host":"github.com"}),
        )
        .await;
    assert_eq!(s, 504, "{b}");
    assert!(start.elapsed() < Duration::from_secs(5));
    let body = json!({"action":"get","protocol":"https","host":"github.com"});
    let calls = (0..3).map(|_| d.post("/git/credential", body.clone()));
    let statuses: Vec<u16> = futures_util::future::join_all(calls)
        .await
        .into_iter()
        .map(|(s, _)| s)
        .collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == 504).count(),
        2,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 429).count(),
        1,
        "{statuses:?}"
    );
}

#[tokio::test]
async fn an_old_clients_empty_attributes_are_absent() {
    // Upstream's git-credential-clawker.sh sends every attribute, the missing ones as "".
    let d = spawn(|s, _| s.git.allow_erase = true).await;
    let old_get = json!({"action":"get","protocol":"https","host":"github.com",
        "username":"alice","password":"","path":""});
    let (s, v) = d.post("/git/credential", old_get.clone()).await;
    assert_eq!(
        (s, v["password"].clone()),
        (200, json!("s3cret-pass")),
        "{v}"
    );
    // An empty username on get means none too.
    let (s, v) = d
        .post(
            "/git/credential",
            json!({"action":"get","protocol":"https","host":"github.com","username":"","password":"","path":""}),
        )
        .await;
    assert_eq!((s, v["username"].clone()), (200, json!("alice")), "{v}");
    // erase with a username and an empty password erases the entry.
    let (s, v) = d
        .post(
            "/git/credential",
            json!({"action":"erase","protocol":"https","host":"github.com","username":"alice","password":"","path":""}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let stored = std::fs::read_to_string(d.path().join("git-credentials")).unwrap();
    assert!(!stored.contains("alice"), "the entry was kept: {stored}");
    let (s, _) = d.post("/git/credential", old_get).await;
    assert_eq!(s, 404);
}
